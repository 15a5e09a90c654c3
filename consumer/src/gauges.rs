//! What a worker's `/metrics` shows from its start, and what it learns from the state file
//! while it runs: every series a dashboard queries exists at once (zero where nothing has
//! happened yet), and the state and last rollover pause follow the migration's record, which
//! the `rollover` command (another process, serving no metrics) writes.

use crate::context::Ctx;
use crate::state::{Migration, State};
use indexferry_common::metrics::{self, ROLLOVER_PAUSE, SNAPSHOT_PROGRESS, STATE};

/// Series of a worker at its start: the replay's, the snapshot's (progress as the
/// checkpoints say), or both, and the state's.
pub fn start(ctx: &Ctx, snapshot: bool, replay: bool) {
    if replay {
        metrics::zero_replay();
    }
    if snapshot {
        let slices = ctx.dir.read_snapshot().unwrap_or_default();
        let want = ctx.recipe.snapshot.slices as usize;
        for (i, p) in ctx.migration.pairs.iter().enumerate() {
            metrics::zero_snapshot(&p.source);
            let mine = slices.iter().filter(|((pair, _), _)| *pair == i);
            let (done, copied) = mine.fold((0, 0), |(d, c), (_, cp)| (d + usize::from(cp.done), c + cp.copied));
            let progress = match (done >= want, p.source_docs) {
                (true, _) => 1.0,
                (false, 0) => 0.0,
                (false, total) => (copied as f64 / total as f64).min(1.0),
            };
            ::metrics::gauge!(SNAPSHOT_PROGRESS, "pair" => p.source.clone()).set(progress);
        }
    }
    follow(&ctx.migration);
}

/// The state gauge (1 for the current state) and the last rollover's write pause, as `m` says.
pub fn follow(m: &Migration) {
    for s in [State::Initialized, State::RollingOver, State::RolledOver] {
        ::metrics::gauge!(STATE, "state" => s.as_str()).set(if s == m.state { 1.0 } else { 0.0 });
    }
    let pause = m.rollover.as_ref().map_or(0.0, |r| r.write_pause_ms as f64 / 1000.0);
    ::metrics::gauge!(ROLLOVER_PAUSE).set(pause);
}

/// A worker stopped by the rollover serves its metrics until one more scrape has read the
/// final state and write pause, at most `limit`, or until a signal. Without any scrape
/// before, nobody is listening: it returns at once.
pub async fn linger(dir: &crate::state::StateDir, limit: std::time::Duration) {
    let seen = metrics::scrapes();
    if seen == 0 {
        return;
    }
    let m = match dir.load_migration() {
        Ok(m) if m.state == State::RolledOver => m,
        _ => return,
    };
    follow(&m);
    tracing::info!(limit = ?limit, "rolled over: serving the final metrics until the next scrape");
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else { return };
    let scraped = async {
        while metrics::scrapes() == seen {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = scraped => {}
        _ = tokio::time::sleep(limit) => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
