//! A cross-cluster rollover (Elasticsearch 8 → 9) with the application's writes in flight.
//! The alias moves to the other cluster and the source stays write-blocked, so until the
//! application points at the target cluster its writes cannot land anywhere: they must be
//! retried, then fail with the block as the reason, each one counted — never lost silently.
//! Every write acknowledged before the block is on the target with its version.

use indexferry_common::es::Method;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long the load retries a blocked write before it reports it failed, in seconds.
const RETRY_FOR_S: f64 = 3.0;

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

#[tokio::test(flavor = "multi_thread")]
async fn cross_cluster_rollover_under_load_fails_blocked_writes_loudly_and_loses_none() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let (source_url, target_url) = (es8(), es9());
    let Names { src, dst, alias, topic, name } = Names::new("xroll");
    create_source(&source_url, &src, &alias, &topic, 3, source_mappings()).await?;
    let load = Load::start_with(
        dir.path(),
        &source_url,
        &alias,
        &topic,
        1000,
        100,
        &["--retry-for", &format!("{RETRY_FOR_S}s")],
    )?;
    wait_docs(&source_url, &src, 1000).await?;
    let recipe = RecipeSpec {
        mappings: changed_mappings(),
        slices: 2,
        batch_size: 500,
        ..RecipeSpec::new(&name, &source_url, &target_url, &topic, &src, &dst, &alias)
    }
    .write(dir.path())?;
    run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    let run_log = dir.path().join("run.log");
    let mut run = spawn(indexferry(&state, &["run", &name]), &run_log)?;
    if let Err(e) = wait_caught_up(&state, &name, Duration::from_secs(180)).await {
        eprintln!("{}", std::fs::read_to_string(&run_log).unwrap_or_default());
        return Err(e);
    }

    let out = run_ok(indexferry(&state, &["rollover", &name]))?;
    assert!(out.contains("point the application"), "{out}");
    // The writes in flight and those after the switch meet the block until they give up.
    let load_log = dir.path().join("load.log");
    wait_for("the load to report blocked writes as failed", Duration::from_secs(60), || {
        Ok(std::fs::read_to_string(&load_log)?.contains("load: write failed").then_some(()))
    })
    .await?;
    let report = load.report()?;
    let exit = wait_for("run to exit after rollover", Duration::from_secs(30), || Ok(run.try_wait()?)).await?;
    assert!(exit.success(), "run exits cleanly: {exit}");

    let (done, failed) = (report["done"].as_u64().unwrap_or(0), report["failed"].as_u64().unwrap_or(0));
    assert!(done > 100, "the load ran before the switch: {report}");
    assert!(failed > 0, "writes after the block failed: {report}");
    let errors = report["first_errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len() as u64, failed.min(10), "each failure is reported (the first ten by text): {report}");
    for e in &errors {
        let e = e.as_str().unwrap_or_default();
        let waited: f64 = e
            .strip_prefix("write still blocked after ")
            .and_then(|rest| rest.split_once("s,"))
            .and_then(|(secs, _)| secs.parse().ok())
            .unwrap_or(0.0);
        assert!(waited >= RETRY_FOR_S, "retried for the whole window before it failed: {e}");
        assert!(
            e.contains("cluster_block_exception") && e.contains("point the application at the target cluster"),
            "the failure names the write block and what to do: {e}"
        );
    }

    // Every acknowledged write has its event (the library returns only then): the newest
    // event of each id is what the target holds.
    let mut newest: BTreeMap<String, indexferry_schemas::ChangeEvent> = BTreeMap::new();
    for (_, payload) in read_topic_until_idle(&topic, Duration::from_secs(3))? {
        let e = indexferry_schemas::decode(None, &payload)?;
        assert_eq!(e.index, src, "no write landed anywhere but the source: {e:?}");
        if newest.get(&e.id).is_none_or(|n| n.seq_no < e.seq_no) {
            newest.insert(e.id.clone(), e);
        }
    }
    let target = versions(&target_url, &dst).await?;
    let mut lost = vec![];
    for (id, e) in &newest {
        let want = (e.op == indexferry_schemas::Op::Index).then_some(e.external_version());
        if target.get(id).copied() != want {
            lost.push(format!("{id}: newest event {:?} seq_no {}, target has {:?}", e.op, e.seq_no, target.get(id)));
        }
    }
    assert!(lost.is_empty(), "{} acknowledged writes are not on the target: {lost:#?}", lost.len());
    assert_eq!(target.len(), newest.values().filter(|e| e.op == indexferry_schemas::Op::Index).count());
    let out = output(indexferry(&state, &["verify", &name, "--json"]))?;
    let verify: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(verify["identical"], json!(true), "the blocked source and the target agree: {verify}");
    Ok(())
}
