//! indexferry's image under podman, for the tests that run it: built once per test binary
//! by `dev/image` from the binaries these tests use, and containers that share one state
//! volume the way a pod and a Job share a claim on one node.

use crate::{bin, dev_script, unique};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The image, built on first use: `Ok(tag)`, or why it could not be.
fn image() -> anyhow::Result<&'static str> {
    static IMAGE: OnceLock<Result<String, String>> = OnceLock::new();
    let built = IMAGE.get_or_init(|| {
        let tag = "localhost/indexferry:test".to_owned();
        let bins = bin("indexferry").parent().map(Path::to_path_buf).unwrap_or_default();
        let out = Command::new(dev_script("image"))
            .args(["--bin-dir", &bins.to_string_lossy(), "--tag", &tag])
            .output()
            .map_err(|e| format!("cannot run dev/image: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "dev/image failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        eprint!("{}", String::from_utf8_lossy(&out.stdout));
        Ok(tag)
    });
    built.as_deref().map_err(|e| anyhow::anyhow!("{e}"))
}

/// `podman` with the settings dev/image wrote for this machine (runtime runc, no default
/// ulimits), asked of dev/image once per test binary.
pub fn podman() -> anyhow::Result<Command> {
    static CONF: OnceLock<Result<String, String>> = OnceLock::new();
    let conf = CONF.get_or_init(|| {
        let out = Command::new(dev_script("image")).arg("--podman-env").output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        let conf = text.lines().find_map(|l| l.strip_prefix("export CONTAINERS_CONF="));
        conf.map(|c| c.trim().to_owned()).ok_or_else(|| format!("dev/image --podman-env printed {text:?}"))
    });
    let conf = conf.as_deref().map_err(|e| anyhow::anyhow!("cannot run dev/image --podman-env: {e}"))?;
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", conf);
    Ok(c)
}

/// One migration's state volume, with a folder of recipes mounted read-only at
/// `/etc/indexferry`. Its containers and the volume are removed when dropped.
pub struct Deployment {
    image: &'static str,
    volume: String,
    config: PathBuf,
    containers: Vec<String>,
}

impl Deployment {
    /// A new volume; `config` (made readable to the image's user) is the recipes' folder.
    pub fn new(config: &Path) -> anyhow::Result<Deployment> {
        let image = image()?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(config, std::fs::Permissions::from_mode(0o755))?;
        for f in std::fs::read_dir(config)?.flatten() {
            if f.path().is_file() {
                std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o644))?;
            }
        }
        let volume = unique("indexferry-state");
        podman_ok(podman()?.args(["volume", "create", &volume]))?;
        Ok(Deployment { image, volume, config: config.to_path_buf(), containers: vec![] })
    }

    fn run_args(&self, c: &mut Command) {
        c.args(["run", "--network", "host", "--volume"])
            .arg(format!("{}:/var/lib/indexferry", self.volume))
            .arg("--volume")
            .arg(format!("{}:/etc/indexferry:ro", self.config.display()))
            .args(["--env", "RUST_LOG=info,rdkafka=warn"]);
    }

    /// `indexferry <args>` in a container of its own, removed after; its output.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut c = podman()?;
        self.run_args(&mut c);
        c.arg("--rm").arg(self.image).args(args);
        c.output().context("cannot run podman")
    }

    /// [`Deployment::command`], failing unless it succeeds; its standard output.
    pub fn command_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.command(args)?;
        if !out.status.success() {
            bail!(
                "indexferry {} in a container failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `indexferry <args>` in a detached container named `name`.
    pub fn start(&mut self, name: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut c = podman()?;
        self.run_args(&mut c);
        c.args(["--detach", "--name", name]).arg(self.image).args(args);
        podman_ok(&mut c)?;
        self.containers.push(name.to_owned());
        Ok(())
    }

    /// SIGKILL, as a node failure would, and the container removed.
    pub fn kill(&self, name: &str) -> anyhow::Result<()> {
        podman_ok(podman()?.args(["kill", name]))?;
        podman_ok(podman()?.args(["rm", "--force", "--volumes", name]))?;
        Ok(())
    }

    /// The container's exit code once it has exited, `None` while it runs.
    pub fn exited(&self, name: &str) -> anyhow::Result<Option<i32>> {
        let out = podman_ok(podman()?.args(["inspect", name, "--format", "{{.State.Status}} {{.State.ExitCode}}"]))?;
        let mut words = out.split_whitespace();
        match (words.next(), words.next()) {
            (Some("exited" | "stopped"), Some(code)) => Ok(Some(code.parse()?)),
            _ => Ok(None),
        }
    }

    /// The container's output so far.
    pub fn logs(&self, name: &str) -> String {
        podman()
            .and_then(|mut c| Ok(c.args(["logs", name]).output()?))
            .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
            .unwrap_or_default()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for name in &self.containers {
            let _ = podman().and_then(|mut c| Ok(c.args(["rm", "--force", "--volumes", name]).output()?));
        }
        let _ = podman().and_then(|mut c| Ok(c.args(["volume", "rm", "--force", &self.volume]).output()?));
    }
}

fn podman_ok(c: &mut Command) -> anyhow::Result<String> {
    let out = c.output().context("cannot run podman: run dev/setup")?;
    if !out.status.success() {
        bail!("podman failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
