//! A recipe as a new user writes it first: no `settings`, no mappings. A named pair takes
//! what the recipe leaves out from its source index — replicas, shards, mappings — as a
//! pattern's indices do, so an upgrade to a single-node cluster is not stuck waiting for a
//! replica that cannot be placed.

use indexferry_common::es::Method;
use indexferry_tests::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn a_named_pair_takes_what_the_recipe_leaves_out_from_its_source() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let (source_url, target_url) = (es8(), es9());
    let Names { src, dst, alias, topic, name } = Names::new("minimal");
    // Three shards and no replicas on the source; ES 9 of the stack is one node, where a
    // target created with the default replica would never turn green.
    let source = cluster(&source_url).await?;
    let body = json!({
        "settings": { "index.number_of_shards": 3, "index.number_of_replicas": 0 },
        "mappings": { "properties": { "title": { "type": "keyword" }, "at": { "type": "date" } } },
        "aliases": { alias.as_str(): { "is_write_index": true } },
    });
    source.json::<Value>(Method::Put, &format!("/{src}"), &[], Some(&body)).await?;
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 1).await?;
    let producer = indexferry_producer::Producer::connect(producer_config(&source_url, &topic, &alias)).await?;
    for i in 0..20 {
        producer
            .index(&format!("m{i}"), &json!({ "title": format!("t{i}"), "at": "2026-01-01" }).to_string(), None)
            .await?;
    }
    let recipe = dir.path().join("minimal.toml");
    std::fs::write(
        &recipe,
        format!(
            "name = \"{name}\"\n[source]\nurl = \"{source_url}\"\n[target]\nurl = \"{target_url}\"\n\
             [kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\n[[indices]]\nsource = \"{src}\"\ntarget = \"{dst}\"\nalias = \"{alias}\"\n",
            brokers()
        ),
    )?;
    run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    run_ok(indexferry(&state, &["snapshot", &name]))?;
    run_ok(indexferry(&state, &["consume", &name, "--until-caught-up"]))?;
    let out = run_ok(indexferry(&state, &["rollover", &name]))?;
    assert!(out.contains("write pause:"), "{out}");

    let target = cluster(&target_url).await?;
    let settings: Value =
        target.json(Method::Get, &format!("/{dst}/_settings"), &[("flat_settings", "true")], None).await?;
    let s = &settings[dst.as_str()]["settings"];
    assert_eq!((&s["index.number_of_shards"], &s["index.number_of_replicas"]), (&json!("3"), &json!("0")), "{s}");
    let mapping: Value = target.json(Method::Get, &format!("/{dst}/_mapping"), &[], None).await?;
    let props = &mapping[dst.as_str()]["mappings"]["properties"];
    assert_eq!((&props["title"]["type"], &props["at"]["type"]), (&json!("keyword"), &json!("date")), "{mapping}");
    let out = run_ok(indexferry(&state, &["verify", &name]))?;
    assert!(out.contains("verify: identical"), "{out}");
    target.json::<Value>(Method::Delete, &format!("/{dst}"), &[], None).await?;
    source.json::<Value>(Method::Delete, &format!("/{src}"), &[], None).await?;
    Ok(())
}
