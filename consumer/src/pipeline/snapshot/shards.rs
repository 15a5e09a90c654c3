//! Judging a search answer by its shards. An answer that lacks some shard's hits is an
//! error, never a short page: taken as a page, it would move the cursor (`search_after`,
//! scroll) past that shard's documents, and an empty one would end the slice — the
//! snapshot would silently miss documents, and verify would call different indices
//! identical. Searches also send `allow_partial_search_results=false`, so the cluster
//! itself refuses them; this check covers the answers that flag does not reach (scroll
//! continuation pages) and servers that ignore it.

use serde::Deserialize;
use serde_json::Value;

/// `_shards` of a search answer.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Shards {
    pub(crate) total: u32,
    pub(crate) successful: u32,
    #[serde(default)]
    pub(crate) skipped: u32,
    #[serde(default)]
    pub(crate) failed: u32,
    #[serde(default)]
    pub(crate) failures: Vec<ShardFailure>,
}

/// One entry of `_shards.failures` or of an error's `failed_shards`.
#[derive(Debug, Deserialize)]
pub(crate) struct ShardFailure {
    #[serde(default)]
    pub(crate) shard: Option<i64>,
    #[serde(default)]
    pub(crate) index: Option<String>,
    #[serde(default)]
    pub(crate) node: Option<String>,
    #[serde(default)]
    pub(crate) reason: Option<Value>,
}

/// Why an answer cannot be used as a page.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incomplete {
    /// A shard's point-in-time or scroll context is gone: the view has to be opened again.
    ContextLost(String),
    /// Shards failed or did not answer; the message names them.
    Failed(String),
}

impl Shards {
    /// `Ok` when every shard of `index` answered (skipped shards had nothing to give).
    pub(crate) fn check(&self, index: &str) -> Result<(), Incomplete> {
        if self.failed == 0 && self.failures.is_empty() && self.successful + self.skipped >= self.total {
            return Ok(());
        }
        let named = name_failures(index, &self.failures);
        let message = if self.failed == 0 && self.failures.is_empty() {
            format!("the search of {index} answered for {} of {} shards", self.successful + self.skipped, self.total)
        } else {
            format!("the search of {index} failed on {} of {} shards: {named}", self.failed.max(1), self.total)
        };
        if self.failures.iter().any(ShardFailure::is_context_missing) {
            Err(Incomplete::ContextLost(message))
        } else {
            Err(Incomplete::Failed(message))
        }
    }
}

impl ShardFailure {
    fn reason_type(&self) -> Option<&str> {
        self.reason.as_ref().and_then(|r| r.get("type")).and_then(Value::as_str)
    }

    fn is_context_missing(&self) -> bool {
        self.reason_type() == Some("search_context_missing_exception")
    }

    /// "shard 1 of idx on node abc: type: reason"
    fn describe(&self, index: &str) -> String {
        let mut s = match self.shard {
            Some(n) => format!("shard {n}"),
            None => "a shard".to_owned(),
        };
        s.push_str(&format!(" of {}", self.index.as_deref().unwrap_or(index)));
        if let Some(node) = &self.node {
            s.push_str(&format!(" on node {node}"));
        }
        let reason = match &self.reason {
            Some(Value::Object(o)) => {
                let text = o.get("reason").and_then(Value::as_str).unwrap_or_default();
                match (self.reason_type(), text) {
                    (Some(t), "") => t.to_owned(),
                    (Some(t), r) => format!("{t}: {r}"),
                    (None, r) => r.to_owned(),
                }
            }
            Some(Value::String(r)) => r.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        if !reason.is_empty() {
            s.push_str(&format!(": {reason}"));
        }
        s
    }
}

/// The failures, one after the other; "no reason given" when the answer lists none.
fn name_failures(index: &str, failures: &[ShardFailure]) -> String {
    if failures.is_empty() {
        return "no reason given".to_owned();
    }
    failures.iter().map(|f| f.describe(index)).collect::<Vec<_>>().join("; ")
}

/// What a refused search (`search_phase_execution_exception`) says about its shards: the
/// `failed_shards` named, else the innermost `caused_by` reason (Elasticsearch and
/// OpenSearch put "Search rejected due to missing shards [[index][1]]" there).
pub(crate) fn shards_of_refusal(index: &str, body: &[u8]) -> Option<String> {
    let mut error = serde_json::from_slice::<Value>(body).ok()?.get("error")?.clone();
    let mut cause = None;
    loop {
        let failed: Vec<ShardFailure> =
            error.get("failed_shards").and_then(|f| serde_json::from_value(f.clone()).ok()).unwrap_or_default();
        if !failed.is_empty() {
            return Some(name_failures(index, &failed));
        }
        if let Some(r) = error.get("reason").and_then(Value::as_str).filter(|r| !r.is_empty()) {
            cause = Some(r.to_owned());
        }
        match error.get("caused_by") {
            Some(next) if next.is_object() => error = next.clone(),
            _ => break,
        }
    }
    cause.filter(|c| c.contains("shard"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(json: &str) -> Shards {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn every_shard_answering_is_a_page() {
        assert_eq!(shards(r#"{"total":2,"successful":2,"skipped":0,"failed":0}"#).check("i"), Ok(()));
        // Skipped shards (nothing could match there) count as answered.
        assert_eq!(shards(r#"{"total":3,"successful":2,"skipped":1,"failed":0}"#).check("i"), Ok(()));
    }

    #[test]
    fn a_failed_shard_is_named_with_its_node_and_reason() {
        let s = shards(
            r#"{"total":2,"successful":1,"skipped":0,"failed":1,"failures":[{"shard":1,"index":"src-1",
            "node":"UFi1XpEH","reason":{"type":"no_shard_available_action_exception","reason":"[es8][1] unavailable"}}]}"#,
        );
        assert_eq!(
            s.check("src-1"),
            Err(Incomplete::Failed(
                "the search of src-1 failed on 1 of 2 shards: shard 1 of src-1 on node UFi1XpEH: \
                 no_shard_available_action_exception: [es8][1] unavailable"
                    .into()
            ))
        );
    }

    #[test]
    fn a_failed_count_without_failures_is_still_an_error() {
        let s = shards(r#"{"total":2,"successful":1,"skipped":0,"failed":1}"#);
        assert_eq!(
            s.check("src"),
            Err(Incomplete::Failed("the search of src failed on 1 of 2 shards: no reason given".into()))
        );
    }

    #[test]
    fn shards_missing_from_the_count_are_an_error() {
        let s = shards(r#"{"total":2,"successful":1,"skipped":0,"failed":0}"#);
        assert_eq!(s.check("src"), Err(Incomplete::Failed("the search of src answered for 1 of 2 shards".into())));
    }

    #[test]
    fn a_lost_search_context_on_one_shard_reopens_the_view() {
        let s = shards(
            r#"{"total":2,"successful":1,"skipped":0,"failed":1,"failures":[{"shard":1,"index":"src",
            "node":"n1","reason":{"type":"search_context_missing_exception","reason":"No search context found for id [2]"}}]}"#,
        );
        assert!(matches!(s.check("src"), Err(Incomplete::ContextLost(m)) if m.contains("shard 1 of src on node n1")));
    }

    #[test]
    fn failed_shards_are_read_from_a_refused_search() {
        let body = br#"{"error":{"root_cause":[{"type":"no_shard_available_action_exception","reason":null}],
            "type":"search_phase_execution_exception","reason":"all shards failed","phase":"query","grouped":true,
            "failed_shards":[{"shard":0,"index":"src","node":null,"reason":{"type":"no_shard_available_action_exception","reason":null}}]},
            "status":503}"#;
        assert_eq!(
            shards_of_refusal("src", body).as_deref(),
            Some("shard 0 of src: no_shard_available_action_exception")
        );
        assert_eq!(shards_of_refusal("src", br#"{"error":{"type":"x","reason":"y"}}"#), None);
        assert_eq!(shards_of_refusal("src", b"<html>"), None);
    }

    #[test]
    fn missing_shards_are_read_from_the_cause_of_a_refusal() {
        // OpenSearch 2.19, a primary unassigned, allow_partial_search_results=false.
        let body = br#"{"error":{"root_cause":[],"type":"search_phase_execution_exception","reason":"","phase":"can_match",
            "grouped":true,"failed_shards":[],"caused_by":{"type":"search_phase_execution_exception",
            "reason":"Search rejected due to missing shards [[src][1]]. Consider using `allow_partial_search_results` setting to bypass this error.",
            "phase":"can_match","grouped":true,"failed_shards":[]}},"status":503}"#;
        let named = shards_of_refusal("src", body).unwrap_or_default();
        assert!(named.starts_with("Search rejected due to missing shards [[src][1]]"), "{named}");
    }
}
