//! The end-to-end tests' common path, written once: a source index behind its write alias
//! and a topic, documents in it (a live load, or a few writes through the producer library),
//! a recipe, `init`, `run`, caught up, `rollover`, `verify`. A test states how it differs
//! ([`Scenario`]'s setters) and drives the steps ([`Migration`]'s methods) with its own
//! assertions in between. What the migration made on the servers (its source and target
//! indices and its topics) is deleted when the [`Migration`] is dropped, whether the test
//! passed or failed, so that a run frees its shards as it goes.

use crate::{
    brokers, cluster, es8, indexferry, kafka, output, producer_config, run_ok, source_mappings, spawn, status,
    terminate, wait_docs, wait_for, Load, Names, Proc, RecipeSpec,
};
use indexferry_common::es::Method;
use indexferry_producer::Producer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;

/// How a test's recipe differs from [`RecipeSpec::new`]'s.
type Tune = Box<dyn Fn(&mut RecipeSpec<'_>) + Send + Sync>;

/// Documents written before the migration: how many, and the body of the `i`th.
type Docs = (usize, fn(usize) -> Value);

/// A live load: `initial` documents first, then `rate` writes/s, with more `load` arguments.
struct LoadSpec {
    initial: u64,
    rate: u32,
    args: Vec<String>,
}

/// A migration to set up: by default one index of Elasticsearch 8 into another of the same
/// cluster, 2 shards behind a write alias, the test mappings, a topic of 3 partitions, no
/// documents, and [`RecipeSpec::new`]'s recipe.
pub struct Scenario {
    prefix: String,
    source_url: String,
    target_url: String,
    partitions: i32,
    shards: u32,
    mappings: Value,
    settings: Value,
    alias: Value,
    load: Option<LoadSpec>,
    docs: Option<Docs>,
    /// Settings the topic is made with (`cleanup.policy`, ...).
    topic_config: Vec<(String, String)>,
    tune: Tune,
}

impl Scenario {
    /// Names from `prefix` ([`Names::new`]).
    pub fn new(prefix: &str) -> Scenario {
        Scenario {
            prefix: prefix.to_owned(),
            source_url: es8(),
            target_url: es8(),
            partitions: 3,
            shards: 2,
            mappings: source_mappings(),
            settings: json!({}),
            alias: json!({ "is_write_index": true }),
            load: None,
            docs: None,
            topic_config: vec![],
            tune: Box::new(|_| {}),
        }
    }

    /// The source cluster (by default Elasticsearch 8); the target stays where it was set.
    pub fn from(mut self, url: &str) -> Scenario {
        if self.target_url == self.source_url {
            self.target_url = url.to_owned();
        }
        self.source_url = url.to_owned();
        self
    }

    /// The target cluster (by default the source's).
    pub fn to(mut self, url: &str) -> Scenario {
        self.target_url = url.to_owned();
        self
    }

    pub fn partitions(mut self, partitions: i32) -> Scenario {
        self.partitions = partitions;
        self
    }

    /// A setting the topic is made with (`cleanup.policy`, `retention.ms`, ...).
    pub fn topic_config(mut self, key: &str, value: &str) -> Scenario {
        self.topic_config.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The source index's primary shards.
    pub fn shards(mut self, shards: u32) -> Scenario {
        self.shards = shards;
        self
    }

    /// The source index's mappings.
    pub fn mappings(mut self, mappings: Value) -> Scenario {
        self.mappings = mappings;
        self
    }

    /// More settings of the source index (`index.default_pipeline`, ...), over its shards and
    /// replicas.
    pub fn settings(mut self, settings: Value) -> Scenario {
        self.settings = settings;
        self
    }

    /// The alias's definition on the source index (filter, routing, write flag).
    pub fn alias(mut self, definition: Value) -> Scenario {
        self.alias = definition;
        self
    }

    /// A live load through the alias (`indexferry-producer load`), running from the start:
    /// `initial` documents, waited for, then `rate` writes/s.
    pub fn load(self, initial: u64, rate: u32) -> Scenario {
        self.load_with(initial, rate, &[])
    }

    /// [`Scenario::load`] with more `indexferry-producer load` arguments.
    pub fn load_with(mut self, initial: u64, rate: u32, args: &[&str]) -> Scenario {
        self.load = Some(LoadSpec { initial, rate, args: args.iter().map(|a| a.to_string()).collect() });
        self
    }

    /// `n` documents `d0`, `d1`, ... written through the producer library before the
    /// migration, each `body(i)`.
    pub fn docs(mut self, n: usize, body: fn(usize) -> Value) -> Scenario {
        self.docs = Some((n, body));
        self
    }

    /// How the recipe differs from [`RecipeSpec::new`]'s.
    pub fn recipe(mut self, tune: impl Fn(&mut RecipeSpec<'_>) + Send + Sync + 'static) -> Scenario {
        self.tune = Box::new(tune);
        self
    }

    /// The source index, its alias and topic, and the documents in it (the load started and
    /// its first documents waited for); no recipe yet.
    pub async fn start(self) -> anyhow::Result<Migration> {
        let dir = tempfile::tempdir()?;
        let mut m = Migration {
            state: dir.path().join("state"),
            dir,
            names: Names::new(&self.prefix),
            source_url: self.source_url,
            target_url: self.target_url,
            load: None,
            run: None,
            producer: None,
            tune: self.tune,
            made: vec![],
        };
        let Names { src, alias, topic, .. } = &m.names;
        let mut settings = json!({ "index.number_of_shards": self.shards, "index.number_of_replicas": 0 });
        if let (Some(all), Some(more)) = (settings.as_object_mut(), self.settings.as_object()) {
            all.extend(more.clone());
        }
        let body = json!({
            "settings": settings,
            "mappings": self.mappings,
            "aliases": { alias: self.alias },
        });
        cluster(&m.source_url).await?.json::<Value>(Method::Put, &format!("/{src}"), &[], Some(&body)).await?;
        if self.topic_config.is_empty() {
            indexferry_common::kafka::ensure_topic(&kafka(topic), topic, self.partitions).await?;
        } else {
            make_topic(topic, self.partitions, &self.topic_config).await?;
        }
        if let Some((n, body)) = self.docs {
            let producer = m.producer().await?;
            for i in 0..n {
                producer.index(&format!("d{i}"), &body(i).to_string(), None).await?;
            }
            producer.flush(Duration::from_secs(10));
        }
        if let Some(l) = self.load {
            let args: Vec<&str> = l.args.iter().map(String::as_str).collect();
            let (url, Names { alias, topic, .. }) = (&m.source_url, &m.names);
            m.load = Some(Load::start_with(m.dir.path(), url, alias, topic, l.initial, l.rate, &args)?);
            wait_docs(&m.source_url, &m.names.src, l.initial).await?;
        }
        Ok(m)
    }

    /// [`Scenario::start`], then the recipe written and `init`.
    pub async fn init(self) -> anyhow::Result<Migration> {
        let m = self.start().await?;
        m.init()?;
        Ok(m)
    }
}

/// A migration set up by a [`Scenario`]: its folder (recipe, state, logs), names and
/// processes. Dropping it stops its processes and deletes what it made on the servers.
pub struct Migration {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub names: Names,
    pub source_url: String,
    pub target_url: String,
    load: Option<Load>,
    run: Option<Proc>,
    producer: Option<Producer>,
    tune: Tune,
    /// More indices to delete at the end: (cluster, index).
    made: Vec<(String, String)>,
}

impl Migration {
    /// The migration's name.
    pub fn name(&self) -> &str {
        &self.names.name
    }

    /// `indexferry migration <args>` on this migration's state folder.
    pub fn cmd(&self, args: &[&str]) -> Command {
        indexferry(&self.state, args)
    }

    /// A file of the migration's folder (`run.log`, `load.log`, ...).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the recipe into `dir`; its path.
    pub fn recipe_in(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let Names { src, dst, alias, topic, name } = &self.names;
        let mut spec = RecipeSpec::new(name, &self.source_url, &self.target_url, topic, src, dst, alias);
        (self.tune)(&mut spec);
        spec.write(dir)
    }

    /// Writes the recipe into the migration's folder and runs `init`; its output.
    pub fn init(&self) -> anyhow::Result<String> {
        let recipe = self.recipe_in(self.dir.path())?;
        run_ok(self.cmd(&["init", recipe.to_str().unwrap_or_default()]))
    }

    /// `snapshot`, which must succeed; its output.
    pub fn snapshot(&self) -> anyhow::Result<String> {
        run_ok(self.cmd(&["snapshot", &self.names.name]))
    }

    /// `consume --until-caught-up`, which must succeed; its output.
    pub fn catch_up(&self) -> anyhow::Result<String> {
        run_ok(self.cmd(&["consume", &self.names.name, "--until-caught-up"]))
    }

    /// The producer library on the source, writing through the alias (connected once).
    pub async fn producer(&mut self) -> anyhow::Result<&Producer> {
        if self.producer.is_none() {
            let cfg = producer_config(&self.source_url, &self.names.topic, &self.names.alias);
            self.producer = Some(Producer::connect(cfg).await?);
        }
        Ok(self.producer.as_ref().expect("connected above"))
    }

    /// The live load, taken to be stopped (`stop`, `report`) by the test.
    pub fn load(&mut self) -> Load {
        self.load.take().expect("the scenario has a load that was not taken yet")
    }

    /// The live load kept running into the rollover when `through_rollover`; otherwise
    /// stopped here, with no write failed.
    pub fn load_into_rollover(&mut self, through_rollover: bool) -> anyhow::Result<Option<Load>> {
        let load = self.load();
        if through_rollover {
            return Ok(Some(load));
        }
        let (done, failed) = load.stop()?;
        assert_eq!(failed, 0, "no write may fail ({done} done)");
        Ok(None)
    }

    /// Starts `run` with its output in `run.log`.
    pub fn run(&mut self) -> anyhow::Result<()> {
        self.run_with(&[])
    }

    /// [`Migration::run`] with more arguments (`--stay`, `--metrics-addr ...`).
    pub fn run_with(&mut self, args: &[&str]) -> anyhow::Result<()> {
        let mut c = self.cmd(&["run", &self.names.name]);
        c.args(args);
        self.run = Some(spawn(c, &self.file("run.log"))?);
        Ok(())
    }

    /// Starts `<command> <name> <args>` (`consume`, `snapshot`, ...) with its output in
    /// `<command>.log`; the test holds it, and it is killed when dropped.
    pub fn spawn(&self, command: &str, args: &[&str]) -> anyhow::Result<Proc> {
        let mut c = self.cmd(&[command, &self.names.name]);
        c.args(args);
        spawn(c, &self.file(&format!("{command}.log")))
    }

    /// The running `run` process.
    pub fn run_proc(&mut self) -> &mut Proc {
        self.run.as_mut().expect("run was started")
    }

    /// Snapshot done and replay caught up, per `status --json`; if not within `limit`, `run`
    /// is stopped and its log printed.
    pub async fn wait_caught_up(&mut self, limit: Duration) -> anyhow::Result<Value> {
        let caught = crate::wait_caught_up(&self.state, &self.names.name, limit).await;
        if caught.is_err() {
            if let Some(run) = self.run.as_mut() {
                let _ = terminate(run);
            }
            eprintln!("{}", std::fs::read_to_string(self.file("run.log")).unwrap_or_default());
        }
        caught
    }

    /// `rollover`, which must succeed; its output.
    pub fn rollover(&self) -> anyhow::Result<String> {
        run_ok(self.cmd(&["rollover", &self.names.name]))
    }

    /// `run` exits by itself once rolled over (within 30 s); its exit status.
    pub async fn wait_run_exit(&mut self) -> anyhow::Result<ExitStatus> {
        let run = self.run_proc();
        wait_for("run to exit after rollover", Duration::from_secs(30), || Ok(run.try_wait()?)).await
    }

    /// `status --json`.
    pub fn status(&self) -> anyhow::Result<Value> {
        status(&self.state, &self.names.name)
    }

    /// `verify --json`: its report, and whether it exited 0.
    pub fn verify(&self) -> anyhow::Result<(Value, bool)> {
        let out = output(self.cmd(&["verify", &self.names.name, "--json"]))?;
        Ok((json_report("verify", &out)?, out.status.success()))
    }

    /// Deletes `index` on `url` too when the migration is dropped.
    pub fn also_delete(&mut self, url: &str, index: &str) {
        self.made.push((url.to_owned(), index.to_owned()));
    }
}

/// The JSON report a command printed, or an error with what it said instead.
pub fn json_report(what: &str, out: &Output) -> anyhow::Result<Value> {
    serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("{what} printed no report ({e}): {}", String::from_utf8_lossy(&out.stderr)))
}

impl Drop for Migration {
    fn drop(&mut self) {
        // Its processes first: a load or a worker would write the indices again.
        drop(self.run.take());
        drop(self.load.take());
        let Names { src, dst, topic, .. } = &self.names;
        let mut indices = vec![(self.source_url.clone(), src.clone()), (self.target_url.clone(), dst.clone())];
        indices.append(&mut self.made);
        let topics = vec![topic.clone(), format!("{topic}.deadletter")];
        // Drop cannot await, and may run inside the test's runtime: a thread of its own with
        // a runtime of its own, joined, so that the deletion is done when the test ends.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(delete_made(&indices, &topics))
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("could not delete all the migration made ({e:#}): dev/test sweeps it at the end of the run")
            }
            Err(_) => eprintln!("could not delete {src} and {dst}: dev/test sweeps them at the end of the run"),
        }
    }
}

/// Deletes the indices (cluster, index) and the topics, each if it exists; an error names
/// what could not be deleted.
async fn delete_made(indices: &[(String, String)], topics: &[String]) -> anyhow::Result<()> {
    let mut failed = vec![];
    for (url, index) in indices {
        let deleted = match cluster(url).await {
            Ok(c) => {
                let query = [("ignore_unavailable", "true")];
                c.request(Method::Delete, &format!("/{index}"), &query, None)
                    .await
                    .map(drop)
                    .map_err(anyhow::Error::from)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = deleted {
            failed.push(format!("{index} on {url}: {e:#}"));
        }
    }
    if let Err(e) = delete_topics(topics).await {
        failed.push(format!("topics {topics:?}: {e:#}"));
    }
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
    Ok(())
}

/// Makes `topic` with `config`, which must not exist yet.
async fn make_topic(topic: &str, partitions: i32, config: &[(String, String)]) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers()).create()?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    for (key, value) in config {
        new = new.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&new], &options).await? {
        result.map_err(|(t, e)| anyhow::anyhow!("cannot create the topic {t}: {e}"))?;
    }
    Ok(())
}

/// Deletes Kafka topics; one that does not exist is no error.
pub async fn delete_topics(topics: &[String]) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers()).create()?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.delete_topics(&names, &options).await? {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, e)) => anyhow::bail!("cannot delete the topic {topic}: {e}"),
        }
    }
    Ok(())
}

/// The ground of a test that makes its indices itself (a pattern of days, tenants): a folder
/// with the state folder in it, one name `base` that every name it makes starts with (its
/// topic is `<base>-events`), and the clusters it makes them on. When dropped, every index,
/// template, ingest pipeline and topic under `base` is deleted there, passed or failed, and
/// so are the templates that a cross-cluster switch of a migration named `base*` leaves.
pub struct Ground {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub base: String,
    pub topic: String,
    urls: Vec<String>,
}

impl Ground {
    /// A base named from `prefix` ([`unique`](crate::unique)), on the clusters `urls`.
    pub fn new(prefix: &str, urls: &[&str]) -> anyhow::Result<Ground> {
        let dir = tempfile::tempdir()?;
        let base = crate::unique(prefix);
        Ok(Ground {
            state: dir.path().join("state"),
            dir,
            topic: format!("{base}-events"),
            base,
            urls: urls.iter().map(|u| u.to_string()).collect(),
        })
    }

    /// `<base>-<what>`.
    pub fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.base)
    }

    /// `indexferry migration <args>` on the ground's state folder.
    pub fn cmd(&self, args: &[&str]) -> Command {
        indexferry(&self.state, args)
    }

    /// Writes a recipe `<name>.toml` into the folder: the migration `name` of the indices
    /// matching `pattern` on Elasticsearch 8 into `target` (`v2-{source}`) on `target_url`, over
    /// the ground's topic, with `tail` (TOML lines: `[rollover]`, ...) after the entry; its path.
    pub fn pattern_recipe(
        &self,
        name: &str,
        target_url: &str,
        pattern: &str,
        target: &str,
        tail: &str,
    ) -> anyhow::Result<PathBuf> {
        let source_url = es8();
        let target_section =
            if target_url == source_url { String::new() } else { format!("[target]\nurl = \"{target_url}\"\n") };
        let text = format!(
            "name = \"{name}\"\n[source]\nurl = \"{source_url}\"\n{target_section}[kafka]\nbrokers = \"{}\"\n\
             topic = \"{}\"\n[[indices]]\nsource = \"{pattern}\"\ntarget = \"{target}\"\n{tail}",
            brokers(),
            self.topic
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// The topic, made with `partitions`.
    pub async fn topic(&self, partitions: i32) -> anyhow::Result<&str> {
        indexferry_common::kafka::ensure_topic(&kafka(&self.topic), &self.topic, partitions).await?;
        Ok(&self.topic)
    }
}

impl Drop for Ground {
    fn drop(&mut self) {
        let (urls, base, topic) = (self.urls.clone(), self.base.clone(), self.topic.clone());
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                for url in &urls {
                    if let Ok(c) = cluster(url).await {
                        sweep(&c, &base).await;
                    }
                }
                let _ = delete_topics(&[topic.clone(), format!("{topic}.deadletter")]).await;
            });
            anyhow::Ok(())
        })
        .join();
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!("could not delete what {} made: dev/test sweeps it at the end of the run", self.base);
        }
    }
}

/// Deletes on `c` the indices (`base*`, and `v2-base*` that a `v2-{source}` target makes),
/// templates (the switch's `indexferry-switched-base*` too) and ingest pipelines under `base`.
async fn sweep(c: &indexferry_common::es::Cluster, base: &str) {
    let mut paths = vec![];
    for start in [base.to_owned(), format!("v2-{base}")] {
        let query = [("format", "json"), ("h", "index"), ("expand_wildcards", "all")];
        let indices = names_at(c, &format!("/_cat/indices/{start}*"), &query, |v| {
            v.as_array().into_iter().flatten().filter_map(|i| i["index"].as_str().map(str::to_owned)).collect()
        })
        .await;
        // The pattern resolves aliases too: only the indices whose own name is under the base.
        paths.extend(indices.into_iter().filter(|i| i.starts_with(&start)).map(|i| format!("/{i}")));
    }
    let listed = |list: &'static str| {
        move |v: &Value| -> Vec<String> {
            let items = v[list].as_array().into_iter().flatten();
            items.filter_map(|t| t["name"].as_str().map(str::to_owned)).collect()
        }
    };
    let keys = |v: &Value| -> Vec<String> { v.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default() };
    for pattern in [format!("{base}*"), format!("indexferry-switched-{base}*")] {
        let composable = names_at(c, &format!("/_index_template/{pattern}"), &[], listed("index_templates")).await;
        paths.extend(composable.into_iter().map(|t| format!("/_index_template/{t}")));
        let legacy = names_at(c, &format!("/_template/{pattern}"), &[], keys).await;
        paths.extend(legacy.into_iter().map(|t| format!("/_template/{t}")));
    }
    let components = names_at(c, &format!("/_component_template/{base}*"), &[], listed("component_templates")).await;
    paths.extend(components.into_iter().map(|t| format!("/_component_template/{t}")));
    let pipelines = names_at(c, &format!("/_ingest/pipeline/{base}*"), &[], keys).await;
    paths.extend(pipelines.into_iter().map(|p| format!("/_ingest/pipeline/{p}")));
    for path in paths {
        let _ = c.request(Method::Delete, &path, &[], None).await;
    }
}

/// The names a listing at `path` gives (none when it fails: nothing there).
async fn names_at(
    c: &indexferry_common::es::Cluster,
    path: &str,
    query: &[(&str, &str)],
    pick: impl Fn(&Value) -> Vec<String>,
) -> Vec<String> {
    c.json::<Value>(Method::Get, path, query, None).await.map(|v| pick(&v)).unwrap_or_default()
}
