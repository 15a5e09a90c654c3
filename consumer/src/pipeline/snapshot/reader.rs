//! Reading a consistent view of a source index page by page.
//!
//! Elasticsearch 7.17+ and OpenSearch 3+: one point-in-time per index, sliced, sorted by
//! `_shard_doc`, paged with `search_after`; the last acknowledged page's sort values are the
//! resume position. Elsewhere (OpenSearch 2, which cannot sort on `_shard_doc`): sliced
//! scroll, which cannot be resumed after a crash, so an unfinished slice starts over. Both
//! ask for `seq_no_primary_term` on every hit.
//!
//! Every answer must come from every shard (see [`super::shards`]): a shard that failed is
//! retried like an unreachable cluster, then named in the error; a shard whose search
//! context is gone reopens the view.

use super::shards::{shards_of_refusal, Incomplete, Shards};
use indexferry_common::es::Method;
use indexferry_common::es::{is_transient, Cluster, Flavor};
use indexferry_common::retry::Backoff;
use indexferry_common::Error;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, Deserialize)]
pub struct Hit {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "_seq_no", default)]
    pub seq_no: Option<u64>,
    #[serde(rename = "_primary_term", default)]
    pub primary_term: Option<u64>,
    #[serde(rename = "_routing", default)]
    pub routing: Option<String>,
    /// Only when the reader asks for it ([`SliceReader::with_version`]).
    #[serde(rename = "_version", default)]
    pub version: Option<u64>,
    #[serde(rename = "_source", default)]
    pub source: Option<Box<RawValue>>,
    #[serde(default)]
    pub sort: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct SearchResponse {
    #[serde(default)]
    pit_id: Option<String>,
    #[serde(rename = "_scroll_id", default)]
    scroll_id: Option<String>,
    #[serde(rename = "_shards")]
    shards: Shards,
    hits: Hits,
}

#[derive(Debug, Deserialize)]
struct Hits {
    hits: Vec<Hit>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The point-in-time or scroll expired (or the node restarted): start over.
    #[error("search context lost: {0}")]
    ContextLost(String),
    /// Some shards did not answer (the message names them): retried, as the cluster
    /// usually recovers the shard.
    #[error("{cluster} cluster: {message}")]
    ShardsFailed { cluster: String, message: String },
    #[error(transparent)]
    Cluster(#[from] Error),
}

/// Where a slice reads from.
#[derive(Debug, Clone)]
pub enum Mode {
    Pit { pit_id: String, search_after: Option<Value> },
    Scroll { scroll_id: Option<String> },
}

pub struct SliceReader {
    cluster: Cluster,
    index: String,
    slice: u32,
    slices: u32,
    size: usize,
    keep_alive: String,
    with_source: bool,
    with_version: bool,
    pub mode: Mode,
    done: bool,
}

/// Opens a point-in-time on `index` (Elasticsearch: `_pit`, OpenSearch: `_search/point_in_time`).
pub async fn open_pit(cluster: &Cluster, index: &str, keep_alive: Duration) -> Result<String, Error> {
    #[derive(Deserialize)]
    struct Pit {
        #[serde(alias = "pit_id")]
        id: String,
        #[serde(rename = "_shards", default)]
        shards: Option<Shards>,
    }
    let ka = keep_alive_str(keep_alive);
    let path = match cluster.flavor {
        Flavor::OpenSearch { .. } => format!("/{index}/_search/point_in_time"),
        Flavor::Elasticsearch { .. } => format!("/{index}/_pit"),
    };
    let pit: Pit = cluster.json(Method::Post, &path, &[("keep_alive", &ka)], None).await?;
    // Elasticsearch 8.16+ refuses to open a point-in-time that misses shards, and says so.
    if let Some(Err(Incomplete::ContextLost(m) | Incomplete::Failed(m))) = pit.shards.map(|s| s.check(index)) {
        close_pit(cluster, &pit.id).await;
        return Err(Error::Cluster {
            cluster: cluster.role().into(),
            message: format!("cannot open a point-in-time: {m}"),
        });
    }
    Ok(pit.id)
}

/// Closes a point-in-time (best effort: it expires anyway).
pub async fn close_pit(cluster: &Cluster, pit_id: &str) {
    let (path, body) = match cluster.flavor {
        Flavor::OpenSearch { .. } => ("/_search/point_in_time", json!({ "pit_id": [pit_id] })),
        Flavor::Elasticsearch { .. } => ("/_pit", json!({ "id": pit_id })),
    };
    let _ = cluster.json::<Value>(Method::Delete, path, &[], Some(&body)).await;
}

pub fn keep_alive_str(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

impl SliceReader {
    pub fn new(
        cluster: Cluster,
        index: &str,
        slice: u32,
        slices: u32,
        size: usize,
        keep_alive: Duration,
        mode: Mode,
    ) -> Self {
        SliceReader {
            cluster,
            index: index.to_owned(),
            slice,
            slices,
            size,
            keep_alive: keep_alive_str(keep_alive),
            with_source: true,
            with_version: false,
            mode,
            done: false,
        }
    }

    /// Reads ids only (verify's pass over the target).
    pub fn without_source(mut self) -> Self {
        self.with_source = false;
        self
    }

    /// Asks for each hit's `_version` too (reconcile's pass over the target).
    pub fn with_version(mut self) -> Self {
        self.with_version = true;
        self
    }

    /// The next page; empty once the slice is exhausted. Transient failures are retried for
    /// the cluster's `unreachable_timeout`; a busy cluster (429) is waited for.
    pub async fn next_page(&mut self) -> Result<Vec<Hit>, ReadError> {
        if self.done {
            return Ok(vec![]);
        }
        let mut backoff = Backoff::standard(Some(self.cluster.unreachable_timeout()));
        let mut busy = Backoff::standard(None);
        loop {
            match self.fetch().await {
                Ok(hits) => {
                    crate::runtime::health::ok(self.cluster.role());
                    return Ok(hits);
                }
                Err(ReadError::Cluster(e)) if is_context_lost(&e) => return Err(ReadError::ContextLost(e.to_string())),
                Err(ReadError::Cluster(e)) if e.status() == Some(429) => {
                    tracing::warn!(index = %self.index, slice = self.slice, error = %e, "the cluster is busy; retrying");
                    tokio::time::sleep(busy.next_delay().unwrap_or(Duration::from_secs(10))).await;
                }
                Err(e) if retryable(&e) => match backoff.next_delay() {
                    Some(d) => {
                        crate::runtime::health::failing(self.cluster.role(), &e.to_string());
                        indexferry_common::metrics::retry(self.cluster.role(), "read");
                        tracing::warn!(index = %self.index, slice = self.slice, error = %e, "read failed, retrying");
                        tokio::time::sleep(d).await;
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
    }

    async fn fetch(&mut self) -> Result<Vec<Hit>, ReadError> {
        let mut body = json!({
            "size": self.size,
            "seq_no_primary_term": true,
        });
        if !self.with_source {
            body["_source"] = json!(false);
        }
        if self.with_version {
            body["version"] = json!(true);
        }
        if self.slices > 1 {
            body["slice"] = json!({ "id": self.slice, "max": self.slices });
        }
        let bytes = match &self.mode {
            Mode::Pit { pit_id, search_after } => {
                body["pit"] = json!({ "id": pit_id, "keep_alive": self.keep_alive });
                // Counting hits costs work on every page; scroll refuses to skip it.
                body["track_total_hits"] = json!(false);
                body["sort"] = json!(["_shard_doc"]);
                if let Some(after) = search_after {
                    body["search_after"] = after.clone();
                }
                self.request("/_search", &[NO_PARTIAL], &body).await?
            }
            Mode::Scroll { scroll_id: None } => {
                body["sort"] = json!(["_doc"]);
                let path = format!("/{}/_search", self.index);
                self.request(&path, &[("scroll", self.keep_alive.as_str()), NO_PARTIAL], &body).await?
            }
            Mode::Scroll { scroll_id: Some(id) } => {
                let body = json!({ "scroll": self.keep_alive, "scroll_id": id });
                self.request("/_search/scroll", &[], &body).await?
            }
        };
        let response: SearchResponse = serde_json::from_slice(&bytes).map_err(|e| Error::Cluster {
            cluster: self.cluster.role().into(),
            message: format!("unexpected search answer: {e}"),
        })?;
        // Judged before the cursor moves: a retry asks for the same page again.
        self.check_shards(&response.shards)?;
        let hits = response.hits.hits;
        match &mut self.mode {
            Mode::Pit { pit_id, search_after } => {
                if let Some(id) = response.pit_id {
                    *pit_id = id;
                }
                if let Some(last) = hits.last() {
                    *search_after = last.sort.clone();
                }
            }
            Mode::Scroll { scroll_id } => {
                if response.scroll_id.is_some() {
                    *scroll_id = response.scroll_id;
                }
            }
        }
        if hits.is_empty() {
            self.done = true;
            if let Mode::Scroll { scroll_id: Some(id) } = &self.mode {
                let body = json!({ "scroll_id": [id] });
                let _ = self.cluster.json::<Value>(Method::Delete, "/_search/scroll", &[], Some(&body)).await;
            }
        }
        Ok(hits)
    }

    /// An answer some shards are missing from is an error, named after them.
    fn check_shards(&self, shards: &Shards) -> Result<(), ReadError> {
        match shards.check(&self.index) {
            Ok(()) => Ok(()),
            Err(Incomplete::ContextLost(m)) => Err(ReadError::ContextLost(m)),
            // The scroll has moved on over the shards that answered: asking again would
            // skip their page. The slice starts over on a new scroll instead.
            Err(Incomplete::Failed(m)) if matches!(self.mode, Mode::Scroll { scroll_id: Some(_) }) => {
                Err(ReadError::ContextLost(m))
            }
            Err(Incomplete::Failed(message)) => {
                Err(ReadError::ShardsFailed { cluster: self.cluster.role().into(), message })
            }
        }
    }

    /// One search. A refusal that lists failed shards names them in the error.
    async fn request(&self, path: &str, query: &[(&str, &str)], body: &Value) -> Result<bytes::Bytes, ReadError> {
        let body = bytes::Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        let (status, bytes) = self.cluster.request_raw(Method::Post, path, query, Some(body)).await?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        let mut e = self.cluster.status_error(Method::Post, path, status, &bytes);
        if let (Error::ClusterStatus { reason, .. }, Some(shards)) = (&mut e, shards_of_refusal(&self.index, &bytes)) {
            reason.push_str(&format!(" [{shards}]"));
        }
        Err(e.into())
    }
}

/// Refuses answers that lack some shards' hits, for the searches that accept the flag (a
/// scroll's next page does not: [`SliceReader::check_shards`] judges those).
const NO_PARTIAL: (&str, &str) = ("allow_partial_search_results", "false");

/// Failures worth asking again for, until the cluster's `unreachable_timeout`.
fn retryable(e: &ReadError) -> bool {
    match e {
        ReadError::Cluster(e) => is_transient(e),
        ReadError::ShardsFailed { .. } => true,
        ReadError::ContextLost(_) => false,
    }
}

/// An expired or unknown point-in-time / scroll.
fn is_context_lost(e: &Error) -> bool {
    match e {
        Error::ClusterStatus { error_type, reason, status, .. } => {
            error_type.as_deref() == Some("search_context_missing_exception")
                || reason.contains("search_context_missing_exception")
                || reason.contains("No search context found")
                || (*status == 404 && error_type.as_deref() == Some("search_phase_execution_exception"))
        }
        _ => false,
    }
}
