//! Who writes the application's changes in the chaos harness, and who publishes their events:
//! the producer library's load, or the official Python client through two capture proxies
//! whose counters are summed over their runs.

use super::*;

/// Who publishes the application's change events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Capture {
    /// The load, through the producer library.
    App,
    /// `indexferry-proxy` in front of the source; the load only writes.
    Proxy,
}

impl Capture {
    pub(super) fn from_env() -> anyhow::Result<Capture> {
        match std::env::var("INDEXFERRY_CHAOS_CAPTURE").as_deref() {
            Err(_) | Ok("app") => Ok(Capture::App),
            Ok("proxy") => Ok(Capture::Proxy),
            Ok(other) => anyhow::bail!("INDEXFERRY_CHAOS_CAPTURE={other:?}: expected app or proxy"),
        }
    }
}

/// The application's writes: the producer library's load, or a Python client writing
/// through the proxies.
pub(super) enum Writer {
    Own(Load),
    Proxied(PyLoad),
}

/// What the load says when stopped.
pub(super) struct Written {
    pub(super) done: u64,
    pub(super) failed: u64,
    /// The first failures (the Rust load's messages, the Python load's kinds).
    pub(super) failures: Value,
    /// Attempts made again (the Python load; the producer library does not count them).
    pub(super) retried: Option<u64>,
}

impl Writer {
    pub(super) fn stop(self) -> anyhow::Result<Written> {
        let (report, failures) = match self {
            Writer::Own(load) => {
                let r = load.report()?;
                let failures = r["first_errors"].clone();
                (r, failures)
            }
            Writer::Proxied(load) => {
                let r = load.stop()?;
                let failures = r["failures"].clone();
                (r, failures)
            }
        };
        Ok(Written {
            done: report["done"].as_u64().unwrap_or(0),
            failed: report["failed"].as_u64().unwrap_or(u64::MAX),
            failures,
            retried: report["retried"].as_u64(),
        })
    }
}

/// One proxy of the capture, with its counters summed over its runs (a start begins them at
/// zero again; `gaps_from_earlier_runs` is each start's count of what the run before left).
pub(super) struct Captor {
    pub(super) proxy: RunningProxy,
    pub(super) runs: u64,
    pub(super) earlier: BTreeMap<String, u64>,
}

/// The counters of `/_indexferry/stats` that add up across runs.
pub(super) const SUMMED: [&str; 8] = [
    "write_requests",
    "passed_requests",
    "events_published",
    "unpublished_writes",
    "refused_kafka_down",
    "held_requests",
    "gaps_from_earlier_runs",
    "gap_notices_published",
];

impl Captor {
    /// `kill_proxy`: SIGKILL, a pause of 0-500 ms, then a start on the same port and journal.
    /// Returns the pause.
    pub(super) async fn kill_and_start_again(&mut self) -> anyhow::Result<Duration> {
        // The run's counters as of just before its death (a dead proxy serves none).
        if let Ok(stats) = self.proxy.stats().await {
            self.add(&stats);
        }
        self.proxy.kill9()?;
        let pause = Duration::from_millis(rand::rng().random_range(0..=500));
        tokio::time::sleep(pause).await;
        self.proxy.start_again().await?;
        self.runs += 1;
        Ok(pause)
    }

    pub(super) fn add(&mut self, stats: &Value) {
        for k in SUMMED {
            *self.earlier.entry(k.to_owned()).or_default() += stats[k].as_u64().unwrap_or(0);
        }
    }

    /// One line: the summed counters, then the last run's pending notices and where it sends
    /// requests. A read through it first, so that it looks for the switch marker.
    pub(super) async fn report(&self, alias: &str, target_url: &str) -> anyhow::Result<String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let stats = loop {
            let _ = client.get(format!("{}/{alias}/_count", self.proxy.url)).send().await;
            let stats = self.proxy.stats().await?;
            if stats["followed_to"] == json!(target_url) || Instant::now() > deadline {
                break stats;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let summed: Vec<String> = SUMMED
            .iter()
            .map(|k| format!("{k}={}", self.earlier.get(*k).copied().unwrap_or(0) + stats[k].as_u64().unwrap_or(0)))
            .collect();
        Ok(format!(
            "runs={} {} gap_notices_pending={} followed_to={}",
            self.runs,
            summed.join(" "),
            stats["gap_notices_pending"],
            stats["followed_to"]
        ))
    }
}

/// Starts the two proxies in front of `source_url`, each with its journal, following the
/// migration's switch to `target_url`.
pub(super) async fn start_captors(
    dir: &std::path::Path,
    source_url: &str,
    target_url: &str,
    topic: &str,
    migration: &str,
) -> anyhow::Result<Vec<Captor>> {
    let mut captors = vec![];
    for n in 1..=2 {
        let journal = dir.join(format!("proxy-{n}-journal"));
        let journal = journal.to_str().unwrap_or_default();
        let name = format!("chaos-proxy-{n}");
        let args = ["--journal", journal, "--name", &name, "--follow-url", target_url, "--follow-migration", migration];
        let log = dir.join(format!("proxy-{n}.log"));
        let proxy = start_proxy(source_url, &brokers(), topic, &log, &args).await?;
        captors.push(Captor { proxy, runs: 1, earlier: BTreeMap::new() });
    }
    Ok(captors)
}
