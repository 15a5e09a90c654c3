//! Which worker process runs a role (`snapshot`, `consume`) of a migration, and which
//! operator command holds the migration ([`OperatorLock`]).
//!
//! The worker writes its pid and host into `<role>.pid` and holds an exclusive `flock` on
//! that file for its lifetime. The kernel releases the lock when the process dies, however
//! it dies, so a pid file left behind by a SIGKILL — whose number the system may since have
//! given to an unrelated process — never reads as a running worker: only a held lock does.
//!
//! Locks, not pids, are what other commands go by: a `flock` holds between containers that
//! share the state volume on one machine (a pod's and a Job's on one node, two `podman run`s),
//! where a pid from another container names nothing, or the wrong process.

use super::StateDir;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// Holds the lock on `<role>.pid` while this process runs `role`; released on drop.
pub struct PidGuard {
    path: PathBuf,
    _lock: Flock<File>,
}

impl PidGuard {
    /// Takes the role's lock and records this process's pid. Fails if another live process
    /// holds it (a reader probing the lock holds it only for an instant: retried briefly).
    pub fn create(dir: &StateDir, role: &str) -> std::io::Result<PidGuard> {
        Self::create_with(dir, role, "")
    }

    /// [`PidGuard::create`], with `detail` written after the pid and host (on lines of its own).
    fn create_with(dir: &StateDir, role: &str, detail: &str) -> std::io::Result<PidGuard> {
        let path = dir.pid_file(role);
        let mut tries = 0;
        let mut lock = loop {
            let file = File::options().create(true).truncate(false).write(true).open(&path)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                Err((_, Errno::EWOULDBLOCK)) if tries < 20 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((_, Errno::EWOULDBLOCK)) => {
                    let holder = read_pid(&path).map_or_else(|| "?".to_owned(), |p| p.to_string());
                    return Err(std::io::Error::other(format!(
                        "another process (pid {holder}) runs the {role} worker of this migration ({} is locked)",
                        path.display()
                    )));
                }
                Err((_, e)) => return Err(std::io::Error::other(format!("cannot lock {}: {e}", path.display()))),
            }
        };
        lock.set_len(0)?;
        lock.write_all(format!("{}\n{}\n{detail}", std::process::id(), hostname()).as_bytes())?;
        lock.sync_data()?;
        Ok(PidGuard { path, _lock: lock })
    }
}

impl Drop for PidGuard {
    fn drop(&mut self) {
        // Removed while still locked, so no reader sees an unlocked file of a live worker.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The pid of the process running `role`, if one holds the role's lock.
pub fn running_pid(dir: &StateDir, role: &str) -> Option<i32> {
    let path = dir.pid_file(role);
    let file = File::open(&path).ok()?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        // Nobody holds it: whatever pid the file names is not a worker (any more).
        Ok(_unlocked_on_drop) => None,
        Err((_, Errno::EWOULDBLOCK)) => read_pid(&path),
        Err(_) => None,
    }
}

/// Whether the process running `role` is on this host, where its pid can be signalled: a
/// pid file from another container or machine names some other process here.
pub fn runs_here(dir: &StateDir, role: &str) -> bool {
    let text = std::fs::read_to_string(dir.pid_file(role)).unwrap_or_default();
    text.lines().nth(1).is_some_and(|host| host == hostname())
}

/// The pids of the processes holding a lock in a migration's folder, as those processes
/// wrote them: they match the pids in the health files the same processes write, whichever
/// container each runs in.
pub fn held_pids(migration_dir: &std::path::Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(migration_dir) else { return vec![] };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .filter_map(|e| {
            let file = File::open(e.path()).ok()?;
            match Flock::lock(file, FlockArg::LockSharedNonblock) {
                Err((_, Errno::EWOULDBLOCK)) => read_pid(&e.path()),
                _ => None,
            }
        })
        .collect()
}

fn read_pid(path: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.lines().next()?.trim().parse().ok()
}

fn hostname() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "?".into())
}

/// The one operator command that may change a migration at a time: `rollover`, `cancel`,
/// `add`, `reconcile`, `deadletters --replay`. A `cancel` or a second `rollover` racing a
/// rollover could delete the index that serves the application, or lift the block after the
/// switch. An exclusive `flock` on `<state>/<name>/operator.pid`, which the kernel releases
/// when the holder dies, however it dies: a held lock is a live holder. The lock lives with
/// the state folder, so these commands run where that folder is (in a container: in the pod
/// that owns the volume, through `kubectl exec`).
pub struct OperatorLock(#[allow(dead_code)] PidGuard);

impl OperatorLock {
    /// Takes the migration's lock for `command`; refuses, naming the holder's command, host,
    /// pid and start, while another process holds it.
    pub fn take(dir: &StateDir, command: &str) -> anyhow::Result<OperatorLock> {
        let detail = format!("{command}\n{}\n", chrono::Utc::now().to_rfc3339());
        match PidGuard::create_with(dir, "operator", &detail) {
            Ok(g) => Ok(OperatorLock(g)),
            Err(e) => {
                let text = std::fs::read_to_string(dir.pid_file("operator")).unwrap_or_default();
                let mut lines = text.lines();
                let (pid, host, held_by, since) = (lines.next(), lines.next(), lines.next(), lines.next());
                match pid {
                    Some(pid) => anyhow::bail!(
                        "migration {:?} is locked by `{}` (pid {pid} on host {}, since {}): one command that changes a \
                         migration runs at a time; wait for it to end (the lock goes with its process)",
                        dir.name,
                        held_by.unwrap_or("?"),
                        host.unwrap_or("?"),
                        since.unwrap_or("?")
                    ),
                    None => Err(anyhow::Error::new(e).context(format!("cannot lock migration {:?}", dir.name))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_counts_only_while_its_lock_is_held() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path(), "m");
        std::fs::create_dir_all(dir.path()).unwrap();
        // A stale file naming a live process that is not a worker (pid 1, this test's parent).
        for pid in [1, std::os::unix::process::parent_id() as i32] {
            assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok(), "pid {pid} is alive");
            std::fs::write(dir.pid_file("consume"), pid.to_string()).unwrap();
            assert_eq!(running_pid(&dir, "consume"), None, "pid {pid} holds no lock");
        }
        assert_eq!(held_pids(&dir.path()), Vec::<i32>::new());
        let guard = PidGuard::create(&dir, "consume").unwrap();
        assert_eq!(running_pid(&dir, "consume"), Some(std::process::id() as i32), "a held lock is running");
        assert_eq!(held_pids(&dir.path()), vec![std::process::id() as i32]);
        assert!(runs_here(&dir, "consume"), "the pid file names this host");
        std::fs::write(dir.path().join("snapshot.pid"), "4242\nanother-host\n").unwrap();
        assert_eq!(held_pids(&dir.path()), vec![std::process::id() as i32], "an unlocked file is no holder");
        let second = PidGuard::create(&dir, "consume").err().expect("one holder at a time");
        assert!(second.to_string().contains("runs the consume worker"), "{second}");
        drop(guard);
        assert_eq!(running_pid(&dir, "consume"), None);
        assert!(!dir.pid_file("consume").exists());
    }

    #[test]
    fn the_operator_lock_names_its_holder_and_goes_with_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path(), "m");
        std::fs::create_dir_all(dir.path()).unwrap();
        let held = OperatorLock::take(&dir, "rollover").unwrap();
        let refused = OperatorLock::take(&dir, "cancel").err().expect("one holder at a time").to_string();
        let me = std::process::id().to_string();
        assert!(
            refused.contains("locked by `rollover`") && refused.contains(&format!("pid {me} on host")),
            "{refused}"
        );
        assert_eq!(running_pid(&dir, "operator"), Some(std::process::id() as i32));
        drop(held);
        OperatorLock::take(&dir, "cancel").unwrap();
    }
}
