//! Kafka client settings shared by the producer and the consumer.
//!
//! The recipe's `[kafka.properties]` pass through to librdkafka untouched (that is how
//! SASL and TLS are configured); the settings below are the ones correctness rests on and
//! are applied after them, so a recipe cannot turn them off by accident.

use crate::config::KafkaConfig;
use crate::{Error, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::time::Duration;

fn base(brokers: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}

/// An idempotent producer that waits for all in-sync replicas: an event is acknowledged
/// only when it cannot be lost, and retries never duplicate or reorder it.
pub fn producer_config(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    publish_timeout: Duration,
) -> ClientConfig {
    let mut c = base(brokers, properties);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", publish_timeout.as_millis().max(10).to_string())
        .set("compression.type", "lz4");
    c
}

/// A consumer whose offsets we own: no auto-commit, no auto offset store; we assign
/// partitions ourselves and commit only what the target acknowledged.
pub fn consumer_config(brokers: &str, properties: &BTreeMap<String, String>, group_id: &str) -> ClientConfig {
    let mut c = base(brokers, properties);
    c.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // An offset below the partition's first available one means events were deleted
        // (retention, delete-records) before they were replayed: an error, never a jump.
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "20")
        .set("queued.min.messages", "20000");
    c
}

pub fn kafka_consumer_config(k: &KafkaConfig, group_id: &str) -> ClientConfig {
    consumer_config(&k.brokers, &k.properties, group_id)
}

/// Lets go of a consumer without closing it. Dropping an rdkafka consumer that has a group
/// id waits, with no bound, until it has left its group, and after a broker restart that can
/// be forever. indexferry joins no group (partitions are assigned by hand, offsets are
/// checkpointed before they are committed), so nothing is lost by not closing: the handle
/// goes with the process.
pub fn abandon<T>(consumer: T) {
    std::mem::forget(consumer);
}

/// Partition → offset.
pub type Offsets = BTreeMap<i32, i64>;

/// Partition → (first available offset, end offset). The first available offset rises as
/// retention (or delete-records) removes old events.
pub type Watermarks = BTreeMap<i32, (i64, i64)>;

/// The end offsets of `w`.
pub fn ends(w: &Watermarks) -> Offsets {
    w.iter().map(|(p, (_, high))| (*p, *high)).collect()
}

/// Keeps the last error librdkafka reported on its own, such as a failed TLS handshake or a
/// refused SASL login: a request that then times out can say why.
#[derive(Default)]
pub struct LastError(std::sync::Mutex<Option<String>>);

impl LastError {
    /// `e`, with the last connection error when there was one.
    fn explain(&self, e: rdkafka::error::KafkaError) -> Error {
        match self.0.lock().ok().and_then(|g| g.clone()) {
            Some(reason) => Error::Other(format!("{e}; the last connection error was: {reason}")),
            None => e.into(),
        }
    }

    fn keep(&self, reason: &str) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(reason.to_owned());
        }
    }
}

impl rdkafka::client::ClientContext for LastError {
    // A failed handshake or login is logged; the error event carries only its code.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => {
                tracing::warn!(fac, message, "kafka client");
                self.keep(message);
            }
            _ => tracing::debug!(fac, message, "kafka client"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
        self.keep(reason);
    }
}

impl rdkafka::consumer::ConsumerContext for LastError {}

/// Reads a topic's end offsets over one long-lived client: a rollover reads them while
/// writes are blocked, where a new client's bootstrap would add to the pause.
pub struct OffsetReader {
    consumer: BaseConsumer<LastError>,
    topic: String,
}

impl OffsetReader {
    pub fn new(k: &KafkaConfig, topic: &str) -> Result<OffsetReader> {
        // No group id: this client only reads metadata, and without one it closes at once.
        // librdkafka's log level follows the `log` crate's, which no logger raised here.
        let consumer = base(&k.brokers, &k.properties)
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Warning)
            .create_with_context(LastError::default())?;
        Ok(OffsetReader { consumer, topic: topic.to_owned() })
    }

    /// The topic's partitions and their end offsets (the offset the next event will get).
    pub fn end_offsets(&self, timeout: Duration) -> Result<Offsets> {
        Ok(ends(&self.watermarks(timeout)?))
    }

    /// The topic's partitions, as they are now, with their first available and end offsets.
    pub fn watermarks(&self, timeout: Duration) -> Result<Watermarks> {
        let topic = &self.topic;
        let metadata = self.consumer.fetch_metadata(Some(topic), timeout).map_err(|e| self.explain(e))?;
        let t = metadata.topics().first().ok_or_else(|| Error::Other(format!("kafka topic {topic:?}: no metadata")))?;
        if let Some(err) = t.error() {
            return Err(Error::Other(format!("kafka topic {topic:?}: {:?}", err)));
        }
        if t.partitions().is_empty() {
            return Err(Error::Other(format!("kafka topic {topic:?} does not exist or has no partitions")));
        }
        let mut out = Watermarks::new();
        for p in t.partitions() {
            let marks = self.consumer.fetch_watermarks(topic, p.id(), timeout).map_err(|e| self.explain(e))?;
            out.insert(p.id(), marks);
        }
        Ok(out)
    }

    /// `e`, with the last connection error librdkafka logged. Its log lines wait in the
    /// client's queue until it is polled.
    fn explain(&self, e: rdkafka::error::KafkaError) -> Error {
        for _ in 0..1000 {
            if self.consumer.poll(Duration::ZERO).is_none() {
                break;
            }
        }
        self.consumer.context().explain(e)
    }
}

/// The topic's partitions and their end offsets, over a client made for the purpose.
pub fn end_offsets(k: &KafkaConfig, topic: &str, timeout: Duration) -> Result<Offsets> {
    OffsetReader::new(k, topic)?.end_offsets(timeout)
}

/// The consumer groups the broker lets this login see (a group it may not describe is left
/// out), over a client made for the purpose.
pub fn group_names(k: &KafkaConfig, timeout: Duration) -> Result<Vec<String>> {
    let reader = OffsetReader::new(k, "")?;
    let list = reader.consumer.fetch_group_list(None, timeout).map_err(|e| reader.explain(e))?;
    Ok(list.groups().iter().map(|g| g.name().to_owned()).collect())
}

/// The topic's partitions with their first available and end offsets, over a client made
/// for the purpose.
pub fn watermarks(k: &KafkaConfig, topic: &str, timeout: Duration) -> Result<Watermarks> {
    OffsetReader::new(k, topic)?.watermarks(timeout)
}

/// How long a topic keeps its events, as the broker reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// `retention.ms`; -1 keeps events forever.
    pub ms: Option<i64>,
    /// `retention.bytes` per partition; -1 has no limit.
    pub bytes: Option<i64>,
    /// `cleanup.policy`: `delete`, `compact` or `compact,delete`.
    pub cleanup_policy: Option<String>,
}

impl Retention {
    pub fn is_compacted(&self) -> bool {
        self.cleanup_policy.as_deref().is_some_and(|p| p.split(',').any(|x| x.trim() == "compact"))
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = match self.ms {
            None => "unknown".to_owned(),
            Some(ms) if ms < 0 => "forever".to_owned(),
            Some(ms) => humantime::format_duration(Duration::from_millis(ms as u64)).to_string(),
        };
        let bytes = match self.bytes {
            None => "unknown".to_owned(),
            Some(b) if b < 0 => "no size limit".to_owned(),
            Some(b) => format!("{b} bytes per partition"),
        };
        write!(f, "retention {ms}, {bytes}, cleanup.policy {}", self.cleanup_policy.as_deref().unwrap_or("unknown"))
    }
}

/// The topic's retention settings (`describe_configs`).
pub async fn retention(k: &KafkaConfig, topic: &str) -> Result<Retention> {
    use rdkafka::admin::ResourceSpecifier;
    let admin: AdminClient<DefaultClientContext> = base(&k.brokers, &k.properties).create()?;
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin.describe_configs([&ResourceSpecifier::Topic(topic)], &opts).await?;
    let mut out = Retention::default();
    for r in results {
        let resource =
            r.map_err(|code| Error::Other(format!("cannot read the settings of kafka topic {topic:?}: {code}")))?;
        for entry in resource.entries {
            let value = entry.value.clone();
            match entry.name.as_str() {
                "retention.ms" => out.ms = value.and_then(|v| v.parse().ok()),
                "retention.bytes" => out.bytes = value.and_then(|v| v.parse().ok()),
                "cleanup.policy" => out.cleanup_policy = value,
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Waits until every partition of `topic` has a leader, as seen by `client`: a topic just
/// created (or a broker just started) accepts no writes before, and the first events would
/// spend their publish timeout waiting.
pub fn wait_for_leaders<C: rdkafka::client::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let ready = client.fetch_metadata(Some(topic), Duration::from_secs(5)).map(|m| {
            m.topics().first().is_some_and(|t| {
                t.error().is_none()
                    && !t.partitions().is_empty()
                    && t.partitions().iter().all(|p| p.leader() >= 0 && p.error().is_none())
            })
        });
        match ready {
            Ok(true) => return Ok(()),
            Ok(false) | Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Ok(false) => {
                return Err(Error::Other(format!(
                    "kafka topic {topic:?} has partitions without a leader after {timeout:?}"
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Creates a topic if it is missing (already-exists is fine), with the broker's default
/// replication factor (`default.replication.factor`).
pub async fn ensure_topic(k: &KafkaConfig, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = base(&k.brokers, &k.properties).create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let results =
        admin.create_topics([&new], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))).await?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => return Err(Error::Other(format!("cannot create kafka topic {t:?}: {code}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_properties_pass_through_but_cannot_weaken_delivery() {
        let props: BTreeMap<String, String> = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "ferry"),
            ("ssl.ca.location", "/etc/kafka/ca.pem"),
            ("acks", "1"),
            ("enable.auto.commit", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let p = producer_config("b:9093", &props, Duration::from_millis(400));
        assert_eq!(p.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(p.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(p.get("ssl.ca.location"), Some("/etc/kafka/ca.pem"));
        assert_eq!(p.get("acks"), Some("all"), "acks=all is not the recipe's to change");
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("message.timeout.ms"), Some("400"));
        let c = consumer_config("b:9093", &props, "g");
        assert_eq!(c.get("sasl.username"), Some("ferry"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"), "offsets stay ours");
        assert_eq!(c.get("group.id"), Some("g"));
    }
}
