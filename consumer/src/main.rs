//! `indexferry`: the operator CLI. Exit codes: 0 success, 1 failure (one-line reason on
//! stderr), 2 usage error.

use clap::{Args, Parser, Subcommand};
use indexferry_common::config::Overrides;
use indexferry_consumer::commands::{cancel, init, overview, status};
use indexferry_consumer::pipeline::{reconcile, replay, rollover, snapshot, verify};
use indexferry_consumer::runtime::context::{Common, Ctx};
use indexferry_consumer::runtime::shutdown;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[derive(Parser)]
#[command(
    name = "indexferry",
    version,
    about = "Migrate a live Elasticsearch or OpenSearch index while the application keeps writing"
)]
struct Cli {
    #[command(subcommand)]
    command: Top,
    /// Log lines on stderr as `text`, or as `json`: one object per line, the final error included.
    #[arg(long, global = true, env = "INDEXFERRY_LOG_FORMAT", default_value = "text")]
    log_format: indexferry_common::logging::Format,
}

#[derive(Subcommand)]
enum Top {
    /// Create, run, watch, switch over and check migrations.
    #[command(subcommand)]
    Migration(Command),
    /// Inventory a cluster, prove on the target what will break, and write the recipes.
    Plan(indexferry_consumer::tools::plan::Options),
}

#[derive(Args, Clone)]
struct Global {
    /// Where migrations keep their state.
    #[arg(long, global = true, env = "INDEXFERRY_STATE_DIR", default_value = ".indexferry")]
    state_dir: PathBuf,
    /// Source cluster URL, or a comma-separated list of its nodes (overrides the recipe).
    #[arg(long, global = true, env = "INDEXFERRY_SOURCE_URL")]
    source_url: Option<String>,
    /// Target cluster URL, or a comma-separated list of its nodes (overrides the recipe).
    #[arg(long, global = true, env = "INDEXFERRY_TARGET_URL")]
    target_url: Option<String>,
    /// Kafka bootstrap servers (overrides the recipe).
    #[arg(long, global = true, env = "INDEXFERRY_KAFKA_BROKERS")]
    brokers: Option<String>,
    /// Change-event topic (overrides the recipe).
    #[arg(long, global = true, env = "INDEXFERRY_KAFKA_TOPIC")]
    topic: Option<String>,
    /// How long to keep retrying an unreachable cluster before giving up (e.g. 30s, 2m).
    #[arg(long, global = true, env = "INDEXFERRY_CONNECT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    connect_timeout: std::time::Duration,
}

#[derive(Args, Clone)]
struct Throttle {
    /// Snapshot documents per second over all slices, for this run instead of the recipe's
    /// `snapshot.throttle_docs_per_s` (0 = unthrottled).
    #[arg(long, value_name = "DOCS_PER_S")]
    throttle: Option<u32>,
}

#[derive(Args, Clone, Copy)]
struct Replay {
    /// Skip the events that Kafka deleted (retention, delete-records) before they were
    /// replayed, instead of stopping. Their writes may be missing from the target: the loss
    /// is recorded, and rollover then requires a reconcile.
    #[arg(long)]
    accept_lost_events: bool,
}

impl Replay {
    fn options(self) -> replay::Options {
        replay::Options { accept_lost_events: self.accept_lost_events }
    }
}

#[derive(Args, Clone)]
struct Metrics {
    /// Serve Prometheus metrics on this address (`:9464` binds loopback), and the health
    /// endpoints: /health/live, /health/ready (the worker serves), /health/caught-up (the
    /// snapshot is done and the replay within [rollover] max_lag: rollover would start).
    #[arg(long, env = "INDEXFERRY_METRICS_ADDR", value_parser = parse_metrics_addr)]
    metrics_addr: Option<SocketAddr>,
    /// After the rollover, a worker whose metrics were scraped keeps serving them until one
    /// more scrape has read the final state and write pause, at most this long.
    #[arg(long, env = "INDEXFERRY_METRICS_LINGER", default_value = "2m", value_parser = parse_duration)]
    metrics_linger: std::time::Duration,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the recipe and both clusters, create the target index, record the replay start.
    Init {
        recipe: PathBuf,
        #[command(flatten)]
        global: Global,
    },
    /// Snapshot and replay together in one process, until rollover or a signal.
    Run {
        name: String,
        #[command(flatten)]
        throttle: Throttle,
        #[command(flatten)]
        replay: Replay,
        /// Once the migration is rolled over (or is found so at start), or cancelled while
        /// this runs, stay up serving the health endpoints and metrics until a signal,
        /// instead of exiting: what a Kubernetes StatefulSet, which starts an exited pod
        /// again, needs.
        #[arg(long, env = "INDEXFERRY_RUN_STAY")]
        stay: bool,
        #[command(flatten)]
        global: Global,
        #[command(flatten)]
        metrics: Metrics,
    },
    /// Copy a point-in-time view of the source into the target (resumable).
    Snapshot {
        name: String,
        #[command(flatten)]
        throttle: Throttle,
        #[command(flatten)]
        global: Global,
        #[command(flatten)]
        metrics: Metrics,
    },
    /// Replay change events into the target from the recorded offsets, until rollover or a signal.
    Consume {
        name: String,
        /// Stop once every partition is replayed up to the end offsets read at start
        /// (a catch-up run, or a benchmark), instead of waiting for rollover.
        #[arg(long)]
        until_caught_up: bool,
        #[command(flatten)]
        replay: Replay,
        #[command(flatten)]
        global: Global,
        #[command(flatten)]
        metrics: Metrics,
    },
    /// Show state, progress, ETA, lag per partition and whether rollover would start.
    Status {
        name: String,
        /// Print JSON.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Print one line a second (state, copied %, docs/s, ETA, lag, dead letters,
        /// readiness) until Ctrl-C or the rollover.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        global: Global,
    },
    /// The dead-lettered events and documents: kind, reason, id, offset; `--replay` publishes
    /// them again to the migration's topic once their cause is fixed.
    Deadletters {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Publish the letters not replayed yet to the migration's topic, and mark them replayed.
        #[arg(long)]
        replay: bool,
        #[command(flatten)]
        global: Global,
    },
    /// Every migration in the state directory, with its state and last rollover.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        global: Global,
    },
    /// Block writes, drain the last events and move the alias to the target.
    Rollover {
        name: String,
        #[command(flatten)]
        global: Global,
    },
    /// Compare source and target document by document; exit 1 on any difference.
    Verify {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Ids listed per kind of difference.
        #[arg(long, default_value_t = 10)]
        samples: usize,
        #[command(flatten)]
        global: Global,
    },
    /// Compare source and target by id and version and repair what differs; exit 1 if a repair failed.
    Reconcile {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Ids listed per kind.
        #[arg(long, default_value_t = 10)]
        samples: usize,
        #[command(flatten)]
        global: Global,
        #[command(flatten)]
        metrics: Metrics,
    },
    /// Take an index created after `init` that matches a recipe pattern into the migration
    /// (creates its target and copies it), or leave it behind with --exclude.
    Add {
        name: String,
        index: String,
        /// Record the index as not migrated instead: rollover then goes ahead without it.
        #[arg(long)]
        exclude: bool,
        #[command(flatten)]
        global: Global,
    },
    /// Stop the workers, lift any write block, delete the target and the state.
    Cancel {
        name: String,
        /// Keep the target index.
        #[arg(long)]
        keep_target: bool,
        #[command(flatten)]
        global: Global,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    let s = if s.starts_with(':') { format!("127.0.0.1{s}") } else { s.to_owned() };
    s.parse().map_err(|e| format!("{s:?}: {e}"))
}

impl Global {
    fn common(&self) -> Common {
        Common {
            state_dir: self.state_dir.clone(),
            overrides: Overrides {
                source_url: self.source_url.clone(),
                target_url: self.target_url.clone(),
                brokers: self.brokers.clone(),
                topic: self.topic.clone(),
            },
            connect_timeout: self.connect_timeout,
        }
    }
}

fn main() {
    let cli = Cli::parse();
    indexferry_common::logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            indexferry_common::logging::fatal(&format!("cannot start the runtime: {e}"));
            std::process::exit(1);
        }
    };
    let result = match cli.command {
        Top::Migration(command) => runtime.block_on(execute(command)),
        Top::Plan(opts) => runtime.block_on(plan(opts)),
    };
    match result {
        Ok(true) => std::process::exit(0),
        Ok(false) => std::process::exit(1),
        Err(e) => {
            indexferry_common::logging::fatal(&format!("{e:#}"));
            let usage = e.downcast_ref::<indexferry_consumer::tools::plan::Usage>().is_some();
            std::process::exit(if usage { 2 } else { 1 });
        }
    }
}

/// `plan` until done or a signal: an interrupted plan drops its temporary index on the way out.
async fn plan(opts: indexferry_consumer::tools::plan::Options) -> anyhow::Result<bool> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = indexferry_consumer::tools::plan::plan(&opts) => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; the temporary index was deleted"),
        _ = term.recv() => anyhow::bail!("terminated; the temporary index was deleted"),
    }
}

enum Worker {
    Run { throttle: Option<u32>, replay: replay::Options, stay: bool },
    Snapshot { throttle: Option<u32> },
    Consume { until_caught_up: bool, replay: replay::Options },
}

/// The span every line a command logs is in: the migration it works on and the command
/// (`init` opens its own once it has read the recipe's name).
fn command_span(command: &Command) -> tracing::Span {
    let (name, command) = match command {
        Command::Init { .. } | Command::List { .. } => return tracing::Span::none(),
        Command::Run { name, .. } => (name, "run"),
        Command::Snapshot { name, .. } => (name, "snapshot"),
        Command::Consume { name, .. } => (name, "consume"),
        Command::Status { name, .. } => (name, "status"),
        Command::Deadletters { name, .. } => (name, "deadletters"),
        Command::Rollover { name, .. } => (name, "rollover"),
        Command::Verify { name, .. } => (name, "verify"),
        Command::Reconcile { name, .. } => (name, "reconcile"),
        Command::Add { name, .. } => (name, "add"),
        Command::Cancel { name, .. } => (name, "cancel"),
    };
    tracing::info_span!("migration", migration = %name, command)
}

async fn execute(command: Command) -> anyhow::Result<bool> {
    let span = command_span(&command);
    execute_command(command).instrument(span).await
}

async fn execute_command(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Init { recipe, global } => init::init(&global.common(), &recipe).await.map(|_| true),
        Command::Run { name, throttle, replay, stay, global, metrics } => {
            let run = Worker::Run { throttle: throttle.throttle, replay: replay.options(), stay };
            work(run, &name, &global, &metrics).await
        }
        Command::Snapshot { name, throttle, global, metrics } => {
            work(Worker::Snapshot { throttle: throttle.throttle }, &name, &global, &metrics).await
        }
        Command::Consume { name, until_caught_up, replay, global, metrics } => {
            work(Worker::Consume { until_caught_up, replay: replay.options() }, &name, &global, &metrics).await
        }
        Command::Status { name, watch: true, global, .. } => {
            overview::watch(&global.common(), &name).await.map(|_| true)
        }
        Command::List { json, global } => {
            let list = overview::list(&global.common())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                overview::print_list(&list);
            }
            Ok(true)
        }
        Command::Status { name, json, global, .. } => {
            let common = global.common();
            let s = tokio::task::spawn_blocking(move || status::collect(&common, &name)).await??;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                status::print(&s);
            }
            Ok(true)
        }
        Command::Deadletters { name, json, replay, global } => deadletters(&global.common(), &name, json, replay).await,
        Command::Rollover { name, global } => rollover::rollover(&global.common(), &name).await.map(|_| true),
        Command::Verify { name, json, samples, global } => verify::verify(&global.common(), &name, json, samples).await,
        Command::Reconcile { name, json, samples, global, metrics } => {
            if let Some(addr) = metrics.metrics_addr {
                indexferry_common::metrics::serve(addr).map_err(anyhow::Error::msg)?;
            }
            reconcile::reconcile(&global.common(), &name, json, samples).await
        }
        Command::Add { name, index, exclude, global } => {
            indexferry_consumer::commands::add::add(&global.common(), &name, &index, exclude).await.map(|_| true)
        }
        Command::Cancel { name, keep_target, global } => {
            cancel::cancel(&global.common(), &name, keep_target).await.map(|_| true)
        }
    }
}

async fn deadletters(common: &Common, name: &str, json: bool, replay: bool) -> anyhow::Result<bool> {
    use indexferry_consumer::pipeline::deadletters as dl;
    match (replay, json) {
        (true, true) => println!("{}", serde_json::to_string_pretty(&dl::replay(common, name).await?)?),
        (true, false) => dl::print_replay(&dl::replay(common, name).await?),
        (false, true) => println!("{}", serde_json::to_string_pretty(&dl::list(common, name).await?)?),
        (false, false) => dl::print(&dl::list(common, name).await?),
    }
    Ok(true)
}

async fn work(which: Worker, name: &str, global: &Global, metrics: &Metrics) -> anyhow::Result<bool> {
    if let Some(addr) = metrics.metrics_addr {
        indexferry_common::metrics::serve(addr).map_err(anyhow::Error::msg)?;
        tracing::info!(%addr, "serving metrics");
    }
    let common = global.common();
    let dir = indexferry_consumer::state::StateDir::new(&common.state_dir, name);
    indexferry_consumer::runtime::health::init(&dir.path());
    let (judged, migration) = (common.clone(), name.to_owned());
    indexferry_common::metrics::judge_caught_up(move || {
        let s = status::collect(&judged, &migration).map_err(|e| format!("{e:#}"))?;
        match s.ready.why_not {
            None => Ok(()),
            Some(why) => Err(why),
        }
    });
    let stay = matches!(which, Worker::Run { stay: true, .. });
    let rolled_over = || dir.load_migration().is_ok_and(|m| m.state == indexferry_consumer::state::State::RolledOver);
    if stay && rolled_over() {
        return stay_up(&format!("migration {name:?} is rolled over")).await;
    }
    let result = work_on(which, name, &common).await;
    if stay && result.is_ok() {
        // `cancel` asked it to stop (and is removing the state), or is done.
        let cancelled = dir.stop_request_file().exists()
            || matches!(dir.load_migration(), Err(indexferry_consumer::state::StateError::NotFound { .. }));
        if rolled_over() || cancelled {
            indexferry_consumer::runtime::health::finish();
            let done = if cancelled { "was cancelled" } else { "rolled over" };
            return stay_up(&format!("migration {name:?} {done}")).await;
        }
    }
    indexferry_common::metrics::set_ready(false);
    indexferry_consumer::runtime::health::finish();
    if metrics.metrics_addr.is_some() && result.is_ok() {
        indexferry_consumer::runtime::gauges::linger(&dir, metrics.metrics_linger).await;
    }
    result
}

/// `run --stay` once the work is done: serving health and metrics, ready, until a signal.
async fn stay_up(why: &str) -> anyhow::Result<bool> {
    tracing::info!("{why}: nothing left to do; staying up until stopped (--stay)");
    indexferry_common::metrics::set_ready(true);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(true)
}

async fn work_on(which: Worker, name: &str, common: &Common) -> anyhow::Result<bool> {
    let mut ctx = Ctx::load(common, name).await?;
    if let Worker::Run { throttle: Some(t), .. } | Worker::Snapshot { throttle: Some(t) } = which {
        ctx.recipe.snapshot.throttle_docs_per_s = t;
    }
    let ctx = Arc::new(ctx);
    if ctx.migration.state == indexferry_consumer::state::State::RolledOver {
        anyhow::bail!("migration {name:?} is already rolled over");
    }
    let cancel = CancellationToken::new();
    shutdown::install(cancel.clone());
    shutdown::watch_state(ctx.dir.clone(), cancel.clone());
    let (snapshots, replays) = (!matches!(which, Worker::Consume { .. }), !matches!(which, Worker::Snapshot { .. }));
    indexferry_consumer::runtime::gauges::start(&ctx, snapshots, replays);
    indexferry_common::metrics::set_ready(true);
    match which {
        Worker::Snapshot { .. } => snapshot::run(ctx, cancel).await?,
        Worker::Consume { until_caught_up: false, replay: opts } => replay::run(ctx, cancel, None, opts).await?,
        Worker::Consume { until_caught_up: true, replay: opts } => {
            replay::run_until_caught_up(ctx, cancel, opts).await?
        }
        Worker::Run { replay: opts, .. } => {
            let snap = tokio::spawn(snapshot::run(ctx.clone(), cancel.clone()).in_current_span());
            let consume = tokio::spawn(replay::run(ctx.clone(), cancel.clone(), None, opts).in_current_span());
            // The snapshot ends first; the consumer runs on until rollover or a signal.
            let snap_result = snap.await?;
            if let Err(e) = snap_result {
                cancel.cancel();
                let _ = consume.await;
                return Err(e.context("snapshot failed"));
            }
            consume.await??;
        }
    }
    Ok(true)
}
