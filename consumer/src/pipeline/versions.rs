//! The version every write to the target carries, by the migration's [`VersionRule`].
//!
//! Both rules order the copies and events of one document, so that the snapshot and the
//! replay converge whatever order they write in: a write not newer than what the target
//! holds is refused (409) and counted as stale.
//!
//! - `source`: the source's own `_version`. It grows with every change to a document while
//!   the source keeps delete tombstones (`init` raises the source's `index.gc_deletes`), so
//!   it orders them as the source did, and the target ends with the `_version`s the
//!   application knows. Two things it cannot order are found by reconcile before the switch:
//!   a `_version` repeated with another body (an `external_gte` application, or an operation
//!   rolled back by a primary failover whose version was given again), which the replay
//!   records when it refuses an event as stale and reconcile compares body by body and
//!   repairs; and a `_version` that went backwards (a delete then re-create after the source
//!   forgot the tombstone), which no versioned write can follow: reconcile names those ids
//!   and rollover refuses.
//! - `seq_no`: `primary_term × 2^47 + _seq_no + 1` (see [`indexferry_schemas::external_version`]).

use indexferry_common::config::VersionRule;
use indexferry_schemas::ChangeEvent;

/// The version an event's write carries.
pub fn of_event(rule: VersionRule, event: &ChangeEvent) -> u64 {
    match rule {
        VersionRule::Source => event.version,
        VersionRule::SeqNo => event.external_version(),
    }
}

/// The version a source document read by search or `_mget` is written with; `Err` names
/// what is missing or out of range.
pub fn of_source(
    rule: VersionRule,
    version: Option<u64>,
    primary_term: Option<u64>,
    seq_no: Option<u64>,
) -> Result<u64, String> {
    match rule {
        VersionRule::Source => match version {
            // An external version is a positive 63-bit integer; `_version` never passes it.
            Some(v) if (1..=i64::MAX as u64).contains(&v) => Ok(v),
            Some(v) => Err(format!("_version {v} is not a version the target can be written with")),
            None => Err("no _version in the answer".into()),
        },
        VersionRule::SeqNo => {
            let (Some(term), Some(seq_no)) = (primary_term, seq_no) else {
                return Err("no _seq_no or _primary_term in the answer".into());
            };
            indexferry_schemas::external_version(term, seq_no).ok_or_else(|| {
                format!("_primary_term {term} or _seq_no {seq_no} is past what an external version can order")
            })
        }
    }
}

/// Under `seq_no`, a target version below every `external_version` (2^47, term 1 and up) is
/// a copy by server-side `_reindex`, which keeps the source's own `_version`. Under `source`
/// every write carries the source's `_version`, so there is no such thing.
pub fn is_reindex_copy(rule: VersionRule, target_version: u64) -> bool {
    rule == VersionRule::SeqNo && target_version < 1 << indexferry_schemas::SEQ_NO_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_rule_takes_the_version_and_seq_no_the_term_and_seq_no() {
        assert_eq!(of_source(VersionRule::Source, Some(7), Some(2), Some(40)), Ok(7));
        assert_eq!(
            of_source(VersionRule::SeqNo, Some(7), Some(2), Some(40)),
            Ok(indexferry_schemas::external_version(2, 40).unwrap())
        );
        assert!(of_source(VersionRule::Source, None, Some(2), Some(40)).unwrap_err().contains("_version"));
        assert!(of_source(VersionRule::SeqNo, Some(7), None, Some(40)).unwrap_err().contains("_seq_no"));
        assert!(of_source(VersionRule::Source, Some(0), None, None).is_err());
    }

    #[test]
    fn only_the_seq_no_rule_knows_reindex_copies() {
        assert!(is_reindex_copy(VersionRule::SeqNo, 5));
        assert!(!is_reindex_copy(VersionRule::SeqNo, 1 << 47));
        assert!(!is_reindex_copy(VersionRule::Source, 5));
    }
}
