//! Ids written after the rollover. Once the alias has moved, the application writes into
//! the target alone, so those documents rightly differ from the frozen source: `verify`
//! leaves them out (and says how many) instead of reporting them as differences. They are
//! read from the topic, from the offsets the rollover drained up to: only events that name
//! a target index (or its alias) count. An event there that names a source index is a
//! write the source acknowledged whose event came after the drain — a late event, which
//! the replay never applied: it is reported, not skipped.

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
    /// Ids of late events per source index.
    pub late: HashMap<String, HashSet<String>>,
}

impl AfterSwitch {
    pub(super) fn written_to(&self, target: &str) -> Option<&HashSet<String>> {
        self.written.get(target)
    }

    /// The ids of `source`'s late events, sorted, but those written into `target` after the
    /// switch: that later write supersedes whatever the late event carried.
    pub(super) fn late_for(&self, source: &str, target: &str) -> Vec<String> {
        let written = self.written.get(target);
        let mut ids: Vec<String> = self
            .late
            .get(source)
            .into_iter()
            .flatten()
            .filter(|id| !written.is_some_and(|w| w.contains(*id)))
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// Files one event under its index: `names` maps a target's name and alias to the
    /// target, and a source's name to itself (marked `true`).
    fn add(&mut self, names: &HashMap<String, (String, bool)>, index: &str, id: String) {
        match names.get(index) {
            Some((target, false)) => {
                self.written.entry(target.clone()).or_default().insert(id);
            }
            Some((source, true)) => {
                self.late.entry(source.clone()).or_default().insert(id);
            }
            None => {}
        }
    }

    fn len(&self) -> usize {
        self.written.values().chain(self.late.values()).map(HashSet::len).sum()
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
            ids.add(names, &e.index, e.id);
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
        }
    }

    #[test]
    fn events_are_filed_by_the_index_they_name() {
        let names = index_names(&[pair("src", "dst", "al")]);
        let mut a = AfterSwitch::default();
        a.add(&names, "dst", "t1".into());
        a.add(&names, "al", "t2".into());
        a.add(&names, "src", "late".into());
        a.add(&names, "src", "t1".into());
        a.add(&names, "elsewhere", "x".into());
        let written = a.written_to("dst").unwrap();
        assert!(written.contains("t1") && written.contains("t2") && written.len() == 2);
        // t1 was written into the target after its late event: superseded.
        assert_eq!(a.late_for("src", "dst"), vec!["late".to_owned()]);
        assert_eq!(a.len(), 4);
    }

    #[test]
    fn a_target_named_like_its_source_is_the_target() {
        let names = index_names(&[pair("same", "same", "al")]);
        let mut a = AfterSwitch::default();
        a.add(&names, "same", "x".into());
        assert!(a.late_for("same", "same").is_empty());
        assert!(a.written_to("same").is_some_and(|w| w.contains("x")));
    }
}
