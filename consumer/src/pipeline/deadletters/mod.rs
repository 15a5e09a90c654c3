//! The dead-letter topic: every event that cannot be decoded and every document the target
//! refuses for good lands there with its reason ([`letter`], written by the stages), and
//! `indexferry migration deadletters` lists the letters and publishes them again to the
//! migration's topic once their cause is fixed (this file and [`replay`]).
//!
//! The letters stay in Kafka; the state keeps, per partition of the dead-letter topic, the
//! offset up to which they were replayed, so a second `--replay` publishes only letters
//! written since.

mod letter;
mod replay;

pub use letter::{DeadLetter, DeadLetters};
pub use replay::{print as print_replay, replay, ReplayReport};

use crate::runtime::context::{stored_recipe, Common};
use crate::state::{Db, StateDir};
use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use indexferry_common::config::Recipe;
use indexferry_common::kafka::{self, Offsets};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Meta key: dead-letter partition → the first offset not replayed yet.
const REPLAYED_KEY: &str = "deadletters_replayed";

/// How long reading the dead-letter topic to its end may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One dead letter as read back from its topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Letter {
    /// `decode` (not a valid event) or `rejected` (the target refused the document).
    pub kind: String,
    /// `replay` or `snapshot`.
    pub stage: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The source index (snapshot letters) or the target index (replay letters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// The event's topic, partition and offset (replay letters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing)]
    pub payload: Option<String>,
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
}

/// Where a letter sits in the dead-letter topic.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub dead_letter: Position,
    pub replayed: bool,
    #[serde(flatten)]
    pub letter: Letter,
}

#[derive(Debug, Serialize)]
pub struct Listing {
    pub migration: String,
    pub topic: String,
    pub letters: Vec<Listed>,
}

/// Every letter of the migration's dead-letter topic, with whether it was replayed.
pub async fn list(common: &Common, name: &str) -> anyhow::Result<Listing> {
    let dir = StateDir::new(&common.state_dir, name);
    let m = dir.load_migration()?;
    let recipe = stored_recipe(&m, &common.overrides)?;
    let replayed = replayed_marks(&dir)?;
    let letters = read_letters(&recipe, &replayed).await?;
    Ok(Listing { migration: m.name, topic: recipe.dead_letter_topic(), letters })
}

pub fn print(l: &Listing) {
    let done = l.letters.iter().filter(|x| x.replayed).count();
    println!(
        "dead letters of migration {:?} (kafka topic {:?}): {}, {done} replayed",
        l.migration,
        l.topic,
        l.letters.len()
    );
    for x in &l.letters {
        let origin = match (x.letter.partition, x.letter.offset) {
            (Some(p), Some(o)) => format!("offset {p}/{o}"),
            _ => format!("index {}", x.letter.index.as_deref().unwrap_or("-")),
        };
        println!(
            "  {}/{}  {:<8} {:<8} id {:?}  {origin}  {}  {}",
            x.dead_letter.partition,
            x.dead_letter.offset,
            x.letter.kind,
            x.letter.stage,
            x.letter.id.as_deref().or(x.letter.key.as_deref()).unwrap_or("-"),
            if x.replayed { "replayed" } else { "pending" },
            x.letter.reason
        );
    }
}

fn replayed_marks(dir: &StateDir) -> anyhow::Result<Offsets> {
    Ok(match dir.open_read_only(Db::Meta)? {
        Some(store) => store.get::<Offsets>(REPLAYED_KEY)?.unwrap_or_default(),
        None => Offsets::new(),
    })
}

fn is_replayed(marks: &Offsets, at: Position) -> bool {
    marks.get(&at.partition).is_some_and(|next| at.offset < *next)
}

/// Reads the dead-letter topic from its first available offset to its end, off the runtime.
/// Under a prefix, the topic is shared with other tenants: their letters (an index outside
/// the prefix) are left out; a letter naming no index (an undecodable event) is kept.
async fn read_letters(recipe: &Recipe, replayed: &Offsets) -> anyhow::Result<Vec<Listed>> {
    let (k, topic, group) = (recipe.kafka.clone(), recipe.dead_letter_topic(), recipe.group_id());
    let read = tokio::task::spawn_blocking(move || read_topic(&k, &topic, &group)).await??;
    Ok(read
        .into_iter()
        .filter(|(_, letter)| ours(recipe, letter))
        .map(|(at, letter)| Listed { dead_letter: at, replayed: is_replayed(replayed, at), letter })
        .collect())
}

fn read_topic(
    k: &indexferry_common::config::KafkaConfig,
    topic: &str,
    group: &str,
) -> anyhow::Result<Vec<(Position, Letter)>> {
    let at = || format!("dead-letter topic {topic:?} at {}", k.brokers);
    let marks = kafka::watermarks(k, topic, READ_TIMEOUT).with_context(at)?;
    let mut pending: Offsets = marks.iter().filter(|(_, (low, high))| low < high).map(|(p, (_, h))| (*p, *h)).collect();
    if pending.is_empty() {
        return Ok(vec![]);
    }
    let consumer: BaseConsumer = kafka::kafka_consumer_config(k, &format!("{group}-deadletters")).create()?;
    let mut tpl = TopicPartitionList::new();
    for (p, (low, _)) in marks.iter().filter(|(p, _)| pending.contains_key(p)) {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*low))?;
    }
    consumer.assign(&tpl).with_context(at)?;
    let result = drain(&consumer, topic, &mut pending);
    kafka::abandon(consumer);
    result.with_context(at)
}

/// Polls until every partition of `pending` is read up to its end offset.
fn drain(consumer: &BaseConsumer, topic: &str, pending: &mut Offsets) -> anyhow::Result<Vec<(Position, Letter)>> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut out = Vec::new();
    while let Some((p, end)) = pending.iter().next().map(|(p, e)| (*p, *e)) {
        if Instant::now() > deadline {
            bail!("partition {p} not read up to its end offset {end} within {READ_TIMEOUT:?}");
        }
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            let at = Position { partition: m.partition(), offset: m.offset() };
            if pending.get(&at.partition).is_some_and(|end| at.offset < *end) {
                out.push((at, parse(m.payload().unwrap_or_default())));
            }
        }
        // Positions rather than offsets seen: a partition may end on a control record.
        let positions = consumer.position()?;
        pending.retain(|p, end| match positions.find_partition(topic, *p).map(|e| e.offset()) {
            Some(Offset::Offset(next)) => next < *end,
            _ => true,
        });
    }
    out.sort_by_key(|(at, _)| (at.partition, at.offset));
    Ok(out)
}

/// Whether a letter is this migration's: its index carries the recipe's prefix, or it names
/// no index (a message that could not be decoded belongs to every tenant of the topic).
fn ours(recipe: &Recipe, letter: &Letter) -> bool {
    letter.index.as_deref().is_none_or(|i| recipe.owns(i))
}

/// A letter, or what stands for a message that is not one.
fn parse(payload: &[u8]) -> Letter {
    serde_json::from_slice(payload).unwrap_or_else(|e| Letter {
        kind: "unreadable".into(),
        stage: "-".into(),
        reason: format!("not a dead letter: {e}"),
        id: None,
        index: None,
        topic: None,
        partition: None,
        offset: None,
        routing: None,
        key: None,
        payload: None,
        at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_letter_is_replayed_below_the_mark_of_its_partition() {
        let marks: Offsets = [(0, 3)].into();
        assert!(is_replayed(&marks, Position { partition: 0, offset: 2 }));
        assert!(!is_replayed(&marks, Position { partition: 0, offset: 3 }));
        assert!(!is_replayed(&marks, Position { partition: 1, offset: 0 }));
    }

    #[test]
    fn letters_written_by_the_pipeline_read_back() {
        let mut l = crate::pipeline::deadletters::DeadLetter::new("rejected", "snapshot", "strict".into());
        l.id = Some("d1".into());
        l.routing = Some("r".into());
        l.payload = Some("{}".into());
        let back = parse(&serde_json::to_vec(&l).unwrap());
        assert_eq!((back.kind.as_str(), back.stage.as_str(), back.id.as_deref()), ("rejected", "snapshot", Some("d1")));
        assert_eq!((back.routing.as_deref(), back.payload.as_deref()), (Some("r"), Some("{}")));
        assert_eq!(parse(b"nope").kind, "unreadable");
    }

    #[test]
    fn a_tenant_sees_its_own_letters_and_the_undecodable_ones() {
        let text = r#"
prefix = "tenant-a-"
name = "m"
[source]
url = "http://127.0.0.1:9200"
[kafka]
brokers = "127.0.0.1:9092"
topic = "shared"
[[indices]]
source = "records"
target = "records-v2"
alias = "records-alias"
"#;
        let recipe = Recipe::parse(
            text,
            std::path::Path::new("r.toml"),
            std::path::Path::new("."),
            &indexferry_common::config::Overrides::default(),
        )
        .unwrap();
        let letter = |index: Option<&str>| {
            let mut l = parse(b"nope");
            l.index = index.map(Into::into);
            l
        };
        assert!(ours(&recipe, &letter(Some("tenant-a-records-v2"))));
        assert!(!ours(&recipe, &letter(Some("tenant-b-records-v2"))));
        assert!(ours(&recipe, &letter(None)));
    }
}
