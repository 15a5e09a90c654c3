//! Ids written after the rollover. Once the alias has moved, the application writes into
//! the target alone, so those documents rightly differ from the frozen source: `verify`
//! leaves them out (and says how many) instead of reporting them as differences. They are
//! read from the topic, from the offsets the rollover drained up to: only events that name
//! a target index (or its alias) count. An event there that names a source index is a
//! write the source acknowledged whose event came after the drain — a late event, which
//! the replay never applied. `verify` looks each one up in the target: one whose change the
//! target holds already (the same or a newer version, or the document gone for a delete) is
//! a duplicate, published again by an at-least-once producer, and is counted apart; only one
//! the target does not reflect is a difference.

use indexferry_common::config::KafkaConfig;
use indexferry_common::kafka::{consumer_config, Offsets};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Past this many ids, verification of recent writes is given up (memory stays bounded).
const MAX_IDS: usize = 2_000_000;

/// What the topic holds after the rollover's end offsets.
#[derive(Debug, Default)]
pub(super) struct AfterSwitch {
    /// Ids written into each target (by target index name).
    pub written: HashMap<String, HashSet<String>>,
    /// Late events per source index: per id, the newest (highest version).
    pub late: HashMap<String, HashMap<String, Late>>,
}

/// What a late event asked of the document.
#[derive(Debug, Clone)]
pub(super) struct Late {
    pub version: u64,
    /// `external_version(term, seq_no)`, for a migration under the `seq_no` rule.
    pub seq_no_version: u64,
    pub routing: Option<String>,
    /// The body of an index event; `None` for a delete.
    pub source: Option<Box<serde_json::value::RawValue>>,
}

impl AfterSwitch {
    pub(super) fn written_to(&self, target: &str) -> Option<&HashSet<String>> {
        self.written.get(target)
    }

    /// `source`'s late events by id, sorted, but those of ids written into `target` after the
    /// switch: that later write supersedes whatever the late event carried.
    pub(super) fn late_for(&self, source: &str, target: &str) -> Vec<(String, Late)> {
        let written = self.written.get(target);
        let mut late: Vec<(String, Late)> = self
            .late
            .get(source)
            .into_iter()
            .flatten()
            .filter(|(id, _)| !written.is_some_and(|w| w.contains(*id)))
            .map(|(id, l)| (id.clone(), l.clone()))
            .collect();
        late.sort_by(|a, b| a.0.cmp(&b.0));
        late
    }

    /// Files one event under its index: `names` maps a target's name and alias to the
    /// target, and a source's name to itself (marked `true`).
    fn add(&mut self, names: &HashMap<String, (String, bool)>, e: indexferry_schemas::ChangeEvent) {
        match names.get(&e.index) {
            Some((target, false)) => {
                self.written.entry(target.clone()).or_default().insert(e.id);
            }
            Some((source, true)) => {
                let late = Late {
                    version: e.version,
                    seq_no_version: e.external_version(),
                    routing: e.routing,
                    source: e.source,
                };
                let ids = self.late.entry(source.clone()).or_default();
                match ids.get(&e.id) {
                    Some(held) if held.seq_no_version > late.seq_no_version => {}
                    _ => {
                        ids.insert(e.id, late);
                    }
                }
            }
            None => {}
        }
    }

    fn len(&self) -> usize {
        self.written.values().map(HashSet::len).chain(self.late.values().map(HashMap::len)).sum()
    }
}

/// The names an event may give its index: each target and alias (→ the target), each source.
pub(super) fn index_names(pairs: &[crate::state::PairInfo]) -> HashMap<String, (String, bool)> {
    let mut names = HashMap::new();
    for p in pairs {
        names.insert(p.source.clone(), (p.source.clone(), true));
    }
    // A target of the same name as its source (another cluster) is the target after the switch.
    for p in pairs.iter().filter(|p| !p.alias.is_empty()) {
        names.insert(p.alias.clone(), (p.target.clone(), false));
    }
    for p in pairs {
        names.insert(p.target.clone(), (p.target.clone(), false));
    }
    names
}

/// `group`: the group id the reader gives Kafka (it commits nothing), with the tenant's prefix.
pub(super) fn ids_written_since(
    k: &KafkaConfig,
    group: &str,
    from: &Offsets,
    names: &HashMap<String, (String, bool)>,
) -> anyhow::Result<AfterSwitch> {
    let consumer: BaseConsumer = consumer_config(&k.brokers, &k.properties, group).create()?;
    let mut tpl = TopicPartitionList::new();
    let mut until = Offsets::new();
    for (p, o) in from {
        let (_, high) = consumer.fetch_watermarks(&k.topic, *p, Duration::from_secs(10))?;
        if high > *o {
            tpl.add_partition_offset(&k.topic, *p, Offset::Offset(*o))?;
            until.insert(*p, high);
        }
    }
    let mut ids = AfterSwitch::default();
    if until.is_empty() {
        return Ok(ids);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !until.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "reading the writes made after the switch took too long");
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            // A transaction's marker may be the last offset: it is never delivered, but the
            // position moves past it.
            if let Ok(at) = consumer.position() {
                for e in at.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        if until.get(&e.partition()).is_some_and(|end| o >= *end) {
                            until.remove(&e.partition());
                        }
                    }
                }
            }
            continue;
        };
        let m = m?;
        // Not an event (the replay dead-letters those): nothing was written by it.
        if let Some(e) = m.payload().and_then(|p| indexferry_schemas::decode(m.key(), p).ok()) {
            ids.add(names, e);
        }
        anyhow::ensure!(ids.len() <= MAX_IDS, "more than {MAX_IDS} documents were written after the switch");
        if until.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
            until.remove(&m.partition());
        }
    }
    indexferry_common::kafka::abandon(consumer);
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(source: &str, target: &str, alias: &str) -> crate::state::PairInfo {
        crate::state::PairInfo {
            source: source.into(),
            target: target.into(),
            alias: alias.into(),
            source_docs: 0,
            production_settings: Default::default(),
            alias_definition: None,
            pattern: None,
            aliases: Default::default(),
            start_offsets: None,
            source_gc_deletes: None,
        }
    }

    fn event(index: &str, id: &str, seq_no: u64) -> indexferry_schemas::ChangeEvent {
        let text = format!(
            r#"{{"schema":"indexferry.change.v1","op":"index","index":"{index}","id":"{id}","seq_no":{seq_no},
               "primary_term":1,"version":{},"source":{{"n":{seq_no}}},"ts":"2026-01-01T00:00:00Z"}}"#,
            seq_no + 1
        );
        indexferry_schemas::decode(Some(id.as_bytes()), text.as_bytes()).unwrap()
    }

    fn ids(late: &[(String, Late)]) -> Vec<&str> {
        late.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn events_are_filed_by_the_index_they_name() {
        let names = index_names(&[pair("src", "dst", "al")]);
        let mut a = AfterSwitch::default();
        a.add(&names, event("dst", "t1", 1));
        a.add(&names, event("al", "t2", 2));
        a.add(&names, event("src", "late", 3));
        a.add(&names, event("src", "t1", 4));
        a.add(&names, event("elsewhere", "x", 5));
        let written = a.written_to("dst").unwrap();
        assert!(written.contains("t1") && written.contains("t2") && written.len() == 2);
        // t1 was written into the target after its late event: superseded.
        assert_eq!(ids(&a.late_for("src", "dst")), ["late"]);
        assert_eq!(a.len(), 4);
    }

    #[test]
    fn the_newest_late_event_of_an_id_is_kept() {
        let names = index_names(&[pair("src", "dst", "al")]);
        let mut a = AfterSwitch::default();
        a.add(&names, event("src", "x", 9));
        a.add(&names, event("src", "x", 4));
        let late = a.late_for("src", "dst");
        assert_eq!(late[0].1.version, 10, "the duplicate of an older write does not replace the newer one");
    }

    #[test]
    fn a_target_named_like_its_source_is_the_target() {
        let names = index_names(&[pair("same", "same", "al")]);
        let mut a = AfterSwitch::default();
        a.add(&names, event("same", "x", 1));
        assert!(a.late_for("same", "same").is_empty());
        assert!(a.written_to("same").is_some_and(|w| w.contains("x")));
    }
}
