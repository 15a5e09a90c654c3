//! `rollover`: the switch, exactly as DESIGN.md states it.
//!
//! 1. Preconditions: every snapshot slice done, consumer lag under `max_lag`.
//! 2. Restore the target's production settings and wait for its shards to be allocated.
//!    Reconcile (`[rollover] reconcile`, on by default): a full pass, then one over the
//!    documents changed during it, both before the block.
//! 3. Block writes on the source (the producer library retries, the application waits).
//! 4. After `grace`, read the topic's end offsets and wait until the consumer has applied
//!    everything before them. Recorded deletes are re-applied before the block, and again
//!    here if a target node restarted since (see `tombstones`). Reconcile the documents
//!    changed since the last pass before the block.
//! 5. One `_aliases` request moves the alias to the target as its write index.
//! 6. Record and print the write pause (block → swap). Cross-cluster, once no consumer
//!    replays any more, leave the switch marker on the source (`marker`).
//!
//! Any failure after the block, or SIGINT/SIGTERM before the swap, lifts it again and leaves
//! the migration resumable (`steps` lists the steps from the block on, with their undo). A
//! rerun after a kill reads where the alias is before it trusts the record (`recover`). The
//! consumer may run in another process (`run` or `consume`): its checkpoints are read from
//! its state; with none running, rollover replays in-process.

mod alias;
mod marker;
pub(crate) mod recover;
mod steps;
mod tombstones;

use crate::pipeline::replay::loss;
use crate::runtime::context::{Common, Ctx};
use crate::state::{running_pid, Migration, ReconcileRecord, RolloverRecord, State};
use anyhow::{bail, Context as _};
use chrono::Utc;
use indexferry_common::es::Method;
use indexferry_common::kafka::{OffsetReader, Offsets};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use steps::Driver;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Where the consumer is.
enum Consumer {
    /// Another process: read its checkpoints from the state.
    External,
    /// Started here for the rollover.
    InProcess {
        positions: watch::Receiver<Offsets>,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    },
}

impl Consumer {
    async fn positions(&mut self, ctx: &Ctx) -> anyhow::Result<Offsets> {
        match self {
            Consumer::External => {
                let dir = ctx.dir.clone();
                let cp = tokio::task::spawn_blocking(move || dir.read_replay()).await??;
                Ok(cp.positions(&ctx.migration.start_offsets, []))
            }
            Consumer::InProcess { positions, task, .. } => {
                if task.is_finished() {
                    bail!("the in-process consumer stopped");
                }
                Ok(positions.borrow().clone())
            }
        }
    }

    async fn stop(self) {
        if let Consumer::InProcess { cancel, task, .. } = self {
            cancel.cancel();
            let _ = task.await;
        }
    }
}

fn lag(end: &Offsets, at: &Offsets) -> u64 {
    end.iter().map(|(p, e)| (e - at.get(p).copied().unwrap_or(0)).max(0) as u64).sum()
}

pub async fn rollover(common: &Common, name: &str) -> anyhow::Result<()> {
    // From the start: a signal must never kill the process between the block and the swap.
    let signal = CancellationToken::new();
    crate::runtime::shutdown::install(signal.clone());
    let (_lock, ctx) = Ctx::load_locked(common, name, "rollover").await?;
    let ctx = Arc::new(ctx);
    let m = &ctx.migration;
    if m.state == State::RolledOver {
        // Killed after the record and before the marker: the marker is still owed.
        if !marker::present(&ctx).await? {
            marker::write(&ctx).await?;
            println!("the switch marker was missing on the source and is now written");
            return Ok(());
        }
        bail!("migration {name:?} was already rolled over");
    }
    // A rollover killed at `rolling_over`: the alias says whether it had switched.
    if m.state == State::RollingOver {
        if recover::switch(&ctx.target, m).await? == recover::Switch::Done {
            return recover::finish_switched(&ctx).await;
        }
        // Not switched: the block a killed run left would hold the application's writes
        // through the whole pre-block phase (lag wait, sweep, reconcile): lifted first.
        lift_inherited_block(&ctx).await?;
    }
    let mut driver = Driver::new(&ctx, signal, false);
    if let Err(e) = check_snapshot(&ctx) {
        return Err(fail(&ctx, driver.undo(e).await));
    }
    if let Err(e) = check_events(&ctx).await {
        return Err(fail(&ctx, driver.undo(e).await));
    }
    if let Err(e) = check_matched(&ctx).await {
        return Err(fail(&ctx, driver.undo(e).await));
    }

    let mut consumer = match running_pid(&ctx.dir, "consume") {
        Some(pid) => {
            tracing::info!(pid, "consumer running in another process");
            Consumer::External
        }
        None => {
            tracing::info!("no consumer running: replaying in this process for the rollover");
            let (tx, rx) = watch::channel(Offsets::new());
            let cancel = CancellationToken::new();
            let task = tokio::spawn(
                crate::pipeline::replay::run(ctx.clone(), cancel.clone(), Some(tx), Default::default())
                    .in_current_span(),
            );
            Consumer::InProcess { positions: rx, cancel, task }
        }
    };
    let result = match added_pair_pending(&ctx, &consumer) {
        Ok(()) => protocol(&ctx, &mut consumer, &mut driver).await,
        Err(e) => Err(e),
    };
    consumer.stop().await;
    let record = match result {
        Ok(r) => r,
        Err(e) => return Err(fail(&ctx, driver.undo(e).await)),
    };

    let m = ctx.dir.update_migration(|m| {
        m.state = State::RolledOver;
        m.rollover = Some(record.clone());
        m.last_error = None;
    })?;
    marker::write(&ctx).await.context("the switch happened, but the switch marker could not be written")?;
    print_result(&m, &record, &ctx.target.url);
    Ok(())
}

/// Records a failed rollover: back to `initialized` (the block is lifted by then), unless
/// whether the swap happened is unknown, which only the alias can tell a rerun.
fn fail(ctx: &Ctx, e: anyhow::Error) -> anyhow::Error {
    let msg = format!("{e:#}");
    let unknown = e.downcast_ref::<steps::SwapUnknown>().is_some();
    let _ = ctx.dir.update_migration(|m| {
        if m.state == State::RollingOver && !unknown {
            m.state = State::Initialized;
        }
        m.last_error = Some(format!("rollover: {msg}"));
    });
    e
}

fn check_snapshot(ctx: &Ctx) -> anyhow::Result<()> {
    let slices = ctx.dir.read_snapshot()?;
    let want = crate::pipeline::snapshot::parts_per_pair(&ctx.migration, &ctx.recipe);
    for (i, p) in ctx.migration.pairs.iter().enumerate() {
        let done = slices.iter().filter(|((pair, _), cp)| *pair == i && cp.done).count();
        if done < want {
            bail!(
                "snapshot of {} is not complete ({done} of {want} slices done); run `indexferry migration run {}` until it is",
                p.source,
                ctx.migration.name
            );
        }
    }
    Ok(())
}

/// Refuses a rollover while an index matching a pattern is neither migrated nor excluded:
/// it would be left behind on the source, its alias moved without it.
pub(super) async fn check_matched(ctx: &Ctx) -> anyhow::Result<()> {
    let unmigrated = crate::recipe::patterns::unmigrated(&ctx.source, &ctx.recipe, &ctx.migration).await?;
    if let Some((index, pattern)) = unmigrated.first() {
        bail!(
            "rollover refused: {}",
            crate::recipe::patterns::describe_unmigrated(&ctx.migration.name, index, pattern)
        );
    }
    Ok(())
}

/// A consumer in another process has not yet gone back for a pair added since it started
/// (it does within a second or two): its checkpoint does not cover that pair yet.
fn added_pair_pending(ctx: &Ctx, consumer: &Consumer) -> anyhow::Result<()> {
    if !matches!(consumer, Consumer::External) {
        return Ok(());
    }
    if let Some(p) = ctx.dir.read_replay()?.pending_rewind(&ctx.migration.pairs) {
        bail!(
            "the running consumer has not taken in the added pair {} -> {} yet; retry in a few seconds",
            p.source,
            p.target
        );
    }
    Ok(())
}

/// Refuses a rollover while events are missing from the replay: deleted from the topic
/// before they were replayed. Losses accepted earlier need a reconcile to repair what they
/// changed: the rollover's own, or a clean pass that started after the last of them.
async fn check_events(ctx: &Ctx) -> anyhow::Result<()> {
    let cp = ctx.dir.read_replay()?;
    let marks = crate::runtime::context::watermarks(&ctx.recipe, Duration::from_secs(10))
        .await
        .context("cannot read the topic's offsets")?;
    let losses = loss::find(&cp.positions(&ctx.migration.start_offsets, marks.keys().copied()), &marks);
    if !losses.is_empty() {
        bail!("rollover refused: {}", loss::describe(&ctx.recipe.kafka.topic, &losses));
    }
    let gaps = crate::state::GapStatus::read(&ctx.dir, ctx.migration.reconciled.as_ref())?;
    if gaps.since_reconcile > 0 && !ctx.recipe.rollover.reconcile {
        bail!(
            "rollover refused: capture proxies reported {} gaps since the last reconcile pass (writes the source may \
             hold without their change events), and [rollover] reconcile is off: run `indexferry migration reconcile {}` \
             first, or set [rollover] reconcile = true",
            gaps.since_reconcile,
            ctx.migration.name
        );
    }
    let Some(last) = cp.accepted_losses.iter().max_by_key(|l| l.at) else { return Ok(()) };
    if ctx.recipe.rollover.reconcile {
        tracing::info!(
            ranges = cp.accepted_losses.len(),
            "events were lost and skipped: the rollover's reconcile repairs their writes"
        );
        return Ok(());
    }
    let reconciled_since = ctx.migration.reconciled.as_ref().is_some_and(|r| r.clean() && r.started_at > last.at);
    if !reconciled_since {
        bail!(
            "rollover refused: {} ranges of events were lost and skipped (--accept-lost-events), the last on partition {} \
             offsets {}..{} at {}; the target may lack their writes and no clean reconcile pass started after that: \
             run `indexferry migration reconcile {}`, or set [rollover] reconcile = true",
            cp.accepted_losses.len(),
            last.partition,
            last.from,
            last.to,
            last.at.to_rfc3339(),
            ctx.migration.name
        );
    }
    Ok(())
}

async fn protocol(ctx: &Ctx, consumer: &mut Consumer, driver: &mut Driver<'_>) -> anyhow::Result<RolloverRecord> {
    let reader = Arc::new(OffsetReader::new(&ctx.recipe.kafka, &ctx.recipe.kafka.topic)?);
    let step = |name: &'static str| tracing::info_span!("rollover_step", step = name);

    // 1. Lag under the threshold (an in-process consumer gets time to catch up).
    wait_for_lag(ctx, consumer, &reader).instrument(step("lag")).await?;

    // 2. Production settings on the targets, shards allocated before the switch.
    production_settings(ctx).instrument(step("settings")).await?;

    // Deletes recorded by the replay go out once more: a target restart may have let an
    // older copy back in. Before the block, so it costs the write pause nothing.
    let started = tombstones::target_started(ctx).await?;
    let mut swept = tombstones::sweep(ctx).instrument(step("sweep_before_block")).await?;
    if swept.tombstones > 0 {
        tracing::info!(deletes = swept.tombstones, resurrected = swept.resurrected, "re-applied recorded deletes");
    }

    // Writes whose events never arrived are repaired before the block; the pause then only
    // compares the documents changed since (the `reconcile` step).
    let reconciled = match ctx.recipe.rollover.reconcile {
        true => Some(reconcile_before_block(ctx).instrument(step("reconcile_before_block")).await?),
        false => None,
    };

    // 3-5. Block writes, grace, drain, reconcile, swap (steps.rs).
    let switched = driver.switch_over(consumer, &reader, started, &mut swept, reconciled.as_ref()).await?;
    let pause = switched.blocked_at.elapsed();

    // 6. After the switch: tombstones expire as the production settings say again, and a
    // target without pipelines drops the `_none` it loaded under.
    restore_gc_deletes(ctx).await;
    for p in ctx.migration.pairs.iter().filter(|p| crate::recipe::pipelines::named(&p.production_settings).is_empty()) {
        if let Err(e) = ctx.target.put_settings(&p.target, crate::recipe::pipelines::production(p)).await {
            tracing::warn!(index = %p.target, error = %e, "could not reset the pipeline settings");
        }
    }
    Ok(RolloverRecord {
        at: Utc::now(),
        write_pause_ms: pause.as_millis() as u64,
        grace_ms: switched.grace.as_millis() as u64,
        drain_ms: switched.drain.as_millis() as u64,
        end_offsets: switched.end,
        deletes_reapplied: swept.tombstones,
        resurrections_undone: swept.resurrected,
        finished_after_interruption: false,
        reconciled: reconciled.is_some(),
        reconcile_repaired_before: reconciled.as_ref().map_or(0, |r| r.repaired),
        reconcile_repaired_in_pause: switched.in_pause.repaired,
        reconcile_changed_docs: switched.in_pause.changed,
        reconcile_pause_ms: switched.in_pause.took.as_millis() as u64,
        reconcile_recounted: switched.in_pause.recounted,
    })
}

/// Waits until the consumer is within `rollover.max_lag` of the topic's end; an external
/// consumer is not waited for, an in-process one for `drain_timeout`.
async fn wait_for_lag(ctx: &Ctx, consumer: &mut Consumer, reader: &Arc<OffsetReader>) -> anyhow::Result<()> {
    let r = &ctx.recipe.rollover;
    let deadline = Instant::now() + r.drain_timeout;
    loop {
        let reader = reader.clone();
        let end = tokio::task::spawn_blocking(move || reader.end_offsets(Duration::from_secs(10)))
            .await?
            .context("cannot read the topic's end offsets")?;
        let behind = lag(&end, &consumer.positions(ctx).await?);
        if behind <= r.max_lag {
            return Ok(());
        }
        if matches!(consumer, Consumer::External) || Instant::now() > deadline {
            bail!("consumer lag is {behind} events, over rollover.max_lag = {}; let it catch up first", r.max_lag);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The targets' production replicas and refresh interval, shards allocated and refreshed,
/// before the switch; no pipeline until the swap (an earlier rollover may have set them).
/// The migration's gc_deletes again too: a rollover killed while it wrote back documents whose
/// version went backwards (`reconcile::reset`) leaves it at 0; the sweep that follows undoes
/// what slipped in meanwhile, as after a target restart.
async fn production_settings(ctx: &Ctx) -> anyhow::Result<()> {
    let m = &ctx.migration;
    let targets: Vec<&str> = m.pairs.iter().map(|p| p.target.as_str()).collect();
    for p in &m.pairs {
        let mut restore = serde_json::Map::new();
        for key in ["index.number_of_replicas", "index.refresh_interval"] {
            restore.insert(key.into(), p.production_settings.get(key).cloned().unwrap_or(Value::Null));
        }
        restore.insert("index.gc_deletes".into(), json!(ctx.recipe.rollover.gc_deletes));
        if let Value::Object(none) = crate::recipe::pipelines::none() {
            restore.extend(none);
        }
        ctx.target.put_settings(&p.target, Value::Object(restore)).await?;
    }
    wait_for_replicas(ctx, &targets).await?;
    ctx.target.json::<Value>(Method::Post, &format!("/{}/_refresh", targets.join(",")), &[], None).await?;
    Ok(())
}

/// Lifts the write block a killed rollover left on the sources, and says so.
async fn lift_inherited_block(ctx: &Ctx) -> anyhow::Result<()> {
    let sources: Vec<&str> = ctx.migration.pairs.iter().map(|p| p.source.as_str()).collect();
    ctx.source
        .put_settings(&sources.join(","), json!({ "index.blocks.write": null }))
        .await
        .context("cannot lift the write block an interrupted rollover left on the source")?;
    ctx.dir.update_migration(|m| m.state = State::Initialized)?;
    println!(
        "lifted the write block an interrupted rollover left on {}: it is set again for the pause",
        sources.join(",")
    );
    Ok(())
}

/// Waits (30 s at most) for the targets' shards, replicas included, to be allocated; one
/// line on why not, and what to set, when they are not.
async fn wait_for_replicas(ctx: &Ctx, targets: &[&str]) -> anyhow::Result<()> {
    let path = format!("/_cluster/health/{}", targets.join(","));
    let query = [("wait_for_status", "green"), ("timeout", "30s")];
    // A wait that times out answers 408 with the health in the body.
    let (status, body) = ctx.target.request_raw(Method::Get, &path, &query, None).await?;
    let health: Value = serde_json::from_slice(&body).unwrap_or_default();
    if status == 200 && health["timed_out"] != json!(true) {
        return Ok(());
    }
    if status != 200 && status != 408 {
        bail!("the target cluster answered {status} to GET {path}: {}", String::from_utf8_lossy(&body));
    }
    let data_nodes = health["number_of_data_nodes"].as_u64().unwrap_or(0);
    let mut asks = vec![];
    for p in &ctx.migration.pairs {
        let replicas = p
            .production_settings
            .get("index.number_of_replicas")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .unwrap_or(1);
        if replicas + 1 > data_nodes {
            asks.push(format!("{} asks for {replicas} replica(s)", p.target));
        }
    }
    let why = match asks.is_empty() {
        true => "see GET _cluster/allocation/explain on the target".to_owned(),
        false => format!(
            "{} and the target cluster has {data_nodes} data node(s), which cannot hold a primary and its replica apart: \
             add data nodes, or cancel and init again with settings = {{ number_of_replicas = {} }} in the pair",
            asks.join(", "),
            data_nodes.saturating_sub(1)
        ),
    };
    bail!(
        "the target's replicas are not allocated after 30s (health {}, {} unassigned shards): {why}",
        health["status"].as_str().unwrap_or("unknown"),
        health["unassigned_shards"]
    )
}

/// What reconcile did before the block, for the pause to go on from.
pub(super) struct PreBlock {
    pub repaired: u64,
    pub record: ReconcileRecord,
    /// The full pass's pace, documents read (both sides) per second: whether comparing a pair
    /// id by id again fits what is left of the pause (`steps::recount`).
    pub docs_per_second: f64,
}

/// A full reconcile pass before the block, then one over the documents changed during it
/// (so that the pause has fewer to compare); refuses to go on if a repair failed.
async fn reconcile_before_block(ctx: &Ctx) -> anyhow::Result<PreBlock> {
    let limit = ctx.target.unreachable_timeout();
    let (full, record) = crate::pipeline::reconcile::full(ctx, 10, limit).await?;
    println!("reconcile before the block: {} ({} repaired) in {:.1}s", full.found(), full.repaired, full.seconds);
    let read: u64 = full.pairs.iter().map(|p| p.source_docs + p.target_docs).sum();
    let (again, record) = crate::pipeline::reconcile::narrow(ctx, &record, limit).await?;
    let failed = full.failed + again.failed;
    if failed > 0 {
        bail!("reconcile: the target refused {failed} repairs; see the log, fix them and run rollover again");
    }
    Ok(PreBlock {
        repaired: full.repaired + again.repaired,
        record,
        docs_per_second: read as f64 / full.seconds.max(0.001),
    })
}

/// Tombstones expire as the target's production settings say again, and as the source had
/// them.
async fn restore_gc_deletes(ctx: &Ctx) {
    crate::pipeline::source_tombstones::restore(
        &ctx.source,
        crate::pipeline::source_tombstones::of_pairs(&ctx.migration.pairs),
    )
    .await;
    for p in &ctx.migration.pairs {
        let gc = p.production_settings.get("index.gc_deletes").cloned().unwrap_or(Value::Null);
        if let Err(e) = ctx.target.put_settings(&p.target, json!({ "index.gc_deletes": gc })).await {
            tracing::warn!(index = %p.target, error = %e, "could not restore index.gc_deletes");
        }
    }
}

fn print_result(m: &Migration, r: &RolloverRecord, target_url: &str) {
    for p in &m.pairs {
        let aliases: Vec<&str> = p.moved_aliases().into_iter().map(|(a, _)| a).collect();
        match aliases.is_empty() {
            true => println!("rolled over: {} (was {}; no alias)", p.target, p.source),
            false => println!("rolled over: alias {} -> {} (was {})", aliases.join(" "), p.target, p.source),
        }
    }
    println!("write pause: {} ms (grace {} ms, drain {} ms)", r.write_pause_ms, r.grace_ms, r.drain_ms);
    if r.reconciled {
        println!(
            "reconcile: repaired {} before the block and {} in the pause ({} changed documents compared in {} ms)",
            r.reconcile_repaired_before, r.reconcile_repaired_in_pause, r.reconcile_changed_docs, r.reconcile_pause_ms
        );
        if r.reconcile_recounted > 0 {
            println!(
                "reconcile: counts differed inside the pause on {} pairs (deletes made without an event): compared id by id",
                r.reconcile_recounted
            );
        }
    }
    if r.deletes_reapplied > 0 {
        println!(
            "re-applied {} recorded deletes before the switch; {} documents had come back and were deleted again",
            r.deletes_reapplied, r.resurrections_undone
        );
    }
    if m.cross_cluster {
        println!(
            "the alias now lives on the target cluster {target_url}; the source stays write-blocked so no write goes astray, \
             and says so in its mapping's _meta ({}): producers configured for that cluster follow by themselves, \
             point any other writer at it",
            indexferry_schemas::switch::KEY
        );
        if m.pairs.iter().any(|p| p.pattern.is_some()) {
            println!(
                "new indices of the migrated patterns on the source cluster are created write-blocked from now on: stop the \
                 ILM policies, rollover jobs and daily jobs that create them there, and run them on the target cluster"
            );
        }
    } else {
        println!(
            "the source index stays write-blocked, its mapping's _meta names the target: producers writing to it by name \
             follow; delete it once you no longer need it"
        );
    }
}
