//! The capture proxy (`indexferry-proxy`) against the real stack: every kind of write it
//! captures publishes exactly the events of what the cluster stored; what it cannot capture
//! is refused; reads pass through; with Kafka unreachable, writes are refused before they
//! reach the cluster; and a migration captured only by the proxy ends identical.

use anyhow::Context as _;
use indexferry_common::es::Method;
use indexferry_schemas::{ChangeEvent, Op};
use indexferry_tests::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

/// One request through the proxy: status and JSON answer.
async fn call(method: reqwest::Method, url: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

async fn bulk(url: &str, lines: &[Value], gzip: bool) -> anyhow::Result<(u16, Value)> {
    let mut body = String::new();
    for l in lines {
        body.push_str(&l.to_string());
        body.push('\n');
    }
    let mut req = reqwest::Client::new().post(url).header("content-type", "application/x-ndjson");
    req = match gzip {
        true => {
            let mut enc = flate2::write::GzEncoder::new(vec![], flate2::Compression::default());
            enc.write_all(body.as_bytes())?;
            req.header("content-encoding", "gzip").body(enc.finish()?)
        }
        false => req.body(body),
    };
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await?))
}

fn events(topic: &str) -> anyhow::Result<Vec<ChangeEvent>> {
    read_topic_until_idle(topic, Duration::from_secs(2))?
        .into_iter()
        .map(|(_, payload)| indexferry_schemas::decode(None, &payload).map_err(|e| anyhow::anyhow!("{e}")))
        .collect()
}

/// Every kind of single-document and bulk write through the proxy, then: the events are
/// exactly the expected ones, in order, and the last event of each id is the document as
/// the cluster stores it (`_source`, `_version`, routing), or its delete.
async fn every_kind_of_write(cluster_url: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let index = unique("proxy-writes");
    let alias = unique("proxy-routed");
    let topic = unique("proxy-events");
    let c = cluster(cluster_url).await?;
    c.json::<Value>(
        Method::Put,
        &format!("/{index}"),
        &[],
        Some(&json!({
            "settings": { "number_of_shards": 2, "number_of_replicas": 0 },
            "aliases": { alias.clone(): { "index_routing": "ar", "is_write_index": true } }
        })),
    )
    .await?;
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 1).await?;
    let proxy = start_proxy(cluster_url, &brokers(), &topic, &dir.path().join("proxy.log"), &[]).await?;
    let doc = |path: &str| format!("{}/{index}/{path}", proxy.url);
    use reqwest::Method as M;

    let mut expected: Vec<(String, Op)> = vec![];
    let (s, _) = call(M::PUT, &doc("_doc/1"), Some(json!({ "n": 1, "t": "a" }))).await?;
    assert_eq!(s, 201);
    expected.push(("1".into(), Op::Index));
    let (s, r) = call(M::POST, &doc("_doc"), Some(json!({ "n": 2 }))).await?;
    assert_eq!(s, 201, "{r}");
    let auto = r["_id"].as_str().context("an auto id")?.to_owned();
    expected.push((auto.clone(), Op::Index));
    let (s, _) = call(M::PUT, &doc("_create/3"), Some(json!({ "n": 3 }))).await?;
    assert_eq!(s, 201);
    expected.push(("3".into(), Op::Index));
    let (s, r) = call(M::PUT, &doc("_create/3"), Some(json!({ "n": 33 }))).await?;
    assert_eq!(s, 409, "a create of an existing id is refused, and publishes nothing: {r}");
    let (s, _) = call(M::POST, &doc("_update/1"), Some(json!({ "doc": { "t": "b" } }))).await?;
    assert_eq!(s, 200);
    expected.push(("1".into(), Op::Index));
    let (s, _) = call(M::POST, &doc("_update/4"), Some(json!({ "doc": { "n": 4 }, "doc_as_upsert": true }))).await?;
    assert_eq!(s, 201);
    expected.push(("4".into(), Op::Index));
    let (s, _) = call(M::POST, &doc("_update/5"), Some(json!({ "doc": { "n": 0 }, "upsert": { "n": 5 } }))).await?;
    assert_eq!(s, 201);
    expected.push(("5".into(), Op::Index));
    let (s, r) = call(M::POST, &doc("_update/1"), Some(json!({ "doc": { "t": "b" } }))).await?;
    assert_eq!((s, r["result"].as_str()), (200, Some("noop")), "an update that changes nothing publishes nothing");
    let (s, _) = call(M::DELETE, &doc("_doc/3"), None).await?;
    assert_eq!(s, 200);
    expected.push(("3".into(), Op::Delete));
    let (s, _) = call(M::PUT, &doc("_doc/6?routing=r6"), Some(json!({ "n": 6 }))).await?;
    assert_eq!(s, 201);
    expected.push(("6".into(), Op::Index));
    let (s, r) = bulk(
        &format!("{}/_bulk", proxy.url),
        &[
            json!({ "index": { "_index": index, "_id": "7" } }),
            json!({ "n": 7 }),
            json!({ "create": { "_index": index, "_id": "8" } }),
            json!({ "n": 8 }),
            json!({ "update": { "_index": index, "_id": "6", "routing": "r6" } }),
            json!({ "doc": { "n": 66 } }),
            json!({ "delete": { "_index": index, "_id": auto } }),
            json!({ "create": { "_index": index, "_id": "1" } }),
            json!({ "n": 11 }),
        ],
        false,
    )
    .await?;
    assert_eq!(s, 200);
    assert_eq!(r["errors"], json!(true), "the create of an existing id fails: {r}");
    assert_eq!(r["items"][4]["create"]["status"], json!(409), "{r}");
    expected.extend([
        ("7".into(), Op::Index),
        ("8".into(), Op::Index),
        ("6".into(), Op::Index),
        (auto.clone(), Op::Delete),
    ]);
    let (s, r) =
        bulk(&format!("{}/{index}/_bulk", proxy.url), &[json!({ "index": { "_id": "9" } }), json!({ "n": 9 })], true)
            .await?;
    assert_eq!((s, &r["errors"]), (200, &json!(false)), "a gzip bulk with the index in the path: {r}");
    expected.push(("9".into(), Op::Index));
    let (s, r) = call(M::PUT, &doc("_doc/10?filter_path=_id,result"), Some(json!({ "n": 10 }))).await?;
    assert_eq!((s, r), (201, json!({ "_id": "10", "result": "created" })), "the client's filter_path is kept");
    expected.push(("10".into(), Op::Index));
    let (s, r) = call(M::PUT, &doc("_doc/11?version=1000&version_type=external_gte"), Some(json!({ "n": 11 }))).await?;
    assert_eq!((s, &r["_version"]), (201, &json!(1000)), "{r}");
    expected.push(("11".into(), Op::Index));
    let (s, r) = call(M::PUT, &doc("_doc/11?version=999&version_type=external_gte"), Some(json!({ "n": 0 }))).await?;
    assert_eq!(s, 409, "a version below the document's is refused as the cluster refuses it: {r}");
    let (s, _) = call(M::PUT, &format!("{}/{alias}/_doc/12", proxy.url), Some(json!({ "n": 12 }))).await?;
    assert_eq!(s, 201);
    expected.push(("12".into(), Op::Index));

    // Refused, never passed through unpublished.
    let (s, r) = call(M::POST, &format!("{}/_reindex", proxy.url), Some(json!({}))).await?;
    assert_eq!(s, 501, "{r}");
    assert_eq!(r["error"]["type"], json!("indexferry_proxy_exception"));
    // Reads pass through.
    let (s, r) = call(M::GET, &doc("_doc/1"), None).await?;
    assert_eq!((s, &r["_source"]), (200, &json!({ "n": 1, "t": "b" })));
    call(M::POST, &doc("_refresh"), None).await?;
    let (s, r) = call(M::POST, &doc("_search?size=0"), Some(json!({ "query": { "match_all": {} } }))).await?;
    assert_eq!(s, 200);
    let stored = all_stored(cluster_url, &index).await?;
    assert_eq!(r["hits"]["total"]["value"].as_u64(), Some(stored.len() as u64), "{r}");

    let events = events(&topic)?;
    let metrics = reqwest::get(format!("{}/_indexferry/metrics", proxy.url)).await?.text().await?;
    assert!(metrics.contains(&format!("indexferry_proxy_events_published_total {}", events.len())), "{metrics}");
    let (s, _) = call(M::GET, &format!("{}/_indexferry/health/ready", proxy.url), None).await?;
    assert_eq!(s, 200);
    let seen: Vec<(String, Op)> = events.iter().map(|e| (e.id.clone(), e.op)).collect();
    assert_eq!(seen, expected, "exactly one event per acknowledged change, in order");
    let mut last: BTreeMap<&str, &ChangeEvent> = BTreeMap::new();
    for e in &events {
        assert_eq!(e.index, index, "events name the concrete index");
        last.insert(&e.id, e);
    }
    for (id, e) in &last {
        match (e.op, stored.get(*id)) {
            (Op::Delete, None) => {}
            (Op::Index, Some(s)) => {
                let source: Value = serde_json::from_str(e.source.as_deref().map(|r| r.get()).unwrap_or("null"))?;
                assert_eq!(source, s.source, "{id}: the event carries the stored _source");
                assert_eq!(e.version, s.version, "{id}: and its _version");
                assert_eq!(e.routing, s.routing, "{id}: and its routing");
            }
            (op, s) => anyhow::bail!("{id}: last event {op:?} but stored {s:?}"),
        }
    }
    assert_eq!(last["12"].routing.as_deref(), Some("ar"), "a write through an alias with index_routing");
    assert_eq!(last.len(), stored.len() + 2, "every stored document has its events, and the two deletes");
    c.json::<Value>(Method::Delete, &format!("/{index}"), &[], None).await?;
    Ok(())
}

tests_of!(every_kind_of_write {
    elasticsearch_7_every_kind_of_write_publishes_what_was_stored: (&es7()),
    elasticsearch_8_every_kind_of_write_publishes_what_was_stored: (&es8()),
    elasticsearch_9_every_kind_of_write_publishes_what_was_stored: (&es9()),
    opensearch_2_every_kind_of_write_publishes_what_was_stored: (&opensearch()),
    opensearch_3_every_kind_of_write_publishes_what_was_stored: (&opensearch3()),
});

/// With Kafka unreachable, a write is refused with 503 and Retry-After and never reaches
/// the cluster; reads still pass.
#[tokio::test(flavor = "multi_thread")]
async fn with_kafka_unreachable_writes_are_refused_before_the_cluster() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let index = unique("proxy-nokafka");
    let c = cluster(&es8()).await?;
    c.json::<Value>(Method::Put, &format!("/{index}"), &[], None).await?;
    let dead = format!("127.0.0.1:{}", free_port()?);
    let proxy = start_proxy(&es8(), &dead, "nowhere", &dir.path().join("proxy.log"), &[]).await?;
    let resp = reqwest::Client::new()
        .put(format!("{}/{index}/_doc/1", proxy.url))
        .header("content-type", "application/json")
        .body(r#"{"n":1}"#)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let body: Value = resp.json().await?;
    assert_eq!(body["error"]["type"], json!("indexferry_kafka_unavailable_exception"), "{body}");
    let (s, r) =
        bulk(&format!("{}/{index}/_bulk", proxy.url), &[json!({ "index": { "_id": "2" } }), json!({})], false).await?;
    assert_eq!(s, 503, "{r}");
    let (s, r) = call(reqwest::Method::GET, &format!("{}/{index}/_search", proxy.url), None).await?;
    assert_eq!(s, 200, "reads pass while Kafka is away: {r}");
    assert!(all_docs(&es8(), &index).await?.is_empty(), "nothing reached the cluster");
    let (_, stats) = call(reqwest::Method::GET, &format!("{}/_indexferry/stats", proxy.url), None).await?;
    assert_eq!(stats["refused_kafka_down"], json!(2), "{stats}");
    let (s, _) = call(reqwest::Method::GET, &format!("{}/_indexferry/health/ready", proxy.url), None).await?;
    assert_eq!(s, 503, "not ready while writes are refused");
    let (s, _) = call(reqwest::Method::GET, &format!("{}/_indexferry/health/live", proxy.url), None).await?;
    assert_eq!(s, 200, "but live");
    let metrics = reqwest::get(format!("{}/_indexferry/metrics", proxy.url)).await?.text().await?;
    assert!(metrics.contains("indexferry_proxy_kafka_up 0"), "{metrics}");
    assert!(metrics.contains("indexferry_proxy_refused_writes_total 2"), "{metrics}");
    c.json::<Value>(Method::Delete, &format!("/{index}"), &[], None).await?;
    Ok(())
}

/// A body above the limit is refused with 413 and named.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_above_the_limit_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let topic = unique("proxy-limit");
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 1).await?;
    let proxy = start_proxy(&es8(), &brokers(), &topic, &dir.path().join("proxy.log"), &["--max-body", "1000"]).await?;
    let big = json!({ "text": "x".repeat(2000) });
    let (s, r) =
        call(reqwest::Method::PUT, &format!("{}/{}/_doc/1", proxy.url, unique("proxy-big")), Some(big)).await?;
    assert_eq!(s, 413, "{r}");
    assert!(r["error"]["reason"].as_str().unwrap_or_default().contains("--max-body"), "{r}");
    Ok(())
}

/// Ingest pipelines (`default_pipeline`, `?pipeline=`) and painless scripts (`script`,
/// `scripted_upsert`, a bulk update with a script): the events carry the `_source` the
/// cluster stored, not the request's body. OpenSearch only: the stack's Elasticsearch zips
/// lack `ingest-common` and `lang-painless`.
async fn pipelines_and_scripts(url: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (piped, plain) = (unique("proxy-piped"), unique("proxy-plain"));
    let (pipeline, topic) = (unique("proxy-stamp"), unique("proxy-events"));
    let c = cluster(url).await?;
    let stamp = json!({ "processors": [ { "set": { "field": "stamped", "value": "yes" } } ] });
    c.json::<Value>(Method::Put, &format!("/_ingest/pipeline/{pipeline}"), &[], Some(&stamp)).await?;
    let settings = json!({ "settings": { "index.default_pipeline": pipeline, "number_of_replicas": 0 } });
    c.json::<Value>(Method::Put, &format!("/{piped}"), &[], Some(&settings)).await?;
    c.json::<Value>(Method::Put, &format!("/{plain}"), &[], Some(&json!({ "settings": { "number_of_replicas": 0 } })))
        .await?;
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 1).await?;
    let proxy = start_proxy(url, &brokers(), &topic, &dir.path().join("proxy.log"), &[]).await?;
    use reqwest::Method as M;
    let at = |index: &str, path: &str| format!("{}/{index}/{path}", proxy.url);

    let (s, r) = call(M::PUT, &at(&piped, "_doc/1"), Some(json!({ "n": 1 }))).await?;
    assert_eq!(s, 201, "{r}");
    let script = json!({ "script": { "source": "ctx._source.n += 10", "lang": "painless" } });
    let (s, r) = call(M::POST, &at(&piped, "_update/1"), Some(script.clone())).await?;
    assert_eq!(s, 200, "{r}");
    let upsert = json!({ "scripted_upsert": true, "script": { "source": "ctx._source.n = 5" }, "upsert": {} });
    let (s, r) = call(M::POST, &at(&piped, "_update/2"), Some(upsert)).await?;
    assert_eq!(s, 201, "{r}");
    let (s, r) = call(M::PUT, &at(&plain, &format!("_doc/1?pipeline={pipeline}")), Some(json!({ "n": 1 }))).await?;
    assert_eq!(s, 201, "{r}");
    let (s, r) = bulk(
        &format!("{}/{plain}/_bulk?pipeline={pipeline}", proxy.url),
        &[
            json!({ "index": { "_id": "2" } }),
            json!({ "n": 2 }),
            json!({ "update": { "_id": "1" } }),
            json!({ "script": { "source": "ctx._source.n *= 7" } }),
        ],
        false,
    )
    .await?;
    assert_eq!((s, &r["errors"]), (200, &json!(false)), "{r}");

    let events = events(&topic)?;
    assert_eq!(events.len(), 6, "one event per write: {events:?}");
    for index in [&piped, &plain] {
        let stored = all_stored(url, index).await?;
        let mut last: BTreeMap<&str, &ChangeEvent> = BTreeMap::new();
        for e in events.iter().filter(|e| &e.index == index) {
            last.insert(&e.id, e);
        }
        assert_eq!(last.len(), stored.len(), "{index}: {events:?}");
        for (id, s) in &stored {
            let e = last.get(id.as_str()).with_context(|| format!("{index}/{id} has no event"))?;
            let source: Value = serde_json::from_str(e.source.as_deref().map(|r| r.get()).unwrap_or("null"))?;
            assert_eq!(source, s.source, "{index}/{id}: the event carries what the cluster stored");
            assert_eq!(e.version, s.version, "{index}/{id}");
        }
        assert_eq!(stored["1"].source["stamped"], json!("yes"), "{index}: the pipeline ran");
    }
    let piped_docs = all_stored(url, &piped).await?;
    assert_eq!(piped_docs["1"].source["n"], json!(11), "the script ran");
    assert_eq!(all_stored(url, &plain).await?["1"].source["n"], json!(7), "the bulk script ran");
    c.json::<Value>(Method::Delete, &format!("/{piped},{plain}"), &[], None).await?;
    c.json::<Value>(Method::Delete, &format!("/_ingest/pipeline/{pipeline}"), &[], None).await?;
    Ok(())
}

tests_of!(pipelines_and_scripts {
    opensearch_2_pipelines_and_scripts_publish_what_was_stored: (&opensearch()),
    opensearch_3_pipelines_and_scripts_publish_what_was_stored: (&opensearch3()),
});

/// `_delete_by_query` and `_update_by_query`, which the proxy runs itself (a scroll, then
/// conditional bulks): the counts the application expects, one event per changed document,
/// and the last event of each id is what the cluster stores. The clusters need no reindex
/// module for it; a script needs `lang-painless` (OpenSearch here).
async fn by_query(url: &str, scripts: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (index, topic) = (unique("proxy-byquery"), unique("proxy-events"));
    let c = cluster(url).await?;
    let settings = json!({
        "settings": { "number_of_shards": 2, "number_of_replicas": 0 },
        "mappings": { "properties": { "n": { "type": "long" }, "odd": { "type": "boolean" } } }
    });
    c.json::<Value>(Method::Put, &format!("/{index}"), &[], Some(&settings)).await?;
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 1).await?;
    let proxy = start_proxy(url, &brokers(), &topic, &dir.path().join("proxy.log"), &[]).await?;
    let mut lines = vec![];
    for n in 0..20 {
        lines.push(json!({ "index": { "_id": format!("d{n}") } }));
        lines.push(json!({ "n": n, "odd": n % 2 == 1 }));
    }
    let (s, r) = bulk(&format!("{}/{index}/_bulk?refresh=true", proxy.url), &lines, false).await?;
    assert_eq!((s, &r["errors"]), (200, &json!(false)), "{r}");
    use reqwest::Method as M;
    let at = |path: &str| format!("{}/{index}/{path}", proxy.url);

    let (s, r) =
        call(M::POST, &at("_delete_by_query?refresh=true"), Some(json!({ "query": { "term": { "odd": true } } })))
            .await?;
    assert_eq!(s, 200, "{r}");
    assert_eq!((&r["total"], &r["deleted"], &r["version_conflicts"]), (&json!(10), &json!(10), &json!(0)), "{r}");
    assert_eq!(r["failures"], json!([]), "{r}");
    let (s, r) = call(
        M::POST,
        &at("_update_by_query?refresh=true&scroll_size=3&conflicts=proceed"),
        Some(json!({ "query": { "range": { "n": { "gte": 10 } } } })),
    )
    .await?;
    assert_eq!(s, 200, "{r}");
    assert_eq!((&r["total"], &r["updated"], &r["batches"]), (&json!(5), &json!(5), &json!(2)), "{r}");
    let (s, r) = call(M::POST, &at("_delete_by_query?wait_for_completion=false"), Some(json!({}))).await?;
    assert_eq!(s, 400, "a task to poll is refused: {r}");
    let mut changed = 20 + 10 + 5;
    if scripts {
        let script = json!({ "script": { "source": "ctx._source.n += 100" }, "query": { "term": { "n": 0 } } });
        let (s, r) = call(M::POST, &at("_update_by_query?refresh=true"), Some(script)).await?;
        assert_eq!((s, &r["updated"]), (200, &json!(1)), "{r}");
        changed += 1;
    }

    let events = events(&topic)?;
    assert_eq!(events.len(), changed, "one event per changed document");
    assert_eq!(events.iter().filter(|e| e.op == Op::Delete).count(), 10);
    let stored = all_stored(url, &index).await?;
    assert_eq!(stored.len(), 10);
    let mut last: BTreeMap<&str, &ChangeEvent> = BTreeMap::new();
    for e in &events {
        last.insert(&e.id, e);
    }
    for (id, e) in &last {
        match (e.op, stored.get(*id)) {
            (Op::Delete, None) => {}
            (Op::Index, Some(s)) => {
                let source: Value = serde_json::from_str(e.source.as_deref().map(|r| r.get()).unwrap_or("null"))?;
                assert_eq!((source, e.version), (s.source.clone(), s.version), "{id}");
            }
            (op, s) => anyhow::bail!("{id}: last event {op:?} but stored {s:?}"),
        }
    }
    assert_eq!(stored["d10"].version, 2, "an update by query writes the document again");
    if scripts {
        assert_eq!(stored["d0"].source["n"], json!(100), "the script ran");
    }
    c.json::<Value>(Method::Delete, &format!("/{index}"), &[], None).await?;
    Ok(())
}

tests_of!(by_query {
    elasticsearch_7_by_query_through_the_proxy: (&es7(), false),
    elasticsearch_8_by_query_through_the_proxy_without_the_reindex_module: (&es8(), false),
    elasticsearch_9_by_query_through_the_proxy_without_the_reindex_module: (&es9(), false),
    opensearch_2_by_query_with_scripts_through_the_proxy: (&opensearch(), true),
    opensearch_3_by_query_with_scripts_through_the_proxy: (&opensearch3(), true),
});

/// A write held by a write block: a client that hangs up does not cut it off (it lands and
/// is published once the block lifts), and a proxy killed while holding one counts it as a
/// gap at its next start, from its journal.
#[tokio::test(flavor = "multi_thread")]
async fn held_writes_outlive_their_client_and_a_killed_proxy_counts_its_gaps() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (index, topic) = (unique("proxy-held"), unique("proxy-events"));
    let c = cluster(&es8()).await?;
    c.json::<Value>(Method::Put, &format!("/{index}"), &[], None).await?;
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 1).await?;
    let journal = dir.path().join("journal");
    let journal = journal.to_str().unwrap_or_default();
    let mut proxy = start_proxy(
        &es8(),
        &brokers(),
        &topic,
        &dir.path().join("proxy.log"),
        &["--hold", "20s", "--journal", journal],
    )
    .await?;
    let block = |on: bool| json!({ "index.blocks.write": if on { json!(true) } else { Value::Null } });
    c.put_settings(&index, block(true)).await?;

    // The client gives up after 300 ms; the proxy holds the write until the block lifts.
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(300)).build()?;
    let sent = impatient
        .put(format!("{}/{index}/_doc/1", proxy.url))
        .header("content-type", "application/json")
        .body(r#"{"n":1}"#)
        .send()
        .await;
    assert!(sent.is_err(), "the client timed out");
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.put_settings(&index, block(false)).await?;
    let landed = wait_for("the held write to land", Duration::from_secs(15), || {
        Ok(read_topic(&topic, 1, Duration::from_millis(500))?.into_iter().next())
    })
    .await?;
    assert_eq!(landed.0.as_deref(), Some("1"), "its event is published");

    // Killed while holding a write: the next start counts it.
    c.put_settings(&index, block(true)).await?;
    let held = tokio::spawn({
        let url = format!("{}/{index}/_doc/2", proxy.url);
        async move { reqwest::Client::new().put(url).header("content-type", "application/json").body("{}").send().await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.kill9()?;
    assert!(held.await?.is_err(), "the client lost its connection");
    proxy.start_again().await?;
    let stats = proxy.stats().await?;
    assert_eq!(stats["gaps_from_earlier_runs"], json!(1), "{stats}");
    c.put_settings(&index, block(false)).await?;
    c.json::<Value>(Method::Delete, &format!("/{index}"), &[], None).await?;
    Ok(())
}

/// `--tls-cert`/`--tls-key`: the proxy listens with TLS (a certificate made here with
/// openssl, trusted by the client), and a write through it is published as over plain HTTP;
/// a plain-HTTP request to the TLS port gets no answer.
#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_listens_with_tls() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()?;
    anyhow::ensure!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
    let (index, topic) = (unique("proxy-tls"), unique("proxy-events"));
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 1).await?;
    let port = free_port()?;
    let mut c = std::process::Command::new(bin("indexferry-proxy"));
    c.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--upstream",
        &es8(),
        "--brokers",
        &brokers(),
        "--topic",
        &topic,
    ])
    .arg("--tls-cert")
    .arg(&cert)
    .arg("--tls-key")
    .arg(&key);
    let mut proc = spawn(c, &dir.path().join("proxy.log"))?;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&cert)?)?)
        .build()?;
    let url = format!("https://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..100 {
        if client.get(format!("{url}/_indexferry/stats")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::ensure!(up, "the proxy never answered: {}", std::fs::read_to_string(dir.path().join("proxy.log"))?);
    let written = client
        .put(format!("{url}/{index}/_doc/1?refresh=true"))
        .header("content-type", "application/json")
        .body(r#"{"over":"tls"}"#)
        .send()
        .await?;
    assert_eq!(written.status(), 201, "{}", written.text().await?);
    let events = read_topic(&topic, 1, Duration::from_secs(10))?;
    let e: ChangeEvent = indexferry_schemas::decode(None, &events[0].1)?;
    assert_eq!((e.id.as_str(), e.source.map(|s| s.get().to_owned())), ("1", Some(r#"{"over":"tls"}"#.to_owned())));
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?
        .get(format!("http://127.0.0.1:{port}/_indexferry/stats"))
        .send()
        .await;
    assert!(plain.is_err() || !plain.is_ok_and(|r| r.status().is_success()), "plain HTTP is not served");
    kill9(&mut proc)?;
    cluster(&es8()).await?.json::<Value>(Method::Delete, &format!("/{index}"), &[], None).await?;
    Ok(())
}

/// The official `elasticsearch` Python client refuses OpenSearch (no `X-Elastic-Product`
/// answer header, and media types OpenSearch refuses); through the proxy with
/// `--elastic-product always` it writes, bulk-writes and reads OpenSearch, and the writes are
/// published. Without the flag the proxy changes nothing, and the client refuses as it would
/// refuse the cluster itself.
#[tokio::test(flavor = "multi_thread")]
async fn the_elasticsearch_python_client_through_the_proxy_to_opensearch() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (index, topic) = (unique("proxy-product"), unique("proxy-events"));
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 1).await?;
    let script = r#"
import json, sys
from elasticsearch import Elasticsearch, helpers
url, index = sys.argv[1], sys.argv[2]
es = Elasticsearch(url, request_timeout=10)
try:
    es.index(index=index, id="1", document={"n": 1}, refresh=True)
    helpers.bulk(es, [{"_index": index, "_id": str(i), "n": i} for i in range(2, 6)], refresh=True)
    print(json.dumps({"ok": True, "count": es.count(index=index)["count"], "one": es.get(index=index, id="1")["_source"]}))
except Exception as e:
    print(json.dumps({"ok": False, "error": type(e).__name__, "message": str(e)[:300]}))
"#;
    let run = |url: &str| -> anyhow::Result<Value> {
        let out = std::process::Command::new(python_clients()?).args(["-c", script, url, &index]).output()?;
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("the script printed no JSON: {}", String::from_utf8_lossy(&out.stderr)))
    };
    let log = dir.path().join("proxy.log");
    let mut plain = start_proxy(&opensearch(), &brokers(), &topic, &log, &[]).await?;
    // OpenSearch refuses the client's media type (406) before the client could look at the
    // answer's product header: either way the client fails.
    let refused = run(&plain.url)?;
    assert_eq!(refused["ok"], json!(false), "{refused}");
    assert!(
        ["ApiError", "UnsupportedProductError"].contains(&refused["error"].as_str().unwrap_or_default()),
        "{refused}"
    );
    plain.kill9()?;
    let mut compat = start_proxy(
        &opensearch(),
        &brokers(),
        &topic,
        &dir.path().join("proxy2.log"),
        &["--elastic-product", "always"],
    )
    .await?;
    let done = run(&compat.url)?;
    assert_eq!(done, json!({ "ok": true, "count": 5, "one": { "n": 1 } }), "{done}");
    let events = read_topic(&topic, 5, Duration::from_secs(10))?;
    assert_eq!(events.len(), 5, "every write published");
    compat.kill9()?;
    cluster(&opensearch()).await?.json::<Value>(Method::Delete, &format!("/{index}"), &[], None).await?;
    Ok(())
}
