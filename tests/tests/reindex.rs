//! The `reindex` snapshot method on the real servers (OpenSearch 3 and Elasticsearch 7 of the
//! stack carry the reindex module): `_reindex` tasks copy with the source's own `_version`,
//! the version the replay's events carry too under the `source` rule, and the migration converges under
//! writes, deletes and a killed worker; reconcile then reads the copies as in sync. And the
//! bad inputs, each one line naming the cause.

use indexferry_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Init, a snapshot worker killed mid-task and started again, the consumer throughout, a live
/// load; then reconcile (clean), rollover and verify (identical).
async fn converges(prefix: &str, source_url: &str, target_url: &str) -> anyhow::Result<()> {
    let mut m = Scenario::new(prefix)
        .from(source_url)
        .to(target_url)
        .load(4000, 100)
        // Slow enough to kill the worker while its task runs.
        .recipe(|r| (r.method, r.batch_size, r.throttle) = ("reindex", 200, 800))
        .start()
        .await?;
    let out = m.init()?;
    assert!(out.contains("snapshot method reindex: the recipe asks for it"), "{out}");
    let load = m.load();
    // The workers' output goes where the scenario prints it when they do not catch up.
    let (state, name, log) = (&m.state.clone(), &m.name().to_owned(), m.file("run.log"));
    let mut snapshot = spawn(indexferry(state, &["snapshot", name]), &log)?;
    let mut consume = spawn(indexferry(state, &["consume", name]), &log)?;
    wait_for("the task's first copies", Duration::from_secs(60), || {
        Ok((status(state, name)?["pairs"][0]["copied"].as_u64().unwrap_or(0) >= 400).then_some(()))
    })
    .await?;
    kill9(&mut snapshot)?;
    // The task runs on without its worker; a new worker reattaches to it.
    let before = status(state, name)?["pairs"][0]["copied"].as_u64().unwrap_or(0);
    snapshot = spawn(indexferry(state, &["snapshot", name]), &log)?;
    let s = m.wait_caught_up(Duration::from_secs(180)).await?;
    assert_eq!(s["snapshot_method"], json!("reindex"), "{s}");
    let pair = &s["pairs"][0];
    assert!(pair["resumes"].as_u64().unwrap_or(0) >= 1, "the worker reattached: {pair}");
    assert!(pair["copied"].as_u64().unwrap_or(0) > before, "{pair}");
    let (done, failed) = load.stop()?;
    assert_eq!(failed, 0, "{done} writes, none failed");
    wait_caught_up(state, name, Duration::from_secs(60)).await?;
    let worker = wait_for("the snapshot worker's exit", Duration::from_secs(30), || Ok(snapshot.try_wait()?)).await?;
    assert!(worker.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());

    // Copies hold the source's `_version`: reconcile must not take them for behind.
    let out = run_ok(indexferry(state, &["reconcile", name]))?;
    assert!(out.contains("missing=0 behind=0 extra=0"), "{out}");
    assert!(out.lines().any(|l| l == "reconcile: clean"), "{out}");

    let out = m.rollover()?;
    assert!(out.contains("write pause:"), "{out}");
    let exit = wait_for("consumer exit after rollover", Duration::from_secs(30), || Ok(consume.try_wait()?)).await?;
    let _ = exit;
    let (report, _) = m.verify()?;
    assert_eq!(report["identical"], json!(true), "{report}");
    Ok(())
}

tests_of!(converges {
    reindex_in_cluster_converges_under_writes_deletes_and_a_killed_worker: ("rxin", &opensearch3(), &opensearch3()),
    reindex_from_remote_converges_under_writes_deletes_and_a_killed_worker: ("rxremote", &es7(), &opensearch3()),
});

/// A migration asking for `reindex` from `source_url` to `target_url`, not yet `init`, over
/// `docs` documents (ids `0`, `1`, ...), the target with `target_mappings`; its recipe's path.
async fn prepared(
    prefix: &str,
    source_url: &str,
    target_url: &str,
    docs: &[Value],
    target_mappings: Value,
) -> anyhow::Result<(std::path::PathBuf, Migration)> {
    // The source takes any `n`; the target may be stricter.
    let keyword = json!({ "properties": { "n": { "type": "keyword" } } });
    let m = Scenario::new(prefix)
        .from(source_url)
        .to(target_url)
        .partitions(1)
        .mappings(keyword)
        .recipe(move |r| (r.method, r.mappings) = ("reindex", target_mappings.clone()))
        .start()
        .await?;
    let mut body = String::new();
    for (i, d) in docs.iter().enumerate() {
        body.push_str(&format!("{}\n{d}\n", json!({ "index": { "_index": m.names.src, "_id": i.to_string() } })));
    }
    if !body.is_empty() {
        let c = cluster(source_url).await?;
        c.request(indexferry_common::es::Method::Post, "/_bulk", &[("refresh", "true")], Some(body.into())).await?;
    }
    let recipe = m.recipe_in(m.dir.path())?;
    Ok((recipe, m))
}

/// `init` with `recipe`, then `snapshot`, which must fail naming the pair in its last line;
/// that line.
fn failed_snapshot(m: &Migration, recipe: &std::path::Path) -> anyhow::Result<String> {
    run_ok(m.cmd(&["init", recipe.to_str().unwrap_or_default()]))?;
    let line = failure_line(&output(m.cmd(&["snapshot", m.name()]))?);
    let pair = format!("the reindex of {} into {}", m.names.src, m.names.dst);
    assert!(line.contains(&pair), "{line}");
    Ok(line)
}

/// The last line of stderr, after checking the command failed.
fn failure_line(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a failure: {stderr}");
    stderr.lines().last().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn reindex_is_refused_at_init_on_a_cluster_without_the_module() -> anyhow::Result<()> {
    let url = es8();
    let (recipe, m) = prepared("rxnomod", &url, &url, &[json!({ "n": 1 })], json!({})).await?;
    let out = output(m.cmd(&["init", recipe.to_str().unwrap_or_default()]))?;
    let line = failure_line(&out);
    assert!(
        line.contains("[snapshot] method = \"reindex\"")
            && line.contains("has no reindex module")
            && line.contains(&url),
        "{line}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn reindex_from_a_host_not_allowlisted_fails_in_one_line() -> anyhow::Result<()> {
    // The stack allowlists 127.0.0.1:*, not localhost.
    let source = es7().replace("127.0.0.1", "localhost");
    let (recipe, m) = prepared("rxallow", &source, &opensearch3(), &[json!({ "n": 1 })], json!({})).await?;
    // Init reads the target's allowlist and refuses.
    let out = output(m.cmd(&["init", recipe.to_str().unwrap_or_default()]))?;
    let line = failure_line(&out);
    assert!(line.contains("[localhost:9204] not allowlisted in reindex.remote.allowlist"), "{line}");
    // `auto` takes the search method instead, and says why.
    let text = std::fs::read_to_string(&recipe)?.replace("method = \"reindex\"", "method = \"auto\"");
    std::fs::write(&recipe, text)?;
    let out = run_ok(m.cmd(&["init", recipe.to_str().unwrap_or_default()]))?;
    assert!(out.contains("snapshot method search: auto: [localhost:9204] not allowlisted"), "{out}");
    Ok(())
}

/// `auto` takes what dev/bench measured faster: `_reindex` in-cluster where the module is
/// there, the search method across clusters (reindex from remote is one unsliced scroll). `init`
/// says which, and why; the status records it.
#[tokio::test(flavor = "multi_thread")]
async fn auto_takes_reindex_in_cluster_and_the_search_method_across_clusters() -> anyhow::Result<()> {
    for (prefix, source, want, why) in [
        (
            "rxautoin",
            opensearch3(),
            "reindex",
            "auto: the cluster has the reindex module, and a sliced in-cluster _reindex",
        ),
        ("rxautoremote", es7(), "search", "auto: reindex from remote is one unsliced scroll, measured slower"),
    ] {
        let (recipe, m) = prepared(prefix, &source, &opensearch3(), &[json!({ "n": 1 })], json!({})).await?;
        let text = std::fs::read_to_string(&recipe)?.replace("method = \"reindex\"", "method = \"auto\"");
        std::fs::write(&recipe, text)?;
        let out = run_ok(m.cmd(&["init", recipe.to_str().unwrap_or_default()]))?;
        assert!(out.contains(&format!("snapshot method {want}: {why}")), "{source}: {out}");
        assert_eq!(m.status()?["snapshot_method"], json!(want), "{source}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reindex_task_failing_halfway_ends_the_snapshot_in_one_line_and_counts_nothing() -> anyhow::Result<()> {
    let url = opensearch3();
    // Document 150 does not fit the target's mapping: the task stops at its batch.
    let docs: Vec<Value> = (0..300).map(|i| if i == 150 { json!({ "n": "abc" }) } else { json!({ "n": i }) }).collect();
    let mappings = json!({ "properties": { "n": { "type": "integer" } } });
    let (recipe, m) = prepared("rxhalf", &url, &url, &docs, mappings).await?;
    let line = failed_snapshot(&m, &recipe)?;
    assert!(line.contains("document 150") && line.contains("mapper_parsing_exception"), "{line}");
    let s = m.status()?;
    assert_eq!(s["pairs"][0]["done"], json!(false), "{s}");
    assert_eq!(s["pairs"][0]["copied"], json!(0), "nothing reported as copied: {s}");
    Ok(())
}

/// A migration of `docs` documents with method `reindex` throttled to `throttle` docs/s, its
/// worker started and killed once its task copies: the task runs on, unattended.
async fn orphaned_task(prefix: &str, docs: usize, throttle: u32) -> anyhow::Result<Migration> {
    let url = opensearch3();
    let all: Vec<Value> = (0..docs).map(|i| json!({ "n": i })).collect();
    let (recipe, m) = prepared(prefix, &url, &url, &all, json!({})).await?;
    let (state, names) = (&m.state, &m.names);
    let text = std::fs::read_to_string(&recipe)?
        .replace("throttle_docs_per_s = 0", &format!("throttle_docs_per_s = {throttle}"))
        .replace("batch_size = 100", "batch_size = 20");
    std::fs::write(&recipe, text)?;
    run_ok(indexferry(state, &["init", recipe.to_str().unwrap_or_default()]))?;
    let mut worker = spawn(indexferry(state, &["snapshot", &names.name]), &m.file("worker.log"))?;
    wait_for("the task's first copies", Duration::from_secs(60), || {
        Ok((status(state, &names.name)?["pairs"][0]["copied"].as_u64().unwrap_or(0) > 0).then_some(()))
    })
    .await?;
    kill9(&mut worker)?;
    Ok(m)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_throttle_rethrottles_the_running_task() -> anyhow::Result<()> {
    // 2,000 documents at 10 docs/s would take minutes.
    let m = orphaned_task("rxthrottle", 2000, 10).await?;
    let (state, names) = (&m.state, &m.names);
    let started = std::time::Instant::now();
    let out = run_ok(indexferry(state, &["snapshot", &names.name, "--throttle", "0"]))?;
    assert!(out.contains("2000 documents"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(60), "rethrottled: {:?}", started.elapsed());
    let s = status(state, &names.name)?;
    assert_eq!((s["pairs"][0]["done"].clone(), s["pairs"][0]["restarts"].clone()), (json!(true), json!(0)), "{s}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_cancels_the_running_reindex_task() -> anyhow::Result<()> {
    let m = orphaned_task("rxcancel", 2000, 10).await?;
    let (state, names) = (&m.state, &m.names);
    let out = run_ok(indexferry(state, &["cancel", &names.name]))?;
    let task = out
        .lines()
        .find_map(|l| l.strip_prefix("cancelled reindex task "))
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no task cancelled: {out}"))?;
    let c = cluster(&opensearch3()).await?;
    let t: Value = c.json(indexferry_common::es::Method::Get, &format!("/_tasks/{task}"), &[], None).await?;
    assert_eq!(t["completed"], json!(true), "{t}");
    assert_eq!(t["response"]["canceled"], json!("by user request"), "{t}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_too_large_for_the_remote_buffer_ends_the_snapshot_in_one_line() -> anyhow::Result<()> {
    let source_url = es7();
    let (recipe, m) = prepared("rxbuffer", &source_url, &opensearch3(), &[], json!({})).await?;
    let (state, names) = (&m.state, &m.names);
    // 900 documents of 130 KB: one batch of 1,000 is past the 100mb the target's client for
    // reindex from remote buffers.
    let blob = "x".repeat(130_000);
    let source = cluster(&source_url).await?;
    for chunk in 0..9 {
        let mut body = String::new();
        for i in chunk * 100..(chunk + 1) * 100 {
            body.push_str(&format!(
                "{}\n{}\n",
                json!({ "index": { "_index": names.src, "_id": i.to_string() } }),
                json!({ "n": i.to_string(), "blob": blob })
            ));
        }
        source.request(indexferry_common::es::Method::Post, "/_bulk", &[], Some(body.into())).await?;
    }
    let text = std::fs::read_to_string(&recipe)?.replace("batch_size = 100", "batch_size = 1000");
    std::fs::write(&recipe, text)?;
    let line = failed_snapshot(&m, &recipe)?;
    assert!(line.contains("buffer limit [104857600]") && line.contains("lower [snapshot] batch_size"), "{line}");
    let s = status(state, &names.name)?;
    assert_eq!((s["pairs"][0]["done"].clone(), s["pairs"][0]["copied"].clone()), (json!(false), json!(0)), "{s}");
    run_ok(indexferry(state, &["cancel", &names.name]))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_the_cluster_forgot_is_started_again() -> anyhow::Result<()> {
    let m = orphaned_task("rxvanish", 500, 50).await?;
    let (state, names) = (&m.state, &m.names);
    // What a node restart does to a running task: gone, with no stored result. Here: the
    // task is cancelled and its stored result deleted.
    let c = cluster(&opensearch3()).await?;
    let listed: Value = c
        .json(indexferry_common::es::Method::Get, "/_tasks", &[("actions", "*reindex"), ("detailed", "true")], None)
        .await?;
    let id = listed["nodes"]
        .as_object()
        .into_iter()
        .flat_map(|n| n.values())
        .flat_map(|n| n["tasks"].as_object().cloned().unwrap_or_default())
        .find(|(_, t)| {
            t["parent_task_id"].is_null() && t["description"].as_str().is_some_and(|d| d.contains(names.src.as_str()))
        })
        .map(|(id, _)| id)
        .ok_or_else(|| anyhow::anyhow!("no running task for {}: {listed}", names.src))?;
    c.json::<Value>(indexferry_common::es::Method::Post, &format!("/_tasks/{id}/_cancel"), &[], None).await?;
    let forget = || async {
        let (code, _) = c
            .request_raw(
                indexferry_common::es::Method::Delete,
                &format!("/.tasks/_doc/{id}"),
                &[("refresh", "true")],
                None,
            )
            .await?;
        anyhow::Ok(code)
    };
    // The result is stored once the cancellation reaches every slice.
    let mut code = forget().await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while code != 200 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        code = forget().await?;
    }
    assert_eq!(code, 200, "the stored result of {id} deleted");
    let out = run_ok(indexferry(state, &["snapshot", &names.name, "--throttle", "0"]))?;
    assert!(out.contains("500 documents"), "{out}");
    let s = status(state, &names.name)?;
    assert_eq!((s["pairs"][0]["done"].clone(), s["pairs"][0]["restarts"].clone()), (json!(true), json!(1)), "{s}");
    assert_eq!(c.count(&names.dst, true).await?, 500);
    Ok(())
}
