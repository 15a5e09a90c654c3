//! Metric names, declared once with a line of doc each, and the Prometheus exporter.
//!
//! Conventions: `indexferry_` prefix, `_total` counters, `_seconds` histograms with explicit
//! buckets, one family with a `result` label rather than one name per result.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Events replayed, by `op` (index/delete/unknown) and `result` (applied/stale/dead_lettered).
pub const EVENTS: &str = "indexferry_events_total";
/// Events naming a pair's alias instead of its source index, applied to that pair, by `alias`.
pub const EVENTS_BY_ALIAS: &str = "indexferry_events_by_alias_total";
/// Events ignored because their `index` is neither a source, an alias nor a target of the
/// migration, by `index`.
pub const EVENTS_UNKNOWN_INDEX: &str = "indexferry_events_unknown_index_total";
/// Events ignored because their `index` lacks the recipe's prefix: another tenant's.
pub const EVENTS_OTHER_PREFIX: &str = "indexferry_events_other_prefix_total";
/// Messages waiting to be applied, per `partition`.
pub const LAG_MESSAGES: &str = "indexferry_consumer_lag_messages";
/// Age of the newest applied event's write, per `partition`: how far behind the target is.
pub const LAG_SECONDS: &str = "indexferry_consumer_lag_seconds";
/// Documents the snapshot wrote, by `pair` (the source index) and `result` (applied/stale);
/// refused ones are counted in [`DEAD_LETTERS`].
pub const SNAPSHOT_DOCS: &str = "indexferry_snapshot_documents_total";
/// Snapshot progress of a `pair` (the source index), 0 to 1.
pub const SNAPSHOT_PROGRESS: &str = "indexferry_snapshot_progress_ratio";
/// Duration of `_bulk` requests, by `phase` (snapshot/replay).
pub const BULK_SECONDS: &str = "indexferry_bulk_request_duration_seconds";
/// Retries of cluster requests, by `cluster` (source/target) and `what` (request: any request;
/// read: a snapshot page; snapshot/replay: a `_bulk`).
pub const RETRIES: &str = "indexferry_retries_total";
/// 1 for the current `state` of the migration (initialized/rolling_over/rolled_over), 0 for the
/// others; workers follow the state file, so a rollover run elsewhere shows here.
pub const STATE: &str = "indexferry_migration_state";
/// Write pause of the last rollover, no labels: 0 until one is recorded in the migration's
/// state, which workers follow.
pub const ROLLOVER_PAUSE: &str = "indexferry_rollover_write_pause_seconds";
/// Messages sent to the dead-letter topic, by `kind` (decode/rejected) and `stage`
/// (snapshot/replay).
pub const DEAD_LETTERS: &str = "indexferry_dead_letters_total";
/// Documents a reconcile pass found or repaired, by `pair` (source index) and `kind`
/// (missing/behind/extra/newer_in_target/repaired/failed).
pub const RECONCILE_DOCS: &str = "indexferry_reconcile_documents_total";
/// Duration of the last complete reconcile pass.
pub const RECONCILE_LAST_PASS: &str = "indexferry_reconcile_last_pass_seconds";

const BULK_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

pub fn describe() {
    describe_counter!(EVENTS, "Change events replayed, by op and result.");
    describe_counter!(EVENTS_BY_ALIAS, "Events naming an alias, applied to the pair it belongs to.");
    describe_counter!(EVENTS_UNKNOWN_INDEX, "Events of indices outside the migration, ignored, by index.");
    describe_counter!(EVENTS_OTHER_PREFIX, "Events of indices without the recipe's prefix (other tenants), ignored.");
    describe_gauge!(LAG_MESSAGES, "Messages not yet applied, per partition.");
    describe_gauge!(LAG_SECONDS, Unit::Seconds, "Age of the newest applied event, per partition.");
    describe_counter!(SNAPSHOT_DOCS, "Documents written by the snapshot, by pair and result.");
    describe_gauge!(SNAPSHOT_PROGRESS, "Snapshot progress per pair, 0 to 1.");
    describe_histogram!(BULK_SECONDS, Unit::Seconds, "Duration of _bulk requests, by phase.");
    describe_counter!(RETRIES, "Retries of cluster requests, by cluster and what.");
    describe_gauge!(STATE, "1 for the migration's current state.");
    describe_gauge!(ROLLOVER_PAUSE, Unit::Seconds, "Write pause of the last rollover.");
    describe_counter!(DEAD_LETTERS, "Messages sent to the dead-letter topic, by kind and stage.");
    describe_counter!(RECONCILE_DOCS, "Documents a reconcile pass found or repaired, by pair and kind.");
    describe_gauge!(RECONCILE_LAST_PASS, Unit::Seconds, "Duration of the last complete reconcile pass.");
}

/// Serves `/metrics` on `addr` (the CLI defaults to loopback), from a thread of its own.
/// Every metric is described; [`zero_common`] and the workers' own zeroing make the names
/// a dashboard queries exist before anything has happened.
pub fn serve(addr: SocketAddr) -> Result<(), String> {
    let server = tiny_http::Server::http(addr).map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(BULK_SECONDS.into()), BULK_BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    describe();
    zero_common();
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let _ = answer(request, &handle);
            }
        })
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    Ok(())
}

static SCRAPES_BEGUN: AtomicU64 = AtomicU64::new(0);
static SCRAPES_ANSWERED: AtomicU64 = AtomicU64::new(0);

/// How many scrapes of `/metrics` have begun: a mark taken after a gauge is set, which
/// [`answered_after`] compares against.
pub fn scrapes_begun() -> u64 {
    SCRAPES_BEGUN.load(Ordering::SeqCst)
}

/// Whether a scrape that began after `mark` (see [`scrapes_begun`]) has been answered: it
/// rendered every gauge set before the mark was taken, and its response was written.
pub fn answered_after(mark: u64) -> bool {
    SCRAPES_ANSWERED.load(Ordering::SeqCst) > mark
}

/// The worker serves: it has loaded its migration and started its work (`/health/ready`).
static READY: AtomicBool = AtomicBool::new(false);

/// How `/health/caught-up` is judged: `Err` says why not.
type CaughtUp = Box<dyn Fn() -> Result<(), String> + Send + Sync>;
static CAUGHT_UP: OnceLock<CaughtUp> = OnceLock::new();

/// Says whether the worker serves, for `/health/ready`.
pub fn set_ready(ready: bool) {
    READY.store(ready, Ordering::SeqCst);
}

/// How `/health/caught-up` judges (called on each request, on the metrics thread): set once.
pub fn judge_caught_up(f: impl Fn() -> Result<(), String> + Send + Sync + 'static) {
    let _ = CAUGHT_UP.set(Box::new(f));
}

/// `GET /metrics` (or `/`) gets the text exposition format. For orchestrators:
/// `/health/live` (200 while the process answers), `/health/ready` (200 once the worker
/// serves, 503 before and after), `/health/caught-up` (200 once the snapshot is done and
/// the replay within the rollover's lag: `rollover` would start; 503 with why not).
fn answer(request: tiny_http::Request, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut scrape = None;
    let health = |ok: bool, why: &str| match ok {
        true => (200, "{\"ok\":true}\n".to_owned()),
        false => (503, format!("{}\n", serde_json::json!({ "ok": false, "why": why }))),
    };
    let (status, body) = match request.url().split('?').next() {
        Some("/metrics" | "/") => {
            // Numbered before rendering, so a scrape numbered after a mark shows what was set
            // before it.
            scrape = Some(SCRAPES_BEGUN.fetch_add(1, Ordering::SeqCst) + 1);
            handle.run_upkeep();
            (200, handle.render())
        }
        Some("/health/live") => health(true, ""),
        Some("/health/ready") => health(READY.load(Ordering::SeqCst), "the worker is not serving"),
        Some("/health/caught-up") => match CAUGHT_UP.get().map(|f| f()) {
            Some(Ok(())) => health(true, ""),
            Some(Err(why)) => health(false, &why),
            None => health(false, "not a migration worker"),
        },
        _ => (404, "not found: try /metrics, /health/live, /health/ready or /health/caught-up\n".to_owned()),
    };
    let content_type = match scrape {
        Some(_) => "text/plain; version=0.0.4; charset=utf-8",
        None if status == 404 => "text/plain; charset=utf-8",
        None => "application/json",
    };
    let content_type = tiny_http::Header::from_bytes("Content-Type", content_type)
        .map_err(|()| std::io::Error::other("content type header"))?;
    let sent =
        request.respond(tiny_http::Response::from_string(body).with_status_code(status).with_header(content_type));
    if let (Some(n), Ok(())) = (scrape, &sent) {
        SCRAPES_ANSWERED.fetch_max(n, Ordering::SeqCst);
    }
    sent
}

/// The label values each family takes whatever the migration: registered at zero at start.
const EVENT_OPS: &[&str] = &["index", "delete", "unknown"];
const EVENT_RESULTS: &[&str] = &["applied", "stale", "dead_lettered"];
const DEAD_LETTER_KINDS: &[&str] = &["decode", "rejected"];
const STAGES: &[&str] = &["snapshot", "replay"];

/// The series every worker exports from its start: dead letters, bulk latency and the last
/// rollover pause (0 until the state records one). The state gauge is set by the caller.
pub fn zero_common() {
    for kind in DEAD_LETTER_KINDS {
        for stage in STAGES {
            counter!(DEAD_LETTERS, "kind" => *kind, "stage" => *stage).increment(0);
        }
    }
    for phase in STAGES {
        let _ = histogram!(BULK_SECONDS, "phase" => *phase);
    }
    gauge!(ROLLOVER_PAUSE).set(0.0);
}

/// The replay's series at zero: events by op and result. The lag per partition is measured
/// as soon as the replay has read the topic's offsets.
pub fn zero_replay() {
    for op in EVENT_OPS {
        for result in EVENT_RESULTS {
            counter!(EVENTS, "op" => *op, "result" => *result).increment(0);
        }
    }
}

/// The snapshot's series of `pair` (its source index) at zero; progress is set by the caller.
pub fn zero_snapshot(pair: &str) {
    for result in ["applied", "stale"] {
        counter!(SNAPSHOT_DOCS, "pair" => pair.to_owned(), "result" => result).increment(0);
    }
}

pub fn retry(cluster: &'static str, what: &'static str) {
    counter!(RETRIES, "cluster" => cluster, "what" => what).increment(1);
}
