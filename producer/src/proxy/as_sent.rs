//! Whether the cluster stores a document as the request sent it: then an `index` or
//! `create` is published from the request, with the answer's versions, and not read back.

use super::credentials;
use super::write::encode;
use super::Proxy;
use bytes::Bytes;
use http::{HeaderMap, Method};
use serde_json::value::RawValue;
use serde_json::Value;
use std::time::Instant;

impl Proxy {
    /// Whether `index` (a concrete index) stores a document's `_source` as the request sent
    /// it: no default or final pipeline, no `_source` includes, excludes or synthetic source,
    /// not a `logsdb` or `time_series` index. Read with the client's credentials and trusted
    /// for [`super::SOURCE_TTL`]; what cannot be read counts as "no", and the documents are
    /// read back.
    pub(crate) async fn stores_as_sent(&self, index: &str, headers: &HeaderMap) -> bool {
        if let Some((yes, at)) = self.stores_as_sent.lock().ok().and_then(|c| c.get(index).copied()) {
            if at.elapsed() < super::SOURCE_TTL {
                return yes;
            }
        }
        let headers = credentials(headers);
        let read = |path: String| {
            let headers = headers.clone();
            async move {
                match self.send(&Method::GET, &path, &headers, Bytes::new()).await {
                    Ok(a) if a.status.is_success() => serde_json::from_slice::<Value>(&a.body).ok(),
                    _ => None,
                }
            }
        };
        let (settings, mapping) = tokio::join!(
            read(format!("/{}/_settings?flat_settings=true", encode(index))),
            read(format!("/{}/_mapping?filter_path=*.mappings._source", encode(index))),
        );
        let yes = match (settings, mapping) {
            (Some(s), Some(m)) => stored_as_sent(&s, &m),
            _ => false,
        };
        if let Ok(mut cache) = self.stores_as_sent.lock() {
            cache.insert(index.to_owned(), (yes, Instant::now()));
        }
        yes
    }
}

/// [`Proxy::stores_as_sent`] on a `GET _settings?flat_settings` and a
/// `GET _mapping?filter_path=*.mappings._source` answer of one index.
fn stored_as_sent(settings: &Value, mapping: &Value) -> bool {
    let Some(s) = settings.as_object().and_then(|o| o.values().next()).map(|i| &i["settings"]) else { return false };
    let setting = |k: &str| s.get(k).and_then(Value::as_str);
    let no_pipeline = |k: &str| setting(k).is_none_or(|p| p == "_none");
    let plain_mode = setting("index.mode").is_none_or(|m| m == "standard");
    let stored_source = setting("index.mapping.source.mode").is_none_or(|m| m == "stored");
    let source = mapping.as_object().and_then(|o| o.values().next()).map(|i| &i["mappings"]["_source"]);
    let whole = match source {
        None | Some(Value::Null) => true,
        Some(src) => {
            let empty = |k: &str| src.get(k).and_then(Value::as_array).is_none_or(Vec::is_empty);
            src.get("enabled") != Some(&Value::Bool(false))
                && empty("includes")
                && empty("excludes")
                && src.get("mode").and_then(Value::as_str).is_none_or(|m| m == "stored")
        }
    };
    no_pipeline("index.default_pipeline") && no_pipeline("index.final_pipeline") && plain_mode && stored_source && whole
}

/// A document sent to be stored whole (`index`, `create`), as JSON, if it is an object.
pub(super) fn whole_document(bytes: &[u8]) -> Option<Box<RawValue>> {
    let raw: Box<RawValue> = serde_json::from_slice(bytes).ok()?;
    raw.get().starts_with('{').then_some(raw)
}

/// Whether the query names an ingest pipeline.
pub(super) fn names_pipeline(query: &str) -> bool {
    query.split('&').any(|p| p == "pipeline" || p.starts_with("pipeline="))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_document_is_stored_as_sent_only_without_pipelines_filters_or_synthetic_source() {
        let settings = |extra: Value| {
            let mut s = json!({ "index.number_of_shards": "1", "index.default_pipeline": "_none" });
            s.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            json!({ "recs-v1": { "settings": s } })
        };
        let mapping = |source: Value| json!({ "recs-v1": { "mappings": { "_source": source } } });
        let plain = json!({});
        assert!(stored_as_sent(&settings(json!({})), &plain));
        assert!(stored_as_sent(&settings(json!({})), &mapping(json!({ "enabled": true, "excludes": [] }))));
        assert!(stored_as_sent(&settings(json!({ "index.mode": "standard" })), &plain));
        for s in [
            json!({ "index.default_pipeline": "enrich" }),
            json!({ "index.final_pipeline": "stamp" }),
            json!({ "index.mode": "logsdb" }),
            json!({ "index.mode": "time_series" }),
            json!({ "index.mapping.source.mode": "synthetic" }),
        ] {
            assert!(!stored_as_sent(&settings(s.clone()), &plain), "{s}");
        }
        for m in [
            json!({ "excludes": ["secret"] }),
            json!({ "includes": ["a"] }),
            json!({ "enabled": false }),
            json!({ "mode": "synthetic" }),
        ] {
            assert!(!stored_as_sent(&settings(json!({})), &mapping(m.clone())), "{m}");
        }
        assert!(!stored_as_sent(&json!({}), &plain), "an answer without the index");
        assert!(whole_document(b"{\"a\":1}\n").is_some_and(|d| d.get() == "{\"a\":1}"));
        assert!(whole_document(b"[1]").is_none() && whole_document(b"not json").is_none());
        assert!(names_pipeline("refresh=true&pipeline=p") && !names_pipeline("pipelined=x&routing=r"));
    }
}
