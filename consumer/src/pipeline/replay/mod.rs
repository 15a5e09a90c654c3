//! The replay consumer: applies change events from the recorded offsets into the targets.
//!
//! Offsets are owned here, not by Kafka: partitions are assigned by hand at the
//! checkpointed positions, a checkpoint advances only after the batch's bulk is
//! acknowledged and its dead letters are delivered, and only then is it mirrored to the
//! consumer group so that standard lag tools see it. A crash therefore replays at most
//! the batches after the last checkpoint, which external versions turn into stale no-ops.

mod batch;
pub mod loss;
mod topic;

use crate::pipeline::deadletters::DeadLetters;
use crate::pipeline::writer::Writer;
use crate::runtime::context::Ctx;
use crate::state::{Db, PartitionCheckpoint, PidGuard, ReplayCheckpoint, Store, Tombstone, REPLAY_KEY};
use anyhow::{bail, Context as _};
use batch::{Batch, Outcome};
use chrono::Utc;
use futures::stream::{FuturesOrdered, StreamExt};
use indexferry_common::config::{Recipe, ReplayConfig};
use indexferry_common::kafka::{kafka_consumer_config, Offsets, Watermarks};
use indexferry_common::metrics::EVENTS;
use indexferry_common::retry::Backoff;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What the operator allows the replay.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Skip events deleted from the topic before they were replayed (see [`loss`]), and record
    /// that they were.
    pub accept_lost_events: bool,
}

/// Replays until `cancel`. `applied` (if given) receives the checkpointed positions after
/// every batch, for an in-process rollover to wait on. A pair added to the migration
/// (`add`) while it runs is taken in: the replay starts again with it.
pub async fn run(
    mut ctx: Arc<Ctx>,
    cancel: CancellationToken,
    applied: Option<watch::Sender<Offsets>>,
    options: Options,
) -> anyhow::Result<()> {
    let store = ctx.dir.open(Db::Replay)?;
    let _pid = PidGuard::create(&ctx.dir, "consume")?;
    let span = tracing::info_span!("replay");
    while let Some(again) = run_once(&ctx, &store, &cancel, applied.as_ref(), options).instrument(span.clone()).await? {
        if again == Again::PairAdded {
            ctx = Arc::new(ctx.reloaded()?);
            span.in_scope(|| {
                tracing::info!(
                    pairs = ctx.migration.pairs.len(),
                    "a pair was added to the migration: replaying with it"
                )
            });
        }
    }
    Ok(())
}

/// Why a replay stopped to start again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Again {
    /// `add` put a pair in the migration: the context is read again.
    PairAdded,
    /// The consumer received nothing while events waited (see [`stalled`]): it is made again.
    Stalled,
}

/// Why the batch cutter stopped on its own.
enum Stop {
    /// A receive error that retrying cannot mend.
    Fatal(String),
    /// Nothing received for `stall_timeout` while the topic held more; the partitions behind.
    Stalled(String),
}

/// Cancels the returned token once the record holds more pairs than `known`.
fn watch_pairs(ctx: &Ctx, cancel: &CancellationToken) -> CancellationToken {
    let added = cancel.child_token();
    let (dir, known, token) = (ctx.dir.clone(), ctx.migration.pairs.len(), added.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let dir = dir.clone();
            let now = tokio::task::spawn_blocking(move || dir.load_migration().map(|m| m.pairs.len())).await;
            if matches!(now, Ok(Ok(n)) if n > known) {
                token.cancel();
                return;
            }
        }
    });
    added
}

/// One replay with the pairs `ctx` knows; `Ok(Some(..))` when it stopped to start again.
async fn run_once(
    ctx: &Arc<Ctx>,
    store: &Store,
    outer: &CancellationToken,
    applied: Option<&watch::Sender<Offsets>>,
    options: Options,
) -> anyhow::Result<Option<Again>> {
    let cancel = watch_pairs(ctx, outer);
    let _stop_watch = cancel.clone().drop_guard();
    let recipe = &ctx.recipe;
    let topic = recipe.kafka.topic.clone();
    let mut cp: ReplayCheckpoint = store.get(REPLAY_KEY)?.unwrap_or_default();
    let Some(positions) = start_positions(ctx, store, &mut cp, &cancel, options).await? else {
        return Ok(added(outer, &cancel).then_some(Again::PairAdded));
    };
    let consumer = assign(recipe, &positions)?;
    let writer = Writer::new(ctx.target.clone(), "replay", cancel.clone());
    let dead_letters = DeadLetters::new(recipe, cancel.clone())?;
    let Feeds { follower, cutter, mut batches, positions_tx, stop } =
        Feeds::start(ctx, &consumer, &positions, &cp, &cancel);
    if let Some(tx) = applied {
        let _ = tx.send(positions.clone());
    }
    let cfg = &recipe.replay;
    let mut inflight = FuturesOrdered::new();
    let (writer, dead_letters) = (&writer, &dead_letters);
    // Once the cutter has stopped, the batches it cut are still written and checkpointed.
    let mut cut_all = false;
    loop {
        if cut_all && inflight.is_empty() {
            break;
        }
        tokio::select! {
            done = inflight.next(), if !inflight.is_empty() => {
                let Some((cut, result)): Option<(Cut, _)> = done else { continue };
                let outcome: Outcome = match result {
                    Ok(o) => o,
                    Err(_) => break, // cancelled mid-batch: not checkpointed, replayed next time
                };
                checkpoint(store, &mut cp, &outcome, &cut)?;
                mirror_commit(&consumer, &topic, &cp);
                let _ = positions_tx.send(cp.partitions.clone());
                if let Some(tx) = applied {
                    let _ = tx.send(cp.positions(&ctx.migration.start_offsets, positions.keys().copied()));
                }
            }
            cut = batches.recv(), if !cut_all && inflight.len() < cfg.in_flight => {
                // Cancelled, or the cutter stopped on its own.
                let Some(cut) = cut else {
                    cut_all = true;
                    continue;
                };
                let topic = topic.as_str();
                let span = tracing::info_span!("replay_batch", size = cut.messages.len(), offsets = %offset_ranges(&cut.messages));
                inflight.push_back(async move {
                    let result = Batch::decode(&cut.messages, recipe).apply(writer, dead_letters, topic).await;
                    (cut, result)
                }.instrument(span));
            }
        }
    }
    drop(inflight);
    cutter.abort();
    follower.abort();
    store.flush()?;
    mirror_commit(&consumer, &topic, &cp);
    indexferry_common::kafka::abandon(consumer);
    let stopped = stop.lock().ok().and_then(|mut f| f.take());
    let again = why_stopped(ctx, &cp, stopped, outer, &cancel).await?;
    tracing::info!(
        applied = cp.applied,
        stale = cp.stale,
        dead_lettered = cp.dead_lettered,
        ignored = cp.ignored,
        "replay stopped"
    );
    writer.check()?;
    Ok(again)
}

/// The tasks that feed a replay: the follower, which reads the topic's end offsets (for the
/// lag and the stall watch) and keeps the partition count in view, and the cutter, which cuts
/// received messages into batches on a task of its own, so that cutting never drops a
/// received message. Up to `in_flight` batches are then written at once and checkpointed in
/// order.
struct Feeds {
    follower: tokio::task::JoinHandle<()>,
    cutter: tokio::task::JoinHandle<()>,
    batches: tokio::sync::mpsc::Receiver<Cut>,
    /// The checkpointed partitions, for the follower.s lag.
    positions_tx: watch::Sender<BTreeMap<i32, PartitionCheckpoint>>,
    /// Why the cutter stopped on its own, once it has.
    stop: Arc<Mutex<Option<Stop>>>,
}

impl Feeds {
    fn start(
        ctx: &Ctx,
        consumer: &Arc<StreamConsumer>,
        positions: &Offsets,
        cp: &ReplayCheckpoint,
        cancel: &CancellationToken,
    ) -> Feeds {
        let (positions_tx, positions_rx) = watch::channel(cp.partitions.clone());
        let (ends_tx, ends_rx) = watch::channel(Offsets::new());
        let follower = topic::follow(
            consumer.clone(),
            ctx.recipe.kafka.topic.clone(),
            ctx.migration.start_offsets.clone(),
            positions.keys().copied().collect(),
            cancel.clone(),
            positions_rx,
            ends_tx,
        );
        let cfg = &ctx.recipe.replay;
        let (batches_tx, batches) = tokio::sync::mpsc::channel::<Cut>(cfg.in_flight);
        let stop = Arc::new(Mutex::new(None));
        let watch = Watch { assigned: positions.clone(), ends: ends_rx };
        let cutter = cut_batches(consumer.clone(), cfg.clone(), cancel.clone(), watch, batches_tx, stop.clone());
        let cutter = tokio::spawn(cutter.in_current_span());
        Feeds { follower, cutter, batches, positions_tx, stop }
    }
}

/// Where each partition is replayed from: the checkpoint, or the offsets `init` recorded;
/// `None` when cancelled before Kafka answered. Goes back once for the events of a pair
/// `add`ed since (they were ignored as outside the migration; stale copies of the others are
/// no-ops), and refuses to go on past events deleted before they were replayed unless
/// `--accept-lost-events` says so.
async fn start_positions(
    ctx: &Ctx,
    store: &Store,
    cp: &mut ReplayCheckpoint,
    cancel: &CancellationToken,
    options: Options,
) -> anyhow::Result<Option<Offsets>> {
    if cp.rewind_for_added(&ctx.migration.pairs, &ctx.migration.start_offsets) {
        tracing::info!(partitions = ?cp.partitions, "going back for the events of an added pair");
        store.put(REPLAY_KEY, &*cp)?;
        store.flush()?;
    }
    let Some(marks) = watermarks_at_start(ctx, cancel).await else { return Ok(None) };
    let losses = loss::find(&cp.positions(&ctx.migration.start_offsets, marks.keys().copied()), &marks);
    if !losses.is_empty() {
        if !options.accept_lost_events {
            bail!("{}", loss::describe(&ctx.recipe.kafka.topic, &losses));
        }
        tracing::warn!(lost = ?losses, "events lost before they were replayed: skipped, as --accept-lost-events says");
        loss::accept(cp, &losses);
        store.put(REPLAY_KEY, &*cp)?;
        store.flush()?;
    }
    Ok(Some(cp.positions(&ctx.migration.start_offsets, marks.keys().copied())))
}

/// A Kafka consumer with the topic's partitions assigned by hand at `positions`.
fn assign(recipe: &Recipe, positions: &Offsets) -> anyhow::Result<Arc<StreamConsumer>> {
    let topic = &recipe.kafka.topic;
    let consumer: StreamConsumer = kafka_consumer_config(&recipe.kafka, &recipe.group_id())
        .create()
        .context("cannot create the kafka consumer")?;
    let mut tpl = TopicPartitionList::new();
    for (p, o) in positions {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
    }
    consumer.assign(&tpl).context("cannot assign partitions")?;
    tracing::info!(%topic, positions = ?positions, "replaying");
    Ok(Arc::new(consumer))
}

/// Records a written batch: the checkpoint, the tombstones of its deletes, its rechecks and
/// gap notices, in one atomic write.
fn checkpoint(store: &Store, cp: &mut ReplayCheckpoint, outcome: &Outcome, cut: &Cut) -> anyhow::Result<()> {
    record(cp, outcome, cut);
    let mut entries: Vec<(String, serde_json::Value)> = Vec::with_capacity(outcome.tombstones.len() + 1);
    entries.push((REPLAY_KEY.to_owned(), serde_json::to_value(&*cp)?));
    for (key, t) in newest_tombstones(store, &outcome.tombstones)? {
        entries.push((key.to_owned(), serde_json::to_value(t)?));
    }
    for (key, r) in &outcome.rechecks {
        entries.push((key.clone(), serde_json::to_value(r)?));
    }
    for (key, g) in &outcome.gaps {
        entries.push((key.clone(), serde_json::to_value(g)?));
    }
    store.put_all(&entries)?;
    Ok(())
}

/// What follows a stopped replay: an error when the cutter met one it cannot mend, a fresh
/// consumer when it stalled, a reload when a pair was added, or nothing (cancelled).
async fn why_stopped(
    ctx: &Ctx,
    cp: &ReplayCheckpoint,
    stopped: Option<Stop>,
    outer: &CancellationToken,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<Again>> {
    match stopped {
        Some(Stop::Fatal(reason)) => {
            cancel.cancel();
            Err(explain_fatal(ctx, cp, reason).await)
        }
        Some(Stop::Stalled(behind)) if !cancel.is_cancelled() => {
            let why = format!("nothing received for {:?} while {behind}", ctx.recipe.replay.stall_timeout);
            crate::runtime::health::failing("kafka", &why);
            tracing::warn!(reason = %why, "the kafka consumer has stalled; making it again");
            Ok(Some(Again::Stalled))
        }
        _ => Ok(added(outer, cancel).then_some(Again::PairAdded)),
    }
}

/// The replay's own token was cancelled by a pair being added, not by the caller.
fn added(outer: &CancellationToken, own: &CancellationToken) -> bool {
    own.is_cancelled() && !outer.is_cancelled()
}

/// Replays until the end offsets read at start are applied, then stops
/// (`consume --until-caught-up`).
pub async fn run_until_caught_up(ctx: Arc<Ctx>, cancel: CancellationToken, options: Options) -> anyhow::Result<()> {
    let end = crate::runtime::context::end_offsets(&ctx.recipe, Duration::from_secs(30)).await?;
    let (tx, mut rx) = watch::channel(Offsets::default());
    let stop = cancel.clone();
    tokio::spawn(
        async move {
            let caught_up = |at: &Offsets| end.iter().all(|(p, o)| at.get(p).copied().unwrap_or(0) >= *o);
            if rx.wait_for(caught_up).await.is_ok() {
                tracing::info!("caught up with the end offsets read at start; stopping");
                stop.cancel();
            }
        }
        .in_current_span(),
    );
    run(ctx, cancel, Some(tx), options).await
}

/// The topic's partitions and offsets, retried while Kafka cannot be reached (`None` once
/// cancelled): a consumer started during a broker restart waits for it, as it would later.
async fn watermarks_at_start(ctx: &Ctx, cancel: &CancellationToken) -> Option<Watermarks> {
    let mut backoff = Backoff::standard(None);
    loop {
        match crate::runtime::context::watermarks(&ctx.recipe, Duration::from_secs(10)).await {
            Ok(marks) => {
                crate::runtime::health::ok("kafka");
                return Some(marks);
            }
            Err(e) => {
                crate::runtime::health::failing("kafka", &format!("{e:#}"));
                tracing::warn!(error = %format!("{e:#}"), "cannot read the topic's offsets; retrying");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(backoff.next_delay().unwrap_or(Duration::from_secs(10))) => {}
        }
    }
}

/// The error a fatal receive ends the replay with: a loss of events, named, when the topic's
/// offsets show one.
async fn explain_fatal(ctx: &Ctx, cp: &ReplayCheckpoint, reason: String) -> anyhow::Error {
    if let Ok(marks) = crate::runtime::context::watermarks(&ctx.recipe, Duration::from_secs(10)).await {
        let losses = loss::find(&cp.positions(&ctx.migration.start_offsets, marks.keys().copied()), &marks);
        if !losses.is_empty() {
            return anyhow::anyhow!("{}", loss::describe(&ctx.recipe.kafka.topic, &losses));
        }
    }
    anyhow::anyhow!("kafka: {reason}")
}

/// The messages of one batch, and the consumer's position once they were received.
struct Cut {
    messages: Vec<OwnedMessage>,
    /// Per partition, the offset after the last event or transaction marker received: the
    /// markers take offsets and are never delivered, so the messages alone would leave the
    /// checkpoint short of the end offset for good.
    positions: Offsets,
}

/// A batch's offsets per partition, `0:17..42 2:5..9` (first and last message), for its span.
fn offset_ranges(messages: &[OwnedMessage]) -> String {
    let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for m in messages {
        let r = ranges.entry(m.partition()).or_insert((m.offset(), m.offset()));
        *r = (r.0.min(m.offset()), r.1.max(m.offset()));
    }
    ranges.iter().map(|(p, (a, b))| format!("{p}:{a}..{b}")).collect::<Vec<_>>().join(" ")
}

/// What the cutter watches to tell a stalled consumer: the offsets it was assigned at, and
/// the topic's end offsets as the follower last read them.
struct Watch {
    assigned: Offsets,
    ends: watch::Receiver<Offsets>,
}

/// Cuts batches from the stream into `out` until cancelled (or `out` is closed). A fatal
/// receive error, or a stall, goes into `stop` and ends the stream. A cut without messages
/// is sent when the position moved past markers alone.
async fn cut_batches(
    consumer: Arc<StreamConsumer>,
    cfg: ReplayConfig,
    cancel: CancellationToken,
    seen: Watch,
    out: tokio::sync::mpsc::Sender<Cut>,
    stop: Arc<Mutex<Option<Stop>>>,
) {
    let mut sent = Offsets::new();
    let mut received = seen.assigned;
    let mut progress = Instant::now();
    loop {
        match collect(&consumer, cfg.batch_size, cfg.batch_bytes, cfg.batch_deadline, &cancel).await {
            Ok(Some(messages)) => {
                let positions = received_up_to(&consumer);
                if messages.is_empty() && positions == sent {
                    if let Some(behind) = stalled(&received, &seen.ends.borrow(), progress.elapsed(), cfg.stall_timeout)
                    {
                        if let Ok(mut s) = stop.lock() {
                            *s = Some(Stop::Stalled(behind));
                        }
                        return;
                    }
                    continue;
                }
                received.extend(positions.iter().map(|(p, o)| (*p, *o)));
                sent.clone_from(&positions);
                if out.send(Cut { messages, positions }).await.is_err() {
                    return;
                }
                progress = Instant::now();
            }
            Ok(None) => return,
            Err(reason) => {
                if let Ok(mut s) = stop.lock() {
                    *s = Some(Stop::Fatal(reason));
                }
                return;
            }
        }
    }
}

/// The partitions behind, `"partition 2 at 1754 of 2450"`, when the consumer has received
/// nothing for `timeout` (`quiet`) although the topic's end is past what it received. A
/// partition it has no position on yet (one added after the start) is not judged.
fn stalled(received: &Offsets, ends: &Offsets, quiet: Duration, timeout: Duration) -> Option<String> {
    if quiet < timeout {
        return None;
    }
    let behind: Vec<String> = ends
        .iter()
        .filter_map(|(p, end)| {
            received.get(p).filter(|at| *at < end).map(|at| format!("partition {p} at {at} of {end}"))
        })
        .collect();
    (!behind.is_empty()).then(|| behind.join(", "))
}

/// The consumer's position per partition: librdkafka moves it past each message it hands
/// over and past each transaction marker, in the order of the log, as it is polled.
fn received_up_to(consumer: &StreamConsumer) -> Offsets {
    let Ok(tpl) = consumer.position() else { return Offsets::new() };
    tpl.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// A receive error that retrying cannot mend: the next offset is gone from the partition.
fn is_fatal(e: &KafkaError) -> bool {
    matches!(e, KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))
}

/// One batch, cut at `max` messages, `max_bytes` bytes or `deadline` after its first
/// message. `Ok(None)` once cancelled, `Err` on a fatal receive error.
async fn collect(
    consumer: &StreamConsumer,
    max: usize,
    max_bytes: usize,
    deadline: Duration,
    cancel: &CancellationToken,
) -> Result<Option<Vec<OwnedMessage>>, String> {
    let first = tokio::select! {
        _ = cancel.cancelled() => return Ok(None),
        m = consumer.recv() => m,
        _ = tokio::time::sleep(Duration::from_millis(500)) => return Ok(Some(vec![])),
    };
    let first = match first {
        Ok(m) => {
            crate::runtime::health::ok("kafka");
            m.detach()
        }
        Err(e) if is_fatal(&e) => return Err(e.to_string()),
        Err(e) => {
            crate::runtime::health::failing("kafka", &e.to_string());
            tracing::warn!(error = %e, "kafka receive failed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Ok(Some(vec![]));
        }
    };
    let mut bytes = first.payload().map_or(0, <[u8]>::len);
    let mut out = vec![first];
    let until = Instant::now() + deadline;
    while out.len() < max && bytes < max_bytes {
        tokio::select! {
            m = consumer.recv() => match m {
                Ok(m) => {
                    bytes += m.payload().map_or(0, <[u8]>::len);
                    out.push(m.detach());
                }
                Err(e) if is_fatal(&e) => return Err(e.to_string()),
                Err(e) => {
                    tracing::warn!(error = %e, "kafka receive failed");
                    break;
                }
            },
            _ = tokio::time::sleep_until(until) => break,
        }
    }
    Ok(Some(out))
}

fn record(cp: &mut ReplayCheckpoint, outcome: &Outcome, cut: &Cut) {
    for (p, o) in &cut.positions {
        let entry = cp.partitions.entry(*p).or_insert(PartitionCheckpoint { next_offset: 0, last_event_ms: None });
        entry.next_offset = entry.next_offset.max(*o);
    }
    for m in &cut.messages {
        let entry =
            cp.partitions.entry(m.partition()).or_insert(PartitionCheckpoint { next_offset: 0, last_event_ms: None });
        entry.next_offset = entry.next_offset.max(m.offset() + 1);
        if let Some(ts) = m.timestamp().to_millis() {
            entry.last_event_ms = Some(entry.last_event_ms.map_or(ts, |t| t.max(ts)));
        }
    }
    cp.applied += outcome.applied;
    cp.stale += outcome.stale;
    cp.dead_lettered += outcome.dead_lettered;
    cp.ignored += outcome.ignored;
    cp.other_prefix += outcome.other_prefix;
    outcome.record_indices(&mut cp.ignored_indices);
    cp.updated_at = Some(Utc::now());
    for (op, result, n) in outcome.counts() {
        metrics::counter!(EVENTS, "op" => op, "result" => result).increment(n);
    }
}

/// The tombstones of a batch worth recording: per id the highest version, and only where the
/// store has no higher one. Two writers racing on one id can publish its events out of order,
/// and a stale delete must not lower the version rollover deletes with.
fn newest_tombstones<'a>(
    store: &Store,
    tombstones: &'a [(String, Tombstone)],
) -> anyhow::Result<BTreeMap<&'a str, &'a Tombstone>> {
    let mut newest: BTreeMap<&str, &Tombstone> = BTreeMap::new();
    for (key, t) in tombstones {
        let slot = newest.entry(key.as_str()).or_insert(t);
        if t.version > slot.version {
            *slot = t;
        }
    }
    let mut out = BTreeMap::new();
    for (key, t) in newest {
        if store.get::<Tombstone>(key)?.is_none_or(|old| old.version < t.version) {
            out.insert(key, t);
        }
    }
    Ok(out)
}

/// Mirrors the checkpoint to the consumer group (best effort: RocksDB is the record).
fn mirror_commit(consumer: &StreamConsumer, topic: &str, cp: &ReplayCheckpoint) {
    let mut tpl = TopicPartitionList::new();
    for (p, c) in &cp.partitions {
        if tpl.add_partition_offset(topic, *p, Offset::Offset(c.next_offset)).is_err() {
            return;
        }
    }
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "offset commit to the consumer group failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{tombstone_key, StateDir};

    #[test]
    fn a_tombstone_is_recorded_only_at_a_higher_version() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateDir::new(tmp.path(), "m").open(Db::Replay).unwrap();
        let t = |version| Tombstone { version, routing: None };
        let key = |id| tombstone_key("t", id, None);
        let (a, b, c) = (key("a"), key("b"), key("c"));
        store.put(&a, &t(7)).unwrap();
        store.put(&b, &t(3)).unwrap();
        let batch = vec![(a.clone(), t(5)), (b.clone(), t(4)), (c.clone(), t(9)), (c.clone(), t(6))];
        let kept = newest_tombstones(&store, &batch).unwrap();
        let kept: Vec<(&str, u64)> = kept.into_iter().map(|(k, t)| (k, t.version)).collect();
        assert_eq!(kept, vec![(b.as_str(), 4), (c.as_str(), 9)], "a: the store has 7; c: 9 beats the later 6");
    }

    #[test]
    fn a_consumer_is_stalled_only_when_quiet_long_enough_while_a_partition_it_follows_is_behind() {
        let offsets = |v: &[(i32, i64)]| v.iter().copied().collect::<Offsets>();
        let timeout = Duration::from_secs(30);
        let (long, short) = (Duration::from_secs(31), Duration::from_secs(29));
        let received = offsets(&[(0, 10), (1, 20)]);
        let behind = offsets(&[(0, 10), (1, 25)]);
        assert_eq!(stalled(&received, &behind, long, timeout).as_deref(), Some("partition 1 at 20 of 25"));
        assert_eq!(stalled(&received, &behind, short, timeout), None, "not quiet for long enough");
        assert_eq!(
            stalled(&received, &offsets(&[(0, 10), (1, 20)]), long, timeout),
            None,
            "caught up: quiet is normal"
        );
        assert_eq!(stalled(&received, &offsets(&[(2, 5)]), long, timeout), None, "no position on partition 2 yet");
        assert_eq!(stalled(&received, &Offsets::new(), long, timeout), None, "the end offsets were never read");
    }
}
