//! The indexferry migration engine: snapshot, replay, rollover, verify, and the state
//! they share. `main.rs` is the operator CLI over it.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod add;
pub mod cancel;
pub mod context;
pub mod deadletter;
pub mod health;
pub mod init;
pub mod overview;
pub mod patterns;
pub mod reconcile;
pub mod replay;
pub mod rollover;
pub mod shutdown;
pub mod snapshot;
pub mod state;
pub mod status;
pub mod templates;
pub mod verify;
pub mod writer;

/// Sets the migration-state gauge: 1 for the current state.
pub fn set_state_metric(current: state::State) {
    use state::State::*;
    for s in [Initialized, RollingOver, RolledOver] {
        metrics::gauge!(indexferry_common::metrics::STATE, "state" => s.as_str()).set(if s == current {
            1.0
        } else {
            0.0
        });
    }
}
