//! A source shard that is unavailable during the snapshot. The cluster then answers
//! searches for the other shard only: a page without the missing shard's hits must never be
//! taken for the end of the slice. The shard is taken away for real, by a `cancel` reroute
//! of one primary of the test's own 2-shard index; nothing else on the shared clusters is
//! touched.
//!
//! - Elasticsearch 8 (point-in-time reader): the cancel closes the shard's search contexts
//!   and the cluster recovers the shard from its data a moment later.
//! - OpenSearch 2 (scroll reader): a scroll of the test's own holds the shard's files while
//!   it is cancelled, so that reopening it fails, and `index.allocation.max_retries = 1`
//!   leaves it unassigned until the test raises that limit again.

use indexferry_common::es::{Cluster, Method};
use indexferry_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

const DOCS: u64 = 600;

#[tokio::test(flavor = "multi_thread")]
async fn es8_a_shard_lost_mid_snapshot_is_not_taken_for_the_end_of_the_slice() -> anyhow::Result<()> {
    shard_lost_mid_snapshot(&es8(), "pes").await
}

/// A migration on `url` over a topic of one partition, its source of 2 shards holding
/// [`DOCS`] documents written without events; not yet `init`.
async fn filled(
    url: &str,
    prefix: &str,
    tune: impl Fn(&mut RecipeSpec<'_>) + Send + Sync + 'static,
) -> anyhow::Result<(Migration, Cluster)> {
    let m = Scenario::new(prefix).from(url).partitions(1).mappings(json!({})).recipe(tune).start().await?;
    let source = cluster(url).await?;
    fill(&source, &m.names.src, DOCS).await?;
    Ok((m, source))
}

async fn shard_lost_mid_snapshot(url: &str, prefix: &str) -> anyhow::Result<()> {
    // One slice over both shards, slowed down so that the shard goes away mid-way.
    let (m, source) = filled(url, prefix, |r| (r.batch_size, r.throttle) = (20, 100)).await?;
    m.init()?;
    let (state, Names { src, dst, name, .. }) = (&m.state, &m.names);
    let log = m.file("snapshot.log");
    let mut snapshot = spawn(m.cmd(&["snapshot", name]), &log)?;
    wait_for("the snapshot to be under way", Duration::from_secs(60), || {
        let s = status(state, name)?;
        Ok((s["pairs"][0]["copied"].as_u64().unwrap_or(0) >= 60).then_some(()))
    })
    .await?;

    cancel_shard(&source, src, 1).await?;
    let exit = wait_for("the snapshot to end", Duration::from_secs(180), || Ok(snapshot.try_wait()?)).await?;
    let said = std::fs::read_to_string(&log)?;
    assert!(exit.success(), "{said}");
    let copied = source_count_in(url, dst).await?;
    assert_eq!(copied, DOCS, "the snapshot ended without the lost shard's documents:\n{said}");
    // The view was opened again rather than the lost shard's hits taken as the end.
    let restarts = m.status()?["pairs"][0]["restarts"].as_u64().unwrap_or(0);
    assert!(restarts >= 1, "the slice was not started over:\n{said}");
    let out = run_ok(m.cmd(&["verify", name]))?;
    assert!(out.contains("verify: identical"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "on a fresh OpenSearch 2.19 node, _refresh of an index with an unassigned primary does not answer, and init spends minutes in request timeouts; run with --ignored on a stack where it answers"]
async fn opensearch_the_snapshot_waits_for_an_unavailable_shard_and_then_copies_it() -> anyhow::Result<()> {
    let (m, source) = without_a_shard("pwait", "5m").await?;
    let (url, Names { src, dst, name, .. }) = (&m.source_url, &m.names);
    let log = m.file("snapshot.log");
    let mut snapshot = spawn(m.cmd(&["snapshot", name]), &log)?;
    let missing = format!("[{src}][1]");
    wait_for("the snapshot to retry the missing shard", Duration::from_secs(180), || {
        let said = std::fs::read_to_string(&log)?;
        anyhow::ensure!(snapshot.try_wait()?.is_none(), "the snapshot ended without the missing shard:\n{said}");
        Ok(said.contains("read failed, retrying").then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}:\n{}", std::fs::read_to_string(&log).unwrap_or_default()))?;
    let said = std::fs::read_to_string(&log)?;
    assert!(said.contains(&missing), "the retry names the shard: {said}");
    let s = m.status()?;
    assert_eq!(s["pairs"][0]["done"], json!(false), "{s}");

    bring_shards_back(&source, src).await?;
    let exit = wait_for("the snapshot to end", Duration::from_secs(180), || Ok(snapshot.try_wait()?)).await?;
    let said = std::fs::read_to_string(&log)?;
    assert!(exit.success(), "{said}");
    assert_eq!(source_count_in(url, dst).await?, DOCS, "{said}");
    let out = run_ok(m.cmd(&["verify", name]))?;
    assert!(out.contains("verify: identical"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "on a fresh OpenSearch 2.19 node, _refresh of an index with an unassigned primary does not answer, and init spends minutes in request timeouts; run with --ignored on a stack where it answers"]
async fn opensearch_a_shard_that_stays_unavailable_stops_the_snapshot_naming_it() -> anyhow::Result<()> {
    let (m, source) = without_a_shard("pgone", "3s").await?;
    let Names { src, name, .. } = &m.names;
    let out = output(m.cmd(&["snapshot", name]))?;
    bring_shards_back(&source, src).await?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "the snapshot ended without the missing shard:\n{said}");
    let reason = said.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(reason.contains(&format!("[{src}][1]")), "the error names the shard: {said}");
    let s = m.status()?;
    assert_eq!(s["pairs"][0]["done"], json!(false), "{s}");
    Ok(())
}

/// [`filled`] on OpenSearch with shard 1 taken away ([`take_shard_away`]) and `init` done,
/// the source cluster's `unreachable_timeout` at `timeout`.
async fn without_a_shard(prefix: &str, timeout: &str) -> anyhow::Result<(Migration, Cluster)> {
    let option = format!("unreachable_timeout = \"{timeout}\"\n");
    let (m, source) = filled(&opensearch(), prefix, move |r| r.source_options = option.clone()).await?;
    take_shard_away(&source, &m.names.src, 1).await?;
    m.init()?;
    Ok((m, source))
}

/// `n` small documents, visible to searches.
async fn fill(c: &Cluster, index: &str, n: u64) -> anyhow::Result<()> {
    let mut body = String::new();
    for i in 0..n {
        body.push_str(&format!("{{\"index\":{{\"_index\":\"{index}\",\"_id\":\"d{i}\"}}}}\n{{\"i\":{i}}}\n"));
    }
    let r = c.bulk(body.into()).await?;
    anyhow::ensure!(!r.errors, "bulk into {index} failed");
    c.json::<Value>(Method::Post, &format!("/{index}/_refresh"), &[], None).await?;
    Ok(())
}

/// Cancels the allocation of primary `shard` of `index`: its search contexts are closed,
/// and the cluster recovers it from the data on disk a moment later.
async fn cancel_shard(c: &Cluster, index: &str, shard: u32) -> anyhow::Result<()> {
    let shards: Vec<Value> =
        c.json(Method::Get, &format!("/_cat/shards/{index}"), &[("format", "json"), ("h", "shard,node")], None).await?;
    let node = shards
        .iter()
        .find(|s| s["shard"] == json!(shard.to_string()))
        .and_then(|s| s["node"].as_str())
        .ok_or_else(|| anyhow::anyhow!("shard {shard} of {index} is not allocated: {shards:?}"))?;
    let body =
        json!({ "commands": [{ "cancel": { "index": index, "shard": shard, "node": node, "allow_primary": true } }] });
    c.json::<Value>(Method::Post, "/_cluster/reroute", &[("metric", "none")], Some(&body)).await?;
    Ok(())
}

/// Leaves primary `shard` of `index` unassigned (OpenSearch): while a scroll holds the
/// shard's files, the cancelled shard cannot be opened again; after one failed attempt
/// (`max_retries = 1`) the cluster stops trying.
async fn take_shard_away(c: &Cluster, index: &str, shard: u32) -> anyhow::Result<()> {
    c.put_settings(index, json!({ "index.allocation.max_retries": 1 })).await?;
    let held: Value =
        c.json(Method::Post, &format!("/{index}/_search"), &[("scroll", "5m"), ("size", "1")], None).await?;
    cancel_shard(c, index, shard).await?;
    let explain = json!({ "index": index, "shard": shard, "primary": true });
    poll("the shard to stay unassigned", || async {
        let e: Value = c.json(Method::Get, "/_cluster/allocation/explain", &[], Some(&explain)).await?;
        Ok(e["current_state"] == json!("unassigned") && e["can_allocate"] == json!("no"))
    })
    .await?;
    let clear = json!({ "scroll_id": [held["_scroll_id"]] });
    c.json::<Value>(Method::Delete, "/_search/scroll", &[], Some(&clear)).await?;
    Ok(())
}

/// Lets the cluster allocate the shards of `index` again and waits for them. (Raising the
/// index's own retry limit, not `retry_failed`, which would touch every index.)
async fn bring_shards_back(c: &Cluster, index: &str) -> anyhow::Result<()> {
    c.put_settings(index, json!({ "index.allocation.max_retries": 5 })).await?;
    let health = format!("/_cluster/health/{index}");
    poll("the shard to be back", || async {
        let h: Value = c.json(Method::Get, &health, &[("timeout", "5s")], None).await?;
        Ok(h["status"] == json!("green"))
    })
    .await
}

/// Polls `check` until it holds, for up to two minutes.
async fn poll<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !check().await? {
        anyhow::ensure!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

async fn source_count_in(url: &str, index: &str) -> anyhow::Result<u64> {
    Ok(cluster(url).await?.count(index, true).await?)
}
