//! The switch marker: after the swap, each source index says in its mapping's `_meta` where
//! its aliases now live, so that the producer library, finding its writes blocked, can
//! follow the application's alias to the target cluster by itself — or, in-cluster and
//! across clusters alike, a write addressed to the source index by its own name to the
//! target index. The marker lists every alias that now leads to the target index (read
//! there), so a pattern's write alias that moved since `init` is followed too.
//!
//! The marker's form is [`indexferry_schemas::switch::SwitchMarker`].
//!
//! Written only once the alias swap on the target succeeded, no consumer replays any more
//! and the record says `rolled_over`: a producer that followed earlier would write into the
//! target while the drain still replays, and its events (named after a target that may share
//! the source's name) could be replayed over its own writes. `put_mapping` is allowed under
//! `index.blocks.write`. Writing it again is harmless: a rerun of `rollover` (after a kill
//! anywhere after the swap) writes it whenever it is missing.
//!
//! Across clusters the old cluster must not take new writes either: indices the application
//! (ILM, a daily job, an auto-created index) makes there after the switch under a pattern of
//! the migration are created write-blocked, by a composable template above every other that
//! carries the marker too (`block_new_indices`).
//!
//! Cluster URLs are written without credentials; the producer matches them against the
//! clusters its application configured (with their own credentials and TLS).

use crate::runtime::context::Ctx;
use crate::state::running_pid;
use anyhow::{bail, Context as _};
use chrono::Utc;
use indexferry_common::es::{redact_url, Method};
use indexferry_schemas::switch::{SwitchMarker, KEY};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long a consumer running in another process gets to notice `rolled_over` and stop
/// (it checks every second) before the marker lets the application's writes into the target.
const CONSUMER_STOP: Duration = Duration::from_secs(20);

/// Writes the marker on every source index that lacks it (cross-cluster only); returns how
/// many it wrote. Call once the record says `rolled_over`.
pub(super) async fn write(ctx: &Ctx) -> anyhow::Result<usize> {
    wait_consumer_stopped(ctx).await?;
    let urls: Vec<String> = ctx
        .recipe
        .target
        .as_ref()
        .map_or_else(|| vec![redact_url(&ctx.target.url)], |t| t.url.iter().map(|u| redact_url(u)).collect());
    let mut written = 0;
    for p in &ctx.migration.pairs {
        // A source index deleted since takes no write to redirect.
        if !ctx.source.exists(&p.source).await.unwrap_or(true) {
            tracing::warn!(index = %p.source, "the source index is gone: no switch marker for it");
            continue;
        }
        let mut meta = current_meta(ctx, &p.source).await?;
        let there = meta.get(KEY).and_then(|m| serde_json::from_value::<SwitchMarker>(m.clone()).ok());
        if there.is_some_and(|m| m.index == p.target && m.cluster == urls) {
            continue;
        }
        let aliases: Vec<String> = match crate::recipe::patterns::index_aliases(&ctx.target, &p.target).await {
            Ok(a) => a.into_keys().collect(),
            Err(e) => {
                tracing::warn!(index = %p.target, error = %e, "cannot read the target's aliases; the marker names those recorded");
                p.moved_aliases().into_iter().map(|(a, _)| a.to_owned()).collect()
            }
        };
        let marker = SwitchMarker {
            migration: ctx.migration.name.clone(),
            cluster: urls.clone(),
            source: p.source.clone(),
            index: p.target.clone(),
            alias: p.alias.clone(),
            aliases,
            at: Utc::now(),
        };
        meta.insert(KEY.into(), serde_json::to_value(&marker)?);
        ctx.source
            .json::<Value>(Method::Put, &format!("/{}/_mapping", p.source), &[], Some(&json!({ "_meta": meta })))
            .await
            .with_context(|| format!("cannot write the switch marker on {} at {}", p.source, ctx.source.url))?;
        written += 1;
    }
    if written > 0 {
        tracing::info!(indices = written, target = %urls.join(","), "switch marker written on the source");
    }
    if ctx.migration.cross_cluster {
        block_new_indices(ctx, &urls).await?;
    }
    Ok(written)
}

/// The name of the template that blocks new indices of a pattern on the old cluster.
fn blocking_template(ctx: &Ctx, n: usize) -> String {
    format!("indexferry-switched-{}-{n}", ctx.migration.name)
}

/// Across clusters: every pattern of the migration gets, on the source cluster, a composable
/// template above every other that creates its new indices write-blocked and carrying the
/// marker (for the pattern's aliases). What was already there stays as it is.
async fn block_new_indices(ctx: &Ctx, urls: &[String]) -> anyhow::Result<()> {
    let patterns: Vec<&str> = ctx.recipe.pairs.iter().filter(|p| p.is_pattern()).map(|p| p.source.as_str()).collect();
    for (n, pattern) in patterns.iter().enumerate() {
        let name = blocking_template(ctx, n);
        let aliases: Vec<String> = ctx
            .migration
            .pairs
            .iter()
            .filter(|p| p.pattern.as_deref() == Some(*pattern))
            .flat_map(|p| p.moved_aliases().into_iter().map(|(a, _)| a.to_owned()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let marker = SwitchMarker {
            migration: ctx.migration.name.clone(),
            cluster: urls.to_vec(),
            source: String::new(),
            index: String::new(),
            alias: String::new(),
            aliases,
            at: Utc::now(),
        };
        let priority = crate::recipe::shield::highest_priority(&ctx.source).await? + 1;
        let template = json!({
            "index_patterns": [pattern],
            "priority": priority,
            "template": {
                "settings": { "index.blocks.write": true },
                "mappings": { "_meta": { KEY: marker } },
            },
            "_meta": { "description": format!(
                "indexferry: migration {} moved indices matching {pattern} to another cluster; new ones here refuse writes",
                ctx.migration.name
            ) },
        });
        match ctx.source.json::<Value>(Method::Put, &format!("/_index_template/{name}"), &[], Some(&template)).await {
            Ok(_) => {
                tracing::info!(%pattern, template = %name, "new indices of the pattern on the source cluster are write-blocked")
            }
            // Older clusters without composable templates, or a user without the privilege:
            // said, not fatal (the switch is done).
            Err(e) => {
                tracing::warn!(%pattern, error = %e, "cannot block new indices of the pattern on the source cluster")
            }
        }
    }
    Ok(())
}

/// Whether every source index carries the marker.
pub(super) async fn present(ctx: &Ctx) -> anyhow::Result<bool> {
    for p in &ctx.migration.pairs {
        if ctx.source.exists(&p.source).await.is_ok_and(|e| !e) {
            continue;
        }
        if current_meta(ctx, &p.source).await?.get(KEY).is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The source index's `_meta`, which `put_mapping` replaces whole: kept and added to.
async fn current_meta(ctx: &Ctx, index: &str) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mapping: Value = ctx
        .source
        .json(Method::Get, &format!("/{index}/_mapping"), &[], None)
        .await
        .with_context(|| format!("cannot read the mapping of {index} at {}", ctx.source.url))?;
    let meta = mapping.as_object().and_then(|m| m.values().next()).map(|m| &m["mappings"]["_meta"]);
    Ok(meta.and_then(Value::as_object).cloned().unwrap_or_default())
}

/// A consumer in another process stops by itself once the record says `rolled_over`.
async fn wait_consumer_stopped(ctx: &Ctx) -> anyhow::Result<()> {
    let deadline = Instant::now() + CONSUMER_STOP;
    while let Some(pid) = running_pid(&ctx.dir, "consume") {
        if Instant::now() > deadline {
            bail!(
                "the consumer (pid {pid}) is still running {CONSUMER_STOP:?} after the switch, so the switch marker that \
                 lets the application follow to the target cluster is not written: stop it and run `rollover` again"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
