//! The benchmark's own tools, checked small against the real servers: `gen` is
//! reproducible, `bulk` loads every document, `fill` publishes one valid event per document,
//! and `consume --until-caught-up` applies them all and stops by itself.

use indexferry_tests::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

fn producer(args: &[&str]) -> Command {
    let mut c = Command::new(bin("indexferry-producer"));
    c.args(args);
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_data_loads_fills_a_topic_and_is_replayed_until_caught_up() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (a, b, mappings) = (dir.path().join("a.ndjson"), dir.path().join("b.ndjson"), dir.path().join("m.json"));
    let path = |p: &std::path::Path| p.to_str().unwrap_or_default().to_owned();
    run_ok(producer(&["gen", "--docs", "500", "--seed", "7", "--out", &path(&a), "--mappings", &path(&mappings)]))?;
    run_ok(producer(&["gen", "--docs", "500", "--seed", "7", "--out", &path(&b)]))?;
    let text = std::fs::read_to_string(&a)?;
    assert_eq!(text, std::fs::read_to_string(&b)?, "the same seed writes the same file");
    assert_eq!(text.lines().count(), 1000, "an action and a document per line pair");
    let avg = text.lines().skip(1).step_by(2).map(str::len).sum::<usize>() / 500;
    assert!((800..1300).contains(&avg), "documents of about 1 KB: {avg}");

    let url = es8();
    let Names { src, dst, alias, topic, name } = Names::new("bt");
    let mappings: Value = serde_json::from_str(&std::fs::read_to_string(&mappings)?)?;
    create_source(&url, &src, &alias, &topic, 2, mappings.clone()).await?;
    let out = run_ok(producer(&["bulk", "--url", &url, "--index", &src, "--file", &path(&a), "--concurrency", "3"]))?;
    let figures: Value = serde_json::from_str(out.trim())?;
    assert_eq!(figures["docs"], json!(500), "{figures}");
    assert_eq!(all_docs(&url, &src).await?.len(), 500);

    let state = dir.path().join("state");
    let recipe =
        RecipeSpec { mappings, ..RecipeSpec::new(&name, &url, &url, &topic, &src, &dst, &alias) }.write(dir.path())?;
    run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    run_ok(producer(&["fill", "--brokers", &brokers(), "--topic", &topic, "--index", &src, "--file", &path(&a)]))?;
    let events = read_topic(&topic, 500, Duration::from_secs(30))?;
    assert_eq!(events.len(), 500);
    for (key, payload) in &events {
        let e = indexferry_schemas::decode(key.as_deref().map(str::as_bytes), payload)?;
        assert_eq!(e.index, src);
    }

    // Stops by itself once the end offsets read at start are applied.
    let mut consume = spawn(indexferry(&state, &["consume", &name, "--until-caught-up"]), &dir.path().join("c.log"))?;
    let exit = wait_for("consume to stop by itself", Duration::from_secs(60), || Ok(consume.try_wait()?)).await?;
    assert!(exit.success());
    let s = status(&state, &name)?;
    assert_eq!((s["replay"]["applied"].clone(), s["replay"]["lag_messages"].clone()), (json!(500), json!(0)), "{s}");
    let source = all_docs(&url, &src).await?;
    assert_eq!(all_docs(&url, &dst).await?, source, "the replayed copy equals the loaded one");
    Ok(())
}
