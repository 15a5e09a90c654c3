//! The aliases as the target receives them: the source's definitions — filter, index and
//! search routing, write flag — recorded at `init`, on the target index. Every alias of a
//! source index moves (a migration recorded before that moves the recipe's alias alone).

use crate::runtime::context::Ctx;
use crate::state::PairInfo;
use indexferry_common::es::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The pairs, with the aliases each index of a pattern holds on the source now: the
/// application may have moved its write alias to another day's index since `init`.
/// Read inside the pause (one request per pattern); the record's aliases if that fails.
pub(super) async fn current(ctx: &Ctx) -> Vec<PairInfo> {
    let mut pairs = ctx.migration.pairs.clone();
    // A named index recorded with all its aliases: those it holds now.
    for p in pairs.iter_mut().filter(|p| p.pattern.is_none() && !p.aliases.is_empty()) {
        match crate::recipe::patterns::index_aliases(&ctx.source, &p.source).await {
            Ok(now) if now.contains_key(&p.alias) => p.aliases = now,
            Ok(_) => {
                tracing::warn!(index = %p.source, alias = %p.alias, "the index no longer holds the recipe's alias; moving the aliases recorded")
            }
            Err(e) => {
                tracing::warn!(index = %p.source, error = %e, "cannot read the aliases again; moving those recorded")
            }
        }
    }
    for entry in ctx.recipe.pairs.iter().filter(|p| p.is_pattern()) {
        let path = format!("/{}/_alias", entry.source);
        let now = match ctx.source.json::<BTreeMap<String, Value>>(Method::Get, &path, &[], None).await {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(pattern = %entry.source, error = %e, "cannot read the aliases again; moving those recorded");
                continue;
            }
        };
        for p in pairs.iter_mut().filter(|p| p.pattern.as_ref() == Some(&entry.source)) {
            let held = now.get(&p.source).and_then(|e| e["aliases"].as_object());
            p.aliases =
                held.into_iter().flatten().filter_map(|(k, v)| Some((k.clone(), v.as_object()?.clone()))).collect();
        }
    }
    pairs
}

/// What `_aliases` takes in an `add` action and `GET /_alias` describes.
const CARRIED: [&str; 5] = ["filter", "index_routing", "search_routing", "is_write_index", "is_hidden"];

/// The `add` actions putting the pair's aliases on its target.
pub(super) fn add_actions(p: &PairInfo) -> Vec<Value> {
    p.moved_aliases().into_iter().map(|(alias, def)| add_action(&p.target, alias, def)).collect()
}

/// The `remove` actions taking the pair's aliases off its source (in-cluster).
pub(super) fn remove_actions(p: &PairInfo) -> Vec<Value> {
    p.moved_aliases().into_iter().map(|(alias, _)| json!({ "remove": { "index": p.source, "alias": alias } })).collect()
}

/// One alias onto `target`. A migration recorded without the definition makes the target
/// the write index, as before.
fn add_action(target: &str, alias: &str, def: Option<&serde_json::Map<String, Value>>) -> Value {
    let mut add = json!({ "index": target, "alias": alias });
    match def {
        Some(def) => {
            for key in CARRIED {
                if let Some(v) = def.get(key) {
                    add[key] = v.clone();
                }
            }
        }
        None => add["is_write_index"] = json!(true),
    }
    json!({ "add": add })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(def: Option<Value>) -> PairInfo {
        PairInfo {
            source: "s".into(),
            target: "t".into(),
            alias: "a".into(),
            source_docs: 0,
            production_settings: Default::default(),
            alias_definition: def.and_then(|d| d.as_object().cloned()),
            pattern: None,
            aliases: Default::default(),
            start_offsets: None,
            source_gc_deletes: None,
        }
    }

    #[test]
    fn the_definition_moves_whole() {
        let def = json!({
            "filter": { "term": { "active": true } },
            "index_routing": "r1",
            "search_routing": "r1,r2",
            "is_write_index": true,
        });
        let action = add_actions(&pair(Some(def))).remove(0);
        assert_eq!(
            action,
            json!({ "add": {
                "index": "t", "alias": "a",
                "filter": { "term": { "active": true } },
                "index_routing": "r1", "search_routing": "r1,r2", "is_write_index": true,
            }})
        );
    }

    #[test]
    fn an_unflagged_alias_stays_unflagged_and_an_old_record_makes_a_write_index() {
        assert_eq!(add_actions(&pair(Some(json!({})))), vec![json!({ "add": { "index": "t", "alias": "a" } })]);
        assert_eq!(
            add_actions(&pair(None)),
            vec![json!({ "add": { "index": "t", "alias": "a", "is_write_index": true } })]
        );
    }

    #[test]
    fn a_matched_index_moves_all_its_aliases() {
        let mut p = pair(None);
        p.aliases.insert("read".into(), json!({ "filter": { "term": { "a": 1 } } }).as_object().cloned().unwrap());
        p.aliases.insert("write".into(), json!({ "is_write_index": true }).as_object().cloned().unwrap());
        assert_eq!(
            add_actions(&p),
            vec![
                json!({ "add": { "index": "t", "alias": "read", "filter": { "term": { "a": 1 } } } }),
                json!({ "add": { "index": "t", "alias": "write", "is_write_index": true } }),
            ]
        );
        assert_eq!(remove_actions(&p).len(), 2);
    }
}
