//! The source's delete tombstones, kept while a migration under the `source` version rule
//! runs.
//!
//! With internal versioning, a document deleted and created again continues from the
//! delete's `_version` only while the source still holds the delete's tombstone
//! (`index.gc_deletes`, 60 s by default); after that the new document starts again at 1, a
//! version the target's copy of the old one is above. `init` (and `add`) raise the source's
//! `index.gc_deletes` to the recipe's `[rollover] gc_deletes` before the replay's offsets are
//! recorded, and rollover and cancel put back what the source had. Tombstones live in the
//! source nodes' memory: a restart of a source node forgets them all the same, and a
//! version that goes backwards then is found by reconcile (see `crate::pipeline::versions`).

use crate::state::SourceGcDeletes;
use anyhow::Context as _;
use indexferry_common::es::{Cluster, Method};
use serde_json::{json, Value};

/// Raises `index.gc_deletes` on the source index to `gc_deletes`; what it was before, to put
/// back. An index already keeping tombstones longer keeps its own setting.
pub async fn keep(source: &Cluster, index: &str, gc_deletes: &str) -> anyhow::Result<SourceGcDeletes> {
    let settings: Value = source
        .json(Method::Get, &format!("/{index}/_settings/index.gc_deletes"), &[("flat_settings", "true")], None)
        .await
        .with_context(|| format!("the source cluster {} index {index}: its settings", source.url))?;
    let original = settings
        .as_object()
        .and_then(|o| o.values().next())
        .map(|s| s["settings"]["index.gc_deletes"].clone())
        .unwrap_or(Value::Null);
    let wanted = humantime::parse_duration(gc_deletes).ok();
    let held = original.as_str().and_then(parse_es_duration);
    if let (Some(wanted), Some(held)) = (wanted, held) {
        if held >= wanted {
            return Ok(SourceGcDeletes { original, raised: false });
        }
    }
    source.put_settings(index, json!({ "index.gc_deletes": gc_deletes })).await.with_context(|| {
        format!(
            "cannot raise index.gc_deletes on the source index {index} (the `source` version rule needs the source to \
             keep delete tombstones while the migration runs; the user needs the manage privilege on it)"
        )
    })?;
    Ok(SourceGcDeletes { original, raised: true })
}

/// Puts back what [`keep`] found, on every source index it raised (best effort: a failure is
/// logged, never fatal — the migration is over either way).
pub async fn restore<'a>(source: &Cluster, kept: impl IntoIterator<Item = (&'a str, &'a SourceGcDeletes)>) {
    for (index, gc) in kept.into_iter().filter(|(_, g)| g.raised) {
        if let Err(e) = source.put_settings(index, json!({ "index.gc_deletes": gc.original })).await {
            tracing::warn!(%index, error = %e, "could not restore index.gc_deletes on the source");
        }
    }
}

/// What the pairs record of [`keep`], for [`restore`].
pub fn of_pairs(pairs: &[crate::state::PairInfo]) -> impl Iterator<Item = (&str, &SourceGcDeletes)> {
    pairs.iter().filter_map(|p| Some((p.source.as_str(), p.source_gc_deletes.as_ref()?)))
}

/// An Elasticsearch time value (`60s`, `24h`, `1d`, `500ms`); `None` where it is not one.
fn parse_es_duration(s: &str) -> Option<std::time::Duration> {
    humantime::parse_duration(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elasticsearch_time_values_parse() {
        assert_eq!(parse_es_duration("60s"), Some(std::time::Duration::from_secs(60)));
        assert_eq!(parse_es_duration("1d"), Some(std::time::Duration::from_secs(86_400)));
        assert_eq!(parse_es_duration("nonsense"), None);
    }
}
