//! The snapshot worker and the consumer killed with SIGKILL mid-way — real process kills —
//! then restarted, under a live write load: the migration still converges to zero
//! differences, and each slice re-copies at most one batch.

use indexferry_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_snapshot_and_consumer_then_restart_converges() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let url = es8();
    let Names { src, dst, alias, topic, name } = Names::new("kill");
    create_source(&url, &src, &alias, &topic, 3, source_mappings()).await?;
    let load = Load::start(dir.path(), &url, &alias, &topic, 6000, 120)?;
    wait_docs(&url, &src, 6000).await?;

    let (slices, batch) = (2u32, 250usize);
    let recipe = RecipeSpec {
        mappings: changed_mappings(),
        slices,
        batch_size: batch,
        throttle: 1500,
        // Small batches, many in flight: a kill lands between batches applied out of order.
        extra: "[replay]\nbatch_size = 50\nbatch_deadline = \"20ms\"\nin_flight = 8\n",
        ..RecipeSpec::new(&name, &url, &url, &topic, &src, &dst, &alias)
    }
    .write(dir.path())?;
    run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    let log = dir.path().join("workers.log");
    let mut snapshot = spawn(indexferry(&state, &["snapshot", &name]), &log)?;
    let mut consume = spawn(indexferry(&state, &["consume", &name]), &log)?;

    // Kill each twice, at different points.
    for round in 0..2 {
        let floor = 1500 * (round + 1);
        wait_for("snapshot progress", Duration::from_secs(60), || {
            let s = status(&state, &name)?;
            Ok((s["pairs"][0]["copied"].as_u64().unwrap_or(0) >= floor).then_some(()))
        })
        .await?;
        kill9(&mut snapshot)?;
        wait_for("events applied", Duration::from_secs(60), || {
            let s = status(&state, &name)?;
            Ok((s["replay"]["applied"].as_u64().unwrap_or(0) + s["replay"]["stale"].as_u64().unwrap_or(0)
                > 100 * (round + 1))
                .then_some(()))
        })
        .await?;
        kill9(&mut consume)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        snapshot = spawn(indexferry(&state, &["snapshot", &name]), &log)?;
        consume = spawn(indexferry(&state, &["consume", &name]), &log)?;
    }
    let s = match wait_caught_up(&state, &name, Duration::from_secs(180)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
            return Err(e);
        }
    };
    let pair = &s["pairs"][0];
    let (resumes, recopied, restarts) = (
        pair["resumes"].as_u64().unwrap_or(0),
        pair["recopied"].as_u64().unwrap_or(0),
        pair["restarts"].as_u64().unwrap_or(0),
    );
    eprintln!(
        "kill-and-restart: copied={} resumes={resumes} recopied<={recopied} restarts={restarts} replay applied={} stale={}",
        pair["copied"], s["replay"]["applied"], s["replay"]["stale"]
    );
    assert_eq!(restarts, 0, "resumed on the same point-in-time, not started over");
    assert!(resumes >= 2, "each kill was followed by a resume: {pair}");
    assert!(recopied <= resumes * batch as u64, "at most one batch per slice per resume: {pair}");
    assert!(pair["copied"].as_u64().unwrap_or(0) >= 6000, "{pair}");

    let (done, failed) = load.stop()?;
    assert_eq!(failed, 0, "{done} writes, none failed");
    let out = run_ok(indexferry(&state, &["rollover", &name]))?;
    assert!(out.contains("write pause:"), "{out}");
    for child in [&mut snapshot, &mut consume] {
        let exit = wait_for("worker exit after rollover", Duration::from_secs(30), || Ok(child.try_wait()?)).await?;
        let _ = exit;
    }
    let out = output(indexferry(&state, &["verify", &name, "--json"]))?;
    let report: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["identical"], json!(true), "{report}");
    assert_eq!(out.status.code(), Some(0));
    Ok(())
}
