//! `verify`: source and target compared document by document — ids, `_routing`, `_source`
//! and, under the `source` version rule, `_version` — in two streamed passes with bounded
//! memory:
//!
//! 1. every source document, looked up in the target by `_mget` (with its routing): missing,
//!    or different — another `_source`, another `_routing`, which would leave it on
//!    another shard than the application's routed reads look in, or another `_version`,
//!    which an application writing its own versions would be refused against;
//! 2. every target id, looked up in the source: extra (present in the target only).
//!
//! `_source` is compared as parsed JSON, so key order and whitespace do not matter. After
//! rollover, documents the application wrote since the switch are left out (counted in
//! `written_after_switch`): they exist in the target alone by design.

mod after_switch;

use crate::pipeline::mget::{same_source, Key};
use crate::pipeline::snapshot::reader::{close_pit, open_pit, Hit, Mode, SliceReader};
use crate::runtime::context::{Common, Ctx};
use crate::state::{tombstone_key, Db, Tombstone};
use indexferry_common::config::VersionRule;
use indexferry_common::es::Cluster;
use indexferry_common::es::Method;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;
use tracing::Instrument;

const PAGE: usize = 1000;

#[derive(Debug, Default, Serialize)]
pub struct PairReport {
    pub source: String,
    pub target: String,
    pub source_docs: u64,
    pub target_docs: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// Of the different ones, those whose `_version` differs (`source` rule only).
    pub different_version: u64,
    /// Ids skipped because the application wrote them into the target after the rollover.
    pub written_after_switch: u64,
    /// Ids of events after the rollover's end offsets that name the source index and whose
    /// change the target does not hold: writes the source acknowledged that the replay never
    /// applied (unless the id was written into the target after the switch, which supersedes
    /// them).
    pub late_source_events: u64,
    pub sample_late_source_events: Vec<String>,
    /// Late events whose change the target already holds (the same or a newer version, or
    /// the document gone for a delete): duplicates an at-least-once producer published
    /// again, not differences.
    pub late_duplicates: u64,
    pub sample_missing: Vec<String>,
    pub sample_extra: Vec<String>,
    pub sample_different: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub identical: bool,
    pub pairs: Vec<PairReport>,
}

/// Compares every pair; `samples` ids are kept per kind of difference.
pub async fn verify(common: &Common, name: &str, as_json: bool, samples: usize) -> anyhow::Result<bool> {
    let ctx = Ctx::load(common, name).await?;
    let mut report = Report { identical: true, pairs: vec![] };
    let skip = match &ctx.migration.rollover {
        Some(r) => {
            let (k, from) = (ctx.recipe.kafka.clone(), r.end_offsets.clone());
            let names = after_switch::index_names(&ctx.migration.pairs);
            let group = format!("{}indexferry-verify", ctx.recipe.prefix);
            tokio::task::spawn_blocking(move || after_switch::ids_written_since(&k, &group, &from, &names)).await??
        }
        None => Default::default(),
    };
    let none = HashSet::new();
    for p in &ctx.migration.pairs {
        let written = skip.written_to(&p.target).unwrap_or(&none);
        let span = tracing::info_span!("verify_pair", pair = %p.source);
        let r = async {
            let mut r = compare(&ctx, &p.source, &p.target, written, samples).await?;
            r.written_after_switch = written.len() as u64;
            let (duplicates, unreflected) = judge_late(&ctx, &p.target, skip.late_for(&p.source, &p.target)).await?;
            r.late_duplicates = duplicates;
            r.late_source_events = unreflected.len() as u64;
            r.sample_late_source_events = unreflected.into_iter().take(samples).collect();
            tracing::info!(missing = r.missing, extra = r.extra, different = r.different, "pair compared");
            anyhow::Ok(r)
        }
        .instrument(span)
        .await?;
        report.identical &= r.missing == 0 && r.extra == 0 && r.different == 0 && r.late_source_events == 0;
        report.pairs.push(r);
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for r in &report.pairs {
            println!(
                "verify {} -> {}: source={} target={} missing={} extra={} different={}",
                r.source, r.target, r.source_docs, r.target_docs, r.missing, r.extra, r.different
            );
            if r.different_version > 0 {
                println!("  {} of the different ones hold another _version", r.different_version);
            }
            if r.written_after_switch > 0 {
                println!("  {} ids written after the switch were left out", r.written_after_switch);
            }
            if r.late_duplicates > 0 {
                println!(
                    "  {} late events for the source after the rollover's drain are duplicates: the target holds their change",
                    r.late_duplicates
                );
            }
            if r.late_source_events > 0 {
                println!(
                    "  {} late events for the source after the rollover's drain (never replayed): {}",
                    r.late_source_events,
                    r.sample_late_source_events.join(" ")
                );
            }
            for (what, ids) in
                [("missing", &r.sample_missing), ("extra", &r.sample_extra), ("different", &r.sample_different)]
            {
                if !ids.is_empty() {
                    println!("  {what}: {}", ids.join(" "));
                }
            }
        }
        println!("verify: {}", if report.identical { "identical" } else { "DIFFERENT" });
    }
    Ok(report.identical)
}

/// Splits the late events of one pair: the number whose change the target already holds
/// (duplicates: the same or a newer version, or the document gone — for a delete, or for an
/// index event older than a delete the replay recorded), and the ids of those it does not
/// reflect.
async fn judge_late(
    ctx: &Ctx,
    target: &str,
    late: Vec<(String, after_switch::Late)>,
) -> anyhow::Result<(u64, Vec<String>)> {
    let mut duplicates = 0;
    let mut unreflected = vec![];
    let keep_versions = ctx.recipe.versions == VersionRule::Source;
    let deletes = ctx.dir.open_read_only(Db::Replay)?;
    for page in late.chunks(PAGE) {
        let keys = page.iter().map(|(id, l)| Key::new(id, l.routing.as_deref()));
        let in_target = crate::pipeline::mget::mget_in(&ctx.target, target, keys, true).await?;
        for ((id, l), t) in page.iter().zip(in_target) {
            let wanted = if keep_versions { l.version } else { l.seq_no_version };
            let held = match (t.found, t.version, &l.source) {
                (true, Some(v), _) if v > wanted => true,
                (true, Some(v), Some(body)) => v == wanted && same_source(Some(body), t.source.as_deref()),
                (false, _, None) => true,
                (false, _, Some(_)) => match &deletes {
                    Some(store) => store
                        .get::<Tombstone>(&tombstone_key(target, id, l.routing.as_deref()))?
                        .is_some_and(|d| d.version > wanted),
                    None => false,
                },
                _ => false,
            };
            match held {
                true => duplicates += 1,
                false => unreflected.push(id.clone()),
            }
        }
    }
    Ok((duplicates, unreflected))
}

async fn compare(
    ctx: &Ctx,
    source_index: &str,
    target_index: &str,
    skip: &HashSet<String>,
    samples: usize,
) -> anyhow::Result<PairReport> {
    let mut r = PairReport { source: source_index.into(), target: target_index.into(), ..Default::default() };
    for (c, i) in [(&ctx.source, source_index), (&ctx.target, target_index)] {
        c.json::<Value>(Method::Post, &format!("/{i}/_refresh"), &[], None).await?;
    }
    // Pass 1: source documents against the target.
    let mut reader = open_reader(&ctx.source, source_index, true).await?;
    loop {
        let hits = reader.0.next_page().await?;
        if hits.is_empty() {
            break;
        }
        r.source_docs += hits.len() as u64;
        let found = mget(&ctx.target, target_index, &hits, true).await?;
        let versions_kept = ctx.recipe.versions == VersionRule::Source;
        for (h, other) in hits.iter().zip(found) {
            if skip.contains(&h.id) {
                continue;
            }
            match other {
                None => {
                    r.missing += 1;
                    sample(&mut r.sample_missing, &h.id, samples);
                }
                Some(t) => {
                    let version_differs = versions_kept && h.version != t.version;
                    r.different_version += u64::from(version_differs);
                    if version_differs
                        || !same_source(h.source.as_deref(), t.source.as_deref())
                        || h.routing != t.routing
                    {
                        r.different += 1;
                        sample(&mut r.sample_different, &h.id, samples);
                    }
                }
            }
        }
    }
    reader.close(&ctx.source).await;
    // Pass 2: target ids against the source.
    let mut reader = open_reader(&ctx.target, target_index, false).await?;
    loop {
        let hits = reader.0.next_page().await?;
        if hits.is_empty() {
            break;
        }
        r.target_docs += hits.len() as u64;
        let found = mget(&ctx.source, source_index, &hits, false).await?;
        for (h, other) in hits.iter().zip(found) {
            if other.is_none() && !skip.contains(&h.id) {
                r.extra += 1;
                sample(&mut r.sample_extra, &h.id, samples);
            }
        }
    }
    reader.close(&ctx.target).await;
    Ok(r)
}

struct Reader(SliceReader, Option<String>);

impl Reader {
    async fn close(self, cluster: &Cluster) {
        if let Some(pit) = self.1 {
            close_pit(cluster, &pit).await;
        }
    }
}

async fn open_reader(cluster: &Cluster, index: &str, with_source: bool) -> anyhow::Result<Reader> {
    let keep_alive = Duration::from_secs(300);
    let (mode, pit) = if cluster.flavor.has_pit() {
        let pit = open_pit(cluster, index, keep_alive).await?;
        (Mode::Pit { pit_id: pit.clone(), search_after: None }, Some(pit))
    } else {
        (Mode::Scroll { scroll_id: None }, None)
    };
    let reader = SliceReader::new(cluster.clone(), index, 0, 1, PAGE, keep_alive, mode).with_version();
    Ok(Reader(if with_source { reader } else { reader.without_source() }, pit))
}

/// A document found by `_mget`.
struct Found {
    /// Only when asked for.
    source: Option<Box<RawValue>>,
    routing: Option<String>,
    version: Option<u64>,
}

/// Looks the hits up in `index`, each with its routing: `None` when absent. A document the
/// cluster could not look up fails the verify rather than count as missing.
async fn mget(cluster: &Cluster, index: &str, hits: &[Hit], with_source: bool) -> anyhow::Result<Vec<Option<Found>>> {
    let keys = hits.iter().map(|h| Key::new(&h.id, h.routing.as_deref()));
    let docs = crate::pipeline::mget::mget_in(cluster, index, keys, with_source).await?;
    Ok(docs
        .into_iter()
        .map(|d| d.found.then_some(Found { source: d.source, routing: d.routing, version: d.version }))
        .collect())
}

fn sample(v: &mut Vec<String>, id: &str, samples: usize) {
    if v.len() < samples {
        v.push(id.to_owned());
    }
}
