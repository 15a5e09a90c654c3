//! Ids written after the rollover. Once the alias has moved, the application writes into
//! the target alone, so those documents rightly differ from the frozen source: `verify`
//! leaves them out (and says how many) instead of reporting them as differences. They are
//! read from the topic, from the offsets the rollover drained up to.

use indexferry_common::config::KafkaConfig;
use indexferry_common::kafka::{consumer_config, Offsets};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Past this many ids, verification of recent writes is given up (memory stays bounded).
const MAX_IDS: usize = 2_000_000;

pub(super) fn ids_written_since(k: &KafkaConfig, from: &Offsets) -> anyhow::Result<HashSet<String>> {
    let consumer: BaseConsumer = consumer_config(&k.brokers, &k.properties, "indexferry-verify").create()?;
    let mut tpl = TopicPartitionList::new();
    let mut until = Offsets::new();
    for (p, o) in from {
        let (_, high) = consumer.fetch_watermarks(&k.topic, *p, Duration::from_secs(10))?;
        if high > *o {
            tpl.add_partition_offset(&k.topic, *p, Offset::Offset(*o))?;
            until.insert(*p, high);
        }
    }
    let mut ids = HashSet::new();
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
        if let Some(key) = m.key() {
            ids.insert(String::from_utf8_lossy(key).into_owned());
        }
        anyhow::ensure!(ids.len() <= MAX_IDS, "more than {MAX_IDS} documents were written after the switch");
        if until.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
            until.remove(&m.partition());
        }
    }
    indexferry_common::kafka::abandon(consumer);
    Ok(ids)
}
