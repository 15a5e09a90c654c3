//! `_bulk`: building NDJSON bodies of externally versioned writes, and judging the answer
//! item by item from a typed model.

use crate::retry::{classify_item, Verdict};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use std::io::Write;

/// One write to the target, with the external version that orders it (see
/// `config::VersionRule`).
#[derive(Debug, Clone, Copy)]
pub struct Action<'a> {
    pub index: &'a str,
    pub id: &'a str,
    pub version: u64,
    pub version_type: VersionType,
    pub routing: Option<&'a str>,
    /// The document for an index action; `None` deletes.
    pub source: Option<&'a str>,
}

/// How the target compares an action's version with the one it holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VersionType {
    /// Applied only above the version held: snapshot copies and replayed events, so a late
    /// or repeated write never replaces what the target has.
    #[default]
    External,
    /// Applied at the version held too: reconcile's repairs, which read the source as it is
    /// now and so may replace a body the target holds under the same version.
    ExternalGte,
}

impl VersionType {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionType::External => "external",
            VersionType::ExternalGte => "external_gte",
        }
    }
}

/// Accumulates actions into one NDJSON body.
#[derive(Debug, Default)]
pub struct BodyBuilder {
    buf: BytesMut,
    items: usize,
}

impl BodyBuilder {
    pub fn with_capacity(bytes: usize) -> Self {
        BodyBuilder { buf: BytesMut::with_capacity(bytes), items: 0 }
    }

    pub fn push(&mut self, a: &Action<'_>) {
        let op = if a.source.is_some() { "index" } else { "delete" };
        let mut w = (&mut self.buf).writer();
        // Index names and ids are JSON strings: serde_json escapes them.
        let _ = write!(w, r#"{{"{op}":{{"_index":"#);
        let _ = serde_json::to_writer(&mut w, a.index);
        let _ = write!(w, r#","_id":"#);
        let _ = serde_json::to_writer(&mut w, a.id);
        let _ = write!(w, r#","version":{},"version_type":"{}""#, a.version, a.version_type.as_str());
        if let Some(r) = a.routing {
            let _ = write!(w, r#","routing":"#);
            let _ = serde_json::to_writer(&mut w, r);
        }
        let _ = w.write_all(b"}}\n");
        if let Some(source) = a.source {
            // The document goes verbatim; a raw JSON value holds no newline that matters,
            // but pretty-printed sources may, and NDJSON needs one line.
            if source.contains('\n') {
                for chunk in source.split(['\n', '\r']) {
                    self.buf.put_slice(chunk.as_bytes());
                }
            } else {
                self.buf.put_slice(source.as_bytes());
            }
            self.buf.put_u8(b'\n');
        }
        self.items += 1;
    }

    pub fn len(&self) -> usize {
        self.items
    }

    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

#[derive(Debug, Deserialize)]
pub struct BulkResponse {
    #[serde(default)]
    pub took: u64,
    pub errors: bool,
    pub items: Vec<BulkItem>,
}

/// One item of the answer, keyed by its action.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BulkItem {
    Index(ItemResult),
    Create(ItemResult),
    Update(ItemResult),
    Delete(ItemResult),
}

impl BulkItem {
    pub fn result(&self) -> &ItemResult {
        match self {
            BulkItem::Index(r) | BulkItem::Create(r) | BulkItem::Update(r) | BulkItem::Delete(r) => r,
        }
    }

    pub fn is_delete(&self) -> bool {
        matches!(self, BulkItem::Delete(_))
    }

    /// What the item's status means for convergence.
    pub fn outcome(&self) -> Outcome {
        let r = self.result();
        match r.status {
            200 | 201 => Outcome::Applied,
            // A delete of a document the target never had still writes the tombstone that
            // keeps an older copy from arriving later.
            404 if self.is_delete() && r.error.is_none() => Outcome::Applied,
            409 => Outcome::Stale,
            status => {
                let reason = r.error.as_ref().map(ItemError::describe).unwrap_or_else(|| format!("status {status}"));
                match classify_item(status, r.error.as_ref().map(|e| e.kind.as_str())) {
                    Verdict::Retry => Outcome::Retry(reason),
                    Verdict::Final => Outcome::Rejected(reason),
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ItemResult {
    #[serde(rename = "_index", default)]
    pub index: String,
    #[serde(rename = "_id", default)]
    pub id: Option<String>,
    pub status: u16,
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub error: Option<ItemError>,
    #[serde(rename = "_seq_no", default)]
    pub seq_no: Option<u64>,
    #[serde(rename = "_primary_term", default)]
    pub primary_term: Option<u64>,
    #[serde(rename = "_version", default)]
    pub version: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct ItemError {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub caused_by: Option<Box<ItemError>>,
}

impl ItemError {
    pub fn describe(&self) -> String {
        let mut s = self.kind.clone();
        if let Some(r) = &self.reason {
            s.push_str(": ");
            s.push_str(r);
        }
        if let Some(c) = &self.caused_by {
            s.push_str(" (caused by ");
            s.push_str(&c.describe());
            s.push(')');
        }
        s
    }
}

/// How one write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target now holds this version (or its tombstone).
    Applied,
    /// The target already holds this version or a newer one: expected, counted, not retried.
    Stale,
    /// Transient (429, 5xx, a write block, the index closed or missing): send again after a backoff.
    Retry(String),
    /// The target refuses this document for good (mapping conflict...): dead-letter it.
    Rejected(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_ndjson_with_external_versions() {
        let mut b = BodyBuilder::default();
        b.push(&Action {
            index: "t",
            id: "a\"1",
            version: 8,
            version_type: VersionType::External,
            routing: Some("r"),
            source: Some("{\"x\":\n1}"),
        });
        b.push(&Action {
            index: "t",
            id: "b",
            version: 3,
            version_type: VersionType::ExternalGte,
            routing: None,
            source: None,
        });
        assert_eq!(b.len(), 2);
        let text = String::from_utf8(b.finish().to_vec()).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let head: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(head["index"]["_id"], "a\"1");
        assert_eq!(head["index"]["version"], 8);
        assert_eq!(head["index"]["version_type"], "external");
        assert_eq!(head["index"]["routing"], "r");
        assert_eq!(lines[1], "{\"x\":1}");
        let del: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(del["delete"]["version"], 3);
        assert_eq!(del["delete"]["version_type"], "external_gte");
        assert!(text.ends_with('\n'));
    }

    /// An answer as Elasticsearch 8.19 gives it, one item of each kind.
    const CANNED: &str = r#"{"took":30,"errors":true,"items":[
      {"index":{"_index":"t","_id":"1","_version":5,"result":"created","_shards":{"total":1,"successful":1,"failed":0},"_seq_no":0,"_primary_term":1,"status":201}},
      {"index":{"_index":"t","_id":"2","status":409,"error":{"type":"version_conflict_engine_exception","reason":"[2]: version conflict, current version [9] is higher or equal to the one provided [4]","index":"t","shard":"0"}}},
      {"delete":{"_index":"t","_id":"3","_version":7,"result":"not_found","_seq_no":2,"_primary_term":1,"status":404}},
      {"index":{"_index":"t","_id":"4","status":400,"error":{"type":"document_parsing_exception","reason":"[1:10] failed to parse field [n] of type [long]","caused_by":{"type":"illegal_argument_exception","reason":"For input string: \"x\""}}}},
      {"index":{"_index":"t","_id":"5","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution"}}},
      {"index":{"_index":"t","_id":"6","status":403,"error":{"type":"cluster_block_exception","reason":"index [t] blocked by: [FORBIDDEN/8/index write (api)];"}}},
      {"delete":{"_index":"t","_id":"7","status":404,"error":{"type":"index_not_found_exception","reason":"no such index [t]"}}},
      {"index":{"_index":"t","_id":"8","status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}},
      {"delete":{"_index":"t","_id":"9","_version":3,"result":"deleted","status":200}},
      {"index":{"_index":"t","_id":"10","status":400,"error":{"type":"index_closed_exception","reason":"closed","index_uuid":"k5XOWM8zT_KtKSxOw7nOFA","index":"t"}}},
      {"delete":{"_index":"t","_id":"11","status":400,"error":{"type":"index_closed_exception","reason":"closed","index":"t"}}}
    ]}"#;

    /// Elasticsearch 7.17 names the type in every item.
    #[test]
    fn elasticsearch_7_items_carry_a_type() {
        let answer = r#"{"took":3,"errors":true,"items":[
          {"index":{"_index":"t","_type":"_doc","_id":"1","_version":5,"result":"created","_shards":{"total":1,"successful":1,"failed":0},"_seq_no":0,"_primary_term":1,"status":201}},
          {"delete":{"_index":"t","_type":"_doc","_id":"2","status":409,"error":{"type":"version_conflict_engine_exception","reason":"[2]: version conflict","index_uuid":"x","shard":"0","index":"t"}}}
        ]}"#;
        let r: BulkResponse = serde_json::from_str(answer).unwrap();
        assert_eq!(r.items[0].outcome(), Outcome::Applied);
        assert_eq!(r.items[0].result().seq_no, Some(0));
        assert_eq!(r.items[1].outcome(), Outcome::Stale);
    }

    #[test]
    fn canned_items_are_judged_one_by_one() {
        let r: BulkResponse = serde_json::from_str(CANNED).unwrap();
        assert!(r.errors);
        let outcomes: Vec<_> = r.items.iter().map(|i| i.outcome()).collect();
        assert_eq!(outcomes[0], Outcome::Applied);
        assert_eq!(outcomes[1], Outcome::Stale);
        assert_eq!(outcomes[2], Outcome::Applied, "delete of a missing doc writes a tombstone");
        assert!(
            matches!(&outcomes[3], Outcome::Rejected(r) if r.contains("document_parsing_exception") && r.contains("For input string"))
        );
        assert!(matches!(&outcomes[4], Outcome::Retry(_)));
        assert!(matches!(&outcomes[5], Outcome::Retry(r) if r.contains("cluster_block_exception")));
        // Refused because of the index, not the document: retried, never dead-lettered.
        assert!(matches!(&outcomes[6], Outcome::Retry(r) if r.contains("index_not_found")));
        assert!(matches!(&outcomes[7], Outcome::Retry(_)));
        assert_eq!(outcomes[8], Outcome::Applied);
        assert!(matches!(&outcomes[9], Outcome::Retry(r) if r.contains("index_closed_exception")));
        assert!(matches!(&outcomes[10], Outcome::Retry(r) if r.contains("index_closed_exception")));
        assert_eq!(r.items[3].result().id.as_deref(), Some("4"));
    }
}
