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
use indexferry_producer::{Producer, ProducerConfig};
use indexferry_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Days of a pattern on Elasticsearch 8 under a ground (deleted when the test ends, on the
/// target cluster too): the first day's index holding the job's write alias, the topic of one
/// partition, and `docs` documents `{"day":1}` written through the alias by the producer.
struct Days {
    g: Ground,
    source: Cluster,
    alias: String,
    name: String,
    producer: Producer,
}

impl Days {
    /// `tune` sets the producer up (following the alias, retrying).
    async fn start(
        prefix: &str,
        target_url: &str,
        docs: usize,
        tune: impl FnOnce(&mut ProducerConfig),
    ) -> anyhow::Result<Days> {
        let url = es8();
        let g = Ground::new(prefix, &[&url, target_url])?;
        let source = cluster(&url).await?;
        let (alias, name) = (g.name("write"), g.name("m"));
        let topic = g.topic(1).await?.to_owned();
        new_day(&source, &g.name("2026.12.01"), &alias, None).await?;
        let mut cfg = producer_config(&url, &topic, &alias);
        tune(&mut cfg);
        let producer = Producer::connect(cfg).await?;
        for i in 0..docs {
            producer.index(&format!("a{i}"), &json!({ "day": 1 }).to_string(), None).await?;
        }
        Ok(Days { g, source, alias, name, producer })
    }

    /// The day `n`'s index.
    fn day(&self, n: u32) -> String {
        self.g.name(&format!("2026.12.0{n}"))
    }

    /// The recipe of the pattern of days into `target` on `target_url`, with `rollover`'s
    /// section, written and `init`.
    fn init(&self, target_url: &str, target: &str, rollover: &str) -> anyhow::Result<()> {
        let pattern = format!("{}-*", self.g.base);
        let r = self.g.pattern_recipe(&self.name, target_url, &pattern, target, rollover)?;
        run_ok(self.g.cmd(&["init", r.to_str().unwrap_or_default()]))?;
        Ok(())
    }
}

/// The recipe's `[rollover]`: a short grace, as the scenario's.
const GRACE: &str = "[rollover]\ngrace = \"500ms\"\n";

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

#[tokio::test(flavor = "multi_thread")]
async fn a_write_alias_moved_by_a_job_is_followed_across_the_switch_and_the_old_cluster_refuses_new_days(
) -> anyhow::Result<()> {
    let target_url = es9();
    let days = Days::start("days", &target_url, 20, |cfg| {
        cfg.follow = vec![ClusterConfig::at(&target_url)];
        cfg.retry_for = Duration::from_secs(60);
    })
    .await?;
    let Days { g, source: src, alias, name, producer: p } = &days;
    let dst = cluster(&target_url).await?;
    let day = |n| days.day(n);
    days.init(&target_url, "{source}", GRACE)?;
    let mut run = spawn(g.cmd(&["run", name]), &g.dir.path().join("run.log"))?;

    // The job moves the alias to the next day's index; the operator takes that index in.
    new_day(src, &day(2), alias, Some(&day(1))).await?;
    for i in 0..20 {
        p.index(&format!("b{i}"), &json!({ "day": 2 }).to_string(), None).await?;
    }
    terminate(&mut run)?;
    run_ok(g.cmd(&["add", name, &day(2)]))?;
    let mut run = spawn(g.cmd(&["run", name]), &g.dir.path().join("run2.log"))?;
    wait_caught_up(&g.state, name, Duration::from_secs(120)).await?;
    let out = run_ok(g.cmd(&["rollover", name]))?;
    assert!(out.contains("stop the ILM policies, rollover jobs and daily jobs"), "rollover says so: {out}");
    wait_for("run to stop", Duration::from_secs(30), || Ok(run.try_wait()?)).await?;

    // The producer, still pointed at the old cluster, follows the alias across.
    let e = p.index("after", r#"{"day":2}"#, None).await?;
    assert_eq!(p.followed_to().as_deref(), Some(target_url.as_str()), "followed the alias: {e:?}");
    assert_eq!(e.index, day(2), "into the day's index on the target");
    let got: Value = dst.json(Method::Get, &format!("/{}/_doc/after", day(2)), &[], None).await?;
    assert_eq!(got["found"], json!(true), "{got}");

    // The job's next day on the old cluster refuses writes.
    new_day(src, &day(3), alias, Some(&day(2))).await?;
    let settings: Value =
        src.json(Method::Get, &format!("/{}/_settings", day(3)), &[("flat_settings", "true")], None).await?;
    assert_eq!(settings[day(3)]["settings"]["index.blocks.write"], json!("true"), "{settings}");
    let refused = src.request(Method::Put, &format!("/{}/_doc/x", day(3)), &[], Some(r#"{"day":3}"#.into())).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("cluster_block_exception")), "writes there are refused");
    let out = run_ok(g.cmd(&["verify", name]))?;
    assert!(out.contains("verify: identical"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_to_the_source_index_by_name_follow_to_the_target_after_an_in_cluster_switch() -> anyhow::Result<()> {
    let m = Scenario::new("byname").partitions(1).mappings(json!({})).start().await?;
    let Names { src, dst, topic, .. } = &m.names;
    let mut cfg = producer_config(&m.source_url, topic, src);
    cfg.retry_for = Duration::from_secs(60);
    let p = Producer::connect(cfg).await?;
    for i in 0..20 {
        p.index(&format!("n{i}"), &json!({ "i": i }).to_string(), None).await?;
    }
    m.init()?;
    m.snapshot()?;
    m.catch_up()?;
    m.rollover()?;
    let e = p.index("after", r#"{"i":-1}"#, None).await?;
    assert_eq!(&e.index, dst, "the write addressed to the source by name landed in the target");
    let got: Value = cluster(&m.source_url).await?.json(Method::Get, &format!("/{dst}/_doc/after"), &[], None).await?;
    assert_eq!(got["found"], json!(true), "{got}");
    Ok(())
}

/// A day's index the job makes while the rollover runs (after its check before the block)
/// would be left unblocked, unmigrated and unmoved: the rollover looks again under the
/// block, refuses naming it, and lifts the block; once it is added, the rollover goes through.
#[tokio::test(flavor = "multi_thread")]
async fn a_days_index_made_during_the_rollover_is_refused_inside_the_pause() -> anyhow::Result<()> {
    let url = es8();
    let days = Days::start("newday", &url, 10, |_| {}).await?;
    let Days { g, source: src, alias, name, .. } = &days;
    let day = |n| days.day(n);
    // A grace long enough to make the day's index inside the pause.
    days.init(&url, "v2-{source}", "[rollover]\ngrace = \"4s\"\n")?;
    run_ok(g.cmd(&["snapshot", name]))?;
    run_ok(g.cmd(&["consume", name, "--until-caught-up"]))?;

    let log = g.dir.path().join("rollover.log");
    let mut rollover = rollover_until_blocked(&g.state, name, &log).await?;
    new_day(src, &day(2), alias, Some(&day(1))).await?;
    let exit = wait_for("the rollover to end", Duration::from_secs(60), || Ok(rollover.try_wait()?)).await?;
    let out = std::fs::read_to_string(&log)?;
    assert!(!exit.success() && out.contains(&day(2)) && out.contains("add"), "refused, naming the index: {out}");
    assert_eq!(status(&g.state, name)?["state"], json!("initialized"));
    let settings: Value =
        src.json(Method::Get, &format!("/{}/_settings", day(1)), &[("flat_settings", "true")], None).await?;
    assert!(settings[day(1)]["settings"]["index.blocks.write"].is_null(), "the block was lifted: {settings}");

    run_ok(g.cmd(&["add", name, &day(2)]))?;
    run_ok(g.cmd(&["consume", name, "--until-caught-up"]))?;
    let out = run_ok(g.cmd(&["rollover", name]))?;
    assert!(out.contains("write pause:"), "{out}");
    Ok(())
}
