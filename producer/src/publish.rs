//! Publishing change events: one idempotent, `acks=all` Kafka producer, made anew when it
//! stops working. Shared by the library ([`crate::Producer`]) and the capture proxy.

use indexferry_common::kafka::{producer_config, wait_for_leaders};
use indexferry_schemas::ChangeEvent;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// A client whose publishes have all failed for this long is made anew, as after a
/// fatal error: seen in the chaos harness, where after a run of broker restarts one
/// idempotent client went on timing out every event for minutes while a new one published
/// at once. A broker that is really down costs only a reconnection every `STUCK_AFTER`.
const STUCK_AFTER: Duration = Duration::from_secs(20);

/// A failure longer ago than this no longer counts as "failing now": an application idle
/// after one failure keeps its client.
const FAILING_NOW: Duration = Duration::from_secs(2);

pub struct Publisher {
    /// Replaced when librdkafka reports a fatal error (an idempotent producer can meet one
    /// when the broker restarts; the instance is unusable afterwards).
    kafka: RwLock<Arc<FutureProducer>>,
    /// Milliseconds after `epoch` of the first publish that failed since the last one that
    /// went through (and since the current client was made), plus one; 0: none failed.
    failing_since: AtomicU64,
    /// Milliseconds after `epoch` of the last publish that failed, plus one.
    last_failure: AtomicU64,
    epoch: Instant,
    brokers: String,
    properties: BTreeMap<String, String>,
    topic: String,
    timeout: Duration,
}

impl Publisher {
    /// Makes the producer, without waiting for the brokers.
    pub fn new(
        brokers: &str,
        properties: &BTreeMap<String, String>,
        topic: &str,
        timeout: Duration,
    ) -> Result<Publisher, String> {
        let kafka: FutureProducer =
            producer_config(brokers, properties, timeout).create().map_err(|e| format!("kafka producer: {e}"))?;
        Ok(Publisher {
            kafka: RwLock::new(Arc::new(kafka)),
            failing_since: AtomicU64::new(0),
            last_failure: AtomicU64::new(0),
            epoch: Instant::now(),
            brokers: brokers.to_owned(),
            properties: properties.clone(),
            topic: topic.to_owned(),
            timeout,
        })
    }

    /// Makes the producer and learns the partition leaders now, so that the first events
    /// do not spend their publish timeout on it.
    pub async fn connect(
        brokers: &str,
        properties: &BTreeMap<String, String>,
        topic: &str,
        timeout: Duration,
    ) -> Result<Publisher, String> {
        let publisher = Publisher::new(brokers, properties, topic, timeout)?;
        let kafka = publisher.kafka();
        let name = topic.to_owned();
        tokio::task::spawn_blocking(move || wait_for_leaders(kafka.client(), &name, Duration::from_secs(30)))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("kafka: {e}"))?;
        Ok(publisher)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes one event and waits for the broker's acknowledgement.
    pub async fn publish(&self, event: &ChangeEvent) -> Result<(), String> {
        self.publish_raw(&event.id, &event.to_json()).await
    }

    /// Publishes one record keyed `key` (a change event, a gap notice) and waits for its
    /// acknowledgement.
    pub async fn publish_raw(&self, key: &str, payload: &[u8]) -> Result<(), String> {
        let record = FutureRecord::to(&self.topic).key(key.as_bytes()).payload(payload);
        match self.kafka().send(record, Timeout::After(self.timeout)).await {
            Ok(_) => {
                self.ok();
                Ok(())
            }
            Err((e, _)) => {
                self.failed();
                Err(e.to_string())
            }
        }
    }

    /// Publishes the events at once and waits for every acknowledgement; each one's outcome,
    /// in order. Events of one id keep their order (one partition, an idempotent producer).
    pub async fn publish_all<'e>(&self, events: impl IntoIterator<Item = &'e ChangeEvent>) -> Vec<Result<(), String>> {
        let payloads: Vec<(&str, Vec<u8>)> = events.into_iter().map(|e| (e.id.as_str(), e.to_json())).collect();
        let kafka = self.kafka();
        let pending = payloads.iter().map(|(id, payload)| {
            let record = FutureRecord::to(&self.topic).key(id.as_bytes()).payload(payload);
            kafka.send(record, Timeout::After(self.timeout))
        });
        let delivered = futures::future::join_all(pending).await;
        delivered
            .into_iter()
            .map(|d| match d {
                Ok(_) => {
                    self.ok();
                    Ok(())
                }
                Err((e, _)) => {
                    self.failed();
                    Err(e.to_string())
                }
            })
            .collect()
    }

    /// How long every publish has failed, while the last one failed only moments ago; None
    /// while publishing works (or nothing was tried lately).
    pub fn failing_for(&self) -> Option<Duration> {
        let ago = |ms: u64| self.epoch.elapsed().saturating_sub(Duration::from_millis(ms.saturating_sub(1)));
        match self.failing_since.load(Ordering::Relaxed) {
            0 => None,
            _ if ago(self.last_failure.load(Ordering::Relaxed)) > FAILING_NOW => None,
            ms => Some(ago(ms)),
        }
    }

    /// Asks the brokers for the topic's metadata: true if they answer (used to tell when
    /// Kafka is back without publishing anything).
    pub async fn reachable(&self, within: Duration) -> bool {
        let kafka = self.kafka();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || kafka.client().fetch_metadata(Some(&topic), within).is_ok())
            .await
            .unwrap_or(false)
    }

    /// Forgets the failures seen so far (Kafka answered again).
    pub fn ok(&self) {
        self.failing_since.store(0, Ordering::Relaxed);
    }

    fn failed(&self) {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let _ = self.failing_since.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        self.last_failure.store(now, Ordering::Relaxed);
    }

    /// The Kafka producer, made anew if the current one has met a fatal error, or has not
    /// published anything for [`STUCK_AFTER`].
    fn kafka(&self) -> Arc<FutureProducer> {
        let current = self.kafka.read().unwrap_or_else(|p| p.into_inner()).clone();
        let failing = self.failing_for().unwrap_or_default();
        let why = match current.client().fatal_error() {
            Some((code, reason)) => format!("a fatal error ({code:?}: {reason})"),
            None if failing > STUCK_AFTER => format!("every event failed for {}s", failing.as_secs()),
            None => return current,
        };
        let mut slot = self.kafka.write().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&slot, &current) {
            return slot.clone();
        }
        // The new client gets its own STUCK_AFTER.
        self.ok();
        match producer_config(&self.brokers, &self.properties, self.timeout).create() {
            Ok(fresh) => {
                tracing::warn!(why = %why, "kafka producer replaced");
                *slot = Arc::new(fresh);
                slot.clone()
            }
            Err(e) => {
                tracing::warn!(why = %why, error = %e, "kafka producer cannot be replaced yet");
                current
            }
        }
    }

    /// Waits until every event handed to Kafka is acknowledged (for a clean exit).
    pub fn flush(&self, timeout: Duration) {
        let _ = self.kafka().flush(Timeout::After(timeout));
    }
}
