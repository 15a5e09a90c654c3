//! A cross-cluster rollover (Elasticsearch 8 → 9) with the application's writes in flight.
//! The alias moves to the other cluster and the source stays write-blocked; the rollover
//! then names the target cluster in the source's mapping `_meta`, and a producer configured
//! for that cluster follows it there by itself: no write fails, the writes after the switch
//! land in the target, and `verify` still finds both sides identical. A producer with no
//! configuration for that cluster fails its writes at once, naming the cluster. A rollover
//! interrupted after its swap, or after its record, writes the marker when run again.

use indexferry_common::es::Method;
use indexferry_consumer::state::{State, StateDir};
use indexferry_schemas::switch::KEY;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// id → `_version` of every document of a small index.
async fn versions(url: &str, index: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let c = cluster(url).await?;
    c.json::<Value>(Method::Post, &format!("/{index}/_refresh"), &[], None).await?;
    let body = json!({ "size": 10000, "version": true, "_source": false, "query": { "match_all": {} } });
    let r: Value = c.json(Method::Post, &format!("/{index}/_search"), &[], Some(&body)).await?;
    let hits = r["hits"]["hits"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(hits.len() < 10000, "{index} has too many documents for this check");
    Ok(hits
        .iter()
        .map(|h| (h["_id"].as_str().unwrap_or_default().to_owned(), h["_version"].as_u64().unwrap_or(0)))
        .collect())
}

/// The switch marker in the source index's mapping `_meta`, if any.
async fn marker(url: &str, index: &str) -> anyhow::Result<Value> {
    let m: Value = cluster(url).await?.json(Method::Get, &format!("/{index}/_mapping"), &[], None).await?;
    Ok(m[index]["mappings"]["_meta"][KEY].clone())
}

/// Replaces the source's `_meta` by one without the marker.
async fn drop_marker(url: &str, index: &str) -> anyhow::Result<()> {
    let body = json!({ "_meta": { "owner": "tests" } });
    cluster(url).await?.json::<Value>(Method::Put, &format!("/{index}/_mapping"), &[], Some(&body)).await?;
    Ok(())
}

/// The last `writes_after_switch=` the load logged.
fn logged_after_switch(log: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(log)?;
    Ok(text
        .lines()
        .rev()
        .filter_map(|l| l.split("writes_after_switch=").nth(1))
        .find_map(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_cluster_rollover_under_load_is_followed_by_the_producer() -> anyhow::Result<()> {
    let (source_url, target_url) = (es8(), es9());
    let mut m = Scenario::new("xroll")
        .to(&target_url)
        .load_with(1000, 100, &["--follow-url", &target_url])
        .recipe(|r| (r.mappings, r.slices, r.batch_size) = (changed_mappings(), 2, 500))
        .start()
        .await?;
    let Names { src, dst, alias, topic, name } = &m.names;
    let (src, dst, alias, topic, name) = (src.clone(), dst.clone(), alias.clone(), topic.clone(), name.clone());
    let (follows, stays) = (m.dir.path().to_path_buf(), m.file("stays"));
    std::fs::create_dir_all(&stays)?;
    // An application that knows only the source cluster.
    let unconfigured =
        Load::start_with(&stays, &source_url, &alias, &topic, 0, 10, &["--id-prefix", "other-", "--retry-for", "60s"])?;
    m.init()?;
    m.run()?;
    m.wait_caught_up(Duration::from_secs(180)).await?;

    let out = m.rollover()?;
    assert!(out.contains("follow by themselves"), "{out}");
    let exit = m.wait_run_exit().await?;
    assert!(exit.success(), "run exits cleanly: {exit}");
    let mark = marker(&source_url, &src).await?;
    assert_eq!(mark["index"], json!(dst), "the marker names the target index: {mark}");
    assert_eq!(mark["alias"], json!(alias), "{mark}");
    assert_eq!(mark["cluster"], json!([target_url]), "the marker names the target cluster: {mark}");

    // The following load writes into the target; the other one fails, naming the cluster.
    wait_for("writes acknowledged by the target after the switch", Duration::from_secs(60), || {
        Ok((logged_after_switch(&follows.join("load.log"))? >= 50).then_some(()))
    })
    .await?;
    wait_for("the unconfigured load to fail its writes", Duration::from_secs(30), || {
        Ok(std::fs::read_to_string(stays.join("load.log"))?.contains("load: write failed").then_some(()))
    })
    .await?;
    let report = m.load().report()?;
    let other = unconfigured.report()?;
    let (done, failed) = (report["done"].as_u64().unwrap_or(0), report["failed"].as_u64().unwrap_or(u64::MAX));
    let after = report["writes_after_switch"].as_u64().unwrap_or(0);
    assert!(done > 100, "the load ran: {report}");
    assert_eq!(failed, 0, "no write of the following application failed: {report}");
    assert!(after >= 50, "writes went on on the target after the switch: {report}");
    assert_eq!(report["switched_to"], json!(target_url), "{report}");
    let errors = other["first_errors"].as_array().cloned().unwrap_or_default();
    assert!(!errors.is_empty() && other["writes_after_switch"] == json!(0), "{other}");
    for e in &errors {
        let e = e.as_str().unwrap_or_default();
        assert!(e.contains(&target_url) && e.contains("no connection configured"), "names the cluster: {e}");
    }

    // Every acknowledged write has its event; per id, the newest (topic order) says where
    // the document is now: written after the switch into the target with the target's own
    // version, or replayed there with the source's version.
    let mut newest: BTreeMap<String, indexferry_schemas::ChangeEvent> = BTreeMap::new();
    for (_, payload) in read_topic_until_idle(&topic, Duration::from_secs(3))? {
        let e = indexferry_schemas::decode(None, &payload)?;
        assert!(e.index == src || e.index == dst, "a write landed elsewhere: {e:?}");
        newest.insert(e.id.clone(), e);
    }
    let on_target = newest.values().filter(|e| e.index == dst).count() as u64;
    assert!(on_target > 0 && on_target <= after, "{on_target} ids were last written on the target ({after} writes)");
    let target = versions(&target_url, &dst).await?;
    let mut lost = vec![];
    for (id, e) in &newest {
        // Under the `source` version rule the target keeps the source's `_version` too.
        let version = e.version;
        let want = (e.op == indexferry_schemas::Op::Index).then_some(version);
        if target.get(id).copied() != want {
            lost.push(format!("{id}: newest event {:?} on {} {e:?}, target has {:?}", e.op, e.index, target.get(id)));
        }
    }
    assert!(lost.is_empty(), "{} acknowledged writes are not on the target: {lost:#?}", lost.len());
    let (verify, _) = m.verify()?;
    assert_eq!(verify["identical"], json!(true), "the blocked source and the target agree: {verify}");
    assert!(verify["pairs"][0]["written_after_switch"].as_u64().unwrap_or(0) > 0, "{verify}");

    // A rollover killed after its swap: the record says rolling_over, the marker is missing.
    drop_marker(&source_url, &src).await?;
    let state = &m.state;
    StateDir::new(state, &name).update_migration(|m| m.state = State::RollingOver)?;
    let out = run_ok(indexferry(state, &["rollover", &name]))?;
    assert!(out.contains("already switched"), "{out}");
    assert_eq!(marker(&source_url, &src).await?["index"], json!(dst), "recovery writes the marker");
    // Killed after its record: `rollover` writes what is missing.
    drop_marker(&source_url, &src).await?;
    let out = run_ok(indexferry(state, &["rollover", &name]))?;
    assert!(out.contains("marker was missing"), "{out}");
    assert_eq!(marker(&source_url, &src).await?["index"], json!(dst), "a rerun writes the marker");
    let again = output(indexferry(state, &["rollover", &name]))?;
    assert!(!again.status.success(), "with the marker in place, a rolled over migration is refused as before");
    Ok(())
}
