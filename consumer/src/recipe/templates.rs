//! Index templates, cross-cluster: the indices the application creates after the switch
//! (tomorrow's daily index) must get the new mapping on the target cluster too. `init`
//! copies the legacy (`_template`), composable (`_index_template`) and component
//! (`_component_template`) templates whose patterns cover the migrated indices, with the
//! recipe's mappings laid over the template's own. A template the target holds with another
//! body is refused by name unless `[templates] overwrite = true`; a template that makes data
//! streams is refused.

use crate::recipe::patterns::{merge, Planned};
use anyhow::{bail, Context as _};
use indexferry_common::config::{glob_match, Recipe};
use indexferry_common::es::{Cluster, Method};
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Legacy,
    Composable,
    Component,
}

impl Kind {
    pub fn api(self) -> &'static str {
        match self {
            Kind::Legacy => "_template",
            Kind::Composable => "_index_template",
            Kind::Component => "_component_template",
        }
    }
}

/// A template to put on the target.
#[derive(Debug, Clone)]
pub struct Copy {
    pub kind: Kind,
    pub name: String,
    pub body: Value,
}

const LEGACY_KEYS: [&str; 6] = ["index_patterns", "order", "version", "settings", "mappings", "aliases"];
const COMPOSABLE_KEYS: [&str; 6] = ["index_patterns", "template", "composed_of", "priority", "version", "_meta"];
const COMPONENT_KEYS: [&str; 3] = ["template", "version", "_meta"];

/// The templates to copy, in the order they can be put: legacy first (Elasticsearch refuses
/// a legacy template overlapping a composable one that exists), then components, then the
/// composable templates using them. Refuses a data-stream template and (without
/// `overwrite`) a template the target holds with another body.
///
/// With a prefix, a template is the tenant's only if its name and every pattern carry the
/// prefix; one that covers the tenant's indices but not only them is left behind (its name
/// is in the second list): copying it would change other tenants' indices on the target.
pub async fn plan(
    source: &Cluster,
    target: &Cluster,
    recipe: &Recipe,
    pairs: &[Planned],
) -> anyhow::Result<(Vec<Copy>, Vec<String>)> {
    let covered: Vec<Covered> = pairs
        .iter()
        .map(|p| {
            let entry = recipe.pairs.iter().find(|e| Some(&e.source) == p.pattern.as_ref() || e.source == p.source);
            Covered { index: p.source.clone(), mappings: entry.and_then(|e| e.mappings_json()) }
        })
        .collect();
    let (mine, foreign): (Vec<Copy>, Vec<Copy>) =
        candidates(source, &covered).await?.into_iter().partition(|c| tenants(c, recipe));
    let mut out = vec![];
    for c in mine {
        match status(target, &c).await? {
            Status::Differs if !recipe.templates.overwrite => bail!(
                "template {:?} ({}) already exists on the target cluster {} with another body than the source's \
                 (with the recipe's mappings): delete it, or set [templates] overwrite = true",
                c.name,
                c.kind.api(),
                target.url
            ),
            Status::Same => {}
            Status::New | Status::Differs => out.push(c),
        }
    }
    Ok((out, foreign.into_iter().map(|c| format!("{} ({})", c.name, c.kind.api())).collect()))
}

/// The template belongs to the recipe's tenant: its name and its patterns carry the prefix.
fn tenants(c: &Copy, recipe: &Recipe) -> bool {
    let patterns = match &c.body["index_patterns"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    recipe.owns(&c.name) && patterns.iter().all(|p| recipe.owns(p))
}

/// A migrated index and the recipe's mappings for it (laid over a template covering it).
#[derive(Debug, Clone)]
pub struct Covered {
    pub index: String,
    pub mappings: Option<Value>,
}

/// What the target holds under a template's name, against what would be put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Absent: put.
    New,
    /// Held with the same body: left alone.
    Same,
    /// Held with another body: refused unless `[templates] overwrite = true`.
    Differs,
}

/// The source's templates covering `covered` (and the components they use), in the order
/// they can be put, whatever the target holds. Refuses a data-stream template.
pub async fn candidates(source: &Cluster, covered: &[Covered]) -> anyhow::Result<Vec<Copy>> {
    let mut legacy_copies = vec![];
    let mut copies = vec![];
    let legacy: Map<String, Value> = get_or_empty(source, "/_template").await?;
    for (name, t) in legacy.iter().filter(|(n, _)| !n.starts_with('.')) {
        let Some(over) = covers(t, covered) else { continue };
        let body = laid(pick(t, &LEGACY_KEYS), &["mappings"], &over);
        legacy_copies.push(Copy { kind: Kind::Legacy, name: name.clone(), body });
    }
    let composable: Value = get_or_empty(source, "/_index_template").await?;
    let mut components = vec![];
    for entry in composable["index_templates"].as_array().into_iter().flatten() {
        let (name, t) = (entry["name"].as_str().unwrap_or_default(), &entry["index_template"]);
        if name.starts_with('.') {
            continue;
        }
        let Some(over) = covers(t, covered) else { continue };
        if t.get("data_stream").is_some_and(|d| !d.is_null()) {
            bail!(
                "index template {name:?} on the source cluster {} makes data streams of {}: data streams are not \
                 migrated; narrow the recipe's patterns",
                source.url,
                t["index_patterns"]
            );
        }
        let body = laid(pick(t, &COMPOSABLE_KEYS), &["template", "mappings"], &over);
        components
            .extend(t["composed_of"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned));
        copies.push(Copy { kind: Kind::Composable, name: name.to_owned(), body });
    }
    components.sort();
    components.dedup();
    let mut parts = vec![];
    for name in components {
        let found: Value = get_or_empty(source, &format!("/_component_template/{name}")).await?;
        for c in found["component_templates"].as_array().into_iter().flatten() {
            parts.push(Copy {
                kind: Kind::Component,
                name: name.clone(),
                body: pick(&c["component_template"], &COMPONENT_KEYS),
            });
        }
    }
    parts.extend(copies);
    Ok(legacy_copies.into_iter().chain(parts).collect())
}

/// Whether the target holds `c`, and with which body.
pub async fn status(target: &Cluster, c: &Copy) -> anyhow::Result<Status> {
    Ok(match on_target(target, c).await? {
        None => Status::New,
        Some(held) => {
            let ours = c.body.as_object().cloned().unwrap_or_default();
            match ours.iter().any(|(k, v)| !same(v, held.get(k).unwrap_or(&Value::Null))) {
                true => Status::Differs,
                false => Status::Same,
            }
        }
    })
}

/// The templates [`apply`] put, each with what the target held before (`None`: nothing), to
/// put back if `init` fails after it.
#[derive(Debug, Default)]
pub struct Applied(Vec<(Kind, String, Option<Value>)>);

impl Applied {
    /// Puts back what the target held, the last put first (a template that was not there is
    /// deleted); best effort, a failure said in the log.
    pub async fn undo(self, target: &Cluster) {
        for (kind, name, before) in self.0.into_iter().rev() {
            let path = format!("/{}/{name}", kind.api());
            let done = match &before {
                None => target.json::<Value>(Method::Delete, &path, &[], None).await,
                Some(body) => target.json::<Value>(Method::Put, &path, &[], Some(body)).await,
            };
            if let Err(e) = done {
                tracing::warn!(template = %name, error = %e, "could not put back a template init had put");
            }
        }
    }
}

/// Puts the templates on the target, in the order [`plan`] gives; on a failure, puts back
/// those it had put already.
pub async fn apply(target: &Cluster, copies: &[Copy]) -> anyhow::Result<Applied> {
    let mut applied = Applied::default();
    for c in copies {
        let before = match on_target(target, c).await {
            Ok(held) => held.map(|b| putable(c.kind, b)),
            Err(e) => {
                applied.undo(target).await;
                return Err(e);
            }
        };
        let put = target.json::<Value>(Method::Put, &format!("/{}/{}", c.kind.api(), c.name), &[], Some(&c.body)).await;
        if let Err(e) = put {
            applied.undo(target).await;
            return Err(anyhow::Error::new(e).context(format!(
                "cannot put template {:?} ({}) on the target cluster {}",
                c.name,
                c.kind.api(),
                target.url
            )));
        }
        applied.0.push((c.kind, c.name.clone(), before));
    }
    Ok(applied)
}

/// A template as the cluster answered it, cut to what its PUT takes.
fn putable(kind: Kind, held: Value) -> Value {
    let keys: &[&str] = match kind {
        Kind::Legacy => &LEGACY_KEYS,
        Kind::Composable => &COMPOSABLE_KEYS,
        Kind::Component => &COMPONENT_KEYS,
    };
    match held {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(k, _)| keys.contains(&k.as_str())).collect()),
        other => other,
    }
}

/// The recipe mappings for the template when one of its patterns covers a migrated index
/// (`Some(null)` when the recipe has none for it); `None` when it covers none.
fn covers(t: &Value, covered: &[Covered]) -> Option<Value> {
    let patterns: Vec<&str> = match &t["index_patterns"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let first = covered.iter().find(|c| patterns.iter().any(|tp| glob_match(tp, &c.index)))?;
    Some(first.mappings.clone().unwrap_or(Value::Null))
}

/// `body` with the recipe's mappings `over` laid over what it holds at `path`; unchanged
/// when the recipe has none (a `null` left at `path` is refused by Elasticsearch 9).
fn laid(mut body: Value, path: &[&str], over: &Value) -> Value {
    if over.is_null() {
        return body;
    }
    let mut slot = &mut body;
    for key in path {
        slot = &mut slot[*key];
        if slot.is_null() {
            *slot = json!({});
        }
    }
    merge(slot, over);
    body
}

fn pick(t: &Value, keys: &[&str]) -> Value {
    Value::Object(
        keys.iter().filter_map(|k| Some(((*k).to_owned(), t.get(*k).filter(|v| !v.is_null())?.clone()))).collect(),
    )
}

async fn get_or_empty<T: serde::de::DeserializeOwned + Default>(c: &Cluster, path: &str) -> anyhow::Result<T> {
    match c.json::<T>(Method::Get, path, &[], None).await {
        Ok(v) => Ok(v),
        Err(e) if e.status() == Some(404) => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {path} on the {} cluster {}", c.role(), c.url)),
    }
}

/// The template as the target holds it now (`None`: absent).
async fn on_target(target: &Cluster, c: &Copy) -> anyhow::Result<Option<Value>> {
    let found: Value = get_or_empty(target, &format!("/{}/{}", c.kind.api(), c.name)).await?;
    Ok(match c.kind {
        Kind::Legacy => found.get(&c.name).cloned(),
        Kind::Composable => found["index_templates"].get(0).map(|t| t["index_template"].clone()),
        Kind::Component => found["component_templates"].get(0).map(|t| t["component_template"].clone()),
    })
}

/// Equal as a cluster would store them: scalars compared as text (settings come back as
/// strings), objects key by key.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w)),
        (Value::String(x), y) | (y, Value::String(x)) if !y.is_object() && !y.is_array() => {
            *x == y.as_str().map_or_else(|| y.to_string(), str::to_owned)
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_settings_compare_as_text() {
        assert!(same(&json!({ "index": { "number_of_shards": 1 } }), &json!({ "index": { "number_of_shards": "1" } })));
        assert!(!same(
            &json!({ "properties": { "n": { "type": "long" } } }),
            &json!({ "properties": { "n": { "type": "keyword" } } })
        ));
        assert!(!same(&json!({ "a": 1 }), &json!({ "a": 1, "b": 2 })));
    }

    #[test]
    fn a_template_gets_no_mappings_key_when_the_recipe_has_none() {
        let t = json!({ "index_patterns": ["stats-*"], "template": { "settings": { "index": { "number_of_shards": "1" } } } });
        let body = laid(pick(&t, &COMPOSABLE_KEYS), &["template", "mappings"], &Value::Null);
        assert_eq!(body["template"].as_object().map(|o| o.contains_key("mappings")), Some(false), "{body}");
        let legacy = laid(pick(&json!({ "index_patterns": ["x-*"] }), &LEGACY_KEYS), &["mappings"], &Value::Null);
        assert_eq!(legacy, json!({ "index_patterns": ["x-*"] }));
        let over = json!({ "properties": { "n": { "type": "long" } } });
        let body = laid(pick(&t, &COMPOSABLE_KEYS), &["template", "mappings"], &over);
        assert_eq!(body["template"]["mappings"], over);
        assert_eq!(body["template"]["settings"]["index"]["number_of_shards"], "1");
    }
}
