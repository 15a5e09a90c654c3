//! What a running worker cannot reach right now, for `status` to show: a cluster or the
//! brokers failing, since when, how many attempts, the last error. Workers retry such
//! failures with backoff; this is how the operator learns that they are doing so.
//!
//! Each worker process keeps one small JSON file in the migration's state directory,
//! `health-<pid>.json`, rewritten when a problem starts, every few seconds while it lasts,
//! and when it ends. `status` reads the files of processes that still hold their worker lock
//! (see `state::held_pids`; a pid alone means nothing from another container).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One thing a worker cannot reach.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    /// `source`, `target` or `kafka`.
    pub what: String,
    pub error: String,
    pub since: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub attempts: u64,
    /// The worker process that reports it.
    pub pid: u32,
}

struct Reporter {
    path: PathBuf,
    problems: Mutex<(BTreeMap<String, Problem>, Option<Instant>)>,
    /// Whether any problem is open: lets `ok`, called on every page and bulk, skip the lock.
    any: AtomicBool,
}

static REPORTER: OnceLock<Reporter> = OnceLock::new();

/// How often a lasting problem's file is rewritten (its `last` and `attempts`).
const REWRITE: Duration = Duration::from_secs(2);

/// Starts reporting for this process into `state_dir` (a migration's directory).
pub fn init(state_dir: &Path) {
    let path = state_dir.join(format!("health-{}.json", std::process::id()));
    let _ = REPORTER.set(Reporter { path, problems: Mutex::new((BTreeMap::new(), None)), any: AtomicBool::new(false) });
}

/// Removes this process's file (at a clean exit).
pub fn finish() {
    if let Some(r) = REPORTER.get() {
        let _ = std::fs::remove_file(&r.path);
    }
}

/// `what` failed with `error`; the caller retries.
pub fn failing(what: &str, error: &str) {
    let Some(r) = REPORTER.get() else { return };
    let Ok(mut guard) = r.problems.lock() else { return };
    let (problems, written) = &mut *guard;
    let now = Utc::now();
    let new = !problems.contains_key(what);
    let p = problems.entry(what.to_owned()).or_insert_with(|| Problem {
        what: what.to_owned(),
        error: String::new(),
        since: now,
        last: now,
        attempts: 0,
        pid: std::process::id(),
    });
    p.error = error.to_owned();
    p.last = now;
    p.attempts += 1;
    r.any.store(true, Ordering::Relaxed);
    if new || written.is_none_or(|w| w.elapsed() >= REWRITE) {
        write(&r.path, problems);
        *written = Some(Instant::now());
    }
}

/// `what` answered again.
pub fn ok(what: &str) {
    let Some(r) = REPORTER.get() else { return };
    if !r.any.load(Ordering::Relaxed) {
        return;
    }
    let Ok(mut guard) = r.problems.lock() else { return };
    let (problems, written) = &mut *guard;
    if problems.remove(what).is_some() {
        r.any.store(!problems.is_empty(), Ordering::Relaxed);
        tracing::info!(%what, "reachable again");
        write(&r.path, problems);
        *written = Some(Instant::now());
    }
}

fn write(path: &Path, problems: &BTreeMap<String, Problem>) {
    let list: Vec<&Problem> = problems.values().collect();
    let tmp = path.with_extension("json.tmp");
    let written = serde_json::to_vec_pretty(&list)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::debug!(error = %e, "cannot write the health file");
    }
}

/// How old the file of a process that holds no lock is before it is removed: a worker
/// writes its file as it starts, a moment before it takes its lock.
const ORPHANED: Duration = Duration::from_secs(600);

/// The problems reported by worker processes of this migration that still run. The files of
/// processes gone for a while (killed, so they could not remove theirs) are removed.
pub fn read(state_dir: &Path) -> Vec<Problem> {
    let Ok(entries) = std::fs::read_dir(state_dir) else { return vec![] };
    let running = crate::state::held_pids(state_dir);
    let mut out = vec![];
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("health-").and_then(|n| n.strip_suffix(".json")) else { continue };
        let Ok(pid) = pid.parse::<i32>() else { continue };
        if !running.contains(&pid) {
            let age = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            if age.is_some_and(|a| a > ORPHANED) {
                let _ = std::fs::remove_file(entry.path());
            }
            continue;
        }
        if let Ok(bytes) = std::fs::read(entry.path()) {
            out.extend(serde_json::from_slice::<Vec<Problem>>(&bytes).unwrap_or_default());
        }
    }
    out.sort_by_key(|p| p.since);
    out
}
