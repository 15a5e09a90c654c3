//! The `reindex` snapshot method: the target cluster copies each source index itself with
//! `_reindex`, run as a task (`wait_for_completion=false`): sliced by the source's shard
//! count in-cluster, and from remote across clusters (the target pulls from the source; it
//! needs the reindex module and the source in its `reindex.remote.allowlist`).
//!
//! # Convergence with the replay
//!
//! `_reindex` copies with `dest.version_type=external` and `conflicts=proceed`, so each copy
//! carries the source's own `_version`; a copy not newer than what the target holds is
//! refused with 409, which the task counts as a version conflict (stale, not a failure).
//!
//! Under the `source` version rule (`crate::pipeline::versions`) that is the version every event and
//! repair carries too: copies and events are ordered on one scale, as with the `search`
//! method.
//!
//! Under `seq_no`, `_reindex` cannot write `external_version(term, seq_no)`: its copies hold
//! the source's `_version`, a per-document counter that stays far below 2^47, while every
//! event (and every repair by reconcile, and every delete re-applied at rollover) carries
//! `external_version(term, seq_no)` >= 2^47. So an event always beats a copy, and a copy
//! never overwrites an event's write. The replay applies every event since the offsets
//! `init` recorded (before the task's view of the source was taken) in order, so a
//! document's last event decides; documents without events keep their copy. `reconcile`
//! reads a target version below 2^47 as "copied by reindex": in sync when it equals the
//! source's `_version`, else behind (its repair lands above).
//!
//! Either way, a copy landing after a delete's tombstone was collected would bring the
//! document back: rollover's sweep of the recorded deletes (with event versions) removes it
//! again.
//!
//! # Tasks
//!
//! The task id is stored in the pair's checkpoint before the worker waits on it. A worker
//! killed and started again reattaches to its running task, reads a finished task's result,
//! or starts the task again when the cluster forgot it (a node restart): copies of the first
//! run are refused as not newer, or rewritten with the same content. The worker's own
//! shutdown leaves the task running; `cancel` cancels it. A task that fails for any reason
//! other than version conflicts ends the snapshot with one line naming the cause, and its
//! counts are not reported as copied.

use super::task::{self, Counts, TaskState};
use super::Progress;
use crate::runtime::context::Ctx;
use crate::state::{slice_key, SliceCheckpoint, Store};
use anyhow::{bail, Context as _};
use chrono::Utc;
use indexferry_common::es::{Cluster, Method};
use indexferry_common::metrics::{SNAPSHOT_DOCS, SNAPSHOT_PROGRESS};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How often a running task's status is read: progress stays fresh without loading the
/// task API.
const POLL: Duration = Duration::from_millis(500);

/// Copies every pair with `_reindex`; stops waiting (tasks left running) when cancelled.
pub(super) async fn run(ctx: &Arc<Ctx>, store: &Store, cancel: &CancellationToken) -> anyhow::Result<()> {
    for (pair, info) in ctx.migration.pairs.iter().enumerate() {
        let span = tracing::info_span!("snapshot", pair = %info.source);
        if !run_pair(ctx, store, pair, cancel).instrument(span).await? {
            break;
        }
    }
    Ok(())
}

/// The cluster that runs the tasks: the target (the source too, in-cluster).
fn runner(ctx: &Ctx) -> &Cluster {
    &ctx.target
}

/// `requests_per_second` for the recipe's throttle (-1: unthrottled).
fn requests_per_second(ctx: &Ctx) -> f64 {
    match ctx.recipe.snapshot.throttle_docs_per_s {
        0 => -1.0,
        n => f64::from(n),
    }
}

/// Copies one pair; `false` when cancelled.
async fn run_pair(ctx: &Arc<Ctx>, store: &Store, pair: usize, cancel: &CancellationToken) -> anyhow::Result<bool> {
    let info = &ctx.migration.pairs[pair];
    let label = format!("{}->{}", info.source, info.target);
    let key = slice_key(pair, 0);
    let mut cp: SliceCheckpoint = store.get(&key)?.unwrap_or_default();
    if cp.done {
        super::report_pair(&label, std::slice::from_ref(&cp), None);
        return Ok(true);
    }
    let task_id = match cp.task.clone() {
        Some(t) => reattach(ctx, &label, &mut cp, t).await,
        None => start(ctx, store, pair, &mut cp).await?,
    };
    store.put(&key, &cp)?;
    let started = Instant::now();
    let copied = Arc::new(AtomicU64::new(cp.copied));
    let progress = Progress::start(&label, info.source_docs, copied.clone());
    let result = follow(ctx, store, pair, &mut cp, task_id, &copied, cancel).await;
    progress.finish();
    if let Ok(true) = result {
        super::report_pair(&label, std::slice::from_ref(&cp), Some(started.elapsed()));
    }
    result
}

/// Takes up the task a killed worker left running, rethrottled to the recipe's throttle.
async fn reattach(ctx: &Ctx, label: &str, cp: &mut SliceCheckpoint, task: String) -> String {
    cp.resumes += 1;
    let rps = requests_per_second(ctx);
    if cp.requests_per_second != Some(rps) {
        match task::rethrottle(runner(ctx), &task, rps).await {
            Ok(()) => cp.requests_per_second = Some(rps),
            // A task that just finished has nothing to rethrottle.
            Err(e) => tracing::warn!(pair = %label, task = %task, error = %format!("{e:#}"), "cannot rethrottle"),
        }
    }
    tracing::info!(pair = %label, task = %task, "reattaching to the reindex task");
    task
}

/// Reads the task's status every [`POLL`] and records its progress until it is done (`true`),
/// cancelled (`false`) or failed; a task the cluster forgot is started again.
async fn follow(
    ctx: &Ctx,
    store: &Store,
    pair: usize,
    cp: &mut SliceCheckpoint,
    mut task_id: String,
    copied: &AtomicU64,
    cancel: &CancellationToken,
) -> anyhow::Result<bool> {
    let info = &ctx.migration.pairs[pair];
    let label = format!("{}->{}", info.source, info.target);
    let mut unreachable_since: Option<Instant> = None;
    loop {
        let state = tokio::select! {
            _ = cancel.cancelled() => return Ok(false),
            s = task::state(runner(ctx), &task_id) => s?,
        };
        if !matches!(state, TaskState::Unreachable(_)) {
            unreachable_since = None;
        }
        match state {
            TaskState::Unreachable(why) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > runner(ctx).unreachable_timeout() {
                    bail!(
                        "the {} cluster {} did not answer about reindex task {task_id} for {:?}: {why}",
                        runner(ctx).role(),
                        runner(ctx).url,
                        runner(ctx).unreachable_timeout()
                    );
                }
                tracing::warn!(pair = %label, task = %task_id, error = %why, "cannot read the reindex task, retrying");
            }
            TaskState::Running(c) => {
                tracing::debug!(task = %task_id, copied = c.copied(), total = c.total, "reindex task running");
                record(ctx, store, pair, cp, c, false)?;
                copied.store(cp.copied, Ordering::Relaxed);
            }
            TaskState::Done(c) => {
                record(ctx, store, pair, cp, c, true)?;
                return Ok(true);
            }
            TaskState::Vanished => {
                tracing::warn!(pair = %label, task = %task_id, "the cluster forgot the reindex task; starting it again");
                cp.restarts += 1;
                task_id = start(ctx, store, pair, cp).await?;
                continue;
            }
            TaskState::Failed(line) => {
                // Nothing of a failed task counts as copied; a rerun starts a new task.
                *cp = SliceCheckpoint { restarts: cp.restarts + 1, updated_at: Some(Utc::now()), ..Default::default() };
                store.put(&slice_key(pair, 0), cp)?;
                bail!(
                    "the reindex of {} into {} (task {task_id} on the {} cluster {}) failed: {line}",
                    info.source,
                    info.target,
                    runner(ctx).role(),
                    runner(ctx).url
                );
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(false),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Refreshes the source (every write acknowledged before `init` must be in the task's view),
/// starts the task and stores its id.
async fn start(ctx: &Ctx, store: &Store, pair: usize, cp: &mut SliceCheckpoint) -> anyhow::Result<String> {
    let info = &ctx.migration.pairs[pair];
    super::refresh(&ctx.source, &info.source).await?;
    let (body, slices) = if ctx.migration.cross_cluster {
        // The API cannot slice a reindex from remote.
        (remote_body(ctx, &info.source, &info.target), 1)
    } else {
        let shards = shard_count(&ctx.source, &info.source).await?;
        (local_body(ctx, &info.source, &info.target), shards)
    };
    let rps = requests_per_second(ctx);
    let id = task::start(runner(ctx), &body, slices, rps)
        .await
        .with_context(|| format!("cannot start the reindex of {} into {}", info.source, info.target))?;
    *cp = SliceCheckpoint {
        task: Some(id.clone()),
        requests_per_second: Some(rps),
        started_at: Some(Utc::now()),
        restarts: cp.restarts,
        resumes: cp.resumes,
        ..Default::default()
    };
    store.put(&slice_key(pair, 0), cp)?;
    tracing::info!(pair = %format!("{}->{}", info.source, info.target), task = %id, slices, "reindex task started");
    Ok(id)
}

fn local_body(ctx: &Ctx, source: &str, target: &str) -> Value {
    json!({
        "conflicts": "proceed",
        "source": { "index": source, "size": ctx.recipe.snapshot.batch_size },
        "dest": { "index": target, "version_type": "external" },
    })
}

/// The target pulls from the source's first URL, with the source's credentials.
fn remote_body(ctx: &Ctx, source: &str, target: &str) -> Value {
    let cfg = &ctx.recipe.source;
    let url = cfg.url.first().map(|u| u.trim_end_matches('/')).unwrap_or_default();
    let mut remote = json!({ "host": url, "socket_timeout": "5m", "connect_timeout": "30s" });
    if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
        remote["username"] = json!(user);
        remote["password"] = json!(password.expose());
    }
    if let Some(key) = &cfg.api_key {
        remote["headers"] = json!({ "Authorization": format!("ApiKey {}", key.expose()) });
    }
    json!({
        "conflicts": "proceed",
        "source": { "remote": remote, "index": source, "size": ctx.recipe.snapshot.batch_size },
        "dest": { "index": target, "version_type": "external" },
    })
}

/// The index's primary shard count: one slice per shard.
pub(crate) async fn shard_count(cluster: &Cluster, index: &str) -> anyhow::Result<u32> {
    let path = format!("/{index}/_settings/index.number_of_shards");
    let v: Value = cluster
        .json(Method::Get, &path, &[("flat_settings", "true")], None)
        .await
        .with_context(|| format!("the {} cluster {} index {index}", cluster.role(), cluster.url))?;
    let n = v
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|i| i["settings"]["index.number_of_shards"].as_str())
        .and_then(|n| n.parse().ok());
    match n {
        Some(n) if n > 0 => Ok(n),
        _ => bail!("the {} cluster {} index {index}: no number_of_shards in {v}", cluster.role(), cluster.url),
    }
}

/// Stores the task's counts and feeds the snapshot metrics.
fn record(
    ctx: &Ctx,
    store: &Store,
    pair: usize,
    cp: &mut SliceCheckpoint,
    c: Counts,
    done: bool,
) -> anyhow::Result<()> {
    let label = ctx.migration.pairs[pair].source.clone();
    // A slice that finishes between the two reads of a sliced task's status is missed once:
    // counts only grow while a task runs.
    let c = if done {
        c
    } else {
        Counts {
            total: c.total.max(cp.total.unwrap_or(0)),
            created: c.created,
            updated: c.updated,
            version_conflicts: c.version_conflicts,
            noops: c.noops,
        }
    };
    if !done && c.copied() < cp.copied {
        return Ok(());
    }
    let (applied, stale) = (c.applied(), c.version_conflicts + c.noops);
    metrics::counter!(SNAPSHOT_DOCS, "pair" => label.clone(), "result" => "applied")
        .increment(applied.saturating_sub(cp.applied));
    metrics::counter!(SNAPSHOT_DOCS, "pair" => label.clone(), "result" => "stale")
        .increment(stale.saturating_sub(cp.stale));
    cp.applied = applied;
    cp.stale = stale;
    cp.copied = c.copied();
    if c.total > 0 {
        cp.total = Some(c.total);
    }
    cp.done = done;
    cp.updated_at = Some(Utc::now());
    store.put(&slice_key(pair, 0), cp)?;
    let total = cp.total.unwrap_or(ctx.migration.pairs[pair].source_docs);
    if done || total > 0 {
        let ratio = if done { 1.0 } else { (cp.copied as f64 / total as f64).min(1.0) };
        metrics::gauge!(SNAPSHOT_PROGRESS, "pair" => label).set(ratio);
    }
    Ok(())
}

/// Cancels the running `_reindex` tasks recorded in the snapshot state (for `cancel`).
pub(crate) async fn cancel_tasks(
    runner: &Cluster,
    checkpoints: &[((usize, u32), SliceCheckpoint)],
) -> anyhow::Result<()> {
    for (_, cp) in checkpoints.iter().filter(|(_, c)| !c.done) {
        if let Some(t) = &cp.task {
            task::cancel(runner, t).await?;
            println!("cancelled reindex task {t}");
        }
    }
    Ok(())
}
