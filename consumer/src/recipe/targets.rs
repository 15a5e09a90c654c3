//! A planned pair made real on the target cluster: the index created, tuned for loading,
//! and the pair's record for the state. `init` does this for every pair of the recipe, `add`
//! for an index created later.

use crate::recipe::patterns::Planned;
use crate::state::PairInfo;
use indexferry_common::es::Cluster;
use serde_json::json;

/// What the migration record keeps of a pair `init` or `add` created.
pub fn pair_info(p: &Planned, source_docs: u64) -> PairInfo {
    PairInfo {
        source: p.source.clone(),
        target: p.target.clone(),
        alias: p.alias.clone(),
        source_docs,
        production_settings: p.production.clone(),
        alias_definition: p.alias_definition.clone(),
        pattern: p.pattern.clone(),
        aliases: p.aliases.clone(),
        start_offsets: None,
        source_gc_deletes: None,
    }
}

/// Creates the target with its mappings and settings, tuned for loading: no replicas, no
/// refresh, no ingest pipeline, delete tombstones kept for `gc_deletes`. Rollover restores the production values.
/// No template's aliases reach it (see `crate::recipe::shield`): the aliases kept off, said once.
pub async fn create_target(target: &Cluster, p: &Planned, gc_deletes: &str) -> anyhow::Result<()> {
    let mut settings = p.production.clone();
    settings.insert("index.number_of_replicas".into(), json!(0));
    settings.insert("index.refresh_interval".into(), json!("-1"));
    settings.insert("index.gc_deletes".into(), json!(gc_deletes));
    // Copies and events carry the `_source` the source stored, after its pipelines: the
    // target's own must not run on them. Rollover sets the production pipelines inside its
    // pause, before the swap (`crate::recipe::pipelines`).
    for key in crate::recipe::pipelines::SETTINGS {
        settings.insert(key.into(), json!("_none"));
    }
    let mut body = json!({ "settings": settings });
    if let Some(m) = &p.mappings {
        body["mappings"] = m.clone();
    }
    let kept_off = crate::recipe::shield::create(target, &p.target, &body).await?;
    if !kept_off.is_empty() {
        println!(
            "  {}: created without the aliases {} that a template gives matching indices (a temporary template \
             kept them off); it gets its aliases at rollover",
            p.target,
            kept_off.join(" ")
        );
    }
    Ok(())
}
