//! The replay consumer: applies change events from the recorded offsets into the targets.
//!
//! Offsets are owned here, not by Kafka: partitions are assigned by hand at the
//! checkpointed positions, a checkpoint advances only after the batch's bulk is
//! acknowledged and its dead letters are delivered, and only then is it mirrored to the
//! consumer group so that standard lag tools see it. A crash therefore replays at most
//! the batches after the last checkpoint, which external versions turn into stale no-ops.

mod batch;

use crate::context::Ctx;
use crate::deadletter::DeadLetters;
use crate::state::{Db, PartitionCheckpoint, PidGuard, ReplayCheckpoint, Store, Tombstone, REPLAY_KEY};
use crate::writer::Writer;
use anyhow::Context as _;
use batch::{Batch, Outcome};
use chrono::Utc;
use futures::stream::{FuturesOrdered, StreamExt};
use indexferry_common::config::ReplayConfig;
use indexferry_common::kafka::{kafka_consumer_config, Offsets};
use indexferry_common::metrics::{EVENTS, LAG_MESSAGES, LAG_SECONDS};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often lag gauges are refreshed from the broker's high watermarks.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// Replays until `cancel`. `applied` (if given) receives the checkpointed positions after
/// every batch, for an in-process rollover to wait on.
pub async fn run(
    ctx: Arc<Ctx>,
    cancel: CancellationToken,
    applied: Option<watch::Sender<Offsets>>,
) -> anyhow::Result<()> {
    let store = ctx.dir.open(Db::Replay)?;
    let _pid = PidGuard::create(&ctx.dir, "consume")?;
    let recipe = &ctx.recipe;
    let topic = recipe.kafka.topic.clone();
    let mut cp: ReplayCheckpoint = store.get(REPLAY_KEY)?.unwrap_or_default();
    let positions = cp.positions(&ctx.migration.start_offsets);

    let consumer: Arc<StreamConsumer> = Arc::new(
        kafka_consumer_config(&recipe.kafka, &recipe.group_id())
            .create()
            .context("cannot create the kafka consumer")?,
    );
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &positions {
        tpl.add_partition_offset(&topic, *p, Offset::Offset(*o))?;
    }
    consumer.assign(&tpl).context("cannot assign partitions")?;
    tracing::info!(%topic, positions = ?positions, "replaying");

    let writer = Writer::new(ctx.target.clone(), "replay", cancel.clone());
    let dead_letters = DeadLetters::new(recipe, cancel.clone())?;
    let (positions_tx, positions_rx) = watch::channel(cp.partitions.clone());
    let lag = spawn_lag_reporter(consumer.clone(), topic.clone(), cancel.clone(), positions_rx);
    if let Some(tx) = &applied {
        let _ = tx.send(cp.positions(&ctx.migration.start_offsets));
    }

    // Batches are cut by a task of their own, so that cutting never drops a received
    // message; up to `in_flight` of them are written at once and checkpointed in order.
    let cfg = &recipe.replay;
    let (batches_tx, mut batches) = tokio::sync::mpsc::channel::<Vec<OwnedMessage>>(cfg.in_flight);
    let cutter = tokio::spawn(cut_batches(consumer.clone(), cfg.clone(), cancel.clone(), batches_tx));
    let mut inflight = FuturesOrdered::new();
    let (writer, dead_letters) = (&writer, &dead_letters);
    loop {
        tokio::select! {
            done = inflight.next(), if !inflight.is_empty() => {
                let Some((messages, result)): Option<(Vec<OwnedMessage>, _)> = done else { continue };
                let outcome: Outcome = match result {
                    Ok(o) => o,
                    Err(_) => break, // cancelled mid-batch: not checkpointed, replayed next time
                };
                record(&mut cp, &outcome, &messages);
                // Checkpoint and tombstones in one atomic write.
                let mut entries: Vec<(String, serde_json::Value)> = Vec::with_capacity(outcome.tombstones.len() + 1);
                entries.push((REPLAY_KEY.to_owned(), serde_json::to_value(&cp)?));
                for (key, t) in newest_tombstones(&store, &outcome.tombstones)? {
                    entries.push((key.to_owned(), serde_json::to_value(t)?));
                }
                store.put_all(&entries)?;
                mirror_commit(&consumer, &topic, &cp);
                let _ = positions_tx.send(cp.partitions.clone());
                if let Some(tx) = &applied {
                    let _ = tx.send(cp.positions(&ctx.migration.start_offsets));
                }
            }
            messages = batches.recv(), if inflight.len() < cfg.in_flight => {
                let Some(messages) = messages else { break }; // cancelled
                let topic = topic.as_str();
                inflight.push_back(async move {
                    let result = Batch::decode(&messages, recipe).apply(writer, dead_letters, topic).await;
                    (messages, result)
                });
            }
        }
    }
    drop(inflight);
    cutter.abort();
    lag.abort();
    store.flush()?;
    mirror_commit(&consumer, &topic, &cp);
    indexferry_common::kafka::abandon(consumer);
    tracing::info!(
        applied = cp.applied,
        stale = cp.stale,
        dead_lettered = cp.dead_lettered,
        ignored = cp.ignored,
        "replay stopped"
    );
    writer.check()
}

/// Replays until the end offsets read at start are applied, then stops
/// (`consume --until-caught-up`).
pub async fn run_until_caught_up(ctx: Arc<Ctx>, cancel: CancellationToken) -> anyhow::Result<()> {
    let end = crate::context::end_offsets(&ctx.recipe, Duration::from_secs(30)).await?;
    let (tx, mut rx) = watch::channel(Offsets::default());
    let stop = cancel.clone();
    tokio::spawn(async move {
        let caught_up = |at: &Offsets| end.iter().all(|(p, o)| at.get(p).is_some_and(|a| a >= o));
        if rx.wait_for(caught_up).await.is_ok() {
            tracing::info!("caught up with the end offsets read at start; stopping");
            stop.cancel();
        }
    });
    run(ctx, cancel, Some(tx)).await
}

/// Cuts batches from the stream into `out` until cancelled (or `out` is closed).
async fn cut_batches(
    consumer: Arc<StreamConsumer>,
    cfg: ReplayConfig,
    cancel: CancellationToken,
    out: tokio::sync::mpsc::Sender<Vec<OwnedMessage>>,
) {
    while let Some(messages) = collect(&consumer, cfg.batch_size, cfg.batch_bytes, cfg.batch_deadline, &cancel).await {
        if !messages.is_empty() && out.send(messages).await.is_err() {
            return;
        }
    }
}

/// One batch, cut at `max` messages, `max_bytes` bytes or `deadline` after its first
/// message. `None` once cancelled.
async fn collect(
    consumer: &StreamConsumer,
    max: usize,
    max_bytes: usize,
    deadline: Duration,
    cancel: &CancellationToken,
) -> Option<Vec<OwnedMessage>> {
    let first = tokio::select! {
        _ = cancel.cancelled() => return None,
        m = consumer.recv() => m,
        _ = tokio::time::sleep(Duration::from_millis(500)) => return Some(vec![]),
    };
    let first = match first {
        Ok(m) => {
            crate::health::ok("kafka");
            m.detach()
        }
        Err(e) => {
            crate::health::failing("kafka", &e.to_string());
            tracing::warn!(error = %e, "kafka receive failed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Some(vec![]);
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
                Err(e) => {
                    tracing::warn!(error = %e, "kafka receive failed");
                    break;
                }
            },
            _ = tokio::time::sleep_until(until) => break,
        }
    }
    Some(out)
}

fn record(cp: &mut ReplayCheckpoint, outcome: &Outcome, messages: &[OwnedMessage]) {
    for m in messages {
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

fn spawn_lag_reporter(
    consumer: Arc<StreamConsumer>,
    topic: String,
    cancel: CancellationToken,
    positions: watch::Receiver<std::collections::BTreeMap<i32, PartitionCheckpoint>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(LAG_INTERVAL) => {}
            }
            let (consumer, topic) = (consumer.clone(), topic.clone());
            let partitions = positions.borrow().clone();
            let lags = tokio::task::spawn_blocking(move || -> Option<Vec<(i32, i64, f64)>> {
                let now = Utc::now().timestamp_millis();
                let mut out = vec![];
                for (p, c) in &partitions {
                    let (_, high) = consumer.fetch_watermarks(&topic, *p, Duration::from_secs(5)).ok()?;
                    let behind = (high - c.next_offset).max(0);
                    let secs = if behind == 0 {
                        0.0
                    } else {
                        c.last_event_ms.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0)
                    };
                    out.push((*p, behind, secs));
                }
                Some(out)
            })
            .await;
            if let Ok(Some(lags)) = lags {
                for (p, behind, secs) in lags {
                    metrics::gauge!(LAG_MESSAGES, "partition" => p.to_string()).set(behind as f64);
                    metrics::gauge!(LAG_SECONDS, "partition" => p.to_string()).set(secs);
                }
            }
        }
    })
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
}
