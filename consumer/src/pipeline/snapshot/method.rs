//! Which snapshot method a migration uses: `init` resolves `[snapshot] method` once, says
//! why, and records the answer, so every later worker copies the same way.

use anyhow::{bail, Context as _};
use indexferry_common::config::SnapshotMethod;
use indexferry_common::es::{Cluster, Flavor, Method};
use serde_json::Value;

/// Whether `auto` takes `_reindex` in-cluster where the module is there. `dev/bench --docs
/// 1000000 --runs 3 --only snapshot,remote --peers server_reindex` (OpenSearch 2.19, one node,
/// 2 shards, documents of ~1 KB, release build, medians): the `reindex` method 26,989 docs/s,
/// the search method 23,395 docs/s (1.15x), a plain sliced `_reindex` 27,664 docs/s (the
/// method is 0.98x of it). The cluster's own copy is faster, so `auto` takes it.
pub const AUTO_REINDEX_IN_CLUSTER: bool = true;

/// Whether `auto` takes reindex from remote across clusters. The API cannot slice it: it
/// runs as one task, one scroll. The same bench, Elasticsearch 7.17 into OpenSearch 2.19, the
/// same data: reindex from remote 19,993 docs/s, the search method (2 slices) 22,937 docs/s,
/// so reindex from remote is 0.87x and `auto` keeps the search method. (Splitting the source
/// into two remote tasks by `_seq_no` range was slower still.) `method = "reindex"` still
/// runs it, for a source the client cannot reach but the target can.
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
    let obstacle = match missing_task_privileges(target).await {
        Some(why) => Some(why),
        None => module_obstacle(source, target, cross_cluster).await?,
    };
    let what =
        if cross_cluster { "reindex from remote (run by the target cluster)" } else { "a sliced in-cluster _reindex" };
    match (wanted, obstacle) {
        (SnapshotMethod::Reindex, Some(why)) => {
            bail!("[snapshot] method = \"reindex\": {why}; use method = \"search\" (or \"auto\")")
        }
        (SnapshotMethod::Reindex, None) => Ok((SnapshotMethod::Reindex, format!("the recipe asks for it: {what}"))),
        (_, Some(why)) => Ok((SnapshotMethod::Search, format!("auto: {why}"))),
        (_, None) if cross_cluster && !AUTO_REINDEX_FROM_REMOTE => Ok((
            SnapshotMethod::Search,
            "auto: reindex from remote is one unsliced scroll, measured slower than the sliced search method".into(),
        )),
        (_, None) if !cross_cluster && !AUTO_REINDEX_IN_CLUSTER => {
            Ok((SnapshotMethod::Search, "auto: _reindex was not measured faster here".into()))
        }
        (_, None) if !reindex_tested_on(target.flavor) => Ok((
            SnapshotMethod::Search,
            format!(
                "auto: the reindex method is not tested on {} {} (no reindex module for its test builds is published), \
                 so auto keeps the search method; method = \"reindex\" runs it",
                target.flavor, target.version
            ),
        )),
        (_, None) => Ok((
            SnapshotMethod::Reindex,
            format!("auto: the cluster has the reindex module, and {what} measured faster than the search method"),
        )),
    }
}

/// The cluster privileges the reindex method needs beyond the tenant role the README
/// documents (`all` on the tenant's indices, `monitor`): `cancel` and a paused worker stop
/// or rethrottle the reindex task on the cluster that runs it, the target. Read with
/// `_has_privileges` where Elasticsearch security answers it; `None` elsewhere (no
/// security, or OpenSearch, whose security plugin has no such API).
async fn missing_task_privileges(target: &Cluster) -> Option<String> {
    let wanted = ["cluster:admin/tasks/cancel", "cluster:admin/reindex/rethrottle"];
    let body = serde_json::json!({ "cluster": wanted }).to_string();
    // Once, unretried: without security Elasticsearch answers 400 or 500, OpenSearch 400.
    let (status, bytes) =
        target.request_raw(Method::Post, "/_security/user/_has_privileges", &[], Some(body.into())).await.ok()?;
    if status != 200 {
        return None;
    }
    let answer: Value = serde_json::from_slice(&bytes).ok()?;
    let missing: Vec<&str> = wanted.iter().copied().filter(|p| answer["cluster"][*p] == Value::Bool(false)).collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the target cluster's user lacks the cluster privileges {} (granted by `manage`), which stopping or \
             rethrottling the reindex task needs: `cancel` could not stop a copy under way",
            missing.join(" and ")
        )
    })
}

/// What keeps the cluster from running the reindex method, if anything: the module, and
/// across clusters the remote settings.
async fn module_obstacle(source: &Cluster, target: &Cluster, cross_cluster: bool) -> anyhow::Result<Option<String>> {
    Ok(match has_module(target).await? {
        false => Some(format!(
            "the target cluster {} ({} {}) has no reindex module",
            target.url, target.flavor, target.version
        )),
        true if cross_cluster => match remote_obstacle(source, target) {
            Some(why) => Some(why),
            None => match no_root(source).await {
                Some(why) => Some(why),
                None => not_allowlisted(source, target).await?,
            },
        },
        true => None,
    })
}

/// Whether the suite runs the `reindex` method against this engine: OpenSearch 2 and 3 and
/// Elasticsearch 7, whose reindex modules are on Maven Central. Every real Elasticsearch 8
/// and 9 ships the module, but none is published for their test builds, so `auto` does not
/// pick a path the suite never runs there.
fn reindex_tested_on(flavor: Flavor) -> bool {
    match flavor {
        Flavor::OpenSearch { .. } => true,
        Flavor::Elasticsearch { major, .. } => major <= 7,
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

/// Why the target could not read the source: reindex from remote first asks the source
/// `GET /` for its version, which some servers refuse (the Elasticsearch test builds answer
/// 405; a proxy may allow only the index APIs).
async fn no_root(source: &Cluster) -> Option<String> {
    match source.request(Method::Get, "/", &[], None).await {
        Ok(_) => None,
        Err(e) => Some(format!(
            "the source cluster {} does not answer GET / ({e}), which reindex from remote asks first",
            source.url
        )),
    }
}

/// Why the target would refuse to pull from the source: its `reindex.remote.allowlist`
/// (`whitelist` on Elasticsearch) lacks the source's `host:port`. `None` when it has it, or
/// when the settings cannot be read (the cluster then says so when the task starts).
async fn not_allowlisted(source: &Cluster, target: &Cluster) -> anyhow::Result<Option<String>> {
    let Some(host) = host_port(&source.url) else { return Ok(None) };
    let path = "/_nodes/settings";
    let Ok(v) = target.json::<Value>(Method::Get, path, &[("filter_path", "nodes.*.settings.reindex")], None).await
    else {
        return Ok(None);
    };
    let nodes = v.get("nodes").and_then(Value::as_object).cloned().unwrap_or_default();
    tracing::debug!(%host, settings = %v, "reindex allowlist");
    let refused = nodes.values().any(|n| {
        let remote = &n["settings"]["reindex"]["remote"];
        let list = remote.get("allowlist").or_else(|| remote.get("whitelist"));
        let patterns: Vec<String> = match list {
            Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_owned()).collect(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => vec![],
        };
        !patterns.iter().any(|p| glob(p, &host))
    });
    Ok(refused.then(|| {
        format!(
            "[{host}] not allowlisted in reindex.remote.allowlist of the target cluster {} (reindex.remote.whitelist \
             on Elasticsearch): add it there to reindex from remote",
            target.url
        )
    }))
}

/// `host:port` of a URL such as `http://user@127.0.0.1:9204/`.
fn host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(host.to_owned()).filter(|h| !h.is_empty())
}

/// `*` matches any run of characters, as the allowlist's patterns do.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len()).any(|i| {
                    let rest = &text[head.len() + i..];
                    glob(tail, rest)
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_patterns_match_host_and_port() {
        assert!(glob("127.0.0.1:*", "127.0.0.1:9204"));
        assert!(glob("*:9204", "localhost:9204"));
        assert!(!glob("127.0.0.1:*", "localhost:9204"));
        assert!(glob("es-*.example:92*", "es-1.example:9200"));
        assert_eq!(host_port("http://u:p@localhost:9204/").as_deref(), Some("localhost:9204"));
        assert_eq!(host_port("https://10.0.0.1:9200").as_deref(), Some("10.0.0.1:9200"));
    }

    #[test]
    fn auto_picks_reindex_only_where_the_suite_runs_it() {
        assert!(reindex_tested_on(Flavor::OpenSearch { major: 2, minor: 19 }));
        assert!(reindex_tested_on(Flavor::OpenSearch { major: 3, minor: 3 }));
        assert!(reindex_tested_on(Flavor::Elasticsearch { major: 7, minor: 17 }));
        assert!(!reindex_tested_on(Flavor::Elasticsearch { major: 8, minor: 19 }));
        assert!(!reindex_tested_on(Flavor::Elasticsearch { major: 9, minor: 2 }));
    }
}
