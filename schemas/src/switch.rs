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
    /// Every alias the source index held at the switch, all moved with it (a pattern's
    /// write alias may have moved to another index since `init`). Absent in a marker
    /// written before they were listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    pub at: DateTime<Utc>,
}

impl SwitchMarker {
    /// Where a write addressed to `name` (an alias, or the source index itself) goes now:
    /// an alias stays the alias; the source index becomes the target index.
    pub fn write_name<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        if !name.is_empty() && (name == self.alias || self.aliases.iter().any(|a| a == name)) {
            Some(name)
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
        // Every alias listed leads on; an empty alias never matches.
        let mut with_aliases = m.clone();
        with_aliases.alias = String::new();
        with_aliases.aliases = vec!["logs-write".into(), "logs-all".into()];
        assert_eq!(with_aliases.write_name("logs-write"), Some("logs-write"));
        assert_eq!(with_aliases.write_name(""), None);
        assert!(SwitchMarker::find(&json!({ "a": { "mappings": {} } }), "records").is_none());
        assert!(same_url("HTTPS://es9:9200/", "https://es9:9200"));
    }
}
