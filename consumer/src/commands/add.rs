//! `add`: an index created after `init` that matches a pattern of the recipe joins the
//! migration (or, with `--exclude`, is recorded as left behind). Until one of the two,
//! `status` shows it and `rollover` refuses.
//!
//! Convergence, as at `init`: the topic's end offsets are read after the target exists and
//! before the snapshot of the index opens its point-in-time, so each write to it is in the
//! snapshot or in an event at or after those offsets. Its events before `add` were ignored
//! by the replay as outside the migration; the replay therefore goes back to those offsets
//! once (a running consumer notices the new pair within a second and restarts with it),
//! and every other pair's events it meets again are stale no-ops. The snapshot is the
//! migration's own worker, run here: it skips the pairs already copied.

use crate::runtime::context::{end_offsets, Common, Ctx};
use crate::state::{running_pid, State};
use anyhow::{bail, Context as _};
use indexferry_common::config::glob_match;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn add(common: &Common, name: &str, index: &str, exclude: bool) -> anyhow::Result<()> {
    let (_lock, ctx) = Ctx::load_locked(common, name, "add").await?;
    let m = &ctx.migration;
    if m.state != State::Initialized {
        bail!("migration {name:?} is {}: indices are added before the rollover", m.state.as_str());
    }
    if m.pairs.iter().any(|p| p.source == index) {
        bail!("index {index:?} is already part of migration {name:?}");
    }
    let Some(entry) = ctx.recipe.pairs.iter().find(|p| p.is_pattern() && glob_match(&p.source, index)) else {
        bail!("index {index:?} matches no pattern of migration {name:?}; only an index a pattern matches can be added");
    };
    if exclude {
        ctx.dir.update_migration(|m| m.excluded.push(index.to_owned()))?;
        println!("excluded {index} from migration {name}: it stays on the source and is not migrated");
        return Ok(());
    }
    if entry.excludes(index) || m.excluded.iter().any(|x| glob_match(x, index)) {
        bail!("index {index:?} is excluded from migration {name:?}");
    }
    if !ctx.source.exists(index).await? {
        bail!("index {index:?} does not exist on the source cluster {}", ctx.source.url);
    }
    if let Some(pid) = running_pid(&ctx.dir, "snapshot") {
        bail!("the snapshot worker (pid {pid}) is still copying; add {index:?} once it is done (`status` shows it)");
    }
    let planned = crate::recipe::patterns::matched(&ctx.source, &ctx.target, entry, index).await?;
    if let Some(p) = m.pairs.iter().find(|p| p.target == planned.target) {
        bail!("the target {:?} of {index:?} is already the target of {:?}", planned.target, p.source);
    }
    if !m.cross_cluster && glob_match(&entry.source, &planned.target) {
        bail!("the target {:?} of {index:?} matches the pattern {:?} too", planned.target, entry.source);
    }
    if ctx.target.exists(&planned.target).await? {
        bail!("index {:?} already exists on the target cluster {}", planned.target, ctx.target.url);
    }
    let source_docs = ctx.source.count(index, true).await?;
    // Before the offsets are read, as `init` does (see `crate::pipeline::source_tombstones`).
    let kept = match ctx.recipe.versions {
        indexferry_common::config::VersionRule::Source => {
            Some(crate::pipeline::source_tombstones::keep(&ctx.source, index, &ctx.recipe.rollover.gc_deletes).await?)
        }
        indexferry_common::config::VersionRule::SeqNo => None,
    };
    crate::recipe::targets::create_target(&ctx.target, &planned, &ctx.recipe.rollover.gc_deletes).await?;
    let start = end_offsets(&ctx.recipe, Duration::from_secs(15)).await?;
    let mut pair = crate::recipe::targets::pair_info(&planned, source_docs);
    pair.start_offsets = Some(start.clone());
    pair.source_gc_deletes = kept;
    ctx.dir.update_migration(|m| m.pairs.push(pair.clone())).context("cannot record the new pair")?;
    let offsets: Vec<String> = start.iter().map(|(p, o)| format!("{p}:{o}")).collect();
    println!(
        "added {} -> {} to migration {name} ({source_docs} documents); its events are replayed from offsets {}; copying it",
        pair.source,
        pair.target,
        offsets.join(" ")
    );

    let ctx = Arc::new(ctx.reloaded()?);
    let cancel = CancellationToken::new();
    crate::runtime::shutdown::install(cancel.clone());
    crate::pipeline::snapshot::run(ctx, cancel.clone()).await?;
    if cancel.is_cancelled() {
        bail!("interrupted: run `indexferry migration snapshot {name}` to finish copying {index}");
    }
    println!("snapshot of {index} done; the consumer replays its events with the others");
    Ok(())
}
