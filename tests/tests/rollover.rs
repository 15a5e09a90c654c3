//! Rollover interrupted or half-failed: a signal inside the write pause, a kill after the
//! swap, a swap whose answer is lost, a stale consumer pid file. Each time the migration must
//! end where the alias and the write block really are, and stay resumable.

use indexferry_common::es::Method;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// A migration of 50 documents, snapshot done, with `[rollover]` `grace` and the lines `extra`
/// (a long grace needs a short `drain_timeout`: together they must stay under 30s).
async fn setup(grace: &'static str, extra: &'static str) -> anyhow::Result<Migration> {
    let m = Scenario::new("roll")
        .partitions(1)
        .mappings(json!({}))
        .docs(50, |i| json!({ "i": i }))
        .recipe(move |r| (r.grace, r.extra) = (grace, extra))
        .init()
        .await?;
    run_ok(m.cmd(&["snapshot", m.name()]))?;
    Ok(m)
}

async fn write_block(url: &str, index: &str) -> anyhow::Result<Value> {
    let c = cluster(url).await?;
    let s: Value = c.json(Method::Get, &format!("/{index}/_settings"), &[("flat_settings", "true")], None).await?;
    Ok(s[index]["settings"]["index.blocks.write"].clone())
}

/// Starts `rollover` and waits until it has blocked writes on the source (it is then in its grace).
async fn rollover_in_grace(s: &Migration) -> anyhow::Result<(Proc, PathBuf)> {
    let log = s.dir.path().join(format!("{}.log", unique("rollover")));
    let mut p = spawn(s.cmd(&["rollover", s.name()]), &log)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while write_block(&s.source_url, &s.names.src).await? != json!("true") {
        if let Some(exit) = p.try_wait()? {
            anyhow::bail!("rollover exited ({exit}) before blocking: {}", std::fs::read_to_string(&log)?);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "rollover never blocked writes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((p, log))
}

/// [`setup`] with a grace of `grace`, and its rollover killed (SIGKILL) inside the pause.
async fn killed_in_the_grace(grace: &'static str) -> anyhow::Result<Migration> {
    let s = setup(grace, "drain_timeout = \"5s\"").await?;
    let (mut p, _) = rollover_in_grace(&s).await?;
    kill9(&mut p)?;
    Ok(s)
}

/// What the swap does, by hand: the alias moves from the source to the target.
async fn move_alias(s: &Migration) -> anyhow::Result<()> {
    let actions = json!({ "actions": [
        { "remove": { "index": s.names.src, "alias": s.names.alias } },
        { "add": { "index": s.names.dst, "alias": s.names.alias, "is_write_index": true } },
    ]});
    cluster(&s.source_url).await?.json::<Value>(Method::Post, "/_aliases", &[], Some(&actions)).await?;
    Ok(())
}

async fn alias_on(s: &Migration) -> anyhow::Result<Vec<String>> {
    Ok(cluster(&s.source_url).await?.alias_indices(&s.names.alias).await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_the_grace_lifts_the_block_and_records_the_interruption() -> anyhow::Result<()> {
    let s = setup("8s", "drain_timeout = \"5s\"").await?;
    let (mut p, log) = rollover_in_grace(&s).await?;
    assert_eq!(write_block(&s.source_url, &s.names.src).await?, json!("true"));
    let exit = terminate(&mut p)?;
    let out = std::fs::read_to_string(&log)?;
    assert_eq!(exit.code(), Some(1), "exit 1 after SIGTERM: {exit}\n{out}");
    assert!(out.contains("interrupted by a signal") && out.contains("write block was lifted"), "{out}");
    assert_eq!(write_block(&s.source_url, &s.names.src).await?, Value::Null, "the block is lifted");
    assert_eq!(alias_on(&s).await?, vec![s.names.src.clone()], "the alias still points at the source");
    let st = s.status()?;
    assert_eq!(st["state"], "initialized", "{st}");
    assert!(st["last_error"].as_str().unwrap_or_default().contains("interrupted by a signal during the grace"), "{st}");
    // Resumable.
    let out = run_ok(s.cmd(&["rollover", s.name()]))?;
    assert!(out.contains("write pause:"), "{out}");
    assert_eq!(alias_on(&s).await?, vec![s.names.dst.clone()]);
    Ok(())
}

/// SIGKILL inside the pause, then the alias moved as the swap would have: `cancel` must not
/// delete the index the application now uses, and a rerun finishes the bookkeeping.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_kill_past_the_swap_cancel_refuses_and_rollover_finishes() -> anyhow::Result<()> {
    let s = killed_in_the_grace("8s").await?;
    assert_eq!(s.status()?["state"], "rolling_over");
    move_alias(&s).await?;

    let out = output(s.cmd(&["cancel", s.name()]))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "cancel refuses: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(&format!("alias {} is on index {}", s.names.alias, s.names.dst)), "{stderr}");
    assert!(cluster(&s.source_url).await?.exists(&s.names.dst).await?, "the target is kept");
    assert_eq!(write_block(&s.source_url, &s.names.src).await?, json!("true"), "the source stays blocked");

    let out = run_ok(s.cmd(&["rollover", s.name()]))?;
    assert!(out.contains("bookkeeping is now finished"), "{out}");
    let st = s.status()?;
    assert_eq!(st["state"], "rolled_over", "{st}");
    let c = cluster(&s.source_url).await?;
    let settings: Value =
        c.json(Method::Get, &format!("/{}/_settings", s.names.dst), &[("flat_settings", "true")], None).await?;
    assert_eq!(settings[&s.names.dst]["settings"]["index.gc_deletes"], Value::Null, "gc_deletes restored: {settings}");
    assert_eq!(write_block(&s.source_url, &s.names.src).await?, json!("true"), "the source stays blocked");
    Ok(())
}

/// SIGKILL inside the pause, the alias not moved: `cancel` lifts the block the kill left.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_kill_before_the_swap_cancel_lifts_the_block() -> anyhow::Result<()> {
    let s = killed_in_the_grace("8s").await?;
    let out = run_ok(s.cmd(&["cancel", s.name()]))?;
    assert!(out.contains(&format!("deleted {}", s.names.dst)), "{out}");
    assert_eq!(write_block(&s.source_url, &s.names.src).await?, Value::Null, "block lifted");
    assert_eq!(alias_on(&s).await?, vec![s.names.src.clone()]);
    Ok(())
}

/// SIGKILL inside the pause, the alias not moved: a rerun starts over and switches.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_kill_before_the_swap_rollover_runs_again() -> anyhow::Result<()> {
    let s = killed_in_the_grace("5s").await?;
    let out = run_ok(s.cmd(&["rollover", s.name()]))?;
    assert!(out.contains("write pause:"), "{out}");
    assert_eq!(alias_on(&s).await?, vec![s.names.dst.clone()]);
    let out = run_ok(s.cmd(&["verify", s.name()]))?;
    assert!(out.contains("verify: identical"), "{out}");
    Ok(())
}

/// The swap's request fails although the switch is done (as when its answer is lost, or a
/// retry of it is refused because the first took effect): rollover must read the alias and
/// record the switch, not lift the block. Here the alias is moved by hand during the grace
/// and the source deleted, so that the swap's own `remove` action fails (404). Reconcile is
/// off: its step in the pause would fail first on the deleted source.
#[tokio::test(flavor = "multi_thread")]
async fn a_swap_that_took_effect_is_not_undone() -> anyhow::Result<()> {
    let s = setup("8s", "drain_timeout = \"5s\"\nreconcile = false").await?;
    let (mut p, log) = rollover_in_grace(&s).await?;
    move_alias(&s).await?;
    cluster(&s.source_url).await?.request(Method::Delete, &format!("/{}", s.names.src), &[], None).await?;
    let exit = wait_for("rollover", Duration::from_secs(60), || Ok(p.try_wait()?)).await?;
    let out = std::fs::read_to_string(&log)?;
    assert!(exit.success(), "{out}");
    assert!(out.contains("the switch happened"), "{out}");
    assert_eq!(s.status()?["state"], "rolled_over");
    assert_eq!(alias_on(&s).await?, vec![s.names.dst.clone()]);
    Ok(())
}

/// A consumer pid file whose number now belongs to another process (pid 1 here) is no
/// consumer: rollover replays in-process instead of waiting for checkpoints that never move.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_pid_file_does_not_make_rollover_wait_for_a_consumer() -> anyhow::Result<()> {
    let mut s = setup("500ms", "drain_timeout = \"3s\"").await?;
    std::fs::write(s.state.join(s.name()).join("consume.pid"), "1")?;
    s.producer().await?.index("late", r#"{"i":-1}"#, None).await?;
    let out = run_ok(s.cmd(&["rollover", s.name()]))?;
    assert!(out.contains("write pause:"), "{out}");
    let out = run_ok(s.cmd(&["verify", s.name()]))?;
    assert!(out.contains("verify: identical"), "{out}");
    Ok(())
}

/// Every step inside the pause shares one deadline, `[rollover] max_pause`: a drain that
/// cannot finish (the target refuses the last events' writes for now) is cut there, though
/// its own `drain_timeout` is longer, and the block is lifted, the step named.
#[tokio::test(flavor = "multi_thread")]
async fn the_write_pause_ends_at_max_pause_whatever_step_overruns() -> anyhow::Result<()> {
    let mut s = setup("500ms", "drain_timeout = \"20s\"\nmax_pause = \"3s\"\nreconcile = false").await?;
    let target = cluster(&s.source_url).await?;
    target.put_settings(&s.names.dst, json!({ "index.blocks.write": true })).await?;
    for i in 0..5 {
        s.producer().await?.index(&format!("late{i}"), r#"{"i":-1}"#, None).await?;
    }
    let started = std::time::Instant::now();
    let out = output(s.cmd(&["rollover", s.name()]))?;
    let took = started.elapsed();
    target.put_settings(&s.names.dst, json!({ "index.blocks.write": null })).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("max_pause (3s) during the drain step"), "{stderr}");
    assert!(took < Duration::from_secs(15), "cut at the pause's deadline, not the drain's ({took:?})");
    assert_eq!(write_block(&s.source_url, &s.names.src).await?, Value::Null, "the block is lifted");
    assert_eq!(s.status()?["state"], json!("initialized"));
    // Resumable: with the target writable again, the rollover goes through.
    let out = run_ok(s.cmd(&["rollover", s.name()]))?;
    assert!(out.contains("write pause:"), "{out}");
    Ok(())
}
