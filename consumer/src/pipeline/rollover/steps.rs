//! The write-blocked part of the rollover: named steps, each with what it leaves behind if
//! the process dies right there and its undo, run by one driver ([`Driver`]).
//!
//! | step    | if the process dies here                         | undo (failure or signal)        |
//! |---------|--------------------------------------------------|---------------------------------|
//! | `block` | record `rolling_over`, the source maybe blocked  | lift the block                  |
//! | `grace` | record `rolling_over`, the source blocked        | lift the block                  |
//! | `matched` | the same (a pattern's index made since the check before the block refuses) | lift the block |
//! | `drain` | the same                                         | lift the block                  |
//! | `sweep` | the same                                         | lift the block                  |
//! | `reconcile` | the same (repairs are external-version writes, harmless if repeated) | lift the block |
//! | `reset` | the same, and the target's `gc_deletes` maybe at 0 (a rerun sets it back and sweeps the recorded deletes) | lift the block |
//! | `recount` | the same (a pair whose counts differ is compared id by id, as `reconcile`; versions gone backwards that it finds are `reset`, then it counts again) | lift the block |
//! | `pipelines` | the same, the target's production pipelines maybe set (a rerun sets `_none` first) | lift the block, `_none` again |
//! | `swap`  | the same, the alias maybe moved                  | read the alias: moved → success, the block stays; not moved → lift the block; unreadable → leave both, a rerun reads them |
//!
//! A rerun finding `rolling_over` reads the alias first (see `recover`): moved → it finishes
//! the bookkeeping; not moved → it runs again from the start, lifting the block if it fails.
//! SIGINT/SIGTERM cut the waiting steps short (`grace`, `drain`) and stop the run before any
//! step up to the swap; the swap itself and what follows are never interrupted.

use super::tombstones::{self, Sweep};
use super::Consumer;
use crate::runtime::context::Ctx;
use crate::state::{PairInfo, ReconcileRecord, State, SwapAdd};
use anyhow::{bail, Context as _};
use indexferry_common::es::Method;
use indexferry_common::kafka::{OffsetReader, Offsets};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How often the drain checks the consumer's checkpoint.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// Waits out `[rollover] grace`, or less with the application's capture proxies listed
/// (`[rollover] proxies`): until each says that every write it sent before now has its
/// event published (`GET /_indexferry/inflight`). A proxy that does not answer, or restarts
/// meanwhile, and the whole grace is waited. How long it took.
async fn grace(r: &indexferry_common::config::RolloverConfig) -> anyhow::Result<Duration> {
    let started = Instant::now();
    if r.proxies.is_empty() {
        tokio::time::sleep(r.grace).await;
        return Ok(r.grace);
    }
    match tokio::time::timeout(r.grace, proxies_drained(&r.proxies)).await {
        Ok(Ok(())) => {
            let took = started.elapsed();
            tracing::info!(
                ms = took.as_millis() as u64,
                "the capture proxies' writes from before the block are published"
            );
            Ok(took)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "the capture proxies cannot say: the whole grace is waited");
            tokio::time::sleep_until((started + r.grace).into()).await;
            Ok(r.grace)
        }
        Err(_) => {
            tracing::warn!(
                "the capture proxies still had writes from before the block in flight at the end of the grace"
            );
            Ok(r.grace)
        }
    }
}

/// A capture proxy's writes in flight: its run, the next write's number, the oldest open.
#[derive(Debug, serde::Deserialize)]
struct ProxyInflight {
    run: u64,
    next: u64,
    oldest: Option<u64>,
}

/// Until every proxy has published every write it sent before this call.
async fn proxies_drained(urls: &[String]) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build()?;
    let read = |url: &str| {
        let (client, url) = (client.clone(), format!("{}/_indexferry/inflight", url.trim_end_matches('/')));
        async move {
            let answer = client.get(&url).send().await.and_then(reqwest::Response::error_for_status);
            answer.with_context(|| format!("capture proxy {url}"))?.json::<ProxyInflight>().await.context("its answer")
        }
    };
    let marks = futures::future::try_join_all(urls.iter().map(|u| read(u))).await?;
    let waits = urls.iter().zip(marks).map(|(url, mark)| {
        let read = &read;
        async move {
            let mut now = ProxyInflight { ..mark };
            loop {
                if now.oldest.is_none_or(|o| o >= mark.next) {
                    return anyhow::Ok(());
                }
                tokio::time::sleep(DRAIN_POLL).await;
                now = read(url).await?;
                anyhow::ensure!(now.run == mark.run, "capture proxy {url} restarted");
            }
        }
    });
    futures::future::try_join_all(waits).await.map(drop)
}

/// A signal stopped the rollover before its swap.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by a signal during the {0} step")]
pub(super) struct Interrupted(pub &'static str);

/// The pause reached `[rollover] max_pause` before the swap.
#[derive(Debug, thiserror::Error)]
#[error(
    "the write pause reached [rollover] max_pause ({}) during the {step} step, before the swap: the application's \
     writes are not held longer; run rollover again when the lag is lower",
    humantime::format_duration(*.budget)
)]
pub(super) struct OverBudget {
    step: &'static str,
    budget: Duration,
}

/// The swap request failed and the alias could not be read afterwards: whether the switch
/// happened is unknown, so neither the block nor the record is touched.
#[derive(Debug, thiserror::Error)]
#[error(
    "the alias swap failed ({swap}) and the alias cannot be read ({read}): the write block stays; \
     run `rollover` again, it reads where the alias is and finishes or retries"
)]
pub(super) struct SwapUnknown {
    swap: String,
    read: String,
}

/// What the blocked phase measured.
pub(super) struct Switched {
    pub blocked_at: Instant,
    /// How long the grace took: shorter than `[rollover] grace` when the capture proxies
    /// said their writes from before the block were published.
    pub grace: Duration,
    pub end: Offsets,
    pub drain: Duration,
    /// The final reconcile pass, if it ran.
    pub in_pause: InPause,
}

/// What the final reconcile pass did inside the pause.
#[derive(Debug, Default)]
pub(super) struct InPause {
    pub changed: u64,
    pub repaired: u64,
    pub took: Duration,
    /// Documents whose source version went backwards, for the `reset` step.
    pub backwards: Vec<crate::state::Recheck>,
    /// Pairs whose counts differed after the pass, compared id by id (`recount`).
    pub recounted: u64,
}

pub(super) struct Driver<'a> {
    ctx: &'a Ctx,
    signal: CancellationToken,
    sources: String,
    /// The source may be write-blocked: this run set the block, or a killed run left it.
    blocked: bool,
    /// When the pause must end (`[rollover] max_pause` after the block), once blocked.
    deadline: Option<Instant>,
}

impl<'a> Driver<'a> {
    /// `inherited_block`: the record said `rolling_over` (a killed run may have left the block).
    pub(super) fn new(ctx: &'a Ctx, signal: CancellationToken, inherited_block: bool) -> Self {
        let sources: Vec<&str> = ctx.migration.pairs.iter().map(|p| p.source.as_str()).collect();
        Driver { ctx, signal, sources: sources.join(","), blocked: inherited_block, deadline: None }
    }

    /// Runs step `name`, unless a signal came first; an `interruptible` step is cut short by one.
    pub(super) async fn step<T>(
        &self,
        name: &'static str,
        interruptible: bool,
        f: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        if self.signal.is_cancelled() {
            return Err(Interrupted(name).into());
        }
        let over = || OverBudget { step: name, budget: self.ctx.recipe.rollover.max_pause };
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(over().into());
        }
        let span = tracing::info_span!("rollover_step", step = name);
        span.in_scope(|| tracing::info!("rollover step"));
        if !interruptible {
            return f.instrument(span).await;
        }
        let deadline = async {
            match self.deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = f.instrument(span) => r,
            _ = self.signal.cancelled() => Err(Interrupted(name).into()),
            _ = deadline => Err(over().into()),
        }
    }

    /// The steps from the block to the swap. On failure the caller runs [`Driver::undo`].
    pub(super) async fn switch_over(
        &mut self,
        consumer: &mut Consumer,
        reader: &Arc<OffsetReader>,
        started: BTreeMap<String, u64>,
        swept: &mut Sweep,
        reconciled: Option<&super::PreBlock>,
    ) -> anyhow::Result<Switched> {
        let (ctx, r) = (self.ctx, &self.ctx.recipe.rollover);
        // The record first: whoever finds it after a kill knows a block may be set.
        self.step("block", false, async { Ok(ctx.dir.update_migration(|m| m.state = State::RollingOver)?) }).await?;
        self.blocked = true;
        let blocked_at = Instant::now();
        self.deadline = Some(blocked_at + r.max_pause);
        self.step("block", false, async {
            ctx.source.put_settings(&self.sources, json!({ "index.blocks.write": true })).await?;
            tracing::info!(sources = %self.sources, "writes blocked");
            Ok(())
        })
        .await?;
        let grace = self.step("grace", true, grace(r)).await?;
        // An index of a pattern made since the check before the block (a day, an ILM
        // rollover) would be left unblocked, unmigrated and unmoved: refused, naming it.
        // One listing per pattern, under the block, so the set is final.
        if ctx.recipe.pairs.iter().any(|p| p.is_pattern()) {
            self.step("matched", true, super::check_matched(ctx)).await?;
        }
        let (end, drain) = self.step("drain", true, drain(ctx, consumer, reader)).await?;
        // A target restarted since the first sweep forgot its tombstones again, and the drain
        // may have let an older copy in: sweep once more, inside the pause (only then).
        self.step("sweep", true, async {
            if tombstones::target_started(ctx).await? != started {
                tracing::warn!("the target restarted during the rollover: re-applying the recorded deletes again");
                let again = tombstones::sweep(ctx).await?;
                swept.tombstones += again.tombstones;
                swept.resurrected += again.resurrected;
            }
            Ok(())
        })
        .await?;
        let mut in_pause = InPause::default();
        if let Some(before) = reconciled {
            in_pause = self.step("reconcile", true, reconcile_changed(ctx, &before.record)).await?;
            // Versions gone backwards are written again first: the target lacks them until
            // then, and the counts would differ by them.
            if !in_pause.backwards.is_empty() {
                self.step("reset", false, reset_backwards(ctx, &mut in_pause)).await?;
            }
            let deadline = self.deadline.unwrap_or(blocked_at + r.max_pause);
            let compared =
                self.step("recount", true, recount(ctx, &mut in_pause, before.docs_per_second, deadline)).await?;
            if !in_pause.backwards.is_empty() {
                self.step("reset", false, reset_backwards(ctx, &mut in_pause)).await?;
            }
            self.step("recount", true, counts_agree(ctx, &compared)).await?;
        }
        self.step("pipelines", false, pipelines(ctx)).await?;
        self.step("swap", false, swap(ctx)).await?;
        Ok(Switched { blocked_at, grace, end, drain, in_pause })
    }

    /// The undo of every step up to the swap, after any failure of the run: lifts the block,
    /// unless the switch may have happened; says what was left.
    pub(super) async fn undo(&mut self, e: anyhow::Error) -> anyhow::Error {
        if e.downcast_ref::<SwapUnknown>().is_some() || !self.blocked {
            return e;
        }
        self.blocked = false;
        // The pipelines step may have run: the workers go on writing without them.
        for p in self
            .ctx
            .migration
            .pairs
            .iter()
            .filter(|p| !crate::recipe::pipelines::named(&p.production_settings).is_empty())
        {
            if let Err(e) = self.ctx.target.put_settings(&p.target, crate::recipe::pipelines::none()).await {
                tracing::warn!(index = %p.target, error = %e, "could not take the ingest pipelines off the target again");
            }
        }
        if self.signal.is_cancelled() {
            tracing::warn!(sources = %self.sources, "interrupted: lifting the write block");
        }
        match lift_block(self.ctx, &self.sources).await {
            Ok(()) => e.context("rollover aborted; the write block was lifted and the migration can be resumed"),
            Err(lift) => {
                tracing::error!(error = %lift, "could not lift the write block on {}: lift it by hand", self.sources);
                e.context(format!(
                    "rollover aborted, and the write block on {} could not be lifted ({lift}): run `cancel` or `rollover` again, or lift it by hand",
                    self.sources
                ))
            }
        }
    }
}

async fn lift_block(ctx: &Ctx, sources: &str) -> anyhow::Result<()> {
    ctx.source.put_settings(sources, json!({ "index.blocks.write": null })).await?;
    Ok(())
}

/// The topic's end offsets now.
pub(super) async fn end_offsets(reader: &Arc<OffsetReader>) -> anyhow::Result<Offsets> {
    let reader = reader.clone();
    tokio::task::spawn_blocking(move || reader.end_offsets(Duration::from_secs(10)))
        .await?
        .context("cannot read the topic's end offsets")
}

/// Waits until the consumer has applied everything published before now.
async fn drain(ctx: &Ctx, consumer: &mut Consumer, reader: &Arc<OffsetReader>) -> anyhow::Result<(Offsets, Duration)> {
    let timeout = ctx.recipe.rollover.drain_timeout;
    let end = end_offsets(reader).await?;
    let drain_start = Instant::now();
    loop {
        let at = consumer.positions(ctx).await?;
        let behind = super::lag(&end, &at);
        if behind == 0 {
            return Ok((end, drain_start.elapsed()));
        }
        if drain_start.elapsed() > timeout {
            bail!("the consumer did not apply the last {behind} events within {timeout:?}");
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Compares the documents changed since the pass before the block (the source is blocked:
/// the set is final); a repair the target refused fails the step.
async fn reconcile_changed(ctx: &Ctx, before: &ReconcileRecord) -> anyhow::Result<InPause> {
    let started = Instant::now();
    let report = crate::pipeline::reconcile::changed_since(ctx, before, ctx.recipe.rollover.drain_timeout).await?;
    let changed = report.pairs.iter().map(|p| p.source_docs).sum();
    tracing::info!(changed, found = %report.found(), repaired = report.repaired, "final reconcile pass");
    if report.failed > 0 {
        bail!("reconcile: the target refused {} repairs in the pause; see the log", report.failed);
    }
    // Versions gone backwards, found before the block or now: written again by the next
    // step, now that nothing else writes to the target.
    let backwards = crate::pipeline::reconcile::merge(&before.backwards, report.backwards());
    Ok(InPause { changed, repaired: report.repaired, took: started.elapsed(), backwards, recounted: 0 })
}

/// Counts per pair, source against target: with the source blocked and every change since
/// the last pass repaired, they differ only by deletes the application made without an event
/// after the last full pass. A pair whose counts differ is compared id by id and repaired
/// here if the full pass's pace says that fits what is left of the pause; else the rollover
/// stops (and lifts the block) rather than switch to a target holding documents the source
/// deleted.
/// The pairs it compared, whose counts `counts_agree` checks once the versions gone
/// backwards that the comparison found are written again.
async fn recount<'c>(
    ctx: &'c Ctx,
    in_pause: &mut InPause,
    docs_per_second: f64,
    deadline: Instant,
) -> anyhow::Result<Vec<&'c PairInfo>> {
    let started = Instant::now();
    let mut compared = vec![];
    for p in &ctx.migration.pairs {
        let (on_source, on_target) = crate::pipeline::reconcile::counts(ctx, &p.source, &p.target).await?;
        if on_source == on_target {
            continue;
        }
        let needs = Duration::from_secs_f64((on_source + on_target) as f64 / docs_per_second.max(1.0));
        let left = deadline.saturating_duration_since(Instant::now());
        if needs * 2 > left {
            bail!(
                "{} holds {on_target} documents and {} {on_source} after the final reconcile pass: documents deleted \
                 without an event since the pass before the block; comparing them id by id takes about {:.1}s, more \
                 than the write pause has left ({:.1}s of [rollover] max_pause): run rollover again (its full pass \
                 repairs them before the block), and make the application publish its deletes",
                p.target,
                p.source,
                needs.as_secs_f64(),
                left.as_secs_f64()
            );
        }
        let report = crate::pipeline::reconcile::compare_pair(ctx, left, &p.source, &p.target).await?;
        let failed = report.count(crate::pipeline::reconcile::Kind::Failed);
        tracing::warn!(
            index = %p.target,
            source_docs = on_source,
            target_docs = on_target,
            extra = report.count(crate::pipeline::reconcile::Kind::Extra),
            "counts differed inside the pause: compared id by id"
        );
        if failed > 0 {
            bail!("reconcile: the target refused {failed} repairs in the pause; see the log");
        }
        in_pause.repaired += report.count(crate::pipeline::reconcile::Kind::Repaired);
        in_pause.backwards = crate::pipeline::reconcile::merge(&in_pause.backwards, report.backwards);
        in_pause.recounted += 1;
        compared.push(p);
    }
    in_pause.took += started.elapsed();
    Ok(compared)
}

/// Counts the compared pairs again: what still differs is beyond what a comparison can see
/// (the rollover stops rather than switch).
async fn counts_agree(ctx: &Ctx, compared: &[&PairInfo]) -> anyhow::Result<()> {
    for p in compared {
        let (on_source, on_target) = crate::pipeline::reconcile::counts(ctx, &p.source, &p.target).await?;
        if on_source != on_target {
            bail!(
                "{} holds {on_target} documents and {} {on_source} even after an id-by-id comparison inside the \
                 pause: run `indexferry migration reconcile {}` and look at what it reports before rolling over",
                p.target,
                p.source,
                ctx.migration.name
            );
        }
    }
    Ok(())
}

/// The production ingest pipelines onto the targets that run any (`crate::recipe::pipelines`): the
/// last thing before the swap, so that no copy or repair runs them and every write of the
/// application after the switch does.
async fn pipelines(ctx: &Ctx) -> anyhow::Result<()> {
    for p in ctx.migration.pairs.iter().filter(|p| !crate::recipe::pipelines::named(&p.production_settings).is_empty())
    {
        ctx.target
            .put_settings(&p.target, crate::recipe::pipelines::production(p))
            .await
            .with_context(|| format!("cannot set the ingest pipelines of {}", p.target))?;
    }
    Ok(())
}

/// Writes again the documents whose source version went backwards (`reconcile::reset`).
/// Not interruptible: it lowers the target's `gc_deletes` and puts it back before it returns.
async fn reset_backwards(ctx: &Ctx, in_pause: &mut InPause) -> anyhow::Result<()> {
    let started = Instant::now();
    let reset = crate::pipeline::reconcile::reset(ctx, &in_pause.backwards).await?;
    if reset > 0 {
        tracing::warn!(
            documents = reset,
            "wrote again at the source's _version documents whose version went backwards"
        );
    }
    in_pause.repaired += reset;
    in_pause.took += started.elapsed();
    in_pause.backwards.clear();
    Ok(())
}

/// One `_aliases` request moves every alias of every pair to its target. When it fails,
/// the alias is read first: the request may have taken effect with its answer lost (or a
/// retry of it refused because it had), and then the switch is done.
async fn swap(ctx: &Ctx) -> anyhow::Result<()> {
    let m = &ctx.migration;
    let mut actions = vec![];
    let mut adds = vec![];
    for p in &super::alias::current(ctx).await {
        if !m.cross_cluster {
            actions.extend(super::alias::remove_actions(p));
        }
        actions.extend(super::alias::add_actions(p));
        adds.extend(
            p.moved_aliases().into_iter().map(|(a, _)| SwapAdd { alias: a.to_owned(), index: p.target.clone() }),
        );
    }
    // Recorded before it is sent: after a kill, the rerun and `cancel` judge by it.
    ctx.dir.update_migration(|m| m.swap = adds.clone()).context("cannot record the swap before sending it")?;
    let m = &ctx.dir.load_migration()?;
    let Err(swap) =
        ctx.target.json::<Value>(Method::Post, "/_aliases", &[], Some(&json!({ "actions": actions }))).await
    else {
        return Ok(());
    };
    match super::recover::switch(&ctx.target, m).await {
        Ok(super::recover::Switch::Done) => {
            tracing::warn!(error = %swap, "the alias swap reported an error, but the alias points at the target: the switch happened");
            Ok(())
        }
        Ok(super::recover::Switch::Before) => Err(anyhow::Error::new(swap).context("alias swap failed")),
        Err(read) => Err(SwapUnknown { swap: swap.to_string(), read: format!("{read:#}") }.into()),
    }
}
