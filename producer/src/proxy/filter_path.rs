//! The cluster's `filter_path` response filtering, applied by the proxy to write answers: it
//! asks the cluster for the whole answer (it needs `_id`, `_version`, `_seq_no` and each bulk
//! item) and gives the client what the client's `filter_path` keeps.
//!
//! As the cluster does: comma-separated dotted paths, `*` within a name, `**` for any depth,
//! arrays transparent (a path names the keys of their elements), a leading `-` excludes.
//! Includes apply first, then excludes. What keeps nothing is an empty object.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FilterPath {
    includes: Vec<Vec<String>>,
    excludes: Vec<Vec<String>>,
}

impl FilterPath {
    /// None when the parameter keeps everything (absent or empty).
    pub(crate) fn parse(param: &str) -> Option<FilterPath> {
        let (mut includes, mut excludes) = (vec![], vec![]);
        for p in param.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (list, p) = match p.strip_prefix('-') {
                Some(rest) => (&mut excludes, rest),
                None => (&mut includes, p),
            };
            list.push(p.split('.').map(str::to_owned).collect());
        }
        (!includes.is_empty() || !excludes.is_empty()).then_some(FilterPath { includes, excludes })
    }

    pub(crate) fn apply(&self, v: Value) -> Value {
        let v = match self.includes.is_empty() {
            true => v,
            false => {
                let patterns: Vec<&[String]> = self.includes.iter().map(Vec::as_slice).collect();
                include(v, &patterns).unwrap_or_else(|| Value::Object(Map::new()))
            }
        };
        match self.excludes.is_empty() {
            true => v,
            false => {
                let patterns: Vec<&[String]> = self.excludes.iter().map(Vec::as_slice).collect();
                exclude(v, &patterns)
            }
        }
    }
}

/// What a key leaves of each pattern: `Done` when one matched in full.
enum Step<'p> {
    Done,
    Rest(Vec<&'p [String]>),
}

fn step<'p>(key: &str, patterns: &[&'p [String]]) -> Step<'p> {
    let mut rest = vec![];
    for p in patterns {
        let Some((first, tail)) = p.split_first() else { continue };
        if first == "**" {
            // `**` stays for deeper keys, or is done with and the next name matches this key.
            rest.push(*p);
            match tail.split_first() {
                None => return Step::Done,
                Some((next, after)) if glob(next, key) => {
                    if after.is_empty() {
                        return Step::Done;
                    }
                    rest.push(after);
                }
                Some(_) => {}
            }
        } else if glob(first, key) {
            if tail.is_empty() {
                return Step::Done;
            }
            rest.push(tail);
        }
    }
    Step::Rest(rest)
}

/// The parts of `v` the patterns reach; None when they reach nothing.
fn include(v: Value, patterns: &[&[String]]) -> Option<Value> {
    match v {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, child) in map {
                match step(&k, patterns) {
                    Step::Done => {
                        out.insert(k, child);
                    }
                    Step::Rest(rest) if !rest.is_empty() => {
                        if let Some(kept) = include(child, &rest) {
                            out.insert(k, kept);
                        }
                    }
                    Step::Rest(_) => {}
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(items) => {
            let kept: Vec<Value> = items.into_iter().filter_map(|i| include(i, patterns)).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        _ => None,
    }
}

fn exclude(v: Value, patterns: &[&[String]]) -> Value {
    match v {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, child) in map {
                match step(&k, patterns) {
                    Step::Done => {}
                    Step::Rest(rest) if rest.is_empty() => {
                        out.insert(k, child);
                    }
                    Step::Rest(rest) => {
                        out.insert(k, exclude(child, &rest));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(|i| exclude(i, patterns)).collect()),
        other => other,
    }
}

/// A name against a pattern with `*` wildcards.
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name[first.len()..].ends_with(last) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filtered(param: &str, v: Value) -> Value {
        FilterPath::parse(param).map(|f| f.apply(v.clone())).unwrap_or(v)
    }

    fn bulk_answer() -> Value {
        json!({
            "took": 3, "errors": false,
            "items": [
                { "index": { "_index": "a", "_id": "1", "_version": 2, "status": 200, "result": "updated" } },
                { "delete": { "_index": "a", "_id": "2", "_version": 3, "status": 404, "result": "not_found" } }
            ]
        })
    }

    #[test]
    fn an_include_keeps_the_path_through_arrays() {
        let v = filtered("items.*._id", bulk_answer());
        assert_eq!(v, json!({ "items": [ { "index": { "_id": "1" } }, { "delete": { "_id": "2" } } ] }));
    }

    #[test]
    fn includes_add_up_and_a_top_level_name_keeps_its_value_whole() {
        let v = filtered("took,errors", bulk_answer());
        assert_eq!(v, json!({ "took": 3, "errors": false }));
        let v = filtered("errors,items.index.status", bulk_answer());
        assert_eq!(v, json!({ "errors": false, "items": [ { "index": { "status": 200 } } ] }));
    }

    #[test]
    fn double_star_reaches_any_depth() {
        let v = filtered("**.result", bulk_answer());
        assert_eq!(
            v,
            json!({ "items": [ { "index": { "result": "updated" } }, { "delete": { "result": "not_found" } } ] })
        );
    }

    #[test]
    fn excludes_apply_after_includes() {
        let v = filtered("-items", bulk_answer());
        assert_eq!(v, json!({ "took": 3, "errors": false }));
        let v = filtered("items.**,-**._version", bulk_answer());
        assert_eq!(v["items"][0]["index"].get("_version"), None);
        assert_eq!(v["items"][0]["index"]["_id"], json!("1"));
    }

    #[test]
    fn nothing_kept_is_an_empty_object_and_nothing_asked_keeps_all() {
        assert_eq!(filtered("nope", bulk_answer()), json!({}));
        assert_eq!(FilterPath::parse(""), None);
        assert_eq!(filtered(" , ", bulk_answer()), bulk_answer());
    }

    #[test]
    fn wildcards_within_a_name() {
        assert!(glob("_*", "_seq_no"));
        assert!(glob("*_no", "_seq_no"));
        assert!(glob("_s*q*no", "_seq_no"));
        assert!(!glob("_s*x", "_seq_no"));
        assert!(!glob("ab*ba", "aba"));
        let v = filtered("_s*", json!({ "_seq_no": 1, "_shards": { "total": 1 }, "_id": "x" }));
        assert_eq!(v, json!({ "_seq_no": 1, "_shards": { "total": 1 } }));
    }
}
