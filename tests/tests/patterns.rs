//! Recipe patterns against the real stack: daily indices migrated by one `[[indices]]`
//! entry under writes, every alias of every day moved in one request; a day created after
//! `init` blocks the rollover until it is added (or excluded); the bad patterns refused at
//! `init`; and, cross-cluster, the templates copied with the recipe's mapping.

use indexferry_common::es::{Cluster, Method};
use indexferry_producer::Producer;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The ground's recipe with one pattern entry, copied in one slice of 200 documents and
/// switched after a grace of 500ms; `extra` goes into the entry, `tail` after it.
fn recipe(
    g: &Ground,
    name: &str,
    target_url: &str,
    pattern: &str,
    target: &str,
    extra: &str,
    tail: &str,
) -> anyhow::Result<PathBuf> {
    let tail =
        format!("{extra}\n\n[snapshot]\nslices = 1\nbatch_size = 200\n\n[rollover]\ngrace = \"500ms\"\n{tail}\n");
    g.pattern_recipe(name, target_url, pattern, target, &tail)
}

/// Creates a day's index with `aliases` and `docs` documents written without events
/// (before `init`, the snapshot copies them).
async fn day(c: &Cluster, index: &str, aliases: Value, docs: usize) -> anyhow::Result<()> {
    let body = json!({
        "settings": { "index.number_of_shards": 2, "index.number_of_replicas": 0 },
        "mappings": { "properties": { "kind": { "type": "keyword" }, "n": { "type": "integer" } } },
        "aliases": aliases,
    });
    c.json::<Value>(Method::Put, &format!("/{index}"), &[], Some(&body)).await?;
    let mut bulk = String::new();
    for i in 0..docs {
        bulk.push_str(&format!(
            "{{\"index\":{{\"_index\":\"{index}\",\"_id\":\"seed-{i}\"}}}}\n{{\"kind\":\"a\",\"n\":{i}}}\n"
        ));
    }
    if !bulk.is_empty() {
        c.request(Method::Post, "/_bulk", &[("refresh", "true")], Some(bulk.into())).await?;
    }
    Ok(())
}

fn verify_identical(state: &Path, name: &str) -> anyhow::Result<Value> {
    let out = output(indexferry(state, &["verify", name, "--json"]))?;
    let report: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("verify printed no report ({e}): {}", String::from_utf8_lossy(&out.stderr)))?;
    assert_eq!(report["identical"], json!(true), "{report}");
    Ok(report)
}

async fn aliases_of(c: &Cluster, index: &str) -> anyhow::Result<Value> {
    let v: Value = c.json(Method::Get, &format!("/{index}/_alias"), &[], None).await?;
    Ok(v[index]["aliases"].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn daily_indices_migrate_by_pattern_and_every_alias_moves_in_one_request() -> anyhow::Result<()> {
    let url = es8();
    let c = cluster(&url).await?;
    let g = Ground::new("stats", &[&url])?;
    let (dir, state, base) = (&g.dir, &g.state, &g.base);
    let (read, write, topic, name) = (g.name("all"), base.clone(), g.topic(3).await?, g.name("m"));
    let days: Vec<String> = (1..=3).map(|d| format!("{base}-2026.11.0{d}")).collect();
    let filter = json!({ "term": { "kind": "a" } });
    for (i, d) in days.iter().enumerate() {
        let newest = i == days.len() - 1;
        let mut w = json!({ "is_write_index": newest });
        if newest {
            w["index_routing"] = json!("r1");
            w["search_routing"] = json!("r1");
        }
        day(&c, d, json!({ read.as_str(): { "filter": filter }, write.as_str(): w }), 300).await?;
    }
    let load = Load::start(dir.path(), &url, &write, topic, 500, 150)?;
    wait_docs(&url, &days[2], 800).await?;
    // An older day changes too, through its own name: one topic carries every day's events.
    let old = Producer::connect(producer_config(&url, topic, &days[0])).await?;

    let r = recipe(&g, &name, &url, &format!("{base}-*"), "v2-{source}", "", "")?;
    let out = run_ok(indexferry(state, &["init", r.to_str().unwrap_or_default()]))?;
    for d in &days {
        assert!(out.contains(&format!("{d} -> v2-{d} (matches {base}-*")), "init prints the matched set: {out}");
    }
    let s = status(state, &name)?;
    assert_eq!(s["pairs"].as_array().map(Vec::len), Some(3), "{s}");
    let mut run = spawn(indexferry(state, &["run", &name]), &dir.path().join("run.log"))?;
    for i in 0..50 {
        old.index(&format!("seed-{i}"), &format!(r#"{{"kind":"a","n":{}}}"#, 1000 + i), None).await?;
    }
    old.delete("seed-60", None).await?;
    wait_caught_up(state, &name, Duration::from_secs(180)).await?;

    let out = run_ok(indexferry(state, &["rollover", &name]))?;
    assert!(out.contains("write pause"), "{out}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (done, failed) = load.stop()?;
    assert_eq!(failed, 0, "no write may fail across the rollover ({done} done)");
    wait_for("run to exit after rollover", Duration::from_secs(30), || Ok(run.try_wait()?)).await?;

    for (i, d) in days.iter().enumerate() {
        assert_eq!(aliases_of(&c, d).await?, json!({}), "the source {d} holds no alias any more");
        let on = aliases_of(&c, &format!("v2-{d}")).await?;
        assert_eq!(on[&read]["filter"], filter, "the read alias spans every day with its filter: {on}");
        let newest = i == days.len() - 1;
        assert_eq!(on[&write]["is_write_index"], json!(newest), "{d}: {on}");
        if newest {
            assert_eq!(on[&write]["index_routing"], json!("r1"), "{on}");
            assert_eq!(on[&write]["search_routing"], json!("r1"), "{on}");
        }
    }
    let report = verify_identical(state, &name)?;
    assert_eq!(report["pairs"].as_array().map(Vec::len), Some(3), "{report}");
    let target_old = all_docs(&url, &format!("v2-{}", days[0])).await?;
    assert_eq!(target_old.get("seed-7"), Some(&json!({ "kind": "a", "n": 1007 })), "the old day's event was replayed");
    assert!(!target_old.contains_key("seed-60"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_day_created_after_init_blocks_rollover_until_added_or_excluded() -> anyhow::Result<()> {
    let url = es8();
    let c = cluster(&url).await?;
    let g = Ground::new("daily", &[&url])?;
    let (dir, state, base) = (&g.dir, &g.state, &g.base);
    let (write, topic, name) = (base.clone(), g.topic(2).await?.to_owned(), g.name("m"));
    let d = |n: u32| format!("{base}-2026.11.0{n}");
    day(&c, &d(1), json!({ write.as_str(): { "is_write_index": false } }), 100).await?;
    day(&c, &d(2), json!({ write.as_str(): { "is_write_index": true } }), 100).await?;
    // No reconcile at rollover: it would repair what a replay that skipped events left out.
    let r = recipe(&g, &name, &url, &format!("{base}-*"), "v2-{source}", "", "reconcile = false")?;
    run_ok(indexferry(state, &["init", r.to_str().unwrap_or_default()]))?;
    let mut run = spawn(indexferry(state, &["run", &name]), &dir.path().join("run.log"))?;
    wait_caught_up(state, &name, Duration::from_secs(120)).await?;

    // Tomorrow: the application creates day 3, moves its write alias there and writes.
    day(&c, &d(3), json!({}), 0).await?;
    let swap = json!({ "actions": [
        { "add": { "index": d(2), "alias": write, "is_write_index": false } },
        { "add": { "index": d(3), "alias": write, "is_write_index": true } },
    ]});
    c.json::<Value>(Method::Post, "/_aliases", &[], Some(&swap)).await?;
    let p = Producer::connect(producer_config(&url, &topic, &write)).await?;
    for i in 0..100 {
        p.index(&format!("new-{i}"), &format!(r#"{{"kind":"a","n":{i}}}"#), None).await?;
    }
    // And a day nobody wants migrated.
    day(&c, &d(9), json!({}), 5).await?;

    let s = wait_for("status to show the new days", Duration::from_secs(30), || {
        let s = status(state, &name)?;
        Ok((s["unmigrated"].as_array().map(Vec::len) == Some(2)).then_some(s))
    })
    .await?;
    assert_eq!(s["unmigrated"][0]["index"], json!(d(3)), "{s}");
    assert_eq!(s["ready"]["ready"], json!(false), "{s}");
    assert!(s["ready"]["why_not"].as_str().unwrap_or("").contains(&d(3)), "{s}");
    let refused = output(indexferry(state, &["rollover", &name]))?;
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains(&d(3)) && err.contains("migration add"), "{err}");
    let settings: Value =
        c.json(Method::Get, &format!("/{}/_settings", d(1)), &[("flat_settings", "true")], None).await?;
    assert!(settings[d(1)]["settings"].get("index.blocks.write").is_none(), "no write block left: {settings}");

    // Writes go on while day 3 is added: its snapshot and the replay must meet.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (p, stop) = (Producer::connect(producer_config(&url, &topic, &write)).await?, stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Each id written once: a write whose event the replay skipped is never mended.
                p.index(&format!("during-{n}"), &format!(r#"{{"kind":"a","n":{n}}}"#), None).await?;
                n += 1;
            }
            anyhow::Ok(n)
        })
    };
    let added = tokio::task::spawn_blocking({
        let (state, name, index) = (state.clone(), name.clone(), d(3));
        move || run_ok(indexferry(&state, &["add", &name, &index]))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await??;
    assert!(written > 50, "writes went on during add ({written})");
    let out = added?;
    assert!(out.contains(&format!("added {} -> v2-{}", d(3), d(3))), "{out}");
    run_ok(indexferry(state, &["add", &name, &d(9), "--exclude"]))?;
    let s = wait_caught_up(state, &name, Duration::from_secs(120)).await?;
    assert!(s["unmigrated"].is_null(), "{s}");

    run_ok(indexferry(state, &["rollover", &name]))?;
    wait_for("run to exit after rollover", Duration::from_secs(30), || Ok(run.try_wait()?)).await?;
    let report = verify_identical(state, &name)?;
    assert_eq!(report["pairs"].as_array().map(Vec::len), Some(3), "{report}");
    let on = aliases_of(&c, &format!("v2-{}", d(3))).await?;
    assert_eq!(on[&write]["is_write_index"], json!(true), "the write alias as it is now, on day 3: {on}");
    let on = aliases_of(&c, &format!("v2-{}", d(2))).await?;
    assert_eq!(on[&write]["is_write_index"], json!(false), "{on}");
    assert!(c.exists(&d(9)).await? && !c.exists(&format!("v2-{}", d(9))).await?, "the excluded day stays behind");
    Ok(())
}

/// `init` with the recipe, expected to fail: its one-line reason, after checking that
/// nothing was created.
async fn refused(dir: &Path, r: &Path, name: &str, c: &Cluster, targets: &[String]) -> anyhow::Result<String> {
    let state = dir.join("state");
    let out = output(indexferry(&state, &["init", r.to_str().unwrap_or_default()]))?;
    assert!(!out.status.success(), "init must refuse {}", r.display());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(!state.join(name).exists(), "no state is kept");
    for t in targets {
        assert!(!c.exists(t).await?, "{t} was not created");
    }
    Ok(lines[0].to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_patterns_are_refused_at_init_with_one_line_naming_them() -> anyhow::Result<()> {
    let url = es8();
    let c = cluster(&url).await?;
    let g = Ground::new("bad", &[&url])?;
    let (dir, base, _, name) = (&g.dir, &g.base, g.topic(1).await?, g.name("m"));
    let (a, b) = (format!("{base}-a"), format!("{base}-b"));
    day(&c, &a, json!({}), 1).await?;
    day(&c, &b, json!({}), 1).await?;

    let r = recipe(&g, &name, &url, &format!("{base}-none-*"), "v2-{source}", "", "")?;
    let e = refused(dir.path(), &r, &name, &c, &[]).await?;
    assert!(e.contains(&format!("{base}-none-*")) && e.contains("matches no index"), "{e}");

    let r = recipe(&g, &name, &url, &format!("{base}-*"), "{source}-v2", "", "")?;
    let e = refused(dir.path(), &r, &name, &c, &[format!("{a}-v2"), format!("{b}-v2")]).await?;
    assert!(e.contains(&format!("{a}-v2")) && e.contains("matches it too"), "{e}");

    let all = format!("v2-{base}-all");
    let r = recipe(&g, &name, &url, &format!("{base}-*"), &all, "", "")?;
    let e = refused(dir.path(), &r, &name, &c, std::slice::from_ref(&all)).await?;
    assert!(e.contains(&a) && e.contains(&b) && e.contains(&all) && e.contains("both go into"), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn templates_are_copied_cross_cluster_with_the_recipe_mapping() -> anyhow::Result<()> {
    let (source_url, target_url) = (es8(), es9());
    let (src, dst) = (cluster(&source_url).await?, cluster(&target_url).await?);
    let g = Ground::new("tpl", &[&source_url, &target_url])?;
    let (state, base, _, name) = (&g.state, &g.base, g.topic(1).await?, g.name("m"));
    let (component, composable, legacy) = (format!("{base}-ct"), format!("{base}-it"), format!("{base}-legacy"));
    let pattern = format!("{base}-*");
    let put = |path: String, body: Value| {
        let src = src.clone();
        async move { src.json::<Value>(Method::Put, &path, &[], Some(&body)).await }
    };
    // Legacy first: Elasticsearch refuses one that overlaps an existing composable template.
    put(format!("/_template/{legacy}"), json!({ "index_patterns": [pattern], "order": 1, "mappings": { "properties": { "legacy": { "type": "keyword" } } } })).await?;
    put(
        format!("/_component_template/{component}"),
        json!({ "template": { "mappings": { "properties": { "kind": { "type": "keyword" }, "n": { "type": "integer" } } } } }),
    )
    .await?;
    put(
        format!("/_index_template/{composable}"),
        json!({ "index_patterns": [pattern], "composed_of": [component], "priority": 300,
                "template": { "settings": { "index.number_of_shards": 1, "index.number_of_replicas": 0 } } }),
    )
    .await?;
    for d in 1..=2 {
        let index = format!("{base}-2026.11.0{d}");
        src.json::<Value>(Method::Put, &format!("/{index}"), &[], Some(&json!({ "aliases": { base.as_str(): {} } })))
            .await?;
        src.json::<Value>(
            Method::Put,
            &format!("/{index}/_doc/1"),
            &[("refresh", "true")],
            Some(&json!({ "kind": "a", "n": d })),
        )
        .await?;
    }
    let overrides = r#"mappings = { properties = { n = { type = "long" } } }"#;

    // The target already holds the legacy template, with another body: refused by name.
    let differing = json!({ "index_patterns": [pattern], "order": 1, "mappings": { "properties": { "n": { "type": "keyword" } } } });
    dst.json::<Value>(Method::Put, &format!("/_template/{legacy}"), &[], Some(&differing)).await?;
    let r = recipe(&g, &name, &target_url, &pattern, "{source}", overrides, "")?;
    let out = output(indexferry(state, &["init", r.to_str().unwrap_or_default()]))?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&legacy) && err.contains("overwrite"), "{err}");
    assert!(!dst.exists(&format!("{base}-2026.11.01")).await?, "nothing created");

    let r = recipe(&g, &name, &target_url, &pattern, "{source}", overrides, "[templates]\noverwrite = true")?;
    let out = run_ok(indexferry(state, &["init", r.to_str().unwrap_or_default()]))?;
    for t in [&component, &composable, &legacy] {
        assert!(out.contains(&format!("template {t} copied")), "{out}");
    }
    let it: Value = dst.json(Method::Get, &format!("/_index_template/{composable}"), &[], None).await?;
    assert_eq!(it["index_templates"][0]["index_template"]["composed_of"], json!([component]), "{it}");
    let lt: Value = dst.json(Method::Get, &format!("/_template/{legacy}"), &[], None).await?;
    assert_eq!(lt[&legacy]["mappings"]["properties"]["n"]["type"], json!("long"), "{lt}");

    // Tomorrow's index, created on the target by the application after the switch.
    let tomorrow = format!("{base}-2026.11.03");
    dst.json::<Value>(Method::Put, &format!("/{tomorrow}"), &[], None).await?;
    let m: Value = dst.json(Method::Get, &format!("/{tomorrow}/_mapping"), &[], None).await?;
    let props = &m[&tomorrow]["mappings"]["properties"];
    assert_eq!(props["n"]["type"], json!("long"), "the recipe's mapping: {m}");
    assert_eq!(props["kind"]["type"], json!("keyword"), "the component's: {m}");

    run_ok(indexferry(state, &["snapshot", &name]))?;
    run_ok(indexferry(state, &["rollover", &name]))?;
    verify_identical(state, &name)?;
    let moved: Value = dst.json(Method::Get, &format!("/_alias/{base}"), &[], None).await?;
    assert_eq!(moved.as_object().map(|m| m.len()), Some(2), "the read alias spans both days on the target: {moved}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_making_data_streams_is_refused_at_init() -> anyhow::Result<()> {
    let (source_url, target_url) = (es8(), opensearch());
    let (src, dst) = (cluster(&source_url).await?, cluster(&target_url).await?);
    let g = Ground::new("ds", &[&source_url, &target_url])?;
    let (dir, base, _, name, template) = (&g.dir, &g.base, g.topic(1).await?, g.name("m"), g.name("streams"));
    day(&src, &format!("{base}-2026.11.01"), json!({}), 1).await?;
    // Made after the index (Elasticsearch refuses a plain index under a data-stream template).
    let body = json!({ "index_patterns": [format!("{base}-*")], "data_stream": {}, "priority": 400,
        "template": { "mappings": { "properties": { "@timestamp": { "type": "date" } } } } });
    src.json::<Value>(Method::Put, &format!("/_index_template/{template}"), &[], Some(&body)).await?;
    let r = recipe(&g, &name, &target_url, &format!("{base}-*"), "{source}", "", "")?;
    let e = refused(dir.path(), &r, &name, &dst, &[format!("{base}-2026.11.01")]).await?;
    assert!(e.contains(&template) && e.contains("data streams"), "{e}");
    Ok(())
}
