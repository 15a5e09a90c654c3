//! Events whose `index` is not a source index of the migration, each published for real:
//! one naming the alias (as a producer in another language reports the name it wrote to)
//! is applied to the alias's source pair; one naming another index is ignored but named in
//! `status` and the metrics; one naming the target (written after rollover) is ignored
//! quietly. And bulk items refused because of the target index — closed by an operator —
//! are retried until it opens again, never dead-lettered.

use indexferry_common::es::Method;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A migration of one document, `seed`, on one partition, with its snapshot done.
async fn snapshotted(prefix: &str) -> anyhow::Result<Migration> {
    let mut m = Scenario::new(prefix).partitions(1).mappings(json!({})).start().await?;
    m.producer().await?.index("seed", r#"{"v":"seed"}"#, None).await?;
    m.init()?;
    run_ok(m.cmd(&["snapshot", m.name()]))?;
    Ok(m)
}

/// An index event for `id` naming `index`, with the version the source gave the write.
fn event(index: &str, id: &str, written: &Value, source: &Value) -> Vec<u8> {
    json!({
        "schema": "indexferry.change.v1", "op": "index", "index": index, "id": id,
        "seq_no": written["_seq_no"], "primary_term": written["_primary_term"], "version": written["_version"],
        "source": source, "ts": "2026-01-01T00:00:00Z",
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_naming_the_alias_are_applied_and_unknown_indices_are_reported() -> anyhow::Result<()> {
    let m = snapshotted("unk").await?;
    let (url, n) = (&m.source_url, &m.names);
    let port = 20000 + (rand::random::<u16>() % 20000);
    let mut consume = m.spawn("consume", &["--metrics-addr", &format!(":{port}")])?;

    // A producer of its own writes through the alias and reports the alias as the index.
    let c = cluster(url).await?;
    let doc = json!({ "v": "through the alias" });
    let written: Value = c.json(Method::Put, &format!("/{}/_doc/foreign", n.alias), &[], Some(&doc)).await?;
    assert_eq!(written["_index"], json!(n.src), "the alias leads to the source");
    let elsewhere = unique("elsewhere");
    let after_rollover = event(&n.dst, "after", &written, &doc);
    publish_raw(
        &n.topic,
        &[
            ("foreign", event(&n.alias, "foreign", &written, &doc)),
            ("x", event(&elsewhere, "x", &written, &doc)),
            ("y", event(&elsewhere, "y", &written, &doc)),
            ("after", after_rollover),
        ],
    )
    .await?;
    let s = wait_for("the four events judged", Duration::from_secs(60), || {
        let s = m.status()?;
        let judged = ["applied", "stale", "dead_lettered", "ignored"]
            .iter()
            .map(|k| s["replay"][k].as_u64().unwrap_or(0))
            .sum::<u64>();
        Ok((s["replay"]["lag_messages"] == json!(0) && judged >= 4).then_some(s))
    })
    .await?;
    let got: Value = c.json(Method::Get, &format!("/{}/_doc/foreign", n.dst), &[], None).await.unwrap_or_default();
    assert_eq!(got["_source"], doc, "the event naming the alias reached the target: {s}");
    // The `source` version rule: the target keeps the source's `_version`.
    assert_eq!(got["_version"], written["_version"], "with the source's version: {got}");
    assert_eq!(s["replay"]["applied"], json!(1), "{s}");
    assert_eq!(s["replay"]["ignored"], json!(3), "{s}");
    assert_eq!(
        s["replay"]["ignored_indices"],
        json!({ elsewhere.as_str(): 2 }),
        "the unknown index is named, the target's own event is not: {s}"
    );
    let table = run_ok(m.cmd(&["status", m.name()]))?;
    assert!(table.contains(&format!("ignored events of indices outside the migration: {elsewhere}=2")), "{table}");
    let metrics = scrape(port)?;
    for needle in [
        format!("indexferry_events_by_alias_total{{alias=\"{}\"}} 1", n.alias),
        format!("indexferry_events_unknown_index_total{{index=\"{elsewhere}\"}} 2"),
    ] {
        assert!(metrics.contains(&needle), "{needle} missing from:\n{metrics}");
    }
    assert!(!metrics.contains(&format!("index=\"{}\"", n.dst)), "the target is not unknown:\n{metrics}");
    terminate(&mut consume)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_to_a_closed_target_are_retried_until_it_opens_not_dead_lettered() -> anyhow::Result<()> {
    let mut m = snapshotted("closed").await?;
    let mut consume = m.spawn("consume", &[])?;
    let (url, dst) = (m.source_url.clone(), m.names.dst.clone());
    let c = cluster(&url).await?;
    c.json::<Value>(Method::Post, &format!("/{dst}/_close"), &[], None).await?;

    let p = m.producer().await?;
    p.index("new", r#"{"v":"new"}"#, None).await?;
    p.delete("seed", None).await?;
    // Either the items were judged for good (dead-lettered), or the consumer says it waits.
    let waiting = wait_for("the replay to meet the closed target", Duration::from_secs(60), || {
        let s = m.status()?;
        let waits = s["unreachable"].as_array().is_some_and(|u| {
            u.iter().any(|p| p["what"] == "target writes" && p["error"].as_str().unwrap_or("").contains("index_closed"))
        });
        Ok((waits || s["replay"]["dead_lettered"].as_u64().unwrap_or(0) > 0).then_some(s))
    })
    .await;
    c.json::<Value>(Method::Post, &format!("/{dst}/_open"), &[], None).await?;
    let s = waiting?;
    assert_eq!(s["replay"]["dead_lettered"], json!(0), "nothing dead-lettered while the target was closed: {s}");
    assert_eq!(s["replay"]["lag_messages"], json!(2), "both events held, not checkpointed: {s}");

    let s = wait_for("the held events applied once the target opened", Duration::from_secs(60), || {
        let s = m.status()?;
        Ok((s["replay"]["lag_messages"] == json!(0)).then_some(s))
    })
    .await?;
    assert_eq!((s["replay"]["applied"].clone(), s["replay"]["dead_lettered"].clone()), (json!(2), json!(0)), "{s}");
    assert!(s["unreachable"].as_array().is_none_or(|u| u.is_empty()), "the wait is over: {s}");
    let docs = all_docs(&url, &dst).await?;
    assert_eq!(docs.into_iter().collect::<Vec<_>>(), vec![("new".to_owned(), json!({"v":"new"}))]);
    terminate(&mut consume)?;
    Ok(())
}
