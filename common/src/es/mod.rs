//! The cluster client layer over the official `elasticsearch` crate.
//!
//! Requests go through [`Cluster::request`], which turns non-2xx answers into
//! [`Error::ClusterStatus`] carrying the Elasticsearch error type, and retries transient
//! failures (connection errors, 429, 5xx) with jittered backoff when asked to. The same
//! code speaks to Elasticsearch 7.17/8/9 and OpenSearch 2/3: the differences that matter
//! (how to read a consistent view) hang off [`Flavor`].

pub mod alias;
pub mod bulk;
mod nodes;

use crate::config::ClusterConfig;
use crate::retry::{classify, Backoff, Verdict};
use crate::{Error, Result};
use bytes::Bytes;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::{HeaderMap, HeaderValue, ACCEPT_ENCODING, CONTENT_TYPE};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
pub use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use nodes::{Node, Nodes};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Which server we talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Elasticsearch { major: u32, minor: u32 },
    OpenSearch { major: u32, minor: u32 },
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flavor::Elasticsearch { major, .. } => write!(f, "Elasticsearch {major}"),
            Flavor::OpenSearch { major, .. } => write!(f, "OpenSearch {major}"),
        }
    }
}

impl Flavor {
    /// Point-in-time plus `search_after` with the `_shard_doc` tiebreaker and slices
    /// (Elasticsearch 7.17 and later, OpenSearch 3); other servers (OpenSearch 2 cannot sort
    /// on `_shard_doc`) are read with sliced scroll.
    pub fn has_pit(self) -> bool {
        match self {
            Flavor::Elasticsearch { major, minor } => major >= 8 || (major == 7 && minor >= 17),
            Flavor::OpenSearch { major, .. } => major >= 3,
        }
    }

    /// The flavor a `_nodes` version string names, e.g. `7.17.29`.
    pub fn from_version(version: &str, is_elastic: bool) -> Flavor {
        let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if is_elastic {
            Flavor::Elasticsearch { major, minor }
        } else {
            Flavor::OpenSearch { major, minor }
        }
    }
}

/// A connected cluster: a client plus what we learned about the server.
#[derive(Clone)]
pub struct Cluster {
    nodes: Arc<Nodes>,
    /// "source" or "target": names the cluster in errors and logs.
    role: &'static str,
    pub flavor: Flavor,
    pub version: String,
    /// The recipe's URLs (comma-separated when several), without credentials, for messages.
    pub url: String,
    /// How long a worker keeps retrying while this cluster does not answer.
    unreachable_timeout: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster({} {} at {})", self.role, self.flavor, self.url)
    }
}

/// Query string pairs.
pub type Query<'a> = &'a [(&'a str, &'a str)];

impl Cluster {
    /// Builds the client and asks the node for its version, retrying for `deadline`.
    pub async fn connect(cfg: &ClusterConfig, role: &'static str, deadline: Duration) -> Result<Cluster> {
        let nodes = cfg.url.iter().map(|u| build_node(cfg, u, role)).collect::<Result<Vec<_>>>()?;
        if nodes.is_empty() {
            return Err(Error::Cluster { cluster: role.into(), message: "no URL".into() });
        }
        let nodes = Nodes::new(nodes);
        let mut cluster = Cluster {
            url: nodes.urls(),
            nodes: Arc::new(nodes),
            role,
            flavor: Flavor::Elasticsearch { major: 0, minor: 0 },
            version: String::new(),
            unreachable_timeout: cfg.unreachable_timeout,
        };
        let mut backoff = Backoff::standard(Some(deadline));
        loop {
            match cluster.detect().await {
                Ok(()) => return Ok(cluster),
                Err(e) if is_transient(&e) => match backoff.next_delay() {
                    Some(d) => {
                        tracing::warn!(cluster = role, url = %cluster.url, error = %e, "cluster not reachable yet, retrying");
                        tokio::time::sleep(d).await;
                    }
                    None => {
                        return Err(Error::Cluster {
                            cluster: role.into(),
                            message: format!("not reachable at {} after {deadline:?}: {e}", cluster.url),
                        })
                    }
                },
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the server's version without `GET /` (the test distributions answer it 405).
    async fn detect(&mut self) -> Result<()> {
        #[derive(Deserialize)]
        struct Nodes {
            nodes: std::collections::HashMap<String, Node>,
        }
        #[derive(Deserialize)]
        struct Node {
            version: String,
        }
        let (response, node) =
            self.send(Method::Get, "/_nodes/_local", &[("filter_path", "nodes.*.version")], None, None).await?;
        let is_elastic = response.headers().get("x-elastic-product").is_some();
        let status = response.status_code().as_u16();
        let body = response.bytes().await.map_err(|e| self.transport_error(node, e))?;
        if !(200..300).contains(&status) {
            return Err(self.status_error(Method::Get, "/_nodes/_local", status, &body));
        }
        let nodes: Nodes = serde_json::from_slice(&body).map_err(|e| Error::Cluster {
            cluster: self.role.into(),
            message: format!("unexpected answer to GET /_nodes/_local: {e}"),
        })?;
        let version = nodes.nodes.into_values().next().map(|n| n.version).unwrap_or_default();
        self.flavor = Flavor::from_version(&version, is_elastic);
        self.version = version;
        Ok(())
    }

    pub fn role(&self) -> &'static str {
        self.role
    }

    /// How long a running worker keeps retrying while this cluster does not answer (its
    /// `unreachable_timeout`), before it stops with an error.
    pub fn unreachable_timeout(&self) -> Duration {
        self.unreachable_timeout
    }

    /// The same connection with the target's own `unreachable_timeout` (an in-cluster move).
    pub fn set_unreachable_timeout(&mut self, timeout: Duration) {
        self.unreachable_timeout = timeout;
    }

    /// The same connection under another name (source and target of an in-cluster move).
    pub fn set_role(&mut self, role: &'static str) {
        self.role = role;
    }

    /// Sends to the node that answered last; a connection that fails tries the next URL
    /// (see [`nodes`]). Returns the answer and the node that gave it.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: Query<'_>,
        body: Option<Bytes>,
        content_type: Option<&'static str>,
    ) -> Result<(elasticsearch::http::response::Response, usize)> {
        let mut headers = HeaderMap::new();
        if let Some(ct) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        let query = (!query.is_empty()).then_some(query);
        let mut failures = Vec::new();
        for i in self.nodes.order() {
            let node = self.nodes.get(i);
            match node.client.send(method, path, headers.clone(), query, body.clone(), None).await {
                Ok(response) => {
                    self.nodes.answered(i, self.role);
                    return Ok((response, i));
                }
                Err(e) if nodes::is_connect_error(&e) => {
                    if self.nodes.len() > 1 {
                        tracing::warn!(cluster = self.role, url = %node.url, error = %e, "node not reachable, trying the next URL");
                    }
                    failures.push((node.url.clone(), nodes::describe(&e)));
                }
                Err(e) => {
                    self.nodes.failed(i);
                    return Err(self.transport_error(i, e));
                }
            }
        }
        Err(nodes::all_failed(self.role, &failures))
    }

    /// One request, no retry, whatever the status: `(status, body)`.
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        query: Query<'_>,
        body: Option<Bytes>,
    ) -> Result<(u16, Bytes)> {
        let ct = if path.ends_with("_bulk") { "application/x-ndjson" } else { "application/json" };
        let (response, node) = self.send(method, path, query, body, Some(ct)).await?;
        let status = response.status_code().as_u16();
        let bytes = response.bytes().await.map_err(|e| self.transport_error(node, e))?;
        Ok((status, bytes))
    }

    /// One request, no retry. Non-2xx answers become [`Error::ClusterStatus`].
    pub async fn request(&self, method: Method, path: &str, query: Query<'_>, body: Option<Bytes>) -> Result<Bytes> {
        let (status, bytes) = self.request_raw(method, path, query, body).await?;
        if (200..300).contains(&status) {
            Ok(bytes)
        } else {
            Err(self.status_error(method, path, status, &bytes))
        }
    }

    /// [`Cluster::request`], retried with backoff while the failure is transient.
    pub async fn request_retrying(
        &self,
        method: Method,
        path: &str,
        query: Query<'_>,
        body: Option<Bytes>,
        backoff: &mut Backoff,
    ) -> Result<Bytes> {
        loop {
            match self.request(method, path, query, body.clone()).await {
                Ok(b) => return Ok(b),
                Err(e) if is_transient(&e) => match backoff.next_delay() {
                    Some(d) => {
                        crate::metrics::retry(self.role, "request");
                        tracing::warn!(cluster = self.role, %path, error = %e, delay_ms = d.as_millis() as u64, "request failed, retrying");
                        tokio::time::sleep(d).await;
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
    }

    /// A JSON request with a typed answer, retried while transient (up to a minute).
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: Query<'_>,
        body: Option<&serde_json::Value>,
    ) -> Result<T> {
        let body = body.map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default()));
        let mut backoff = Backoff::standard(Some(Duration::from_secs(60)));
        let bytes = self.request_retrying(method, path, query, body, &mut backoff).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Cluster {
            cluster: self.role.into(),
            message: format!("unexpected answer to {} {path}: {e}", method_name(method)),
        })
    }

    /// True when the index (or alias) exists.
    /// The cluster's UUID: what tells two clusters apart whatever URL reaches them. `None`
    /// where the user may not read the cluster state (`monitor` privilege).
    pub async fn uuid(&self) -> Result<Option<String>> {
        let path = "/_cluster/state/metadata";
        match self.json::<serde_json::Value>(Method::Get, path, &[("filter_path", "metadata.cluster_uuid")], None).await
        {
            Ok(v) => {
                Ok(v["metadata"]["cluster_uuid"].as_str().filter(|u| !u.is_empty() && *u != "_na_").map(str::to_owned))
            }
            Err(e) if matches!(e.status(), Some(401 | 403)) => {
                tracing::info!(cluster = self.role, error = %e, "cannot read the cluster's uuid; telling clusters apart by URL");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub async fn exists(&self, index: &str) -> Result<bool> {
        match self.request(Method::Head, &format!("/{index}"), &[], None).await {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The concrete indices an alias points at (empty when there is no such alias).
    pub async fn alias_indices(&self, alias: &str) -> Result<Vec<String>> {
        match self
            .json::<std::collections::BTreeMap<String, serde_json::Value>>(
                Method::Get,
                &format!("/_alias/{alias}"),
                &[],
                None,
            )
            .await
        {
            Ok(m) => Ok(m.into_keys().collect()),
            Err(e) if e.status() == Some(404) => Ok(vec![]),
            Err(e) => Err(e),
        }
    }

    /// Number of documents (after a refresh when `refresh` is set).
    pub async fn count(&self, index: &str, refresh: bool) -> Result<u64> {
        if refresh {
            self.json::<serde_json::Value>(Method::Post, &format!("/{index}/_refresh"), &[], None).await?;
        }
        #[derive(Deserialize)]
        struct Count {
            count: u64,
        }
        Ok(self.json::<Count>(Method::Get, &format!("/{index}/_count"), &[], None).await?.count)
    }

    /// Updates index settings (a flat object of `index.*` keys).
    pub async fn put_settings(&self, index: &str, settings: serde_json::Value) -> Result<()> {
        self.json::<serde_json::Value>(Method::Put, &format!("/{index}/_settings"), &[], Some(&settings)).await?;
        Ok(())
    }

    /// Sends an NDJSON `_bulk` body once; judging items and retrying is the caller's.
    pub async fn bulk(&self, body: Bytes) -> Result<bulk::BulkResponse> {
        self.bulk_at("/_bulk", &[], body).await
    }

    /// `_bulk` answering only each item's status and error: what judging the items needs,
    /// at a fraction of the cluster's work to write the answer and of ours to read it.
    pub async fn bulk_statuses(&self, path: &str, body: Bytes) -> Result<bulk::BulkResponse> {
        self.bulk_at(path, &[("filter_path", "errors,items.*.status,items.*.error")], body).await
    }

    async fn bulk_at(&self, path: &str, query: Query<'_>, body: Bytes) -> Result<bulk::BulkResponse> {
        let bytes = self.request(Method::Post, path, query, Some(body)).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Cluster { cluster: self.role.into(), message: format!("unexpected _bulk answer: {e}") })
    }

    fn transport_error(&self, node: usize, e: elasticsearch::Error) -> Error {
        let url = &self.nodes.get(node).url;
        Error::Cluster { cluster: self.role.into(), message: format!("request to {url} failed: {e}") }
    }

    pub fn status_error(&self, method: Method, path: &str, status: u16, body: &[u8]) -> Error {
        let (error_type, reason) = parse_error(body);
        Error::ClusterStatus {
            cluster: self.role.into(),
            method: method_name(method).into(),
            path: path.into(),
            status,
            error_type,
            reason,
        }
    }
}

/// Connection failures and retryable statuses.
pub fn is_transient(e: &Error) -> bool {
    match e {
        Error::Cluster { .. } => true,
        Error::ClusterStatus { status, error_type, .. } => classify(*status, error_type.as_deref()) == Verdict::Retry,
        _ => false,
    }
}

/// Pulls `error.type` and `error.reason` out of an error body.
pub fn parse_error(body: &[u8]) -> (Option<String>, String) {
    #[derive(Deserialize)]
    struct Envelope {
        error: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error: Some(serde_json::Value::Object(e)) }) => {
            let ty = e.get("type").and_then(|t| t.as_str()).map(str::to_owned);
            let reason = e.get("reason").and_then(|t| t.as_str()).unwrap_or("").to_owned();
            let mut reason = match &ty {
                Some(t) if reason.is_empty() => t.clone(),
                Some(t) => format!("{t}: {reason}"),
                None => reason,
            };
            // "all shards failed" says little: the first root cause says why.
            if let Some(rc) = e.get("root_cause").and_then(|r| r.get(0)) {
                let rc_type = rc.get("type").and_then(|t| t.as_str()).unwrap_or("");
                if !rc_type.is_empty() && Some(rc_type) != ty.as_deref() {
                    let rc_reason = rc.get("reason").and_then(|t| t.as_str()).unwrap_or("");
                    reason = format!("{reason} (caused by {rc_type}: {rc_reason})");
                }
            }
            (ty, reason)
        }
        Ok(Envelope { error: Some(serde_json::Value::String(s)) }) => (None, s),
        _ => (None, String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()),
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Put => "PUT",
        Method::Post => "POST",
        Method::Delete => "DELETE",
        Method::Head => "HEAD",
    }
}

/// Drops any user:password from a URL before it is printed.
pub fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut parsed) => {
            if !parsed.username().is_empty() || parsed.password().is_some() {
                let _ = parsed.set_username("");
                let _ = parsed.set_password(None);
            }
            parsed.to_string().trim_end_matches('/').to_owned()
        }
        Err(_) => "<invalid url>".into(),
    }
}

/// A client for one of the cluster's URLs.
fn build_node(cfg: &ClusterConfig, raw_url: &str, role: &'static str) -> Result<Node> {
    Ok(Node { client: build_client(cfg, raw_url, role)?, url: redact_url(raw_url) })
}

fn build_client(cfg: &ClusterConfig, raw_url: &str, role: &'static str) -> Result<Elasticsearch> {
    let err = |message: String| Error::Cluster { cluster: role.into(), message };
    let mut url = url::Url::parse(raw_url).map_err(|_| err(format!("invalid URL {}", redact_url(raw_url))))?;
    // Credentials written into the URL become basic auth, and leave the URL: request errors
    // quote the URL, and the password must never be printed.
    let (url_user, url_password) = (url.username().to_owned(), url.password().map(str::to_owned));
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url)).timeout(cfg.request_timeout);
    builder = if cfg.compression {
        builder.request_body_compression(true)
    } else {
        // The HTTP client would otherwise ask for gzip, and the cluster compress every
        // answer: a third of its CPU during a snapshot on loopback.
        builder.header(ACCEPT_ENCODING, HeaderValue::from_static("identity"))
    };
    if let Some(key) = &cfg.api_key {
        builder = builder.auth(Credentials::EncodedApiKey(key.expose().to_owned()));
    } else if let Some(user) = &cfg.username {
        let password = cfg.password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default();
        builder = builder.auth(Credentials::Basic(user.clone(), password));
    } else if !url_user.is_empty() {
        let password = percent_encoding::percent_decode_str(url_password.as_deref().unwrap_or_default())
            .decode_utf8_lossy()
            .into_owned();
        builder = builder.auth(Credentials::Basic(url_user, password));
    }
    if cfg.insecure {
        builder = builder.cert_validation(CertificateValidation::None);
    } else if let Some(ca) = &cfg.ca_cert {
        let pem = std::fs::read(ca).map_err(|e| err(format!("cannot read ca_cert {}: {e}", ca.display())))?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| err(format!("ca_cert {} is not a PEM certificate: {e}", ca.display())))?;
        builder = builder.cert_validation(CertificateValidation::Full(cert));
    }
    let transport = builder.build().map_err(|e| err(format!("cannot build client: {e}")))?;
    Ok(Elasticsearch::new(transport))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_parsed() {
        let body = br#"{"error":{"root_cause":[],"type":"index_not_found_exception","reason":"no such index [x]"},"status":404}"#;
        assert_eq!(
            parse_error(body),
            (Some("index_not_found_exception".into()), "index_not_found_exception: no such index [x]".into())
        );
        assert_eq!(parse_error(b"<html>bad gateway"), (None, "<html>bad gateway".into()));
    }

    #[test]
    fn point_in_time_from_elasticsearch_7_17() {
        let pit = |v, elastic| Flavor::from_version(v, elastic).has_pit();
        assert!(pit("7.17.29", true) && pit("8.19.7", true) && pit("9.2.4", true));
        assert!(!pit("7.16.3", true) && !pit("6.8.23", true));
        assert!(pit("3.3.0", false));
        assert!(!pit("2.19.6", false), "OpenSearch 2 is read with scroll: it cannot sort on _shard_doc");
        assert_eq!(Flavor::from_version("3.3.0", false), Flavor::OpenSearch { major: 3, minor: 3 });
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(redact_url("https://elastic:hunter2@es.example:9200/"), "https://es.example:9200");
        assert_eq!(redact_url("http://127.0.0.1:9200"), "http://127.0.0.1:9200");
    }

    #[test]
    fn transient_errors() {
        let status = |status, ty: Option<&str>| Error::ClusterStatus {
            cluster: "t".into(),
            method: "GET".into(),
            path: "/".into(),
            status,
            error_type: ty.map(str::to_owned),
            reason: String::new(),
        };
        assert!(is_transient(&status(503, None)));
        assert!(is_transient(&status(403, Some("cluster_block_exception"))));
        assert!(!is_transient(&status(400, Some("mapper_parsing_exception"))));
        assert!(is_transient(&Error::Cluster { cluster: "t".into(), message: "connection refused".into() }));
    }
}
