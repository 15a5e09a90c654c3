//! Following a cross-cluster switch. A finished cross-cluster rollover leaves the source
//! write-blocked and names the target cluster in the source index's mapping `_meta` (the
//! [switch marker](indexferry_schemas::switch)). A write refused by a block reads it; if the
//! marker is there, the producer connects to that cluster — with the credentials and TLS
//! settings the application configured for it in [`ProducerConfig::follow`], matched by
//! URL — and every write from then on, the refused one first, goes there.
//!
//! The marker is written only after the swap, once no consumer replays any more, so a
//! producer never writes into the target before the migration's convergence is complete.
//! Events keep being published after the switch: nothing replays them any more (the
//! workers stop at `rolled_over`), and `verify` reads them to tell the application's new
//! writes on the target from differences.

use crate::{ProducerConfig, WriteError};
use indexferry_common::config::ClusterConfig;
use indexferry_common::es::{redact_url, Cluster, Method};
use indexferry_schemas::switch::{same_url, SwitchMarker};
use serde_json::Value;
use std::time::Duration;

/// How often, at most, the blocked writes read the marker: during a rollover's pause every
/// write in flight retries at once, and one read serves them all.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(100);

/// How long connecting to the target cluster may take before the write retries (and reads
/// the marker) again.
const CONNECT_FOR: Duration = Duration::from_secs(10);

/// Where writes go.
pub(crate) struct Route {
    pub cluster: Cluster,
    /// The alias (or index) the writes name.
    pub name: String,
    /// The routing the alias applies to writes that name none.
    pub alias_routing: Option<String>,
    /// Whether this is a cluster followed to after a switch.
    pub followed: bool,
    /// Whether writes through `name` run an ingest pipeline (`index.default_pipeline` or
    /// `index.final_pipeline`): their events then carry the `_source` the cluster stored,
    /// read back after the write, not the body sent.
    pub pipelined: bool,
}

/// Whether the indices `name` leads to run an ingest pipeline on writes.
pub(crate) async fn pipelined(cluster: &Cluster, name: &str) -> Result<bool, String> {
    let path = format!("/{name}/_settings/index.default_pipeline,index.final_pipeline");
    let settings: Value = match cluster.json(Method::Get, &path, &[("flat_settings", "true")], None).await {
        Ok(v) => v,
        // Nothing there yet (the application creates it on its first write): no pipeline.
        Err(e) if e.status() == Some(404) => return Ok(false),
        Err(e) => return Err(format!("cannot read the pipelines of {name}: {e}")),
    };
    Ok(settings.as_object().into_iter().flatten().any(|(_, s)| {
        ["index.default_pipeline", "index.final_pipeline"]
            .iter()
            .any(|k| s["settings"][k].as_str().is_some_and(|p| p != "_none"))
    }))
}

/// The marker for writes to `route`, if the source carries one.
pub(crate) async fn marker(route: &Route) -> Result<Option<SwitchMarker>, String> {
    let mappings: Value = route
        .cluster
        .json(Method::Get, &format!("/{}/_mapping", route.name), &[], None)
        .await
        .map_err(|e| format!("cannot read the mapping of {}: {e}", route.name))?;
    Ok(SwitchMarker::find(&mappings, &route.name))
}

/// The configured cluster the marker names, by any of its URLs.
fn known<'c>(marker: &SwitchMarker, follow: &'c [ClusterConfig]) -> Option<&'c ClusterConfig> {
    follow.iter().find(|c| c.url.iter().any(|u| marker.cluster.iter().any(|m| same_url(&redact_url(u), m))))
}

/// Connects to the cluster the marker names. An unconfigured cluster is final; a cluster
/// that does not answer yet is retried by the caller.
pub(crate) async fn follow(marker: &SwitchMarker, cfg: &ProducerConfig, from: &Route) -> Result<Route, FollowError> {
    // An in-cluster switch names the producer's own cluster: its configuration serves.
    let own = std::slice::from_ref(&cfg.cluster);
    let Some(target) = known(marker, own).or_else(|| known(marker, &cfg.follow)) else {
        return Err(FollowError::Final(WriteError::UnknownCluster {
            alias: from.name.clone(),
            from: format!("{} at {}", marker.source, from.cluster.url),
            migration: marker.migration.clone(),
            urls: marker.cluster.join(", "),
        }));
    };
    let Some(name) = marker.write_name(&from.name).map(str::to_owned) else {
        return Err(FollowError::Final(WriteError::Refused(format!(
            "writes to {:?} at {} are blocked: migration {} moved its indices to the cluster {}, and this name is neither \
             a migrated index nor one of their aliases; write to the target cluster",
            from.name,
            from.cluster.url,
            marker.migration,
            marker.cluster.join(", ")
        ))));
    };
    let cluster = Cluster::connect(target, "target", CONNECT_FOR).await.map_err(|e| {
        FollowError::NotYet(format!("cannot reach the target cluster {}: {e}", marker.cluster.join(",")))
    })?;
    let alias_routing = cluster
        .alias_index_routing(&name)
        .await
        .map_err(|e| FollowError::NotYet(format!("cannot read alias {name:?} at {}: {e}", cluster.url)))?;
    let pipelined = pipelined(&cluster, &name).await.map_err(FollowError::NotYet)?;
    Ok(Route { cluster, name, alias_routing, followed: true, pipelined })
}

pub(crate) enum FollowError {
    /// Retrying cannot help.
    Final(WriteError),
    /// Retried with the write.
    NotYet(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_cluster_is_matched_by_any_url_without_credentials() {
        let marker = SwitchMarker {
            migration: "m".into(),
            cluster: vec!["https://es9-a:9200".into(), "https://es9-b:9200".into()],
            source: "s".into(),
            index: "t".into(),
            alias: "a".into(),
            aliases: vec![],
            at: chrono::Utc::now(),
        };
        let mut es9 = ClusterConfig::at("https://user:pw@es9-b:9200/");
        es9.insecure = true;
        let follow = vec![ClusterConfig::at("https://es8:9200"), es9];
        assert!(known(&marker, &follow).is_some_and(|c| c.insecure));
        assert!(known(&marker, &follow[..1]).is_none());
    }
}
