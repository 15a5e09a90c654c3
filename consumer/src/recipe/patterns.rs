//! Index patterns in a recipe: `source = "stats-*"` makes each matching index a pair, its
//! target named by the `{source}` template. `init` (and `add`, for an index created later)
//! turn recipe entries into concrete pairs here, with what each target is created with:
//! the recipe's mappings and settings over those of the source index, and every alias of
//! the source index, moved at rollover.

use anyhow::{bail, Context as _};
use indexferry_common::config::{glob_match, too_long, IndexPair, Recipe, MAX_NAME_BYTES};
use indexferry_common::es::alias::AliasDefinition;
use indexferry_common::es::{Cluster, Flavor, Method};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One pair as `init` or `add` creates it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub source: String,
    pub target: String,
    /// The alias writes go through (a pattern's index: its write alias, if it has one).
    pub alias: String,
    pub alias_definition: Option<AliasDefinition>,
    /// Every alias of a matched index (empty for a named index).
    pub aliases: BTreeMap<String, AliasDefinition>,
    pub mappings: Option<Value>,
    /// Flat `index.*` settings, restored at rollover.
    pub production: Map<String, Value>,
    pub pattern: Option<String>,
}

/// Every pair of the recipe: named indices as they are, patterns resolved on the source.
/// Refuses, with one line naming it, a pattern matching nothing, a pattern that would also
/// match its own targets (in one cluster), and two sources given one target.
pub async fn plan(source: &Cluster, target: &Cluster, recipe: &Recipe, cross: bool) -> anyhow::Result<Vec<Planned>> {
    let mut out: Vec<(usize, Planned)> = vec![];
    for (i, entry) in recipe.pairs.iter().enumerate() {
        if !entry.is_pattern() {
            out.push((i, named(source, target, entry).await?));
            continue;
        }
        let names = matching(source, entry, &[]).await.with_context(|| format!("indices[{i}].source"))?;
        if names.is_empty() {
            bail!(
                "indices[{i}].source: pattern {:?} matches no index on the source cluster {} (excluded: {})",
                entry.source,
                source.url,
                if entry.exclude.is_empty() { "none".to_owned() } else { entry.exclude.join(", ") }
            );
        }
        for index in names {
            let p = matched(source, target, entry, &index).await?;
            if p.target.len() > MAX_NAME_BYTES {
                bail!("{}", too_long(&format!("indices[{i}].target (for {index:?})"), &p.target, &recipe.prefix));
            }
            if !cross && glob_match(&entry.source, &p.target) {
                bail!(
                    "indices[{i}].target: {:?} makes {:?} the target of {index:?}, and the pattern {:?} matches it too: \
                     the targets would be migrated again; pick a target template outside the pattern",
                    entry.target,
                    p.target,
                    entry.source
                );
            }
            out.push((i, p));
        }
    }
    distinct(&out)?;
    for (i, p) in out.iter().filter(|(_, p)| p.pattern.is_some()) {
        if target.exists(&p.target).await? {
            bail!(
                "indices[{i}].target: index {:?} (for {:?}) already exists on the target cluster {} (delete it, or pick \
                 another target template)",
                p.target,
                p.source,
                target.url
            );
        }
    }
    Ok(out.into_iter().map(|(_, p)| p).collect())
}

/// Refuses one source fed into two targets, and two sources into one target.
fn distinct(planned: &[(usize, Planned)]) -> anyhow::Result<()> {
    let (mut sources, mut targets) = (BTreeMap::new(), BTreeMap::new());
    for (i, p) in planned {
        if let Some(j) = sources.insert(p.source.as_str(), *i) {
            bail!(
                "indices[{i}].source: index {:?} is also matched by indices[{j}]; one source feeds one target",
                p.source
            );
        }
        if let Some((j, other)) = targets.insert(p.target.as_str(), (*i, p.source.as_str())) {
            bail!(
                "indices[{i}].target: {:?} and {other:?} (indices[{j}]) would both go into {:?}; a target template \
                 for a pattern needs `{{source}}`",
                p.source,
                p.target
            );
        }
    }
    Ok(())
}

/// A named index: the recipe's alias with its definition; the recipe's mappings (else the
/// source's), and the source's settings with the recipe's over them, so that what a recipe
/// leaves out (replicas, shards, analysis) is what the source had, as for a pattern's indices.
async fn named(source: &Cluster, target: &Cluster, entry: &IndexPair) -> anyhow::Result<Planned> {
    let alias_definition = source
        .alias_definitions(&entry.alias)
        .await
        .with_context(|| format!("cannot read alias {:?} on the source cluster", entry.alias))?
        .remove(&entry.source);
    let index = &entry.source;
    let ctx = || format!("index {index:?} on the source cluster {}", source.url);
    // Every alias of the index moves at rollover, not the recipe's alone: a shared read
    // alias left on the source would keep serving the frozen copy.
    let aliases = index_aliases(source, index).await.with_context(ctx)?;
    refuse_foreign_aliases(index, &aliases, &entry.prefix)?;
    let settings: Value = source
        .json(Method::Get, &format!("/{index}/_settings"), &[("flat_settings", "true")], None)
        .await
        .with_context(ctx)?;
    let mut production = copyable_settings(&settings[index]["settings"], source.flavor, target.flavor);
    production.extend(entry.production_settings());
    let mappings = match entry.mappings_json() {
        Some(m) => Some(m),
        None => {
            let mapping: Value =
                source.json(Method::Get, &format!("/{index}/_mapping"), &[], None).await.with_context(ctx)?;
            let m = mapping[index.as_str()]["mappings"].clone();
            m.as_object().filter(|o| !o.is_empty()).map(|_| m.clone())
        }
    };
    Ok(Planned {
        source: entry.source.clone(),
        target: entry.target.clone(),
        alias: entry.alias.clone(),
        alias_definition,
        aliases,
        mappings,
        production,
        pattern: None,
    })
}

/// The open indices of the source matching the entry's pattern, less those it (or the
/// operator, `excluded`) leaves alone, sorted. A data stream in the pattern is refused.
pub async fn matching(source: &Cluster, entry: &IndexPair, excluded: &[String]) -> anyhow::Result<Vec<String>> {
    let pattern = &entry.source;
    match source.json::<Value>(Method::Get, &format!("/_data_stream/{pattern}"), &[], None).await {
        Ok(v) => {
            let streams: Vec<&str> = v["data_streams"]
                .as_array()
                .map(|a| a.iter().filter_map(|d| d["name"].as_str()).collect())
                .unwrap_or_default();
            if !streams.is_empty() {
                bail!(
                    "pattern {pattern:?} matches the data stream(s) {} on the source cluster {}: data streams are not \
                     migrated (their backing indices take writes only through the stream); exclude them or narrow the pattern",
                    streams.join(", "),
                    source.url
                );
            }
        }
        Err(e) if matches!(e.status(), Some(400 | 404 | 405)) => {}
        Err(e) => return Err(e).context("cannot list data streams"),
    }
    let rows: Vec<Value> = source
        .json(
            Method::Get,
            &format!("/_cat/indices/{pattern}"),
            &[("h", "index"), ("format", "json"), ("expand_wildcards", "open")],
            None,
        )
        .await
        .with_context(|| {
            format!("cannot list the indices matching {pattern:?} on the source cluster {}", source.url)
        })?;
    let mut names: Vec<String> = rows
        .iter()
        .filter_map(|r| r["index"].as_str())
        .filter(|n| glob_match(pattern, n) && !entry.excludes(n) && !excluded.iter().any(|x| glob_match(x, n)))
        .map(str::to_owned)
        .collect();
    names.sort();
    Ok(names)
}

/// One matched index: its target, aliases, and the source's mappings and settings with the
/// recipe's over them.
pub async fn matched(source: &Cluster, target: &Cluster, entry: &IndexPair, index: &str) -> anyhow::Result<Planned> {
    let ctx = || format!("index {index:?} on the source cluster {}", source.url);
    let aliases = index_aliases(source, index).await.with_context(ctx)?;
    let mapping: Value = source.json(Method::Get, &format!("/{index}/_mapping"), &[], None).await.with_context(ctx)?;
    let mut mappings = mapping[index]["mappings"].clone();
    if let Some(over) = entry.mappings_json() {
        merge(&mut mappings, &over);
    }
    let settings: Value = source
        .json(Method::Get, &format!("/{index}/_settings"), &[("flat_settings", "true")], None)
        .await
        .with_context(ctx)?;
    let mut production = copyable_settings(&settings[index]["settings"], source.flavor, target.flavor);
    production.extend(entry.production_settings());
    refuse_foreign_aliases(index, &aliases, &entry.prefix)?;
    let alias = write_alias(&aliases);
    Ok(Planned {
        source: index.to_owned(),
        target: entry.target_for(index),
        alias_definition: aliases.get(&alias).cloned(),
        alias,
        aliases,
        mappings: mappings.as_object().filter(|m| !m.is_empty()).map(|_| mappings.clone()),
        production,
        pattern: Some(entry.source.clone()),
    })
}

/// Refuses an index holding an alias without the tenant's prefix: the rollover would move
/// an alias outside the tenant's names.
fn refuse_foreign_aliases(
    index: &str,
    aliases: &BTreeMap<String, AliasDefinition>,
    prefix: &str,
) -> anyhow::Result<()> {
    if let Some(other) = aliases.keys().find(|a| !a.starts_with(prefix)) {
        bail!(
            "index {index:?} has the alias {other:?}, which lacks the prefix {prefix:?}: the rollover would move an alias \
             outside the tenant's names; remove it from the index, or migrate without a prefix"
        );
    }
    Ok(())
}

/// Every alias of `index` on the cluster, with its definition.
pub async fn index_aliases(cluster: &Cluster, index: &str) -> anyhow::Result<BTreeMap<String, AliasDefinition>> {
    let aliases: BTreeMap<String, Value> = cluster.json(Method::Get, &format!("/{index}/_alias"), &[], None).await?;
    Ok(aliases
        .get(index)
        .and_then(|e| e["aliases"].as_object())
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_object()?.clone()))).collect())
        .unwrap_or_default())
}

/// The alias the index takes writes through: the one flagged `is_write_index`, else "".
fn write_alias(aliases: &BTreeMap<String, AliasDefinition>) -> String {
    aliases
        .iter()
        .find(|(_, d)| d.get("is_write_index") == Some(&Value::Bool(true)))
        .map(|(a, _)| a.clone())
        .unwrap_or_default()
}

/// `over` laid on `base`: objects merged key by key, anything else replaced.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Settings the cluster sets itself, or that hold state of the source index.
const PRIVATE: [&str; 12] = [
    "index.uuid",
    "index.version.",
    "index.creation_date",
    "index.provided_name",
    "index.resize.",
    "index.routing.allocation.initial_recovery",
    "index.blocks.",
    "index.shrink.",
    "index.verified_before_close",
    "index.history.uuid",
    "index.frozen",
    "index.search.throttled",
];
/// Settings of one engine the other refuses.
const OPENSEARCH_ONLY: [&str; 4] = ["index.plugins.", "index.opendistro.", "index.replication.", "index.knn"];
/// (OpenSearch has no data tiers: it would read `_tier_preference` as a node attribute no
/// node has, and never allocate the shards.)
const ELASTICSEARCH_ONLY: [&str; 5] = [
    "index.lifecycle.",
    "index.mode",
    "index.routing_path",
    "index.time_series.",
    "index.routing.allocation.include._tier_preference",
];

/// The source's flat settings a new index on `to` can be created with.
pub fn copyable_settings(flat: &Value, from: Flavor, to: Flavor) -> Map<String, Value> {
    let engine = |f: Flavor| matches!(f, Flavor::OpenSearch { .. });
    let foreign: &[&str] = match (engine(from), engine(to)) {
        (true, false) => &OPENSEARCH_ONLY,
        (false, true) => &ELASTICSEARCH_ONLY,
        _ => &[],
    };
    let dropped = |k: &str| PRIVATE.iter().chain(foreign).any(|p| k == *p || (p.ends_with('.') && k.starts_with(p)));
    flat.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.starts_with("index.") && !dropped(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Indices matching a pattern of the migration that are neither migrated nor excluded:
/// `(index, pattern)`. An index created after `init` lands here until `add` takes it in.
pub async fn unmigrated(
    source: &Cluster,
    recipe: &Recipe,
    m: &crate::state::Migration,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = vec![];
    for entry in recipe.pairs.iter().filter(|p| p.is_pattern()) {
        for index in matching(source, entry, &m.excluded).await? {
            if !m.pairs.iter().any(|p| p.source == index) {
                out.push((index, entry.source.clone()));
            }
        }
    }
    Ok(out)
}

/// What an unmigrated index means to the operator, in one line.
pub fn describe_unmigrated(name: &str, index: &str, pattern: &str) -> String {
    format!(
        "index {index:?} matches the pattern {pattern:?} but is not part of migration {name:?}: \
         `indexferry migration add {name} {index}` migrates it, `indexferry migration add {name} {index} --exclude` \
         leaves it behind"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recipe_mappings_go_over_the_source_mappings() {
        let mut base = json!({ "properties": { "a": { "type": "keyword" }, "b": { "type": "text" } } });
        merge(&mut base, &json!({ "properties": { "a": { "type": "long" } } }));
        assert_eq!(base, json!({ "properties": { "a": { "type": "long" }, "b": { "type": "text" } } }));
    }

    #[test]
    fn private_and_foreign_settings_stay_behind() {
        let flat = json!({
            "index.number_of_shards": "3", "index.uuid": "x", "index.version.created": "8",
            "index.creation_date": "1", "index.provided_name": "s", "index.lifecycle.name": "p",
            "index.blocks.write": "true", "index.analysis.analyzer.a.type": "standard",
        });
        let es = Flavor::Elasticsearch { major: 8, minor: 19 };
        let os = Flavor::OpenSearch { major: 2, minor: 19 };
        let kept = copyable_settings(&flat, es, es);
        let keys: Vec<&str> = kept.keys().map(String::as_str).collect();
        assert_eq!(keys, ["index.analysis.analyzer.a.type", "index.lifecycle.name", "index.number_of_shards"]);
        assert!(!copyable_settings(&flat, es, os).contains_key("index.lifecycle.name"));
    }

    #[test]
    fn the_write_alias_is_the_flagged_one() {
        let mut a = BTreeMap::new();
        a.insert("read".to_owned(), Map::new());
        assert_eq!(write_alias(&a), "");
        a.insert("write".to_owned(), json!({ "is_write_index": true }).as_object().cloned().unwrap_or_default());
        assert_eq!(write_alias(&a), "write");
    }
}
