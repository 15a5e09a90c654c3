//! The indexferry change event (`indexferry.change.v1`).
//!
//! One event is published per write the source cluster acknowledged, keyed by document id.
//! `json/change-event.v1.schema.json` is the reference for producers in other languages;
//! [`decode`] enforces the same rules on bytes read from Kafka, so anything it accepts the
//! schema accepts too (the crate's tests check both on the same examples).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod gap;
pub mod switch;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The value of the `schema` field of every version 1 event.
pub const SCHEMA_V1: &str = "indexferry.change.v1";

/// The JSON Schema of version 1 events.
pub const JSON_SCHEMA_V1: &str = include_str!("../json/change-event.v1.schema.json");

/// What the write did to the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Index,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Index => "index",
            Op::Delete => "delete",
        }
    }
}

/// A change event as it travels on the topic.
///
/// `source` stays raw JSON: it is forwarded byte for byte, so the target stores exactly the
/// `_source` the source cluster stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeEvent {
    pub schema: String,
    pub op: Op,
    pub index: String,
    pub id: String,
    pub seq_no: u64,
    pub primary_term: u64,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Box<RawValue>>,
    pub ts: DateTime<Utc>,
}

impl PartialEq for ChangeEvent {
    fn eq(&self, other: &Self) -> bool {
        self.schema == other.schema
            && self.op == other.op
            && self.index == other.index
            && self.id == other.id
            && self.seq_no == other.seq_no
            && self.primary_term == other.primary_term
            && self.version == other.version
            && self.routing == other.routing
            && self.source.as_ref().map(|s| s.get()) == other.source.as_ref().map(|s| s.get())
            && self.ts == other.ts
    }
}

/// Bits of the external version that hold `_seq_no + 1`; the primary term takes the 16 above
/// them. 2^47 operations is 44 years of one shard at 100,000 writes a second.
pub const SEQ_NO_BITS: u32 = 47;
/// The largest `_seq_no` an external version can carry.
pub const MAX_SEQ_NO: u64 = (1 << SEQ_NO_BITS) - 2;
/// The largest primary term an external version can carry (a shard's term grows by one per
/// primary promotion).
pub const MAX_PRIMARY_TERM: u64 = (1 << (63 - SEQ_NO_BITS)) - 1;

/// The external version the target is written with: `primary_term`, then `_seq_no + 1`, in
/// one integer that orders as the pair does.
///
/// `_seq_no` grows with every change to a document (delete-then-recreate included, unlike
/// `_version`), so it alone orders acknowledged operations. The term is there for an
/// operation that was never acknowledged: a search may see it on the old primary, and if that
/// primary fails before the operation reached the replica promoted in its place, the
/// operation is rolled back and the new primary (a higher term) reuses its `_seq_no`. Ordered
/// by term first, the new operation beats the copy of the rolled-back one. Acknowledged
/// operations keep their order: a later one never has a lower term. Never 0; `None` past
/// [`MAX_SEQ_NO`] or [`MAX_PRIMARY_TERM`], where the order could not be kept.
pub fn external_version(primary_term: u64, seq_no: u64) -> Option<u64> {
    (primary_term <= MAX_PRIMARY_TERM && seq_no <= MAX_SEQ_NO).then_some((primary_term << SEQ_NO_BITS) | (seq_no + 1))
}

impl ChangeEvent {
    /// The external version the target is written with (see [`external_version`]). Events
    /// that [`decode`] accepted are within its range.
    pub fn external_version(&self) -> u64 {
        external_version(self.primary_term, self.seq_no).unwrap_or(u64::MAX)
    }

    /// Serialises the event; infallible for events built by this crate.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings, integers and already-valid raw JSON cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Why bytes read from the topic are not a valid event. The message is the reason recorded
/// in the dead-letter topic, so it names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("event is empty")]
    Empty,
    #[error("event is not valid JSON: {0}")]
    NotJson(String),
    #[error("event is not a JSON object")]
    NotObject,
    #[error("unknown schema {0:?} (expected {SCHEMA_V1:?})")]
    UnknownSchema(String),
    #[error("event does not match {SCHEMA_V1}: {0}")]
    Invalid(String),
    #[error("field `source` is required when op is \"index\"")]
    MissingSource,
    #[error("field `source` must be absent when op is \"delete\"")]
    UnexpectedSource,
    #[error("field `source` must be a JSON object")]
    SourceNotObject,
    #[error("field `{0}` must not be empty")]
    EmptyField(&'static str),
    #[error("field `primary_term` must be at least 1")]
    PrimaryTermZero,
    #[error("Kafka key {key:?} does not equal the event id {id:?}")]
    KeyMismatch { key: String, id: String },
    #[error("Kafka key is not UTF-8")]
    KeyNotUtf8,
}

/// Decodes and validates one message. `key` is the Kafka key; when present it must equal
/// the event's `id` (per-document ordering rests on it).
pub fn decode(key: Option<&[u8]>, payload: &[u8]) -> Result<ChangeEvent, DecodeError> {
    let trimmed = payload.trim_ascii();
    if trimmed.is_empty() {
        return Err(DecodeError::Empty);
    }
    // A first cheap look tells "not JSON" and "not an object" apart from schema errors.
    match trimmed.first() {
        Some(b'{') => {}
        _ => {
            return match serde_json::from_slice::<serde::de::IgnoredAny>(trimmed) {
                Ok(_) => Err(DecodeError::NotObject),
                Err(e) => Err(DecodeError::NotJson(e.to_string())),
            }
        }
    }
    let mut de = serde_json::Deserializer::from_slice(trimmed);
    let event: ChangeEvent = match serde_path_to_error::deserialize(&mut de) {
        Ok(event) => event,
        Err(e) => {
            let path = e.path().to_string();
            return Err(classify_serde_error(trimmed, &path, e.into_inner()));
        }
    };
    de.end().map_err(|e| DecodeError::NotJson(e.to_string()))?;
    if event.schema != SCHEMA_V1 {
        return Err(DecodeError::UnknownSchema(event.schema));
    }
    if event.index.is_empty() {
        return Err(DecodeError::EmptyField("index"));
    }
    if event.id.is_empty() {
        return Err(DecodeError::EmptyField("id"));
    }
    if event.routing.as_deref() == Some("") {
        return Err(DecodeError::EmptyField("routing"));
    }
    if event.primary_term == 0 {
        return Err(DecodeError::PrimaryTermZero);
    }
    if event.primary_term > MAX_PRIMARY_TERM || event.seq_no > MAX_SEQ_NO {
        return Err(DecodeError::Invalid(format!(
            "`primary_term` must be at most {MAX_PRIMARY_TERM} and `seq_no` at most {MAX_SEQ_NO}, \
             for the external version to keep their order"
        )));
    }
    if event.version == 0 {
        return Err(DecodeError::Invalid("field `version` must be at least 1".into()));
    }
    match (event.op, &event.source) {
        (Op::Index, None) => return Err(DecodeError::MissingSource),
        (Op::Delete, Some(_)) => return Err(DecodeError::UnexpectedSource),
        (Op::Index, Some(source)) if !source.get().trim_start().starts_with('{') => {
            return Err(DecodeError::SourceNotObject)
        }
        _ => {}
    }
    if let Some(key) = key {
        let key = std::str::from_utf8(key).map_err(|_| DecodeError::KeyNotUtf8)?;
        if key != event.id {
            return Err(DecodeError::KeyMismatch { key: key.to_owned(), id: event.id });
        }
    }
    Ok(event)
}

/// Tells a wrong `schema` apart from other mismatches, so that an event of a future version
/// is reported as such rather than as "unknown field".
fn classify_serde_error(payload: &[u8], path: &str, err: serde_json::Error) -> DecodeError {
    if err.is_syntax() || err.is_eof() {
        return DecodeError::NotJson(err.to_string());
    }
    #[derive(Deserialize)]
    struct SchemaOnly {
        schema: Option<serde_json::Value>,
    }
    if let Ok(SchemaOnly { schema: Some(schema) }) = serde_json::from_slice(payload) {
        match schema.as_str() {
            Some(SCHEMA_V1) => {}
            Some(other) => return DecodeError::UnknownSchema(other.to_owned()),
            None => return DecodeError::Invalid("field `schema` must be a string".into()),
        }
    }
    if path.is_empty() || path == "." {
        DecodeError::Invalid(err.to_string())
    } else {
        DecodeError::Invalid(format!("field `{path}`: {err}"))
    }
}

#[cfg(test)]
mod tests;
