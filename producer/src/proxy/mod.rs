//! `indexferry-proxy`: an HTTP proxy in front of the source cluster that publishes the
//! change events for applications that cannot change their write path.
//!
//! The application points at the proxy instead of the cluster. Every request goes on to the
//! cluster; the answers of reads and of every API that changes no document are streamed
//! back unchanged. A request that writes documents ([`classify`]) is read whole, sent on,
//! and for every write the cluster acknowledged the proxy reads the document back (realtime
//! `_mget` on the concrete index, the client's own credentials) and publishes its change
//! event with the `_source`, `_version`, `_seq_no` and routing the cluster stored: ingest
//! pipelines, partial updates, scripts and upserts are all seen as the result they left.
//! Only then does the client get its answer.
//!
//! Read back, not taken from the request: a concurrent write to the same document between
//! the two makes the event carry that later state, which its own writer publishes too; a
//! document deleted in between publishes nothing here (its delete's event says it). Every
//! event is thus a state the source really held, with the version it held it at, and the
//! consumer orders them by that version.
//!
//! Nothing lost, nothing invented:
//! - a write's answer is a success only once its event is acknowledged (`acks=all`); an
//!   event that cannot be published turns the write's answer into a 503 naming it (the
//!   document is written: the client retries, and `reconcile` repairs it if it does not);
//! - once a publish has failed, writes are refused with 503 and `Retry-After` before they
//!   reach the cluster, until Kafka answers again;
//! - a write refused by a write block (a rollover's pause) or a full queue (429) is held and
//!   sent again for up to [`ProxyConfig::hold`], so that the application sees latency.
//!
//! `_delete_by_query` and `_update_by_query` are run by the proxy (`by_query`); a cross-
//! cluster switch is followed (`switch`).

mod as_sent;
mod bulk_body;
mod by_query;
mod classify;
mod filter_path;
mod inflight;
mod journal;
mod switch;
mod write;

use crate::publish::Publisher;
use bytes::Bytes;
use classify::Kind;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use indexferry_schemas::gap::{GapDoc, GapNotice};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Body = BoxBody<Bytes, BoxError>;

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    /// The source cluster's URL (one node, or a load balancer in front of the cluster).
    pub upstream: String,
    /// A PEM file of the CA that signed the upstream's certificate.
    pub ca_file: Option<PathBuf>,
    pub brokers: String,
    pub kafka_properties: BTreeMap<String, String>,
    pub topic: String,
    /// How long one event may take to be acknowledged.
    pub publish_timeout: Duration,
    /// How long a write refused by a write block or a full queue is held and sent again.
    /// Keep it below the clients' request timeout (the Python clients' default is 10 s).
    pub hold: Duration,
    /// The largest request body taken, as the cluster's `http.max_content_length`.
    pub max_body: usize,
    /// Where the journal of writes in flight lives (`journal`); None: no journal, and the
    /// gaps a killed proxy leaves are not counted.
    pub journal: Option<PathBuf>,
    /// This proxy's name in the gap notices it publishes (one per replica).
    pub name: String,
    /// A PEM certificate chain and its PKCS#8 PEM key: the proxy listens with TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// When answers get the `X-Elastic-Product` header and requests lose Elasticsearch's
    /// compatibility media types (`elastic_product`).
    pub elastic_product: ElasticProduct,
    /// The cluster a cross-cluster rollover may move the application to (`switch`): once
    /// the source carries a switch marker naming it, every request goes there.
    pub follow: Option<FollowConfig>,
}

/// Whether the proxy makes an OpenSearch cluster acceptable to the `elasticsearch` clients,
/// which refuse a server whose answers lack `X-Elastic-Product: Elasticsearch` and send
/// media types (`application/vnd.elasticsearch+json; compatible-with=8`) that OpenSearch
/// refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ElasticProduct {
    /// Headers pass unchanged: an `elasticsearch` client refuses OpenSearch behind the proxy.
    #[default]
    Never,
    /// Once the proxy follows a cross-cluster switch (an Elasticsearch source, an
    /// OpenSearch target): the application's `elasticsearch` client goes on working.
    Followed,
    /// Always (an OpenSearch source already).
    Always,
}

/// The target cluster of a cross-cluster migration, as the proxy reaches it.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// The migration whose switch is followed (a cluster holds the markers of every
    /// migration that left it, other applications' included).
    pub migration: String,
    /// Its URL, as the recipe's `[target] url` names it (the marker is matched by it).
    pub url: String,
    pub ca_file: Option<PathBuf>,
    /// The `Authorization` header to send there instead of the client's (the target has
    /// its own users); None: the client's credentials go there too.
    pub authorization: Option<String>,
}

/// What the proxy has done since it started (served on `/_indexferry/stats`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub events: AtomicU64,
    pub passed: AtomicU64,
    pub writes: AtomicU64,
    /// Writes in the cluster whose event could not be published: gaps for `reconcile`.
    pub unpublished: AtomicU64,
    /// Writes refused before the cluster because Kafka could not take their events.
    pub refused_kafka: AtomicU64,
    /// Write requests held because of a write block or a full queue.
    pub held: AtomicU64,
    /// Writes an earlier run of the proxy left in flight when it died (`journal`).
    pub gaps: AtomicU64,
    /// Gap notices on the topic: of earlier runs' gaps, and of writes whose events could not
    /// be published.
    pub gaps_published: AtomicU64,
    /// Gap notices waiting for Kafka.
    pub gaps_pending: AtomicU64,
}

/// Where requests go: the source, or after a cross-cluster switch the target.
pub(crate) struct Upstream {
    pub url: String,
    pub client: reqwest::Client,
    /// Sent instead of the client's `Authorization`.
    pub authorization: Option<HeaderValue>,
    pub followed: bool,
    /// Elasticsearch's media types become plain JSON on the way there, and its answers get
    /// `X-Elastic-Product` (see [`ElasticProduct`]).
    pub elastic_compat: bool,
}

pub struct Proxy {
    cfg: ProxyConfig,
    upstream: std::sync::RwLock<Arc<Upstream>>,
    publisher: Publisher,
    /// When the source was last asked for a switch marker.
    marker_read: tokio::sync::Mutex<Option<Instant>>,
    /// A publish failed and Kafka has not answered since: writes are refused.
    kafka_down: AtomicBool,
    /// When the brokers were last asked whether they are back.
    kafka_probed: tokio::sync::Mutex<Option<Instant>>,
    /// Alias name → the routing it applies to writes (`index_routing`), read when first met.
    alias_routing: Mutex<HashMap<String, (Option<String>, Instant)>>,
    /// The writes sent and not yet published: rollover's drain signal.
    inflight: inflight::Inflight,
    /// Concrete index → whether it stores documents as sent, read when first met.
    stores_as_sent: Mutex<HashMap<String, (bool, Instant)>>,
    journal: Option<journal::Journal>,
    /// Gap notices to publish (`publish_gaps`).
    gaps_tx: mpsc::UnboundedSender<GapNotice>,
    /// The listener's TLS (`--tls-cert`, `--tls-key`).
    tls: Option<tokio_native_tls::TlsAcceptor>,
    counters: Counters,
    /// Its own recorder, rendered at `/_indexferry/metrics` (not the process's global one).
    recorder: metrics_exporter_prometheus::PrometheusRecorder,
}

/// How long a read alias routing is trusted.
const ALIAS_TTL: Duration = Duration::from_secs(10);
/// How long an index's "stores the document as sent" is trusted: a pipeline set on it since
/// is seen at most this late (`as_sent`).
const SOURCE_TTL: Duration = Duration::from_secs(2);

impl Proxy {
    /// Makes the upstream client and the Kafka producer. Kafka need not be up: until it
    /// answers, writes are refused.
    pub async fn new(cfg: ProxyConfig) -> anyhow::Result<Arc<Proxy>> {
        let client = http_client(cfg.ca_file.as_deref())?;
        if let Some(f) = &cfg.follow {
            // Fail now, not at the switch.
            http_client(f.ca_file.as_deref())?;
            if let Some(a) = &f.authorization {
                HeaderValue::from_str(a)
                    .map_err(|_| anyhow::anyhow!("the target's credentials are not a valid header"))?;
            }
        }
        let upstream = Upstream {
            url: cfg.upstream.clone(),
            client,
            authorization: None,
            followed: false,
            elastic_compat: cfg.elastic_product == ElasticProduct::Always,
        };
        let publisher = Publisher::new(&cfg.brokers, &cfg.kafka_properties, &cfg.topic, cfg.publish_timeout)
            .map_err(|e| anyhow::anyhow!(e))?;
        let (journal, gaps) = match &cfg.journal {
            Some(dir) => {
                let (j, gaps) = journal::Journal::open(dir, &cfg.name)?;
                (Some(j), gaps)
            }
            None => (None, vec![]),
        };
        if !gaps.is_empty() {
            tracing::warn!(
                gaps = gaps.len(), journal = %cfg.journal.as_deref().unwrap_or_else(|| std::path::Path::new("")).display(),
                "the proxy died with writes in flight: their documents may lack change events; their gap notices go to \
                 the topic (status counts them, reconcile looks at their documents again); the journal folder keeps their list"
            );
        }
        let counters = Counters {
            gaps: AtomicU64::new(gaps.len() as u64),
            gaps_pending: AtomicU64::new(gaps.len() as u64),
            ..Counters::default()
        };
        let up = publisher.reachable(Duration::from_secs(5)).await;
        if !up {
            tracing::warn!(brokers = %cfg.brokers, "kafka does not answer: writes are refused until it does");
        }
        let tls = match &cfg.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key)?),
            None => None,
        };
        let (gaps_tx, gaps_rx) = mpsc::unbounded_channel();
        let proxy = Arc::new(Proxy {
            gaps_tx,
            tls,
            cfg,
            upstream: std::sync::RwLock::new(Arc::new(upstream)),
            publisher,
            marker_read: tokio::sync::Mutex::new(None),
            kafka_down: AtomicBool::new(!up),
            kafka_probed: tokio::sync::Mutex::new(None),
            alias_routing: Mutex::new(HashMap::new()),
            stores_as_sent: Mutex::new(HashMap::new()),
            inflight: inflight::Inflight::new(),
            journal,
            counters,
            recorder: metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder(),
        });
        tokio::spawn(proxy.clone().publish_gaps(gaps, gaps_rx));
        Ok(proxy)
    }

    /// Publishes gap notices: those an earlier run left, then those of writes whose events
    /// could not be published ([`Proxy::gap`]), retrying each until Kafka takes it. Those
    /// not yet on the topic are kept in the journal's pending file.
    async fn publish_gaps(self: Arc<Self>, mut pending: Vec<GapNotice>, mut rx: mpsc::UnboundedReceiver<GapNotice>) {
        loop {
            if pending.is_empty() {
                let Some(g) = rx.recv().await else { return };
                pending.push(g);
            }
            while let Ok(g) = rx.try_recv() {
                pending.push(g);
            }
            self.keep_pending(&pending);
            let mut left = vec![];
            for g in pending.drain(..) {
                match self.publisher.publish_raw(g.key(), &g.to_json()).await {
                    Ok(()) => {
                        self.counters.gaps_published.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot publish a gap notice yet: trying again");
                        left.push(g);
                    }
                }
            }
            pending = left;
            self.keep_pending(&pending);
            self.counters.gaps_pending.store(pending.len() as u64, Ordering::Relaxed);
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    fn keep_pending(&self, pending: &[GapNotice]) {
        if let Some(Err(e)) = self.journal.as_ref().map(|j| j.keep_pending(pending)) {
            tracing::warn!(error = %e, "cannot keep the gap notices not yet published");
        }
    }

    /// A write the cluster took whose event could not be published: its gap notice goes to
    /// the topic as soon as Kafka takes it.
    pub(crate) fn gap(&self, notice: GapNotice) {
        self.counters.gaps_pending.fetch_add(1, Ordering::Relaxed);
        let _ = self.gaps_tx.send(notice);
    }

    /// Serves until `stop` is cancelled, then lets the requests in flight finish.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let tracker = tokio_util::task::TaskTracker::new();
        let tls = self.tls.clone();
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.cancelled() => break,
            };
            let _ = stream.set_nodelay(true);
            let proxy = self.clone();
            let stop = stop.clone();
            let tls = tls.clone();
            tracker.spawn(async move {
                match tls {
                    None => proxy.connection(stream, peer, stop).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(s) => proxy.connection(s, peer, stop).await,
                        Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    },
                }
            });
        }
        tracker.close();
        tracker.wait().await;
        self.publisher.flush(Duration::from_secs(10));
        Ok(())
    }

    /// Serves one client connection until it ends, or until `stop` (then gracefully).
    async fn connection<I>(self: Arc<Self>, io: I, peer: SocketAddr, stop: CancellationToken)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = hyper::service::service_fn(move |req| {
            let proxy = self.clone();
            async move {
                let mut resp = proxy.clone().handle(req).await;
                if proxy.upstream().elastic_compat {
                    resp.headers_mut()
                        .entry(HeaderName::from_static("x-elastic-product"))
                        .or_insert(HeaderValue::from_static("Elasticsearch"));
                }
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => if let Err(e) = r { tracing::debug!(%peer, error = %e, "connection ended") },
            _ = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        match req.uri().path() {
            "/_indexferry/stats" => return self.stats(),
            "/_indexferry/metrics" => return self.metrics(),
            "/_indexferry/health/live" => return json_response(StatusCode::OK, &json!({ "live": true })),
            "/_indexferry/health/ready" => return self.ready(),
            "/_indexferry/inflight" => {
                let (run, next, oldest) = self.inflight.snapshot();
                return json_response(StatusCode::OK, &json!({ "run": run, "next": next, "oldest": oldest }));
            }
            _ => {}
        }
        self.look_for_switch(req.headers()).await;
        match classify::classify(req.method(), req.uri().path()) {
            Kind::Pass => {
                self.counters.passed.fetch_add(1, Ordering::Relaxed);
                self.pass(req).await
            }
            Kind::Refused(why) => error(StatusCode::NOT_IMPLEMENTED, "indexferry_proxy_exception", &why),
            kind => {
                self.counters.writes.fetch_add(1, Ordering::Relaxed);
                let (parts, body) = req.into_parts();
                let body = match self.read_body(&parts.headers, body).await {
                    Ok(b) => b,
                    Err(resp) => return *resp,
                };
                if let Some(refused) = self.kafka_gate().await {
                    return refused;
                }
                // Its own task: a client that hangs up (a timeout) must not cut a write off
                // between the cluster's answer and its publish.
                let proxy = self.clone();
                let write = tokio::spawn(async move {
                    let begun =
                        proxy.journal.as_ref().map(|j| j.begin(&gap_notice(&proxy.cfg.name, &kind, &parts, &body)));
                    let resp = match kind {
                        Kind::Doc(w) => proxy.doc(w, parts, body).await,
                        Kind::Bulk { index } => proxy.bulk(index, parts, body).await,
                        Kind::ByQuery { index, delete } => proxy.by_query(index, delete, parts, body).await,
                        Kind::Pass | Kind::Refused(_) => unreachable!("handled above"),
                    };
                    if let (Some(j), Some(n)) = (&proxy.journal, begun) {
                        j.end(n);
                    }
                    resp
                });
                write.await.unwrap_or_else(|e| {
                    error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "indexferry_proxy_exception",
                        &format!("the write failed: {e}"),
                    )
                })
            }
        }
    }

    /// Forwards the request and streams the answer back.
    async fn pass(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, self.cfg.max_body).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return too_large_or_bad(e, self.cfg.max_body),
        };
        let up = self.upstream();
        let url = up.url(parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
        let headers = up.headers(forwarded(&parts.headers));
        let sent = up.client.request(parts.method, url).headers(headers).body(body).send().await;
        match sent {
            Ok(resp) => {
                let mut out = Response::builder().status(resp.status());
                if let Some(h) = out.headers_mut() {
                    *h = forwarded(resp.headers());
                }
                let stream = futures::StreamExt::map(resp.bytes_stream(), |chunk| {
                    chunk.map(Frame::data).map_err(|e| Box::new(e) as BoxError)
                });
                out.body(BoxBody::new(StreamBody::new(stream)))
                    .unwrap_or_else(|e| error(StatusCode::BAD_GATEWAY, "indexferry_proxy_exception", &e.to_string()))
            }
            Err(e) => upstream_unreachable(&e),
        }
    }

    /// A write request's body, whole and uncompressed, within the size limit.
    async fn read_body(&self, headers: &HeaderMap, body: Incoming) -> Result<Bytes, Box<Response<Body>>> {
        let raw = match Limited::new(body, self.cfg.max_body).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Err(Box::new(too_large_or_bad(e, self.cfg.max_body))),
        };
        let gzipped = headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
        if !gzipped {
            return Ok(raw);
        }
        let mut out = vec![];
        let mut decoder = flate2::read::GzDecoder::new(&raw[..]).take(self.cfg.max_body as u64 + 1);
        use std::io::Read as _;
        if let Err(e) = decoder.read_to_end(&mut out) {
            return Err(Box::new(error(StatusCode::BAD_REQUEST, "parse_exception", &format!("bad gzip body: {e}"))));
        }
        if out.len() > self.cfg.max_body {
            return Err(Box::new(too_large(self.cfg.max_body)));
        }
        Ok(Bytes::from(out))
    }

    /// Refuses a write while Kafka cannot take its event (asking the brokers again at most
    /// once a second); None lets it through.
    async fn kafka_gate(&self) -> Option<Response<Body>> {
        if !self.kafka_down.load(Ordering::Relaxed) {
            return None;
        }
        let mut probed = self.kafka_probed.lock().await;
        if self.kafka_down.load(Ordering::Relaxed) && probed.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            *probed = Some(Instant::now());
            if self.publisher.reachable(Duration::from_millis(500)).await {
                tracing::info!("kafka answers again: writes are taken again");
                self.publisher.ok();
                self.kafka_down.store(false, Ordering::Relaxed);
            }
        }
        if !self.kafka_down.load(Ordering::Relaxed) {
            return None;
        }
        self.counters.refused_kafka.fetch_add(1, Ordering::Relaxed);
        let mut resp = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "indexferry_kafka_unavailable_exception",
            "the change events cannot be published now (Kafka does not answer): the write was not sent to the \
             cluster; retry it",
        );
        resp.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        Some(resp)
    }

    /// A publish failed: refuse writes until Kafka answers again.
    pub(crate) fn publish_failed(&self, n: u64, why: &str) {
        self.counters.unpublished.fetch_add(n, Ordering::Relaxed);
        if !self.kafka_down.swap(true, Ordering::Relaxed) {
            tracing::error!(error = %why, "a change event could not be published: writes are refused until Kafka answers");
        }
    }

    pub(crate) fn upstream(&self) -> Arc<Upstream> {
        self.upstream.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Ready: writes are taken (Kafka answers). Not ready while they are refused, so that a
    /// load balancer sends them to another proxy.
    fn ready(&self) -> Response<Body> {
        match self.kafka_down.load(Ordering::Relaxed) {
            false => json_response(StatusCode::OK, &json!({ "ready": true })),
            true => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "ready": false, "why_not": "Kafka does not answer: writes are refused" }),
            ),
        }
    }

    /// The counters in Prometheus's text format.
    fn metrics(&self) -> Response<Body> {
        use metrics::{counter, describe_counter, describe_gauge, gauge};
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metrics::with_local_recorder(&self.recorder, || {
            describe_counter!("indexferry_proxy_events_published_total", "Change events published.");
            describe_counter!("indexferry_proxy_write_requests_total", "Write requests taken.");
            describe_counter!("indexferry_proxy_passed_requests_total", "Requests passed through.");
            describe_counter!(
                "indexferry_proxy_unpublished_writes_total",
                "Writes in the cluster whose event could not be published (answered 503)."
            );
            describe_counter!(
                "indexferry_proxy_refused_writes_total",
                "Writes refused before the cluster while Kafka did not answer."
            );
            describe_counter!(
                "indexferry_proxy_held_requests_total",
                "Write requests held by a write block or a full queue."
            );
            describe_gauge!(
                "indexferry_proxy_gaps_from_earlier_runs",
                "Writes an earlier run left in flight when it died (its journal)."
            );
            describe_counter!("indexferry_proxy_gap_notices_published_total", "Gap notices published on the topic.");
            describe_gauge!("indexferry_proxy_gap_notices_pending", "Gap notices waiting for Kafka.");
            describe_gauge!("indexferry_proxy_kafka_up", "1 while writes are taken, 0 while Kafka does not answer.");
            describe_gauge!("indexferry_proxy_followed", "1 once requests go to the target of a cross-cluster switch.");
            counter!("indexferry_proxy_events_published_total").absolute(n(&c.events));
            counter!("indexferry_proxy_write_requests_total").absolute(n(&c.writes));
            counter!("indexferry_proxy_passed_requests_total").absolute(n(&c.passed));
            counter!("indexferry_proxy_unpublished_writes_total").absolute(n(&c.unpublished));
            counter!("indexferry_proxy_refused_writes_total").absolute(n(&c.refused_kafka));
            counter!("indexferry_proxy_held_requests_total").absolute(n(&c.held));
            gauge!("indexferry_proxy_gaps_from_earlier_runs").set(n(&c.gaps) as f64);
            counter!("indexferry_proxy_gap_notices_published_total").absolute(n(&c.gaps_published));
            gauge!("indexferry_proxy_gap_notices_pending").set(n(&c.gaps_pending) as f64);
            gauge!("indexferry_proxy_kafka_up").set(if self.kafka_down.load(Ordering::Relaxed) { 0.0 } else { 1.0 });
            gauge!("indexferry_proxy_followed").set(if self.upstream().followed { 1.0 } else { 0.0 });
        });
        let mut resp = bytes_response(StatusCode::OK, Bytes::from(self.recorder.handle().render()));
        resp.headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
        resp
    }

    fn stats(&self) -> Response<Body> {
        let c = &self.counters;
        let v = json!({
            "events_published": c.events.load(Ordering::Relaxed),
            "write_requests": c.writes.load(Ordering::Relaxed),
            "passed_requests": c.passed.load(Ordering::Relaxed),
            "unpublished_writes": c.unpublished.load(Ordering::Relaxed),
            "refused_kafka_down": c.refused_kafka.load(Ordering::Relaxed),
            "held_requests": c.held.load(Ordering::Relaxed),
            "gaps_from_earlier_runs": c.gaps.load(Ordering::Relaxed),
            "gap_notices_published": c.gaps_published.load(Ordering::Relaxed),
            "gap_notices_pending": c.gaps_pending.load(Ordering::Relaxed),
            "kafka_down": self.kafka_down.load(Ordering::Relaxed),
            "followed_to": self.upstream().followed.then(|| self.upstream().url.clone()),
        });
        json_response(StatusCode::OK, &v)
    }
}

impl Upstream {
    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.url.trim_end_matches('/'), path_and_query)
    }

    /// The headers to send here: the target's own credentials, if configured, and plain
    /// media types for a cluster that does not know Elasticsearch's.
    pub(crate) fn headers(&self, mut headers: HeaderMap) -> HeaderMap {
        if let Some(a) = &self.authorization {
            headers.insert(http::header::AUTHORIZATION, a.clone());
        }
        if self.elastic_compat {
            for name in [http::header::CONTENT_TYPE, http::header::ACCEPT] {
                let plain = headers.get(&name).and_then(|v| v.to_str().ok()).and_then(plain_media_type);
                if let Some(p) = plain {
                    headers.insert(name, HeaderValue::from_static(p));
                }
            }
        }
        headers
    }
}

/// `application/json` or `application/x-ndjson` for Elasticsearch's versioned media types
/// (`application/vnd.elasticsearch+json; compatible-with=8`, `...+x-ndjson...`).
fn plain_media_type(value: &str) -> Option<&'static str> {
    let v = value.trim().to_ascii_lowercase();
    if v.starts_with("application/vnd.elasticsearch+x-ndjson") {
        Some("application/x-ndjson")
    } else if v.starts_with("application/vnd.elasticsearch+json") {
        Some("application/json")
    } else {
        None
    }
}

/// The listener's TLS from a PEM certificate chain and its PKCS#8 PEM key.
fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<tokio_native_tls::TlsAcceptor> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()));
    let identity = native_tls::Identity::from_pkcs8(&read(cert)?, &read(key)?).map_err(|e| {
        anyhow::anyhow!(
            "the TLS certificate {} and key {} do not make an identity (the key must be PKCS#8 PEM, \
             `BEGIN PRIVATE KEY`): {e}",
            cert.display(),
            key.display()
        )
    })?;
    let acceptor = native_tls::TlsAcceptor::new(identity).map_err(|e| anyhow::anyhow!("TLS listener: {e}"))?;
    Ok(tokio_native_tls::TlsAcceptor::from(acceptor))
}

pub(crate) fn http_client(ca_file: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    let mut client = reqwest::Client::builder()
        // The answers go back as the cluster sent them, compressed or not.
        .no_gzip()
        .no_deflate()
        .no_brotli()
        .pool_idle_timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10));
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| anyhow::anyhow!("cannot read the CA file {}: {e}", ca.display()))?;
        client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    Ok(client.build()?)
}

/// What the journal says of a write, as the gap notice it becomes if the proxy dies before
/// its end: the request line, the documents it names, the indices it writes without ids.
fn gap_notice(origin: &str, kind: &Kind, parts: &http::request::Parts, body: &Bytes) -> GapNotice {
    let mut g = GapNotice::new(origin, &format!("{} {}", parts.method, parts.uri.path()), chrono::Utc::now());
    let mut named = |index: &str, id: Option<&str>, routing: Option<String>| match id {
        Some(id) => g.docs.push(GapDoc { index: index.to_owned(), id: id.to_owned(), routing }),
        None if !g.unnamed.iter().any(|u| u == index) => g.unnamed.push(index.to_owned()),
        None => {}
    };
    match kind {
        Kind::Doc(w) => named(&w.index, w.id.as_deref(), write::split_query(parts.uri.query()).2),
        Kind::Bulk { index } => {
            for i in bulk_body::parse_bulk(body).unwrap_or_default() {
                if let Some(at) = i.index.as_deref().or(index.as_deref()) {
                    named(at, i.id.as_deref(), i.routing.clone());
                }
            }
        }
        Kind::ByQuery { index, .. } => named(index, None, None),
        Kind::Pass | Kind::Refused(_) => {}
    }
    g
}

/// Headers that belong to one connection, not to the request or answer.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// The headers to send on: all but the connection's own, and the length (set again).
fn forwarded(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (k, v) in headers {
        if !HOP_BY_HOP.contains(&k.as_str()) && k != http::header::CONTENT_LENGTH {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

/// The headers a captured write sends on: its body goes uncompressed, and its answer must
/// come back uncompressed (the proxy reads it).
pub(crate) fn forwarded_write(headers: &HeaderMap) -> HeaderMap {
    let mut out = forwarded(headers);
    out.remove(http::header::CONTENT_ENCODING);
    out.remove(http::header::ACCEPT_ENCODING);
    out
}

/// The headers a read of the proxy's own sends: the client's credentials only.
pub(crate) fn credentials(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [http::header::AUTHORIZATION, HeaderName::from_static("es-security-runas-user")] {
        if let Some(v) = headers.get(&name) {
            out.insert(name, v.clone());
        }
    }
    out.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    out
}

pub(crate) fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    bytes_response(status, Bytes::from(v.to_string()))
}

pub(crate) fn bytes_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(BoxBody::new(Full::new(body).map_err(|never| match never {})));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// An answer shaped as the cluster's own errors, so that clients raise it as such.
pub(crate) fn error(status: StatusCode, kind: &str, reason: &str) -> Response<Body> {
    let cause = json!({ "type": kind, "reason": reason });
    json_response(
        status,
        &json!({ "error": { "root_cause": [cause.clone()], "type": kind, "reason": reason }, "status": status.as_u16() }),
    )
}

pub(crate) fn upstream_unreachable(e: &reqwest::Error) -> Response<Body> {
    error(StatusCode::BAD_GATEWAY, "indexferry_proxy_exception", &format!("the cluster cannot be reached: {e}"))
}

fn too_large(limit: usize) -> Response<Body> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "content_too_long_exception",
        &format!("request body is larger than the proxy's limit of {limit} bytes (--max-body)"),
    )
}

fn too_large_or_bad(e: BoxError, limit: usize) -> Response<Body> {
    if e.is::<http_body_util::LengthLimitError>() {
        return too_large(limit);
    }
    error(StatusCode::BAD_REQUEST, "indexferry_proxy_exception", &format!("cannot read the request body: {e}"))
}
