//! Metric names, declared once with a line of doc each, and the Prometheus exporter.
//!
//! Conventions: `indexferry_` prefix, `_total` counters, `_seconds` histograms with explicit
//! buckets, one family with a `result` label rather than one name per result.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::net::SocketAddr;

/// Events replayed, by `op` (index/delete/unknown) and `result` (applied/stale/dead_lettered).
pub const EVENTS: &str = "indexferry_events_total";
/// Events naming a pair's alias instead of its source index, applied to that pair, by `alias`.
pub const EVENTS_BY_ALIAS: &str = "indexferry_events_by_alias_total";
/// Events ignored because their `index` is neither a source, an alias nor a target of the migration.
pub const EVENTS_UNKNOWN_INDEX: &str = "indexferry_events_unknown_index_total";
/// Messages waiting to be applied, per `partition`.
pub const LAG_MESSAGES: &str = "indexferry_consumer_lag_messages";
/// Age of the newest applied event's write, per `partition`: how far behind the target is.
pub const LAG_SECONDS: &str = "indexferry_consumer_lag_seconds";
/// Documents the snapshot wrote, by `pair` and `result` (applied/stale); refused ones are
/// counted in [`DEAD_LETTERS`].
pub const SNAPSHOT_DOCS: &str = "indexferry_snapshot_documents_total";
/// Snapshot progress of a `pair`, 0 to 1.
pub const SNAPSHOT_PROGRESS: &str = "indexferry_snapshot_progress_ratio";
/// Duration of `_bulk` requests, by `phase` (snapshot/replay).
pub const BULK_SECONDS: &str = "indexferry_bulk_request_duration_seconds";
/// Retries of cluster or Kafka work, by `cluster` and `what`.
pub const RETRIES: &str = "indexferry_retries_total";
/// 1 for the current `state` of the migration, 0 for the others.
pub const STATE: &str = "indexferry_migration_state";
/// Write pause of the last rollover.
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
    describe_gauge!(LAG_MESSAGES, "Messages not yet applied, per partition.");
    describe_gauge!(LAG_SECONDS, Unit::Seconds, "Age of the newest applied event, per partition.");
    describe_counter!(SNAPSHOT_DOCS, "Documents written by the snapshot, by pair and result.");
    describe_gauge!(SNAPSHOT_PROGRESS, "Snapshot progress per pair, 0 to 1.");
    describe_histogram!(BULK_SECONDS, Unit::Seconds, "Duration of _bulk requests, by phase.");
    describe_counter!(RETRIES, "Retries of cluster or Kafka work.");
    describe_gauge!(STATE, "1 for the migration's current state.");
    describe_gauge!(ROLLOVER_PAUSE, Unit::Seconds, "Write pause of the last rollover.");
    describe_counter!(DEAD_LETTERS, "Messages sent to the dead-letter topic, by reason.");
    describe_counter!(RECONCILE_DOCS, "Documents a reconcile pass found or repaired, by pair and kind.");
    describe_gauge!(RECONCILE_LAST_PASS, Unit::Seconds, "Duration of the last complete reconcile pass.");
}

/// Serves `/metrics` on `addr` (the CLI defaults to loopback).
pub fn serve(addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Full(BULK_SECONDS.into()), BULK_BUCKETS)
        .map_err(|e| e.to_string())?
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    describe();
    Ok(())
}

pub fn retry(cluster: &'static str, what: &'static str) {
    counter!(RETRIES, "cluster" => cluster, "what" => what).increment(1);
}
