//! The snapshot worker: bulk-copies a point-in-time view of each source index into its
//! target, every document written with the external version of its `_primary_term` and
//! `_seq_no` (see `indexferry_schemas::external_version`), so it can run before, after or
//! alongside the replay in any order.
//!
//! Each slice checkpoints after every acknowledged batch. A killed worker resumes each
//! slice after its last checkpoint, so at most one batch per slice is copied twice (and
//! those copies are rejected as stale by the target). If the point-in-time expired while
//! the worker was down, the index's slices start over on a new one: slices of different
//! points in time would not partition the index.

pub mod method;
pub mod reader;
mod reindex;
mod shards;
mod task;

pub(crate) use reindex::cancel_tasks;

use crate::pipeline::deadletters::{DeadLetter, DeadLetters};
use crate::pipeline::writer::{Doc, Final, VersionType, Writer};
use crate::runtime::context::Ctx;
use crate::state::{slice_key, Db, PairInfo, PidGuard, SliceCheckpoint, Store};
use anyhow::Context as _;
use chrono::Utc;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use indexferry_common::config::{Recipe, SnapshotMethod, VersionRule};
use indexferry_common::es::Method;
use indexferry_common::metrics::{SNAPSHOT_DOCS, SNAPSHOT_PROGRESS};
use reader::{close_pit, open_pit, Hit, Mode, ReadError, SliceReader};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The point-in-time all slices of one index read, stored under `pit/<pair>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PairPit {
    pit_id: String,
    opened_at: chrono::DateTime<Utc>,
}

fn pit_key(pair: usize) -> String {
    format!("pit/{pair:04}")
}

/// How a slice ended.
enum SliceEnd {
    Done,
    Cancelled,
    ContextLost(String),
}

struct Shared {
    ctx: Arc<Ctx>,
    store: Store,
    writer: Writer,
    dead_letters: DeadLetters,
    throttle: Option<DefaultDirectRateLimiter>,
    batch: usize,
}

/// How many checkpoints make one pair's snapshot: one per slice of the search method, or
/// the one `_reindex` task of the `reindex` method.
pub fn parts_per_pair(m: &crate::state::Migration, recipe: &Recipe) -> usize {
    match m.snapshot_method {
        SnapshotMethod::Reindex => 1,
        _ => recipe.snapshot.slices as usize,
    }
}

/// Runs the snapshot of every index pair to completion (or until `cancel`).
pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) -> anyhow::Result<()> {
    let store = ctx.dir.open(Db::Snapshot)?;
    let _pid = PidGuard::create(&ctx.dir, "snapshot")?;
    if ctx.migration.snapshot_method == SnapshotMethod::Reindex {
        return reindex::run(&ctx, &store, &cancel).await;
    }
    let cfg = &ctx.recipe.snapshot;
    let throttle = NonZeroU32::new(cfg.throttle_docs_per_s).map(|rate| {
        let burst = NonZeroU32::new(cfg.batch_size as u32).unwrap_or(NonZeroU32::MIN).max(rate);
        RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
    });
    let shared = Arc::new(Shared {
        writer: Writer::new(ctx.target.clone(), "snapshot", cancel.clone()),
        dead_letters: DeadLetters::new(&ctx.recipe, cancel.clone())?,
        store,
        throttle,
        batch: cfg.batch_size,
        ctx: ctx.clone(),
    });
    for (pair, info) in ctx.migration.pairs.iter().enumerate() {
        let span = tracing::info_span!("snapshot", pair = %info.source);
        if !run_pair(&shared, pair, &cancel).instrument(span).await? {
            break;
        }
    }
    shared.writer.check()
}

/// Copies one pair; `false` when cancelled.
async fn run_pair(shared: &Arc<Shared>, pair: usize, cancel: &CancellationToken) -> anyhow::Result<bool> {
    let ctx = &shared.ctx;
    let info = &ctx.migration.pairs[pair];
    let label = format!("{}->{}", info.source, info.target);
    loop {
        let mut cps = slice_checkpoints(shared, pair)?;
        if cps.iter().all(|c| c.done) {
            report_pair(&label, &cps, None);
            return Ok(true);
        }
        let pit = open_view(shared, pair, &mut cps).await?;
        let started = Instant::now();
        let copied = Arc::new(AtomicU64::new(cps.iter().map(|c| c.copied).sum()));
        let progress = Progress::start(&label, info.source_docs, copied.clone());
        let ended = copy_slices(shared, pair, cps, pit.as_ref(), &copied, cancel).await;
        progress.finish();
        if let Some(e) = ended.failure {
            return Err(e);
        }
        if cancel.is_cancelled() {
            return Ok(false);
        }
        if let Some(why) = ended.lost {
            tracing::warn!(pair = %label, reason = %why, "the point-in-time is gone; the index is copied again from a new one");
            restart_pair(shared, pair)?;
            continue;
        }
        let cps = slice_checkpoints(shared, pair)?;
        if let Some(p) = pit {
            close_pit(&ctx.source, &p.pit_id).await;
        }
        report_pair(&label, &cps, Some(started.elapsed()));
        return Ok(true);
    }
}

/// Every slice's checkpoint of `pair` (a fresh one where none is stored).
fn slice_checkpoints(shared: &Shared, pair: usize) -> anyhow::Result<Vec<SliceCheckpoint>> {
    Ok((0..shared.ctx.recipe.snapshot.slices)
        .map(|s| shared.store.get(&slice_key(pair, s)).map(Option::unwrap_or_default))
        .collect::<Result<_, _>>()?)
}

/// The view the slices read: the pair's point-in-time where the source has one; otherwise a
/// scroll, which cannot resume mid-slice, so unfinished slices start over on a fresh view.
async fn open_view(shared: &Shared, pair: usize, cps: &mut [SliceCheckpoint]) -> anyhow::Result<Option<PairPit>> {
    let ctx = &shared.ctx;
    if ctx.source.flavor.has_pit() {
        return Ok(Some(ensure_pit(shared, pair, cps).await?));
    }
    refresh(&ctx.source, &ctx.migration.pairs[pair].source).await?;
    for (s, cp) in cps.iter_mut().enumerate() {
        if !cp.done && cp.copied > 0 {
            *cp = SliceCheckpoint {
                restarts: cp.restarts + 1,
                resumes: cp.resumes,
                recopied: cp.recopied,
                ..Default::default()
            };
            shared.store.put(&slice_key(pair, s as u32), cp)?;
        }
    }
    Ok(None)
}

/// How the slices of one pass over a pair ended, beyond done or cancelled.
struct SlicesEnded {
    /// The view was lost (why): the pair is copied again from a new one.
    lost: Option<String>,
    /// The first error of a slice; the others were cancelled.
    failure: Option<anyhow::Error>,
}

/// Copies the unfinished slices at once, each in a task of its own; the first to fail or to
/// lose the view cancels the others.
async fn copy_slices(
    shared: &Arc<Shared>,
    pair: usize,
    cps: Vec<SliceCheckpoint>,
    pit: Option<&PairPit>,
    copied: &Arc<AtomicU64>,
    cancel: &CancellationToken,
) -> SlicesEnded {
    let source = &shared.ctx.migration.pairs[pair].source;
    let pair_cancel = cancel.child_token();
    let mut tasks = JoinSet::new();
    for (s, cp) in cps.into_iter().enumerate() {
        if cp.done {
            continue;
        }
        let mode = match pit {
            Some(p) => Mode::Pit {
                pit_id: cp.pit_id.clone().unwrap_or_else(|| p.pit_id.clone()),
                search_after: cp.search_after.clone(),
            },
            None => Mode::Scroll { scroll_id: None },
        };
        let (shared, copied, pair_cancel) = (shared.clone(), copied.clone(), pair_cancel.clone());
        let span = tracing::info_span!("snapshot_slice", pair = %source, slice = s);
        tasks.spawn(
            async move { run_slice(&shared, pair, s as u32, cp, mode, &copied, &pair_cancel).await }.instrument(span),
        );
    }
    let mut ended = SlicesEnded { lost: None, failure: None };
    while let Some(joined) = tasks.join_next().await {
        match joined.context("slice task panicked") {
            Ok(Ok(SliceEnd::Done | SliceEnd::Cancelled)) => continue,
            Ok(Ok(SliceEnd::ContextLost(why))) => ended.lost = Some(why),
            Ok(Err(e)) => {
                ended.failure.get_or_insert(e);
            }
            // A panic is the error the pair fails with, whatever failed before it.
            Err(panicked) => ended.failure = Some(panicked),
        }
        pair_cancel.cancel();
    }
    ended
}

/// Resumes on the stored point-in-time, or refreshes the source and opens a new one.
async fn ensure_pit(shared: &Shared, pair: usize, cps: &mut [SliceCheckpoint]) -> anyhow::Result<PairPit> {
    if let Some(p) = shared.store.get::<PairPit>(&pit_key(pair))? {
        for cp in cps.iter_mut().filter(|c| !c.done && c.copied > 0) {
            cp.resumes += 1;
        }
        return Ok(p);
    }
    let ctx = &shared.ctx;
    let info = &ctx.migration.pairs[pair];
    // Every write acknowledged before `init` must be in the view: make it visible first.
    refresh(&ctx.source, &info.source).await?;
    let pit_id = open_pit(&ctx.source, &info.source, ctx.recipe.snapshot.keep_alive).await?;
    let p = PairPit { pit_id, opened_at: Utc::now() };
    let now = Utc::now();
    let mut entries = vec![];
    for (s, cp) in cps.iter_mut().enumerate() {
        *cp = SliceCheckpoint { started_at: Some(now), restarts: cp.restarts, ..Default::default() };
        entries.push((slice_key(pair, s as u32), serde_json::to_value(&*cp)?));
    }
    entries.push((pit_key(pair), serde_json::to_value(&p)?));
    shared.store.put_all(&entries)?;
    Ok(p)
}

/// Forgets the lost point-in-time and every slice's position (done ones included).
fn restart_pair(shared: &Shared, pair: usize) -> anyhow::Result<()> {
    let slices = shared.ctx.recipe.snapshot.slices;
    let mut entries = vec![];
    for s in 0..slices {
        let old: SliceCheckpoint = shared.store.get(&slice_key(pair, s))?.unwrap_or_default();
        let cp = SliceCheckpoint {
            restarts: old.restarts + 1,
            resumes: old.resumes,
            recopied: old.recopied,
            ..Default::default()
        };
        entries.push((slice_key(pair, s), serde_json::to_value(cp)?));
    }
    shared.store.put_all(&entries)?;
    shared.store.delete(&pit_key(pair))?;
    Ok(())
}

async fn refresh(cluster: &indexferry_common::es::Cluster, index: &str) -> anyhow::Result<()> {
    cluster
        .json::<serde_json::Value>(Method::Post, &format!("/{index}/_refresh"), &[], None)
        .await
        .with_context(|| format!("cannot refresh {index}"))?;
    Ok(())
}

async fn run_slice(
    shared: &Shared,
    pair: usize,
    slice: u32,
    mut cp: SliceCheckpoint,
    mode: Mode,
    copied: &AtomicU64,
    cancel: &CancellationToken,
) -> anyhow::Result<SliceEnd> {
    let ctx = &shared.ctx;
    let info = &ctx.migration.pairs[pair];
    let slices = ctx.recipe.snapshot.slices;
    let mut reader = SliceReader::new(
        ctx.source.clone(),
        &info.source,
        slice,
        slices,
        shared.batch,
        ctx.recipe.snapshot.keep_alive,
        mode,
    )
    .with_version();
    let mut first_after_resume = cp.copied > 0;
    cp.started_at.get_or_insert_with(Utc::now);
    // The next page is read while the current one is written: the source and the target
    // work at the same time. The checkpoint still follows the pages written.
    let mut page = tokio::select! {
        _ = cancel.cancelled() => return Ok(SliceEnd::Cancelled),
        page = reader.next_page() => page,
    };
    loop {
        let hits = match page {
            Ok(hits) => hits,
            Err(ReadError::ContextLost(why)) => return Ok(SliceEnd::ContextLost(why)),
            Err(e) => return Err(e).context(format!("reading {} slice {slice}", info.source)),
        };
        if hits.is_empty() {
            cp.done = true;
            cp.updated_at = Some(Utc::now());
            shared.store.put(&slice_key(pair, slice), &cp)?;
            tracing::info!(copied = cp.copied, "snapshot slice done");
            return Ok(SliceEnd::Done);
        }
        if !throttle(shared, hits.len(), cancel).await {
            return Ok(SliceEnd::Cancelled);
        }
        let n = hits.len() as u64;
        let last_sort = hits.last().and_then(|h| h.sort.clone());
        let (docs, mut letters) = page_docs(info, ctx.recipe.versions, hits);
        let (written, next) = tokio::select! {
            _ = cancel.cancelled() => return Ok(SliceEnd::Cancelled),
            both = async { tokio::join!(shared.writer.write(&docs), reader.next_page()) } => both,
        };
        page = next;
        let Ok(outcomes) = written else { return Ok(SliceEnd::Cancelled) };
        judge_page(info, &docs, &outcomes, &mut cp, &mut letters);
        if !letters.is_empty() && shared.dead_letters.send_all(letters).await.is_err() {
            return Ok(SliceEnd::Cancelled);
        }
        count_page(info, &outcomes);
        if first_after_resume {
            cp.recopied += n;
            first_after_resume = false;
        }
        cp.copied += n;
        if let Mode::Pit { pit_id, .. } = &reader.mode {
            cp.pit_id = Some(pit_id.clone());
            cp.search_after = last_sort;
        }
        cp.updated_at = Some(Utc::now());
        shared.store.put(&slice_key(pair, slice), &cp)?;
        let total = copied.fetch_add(n, Ordering::Relaxed) + n;
        if info.source_docs > 0 {
            metrics::gauge!(SNAPSHOT_PROGRESS, "pair" => info.source.clone())
                .set((total as f64 / info.source_docs as f64).min(1.0));
        }
    }
}

/// Waits until the recipe's throttle lets `n` more documents through; `false` when cancelled.
async fn throttle(shared: &Shared, n: usize, cancel: &CancellationToken) -> bool {
    let Some(limiter) = &shared.throttle else { return true };
    let n = NonZeroU32::new(n as u32).unwrap_or(NonZeroU32::MIN);
    tokio::select! {
        _ = cancel.cancelled() => false,
        r = limiter.until_n_ready(n) => { r.ok(); true }
    }
}

/// A page's hits as writes to the target, each with the version its rule gives; a hit
/// the rule cannot version is a dead letter instead.
fn page_docs(info: &PairInfo, rule: VersionRule, hits: Vec<Hit>) -> (Vec<Doc>, Vec<DeadLetter>) {
    let mut docs = Vec::with_capacity(hits.len());
    let mut letters = Vec::new();
    for h in hits {
        match crate::pipeline::versions::of_source(rule, h.version, h.primary_term, h.seq_no) {
            Ok(version) => docs.push(Doc {
                index: info.target.clone(),
                id: h.id,
                version,
                version_type: VersionType::External,
                routing: h.routing,
                source: h.source,
            }),
            Err(reason) => {
                let mut l = DeadLetter::new("rejected", "snapshot", reason);
                l.index = Some(info.source.clone());
                l.id = Some(h.id);
                l.routing = h.routing;
                letters.push(l);
            }
        }
    }
    (docs, letters)
}

/// Counts what the target made of a page's writes into the slice's checkpoint; a write
/// refused for good becomes a dead letter.
fn judge_page(
    info: &PairInfo,
    docs: &[Doc],
    outcomes: &[Final],
    cp: &mut SliceCheckpoint,
    letters: &mut Vec<DeadLetter>,
) {
    for (doc, outcome) in docs.iter().zip(outcomes) {
        match outcome {
            Final::Applied => cp.applied += 1,
            Final::Stale => cp.stale += 1,
            Final::Rejected(reason) => {
                cp.rejected += 1;
                let mut l = DeadLetter::new("rejected", "snapshot", reason.clone());
                l.index = Some(info.source.clone());
                l.id = Some(doc.id.clone());
                l.routing = doc.routing.clone();
                l.payload = doc.source.as_ref().map(|s| s.get().to_owned());
                letters.push(l);
            }
        }
    }
}

/// The page's applied and stale writes in the snapshot's metrics, once its dead letters are
/// sent.
fn count_page(info: &PairInfo, outcomes: &[Final]) {
    metrics::counter!(SNAPSHOT_DOCS, "pair" => info.source.clone(), "result" => "applied")
        .increment(outcomes.iter().filter(|o| **o == Final::Applied).count() as u64);
    metrics::counter!(SNAPSHOT_DOCS, "pair" => info.source.clone(), "result" => "stale")
        .increment(outcomes.iter().filter(|o| **o == Final::Stale).count() as u64);
}

fn report_pair(label: &str, cps: &[SliceCheckpoint], elapsed: Option<Duration>) {
    let sum = |f: fn(&SliceCheckpoint) -> u64| cps.iter().map(f).sum::<u64>();
    let copied = sum(|c| c.copied);
    let rate = match elapsed {
        Some(e) if e.as_secs_f64() > 0.0 => {
            format!(" in {:.1}s ({:.0} docs/s)", e.as_secs_f64(), copied as f64 / e.as_secs_f64())
        }
        _ => String::new(),
    };
    let (applied, stale, rejected) = (sum(|c| c.applied), sum(|c| c.stale), sum(|c| c.rejected));
    let (resumes, recopied, restarts) = (sum(|c| c.resumes), sum(|c| c.recopied), sum(|c| c.restarts));
    // A worker's whole output is JSON lines in JSON mode (a container's log).
    if indexferry_common::logging::format() == indexferry_common::logging::Format::Json {
        tracing::info!(pair = label, copied, applied, stale, rejected, resumes, recopied, restarts, "snapshot done");
        return;
    }
    println!(
        "snapshot {label}: {copied} documents{rate}; applied={applied} stale={stale} rejected={rejected} \
         resumes={resumes} recopied<={recopied} restarts={restarts}"
    );
}

/// A progress bar with ETA on a terminal, a log line every ten seconds otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(label: &str, total: u64, copied: Arc<AtomicU64>) -> Progress {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal()
            && indexferry_common::logging::format() == indexferry_common::logging::Format::Text
        {
            let bar = indicatif::ProgressBar::new(total.max(1));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} {percent}% {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_owned());
            let b = bar.clone();
            let ticker = tokio::spawn(
                async move {
                    loop {
                        b.set_position(copied.load(Ordering::Relaxed));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                .in_current_span(),
            );
            Progress { bar: Some(bar), ticker: Some(ticker) }
        } else {
            let label = label.to_owned();
            let ticker = tokio::spawn(async move {
                let started = Instant::now();
                let first = copied.load(Ordering::Relaxed);
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    let now = copied.load(Ordering::Relaxed);
                    let rate = (now - first) as f64 / started.elapsed().as_secs_f64();
                    let pct = if total > 0 { (now as f64 * 100.0 / total as f64).min(100.0) } else { 100.0 };
                    let eta = if rate > 0.0 {
                        format!("{:.0}s", total.saturating_sub(now) as f64 / rate)
                    } else {
                        "?".into()
                    };
                    tracing::info!(pair = %label, copied = now, total, percent = format!("{pct:.1}"), docs_per_s = rate as u64, eta = %eta, "snapshot progress");
                }
            }.in_current_span());
            Progress { bar: None, ticker: Some(ticker) }
        }
    }

    fn finish(self) {
        if let Some(t) = self.ticker {
            t.abort();
        }
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
