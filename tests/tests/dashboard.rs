//! The Grafana dashboard and the metrics behind it: every name the dashboard queries is
//! exported by a worker from its start; a real Prometheus scraping a worker reads the lag the
//! dashboard shows; the state and the rollover's write pause reach the worker's `/metrics`
//! although the rollover runs in another process.

use indexferry_common::es::Method;
use indexferry_producer::Producer;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn scrape(port: u16) -> anyhow::Result<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

/// The value of the series `series` (name and labels as exposed) in a scrape.
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn dashboard() -> anyhow::Result<Value> {
    let path = repo_file("deploy/helm/indexferry/dashboards/indexferry.json");
    Ok(serde_json::from_slice(&std::fs::read(&path)?)?)
}

/// The first query of the dashboard's panel `title`.
fn panel_query(title: &str) -> anyhow::Result<String> {
    let d = dashboard()?;
    let panel = d["panels"].as_array().and_then(|p| p.iter().find(|p| p["title"] == json!(title)));
    let expr = panel.and_then(|p| p["targets"][0]["expr"].as_str());
    Ok(expr.ok_or_else(|| anyhow::anyhow!("no panel {title:?} with a query in the dashboard"))?.to_owned())
}

/// Every `indexferry_*` name in the dashboard's PromQL (panel targets and variable queries).
fn queried_names(v: &Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v.as_str()) {
                    ("expr" | "query" | "definition", Some(promql)) => {
                        for (i, _) in promql.match_indices("indexferry_") {
                            let name: String = promql[i..]
                                .chars()
                                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                                .collect();
                            out.insert(name);
                        }
                    }
                    _ => queried_names(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| queried_names(v, out)),
        _ => {}
    }
}

/// A snapshotted migration of a few documents on one partition; returns its producer.
async fn migration(dir: &Path, n: &Names, grace: &str) -> anyhow::Result<Producer> {
    let url = es8();
    create_source(&url, &n.src, &n.alias, &n.topic, 1, json!({})).await?;
    let p = Producer::connect(producer_config(&url, &n.topic, &n.alias)).await?;
    for i in 0..5 {
        p.index(&format!("d{i}"), &json!({ "i": i }).to_string(), None).await?;
    }
    let spec = RecipeSpec {
        grace,
        extra: "drain_timeout = \"10s\"",
        ..RecipeSpec::new(&n.name, &url, &url, &n.topic, &n.src, &n.dst, &n.alias)
    };
    let recipe = spec.write(dir)?;
    run_ok(indexferry(&dir.join("state"), &["init", recipe.to_str().unwrap_or_default()]))?;
    Ok(p)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_queries_is_exported_from_the_start() -> anyhow::Result<()> {
    let mut names = std::collections::BTreeSet::new();
    queried_names(&dashboard()?, &mut names);
    assert!(names.len() >= 8, "the dashboard queries the migration's metrics: {names:?}");

    let dir = tempfile::tempdir()?;
    let n = Names::new("dash");
    let _p = migration(dir.path(), &n, "500ms").await?;
    let port = free_port()?;
    let mut cmd = indexferry(&dir.path().join("state"), &["run", &n.name]);
    cmd.args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
    let _run = spawn(cmd, &dir.path().join("run.log"))?;
    // No event was published: lag, events, dead letters and the pause are all still zero.
    let body = wait_for("the worker's first lag measurement", Duration::from_secs(30), || {
        let body = scrape(port).unwrap_or_default();
        Ok(body.contains("indexferry_consumer_lag_messages{").then_some(body))
    })
    .await?;
    let exported = |name: &str| body.lines().any(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(['{', ' '])));
    let missing: Vec<&String> = names.iter().filter(|n| !exported(n)).collect();
    assert!(missing.is_empty(), "queried by the dashboard, not exported: {missing:?}\n{body}");
    for zero in [
        r#"indexferry_events_total{op="index",result="applied"} 0"#,
        r#"indexferry_dead_letters_total{kind="rejected",stage="replay"} 0"#,
        r#"indexferry_consumer_lag_messages{partition="0"} 0"#,
        "indexferry_rollover_write_pause_seconds 0",
    ] {
        assert!(body.contains(zero), "{zero} missing:\n{body}");
    }
    Ok(())
}

/// The lag query of the dashboard, through a real Prometheus: 3 events held back by a closed
/// target, then 0 once it opens.
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_reads_the_consumer_lag_of_a_running_worker() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let n = Names::new("prom");
    let p = migration(dir.path(), &n, "500ms").await?;
    run_ok(indexferry(&state, &["snapshot", &n.name]))?;
    let c = cluster(&es8()).await?;
    c.json::<Value>(Method::Post, &format!("/{}/_close", n.dst), &[], None).await?;
    for i in 0..3 {
        p.index(&format!("held{i}"), r#"{"held":true}"#, None).await?;
    }
    let port = free_port()?;
    let mut cmd = indexferry(&state, &["consume", &n.name]);
    cmd.args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
    let mut consume = spawn(cmd, &dir.path().join("consume.log"))?;
    let prom = Prometheus::start(dir.path(), port)?;

    // The dashboard's own query, for every worker.
    let lag = panel_query("Consumer lag per partition (messages)")?.replace("$instance", ".+");
    let held = wait_for("Prometheus to read a lag of 3", Duration::from_secs(60), || {
        Ok(prom.query(&lag)?.filter(|v| *v == 3.0))
    })
    .await;
    c.json::<Value>(Method::Post, &format!("/{}/_open", n.dst), &[], None).await?;
    held?;
    wait_for("Prometheus to read a lag of 0", Duration::from_secs(60), || Ok(prom.query(&lag)?.filter(|v| *v == 0.0)))
        .await?;
    let applied = r#"sum(indexferry_events_total{job="indexferry",result="applied"})"#;
    wait_for("Prometheus to count 3 applied events", Duration::from_secs(30), || {
        Ok(prom.query(applied)?.filter(|v| *v == 3.0))
    })
    .await?;
    terminate(&mut consume)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_shows_the_rollover_state_and_its_write_pause() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let n = Names::new("pause");
    let _p = migration(dir.path(), &n, "3s").await?;
    let port = free_port()?;
    let mut cmd = indexferry(&state, &["run", &n.name]);
    cmd.args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
    let mut run = spawn(cmd, &dir.path().join("run.log"))?;
    wait_caught_up(&state, &n.name, Duration::from_secs(60)).await?;
    let body = scrape(port)?;
    assert_eq!(value(&body, r#"indexferry_migration_state{state="initialized"}"#), Some(1.0), "{body}");

    let mut rollover = spawn(indexferry(&state, &["rollover", &n.name]), &dir.path().join("rollover.log"))?;
    let during = wait_for("the worker's state gauge at rolling_over", Duration::from_secs(30), || {
        let body = scrape(port).unwrap_or_default();
        Ok((value(&body, r#"indexferry_migration_state{state="rolling_over"}"#) == Some(1.0)).then_some(body))
    })
    .await;
    let rolled = rollover.wait()?;
    let during = during?;
    assert_eq!(value(&during, r#"indexferry_migration_state{state="initialized"}"#), Some(0.0), "{during}");
    assert!(rolled.success(), "rollover: {}", std::fs::read_to_string(dir.path().join("rollover.log"))?);

    // Stopped by the rollover, the worker waits for this scrape before it exits.
    let after = wait_for("the worker's rolled_over state", Duration::from_secs(10), || {
        let body = scrape(port).unwrap_or_default();
        Ok((value(&body, r#"indexferry_migration_state{state="rolled_over"}"#) == Some(1.0)).then_some(body))
    })
    .await?;
    let pause = value(&after, "indexferry_rollover_write_pause_seconds").unwrap_or(0.0);
    let recorded = status(&state, &n.name)?;
    let ms = recorded["last_rollover"]["write_pause_ms"].as_f64().unwrap_or(-1.0);
    assert!(pause >= 3.0 && (pause - ms / 1000.0).abs() < 0.001, "pause {pause}s, recorded {ms} ms: {after}");
    let exit =
        wait_for("the worker to exit after its final scrape", Duration::from_secs(60), || Ok(run.try_wait()?)).await?;
    assert!(exit.success(), "{}", std::fs::read_to_string(dir.path().join("run.log"))?);
    Ok(())
}

/// A Prometheus server of the Debian package, scraping one worker every 500 ms.
struct Prometheus {
    _proc: Proc,
    port: u16,
}

impl Prometheus {
    fn start(dir: &Path, target: u16) -> anyhow::Result<Prometheus> {
        let exe = which("prometheus").ok_or_else(|| {
            anyhow::anyhow!("prometheus is not installed (Debian package `prometheus`): run dev/setup")
        })?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\nscrape_configs:\n  - job_name: indexferry\n    \
                 static_configs:\n      - targets: [\"127.0.0.1:{target}\"]\n"
            ),
        )?;
        let port = free_port()?;
        let mut c = Command::new(exe);
        c.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // Recent samples only: a series the worker stopped exporting is gone at once.
            .arg("--query.lookback-delta=2s");
        let proc = spawn(c, &dir.join("prometheus.log"))?;
        Ok(Prometheus { _proc: proc, port })
    }

    /// The single value of an instant query, `None` while it has none (or Prometheus is not up).
    fn query(&self, promql: &str) -> anyhow::Result<Option<f64>> {
        let out = Command::new("curl")
            .args(["-sfG", &format!("http://127.0.0.1:{}/api/v1/query", self.port), "--data-urlencode"])
            .arg(format!("query={promql}"))
            .output()?;
        if !out.status.success() {
            return Ok(None);
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        anyhow::ensure!(result.len() <= 1, "{promql} gave several series: {v}");
        Ok(result.first().and_then(|r| r["value"][1].as_str()?.parse().ok()))
    }
}

fn which(exe: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(exe)).find(|p| p.is_file())
}
