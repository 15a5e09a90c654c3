//! What is stored: the migration record and the checkpoints.

use chrono::{DateTime, Utc};
use indexferry_common::config::{SnapshotMethod, VersionRule};
use indexferry_common::kafka::Offsets;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Target created, offsets recorded; snapshot and replay may run.
    Initialized,
    /// Rollover in progress (writes blocked on the source).
    RollingOver,
    /// The alias points at the target: done.
    RolledOver,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialized => "initialized",
            State::RollingOver => "rolling_over",
            State::RolledOver => "rolled_over",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Migration {
    pub name: String,
    /// The recipe as given to `init` (secrets may come from the environment instead).
    pub recipe_text: String,
    pub recipe_path: String,
    pub created_at: DateTime<Utc>,
    pub state: State,
    /// The topic's end offsets when `init` ran: where replay starts.
    pub start_offsets: Offsets,
    pub pairs: Vec<PairInfo>,
    pub source_server: String,
    pub target_server: String,
    /// The clusters' UUIDs and the topic at `init`: a later override that points the
    /// migration elsewhere is refused. `None` where the cluster did not say (no `monitor`
    /// privilege) or for a migration initialised before they were recorded.
    #[serde(default)]
    pub source_uuid: Option<String>,
    #[serde(default)]
    pub target_uuid: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    /// Source and target are different clusters (by UUID where both are known, else by URL).
    pub cross_cluster: bool,
    #[serde(default)]
    pub rollover: Option<RolloverRecord>,
    /// The last reconcile pass that went through every pair (`reconcile`, or rollover's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled: Option<ReconcileRecord>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Indices matching a recipe pattern that the operator chose to leave alone
    /// (`add --exclude`), on top of the recipe's `exclude`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
    /// The snapshot method `init` chose (`search` when recorded before there was a choice).
    #[serde(default = "search_method")]
    pub snapshot_method: SnapshotMethod,
    /// The version rule `init` recorded: the one every write of this migration carries,
    /// whatever the recipe says later (`seq_no` for a migration recorded before there was a
    /// choice, which is what it was written with).
    #[serde(default = "seq_no_rule")]
    pub versions: VersionRule,
    /// What the last swap sent, recorded before it was sent: the aliases it put on which
    /// target. A rerun or `cancel` after a kill judges the switch from these, not from the
    /// aliases `init` recorded (the swap moves those the sources hold at that moment).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub swap: Vec<SwapAdd>,
}

/// One alias the swap puts on a target index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapAdd {
    pub alias: String,
    pub index: String,
}

fn search_method() -> SnapshotMethod {
    SnapshotMethod::Search
}

fn seq_no_rule() -> VersionRule {
    VersionRule::SeqNo
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairInfo {
    pub source: String,
    pub target: String,
    pub alias: String,
    /// Source documents when `init` ran (the snapshot's progress denominator).
    pub source_docs: u64,
    /// Settings restored on the target at rollover.
    pub production_settings: serde_json::Map<String, serde_json::Value>,
    /// The alias as the source defined it when `init` ran (filter, routings, write flag):
    /// rollover gives the target the same. `None` in a migration recorded before it was kept.
    #[serde(default)]
    pub alias_definition: Option<serde_json::Map<String, serde_json::Value>>,
    /// The recipe pattern this index matched (`None`: the recipe named it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Every alias of the source index with its definition, moved at rollover (empty for a
    /// named index recorded before they were kept: `alias` alone moves).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// A pair added after `init` (`add`): the topic's end offsets before its snapshot opened.
    /// The replay goes back to them once for it (see `ReplayCheckpoint::rewound_for`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_offsets: Option<Offsets>,
    /// The source's `index.gc_deletes` before the migration raised it (the `source` version
    /// rule), put back at rollover and cancel; `None` where nothing was touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_gc_deletes: Option<SourceGcDeletes>,
}

/// See `crate::pipeline::source_tombstones`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceGcDeletes {
    /// The setting as the source had it (`null`: unset, the cluster's default).
    pub original: serde_json::Value,
    /// Whether the migration raised it (an index keeping tombstones longer keeps its own).
    pub raised: bool,
}

impl PairInfo {
    /// The aliases rollover moves onto the target, each with its definition on the source.
    pub fn moved_aliases(&self) -> Vec<(&str, Option<&serde_json::Map<String, serde_json::Value>>)> {
        if self.aliases.is_empty() && self.pattern.is_none() {
            return vec![(self.alias.as_str(), self.alias_definition.as_ref())];
        }
        self.aliases.iter().map(|(a, d)| (a.as_str(), Some(d))).collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloverRecord {
    pub at: DateTime<Utc>,
    /// Block to alias swap, milliseconds.
    pub write_pause_ms: u64,
    /// Of which the grace and the drain.
    pub grace_ms: u64,
    pub drain_ms: u64,
    pub end_offsets: Offsets,
    /// Recorded deletes re-applied before the block, and documents they removed again.
    #[serde(default)]
    pub deletes_reapplied: u64,
    #[serde(default)]
    pub resurrections_undone: u64,
    /// A rerun found the alias already switched by a rollover that was killed after its
    /// swap, and only finished the bookkeeping (the pause figures are unknown, recorded as 0).
    #[serde(default)]
    pub finished_after_interruption: bool,
    /// Reconcile ran (before the block, and inside the pause for the documents changed
    /// since), and what it repaired in each.
    #[serde(default)]
    pub reconciled: bool,
    #[serde(default)]
    pub reconcile_repaired_before: u64,
    #[serde(default)]
    pub reconcile_repaired_in_pause: u64,
    /// Documents changed since the pass before the block, compared in the pause, and how
    /// long that took (part of the write pause).
    #[serde(default)]
    pub reconcile_changed_docs: u64,
    #[serde(default)]
    pub reconcile_pause_ms: u64,
    /// Pairs whose counts differed after the final pass, compared id by id in the pause.
    #[serde(default)]
    pub reconcile_recounted: u64,
}

/// A reconcile pass that completed over every pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReconcileRecord {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Documents written or deleted to repair the target.
    pub repaired: u64,
    /// Repairs the target refused: the pass is not clean.
    pub failed: u64,
    pub pairs: Vec<ReconcilePair>,
    /// The replay's next offset per partition when the pass started: every stale event
    /// recorded for a second look (`Recheck`) before them was looked at.
    #[serde(default)]
    pub recheck_from: BTreeMap<i32, i64>,
    /// Documents whose source `_version` went backwards (`source` rule): no versioned write
    /// can give the target the source's version while the replay may still deliver older
    /// writes, so rollover writes them again inside its pause (`reconcile::reset`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backwards: Vec<Recheck>,
}

impl ReconcileRecord {
    /// Every difference found was repaired.
    pub fn clean(&self) -> bool {
        self.failed == 0
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReconcilePair {
    pub source: String,
    pub target: String,
    /// Documents per kind: missing, behind, extra, newer_in_target, repaired, failed.
    pub counts: BTreeMap<String, u64>,
    /// The source's primary shards' `max_seq_no`, read before the pass: every operation
    /// at or below it was compared.
    pub max_seq_no: BTreeMap<u32, i64>,
}

/// An index event the target refused as stale under the `source` version rule, kept for a
/// second look: the target may hold the same `_version` with another body (an
/// `external_gte` application writing one version twice, or an operation rolled back by a
/// primary failover whose version was given again). Reconcile compares its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recheck {
    /// The target index.
    pub index: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<String>,
}

/// A gap notice of this migration's indices (`indexferry_schemas::gap`): a capture proxy
/// died, or could not publish, with writes the cluster may have taken without their change
/// events. Reconcile looks at `docs` again; the full pass covers the `unnamed` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The proxy that left it.
    pub origin: String,
    /// The request's method and path.
    pub request: String,
    pub at: DateTime<Utc>,
    /// The documents it named, in their pairs' target indices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub docs: Vec<Recheck>,
    /// The pairs' source indices written without naming the ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unnamed: Vec<String>,
}

/// One slice of one pair's snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SliceCheckpoint {
    /// Point-in-time (or scroll) the position below belongs to.
    pub pit_id: Option<String>,
    /// `sort` values of the last document whose batch the target acknowledged.
    pub search_after: Option<serde_json::Value>,
    /// Documents read in the current pass.
    pub copied: u64,
    pub applied: u64,
    pub stale: u64,
    pub rejected: u64,
    pub done: bool,
    /// Times this slice was resumed from a checkpoint, and the documents of the first
    /// batch after each resume (the most that can have been copied twice).
    pub resumes: u64,
    pub recopied: u64,
    /// Times the slice had to start over (its point-in-time had expired).
    pub restarts: u64,
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// The `_reindex` task copying this part (method `reindex`), `node:id` on the cluster
    /// that runs it; kept until it is done so a restarted worker reattaches to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The task's `requests_per_second` (-1 unthrottled): a different throttle at the next
    /// start is applied with `_rethrottle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// Documents the task has to copy (its `status.total`), once it knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCheckpoint {
    /// The next offset to apply: everything before it is in the target.
    pub next_offset: i64,
    /// Write time (ms since epoch) of the newest applied event.
    pub last_event_ms: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplayCheckpoint {
    pub partitions: BTreeMap<i32, PartitionCheckpoint>,
    pub applied: u64,
    pub stale: u64,
    pub dead_lettered: u64,
    pub ignored: u64,
    /// Ignored events of indices outside the migration, per index name (at most 100 names;
    /// `*` counts the others). The targets' own events, expected after rollover, are not here.
    #[serde(default)]
    pub ignored_indices: BTreeMap<String, u64>,
    /// Of `ignored`: events of indices without the recipe's prefix (other tenants' on a shared topic).
    #[serde(default)]
    pub other_prefix: u64,
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Events deleted from the topic before they were replayed, skipped because the operator
    /// said so (`--accept-lost-events`). Only a reconcile can repair what they changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_losses: Vec<AcceptedLoss>,
    /// Pairs added after `init` whose events this replay went back for: their events before
    /// `add` were ignored as outside the migration, so the checkpoint was lowered to the
    /// pair's `start_offsets` once, atomically with this mark.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub rewound_for: std::collections::BTreeSet<String>,
}

/// A range of a partition's events that were gone when the consumer came to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedLoss {
    pub partition: i32,
    /// The checkpoint when the loss was found: the first lost offset.
    pub from: i64,
    /// The partition's first available offset then: the first offset replayed after the loss.
    pub to: i64,
    pub at: DateTime<Utc>,
}

impl ReplayCheckpoint {
    /// Lowers the checkpoint to the start offsets of each added pair not gone back for yet,
    /// and marks it; `true` if anything changed (the caller saves it before replaying).
    pub fn rewind_for_added(&mut self, pairs: &[PairInfo], init: &Offsets) -> bool {
        let mut changed = false;
        for p in pairs {
            let Some(start) = &p.start_offsets else { continue };
            if self.rewound_for.contains(&p.source) {
                continue;
            }
            for (part, o) in start {
                let at = self.partitions.get(part).map_or(init.get(part).copied().unwrap_or(0), |c| c.next_offset);
                if at > *o {
                    self.partitions.entry(*part).or_default().next_offset = *o;
                }
            }
            self.rewound_for.insert(p.source.clone());
            changed = true;
        }
        changed
    }

    /// An added pair whose events the replay has not gone back for yet.
    pub fn pending_rewind<'p>(&self, pairs: &'p [PairInfo]) -> Option<&'p PairInfo> {
        pairs.iter().find(|p| p.start_offsets.is_some() && !self.rewound_for.contains(&p.source))
    }

    /// Next offsets per partition: the checkpoint, else the offset recorded at `init`, else 0
    /// for a partition added to the topic since (all its events came after `init`). Covers the
    /// partitions in `start`, in the checkpoint and in `current` (the topic's partitions now).
    pub fn positions(&self, start: &Offsets, current: impl IntoIterator<Item = i32>) -> Offsets {
        let mut out = start.clone();
        for p in current {
            out.entry(p).or_insert(0);
        }
        for (p, cp) in &self.partitions {
            out.insert(*p, cp.next_offset);
        }
        out
    }
}

/// A delete the replay applied, or found already applied (judged stale), kept in the replay state.
///
/// The target's own tombstone (the version map entry kept for `gc_deletes`) is what makes a
/// later, older copy of the document lose with a 409 — but it lives in memory and a restart
/// of the target node forgets it, after which an older copy from the snapshot is accepted
/// and the deleted document is back. Rollover re-applies these deletes, with their versions,
/// before it blocks writes: any such resurrection is undone, and a document re-created
/// since (a higher version) is left alone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tombstone {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<String>,
}
