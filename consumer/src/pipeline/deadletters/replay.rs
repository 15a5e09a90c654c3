//! `deadletters --replay`: the letters not replayed yet go back to the migration's topic as
//! change events, for the consumer to apply like any other.
//!
//! A replay letter is its original event, byte for byte, with its original version: if the
//! document changed since, the target holds a newer version and refuses the old one as stale.
//! A snapshot letter is the document as the source holds it now (a realtime `_mget`), as an
//! event with the version it has now. Either way nothing can regress.

use super::{read_letters, replayed_marks, Listed, Position, REPLAYED_KEY};
use crate::pipeline::mget::Key;
use crate::runtime::context::{Common, Ctx};
use crate::state::{Db, State};
use anyhow::{bail, Context as _};
use chrono::Utc;
use indexferry_common::config::Recipe;
use indexferry_common::kafka::producer_config;
use indexferry_schemas::{ChangeEvent, Op, SCHEMA_V1};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::Serialize;
use std::time::Duration;

/// Documents per `_mget` when snapshot letters are read back from the source.
const MGET_BATCH: usize = 500;

#[derive(Debug, Serialize)]
pub struct ReplayReport {
    /// The migration's change-event topic, where the events went.
    pub topic: String,
    pub published: Vec<Published>,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Serialize)]
pub struct Published {
    pub dead_letter: Position,
    pub id: String,
    /// Where the event landed in the migration's topic.
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Serialize)]
pub struct Skipped {
    pub dead_letter: Position,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub why: String,
}

/// An event ready to publish, for the letter at `at`.
struct Event {
    at: Position,
    id: String,
    bytes: Vec<u8>,
}

pub async fn replay(common: &Common, name: &str) -> anyhow::Result<ReplayReport> {
    let (_lock, ctx) = Ctx::load_locked(common, name, "deadletters --replay").await?;
    if ctx.migration.state == State::RolledOver {
        bail!(
            "migration {name:?} is rolled over: no consumer applies events any more; \
             write what the dead letters hold to the target directly"
        );
    }
    let mut marks = replayed_marks(&ctx.dir)?;
    let pending: Vec<Listed> = read_letters(&ctx.recipe, &marks).await?.into_iter().filter(|l| !l.replayed).collect();
    let (events, skipped) = events_for(&ctx, &pending).await?;
    let published = publish(&ctx.recipe, events).await?;
    if !pending.is_empty() {
        for l in &pending {
            let next = marks.entry(l.dead_letter.partition).or_default();
            *next = (*next).max(l.dead_letter.offset + 1);
        }
        let store = ctx.dir.open(Db::Meta)?;
        store.put(REPLAYED_KEY, &marks)?;
        store.flush()?;
    }
    Ok(ReplayReport { topic: ctx.recipe.kafka.topic.clone(), published, skipped })
}

pub fn print(r: &ReplayReport) {
    println!("replayed {} dead letters to kafka topic {:?}, skipped {}", r.published.len(), r.topic, r.skipped.len());
    for s in &r.skipped {
        println!(
            "  skipped {}/{} id {:?}: {}",
            s.dead_letter.partition,
            s.dead_letter.offset,
            s.id.as_deref().unwrap_or("-"),
            s.why
        );
    }
}

/// The event each letter stands for, or why it has none.
async fn events_for(ctx: &Ctx, pending: &[Listed]) -> anyhow::Result<(Vec<Event>, Vec<Skipped>)> {
    let (mut events, mut skipped, mut snapshot) = (Vec::new(), Vec::new(), Vec::new());
    for l in pending {
        let skip = |why: String| Skipped { dead_letter: l.dead_letter, id: l.letter.id.clone(), why };
        match (l.letter.kind.as_str(), l.letter.stage.as_str()) {
            ("rejected", "replay") => match original_event(l) {
                Ok(e) => events.push(e),
                Err(why) => skipped.push(skip(why)),
            },
            ("rejected", "snapshot") if l.letter.id.is_some() && l.letter.index.is_some() => snapshot.push(l),
            (kind, _) => skipped.push(skip(format!(
                "a {kind} letter is not an event the source acknowledged; fix its producer and publish it again"
            ))),
        }
    }
    for chunk in snapshot.chunks(MGET_BATCH) {
        let (e, s) = current_documents(ctx, chunk).await?;
        events.extend(e);
        skipped.extend(s);
    }
    Ok((events, skipped))
}

/// A replay letter's event, as it was on the topic.
fn original_event(l: &Listed) -> Result<Event, String> {
    let payload = l.letter.payload.as_deref().unwrap_or_default();
    match indexferry_schemas::decode(l.letter.key.as_deref().map(str::as_bytes), payload.as_bytes()) {
        Ok(event) => Ok(Event { at: l.dead_letter, id: event.id, bytes: payload.as_bytes().to_vec() }),
        Err(e) => Err(format!(
            "its copy of the event is not valid ({e}); the original is at offset {}/{} of kafka topic {:?}",
            l.letter.partition.unwrap_or(-1),
            l.letter.offset.unwrap_or(-1),
            l.letter.topic.as_deref().unwrap_or("?")
        )),
    }
}

/// Snapshot letters' documents as the source holds them now, as index events.
async fn current_documents(ctx: &Ctx, letters: &[&Listed]) -> anyhow::Result<(Vec<Event>, Vec<Skipped>)> {
    let keys = letters.iter().map(|l| Key {
        index: l.letter.index.as_deref(),
        id: l.letter.id.as_deref().unwrap_or_default(),
        routing: l.letter.routing.as_deref(),
    });
    let docs = crate::pipeline::mget::mget(&ctx.source, None, keys, true)
        .await
        .with_context(|| format!("source cluster {}: reading the dead-lettered documents", ctx.source.url))?;
    let (mut events, mut skipped) = (Vec::new(), Vec::new());
    for (l, doc) in letters.iter().zip(docs) {
        let (index, id) = (l.letter.index.clone().unwrap_or_default(), l.letter.id.clone().unwrap_or_default());
        let skip = |why: String| Skipped { dead_letter: l.dead_letter, id: Some(id.clone()), why };
        let event = match (doc.found, doc.seq_no, doc.primary_term, doc.source) {
            (true, Some(seq_no), Some(primary_term), Some(source)) => ChangeEvent {
                schema: SCHEMA_V1.into(),
                op: Op::Index,
                index: index.clone(),
                id: id.clone(),
                seq_no,
                primary_term,
                version: doc.version.unwrap_or(1),
                routing: l.letter.routing.clone(),
                source: Some(source),
                ts: Utc::now(),
            },
            _ if doc.error.is_some() => {
                skipped.push(skip(format!("the source cluster cannot read it: {}", doc.error.unwrap_or_default())));
                continue;
            }
            _ => {
                skipped.push(skip(format!("no longer in source index {index:?}: its delete is an event of its own")));
                continue;
            }
        };
        events.push(Event { at: l.dead_letter, id, bytes: event.to_json() });
    }
    Ok((events, skipped))
}

/// Publishes the events keyed by document id and waits for every acknowledgement.
async fn publish(recipe: &Recipe, events: Vec<Event>) -> anyhow::Result<Vec<Published>> {
    let topic = &recipe.kafka.topic;
    let producer: FutureProducer =
        producer_config(&recipe.kafka.brokers, &recipe.kafka.properties, Duration::from_secs(30)).create()?;
    let sends = events.iter().map(|e| {
        producer.send(FutureRecord::to(topic).key(&e.id).payload(&e.bytes), Timeout::After(Duration::from_secs(30)))
    });
    let results = futures::future::join_all(sends).await;
    let mut out = Vec::with_capacity(events.len());
    for (e, r) in events.iter().zip(results) {
        let delivery = r.map_err(|(err, _)| {
            anyhow::anyhow!(
                "kafka topic {topic:?} at {}: event of dead letter {}/{} not published: {err}",
                recipe.kafka.brokers,
                e.at.partition,
                e.at.offset
            )
        })?;
        out.push(Published {
            dead_letter: e.at,
            id: e.id.clone(),
            partition: delivery.partition,
            offset: delivery.offset,
        });
    }
    Ok(out)
}
