//! Which snapshot method a migration uses: `init` resolves `[snapshot] method` once, says
//! why, and records the answer, so every later worker copies the same way.

use anyhow::{bail, Context as _};
use indexferry_common::config::SnapshotMethod;
use indexferry_common::es::{Cluster, Flavor, Method};
use serde_json::Value;

/// Whether `auto` takes `_reindex` in-cluster where the module is there. Measured on the
/// stack's OpenSearch 3.3 (one node, an index of 2 shards, 200,000 documents of ~1 KB, a
/// shared 2-core machine), `indexferry migration snapshot` alone: the search method copied
/// 3,548 docs/s, the `reindex` method 8,026 docs/s (a plain sliced `_reindex` of the same
/// index into a fresh one: 5,725 docs/s, the first, cold run). The cluster's own copy is
/// 2.3x faster, so `auto` takes it; dev/bench's `snapshot_docs_per_s.indexferry_reindex`
/// and `.server_reindex` are the figures to revisit this with.
pub const AUTO_REINDEX_IN_CLUSTER: bool = true;

/// Whether `auto` takes reindex from remote across clusters. A reindex from remote is one
/// unsliced scroll (the API cannot slice it), against the search method's parallel slices:
/// until dev/bench measures it faster, `auto` keeps the search method across clusters.
pub const AUTO_REINDEX_FROM_REMOTE: bool = false;

/// The method to use and why, for `init` to print.
pub async fn choose(
    wanted: SnapshotMethod,
    source: &Cluster,
    target: &Cluster,
    cross_cluster: bool,
) -> anyhow::Result<(SnapshotMethod, String)> {
    if wanted == SnapshotMethod::Search {
        return Ok((SnapshotMethod::Search, "the recipe asks for it".into()));
    }
    let obstacle = match has_module(target).await? {
        false => Some(format!(
            "the target cluster {} ({} {}) has no reindex module",
            target.url, target.flavor, target.version
        )),
        true if cross_cluster => remote_obstacle(source, target),
        true => None,
    };
    let what = if cross_cluster { "reindex from remote (run by the target cluster)" } else { "a sliced in-cluster _reindex" };
    match (wanted, obstacle) {
        (SnapshotMethod::Reindex, Some(why)) => {
            bail!("[snapshot] method = \"reindex\": {why}; use method = \"search\" (or \"auto\")")
        }
        (SnapshotMethod::Reindex, None) => Ok((SnapshotMethod::Reindex, format!("the recipe asks for it: {what}"))),
        (_, Some(why)) => Ok((SnapshotMethod::Search, format!("auto: {why}"))),
        (_, None) if cross_cluster && !AUTO_REINDEX_FROM_REMOTE => Ok((
            SnapshotMethod::Search,
            "auto: reindex from remote is one unsliced scroll, not measured faster than the sliced search".into(),
        )),
        (_, None) if !cross_cluster && !AUTO_REINDEX_IN_CLUSTER => {
            Ok((SnapshotMethod::Search, "auto: _reindex was not measured faster here".into()))
        }
        (_, None) => Ok((
            SnapshotMethod::Reindex,
            format!("auto: the cluster has the reindex module, and {what} measured faster than the search method"),
        )),
    }
}

/// True when every node of `cluster` has the reindex module (or plugin).
pub async fn has_module(cluster: &Cluster) -> anyhow::Result<bool> {
    let v: Value = cluster
        .json(Method::Get, "/_nodes/plugins", &[("filter_path", "nodes.*.modules.name,nodes.*.plugins.name")], None)
        .await
        .with_context(|| format!("cannot list the modules of the {} cluster {}", cluster.role(), cluster.url))?;
    let nodes = v.get("nodes").and_then(Value::as_object).cloned().unwrap_or_default();
    let named = |node: &Value, field: &str| {
        node.get(field)
            .and_then(Value::as_array)
            .is_some_and(|list| list.iter().any(|m| m.get("name").and_then(Value::as_str) == Some("reindex")))
    };
    Ok(!nodes.is_empty() && nodes.values().all(|n| named(n, "modules") || named(n, "plugins")))
}

/// Why the target cannot pull from the source, if it cannot. Elasticsearch 7's reindex
/// from remote requires `_type` in every hit, which servers from Elasticsearch 8 and
/// OpenSearch 2 on no longer send.
fn remote_obstacle(source: &Cluster, target: &Cluster) -> Option<String> {
    let typeless = match source.flavor {
        Flavor::Elasticsearch { major, .. } => major >= 8,
        Flavor::OpenSearch { major, .. } => major >= 2,
    };
    matches!(target.flavor, Flavor::Elasticsearch { major: 7, .. }).then_some(()).filter(|_| typeless).map(|_| {
        format!(
            "the target cluster {} ({} {}) cannot reindex from remote from {} {}: it requires _type in the source's hits",
            target.url, target.flavor, target.version, source.flavor, source.version
        )
    })
}
