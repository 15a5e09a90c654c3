//! The indexferry migration engine. `main.rs` is the operator CLI over it.
//!
//! The groups, from the bottom up; each uses only the groups above it in this list
//! (ARCHITECTURE.md draws the picture):
//! - [`state`]: the migration's durable record (RocksDB), its locks and pid files.
//! - [`runtime`]: what every command runs on: context, metrics, health, shutdown.
//! - [`recipe`]: what a recipe expands to on the clusters: pairs, templates, targets.
//! - [`pipeline`]: the stages: snapshot, replay, reconcile, rollover, verify, and what
//!   they share (the writer, the dead-letter topic).
//! - [`commands`]: the operator commands that are not stages: init, add, cancel, status.
//! - [`tools`]: plan, the upgrade assistant.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod state;

pub mod runtime;

pub mod recipe;

pub mod pipeline;

pub mod commands;

pub mod tools;
