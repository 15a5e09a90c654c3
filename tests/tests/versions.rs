//! Migrations between major versions, each under a live write load of creates, updates,
//! deletes and delete-then-recreate: the source index on the older cluster, init, run,
//! caught up, the load stopped, rollover, and `verify` must find the two indices
//! identical. One scenario; the routes are a table below. Elasticsearch 7.17 (9204) and
//! OpenSearch 3 (9205) are started by `dev/stack up es7 opensearch3` (dev/test does).

use indexferry_common::es::Method;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Documents written before the migration starts; the load then goes on at `RATE` writes/s.
const INITIAL: u64 = 2000;
const RATE: u32 = 100;

async fn migrate_under_load(source_url: &str, target_url: &str) -> anyhow::Result<()> {
    let mut m = Scenario::new("versions")
        .from(source_url)
        .to(target_url)
        .load(INITIAL, RATE)
        .recipe(|r| (r.mappings, r.slices, r.batch_size) = (changed_mappings(), 2, 500))
        .init()
        .await?;
    m.run()?;
    m.wait_caught_up(Duration::from_secs(180)).await?;

    let (done, failed) = m.load().stop()?;
    assert_eq!(failed, 0, "no write may fail ({done} done)");
    m.rollover()?;
    assert_eq!(m.status()?["state"], "rolled_over");
    let exit = m.wait_run_exit().await?;
    assert!(exit.success(), "run exits cleanly: {exit}");

    let (report, ok) = m.verify()?;
    assert!(report["pairs"][0]["source_docs"].as_u64().unwrap_or(0) >= INITIAL, "{report}");
    assert_eq!(report["identical"], json!(true), "{report}");
    assert!(ok);
    // The alias now names the target index on the target cluster.
    let (alias, dst) = (&m.names.alias, &m.names.dst);
    let target = cluster(target_url).await?;
    let aliases: Value = target.json(Method::Get, &format!("/_alias/{alias}"), &[], None).await?;
    assert!(aliases.get(dst).is_some(), "{alias} points at {dst} on the target: {aliases}");
    Ok(())
}

/// Elasticsearch 7.17 and OpenSearch 3 have sliced point-in-time reads: a snapshot killed
/// mid-way resumes each slice from its checkpoint instead of starting over on a fresh view.
async fn snapshot_resumes_after_a_kill(source_url: &str, target_url: &str) -> anyhow::Result<()> {
    let m = Scenario::new("versions-kill")
        .from(source_url)
        .to(target_url)
        .partitions(1)
        .recipe(|r| (r.slices, r.batch_size, r.throttle) = (2, 250, 1500))
        .start()
        .await?;
    let (state, name, src, dst) = (&m.state, m.name(), &m.names.src, &m.names.dst);
    let docs = 6000;
    let mut body = String::new();
    for i in 0..docs {
        body.push_str(&format!("{{\"index\":{{\"_id\":\"d{i}\"}}}}\n{{\"id\":\"d{i}\",\"revision\":{i}}}\n"));
    }
    let path = format!("/{src}/_bulk");
    let source = cluster(source_url).await?;
    let answer = source.request(Method::Post, &path, &[("refresh", "true")], Some(body.into())).await?;
    let answer: Value = serde_json::from_slice(&answer)?;
    assert_eq!(answer["errors"], json!(false), "the source documents are written");

    m.init()?;
    let log = m.file("snapshot.log");
    let mut snapshot = spawn(m.cmd(&["snapshot", name]), &log)?;
    wait_for("the snapshot copies 1,500 documents", Duration::from_secs(60), || {
        Ok((status(state, name)?["pairs"][0]["copied"].as_u64().unwrap_or(0) >= 1500).then_some(()))
    })
    .await?;
    kill9(&mut snapshot)?;
    let _snapshot = spawn(m.cmd(&["snapshot", name]), &log)?;
    let s = wait_for("the snapshot to finish", Duration::from_secs(120), || {
        let s = status(state, name)?;
        Ok((s["pairs"][0]["done"] == json!(true)).then_some(s))
    })
    .await
    .inspect_err(|_| eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default()))?;
    let pair = &s["pairs"][0];
    assert_eq!(pair["restarts"], json!(0), "resumed on the same point-in-time, not started over: {pair}");
    assert!(pair["resumes"].as_u64().unwrap_or(0) >= 1, "the kill was followed by a resume: {pair}");
    assert_eq!(cluster(target_url).await?.count(dst, true).await?, docs, "every document copied once");
    Ok(())
}

tests_of!(snapshot_resumes_after_a_kill {
    elasticsearch_7_snapshot_resumes_after_a_kill: (&es7(), &es8()),
    opensearch_3_snapshot_resumes_after_a_kill: (&opensearch3(), &es9()),
});

// The routes: test name, (source cluster, target cluster).
tests_of!(migrate_under_load {
    elasticsearch_7_to_elasticsearch_8: (&es7(), &es8()),
    elasticsearch_7_to_elasticsearch_9: (&es7(), &es9()),
    elasticsearch_8_to_opensearch_3: (&es8(), &opensearch3()),
    opensearch_2_to_opensearch_3: (&opensearch(), &opensearch3()),
    elasticsearch_7_to_opensearch_2: (&es7(), &opensearch()),
    elasticsearch_7_in_cluster: (&es7(), &es7()),
    opensearch_3_to_elasticsearch_8: (&opensearch3(), &es8()),
});
