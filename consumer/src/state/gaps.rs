//! The capture proxies' gap notices recorded for a migration, summed up for `status` and
//! for rollover's check that reconcile has seen them.

use super::{Db, ReconcileRecord, StateDir};
use chrono::Utc;
use serde::Serialize;

/// Writes the source may hold without their change events, as capture proxies reported
/// them: a proxy killed with writes in flight, or one that could not publish.
#[derive(Debug, Default, Serialize)]
pub struct GapStatus {
    pub notices: u64,
    /// Documents they name (reconcile looks at each again).
    pub docs: u64,
    /// Writes without ids (auto-generated ids, by-query): a full reconcile pass covers them.
    pub unnamed: u64,
    /// Notices recorded since the last reconcile pass started (all without one).
    pub since_reconcile: u64,
    pub origins: Vec<String>,
    pub last_at: Option<chrono::DateTime<Utc>>,
}

impl GapStatus {
    /// The gap notices recorded in the replay's store.
    pub fn read(dir: &StateDir, reconciled: Option<&ReconcileRecord>) -> anyhow::Result<GapStatus> {
        let Some(store) = dir.open_read_only(Db::Replay)? else { return Ok(GapStatus::default()) };
        let all = store.gaps(&Default::default())?;
        let since = match reconciled {
            Some(r) => store.gaps(&r.recheck_from)?.len() as u64,
            None => all.len() as u64,
        };
        let mut origins: Vec<String> = all.iter().map(|g| g.origin.clone()).collect();
        origins.sort();
        origins.dedup();
        Ok(GapStatus {
            notices: all.len() as u64,
            docs: all.iter().map(|g| g.docs.len() as u64).sum(),
            unnamed: all.iter().filter(|g| !g.unnamed.is_empty()).count() as u64,
            since_reconcile: since,
            origins,
            last_at: all.iter().map(|g| g.at).max(),
        })
    }
}
