//! The systemd units in `deploy/systemd/`: `systemd-analyze verify` finds nothing wrong in
//! them (with their `ExecStart` pointed at this build's binaries, which it checks exist),
//! and `systemd-analyze security --offline` rates their hardening at an exposure of 2.0 or
//! less ("OK"; an unhardened service rates 9.6, "UNSAFE").

use indexferry_tests::*;
use std::path::PathBuf;
use std::process::Command;

fn units() -> anyhow::Result<Vec<PathBuf>> {
    let dir = dev_script("../deploy/systemd");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "service"))
        .collect();
    out.sort();
    anyhow::ensure!(out.len() == 2, "deploy/systemd holds the run and proxy units: {out:?}");
    Ok(out)
}

/// A copy of each unit in `dir` with its binaries where this build has them; a template
/// (`name@.service`) as one instance of it.
fn installed(dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    let bin_dir = bin("indexferry").parent().map(PathBuf::from).unwrap_or_default();
    let mut out = vec![];
    for unit in units()? {
        let text = std::fs::read_to_string(&unit)?;
        assert!(text.contains("ExecStart=/usr/local/bin/"), "{}: runs from /usr/local/bin", unit.display());
        let name = unit.file_name().and_then(|n| n.to_str()).unwrap_or_default().replace("@.", "@records.");
        let path = dir.join(name);
        std::fs::write(&path, text.replace("/usr/local/bin/", &format!("{}/", bin_dir.display())))?;
        out.push(path);
    }
    Ok(out)
}

fn analyze(args: &[&str], unit: &std::path::Path) -> anyhow::Result<std::process::Output> {
    let out = Command::new("systemd-analyze").args(args).arg(unit).output();
    out.map_err(|e| anyhow::anyhow!("systemd-analyze (the systemd package, which dev/setup installs): {e}"))
}

#[test]
fn the_units_verify_and_are_hardened() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for unit in installed(dir.path())? {
        let out = analyze(&["verify"], &unit)?;
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.trim().is_empty(), "{}: {said}", unit.display());
        let out = analyze(&["security", "--offline=yes", "--threshold=20"], &unit)?;
        let said = String::from_utf8_lossy(&out.stdout);
        let overall = said.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_default().to_owned();
        assert!(out.status.success(), "{}: {overall}", unit.display());
        println!("{}: {overall}", unit.display());
    }
    Ok(())
}

#[test]
fn an_unhardened_unit_fails_the_same_check() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let unit = dir.path().join("bare.service");
    std::fs::write(&unit, format!("[Service]\nType=exec\nExecStart={}\n", bin("indexferry").display()))?;
    let out = analyze(&["security", "--offline=yes", "--threshold=20"], &unit)?;
    assert!(!out.status.success(), "the threshold catches a unit without hardening");
    Ok(())
}
