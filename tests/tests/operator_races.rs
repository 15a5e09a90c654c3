//! Operator commands racing a rollover, and commands pointed at the wrong cluster.
//!
//! - While a rollover runs, `cancel`, a second `rollover` and `reconcile` are refused, each
//!   naming the holder (command, pid, host); the rollover ends as if alone, the target
//!   serving the alias.
//! - `cancel` with a `--target-url` left over from another environment is refused, naming
//!   both clusters, and the index of the same name there is untouched.

use indexferry_common::es::Method;
use indexferry_producer::Producer;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Runs a command expected to be refused; its stderr.
fn refused(mut c: std::process::Command) -> anyhow::Result<String> {
    let out = c.output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    anyhow::ensure!(out.status.code() == Some(1), "{c:?} was not refused: {stderr}");
    Ok(stderr)
}

/// One named pair in-cluster on Elasticsearch 8, `docs` documents through the producer,
/// snapshot done and replay caught up, a rollover grace of 4s (long enough for the other
/// commands to meet it inside its pause).
async fn caught_up(prefix: &str, docs: usize) -> anyhow::Result<Migration> {
    let m = Scenario::new(prefix)
        .partitions(1)
        .mappings(json!({}))
        .docs(docs, |i| json!({ "i": i }))
        .recipe(|r| r.grace = "4s")
        .init()
        .await?;
    m.snapshot()?;
    m.catch_up()?;
    Ok(m)
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_that_change_a_migration_wait_their_turn_behind_a_rollover() -> anyhow::Result<()> {
    let m = caught_up("race", 20).await?;
    let (state, c) = (&m.state, &cluster(&m.source_url).await?);
    let Names { src, dst, alias, name, .. } = &m.names;
    let log = m.file("rollover.log");
    let mut rollover = rollover_until_blocked(state, name, &log).await?;
    let holder = format!("locked by `rollover` (pid {} on host", rollover.id());
    for args in [vec!["cancel", name.as_str()], vec!["rollover", name.as_str()], vec!["reconcile", name.as_str()]] {
        let stderr = refused(indexferry(state, &args))?;
        assert!(stderr.contains(&holder), "{args:?} names the holder: {stderr}");
    }
    let exit = wait_for("the rollover to end", Duration::from_secs(60), || Ok(rollover.try_wait()?)).await?;
    assert!(exit.success(), "the rollover ends as if alone: {}", std::fs::read_to_string(&log)?);
    let held: Value = c.json(Method::Get, &format!("/_alias/{alias}"), &[], None).await?;
    assert!(held.get(dst).is_some() && held.get(src).is_none(), "the target serves the alias: {held}");
    assert_eq!(status(state, name)?["state"], json!("rolled_over"));
    // The lock went with the rollover: the next command runs.
    let out = run_ok(indexferry(state, &["verify", name]))?;
    assert!(out.contains("verify: identical"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_refuses_a_cluster_other_than_the_one_the_migration_runs_on() -> anyhow::Result<()> {
    let (target_url, elsewhere) = (es9(), opensearch());
    let mut m = Scenario::new("wrongcl").to(&target_url).partitions(1).mappings(json!({})).init().await?;
    let (state, dst) = (m.state.clone(), m.names.dst.clone());
    let name = m.name().to_owned();
    // An index of the target's name on another cluster, which a stray override would reach.
    let other = cluster(&elsewhere).await?;
    other.json::<Value>(Method::Put, &format!("/{dst}"), &[], None).await?;
    m.also_delete(&elsewhere, &dst);

    let mut c = indexferry(&state, &["cancel", &name]);
    c.args(["--target-url", &elsewhere]);
    let stderr = refused(c)?;
    assert!(stderr.contains("was initialised on cluster"), "names both clusters: {stderr}");
    assert!(other.exists(&dst).await?, "the other cluster's index is untouched");
    assert!(cluster(&target_url).await?.exists(&dst).await?, "and so is the migration's target");

    run_ok(indexferry(&state, &["cancel", &name]))?;
    Ok(())
}

/// A rollover SIGKILLed inside its pause leaves the source blocked and the record at
/// `rolling_over`. The rerun lifts that block before its long pre-block phase instead of
/// holding the application's writes through it.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_killed_rollover_the_rerun_lifts_the_block_first() -> anyhow::Result<()> {
    let m = caught_up("killed", 20).await?;
    let (state, c) = (m.state.clone(), cluster(&m.source_url).await?);
    let p = Producer::connect(producer_config(&m.source_url, &m.names.topic, &m.names.alias)).await?;
    let (src, name) = (m.names.src.clone(), m.names.name.clone());
    let blocked = |c: &indexferry_common::es::Cluster| {
        let (c, src) = (c.clone(), src.clone());
        async move {
            let s: Value =
                c.json(Method::Get, &format!("/{src}/_settings"), &[("flat_settings", "true")], None).await?;
            anyhow::Ok(s[&src]["settings"]["index.blocks.write"] == json!("true"))
        }
    };
    let mut r = rollover_until_blocked(&state, &name, &m.file("rollover.log")).await?;
    kill9(&mut r)?;
    assert!(blocked(&c).await?, "a SIGKILL leaves the block");
    assert_eq!(status(&state, &name)?["state"], json!("rolling_over"));
    // The next write waits on the block; the rerun lifts it first, and the write goes through
    // long before the rerun's own pause.
    let write = tokio::spawn({
        let p = std::sync::Arc::new(p);
        async move { p.index("during", r#"{"i":-1}"#, None).await.map(|e| e.index) }
    });
    let rerun = tokio::task::spawn_blocking({
        let state = state.clone();
        let name = name.clone();
        move || run_ok(indexferry(&state, &["rollover", &name]))
    });
    let landed = write.await??;
    assert_eq!(landed, src, "the write went into the source, unblocked before the rerun's pause");
    let out = rerun.await??;
    assert!(out.contains("lifted the write block an interrupted rollover left"), "{out}");
    assert_eq!(status(&state, &name)?["state"], json!("rolled_over"));
    Ok(())
}

/// Once the swap of a killed rollover has landed (done here by hand, as a rollover killed
/// right after it would leave it), `cancel --keep-target` refuses to forget a migration whose
/// bookkeeping and switch marker are still owed; `rollover` finishes it.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_keep_target_refuses_to_forget_a_switch_a_killed_rollover_left_unfinished() -> anyhow::Result<()> {
    let m = caught_up("unfinished", 1).await?;
    let (state, c) = (&m.state, &cluster(&m.source_url).await?);
    let Names { src, dst, alias, name, .. } = &m.names;
    let mut r = rollover_until_blocked(state, name, &m.file("rollover.log")).await?;
    kill9(&mut r)?;
    // The swap, as the killed run would have sent it.
    let swap = json!({ "actions": [
        { "remove": { "index": src, "alias": alias } },
        { "add": { "index": dst, "alias": alias, "is_write_index": true } },
    ]});
    c.json::<Value>(Method::Post, "/_aliases", &[], Some(&swap)).await?;

    let out = output(indexferry(state, &["cancel", name, "--keep-target"]))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("run `rollover` again to finish it"), "{stderr}");
    assert_eq!(status(state, name)?["state"], json!("rolling_over"), "the record stays");
    let out = run_ok(indexferry(state, &["rollover", name]))?;
    assert_eq!(status(state, name)?["state"], json!("rolled_over"), "{out}");
    Ok(())
}

/// The swap moves the aliases the sources hold inside the pause, which may not be those
/// `init` recorded (here a pattern's day index got its write alias from a job after
/// `init`). A rollover killed right after its swap leaves that alias on the target: `cancel`
/// and the rerun judge the switch by what the swap sent (recorded before it was sent), so
/// `cancel` refuses instead of deleting the index now serving the application, and the
/// rerun finishes the switch.
#[tokio::test(flavor = "multi_thread")]
async fn a_switch_is_judged_by_what_the_swap_sent_not_by_the_aliases_init_recorded() -> anyhow::Result<()> {
    use indexferry_consumer::state::{State, StateDir, SwapAdd};
    let url = es8();
    let c = cluster(&url).await?;
    let g = Ground::new("judged", &[&url])?;
    let (day, alias, name) = (g.name("2026.12.01"), g.name("write"), g.name("m"));
    g.topic(1).await?;
    let (state, target_index) = (&g.state, format!("v2-{day}"));
    let body = json!({ "settings": { "index.number_of_shards": 1, "index.number_of_replicas": 0 } });
    c.json::<Value>(Method::Put, &format!("/{day}"), &[], Some(&body)).await?;
    c.json::<Value>(Method::Put, &format!("/{day}/_doc/1"), &[("refresh", "true")], Some(&json!({ "n": 1 }))).await?;
    let recipe = g.pattern_recipe(&name, &url, &format!("{}-*", g.base), "v2-{source}", "")?;
    run_ok(g.cmd(&["init", recipe.to_str().unwrap_or_default()]))?;
    run_ok(g.cmd(&["snapshot", &name]))?;
    // After init, a job gives the day its write alias.
    let add = json!({ "actions": [{ "add": { "index": day, "alias": alias, "is_write_index": true } }] });
    c.json::<Value>(Method::Post, "/_aliases", &[], Some(&add)).await?;

    // What a rollover killed right after its swap leaves: the block, the record at
    // `rolling_over` with the swap it sent, and the alias on the target.
    c.put_settings(&day, json!({ "index.blocks.write": true })).await?;
    let sent = SwapAdd { alias: alias.clone(), index: target_index.clone() };
    StateDir::new(state, &name).update_migration(|m| {
        m.state = State::RollingOver;
        m.swap = vec![sent];
    })?;
    let swap = json!({ "actions": [
        { "remove": { "index": day, "alias": alias } },
        { "add": { "index": target_index, "alias": alias, "is_write_index": true } },
    ]});
    c.json::<Value>(Method::Post, "/_aliases", &[], Some(&swap)).await?;

    let out = output(indexferry(state, &["cancel", &name]))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "cancel must not delete the serving target: {stderr}");
    assert!(stderr.contains("the switch happened"), "{stderr}");
    assert!(c.exists(&target_index).await?, "the target serving the alias is still there");
    run_ok(indexferry(state, &["rollover", &name]))?;
    assert_eq!(status(state, &name)?["state"], json!("rolled_over"));
    Ok(())
}
