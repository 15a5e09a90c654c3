//! Documents looked up by id (with routing), realtime, with `_mget`: reconcile's second look
//! at what differs, dead-letter replay's current documents and rollover's resurrection check.

use anyhow::{bail, Context as _};
use indexferry_common::es::{Cluster, Method};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// One document to look up: in `index` (else in the request's), by `id` and `routing`.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub index: Option<&'a str>,
    pub id: &'a str,
    pub routing: Option<&'a str>,
}

impl<'a> Key<'a> {
    /// A key in the request's index.
    pub fn new(id: &'a str, routing: Option<&'a str>) -> Self {
        Key { index: None, id, routing }
    }
}

/// One document of an `_mget` answer.
#[derive(Debug, Deserialize)]
pub struct Doc {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub found: bool,
    #[serde(rename = "_version", default)]
    pub version: Option<u64>,
    #[serde(rename = "_seq_no", default)]
    pub seq_no: Option<u64>,
    #[serde(rename = "_primary_term", default)]
    pub primary_term: Option<u64>,
    #[serde(rename = "_routing", default)]
    pub routing: Option<String>,
    #[serde(rename = "_source", default)]
    pub source: Option<Box<RawValue>>,
    /// A document the cluster could not look up (its shard unavailable): neither found nor
    /// absent, so never to be taken for absent.
    #[serde(default)]
    pub error: Option<Value>,
}

#[derive(Deserialize)]
struct Answer {
    docs: Vec<Doc>,
}

/// Looks the keys up, realtime, with or without `_source`, and answers in their order.
/// `index` is the request's index (`None`: each key names its own). A document the cluster
/// could not look up comes back with its `error`: see [`mget_in`].
pub async fn mget(
    cluster: &Cluster,
    index: Option<&str>,
    keys: impl IntoIterator<Item = Key<'_>>,
    with_source: bool,
) -> anyhow::Result<Vec<Doc>> {
    let docs: Vec<Value> = keys
        .into_iter()
        .map(|k| {
            let mut d = json!({ "_id": k.id });
            if let Some(i) = k.index {
                d["_index"] = json!(i);
            }
            if let Some(r) = k.routing {
                d["routing"] = json!(r);
            }
            d
        })
        .collect();
    let asked = docs.len();
    if asked == 0 {
        return Ok(vec![]);
    }
    let path = index.map_or_else(|| "/_mget".to_owned(), |i| format!("/{i}/_mget"));
    let where_ =
        || format!("the {} cluster {} index {}", cluster.role(), cluster.url, index.unwrap_or("(per document)"));
    let query = [("_source", if with_source { "true" } else { "false" }), ("realtime", "true")];
    let answer: Answer =
        cluster.json(Method::Post, &path, &query, Some(&json!({ "docs": docs }))).await.with_context(where_)?;
    anyhow::ensure!(
        answer.docs.len() == asked,
        "{}: _mget answered {} documents for {asked}",
        where_(),
        answer.docs.len()
    );
    Ok(answer.docs)
}

/// [`mget`] in `index`, where every document must be found or absent: one the cluster could
/// not look up is an error naming it (for reconcile and verify, which must not take it for
/// absent).
pub async fn mget_in(
    cluster: &Cluster,
    index: &str,
    keys: impl IntoIterator<Item = Key<'_>>,
    with_source: bool,
) -> anyhow::Result<Vec<Doc>> {
    let docs = mget(cluster, Some(index), keys, with_source).await?;
    if let Some(d) = docs.iter().find(|d| d.error.is_some()) {
        bail!(
            "the {} cluster {} index {index}: _mget could not look up {}: {}",
            cluster.role(),
            cluster.url,
            d.id,
            d.error.as_ref().map(Value::to_string).unwrap_or_default()
        );
    }
    Ok(docs)
}

/// Whether two `_source`s are the same document: compared as parsed JSON, so key order and
/// whitespace do not matter.
pub fn same_source(a: Option<&RawValue>, b: Option<&RawValue>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a.get() == b.get() || {
                let pa: Result<Value, _> = serde_json::from_str(a.get());
                let pb: Result<Value, _> = serde_json::from_str(b.get());
                matches!((pa, pb), (Ok(x), Ok(y)) if x == y)
            }
        }
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_neither_found_nor_absent() {
        let d: Doc = serde_json::from_str(r#"{"_id":"a","error":{"type":"no_shard_available_action_exception"}}"#)
            .expect("an _mget error entry");
        assert!(!d.found && d.error.is_some());
        let d: Doc = serde_json::from_str(r#"{"_index":"i","_id":"b","found":false}"#).expect("a missing document");
        assert!(!d.found && d.error.is_none() && d.version.is_none());
    }

    #[test]
    fn sources_compare_as_json() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert!(same_source(Some(&raw(r#"{"a":1,"b":[1,2]}"#)), Some(&raw(r#"{ "b": [1, 2], "a": 1 }"#))));
        assert!(!same_source(Some(&raw(r#"{"a":1}"#)), Some(&raw(r#"{"a":2}"#))));
        assert!(!same_source(Some(&raw(r#"{"a":1}"#)), None));
    }
}
