//! What is on a cluster: indices, aliases, templates, data streams, and what indexferry
//! cannot migrate. Read-only.

use anyhow::Context as _;
use indexferry_common::es::{Cluster, Method};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Index {
    pub name: String,
    pub docs: u64,
    /// Primary store size.
    pub size_bytes: u64,
    pub shards: u32,
    pub replicas: u32,
    pub closed: bool,
    /// Why indexferry cannot migrate it, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocker: Option<String>,
    #[serde(skip)]
    pub mappings: Value,
    #[serde(skip)]
    pub settings: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Alias {
    pub name: String,
    pub index: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_routing: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_routing: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_write_index: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Template {
    pub name: String,
    /// `legacy`, `composable` or `component`.
    pub kind: &'static str,
    pub index_patterns: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub url: String,
    pub server: String,
    pub indices: Vec<Index>,
    pub aliases: Vec<Alias>,
    pub templates: Vec<Template>,
    pub data_streams: Vec<String>,
}

/// Reads the inventory of `cluster`; `pattern` selects the indices (hidden ones only when
/// the pattern names them).
pub async fn read(cluster: &Cluster, pattern: &str, with_details: bool) -> anyhow::Result<Inventory> {
    let ctx = || format!("{} cluster at {}", cluster.role(), cluster.url);
    let mut indices = cat_indices(cluster, pattern).await.with_context(ctx)?;
    let aliases = aliases(cluster).await.with_context(ctx)?;
    let names: std::collections::BTreeSet<&str> = indices.iter().map(|i| i.name.as_str()).collect();
    let aliases: Vec<Alias> = aliases.into_iter().filter(|a| names.contains(a.index.as_str())).collect();
    if with_details {
        for index in &mut indices {
            details(cluster, index).await.with_context(|| format!("index {:?} on the {}", index.name, ctx()))?;
        }
    }
    Ok(Inventory {
        url: cluster.url.clone(),
        server: format!("{} ({})", cluster.flavor, cluster.version),
        indices,
        aliases,
        templates: templates(cluster).await,
        data_streams: data_streams(cluster).await,
    })
}

async fn cat_indices(cluster: &Cluster, pattern: &str) -> anyhow::Result<Vec<Index>> {
    let rows: Vec<BTreeMap<String, Option<String>>> = cluster
        .json(
            Method::Get,
            &format!("/_cat/indices/{pattern}"),
            &[
                ("format", "json"),
                ("bytes", "b"),
                ("h", "index,status,docs.count,pri.store.size,pri,rep"),
                ("expand_wildcards", "open,closed"),
            ],
            None,
        )
        .await?;
    let field = |r: &BTreeMap<String, Option<String>>, k: &str| r.get(k).cloned().flatten().unwrap_or_default();
    let mut out: Vec<Index> = rows
        .iter()
        .map(|r| Index {
            name: field(r, "index"),
            docs: field(r, "docs.count").parse().unwrap_or(0),
            size_bytes: field(r, "pri.store.size").parse().unwrap_or(0),
            shards: field(r, "pri").parse().unwrap_or(0),
            replicas: field(r, "rep").parse().unwrap_or(0),
            closed: field(r, "status") == "close",
            blocker: None,
            mappings: Value::Null,
            settings: Map::new(),
        })
        .filter(|i| !i.name.starts_with('.') || pattern.starts_with('.'))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

async fn aliases(cluster: &Cluster) -> anyhow::Result<Vec<Alias>> {
    let all: BTreeMap<String, Value> = cluster.json(Method::Get, "/_alias", &[], None).await?;
    let mut out = Vec::new();
    for (index, v) in all {
        for (name, def) in v["aliases"].as_object().into_iter().flatten() {
            out.push(Alias {
                name: name.clone(),
                index: index.clone(),
                filter: def.get("filter").cloned(),
                index_routing: def.get("index_routing").and_then(Value::as_str).map(str::to_owned),
                search_routing: def.get("search_routing").and_then(Value::as_str).map(str::to_owned),
                is_write_index: def.get("is_write_index").and_then(Value::as_bool),
            });
        }
    }
    Ok(out)
}

/// Mappings and settings of an open index, and what makes it unmigratable.
async fn details(cluster: &Cluster, index: &mut Index) -> anyhow::Result<()> {
    if index.closed {
        index.blocker = Some("closed: indexferry reads documents through search; open it first".into());
        return Ok(());
    }
    let v: Value = cluster.json(Method::Get, &format!("/{}", index.name), &[("flat_settings", "true")], None).await?;
    let body = &v[&index.name];
    index.mappings = body["mappings"].clone();
    index.settings = body["settings"].as_object().cloned().unwrap_or_default();
    index.blocker = blocker(&index.mappings, &index.settings);
    Ok(())
}

/// Why an index's documents cannot be copied as they are, if so.
pub fn blocker(mappings: &Value, settings: &Map<String, Value>) -> Option<String> {
    let source = &mappings["_source"];
    if source["enabled"] == Value::Bool(false) {
        return Some("_source is disabled: the documents cannot be read back to be copied".into());
    }
    let synthetic = source["mode"] == "synthetic"
        || settings.get("index.mapping.source.mode").and_then(Value::as_str) == Some("synthetic")
        || settings.get("index.mode").and_then(Value::as_str).is_some_and(|m| m == "logsdb" || m == "time_series");
    if synthetic {
        return Some(
            "synthetic _source: documents read back are rebuilt from the index, not the originals (field order, \
             arrays and unmapped values can differ), so the copy would not be identical"
                .into(),
        );
    }
    if source.get("includes").is_some() || source.get("excludes").is_some() {
        return Some("_source includes/excludes: the fields left out of _source would be lost".into());
    }
    None
}

async fn templates(cluster: &Cluster) -> Vec<Template> {
    let mut out = Vec::new();
    if let Ok(legacy) = cluster.json::<BTreeMap<String, Value>>(Method::Get, "/_template", &[], None).await {
        for (name, t) in legacy {
            out.push(Template { name, kind: "legacy", index_patterns: strings(&t["index_patterns"]) });
        }
    }
    for (path, key, kind) in [
        ("/_index_template", "index_templates", "composable"),
        ("/_component_template", "component_templates", "component"),
    ] {
        if let Ok(v) = cluster.json::<Value>(Method::Get, path, &[], None).await {
            for t in v[key].as_array().into_iter().flatten() {
                let name = t["name"].as_str().unwrap_or_default().to_owned();
                let body = t.get("index_template").or_else(|| t.get("component_template")).unwrap_or(&Value::Null);
                if body["_meta"]["managed"] == Value::Bool(true) {
                    continue;
                }
                out.push(Template { name, kind, index_patterns: strings(&body["index_patterns"]) });
            }
        }
    }
    // Built-in templates (names starting with a dot, or managed by the server) are not the operator's.
    out.retain(|t| !t.name.starts_with('.'));
    out
}

async fn data_streams(cluster: &Cluster) -> Vec<String> {
    match cluster.json::<Value>(Method::Get, "/_data_stream", &[], None).await {
        Ok(v) => v["data_streams"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["name"].as_str())
            .filter(|n| !n.starts_with('.'))
            .map(str::to_owned)
            .collect(),
        Err(_) => vec![],
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Value::String(s) => vec![s.clone()],
        _ => vec![],
    }
}

/// The target's plugins, by component name.
pub async fn plugins(cluster: &Cluster) -> Vec<String> {
    let rows: Vec<Value> = cluster
        .json(Method::Get, "/_cat/plugins", &[("format", "json"), ("h", "component")], None)
        .await
        .unwrap_or_default();
    let mut out: Vec<String> = rows.iter().filter_map(|r| r["component"].as_str()).map(str::to_owned).collect();
    out.sort();
    out.dedup();
    out
}
