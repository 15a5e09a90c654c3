//! The application profiles of `dev/demo --app <profile>` (its `--help` says what each
//! sets up), each migrated in one cluster and across two with the load running before,
//! through and after the rollover:
//!
//! - `invenio`: records behind an alias a template gives, versioned by the application
//!   (`external_gte`), and monthly statistics whose write alias a job moves mid-migration;
//! - `pipeline`: a default ingest pipeline that appends to a field (run twice, it shows);
//! - `logs`: daily indices whose write alias rolls over to a new day mid-migration.
//!
//! Each run must end `demo: ok`: 0 failed application writes before and after the switch,
//! `verify` identical, and across clusters writes the target acknowledged after the switch.
//! Then an independent comparison of every migrated pair: the same ids, `_source`, routing
//! and `_version` on both sides, leaving out only the ids written after the switch (the
//! events at or after the rollover's end offsets).
//!
//! Every name a demo makes starts with a ground's base (`INDEXFERRY_DEMO_PREFIX`), and what
//! it made on both clusters and Kafka is deleted when its profile ends, passed or failed.

use indexferry_tests::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

/// Runs the demo for `app` from `from` (at `source_url`) to `to` (at `target_url`) with a
/// state folder and a prefix of its own; returns its migration's `status --json`, and the
/// ground that holds its state and deletes what it made when dropped.
fn demo(app: &str, from: &str, to: &str, source_url: &str, target_url: &str) -> anyhow::Result<(Value, Ground)> {
    let mut g = Ground::new("demo", &[source_url, target_url])?;
    let prefix = format!("{}-", g.base);
    // The demo's topic, which the ground deletes with its dead-letter topic.
    g.topic = format!("{prefix}records.changes");
    let bin_dir = bin("indexferry").parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let out = Command::new("bash")
        .arg(dev_script("demo"))
        .args(["--app", app, "--from", from, "--to", to, "--docs", "3000", "--rate", "40"])
        .env("INDEXFERRY_DEMO_BIN", &bin_dir)
        .env("INDEXFERRY_DEMO_STATE", &g.state)
        .env("INDEXFERRY_DEMO_PREFIX", &prefix)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dev/demo --app {app} --from {from} --to {to} failed:\n{stdout}\n{stderr}");
    let ok = stdout.lines().find(|l| l.starts_with("demo: ok")).unwrap_or_default();
    assert!(ok.contains("failed_writes=0") && ok.contains("verify=identical"), "{stdout}");
    let mut name = format!("{prefix}records-demo-{to}");
    if from != "es8" {
        name = format!("{prefix}records-demo-{from}-{to}");
    }
    name.push_str(&format!("-{app}"));
    let status = status(&g.state, &name)?;
    assert_eq!(status["state"], "rolled_over", "{status}");
    Ok((status, g))
}

/// The ids of the events at or after `end` (partition → offset) on the demo's `topic`.
fn written_after(end: &Value, topic: &str) -> anyhow::Result<BTreeSet<String>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer =
        indexferry_common::kafka::consumer_config(&brokers(), &Default::default(), &unique("profiles")).create()?;
    let mut tpl = TopicPartitionList::new();
    for (p, o) in end.as_object().into_iter().flatten() {
        tpl.add_partition_offset(topic, p.parse()?, Offset::Offset(o.as_i64().unwrap_or(0)))?;
    }
    consumer.assign(&tpl)?;
    let mut ids = BTreeSet::new();
    let mut idle = std::time::Instant::now();
    while idle.elapsed() < Duration::from_secs(3) {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            ids.insert(String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned());
            idle = std::time::Instant::now();
        }
    }
    Ok(ids)
}

/// Every pair of the migration compared document by document, outside the project's code.
async fn compare(status: &Value, topic: &str, source_url: &str, target_url: &str) -> anyhow::Result<()> {
    let after = written_after(&status["last_rollover"]["end_offsets"], topic)?;
    let pairs = status["pairs"].as_array().cloned().unwrap_or_default();
    assert!(!pairs.is_empty(), "{status}");
    for p in pairs {
        let (src, dst) = (p["source"].as_str().unwrap_or_default(), p["target"].as_str().unwrap_or_default());
        let keep = |m: BTreeMap<String, Stored>| -> BTreeMap<String, Stored> {
            m.into_iter().filter(|(id, _)| !after.contains(id)).collect()
        };
        let (source, target) = (keep(all_stored(source_url, src).await?), keep(all_stored(target_url, dst).await?));
        assert!(!source.is_empty(), "{src} holds documents");
        let ids = |m: &BTreeMap<String, Stored>| m.keys().cloned().collect::<BTreeSet<_>>();
        let (only_source, only_target): (Vec<_>, Vec<_>) = (
            ids(&source).difference(&ids(&target)).take(5).cloned().collect(),
            ids(&target).difference(&ids(&source)).take(5).cloned().collect(),
        );
        assert!(
            only_source.is_empty() && only_target.is_empty(),
            "{src} -> {dst}: only in the source {only_source:?}, only in the target {only_target:?}"
        );
        for (id, s) in &source {
            assert_eq!(Some(s), target.get(id), "{src} -> {dst}: document {id}");
        }
    }
    Ok(())
}

async fn profile(app: &str, from: &str, to: &str, source_url: &str, target_url: &str) -> anyhow::Result<()> {
    let _alone = DEMO.lock().await;
    let (status, ground) = demo(app, from, to, source_url, target_url)?;
    compare(&status, &ground.topic, source_url, target_url).await
}

/// One demo at a time: they share the ports of the run's metrics and of the proxy.
static DEMO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn invenio_in_cluster_and_across_clusters() -> anyhow::Result<()> {
    profile("invenio", "es8", "es8", &es8(), &es8()).await?;
    profile("invenio", "es8", "es9", &es8(), &es9()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_in_cluster_and_across_clusters() -> anyhow::Result<()> {
    profile("pipeline", "opensearch", "opensearch", &opensearch(), &opensearch()).await?;
    profile("pipeline", "opensearch", "opensearch3", &opensearch(), &opensearch3()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_in_cluster_and_across_clusters() -> anyhow::Result<()> {
    profile("logs", "es8", "es8", &es8(), &es8()).await?;
    profile("logs", "es8", "es9", &es8(), &es9()).await
}
