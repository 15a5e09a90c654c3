//! The rules table (`rules.toml`) and the conversion of one index's mappings and settings
//! for the target: each rewrite is recorded with the rule that made it, and what no rule
//! can rewrite is refused with the reason.

use indexferry_common::es::Flavor;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

const TABLE: &str = include_str!("rules.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    field_type: Vec<FieldType>,
    field_param: Vec<FieldParam>,
    setting: Vec<SettingRule>,
    date_formats: DateFormats,
    internal_settings: Internal,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct When {
    from: String,
    to: String,
    #[serde(default)]
    to_major_min: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldType {
    id: String,
    #[serde(flatten)]
    when: When,
    #[serde(rename = "type")]
    ty: String,
    replace: String,
    #[serde(default)]
    requires_plugin: Option<String>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
    keep: Vec<String>,
    #[serde(default)]
    settings: Map<String, Value>,
    why: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldParam {
    id: String,
    #[serde(flatten)]
    when: When,
    #[serde(rename = "type")]
    ty: String,
    params: Vec<String>,
    why: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingRule {
    id: String,
    #[serde(flatten)]
    when: When,
    prefix: String,
    why: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DateFormats {
    id: String,
    why: String,
    names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Internal {
    prefixes: Vec<String>,
}

/// One change made to what the source had, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rewrite {
    /// The rule's id in the table.
    pub rule: String,
    /// The field (`properties` path) or setting it changed.
    pub path: String,
    pub from: String,
    pub to: String,
    pub why: String,
}

/// What the conversion needs to know about the pair of clusters.
#[derive(Debug, Clone)]
pub struct Pair {
    pub source: Flavor,
    pub target: Flavor,
    /// The target's plugins (`_cat/plugins` components).
    pub target_plugins: Vec<String>,
}

/// An index's mappings and settings as the target should get them.
#[derive(Debug, Default)]
pub struct Converted {
    pub mappings: Value,
    pub settings: Map<String, Value>,
    pub rewrites: Vec<Rewrite>,
    /// Fields no rule can carry over, with the reason: a decision for the operator.
    pub refused: Vec<String>,
}

fn flavor_name(f: Flavor) -> (&'static str, u32) {
    match f {
        Flavor::Elasticsearch { major, .. } => ("elasticsearch", major),
        Flavor::OpenSearch { major, .. } => ("opensearch", major),
    }
}

impl When {
    fn applies(&self, pair: &Pair) -> bool {
        let (from, _) = flavor_name(pair.source);
        let (to, major) = flavor_name(pair.target);
        (self.from == "any" || self.from == from) && (self.to == "any" || self.to == to) && major >= self.to_major_min
    }
}

impl Rules {
    /// The table compiled into the binary.
    pub fn load() -> anyhow::Result<Rules> {
        toml::from_str(TABLE).map_err(|e| anyhow::anyhow!("the plan rules table is invalid: {e}"))
    }

    /// Converts `mappings` and flat `settings` for the target of `pair`.
    pub fn convert(&self, pair: &Pair, mappings: &Value, settings: &Map<String, Value>) -> Converted {
        let mut out = Converted { mappings: mappings.clone(), ..Converted::default() };
        self.convert_settings(pair, settings, &mut out);
        let mut m = std::mem::take(&mut out.mappings);
        if let Some(props) = m.get_mut("properties").and_then(Value::as_object_mut) {
            self.convert_properties(pair, "", props, &mut out);
        }
        if let Some(templates) = m.get_mut("dynamic_templates").and_then(Value::as_array_mut) {
            for t in templates.iter_mut().filter_map(Value::as_object_mut) {
                for (name, def) in t.iter_mut() {
                    if let Some(field) = def.get_mut("mapping").and_then(Value::as_object_mut) {
                        self.convert_field(pair, &format!("dynamic_templates.{name}"), field, &mut out);
                    }
                }
            }
        }
        if let Some(formats) = m.get_mut("dynamic_date_formats").and_then(Value::as_array_mut) {
            for f in formats.iter_mut() {
                if let Some(new) = f.as_str().and_then(|s| self.date_format(s)) {
                    self.date_rewrite("dynamic_date_formats", f, new, &mut out);
                }
            }
        }
        out.mappings = m;
        out
    }

    fn convert_settings(&self, pair: &Pair, settings: &Map<String, Value>, out: &mut Converted) {
        for (key, value) in settings {
            if self.internal_settings.prefixes.iter().any(|p| key.starts_with(p.as_str())) {
                continue;
            }
            if let Some(rule) = self.setting.iter().find(|r| r.when.applies(pair) && key.starts_with(&r.prefix)) {
                out.rewrites.push(Rewrite {
                    rule: rule.id.clone(),
                    path: key.clone(),
                    from: value.to_string(),
                    to: "(removed)".into(),
                    why: rule.why.clone(),
                });
                continue;
            }
            out.settings.insert(key.clone(), value.clone());
        }
    }

    fn convert_properties(&self, pair: &Pair, prefix: &str, props: &mut Map<String, Value>, out: &mut Converted) {
        for (name, def) in props.iter_mut() {
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            let Some(field) = def.as_object_mut() else { continue };
            self.convert_field(pair, &path, field, out);
            if let Some(sub) = field.get_mut("properties").and_then(Value::as_object_mut) {
                self.convert_properties(pair, &path, sub, out);
            }
            if let Some(multi) = field.get_mut("fields").and_then(Value::as_object_mut) {
                self.convert_properties(pair, &path, multi, out);
            }
        }
    }

    fn convert_field(&self, pair: &Pair, path: &str, field: &mut Map<String, Value>, out: &mut Converted) {
        let ty = field.get("type").and_then(Value::as_str).unwrap_or("object").to_owned();
        if let Some(rule) = self.field_type.iter().find(|r| r.ty == ty && r.when.applies(pair)) {
            if let Some(plugin) =
                rule.requires_plugin.as_deref().filter(|p| !pair.target_plugins.iter().any(|t| t == p))
            {
                out.refused.push(format!(
                    "field {path:?} is {ty}: the target needs the {plugin} plugin for {} and does not have it",
                    rule.replace
                ));
                return;
            }
            let before = Value::Object(field.clone()).to_string();
            let mut new = Map::new();
            new.insert("type".into(), Value::String(rule.replace.clone()));
            for (k, v) in field.iter() {
                let k = rule.rename.get(k).cloned().unwrap_or_else(|| k.clone());
                if rule.keep.contains(&k) {
                    new.insert(k, v.clone());
                }
            }
            *field = new;
            out.settings.extend(rule.settings.clone());
            out.rewrites.push(Rewrite {
                rule: rule.id.clone(),
                path: path.to_owned(),
                from: before,
                to: Value::Object(field.clone()).to_string(),
                why: rule.why.clone(),
            });
        }
        let ty = field.get("type").and_then(Value::as_str).unwrap_or("object").to_owned();
        for rule in self.field_param.iter().filter(|r| (r.ty == ty || r.ty == "*") && r.when.applies(pair)) {
            for p in &rule.params {
                if let Some(v) = field.remove(p) {
                    out.rewrites.push(Rewrite {
                        rule: rule.id.clone(),
                        path: format!("{path}.{p}"),
                        from: v.to_string(),
                        to: "(removed)".into(),
                        why: rule.why.clone(),
                    });
                }
            }
        }
        if matches!(ty.as_str(), "date" | "date_nanos" | "date_range") {
            if let Some(f) = field.get_mut("format") {
                if let Some(new) = f.as_str().and_then(|s| self.date_format(s)) {
                    self.date_rewrite(&format!("{path}.format"), f, new, out);
                }
            }
        }
    }

    fn date_rewrite(&self, path: &str, value: &mut Value, new: String, out: &mut Converted) {
        out.rewrites.push(Rewrite {
            rule: self.date_formats.id.clone(),
            path: path.to_owned(),
            from: value.as_str().unwrap_or_default().to_owned(),
            to: new.clone(),
            why: self.date_formats.why.clone(),
        });
        *value = Value::String(new);
    }

    /// The format with its camelCase built-in names in snake_case (and without the `8`
    /// prefix), or `None` when nothing changes.
    pub fn date_format(&self, format: &str) -> Option<String> {
        let parts: Vec<String> = format
            .split("||")
            .map(|part| {
                let part = part.strip_prefix('8').filter(|p| !p.is_empty()).unwrap_or(part);
                let snake = snake_case(part);
                if snake != part && self.date_formats.names.contains(&snake) {
                    snake
                } else {
                    part.to_owned()
                }
            })
            .collect();
        let joined = parts.join("||");
        (joined != format).then_some(joined)
    }
}

/// `dateOptionalTime` → `date_optional_time`.
fn snake_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pair(source: Flavor, target: Flavor, plugins: &[&str]) -> Pair {
        Pair { source, target, target_plugins: plugins.iter().map(|p| p.to_string()).collect() }
    }
    const ES7: Flavor = Flavor::Elasticsearch { major: 7, minor: 17 };
    const ES8: Flavor = Flavor::Elasticsearch { major: 8, minor: 19 };
    const ES9: Flavor = Flavor::Elasticsearch { major: 9, minor: 2 };
    const OS2: Flavor = Flavor::OpenSearch { major: 2, minor: 19 };

    #[test]
    fn the_table_loads() {
        Rules::load().unwrap();
    }

    #[test]
    fn date_formats_become_snake_case() {
        let r = Rules::load().unwrap();
        assert_eq!(r.date_format("dateOptionalTime").as_deref(), Some("date_optional_time"));
        assert_eq!(
            r.date_format("strictDateOptionalTime||epochMillis").as_deref(),
            Some("strict_date_optional_time||epoch_millis")
        );
        assert_eq!(r.date_format("8yyyy-MM-dd").as_deref(), Some("yyyy-MM-dd"));
        assert_eq!(r.date_format("yyyy-MM-dd'T'HH:mm"), None, "a custom pattern stays");
        assert_eq!(r.date_format("date_optional_time"), None);
    }

    #[test]
    fn elasticsearch_types_become_opensearch_types() {
        let r = Rules::load().unwrap();
        let m = json!({ "properties": {
            "labels": { "type": "flattened", "depth_limit": 5 },
            "msg": { "type": "match_only_text", "fields": { "w": { "type": "wildcard" } } },
            "v": { "type": "dense_vector", "dims": 3 },
        }});
        let settings = json!({ "index.number_of_shards": "2", "index.uuid": "x",
            "index.routing.allocation.include._tier_preference": "data_content" });
        let c = r.convert(&pair(ES8, OS2, &[]), &m, settings.as_object().unwrap());
        assert_eq!(c.mappings["properties"]["labels"], json!({ "type": "flat_object" }));
        assert_eq!(c.mappings["properties"]["msg"]["type"], "text");
        assert_eq!(c.mappings["properties"]["msg"]["fields"]["w"], json!({ "type": "keyword" }));
        assert_eq!(c.settings, *json!({ "index.number_of_shards": "2" }).as_object().unwrap());
        assert_eq!(c.refused.len(), 1, "no k-NN plugin: the vector is refused: {:?}", c.refused);
        let with_knn = r.convert(&pair(ES8, OS2, &["opensearch-knn"]), &m, &Map::new());
        assert_eq!(with_knn.mappings["properties"]["v"], json!({ "type": "knn_vector", "dimension": 3 }));
        assert_eq!(with_knn.settings["index.knn"], json!(true));
    }

    #[test]
    fn elasticsearch_7_to_9_fixes_dates_and_keeps_the_rest() {
        let r = Rules::load().unwrap();
        let m = json!({ "properties": { "d": { "type": "date", "format": "dateOptionalTime" }, "f": { "type": "flattened" } } });
        let c = r.convert(&pair(ES7, ES9, &[]), &m, &Map::new());
        assert_eq!(c.mappings["properties"]["d"]["format"], "date_optional_time");
        assert_eq!(c.mappings["properties"]["f"]["type"], "flattened");
        assert_eq!(c.rewrites.len(), 1);
    }
}
