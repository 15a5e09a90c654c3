//! Operator commands at their edges: rollover refusing on unmet preconditions, rollover
//! undoing its write block when the drain fails, cancel cleaning up, metrics served.

use indexferry_common::es::Method;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;

async fn setup(extra: &'static str) -> anyhow::Result<Migration> {
    setup_with(50, move |spec| spec.extra = extra).await
}

/// An initialised in-cluster migration of `docs` documents; `tune` adjusts its recipe.
async fn setup_with(
    docs: usize,
    tune: impl Fn(&mut RecipeSpec<'_>) + Send + Sync + 'static,
) -> anyhow::Result<Migration> {
    Scenario::new("op").partitions(1).mappings(json!({})).docs(docs, |i| json!({ "i": i })).recipe(tune).init().await
}

async fn write_block(url: &str, index: &str) -> anyhow::Result<Value> {
    let c = cluster(url).await?;
    let s: Value = c.json(Method::Get, &format!("/{index}/_settings"), &[("flat_settings", "true")], None).await?;
    Ok(s[index]["settings"]["index.blocks.write"].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn rollover_refuses_before_the_snapshot_is_complete() -> anyhow::Result<()> {
    let s = setup("").await?;
    let out = output(indexferry(&s.state, &["rollover", s.name()]))?;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("snapshot of") && stderr.contains("is not complete"), "{stderr}");
    assert_eq!(stderr.trim().lines().filter(|l| l.starts_with("error:")).count(), 1, "one-line reason: {stderr}");
    assert_eq!(write_block(&s.source_url, &s.names.src).await?, Value::Null, "nothing was blocked");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_drain_lifts_the_write_block_and_leaves_the_migration_resumable() -> anyhow::Result<()> {
    let mut s = setup("max_lag = 100\ndrain_timeout = \"2s\"\n").await?;
    run_ok(indexferry(&s.state, &["snapshot", s.name()]))?;
    // A "consumer" that is alive but applies nothing: rollover waits on its checkpoints.
    // It holds the pid file's lock, as a live consumer does.
    let mut idle = std::process::Command::new("sleep").arg("60").spawn()?;
    let pid_file = s.state.join(s.name()).join("consume.pid");
    std::fs::write(&pid_file, idle.id().to_string())?;
    let lock = nix::fcntl::Flock::lock(std::fs::File::open(&pid_file)?, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)?;
    s.producer().await?.index("late", r#"{"i":-1}"#, None).await?;

    let out = output(indexferry(&s.state, &["rollover", s.name()]))?;
    let _ = idle.kill();
    let _ = idle.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not apply the last 1 events"), "{stderr}");
    assert!(stderr.contains("write block was lifted"), "{stderr}");
    assert_eq!(write_block(&s.source_url, &s.names.src).await?, Value::Null, "the block is lifted");
    let st = status(&s.state, s.name())?;
    assert_eq!(st["state"], "initialized", "{st}");
    assert!(st["last_error"].as_str().unwrap_or_default().contains("rollover"), "{st}");
    // Resumable: with no consumer process, rollover replays in-process and succeeds.
    drop(lock);
    std::fs::remove_file(&pid_file)?;
    let out = run_ok(indexferry(&s.state, &["rollover", s.name()]))?;
    assert!(out.contains("write pause:"), "{out}");
    let out = run_ok(indexferry(&s.state, &["verify", s.name()]))?;
    assert!(out.contains("verify: identical"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_workers_drops_the_target_and_forgets_the_migration() -> anyhow::Result<()> {
    let s = setup("").await?;
    let mut run = spawn(indexferry(&s.state, &["run", s.name()]), &s.dir.path().join("run.log"))?;
    wait_for("snapshot done", Duration::from_secs(60), || Ok(caught_up(&status(&s.state, s.name())?).then_some(())))
        .await?;
    let c = cluster(&s.source_url).await?;
    c.put_settings(&s.names.src, json!({ "index.blocks.write": true })).await?;
    let out = run_ok(indexferry(&s.state, &["cancel", s.name()]))?;
    assert!(out.contains(&format!("deleted {}", s.names.dst)), "{out}");
    let exit = wait_for("run to stop", Duration::from_secs(10), || Ok(run.try_wait()?)).await?;
    assert!(exit.success(), "run stopped cleanly on SIGTERM: {exit}");
    assert!(!c.exists(&s.names.dst).await?, "target deleted");
    assert_eq!(write_block(&s.source_url, &s.names.src).await?, Value::Null, "block lifted");
    assert!(!s.state.join(s.name()).exists(), "state removed");
    let out = output(indexferry(&s.state, &["status", s.name()]))?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no migration named"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn run_serves_prometheus_metrics_on_loopback() -> anyhow::Result<()> {
    let mut s = setup("").await?;
    let port = 20000 + (rand::random::<u16>() % 20000);
    let mut cmd = indexferry(&s.state, &["run", s.name()]);
    cmd.args(["--metrics-addr", &format!(":{port}")]);
    let _run = spawn(cmd, &s.dir.path().join("run.log"))?;
    s.producer().await?.index("m1", r#"{"i":1}"#, None).await?;
    s.producer().await?.delete("d1", None).await?;
    let needles = [
        // The snapshot may copy m1 first, making its event stale: either way it is counted.
        r#"indexferry_events_total{op="index",result="#,
        r#"indexferry_events_total{op="delete",result="applied"} 1"#,
        "indexferry_snapshot_documents_total{",
        "indexferry_snapshot_progress_ratio{",
        "indexferry_bulk_request_duration_seconds_bucket{",
        r#"indexferry_consumer_lag_messages{partition="0"} 0"#,
        r#"indexferry_migration_state{state="initialized"} 1"#,
    ];
    // Every series exists from the start (at zero): wait for the values.
    let mut last = String::new();
    let found = wait_for("metrics with the events applied and no lag", Duration::from_secs(30), || {
        last = scrape(port).unwrap_or_default();
        Ok(needles.iter().all(|n| last.contains(n)).then_some(()))
    })
    .await;
    let missing: Vec<&str> = needles.into_iter().filter(|n| !last.contains(n)).collect();
    assert!(found.is_ok(), "{missing:?} missing from:\n{last}");
    Ok(())
}

/// `GET path` on the metrics port: status and body.
fn get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()))
}

/// The health endpoints on the metrics port, as an orchestrator probes them: live at once,
/// ready once the worker serves, caught up only once the snapshot is done (it is throttled
/// here: 503 with the reason first). SIGTERM stops `run` cleanly (exit 0) well within
/// Kubernetes' 30 s grace, and a `run` started again on the same state resumes and serves.
#[tokio::test(flavor = "multi_thread")]
async fn run_answers_health_probes_and_stops_cleanly_on_sigterm() -> anyhow::Result<()> {
    let mut s = setup_with(300, |spec| (spec.throttle, spec.batch_size) = (60, 20)).await?;
    let port = 20000 + (rand::random::<u16>() % 20000);
    let start = || {
        let mut cmd = indexferry(&s.state, &["run", s.name()]);
        cmd.args(["--metrics-addr", &format!("127.0.0.1:{port}"), "--metrics-linger", "0s"]);
        spawn(cmd, &s.dir.path().join("run.log"))
    };
    let mut run = start()?;
    let ready = wait_for("/health/ready", Duration::from_secs(30), || {
        Ok(get(port, "/health/ready").ok().filter(|(status, _)| *status == 200))
    })
    .await?;
    assert!(ready.1.contains(r#""ok":true"#), "{ready:?}");
    assert_eq!(get(port, "/health/live")?.0, 200);
    let (code, why) = get(port, "/health/caught-up")?;
    assert_eq!(code, 503, "the snapshot of 300 documents at 60/s is not done: {why}");
    assert!(why.contains("snapshot of"), "{why}");
    wait_for("/health/caught-up", Duration::from_secs(60), || {
        Ok(get(port, "/health/caught-up").ok().filter(|(status, _)| *status == 200))
    })
    .await?;

    let asked = std::time::Instant::now();
    let exit = terminate(&mut run)?;
    let took = asked.elapsed();
    assert!(exit.success(), "a clean stop: {exit}");
    assert!(took < Duration::from_secs(30), "within Kubernetes' default grace: {took:?}");
    println!("run stopped {took:?} after SIGTERM");
    assert!(get(port, "/health/live").is_err(), "the process is gone");

    let mut again = start()?;
    wait_for("/health/ready after the restart", Duration::from_secs(30), || {
        Ok(get(port, "/health/ready").ok().filter(|(status, _)| *status == 200))
    })
    .await?;
    s.producer().await?.index("after", r#"{"resumed":true}"#, None).await?;
    wait_for("the event after the restart to be applied", Duration::from_secs(30), || {
        Ok((status(&s.state, s.name())?["replay"]["applied"].as_u64().unwrap_or(0) > 0).then_some(()))
    })
    .await?;
    assert!(terminate(&mut again)?.success());
    Ok(())
}

/// `run --stay` of a 50-document migration with its metrics on a port of its own; once
/// caught up, `step` (`rollover` or `cancel`), whose output it returns with the port, and
/// `run` still up, live, once its log says `notice`.
async fn stay_through(s: &mut Migration, step: &str, notice: &str) -> anyhow::Result<(u16, String)> {
    let port = 20000 + (rand::random::<u16>() % 20000);
    s.run_with(&["--stay", "--metrics-addr", &format!("127.0.0.1:{port}")])?;
    s.wait_caught_up(Duration::from_secs(60)).await?;
    let out = run_ok(s.cmd(&[step, s.name()]))?;
    wait_for("the stay notice", Duration::from_secs(30), || {
        let log = std::fs::read_to_string(s.file("run.log"))?;
        Ok(log.contains(notice).then_some(()))
    })
    .await?;
    assert!(s.run_proc().try_wait()?.is_none(), "run stays up after the {step}");
    assert_eq!(get(port, "/health/live")?.0, 200);
    Ok((port, out))
}

/// `run --stay`, as a StatefulSet runs it: after the rollover the process stays up, live and
/// ready, instead of exiting into a restart; started again on the rolled-over migration it
/// stays up too, where plain `run` refuses; SIGTERM stops it cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn run_stay_stays_up_after_the_rollover_until_sigterm() -> anyhow::Result<()> {
    let mut s = setup_with(50, |_| {}).await?;
    let (port, _) = stay_through(&mut s, "rollover", "staying up until stopped").await?;
    assert_eq!(get(port, "/health/ready")?.0, 200);
    assert!(terminate(s.run_proc())?.success(), "SIGTERM stops it cleanly");

    let plain = output(s.cmd(&["run", s.name()]))?;
    assert!(!plain.status.success(), "plain run refuses a rolled-over migration");
    s.run_with(&["--stay", "--metrics-addr", &format!("127.0.0.1:{port}")])?;
    wait_for("/health/ready of run --stay on a rolled-over migration", Duration::from_secs(30), || {
        Ok(get(port, "/health/ready").ok().filter(|(status, _)| *status == 200))
    })
    .await?;
    assert!(s.run_proc().try_wait()?.is_none());
    assert!(terminate(s.run_proc())?.success());
    Ok(())
}

/// `run --stay` after a `cancel`: it stays up rather than exit, so that a StatefulSet does
/// not start it again (its init container would then make the migration anew).
#[tokio::test(flavor = "multi_thread")]
async fn run_stay_stays_up_after_a_cancel() -> anyhow::Result<()> {
    let mut s = setup_with(50, |_| {}).await?;
    let (_, out) = stay_through(&mut s, "cancel", "was cancelled: nothing left to do").await?;
    assert!(out.contains("cancelled migration"), "{out}");
    assert!(terminate(s.run_proc())?.success());
    Ok(())
}

/// `--throttle` sets the snapshot's rate for one run instead of the recipe's: at the recipe's
/// 1 document per second these 300 would take five minutes; `--throttle 0` copies them at once.
#[tokio::test(flavor = "multi_thread")]
async fn the_snapshot_throttle_can_be_lifted_for_one_run() -> anyhow::Result<()> {
    let s = setup_with(300, |spec| (spec.throttle, spec.batch_size) = (1, 10)).await?;
    let mut snapshot =
        spawn(indexferry(&s.state, &["snapshot", s.name(), "--throttle", "0"]), &s.dir.path().join("s.log"))?;
    let exit = wait_for("the unthrottled snapshot", Duration::from_secs(60), || Ok(snapshot.try_wait()?)).await;
    if exit.is_err() {
        kill9(&mut snapshot)?;
    }
    assert!(exit?.success());
    assert_eq!(all_docs(&s.source_url, &s.names.dst).await?.len(), 300);
    Ok(())
}
