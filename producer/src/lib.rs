//! The library an application's indexer uses instead of writing to the cluster directly.
//!
//! [`Producer::index`] and [`Producer::delete`] write through the alias, then publish the
//! change event (key = document id) with an idempotent, acks=all producer, and return only
//! once both are acknowledged. A write refused by a write block — the few hundred
//! milliseconds of a rollover — is retried for a bounded time, so the application sees
//! latency, not errors; after the alias moves, the retried write lands in the new index.
//! After a cross-cluster switch the alias lives on another cluster: a blocked write reads
//! the marker the rollover left on the source and follows it there, if the application
//! configured that cluster ([`ProducerConfig::follow`]; see the `follow` module).
//!
//! An alias with an `index_routing` (or `routing`) applies it to every write that names no
//! routing of its own; the alias is read once at [`Producer::connect`], and the events of
//! such writes carry the alias's routing, which is where the document really lives.
//!
//! If the event cannot be published, the write is in the index but the migration would miss
//! it: the call fails with [`WriteError::Publish`] and the application must retry the write.
//!
//! Where the index runs an ingest pipeline (`index.default_pipeline`, `final_pipeline`; read
//! at connect and when a switch is followed), the cluster stores another `_source` than the
//! body sent: the event carries the stored one, read back realtime after the write (one
//! `_mget` per write or per bulk).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod docs;
mod follow;
pub mod proxy;
pub mod publish;

use bytes::Bytes;
use chrono::Utc;
use follow::{FollowError, Route};
use indexferry_common::config::ClusterConfig;
use indexferry_common::es::bulk::{BulkItem, Outcome};
use indexferry_common::es::{is_transient, Cluster};
use indexferry_common::retry::Backoff;
use indexferry_schemas::{ChangeEvent, Op, SCHEMA_V1};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use publish::Publisher;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub type Result<T, E = WriteError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The cluster refused the write for good (bad document, missing alias...).
    #[error("write refused: {0}")]
    Refused(String),
    /// Still refused after retrying transient failures or a write block for the bounded time.
    #[error("write not accepted within {waited:?}: {last}")]
    GaveUp { waited: Duration, last: String },
    /// Still refused by a write block after the bounded time. A rollover blocks writes for
    /// well under a second; a block that lasts is there on purpose, such as on the source of
    /// a finished cross-cluster migration, whose alias now lives on the target cluster.
    #[error(
        "write still blocked after {waited:.1?}, given up: {last}; a block that lasts means writes here are stopped \
         on purpose (after a cross-cluster migration: point the application at the target cluster)"
    )]
    Blocked { waited: Duration, last: String },
    /// The write is in the index but its event is not on the topic: retry the write.
    #[error("document written but its change event could not be published ({0}); retry the write")]
    Publish(String),
    /// The alias moved to a cluster this producer has no connection configured for.
    #[error(
        "writes to {alias:?} are blocked: migration {migration:?} moved it from {from} to the cluster {urls}, \
         for which this producer has no connection configured; add that cluster to the producer's follow list \
         (ProducerConfig::follow, `load --follow-url`) or point the application at it"
    )]
    UnknownCluster { alias: String, from: String, migration: String, urls: String },
    /// The write's version check failed (409): the document has moved past the version
    /// the application gave (`external`, `external_gte`, `if_seq_no`). The application's
    /// own answer, never retried here.
    #[error("version conflict: {0}")]
    Conflict(String),
    #[error("{0}")]
    Setup(String),
}

/// How the cluster checks a write against the document's version: the application's own
/// versioning, passed through as it would write without the library. Under the `source`
/// version rule a migration keeps every document's `_version`, so each of these goes on
/// working after the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Versioning {
    /// The cluster counts versions itself.
    #[default]
    Internal,
    /// `version_type=external`: accepted only above the document's version.
    External(u64),
    /// `version_type=external_gte`: accepted at or above it (Invenio's record indexer writes
    /// its revision ids so).
    ExternalGte(u64),
    /// `if_seq_no` and `if_primary_term`: accepted only while the document is still at that
    /// operation.
    IfSeqNo { seq_no: u64, primary_term: u64 },
}

impl Versioning {
    /// The query parameters that carry it.
    fn query(self) -> Vec<(&'static str, String)> {
        match self {
            Versioning::Internal => vec![],
            Versioning::External(v) => vec![("version", v.to_string()), ("version_type", "external".into())],
            Versioning::ExternalGte(v) => vec![("version", v.to_string()), ("version_type", "external_gte".into())],
            Versioning::IfSeqNo { seq_no, primary_term } => {
                vec![("if_seq_no", seq_no.to_string()), ("if_primary_term", primary_term.to_string())]
            }
        }
    }
}

/// How to reach the cluster and the topic.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub cluster: ClusterConfig,
    pub brokers: String,
    pub kafka_properties: BTreeMap<String, String>,
    pub topic: String,
    /// Writes go through this alias (or index), named without the prefix.
    pub alias: String,
    /// The tenant's prefix on a shared cluster (a recipe's `prefix`): writes go to
    /// `<prefix><alias>`, which must lead to indices named with the prefix, so each event's
    /// `index` carries it and only that tenant's migration applies the event. Empty: none.
    pub prefix: String,
    /// How long one event may take to be acknowledged. A rollover waits longer than this
    /// (its `grace`) after blocking writes, so keep it below the recipe's grace.
    pub publish_timeout: Duration,
    /// How long a write refused by a block or a transient failure is retried (default
    /// [`indexferry_common::config::PRODUCER_RETRY_WINDOW`], which a recipe's rollover
    /// `grace` + `drain_timeout` must stay under).
    pub retry_for: Duration,
    /// The clusters writes may follow a cross-cluster switch to, with their credentials and
    /// TLS settings; matched against the URLs the switch marker names. Empty: a switched
    /// alias fails the writes with [`WriteError::UnknownCluster`].
    pub follow: Vec<ClusterConfig>,
}

impl ProducerConfig {
    /// The alias as the cluster names it: with the prefix.
    pub fn write_alias(&self) -> String {
        format!("{}{}", self.prefix, self.alias)
    }

    pub fn new(url: &str, brokers: &str, topic: &str, alias: &str) -> Self {
        ProducerConfig {
            cluster: ClusterConfig::at(url),
            brokers: brokers.to_owned(),
            kafka_properties: BTreeMap::new(),
            topic: topic.to_owned(),
            alias: alias.to_owned(),
            prefix: String::new(),
            publish_timeout: Duration::from_millis(400),
            retry_for: indexferry_common::config::PRODUCER_RETRY_WINDOW,
            follow: vec![],
        }
    }
}

/// One write of a batch.
#[derive(Debug, Clone)]
pub enum Write {
    Index { id: String, source: String, routing: Option<String> },
    Delete { id: String, routing: Option<String> },
}

pub struct Producer {
    /// The cluster and alias writes go to; replaced when a switch is followed.
    route: RwLock<Arc<Route>>,
    /// When the switch marker was last read.
    marker_read: tokio::sync::Mutex<Option<Instant>>,
    /// Writes acknowledged (and published) on a cluster followed to.
    writes_after_switch: AtomicU64,
    publisher: Publisher,
    cfg: ProducerConfig,
}

/// What the cluster answers to a single-document write.
#[derive(Debug, Deserialize)]
struct WriteResponse {
    #[serde(rename = "_index")]
    index: String,
    #[serde(rename = "_seq_no")]
    seq_no: u64,
    #[serde(rename = "_primary_term")]
    primary_term: u64,
    #[serde(rename = "_version")]
    version: u64,
}

impl Producer {
    pub async fn connect(cfg: ProducerConfig) -> Result<Producer> {
        let cluster = Cluster::connect(&cfg.cluster, "source", Duration::from_secs(30))
            .await
            .map_err(|e| WriteError::Setup(e.to_string()))?;
        let alias = cfg.write_alias();
        let alias_routing = cluster
            .alias_index_routing(&alias)
            .await
            .map_err(|e| WriteError::Setup(format!("cannot read alias {alias:?}: {e}")))?;
        outside_prefix(&cluster, &alias, &cfg.prefix).await?;
        let publisher = Publisher::connect(&cfg.brokers, &cfg.kafka_properties, &cfg.topic, cfg.publish_timeout)
            .await
            .map_err(WriteError::Setup)?;
        let pipelined = follow::pipelined(&cluster, &alias).await.map_err(WriteError::Setup)?;
        let route = Route { cluster, name: alias, alias_routing, followed: false, pipelined };
        Ok(Producer {
            route: RwLock::new(Arc::new(route)),
            marker_read: tokio::sync::Mutex::new(None),
            writes_after_switch: AtomicU64::new(0),
            publisher,
            cfg,
        })
    }

    fn route(&self) -> Arc<Route> {
        self.route.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The cluster writes go to now.
    pub fn cluster(&self) -> Cluster {
        self.route().cluster.clone()
    }

    /// The routing the alias applies to writes that name none, as read at connect (or when
    /// a switch was followed).
    pub fn alias_routing(&self) -> Option<String> {
        self.route().alias_routing.clone()
    }

    /// The cluster followed to after a cross-cluster switch, if any.
    pub fn followed_to(&self) -> Option<String> {
        let route = self.route();
        route.followed.then(|| route.cluster.url.clone())
    }

    /// Writes acknowledged by a cluster followed to, their events published.
    pub fn writes_after_switch(&self) -> u64 {
        self.writes_after_switch.load(Ordering::Relaxed)
    }

    /// How long a refused write is retried (`ProducerConfig::retry_for`): also how long a
    /// caller should keep writing again a document whose event was not published.
    pub fn retry_for(&self) -> Duration {
        self.cfg.retry_for
    }

    /// Indexes (creates or replaces) a document; `source` must be a JSON object. The same
    /// bytes go to the cluster and into the event.
    pub async fn index(&self, id: &str, source: &str, routing: Option<&str>) -> Result<ChangeEvent> {
        self.index_versioned(id, source, routing, Versioning::Internal).await
    }

    /// [`Producer::index`] with the application's own version check; a write the check
    /// refuses fails with [`WriteError::Conflict`] and publishes nothing.
    pub async fn index_versioned(
        &self,
        id: &str,
        source: &str,
        routing: Option<&str>,
        versioning: Versioning,
    ) -> Result<ChangeEvent> {
        let raw = RawValue::from_string(source.to_owned())
            .map_err(|e| WriteError::Refused(format!("source is not JSON: {e}")))?;
        let body = Some(Bytes::from(source.to_owned()));
        let (ack, route) = self.write(indexferry_common::es::Method::Put, id, routing, versioning, body).await?;
        let raw = match route.pipelined {
            true => self.stored(&route, &ack.index, [(id, routing)]).await?.pop().flatten().unwrap_or(raw),
            false => raw,
        };
        let event = self.event(&route, Op::Index, id, routing, Some(raw), ack);
        self.publish(&event).await?;
        self.count_after_switch(&route, 1);
        Ok(event)
    }

    /// Deletes a document. Deleting a missing document is not an error: it is a write
    /// with a sequence number like any other, and its event is published.
    pub async fn delete(&self, id: &str, routing: Option<&str>) -> Result<ChangeEvent> {
        self.delete_versioned(id, routing, Versioning::Internal).await
    }

    /// [`Producer::delete`] with the application's own version check.
    pub async fn delete_versioned(
        &self,
        id: &str,
        routing: Option<&str>,
        versioning: Versioning,
    ) -> Result<ChangeEvent> {
        let (ack, route) = self.write(indexferry_common::es::Method::Delete, id, routing, versioning, None).await?;
        let event = self.event(&route, Op::Delete, id, routing, None, ack);
        self.publish(&event).await?;
        self.count_after_switch(&route, 1);
        Ok(event)
    }

    /// A fault for tests: makes the write and publishes no event, as an application that
    /// dies between its write and its publish would. The migration never hears of it; only
    /// a reconcile can repair it. Never call this in an application.
    #[doc(hidden)]
    pub async fn write_unpublished(&self, w: &Write) -> Result<()> {
        use indexferry_common::es::Method;
        let (method, id, routing, body) = match w {
            Write::Index { id, source, routing } => (Method::Put, id, routing, Some(Bytes::from(source.clone()))),
            Write::Delete { id, routing } => (Method::Delete, id, routing, None),
        };
        self.write(method, id, routing.as_deref(), Versioning::Internal, body).await.map(|_| ())
    }

    fn count_after_switch(&self, route: &Route, n: u64) {
        if route.followed {
            self.writes_after_switch.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn event(
        &self,
        route: &Route,
        op: Op,
        id: &str,
        routing: Option<&str>,
        source: Option<Box<RawValue>>,
        ack: WriteResponse,
    ) -> ChangeEvent {
        ChangeEvent {
            schema: SCHEMA_V1.to_owned(),
            op,
            index: ack.index,
            id: id.to_owned(),
            seq_no: ack.seq_no,
            primary_term: ack.primary_term,
            version: ack.version,
            // Where the document lives: the write's routing, else the one the alias applied.
            routing: routing.or(route.alias_routing.as_deref()).map(str::to_owned),
            source,
            ts: Utc::now(),
        }
    }

    /// One document write through the current route, retried while blocked or failing
    /// transiently; a block makes it look for the switch marker. Returns the route it landed on.
    async fn write(
        &self,
        method: indexferry_common::es::Method,
        id: &str,
        routing: Option<&str>,
        versioning: Versioning,
        body: Option<Bytes>,
    ) -> Result<(WriteResponse, Arc<Route>)> {
        let versions = versioning.query();
        let mut query: Vec<(&str, &str)> = routing.map(|r| ("routing", r)).into_iter().collect();
        query.extend(versions.iter().map(|(k, v)| (*k, v.as_str())));
        let started = Instant::now();
        let mut backoff = write_backoff(self.cfg.retry_for);
        let is_delete = matches!(method, indexferry_common::es::Method::Delete);
        loop {
            let route = self.route();
            let path = format!("/{}/_doc/{}", route.name, encode(id));
            let err = match route.cluster.request_raw(method, &path, &query, body.clone()).await {
                Ok((200..=299, bytes)) => return Ok((parse_ack(&bytes)?, route)),
                // A delete of a missing document answers 404 with a full acknowledgement.
                Ok((404, bytes)) if is_delete && parse_ack(&bytes).is_ok() => return Ok((parse_ack(&bytes)?, route)),
                Ok((409, bytes)) if versioning != Versioning::Internal => {
                    let err = route.cluster.status_error(method, &path, 409, &bytes);
                    return Err(WriteError::Conflict(err.to_string()));
                }
                Ok((status, bytes)) => route.cluster.status_error(method, &path, status, &bytes),
                Err(e) => e,
            };
            if !is_transient(&err) {
                return Err(WriteError::Refused(err.to_string()));
            }
            if err.error_type() == Some("cluster_block_exception") && self.follow_switch(&route).await? {
                continue;
            }
            match backoff.next_delay() {
                Some(d) => {
                    tracing::debug!(error = %err, "write not accepted yet, retrying");
                    tokio::time::sleep(d).await;
                }
                None if err.error_type() == Some("cluster_block_exception") => {
                    return Err(WriteError::Blocked { waited: started.elapsed(), last: err.to_string() })
                }
                None => return Err(WriteError::GaveUp { waited: started.elapsed(), last: err.to_string() }),
            }
        }
    }

    /// Reads the switch marker behind `seen` (at most every [`follow::CHECK_EVERY`], one
    /// reader at a time) and follows it; true when writes go elsewhere now.
    async fn follow_switch(&self, seen: &Arc<Route>) -> Result<bool> {
        let mut last = self.marker_read.lock().await;
        if !Arc::ptr_eq(&self.route(), seen) {
            return Ok(true);
        }
        if last.is_some_and(|at| at.elapsed() < follow::CHECK_EVERY) {
            return Ok(false);
        }
        *last = Some(Instant::now());
        let marker = match follow::marker(seen).await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(false),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the switch marker yet");
                return Ok(false);
            }
        };
        match follow::follow(&marker, &self.cfg, seen).await {
            Ok(route) => {
                tracing::warn!(
                    from = %seen.cluster.url, to = %route.cluster.url, write_to = %route.name, migration = %marker.migration,
                    "the alias moved to another cluster: writes follow it there"
                );
                *self.route.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(route);
                Ok(true)
            }
            Err(FollowError::Final(e)) => Err(e),
            Err(FollowError::NotYet(e)) => {
                tracing::warn!(error = %e, "cannot follow the switch yet; retrying");
                Ok(false)
            }
        }
    }

    /// Publishes one event and waits for the broker's acknowledgement.
    pub async fn publish(&self, event: &ChangeEvent) -> Result<()> {
        self.publisher.publish(event).await.map_err(WriteError::Publish)
    }

    /// Writes a batch through `_bulk` and publishes one event per acknowledged write.
    /// Returns, in order, each write's event or error. Used for initial loads.
    pub async fn bulk(&self, writes: &[Write]) -> Result<Vec<Result<ChangeEvent>>> {
        use std::fmt::Write as _;
        let route = self.route();
        let mut body = String::with_capacity(writes.len() * 1100);
        for w in writes {
            let (op, id, routing) = match w {
                Write::Index { id, routing, .. } => ("index", id, routing),
                Write::Delete { id, routing } => ("delete", id, routing),
            };
            let _ = write!(body, r#"{{"{op}":{{"_index":{},"_id":{}"#, json_str(&route.name), json_str(id));
            if let Some(r) = routing {
                let _ = write!(body, r#","routing":{}"#, json_str(r));
            }
            body.push_str("}}\n");
            if let Write::Index { source, .. } = w {
                body.push_str(source);
                body.push('\n');
            }
        }
        let mut backoff = write_backoff(self.cfg.retry_for);
        let response = loop {
            match route.cluster.bulk(Bytes::from(body.clone())).await {
                Ok(r) => break r,
                Err(e) if is_transient(&e) => match backoff.next_delay() {
                    Some(d) => tokio::time::sleep(d).await,
                    None => return Err(WriteError::GaveUp { waited: self.cfg.retry_for, last: e.to_string() }),
                },
                Err(e) => return Err(WriteError::Refused(e.to_string())),
            }
        };
        let mut out = Vec::with_capacity(writes.len());
        for (w, item) in writes.iter().zip(&response.items) {
            out.push(self.bulk_event(&route, w, item));
        }
        if route.pipelined {
            self.stored_sources(&route, &mut out).await?;
        }
        let delivered = self.publisher.publish_all(out.iter().flatten()).await;
        let mut delivered = delivered.into_iter();
        for slot in out.iter_mut() {
            if slot.is_ok() {
                match delivered.next() {
                    Some(Err(e)) => *slot = Err(WriteError::Publish(e)),
                    _ => self.count_after_switch(&route, 1),
                }
            }
        }
        Ok(out)
    }

    fn bulk_event(&self, route: &Route, w: &Write, item: &BulkItem) -> Result<ChangeEvent> {
        let r = item.result();
        match item.outcome() {
            Outcome::Applied => {}
            Outcome::Stale | Outcome::Rejected(_) | Outcome::Retry(_) => {
                let reason = r.error.as_ref().map(|e| e.describe()).unwrap_or_else(|| format!("status {}", r.status));
                return Err(WriteError::Refused(reason));
            }
        }
        let ack = WriteResponse {
            index: r.index.clone(),
            seq_no: r.seq_no.unwrap_or_default(),
            primary_term: r.primary_term.unwrap_or(1),
            version: r.version.unwrap_or(1),
        };
        Ok(match w {
            Write::Index { id, source, routing } => {
                let raw = RawValue::from_string(source.clone()).map_err(|e| WriteError::Refused(e.to_string()))?;
                self.event(route, Op::Index, id, routing.as_deref(), Some(raw), ack)
            }
            Write::Delete { id, routing } => self.event(route, Op::Delete, id, routing.as_deref(), None, ack),
        })
    }

    /// The `_source` the cluster stored for each document (realtime `_mget`), `None` where it
    /// has none: an ingest pipeline made it from the body sent. A document written again
    /// meanwhile gives the newer body, whose own event follows with a higher version; one
    /// deleted meanwhile keeps the body sent, and its delete's event follows.
    async fn stored<'a>(
        &self,
        route: &Route,
        index: &str,
        docs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<Vec<Option<Box<RawValue>>>> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            found: bool,
            #[serde(rename = "_source", default)]
            source: Option<Box<RawValue>>,
        }
        #[derive(Deserialize)]
        struct Answer {
            docs: Vec<Doc>,
        }
        let ids: Vec<serde_json::Value> = docs
            .into_iter()
            .map(|(id, routing)| {
                let mut d = serde_json::json!({ "_index": index, "_id": id });
                if let Some(r) = routing.or(route.alias_routing.as_deref()) {
                    d["routing"] = serde_json::json!(r);
                }
                d
            })
            .collect();
        let body = serde_json::json!({ "docs": ids });
        let answer: Answer = route
            .cluster
            .json(indexferry_common::es::Method::Post, "/_mget", &[("realtime", "true")], Some(&body))
            .await
            .map_err(|e| WriteError::Publish(format!("cannot read back the stored _source: {e}")))?;
        Ok(answer.docs.into_iter().map(|d| d.source.filter(|_| d.found)).collect())
    }

    /// [`Producer::stored`] for the index events of a bulk answer, in place.
    async fn stored_sources(&self, route: &Route, events: &mut [Result<ChangeEvent>]) -> Result<()> {
        let wanted: Vec<usize> =
            (0..events.len()).filter(|&i| matches!(&events[i], Ok(e) if e.op == Op::Index)).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let keys: Vec<(String, String, Option<String>)> = wanted
            .iter()
            .filter_map(|&i| events[i].as_ref().ok().map(|e| (e.index.clone(), e.id.clone(), e.routing.clone())))
            .collect();
        // One request per index the bulk wrote to (an alias leads to one write index).
        let mut by_index: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (k, (index, _, _)) in keys.iter().enumerate() {
            by_index.entry(index.as_str()).or_default().push(k);
        }
        for (index, ks) in by_index {
            let sources =
                self.stored(route, index, ks.iter().map(|&k| (keys[k].1.as_str(), keys[k].2.as_deref()))).await?;
            for (&k, source) in ks.iter().zip(sources) {
                if let (Some(source), Ok(e)) = (source, &mut events[wanted[k]]) {
                    e.source = Some(source);
                }
            }
        }
        Ok(())
    }

    /// Waits until every event handed to Kafka is acknowledged (for a clean exit).
    pub fn flush(&self, timeout: Duration) {
        self.publisher.flush(timeout);
    }
}

/// Refuses an alias that leads to an index without the prefix: its events would name that
/// index, and the tenant's migration would ignore them as another tenant's.
async fn outside_prefix(cluster: &Cluster, alias: &str, prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    let behind = cluster
        .alias_indices(alias)
        .await
        .map_err(|e| WriteError::Setup(format!("cannot read alias {alias:?} at {}: {e}", cluster.url)))?;
    match behind.iter().find(|i| !i.starts_with(prefix)) {
        Some(i) => Err(WriteError::Setup(format!(
            "alias {alias:?} at {} leads to index {i:?}, which lacks the prefix {prefix:?}: its events would belong \
             to no migration of this tenant",
            cluster.url
        ))),
        None => Ok(()),
    }
}

fn write_backoff(retry_for: Duration) -> Backoff {
    // Short first steps: a rollover's block lasts well under a second.
    Backoff::new(Duration::from_millis(20), Duration::from_millis(500), Some(retry_for))
}

fn parse_ack(bytes: &[u8]) -> Result<WriteResponse> {
    serde_json::from_slice(bytes).map_err(|e| WriteError::Refused(format!("unexpected write answer: {e}")))
}

fn encode(id: &str) -> String {
    utf8_percent_encode(id, NON_ALPHANUMERIC).to_string()
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}
