//! Reconcile: writes whose events never reached the topic are repaired, by hand
//! (`migration reconcile`) and by rollover before and during its pause, so that `verify`
//! finds the target identical. The application here skips publishing 0.5 % of the writes
//! it makes before rollover starts (`load --unpublished-percent`, a test-only fault).

use indexferry_common::es::Method;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

/// How long the load skips publishing some of its writes (from the start of its steady load).
const UNPUBLISHED_FOR: &str = "15s";

fn number_after(out: &str, prefix: &str) -> Option<u64> {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// init → run → caught up → (unpublished window over) → rollover → verify identical.
async fn migrate_with_unpublished_writes(target_url: &str, load_through_rollover: bool) -> anyhow::Result<()> {
    let faults = ["--unpublished-percent", "0.5", "--unpublished-for", UNPUBLISHED_FOR];
    let mut m = Scenario::new("rec")
        .to(target_url)
        .load_with(2000, 100, &faults)
        .recipe(|r| (r.mappings, r.slices, r.batch_size) = (changed_mappings(), 2, 500))
        .init()
        .await?;
    m.run()?;
    let load_log = m.file("load.log");
    wait_for("the load's unpublished window to end", Duration::from_secs(120), || {
        Ok(std::fs::read_to_string(&load_log)?.contains("load: unpublished window over").then_some(()))
    })
    .await?;
    m.wait_caught_up(Duration::from_secs(180)).await?;
    let load = m.load();
    let load = if load_through_rollover {
        Some(load)
    } else {
        let report = load.report()?;
        assert_eq!(report["failed"], json!(0), "{report}");
        assert!(report["unpublished"].as_u64().unwrap_or(0) > 0, "some writes went unpublished: {report}");
        None
    };

    let rolled = output(m.cmd(&["rollover", m.name()]))?;
    let out = String::from_utf8_lossy(&rolled.stdout).into_owned();
    eprintln!("{out}\n{}", String::from_utf8_lossy(&rolled.stderr));
    assert!(rolled.status.success(), "rollover failed");
    let pause = number_after(&out, "write pause: ").expect("rollover prints the write pause");
    let repaired = number_after(&out, "reconcile: repaired ").expect("rollover prints what reconcile repaired");
    assert!(repaired > 0, "the unpublished writes were repaired: {out}");
    // The pass inside the pause compares only the documents changed since the pass before
    // the block, not the index (its time is a benchmark figure, not a test's).
    let changed = out.lines().find_map(|l| l.split(" in the pause (").nth(1)).and_then(|l| l.split(' ').next());
    let changed: u64 = changed.and_then(|n| n.parse().ok()).expect("rollover prints the final pass's size");
    assert!(changed < 2000, "the final reconcile pass compared {changed} documents in the {pause} ms pause");

    if let Some(load) = load {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let report = load.report()?;
        assert_eq!(report["failed"], json!(0), "no write fails across the rollover: {report}");
        assert!(report["unpublished"].as_u64().unwrap_or(0) > 0, "some writes went unpublished: {report}");
    }
    let exit = m.wait_run_exit().await?;
    assert!(exit.success(), "run exits cleanly: {exit}");

    let (report, ok) = m.verify()?;
    assert_eq!(report["identical"], json!(true), "{report}");
    assert_eq!(report["pairs"][0]["late_source_events"], json!(0), "{report}");
    assert!(ok);
    Ok(())
}

tests_of!(migrate_with_unpublished_writes {
    unpublished_writes_are_reconciled_in_cluster_with_the_load_through_rollover: (&es8(), true),
    unpublished_writes_are_reconciled_cross_cluster_to_opensearch: (&opensearch(), false),
});

/// An application whose publishing is broken for every write (no event at all), ES 8 → ES 9,
/// writing until the rollover's full pass before the block has printed: what it creates and
/// changes after that pass reaches the target through the narrow passes, what it deletes
/// only through the recount inside the pause. The switch lands on an identical copy.
#[tokio::test(flavor = "multi_thread")]
async fn unpublished_deletes_up_to_the_block_are_found_by_the_recount() -> anyhow::Result<()> {
    let mut m = Scenario::new("recount")
        .to(&es9())
        .load_with(2000, 150, &["--unpublished-percent", "100"])
        .recipe(|r| r.slices = 2)
        .init()
        .await?;
    m.run()?;
    m.wait_caught_up(Duration::from_secs(180)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let log = m.file("rollover.log");
    let mut rollover = spawn(m.cmd(&["rollover", m.name()]), &log)?;
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&log)?.contains("reconcile before the block:") {
        anyhow::ensure!(rollover.try_wait()?.is_none(), "rollover exited early: {}", std::fs::read_to_string(&log)?);
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "no full pass printed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let report = m.load().report()?;
    let exit = wait_for("rollover to exit", Duration::from_secs(120), || Ok(rollover.try_wait()?)).await?;
    let out = std::fs::read_to_string(&log)?;
    assert!(exit.success(), "rollover failed: {out}");
    assert_eq!(report["failed"], json!(0), "{report}");
    assert!(report["deletes"].as_u64().unwrap_or(0) > 0, "the application deleted: {report}");
    assert!(out.contains("counts differed inside the pause"), "the recount found the unpublished deletes: {out}");
    m.wait_run_exit().await?;
    let (report, ok) = m.verify()?;
    assert_eq!(report["identical"], json!(true), "{report}");
    assert!(ok);
    Ok(())
}

/// A small in-cluster migration of `docs` documents with `run` started and caught up.
async fn caught_up_migration(prefix: &str, docs: usize) -> anyhow::Result<Migration> {
    caught_up_migration_with(prefix, docs, "").await
}

/// [`caught_up_migration`] with TOML lines at the top of the recipe (`versions = ...`).
async fn caught_up_migration_with(prefix: &str, docs: usize, top: &'static str) -> anyhow::Result<Migration> {
    let mut m = Scenario::new(prefix)
        .partitions(2)
        .docs(docs, |i| json!({ "title": format!("doc {i}"), "n": i }))
        .recipe(move |r| r.top = top.to_owned())
        .init()
        .await?;
    m.run()?;
    m.wait_caught_up(Duration::from_secs(120)).await?;
    Ok(m)
}

fn kinds(report: &Value) -> (u64, u64, u64, u64) {
    let c = &report["pairs"][0]["counts"];
    let n = |k: &str| c[k].as_u64().unwrap_or(u64::MAX);
    (n("missing"), n("behind"), n("extra"), n("repaired"))
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_by_hand_repairs_then_finds_nothing_with_the_consumer_running() -> anyhow::Result<()> {
    let mut s = caught_up_migration("recman", 50).await?;
    let (src, dst, name) = (&s.names.src, &s.names.dst, &s.names.name);
    let c = cluster(&es8()).await?;
    // Writes the migration never hears of: two new, two updated, two deleted.
    for id in ["new-1", "new-2", "d1", "d2"] {
        c.json::<Value>(Method::Put, &format!("/{src}/_doc/{id}"), &[], Some(&json!({ "title": "unpublished" })))
            .await?;
    }
    for id in ["d3", "d4"] {
        c.json::<Value>(Method::Delete, &format!("/{src}/_doc/{id}"), &[], None).await?;
    }
    let (before, _) = s.verify()?;
    assert_eq!(before["identical"], json!(false), "the target lacks the unpublished writes: {before}");

    let out = output(indexferry(&s.state, &["reconcile", name, "--json"]))?;
    let first: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)))?;
    assert!(out.status.success(), "{first}");
    assert_eq!(kinds(&first), (2, 2, 2, 6), "missing, behind, extra, repaired: {first}");
    assert_eq!(first["clean"], json!(false));
    let extra = first["pairs"][0]["samples"]["extra"].as_array().cloned().unwrap_or_default();
    assert_eq!(extra, vec![json!("d3"), json!("d4")], "{first}");

    let out = run_ok(indexferry(&s.state, &["reconcile", name]))?;
    assert!(out.lines().any(|l| l == "reconcile: clean"), "the second run finds nothing: {out}");
    assert!(
        out.contains(&format!("reconcile {src} -> {dst}: source=50 target=50 rechecked=0 missing=0 behind=0 extra=0")),
        "{out}"
    );

    let st = status(&s.state, name)?;
    assert_eq!(st["last_reconcile"]["repaired"], json!(0), "the last pass is recorded: {st}");
    assert_eq!(st["last_reconcile"]["failed"], json!(0), "{st}");
    let (after, ok) = s.verify()?;
    assert_eq!(after["identical"], json!(true), "{after}");
    assert!(ok);
    assert!(s.run_proc().id() > 0, "the consumer ran throughout");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_stops_on_a_write_blocked_target_or_a_missing_source_and_records_no_pass() -> anyhow::Result<()> {
    let s = caught_up_migration("recblk", 10).await?;
    let (src, dst, name) = (&s.names.src, &s.names.dst, &s.names.name);
    let c = cluster(&es8()).await?;
    c.json::<Value>(Method::Put, &format!("/{src}/_doc/lost"), &[], Some(&json!({ "title": "unpublished" }))).await?;
    c.put_settings(dst, json!({ "index.blocks.write": true })).await?;
    let out = output(indexferry(&s.state, &["reconcile", name]))?;
    c.put_settings(dst, json!({ "index.blocks.write": null })).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit 1: {stderr}");
    assert!(stderr.contains("target cluster") && stderr.contains(dst.as_str()), "names the target: {stderr}");
    assert!(stderr.contains("refuses writes"), "{stderr}");
    let st = status(&s.state, name)?;
    assert_eq!(st["last_reconcile"], Value::Null, "no pass recorded: {st}");

    // A source that is gone stops it too, naming the source.
    c.json::<Value>(Method::Delete, &format!("/{src}"), &[], None).await?;
    let out = output(indexferry(&s.state, &["reconcile", name]))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit 1: {stderr}");
    assert!(stderr.contains("source cluster") && stderr.contains(src.as_str()), "names the source: {stderr}");
    assert_eq!(status(&s.state, name)?["last_reconcile"], Value::Null, "no pass recorded");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_a_late_event_for_the_source_after_rollover() -> anyhow::Result<()> {
    let s = caught_up_migration("reclate", 10).await?;
    let (src, topic, name) = (&s.names.src, &s.names.topic, &s.names.name);
    run_ok(indexferry(&s.state, &["rollover", name]))?;
    // An event the source acknowledged before the block but published after the drain.
    let late = json!({
        "schema": indexferry_schemas::SCHEMA_V1, "op": "index", "index": src, "id": "late-1",
        "seq_no": 900, "primary_term": 1, "version": 1, "source": { "title": "late" }, "ts": "2026-01-01T00:00:00Z",
    });
    indexferry_schemas::decode(None, late.to_string().as_bytes())?;
    // And an event the replay applied, published again after the drain (an at-least-once
    // producer's retry): the target holds its change, so it is a duplicate, not a difference.
    let (_, first) = read_topic(topic, 1, Duration::from_secs(20))?.into_iter().next().expect("an event");
    let again = indexferry_schemas::decode(None, &first)?;
    publish_raw(topic, &[(again.id.as_str(), first.clone()), ("late-1", late.to_string().into_bytes())]).await?;
    let (report, ok) = s.verify()?;
    assert_eq!(report["pairs"][0]["late_duplicates"], json!(1), "{report}");
    assert_eq!(report["pairs"][0]["late_source_events"], json!(1), "{report}");
    assert_eq!(report["pairs"][0]["sample_late_source_events"], json!(["late-1"]), "{report}");
    assert_eq!(report["identical"], json!(false), "{report}");
    assert!(!ok, "verify fails on a late event");
    Ok(())
}

/// A target that keeps a delete newer than the source's document (a tombstone: here written
/// by hand, as a replayed delete of a later incarnation would leave it) refuses the copy as
/// stale. The document is still missing, so the pass is not clean and exits 1. This is the
/// `seq_no` rule's case; under `source` it is a version gone backwards, which rollover writes
/// again inside its pause (app_versions.rs).
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_refused_by_a_newer_delete_in_the_target_is_a_failed_repair() -> anyhow::Result<()> {
    let s = caught_up_migration_with("recstale", 5, "versions = \"seq_no\"").await?;
    let (src, dst, name) = (&s.names.src, &s.names.dst, &s.names.name);
    let c = cluster(&es8()).await?;
    c.json::<Value>(Method::Put, &format!("/{src}/_doc/ghost"), &[], Some(&json!({ "title": "unpublished" }))).await?;
    let newer = (1u64 << 60).to_string();
    let newest = ((1u64 << 60) + 1).to_string();
    let external = |v: &str| vec![("version", v.to_owned()), ("version_type", "external".to_owned())];
    let q = external(&newer);
    let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
    c.json::<Value>(Method::Put, &format!("/{dst}/_doc/ghost"), &q, Some(&json!({ "title": "later" }))).await?;
    let q = external(&newest);
    let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
    c.json::<Value>(Method::Delete, &format!("/{dst}/_doc/ghost"), &q, None).await?;

    let out = output(indexferry(&s.state, &["reconcile", name, "--json"]))?;
    let report: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)))?;
    assert_eq!(out.status.code(), Some(1), "a repair that cannot land fails the pass: {report}");
    assert_eq!(report["clean"], json!(false), "{report}");
    assert_eq!(report["failed"], json!(1), "{report}");
    assert_eq!(report["pairs"][0]["samples"]["failed"], json!(["ghost"]), "{report}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("newer delete"), "the log says why");
    Ok(())
}
