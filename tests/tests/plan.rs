//! `indexferry plan` on the real servers: the inventory, the rewrites proven on the target,
//! the recipes it writes (taken as they are by `migration init` and migrated under load),
//! the exit codes, and the temporary index that never outlives the plan.

use indexferry_common::es::Method;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

/// `indexferry plan <args>`.
fn plan(args: &[&str]) -> Command {
    let mut c = Command::new(bin("indexferry"));
    c.arg("plan").args(args);
    c.env("RUST_LOG", "warn");
    c
}

/// Runs `plan --json`: (exit code, report).
fn plan_json(args: &[&str]) -> anyhow::Result<(i32, Value)> {
    let out = output(plan(&[args, &["--json"]].concat()))?;
    let report = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("plan printed no report ({e}): {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok((out.status.code().unwrap_or(-1), report))
}

/// `plan --json` from `source` to `target` of `indices`, with the stack's brokers and
/// `topic`, then `more`: its exit code and report.
fn plan_to(source: &str, target: &str, indices: &str, topic: &str, more: &[&str]) -> anyhow::Result<(i32, Value)> {
    let brokers = brokers();
    let args =
        ["--source-url", source, "--target-url", target, "--indices", indices, "--brokers", &brokers, "--topic", topic];
    plan_json(&[&args[..], more].concat())
}

/// The temporary indices a plan of `index` left on the cluster at `url`.
async fn leftovers(url: &str, index: &str) -> anyhow::Result<Vec<String>> {
    let c = cluster(url).await?;
    let path = format!("/_cat/indices/indexferry-plan-{index}-*");
    let rows: Vec<Value> = c.json(Method::Get, &path, &[("format", "json"), ("h", "index")], None).await?;
    Ok(rows.iter().filter_map(|r| r["index"].as_str()).map(str::to_owned).collect())
}

async fn write_docs(url: &str, index: &str, docs: &[Value]) -> anyhow::Result<()> {
    let mut body = String::new();
    for (i, d) in docs.iter().enumerate() {
        body.push_str(&format!("{{\"index\":{{\"_id\":\"d{i}\"}}}}\n{d}\n"));
    }
    let c = cluster(url).await?;
    let answer = c.request(Method::Post, &format!("/{index}/_bulk"), &[("refresh", "true")], Some(body.into())).await?;
    let answer: Value = serde_json::from_slice(&answer)?;
    anyhow::ensure!(answer["errors"] == json!(false), "source documents refused: {answer}");
    Ok(())
}

async fn delete(url: &str, index: &str) -> anyhow::Result<()> {
    cluster(url).await?.request(Method::Delete, &format!("/{index}"), &[], None).await?;
    Ok(())
}

/// `run` of the migration `name` initialised in `dir`'s state folder, caught up under
/// `load`; the load stopped with no failed write, `rollover`, `run` exiting. `verify
/// --json`'s report, which found both sides identical.
async fn roll_under_load(dir: &std::path::Path, name: &str, load: Load) -> anyhow::Result<Value> {
    let state = dir.join("state");
    let mut run = spawn(indexferry(&state, &["run", name]), &dir.join("run.log"))?;
    let caught = wait_caught_up(&state, name, Duration::from_secs(180)).await;
    if caught.is_err() {
        let _ = terminate(&mut run);
        eprintln!("{}", std::fs::read_to_string(dir.join("run.log")).unwrap_or_default());
    }
    caught?;
    let (done, failed) = load.stop()?;
    assert_eq!(failed, 0, "no write may fail ({done} done)");
    run_ok(indexferry(&state, &["rollover", name]))?;
    wait_for("run to exit after rollover", Duration::from_secs(30), || Ok(run.try_wait()?)).await?;
    let verify = output(indexferry(&state, &["verify", name, "--json"]))?;
    let verdict: Value = serde_json::from_slice(&verify.stdout)?;
    assert_eq!(verdict["identical"], json!(true), "{verdict}");
    Ok(verdict)
}

fn recipe_of(report: &Value) -> anyhow::Result<String> {
    report["recipes"][0].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no recipe written: {report}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn elasticsearch_8_flattened_is_planned_to_opensearch_and_the_recipe_migrates_under_load() -> anyhow::Result<()> {
    let (source_url, target_url) = (es8(), opensearch());
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let Names { src, alias, topic, .. } = Names::new("plan-os");
    let mut mappings = source_mappings();
    mappings["properties"]["user"] = json!({ "type": "flattened" });
    create_source(&source_url, &src, &alias, &topic, 3, mappings).await?;
    let load = Load::start(dir.path(), &source_url, &alias, &topic, 2000, 100)?;
    wait_docs(&source_url, &src, 2000).await?;

    let out = dir.path().join("recipes");
    let out_s = out.to_str().unwrap_or_default();
    let (code, report) = plan_to(&source_url, &target_url, &src, &topic, &["--out", out_s])?;
    let p = &report["plans"][0];
    let rewrite = p["rewrites"].as_array().and_then(|r| r.iter().find(|r| r["path"] == "user")).cloned();
    assert_eq!(rewrite.as_ref().map(|r| r["rule"].clone()), Some(json!("flattened-to-flat_object")), "{p}");
    assert_eq!(p["proof"]["created"], json!(true), "{p}");
    assert_eq!(p["proof"]["rejections"], json!([]), "{p}");
    assert!(p["proof"]["accepted"].as_u64().unwrap_or(0) >= 1000, "a sample of 1,000 documents: {p}");
    assert!(p["estimate"]["max_lag"].as_u64().unwrap_or(0) > 0, "{p}");
    assert_eq!((code, &report["decisions"]), (0, &json!([])), "migratable as written: {report}");
    assert_eq!(leftovers(&target_url, &src).await?, Vec::<String>::new(), "the temporary index is deleted");

    let recipe = recipe_of(&report)?;
    let name = alias.clone();
    run_ok(indexferry(&state, &["init", &recipe]))?;
    roll_under_load(dir.path(), &name, load).await?;

    let target = cluster(&target_url).await?;
    let m: Value = target.json(Method::Get, &format!("/{src}/_mapping"), &[], None).await?;
    assert_eq!(m[&src]["mappings"]["properties"]["user"]["type"], "flat_object", "{m}");
    delete(&source_url, &src).await?;
    delete(&target_url, &src).await
}

/// Elasticsearch 7 still takes camelCase date formats and whitespace-only field names;
/// Elasticsearch 9 takes neither. The format has a rule, proven on the target; the
/// documents have none, so they are reported with the target's reason (exit 1) and the
/// temporary index is gone although the sample bulk failed.
#[tokio::test(flavor = "multi_thread")]
async fn elasticsearch_7_to_9_rewrites_a_camel_case_date_and_reports_rejected_documents() -> anyhow::Result<()> {
    let (source_url, target_url) = (es7(), es9());
    let Names { src, alias, topic, .. } = Names::new("plan-es9");
    let mappings = json!({ "dynamic": false, "properties": {
        "d": { "type": "date", "format": "dateOptionalTime" }, "k": { "type": "keyword" } } });
    create_source(&source_url, &src, &alias, &topic, 1, mappings).await?;
    let mut docs: Vec<Value> = (0..20).map(|i| json!({ "d": "2024-05-01T10:00:00Z", "k": format!("k{i}") })).collect();
    docs.extend((0..3).map(|i| json!({ "d": "2024-05-01", " ": i })));
    write_docs(&source_url, &src, &docs).await?;

    let (code, report) = plan_to(&source_url, &target_url, &src, &topic, &[])?;
    let p = &report["plans"][0];
    let rewrite = p["rewrites"].as_array().and_then(|r| r.iter().find(|r| r["path"] == "d.format")).cloned();
    assert_eq!(
        rewrite.map(|r| (r["rule"].clone(), r["from"].clone(), r["to"].clone())),
        Some((json!("camel-case-date-format"), json!("dateOptionalTime"), json!("date_optional_time"))),
        "{p}"
    );
    assert_eq!(p["proof"]["created"], json!(true), "the rewritten mapping is accepted by Elasticsearch 9: {p}");
    assert_eq!(p["proof"]["accepted"], json!(20), "{p}");
    let rejected = &p["proof"]["rejections"][0];
    assert_eq!((rejected["stage"].as_str(), rejected["count"].as_u64()), (Some("document"), Some(3)), "{p}");
    assert!(rejected["reason"].as_str().unwrap_or_default().contains("whitespace"), "the target's reason: {rejected}");
    assert_eq!(code, 1, "rejected documents need a decision: {report}");
    assert_eq!(report["decisions"].as_array().map(Vec::len), Some(1), "{report}");
    assert_eq!(leftovers(&target_url, &src).await?, Vec::<String>::new(), "the temporary index is deleted");
    delete(&source_url, &src).await
}

/// Without the documents the target refuses, the same index plans clean, and `init` takes
/// the written recipe: the target index has the rewritten format.
#[tokio::test(flavor = "multi_thread")]
async fn elasticsearch_7_recipe_with_a_rewrite_is_taken_by_init() -> anyhow::Result<()> {
    let (source_url, target_url) = (es7(), es9());
    let dir = tempfile::tempdir()?;
    let Names { src, alias, topic, .. } = Names::new("plan-init");
    let mappings = json!({ "properties": { "d": { "type": "date", "format": "strictDateOptionalTime||yyyy-MM-dd" } } });
    create_source(&source_url, &src, &alias, &topic, 1, mappings).await?;
    write_docs(&source_url, &src, &[json!({ "d": "2024-05-01T10:00:00Z" }), json!({ "d": "2024-05-02" })]).await?;
    let out = dir.path().join("recipes");
    let (code, report) = plan_to(&source_url, &target_url, &src, &topic, &["--out", out.to_str().unwrap_or_default()])?;
    assert_eq!((code, &report["decisions"]), (0, &json!([])), "{report}");
    let state = dir.path().join("state");
    run_ok(indexferry(&state, &["init", &recipe_of(&report)?]))?;
    let m: Value = cluster(&target_url).await?.json(Method::Get, &format!("/{src}/_mapping"), &[], None).await?;
    assert_eq!(m[&src]["mappings"]["properties"]["d"]["format"], "strict_date_optional_time||yyyy-MM-dd", "{m}");
    run_ok(indexferry(&state, &["cancel", &alias]))?;
    delete(&source_url, &src).await
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_exit_codes_and_bad_input() -> anyhow::Result<()> {
    let source_url = es8();
    // Usage: a pattern that matches nothing, a missing flag.
    let nothing = unique("plan-nothing");
    let out = output(plan(&["--source-url", &source_url, "--indices", &format!("{nothing}*")]))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&nothing) && stderr.trim().lines().count() == 1, "one line naming the pattern: {stderr}");
    assert_eq!(output(plan(&["--indices", "x"]))?.status.code(), Some(2), "--source-url is required");
    // An unreachable cluster: one line naming it.
    let out = output(plan(&["--source-url", "http://127.0.0.1:1", "--connect-timeout", "0s"]))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("127.0.0.1:1") && stderr.trim().lines().count() == 1, "{stderr}");
    // Without Kafka settings the recipe is not runnable as written: a decision, exit 1.
    let Names { src, alias, topic, .. } = Names::new("plan-codes");
    create_source(&source_url, &src, &alias, &topic, 1, json!({ "properties": { "k": { "type": "keyword" } } }))
        .await?;
    write_docs(&source_url, &src, &[json!({ "k": "a" })]).await?;
    let (code, report) = plan_json(&["--source-url", &source_url, "--indices", &src])?;
    assert_eq!(code, 1, "{report}");
    assert!(report["decisions"].to_string().contains("--brokers"), "{report}");
    let (code, report) =
        plan_json(&["--source-url", &source_url, "--indices", &src, "--brokers", &brokers(), "--topic", &topic])?;
    assert_eq!(code, 0, "{report}");
    assert_eq!(leftovers(&source_url, &src).await?, Vec::<String>::new(), "in one cluster too");
    delete(&source_url, &src).await
}

/// Ctrl-C while the sample is being written: the temporary index goes with the plan.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_plan_leaves_no_temporary_index() -> anyhow::Result<()> {
    let (source_url, target_url) = (es8(), opensearch());
    let Names { src, alias, topic, .. } = Names::new("plan-int");
    create_source(&source_url, &src, &alias, &topic, 1, json!({ "properties": { "k": { "type": "keyword" } } }))
        .await?;
    let filler = "x".repeat(2000);
    let docs: Vec<Value> = (0..10_000).map(|i| json!({ "k": format!("k{i}"), "body": filler })).collect();
    for chunk in docs.chunks(2000) {
        write_docs_at(&source_url, &src, chunk).await?;
    }
    let mut child: Proc = plan(&[
        "--source-url",
        &source_url,
        "--target-url",
        &target_url,
        "--indices",
        &src,
        "--sample",
        "10000",
        "--brokers",
        &brokers(),
        "--topic",
        &topic,
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()?
    .into();
    let target = cluster(&target_url).await?;
    let limit = std::time::Instant::now() + Duration::from_secs(60);
    while leftovers(&target_url, &src).await?.is_empty() {
        anyhow::ensure!(child.try_wait()?.is_none(), "the plan ended before its temporary index was seen");
        anyhow::ensure!(std::time::Instant::now() < limit, "no temporary index appeared");
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT)?;
    let status = child.wait()?;
    assert!(!status.success(), "an interrupted plan fails: {status}");
    let _ = target.request(Method::Post, "/_refresh", &[], None).await;
    assert_eq!(leftovers(&target_url, &src).await?, Vec::<String>::new(), "the temporary index is deleted");
    delete(&source_url, &src).await
}

/// [`write_docs`] with ids unique across calls.
async fn write_docs_at(url: &str, index: &str, docs: &[Value]) -> anyhow::Result<()> {
    let mut body = String::new();
    for d in docs {
        body.push_str(&format!("{{\"index\":{{\"_id\":{}}}}}\n{d}\n", d["k"]));
    }
    let c = cluster(url).await?;
    c.request(Method::Post, &format!("/{index}/_bulk"), &[("refresh", "true")], Some(body.into())).await?;
    Ok(())
}

/// A mapping parameter the target does not know, and no rule for it: the target's own
/// reason is the report (exit 1), and nothing is left on the target.
#[tokio::test(flavor = "multi_thread")]
async fn a_target_refusing_the_converted_index_is_reported() -> anyhow::Result<()> {
    let (source_url, target_url) = (es8(), opensearch());
    let Names { src, alias, topic, .. } = Names::new("plan-refused");
    let mappings = json!({ "properties": { "k": { "type": "keyword", "time_series_dimension": true } } });
    create_source(&source_url, &src, &alias, &topic, 1, mappings).await?;
    write_docs(&source_url, &src, &[json!({ "k": "a" })]).await?;
    let (code, report) = plan_to(&source_url, &target_url, &src, &topic, &[])?;
    let rejection = &report["plans"][0]["proof"]["rejections"][0];
    assert_eq!(rejection["stage"], "create", "{report}");
    assert!(rejection["reason"].as_str().unwrap_or_default().contains("time_series_dimension"), "{rejection}");
    assert_eq!(code, 1, "{report}");
    assert!(report["decisions"][0].as_str().unwrap_or_default().contains("refuses the converted index"), "{report}");
    assert_eq!(leftovers(&target_url, &src).await?, Vec::<String>::new());
    delete(&source_url, &src).await
}

/// A source behind TLS and a password: the recipe names the user and the CA, never the
/// password, and `init` takes it with the password from the environment.
#[tokio::test(flavor = "multi_thread")]
async fn a_plan_over_tls_writes_a_recipe_without_the_password() -> anyhow::Result<()> {
    let tls_url = std::env::var("INDEXFERRY_TEST_ES8_TLS").unwrap_or_else(|_| "https://127.0.0.1:9203".into());
    let password = std::env::var("INDEXFERRY_TLS_PASSWORD").unwrap_or_else(|_| "indexferry-secret".into());
    let ca = std::process::Command::new(dev_script("stack")).arg("tls-ca").output()?;
    anyhow::ensure!(ca.status.success(), "dev/stack tls-ca: {}", String::from_utf8_lossy(&ca.stderr));
    let ca = String::from_utf8(ca.stdout)?.trim().to_owned();
    let mut cfg = cluster_config(&tls_url);
    cfg.username = Some("elastic".into());
    cfg.password = Some(indexferry_common::secret::Secret::new(password.clone()));
    cfg.ca_cert = Some(ca.clone().into());
    let source = indexferry_common::es::Cluster::connect(&cfg, "source", Duration::from_secs(30)).await?;
    let Names { src, alias, topic, .. } = Names::new("plan-tls");
    let body = json!({ "settings": { "index.number_of_shards": 1, "index.number_of_replicas": 0 },
        "aliases": { &alias: { "is_write_index": true } } });
    source.json::<Value>(Method::Put, &format!("/{src}"), &[], Some(&body)).await?;
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 1).await?;
    source
        .request(Method::Post, &format!("/{src}/_doc/a"), &[("refresh", "true")], Some(r#"{"k":"a"}"#.into()))
        .await?;

    let dir = tempfile::tempdir()?;
    let out = dir.path().join("recipes");
    let target_url = es9();
    let mut c = plan(&[
        "--source-url",
        &tls_url,
        "--source-username",
        "elastic",
        "--source-ca-cert",
        &ca,
        "--target-url",
        &target_url,
        "--indices",
        &src,
        "--brokers",
        &brokers(),
        "--topic",
        &topic,
        "--out",
        out.to_str().unwrap_or_default(),
        "--json",
    ]);
    c.env("INDEXFERRY_SOURCE_PASSWORD", &password);
    let answer = output(c)?;
    let report: Value = serde_json::from_slice(&answer.stdout)
        .map_err(|e| anyhow::anyhow!("no report ({e}): {}", String::from_utf8_lossy(&answer.stderr)))?;
    assert_eq!(answer.status.code(), Some(0), "{report}");
    let recipe = recipe_of(&report)?;
    let text = std::fs::read_to_string(&recipe)?;
    assert!(text.contains("username = \"elastic\"") && text.contains(&format!("ca_cert = {ca:?}")), "{text}");
    assert!(!text.contains(&password), "the password is not written: {text}");
    let state = dir.path().join("state");
    let mut init = indexferry(&state, &["init", &recipe]);
    init.env("INDEXFERRY_SOURCE_PASSWORD", &password);
    run_ok(init)?;
    let mut cancel = indexferry(&state, &["cancel", &alias]);
    cancel.env("INDEXFERRY_SOURCE_PASSWORD", &password);
    run_ok(cancel)?;
    source.request(Method::Delete, &format!("/{src}"), &[], None).await?;
    Ok(())
}

/// An index whose `_source` is disabled cannot be copied: named with the reason, exit 1,
/// and no recipe pair for it.
#[tokio::test(flavor = "multi_thread")]
async fn an_index_without_source_is_named_unmigratable() -> anyhow::Result<()> {
    let source_url = es8();
    let Names { src, alias, topic, .. } = Names::new("plan-nosource");
    create_source(&source_url, &src, &alias, &topic, 1, json!({ "_source": { "enabled": false } })).await?;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("recipes");
    let args = [
        "--source-url",
        &source_url,
        "--indices",
        &src,
        "--brokers",
        &brokers(),
        "--topic",
        &topic,
        "--out",
        out.to_str().unwrap_or_default(),
    ];
    let (code, report) = plan_json(&args)?;
    assert_eq!(code, 1, "{report}");
    assert!(report["plans"][0]["blocker"].as_str().unwrap_or_default().contains("_source is disabled"), "{report}");
    assert_eq!(report["recipes"], json!([]), "nothing to write: {report}");
    delete(&source_url, &src).await
}

/// Three days of `<base>-stats-2026.11.0N` behind a read alias spanning them (and a write
/// alias on the newest), covered by a composable template.
async fn daily_source(url: &str, base: &str, read: &str, write: &str) -> anyhow::Result<Vec<String>> {
    let c = cluster(url).await?;
    let tpl = json!({ "index_patterns": [format!("{base}-*")], "priority": 400,
        "template": { "settings": { "index.number_of_shards": 1, "index.number_of_replicas": 0 },
                      "mappings": { "properties": { "kind": { "type": "keyword" }, "n": { "type": "integer" } } } } });
    c.json::<Value>(Method::Put, &format!("/_index_template/{base}-tpl"), &[], Some(&tpl)).await?;
    let days: Vec<String> = (1..=3).map(|d| format!("{base}-2026.11.0{d}")).collect();
    for (i, d) in days.iter().enumerate() {
        let newest = i == days.len() - 1;
        let mut body = json!({ "aliases": { read: {}, write: { "is_write_index": newest } } });
        if i == 0 {
            // The oldest day has a field the others lack: with the entry's mapping over its
            // own, it is not what it was proven with alone.
            body["mappings"] = json!({ "properties": { "old": { "type": "keyword" } } });
        }
        c.json::<Value>(Method::Put, &format!("/{d}"), &[], Some(&body)).await?;
        write_docs(url, d, &[json!({ "kind": "a", "n": i }), json!({ "kind": "b", "n": 10 + i })]).await?;
    }
    Ok(days)
}

/// Runs `test`, then `cleanup` whether the test passed, failed or panicked.
async fn with_cleanup(
    test: impl std::future::Future<Output = anyhow::Result<()>>,
    cleanup: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use futures::FutureExt as _;
    let outcome = std::panic::AssertUnwindSafe(test).catch_unwind().await;
    cleanup.await;
    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Deletes `<base>-*` indices and the `<base>-tpl` template, on each cluster.
async fn drop_daily(urls: &[String], base: &str) {
    for url in urls {
        let Ok(c) = cluster(url).await else { continue };
        let path = format!("/_cat/indices/{base}-*");
        let rows: Vec<Value> =
            c.json(Method::Get, &path, &[("format", "json"), ("h", "index")], None).await.unwrap_or_default();
        for index in rows.iter().filter_map(|r| r["index"].as_str()) {
            let _ = c.request(Method::Delete, &format!("/{index}"), &[], None).await;
        }
        let _ = c.request(Method::Delete, &format!("/_index_template/{base}-tpl"), &[], None).await;
    }
}

/// Daily indices are written as one pattern entry (tomorrow's index is covered too), proven
/// with what `init` creates each with; the template covering them is reported as copied by
/// `init`, and the recipe migrates under writes: every day identical, the template on the
/// target.
#[tokio::test(flavor = "multi_thread")]
async fn daily_indices_are_planned_as_one_pattern_entry_that_migrates() -> anyhow::Result<()> {
    let (source_url, target_url) = (es8(), es9());
    let dir = tempfile::tempdir()?;
    let base = format!("{}-stats", unique("pd"));
    let (read, write, topic) = (format!("{base}-all"), base.clone(), unique("pd-events"));
    let test = async {
        let days = daily_source(&source_url, &base, &read, &write).await?;
        indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 3).await?;
        daily_migration(dir.path(), &source_url, &target_url, &base, &days, &write, &topic).await
    };
    with_cleanup(test, drop_daily(&[source_url.clone(), target_url.clone()], &base)).await
}

#[allow(clippy::too_many_arguments)]
async fn daily_migration(
    dir: &std::path::Path,
    source_url: &str,
    target_url: &str,
    base: &str,
    days: &[String],
    write: &str,
    topic: &str,
) -> anyhow::Result<()> {
    let load = Load::start(dir, source_url, write, topic, 200, 100)?;
    wait_docs(source_url, &days[2], 200).await?;
    let out = dir.join("recipes");
    let pattern = format!("{base}-*");
    let (code, report) =
        plan_to(source_url, target_url, &pattern, topic, &["--out", out.to_str().unwrap_or_default()])?;
    assert_eq!((code, &report["decisions"]), (0, &json!([])), "migratable as written: {report}");
    let e = &report["patterns"][0];
    assert_eq!((e["pattern"].as_str(), e["target"].as_str()), (Some(pattern.as_str()), Some("{source}")), "{report}");
    assert_eq!(e["members"], json!(days), "{report}");
    let by: Vec<&str> = e["proofs"].as_array().into_iter().flatten().filter_map(|p| p["by"].as_str()).collect();
    // The newest day carries the load's fields (dynamic mapping) and the oldest its own field:
    // only the newest is created by init exactly as it was proven alone.
    assert_eq!(by, ["entry", "entry", "own"], "each day proven with what init creates it with: {report}");
    assert_eq!(e["proofs"][0]["proof"]["created"], json!(true), "{report}");
    let tpl = report["templates"].as_array().and_then(|t| t.iter().find(|t| t["name"] == format!("{base}-tpl")));
    assert_eq!(tpl.map(|t| t["action"].clone()), Some(json!("copied by init")), "{report}");
    let recipe = recipe_of(&report)?;
    let text = std::fs::read_to_string(&recipe)?;
    assert_eq!(text.matches("[[indices]]").count(), 1, "one entry for the three days: {text}");
    assert!(text.contains(&format!("source = {pattern:?}")), "{text}");

    let state = dir.join("state");
    let name = write.to_owned();
    let init = run_ok(indexferry(&state, &["init", &recipe]))?;
    for d in days {
        assert!(init.contains(&format!("{d} -> {d} (matches {pattern}")), "init matches each day: {init}");
    }
    let verdict = roll_under_load(dir, &name, load).await?;
    assert_eq!(verdict["pairs"].as_array().map(Vec::len), Some(3), "{verdict}");
    let target = cluster(target_url).await?;
    let copied: Value = target.json(Method::Get, &format!("/_index_template/{base}-tpl"), &[], None).await?;
    assert_eq!(copied["index_templates"][0]["index_template"]["index_patterns"], json!([pattern]), "{copied}");
    Ok(())
}

/// A template covering the days that the target holds with another body: `init` would
/// refuse it, so the plan lists it as a decision (exit 1).
#[tokio::test(flavor = "multi_thread")]
async fn a_template_differing_on_the_target_is_a_decision() -> anyhow::Result<()> {
    let (source_url, target_url) = (es8(), opensearch());
    let base = format!("{}-stats", unique("pd"));
    let (read, write, topic) = (format!("{base}-all"), base.clone(), unique("pd-events"));
    let test = async {
        daily_source(&source_url, &base, &read, &write).await?;
        let differing = json!({ "index_patterns": [format!("{base}-*")], "priority": 400,
            "template": { "mappings": { "properties": { "n": { "type": "keyword" } } } } });
        let target = cluster(&target_url).await?;
        target.json::<Value>(Method::Put, &format!("/_index_template/{base}-tpl"), &[], Some(&differing)).await?;
        let (code, report) = plan_to(&source_url, &target_url, &format!("{base}-*"), &topic, &[])?;
        assert_eq!(code, 1, "{report}");
        let decisions = report["decisions"].as_array().cloned().unwrap_or_default();
        let d = decisions.iter().filter_map(Value::as_str).find(|d| d.contains(&format!("\"{base}-tpl\"")));
        assert!(d.is_some_and(|d| d.contains("overwrite = true")), "the differing template is a decision: {report}");
        assert_eq!(decisions.len(), 1, "nothing else: {report}");
        let tpl = report["templates"].as_array().and_then(|t| t.iter().find(|t| t["name"] == format!("{base}-tpl")));
        assert!(tpl.map(|t| t["action"].to_string()).unwrap_or_default().contains("differs"), "{report}");
        Ok(())
    };
    with_cleanup(test, drop_daily(&[source_url.clone(), target_url.clone()], &base)).await
}

/// A data stream the `--indices` pattern names is refused with `init`'s reason (OpenSearch
/// as the source: the Elasticsearch test servers have no data streams).
#[tokio::test(flavor = "multi_thread")]
async fn a_data_stream_named_by_the_plan_is_refused() -> anyhow::Result<()> {
    let (source_url, target_url) = (opensearch(), es9());
    let Names { src, alias, topic, .. } = Names::new("plan-ds");
    let stream = format!("{src}-ds");
    let source = cluster(&source_url).await?;
    let test = async {
        create_source(&source_url, &src, &alias, &topic, 1, json!({ "properties": { "k": { "type": "keyword" } } }))
            .await?;
        let body = json!({ "index_patterns": [format!("{stream}*")], "data_stream": {}, "priority": 400 });
        source.json::<Value>(Method::Put, &format!("/_index_template/{stream}"), &[], Some(&body)).await?;
        source.json::<Value>(Method::Put, &format!("/_data_stream/{stream}"), &[], None).await?;
        let indices = format!("{src}*");
        let (code, report) = plan_to(&source_url, &target_url, &indices, &topic, &[])?;
        assert_eq!(code, 1, "{report}");
        let decisions = report["decisions"].to_string();
        assert!(decisions.contains(&format!("data stream \\\"{stream}\\\"")), "{report}");
        assert!(decisions.contains("data streams are not migrated"), "init's reason: {report}");
        Ok(())
    };
    let cleanup = async {
        let _ = source.request(Method::Delete, &format!("/_data_stream/{stream}"), &[], None).await;
        let _ = source.request(Method::Delete, &format!("/_index_template/{stream}"), &[], None).await;
        let _ = delete(&source_url, &src).await;
    };
    with_cleanup(test, cleanup).await
}
