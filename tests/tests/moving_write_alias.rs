//! Write aliases that move, and what a switch leaves on the old cluster.
//!
//! - Across clusters, a pattern of daily indices whose alias a scheduled job moves (no
//!   write flag: the job takes it off yesterday's index and puts it on today's) is moved
//!   mid-migration. The producer writes through the alias throughout; after the switch it
//!   follows the alias to the target cluster, though `init` recorded no write alias for the
//!   pattern. A day's index the job creates on the old cluster after the switch refuses
//!   writes.
//! - In one cluster, a producer writing to the source index by its own name follows to the
//!   target index after the switch instead of staying blocked.

use indexferry_common::config::ClusterConfig;
use indexferry_common::es::{Cluster, Method};
use indexferry_producer::Producer;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A day's index, then the job's move of `alias` onto it (off `from`, if given).
async fn new_day(c: &Cluster, index: &str, alias: &str, from: Option<&str>) -> anyhow::Result<()> {
    let body = json!({ "settings": { "index.number_of_shards": 1, "index.number_of_replicas": 0 } });
    c.json::<Value>(Method::Put, &format!("/{index}"), &[], Some(&body)).await?;
    let mut actions = vec![json!({ "add": { "index": index, "alias": alias } })];
    if let Some(from) = from {
        actions.insert(0, json!({ "remove": { "index": from, "alias": alias } }));
    }
    c.json::<Value>(Method::Post, "/_aliases", &[], Some(&json!({ "actions": actions }))).await?;
    Ok(())
}

fn recipe(
    dir: &std::path::Path,
    name: &str,
    target: &str,
    topic: &str,
    pattern: &str,
    to: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let target_section = if target == es8() { String::new() } else { format!("[target]\nurl = \"{target}\"\n") };
    let text = format!(
        "name = \"{name}\"\n[source]\nurl = \"{}\"\n{target_section}[kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\n\
         [[indices]]\nsource = \"{pattern}\"\ntarget = \"{to}\"\n[rollover]\ngrace = \"500ms\"\n",
        es8(),
        brokers()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_alias_moved_by_a_job_is_followed_across_the_switch_and_the_old_cluster_refuses_new_days(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let (source_url, target_url) = (es8(), es9());
    let (src, dst) = (cluster(&source_url).await?, cluster(&target_url).await?);
    let base = unique("days");
    let (alias, topic, name) = (format!("{base}-write"), format!("{base}.changes"), format!("{base}-m"));
    let day = |n: u32| format!("{base}-2026.12.0{n}");
    new_day(&src, &day(1), &alias, None).await?;
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 1).await?;
    let mut cfg = producer_config(&source_url, &topic, &alias);
    cfg.follow = vec![ClusterConfig::at(&target_url)];
    cfg.retry_for = Duration::from_secs(60);
    let p = Producer::connect(cfg).await?;
    for i in 0..20 {
        p.index(&format!("a{i}"), &json!({ "day": 1 }).to_string(), None).await?;
    }
    let r = recipe(dir.path(), &name, &target_url, &topic, &format!("{base}-*"), "{source}")?;
    run_ok(indexferry(&state, &["init", r.to_str().unwrap_or_default()]))?;
    let mut run = spawn(indexferry(&state, &["run", &name]), &dir.path().join("run.log"))?;

    // The job moves the alias to the next day's index; the operator takes that index in.
    new_day(&src, &day(2), &alias, Some(&day(1))).await?;
    for i in 0..20 {
        p.index(&format!("b{i}"), &json!({ "day": 2 }).to_string(), None).await?;
    }
    terminate(&mut run)?;
    run_ok(indexferry(&state, &["add", &name, &day(2)]))?;
    let mut run = spawn(indexferry(&state, &["run", &name]), &dir.path().join("run2.log"))?;
    wait_caught_up(&state, &name, Duration::from_secs(120)).await?;
    let out = run_ok(indexferry(&state, &["rollover", &name]))?;
    assert!(out.contains("stop the ILM policies, rollover jobs and daily jobs"), "rollover says so: {out}");
    wait_for("run to stop", Duration::from_secs(30), || Ok(run.try_wait()?)).await?;

    // The producer, still pointed at the old cluster, follows the alias across.
    let e = p.index("after", r#"{"day":2}"#, None).await?;
    assert_eq!(p.followed_to().as_deref(), Some(target_url.as_str()), "followed the alias: {e:?}");
    assert_eq!(e.index, day(2), "into the day's index on the target");
    let got: Value = dst.json(Method::Get, &format!("/{}/_doc/after", day(2)), &[], None).await?;
    assert_eq!(got["found"], json!(true), "{got}");

    // The job's next day on the old cluster refuses writes.
    new_day(&src, &day(3), &alias, Some(&day(2))).await?;
    let settings: Value =
        src.json(Method::Get, &format!("/{}/_settings", day(3)), &[("flat_settings", "true")], None).await?;
    assert_eq!(settings[day(3)]["settings"]["index.blocks.write"], json!("true"), "{settings}");
    let refused = src.request(Method::Put, &format!("/{}/_doc/x", day(3)), &[], Some(r#"{"day":3}"#.into())).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("cluster_block_exception")), "writes there are refused");
    let out = run_ok(indexferry(&state, &["verify", &name]))?;
    assert!(out.contains("verify: identical"), "{out}");

    for c in [&src, &dst] {
        let _ = c
            .json::<Value>(
                Method::Delete,
                &format!("/{},{},{}", day(1), day(2), day(3)),
                &[("ignore_unavailable", "true")],
                None,
            )
            .await;
    }
    let templates: Value = src.json(Method::Get, "/_index_template", &[], None).await?;
    for t in templates["index_templates"].as_array().into_iter().flatten() {
        let n = t["name"].as_str().unwrap_or_default();
        if n.starts_with(&format!("indexferry-switched-{name}")) {
            let _ = src.json::<Value>(Method::Delete, &format!("/_index_template/{n}"), &[], None).await;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_to_the_source_index_by_name_follow_to_the_target_after_an_in_cluster_switch() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let url = es8();
    let Names { src, dst, alias, topic, name } = Names::new("byname");
    let c = create_source(&url, &src, &alias, &topic, 1, json!({})).await?;
    let mut cfg = producer_config(&url, &topic, &src);
    cfg.retry_for = Duration::from_secs(60);
    let p = Producer::connect(cfg).await?;
    for i in 0..20 {
        p.index(&format!("n{i}"), &json!({ "i": i }).to_string(), None).await?;
    }
    let recipe = RecipeSpec::new(&name, &url, &url, &topic, &src, &dst, &alias).write(dir.path())?;
    run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    run_ok(indexferry(&state, &["snapshot", &name]))?;
    run_ok(indexferry(&state, &["consume", &name, "--until-caught-up"]))?;
    run_ok(indexferry(&state, &["rollover", &name]))?;
    let e = p.index("after", r#"{"i":-1}"#, None).await?;
    assert_eq!(e.index, dst, "the write addressed to the source by name landed in the target");
    let got: Value = c.json(Method::Get, &format!("/{dst}/_doc/after"), &[], None).await?;
    assert_eq!(got["found"], json!(true), "{got}");
    let _ = c.json::<Value>(Method::Delete, &format!("/{src},{dst}"), &[], None).await;
    Ok(())
}

/// A day's index the job makes while the rollover runs (after its check before the block)
/// would be left unblocked, unmigrated and unmoved: the rollover looks again under the
/// block, refuses naming it, and lifts the block; once it is added, the rollover goes through.
#[tokio::test(flavor = "multi_thread")]
async fn a_days_index_made_during_the_rollover_is_refused_inside_the_pause() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let url = es8();
    let src = cluster(&url).await?;
    let base = unique("newday");
    let (alias, topic, name) = (format!("{base}-write"), format!("{base}.changes"), format!("{base}-m"));
    let day = |n: u32| format!("{base}-2026.12.0{n}");
    new_day(&src, &day(1), &alias, None).await?;
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 1).await?;
    let p = Producer::connect(producer_config(&url, &topic, &alias)).await?;
    for i in 0..10 {
        p.index(&format!("a{i}"), &json!({ "day": 1 }).to_string(), None).await?;
    }
    let r = recipe(dir.path(), &name, &url, &topic, &format!("{base}-*"), "v2-{source}")?;
    // A grace long enough to make the day's index inside the pause.
    std::fs::write(&r, std::fs::read_to_string(&r)?.replace("grace = \"500ms\"", "grace = \"4s\""))?;
    run_ok(indexferry(&state, &["init", r.to_str().unwrap_or_default()]))?;
    run_ok(indexferry(&state, &["snapshot", &name]))?;
    run_ok(indexferry(&state, &["consume", &name, "--until-caught-up"]))?;

    let log = dir.path().join("rollover.log");
    let mut rollover = rollover_until_blocked(&state, &name, &log).await?;
    new_day(&src, &day(2), &alias, Some(&day(1))).await?;
    let exit = wait_for("the rollover to end", Duration::from_secs(60), || Ok(rollover.try_wait()?)).await?;
    let out = std::fs::read_to_string(&log)?;
    assert!(!exit.success() && out.contains(&day(2)) && out.contains("add"), "refused, naming the index: {out}");
    assert_eq!(status(&state, &name)?["state"], json!("initialized"));
    let settings: Value =
        src.json(Method::Get, &format!("/{}/_settings", day(1)), &[("flat_settings", "true")], None).await?;
    assert!(settings[day(1)]["settings"]["index.blocks.write"].is_null(), "the block was lifted: {settings}");

    run_ok(indexferry(&state, &["add", &name, &day(2)]))?;
    run_ok(indexferry(&state, &["consume", &name, "--until-caught-up"]))?;
    let out = run_ok(indexferry(&state, &["rollover", &name]))?;
    assert!(out.contains("write pause:"), "{out}");
    let _ = src
        .json::<Value>(
            Method::Delete,
            &format!("/{},{},v2-{},v2-{}", day(1), day(2), day(1), day(2)),
            &[("ignore_unavailable", "true")],
            None,
        )
        .await;
    Ok(())
}
