//! The alias as the target receives it: the source's definition — filter, index and search
//! routing, write flag — recorded at `init`, on the target index.

use crate::state::PairInfo;
use serde_json::{json, Value};

/// What `_aliases` takes in an `add` action and `GET /_alias` describes.
const CARRIED: [&str; 5] = ["filter", "index_routing", "search_routing", "is_write_index", "is_hidden"];

/// The `add` action putting the pair's alias on its target. A migration recorded without
/// the definition makes the target the write index, as before.
pub(super) fn add_action(p: &PairInfo) -> Value {
    let mut add = json!({ "index": p.target, "alias": p.alias });
    match &p.alias_definition {
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
        let action = add_action(&pair(Some(def)));
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
        assert_eq!(add_action(&pair(Some(json!({})))), json!({ "add": { "index": "t", "alias": "a" } }));
        assert_eq!(add_action(&pair(None)), json!({ "add": { "index": "t", "alias": "a", "is_write_index": true } }));
    }
}
