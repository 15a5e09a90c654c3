//! Documents whose source `_version` went backwards (`source` rule), given the source's
//! version inside rollover's pause.
//!
//! A delete then re-create after the source forgot the delete's tombstone (a source node
//! restart forgets them all) starts the document again at `_version` 1, below what the
//! target holds (the old document, or its delete's tombstone). No external-version write
//! can lower a version, and while the replay may still deliver older writes the target's
//! tombstones must stay. Inside the pause the drain is done and nothing else writes to the
//! target, so tombstones have done their work: the target's `index.gc_deletes` goes to 0,
//! each such document is deleted (its tombstone then pruned by a refresh) and written again
//! from the source, which is write-blocked and so final, at the source's version. Then
//! `gc_deletes` goes back to the migration's value (rollover restores the production one
//! right after the swap). A rollover that fails after this step has pruned the target's
//! tombstones, as a target restart would: the next rollover's sweep of the recorded deletes
//! undoes any resurrection.

use crate::pipeline::mget::{mget_in, same_source, Key};
use crate::pipeline::writer::{Doc, Final, VersionType, Writer};
use crate::runtime::context::Ctx;
use crate::state::Recheck;
use anyhow::{bail, Context as _};
use bytes::Bytes;
use indexferry_common::es::Method;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many refreshes a write waits for the target to prune the tombstone it meets.
const ATTEMPTS: usize = 20;
const BETWEEN_ATTEMPTS: Duration = Duration::from_millis(25);

/// Writes the documents again at the source's version; the number written. Fails naming
/// the ids the target still refuses.
pub(crate) async fn reset(ctx: &Ctx, keys: &[Recheck]) -> anyhow::Result<u64> {
    let mut docs = vec![];
    for p in &ctx.migration.pairs {
        let of_pair: Vec<&Recheck> = keys.iter().filter(|k| k.index == p.target).collect();
        if !of_pair.is_empty() {
            docs.extend(still_backwards(ctx, &p.source, &p.target, &of_pair).await?);
        }
    }
    if docs.is_empty() {
        return Ok(0);
    }
    let targets: Vec<&str> = ctx.migration.pairs.iter().map(|p| p.target.as_str()).collect();
    let targets = targets.join(",");
    ctx.target.put_settings(&targets, json!({ "index.gc_deletes": "0s" })).await.context("index.gc_deletes to 0")?;
    let written = rewrite(ctx, &targets, &docs).await;
    let restored =
        ctx.target.put_settings(&targets, json!({ "index.gc_deletes": ctx.recipe.rollover.gc_deletes.clone() })).await;
    let written = written?;
    restored.context("index.gc_deletes back to the migration's value")?;
    Ok(written)
}

/// The source's documents for the keys where the target does not hold them at their
/// version with their body (read now: the source is blocked, the drain done).
async fn still_backwards(ctx: &Ctx, source: &str, target: &str, keys: &[&Recheck]) -> anyhow::Result<Vec<Doc>> {
    let key = || keys.iter().map(|k| Key::new(&k.id, k.routing.as_deref()));
    let in_source = mget_in(&ctx.source, source, key(), true).await?;
    let in_target = mget_in(&ctx.target, target, key(), true).await?;
    let mut docs = vec![];
    for (s, t) in in_source.into_iter().zip(in_target) {
        // Deleted from the source since: the drain brought its delete.
        let (true, Some(version)) = (s.found, s.version) else { continue };
        if t.found && t.version == Some(version) && same_source(s.source.as_deref(), t.source.as_deref()) {
            continue;
        }
        docs.push(Doc {
            index: target.to_owned(),
            id: s.id,
            version,
            version_type: VersionType::External,
            routing: s.routing,
            source: s.source,
        });
    }
    Ok(docs)
}

/// Deletes the documents (internal versions: whatever the target holds), then writes them
/// at their version, refreshing until the target has pruned the tombstones in the way.
async fn rewrite(ctx: &Ctx, targets: &str, docs: &[Doc]) -> anyhow::Result<u64> {
    let mut body = String::new();
    for d in docs {
        let mut head = json!({ "_index": d.index, "_id": d.id });
        if let Some(r) = &d.routing {
            head["routing"] = json!(r);
        }
        body.push_str(&json!({ "delete": head }).to_string());
        body.push('\n');
    }
    let answer = ctx.target.bulk(Bytes::from(body)).await.context("deleting the documents to write again")?;
    if let Some(item) = answer.items.iter().find(|i| !matches!(i.result().status, 200 | 404)) {
        bail!("deleting a document to write it again failed: status {}", item.result().status);
    }
    let writer = Writer::new(ctx.target.clone(), "rollover", CancellationToken::new());
    let mut pending: Vec<Doc> = docs.to_vec();
    for _ in 0..ATTEMPTS {
        ctx.target.json::<Value>(Method::Post, &format!("/{targets}/_refresh"), &[], None).await?;
        let finals = writer.write(&pending).await.map_err(|_| {
            anyhow::anyhow!("writing documents again stopped: {}", writer.gave_up().unwrap_or_default())
        })?;
        let mut next = vec![];
        for (d, f) in pending.into_iter().zip(finals) {
            match f {
                Final::Applied => {}
                // The tombstone is not pruned yet.
                Final::Stale => next.push(d),
                Final::Rejected(why) => bail!("the target refused document {} of {}: {why}", d.id, d.index),
            }
        }
        pending = next;
        if pending.is_empty() {
            return Ok(docs.len() as u64);
        }
        tokio::time::sleep(BETWEEN_ATTEMPTS).await;
    }
    let ids: Vec<&str> = pending.iter().take(20).map(|d| d.id.as_str()).collect();
    bail!(
        "the target still holds a newer version (or delete) than the source for {} documents whose source _version went \
         backwards, after {ATTEMPTS} refreshes with index.gc_deletes 0: {}",
        pending.len(),
        ids.join(" ")
    )
}
