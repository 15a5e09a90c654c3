//! Re-applying the deletes the replay recorded (see [`crate::state::Tombstone`]) before
//! the switch. Each goes out again with its external version: a document an older write
//! brought back after a target restart is deleted again; one re-created since carries a
//! higher version and stays (409, stale).

use crate::pipeline::mget::Key;
use crate::pipeline::writer::{Doc, Final, VersionType, Writer};
use crate::runtime::context::Ctx;
use crate::state::{tombstone_key, Db, Tombstone};
use anyhow::Context as _;
use indexferry_common::es::Method;
use serde::Deserialize;
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

const BATCH: usize = 1000;

/// What the sweep did.
#[derive(Debug, Default)]
pub(super) struct Sweep {
    /// Deletes re-applied.
    pub tombstones: u64,
    /// Of which documents that were present again in the target.
    pub resurrected: u64,
}

pub(super) async fn sweep(ctx: &Ctx) -> anyhow::Result<Sweep> {
    let mut result = Sweep::default();
    let Some(store) = ctx.dir.open_read_only(Db::Replay)? else { return Ok(result) };
    let writer = Writer::new(ctx.target.clone(), "rollover", CancellationToken::new());
    let mut after: Option<String> = None;
    loop {
        let page = store.tombstones(after.as_deref(), BATCH)?;
        let Some((index, id, t)) = page.last() else { break };
        after = Some(tombstone_key(index, id, t.routing.as_deref()));
        result.resurrected += present(ctx, &page).await?;
        let docs: Vec<Doc> = page
            .iter()
            .map(|(index, id, t)| Doc {
                index: index.clone(),
                id: id.clone(),
                version: t.version,
                version_type: VersionType::External,
                routing: t.routing.clone(),
                source: None,
            })
            .collect();
        let Ok(finals) = writer.write(&docs).await else {
            writer.check().context("re-applying recorded deletes stopped")?;
            anyhow::bail!("re-applying recorded deletes stopped: cancelled");
        };
        if let Some(Final::Rejected(reason)) = finals.iter().find(|f| matches!(f, Final::Rejected(_))) {
            anyhow::bail!("re-applying a recorded delete failed: {reason}");
        }
        result.tombstones += page.len() as u64;
    }
    Ok(result)
}

/// When each target node started (its JVM), by node id. A change means a restart, and a
/// restarted node has forgotten the tombstones it kept in memory.
pub(super) async fn target_started(ctx: &Ctx) -> anyhow::Result<BTreeMap<String, u64>> {
    #[derive(Deserialize)]
    struct Nodes {
        #[serde(default)]
        nodes: BTreeMap<String, Node>,
    }
    #[derive(Deserialize)]
    struct Node {
        jvm: Jvm,
    }
    #[derive(Deserialize)]
    struct Jvm {
        start_time_in_millis: u64,
    }
    let answer: Nodes = ctx
        .target
        .json(Method::Get, "/_nodes/jvm", &[("filter_path", "nodes.*.jvm.start_time_in_millis")], None)
        .await
        .context("cannot read when the target's nodes started")?;
    Ok(answer.nodes.into_iter().map(|(id, n)| (id, n.jvm.start_time_in_millis)).collect())
}

/// How many of the tombstoned documents exist in the target with a version at or below
/// their delete's (i.e. came back after it).
async fn present(ctx: &Ctx, page: &[(String, String, Tombstone)]) -> anyhow::Result<u64> {
    let keys = page.iter().map(|(index, id, t)| Key { index: Some(index), id, routing: t.routing.as_deref() });
    let docs = crate::pipeline::mget::mget(&ctx.target, None, keys, false).await?;
    Ok(docs.iter().zip(page).filter(|(d, (_, _, t))| d.found && d.version.unwrap_or(0) <= t.version).count() as u64)
}
