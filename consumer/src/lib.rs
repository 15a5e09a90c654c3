//! The indexferry migration engine: snapshot, replay, rollover, verify, and the state
//! they share. `main.rs` is the operator CLI over it.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod add;
pub mod cancel;
pub mod context;
pub mod deadletter;
pub mod deadletters;
pub mod gauges;
pub mod health;
pub mod init;
pub mod mget;
pub mod overview;
pub mod patterns;
pub mod pipelines;
pub mod plan;
pub mod reconcile;
pub mod replay;
pub mod rollover;
pub mod shield;
pub mod shutdown;
pub mod snapshot;
pub mod source_tombstones;
pub mod state;
pub mod status;
pub mod templates;
pub mod verify;
pub mod versions;
pub mod writer;
