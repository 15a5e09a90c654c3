//! The gap notice (`indexferry.gap.v1`): what a capture proxy publishes on the change-event
//! topic when it starts again after dying with writes in flight. Each such write may be in
//! the cluster without its change event. The notice names what the proxy knew of it before
//! forwarding it: the documents it named, and the indices of writes whose ids only the
//! cluster knew (an auto-generated id, a by-query operation).
//!
//! ```json
//! { "schema": "indexferry.gap.v1", "origin": "proxy-0", "request": "POST /_bulk",
//!   "docs": [ { "index": "records", "id": "17", "routing": "u1" } ],
//!   "unnamed": [ "records" ], "at": "2026-01-01T00:00:00Z" }
//! ```
//!
//! The consumer keeps each notice of its migration's indices; reconcile looks at the named
//! documents again whatever the version rule, `status` counts them, and the full pass that
//! rollover runs covers the unnamed ones. A notice is idempotent: one published twice costs
//! a second look, nothing more. `json/gap-notice.v1.schema.json` is its JSON Schema.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The value of the `schema` field of every gap notice.
pub const SCHEMA: &str = "indexferry.gap.v1";

/// The JSON Schema of gap notices.
pub const JSON_SCHEMA: &str = include_str!("../json/gap-notice.v1.schema.json");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapNotice {
    pub schema: String,
    /// The proxy that left the gap (its `--name`).
    pub origin: String,
    /// The request's method and path, without its query or body.
    pub request: String,
    /// The documents the request named, with the index (or alias) it named for each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub docs: Vec<GapDoc>,
    /// Indices (or aliases, or expressions) the request wrote to without naming the ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unnamed: Vec<String>,
    /// When the proxy began the write.
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapDoc {
    pub index: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<String>,
}

impl GapNotice {
    /// A notice of `origin` for a write begun at `at`.
    pub fn new(origin: &str, request: &str, at: DateTime<Utc>) -> GapNotice {
        GapNotice {
            schema: SCHEMA.to_owned(),
            origin: origin.to_owned(),
            request: request.to_owned(),
            docs: vec![],
            unnamed: vec![],
            at,
        }
    }

    /// The Kafka key it is published with: its first named document's id, else its request.
    pub fn key(&self) -> &str {
        self.docs.first().map_or(self.request.as_str(), |d| d.id.as_str())
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Plain strings and a timestamp: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The notice in `payload`, if it is one: `None` for anything else (a change event, or bytes
/// that are neither). Called only on what [`crate::decode`] refused, so that change events
/// pay nothing for it.
pub fn decode(payload: &[u8]) -> Option<GapNotice> {
    let notice: GapNotice = serde_json::from_slice(payload.trim_ascii()).ok()?;
    (notice.schema == SCHEMA && !notice.origin.is_empty()).then_some(notice)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator() -> jsonschema::Validator {
        let schema: serde_json::Value = serde_json::from_str(JSON_SCHEMA).unwrap();
        jsonschema::options().should_validate_formats(true).build(&schema).unwrap()
    }

    #[test]
    fn a_notice_round_trips_and_matches_its_schema() {
        let mut n = GapNotice::new("proxy-0", "POST /_bulk", "2026-01-01T00:00:00Z".parse().unwrap());
        n.docs.push(GapDoc { index: "records".into(), id: "17".into(), routing: Some("u1".into()) });
        n.unnamed.push("records".into());
        let bytes = n.to_json();
        assert!(validator().is_valid(&serde_json::from_slice(&bytes).unwrap()));
        assert_eq!(decode(&bytes), Some(n.clone()));
        assert_eq!(n.key(), "17");
        // A change event, another schema, or junk: not a notice.
        assert!(crate::decode(None, &bytes).is_err());
        let other = String::from_utf8(bytes).unwrap().replace(SCHEMA, "indexferry.change.v1");
        assert_eq!(decode(other.as_bytes()), None);
        assert!(!validator().is_valid(&serde_json::from_str(&other).unwrap()));
        assert_eq!(decode(b"{}"), None);
        assert_eq!(decode(b"not json"), None);
    }

    #[test]
    fn a_notice_without_documents_keys_by_its_request() {
        let mut n = GapNotice::new("p", "POST /records/_doc", Utc::now());
        n.unnamed.push("records".into());
        assert_eq!(n.key(), "POST /records/_doc");
        let json: serde_json::Value = serde_json::from_slice(&n.to_json()).unwrap();
        assert!(json.get("docs").is_none());
        assert!(validator().is_valid(&json));
    }
}
