//! What a worker's `/metrics` shows from its start, and what it learns from the state file
//! while it runs: every series a dashboard queries exists at once (zero where nothing has
//! happened yet), and the state and last rollover pause follow the migration's record, which
//! the `rollover` command (another process, serving no metrics) writes.

use crate::runtime::context::Ctx;
use crate::state::{Migration, State};
use indexferry_common::metrics::{self, ROLLOVER_PAUSE, SNAPSHOT_PROGRESS, STATE};
use std::sync::OnceLock;

/// The scrape mark (see `metrics::scrapes_begun`) taken when the gauges first showed the
/// rolled-over state: a scrape answered after it has read the final state and pause.
static FINAL: OnceLock<u64> = OnceLock::new();

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
    if m.state == State::RolledOver {
        FINAL.get_or_init(metrics::scrapes_begun);
    }
}

/// A worker stopped by the rollover serves its metrics until a scrape has read the final
/// state and write pause, at most `limit`, or until a signal. A scrape that read them while
/// the worker was still stopping counts. Without any scrape before, nobody is listening: it
/// returns at once.
pub async fn linger(dir: &crate::state::StateDir, limit: std::time::Duration) {
    if metrics::scrapes_begun() == 0 {
        return;
    }
    let m = match dir.load_migration() {
        Ok(m) if m.state == State::RolledOver => m,
        _ => return,
    };
    follow(&m);
    let mark = *FINAL.get_or_init(metrics::scrapes_begun);
    if metrics::answered_after(mark) {
        return;
    }
    tracing::info!(limit = ?limit, "rolled over: serving the final metrics until the next scrape");
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else { return };
    let scraped = async {
        while !metrics::answered_after(mark) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Db, StateDir, MIGRATION_KEY};
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};

    fn scrape(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).expect("connect to /metrics");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("send");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("read");
        body
    }

    fn rolled_over(pause_ms: u64) -> Migration {
        serde_json::from_value(serde_json::json!({
            "name": "m", "recipe_text": "", "recipe_path": "", "created_at": "2026-01-01T00:00:00Z",
            "state": "rolled_over", "start_offsets": {}, "pairs": [], "source_server": "",
            "target_server": "", "cross_cluster": false,
            "rollover": { "at": "2026-01-01T00:00:00Z", "write_pause_ms": pause_ms, "grace_ms": 0,
                          "drain_ms": 0, "end_offsets": {} },
        }))
        .expect("a rolled-over record")
    }

    /// The race CI met: the scrape that read the final state came while the worker was still
    /// stopping, before it lingered. It counts; the worker does not wait for another one.
    #[tokio::test]
    async fn a_scrape_of_the_final_state_before_the_worker_lingers_lets_it_exit() {
        let addr = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
        metrics::serve(addr).expect("serve metrics");
        let root = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::new(root.path(), "m");
        let m = rolled_over(1234);
        dir.open(Db::Meta).and_then(|s| s.put(MIGRATION_KEY, &m)).expect("write the record");

        // A scrape before the rollover: somebody is listening.
        let before = scrape(addr);
        assert!(before.contains("indexferry_rollover_write_pause_seconds 0"), "{before}");
        // The state watcher sees the rollover; the next scrape reads it.
        follow(&m);
        let body = scrape(addr);
        assert!(body.contains(r#"indexferry_migration_state{state="rolled_over"} 1"#), "{body}");
        assert!(body.contains("indexferry_rollover_write_pause_seconds 1.234"), "{body}");

        // No further scrape comes: with a limit of an hour, lingering must end by itself.
        let lingered = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            linger(&dir, std::time::Duration::from_secs(3600)),
        )
        .await;
        assert!(lingered.is_ok(), "the worker waited for a second scrape of the final state");
    }
}
