//! An index with a default ingest pipeline that adds a field, migrated in-cluster on the
//! stack's Elasticsearch with security (its test build has no ingest-common module; x-pack's
//! `set_security_user` processor is there and adds who wrote each document). The
//! application writes as its own user, indexferry as `elastic`:
//!
//! - the events carry the `_source` the source stored (with the application's user), not
//!   the body sent;
//! - the target's pipeline never runs on migrated documents (it would write `elastic`);
//! - after the switch the application's writes get the pipeline on the target.

use indexferry_common::es::{Cluster, Method};
use indexferry_producer::Producer;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_default_pipeline_runs_once_on_the_source_and_on_the_target_from_the_switch_on() -> anyhow::Result<()> {
    let (url, pw) = (es8_tls(), tls_password());
    let admin = Cluster::connect(&tls_config("elastic", &pw)?, "source", Duration::from_secs(30)).await?;
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let Names { src, dst, alias, topic, name } = Names::new("pipe");
    let (pipeline, app_user, app_pw) = (format!("{name}-who"), format!("{name}-app"), "app-password-1");
    let user = json!({ "password": app_pw, "roles": ["superuser"] });
    admin.json::<Value>(Method::Put, &format!("/_security/user/{app_user}"), &[], Some(&user)).await?;
    let processors = json!({ "processors": [
        { "set_security_user": { "field": "indexed_by", "properties": ["username"] } }
    ]});
    admin.json::<Value>(Method::Put, &format!("/_ingest/pipeline/{pipeline}"), &[], Some(&processors)).await?;
    let body = json!({
        "settings": { "index.number_of_replicas": 0, "index.default_pipeline": pipeline },
        "aliases": { alias.as_str(): { "is_write_index": true } },
    });
    admin.json::<Value>(Method::Put, &format!("/{src}"), &[], Some(&body)).await?;
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 1).await?;

    let mut pcfg = producer_config(&url, &topic, &alias);
    pcfg.cluster = tls_config(&app_user, app_pw)?;
    let app = Producer::connect(pcfg).await?;
    let event = app.index("d0", r#"{"n":0}"#, None).await?;
    let carried: Value = serde_json::from_str(event.source.as_ref().map(|s| s.get()).unwrap_or("null"))?;
    assert_eq!(carried["indexed_by"]["username"], json!(app_user), "the event carries the stored _source: {carried}");
    for i in 1..40 {
        app.index(&format!("d{i}"), &json!({ "n": i }).to_string(), None).await?;
    }

    let mut spec = RecipeSpec::new(&name, &url, &url, &topic, &src, &dst, &alias);
    spec.source_options = format!("username = \"elastic\"\nca_cert = {:?}\n", tls_ca()?.display().to_string());
    let recipe = spec.write(dir.path())?;
    let cmd = |args: &[&str]| {
        let mut c = indexferry(&state, args);
        c.env("INDEXFERRY_SOURCE_PASSWORD", &pw);
        c
    };
    let out = run_ok(cmd(&["init", recipe.to_str().unwrap_or_default()]))?;
    assert!(out.contains(&format!("runs the ingest pipeline(s) {pipeline}")), "init says so: {out}");
    let mut run = spawn(cmd(&["run", &name]), &dir.path().join("run.log"))?;
    // Written after init: replayed from their events.
    for i in 40..60 {
        app.index(&format!("d{i}"), &json!({ "n": i }).to_string(), None).await?;
    }
    wait_for("caught up", Duration::from_secs(90), || {
        let s: Value = serde_json::from_slice(&output(cmd(&["status", &name, "--json"]))?.stdout)?;
        Ok((caught_up(&s) && s["replay"]["lag_messages"] == json!(0)).then_some(()))
    })
    .await?;
    let settings: Value =
        admin.json(Method::Get, &format!("/{dst}/_settings"), &[("flat_settings", "true")], None).await?;
    assert_eq!(settings[&dst]["settings"]["index.default_pipeline"], json!("_none"), "no pipeline while loading");
    run_ok(cmd(&["rollover", &name]))?;
    wait_for("run to stop", Duration::from_secs(30), || Ok(run.try_wait()?)).await?;
    // After the switch, through the alias, into the target: the pipeline runs there.
    app.index("after", r#"{"n":-1}"#, None).await?;

    let settings: Value =
        admin.json(Method::Get, &format!("/{dst}/_settings"), &[("flat_settings", "true")], None).await?;
    assert_eq!(
        settings[&dst]["settings"]["index.default_pipeline"],
        json!(pipeline),
        "the pipeline from the switch on"
    );
    admin.json::<Value>(Method::Post, &format!("/{dst}/_refresh"), &[], None).await?;
    let hits: Value = admin.json(Method::Post, &format!("/{dst}/_search"), &[], Some(&json!({ "size": 100 }))).await?;
    let docs = hits["hits"]["hits"].as_array().cloned().unwrap_or_default();
    assert_eq!(docs.len(), 61, "{hits}");
    let by_others: Vec<&Value> =
        docs.iter().filter(|d| d["_source"]["indexed_by"]["username"] != json!(app_user)).collect();
    assert!(by_others.is_empty(), "every document as the source's pipeline made it, once: {by_others:?}");
    let out = run_ok(cmd(&["verify", &name]))?;
    assert!(out.contains("verify: identical"), "{out}");
    let _ = admin.json::<Value>(Method::Delete, &format!("/{src},{dst}"), &[], None).await;
    let _ = admin.json::<Value>(Method::Delete, &format!("/_ingest/pipeline/{pipeline}"), &[], None).await;
    let _ = admin.json::<Value>(Method::Delete, &format!("/_security/user/{app_user}"), &[], None).await;
    Ok(())
}

/// Across clusters, OpenSearch 2.19 to 3.3 (both with the ingest-common and lang-painless
/// modules dev/stack assembles): a pipeline that counts its runs and stamps the ingest time.
/// `init` copies it to the target; every migrated document keeps `runs = 1` and the source's
/// time (run once, on the source), and the application's write after the switch, followed
/// to the target cluster, is processed there.
#[tokio::test(flavor = "multi_thread")]
async fn a_default_pipeline_is_copied_across_clusters_and_runs_once() -> anyhow::Result<()> {
    let (source_url, target_url) = (opensearch(), opensearch3());
    let (source, target) = (cluster(&source_url).await?, cluster(&target_url).await?);
    let pipeline = unique("pipex-count");
    let processors = json!({ "processors": [
        { "script": { "source": "ctx.runs = (ctx.runs == null ? 0 : ctx.runs) + 1" } },
        { "set": { "field": "ingested_at", "value": "{{_ingest.timestamp}}" } },
    ]});
    source.json::<Value>(Method::Put, &format!("/_ingest/pipeline/{pipeline}"), &[], Some(&processors)).await?;
    let m = Scenario::new("pipex")
        .from(&source_url)
        .to(&target_url)
        .partitions(1)
        .shards(1)
        .mappings(json!({}))
        .settings(json!({ "index.default_pipeline": pipeline }))
        .start()
        .await?;
    let Names { src, dst, alias, topic, .. } = &m.names;
    let mut pcfg = producer_config(&source_url, topic, alias);
    pcfg.follow = vec![indexferry_common::config::ClusterConfig::at(&target_url)];
    let app = Producer::connect(pcfg).await?;
    for i in 0..30 {
        app.index(&format!("d{i}"), &json!({ "n": i }).to_string(), None).await?;
    }
    // `plan` names the pipeline, says the target lacks it, and proves the index without it.
    let planned = std::process::Command::new(bin("indexferry"))
        .args(["plan", "--source-url", &source_url, "--target-url", &target_url, "--indices", src])
        .args(["--brokers", &brokers(), "--topic", topic, "--json"])
        .output()?;
    let report = json_report("plan", &planned)?;
    let index = &report["plans"][0];
    assert_eq!(
        index["pipelines"],
        json!([{ "setting": "index.default_pipeline", "name": pipeline, "on_target": false }]),
        "{report}"
    );
    assert_eq!(
        index["proof"]["accepted"], index["proof"]["sampled"],
        "the samples load without the pipeline: {report}"
    );
    let out = m.init()?;
    assert!(out.contains(&format!("ingest pipeline {pipeline} copied to the target")), "{out}");
    let (state, name) = (&m.state, m.name());
    let mut run = spawn(m.cmd(&["run", name]), &m.file("run.log"))?;
    for i in 30..50 {
        app.index(&format!("d{i}"), &json!({ "n": i }).to_string(), None).await?;
    }
    wait_for("caught up", Duration::from_secs(90), || {
        let s = status(state, name)?;
        Ok((caught_up(&s) && s["replay"]["lag_messages"] == json!(0)).then_some(()))
    })
    .await?;
    m.rollover()?;
    wait_for("run to stop", Duration::from_secs(30), || Ok(run.try_wait()?)).await?;
    let e = app.index("after", r#"{"n":-1}"#, None).await?;
    assert_eq!(app.followed_to().as_deref(), Some(target_url.as_str()), "{e:?}");

    let (in_source, in_target) = (all_stored(&source_url, src).await?, all_stored(&target_url, dst).await?);
    assert_eq!(in_target.len(), 51, "the 50 migrated and the one written after the switch");
    for (id, s) in &in_source {
        assert_eq!(Some(s), in_target.get(id), "{id}: as the source stored it, processed once");
        assert_eq!(s.source["runs"], json!(1), "{id}: {:?}", s.source);
    }
    assert_eq!(in_target["after"].source["runs"], json!(1), "the pipeline runs on the target after the switch");
    let out = run_ok(m.cmd(&["verify", name]))?;
    assert!(out.contains("verify: identical"), "{out}");
    // The indices first: a cluster may refuse to delete an index's default pipeline.
    drop(m);
    for c in [&source, &target] {
        let _ = c.json::<Value>(Method::Delete, &format!("/_ingest/pipeline/{pipeline}"), &[], None).await;
    }
    Ok(())
}
