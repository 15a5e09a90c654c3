//! The Grafana dashboard and the metrics behind it: every name the dashboard queries is
//! exported by a worker from its start; a real Prometheus scraping a worker reads the lag the
//! dashboard shows; the state and the rollover's write pause reach the worker's `/metrics`
//! although the rollover runs in another process.

use indexferry_common::es::Method;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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

/// An initialised migration of a few documents on one partition, its rollover's grace `grace`.
async fn migration(prefix: &str, grace: &'static str) -> anyhow::Result<Migration> {
    Scenario::new(prefix)
        .partitions(1)
        .mappings(json!({}))
        .docs(5, |i| json!({ "i": i }))
        .recipe(move |r| (r.grace, r.extra) = (grace, "drain_timeout = \"10s\""))
        .init()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_queries_is_exported_from_the_start() -> anyhow::Result<()> {
    let mut names = std::collections::BTreeSet::new();
    queried_names(&dashboard()?, &mut names);
    assert!(names.len() >= 8, "the dashboard queries the migration's metrics: {names:?}");

    let mut m = migration("dash", "500ms").await?;
    let port = free_port()?;
    m.run_with(&["--metrics-addr", &format!("127.0.0.1:{port}")])?;
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
    let mut m = migration("prom", "500ms").await?;
    run_ok(m.cmd(&["snapshot", m.name()]))?;
    let dst = m.names.dst.clone();
    let c = cluster(&m.target_url).await?;
    c.json::<Value>(Method::Post, &format!("/{dst}/_close"), &[], None).await?;
    for i in 0..3 {
        m.producer().await?.index(&format!("held{i}"), r#"{"held":true}"#, None).await?;
    }
    let port = free_port()?;
    let mut consume = m.spawn("consume", &["--metrics-addr", &format!("127.0.0.1:{port}")])?;
    let prom = Prometheus::start(m.dir.path(), port)?;

    // The dashboard's own query, for every worker.
    let lag = panel_query("Consumer lag per partition (messages)")?.replace("$instance", ".+");
    let held = wait_for("Prometheus to read a lag of 3", Duration::from_secs(60), || {
        Ok(prom.query(&lag)?.filter(|v| *v == 3.0))
    })
    .await;
    c.json::<Value>(Method::Post, &format!("/{dst}/_open"), &[], None).await?;
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
    let mut m = migration("pause", "3s").await?;
    let port = free_port()?;
    m.run_with(&["--metrics-addr", &format!("127.0.0.1:{port}")])?;
    m.wait_caught_up(Duration::from_secs(60)).await?;
    let body = scrape(port)?;
    assert_eq!(value(&body, r#"indexferry_migration_state{state="initialized"}"#), Some(1.0), "{body}");

    let mut rollover = m.spawn("rollover", &[])?;
    let during = wait_for("the worker's state gauge at rolling_over", Duration::from_secs(30), || {
        let body = scrape(port).unwrap_or_default();
        Ok((value(&body, r#"indexferry_migration_state{state="rolling_over"}"#) == Some(1.0)).then_some(body))
    })
    .await;
    let rolled = rollover.wait()?;
    let during = during?;
    assert_eq!(value(&during, r#"indexferry_migration_state{state="initialized"}"#), Some(0.0), "{during}");
    assert!(rolled.success(), "rollover: {}", std::fs::read_to_string(m.file("rollover.log"))?);

    // Stopped by the rollover, the worker waits for this scrape before it exits.
    let after = wait_for("the worker's rolled_over state", Duration::from_secs(10), || {
        let body = scrape(port).unwrap_or_default();
        Ok((value(&body, r#"indexferry_migration_state{state="rolled_over"}"#) == Some(1.0)).then_some(body))
    })
    .await?;
    let pause = value(&after, "indexferry_rollover_write_pause_seconds").unwrap_or(0.0);
    let recorded = m.status()?;
    let ms = recorded["last_rollover"]["write_pause_ms"].as_f64().unwrap_or(-1.0);
    assert!(pause >= 3.0 && (pause - ms / 1000.0).abs() < 0.001, "pause {pause}s, recorded {ms} ms: {after}");
    let run = m.run_proc();
    let exit =
        wait_for("the worker to exit after its final scrape", Duration::from_secs(60), || Ok(run.try_wait()?)).await?;
    assert!(exit.success(), "{}", std::fs::read_to_string(m.file("run.log"))?);
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
