//! The operator commands that are not a pipeline stage: they make, extend, stop and show a
//! migration. Each is the body of one CLI command in `main.rs`; they use every group below
//! them, and nothing outside `main.rs` uses them.

pub mod add;
pub mod cancel;
pub mod init;
pub mod overview;
pub mod status;
