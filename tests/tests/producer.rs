//! The producer library and CLI against real Kafka and real clusters, Elasticsearch 8 and
//! OpenSearch: one scenario, run on each engine.

use indexferry_common::es::Method;
use indexferry_producer::Producer;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::io::Write;
use std::time::{Duration, Instant};

async fn setup(url: &str) -> anyhow::Result<(indexferry_common::es::Cluster, Producer, String, String)> {
    let (index, alias, topic) = (unique("prod-src"), unique("prod-alias"), unique("prod-events"));
    let c = create_source(url, &index, &alias, &topic, 1, json!({ "properties": { "n": { "type": "long" } } })).await?;
    let p = Producer::connect(producer_config(url, &topic, &alias)).await?;
    Ok((c, p, index, topic))
}

async fn one_write_one_event(url: &str) -> anyhow::Result<()> {
    let (c, p, index, topic) = setup(url).await?;
    let event = p.index("doc/1", r#"{"n":7,"title":"hello"}"#, None).await?;
    let deleted = p.delete("doc/1", None).await?;

    let messages = read_topic(&topic, 2, Duration::from_secs(20))?;
    assert_eq!(messages.len(), 2, "exactly one event per write");
    let first = indexferry_schemas::decode(messages[0].0.as_deref().map(str::as_bytes), &messages[0].1)?;
    assert_eq!(first, event);
    assert_eq!(first.index, index, "the concrete index, not the alias");
    assert_eq!(first.source.as_ref().map(|s| s.get()), Some(r#"{"n":7,"title":"hello"}"#));

    // Match the cluster's own record of the write: re-index the same id through the
    // cluster and check the sequence numbers the event carried were the ones in force.
    let get: Value = c.json(Method::Get, &format!("/{index}/_doc/{}", "doc%2F1"), &[], None).await.or_else(|e| {
        if e.status() == Some(404) {
            Ok(json!({"found": false}))
        } else {
            Err(e)
        }
    })?;
    assert_eq!(get["found"], json!(false), "deleted");
    let second = indexferry_schemas::decode(messages[1].0.as_deref().map(str::as_bytes), &messages[1].1)?;
    assert_eq!(second, deleted);
    assert!(second.seq_no > first.seq_no);
    assert_eq!(second.primary_term, first.primary_term);

    // And a live document: the event's seq_no/primary_term are what GET reports.
    let live = p.index("doc-2", r#"{"n":8}"#, Some("r1")).await?;
    let got: Value = c.json(Method::Get, &format!("/{index}/_doc/doc-2"), &[("routing", "r1")], None).await?;
    assert_eq!(got["_seq_no"], json!(live.seq_no));
    assert_eq!(got["_primary_term"], json!(live.primary_term));
    assert_eq!(got["_source"], json!({"n": 8}));
    assert_eq!(live.routing.as_deref(), Some("r1"));
    Ok(())
}

async fn write_block_is_ridden_out(url: &str) -> anyhow::Result<()> {
    let (c, p, index, topic) = setup(url).await?;
    c.put_settings(&index, json!({ "index.blocks.write": true })).await?;
    let started = Instant::now();
    let write = tokio::spawn(async move { p.index("blocked", r#"{"n":1}"#, None).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!write.is_finished(), "the write must wait while the block is on");
    c.put_settings(&index, json!({ "index.blocks.write": null })).await?;
    let event = write.await??;
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(event.id, "blocked");
    let messages = read_topic(&topic, 1, Duration::from_secs(20))?;
    assert_eq!(messages.len(), 1, "one event for the one write that succeeded");
    Ok(())
}

async fn write_block_gives_up_after_bound(url: &str) -> anyhow::Result<()> {
    let (index, alias, topic) = (unique("prod-src"), unique("prod-alias"), unique("prod-events"));
    let c = create_source(url, &index, &alias, &topic, 1, json!({})).await?;
    let mut cfg = producer_config(url, &topic, &alias);
    cfg.retry_for = Duration::from_millis(800);
    let p = Producer::connect(cfg).await?;
    c.put_settings(&index, json!({ "index.blocks.write": true })).await?;
    let err = p.index("x", r#"{"n":1}"#, None).await.expect_err("bounded retry");
    assert!(err.to_string().contains("cluster_block_exception"), "{err}");
    assert!(read_topic(&topic, 1, Duration::from_secs(2))?.is_empty(), "no event for a failed write");
    Ok(())
}

tests_of!(current_thread: one_write_one_event {
    es8_write_produces_exactly_one_matching_event: (&es8()),
    opensearch_write_produces_exactly_one_matching_event: (&opensearch()),
});

tests_of!(current_thread: write_block_is_ridden_out {
    es8_write_block_is_retried_until_lifted: (&es8()),
    opensearch_write_block_is_retried_until_lifted: (&opensearch()),
});

#[tokio::test]
async fn es8_write_block_retry_is_bounded() -> anyhow::Result<()> {
    write_block_gives_up_after_bound(&es8()).await
}

#[tokio::test]
async fn publish_rejects_invalid_events_with_a_clear_message() -> anyhow::Result<()> {
    let topic = unique("publish");
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 1).await?;
    let valid = r#"{"schema":"indexferry.change.v1","op":"delete","index":"i","id":"a","seq_no":3,"primary_term":1,"version":2,"ts":"2026-01-01T00:00:00Z"}"#;
    let invalid = r#"{"schema":"indexferry.change.v1","op":"index","index":"i","id":"b","seq_no":4,"primary_term":1,"version":1,"ts":"2026-01-01T00:00:00Z"}"#;
    let mut child = std::process::Command::new(bin("indexferry-producer"))
        .args(["publish", "--topic", &topic, "--brokers", &brokers()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    writeln!(child.stdin.take().expect("stdin"), "{valid}\nnot json at all\n{invalid}")?;
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 2: invalid event: event is not valid JSON"), "{stderr}");
    assert!(stderr.contains("line 3: invalid event: field `source` is required"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("published=1 invalid=2"));
    let messages = read_topic(&topic, 1, Duration::from_secs(20))?;
    assert_eq!(messages.len(), 1, "only the valid event is published");
    assert_eq!(messages[0].0.as_deref(), Some("a"));
    Ok(())
}
