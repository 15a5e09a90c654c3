//! The benchmark's data tools: a reproducible bulk file of realistic documents, the
//! `_bulk` ceiling (that file loaded at a given concurrency, nothing read, no Kafka) and a
//! topic pre-filled with one change event per document of the file.

use anyhow::{bail, Context};
use bytes::Bytes;
use chrono::Utc;
use clap::Args;
use indexferry_common::config::ClusterConfig;
use indexferry_common::es::Cluster;
use indexferry_common::kafka::producer_config;
use indexferry_producer::docs::{mappings, DocGen};
use indexferry_schemas::{ChangeEvent, Op, SCHEMA_V1};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

#[derive(Args)]
pub(crate) struct GenArgs {
    /// Number of documents.
    #[arg(long)]
    docs: u64,
    /// Seed of the generator: the same seed writes the same file.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The file to write: `_bulk` NDJSON, an index action (id only) and a document per pair of lines.
    #[arg(long)]
    out: PathBuf,
    /// Also write the documents' mappings (JSON) to this file.
    #[arg(long)]
    mappings: Option<PathBuf>,
}

/// Writes `docs` documents as `_bulk` NDJSON without an index name, so the same file
/// loads into any index.
pub(crate) fn generate(args: &GenArgs) -> anyhow::Result<()> {
    let file = File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut gen = DocGen::new(args.seed);
    for n in 0..args.docs {
        let id = format!("doc-{n:08}");
        writeln!(out, "{{\"index\":{{\"_id\":\"{id}\"}}}}")?;
        writeln!(out, "{}", gen.doc(&id, 1))?;
    }
    out.flush()?;
    if let Some(path) = &args.mappings {
        std::fs::write(path, mappings().to_string()).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[derive(Args)]
pub(crate) struct BulkArgs {
    /// Cluster URL.
    #[arg(long, default_value = "http://127.0.0.1:9200")]
    url: String,
    /// Index to load into (it should exist, with its mappings).
    #[arg(long)]
    index: String,
    /// The file written by `gen`.
    #[arg(long)]
    file: PathBuf,
    /// Documents per `_bulk` request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Load only the first N documents of the file.
    #[arg(long)]
    limit: Option<u64>,
}

/// Loads the file with `_bulk` at the given concurrency and prints one JSON line of figures.
pub(crate) async fn bulk(args: &BulkArgs) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&ClusterConfig::at(&args.url), "target", Duration::from_secs(30)).await?;
    let path = format!("/{}/_bulk", args.index);
    let reader = BufReader::with_capacity(1 << 20, File::open(&args.file).context("cannot open the bulk file")?);
    let mut lines = reader.lines();
    let started = Instant::now();
    let (mut docs, mut failed) = (0u64, 0u64);
    let mut inflight = JoinSet::new();
    let limit = args.limit.unwrap_or(u64::MAX);
    loop {
        let mut body = Vec::with_capacity(args.batch * 1200);
        let mut n = 0;
        while n < args.batch && docs + (n as u64) < limit {
            let (Some(action), Some(doc)) = (lines.next(), lines.next()) else { break };
            body.extend_from_slice(action?.as_bytes());
            body.push(b'\n');
            body.extend_from_slice(doc?.as_bytes());
            body.push(b'\n');
            n += 1;
        }
        if n == 0 {
            break;
        }
        docs += n as u64;
        if inflight.len() >= args.concurrency {
            failed += inflight.join_next().await.context("no request in flight")???;
        }
        let (cluster, path) = (cluster.clone(), path.clone());
        inflight.spawn(async move { send(&cluster, &path, Bytes::from(body)).await });
    }
    while let Some(r) = inflight.join_next().await {
        failed += r??;
    }
    let seconds = started.elapsed().as_secs_f64();
    if failed > 0 {
        bail!("{failed} of {docs} documents failed");
    }
    println!(
        "{}",
        serde_json::json!({ "docs": docs, "seconds": seconds, "docs_per_s": docs as f64 / seconds, "concurrency": args.concurrency })
    );
    Ok(())
}

/// One `_bulk` request; the number of items that failed.
async fn send(cluster: &Cluster, path: &str, body: Bytes) -> anyhow::Result<u64> {
    let parsed = cluster.bulk_statuses(path, body).await?;
    Ok(parsed.items.iter().filter(|i| !matches!(i.outcome(), indexferry_common::es::bulk::Outcome::Applied)).count()
        as u64)
}

impl BulkArgs {
    /// The index with the tenant's prefix before it.
    pub(crate) fn with_prefix(mut self, prefix: &str) -> Self {
        self.index = format!("{prefix}{}", self.index);
        self
    }
}

impl FillArgs {
    /// The events name the index with the tenant's prefix before it.
    pub(crate) fn with_prefix(mut self, prefix: &str) -> Self {
        self.index = format!("{prefix}{}", self.index);
        self
    }
}

#[derive(Args)]
pub(crate) struct FillArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "INDEXFERRY_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic to fill.
    #[arg(long)]
    topic: String,
    /// The index the events say they were written to (the migration's source).
    #[arg(long)]
    index: String,
    /// The file written by `gen`.
    #[arg(long)]
    file: PathBuf,
}

/// Publishes one `index` event per document of the file, as the application's producer
/// would have: `seq_no` grows with each write.
pub(crate) async fn fill(args: &FillArgs) -> anyhow::Result<()> {
    let producer: FutureProducer = producer_config(&args.brokers, &BTreeMap::new(), Duration::from_secs(60))
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()
        .context("cannot create kafka producer")?;
    let reader = BufReader::with_capacity(1 << 20, File::open(&args.file).context("cannot open the bulk file")?);
    let mut lines = reader.lines();
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    let mut seq_no = 0u64;
    while let (Some(action), Some(doc)) = (lines.next(), lines.next()) {
        let action: serde_json::Value = serde_json::from_str(&action?)?;
        let id = action["index"]["_id"].as_str().context("an action line without _id")?.to_owned();
        let event = ChangeEvent {
            schema: SCHEMA_V1.to_owned(),
            op: Op::Index,
            index: args.index.clone(),
            id,
            seq_no,
            primary_term: 1,
            version: 1,
            routing: None,
            source: Some(RawValue::from_string(doc?)?),
            ts: Utc::now(),
        };
        seq_no += 1;
        let payload = serde_json::to_vec(&event)?;
        let record = FutureRecord::to(&args.topic).key(event.id.as_bytes()).payload(&payload);
        pending.push_back(producer.send_result(record).map_err(|(e, _)| e)?);
        if pending.len() >= 10_000 {
            if let Some(f) = pending.pop_front() {
                f.await?.map_err(|(e, _)| e)?;
            }
        }
    }
    for f in pending {
        f.await?.map_err(|(e, _)| e)?;
    }
    producer.flush(Timeout::After(Duration::from_secs(30)))?;
    let seconds = started.elapsed().as_secs_f64();
    println!("{}", serde_json::json!({ "events": seq_no, "seconds": seconds }));
    Ok(())
}

#[derive(Args)]
pub(crate) struct ProbeArgs {
    /// Where requests go: a cluster, or `indexferry-proxy` in front of it.
    #[arg(long)]
    url: String,
    /// The index written to or searched.
    #[arg(long)]
    index: String,
    /// `write`: single-document writes of about 1 KB (new ids); `search`: a match query.
    #[arg(long, default_value = "write")]
    kind: String,
    /// Requests per second asked for.
    #[arg(long)]
    rate: u32,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// Latency of single requests at a set rate: prints one JSON line with the count, the rate
/// reached, errors, and the p50, p99 and max latency in milliseconds.
pub(crate) async fn probe(args: &ProbeArgs) -> anyhow::Result<()> {
    use governor::{Quota, RateLimiter};
    use std::num::NonZeroU32;
    use std::sync::{Arc, Mutex};
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let quota = Quota::per_second(NonZeroU32::new(args.rate.max(1)).context("rate")?);
    let limiter = Arc::new(RateLimiter::direct(quota));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.seconds);
    let mut workers = JoinSet::new();
    for w in 0..args.concurrency.max(1) {
        let (client, limiter, latencies, errors) = (client.clone(), limiter.clone(), latencies.clone(), errors.clone());
        let (url, index, search) =
            (args.url.trim_end_matches('/').to_owned(), args.index.clone(), args.kind == "search");
        workers.spawn(async move {
            let mut gen = DocGen::new(w as u64);
            let mut n = 0u64;
            while Instant::now() < until {
                limiter.until_ready().await;
                n += 1;
                let req = match search {
                    true => client
                        .post(format!("{url}/{index}/_search"))
                        .header("content-type", "application/json")
                        .body(r#"{"size":10,"query":{"match":{"title":"search engine"}}}"#),
                    false => {
                        let id = format!("probe-{w}-{n}");
                        client
                            .put(format!("{url}/{index}/_doc/{id}"))
                            .header("content-type", "application/json")
                            .body(gen.doc(&id, 1))
                    }
                };
                let at = Instant::now();
                let ok = match req.send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    latencies.lock().unwrap_or_else(|p| p.into_inner()).push(at.elapsed());
                } else {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let wall = started.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    l.sort();
    let at = |q: f64| l.get(((l.len() as f64 - 1.0) * q).round() as usize).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    println!(
        "{}",
        serde_json::json!({
            "requests": l.len(), "errors": errors.load(std::sync::atomic::Ordering::Relaxed),
            "rate": l.len() as f64 / wall, "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0),
        })
    );
    Ok(())
}
