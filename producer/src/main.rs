//! `indexferry-producer`: publish validated events from stdin, or run a realistic load.

mod app_versions;
mod bench;
mod load;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use indexferry_common::kafka::producer_config;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "indexferry-producer",
    version,
    about = "Publish indexferry change events, or generate a realistic write load through the producer library"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr as `text`, or as `json`: one object per line, the final error included.
    #[arg(long, global = true, env = "INDEXFERRY_LOG_FORMAT", default_value = "text")]
    log_format: indexferry_common::logging::Format,
    /// The tenant's prefix on a shared cluster (the recipe's `prefix`): put before the alias,
    /// the index names and (`publish`) each event's `index` that lacks it.
    #[arg(long, global = true, env = "INDEXFERRY_PREFIX", default_value = "")]
    prefix: String,
}

#[derive(Subcommand)]
enum Command {
    /// Read change events as NDJSON on stdin, validate each against indexferry.change.v1 and
    /// publish the valid ones (key = id). Invalid lines are reported with their line number
    /// and reason; the exit code is 1 if any line was invalid.
    Publish {
        /// Kafka bootstrap servers.
        #[arg(long, env = "INDEXFERRY_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Topic to publish to.
        #[arg(long, env = "INDEXFERRY_KAFKA_TOPIC")]
        topic: String,
        /// Validate only; publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write creates, updates and deletes through the producer library at a set rate.
    Load(Box<load::LoadArgs>),
    /// Benchmark data: write a reproducible `_bulk` file of about 1 KB documents.
    Gen(bench::GenArgs),
    /// Benchmark ceiling: load a `gen` file with `_bulk` at a set concurrency (no reads, no Kafka).
    Bulk(bench::BulkArgs),
    /// Benchmark data: publish one change event per document of a `gen` file.
    Fill(bench::FillArgs),
    /// Benchmark: the latency of single writes or searches at a set rate (a cluster or the proxy).
    Probe(bench::ProbeArgs),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    indexferry_common::logging::init(cli.log_format);
    let result = match cli.command {
        Command::Publish { brokers, topic, dry_run } => publish(&brokers, &topic, dry_run, &cli.prefix).await,
        Command::Load(args) => load::run(args.with_prefix(&cli.prefix)).await,
        Command::Gen(args) => bench::generate(&args),
        Command::Bulk(args) => bench::bulk(&args.with_prefix(&cli.prefix)).await,
        Command::Fill(args) => bench::fill(&args.with_prefix(&cli.prefix)).await,
        Command::Probe(args) => bench::probe(&args).await,
    };
    if let Err(e) = result {
        indexferry_common::logging::fatal(&format!("{e:#}"));
        std::process::exit(1);
    }
}

async fn publish(brokers: &str, topic: &str, dry_run: bool, prefix: &str) -> anyhow::Result<()> {
    let producer: FutureProducer = producer_config(brokers, &BTreeMap::new(), Duration::from_secs(30))
        .create()
        .context("cannot create kafka producer")?;
    let stdin = std::io::stdin();
    let (mut published, mut invalid) = (0u64, 0u64);
    let mut pending = Vec::new();
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line.context("cannot read stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        match indexferry_schemas::decode(None, line.as_bytes()) {
            Ok(mut event) if !dry_run => {
                // The event names the index as the application knows it: the tenant's prefix
                // goes before it, as the producer library's write answer would carry it.
                let payload = match event.index.starts_with(prefix) {
                    true => line.trim().as_bytes().to_vec(),
                    false => {
                        event.index = format!("{prefix}{}", event.index);
                        event.to_json()
                    }
                };
                let record = FutureRecord::to(topic).key(event.id.as_bytes()).payload(&payload);
                pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
                published += 1;
            }
            Ok(_) => published += 1,
            Err(e) => {
                indexferry_common::say!("line {}: invalid event: {e}", n + 1);
                invalid += 1;
            }
        }
    }
    for p in pending {
        match p.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("publishing failed: {e}"),
            Err(_) => bail!("publishing was cancelled"),
        }
    }
    producer.flush(Timeout::After(Duration::from_secs(30)))?;
    let verb = if dry_run { "valid" } else { "published" };
    println!("publish: {verb}={published} invalid={invalid}");
    if invalid > 0 {
        bail!("{invalid} invalid event(s) rejected");
    }
    Ok(())
}
