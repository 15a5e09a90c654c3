//! `--log-format json` (and `INDEXFERRY_LOG_FORMAT=json`): every line on stderr is one JSON
//! object, the final error included, and the phases log inside spans carrying their fields.

use indexferry_tests::*;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Every stderr line of `out` parsed as JSON; fails on the first that is not an object.
fn json_lines(what: &str, out: &Output) -> Vec<Value> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(v) if v.is_object() => v,
            _ => panic!("{what}: a stderr line is not a JSON object: {line:?}\nall of stderr:\n{stderr}"),
        })
        .collect()
}

/// `indexferry migration <args> --log-format json`, its stderr as JSON lines.
fn logged(state: &std::path::Path, args: &[&str]) -> anyhow::Result<(Output, Vec<Value>)> {
    let mut c = indexferry(state, args);
    c.args(["--log-format", "json"]);
    let out = c.output()?;
    let lines = json_lines(&args.join(" "), &out);
    Ok((out, lines))
}

/// The lines logged inside a span `name`, in `spans` (the span list of each line).
fn in_span<'a>(lines: &'a [Value], name: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .flat_map(|l| l["spans"].as_array().into_iter().flatten())
        .filter(|s| s["name"] == json!(name))
        .collect()
}

/// Every line a command logged is in the span that names its migration and the command.
fn every_line_names_the_migration(command: &str, lines: &[Value], name: &str) {
    for line in lines {
        let spans = line["spans"].as_array().into_iter().flatten();
        assert!(
            spans.into_iter().any(|s| s["name"] == json!("migration")
                && s["migration"] == json!(name)
                && s["command"] == json!(command)),
            "{command}: a line outside the migration span: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_logs_json_lines_with_phase_spans_and_the_final_error() -> anyhow::Result<()> {
    let mut m = Scenario::new("logjson")
        .partitions(1)
        .mappings(json!({}))
        .docs(20, |i| json!({ "i": i }))
        .recipe(|r| r.slices = 2)
        .start()
        .await?;
    let (state, name, src) = (m.state.clone(), m.name().to_owned(), m.names.src.clone());
    let recipe = m.recipe_in(m.dir.path())?;

    let (out, lines) = logged(&state, &["init", recipe.to_str().unwrap_or_default()])?;
    assert!(out.status.success(), "init: {lines:?}");
    let init = in_span(&lines, "init");
    assert!(init.iter().any(|s| s["migration"] == json!(name)), "an init span naming the migration: {lines:?}");

    let (out, lines) = logged(&state, &["snapshot", &name])?;
    assert!(out.status.success(), "snapshot: {lines:?}");
    every_line_names_the_migration("snapshot", &lines, &name);
    let slices = in_span(&lines, "snapshot_slice");
    for slice in [0, 1] {
        assert!(
            slices.iter().any(|s| s["pair"] == json!(src) && s["slice"] == json!(slice)),
            "a snapshot_slice span of {src} slice {slice}: {lines:?}"
        );
    }

    let (out, lines) = logged(&state, &["status", &name])?;
    assert!(out.status.success(), "status: {lines:?}");

    let (out, lines) = logged(&state, &["consume", &name, "--until-caught-up"])?;
    assert!(out.status.success(), "consume: {lines:?}");
    assert!(!in_span(&lines, "replay").is_empty(), "lines in a replay span: {lines:?}");
    every_line_names_the_migration("consume", &lines, &name);

    let (out, lines) = logged(&state, &["reconcile", &name])?;
    assert!(out.status.success(), "reconcile: {lines:?}");
    let passes = in_span(&lines, "reconcile_pass");
    assert!(
        passes.iter().any(|s| s["pass"] == json!("full") && s["pair"] == json!(src)),
        "a reconcile_pass span of the full pass over {src}: {lines:?}"
    );
    every_line_names_the_migration("reconcile", &lines, &name);

    m.producer().await?.index("after", r#"{"i":-1}"#, None).await?;
    let (out, lines) = logged(&state, &["rollover", &name])?;
    assert!(out.status.success(), "rollover: {lines:?}");
    let steps: Vec<&Value> = in_span(&lines, "rollover_step").into_iter().map(|s| &s["step"]).collect();
    for step in ["block", "grace", "drain", "swap"] {
        assert!(steps.contains(&&json!(step)), "a rollover_step span with step={step}: {lines:?}");
    }
    every_line_names_the_migration("rollover", &lines, &name);

    let (out, lines) = logged(&state, &["verify", &name])?;
    assert!(out.status.success(), "verify: {lines:?}");
    assert!(
        in_span(&lines, "verify_pair").iter().any(|s| s["pair"] == json!(src)),
        "a verify_pair span of {src}: {lines:?}"
    );
    every_line_names_the_migration("verify", &lines, &name);

    // A failing command: its error is the last line, an ERROR object, not plain text.
    let (out, lines) = logged(&state, &["status", "no-such-migration"])?;
    assert_eq!(out.status.code(), Some(1), "{lines:?}");
    let last = lines.last().expect("the error is logged");
    assert_eq!(last["level"], json!("ERROR"), "{last}");
    let message = last["fields"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("no-such-migration"), "the error names what failed: {last}");
    Ok(())
}

/// The producer binary, through the environment variable: invalid input lines and the final
/// error are JSON objects too.
#[test]
fn the_producer_logs_json_from_the_environment_variable() -> anyhow::Result<()> {
    let mut c = Command::new(bin("indexferry-producer"));
    c.args(["publish", "--topic", &unique("logjson"), "--dry-run"]).env("INDEXFERRY_LOG_FORMAT", "json");
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn()?;
    child.stdin.take().expect("stdin").write_all(b"{\"not\":\"an event\"}\n")?;
    let out = child.wait_with_output()?;
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines("publish", &out);
    assert!(
        lines.iter().any(|l| l["fields"]["message"].as_str().is_some_and(|m| m.starts_with("line 1: invalid event"))),
        "{lines:?}"
    );
    let last = lines.last().expect("the error is logged");
    assert_eq!(last["level"], json!("ERROR"), "{last}");
    assert!(last["fields"]["message"].as_str().unwrap_or_default().contains("invalid event(s) rejected"), "{last}");
    Ok(())
}
