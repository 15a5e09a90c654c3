//! Shared ground of the indexferry crates: recipes, the cluster client layer with its retry
//! classification, Kafka client settings, secrets that never print, and metric names.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
pub mod error;
pub mod es;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod retry;
pub mod secret;

pub use error::{Error, Result};
