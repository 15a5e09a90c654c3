//! The container image runs a whole migration: `init`, then `run` in a container that is
//! killed and started again on the same state volume, `status`, `rollover` and `verify` each
//! in a container of its own, with the application's load running throughout. And `cancel`
//! from one container stops `run` in another, which its signals cannot reach. The image is
//! built by `dev/image` from the binaries these tests use; podman runs it.

use indexferry_tests::container::Deployment;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

/// The scenario's recipe in a folder of its own, mounted at `/etc/indexferry`: the folder,
/// and the recipe's path in the containers.
fn mounted_recipe(m: &Migration) -> anyhow::Result<(std::path::PathBuf, String)> {
    let config = m.file("config");
    std::fs::create_dir(&config)?;
    let recipe = m.recipe_in(&config)?;
    Ok((config, format!("/etc/indexferry/{}", recipe.file_name().and_then(|f| f.to_str()).unwrap_or_default())))
}

fn status_in(d: &Deployment, name: &str) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(&d.command_ok(&["migration", "status", name, "--json"])?)?)
}

/// Polls `status` in a container every second until `check` holds.
async fn wait_status(d: &Deployment, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let limit = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let s = status_in(d, name)?;
        if check(&s) {
            return Ok(s);
        }
        if std::time::Instant::now() > limit {
            anyhow::bail!("timed out waiting for {what}: {s}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn copied(s: &Value) -> u64 {
    s["pairs"].as_array().map_or(0, |p| p.iter().filter_map(|p| p["copied"].as_u64()).sum())
}

async fn wait_exit(d: &Deployment, container: &str, limit: Duration) -> anyhow::Result<i32> {
    wait_for(&format!("{container} to exit"), limit, || d.exited(container)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_migration_runs_from_the_image_through_a_kill_and_a_restart() -> anyhow::Result<()> {
    // Throttled, so that the kill comes while the snapshot copies.
    let mut m = Scenario::new("image")
        .load(3000, 100)
        .recipe(|r| (r.mappings, r.slices, r.batch_size, r.throttle) = (changed_mappings(), 2, 100, 400))
        .start()
        .await?;
    let ((config, recipe), name) = (mounted_recipe(&m)?, m.name().to_owned());
    let mut d = Deployment::new(&config)?;
    let (first, second) = (unique("indexferry-run"), unique("indexferry-run"));

    d.command_ok(&["migration", "init", &recipe])?;
    d.start(&first, &["migration", "run", &name])?;
    let before = wait_status(&d, &name, "the snapshot to copy", |s| copied(s) >= 500).await?;
    d.kill(&first)?;
    d.start(&second, &["migration", "run", &name])?;
    let caught = wait_status(&d, &name, "the snapshot done and the replay caught up", caught_up).await;
    if caught.is_err() {
        eprintln!("{}", d.logs(&second));
    }
    let caught = caught?;
    let resumes: u64 = caught["pairs"].as_array().map_or(0, |p| p.iter().filter_map(|p| p["resumes"].as_u64()).sum());
    assert!(
        resumes >= 1,
        "the second run resumed the snapshot from its checkpoints: {caught} (before the kill: {before})"
    );

    let out = d.command_ok(&["migration", "rollover", &name])?;
    assert!(out.contains("write pause: "), "{out}");
    let exit = wait_exit(&d, &second, Duration::from_secs(30)).await?;
    assert_eq!(exit, 0, "run stops by itself once rolled over: {}", d.logs(&second));
    // Logs are JSON lines.
    let logs = d.logs(&second);
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: Value = serde_json::from_str(l).map_err(|e| anyhow::anyhow!("not a JSON log line ({e}): {l}"))?;
        assert!(v["level"].is_string() || v["fields"].is_object(), "{l}");
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let (done, failed) = m.load().stop()?;
    assert_eq!(failed, 0, "no write may fail ({done} done)");
    assert!(done > 100, "the load really ran ({done} writes)");
    let s = status_in(&d, &name)?;
    assert_eq!(s["state"], "rolled_over", "{s}");

    let out = d.command(&["migration", "verify", &name, "--json"])?;
    let report: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("verify printed no report ({e}): {}", String::from_utf8_lossy(&out.stderr)))?;
    assert_eq!(report["identical"], json!(true), "{report}");
    assert!(report["pairs"][0]["source_docs"].as_u64().unwrap_or(0) >= 3000, "{report}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_in_one_container_stops_run_in_another() -> anyhow::Result<()> {
    let mut m = Scenario::new("image-cancel").partitions(1).load(300, 20).start().await?;
    let ((config, recipe), name) = (mounted_recipe(&m)?, m.name().to_owned());
    let mut d = Deployment::new(&config)?;
    d.command_ok(&["migration", "init", &recipe])?;
    let run = unique("indexferry-run");
    d.start(&run, &["migration", "run", &name])?;
    wait_status(&d, &name, "the snapshot done", |s| {
        s["pairs"].as_array().is_some_and(|p| p.iter().all(|p| p["done"] == json!(true)))
    })
    .await?;

    // The worker is pid 1 in its container, and so is `cancel` in its own: a signal by pid
    // would reach the wrong process. The request goes through the state volume.
    let out = d.command_ok(&["migration", "cancel", &name])?;
    assert!(out.contains("stopping the consume worker") || out.contains("stopping the snapshot worker"), "{out}");
    assert!(out.contains("cancelled migration"), "{out}");
    let exit = wait_exit(&d, &run, Duration::from_secs(10)).await?;
    assert_eq!(exit, 0, "run stopped cleanly when asked: {}", d.logs(&run));
    assert!(d.logs(&run).contains("cancel asked the workers to stop"));
    let (_, failed) = m.load().stop()?;
    assert_eq!(failed, 0);
    let (target, dst) = (cluster(&m.target_url).await?, &m.names.dst);
    assert!(!target.exists(dst).await?, "cancel deleted the target {dst}");
    Ok(())
}
