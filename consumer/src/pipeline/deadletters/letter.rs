//! Writing to the dead-letter topic: every event that cannot be decoded and every document
//! the target refuses for good lands here with its reason, before the offsets that carried
//! it are checkpointed. Nothing is dropped silently.

use chrono::Utc;
use indexferry_common::config::Recipe;
use indexferry_common::kafka::producer_config;
use indexferry_common::metrics::DEAD_LETTERS;
use indexferry_common::retry::Backoff;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::Serialize;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One message of the dead-letter topic.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Why it could not be applied.
    pub reason: String,
    /// `decode` (not a valid event), `rejected` (the target refused the document).
    pub kind: &'static str,
    /// `replay` or `snapshot`.
    pub stage: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The document's routing, when the letter is not an event (a snapshot's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The original message or document, as text (invalid UTF-8 replaced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    pub at: chrono::DateTime<Utc>,
}

impl DeadLetter {
    pub fn new(kind: &'static str, stage: &'static str, reason: String) -> Self {
        DeadLetter {
            reason,
            kind,
            stage,
            topic: None,
            partition: None,
            offset: None,
            index: None,
            id: None,
            routing: None,
            key: None,
            payload: None,
            at: Utc::now(),
        }
    }
}

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    cancel: CancellationToken,
}

/// Largest payload copied into a dead letter; the rest is cut (the original stays on its
/// topic at the recorded offset).
const MAX_PAYLOAD: usize = 512 * 1024;

/// What `status` calls the dead-letter topic when it cannot be written.
const DEAD_LETTER_HEALTH: &str = "dead-letter topic";

impl DeadLetters {
    pub fn new(recipe: &Recipe, cancel: CancellationToken) -> anyhow::Result<Self> {
        let producer =
            producer_config(&recipe.kafka.brokers, &recipe.kafka.properties, Duration::from_secs(30)).create()?;
        Ok(DeadLetters { producer, topic: recipe.dead_letter_topic(), cancel })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes all letters and waits until each is acknowledged, retrying for as long as
    /// it takes (the caller checkpoints only afterwards). `Err` only on shutdown.
    pub async fn send_all(&self, mut letters: Vec<DeadLetter>) -> Result<(), crate::pipeline::writer::Cancelled> {
        let mut backoff = Backoff::standard(None);
        while !letters.is_empty() {
            let mut failed = Vec::new();
            let payloads: Vec<(Vec<u8>, Option<String>)> = letters
                .iter_mut()
                .map(|l| {
                    if let Some(p) = &mut l.payload {
                        if p.len() > MAX_PAYLOAD {
                            let mut cut = MAX_PAYLOAD;
                            while !p.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            p.truncate(cut);
                            p.push_str("…(truncated)");
                        }
                    }
                    (serde_json::to_vec(l).unwrap_or_default(), l.id.clone().or_else(|| l.key.clone()))
                })
                .collect();
            let sends = payloads.iter().map(|(payload, key)| {
                let mut record = FutureRecord::<String, Vec<u8>>::to(&self.topic).payload(payload);
                if let Some(k) = key {
                    record = record.key(k);
                }
                self.producer.send(record, Timeout::After(Duration::from_secs(30)))
            });
            let results = futures::future::join_all(sends).await;
            for (letter, result) in letters.into_iter().zip(results) {
                match result {
                    Ok(_) => {
                        metrics::counter!(DEAD_LETTERS, "kind" => letter.kind, "stage" => letter.stage).increment(1)
                    }
                    Err((e, _)) => {
                        tracing::warn!(error = %e, topic = %self.topic, "dead letter not delivered; retrying");
                        failed.push(letter);
                    }
                }
            }
            // The replay waits for its dead letters before it checkpoints: `status` must say
            // why it is not moving.
            match failed.first() {
                Some(_) => crate::runtime::health::failing(
                    DEAD_LETTER_HEALTH,
                    &format!("{} dead letters cannot be written to kafka topic {:?}", failed.len(), self.topic),
                ),
                None => crate::runtime::health::ok(DEAD_LETTER_HEALTH),
            }
            letters = failed;
            if !letters.is_empty() {
                let delay = backoff.next_delay().unwrap_or(Duration::from_secs(10));
                tokio::select! {
                    _ = self.cancel.cancelled() => return Err(crate::pipeline::writer::Cancelled),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
        Ok(())
    }
}
