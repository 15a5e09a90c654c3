//! `cancel`: stop the workers, lift any write block, drop the target (unless kept or
//! already serving the alias) and forget the migration.
//!
//! Where the alias is, is read on the target cluster, not taken from the record: a rollover
//! killed right after its swap leaves the record at `rolling_over` with the target serving
//! the application. Cancel then refuses to delete that target (or to lift the block).

use crate::pipeline::rollover::recover::{switch, Switch};
use crate::runtime::context::{connect, same_cluster, stored_recipe, Common};
use crate::state::{running_pid, runs_here, OperatorLock, State, StateDir};
use anyhow::{bail, Context as _};
use indexferry_common::es::Method;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use std::time::{Duration, Instant};

pub async fn cancel(common: &Common, name: &str, keep_target: bool) -> anyhow::Result<()> {
    let dir = StateDir::new(&common.state_dir, name);
    dir.load_migration()?;
    // No rollover, add or second cancel meanwhile; the record read under the lock.
    let _lock = OperatorLock::take(&dir, "cancel")?;
    let m = dir.load_migration()?;
    let recipe = stored_recipe(&m, &common.overrides)?;
    let (source, target) = connect(&recipe, common.connect_timeout).await?;
    // An override left over from another environment must not lift blocks or delete
    // same-named indices there.
    same_cluster(&m, &source, m.source_uuid.as_deref()).await?;
    same_cluster(&m, &target, m.target_uuid.as_deref()).await?;
    let switched = m.state == State::RolledOver || switch(&target, &m).await? == Switch::Done;
    // Interrupted after its swap, a rollover still owes the bookkeeping and (across
    // clusters) the marker producers follow: only `rollover` finishes that, and forgetting
    // the migration here would leave the source blocked for good.
    if switched && m.state != State::RolledOver {
        let held: Vec<String> = m.pairs.iter().map(|p| format!("alias {} is on index {}", p.alias, p.target)).collect();
        bail!(
            "{}: the switch happened (a rollover was interrupted after it); refusing to cancel what the application \
             uses — run `rollover` again to finish it (it writes the switch marker), then `cancel --keep-target` if \
             the record is to go",
            held.join(", ")
        );
    }
    std::fs::write(dir.stop_request_file(), chrono::Utc::now().to_rfc3339())
        .context("cannot ask the workers to stop")?;
    for role in ["snapshot", "consume"] {
        if let Err(e) = stop(&dir, role).await {
            let _ = std::fs::remove_file(dir.stop_request_file());
            return Err(e);
        }
    }
    // `_reindex` tasks run on in the cluster after their worker stops.
    crate::pipeline::snapshot::cancel_tasks(&target, &dir.read_snapshot()?).await?;
    let sources: Vec<&str> = m.pairs.iter().map(|p| p.source.as_str()).collect();
    if !switched {
        source
            .put_settings(&sources.join(","), json!({ "index.blocks.write": null }))
            .await
            .context("cannot lift the write block on the source")?;
    }
    crate::pipeline::source_tombstones::restore(&source, crate::pipeline::source_tombstones::of_pairs(&m.pairs)).await;
    for p in &m.pairs {
        if switched {
            println!("kept {}: the alias {} points at it", p.target, p.alias);
        } else if keep_target {
            println!("kept {} (--keep-target)", p.target);
        } else {
            match target.request(Method::Delete, &format!("/{}", p.target), &[], None).await {
                Ok(_) => println!("deleted {}", p.target),
                Err(e) if e.status() == Some(404) => {}
                Err(e) => return Err(e).with_context(|| format!("cannot delete {}", p.target)),
            }
        }
    }
    std::fs::remove_dir_all(dir.path()).with_context(|| format!("cannot remove {}", dir.path().display()))?;
    println!("cancelled migration {name:?}");
    Ok(())
}

/// Waits up to 30 s for the worker, asked through the state folder, to flush and exit (it
/// may run in another container); then SIGKILLs it if it runs on this host, and otherwise
/// says where to stop it.
async fn stop(dir: &StateDir, role: &str) -> anyhow::Result<()> {
    let Some(pid) = running_pid(dir, role) else {
        return Ok(());
    };
    println!("stopping the {role} worker (pid {pid})");
    let started = Instant::now();
    // The worker's lock on its pid file goes with the process.
    while running_pid(dir, role) == Some(pid) {
        if started.elapsed() > STOP {
            if !runs_here(dir, role) {
                bail!(
                    "the {role} worker (pid {pid} on another host or container) has not stopped {STOP:?} after it was \
                     asked to: stop it where it runs, then cancel again"
                );
            }
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            tokio::time::sleep(Duration::from_millis(200)).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// How long a worker has to stop once asked.
const STOP: Duration = Duration::from_secs(30);
