//! Following the topic while the replay runs: partitions added to it after `init` are
//! assigned from their first offset (every event in them came after `init`), and the lag
//! gauges cover every partition, whether or not it has had an event yet.

use crate::state::{PartitionCheckpoint, ReplayCheckpoint};
use chrono::Utc;
use indexferry_common::kafka::{Offsets, Watermarks};
use indexferry_common::metrics::{LAG_MESSAGES, LAG_SECONDS};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How often the partition list and the lag gauges are refreshed from the broker.
const INTERVAL: Duration = Duration::from_secs(5);

/// Spawns the follower. `assigned` are the partitions the consumer was given at start;
/// `checkpoints` carries the replay's checkpoint after every batch; `ends` receives the
/// topic's end offsets each time they are read.
pub(super) fn follow(
    consumer: Arc<StreamConsumer>,
    topic: String,
    start: Offsets,
    mut assigned: BTreeSet<i32>,
    cancel: CancellationToken,
    checkpoints: watch::Receiver<BTreeMap<i32, PartitionCheckpoint>>,
    ends: watch::Sender<Offsets>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // The lag is measured at once, then every INTERVAL.
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(INTERVAL) => {}
                }
            }
            let (c, t) = (consumer.clone(), topic.clone());
            let Ok(Ok(marks)) = tokio::task::spawn_blocking(move || watermarks(&c, &t)).await else { continue };
            let _ = ends.send(indexferry_common::kafka::ends(&marks));
            let new: Vec<i32> = marks.keys().copied().filter(|p| !assigned.contains(p)).collect();
            if !new.is_empty() {
                match assign_new(&consumer, &topic, &new) {
                    Ok(()) => {
                        tracing::info!(partitions = ?new, "the topic has new partitions: replaying them from their first offset");
                        assigned.extend(new);
                    }
                    Err(e) => {
                        tracing::warn!(partitions = ?new, error = %e, "cannot assign the new partitions; retrying")
                    }
                }
            }
            let cp = ReplayCheckpoint { partitions: checkpoints.borrow().clone(), ..Default::default() };
            report_lag(&cp.positions(&start, marks.keys().copied()), &cp.partitions, &marks);
        }
    }.in_current_span())
}

/// The topic's partitions and offsets as the consumer's own connection sees them.
fn watermarks(consumer: &StreamConsumer, topic: &str) -> rdkafka::error::KafkaResult<Watermarks> {
    let timeout = Duration::from_secs(5);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut out = Watermarks::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            out.insert(p.id(), consumer.fetch_watermarks(topic, p.id(), timeout)?);
        }
    }
    Ok(out)
}

/// Adds `partitions` to the assignment at offset 0: a partition created after `init` holds
/// only events written since. Events already deleted from it are a loss, which the consumer
/// then stops on (see `loss`).
fn assign_new(consumer: &StreamConsumer, topic: &str, partitions: &[i32]) -> rdkafka::error::KafkaResult<()> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Offset(0))?;
    }
    consumer.incremental_assign(&tpl)
}

fn report_lag(positions: &Offsets, checkpoints: &BTreeMap<i32, PartitionCheckpoint>, marks: &Watermarks) {
    let now = Utc::now().timestamp_millis();
    for (p, (_, high)) in marks {
        let behind = (high - positions.get(p).copied().unwrap_or(0)).max(0);
        let secs = match checkpoints.get(p).and_then(|c| c.last_event_ms) {
            Some(t) if behind > 0 => (now - t).max(0) as f64 / 1000.0,
            _ => 0.0,
        };
        metrics::gauge!(LAG_MESSAGES, "partition" => p.to_string()).set(behind as f64);
        metrics::gauge!(LAG_SECONDS, "partition" => p.to_string()).set(secs);
    }
}
