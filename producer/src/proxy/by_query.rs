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
//! - a rollover during the run moves the documents from under it (a write block that
//!   outlasts the hold, or a cross-cluster switch): what is left runs again where the
//!   request's index expression leads now, leaving out, when a script runs, the documents
//!   it already changed;
//! - `_update_by_query` without a script indexes each document again with its `_source`
//!   (running the index's pipelines, or `?pipeline=`); with one, a bulk `update` with the
//!   script, which needs `lang-painless` on the cluster as the cluster's own would.

use super::filter_path::FilterPath;
use super::write::{split_query, BulkRequest};
use super::{credentials, error, forwarded_write, Body, Proxy};
use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the scroll context lives between pages.
const SCROLL: &str = "5m";

/// A by-query run: what each pass searches and how it writes.
struct Run<'a> {
    search_path: String,
    query: Value,
    page: u64,
    max_docs: Option<u64>,
    per_second: Option<f64>,
    delete: bool,
    script: Option<Value>,
    proceed: bool,
    /// The client's credentials, for the searches.
    reads: http::HeaderMap,
    bulk: BulkRequest<'a>,
}

#[derive(Debug, PartialEq, Eq)]
enum Pass {
    Done,
    /// The documents moved under the run: the upstream switched to the target, or a write
    /// block outlasted the hold (a rollover moved the alias from the index the scroll
    /// read). What is left runs again, where the request's index expression leads now.
    Moved,
}

/// How many times a run goes on after its documents moved.
const MAX_PASSES: u32 = 4;

/// How many changed ids a run keeps to go on after a switch without running a script twice.
const MAX_REMEMBERED: usize = 1_000_000;

#[derive(Debug, Default)]
struct Tally {
    /// The documents changed so far (kept for a run with a script).
    changed: Vec<String>,
    passes: u32,
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
        match self.by_query_answer(index, delete, parts, body).await {
            Ok(r) | Err(r) => r,
        }
    }

    async fn by_query_answer(
        &self,
        index: String,
        delete: bool,
        parts: http::request::Parts,
        body: Bytes,
    ) -> Result<Response<Body>, Response<Body>> {
        let started = Instant::now();
        let api = if delete { "_delete_by_query" } else { "_update_by_query" };
        let (_, filter, routing) = split_query(parts.uri.query());
        let params = params(parts.uri.query());
        let param = |k: &str| params.get(k).map(String::as_str);
        if param("wait_for_completion") == Some("false") {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                &format!(
                    "{api} through indexferry-proxy runs in the proxy and answers when done: \
                     wait_for_completion=false (a task to poll) is not supported; send it without"
                ),
            ));
        }
        let request = request_body(&body)?;
        let reads = credentials(&parts.headers);
        let bulk_headers = bulk_headers(&parts.headers);
        let bulk_path = match (param("pipeline"), delete) {
            (Some(p), false) => format!("/_bulk?pipeline={}", encode(p)),
            _ => "/_bulk".to_owned(),
        };
        let bulk = BulkRequest {
            method: &Method::POST,
            path_and_query: &bulk_path,
            headers: &bulk_headers,
            client_headers: &parts.headers,
            index: None,
            routing,
            pipeline: super::as_sent::names_pipeline(bulk_path.split_once('?').map_or("", |(_, q)| q)),
        };
        let run = Run::asked(&index, delete, &params, &request, reads, bulk);
        let tally = self.run_passes(api, &run).await?;
        if matches!(param("refresh"), Some("" | "true")) {
            let path = format!("/{}/_refresh", encode_path(&index));
            let _ = self.send(&Method::POST, &path, &run.reads, Bytes::new()).await;
        }
        Ok(answer(tally, started, &run, filter.as_ref()))
    }

    /// Runs passes until one is done. A cross-cluster switch during the run: what is left
    /// runs again on the target, the documents already changed left out (a script must not
    /// run twice on one).
    async fn run_passes(&self, api: &str, run: &Run<'_>) -> Result<Tally, Response<Body>> {
        let mut tally = Tally::default();
        while self.run_pass(run, &mut tally).await? == Pass::Moved {
            tracing::warn!(
                api,
                changed = tally.total,
                "the documents moved during a by-query (a rollover): it goes on where they are"
            );
        }
        Ok(tally)
    }

    /// One pass over the query's matches on the current upstream; `Moved` when the
    /// documents moved under it (what this pass changed is in the tally).
    async fn run_pass(&self, run: &Run<'_>, tally: &mut Tally) -> Result<Pass, Response<Body>> {
        tally.passes += 1;
        let on = self.upstream();
        let switched = || !Arc::ptr_eq(&on, &self.upstream());
        let search = pass_search(run, tally);
        let mut answer =
            self.send(&Method::POST, &run.search_path, &run.reads, Bytes::from(search.to_string())).await?;
        let mut scroll_id = None;
        let outcome = loop {
            if switched() {
                break Pass::Moved;
            }
            let page = match serde_json::from_slice::<Value>(&answer.body) {
                Ok(v) if answer.status.is_success() => v,
                _ => {
                    self.clear_scroll(scroll_id, &run.reads).await;
                    return Err(answer.unchanged());
                }
            };
            scroll_id = page.get("_scroll_id").and_then(Value::as_str).map(str::to_owned).or(scroll_id);
            let hits = page_hits(&page, run, tally);
            if hits.is_empty() {
                break Pass::Done;
            }
            let batch_started = Instant::now();
            let body = bulk_body(&hits, run.delete, run.script.as_ref());
            let items = match self.bulk_published(&run.bulk, body).await {
                Ok((_, v)) => v,
                Err(resp) => {
                    self.clear_scroll(scroll_id, &run.reads).await;
                    return Err(resp);
                }
            };
            // Moved while the bulk was held: its failures are the move's, not the
            // documents'; what it changed counts.
            let moved = switched() || (blocked(&items) && tally.passes < MAX_PASSES);
            tally.batches += 1;
            count(tally, &items, run.proceed, moved);
            if run.script.is_none() {
                tally.changed.clear();
            }
            if moved {
                break Pass::Moved;
            }
            if !tally.failures.is_empty() || run.max_docs.is_some_and(|m| tally.total >= m) {
                break Pass::Done;
            }
            throttle(run, hits.len(), batch_started, tally).await;
            let Some(id) = &scroll_id else { break Pass::Done };
            let next = json!({ "scroll": SCROLL, "scroll_id": id });
            answer = self.send(&Method::POST, "/_search/scroll", &run.reads, Bytes::from(next.to_string())).await?;
        };
        if outcome == Pass::Done || !switched() {
            self.clear_scroll(scroll_id, &run.reads).await;
        }
        if outcome == Pass::Moved && tally.changed.len() > MAX_REMEMBERED {
            return Err(too_many_to_go_on());
        }
        Ok(outcome)
    }

    async fn clear_scroll(&self, id: Option<String>, reads: &http::HeaderMap) {
        if let Some(id) = id {
            let body = Bytes::from(json!({ "scroll_id": [id] }).to_string());
            let _ = self.send(&Method::DELETE, "/_search/scroll", reads, body).await;
        }
    }
}

impl<'a> Run<'a> {
    /// The run the request asks for, from its parameters and body (a parameter wins).
    fn asked(
        index: &str,
        delete: bool,
        params: &BTreeMap<String, String>,
        request: &Value,
        reads: http::HeaderMap,
        bulk: BulkRequest<'a>,
    ) -> Self {
        let param = |k: &str| params.get(k).map(String::as_str);
        let query = match (param("q"), request.get("query")) {
            (Some(q), _) => json!({ "query_string": { "query": q } }),
            (None, Some(q)) => q.clone(),
            (None, None) => json!({ "match_all": {} }),
        };
        let script = request.get("script").cloned().filter(|_| !delete);
        let proceed = param("conflicts") == Some("proceed")
            || request.get("conflicts").and_then(Value::as_str) == Some("proceed");
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
        Run {
            search_path: format!("/{}/_search?{}", encode_path(index), search_query.join("&")),
            query,
            page,
            max_docs,
            per_second,
            delete,
            script,
            proceed,
            reads,
            bulk,
        }
    }
}

/// The request's body, `{}` when empty.
fn request_body(body: &Bytes) -> Result<Value, Response<Body>> {
    match body.iter().all(u8::is_ascii_whitespace) {
        true => Ok(json!({})),
        false => match serde_json::from_slice(body) {
            Ok(v) => Ok(v),
            Err(e) => Err(error(StatusCode::BAD_REQUEST, "parse_exception", &format!("request body: {e}"))),
        },
    }
}

/// The headers of the proxy's bulk requests: the client's, forwarded as a write's.
fn bulk_headers(client: &http::HeaderMap) -> http::HeaderMap {
    let mut bulk_headers = forwarded_write(client);
    // The bulk is the proxy's, in plain NDJSON: the client's media types (the
    // Elasticsearch clients' `compatible-with`) would have to match it.
    bulk_headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    bulk_headers.remove(http::header::ACCEPT);
    bulk_headers
}

/// The answer in the cluster's shape. Its status as the cluster's: the highest among the
/// failures (a conflict without `conflicts=proceed` is one), else 200. A 503 (an event not
/// published) tells the client to retry, as a failure of the cluster's own would.
fn answer(tally: Tally, started: Instant, run: &Run<'_>, filter: Option<&FilterPath>) -> Response<Body> {
    let worst = tally.failures.iter().filter_map(|f| f["status"].as_u64()).max().unwrap_or(200).max(200);
    let status = StatusCode::from_u16(worst as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
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
        "requests_per_second": run.per_second.unwrap_or(-1.0),
        "throttled_until_millis": 0,
        "failures": tally.failures,
    });
    if run.delete {
        if let Some(o) = out.as_object_mut() {
            o.remove("updated");
        }
    }
    let out = match filter {
        Some(f) => f.apply(out),
        None => out,
    };
    super::json_response(status, &out)
}

/// A pass's search: a page of the query's matches, each with its `_seq_no` and
/// `_primary_term`; with a script, without the documents it changed already.
fn pass_search(run: &Run<'_>, tally: &Tally) -> Value {
    let mut query = run.query.clone();
    if run.script.is_some() && !tally.changed.is_empty() {
        query = json!({ "bool": { "must": [query], "must_not": [{ "ids": { "values": tally.changed } }] } });
    }
    let left = run.max_docs.map(|m| m.saturating_sub(tally.total));
    json!({
        "size": left.map_or(run.page, |m| m.min(run.page)).max(1),
        "query": query,
        "sort": ["_doc"],
        "seq_no_primary_term": true,
        "_source": !run.delete && run.script.is_none(),
    })
}

/// A page's hits, no more than `max_docs` leaves.
fn page_hits<'p>(page: &'p Value, run: &Run<'_>, tally: &Tally) -> Vec<&'p Value> {
    let mut hits: Vec<&Value> = page.pointer("/hits/hits").and_then(Value::as_array).into_iter().flatten().collect();
    if let Some(m) = run.max_docs {
        hits.truncate(m.saturating_sub(tally.total) as usize);
    }
    hits
}

/// Waits what `requests_per_second` asks after a page of `hits` written since `batch_started`.
async fn throttle(run: &Run<'_>, hits: usize, batch_started: Instant, tally: &mut Tally) {
    if let Some(rate) = run.per_second {
        let wanted = Duration::from_secs_f64(hits as f64 / rate);
        if let Some(wait) = wanted.checked_sub(batch_started.elapsed()) {
            tally.throttled += wait;
            tokio::time::sleep(wait).await;
        }
    }
}

/// The documents moved after the run changed more than it can remember.
fn too_many_to_go_on() -> Response<Body> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "indexferry_proxy_exception",
        "the documents moved (a rollover) during this by-query, which changed more documents than the proxy \
         keeps track of to go on without running its script twice on one: it stopped; see which documents \
         it changed before sending it again",
    )
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

/// Whether a write block refused an item for longer than the hold.
fn blocked(answer: &Value) -> bool {
    answer.get("items").and_then(Value::as_array).into_iter().flatten().any(|item| {
        let r = item.as_object().and_then(|o| o.values().next());
        r.and_then(|r| r.pointer("/error/type")).and_then(Value::as_str) == Some("cluster_block_exception")
    })
}

/// Adds a bulk answer's items to the tally; a failure other than a conflict, or a conflict
/// without `conflicts=proceed`, goes into `failures` (which stops the run, as the cluster's).
/// After a move (`moved`), only the changes count: the rest runs again where it is now.
fn count(tally: &mut Tally, answer: &Value, proceed: bool, moved: bool) {
    for item in answer.get("items").and_then(Value::as_array).into_iter().flatten() {
        let Some((_, r)) = item.as_object().and_then(|o| o.iter().next()) else { continue };
        let status = r.get("status").and_then(Value::as_u64).unwrap_or(0);
        let changed = (200..300).contains(&status);
        if moved && !changed {
            continue;
        }
        tally.total += 1;
        if changed {
            if let Some(id) = r.get("_id").and_then(Value::as_str) {
                tally.changed.push(id.to_owned());
            }
        }
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
        assert_eq!(
            line,
            json!({ "delete": { "_index": "i", "_id": "1", "if_seq_no": 4, "if_primary_term": 2, "routing": "r" } })
        );
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
        count(&mut t, &answer, true, false);
        assert_eq!((t.deleted, t.version_conflicts, t.noops, t.failures.len(), t.total), (1, 1, 1, 0, 3));
        let mut t = Tally::default();
        count(&mut t, &answer, false, false);
        assert_eq!(t.failures.len(), 1);
        assert_eq!(t.failures[0]["id"], json!("2"));
        // After a switch only the changes count; the rest runs again on the target.
        let mut t = Tally::default();
        count(&mut t, &answer, false, true);
        assert_eq!((t.total, t.failures.len(), t.changed.clone()), (2, 0, vec!["1".to_owned(), "3".to_owned()]));
    }

    #[test]
    fn index_expressions_keep_commas_and_wildcards() {
        assert_eq!(encode_path("logs-*,recs"), "logs-*,recs");
        assert_eq!(encode_path("a b/c"), "a%20b%2Fc");
        assert_eq!(params(Some("conflicts=proceed&q=a+b&max_docs=3"))["q"], "a b");
    }
}
