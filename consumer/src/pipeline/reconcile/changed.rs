//! The documents changed since a pass: per source shard, those whose `_seq_no` is above the
//! shard's `max_seq_no` read before that pass. Rollover compares them inside its pause,
//! with the source write-blocked, so the set is final and small.
//!
//! Under the `source` rule, the events the replay refused as stale since that pass are
//! looked at again too (`state::Recheck`), and under either rule the documents named by the
//! capture proxies' gap notices recorded since (`state::Gap`), deletes included.
//!
//! A delete leaves no document behind to match a range query: a delete the application made
//! in that window without publishing its event is not seen here (the full `verify` after
//! rollover is the check for it).

use super::pass::Pair;
use super::{PairReport, Report, PAGE};
use crate::pipeline::snapshot::reader::Hit;
use crate::pipeline::writer::Writer;
use crate::runtime::context::Ctx;
use crate::state::ReconcileRecord;
use anyhow::Context as _;
use indexferry_common::es::{Cluster, Method};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The primary copy's `max_seq_no` of every shard of `index`.
pub(super) async fn shard_max_seq_no(cluster: &Cluster, index: &str) -> anyhow::Result<BTreeMap<u32, i64>> {
    let stats: Value = cluster
        .json(
            Method::Get,
            &format!("/{index}/_stats"),
            &[("level", "shards"), ("filter_path", "indices.*.shards.*.routing.primary,indices.*.shards.*.seq_no")],
            None,
        )
        .await
        .with_context(|| format!("the {} cluster {} index {index}: shard stats", cluster.role(), cluster.url))?;
    let mut out = BTreeMap::new();
    for (_, i) in stats["indices"].as_object().into_iter().flatten() {
        for (shard, copies) in i["shards"].as_object().into_iter().flatten() {
            let primary = copies.as_array().into_iter().flatten().find(|c| c["routing"]["primary"] == json!(true));
            let (Ok(n), Some(max)) = (shard.parse::<u32>(), primary.and_then(|c| c["seq_no"]["max_seq_no"].as_i64()))
            else {
                anyhow::bail!(
                    "the {} cluster {} index {index}: no max_seq_no for shard {shard}",
                    cluster.role(),
                    cluster.url
                );
            };
            out.insert(n, max);
        }
    }
    anyhow::ensure!(!out.is_empty(), "the {} cluster {} index {index}: no shard stats", cluster.role(), cluster.url);
    Ok(out)
}

/// Compares (and repairs) the source documents changed since `before`, pair by pair.
pub(crate) async fn changed_since(
    ctx: &Ctx,
    before: &ReconcileRecord,
    write_limit: Duration,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let writer = Writer::new(ctx.target.clone(), "reconcile", CancellationToken::new());
    let mut pairs = vec![];
    let mut rechecks = super::rechecks(ctx, &before.recheck_from)?;
    let mut gap_docs = super::gap_docs(ctx, &before.recheck_from)?;
    for p in &ctx.migration.pairs {
        let marks = before
            .pairs
            .iter()
            .find(|r| r.source == p.source && r.target == p.target)
            .with_context(|| format!("the last reconcile pass did not cover {} -> {}", p.source, p.target))?;
        let mut pair = Pair { ctx, writer: &writer, write_limit, report: PairReport::new(&p.source, &p.target, 10) };
        let src = &ctx.source;
        src.json::<Value>(Method::Post, &format!("/{}/_refresh", p.source), &[], None)
            .await
            .with_context(|| format!("source cluster {} index {}", src.url, p.source))?;
        for (shard, max) in &marks.max_seq_no {
            let mut after = *max;
            loop {
                let hits = changed_page(src, &p.source, *shard, after).await?;
                let Some(last) = hits.last().and_then(|h| h.seq_no) else { break };
                after = last as i64;
                pair.report.source_docs += hits.len() as u64;
                pair.source_page(&hits).await?;
            }
        }
        pair.recheck(rechecks.remove(&p.target).unwrap_or_default()).await?;
        pair.gap_docs(gap_docs.remove(&p.target).unwrap_or_default()).await?;
        pairs.push(pair.report);
    }
    Ok(Report::new(pairs, started))
}

#[derive(Deserialize)]
struct Search {
    hits: Hits,
}

#[derive(Deserialize)]
struct Hits {
    hits: Vec<Hit>,
}

/// One page of shard `shard`'s documents whose `_seq_no` is above `after`, in `_seq_no` order.
async fn changed_page(cluster: &Cluster, index: &str, shard: u32, after: i64) -> anyhow::Result<Vec<Hit>> {
    let body = json!({
        "size": PAGE,
        "_source": false,
        "seq_no_primary_term": true,
        "version": true,
        "track_total_hits": false,
        "query": { "range": { "_seq_no": { "gt": after } } },
        // An index that never held a document has no `_seq_no` mapping to sort on.
        "sort": [{ "_seq_no": { "order": "asc", "unmapped_type": "long" } }],
    });
    let preference = format!("_shards:{shard}");
    let answer: Search = cluster
        .json(Method::Post, &format!("/{index}/_search"), &[("preference", &preference)], Some(&body))
        .await
        .with_context(|| format!("the {} cluster {} index {index} shard {shard}", cluster.role(), cluster.url))?;
    Ok(answer.hits.hits)
}
