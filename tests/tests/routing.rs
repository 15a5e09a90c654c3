//! Custom routing end to end: documents written with a routing — their own, or the one
//! their alias applies — keep their id, `_routing` and `_source` through the migration, and
//! the alias keeps its filter, routing and write flag.

use indexferry_common::es::{Cluster, Method};
use indexferry_producer::Write;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A migration in es8 whose source index has `shards` primaries and its alias defined as
/// `alias_def`, over a topic of 2 partitions, with the test mappings in the recipe too.
fn routed(prefix: &str, shards: u32, alias_def: Value) -> Scenario {
    Scenario::new(prefix)
        .shards(shards)
        .alias(alias_def)
        .partitions(2)
        .recipe(|r| (r.mappings, r.slices, r.batch_size) = (source_mappings(), 2, 500))
}

/// The alias as the cluster describes it (filter, routings, write flag), on its one index.
async fn alias_definition(c: &Cluster, alias: &str) -> anyhow::Result<Value> {
    let all: Value = c.json(Method::Get, &format!("/_alias/{alias}"), &[], None).await?;
    let (_, entry) =
        all.as_object().and_then(|m| m.iter().next()).ok_or_else(|| anyhow::anyhow!("no alias {alias}"))?;
    Ok(entry["aliases"][alias].clone())
}

/// The shard a routing value leads to.
async fn shard_of(c: &Cluster, index: &str, routing: &str) -> anyhow::Result<u64> {
    let r: Value = c.json(Method::Get, &format!("/{index}/_search_shards"), &[("routing", routing)], None).await?;
    r["shards"][0][0]["shard"].as_u64().ok_or_else(|| anyhow::anyhow!("no shard for routing {routing}: {r}"))
}

fn doc(id: &str) -> String {
    json!({ "id": id, "title": "routed", "active": true }).to_string()
}

/// A write through an alias with a routing lands under that routing: its event must say so,
/// or the replay writes the document elsewhere in the target.
#[tokio::test(flavor = "multi_thread")]
async fn events_carry_the_routing_the_alias_applies() -> anyhow::Result<()> {
    let mut m = routed("route-ev", 2, json!({ "routing": "r1", "is_write_index": true })).start().await?;
    let c = cluster(&m.source_url).await?;
    let p = m.producer().await?;
    let indexed = p.index("a", &doc("a"), None).await?;
    let deleted = p.delete("a", None).await?;
    let bulk = p.bulk(&[Write::Index { id: "b".into(), source: doc("b"), routing: None }]).await?;
    let got: Value = c.json(Method::Get, &format!("/{}/_doc/b", m.names.src), &[("routing", "r1")], None).await?;
    assert_eq!(got["_routing"], "r1", "the cluster applied the alias routing: {got}");
    assert_eq!(indexed.routing.as_deref(), Some("r1"), "index event");
    assert_eq!(deleted.routing.as_deref(), Some("r1"), "delete event");
    let bulked = bulk.into_iter().next().expect("one result")?;
    assert_eq!(bulked.routing.as_deref(), Some("r1"), "bulk event");
    let published: Vec<_> = read_topic(&m.names.topic, 3, Duration::from_secs(20))?
        .into_iter()
        .map(|(_, payload)| indexferry_schemas::decode(None, &payload))
        .collect::<Result<_, _>>()?;
    assert_eq!(published.len(), 3);
    assert!(published.iter().all(|e| e.routing.as_deref() == Some("r1")), "{published:?}");
    Ok(())
}

/// The snapshot copies `_routing`; verify sees a target document whose routing differs,
/// even when its `_source` is the same.
#[tokio::test(flavor = "multi_thread")]
async fn verify_compares_routing() -> anyhow::Result<()> {
    let mut m = routed("route-verify", 2, json!({ "is_write_index": true })).start().await?;
    let c = cluster(&m.source_url).await?;
    let p = m.producer().await?;
    p.index("x", &doc("x"), Some("r1")).await?;
    p.index("y", &doc("y"), None).await?;
    let recipe_path = m.recipe_in(m.dir.path())?;
    // One target shard: a lookup with any routing finds the document, whatever its routing.
    let text = std::fs::read_to_string(&recipe_path)?.replace("number_of_shards = 2", "number_of_shards = 1");
    std::fs::write(&recipe_path, text)?;
    run_ok(m.cmd(&["init", recipe_path.to_str().unwrap_or_default()]))?;
    run_ok(m.cmd(&["snapshot", m.name()]))?;
    let n = &m.names;

    let copied: Value = c.json(Method::Get, &format!("/{}/_doc/x", n.dst), &[("routing", "r1")], None).await?;
    assert_eq!(copied["_routing"], "r1", "the snapshot copies _routing: {copied}");
    let (report, _) = m.verify()?;
    assert_eq!(report["identical"], json!(true), "{report}");

    // The same document, same source, but without its routing.
    c.json::<Value>(Method::Delete, &format!("/{}/_doc/x", n.dst), &[("routing", "r1")], None).await?;
    let body = serde_json::from_str::<Value>(&doc("x"))?;
    // Above any version the pipeline writes (term and _seq_no folded into 63 bits).
    let query = [("version", "9000000000000000000"), ("version_type", "external"), ("refresh", "true")];
    c.json::<Value>(Method::Put, &format!("/{}/_doc/x", n.dst), &query, Some(&body)).await?;
    let (report, _) = m.verify()?;
    assert_eq!(report["identical"], json!(false), "a lost routing is a difference: {report}");
    assert_eq!(report["pairs"][0]["different"], json!(1), "{report}");
    assert_eq!(report["pairs"][0]["sample_different"], json!(["x"]), "{report}");
    Ok(())
}

/// One id, two routings, two shards: two documents, two deletes, two recorded tombstones.
#[tokio::test(flavor = "multi_thread")]
async fn deletes_of_one_id_under_two_routings_are_both_reapplied() -> anyhow::Result<()> {
    let mut m = routed("route-tomb", 2, json!({ "is_write_index": true })).start().await?;
    let (url, n) = (m.source_url.clone(), &m.names);
    let c = cluster(&url).await?;
    let first = shard_of(&c, &n.src, "r0").await?;
    let mut other = None;
    for i in 1..50 {
        let r = format!("r{i}");
        if shard_of(&c, &n.src, &r).await? != first {
            other = Some(r);
            break;
        }
    }
    let other = other.expect("a routing on the other shard");
    let (src, dst) = (n.src.clone(), n.dst.clone());
    m.init()?;
    m.run()?;

    let p = m.producer().await?;
    for routing in ["r0", other.as_str()] {
        p.index("dup/1", &doc("dup/1"), Some(routing)).await?;
    }
    assert_eq!(c.count(&src, true).await?, 2, "one id, two documents on two shards");
    for routing in ["r0", other.as_str()] {
        p.delete("dup/1", Some(routing)).await?;
    }
    p.index("kept", &doc("kept"), Some("r0")).await?;
    m.wait_caught_up(Duration::from_secs(60)).await?;
    wait_docs(&url, &dst, 1).await?;

    let out = m.rollover()?;
    eprintln!("{out}");
    let s = m.status()?;
    assert_eq!(s["last_rollover"]["deletes_reapplied"], json!(2), "both deletes recorded: {s}");
    m.wait_run_exit().await?;
    let (report, _) = m.verify()?;
    assert_eq!(report["identical"], json!(true), "{report}");
    Ok(())
}

/// An index whose alias has a filter and a routing, under a load with routed writes,
/// through rollover: the target holds the same documents under the same routings, and the
/// alias arrives with its whole definition.
async fn alias_moves_intact(target_url: &str, load_through_rollover: bool) -> anyhow::Result<()> {
    let def = json!({ "filter": { "term": { "active": true } }, "routing": "r1", "is_write_index": true });
    let mut m =
        routed("route-alias", 3, def).to(target_url).load_with(2000, 100, &["--routed-percent", "30"]).start().await?;
    let before = alias_definition(&cluster(&m.source_url).await?, &m.names.alias).await?;

    m.init()?;
    m.run()?;
    m.wait_caught_up(Duration::from_secs(180)).await?;
    let load = m.load_into_rollover(load_through_rollover)?;
    eprintln!("{}", m.rollover()?);
    if let Some(load) = load {
        let (done, failed) = load.stop()?;
        assert_eq!(failed, 0, "no write may fail across the rollover ({done} done)");
    }
    m.wait_run_exit().await?;

    let (report, _) = m.verify()?;
    assert_eq!(report["identical"], json!(true), "{report}");
    let target = cluster(target_url).await?;
    let after = alias_definition(&target, &m.names.alias).await?;
    assert_eq!(after, before, "the alias keeps its filter, routing and write flag");
    assert_eq!(target.alias_indices(&m.names.alias).await?, vec![m.names.dst.clone()]);
    Ok(())
}

tests_of!(alias_moves_intact {
    alias_with_filter_and_routing_moves_intact_in_cluster: (&es8(), true),
    alias_with_filter_and_routing_moves_intact_to_opensearch: (&opensearch(), false),
});
