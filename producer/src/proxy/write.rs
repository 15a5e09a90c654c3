//! The writes the proxy captures: one document (`_doc`, `_create`, `_update`, a delete) or a
//! `_bulk`. Each is sent to the cluster (held while a write block or a full queue refuses
//! it), every acknowledged write is read back and its event published, and then the client
//! gets the cluster's answer, cut down to its `filter_path`.

use super::as_sent::{names_pipeline, whole_document};
use super::bulk_body::{parse_bulk, BulkLine};
use super::classify::{DocOp, DocWrite};
use super::filter_path::FilterPath;
use super::inflight::Ticket;
use super::{bytes_response, credentials, error, forwarded_write, json_response, upstream_unreachable, Body, Proxy};
use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, Method, Response, StatusCode};
use indexferry_common::retry::Backoff;
use indexferry_schemas::gap::{GapDoc, GapNotice};
use indexferry_schemas::{ChangeEvent, Op, SCHEMA_V1};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The request's query without `filter_path` (the proxy needs the whole answer), and the
/// client's `filter_path`.
pub(super) fn split_query(query: Option<&str>) -> (String, Option<FilterPath>, Option<String>) {
    let (mut kept, mut filter, mut routing) = (vec![], None, None);
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode =
            |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        match decode(k).as_str() {
            "filter_path" => filter = FilterPath::parse(&decode(v)),
            "routing" => {
                routing = Some(decode(v));
                kept.push(pair);
            }
            _ => kept.push(pair),
        }
    }
    (kept.join("&"), filter, routing)
}

/// A document as the cluster holds it now (realtime `_mget`).
#[derive(Debug, Deserialize)]
struct Stored {
    #[serde(rename = "_index")]
    index: String,
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    found: bool,
    #[serde(rename = "_version")]
    version: Option<u64>,
    #[serde(rename = "_seq_no")]
    seq_no: Option<u64>,
    #[serde(rename = "_primary_term")]
    primary_term: Option<u64>,
    #[serde(rename = "_routing")]
    routing: Option<String>,
    #[serde(rename = "_source")]
    source: Option<Box<RawValue>>,
}

/// One write the cluster acknowledged, to read back (or, a delete, to publish as it is).
#[derive(Debug, Clone)]
struct Acked {
    delete: bool,
    index: String,
    id: String,
    routing: Option<String>,
    version: u64,
    seq_no: u64,
    primary_term: u64,
    /// The document as the request sent it, where that is what the cluster stored
    /// ([`Proxy::stores_as_sent`]): published without reading it back.
    sent: Option<Box<RawValue>>,
}

impl Acked {
    /// From a write's answer (a single write's body, or a bulk item's object); None when it
    /// changed nothing (`noop`) or failed.
    fn from_answer(v: &Value, status: u16, delete: bool, routing: Option<String>) -> Option<Acked> {
        let result = v.get("result").and_then(Value::as_str);
        let acked = (200..300).contains(&status) || (delete && status == 404 && result == Some("not_found"));
        if !acked || result == Some("noop") {
            return None;
        }
        Some(Acked {
            delete,
            index: v.get("_index")?.as_str()?.to_owned(),
            id: v.get("_id")?.as_str()?.to_owned(),
            routing,
            version: v.get("_version")?.as_u64()?,
            seq_no: v.get("_seq_no")?.as_u64()?,
            primary_term: v.get("_primary_term")?.as_u64()?,
            sent: None,
        })
    }
}

impl Proxy {
    pub(super) async fn doc(&self, w: DocWrite, parts: http::request::Parts, body: Bytes) -> Response<Body> {
        let (query, filter, routing) = split_query(parts.uri.query());
        let path_and_query = join(parts.uri.path(), &query);
        let headers = forwarded_write(&parts.headers);
        // The ticket is given back once the event is published (the drain signal).
        let (answer, _ticket) = match self.send_held(&parts.method, &path_and_query, &headers, &body).await {
            Ok(a) => a,
            Err(resp) => return resp,
        };
        let status = answer.status;
        let Ok(parsed) = serde_json::from_slice::<Value>(&answer.body) else {
            return answer.unchanged();
        };
        let delete = w.op == DocOp::Delete;
        let routing = match (&routing, parsed.get("_index").and_then(Value::as_str)) {
            (Some(r), _) => Some(r.clone()),
            (None, Some(concrete)) => self.alias_routing(&w.index, concrete, &parts.headers).await,
            (None, None) => None,
        };
        if let Some(mut acked) = Acked::from_answer(&parsed, status.as_u16(), delete, routing) {
            let whole = matches!(w.op, DocOp::Index | DocOp::Create) && !names_pipeline(&query);
            if whole && self.stores_as_sent(&acked.index, &parts.headers).await {
                acked.sent = whole_document(&body);
            }
            if let Err(why) = self.publish(&[acked], &parts.headers).await {
                return error(StatusCode::SERVICE_UNAVAILABLE, "indexferry_publish_exception", &why);
            }
        }
        answer.respond(parsed, filter.as_ref())
    }

    pub(super) async fn bulk(&self, index: Option<String>, parts: http::request::Parts, body: Bytes) -> Response<Body> {
        let (query, filter, routing) = split_query(parts.uri.query());
        let sent = BulkRequest {
            method: &parts.method,
            path_and_query: &join(parts.uri.path(), &query),
            headers: &forwarded_write(&parts.headers),
            client_headers: &parts.headers,
            index,
            routing,
            pipeline: names_pipeline(&query),
        };
        match self.bulk_published(&sent, body).await {
            Ok((first, answer)) => first.respond(answer, filter.as_ref()),
            Err(resp) => resp,
        }
    }

    /// Sends a bulk (holding the items a block refuses), publishes the events of its
    /// acknowledged items, and turns the items whose event could not be published into
    /// errors. The cluster's first answer (for its status and headers), and the whole answer.
    pub(super) async fn bulk_published(
        &self,
        req: &BulkRequest<'_>,
        body: Bytes,
    ) -> Result<(Answer, Value), Response<Body>> {
        let items = match parse_bulk(&body) {
            Ok(items) => items,
            Err(why) => return Err(error(StatusCode::BAD_REQUEST, "illegal_argument_exception", &why)),
        };
        if items.is_empty() {
            return Err(error(StatusCode::BAD_REQUEST, "action_request_validation_exception", "no requests added"));
        }
        let (first, ticket) = self.send_held(req.method, req.path_and_query, req.headers, &body).await?;
        let mut answer = match serde_json::from_slice::<Value>(&first.body) {
            Ok(v) if first.status.is_success() => v,
            _ => return Err(first.unchanged()),
        };
        let answered = answer.get("items").and_then(Value::as_array).map(Vec::len);
        if answered.is_some_and(|n| n != items.len()) {
            // The proxy cannot tell which write each answer is for: say so rather than guess.
            return Err(error(
                StatusCode::BAD_GATEWAY,
                "indexferry_proxy_exception",
                &format!("the cluster answered {} items to a bulk of {}", answered.unwrap_or(0), items.len()),
            ));
        }
        // What the cluster took is published before the rest is held: a rollover waits for
        // these (its drain signal), not for the hold.
        let refused = refused_items(&answer);
        self.publish_items(&mut answer, &items, req, &body, |_| true).await;
        drop(ticket);
        if refused.iter().any(|r| *r) {
            let (held, _tickets) =
                self.hold_items(answer, &items, &body, req.method, req.path_and_query, req.headers).await?;
            answer = held;
            self.publish_items(&mut answer, &items, req, &body, |n| refused[n]).await;
        }
        if let Some(list) = answer.get("items").and_then(Value::as_array) {
            let errors = list
                .iter()
                .any(|i| i.as_object().and_then(|o| o.values().next()).is_some_and(|r| r.get("error").is_some()));
            answer["errors"] = json!(errors);
        }
        Ok((first, answer))
    }

    /// Publishes the events of the acknowledged items among those `chosen`, and turns the
    /// items whose event could not be published into errors.
    async fn publish_items(
        &self,
        answer: &mut Value,
        items: &[BulkLine],
        req: &BulkRequest<'_>,
        body: &Bytes,
        chosen: impl Fn(usize) -> bool,
    ) {
        let Some(answered) = answer.get("items").and_then(Value::as_array) else { return };
        let mut acked = vec![];
        let mut slots = vec![];
        for (n, (item, meta)) in answered.iter().zip(items).enumerate().filter(|(n, _)| chosen(*n)) {
            let Some((_, result)) = item.as_object().and_then(|o| o.iter().next()) else { continue };
            let status = result.get("status").and_then(Value::as_u64).unwrap_or(0) as u16;
            let named = meta.index.clone().or_else(|| req.index.clone()).unwrap_or_default();
            let routing = match (
                meta.routing.clone().or_else(|| req.routing.clone()),
                result.get("_index").and_then(Value::as_str),
            ) {
                (Some(r), _) => Some(r),
                (None, Some(concrete)) if (200..300).contains(&status) || status == 404 => {
                    self.alias_routing(&named, concrete, req.client_headers).await
                }
                (None, _) => None,
            };
            if let Some(mut a) = Acked::from_answer(result, status, meta.action == "delete", routing) {
                let whole = matches!(meta.action.as_str(), "index" | "create") && !meta.pipeline && !req.pipeline;
                if whole && self.stores_as_sent(&a.index, req.client_headers).await {
                    a.sent = meta.doc.as_ref().and_then(|d| whole_document(&body[d.clone()]));
                }
                acked.push(a);
                slots.push(n);
            }
        }
        let failed = self.publish_each(&acked, req.client_headers).await;
        if let Some(list) = answer.get_mut("items").and_then(Value::as_array_mut) {
            for (k, why) in failed {
                let n = slots[k];
                let action = items[n].action.clone();
                let a = &acked[k];
                list[n] = json!({ action: {
                    "_index": a.index, "_id": a.id, "status": 503,
                    "error": { "type": "indexferry_publish_exception", "reason": why },
                }});
            }
        }
    }

    /// Sends a write, and sends it again while a write block or a full queue refuses it,
    /// for up to `hold`.
    async fn send_held(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(Answer, Ticket<'_>), Response<Body>> {
        let mut backoff = hold_backoff(self.cfg.hold);
        let mut held = false;
        loop {
            let ticket = self.inflight.take();
            let answer = self.send(method, path_and_query, headers, body.clone()).await?;
            if !refused_for_now(answer.status.as_u16(), &answer.body) {
                return Ok((answer, ticket));
            }
            // Not taken: nothing of it for a drain to wait for.
            drop(ticket);
            // A block that stays: the switch of a cross-cluster migration, maybe.
            if self.blocked_write_switched(headers).await {
                continue;
            }
            let Some(d) = backoff.next_delay() else {
                // Refused past the hold: the cluster's answer goes back, nothing was taken.
                return Ok((answer, self.inflight.take()));
            };
            if !std::mem::replace(&mut held, true) {
                self.counters.held.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(d).await;
        }
    }

    pub(super) async fn send(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Answer, Response<Body>> {
        let up = self.upstream();
        let resp = up
            .client
            .request(method.clone(), up.url(path_and_query))
            .headers(up.headers(headers.clone()))
            .body(body)
            .send()
            .await
            .map_err(|e| upstream_unreachable(&e))?;
        let status = resp.status();
        let mut headers = resp.headers().clone();
        for h in [http::header::CONTENT_LENGTH, http::header::CONTENT_ENCODING, http::header::TRANSFER_ENCODING] {
            headers.remove(h);
        }
        let body = resp.bytes().await.map_err(|e| upstream_unreachable(&e))?;
        Ok(Answer { status, headers, body })
    }

    /// Sends again, for up to `hold`, the items of a bulk that a write block or a full queue
    /// refused, and puts their new answers in their places; with the tickets of the rounds
    /// the cluster took something of, for the caller to give back once it has published.
    async fn hold_items(
        &self,
        mut answer: Value,
        items: &[BulkLine],
        body: &Bytes,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Result<(Value, Vec<Ticket<'_>>), Response<Body>> {
        let mut backoff = hold_backoff(self.cfg.hold);
        let mut held = false;
        let mut tickets = vec![];
        loop {
            let refused = refused_items(&answer);
            let again: Vec<usize> = (0..refused.len()).filter(|&n| refused[n]).collect();
            if again.is_empty() || refused.len() != items.len() {
                return Ok((answer, tickets));
            }
            let Some(d) = backoff.next_delay() else { return Ok((answer, tickets)) };
            if !std::mem::replace(&mut held, true) {
                self.counters.held.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(d).await;
            self.blocked_write_switched(headers).await;
            let mut subset = Vec::new();
            for &n in &again {
                subset.extend_from_slice(&body[items[n].lines.clone()]);
            }
            let ticket = self.inflight.take();
            let resent = self.send(method, path_and_query, headers, Bytes::from(subset)).await?;
            let status = resent.status;
            let Ok(resent) = serde_json::from_slice::<Value>(&resent.body) else { return Ok((answer, tickets)) };
            let Some(new_items) = resent.get("items").and_then(Value::as_array).filter(|_| status.is_success()) else {
                continue;
            };
            if new_items.len() != again.len() {
                return Ok((answer, tickets));
            }
            // Kept until the caller publishes, if the cluster took any of this round.
            if refused_items(&resent).iter().any(|r| !r) {
                tickets.push(ticket);
            }
            if let Some(list) = answer.get_mut("items").and_then(Value::as_array_mut) {
                for (&n, item) in again.iter().zip(new_items) {
                    list[n] = item.clone();
                }
            }
        }
    }

    /// Publishes the events of acknowledged writes: all or none is what the caller tells
    /// the client.
    async fn publish(&self, acked: &[Acked], headers: &HeaderMap) -> Result<(), String> {
        match self.publish_each(acked, headers).await.into_iter().next() {
            Some((_, why)) => Err(why),
            None => Ok(()),
        }
    }

    /// Reads back the written documents and publishes one event for each still there (and
    /// one for each delete); the writes whose event is not published, with why.
    async fn publish_each(&self, acked: &[Acked], headers: &HeaderMap) -> Vec<(usize, String)> {
        if acked.is_empty() {
            return vec![];
        }
        let written: Vec<usize> = (0..acked.len()).filter(|&k| !acked[k].delete && acked[k].sent.is_none()).collect();
        let stored = match self.read_back(written.iter().map(|&k| &acked[k]), headers).await {
            Ok(s) => s,
            Err(why) => {
                let why = format!(
                    "the write was acknowledged but the document could not be read back for its change event ({why}); \
                     retry the write"
                );
                self.counters.unpublished.fetch_add(acked.len() as u64, Ordering::Relaxed);
                self.gap_of(acked.iter());
                return (0..acked.len()).map(|k| (k, why.clone())).collect();
            }
        };
        let mut stored = stored.into_iter();
        let mut events = vec![];
        for (k, a) in acked.iter().enumerate() {
            let event = match (a.delete, &a.sent) {
                (true, _) => Some(event(Op::Delete, a.index.clone(), a.id.clone(), a.routing.clone(), None, a)),
                // The version the cluster gave this very document.
                (false, Some(sent)) => {
                    Some(event(Op::Index, a.index.clone(), a.id.clone(), a.routing.clone(), Some(sent.clone()), a))
                }
                // Not found: deleted since, by a write whose own event says so.
                (false, None) => stored.next().flatten().map(|s| {
                    let at = Acked {
                        delete: false,
                        index: s.index.clone(),
                        id: s.id.clone(),
                        routing: None,
                        version: s.version.unwrap_or(a.version),
                        seq_no: s.seq_no.unwrap_or(a.seq_no),
                        primary_term: s.primary_term.unwrap_or(a.primary_term),
                        sent: None,
                    };
                    event(Op::Index, s.index, s.id, s.routing.or_else(|| a.routing.clone()), s.source, &at)
                }),
            };
            if let Some(e) = event {
                events.push((k, e));
            }
        }
        let outcomes = self.publisher.publish_all(events.iter().map(|(_, e)| e)).await;
        let mut failed = vec![];
        for ((k, _), outcome) in events.iter().zip(outcomes) {
            match outcome {
                Ok(()) => {
                    self.counters.events.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => failed.push((
                    *k,
                    format!(
                        "the document was written but its change event could not be published ({e}); retry the write"
                    ),
                )),
            }
        }
        if let Some((_, why)) = failed.first() {
            self.publish_failed(failed.len() as u64, why);
            self.gap_of(failed.iter().map(|(k, _)| &acked[*k]));
        }
        failed
    }

    /// Acknowledged writes whose events are not published: a gap notice names them.
    fn gap_of<'a>(&self, acked: impl Iterator<Item = &'a Acked>) {
        let mut g = GapNotice::new(&self.cfg.name, "unpublished writes", chrono::Utc::now());
        g.docs =
            acked.map(|a| GapDoc { index: a.index.clone(), id: a.id.clone(), routing: a.routing.clone() }).collect();
        self.gap(g);
    }

    /// The documents as the cluster holds them now, in order; None for one not found.
    async fn read_back<'a>(
        &self,
        acked: impl Iterator<Item = &'a Acked>,
        headers: &HeaderMap,
    ) -> Result<Vec<Option<Stored>>, String> {
        let docs: Vec<Value> = acked
            .map(|a| {
                let mut d = json!({ "_index": a.index, "_id": a.id });
                if let Some(r) = &a.routing {
                    d["routing"] = json!(r);
                }
                d
            })
            .collect();
        if docs.is_empty() {
            return Ok(vec![]);
        }
        let wanted = docs.len();
        let body = Bytes::from(json!({ "docs": docs }).to_string());
        let Answer { status, body: bytes, .. } = self
            .send(&Method::POST, "/_mget?realtime=true", &credentials(headers), body)
            .await
            .map_err(|_| "the cluster cannot be reached".to_owned())?;
        if !status.is_success() {
            return Err(format!(
                "_mget answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ));
        }
        #[derive(Deserialize)]
        struct Docs {
            docs: Vec<Stored>,
        }
        let docs: Docs = serde_json::from_slice(&bytes).map_err(|e| format!("unexpected _mget answer: {e}"))?;
        if docs.docs.len() != wanted {
            return Err(format!("_mget answered {} documents for {wanted}", docs.docs.len()));
        }
        Ok(docs.docs.into_iter().map(|d| d.found.then_some(d)).collect())
    }

    /// The routing an alias applies to writes into `concrete` (its `index_routing`), when
    /// `name` is an alias; read once per [`super::ALIAS_TTL`].
    async fn alias_routing(&self, name: &str, concrete: &str, headers: &HeaderMap) -> Option<String> {
        if name == concrete || name.is_empty() {
            return None;
        }
        let key = format!("{name}\u{0}{concrete}");
        if let Some((routing, at)) = self.alias_routing.lock().ok()?.get(&key) {
            if at.elapsed() < super::ALIAS_TTL {
                return routing.clone();
            }
        }
        let path = format!("/{}/_alias/{}", encode(concrete), encode(name));
        let routing = match self.send(&Method::GET, &path, &credentials(headers), Bytes::new()).await {
            Ok(a) if a.status.is_success() => serde_json::from_slice::<Value>(&a.body).ok().and_then(|v| {
                let a = v.get(concrete)?.get("aliases")?.get(name)?;
                a.get("index_routing").or_else(|| a.get("routing")).and_then(Value::as_str).map(str::to_owned)
            }),
            _ => None,
        };
        if let Ok(mut cache) = self.alias_routing.lock() {
            cache.insert(key, (routing.clone(), Instant::now()));
        }
        routing
    }
}

fn event(
    op: Op,
    index: String,
    id: String,
    routing: Option<String>,
    source: Option<Box<RawValue>>,
    a: &Acked,
) -> ChangeEvent {
    ChangeEvent {
        schema: SCHEMA_V1.to_owned(),
        op,
        index,
        id,
        seq_no: a.seq_no,
        primary_term: a.primary_term,
        version: a.version,
        routing,
        source,
        ts: Utc::now(),
    }
}

/// A bulk to send: where, with which headers, and the defaults its items take.
pub(super) struct BulkRequest<'a> {
    pub method: &'a Method,
    pub path_and_query: &'a str,
    /// The headers sent on (`forwarded_write`).
    pub headers: &'a HeaderMap,
    /// The client's own, for the proxy's reads (its credentials).
    pub client_headers: &'a HeaderMap,
    /// The index the path names, the default of the items.
    pub index: Option<String>,
    /// The path's `routing`, the default of the items.
    pub routing: Option<String>,
    /// The path names an ingest pipeline (`?pipeline=`).
    pub pipeline: bool,
}

/// What the cluster answered a request of the proxy's.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    /// Its headers but the length and encoding (`X-Elastic-Product` and the deprecation
    /// warnings go back to the client: the Elasticsearch clients check the first).
    headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Answer {
    pub(super) fn unchanged(self) -> Response<Body> {
        let mut resp = bytes_response(self.status, self.body);
        resp.headers_mut().extend(self.headers);
        resp
    }

    /// The client's answer: this one's status and headers, with `v` cut to the client's
    /// `filter_path`.
    fn respond(&self, v: Value, filter: Option<&FilterPath>) -> Response<Body> {
        let v = match filter {
            Some(f) => f.apply(v),
            None => v,
        };
        let mut resp = json_response(self.status, &v);
        resp.headers_mut().extend(self.headers.clone());
        resp
    }
}

fn join(path: &str, query: &str) -> String {
    match query.is_empty() {
        true => path.to_owned(),
        false => format!("{path}?{query}"),
    }
}

pub(super) fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Short first steps: a rollover's block lasts well under a second.
fn hold_backoff(hold: Duration) -> Backoff {
    Backoff::new(Duration::from_millis(20), Duration::from_millis(250), Some(hold))
}

/// A write block (a rollover's pause) or a full queue: worth sending again shortly.
/// For each item of a bulk answer: refused by a write block or a full queue (to hold).
fn refused_items(answer: &Value) -> Vec<bool> {
    let list = answer.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    list.iter()
        .map(|i| {
            let r = i.as_object().and_then(|o| o.values().next());
            let status = r.and_then(|r| r.get("status")).and_then(Value::as_u64).unwrap_or(0) as u16;
            let kind = r.and_then(|r| r.pointer("/error/type")).and_then(Value::as_str);
            status == 429 || (status == 403 && kind == Some("cluster_block_exception"))
        })
        .collect()
}

fn refused_for_now(status: u16, body: &[u8]) -> bool {
    match status {
        429 => true,
        403 => serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.pointer("/error/type").and_then(Value::as_str).map(|t| t == "cluster_block_exception"))
            .unwrap_or(false),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_path_is_taken_out_of_the_query_and_routing_read() {
        let (q, f, r) =
            split_query(Some("refresh=true&filter_path=items.*._id&routing=a%2Bb&version_type=external_gte"));
        assert_eq!(q, "refresh=true&routing=a%2Bb&version_type=external_gte");
        assert!(f.is_some());
        assert_eq!(r.as_deref(), Some("a+b"));
        assert_eq!(split_query(None).0, "");
    }

    #[test]
    fn only_acknowledged_changes_make_events() {
        let ok =
            json!({ "_index": "i", "_id": "1", "_version": 3, "_seq_no": 7, "_primary_term": 1, "result": "updated" });
        let a = Acked::from_answer(&ok, 200, false, Some("r".into())).unwrap();
        assert_eq!((a.version, a.seq_no, a.routing.as_deref()), (3, 7, Some("r")));
        let noop =
            json!({ "_index": "i", "_id": "1", "_version": 3, "_seq_no": 7, "_primary_term": 1, "result": "noop" });
        assert!(Acked::from_answer(&noop, 200, false, None).is_none());
        let missing = json!({ "_index": "i", "_id": "1", "_version": 1, "_seq_no": 8, "_primary_term": 1, "result": "not_found" });
        assert!(Acked::from_answer(&missing, 404, true, None).is_some());
        assert!(Acked::from_answer(&missing, 404, false, None).is_none());
        assert!(Acked::from_answer(&json!({ "error": {} }), 409, false, None).is_none());
    }

    #[test]
    fn blocks_and_full_queues_are_held_other_refusals_are_not() {
        assert!(refused_for_now(429, b"{}"));
        assert!(refused_for_now(403, br#"{"error":{"type":"cluster_block_exception"}}"#));
        assert!(!refused_for_now(403, br#"{"error":{"type":"security_exception"}}"#));
        assert!(!refused_for_now(409, b"{}"));
    }
}
