//! `_delete_by_query` and `_update_by_query`, run by the proxy itself so that every
//! document they change gets its event: a scroll over the query's matches (with each hit's
//! `_seq_no` and `_primary_term`), then per page one `_bulk` through the proxy's own bulk
//! path, each item conditional on the operation it saw (`if_seq_no`, `if_primary_term`):
//! a document changed since the scroll read it is a version conflict, as in the cluster's
//! own implementation. The answer has the cluster's shape: `total`, `deleted` or
//! `updated`, `noops`, `batches`, `version_conflicts`, `failures`, `throttled_millis`.
//!
//! What differs from the cluster's own:
//! - it runs as one slice whatever `slices` asks (the answer has no `slices` breakdown);
//! - `requests_per_second` throttles between pages, as the cluster does;
//! - `wait_for_completion=false` (a task to poll) is refused: the proxy answers when done;
//! - it needs no `reindex` module on the cluster (Elasticsearch's test zips lack it): a
//!   cluster without it serves these APIs through the proxy;
//! - `_update_by_query` without a script indexes each document again with its `_source`
//!   (running the index's pipelines, or `?pipeline=`); with one, a bulk `update` with the
//!   script, which needs `lang-painless` on the cluster as the cluster's own would.

use super::write::{split_query, BulkRequest};
use super::{credentials, error, forwarded_write, Body, Proxy};
use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long the scroll context lives between pages.
const SCROLL: &str = "5m";

#[derive(Debug, Default)]
struct Tally {
    total: u64,
    deleted: u64,
    updated: u64,
    noops: u64,
    batches: u64,
    version_conflicts: u64,
    throttled: Duration,
    failures: Vec<Value>,
}

impl Proxy {
    pub(super) async fn by_query(
        &self,
        index: String,
        delete: bool,
        parts: http::request::Parts,
        body: Bytes,
    ) -> Response<Body> {
        let started = Instant::now();
        let api = if delete { "_delete_by_query" } else { "_update_by_query" };
        let (_, filter, routing) = split_query(parts.uri.query());
        let params = params(parts.uri.query());
        let param = |k: &str| params.get(k).map(String::as_str);
        if param("wait_for_completion") == Some("false") {
            return error(
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                &format!(
                    "{api} through indexferry-proxy runs in the proxy and answers when done: \
                     wait_for_completion=false (a task to poll) is not supported; send it without"
                ),
            );
        }
        let request: Value = match body.iter().all(u8::is_ascii_whitespace) {
            true => json!({}),
            false => match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return error(StatusCode::BAD_REQUEST, "parse_exception", &format!("request body: {e}")),
            },
        };
        let query = match (param("q"), request.get("query")) {
            (Some(q), _) => json!({ "query_string": { "query": q } }),
            (None, Some(q)) => q.clone(),
            (None, None) => json!({ "match_all": {} }),
        };
        let script = request.get("script").cloned().filter(|_| !delete);
        let proceed =
            param("conflicts") == Some("proceed") || request.get("conflicts").and_then(Value::as_str) == Some("proceed");
        let max_docs = param("max_docs")
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| request.get("max_docs").and_then(Value::as_u64));
        let page = param("scroll_size").and_then(|v| v.parse::<u64>().ok()).unwrap_or(1000).max(1);
        let per_second = param("requests_per_second").and_then(|v| v.parse::<f64>().ok()).filter(|r| *r > 0.0);

        let mut search_query = vec![format!("scroll={SCROLL}")];
        for k in ["routing", "preference", "expand_wildcards", "ignore_unavailable", "allow_no_indices"] {
            if let Some(v) = param(k) {
                search_query.push(format!("{k}={}", encode(v)));
            }
        }
        let size = max_docs.map_or(page, |m| m.min(page));
        let search = json!({
            "size": size,
            "query": query,
            "sort": ["_doc"],
            "seq_no_primary_term": true,
            "_source": !delete && script.is_none(),
        });
        let reads = credentials(&parts.headers);
        let path = format!("/{}/_search?{}", encode_path(&index), search_query.join("&"));
        let mut answer = match self.send(&Method::POST, &path, &reads, Bytes::from(search.to_string())).await {
            Ok(a) => a,
            Err(resp) => return resp,
        };
        let mut bulk_headers = forwarded_write(&parts.headers);
        bulk_headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        let bulk_path = match (param("pipeline"), delete) {
            (Some(p), false) => format!("/_bulk?pipeline={}", encode(p)),
            _ => "/_bulk".to_owned(),
        };
        let mut tally = Tally::default();
        let mut scroll_id = None;
        loop {
            if !answer.status.is_success() {
                self.clear_scroll(scroll_id, &reads).await;
                return answer.unchanged();
            }
            let Ok(page) = serde_json::from_slice::<Value>(&answer.body) else {
                self.clear_scroll(scroll_id, &reads).await;
                return answer.unchanged();
            };
            scroll_id = page.get("_scroll_id").and_then(Value::as_str).map(str::to_owned).or(scroll_id);
            let mut hits: Vec<&Value> = page.pointer("/hits/hits").and_then(Value::as_array).into_iter().flatten().collect();
            if let Some(m) = max_docs {
                hits.truncate(m.saturating_sub(tally.total) as usize);
            }
            if hits.is_empty() {
                break;
            }
            let batch_started = Instant::now();
            let body = bulk_body(&hits, delete, script.as_ref());
            let req = BulkRequest {
                method: &Method::POST,
                path_and_query: &bulk_path,
                headers: &bulk_headers,
                client_headers: &parts.headers,
                index: None,
                routing: routing.clone(),
            };
            let items = match self.bulk_published(&req, body).await {
                Ok((_, v)) => v,
                Err(resp) => {
                    self.clear_scroll(scroll_id, &reads).await;
                    return resp;
                }
            };
            tally.batches += 1;
            tally.total += hits.len() as u64;
            count(&mut tally, &items, proceed);
            let stop = !tally.failures.is_empty() || max_docs.is_some_and(|m| tally.total >= m);
            if stop {
                break;
            }
            if let Some(rate) = per_second {
                let wanted = Duration::from_secs_f64(hits.len() as f64 / rate);
                if let Some(wait) = wanted.checked_sub(batch_started.elapsed()) {
                    tally.throttled += wait;
                    tokio::time::sleep(wait).await;
                }
            }
            let Some(id) = &scroll_id else { break };
            let next = json!({ "scroll": SCROLL, "scroll_id": id });
            answer = match self.send(&Method::POST, "/_search/scroll", &reads, Bytes::from(next.to_string())).await {
                Ok(a) => a,
                Err(resp) => return resp,
            };
        }
        self.clear_scroll(scroll_id, &reads).await;
        if matches!(param("refresh"), Some("" | "true")) {
            let _ = self.send(&Method::POST, &format!("/{}/_refresh", encode_path(&index)), &reads, Bytes::new()).await;
        }
        let conflicted = !proceed && tally.version_conflicts > 0;
        let status = if conflicted { StatusCode::CONFLICT } else { StatusCode::OK };
        let mut out = json!({
            "took": started.elapsed().as_millis() as u64,
            "timed_out": false,
            "total": tally.total,
            "updated": tally.updated,
            "deleted": tally.deleted,
            "batches": tally.batches,
            "version_conflicts": tally.version_conflicts,
            "noops": tally.noops,
            "retries": { "bulk": 0, "search": 0 },
            "throttled_millis": tally.throttled.as_millis() as u64,
            "requests_per_second": per_second.unwrap_or(-1.0),
            "throttled_until_millis": 0,
            "failures": tally.failures,
        });
        if delete {
            if let Some(o) = out.as_object_mut() {
                o.remove("updated");
            }
        }
        let out = match &filter {
            Some(f) => f.apply(out),
            None => out,
        };
        super::json_response(status, &out)
    }

    async fn clear_scroll(&self, id: Option<String>, reads: &http::HeaderMap) {
        if let Some(id) = id {
            let body = Bytes::from(json!({ "scroll_id": [id] }).to_string());
            let _ = self.send(&Method::DELETE, "/_search/scroll", reads, body).await;
        }
    }
}

/// The bulk of one page: each item conditional on the operation the scroll saw.
fn bulk_body(hits: &[&Value], delete: bool, script: Option<&Value>) -> Bytes {
    let mut out = String::new();
    for h in hits {
        let mut meta = json!({
            "_index": h["_index"], "_id": h["_id"],
            "if_seq_no": h["_seq_no"], "if_primary_term": h["_primary_term"],
        });
        if let Some(r) = h.get("_routing") {
            meta["routing"] = r.clone();
        }
        let (action, doc) = match (delete, script) {
            (true, _) => ("delete", None),
            (false, Some(s)) => ("update", Some(json!({ "script": s }))),
            (false, None) => ("index", Some(h.get("_source").cloned().unwrap_or_else(|| json!({})))),
        };
        out.push_str(&json!({ action: meta }).to_string());
        out.push('\n');
        if let Some(d) = doc {
            out.push_str(&d.to_string());
            out.push('\n');
        }
    }
    Bytes::from(out)
}

/// Adds a bulk answer's items to the tally; a failure other than a conflict, or a conflict
/// without `conflicts=proceed`, goes into `failures` (which stops the run, as the cluster's).
fn count(tally: &mut Tally, answer: &Value, proceed: bool) {
    for item in answer.get("items").and_then(Value::as_array).into_iter().flatten() {
        let Some((_, r)) = item.as_object().and_then(|o| o.iter().next()) else { continue };
        let status = r.get("status").and_then(Value::as_u64).unwrap_or(0);
        match (status, r.get("result").and_then(Value::as_str)) {
            (200..=299, Some("deleted")) => tally.deleted += 1,
            (200..=299, Some("noop")) => tally.noops += 1,
            (200..=299, _) => tally.updated += 1,
            (409, _) => {
                tally.version_conflicts += 1;
                if !proceed {
                    tally.failures.push(failure(r, status));
                }
            }
            _ => tally.failures.push(failure(r, status)),
        }
    }
}

fn failure(r: &Value, status: u64) -> Value {
    json!({ "index": r.get("_index"), "id": r.get("_id"), "cause": r.get("error"), "status": status })
}

/// The query's parameters, decoded (the first of each name).
fn params(query: Option<&str>) -> BTreeMap<String, String> {
    let decode = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
    let mut out = BTreeMap::new();
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(decode(k)).or_insert_with(|| decode(v));
    }
    out
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Characters an index expression cannot carry as they are in a path (commas, `*` and
/// `-` stay).
const PATH: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// An index expression for a path.
fn encode_path(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, PATH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_item_is_conditional_on_what_the_scroll_saw() {
        let hit = json!({ "_index": "i", "_id": "1", "_seq_no": 4, "_primary_term": 2, "_routing": "r", "_source": { "a": 1 } });
        let body = bulk_body(&[&hit], true, None);
        let line: Value = serde_json::from_slice(body.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!(line, json!({ "delete": { "_index": "i", "_id": "1", "if_seq_no": 4, "if_primary_term": 2, "routing": "r" } }));
        let body = String::from_utf8(bulk_body(&[&hit], false, None).to_vec()).unwrap();
        assert!(body.starts_with("{\"index\":"), "{body}");
        assert!(body.ends_with("{\"a\":1}\n"), "{body}");
        let script = json!({ "source": "ctx._source.a++" });
        let body = String::from_utf8(bulk_body(&[&hit], false, Some(&script)).to_vec()).unwrap();
        assert!(body.contains("\"update\"") && body.contains("ctx._source.a++"), "{body}");
    }

    #[test]
    fn conflicts_fail_the_run_unless_told_to_proceed() {
        let answer = json!({ "items": [
            { "delete": { "_index": "i", "_id": "1", "status": 200, "result": "deleted" } },
            { "delete": { "_index": "i", "_id": "2", "status": 409, "error": { "type": "version_conflict_engine_exception" } } },
            { "update": { "_index": "i", "_id": "3", "status": 200, "result": "noop" } },
        ] });
        let mut t = Tally::default();
        count(&mut t, &answer, true);
        assert_eq!((t.deleted, t.version_conflicts, t.noops, t.failures.len()), (1, 1, 1, 0));
        let mut t = Tally::default();
        count(&mut t, &answer, false);
        assert_eq!(t.failures.len(), 1);
        assert_eq!(t.failures[0]["id"], json!("2"));
    }

    #[test]
    fn index_expressions_keep_commas_and_wildcards() {
        assert_eq!(encode_path("logs-*,recs"), "logs-*,recs");
        assert_eq!(encode_path("a b/c"), "a%20b%2Fc");
        assert_eq!(params(Some("conflicts=proceed&q=a+b&max_docs=3"))["q"], "a b");
    }
}
