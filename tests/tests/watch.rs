//! What an operator watches: `status --watch`'s live line, the readiness line of `status`,
//! and `list`.

use indexferry_tests::*;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

#[tokio::test(flavor = "multi_thread")]
async fn watch_line_readiness_and_list_follow_a_migration() -> anyhow::Result<()> {
    let mut m = Scenario::new("watch").partitions(2).mappings(json!({})).docs(20, |_| json!({})).init().await?;
    let name = m.name().to_owned();

    let listed: serde_json::Value = serde_json::from_str(&run_ok(m.cmd(&["list", "--json"]))?)?;
    assert_eq!(listed[0]["name"], json!(name), "{listed}");
    assert_eq!(listed[0]["state"], json!("initialized"), "{listed}");
    let table = run_ok(m.cmd(&["status", &name]))?;
    assert!(table.contains(&format!("ready to roll over: no: snapshot of {} at 0.0%", m.names.src)), "{table}");

    // Two lines of the live view, a second apart.
    let mut watch = m.cmd(&["status", &name, "--watch"]);
    let mut child = Proc::from(watch.stdout(Stdio::piped()).spawn()?);
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for _ in 0..2 {
        let line = lines.next().transpose()?.unwrap_or_default();
        assert!(line.contains(" initialized | copied 0.0% 0 docs/s eta -"), "{line}");
        assert!(line.contains("| lag 0 events 0.0s | dead letters 0 | ready to roll over: no: snapshot of"), "{line}");
    }
    drop(child);

    run_ok(m.cmd(&["snapshot", &name]))?;
    m.producer().await?.index("late", "{}", None).await?;
    let s = m.status()?;
    assert_eq!(s["ready"]["why_not"], json!(null), "one event of lag is under max_lag: {s}");
    let table = run_ok(m.cmd(&["status", &name]))?;
    assert!(table.contains("ready to roll over: yes"), "{table}");

    m.rollover()?;
    let out = output(m.cmd(&["status", &name, "--watch"]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.lines().count() == 1, "the watch ends with the rollover: {text}");
    assert!(text.contains(" rolled_over | copied 100.0%") && text.contains("no: already rolled over"), "{text}");
    let list = run_ok(m.cmd(&["list"]))?;
    assert!(list.contains(&name) && list.contains("rolled_over") && list.contains("write pause"), "{list}");
    Ok(())
}
