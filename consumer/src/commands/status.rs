//! `status`: where a migration stands, from its state and the topic's end offsets. Reads
//! only; works while the workers run and when the clusters are down.

use crate::pipeline::replay::loss::{self, Loss};
use crate::runtime::context::{stored_recipe, Common};
use crate::state::{running_pid, Migration, PairInfo, ReplayCheckpoint, SliceCheckpoint, StateDir};
use crate::state::{AcceptedLoss, GapStatus};
use chrono::Utc;
use indexferry_common::config::Recipe;
use indexferry_common::kafka::{ends, watermarks, Offsets};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Serialize)]
pub struct Status {
    pub name: String,
    pub state: String,
    pub cross_cluster: bool,
    pub source: String,
    pub target: String,
    pub pairs: Vec<PairStatus>,
    /// `search` or `reindex`, as `init` chose.
    pub snapshot_method: String,
    /// The version rule every write carries (`source` or `seq_no`).
    pub versions: String,
    pub snapshot_worker_pid: Option<i32>,
    pub consumer_pid: Option<i32>,
    pub replay: ReplayStatus,
    pub partitions: Vec<PartitionStatus>,
    /// Partitions whose next events Kafka deleted before they were replayed: the consumer
    /// stops on them and rollover refuses.
    pub lost_events: Vec<Loss>,
    /// Losses skipped with `--accept-lost-events`.
    pub accepted_losses: Vec<AcceptedLoss>,
    pub kafka_error: Option<String>,
    /// What the running workers cannot reach right now (they keep retrying).
    pub unreachable: Vec<crate::runtime::health::Problem>,
    pub last_rollover: Option<crate::state::RolloverRecord>,
    pub last_reconcile: Option<crate::state::ReconcileRecord>,
    pub last_error: Option<String>,
    pub note: Option<String>,
    /// Indices matching a recipe pattern that are neither migrated nor excluded (read from
    /// the source cluster; empty when it does not answer within seconds).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unmigrated: Vec<Unmigrated>,
    /// A pair `add`ed that the running consumer has not taken in yet (it does within a
    /// second or two), as `source -> target`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_pending: Option<String>,
    /// Capture proxies' gap notices of this migration (`state::Gap`).
    pub proxy_gaps: GapStatus,
    /// Whether `rollover` would start now, and if not, the first reason it would refuse.
    pub ready: Readiness,
}

#[derive(Debug, Serialize)]
pub struct Unmigrated {
    pub index: String,
    pub pattern: String,
}

#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub why_not: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PairStatus {
    pub source: String,
    pub target: String,
    pub alias: String,
    pub copied: u64,
    pub total: u64,
    pub percent: f64,
    pub docs_per_s: Option<f64>,
    pub eta_s: Option<u64>,
    pub done: bool,
    pub applied: u64,
    pub stale: u64,
    pub dead_lettered: u64,
    pub resumes: u64,
    pub recopied: u64,
    pub restarts: u64,
}

#[derive(Debug, Serialize)]
pub struct ReplayStatus {
    pub applied: u64,
    pub stale: u64,
    pub dead_lettered: u64,
    pub ignored: u64,
    /// Ignored events of indices outside the migration, per index (`*`: beyond 100 names).
    pub ignored_indices: std::collections::BTreeMap<String, u64>,
    /// Of `ignored`: events of other tenants' indices (without the recipe's prefix).
    pub other_prefix: u64,
    pub lag_messages: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct PartitionStatus {
    pub partition: i32,
    pub position: i64,
    pub end: Option<i64>,
    pub lag_messages: Option<i64>,
    pub lag_seconds: Option<f64>,
}

pub fn collect(common: &Common, name: &str) -> anyhow::Result<Status> {
    let dir = StateDir::new(&common.state_dir, name);
    let m = dir.load_migration()?;
    let recipe = stored_recipe(&m, &common.overrides)?;
    let slices = dir.read_snapshot()?;
    let want = crate::pipeline::snapshot::parts_per_pair(&m, &recipe);
    let pairs = m
        .pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let cps: Vec<&SliceCheckpoint> =
                slices.iter().filter(|((pair, _), _)| *pair == i).map(|(_, c)| c).collect();
            pair_status(p, &cps, want)
        })
        .collect();

    let cp = dir.read_replay()?;
    let kafka = replay_lag(&recipe, &m, &cp);
    let note = cross_cluster_note(&m, &recipe);
    let mut s = Status {
        name: m.name.clone(),
        state: m.state.as_str().to_owned(),
        cross_cluster: m.cross_cluster,
        source: m.source_server.clone(),
        target: m.target_server.clone(),
        pairs,
        snapshot_method: m.snapshot_method.as_str().to_owned(),
        versions: m.versions.as_str().to_owned(),
        snapshot_worker_pid: running_pid(&dir, "snapshot"),
        consumer_pid: running_pid(&dir, "consume"),
        replay: ReplayStatus {
            applied: cp.applied,
            stale: cp.stale,
            dead_lettered: cp.dead_lettered,
            ignored: cp.ignored,
            ignored_indices: cp.ignored_indices.clone(),
            other_prefix: cp.other_prefix,
            lag_messages: kafka.lag_total,
        },
        partitions: kafka.partitions,
        lost_events: kafka.lost_events,
        accepted_losses: cp.accepted_losses.clone(),
        kafka_error: kafka.error,
        unreachable: crate::runtime::health::read(&dir.path()),
        last_rollover: m.rollover.clone(),
        last_reconcile: m.reconciled.clone(),
        last_error: m.last_error.clone().or(cp.last_error.clone()),
        note,
        unmigrated: if m.state == crate::state::State::Initialized { unmigrated(&m, &recipe, common) } else { vec![] },
        added_pending: None,
        proxy_gaps: GapStatus::read(&dir, m.reconciled.as_ref())?,
        ready: Readiness { ready: false, why_not: None },
    };
    if s.consumer_pid.is_some() {
        s.added_pending = cp.pending_rewind(&m.pairs).map(|p| format!("{} -> {}", p.source, p.target));
    }
    let why_not = why_not_ready(&s, &recipe.rollover);
    s.ready = Readiness { ready: why_not.is_none(), why_not };
    Ok(s)
}

/// A pair's snapshot progress, from its slices' checkpoints (`want` of them when done).
fn pair_status(p: &PairInfo, cps: &[&SliceCheckpoint], want: usize) -> PairStatus {
    let sum = |f: fn(&SliceCheckpoint) -> u64| cps.iter().map(|c| f(c)).sum::<u64>();
    let copied = sum(|c| c.copied);
    let done = cps.iter().filter(|c| c.done).count() >= want;
    let start = cps.iter().filter_map(|c| c.started_at).min();
    let last = cps.iter().filter_map(|c| c.updated_at).max();
    let rate = match (start, last) {
        (Some(s), Some(l)) if l > s => Some(copied as f64 / ((l - s).num_milliseconds() as f64 / 1000.0)),
        _ => None,
    };
    let total = p.source_docs.max(copied);
    PairStatus {
        source: p.source.clone(),
        target: p.target.clone(),
        alias: p.alias.clone(),
        copied,
        total,
        percent: if done {
            100.0
        } else if total == 0 {
            0.0
        } else {
            (copied as f64 * 100.0 / total as f64).min(100.0)
        },
        docs_per_s: rate.map(|r| r.round()),
        eta_s: if done {
            Some(0)
        } else {
            rate.filter(|r| *r > 0.0).map(|r| (total.saturating_sub(copied) as f64 / r) as u64)
        },
        done,
        applied: sum(|c| c.applied),
        stale: sum(|c| c.stale),
        dead_lettered: sum(|c| c.rejected),
        resumes: sum(|c| c.resumes),
        recopied: sum(|c| c.recopied),
        restarts: sum(|c| c.restarts),
    }
}

/// Where the replay stands against the topic.
struct ReplayLag {
    partitions: Vec<PartitionStatus>,
    lost_events: Vec<Loss>,
    /// The lag of all partitions, when Kafka answered.
    lag_total: Option<u64>,
    /// Why Kafka did not answer.
    error: Option<String>,
}

/// Reads the topic's watermarks (within seconds) and measures each partition's position
/// against them: its lag, and the events deleted before they were replayed.
fn replay_lag(recipe: &Recipe, m: &Migration, cp: &ReplayCheckpoint) -> ReplayLag {
    let (marks, error) = match watermarks(&recipe.kafka, &recipe.kafka.topic, Duration::from_secs(5)) {
        Ok(w) => (Some(w), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let positions = cp.positions(&m.start_offsets, marks.iter().flat_map(|w| w.keys().copied()));
    let lost_events = marks.as_ref().map(|w| loss::find(&positions, w)).unwrap_or_default();
    let ends = marks.as_ref().map(ends);
    let partitions = partition_statuses(&positions, ends.as_ref(), cp);
    let lag_total = ends.as_ref().map(|_| partitions.iter().filter_map(|p| p.lag_messages).sum::<i64>() as u64);
    ReplayLag { partitions, lost_events, lag_total, error }
}

/// Each partition's position, end and lag, in events and in seconds since its last event.
fn partition_statuses(positions: &Offsets, ends: Option<&Offsets>, cp: &ReplayCheckpoint) -> Vec<PartitionStatus> {
    let now = Utc::now().timestamp_millis();
    positions
        .iter()
        .map(|(p, pos)| {
            let end = ends.and_then(|e| e.get(p).copied());
            let lag = end.map(|e| (e - pos).max(0));
            let last = cp.partitions.get(p).and_then(|c| c.last_event_ms);
            PartitionStatus {
                partition: *p,
                position: *pos,
                end,
                lag_messages: lag,
                lag_seconds: lag.map(
                    |l| {
                        if l == 0 {
                            0.0
                        } else {
                            last.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0)
                        }
                    },
                ),
            }
        })
        .collect()
}

/// Across clusters: where the application must write, before and after the rollover.
fn cross_cluster_note(m: &Migration, recipe: &Recipe) -> Option<String> {
    m.cross_cluster.then(|| match m.state {
        crate::state::State::RolledOver => format!(
            "cross-cluster: the alias is on the target cluster {}; producers configured for it follow the switch marker, \
             other writers must point at it",
            recipe
                .target_cluster()
                .url
                .iter()
                .map(|u| indexferry_common::es::redact_url(u))
                .collect::<Vec<_>>()
                .join(",")
        ),
        _ => "cross-cluster: after rollover the application must point at the target cluster".to_owned(),
    })
}

/// Asks the source cluster which indices match a pattern and are not migrated, within a few
/// seconds (status also works while the clusters are down). Called off the async runtime.
fn unmigrated(
    m: &crate::state::Migration,
    recipe: &indexferry_common::config::Recipe,
    common: &Common,
) -> Vec<Unmigrated> {
    if !recipe.pairs.iter().any(|p| p.is_pattern()) {
        return vec![];
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else { return vec![] };
    let ask = async {
        let source = indexferry_common::es::Cluster::connect(
            &recipe.source,
            "source",
            common.connect_timeout.min(Duration::from_secs(3)),
        )
        .await?;
        crate::recipe::patterns::unmigrated(&source, recipe, m).await
    };
    match handle.block_on(tokio::time::timeout(Duration::from_secs(5), ask)) {
        Ok(Ok(found)) => found.into_iter().map(|(index, pattern)| Unmigrated { index, pattern }).collect(),
        Ok(Err(e)) => {
            tracing::debug!(error = %format!("{e:#}"), "cannot list the indices matching the patterns");
            vec![]
        }
        Err(_) => vec![],
    }
}

/// The first reason `rollover` would refuse now, in the order it checks them; `None` when
/// it would start. Worker problems count too: a rollover would meet them.
fn why_not_ready(s: &Status, rollover: &indexferry_common::config::RolloverConfig) -> Option<String> {
    let max_lag = rollover.max_lag;
    if s.state == crate::state::State::RolledOver.as_str() {
        return Some("already rolled over".into());
    }
    if let Some(u) = s.unmigrated.first() {
        return Some(crate::recipe::patterns::describe_unmigrated(&s.name, &u.index, &u.pattern));
    }
    if let Some(p) = s.pairs.iter().find(|p| !p.done) {
        return Some(format!("snapshot of {} at {:.1}%", p.source, p.percent));
    }
    if let Some(p) = &s.added_pending {
        return Some(format!("the running consumer has not taken in the added pair {p} yet (it does within seconds)"));
    }
    if let Some(l) = s.lost_events.first() {
        return Some(format!("{} events lost on partition {} before they were replayed", l.events(), l.partition));
    }
    // Skipped losses need a reconcile: the rollover's own, or a clean pass started since.
    if let Some(a) = s.accepted_losses.iter().max_by_key(|l| l.at) {
        let since = s.last_reconcile.as_ref().is_some_and(|r| r.clean() && r.started_at > a.at);
        if !rollover.reconcile && !since {
            return Some(format!(
                "events lost on partition {} (offsets {}..{}) were skipped and no clean reconcile pass ran since",
                a.partition, a.from, a.to
            ));
        }
    }
    if s.proxy_gaps.since_reconcile > 0 && !rollover.reconcile {
        return Some(format!(
            "{} gap notices of capture proxies since the last reconcile pass, and [rollover] reconcile is off: run \
             `reconcile`",
            s.proxy_gaps.since_reconcile
        ));
    }
    let Some(lag) = s.replay.lag_messages else {
        return Some(format!("kafka unreachable: {}", s.kafka_error.as_deref().unwrap_or("no answer")));
    };
    if lag > max_lag {
        return Some(format!("consumer lag {lag} events, over rollover.max_lag = {max_lag}"));
    }
    s.unreachable.first().map(|p| format!("{} unreachable: {}", p.what, p.error))
}

/// The readiness line of the table and of `--watch`.
pub fn readiness_line(r: &Readiness) -> String {
    match &r.why_not {
        None => "ready to roll over: yes".into(),
        Some(why) => format!("ready to roll over: no: {why}"),
    }
}

pub fn print(s: &Status) {
    print_header(s);
    println!();
    print_snapshot(s);
    println!();
    print_replay(s);
    print_problems(s);
    print_history(s);
    println!("  {}", readiness_line(&s.ready));
}

/// The migration's state, its clusters and its workers.
fn print_header(s: &Status) {
    println!("migration {}: {}", s.name, s.state);
    println!(
        "  {} -> {}{}, versions {}",
        s.source,
        s.target,
        if s.cross_cluster { " (cross-cluster)" } else { "" },
        s.versions
    );
    let pid = |p: Option<i32>| p.map_or("not running".to_owned(), |p| format!("running (pid {p})"));
    println!(
        "  snapshot worker ({}): {}   consumer: {}",
        s.snapshot_method,
        pid(s.snapshot_worker_pid),
        pid(s.consumer_pid)
    );
}

/// The snapshot table, a pair a line, and the indices a pattern matches that are not migrated.
fn print_snapshot(s: &Status) {
    println!(
        "  {:<40} {:>21} {:>7} {:>9} {:>8} {:>9} {:>7}",
        "snapshot", "copied/total", "%", "docs/s", "eta", "stale", "dead"
    );
    for p in &s.pairs {
        let eta = match (p.done, p.eta_s) {
            (true, _) => "done".to_owned(),
            (false, Some(e)) => format!("{e}s"),
            _ => "-".to_owned(),
        };
        println!(
            "  {:<40} {:>21} {:>6.1}% {:>9} {:>8} {:>9} {:>7}",
            format!("{} -> {}", p.source, p.target),
            format!("{}/{}", p.copied, p.total),
            p.percent,
            p.docs_per_s.map_or("-".into(), |r| format!("{r:.0}")),
            eta,
            p.stale,
            p.dead_lettered
        );
    }
    for u in &s.unmigrated {
        println!("  NOT MIGRATED: {} (matches {}; `add` it, or `add --exclude` it)", u.index, u.pattern);
    }
}

/// The replay's counters, the partition table, and the events lost or skipped.
fn print_replay(s: &Status) {
    println!(
        "  replay: applied={} stale={} dead_lettered={} ignored={} lag={}",
        s.replay.applied,
        s.replay.stale,
        s.replay.dead_lettered,
        s.replay.ignored,
        s.replay.lag_messages.map_or("?".into(), |l| l.to_string())
    );
    if !s.replay.ignored_indices.is_empty() {
        let names: Vec<String> = s.replay.ignored_indices.iter().map(|(i, n)| format!("{i}={n}")).collect();
        println!("  ignored events of indices outside the migration: {}", names.join(" "));
    }
    if s.replay.other_prefix > 0 {
        println!("  ignored events of other tenants' indices (without the prefix): {}", s.replay.other_prefix);
    }
    println!("  {:>9} {:>12} {:>12} {:>10} {:>10}", "partition", "position", "end", "lag", "lag_s");
    for p in &s.partitions {
        let opt = |v: Option<i64>| v.map_or("?".into(), |v| v.to_string());
        println!(
            "  {:>9} {:>12} {:>12} {:>10} {:>10}",
            p.partition,
            p.position,
            opt(p.end),
            opt(p.lag_messages),
            p.lag_seconds.map_or("?".into(), |v| format!("{v:.1}"))
        );
    }
    if let Some(e) = &s.kafka_error {
        println!("  kafka: {e}");
    }
    for l in &s.lost_events {
        println!(
            "  LOST EVENTS: partition {} checkpoint {} but the first available offset is {} ({} events deleted before they were replayed; rollover refuses)",
            l.partition,
            l.next_offset,
            l.first_available,
            l.events()
        );
    }
    for a in &s.accepted_losses {
        println!(
            "  accepted loss: partition {} offsets {}..{} skipped at {} (--accept-lost-events); rollover needs a reconcile",
            a.partition,
            a.from,
            a.to,
            a.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
}

/// What the workers cannot reach, and the capture proxies' gap notices.
fn print_problems(s: &Status) {
    for p in &s.unreachable {
        println!(
            "  unreachable: {} since {} ({}s, {} attempts, worker pid {}), retrying: {}",
            p.what,
            p.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            (p.last - p.since).num_seconds(),
            p.attempts,
            p.pid,
            p.error
        );
    }
    let g = &s.proxy_gaps;
    if g.notices > 0 {
        println!(
            "  proxy gaps: {} writes the source may hold without change events (from {}, the last at {}): {} documents \
             named, {} writes without ids; {} since the last reconcile pass, which rollover's reconcile repairs",
            g.notices,
            g.origins.join(", "),
            g.last_at.map_or("?".into(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            g.docs,
            g.unnamed,
            g.since_reconcile
        );
    }
}

/// The last rollover, reconcile pass and error, and the note.
fn print_history(s: &Status) {
    if let Some(r) = &s.last_rollover {
        println!(
            "  last rollover: {} write pause {} ms (grace {} ms, drain {} ms)",
            r.at.to_rfc3339(),
            r.write_pause_ms,
            r.grace_ms,
            r.drain_ms
        );
    }
    if let Some(r) = &s.last_reconcile {
        println!("  last reconcile: {} repaired {} failed {}", r.finished_at.to_rfc3339(), r.repaired, r.failed);
    }
    if let Some(e) = &s.last_error {
        println!("  last error: {e}");
    }
    if let Some(n) = &s.note {
        println!("  note: {n}");
    }
}
