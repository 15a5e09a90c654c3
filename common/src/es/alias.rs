//! Aliases as the cluster defines them: filter, routings and write flag, per index.

use super::{Cluster, Method};
use crate::Result;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One alias on one index, as `GET /_alias` describes it (`filter`, `index_routing`,
/// `search_routing`, `is_write_index`, `is_hidden`; absent keys are unset).
pub type AliasDefinition = Map<String, Value>;

impl Cluster {
    /// Each index `alias` points at, with the alias's definition there; empty when there is
    /// no such alias.
    pub async fn alias_definitions(&self, alias: &str) -> Result<BTreeMap<String, AliasDefinition>> {
        #[derive(Deserialize)]
        struct Entry {
            #[serde(default)]
            aliases: BTreeMap<String, AliasDefinition>,
        }
        let path = format!("/_alias/{alias}");
        match self.json::<BTreeMap<String, Entry>>(Method::Get, &path, &[], None).await {
            Ok(m) => {
                Ok(m.into_iter().filter_map(|(index, mut e)| e.aliases.remove(alias).map(|d| (index, d))).collect())
            }
            Err(e) if e.status() == Some(404) => Ok(BTreeMap::new()),
            Err(e) => Err(e),
        }
    }

    /// The routing `alias` applies to a write that names none (the `index_routing` of its
    /// write index); `None` for an index, or an alias without one.
    pub async fn alias_index_routing(&self, alias: &str) -> Result<Option<String>> {
        let defs = self.alias_definitions(alias).await?;
        Ok(write_definition(&defs).and_then(|d| d.get("index_routing")).and_then(Value::as_str).map(str::to_owned))
    }
}

/// The definition on the index writes go to: the one flagged `is_write_index`, else the
/// alias's only index.
pub fn write_definition(defs: &BTreeMap<String, AliasDefinition>) -> Option<&AliasDefinition> {
    let flagged = defs.values().find(|d| d.get("is_write_index") == Some(&Value::Bool(true)));
    flagged.or_else(|| if defs.len() == 1 { defs.values().next() } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(v: Value) -> AliasDefinition {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn writes_go_to_the_flagged_index_or_the_only_one() {
        let mut defs = BTreeMap::new();
        defs.insert("a".to_owned(), def(json!({ "index_routing": "1" })));
        assert_eq!(write_definition(&defs).and_then(|d| d.get("index_routing")), Some(&json!("1")));
        defs.insert("b".to_owned(), def(json!({ "index_routing": "2", "is_write_index": true })));
        assert_eq!(write_definition(&defs).and_then(|d| d.get("index_routing")), Some(&json!("2")));
        defs.get_mut("b").unwrap().remove("is_write_index");
        assert_eq!(write_definition(&defs), None, "two indices and no write index: no writes");
    }
}
