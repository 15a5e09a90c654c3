//! What every command and worker runs on: the loaded migration and its connections
//! ([`context`]), the metrics it serves ([`gauges`]), the failures it reports while it
//! retries ([`health`]) and how it stops ([`shutdown`]).

pub mod context;
pub mod gauges;
pub mod health;
pub mod shutdown;
