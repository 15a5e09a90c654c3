//! The stages a migration goes through, in order: [`snapshot`] copies a point-in-time view,
//! [`replay`] applies the change events, [`reconcile`] repairs what the events missed,
//! [`rollover`] switches the aliases, [`verify`] compares source and target. What the
//! stages share sits beside them: the versioned [`writer`] and its [`versions`] rule, the
//! [`mget`] lookups, the source's delete tombstones ([`source_tombstones`]) and the
//! dead-letter topic ([`deadletters`]). The stages of `run`, `reconcile`, `rollover`,
//! `verify` and `deadletters` are their commands' bodies too.

pub mod deadletters;
pub mod mget;
pub mod reconcile;
pub mod replay;
pub mod rollover;
pub mod snapshot;
pub mod source_tombstones;
pub mod verify;
pub mod versions;
pub mod writer;
