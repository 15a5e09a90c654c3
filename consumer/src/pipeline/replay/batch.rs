//! One batch of messages: decoded into target writes, applied, judged.

use crate::pipeline::deadletters::{DeadLetter, DeadLetters};
use crate::pipeline::writer::{Cancelled, Doc, Final, VersionType, Writer};
use crate::state::{gap_key, recheck_key, tombstone_key, Gap, Recheck, Tombstone};
use indexferry_common::config::{IndexPair, Recipe, VersionRule};
use indexferry_common::metrics::{EVENTS_BY_ALIAS, EVENTS_OTHER_PREFIX, EVENTS_UNKNOWN_INDEX};
use indexferry_schemas::{decode, gap, Op};
use rdkafka::message::{Message, OwnedMessage};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Most index names the replay checkpoint counts ignored events for: the topic may be shared
/// with many indices, and the checkpoint is rewritten after every batch.
const MAX_IGNORED_INDICES: usize = 100;
/// Where the events of further unknown indices are counted once that many names are held
/// (`*` is never an index name).
const OTHER_INDICES: &str = "*";

/// What a batch did, for the checkpoint and the metrics.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub applied: u64,
    pub stale: u64,
    pub dead_lettered: u64,
    pub ignored: u64,
    /// Ignored events of indices without the recipe's prefix: another tenant's, on a shared topic.
    pub other_prefix: u64,
    /// Ignored events per index, for those of indices outside the migration (not its targets).
    pub unknown: BTreeMap<String, u64>,
    /// Events that named a pair's alias, per alias: applied to that pair.
    pub by_alias: BTreeMap<String, u64>,
    by_op: [[u64; 3]; 3],
    /// Deletes the target has seen, applied or stale: recorded as tombstones (see `state::Tombstone`).
    pub tombstones: Vec<(String, Tombstone)>,
    /// Index events refused as stale under the `source` rule, for reconcile's second look
    /// (see `state::Recheck`).
    pub rechecks: Vec<(String, Recheck)>,
    /// Gap notices naming this migration's indices (see `state::Gap`).
    pub gaps: Vec<(String, Gap)>,
}

const OPS: [&str; 3] = ["index", "delete", "unknown"];
const RESULTS: [&str; 3] = ["applied", "stale", "dead_lettered"];

impl Outcome {
    fn count(&mut self, op: usize, result: usize) {
        self.by_op[op][result] += 1;
        match result {
            0 => self.applied += 1,
            1 => self.stale += 1,
            _ => self.dead_lettered += 1,
        }
    }

    /// Adds this batch's unknown indices to the checkpoint's counts (at most
    /// [`MAX_IGNORED_INDICES`] names) and to the metrics.
    pub(super) fn record_indices(&self, ignored: &mut BTreeMap<String, u64>) {
        for (index, n) in &self.unknown {
            let key = if ignored.contains_key(index) || ignored.len() < MAX_IGNORED_INDICES {
                index.as_str()
            } else {
                OTHER_INDICES
            };
            *ignored.entry(key.to_owned()).or_default() += n;
            metrics::counter!(EVENTS_UNKNOWN_INDEX, "index" => key.to_owned()).increment(*n);
        }
        if self.other_prefix > 0 {
            metrics::counter!(EVENTS_OTHER_PREFIX).increment(self.other_prefix);
        }
        for (alias, n) in &self.by_alias {
            metrics::counter!(EVENTS_BY_ALIAS, "alias" => alias.clone()).increment(*n);
        }
    }

    /// `(op, result, count)` for the events counter.
    pub(super) fn counts(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        (0..3).flat_map(move |o| (0..3).map(move |r| (OPS[o], RESULTS[r], self.by_op[o][r]))).filter(|(_, _, n)| *n > 0)
    }
}

pub(super) struct Batch<'a> {
    docs: Vec<Doc>,
    /// For each doc: its message and op index.
    origin: Vec<(&'a OwnedMessage, usize)>,
    letters: Vec<DeadLetter>,
    outcome: Outcome,
    rule: VersionRule,
}

impl<'a> Batch<'a> {
    pub(super) fn decode(messages: &'a [OwnedMessage], recipe: &Recipe) -> Batch<'a> {
        let mut b = Batch {
            docs: Vec::with_capacity(messages.len()),
            origin: vec![],
            letters: vec![],
            outcome: Outcome::default(),
            rule: recipe.versions,
        };
        for m in messages {
            let payload = m.payload().unwrap_or_default();
            match decode(m.key(), payload) {
                // A capture proxy's gap notice: kept for reconcile and status if it names ours.
                Err(e) => match gap::decode(payload).map(|n| ours(recipe, n)) {
                    Some(Some(g)) => b.outcome.gaps.push((gap_key(m.partition(), m.offset()), g)),
                    Some(None) => b.outcome.ignored += 1,
                    None => {
                        b.letters.push(letter(m, "decode", e.to_string()));
                        b.outcome.count(2, 2);
                    }
                },
                Ok(event) => match route(recipe, &event.index) {
                    // The application writes to the target after rollover: expected, not ours.
                    Route::Target => b.outcome.ignored += 1,
                    // Another tenant's index on a shared topic: its own migration applies it.
                    Route::OtherPrefix => {
                        b.outcome.ignored += 1;
                        b.outcome.other_prefix += 1;
                    }
                    // Indices outside this migration may share the topic: not ours to apply,
                    // but named in the checkpoint so that a misnamed index is seen.
                    Route::Unknown => {
                        b.outcome.ignored += 1;
                        *b.outcome.unknown.entry(event.index).or_default() += 1;
                    }
                    Route::Pair(pair, by_alias) => {
                        if by_alias {
                            said_once_alias(pair);
                            *b.outcome.by_alias.entry(pair.alias.clone()).or_default() += 1;
                        }
                        let op = if event.op == Op::Index { 0 } else { 1 };
                        b.docs.push(Doc {
                            index: pair.target.clone(),
                            version: crate::pipeline::versions::of_event(recipe.versions, &event),
                            version_type: VersionType::External,
                            id: event.id,
                            routing: event.routing,
                            source: event.source,
                        });
                        b.origin.push((m, op));
                    }
                },
            }
        }
        b
    }

    /// Writes the batch and delivers its dead letters; `Err` only on shutdown.
    pub(super) async fn apply(
        mut self,
        writer: &Writer,
        dead_letters: &DeadLetters,
        topic: &str,
    ) -> Result<Outcome, Cancelled> {
        let finals = if self.docs.is_empty() { vec![] } else { writer.write(&self.docs).await? };
        for (((m, op), f), doc) in self.origin.iter().zip(finals).zip(&self.docs) {
            // A delete judged stale is recorded too: it may be one this consumer applied before a
            // kill cut it off from its checkpoint, and the target's tombstone refused it now.
            if doc.source.is_none() && matches!(f, Final::Applied | Final::Stale) {
                let t = Tombstone { version: doc.version, routing: doc.routing.clone() };
                self.outcome.tombstones.push((tombstone_key(&doc.index, &doc.id, doc.routing.as_deref()), t));
            }
            // The target holds this version or a newer one: under the `source` rule the same
            // version may come with another body, which only a look at both can tell.
            if doc.source.is_some() && f == Final::Stale && self.rule == VersionRule::Source {
                let r = Recheck { index: doc.index.clone(), id: doc.id.clone(), routing: doc.routing.clone() };
                self.outcome.rechecks.push((recheck_key(m.partition(), m.offset()), r));
            }
            match f {
                Final::Applied => self.outcome.count(*op, 0),
                Final::Stale => self.outcome.count(*op, 1),
                Final::Rejected(reason) => {
                    let mut l = letter(m, "rejected", reason);
                    l.id = Some(doc.id.clone());
                    l.index = Some(doc.index.clone());
                    self.letters.push(l);
                    self.outcome.count(*op, 2);
                }
            }
        }
        for l in &mut self.letters {
            l.topic = Some(topic.to_owned());
        }
        dead_letters.send_all(std::mem::take(&mut self.letters)).await?;
        Ok(self.outcome)
    }
}

/// The part of a gap notice that names this migration's indices, if any.
fn ours(recipe: &Recipe, notice: gap::GapNotice) -> Option<Gap> {
    let pair = |index: &str| match route(recipe, index) {
        Route::Pair(pair, _) => Some(pair),
        _ => None,
    };
    let docs: Vec<Recheck> = notice
        .docs
        .into_iter()
        .filter_map(|d| {
            let p = pair(&d.index)?;
            Some(Recheck { index: p.target.clone(), id: d.id, routing: d.routing })
        })
        .collect();
    let unnamed: Vec<String> = notice.unnamed.iter().filter_map(|i| pair(i)).map(|p| p.source.clone()).collect();
    let g = Gap { origin: notice.origin, request: notice.request, at: notice.at, docs, unnamed };
    (!g.docs.is_empty() || !g.unnamed.is_empty()).then_some(g)
}

/// Where an event's `index` leads.
enum Route<'r> {
    /// The pair of that source index; `true` if the event named the pair's alias instead (a
    /// producer that wrote through the alias and reported the name it wrote to).
    Pair(&'r IndexPair, bool),
    Target,
    /// An index without the recipe's prefix: another tenant's.
    OtherPrefix,
    Unknown,
}

fn route<'r>(recipe: &'r Recipe, index: &str) -> Route<'r> {
    if let Some(pair) = recipe.pair_for_source(index) {
        Route::Pair(pair, false)
    } else if let Some(pair) = recipe.pair_for_alias(index) {
        Route::Pair(pair, true)
    } else if recipe.is_target(index) {
        Route::Target
    } else if !recipe.owns(index) {
        Route::OtherPrefix
    } else {
        Route::Unknown
    }
}

fn said_once_alias(pair: &IndexPair) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            alias = %pair.alias,
            source = %pair.source,
            "events name the alias instead of the concrete source index; applying them to the index the alias \
             pointed at when the migration was initialised (counted in indexferry_events_by_alias_total)"
        );
    }
}

fn letter(m: &OwnedMessage, kind: &'static str, reason: String) -> DeadLetter {
    let mut l = DeadLetter::new(kind, "replay", reason);
    l.partition = Some(m.partition());
    l.offset = Some(m.offset());
    l.key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
    l.payload = m.payload().map(|p| String::from_utf8_lossy(p).into_owned());
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexferry_common::config::Overrides;
    use std::path::Path;

    const RECIPE: &str = r#"
name = "records-v2"
[source]
url = "http://127.0.0.1:9200"
[kafka]
brokers = "127.0.0.1:9092"
topic = "records.changes"
[[indices]]
source = "records-v1"
target = "records-v2"
alias = "records"
"#;

    #[test]
    fn an_event_is_routed_by_source_alias_or_target() {
        let r = Recipe::parse(RECIPE, Path::new("r.toml"), Path::new("."), &Overrides::default()).unwrap();
        assert!(matches!(route(&r, "records-v1"), Route::Pair(p, false) if p.target == "records-v2"));
        assert!(matches!(route(&r, "records"), Route::Pair(p, true) if p.source == "records-v1"));
        assert!(matches!(route(&r, "records-v2"), Route::Target));
        assert!(matches!(route(&r, "records-v3"), Route::Unknown));
    }

    #[test]
    fn another_tenants_index_is_not_unknown() {
        let text = format!("prefix = \"tenant-a-\"\n{RECIPE}");
        let r = Recipe::parse(&text, Path::new("r.toml"), Path::new("."), &Overrides::default()).unwrap();
        assert!(matches!(route(&r, "tenant-a-records-v1"), Route::Pair(p, false) if p.target == "tenant-a-records-v2"));
        assert!(matches!(route(&r, "tenant-a-records"), Route::Pair(_, true)));
        assert!(matches!(route(&r, "tenant-b-records-v1"), Route::OtherPrefix));
        assert!(matches!(route(&r, "records-v1"), Route::OtherPrefix), "the recipe's names carry the prefix");
        assert!(matches!(route(&r, "tenant-a-records-v3"), Route::Unknown));
    }

    #[test]
    fn unknown_indices_are_counted_by_name_up_to_a_bound() {
        let mut held: BTreeMap<String, u64> = (0..MAX_IGNORED_INDICES - 1).map(|i| (format!("i{i}"), 1)).collect();
        let mut o = Outcome::default();
        o.unknown.insert("i0".into(), 2);
        o.unknown.insert("new-a".into(), 3);
        o.unknown.insert("new-b".into(), 4);
        o.record_indices(&mut held);
        assert_eq!(held["i0"], 3, "a held name keeps counting");
        assert_eq!(held["new-a"], 3, "the hundredth name still fits");
        assert_eq!(held[OTHER_INDICES], 4, "the next one is counted among the others");
        assert_eq!(held.len(), MAX_IGNORED_INDICES + 1);
    }
}
