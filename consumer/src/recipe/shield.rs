//! Creating a target index without the aliases an index template would give it.
//!
//! An application whose alias comes from a template (`x-*` with `aliases: {x: {}}`, as
//! Invenio's and many ILM set-ups do) would see a new `x-v2` join its alias the moment
//! `init` creates it: reads through the alias would see both indices, and writes through it
//! fail with "no write index is defined". Creating a target must never change what the
//! application's aliases point at, not even for a moment: where a template would add
//! aliases, the target is created under a temporary composable template that matches its
//! name alone, with a priority above every other. The highest-priority composable template
//! is the only one applied (and legacy templates apply only where no composable one
//! matches), so none of the others' aliases — nor their settings or mappings, which the
//! target takes from its source and the recipe — reach it. The target gets its aliases at
//! rollover, with the definitions they have on the source.

use anyhow::Context as _;
use indexferry_common::config::glob_match;
use indexferry_common::es::{Cluster, Method};
use serde_json::{json, Value};

/// The aliases the cluster's templates would give a new index named `index`; `None` when
/// the user may not read templates (no `manage_index_templates`).
pub async fn template_aliases(cluster: &Cluster, index: &str) -> anyhow::Result<Option<Vec<String>>> {
    let mut aliases = vec![];
    match cluster.json::<Value>(Method::Post, &format!("/_index_template/_simulate_index/{index}"), &[], None).await {
        Ok(v) => aliases.extend(v["template"]["aliases"].as_object().into_iter().flatten().map(|(a, _)| a.clone())),
        Err(e) if e.status() == Some(403) => return Ok(None),
        // A cluster without composable templates.
        Err(e) if matches!(e.status(), Some(400 | 404 | 405)) => {}
        Err(e) => return Err(e).context("cannot simulate the templates of a new index"),
    }
    let legacy: Value = match cluster.json(Method::Get, "/_template", &[], None).await {
        Ok(v) => v,
        Err(e) if e.status() == Some(403) => return Ok(None),
        Err(e) if matches!(e.status(), Some(404 | 405)) => Value::Null,
        Err(e) => return Err(e).context("cannot read the legacy templates"),
    };
    for (_, t) in legacy.as_object().into_iter().flatten() {
        let matches = t["index_patterns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|p| glob_match(p, index));
        if matches {
            aliases.extend(t["aliases"].as_object().into_iter().flatten().map(|(a, _)| a.clone()));
        }
    }
    aliases.sort();
    aliases.dedup();
    Ok(Some(aliases))
}

/// Creates `index` with `body`; where templates would give it aliases, under a temporary
/// template that keeps them off (removed again, whatever happened). The aliases kept off.
pub async fn create(cluster: &Cluster, index: &str, body: &Value) -> anyhow::Result<Vec<String>> {
    let Some(aliases) = template_aliases(cluster, index).await? else {
        return create_then_detach(cluster, index, body).await;
    };
    if aliases.is_empty() {
        put(cluster, index, body).await?;
        return Ok(aliases);
    }
    let name = format!("indexferry-shield-{index}");
    let priority = highest_priority(cluster).await? + 1;
    let shield = json!({
        "index_patterns": [index],
        "priority": priority,
        "template": {},
        "_meta": { "description": "indexferry: keeps other templates' aliases off a migration's target while it is created; removed right after" },
    });
    cluster.json::<Value>(Method::Put, &format!("/_index_template/{name}"), &[], Some(&shield)).await.with_context(
        || {
            format!(
                "cannot put the temporary template {name:?} that keeps the aliases {} off {index:?}",
                aliases.join(", ")
            )
        },
    )?;
    let created = put(cluster, index, body).await;
    let removed = cluster.json::<Value>(Method::Delete, &format!("/_index_template/{name}"), &[], None).await;
    created?;
    removed.with_context(|| format!("cannot remove the temporary template {name:?}: delete it by hand"))?;
    Ok(aliases)
}

/// For a user who may not read templates: creates the index, then takes off at once any
/// alias a template gave it, and says so (it was in them for that moment).
async fn create_then_detach(cluster: &Cluster, index: &str, body: &Value) -> anyhow::Result<Vec<String>> {
    put(cluster, index, body).await?;
    let held: Value = cluster.json(Method::Get, &format!("/{index}/_alias"), &[], None).await?;
    let aliases: Vec<String> =
        held[index]["aliases"].as_object().into_iter().flatten().map(|(a, _)| a.clone()).collect();
    if aliases.is_empty() {
        return Ok(aliases);
    }
    let actions: Vec<Value> = aliases.iter().map(|a| json!({ "remove": { "index": index, "alias": a } })).collect();
    cluster
        .json::<Value>(Method::Post, "/_aliases", &[], Some(&json!({ "actions": actions })))
        .await
        .with_context(|| format!("cannot take the template's aliases {} off {index:?}", aliases.join(", ")))?;
    tracing::warn!(
        %index, aliases = %aliases.join(" "),
        "a template gave the new target the application's aliases, taken off right after its creation; with the \
         manage_index_templates privilege, init keeps them off from the start"
    );
    Ok(aliases)
}

async fn put(cluster: &Cluster, index: &str, body: &Value) -> anyhow::Result<()> {
    cluster
        .json::<Value>(Method::Put, &format!("/{index}"), &[("wait_for_active_shards", "1")], Some(body))
        .await
        .with_context(|| format!("cannot create target index {index:?} on the target cluster {}", cluster.url))?;
    Ok(())
}

/// The highest priority of the cluster's composable templates (0 without any).
pub(crate) async fn highest_priority(cluster: &Cluster) -> anyhow::Result<u64> {
    let all: Value = match cluster.json(Method::Get, "/_index_template", &[], None).await {
        Ok(v) => v,
        Err(e) if e.status() == Some(404) => return Ok(0),
        Err(e) => return Err(e).context("cannot read the composable templates"),
    };
    Ok(all["index_templates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["index_template"]["priority"].as_u64())
        .max()
        .unwrap_or(0))
}
