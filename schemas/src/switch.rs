//! The switch marker: what a finished cross-cluster rollover leaves in each source index's
//! mapping `_meta`, under [`KEY`], so that a producer whose writes meet the source's write
//! block can find where the application's alias now lives and follow it there.
//!
//! ```json
//! { "_meta": { "indexferry_switch": {
//!     "migration": "records", "cluster": ["https://es9.example:9200"],
//!     "source": "records-v1", "index": "records-v2", "alias": "records",
//!     "at": "2026-01-01T00:00:00Z" } } }
//! ```
//!
//! `cluster` lists the target cluster's URLs without credentials: a producer matches them
//! against the clusters it was configured for, whose credentials and TLS settings it uses.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The key of the marker in the source mapping's `_meta`.
pub const KEY: &str = "indexferry_switch";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchMarker {
    /// The migration that switched.
    pub migration: String,
    /// The target cluster's URLs, without credentials.
    pub cluster: Vec<String>,
    /// The source index carrying the marker.
    pub source: String,
    /// The target index on the target cluster.
    pub index: String,
    /// The alias, now on the target cluster (same name).
    pub alias: String,
    pub at: DateTime<Utc>,
}

impl SwitchMarker {
    /// Where a write addressed to `name` (the alias, or the source index itself) goes now:
    /// the alias stays the alias; the source index becomes the target index.
    pub fn write_name(&self, name: &str) -> Option<&str> {
        if name == self.alias {
            Some(&self.alias)
        } else if name == self.source {
            Some(&self.index)
        } else {
            None
        }
    }

    /// Finds the marker for writes addressed to `name` in a `GET <name>/_mapping` answer.
    pub fn find(mappings: &serde_json::Value, name: &str) -> Option<SwitchMarker> {
        let indices = mappings.as_object()?;
        indices
            .values()
            .filter_map(|m| serde_json::from_value::<SwitchMarker>(m["mappings"]["_meta"][KEY].clone()).ok())
            .find(|marker| marker.write_name(name).is_some())
    }
}

/// A URL as markers and configurations are compared: no trailing slash, lowercase scheme
/// and host.
pub fn same_url(a: &str, b: &str) -> bool {
    let norm = |u: &str| u.trim().trim_end_matches('/').to_ascii_lowercase();
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_marker_is_found_for_the_alias_or_the_source_index() {
        let answer = json!({
            "other": { "mappings": { "_meta": { "owner": "x" } } },
            "records-v1": { "mappings": { "_meta": { "owner": "x", KEY: {
                "migration": "m", "cluster": ["https://es9:9200"], "source": "records-v1",
                "index": "records-v2", "alias": "records", "at": "2026-01-01T00:00:00Z" } } } },
        });
        let m = SwitchMarker::find(&answer, "records").unwrap();
        assert_eq!(m.write_name("records"), Some("records"));
        assert_eq!(m.write_name("records-v1"), Some("records-v2"));
        assert!(SwitchMarker::find(&answer, "elsewhere").is_none());
        assert!(SwitchMarker::find(&json!({ "a": { "mappings": {} } }), "records").is_none());
        assert!(same_url("HTTPS://es9:9200/", "https://es9:9200"));
    }
}
