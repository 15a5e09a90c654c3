//! The snapshot worker and the consumer killed with SIGKILL mid-way — real process kills —
//! then restarted, under a live write load: the migration still converges to zero
//! differences, and each slice resumes where its checkpoint says: the snapshot reads each
//! document of its point-in-time once, no more (a resume from the start) and no fewer (a
//! skipped batch).

use indexferry_tests::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_snapshot_and_consumer_then_restart_converges() -> anyhow::Result<()> {
    let (slices, batch) = (2u32, 250usize);
    let mut m = Scenario::new("kill")
        .load(6000, 120)
        .recipe(move |r| {
            (r.mappings, r.slices, r.batch_size, r.throttle) = (changed_mappings(), slices, batch, 1500);
            // Small batches, many in flight: a kill lands between batches applied out of order.
            r.extra = "[replay]\nbatch_size = 50\nbatch_deadline = \"20ms\"\nin_flight = 8\n";
        })
        .init()
        .await?;
    let load = m.load();
    // The workers' output goes where the scenario prints it when they do not catch up.
    let (url, state, name, log) = (&m.source_url.clone(), &m.state.clone(), &m.name().to_owned(), m.file("run.log"));
    let src = &m.names.src.clone();
    // The point-in-time is opened between these two counts: it holds between as many
    // documents (the load creates more than it deletes).
    let source = cluster(url).await?;
    let before = source.count(src, true).await?;
    let mut snapshot = spawn(indexferry(state, &["snapshot", name]), &log)?;
    let mut consume = spawn(indexferry(state, &["consume", name]), &log)?;
    wait_for("the snapshot's first batch", Duration::from_secs(60), || {
        Ok((status(state, name)?["pairs"][0]["copied"].as_u64().unwrap_or(0) > 0).then_some(()))
    })
    .await?;
    let after = source.count(src, true).await?;

    // Kill each twice, at different points.
    for round in 0..2 {
        let floor = 1500 * (round + 1);
        wait_for("snapshot progress", Duration::from_secs(60), || {
            let s = status(state, name)?;
            Ok((s["pairs"][0]["copied"].as_u64().unwrap_or(0) >= floor).then_some(()))
        })
        .await?;
        kill9(&mut snapshot)?;
        wait_for("events applied", Duration::from_secs(60), || {
            let s = status(state, name)?;
            Ok((s["replay"]["applied"].as_u64().unwrap_or(0) + s["replay"]["stale"].as_u64().unwrap_or(0)
                > 100 * (round + 1))
                .then_some(()))
        })
        .await?;
        kill9(&mut consume)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        snapshot = spawn(indexferry(state, &["snapshot", name]), &log)?;
        consume = spawn(indexferry(state, &["consume", name]), &log)?;
    }
    let s = m.wait_caught_up(Duration::from_secs(180)).await?;
    let pair = &s["pairs"][0];
    let n = |k: &str| pair[k].as_u64().unwrap_or(0);
    let (resumes, restarts) = (n("resumes"), n("restarts"));
    // Counted per checkpointed batch: a batch written before a kill cut off its checkpoint
    // is counted once, when written again after the resume.
    let written = n("applied") + n("stale") + n("dead_lettered");
    eprintln!(
        "kill-and-restart: point-in-time between {before} and {after} documents; copied={} written={written} \
         resumes={resumes} recopied<={} restarts={restarts} replay applied={} stale={}",
        n("copied"),
        n("recopied"),
        s["replay"]["applied"],
        s["replay"]["stale"]
    );
    assert_eq!(restarts, 0, "resumed on the same point-in-time, not started over");
    assert!(resumes >= 2, "each kill was followed by a resume: {pair}");
    // Deletes may briefly outrun creates: a little slack below and above. A resume from the
    // start reads at least 1,500 documents again; a skipped batch misses 250.
    let slack = 50;
    assert!(
        written + slack >= before && written <= after + slack,
        "the snapshot wrote {written} documents, its point-in-time held between {before} and {after}: \
         a resume re-read or skipped batches: {pair}"
    );
    assert!(after.saturating_sub(before) + 2 * slack < batch as u64, "a skipped batch would show: {before}..{after}");

    let (done, failed) = load.stop()?;
    assert_eq!(failed, 0, "{done} writes, none failed");
    let out = m.rollover()?;
    assert!(out.contains("write pause:"), "{out}");
    for child in [&mut snapshot, &mut consume] {
        let exit = wait_for("worker exit after rollover", Duration::from_secs(30), || Ok(child.try_wait()?)).await?;
        let _ = exit;
    }
    let (report, ok) = m.verify()?;
    assert_eq!(report["identical"], json!(true), "{report}");
    assert!(ok, "verify exits 0");
    Ok(())
}
