//! One shutdown pattern for every long-running command: SIGINT or SIGTERM cancels the
//! token, workers finish or abandon their current batch and flush their checkpoints; a
//! second signal exits at once (nothing is lost: the checkpoint only ever trails the target).

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How often a worker reads the migration's state: under the shortest write pause (the
/// default grace alone is 500 ms), so that its state gauge shows `rolling_over`.
pub const STATE_POLL: Duration = Duration::from_millis(400);

pub fn install(cancel: CancellationToken) {
    tokio::spawn(
        async move {
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
                return;
            };
            let mut signals = 0;
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                signals += 1;
                if signals == 1 {
                    tracing::info!(
                        "stopping: finishing the current batches and saving checkpoints (signal again to exit now)"
                    );
                    cancel.cancel();
                } else {
                    std::process::exit(130);
                }
            }
        }
        .in_current_span(),
    );
}

/// Cancels `cancel` once the migration is rolled over or its state is removed (cancel), or
/// `cancel` asks the workers to stop through the state folder, so workers started before
/// those commands stop by themselves, in whichever container they run. Reads the state
/// every [`STATE_POLL`], and sets the state and rollover-pause gauges from it (see `gauges`).
pub fn watch_state(dir: crate::state::StateDir, cancel: CancellationToken) {
    let started = chrono::Utc::now();
    tokio::spawn(
        async move {
            let mut tick = tokio::time::interval(STATE_POLL);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let stop = match tokio::task::spawn_blocking({
                    let dir = dir.clone();
                    move || (dir.load_migration(), stop_requested(&dir, started))
                })
                .await
                {
                    Ok((_, true)) => Some("cancel asked the workers to stop"),
                    Ok((Ok(m), false)) => {
                        crate::runtime::gauges::follow(&m);
                        (m.state == crate::state::State::RolledOver).then_some("migration rolled over")
                    }
                    Ok((Err(crate::state::StateError::NotFound { .. }), false)) => Some("migration cancelled"),
                    _ => None,
                };
                if let Some(why) = stop {
                    tracing::info!("{why}: stopping");
                    cancel.cancel();
                    return;
                }
            }
        }
        .in_current_span(),
    );
}

/// Whether `cancel` asked the workers to stop since `started` (a request older than this
/// worker was meant for another).
fn stop_requested(dir: &crate::state::StateDir, started: chrono::DateTime<chrono::Utc>) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.stop_request_file()) else { return false };
    chrono::DateTime::parse_from_rfc3339(text.trim()).is_ok_and(|at| at >= started)
}
