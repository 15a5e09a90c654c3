//! `reconcile`: source and target compared by id and version, and the differences repaired —
//! the safety net for writes whose events never reached the topic (an application that died
//! between its write and its publish, events deleted before replay).
//!
//! Per pair, ids and versions only (no `_source` is read to compare), with bounded memory:
//!
//! 1. both indices are scanned at once on a point in time each, in the snapshot's number of
//!    slices, into a sorted spill on disk, and merged by id (`spill`): the clusters pay two
//!    scans, no lookup per document;
//! 2. what the merge finds different is looked up again, realtime, and repaired (`pass`):
//!    a source document missing in the target or behind (the target should hold the
//!    source's version by the migration's rule, `crate::pipeline::versions`) → copied again from the
//!    source; newer in the target → left alone (the replay got there first), unless the
//!    source, read again, is still below it (`backwards`: fails the pass); a target document
//!    the source no longer has (extra) → deleted from the target with a version above the
//!    target's;
//! 3. under the `source` rule, the events the replay refused as stale since the last pass
//!    (`state::Recheck`) are compared body by body: the same `_version` with another body
//!    is repaired with the source's.
//!
//! Every repair is an external-version write, so it never regresses a document, it is safe
//! while the snapshot and the consumer run, and a second run finds nothing to do. A pass
//! that completes is recorded with the source shards' `max_seq_no` read before it: rollover
//! repeats the comparison inside its pause for the documents changed since (`changed`).

mod changed;
mod pass;
mod reset;
mod spill;

pub(crate) use changed::changed_since;
pub(crate) use reset::reset;

use crate::pipeline::snapshot::reader::{close_pit, open_pit, Mode, SliceReader};
use crate::pipeline::writer::Writer;
use crate::runtime::context::{Common, Ctx};
use crate::state::{Db, Recheck, ReconcilePair, ReconcileRecord, State};
use anyhow::{bail, Context as _};
use chrono::Utc;
use indexferry_common::config::VersionRule;
use indexferry_common::es::{Cluster, Method};
use indexferry_common::metrics::{RECONCILE_DOCS, RECONCILE_LAST_PASS};
use pass::Pair;
use serde::Serialize;
use serde_json::Value;
use spill::{Cursor, Difference, Spill};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

const PAGE: usize = 1000;

/// What a pass found or did to one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// In the source, not in the target.
    Missing,
    /// In the target at a lower version than the source's.
    Behind,
    /// In the target only.
    Extra,
    /// In the target at a higher version: left alone.
    NewerInTarget,
    /// In the target at the source's version, with another body (`source` rule).
    SameVersionOtherBody,
    /// In the target above the version the source still has: the source's version went
    /// backwards, and no versioned write can follow it (`source` rule).
    Backwards,
    /// Written or deleted to repair it.
    Repaired,
    /// A repair the target refused.
    Failed,
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::Missing,
        Kind::Behind,
        Kind::Extra,
        Kind::NewerInTarget,
        Kind::SameVersionOtherBody,
        Kind::Backwards,
        Kind::Repaired,
        Kind::Failed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Behind => "behind",
            Kind::Extra => "extra",
            Kind::NewerInTarget => "newer_in_target",
            Kind::SameVersionOtherBody => "same_version_other_body",
            Kind::Backwards => "backwards",
            Kind::Repaired => "repaired",
            Kind::Failed => "failed",
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct PairReport {
    pub source: String,
    pub target: String,
    pub source_docs: u64,
    pub target_docs: u64,
    /// Events refused as stale that were looked at again (`source` rule).
    pub rechecked: u64,
    /// Documents named by capture proxies' gap notices, looked at again.
    pub gap_docs: u64,
    pub counts: BTreeMap<&'static str, u64>,
    pub samples: BTreeMap<&'static str, Vec<String>>,
    /// Every document found `backwards`, for rollover's pause to write again.
    #[serde(skip)]
    pub backwards: Vec<Recheck>,
    /// The ids this pass judged already: the recheck of a stale event skips them.
    #[serde(skip)]
    pub noted: std::collections::HashSet<String>,
    #[serde(skip)]
    max_samples: usize,
}

impl PairReport {
    fn new(source: &str, target: &str, max_samples: usize) -> Self {
        let counts = Kind::ALL.iter().map(|k| (k.as_str(), 0)).collect();
        PairReport { source: source.into(), target: target.into(), counts, max_samples, ..Default::default() }
    }

    fn note(&mut self, kind: Kind, id: &str) {
        if kind != Kind::Repaired && kind != Kind::Failed {
            self.noted.insert(id.to_owned());
        }
        *self.counts.entry(kind.as_str()).or_default() += 1;
        metrics::counter!(RECONCILE_DOCS, "pair" => self.source.clone(), "kind" => kind.as_str()).increment(1);
        let ids = self.samples.entry(kind.as_str()).or_default();
        if ids.len() < self.max_samples {
            ids.push(id.to_owned());
        }
    }

    pub fn count(&self, kind: Kind) -> u64 {
        self.counts.get(kind.as_str()).copied().unwrap_or(0)
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Nothing needed repairing.
    pub clean: bool,
    pub repaired: u64,
    pub failed: u64,
    pub seconds: f64,
    pub pairs: Vec<PairReport>,
}

impl Report {
    fn new(pairs: Vec<PairReport>, started: Instant) -> Self {
        let repaired = pairs.iter().map(|p| p.count(Kind::Repaired)).sum();
        let failed = pairs.iter().map(|p| p.count(Kind::Failed)).sum();
        // A version gone backwards waits for rollover's pause: not a failure, not clean either.
        let backwards: u64 = pairs.iter().map(|p| p.count(Kind::Backwards)).sum();
        let seconds = started.elapsed().as_secs_f64();
        Report { clean: repaired == 0 && failed == 0 && backwards == 0, repaired, failed, seconds, pairs }
    }

    /// Every document of every pair found `backwards`.
    pub fn backwards(&self) -> Vec<Recheck> {
        self.pairs.iter().flat_map(|p| p.backwards.iter().cloned()).collect()
    }

    /// The kinds found (not the repairs), summed over the pairs: "missing 3, extra 1".
    pub fn found(&self) -> String {
        // What was found: every kind but the last two, which say what the repairs did.
        let kinds = &Kind::ALL[..Kind::ALL.len() - 2];
        let parts: Vec<String> = kinds
            .iter()
            .map(|k| (k, self.pairs.iter().map(|p| p.count(*k)).sum::<u64>()))
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{} {n}", k.as_str()))
            .collect();
        if parts.is_empty() {
            "no difference".into()
        } else {
            parts.join(", ")
        }
    }
}

/// `indexferry migration reconcile`: false (exit 1) when a repair was refused.
pub async fn reconcile(common: &Common, name: &str, as_json: bool, samples: usize) -> anyhow::Result<bool> {
    let (_lock, ctx) = Ctx::load_locked(common, name, "reconcile").await?;
    match ctx.migration.state {
        State::Initialized => {}
        State::RollingOver => bail!("migration {name:?} is rolling over; reconcile runs as part of it"),
        State::RolledOver => bail!(
            "migration {name:?} is rolled over: the application writes into the target alone now, \
             so the source is no reference any more"
        ),
    }
    let limit = ctx.target.unreachable_timeout();
    let (report, _) = full(&ctx, samples, limit).await?;
    print(&report, as_json)?;
    Ok(report.failed == 0)
}

/// A complete pass over every pair, recorded in the state once it went through.
pub(crate) async fn full(
    ctx: &Ctx,
    samples: usize,
    write_limit: Duration,
) -> anyhow::Result<(Report, ReconcileRecord)> {
    let (started_at, started) = (Utc::now(), Instant::now());
    let writer = Writer::new(ctx.target.clone(), "reconcile", CancellationToken::new());
    let mut pairs = vec![];
    let mut marks = vec![];
    let recheck_from = replay_positions(ctx)?;
    let last = ctx.migration.reconciled.as_ref().map(|r| r.recheck_from.clone()).unwrap_or_default();
    let mut rechecks = rechecks(ctx, &last)?;
    let mut gap_docs = gap_docs(ctx, &last)?;
    for p in &ctx.migration.pairs {
        let (rechecks, gap_docs) =
            (rechecks.remove(&p.target).unwrap_or_default(), gap_docs.remove(&p.target).unwrap_or_default());
        let span = tracing::info_span!("reconcile_pass", pass = "full", pair = %p.source);
        let (report, max_seq_no) = async {
            refuses_writes(&ctx.target, &p.target).await?;
            let max_seq_no = changed::shard_max_seq_no(&ctx.source, &p.source).await?;
            let report = compare(ctx, &writer, write_limit, &p.source, &p.target, samples).await?;
            let mut pair = Pair { ctx, writer: &writer, write_limit, report };
            pair.recheck(rechecks).await?;
            pair.gap_docs(gap_docs).await?;
            let counts = &pair.report.counts;
            tracing::info!(source_docs = pair.report.source_docs, ?counts, "pair compared");
            anyhow::Ok((pair.report, max_seq_no))
        }
        .instrument(span)
        .await?;
        pairs.push(report);
        marks.push(max_seq_no);
    }
    let report = Report::new(pairs, started);
    metrics::gauge!(RECONCILE_LAST_PASS).set(report.seconds);
    let record = ReconcileRecord {
        started_at,
        finished_at: Utc::now(),
        repaired: report.repaired,
        failed: report.failed,
        pairs: report
            .pairs
            .iter()
            .zip(marks)
            .map(|(p, max_seq_no)| ReconcilePair {
                source: p.source.clone(),
                target: p.target.clone(),
                counts: p.counts.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
                max_seq_no,
            })
            .collect(),
        recheck_from,
        backwards: report.backwards(),
    };
    let rec = record.clone();
    ctx.dir.update_migration(move |m| m.reconciled = Some(rec))?;
    Ok((report, record))
}

/// The documents changed during `before`'s pass, compared again (still outside the pause),
/// and a record whose marks are read before this shorter pass: the pause then compares only
/// what changed since it.
pub(crate) async fn narrow(
    ctx: &Ctx,
    before: &ReconcileRecord,
    write_limit: Duration,
) -> anyhow::Result<(Report, ReconcileRecord)> {
    let mut marks = vec![];
    for p in &ctx.migration.pairs {
        marks.push(changed::shard_max_seq_no(&ctx.source, &p.source).await?);
    }
    let recheck_from = replay_positions(ctx)?;
    let span = tracing::info_span!("reconcile_pass", pass = "changed");
    let report = changed_since(ctx, before, write_limit).instrument(span).await?;
    let mut next = before.clone();
    for (pair, max_seq_no) in next.pairs.iter_mut().zip(marks) {
        pair.max_seq_no = max_seq_no;
    }
    next.recheck_from = recheck_from;
    next.backwards = merge(&before.backwards, report.backwards());
    Ok((report, next))
}

/// Inside the pause (the source write-blocked, the replay drained, the documents changed
/// since the last pass repaired): the pair's document counts, source and target, both
/// refreshed. They differ only by what no narrow pass can see: a delete the application
/// made without an event after the last full pass (a delete leaves no document to find).
pub(crate) async fn counts(ctx: &Ctx, source: &str, target: &str) -> anyhow::Result<(u64, u64)> {
    let on_source = ctx.source.count(source, true).await.with_context(|| format!("source index {source}: count"))?;
    let on_target = ctx.target.count(target, true).await.with_context(|| format!("target index {target}: count"))?;
    Ok((on_source, on_target))
}

/// One pair compared id by id and repaired, as a full pass does, without recording a pass:
/// the pause's answer to counts that differ.
pub(crate) async fn compare_pair(
    ctx: &Ctx,
    write_limit: Duration,
    source: &str,
    target: &str,
) -> anyhow::Result<PairReport> {
    let writer = Writer::new(ctx.target.clone(), "reconcile", CancellationToken::new());
    let span = tracing::info_span!("reconcile_pass", pass = "pair", pair = %source);
    compare(ctx, &writer, write_limit, source, target, 10).instrument(span).await
}

/// Both lists, each document once.
pub(crate) fn merge(a: &[Recheck], b: Vec<Recheck>) -> Vec<Recheck> {
    let mut out = a.to_vec();
    for r in b {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// The replay's next offset per partition, as its checkpoint says now.
fn replay_positions(ctx: &Ctx) -> anyhow::Result<BTreeMap<i32, i64>> {
    Ok(ctx.dir.read_replay()?.partitions.iter().map(|(p, c)| (*p, c.next_offset)).collect())
}

/// The rechecks the replay recorded from `from` on (`source` rule), per target index, each
/// document once.
pub(super) fn rechecks(ctx: &Ctx, from: &BTreeMap<i32, i64>) -> anyhow::Result<BTreeMap<String, Vec<Recheck>>> {
    let mut out: BTreeMap<String, Vec<Recheck>> = BTreeMap::new();
    if ctx.recipe.versions != VersionRule::Source {
        return Ok(out);
    }
    let Some(store) = ctx.dir.open_read_only(Db::Replay)? else { return Ok(out) };
    let mut seen = std::collections::HashSet::new();
    for r in store.rechecks(from)? {
        if seen.insert((r.index.clone(), r.id.clone(), r.routing.clone())) {
            out.entry(r.index.clone()).or_default().push(r);
        }
    }
    Ok(out)
}

/// The documents the gap notices recorded from `from` on name (whatever the version rule),
/// per target index, each once.
pub(super) fn gap_docs(ctx: &Ctx, from: &BTreeMap<i32, i64>) -> anyhow::Result<BTreeMap<String, Vec<Recheck>>> {
    let mut out: BTreeMap<String, Vec<Recheck>> = BTreeMap::new();
    let Some(store) = ctx.dir.open_read_only(Db::Replay)? else { return Ok(out) };
    let mut seen = std::collections::HashSet::new();
    for r in store.gaps(from)?.into_iter().flat_map(|g| g.docs) {
        if seen.insert((r.index.clone(), r.id.clone(), r.routing.clone())) {
            out.entry(r.index.clone()).or_default().push(r);
        }
    }
    Ok(out)
}

/// One pair: both indices scanned at once, each in the snapshot's number of slices, into
/// a spill merged by id; then what differs is looked up again and repaired.
async fn compare(
    ctx: &Ctx,
    writer: &Writer,
    write_limit: Duration,
    source: &str,
    target: &str,
    samples: usize,
) -> anyhow::Result<PairReport> {
    let spill = Spill::open(&ctx.dir.path(), ctx.recipe.versions)?;
    let mut pair = Pair { ctx, writer, write_limit, report: PairReport::new(source, target, samples) };
    (pair.report.source_docs, pair.report.target_docs) = scan(ctx, &spill, source, target).await?;
    let mut cursor = Cursor::default();
    loop {
        let differences = spill.differences(&mut cursor, PAGE)?;
        if differences.is_empty() {
            return Ok(pair.report);
        }
        let (mut in_source, mut in_target) = (vec![], vec![]);
        for d in differences {
            match d {
                Difference::Source(h) => in_source.push(h),
                Difference::Target(h) => in_target.push(h),
            }
        }
        pair.source_page(&in_source).await?;
        pair.target_page(&in_target).await?;
    }
}

/// Both indices' ids and versions into the spill, every slice of both at once (each waits
/// on one request at a time: together they keep both clusters busy). The documents read on
/// each side.
async fn scan(ctx: &Ctx, spill: &Spill, source: &str, target: &str) -> anyhow::Result<(u64, u64)> {
    for (c, i) in [(&ctx.source, source), (&ctx.target, target)] {
        c.json::<Value>(Method::Post, &format!("/{i}/_refresh"), &[], None)
            .await
            .with_context(|| format!("the {} cluster {} index {i}", c.role(), c.url))?;
    }
    let source_view = View::open(&ctx.source, source).await?;
    let target_view = match View::open(&ctx.target, target).await {
        Ok(v) => v,
        Err(e) => {
            source_view.close().await;
            return Err(e);
        }
    };
    let slices = ctx.recipe.snapshot.slices;
    let reads = (0..slices).flat_map(|s| [(&source_view, s), (&target_view, s)]).map(|(view, slice)| {
        let target = std::ptr::eq(view, &target_view);
        scan_slice(spill, view, target, slice, slices)
    });
    let done = futures::future::try_join_all(reads).await;
    source_view.close().await;
    target_view.close().await;
    let counts = done?;
    let on = |target: bool| counts.iter().filter(|(t, _)| *t == target).map(|(_, n)| n).sum();
    Ok((on(false), on(true)))
}

/// One slice of one index into the spill: (whether it is the target, documents read).
async fn scan_slice(spill: &Spill, view: &View, target: bool, slice: u32, slices: u32) -> anyhow::Result<(bool, u64)> {
    let mut reader = view.reader(slice, slices);
    let mut read = 0;
    loop {
        let hits = reader.next_page().await.with_context(|| {
            format!("the {} cluster {} index {} (slice {slice})", view.cluster.role(), view.cluster.url, view.index)
        })?;
        if hits.is_empty() {
            return Ok((target, read));
        }
        read += hits.len() as u64;
        spill.put(target, &hits).with_context(|| format!("index {}", view.index))?;
    }
}

/// One index's consistent view: a point in time its slices share, or (where the cluster
/// has none usable) a sliced scroll each slice opens for itself.
struct View {
    cluster: Cluster,
    index: String,
    pit: Option<String>,
}

const KEEP_ALIVE: Duration = Duration::from_secs(300);

impl View {
    async fn open(cluster: &Cluster, index: &str) -> anyhow::Result<View> {
        let pit = match cluster.flavor.has_pit() {
            true => Some(
                open_pit(cluster, index, KEEP_ALIVE)
                    .await
                    .with_context(|| format!("the {} cluster {} index {index}", cluster.role(), cluster.url))?,
            ),
            false => None,
        };
        Ok(View { cluster: cluster.clone(), index: index.to_owned(), pit })
    }

    /// A reader of ids and `_version`s for one slice (on the source, `_seq_no` and
    /// `_primary_term` too; its `_version` is what a copy by `_reindex` holds, see pass.rs).
    fn reader(&self, slice: u32, slices: u32) -> SliceReader {
        let mode = match &self.pit {
            Some(pit) => Mode::Pit { pit_id: pit.clone(), search_after: None },
            None => Mode::Scroll { scroll_id: None },
        };
        SliceReader::new(self.cluster.clone(), &self.index, slice, slices, PAGE, KEEP_ALIVE, mode)
            .without_source()
            .with_version()
    }

    async fn close(self) {
        if let Some(pit) = self.pit {
            close_pit(&self.cluster, &pit).await;
        }
    }
}

/// Stops before comparing when the target index is write-blocked: its repairs would wait.
async fn refuses_writes(cluster: &Cluster, index: &str) -> anyhow::Result<()> {
    let settings: Value = cluster
        .json(Method::Get, &format!("/{index}/_settings"), &[("flat_settings", "true")], None)
        .await
        .with_context(|| format!("the {} cluster {} index {index}", cluster.role(), cluster.url))?;
    for (_, s) in settings.as_object().into_iter().flatten() {
        for block in ["index.blocks.write", "index.blocks.read_only", "index.blocks.read_only_allow_delete"] {
            if s["settings"][block].as_str() == Some("true") {
                bail!(
                    "the {} cluster {} refuses writes to index {index} ({block} = true): reconcile cannot repair it; \
                     lift the block and run it again",
                    cluster.role(),
                    cluster.url
                );
            }
        }
    }
    Ok(())
}

fn print(report: &Report, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for r in &report.pairs {
        let counts: Vec<String> = Kind::ALL.iter().map(|k| format!("{}={}", k.as_str(), r.count(*k))).collect();
        println!(
            "reconcile {} -> {}: source={} target={} rechecked={} {}",
            r.source,
            r.target,
            r.source_docs,
            r.target_docs,
            r.rechecked,
            counts.join(" ")
        );
        for (kind, ids) in r.samples.iter().filter(|(_, ids)| !ids.is_empty()) {
            println!("  {kind}: {}", ids.join(" "));
        }
    }
    let backwards: u64 = report.pairs.iter().map(|p| p.count(Kind::Backwards)).sum();
    if backwards > 0 {
        println!(
            "reconcile: {backwards} documents whose source _version went backwards (a delete then re-create after the \
             source forgot the tombstone, e.g. across a source node restart): rollover writes them again at the \
             source's version inside its pause, where nothing else writes to the target"
        );
    }
    match (report.repaired, report.failed) {
        (0, 0) if backwards > 0 => println!("reconcile: nothing repaired; {backwards} left for rollover's pause"),
        (0, 0) => println!("reconcile: clean"),
        (n, 0) => println!("reconcile: repaired {n}"),
        (n, f) => println!(
            "reconcile: repaired {n}, FAILED {f} (the target refused them, or their source version went backwards; \
             see the log and the ids above)"
        ),
    }
    Ok(())
}
