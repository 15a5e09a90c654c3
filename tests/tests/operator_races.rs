//! Operator commands racing a rollover, and commands pointed at the wrong cluster.
//!
//! - While a rollover runs, `cancel`, a second `rollover` and `reconcile` are refused, each
//!   naming the holder (command, pid, host); the rollover ends as if alone, the target
//!   serving the alias.
//! - `cancel` with a `--target-url` left over from another environment is refused, naming
//!   both clusters, and the index of the same name there is untouched.

use indexferry_common::es::Method;
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
struct Caught {
    dir: tempfile::TempDir,
    state: std::path::PathBuf,
    names: Names,
    source: indexferry_common::es::Cluster,
    producer: indexferry_producer::Producer,
}

async fn caught_up(prefix: &str, docs: usize) -> anyhow::Result<Caught> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let url = es8();
    let names = Names::new(prefix);
    let Names { src, dst, alias, topic, name } = &names;
    let source = create_source(&url, src, alias, topic, 1, json!({})).await?;
    let producer = indexferry_producer::Producer::connect(producer_config(&url, topic, alias)).await?;
    for i in 0..docs {
        producer.index(&format!("d{i}"), &json!({ "i": i }).to_string(), None).await?;
    }
    let recipe =
        RecipeSpec { grace: "4s", ..RecipeSpec::new(name, &url, &url, topic, src, dst, alias) }.write(dir.path())?;
    run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    run_ok(indexferry(&state, &["snapshot", name]))?;
    run_ok(indexferry(&state, &["consume", name, "--until-caught-up"]))?;
    Ok(Caught { dir, state, names, source, producer })
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_that_change_a_migration_wait_their_turn_behind_a_rollover() -> anyhow::Result<()> {
    let s = caught_up("race", 20).await?;
    let (state, c) = (&s.state, &s.source);
    let Names { src, dst, alias, name, .. } = &s.names;
    let log = s.dir.path().join("rollover.log");
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
    let _ = c.json::<Value>(Method::Delete, &format!("/{src},{dst}"), &[], None).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_refuses_a_cluster_other_than_the_one_the_migration_runs_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let (source_url, target_url, elsewhere) = (es8(), es9(), opensearch());
    let Names { src, dst, alias, topic, name } = Names::new("wrongcl");
    let source = create_source(&source_url, &src, &alias, &topic, 1, json!({})).await?;
    let recipe = RecipeSpec::new(&name, &source_url, &target_url, &topic, &src, &dst, &alias).write(dir.path())?;
    run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    // An index of the target's name on another cluster, which a stray override would reach.
    let other = cluster(&elsewhere).await?;
    other.json::<Value>(Method::Put, &format!("/{dst}"), &[], None).await?;

    let mut c = indexferry(&state, &["cancel", &name]);
    c.args(["--target-url", &elsewhere]);
    let stderr = refused(c)?;
    assert!(stderr.contains("was initialised on cluster"), "names both clusters: {stderr}");
    assert!(other.exists(&dst).await?, "the other cluster's index is untouched");
    assert!(cluster(&target_url).await?.exists(&dst).await?, "and so is the migration's target");

    run_ok(indexferry(&state, &["cancel", &name]))?;
    let _ = other.json::<Value>(Method::Delete, &format!("/{dst}"), &[], None).await;
    let _ = source.json::<Value>(Method::Delete, &format!("/{src}"), &[], None).await;
    Ok(())
}

/// A rollover SIGKILLed inside its pause leaves the source blocked and the record at
/// `rolling_over`. The rerun lifts that block before its long pre-block phase instead of
/// holding the application's writes through it.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_killed_rollover_the_rerun_lifts_the_block_first() -> anyhow::Result<()> {
    let s = caught_up("killed", 20).await?;
    let (state, c, p) = (s.state.clone(), s.source.clone(), s.producer);
    let Names { src, dst, name, .. } = s.names;
    let blocked = |c: &indexferry_common::es::Cluster| {
        let (c, src) = (c.clone(), src.clone());
        async move {
            let s: Value =
                c.json(Method::Get, &format!("/{src}/_settings"), &[("flat_settings", "true")], None).await?;
            anyhow::Ok(s[&src]["settings"]["index.blocks.write"] == json!("true"))
        }
    };
    let mut r = rollover_until_blocked(&state, &name, &s.dir.path().join("rollover.log")).await?;
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
    let _ = c.json::<Value>(Method::Delete, &format!("/{src},{dst}"), &[], None).await;
    Ok(())
}

/// Once the swap of a killed rollover has landed (done here by hand, as a rollover killed
/// right after it would leave it), `cancel --keep-target` refuses to forget a migration whose
/// bookkeeping and switch marker are still owed; `rollover` finishes it.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_keep_target_refuses_to_forget_a_switch_a_killed_rollover_left_unfinished() -> anyhow::Result<()> {
    let s = caught_up("unfinished", 1).await?;
    let (state, c) = (&s.state, &s.source);
    let Names { src, dst, alias, name, .. } = &s.names;
    let mut r = rollover_until_blocked(state, name, &s.dir.path().join("rollover.log")).await?;
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
    let _ = c.json::<Value>(Method::Delete, &format!("/{src},{dst}"), &[], None).await;
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
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let url = es8();
    let c = cluster(&url).await?;
    let base = unique("judged");
    let (day, alias, topic, name) =
        (format!("{base}-2026.12.01"), format!("{base}-write"), format!("{base}.changes"), format!("{base}-m"));
    let target_index = format!("v2-{day}");
    let body = json!({ "settings": { "index.number_of_shards": 1, "index.number_of_replicas": 0 } });
    c.json::<Value>(Method::Put, &format!("/{day}"), &[], Some(&body)).await?;
    c.json::<Value>(Method::Put, &format!("/{day}/_doc/1"), &[("refresh", "true")], Some(&json!({ "n": 1 }))).await?;
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 1).await?;
    let recipe = dir.path().join("r.toml");
    std::fs::write(
        &recipe,
        format!(
            "name = \"{name}\"\n[source]\nurl = \"{url}\"\n[kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\n\
             [[indices]]\nsource = \"{base}-*\"\ntarget = \"v2-{{source}}\"\n",
            brokers()
        ),
    )?;
    run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    run_ok(indexferry(&state, &["snapshot", &name]))?;
    // After init, a job gives the day its write alias.
    let add = json!({ "actions": [{ "add": { "index": day, "alias": alias, "is_write_index": true } }] });
    c.json::<Value>(Method::Post, "/_aliases", &[], Some(&add)).await?;

    // What a rollover killed right after its swap leaves: the block, the record at
    // `rolling_over` with the swap it sent, and the alias on the target.
    c.put_settings(&day, json!({ "index.blocks.write": true })).await?;
    let sent = SwapAdd { alias: alias.clone(), index: target_index.clone() };
    StateDir::new(&state, &name).update_migration(|m| {
        m.state = State::RollingOver;
        m.swap = vec![sent];
    })?;
    let swap = json!({ "actions": [
        { "remove": { "index": day, "alias": alias } },
        { "add": { "index": target_index, "alias": alias, "is_write_index": true } },
    ]});
    c.json::<Value>(Method::Post, "/_aliases", &[], Some(&swap)).await?;

    let out = output(indexferry(&state, &["cancel", &name]))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "cancel must not delete the serving target: {stderr}");
    assert!(stderr.contains("the switch happened"), "{stderr}");
    assert!(c.exists(&target_index).await?, "the target serving the alias is still there");
    run_ok(indexferry(&state, &["rollover", &name]))?;
    assert_eq!(status(&state, &name)?["state"], json!("rolled_over"));
    let _ = c.json::<Value>(Method::Delete, &format!("/{day},{target_index}"), &[], None).await;
    Ok(())
}
