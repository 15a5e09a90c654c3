//! An index with several aliases, as applications have them: the write alias the recipe
//! names, a read alias shared with another index, and a filtered alias with a routing.
//! Every alias of the migrated index moves at rollover with its filter, routing and write
//! flag; the shared alias keeps its other index. In-cluster and cross-cluster.

use indexferry_common::es::{Cluster, Method};
use indexferry_tests::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Alias → its definition on each index it leads to.
async fn alias_map(c: &Cluster, alias: &str) -> anyhow::Result<BTreeMap<String, Value>> {
    match c.json::<BTreeMap<String, Value>>(Method::Get, &format!("/_alias/{alias}"), &[], None).await {
        Ok(v) => Ok(v.into_iter().map(|(i, d)| (i, d["aliases"][alias].clone())).collect()),
        Err(e) if e.status() == Some(404) => Ok(BTreeMap::new()),
        Err(e) => Err(e.into()),
    }
}

async fn several_aliases(target_url: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let source_url = es8();
    let Names { src, dst, alias, topic, name } = Names::new("aliases");
    let (shared, recent, other) = (format!("{alias}-all"), format!("{alias}-recent"), format!("{src}-other"));
    let source = create_source(&source_url, &src, &alias, &topic, 1, source_mappings()).await?;
    source
        .json::<Value>(Method::Put, &format!("/{other}"), &[], Some(&json!({ "aliases": { shared.as_str(): {} } })))
        .await?;
    let filter = json!({ "term": { "active": true } });
    let actions = json!({ "actions": [
        { "add": { "index": src, "alias": shared } },
        { "add": { "index": src, "alias": recent, "filter": filter, "routing": "r1" } },
    ]});
    source.json::<Value>(Method::Post, "/_aliases", &[], Some(&actions)).await?;
    let producer = indexferry_producer::Producer::connect(producer_config(&source_url, &topic, &alias)).await?;
    for i in 0..30 {
        producer.index(&format!("a{i}"), &json!({ "active": i % 2 == 0, "revision": i }).to_string(), None).await?;
    }

    let recipe = RecipeSpec::new(&name, &source_url, target_url, &topic, &src, &dst, &alias).write(dir.path())?;
    let out = run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    assert!(out.contains(&format!("aliases {alias} {shared} {recent}")), "init names every alias that moves: {out}");
    run_ok(indexferry(&state, &["snapshot", &name]))?;
    run_ok(indexferry(&state, &["consume", &name, "--until-caught-up"]))?;
    let out = run_ok(indexferry(&state, &["rollover", &name]))?;
    assert!(out.contains(&format!("rolled over: alias {alias} {shared} {recent} -> {dst}")), "{out}");

    let target = cluster(target_url).await?;
    let write = alias_map(&target, &alias).await?;
    assert_eq!(write.keys().collect::<Vec<_>>(), [&dst], "{write:?}");
    assert_eq!(write[&dst]["is_write_index"], json!(true), "the write flag moved: {write:?}");
    let filtered = alias_map(&target, &recent).await?;
    assert_eq!(filtered[&dst]["filter"], filter, "the filter moved: {filtered:?}");
    assert_eq!(filtered[&dst]["index_routing"], json!("r1"), "the routing moved: {filtered:?}");
    let read = alias_map(&target, &shared).await?;
    assert!(read.contains_key(&dst), "the shared alias leads to the target: {read:?}");
    let on_source = alias_map(&source, &shared).await?;
    assert!(on_source.contains_key(&other), "the shared alias keeps its other index: {on_source:?}");
    if target_url == source_url {
        assert!(!on_source.contains_key(&src), "and no longer leads to the frozen source: {on_source:?}");
    }
    let out = run_ok(indexferry(&state, &["verify", &name]))?;
    assert!(out.contains("verify: identical"), "{out}");
    let _ = source.json::<Value>(Method::Delete, &format!("/{src},{other}"), &[], None).await;
    let _ = target.json::<Value>(Method::Delete, &format!("/{dst}"), &[], None).await;
    Ok(())
}

tests_of!(several_aliases {
    every_alias_of_the_index_moves_in_cluster: (&es8()),
    every_alias_of_the_index_moves_cross_cluster: (&es9()),
});
