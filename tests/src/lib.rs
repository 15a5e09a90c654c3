//! Helpers for the integration tests: addresses of the real servers (environment variables
//! with loopback defaults), unique names per test, the built binaries, and polling with
//! deadlines instead of sleeps.

pub mod container;
pub mod scenario;

pub use scenario::{json_report, Ground, Migration, Scenario};

use anyhow::{bail, Context};
use indexferry_common::config::{ClusterConfig, KafkaConfig};
use indexferry_common::es::Cluster;
use indexferry_common::es::Method;
use rand::Rng;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn es8() -> String {
    std::env::var("INDEXFERRY_TEST_ES8").unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}
pub fn es9() -> String {
    std::env::var("INDEXFERRY_TEST_ES9").unwrap_or_else(|_| "http://127.0.0.1:9201".into())
}
pub fn opensearch() -> String {
    std::env::var("INDEXFERRY_TEST_OPENSEARCH").unwrap_or_else(|_| "http://127.0.0.1:9202".into())
}
pub fn es7() -> String {
    std::env::var("INDEXFERRY_TEST_ES7").unwrap_or_else(|_| "http://127.0.0.1:9204".into())
}
pub fn opensearch3() -> String {
    std::env::var("INDEXFERRY_TEST_OPENSEARCH3").unwrap_or_else(|_| "http://127.0.0.1:9205".into())
}
pub fn brokers() -> String {
    std::env::var("INDEXFERRY_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// What every name a run of the tests makes on the servers starts with when
/// `INDEXFERRY_TEST_RUN` is not set; `dev/test` gives each run a prefix of its own below it
/// and sweeps this one at its start, so that what an interrupted run left behind goes.
pub const RUN_BASE: &str = "ift-";

/// The prefix of every name this run makes on the servers (indices, aliases, templates,
/// pipelines, topics): `INDEXFERRY_TEST_RUN`, else [`RUN_BASE`]. A test cannot await in
/// `Drop`, so what a failed test leaves is swept by this prefix (`dev/stack sweep`).
pub fn run_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        let prefix = std::env::var("INDEXFERRY_TEST_RUN").unwrap_or_else(|_| RUN_BASE.to_owned());
        // It leads index and topic names: lowercase letters, digits and `-`, not first.
        let valid = prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && prefix.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
        assert!(valid, "INDEXFERRY_TEST_RUN={prefix:?} cannot lead an index name (a-z, 0-9, `-`)");
        prefix
    })
}

/// One `#[tokio::test]` per entry, each awaiting `$body` with the entry's arguments: a test
/// that runs one scenario on several engines or routes states only what differs.
///
/// ```ignore
/// tests_of!(live_migration {
///     in_cluster: (&es8(), true),
///     to_opensearch: (&opensearch(), false),
/// });
/// ```
///
/// The tests run on tokio's multi-thread runtime; `tests_of!(current_thread: body { ... })`
/// runs them on the current-thread one.
#[macro_export]
macro_rules! tests_of {
    (current_thread: $body:ident { $($(#[$meta:meta])* $test:ident: ($($arg:expr),* $(,)?),)* }) => {$(
        $(#[$meta])*
        #[tokio::test(flavor = "current_thread")]
        async fn $test() -> anyhow::Result<()> {
            $body($($arg),*).await
        }
    )*};
    ($body:ident { $($(#[$meta:meta])* $test:ident: ($($arg:expr),* $(,)?),)* }) => {$(
        $(#[$meta])*
        #[tokio::test(flavor = "multi_thread")]
        async fn $test() -> anyhow::Result<()> {
            $body($($arg),*).await
        }
    )*};
}

/// A lowercase name no other test (or earlier run) uses: `<run prefix><prefix>-<8 hex>`.
pub fn unique(prefix: &str) -> String {
    format!("{}{prefix}-{:08x}", run_prefix(), rand::rng().random::<u32>())
}

/// Fresh names for one test's migration: `<prefix>-src` into `<prefix>-dst` behind the alias
/// `<prefix>`, events on `<prefix>-events`, the migration named `<prefix>`.
pub struct Names {
    pub src: String,
    pub dst: String,
    pub alias: String,
    pub topic: String,
    pub name: String,
}

impl Names {
    pub fn new(prefix: &str) -> Names {
        Names {
            src: unique(&format!("{prefix}-src")),
            dst: unique(&format!("{prefix}-dst")),
            alias: unique(prefix),
            topic: unique(&format!("{prefix}-events")),
            name: unique(prefix),
        }
    }
}

pub fn cluster_config(url: &str) -> ClusterConfig {
    ClusterConfig::at(url)
}

pub async fn cluster(url: &str) -> anyhow::Result<Cluster> {
    Ok(Cluster::connect(&cluster_config(url), "test", Duration::from_secs(60)).await?)
}

pub fn kafka(topic: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers(),
        topic: topic.into(),
        dead_letter_topic: None,
        group_id: None,
        properties: Default::default(),
    }
}

/// Creates `index` with `mappings`, the alias pointing at it as write index, and the topic.
pub async fn create_source(
    url: &str,
    index: &str,
    alias: &str,
    topic: &str,
    partitions: i32,
    mappings: Value,
) -> anyhow::Result<Cluster> {
    let c = cluster(url).await?;
    let body = json!({
        "settings": { "index.number_of_shards": 2, "index.number_of_replicas": 0 },
        "mappings": mappings,
        "aliases": { alias: { "is_write_index": true } },
    });
    c.json::<Value>(Method::Put, &format!("/{index}"), &[], Some(&body)).await?;
    indexferry_common::kafka::ensure_topic(&kafka(topic), topic, partitions).await?;
    Ok(c)
}

/// The directory holding the workspace's binaries (next to the test executable's `deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target profile dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built: run `cargo build --workspace` before the tests", path.display());
    path
}

/// `indexferry migration <args> --state-dir <state>`.
pub fn indexferry(state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin("indexferry"));
    c.arg("migration").args(args).arg("--state-dir").arg(state);
    c.env("RUST_LOG", "info,rdkafka=warn");
    c
}

pub fn run_ok(mut c: Command) -> anyhow::Result<String> {
    let out = c.output().context("cannot start command")?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}):\nstdout: {}\nstderr: {}",
            c,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn output(mut c: Command) -> anyhow::Result<Output> {
    Ok(c.output()?)
}

/// A child process that is killed when dropped, so a failing test leaves nothing running.
pub struct Proc(Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl From<Child> for Proc {
    fn from(child: Child) -> Proc {
        Proc(child)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts a long-running command with its output appended to `log`.
pub fn spawn(mut c: Command, log: &Path) -> anyhow::Result<Proc> {
    let f = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    c.stdout(Stdio::from(f.try_clone()?)).stderr(Stdio::from(f));
    Ok(Proc(c.spawn()?))
}

/// Sends SIGTERM and waits for the exit.
pub fn terminate(child: &mut Child) -> anyhow::Result<std::process::ExitStatus> {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    Ok(child.wait()?)
}

/// SIGKILL, as a crash would.
pub fn kill9(child: &mut Child) -> anyhow::Result<()> {
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// `status --json` of a migration.
pub fn status(state: &Path, name: &str) -> anyhow::Result<Value> {
    let out = run_ok(indexferry(state, &["status", name, "--json"]))?;
    Ok(serde_json::from_str(&out)?)
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `limit`.
pub async fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Snapshot finished for every pair and the consumer caught up with the topic: under a
/// live load a few events are always in flight, so "caught up" is a lag under 500.
pub fn caught_up(s: &Value) -> bool {
    let pairs_done = s["pairs"].as_array().is_some_and(|p| p.iter().all(|p| p["done"] == json!(true)));
    pairs_done && s["replay"]["lag_messages"].as_u64().is_some_and(|l| l < 500)
}

/// Writes a recipe for one pair and returns its path.
pub struct RecipeSpec<'a> {
    pub name: &'a str,
    pub source_url: &'a str,
    pub target_url: &'a str,
    pub topic: &'a str,
    pub source: &'a str,
    pub target: &'a str,
    pub alias: &'a str,
    pub mappings: Value,
    pub slices: u32,
    pub batch_size: usize,
    pub throttle: u32,
    /// TOML lines added to `[source]` (credentials, CA, timeouts).
    pub source_options: String,
    /// TOML lines added to `[target]`; in one cluster, to `[source]` as well.
    pub target_options: String,
    /// `[snapshot] method`.
    pub method: &'a str,
    /// `[rollover] grace`.
    pub grace: &'a str,
    pub extra: &'a str,
    /// TOML lines before `[source]`, with `name` (`prefix = "..."`).
    pub top: String,
}

impl<'a> RecipeSpec<'a> {
    /// One pair, one slice, batches of 100, no throttle, no mappings, nothing extra.
    pub fn new(
        name: &'a str,
        source_url: &'a str,
        target_url: &'a str,
        topic: &'a str,
        source: &'a str,
        target: &'a str,
        alias: &'a str,
    ) -> Self {
        RecipeSpec {
            name,
            source_url,
            target_url,
            topic,
            source,
            target,
            alias,
            mappings: json!({}),
            slices: 1,
            batch_size: 100,
            throttle: 0,
            source_options: String::new(),
            target_options: String::new(),
            method: "search",
            grace: "500ms",
            extra: "",
            top: String::new(),
        }
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let mappings_path = dir.join(format!("{}-mappings.json", self.name));
        std::fs::write(&mappings_path, serde_json::to_vec_pretty(&self.mappings)?)?;
        let (mut source_options, target) = (self.source_options.clone(), self.target_options.as_str());
        let target = if self.target_url == self.source_url {
            source_options.push_str(target);
            String::new()
        } else {
            format!("[target]\nurl = \"{}\"\n{target}", self.target_url)
        };
        let text = format!(
            r#"{top}
name = "{name}"
[source]
url = "{source_url}"
{source_options}
{target}
[kafka]
brokers = "{brokers}"
topic = "{topic}"

[[indices]]
source = "{source}"
target = "{target_index}"
alias = "{alias}"
mappings_file = "{mappings}"
settings = {{ number_of_shards = 2, number_of_replicas = 0, refresh_interval = "1s" }}

[snapshot]
slices = {slices}
batch_size = {batch}
throttle_docs_per_s = {throttle}
method = "{method}"

[rollover]
grace = "{grace}"
{extra}
"#,
            top = self.top,
            name = self.name,
            source_url = self.source_url,
            brokers = brokers(),
            topic = self.topic,
            source = self.source,
            target_index = self.target,
            alias = self.alias,
            mappings = mappings_path.file_name().and_then(|f| f.to_str()).unwrap_or_default(),
            slices = self.slices,
            batch = self.batch_size,
            throttle = self.throttle,
            method = self.method,
            grace = self.grace,
            extra = self.extra,
        );
        let path = dir.join(format!("{}.toml", self.name));
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// The consumer groups the local broker knows.
pub fn consumer_groups() -> anyhow::Result<Vec<String>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", brokers()).create()?;
    let list = consumer.fetch_group_list(None, Duration::from_secs(10))?;
    Ok(list.groups().iter().map(|g| g.name().to_owned()).collect())
}

/// Reads every message of `topic` from the beginning until `expect` are seen or `limit`.
pub fn read_topic(topic: &str, expect: usize, limit: Duration) -> anyhow::Result<Vec<(Option<String>, Vec<u8>)>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer =
        indexferry_common::kafka::consumer_config(&brokers(), &Default::default(), &unique("reader"))
            .set("auto.offset.reset", "earliest")
            .create()?;
    consumer.subscribe(&[topic])?;
    let start = Instant::now();
    let mut out = vec![];
    while start.elapsed() < limit && out.len() < expect {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            out.push((
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    // A little longer, to catch anything beyond what was expected.
    let extra_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < extra_until {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push((
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    Ok(out)
}

/// Publishes raw messages (key, payload) to a topic and waits for each acknowledgement.
pub async fn publish_raw(topic: &str, messages: &[(&str, Vec<u8>)]) -> anyhow::Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let p: FutureProducer =
        indexferry_common::kafka::producer_config(&brokers(), &Default::default(), Duration::from_secs(10)).create()?;
    for (k, v) in messages {
        p.send(FutureRecord::to(topic).key(*k).payload(v), Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Reads `topic` from the beginning until no message came for `idle`.
pub fn read_topic_until_idle(topic: &str, idle: Duration) -> anyhow::Result<Vec<(Option<String>, Vec<u8>)>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer =
        indexferry_common::kafka::consumer_config(&brokers(), &Default::default(), &unique("reader"))
            .set("auto.offset.reset", "earliest")
            .create()?;
    consumer.subscribe(&[topic])?;
    let mut out = vec![];
    let mut last = Instant::now();
    let start = Instant::now();
    while last.elapsed() < idle || (out.is_empty() && start.elapsed() < Duration::from_secs(20)) {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            out.push((
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                m.payload().unwrap_or_default().to_vec(),
            ));
            last = Instant::now();
        }
    }
    Ok(out)
}

/// Every document of a small index: id → `_source` (at most 10,000).
pub async fn all_docs(url: &str, index: &str) -> anyhow::Result<std::collections::BTreeMap<String, Value>> {
    let c = cluster(url).await?;
    c.json::<Value>(Method::Post, &format!("/{index}/_refresh"), &[], None).await?;
    let body = json!({ "size": 10000, "query": { "match_all": {} }, "track_total_hits": true });
    let r: Value = c.json(Method::Post, &format!("/{index}/_search"), &[], Some(&body)).await?;
    let total = r["hits"]["total"]["value"].as_u64().unwrap_or(0);
    anyhow::ensure!(total < 10000, "{index} has {total} documents, too many for all_docs");
    Ok(r["hits"]["hits"]
        .as_array()
        .map(|hits| {
            hits.iter().map(|h| (h["_id"].as_str().unwrap_or_default().to_owned(), h["_source"].clone())).collect()
        })
        .unwrap_or_default())
}

pub fn source_mappings() -> Value {
    json!({ "properties": {
        "id": { "type": "keyword" }, "title": { "type": "text" }, "body": { "type": "text" },
        "category": { "type": "keyword" }, "tags": { "type": "keyword" }, "price": { "type": "double" },
        "quantity": { "type": "integer" }, "rating": { "type": "float" }, "active": { "type": "boolean" },
        "revision": { "type": "integer" }, "created_at": { "type": "date" },
        "user": { "properties": { "id": { "type": "keyword" }, "name": { "type": "text" }, "country": { "type": "keyword" } } },
        "location": { "type": "geo_point" }
    }})
}

/// The new mapping: category becomes searchable text with a keyword sub-field, quantity a long.
pub fn changed_mappings() -> Value {
    let mut m = source_mappings();
    m["properties"]["category"] = json!({ "type": "text", "fields": { "raw": { "type": "keyword" } } });
    m["properties"]["quantity"] = json!({ "type": "long" });
    m["properties"]["title"] =
        json!({ "type": "text", "fields": { "exact": { "type": "keyword", "ignore_above": 256 } } });
    m
}

pub struct Load {
    child: Proc,
    report: std::path::PathBuf,
}

impl Load {
    /// Starts `indexferry-producer load` with `initial` documents first, then `rate` writes/s.
    pub fn start(dir: &Path, url: &str, alias: &str, topic: &str, initial: u64, rate: u32) -> anyhow::Result<Load> {
        Load::start_with(dir, url, alias, topic, initial, rate, &[])
    }

    /// [`Load::start`] with more `indexferry-producer load` arguments.
    pub fn start_with(
        dir: &Path,
        url: &str,
        alias: &str,
        topic: &str,
        initial: u64,
        rate: u32,
        extra: &[&str],
    ) -> anyhow::Result<Load> {
        let report = dir.join(format!("{}-load.json", unique("load")));
        let mut c = Command::new(bin("indexferry-producer"));
        c.args(["load", "--url", url, "--alias", alias, "--topic", topic, "--brokers", &brokers()])
            .args(["--initial", &initial.to_string(), "--rate", &rate.to_string(), "--concurrency", "4"])
            .args(["--mix", "create=30,update=40,delete=18,recreate=12"])
            .args(extra)
            .arg("--report")
            .arg(&report);
        let child = spawn(c, &dir.join("load.log"))?;
        Ok(Load { child, report })
    }

    /// Stops the load and returns (done, failed).
    pub fn stop(self) -> anyhow::Result<(u64, u64)> {
        let r = self.report()?;
        Ok((r["done"].as_u64().unwrap_or(0), r["failed"].as_u64().unwrap_or(u64::MAX)))
    }

    /// Stops the load and returns its JSON summary.
    pub fn report(mut self) -> anyhow::Result<Value> {
        terminate(&mut self.child)?;
        Ok(serde_json::from_slice(&std::fs::read(&self.report)?)?)
    }
}

pub async fn wait_docs(url: &str, index: &str, n: u64) -> anyhow::Result<()> {
    let c = cluster(url).await?;
    let limit = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if c.count(index, true).await? >= n {
            return Ok(());
        }
        anyhow::ensure!(std::time::Instant::now() < limit, "{index} never reached {n} documents");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Snapshot done and replay caught up, per `status --json`.
pub async fn wait_caught_up(state: &Path, name: &str, limit: Duration) -> anyhow::Result<Value> {
    wait_for("snapshot done and replay caught up", limit, || {
        let s = status(state, name)?;
        Ok(caught_up(&s).then_some(s))
    })
    .await
}

/// Producer settings for tests that write directly: a publish timeout that a busy CI
/// machine cannot exceed (the short default is there for the rollover grace, which these
/// writes are not timed against).
pub fn producer_config(url: &str, topic: &str, alias: &str) -> indexferry_producer::ProducerConfig {
    let mut cfg = indexferry_producer::ProducerConfig::new(url, &brokers(), topic, alias);
    cfg.publish_timeout = Duration::from_secs(10);
    cfg
}

/// A script of the project's `dev/` folder. The path is found at run time (cargo runs tests
/// in the package folder and says so in CARGO_MANIFEST_DIR): a path compiled in could name
/// another clone that shares the target directory.
pub fn dev_script(name: &str) -> PathBuf {
    repo_file(&format!("dev/{name}"))
}

/// A file of the project's repository, by its path there (`deploy/helm/indexferry`), found
/// at run time as [`dev_script`] finds its scripts.
pub fn repo_file(path: &str) -> PathBuf {
    let package = std::env::var("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("."));
    package.join("..").join(path)
}

/// One document as a comparison of source and target sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub source: Value,
    pub version: u64,
    pub routing: Option<String>,
}

/// Every document of a small index with its `_version` and routing: id → [`Stored`] (at
/// most 10,000). An independent look, not the project's own `verify`.
pub async fn all_stored(url: &str, index: &str) -> anyhow::Result<std::collections::BTreeMap<String, Stored>> {
    let c = cluster(url).await?;
    c.json::<Value>(Method::Post, &format!("/{index}/_refresh"), &[], None).await?;
    let body = json!({ "size": 10000, "version": true, "query": { "match_all": {} }, "track_total_hits": true });
    let r: Value = c.json(Method::Post, &format!("/{index}/_search"), &[], Some(&body)).await?;
    let total = r["hits"]["total"]["value"].as_u64().unwrap_or(0);
    anyhow::ensure!(total < 10000, "{index} has {total} documents, too many for all_stored");
    let mut out = std::collections::BTreeMap::new();
    for h in r["hits"]["hits"].as_array().into_iter().flatten() {
        let stored = Stored {
            source: h["_source"].clone(),
            version: h["_version"].as_u64().context("a hit without _version")?,
            routing: h["_routing"].as_str().map(str::to_owned),
        };
        out.insert(h["_id"].as_str().unwrap_or_default().to_owned(), stored);
    }
    Ok(out)
}

/// The stack's Elasticsearch with TLS and a password (`dev/stack up es8-tls`).
pub fn es8_tls() -> String {
    std::env::var("INDEXFERRY_TEST_ES8_TLS").unwrap_or_else(|_| "https://127.0.0.1:9203".into())
}

/// The password of its `elastic` user.
pub fn tls_password() -> String {
    std::env::var("INDEXFERRY_TLS_PASSWORD").unwrap_or_else(|_| "indexferry-secret".into())
}

/// Its CA certificate, as `dev/stack tls-ca` reports it.
pub fn tls_ca() -> anyhow::Result<PathBuf> {
    let out = Command::new(dev_script("stack")).arg("tls-ca").output()?;
    anyhow::ensure!(out.status.success(), "dev/stack tls-ca: {}", String::from_utf8_lossy(&out.stderr));
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// A connection to it as `user`, with its CA.
pub fn tls_config(user: &str, password: &str) -> anyhow::Result<ClusterConfig> {
    let mut c = ClusterConfig::at(&es8_tls());
    c.username = Some(user.to_owned());
    c.password = Some(indexferry_common::secret::Secret::new(password));
    c.ca_cert = Some(tls_ca()?);
    Ok(c)
}

/// Starts `rollover` with its log at `log` and waits until it has blocked writes (it is then
/// inside its pause, in the grace).
pub async fn rollover_until_blocked(state: &Path, name: &str, log: &Path) -> anyhow::Result<Proc> {
    let mut rollover = spawn(indexferry(state, &["rollover", name]), log)?;
    let blocked = wait_for("the rollover to block writes", Duration::from_secs(60), || {
        Ok(std::fs::read_to_string(log)?.contains("writes blocked").then_some(()))
    })
    .await;
    if let Err(e) = blocked {
        let _ = terminate(&mut rollover);
        return Err(e);
    }
    Ok(rollover)
}

/// The python of the official clients' virtualenv (`dev/clients`): from
/// `INDEXFERRY_CLIENTS_PYTHON` (set by `dev/test`), else made or found by `dev/clients`.
pub fn python_clients() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("INDEXFERRY_CLIENTS_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let out = Command::new(dev_script("clients")).output().context("cannot run dev/clients")?;
    anyhow::ensure!(out.status.success(), "dev/clients failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A write load through an official Python client (`dev/clients.d/load.py`), as an
/// application that knows nothing of indexferry writes.
pub struct PyLoad {
    child: Proc,
    report: PathBuf,
}

impl PyLoad {
    /// `client` is `elasticsearch` or `opensearch`; `args` are load.py's further options.
    pub fn start(dir: &Path, client: &str, url: &str, index: &str, args: &[&str]) -> anyhow::Result<PyLoad> {
        let report = dir.join(format!("{}-pyload.json", unique("load")));
        let mut c = Command::new(python_clients()?);
        c.arg(dev_script("clients.d/load.py"))
            .args(["--client", client, "--url", url, "--index", index])
            .args(args)
            .arg("--report")
            .arg(&report);
        let child = spawn(c, &dir.join("pyload.log"))?;
        Ok(PyLoad { child, report })
    }

    /// Stops the load (SIGTERM) and returns its report: `done`, `failed`, `failures`.
    pub fn stop(mut self) -> anyhow::Result<Value> {
        terminate(&mut self.child)?;
        let text = std::fs::read(&self.report).context("the load wrote no report")?;
        Ok(serde_json::from_slice(&text)?)
    }
}

/// A port nobody listens on now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET /metrics` on a worker's metrics port (`--metrics-addr`) on loopback: the whole
/// answer, headers and the Prometheus text.
pub fn scrape(port: u16) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

/// A running `indexferry-proxy`, stopped when dropped.
pub struct RunningProxy {
    pub url: String,
    args: Vec<String>,
    log: PathBuf,
    proc: Proc,
}

impl RunningProxy {
    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        kill9(&mut self.proc)
    }

    /// Starts it again on the same port, and waits until it answers.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let mut c = Command::new(bin("indexferry-proxy"));
        c.args(&self.args).env("RUST_LOG", "info,rdkafka=warn");
        self.proc = spawn(c, &self.log)?;
        wait_answers(&self.url, &self.log).await
    }

    /// Its `/_indexferry/stats`.
    pub async fn stats(&self) -> anyhow::Result<Value> {
        Ok(reqwest::get(format!("{}/_indexferry/stats", self.url)).await?.json().await?)
    }
}

async fn wait_answers(url: &str, log: &Path) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client.get(format!("{url}/_indexferry/stats")).send().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the proxy did not answer; its log:\n{}", std::fs::read_to_string(log).unwrap_or_default())
}

/// Starts the proxy in front of `upstream`, publishing to `topic`, and waits until it answers.
pub async fn start_proxy(
    upstream: &str,
    brokers: &str,
    topic: &str,
    log: &Path,
    extra: &[&str],
) -> anyhow::Result<RunningProxy> {
    let port = free_port()?;
    let mut args: Vec<String> = ["--listen", &format!("127.0.0.1:{port}"), "--upstream", upstream]
        .iter()
        .chain(&["--brokers", brokers, "--topic", topic])
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut c = Command::new(bin("indexferry-proxy"));
    c.args(&args).env("RUST_LOG", "info,rdkafka=warn");
    let proc = spawn(c, log)?;
    let url = format!("http://127.0.0.1:{port}");
    wait_answers(&url, log).await?;
    Ok(RunningProxy { url, args, log: log.to_owned(), proc })
}
