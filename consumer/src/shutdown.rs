//! One shutdown pattern for every long-running command: SIGINT or SIGTERM cancels the
//! token, workers finish or abandon their current batch and flush their checkpoints; a
//! second signal exits at once (nothing is lost: the checkpoint only ever trails the target).

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a worker reads the migration's state: under the shortest write pause (the
/// default grace alone is 500 ms), so that its state gauge shows `rolling_over`.
pub const STATE_POLL: Duration = Duration::from_millis(400);

pub fn install(cancel: CancellationToken) {
    tokio::spawn(async move {
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
    });
}

/// Cancels `cancel` once the migration is rolled over or its state is removed (cancel),
/// so workers started before those commands stop by themselves. Reads the state every
/// [`STATE_POLL`], and sets the state and rollover-pause gauges from it (see `gauges`).
pub fn watch_state(dir: crate::state::StateDir, cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STATE_POLL);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let stop = match tokio::task::spawn_blocking({
                let dir = dir.clone();
                move || dir.load_migration()
            })
            .await
            {
                Ok(Ok(m)) => {
                    crate::gauges::follow(&m);
                    m.state == crate::state::State::RolledOver
                }
                Ok(Err(crate::state::StateError::NotFound { .. })) => true,
                _ => false,
            };
            if stop {
                tracing::info!("migration rolled over or cancelled: stopping");
                cancel.cancel();
                return;
            }
        }
    });
}
