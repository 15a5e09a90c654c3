//! `indexferry-producer load`: a steady, realistic write load through the producer library
//! — creates, updates, deletes and delete-then-recreate of the same ids — at a set rate.
//! It counts every write that failed; a migration is only good if that count stays zero.

use anyhow::Context;
use clap::Args;
use governor::{Quota, RateLimiter};
use indexferry_common::es::Cluster;
use indexferry_producer::docs::{mappings, DocGen};
use indexferry_producer::{Producer, ProducerConfig, Write, WriteError};
use indexferry_schemas::ChangeEvent;
use rand::Rng;
use serde::Serialize;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub(crate) struct LoadArgs {
    /// Cluster URL.
    #[arg(long, env = "INDEXFERRY_SOURCE_URL", default_value = "http://127.0.0.1:9200")]
    url: String,
    /// Alias (or index) written through.
    #[arg(long, default_value = "records")]
    alias: String,
    #[arg(long, env = "INDEXFERRY_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, env = "INDEXFERRY_KAFKA_TOPIC", default_value = "records.changes")]
    topic: String,
    /// Create this index with the demo mappings and the alias pointing at it, if the alias
    /// does not exist yet, and the topic if it does not.
    #[arg(long)]
    create_index: Option<String>,
    /// Primary shards of the created index.
    #[arg(long, default_value_t = 2)]
    shards: u32,
    /// Partitions of the created topic.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Documents created first, in bulk, before the steady load.
    #[arg(long, default_value_t = 0)]
    initial: u64,
    /// Steady writes per second (0 = no steady load, only the initial documents).
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Stop after this long (e.g. 30s); by default runs until SIGINT/SIGTERM.
    #[arg(long, value_parser = humantime_duration)]
    duration: Option<Duration>,
    /// Stop after this many steady writes.
    #[arg(long)]
    count: Option<u64>,
    /// Writes in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Percentages of create, update, delete and delete-then-recreate.
    #[arg(long, default_value = "create=30,update=45,delete=15,recreate=10")]
    mix: String,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Percentage of ids written with a custom routing, kept for the id's whole life: the
    /// alias's own when it has one (the cluster refuses any other), else one of 16 values.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    routed_percent: u32,
    /// Ids are `<prefix><n>`.
    #[arg(long, default_value = "doc-")]
    id_prefix: String,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
    /// How long a write refused by a write block is retried, and a write whose event could
    /// not be published is written again.
    #[arg(long, default_value = "60s", value_parser = humantime_duration)]
    retry_for: Duration,
    /// A fault for tests: this percentage of the steady writes is made without publishing
    /// its event (an application that died between its write and its publish). The
    /// migration never hears of them; only a reconcile repairs them.
    #[arg(long, default_value_t = 0.0)]
    unpublished_percent: f64,
    /// Skip publishing only during this long from the start of the steady load (then
    /// "load: unpublished window over" is logged); by default for the whole run.
    #[arg(long, value_parser = humantime_duration)]
    unpublished_for: Option<Duration>,
    /// Publish timeout per event (keep it under the rollover grace).
    #[arg(long, default_value = "400ms", value_parser = humantime_duration)]
    publish_timeout: Duration,
    /// A cluster the writes may follow a cross-cluster switch to (repeatable, or
    /// comma-separated); matched against the URLs of the marker the rollover leaves.
    #[arg(long = "follow-url", env = "INDEXFERRY_FOLLOW_URL", value_delimiter = ',')]
    follow_urls: Vec<String>,
    /// User for the clusters followed to.
    #[arg(long, env = "INDEXFERRY_FOLLOW_USERNAME")]
    follow_username: Option<String>,
    /// Password for the clusters followed to.
    #[arg(long, env = "INDEXFERRY_FOLLOW_PASSWORD", hide_env_values = true)]
    follow_password: Option<String>,
    /// PEM file of the CA of the clusters followed to.
    #[arg(long, env = "INDEXFERRY_FOLLOW_CA_CERT")]
    follow_ca_cert: Option<std::path::PathBuf>,
    /// How the steady writes are versioned: `internal` (the cluster counts), or
    /// `external-gte` as an application with its own versions writes (Invenio's record
    /// indexer): milliseconds since the epoch, now and then the same version again with
    /// another body; a write overtaken by a newer one of the same id is counted as
    /// superseded, not failed.
    #[arg(long, value_enum, default_value_t = crate::app_versions::Mode::Internal)]
    versioning: crate::app_versions::Mode,
    /// The tenant's prefix (the global `--prefix`), before the alias and `--create-index`.
    #[arg(skip)]
    prefix: String,
}

impl LoadArgs {
    pub(crate) fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// The clusters to follow a switch to, each with the `--follow-*` credentials.
    fn follow(&self) -> Vec<indexferry_common::config::ClusterConfig> {
        self.follow_urls
            .iter()
            .map(|url| {
                let mut c = indexferry_common::config::ClusterConfig::at(url);
                c.username = self.follow_username.clone();
                c.password = self.follow_password.clone().map(indexferry_common::secret::Secret::new);
                c.ca_cert = self.follow_ca_cert.clone();
                c
            })
            .collect()
    }
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy)]
struct Mix {
    create: u32,
    update: u32,
    delete: u32,
    recreate: u32,
}

fn parse_mix(s: &str) -> anyhow::Result<Mix> {
    let mut m = Mix { create: 0, update: 0, delete: 0, recreate: 0 };
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').with_context(|| format!("--mix: {part:?} is not name=percent"))?;
        let v: u32 = v.trim().parse().with_context(|| format!("--mix: {v:?} is not a number"))?;
        match k.trim() {
            "create" => m.create = v,
            "update" => m.update = v,
            "delete" => m.delete = v,
            "recreate" => m.recreate = v,
            other => {
                anyhow::bail!("--mix: unknown kind {other:?} (create, update, delete, recreate)")
            }
        }
    }
    anyhow::ensure!(m.create + m.update + m.delete + m.recreate > 0, "--mix: all shares are zero");
    Ok(m)
}

/// Live and recently deleted ids, to pick update, delete and recreate targets from.
#[derive(Default)]
struct Ids {
    live: Vec<String>,
    pos: HashMap<String, usize>,
    deleted: Vec<String>,
    next: u64,
    revision: HashMap<String, u32>,
}

impl Ids {
    fn add(&mut self, id: String) {
        if !self.pos.contains_key(&id) {
            self.pos.insert(id.clone(), self.live.len());
            self.live.push(id);
        }
    }

    fn take_random(&mut self, rng: &mut impl Rng) -> Option<String> {
        if self.live.is_empty() {
            return None;
        }
        let i = rng.random_range(0..self.live.len());
        let id = self.live.swap_remove(i);
        self.pos.remove(&id);
        if let Some(moved) = self.live.get(i) {
            self.pos.insert(moved.clone(), i);
        }
        Some(id)
    }

    fn pick(&self, rng: &mut impl Rng) -> Option<String> {
        (!self.live.is_empty()).then(|| self.live[rng.random_range(0..self.live.len())].clone())
    }

    fn bump(&mut self, id: &str) -> u32 {
        let r = self.revision.entry(id.to_owned()).or_insert(0);
        *r += 1;
        *r
    }
}

/// How the steady writes are made: ids, routing and the unpublished fault.
struct Shape {
    prefix: String,
    /// The application's own versions (`--versioning external-gte`), else `None`.
    versions: Option<crate::app_versions::AppVersions>,
    routed_percent: u32,
    unpublished_percent: f64,
    /// Until when writes may go unpublished.
    unpublished_until: Option<Instant>,
}

impl Shape {
    fn skip_publish(&self, rng: &mut impl Rng) -> bool {
        self.unpublished_percent > 0.0
            && self.unpublished_until.is_none_or(|u| Instant::now() < u)
            && rng.random_range(0.0..100.0) < self.unpublished_percent
    }
}

#[derive(Default, Serialize)]
struct Summary {
    done: u64,
    /// Versioned writes refused because a newer one of the same id was made (`--versioning
    /// external-gte`): the application's own versioning, not a failure.
    superseded: u64,
    /// Writes made without publishing their event (`--unpublished-percent`).
    unpublished: u64,
    failed: u64,
    creates: u64,
    updates: u64,
    deletes: u64,
    recreates: u64,
    initial: u64,
    seconds: f64,
    /// Writes acknowledged by the cluster followed to after a cross-cluster switch.
    writes_after_switch: u64,
    /// That cluster, if the writes followed a switch.
    switched_to: Option<String>,
    first_errors: Vec<String>,
}

#[derive(Default)]
struct Counters {
    done: AtomicU64,
    /// Versioned writes overtaken by a newer one of the same id (`--versioning external-gte`).
    superseded: AtomicU64,
    unpublished: AtomicU64,
    failed: AtomicU64,
    creates: AtomicU64,
    updates: AtomicU64,
    deletes: AtomicU64,
    recreates: AtomicU64,
}

/// What the steady load's workers share with the driver.
#[derive(Clone)]
struct Shared {
    producer: Arc<Producer>,
    ids: Arc<Mutex<Ids>>,
    /// The first errors, said and kept for the summary.
    errors: Arc<Mutex<Vec<String>>>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
}

/// How fast the steady writes go (`--rate`), and how many are left (`--count`).
#[derive(Clone)]
struct Pace {
    limiter: Arc<governor::DefaultDirectRateLimiter>,
    budget: Arc<AtomicU64>,
}

pub(crate) async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let mix = parse_mix(&args.mix)?;
    let producer = Arc::new(connect_producer(&args).await?);
    if let Some(index) = &args.create_index {
        create_index(&producer.cluster(), &format!("{}{index}", args.prefix), &args).await?;
    }
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());

    let started = Instant::now();
    let load = Shared {
        producer,
        ids: Arc::new(Mutex::new(Ids::default())),
        errors: Arc::new(Mutex::new(Vec::<String>::new())),
        counters: Arc::new(Counters::default()),
        cancel,
    };
    let mut gen = DocGen::new(args.seed);
    let initial = initial_load(&load.producer, &mut gen, &load.ids, &args, &load.cancel).await?;

    if args.rate > 0 && !load.cancel.is_cancelled() {
        steady_load(&args, mix, &load).await;
    }
    load.producer.flush(Duration::from_secs(10));

    let summary = summarize(&load, initial, started);
    report(&summary, args.report.as_deref())
}

/// The producer library, set up from the flags.
async fn connect_producer(args: &LoadArgs) -> anyhow::Result<Producer> {
    let mut cfg = ProducerConfig::new(&args.url, &args.brokers, &args.topic, &args.alias);
    cfg.prefix = args.prefix.clone();
    cfg.retry_for = args.retry_for;
    cfg.publish_timeout = args.publish_timeout;
    cfg.follow = args.follow();
    Ok(Producer::connect(cfg).await?)
}

/// `--concurrency` workers writing at `--rate`, until `--count` writes, `--duration` or a
/// signal; progress said every 5 s.
async fn steady_load(args: &LoadArgs, mix: Mix, load: &Shared) {
    let limiter =
        Arc::new(RateLimiter::direct(Quota::per_second(NonZeroU32::new(args.rate).unwrap_or(NonZeroU32::MIN))));
    let pace = Pace { limiter, budget: Arc::new(AtomicU64::new(args.count.unwrap_or(u64::MAX))) };
    if let Some(d) = args.duration {
        let c = load.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            c.cancel();
        });
    }
    let reporter = spawn_reporter(load.clone());
    let shape = Arc::new(Shape {
        prefix: args.id_prefix.clone(),
        versions: (args.versioning == crate::app_versions::Mode::ExternalGte)
            .then(crate::app_versions::AppVersions::default),
        routed_percent: args.routed_percent,
        unpublished_percent: args.unpublished_percent,
        unpublished_until: args.unpublished_for.map(|d| Instant::now() + d),
    });
    if let Some(d) = args.unpublished_for.filter(|_| args.unpublished_percent > 0.0) {
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            indexferry_common::say!("load: unpublished window over");
        });
    }
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.concurrency.max(1) {
        let gen = DocGen::new(args.seed.wrapping_add(1 + w as u64));
        workers.spawn(worker(load.clone(), gen, mix, shape.clone(), pace.clone()));
    }
    while workers.join_next().await.is_some() {}
    reporter.abort();
}

/// Says the load's progress every 5 s until the load is cancelled.
fn spawn_reporter(load: Shared) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = load.cancel.cancelled() => break,
                _ = tick.tick() => indexferry_common::say!(
                    "load: done={} failed={} writes_after_switch={}",
                    load.counters.done.load(Ordering::Relaxed),
                    load.counters.failed.load(Ordering::Relaxed),
                    load.producer.writes_after_switch()
                ),
            }
        }
    })
}

/// One steady-load worker: a write each time the rate allows, until the budget is spent
/// (which cancels the load) or the load is cancelled.
async fn worker(load: Shared, mut gen: DocGen, mix: Mix, shape: Arc<Shape>, pace: Pace) {
    loop {
        tokio::select! {
            _ = load.cancel.cancelled() => break,
            _ = pace.limiter.until_ready() => {}
        }
        if pace.budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1)).is_err() {
            load.cancel.cancel();
            break;
        }
        let outcome = one_write(&load.producer, &mut gen, &load.ids, mix, &shape, &load.counters).await;
        match outcome {
            Ok(()) => load.counters.done.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                let mut errs = load.errors.lock().unwrap_or_else(|p| p.into_inner());
                if errs.len() < 10 {
                    indexferry_common::say!("load: write failed: {e}");
                    errs.push(e.to_string());
                }
                load.counters.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// The counters at the end of the run.
fn summarize(load: &Shared, initial: u64, started: Instant) -> Summary {
    let counters = &load.counters;
    Summary {
        done: counters.done.load(Ordering::Relaxed),
        superseded: counters.superseded.load(Ordering::Relaxed),
        unpublished: counters.unpublished.load(Ordering::Relaxed),
        failed: counters.failed.load(Ordering::Relaxed),
        creates: counters.creates.load(Ordering::Relaxed),
        updates: counters.updates.load(Ordering::Relaxed),
        deletes: counters.deletes.load(Ordering::Relaxed),
        recreates: counters.recreates.load(Ordering::Relaxed),
        initial,
        seconds: started.elapsed().as_secs_f64(),
        writes_after_switch: load.producer.writes_after_switch(),
        switched_to: load.producer.followed_to(),
        first_errors: std::mem::take(&mut *load.errors.lock().unwrap_or_else(|p| p.into_inner())),
    }
}

/// Prints the summary line, and writes the summary as JSON to `--report`.
fn report(summary: &Summary, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    println!(
        "load: done={} superseded={} unpublished={} failed={} creates={} updates={} deletes={} recreates={} initial={} writes_after_switch={} seconds={:.1}",
        summary.done,
        summary.superseded,
        summary.unpublished,
        summary.failed,
        summary.creates,
        summary.updates,
        summary.deletes,
        summary.recreates,
        summary.initial,
        summary.writes_after_switch,
        summary.seconds
    );
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_vec_pretty(summary)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

async fn one_write(
    producer: &Producer,
    gen: &mut DocGen,
    ids: &Mutex<Ids>,
    mix: Mix,
    shape: &Shape,
    counters: &Counters,
) -> Result<(), indexferry_producer::WriteError> {
    let prefix = shape.prefix.as_str();
    let alias_routing = producer.alias_routing();
    let route = |id: &str| routing_for(id, shape.routed_percent, alias_routing.as_deref());
    let skip = shape.skip_publish(gen.rng());
    let write = |w: Write| send(producer, skip, w, counters, shape);
    let total = mix.create + mix.update + mix.delete + mix.recreate;
    let roll = gen.rng().random_range(0..total);
    let lock = || ids.lock().unwrap_or_else(|p| p.into_inner());
    if roll < mix.create {
        let id = {
            let mut ids = lock();
            ids.next += 1;
            format!("{prefix}n{}", ids.next)
        };
        let (source, routing) = (gen.doc(&id, 1), route(&id));
        write(Write::Index { id: id.clone(), source, routing }).await?;
        lock().add(id);
        counters.creates.fetch_add(1, Ordering::Relaxed);
    } else if roll < mix.create + mix.update {
        let Some(id) = lock().pick(gen.rng()) else {
            return Ok(());
        };
        let rev = lock().bump(&id);
        let (source, routing) = (gen.doc(&id, rev + 1), route(&id));
        write(Write::Index { id, source, routing }).await?;
        counters.updates.fetch_add(1, Ordering::Relaxed);
    } else if roll < mix.create + mix.update + mix.delete {
        let Some(id) = ({
            let mut ids = lock();
            let rng = gen.rng();
            ids.take_random(rng)
        }) else {
            return Ok(());
        };
        let routing = route(&id);
        let result = write(Write::Delete { id: id.clone(), routing }).await;
        {
            let mut ids = lock();
            if result.is_ok() {
                ids.deleted.push(id);
                if ids.deleted.len() > 10_000 {
                    ids.deleted.remove(0);
                }
            } else {
                ids.add(id);
            }
        }
        result?;
        counters.deletes.fetch_add(1, Ordering::Relaxed);
    } else {
        // Delete-then-recreate: the same id comes back, a fresh _version but a higher _seq_no.
        let id = {
            let mut ids = lock();
            if ids.deleted.is_empty() {
                None
            } else {
                let i = gen.rng().random_range(0..ids.deleted.len());
                Some(ids.deleted.swap_remove(i))
            }
        };
        let Some(id) = id else { return Ok(()) };
        let rev = lock().bump(&id);
        let (source, routing) = (gen.doc(&id, rev + 1), route(&id));
        write(Write::Index { id: id.clone(), source, routing }).await?;
        lock().add(id);
        counters.recreates.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// One write, published (and written again until it is) unless `skip_publish`.
async fn send(
    producer: &Producer,
    skip_publish: bool,
    w: Write,
    counters: &Counters,
    shape: &Shape,
) -> Result<(), WriteError> {
    if skip_publish {
        producer.write_unpublished(&w).await?;
        counters.unpublished.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    if let Some(versions) = &shape.versions {
        return send_versioned(producer, w, counters, versions).await;
    }
    match &w {
        Write::Index { id, source, routing } => {
            retry_unpublished(producer.retry_for(), || producer.index(id, source, routing.as_deref())).await?
        }
        Write::Delete { id, routing } => {
            retry_unpublished(producer.retry_for(), || producer.delete(id, routing.as_deref())).await?
        }
    };
    Ok(())
}

/// One write with the application's own version (see `app_versions`): one in ten index
/// writes of a known id repeats its last version with the new body.
async fn send_versioned(
    producer: &Producer,
    w: Write,
    counters: &Counters,
    versions: &crate::app_versions::AppVersions,
) -> Result<(), WriteError> {
    let same = rand::rng().random_range(0..10) == 0;
    let (id, result) = match &w {
        Write::Index { id, source, routing } => {
            let v = versions.next(id, same);
            let r =
                retry_unpublished(producer.retry_for(), || producer.index_versioned(id, source, routing.as_deref(), v))
                    .await;
            (id, r.map(drop).map_err(|e| (e, v)))
        }
        Write::Delete { id, routing } => {
            let v = versions.next(id, false);
            let r =
                retry_unpublished(producer.retry_for(), || producer.delete_versioned(id, routing.as_deref(), v)).await;
            (id, r.map(drop).map_err(|e| (e, v)))
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err((WriteError::Conflict(_), v)) if versions.superseded(id, v) => {
            counters.superseded.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err((e, _)) => Err(e),
    }
}

/// The routing an id is always written with: `None` for all but `percent` of the ids
/// (picked by a hash of the id, so every write of an id agrees).
fn routing_for(id: &str, percent: u32, alias_routing: Option<&str>) -> Option<String> {
    // FNV-1a: stable across runs and builds, unlike the standard library's hasher.
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    if hash % 100 >= u64::from(percent) {
        return None;
    }
    Some(alias_routing.map_or_else(|| format!("g{}", (hash / 100) % 16), str::to_owned))
}

/// Writes a batch, writing again those whose events were not published (for up to the
/// producer's `retry_for`), as [`retry_unpublished`] does for single writes.
async fn bulk_until_published(
    p: &Producer,
    writes: Vec<Write>,
) -> Result<Vec<Result<ChangeEvent, WriteError>>, WriteError> {
    let started = Instant::now();
    let mut results = p.bulk(&writes).await?;
    loop {
        let again: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Err(WriteError::Publish(_))))
            .map(|(i, _)| i)
            .collect();
        if again.is_empty() || started.elapsed() > p.retry_for() {
            return Ok(results);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let retry: Vec<Write> = again.iter().map(|&i| writes[i].clone()).collect();
        for (i, r) in again.into_iter().zip(p.bulk(&retry).await?) {
            results[i] = r;
        }
    }
}

/// What the library asks of its callers: a write whose event could not be published is
/// in the index but unknown to the migration, so it is written again (a new sequence
/// number, a new event) until the event goes through or `window` has passed (the load's
/// `--retry-for`: a broker restarted on a loaded machine can take more than a minute).
async fn retry_unpublished<F, Fut>(window: Duration, mut write: F) -> Result<ChangeEvent, WriteError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<ChangeEvent, WriteError>>,
{
    let started = Instant::now();
    loop {
        match write().await {
            Err(WriteError::Publish(e)) if started.elapsed() < window => {
                tracing::debug!(error = %e, "event not published; writing again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

async fn initial_load(
    producer: &Arc<Producer>,
    gen: &mut DocGen,
    ids: &Arc<Mutex<Ids>>,
    args: &LoadArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<u64> {
    if args.initial == 0 {
        return Ok(0);
    }
    const BATCH: u64 = 1000;
    let started = Instant::now();
    let mut written = 0u64;
    let mut in_flight = tokio::task::JoinSet::new();
    let mut next = 0u64;
    let mut last_report = Instant::now();
    let alias_routing = producer.alias_routing();
    while next < args.initial || !in_flight.is_empty() {
        while next < args.initial && in_flight.len() < 3 && !cancel.is_cancelled() {
            let end = (next + BATCH).min(args.initial);
            let writes: Vec<Write> = (next..end)
                .map(|i| {
                    let id = format!("{}{i}", args.id_prefix);
                    let routing = routing_for(&id, args.routed_percent, alias_routing.as_deref());
                    Write::Index { source: gen.doc(&id, 1), id, routing }
                })
                .collect();
            next = end;
            let p = producer.clone();
            in_flight.spawn(async move { bulk_until_published(&p, writes).await });
        }
        let Some(done) = in_flight.join_next().await else {
            break;
        };
        let results = done.context("bulk task failed")??;
        let mut ids = ids.lock().unwrap_or_else(|p| p.into_inner());
        for r in results {
            let event = r.context("initial load: a write failed")?;
            ids.add(event.id);
            written += 1;
        }
        ids.next = ids.next.max(next);
        if last_report.elapsed() > Duration::from_secs(5) {
            indexferry_common::say!(
                "load: initial {written}/{} ({:.0} docs/s)",
                args.initial,
                written as f64 / started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        if cancel.is_cancelled() && next >= args.initial {
            continue;
        }
    }
    indexferry_common::say!("load: initial {written} documents in {:.1}s", started.elapsed().as_secs_f64());
    Ok(written)
}

async fn create_index(cluster: &Cluster, index: &str, args: &LoadArgs) -> anyhow::Result<()> {
    use indexferry_common::es::Method;
    let kafka = indexferry_common::config::KafkaConfig {
        brokers: args.brokers.clone(),
        topic: args.topic.clone(),
        dead_letter_topic: None,
        group_id: None,
        properties: Default::default(),
    };
    // The topic even when the index was made before (with settings of its own).
    indexferry_common::kafka::ensure_topic(&kafka, &args.topic, args.partitions).await?;
    let alias = format!("{}{}", args.prefix, args.alias);
    if cluster.exists(&alias).await? {
        return Ok(());
    }
    let body = serde_json::json!({
        "settings": { "index.number_of_shards": args.shards, "index.number_of_replicas": 0 },
        "mappings": mappings(),
        "aliases": { &alias: { "is_write_index": true } },
    });
    cluster
        .json::<serde_json::Value>(Method::Put, &format!("/{index}"), &[], Some(&body))
        .await
        .with_context(|| format!("cannot create index {index}"))?;
    indexferry_common::say!("load: created index {index} behind alias {alias} and topic {}", args.topic);
    Ok(())
}

fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        indexferry_common::say!("load: stopping");
        cancel.cancel();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_of_ids_is_routed_always_the_same_way() {
        let ids: Vec<String> = (0..2000).map(|i| format!("doc-{i}")).collect();
        assert!(ids.iter().all(|id| routing_for(id, 0, None).is_none()));
        assert!(ids.iter().all(|id| routing_for(id, 100, None).is_some()));
        let routed = ids.iter().filter(|id| routing_for(id, 30, None).is_some()).count();
        assert!((450..750).contains(&routed), "about 30% routed: {routed}");
        let groups: std::collections::BTreeSet<_> = ids.iter().filter_map(|id| routing_for(id, 30, None)).collect();
        assert!(groups.len() > 8, "several routings: {groups:?}");
        assert_eq!(routing_for("doc-7", 100, None), routing_for("doc-7", 100, None));
        assert_eq!(routing_for("doc-7", 100, Some("r1")).as_deref(), Some("r1"), "the alias's routing wins");
    }
}
