//! One batch of messages: decoded into target writes, applied, judged.

use crate::deadletter::{DeadLetter, DeadLetters};
use crate::state::{tombstone_key, Tombstone};
use crate::writer::{Cancelled, Doc, Final, Writer};
use indexferry_common::config::Recipe;
use indexferry_schemas::{decode, Op};
use rdkafka::message::{Message, OwnedMessage};

/// What a batch did, for the checkpoint and the metrics.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub applied: u64,
    pub stale: u64,
    pub dead_lettered: u64,
    pub ignored: u64,
    by_op: [[u64; 3]; 3],
    /// Deletes the target has seen, applied or stale: recorded as tombstones (see `state::Tombstone`).
    pub tombstones: Vec<(String, Tombstone)>,
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
}

impl<'a> Batch<'a> {
    pub(super) fn decode(messages: &'a [OwnedMessage], recipe: &Recipe) -> Batch<'a> {
        let mut b = Batch {
            docs: Vec::with_capacity(messages.len()),
            origin: vec![],
            letters: vec![],
            outcome: Outcome::default(),
        };
        for m in messages {
            match decode(m.key(), m.payload().unwrap_or_default()) {
                Err(e) => {
                    b.letters.push(letter(m, "decode", e.to_string()));
                    b.outcome.count(2, 2);
                }
                Ok(event) => match recipe.pair_for_source(&event.index) {
                    // Events of indices outside this migration (or of the target after
                    // rollover) share the topic; they are not ours to apply.
                    None => b.outcome.ignored += 1,
                    Some(pair) => {
                        let op = if event.op == Op::Index { 0 } else { 1 };
                        b.docs.push(Doc {
                            index: pair.target.clone(),
                            version: event.external_version(),
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
            match f {
                Final::Applied => self.outcome.count(*op, 0),
                Final::Stale => self.outcome.count(*op, 1),
                Final::Rejected(reason) => {
                    let mut l = letter(m, "rejected", reason);
                    l.id = Some(doc.id.clone());
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

fn letter(m: &OwnedMessage, kind: &'static str, reason: String) -> DeadLetter {
    let mut l = DeadLetter::new(kind, "replay", reason);
    l.partition = Some(m.partition());
    l.offset = Some(m.offset());
    l.key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
    l.payload = m.payload().map(|p| String::from_utf8_lossy(p).into_owned());
    l
}
