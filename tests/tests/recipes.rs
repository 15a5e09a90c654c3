//! Bad recipes and flags against the real servers: each refused by `init` with a one-line
//! reason naming what is wrong, exit code 1, and nothing created.

use indexferry_common::es::Method;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

struct Case {
    dir: tempfile::TempDir,
    url: String,
    src: String,
    dst: String,
    alias: String,
    topic: String,
    name: String,
}

async fn case() -> anyhow::Result<Case> {
    let Names { src, dst, alias, topic, name } = Names::new("bad");
    let url = es8();
    create_source(&url, &src, &alias, &topic, 1, json!({})).await?;
    Ok(Case { dir: tempfile::tempdir()?, url, src, dst, alias, topic, name })
}

/// Runs `init` on the recipe and returns its stderr, asserting exit code 1 and one line.
fn refused(state: &Path, recipe: &Path, extra: &[&str]) -> anyhow::Result<String> {
    let mut c = indexferry(state, &["init", recipe.to_str().unwrap_or_default()]);
    c.args(extra);
    let out = output(c)?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one line: {stderr}");
    Ok(errors[0].to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn init_refuses_bad_clusters_indices_and_aliases() -> anyhow::Result<()> {
    let c = case().await?;
    let state = c.dir.path().join("state");
    let spec = || RecipeSpec::new(&c.name, &c.url, &c.url, &c.topic, &c.src, &c.dst, &c.alias);

    // The target index exists already.
    let es = cluster(&c.url).await?;
    es.json::<Value>(Method::Put, &format!("/{}", c.dst), &[], Some(&json!({}))).await?;
    let err = refused(&state, &spec().write(c.dir.path())?, &[])?;
    assert!(err.contains(&format!("index {:?} already exists", c.dst)), "{err}");
    es.request(Method::Delete, &format!("/{}", c.dst), &[], None).await?;

    // The source index does not exist.
    let missing = unique("missing");
    let r = RecipeSpec { source: &missing, ..spec() }.write(c.dir.path())?;
    let err = refused(&state, &r, &[])?;
    assert!(err.contains(&format!("index {missing:?} does not exist")), "{err}");

    // The alias points at several indices.
    let other = unique("other");
    es.json::<Value>(Method::Put, &format!("/{other}"), &[], Some(&json!({ "aliases": { &c.alias: {} } }))).await?;
    let err = refused(&state, &spec().write(c.dir.path())?, &[])?;
    assert!(err.contains("points at several indices"), "{err}");
    es.request(Method::Delete, &format!("/{other}"), &[], None).await?;

    // An unreachable cluster: retried until the deadline, then a clear failure.
    let r = RecipeSpec { source_url: "http://127.0.0.1:1", target_url: "http://127.0.0.1:1", ..spec() }
        .write(c.dir.path())?;
    let started = std::time::Instant::now();
    let err = refused(&state, &r, &["--connect-timeout", "2s"])?;
    assert!(err.contains("not reachable at http://127.0.0.1:1"), "{err}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(2), "retried until the deadline");

    // An unreachable broker.
    let err = refused(&state, &spec().write(c.dir.path())?, &["--brokers", "127.0.0.1:1"])?;
    assert!(err.contains("kafka at 127.0.0.1:1"), "{err}");

    // A recipe with an unknown field names the field and the file.
    let r = spec().write(c.dir.path())?;
    std::fs::write(&r, std::fs::read_to_string(&r)?.replace("[snapshot]", "[snapshot]\nslicez = 3"))?;
    let err = refused(&state, &r, &[])?;
    assert!(err.contains("slicez") && err.contains(".toml"), "{err}");

    assert!(!es.exists(&c.dst).await?, "nothing was created");
    assert!(!state.join(&c.name).exists(), "no state was kept");
    // And with everything right, init goes through.
    run_ok(indexferry(&state, &["init", spec().write(c.dir.path())?.to_str().unwrap_or_default()]))?;
    let err = refused(&state, &spec().write(c.dir.path())?, &[])?;
    assert!(err.contains("already exists"), "a second init of the same name is refused: {err}");
    Ok(())
}

/// A rollover whose grace and drain could outlast the producer library's retry window would
/// turn a failed drain into failed application writes: `init` refuses it, naming both values.
#[tokio::test(flavor = "multi_thread")]
async fn init_refuses_a_rollover_pause_longer_than_the_producer_retry_window() -> anyhow::Result<()> {
    let c = case().await?;
    let state = c.dir.path().join("state");
    let spec = RecipeSpec {
        grace: "1s",
        extra: "drain_timeout = \"30s\"",
        ..RecipeSpec::new(&c.name, &c.url, &c.url, &c.topic, &c.src, &c.dst, &c.alias)
    };
    let err = refused(&state, &spec.write(c.dir.path())?, &[])?;
    assert!(err.contains("drain_timeout (30s) + grace (1s)") && err.contains("retry window"), "{err}");
    assert!(!cluster(&c.url).await?.exists(&c.dst).await?, "nothing was created");
    Ok(())
}

/// A password given to indexferry never shows in logs, status, metrics or error messages.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_appear_in_output() -> anyhow::Result<()> {
    const SECRET: &str = "pw-3b7f1c-never-print";
    let c = case().await?;
    let state = c.dir.path().join("state");
    // A username in the recipe, the password from the environment (the cluster here runs
    // without security and ignores both).
    let mut spec = RecipeSpec::new(&c.name, &c.url, &c.url, &c.topic, &c.src, &c.dst, &c.alias);
    spec.source_options = "username = \"elastic\"\n".into();
    let r = spec.write(c.dir.path())?;
    let with_secret = |args: &[&str]| {
        let mut cmd = indexferry(&state, args);
        cmd.env("INDEXFERRY_SOURCE_PASSWORD", SECRET).env("RUST_LOG", "debug");
        cmd
    };
    let mut seen = String::new();
    let mut record = |out: std::process::Output| {
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
        seen.push_str(&String::from_utf8_lossy(&out.stderr));
    };
    record(output(with_secret(&["init", r.to_str().unwrap_or_default()]))?);
    let port = 20000 + (rand::random::<u16>() % 20000);
    let log = c.dir.path().join("run.log");
    let mut cmd = with_secret(&["run", &c.name]);
    cmd.args(["--metrics-addr", &format!(":{port}")]);
    let mut run = spawn(cmd, &log)?;
    wait_for(
        "caught up",
        std::time::Duration::from_secs(60),
        || Ok(caught_up(&status(&state, &c.name)?).then_some(())),
    )
    .await?;
    let metrics =
        std::process::Command::new("curl").args(["-s", &format!("http://127.0.0.1:{port}/metrics")]).output()?;
    record(metrics);
    record(output(with_secret(&["status", &c.name]))?);
    record(output(with_secret(&["status", &c.name, "--json"]))?);
    // Failures print the recipe's cluster in their messages.
    let mut bad = with_secret(&["verify", &c.name]);
    bad.args(["--source-url", &format!("http://elastic:{SECRET}@127.0.0.1:1"), "--connect-timeout", "1s"]);
    record(output(bad)?);
    terminate(&mut run)?;
    seen.push_str(&std::fs::read_to_string(&log)?);
    assert!(seen.contains("127.0.0.1:1"), "the failing command did run: {seen}");
    assert!(!seen.contains(SECRET), "the secret leaked:\n{seen}");
    Ok(())
}

/// `compression = true` gzips request and answer bodies (for a slow link); off, the
/// cluster is asked for plain answers. Both read and write the same documents.
#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_is_reached_the_same_with_compression_on_and_off() -> anyhow::Result<()> {
    let index = unique("gz");
    let mut cfg = cluster_config(&es8());
    cfg.compression = true;
    let gz = indexferry_common::es::Cluster::connect(&cfg, "target", Duration::from_secs(30)).await?;
    let plain = cluster(&es8()).await?;
    let mut body = String::new();
    for i in 0..300 {
        body.push_str(&format!("{{\"index\":{{\"_index\":\"{index}\",\"_id\":\"d{i}\"}}}}\n"));
        body.push_str(&json!({ "i": i, "text": "x".repeat(500) }).to_string());
        body.push('\n');
    }
    let answer = gz.bulk(bytes::Bytes::from(body)).await?;
    assert_eq!(answer.items.len(), 300);
    assert!(answer.items.iter().all(|i| matches!(i.outcome(), indexferry_common::es::bulk::Outcome::Applied)));
    let via_gzip = all_docs_with(&gz, &index).await?;
    let via_plain = all_docs_with(&plain, &index).await?;
    assert_eq!(via_gzip.len(), 300);
    assert_eq!(via_gzip, via_plain);
    plain.json::<Value>(Method::Delete, &format!("/{index}"), &[], None).await?;
    Ok(())
}

async fn all_docs_with(
    c: &indexferry_common::es::Cluster,
    index: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, Value>> {
    c.json::<Value>(Method::Post, &format!("/{index}/_refresh"), &[], None).await?;
    let body = json!({ "size": 1000, "query": { "match_all": {} } });
    let r: Value = c.json(Method::Post, &format!("/{index}/_search"), &[], Some(&body)).await?;
    Ok(r["hits"]["hits"]
        .as_array()
        .map(|h| h.iter().map(|h| (h["_id"].as_str().unwrap_or_default().to_owned(), h["_source"].clone())).collect())
        .unwrap_or_default())
}
