//! Reading where the switch actually is. A rollover killed mid-way (SIGKILL, a lost
//! connection) leaves its record at `rolling_over`; the alias and the write block on the
//! clusters say what happened, and a rerun (or `cancel`) trusts them over the record.

use super::{print_result, restore_gc_deletes};
use crate::runtime::context::Ctx;
use crate::state::{Migration, RolloverRecord, State};
use anyhow::{bail, Context as _};
use chrono::Utc;
use indexferry_common::es::Cluster;

/// Where the application's aliases are on the target cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Switch {
    /// No target holds its alias: the swap did not happen.
    Before,
    /// Every target holds its alias: the swap happened.
    Done,
}

/// Reads on the target cluster the aliases the last swap sent (recorded before it was
/// sent), or for a migration without that record each pair's recorded aliases. One
/// `_aliases` request moves them all at once, so a mix means someone changed aliases by
/// hand: that is refused, naming them.
pub(crate) async fn switch(target: &Cluster, m: &Migration) -> anyhow::Result<Switch> {
    let expected: Vec<(&str, &str)> = match m.swap.is_empty() {
        false => m.swap.iter().map(|a| (a.alias.as_str(), a.index.as_str())).collect(),
        true => m
            .pairs
            .iter()
            .flat_map(|p| p.moved_aliases().into_iter().map(move |(alias, _)| (alias, p.target.as_str())))
            .collect(),
    };
    let mut moved = vec![];
    let mut not_moved = vec![];
    let mut held = std::collections::BTreeMap::new();
    for (alias, index) in expected {
        if !held.contains_key(alias) {
            held.insert(alias, target.alias_indices(alias).await?);
        }
        let on = &held[alias];
        if on.iter().any(|i| i == index) {
            moved.push(format!("{alias} -> {index}"));
        } else {
            not_moved.push(format!("{alias} -> {}", on.join(",")));
        }
    }
    match (moved.is_empty(), not_moved.is_empty()) {
        (true, _) => Ok(Switch::Before),
        (false, true) => Ok(Switch::Done),
        (false, false) => bail!(
            "some aliases point at their target ({}) and others do not ({}): fix the aliases by hand",
            moved.join(", "),
            not_moved.join(", ")
        ),
    }
}

/// The record says `rolling_over` and the alias already points at the target: a rollover
/// was killed after its swap. Its bookkeeping is finished here; nothing is redone or undone
/// (the source stays write-blocked, as after any rollover).
pub(super) async fn finish_switched(ctx: &Ctx) -> anyhow::Result<()> {
    tracing::warn!("the alias already points at the target: finishing an interrupted rollover's bookkeeping");
    restore_gc_deletes(ctx).await;
    let record = RolloverRecord {
        at: Utc::now(),
        write_pause_ms: 0,
        grace_ms: 0,
        drain_ms: 0,
        end_offsets: Default::default(),
        deletes_reapplied: 0,
        resurrections_undone: 0,
        finished_after_interruption: true,
        reconciled: false,
        reconcile_repaired_before: 0,
        reconcile_repaired_in_pause: 0,
        reconcile_changed_docs: 0,
        reconcile_pause_ms: 0,
        reconcile_recounted: 0,
    };
    let m = ctx.dir.update_migration(|m| {
        m.state = State::RolledOver;
        m.rollover = Some(record.clone());
        m.last_error = None;
    })?;
    super::marker::write(ctx).await.context("the switch happened, but the switch marker could not be written")?;
    println!("an interrupted rollover had already switched the alias; its bookkeeping is now finished");
    print_result(&m, &record, &ctx.target.url);
    Ok(())
}
