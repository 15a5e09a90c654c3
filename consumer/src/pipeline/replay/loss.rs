//! Events deleted from the topic before the consumer replayed them.
//!
//! Kafka removes old events by retention (or `kafka-delete-records`). A consumer that was
//! stopped, or slower than the retention, finds its next offset below the partition's first
//! available offset: the events in between are gone, and so is what they would have told the
//! target. Jumping to the oldest event left (what `auto.offset.reset=earliest` does) would let
//! a rollover switch to a copy that misses those writes. So a loss stops the consumer and
//! refuses the rollover, until the operator accepts it (`--accept-lost-events`); from then on
//! only a reconcile can repair what the lost events changed.
//!
//! Only the first available offset is compared: offsets missing inside a partition
//! (transaction markers, compacted-away events) are no loss.

use crate::state::{AcceptedLoss, ReplayCheckpoint};
use chrono::Utc;
use indexferry_common::kafka::{Offsets, Watermarks};
use serde::Serialize;

/// One partition whose next events are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Loss {
    pub partition: i32,
    /// The consumer's checkpoint: the next offset it would replay.
    pub next_offset: i64,
    /// The partition's first available offset, above the checkpoint.
    pub first_available: i64,
}

impl Loss {
    pub fn events(&self) -> i64 {
        self.first_available - self.next_offset
    }
}

/// The partitions whose next offset in `positions` is below their first available offset.
pub fn find(positions: &Offsets, watermarks: &Watermarks) -> Vec<Loss> {
    positions
        .iter()
        .filter_map(|(p, next)| {
            let (low, _) = watermarks.get(p)?;
            (next < low).then_some(Loss { partition: *p, next_offset: *next, first_available: *low })
        })
        .collect()
}

/// One line naming the topic and, per partition, the checkpoint and the first available offset.
pub fn describe(topic: &str, losses: &[Loss]) -> String {
    let parts: Vec<String> = losses
        .iter()
        .map(|l| {
            format!(
                "partition {} (checkpoint {}, first available offset {}: {} events)",
                l.partition,
                l.next_offset,
                l.first_available,
                l.events()
            )
        })
        .collect();
    format!(
        "events of kafka topic {topic:?} were deleted before they were replayed, by retention or delete-records: {}; \
         the target may lack the writes they carried. Raise the topic's retention.ms / retention.bytes for the \
         migration's length, or start the consumer with --accept-lost-events to skip them (rollover then needs a \
         reconcile)",
        parts.join(", ")
    )
}

/// Moves the checkpoint of each lost partition to its first available offset and records the loss.
pub fn accept(cp: &mut ReplayCheckpoint, losses: &[Loss]) {
    for l in losses {
        let entry = cp.partitions.entry(l.partition).or_default();
        entry.next_offset = l.first_available;
        cp.accepted_losses.push(AcceptedLoss {
            partition: l.partition,
            from: l.next_offset,
            to: l.first_available,
            at: Utc::now(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::PartitionCheckpoint;

    #[test]
    fn only_a_checkpoint_below_the_first_available_offset_is_a_loss() {
        let positions: Offsets = [(0, 10), (1, 50), (2, 0), (3, 7)].into_iter().collect();
        // 0: 10 < 40 lost; 1: at 50, low 50: fine; 2: a new, empty partition; 3: unknown to the broker.
        let marks: Watermarks = [(0, (40, 90)), (1, (50, 60)), (2, (0, 0))].into_iter().collect();
        let losses = find(&positions, &marks);
        assert_eq!(losses, vec![Loss { partition: 0, next_offset: 10, first_available: 40 }]);
        assert_eq!(losses[0].events(), 30);
        let line = describe("t", &losses);
        assert!(line.contains("partition 0 (checkpoint 10, first available offset 40: 30 events)"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn accepting_a_loss_moves_the_checkpoint_and_remembers_it() {
        let mut cp = ReplayCheckpoint::default();
        cp.partitions.insert(1, PartitionCheckpoint { next_offset: 3, last_event_ms: Some(9) });
        let losses = vec![
            Loss { partition: 1, next_offset: 3, first_available: 8 },
            Loss { partition: 4, next_offset: 0, first_available: 2 },
        ];
        accept(&mut cp, &losses);
        assert_eq!(cp.partitions[&1], PartitionCheckpoint { next_offset: 8, last_event_ms: Some(9) });
        assert_eq!(cp.partitions[&4].next_offset, 2);
        let ranges: Vec<(i32, i64, i64)> = cp.accepted_losses.iter().map(|a| (a.partition, a.from, a.to)).collect();
        assert_eq!(ranges, vec![(1, 3, 8), (4, 0, 2)]);
        let positions = cp.positions(&Offsets::new(), [1, 4]);
        assert!(find(&positions, &[(1, (8, 9)), (4, (2, 2))].into_iter().collect()).is_empty());
    }
}
