//! The load's `--versioning external_gte`: writes versioned as an application that sets its
//! own versions does (Invenio's record indexer: `version_type=external_gte` with the record's
//! revision), so that a migration can be tried against one.
//!
//! Versions are milliseconds since the epoch, unique across the load; now and then an
//! update writes the id's last version again with another body (a record indexed again at
//! the same revision), which `external_gte` accepts. Writes of one id may be in flight at
//! once, and a write overtaken by a newer one of the same id is refused with 409: that is
//! the application's versioning at work, counted as superseded. A refusal of the id's newest
//! version has no such excuse: it is a failed write.

use indexferry_producer::Versioning;
use std::collections::HashMap;
use std::sync::Mutex;

/// How the load versions its writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Mode {
    /// The cluster's own versions.
    #[default]
    Internal,
    /// `external_gte`, milliseconds since the epoch.
    ExternalGte,
}

/// The versions issued per id.
#[derive(Default)]
pub(crate) struct AppVersions {
    issued: Mutex<Issued>,
}

#[derive(Default)]
struct Issued {
    per_id: HashMap<String, u64>,
    /// The last version issued to any id: each new one is above it.
    last: u64,
}

impl AppVersions {
    /// The version of the next write of `id`: its last one again when `same` (and it has
    /// one), else a new one above every version issued so far.
    pub(crate) fn next(&self, id: &str, same: bool) -> Versioning {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = issued.per_id.get(id).filter(|_| same) {
            return Versioning::ExternalGte(*v);
        }
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        // Above every earlier one, even within one millisecond or if the clock steps back.
        let v = now.max(issued.last + 1);
        issued.last = v;
        issued.per_id.insert(id.to_owned(), v);
        Versioning::ExternalGte(v)
    }

    /// Whether a newer write of `id` than `version` was issued: the refusal of `version` is
    /// then the application's own versioning, not a failure.
    pub(crate) fn superseded(&self, id: &str, version: Versioning) -> bool {
        let Versioning::ExternalGte(v) = version else { return false };
        let issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        issued.per_id.get(id).is_some_and(|newest| *newest > v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_grow_and_repeat_only_when_asked() {
        let v = AppVersions::default();
        let Versioning::ExternalGte(a) = v.next("a", false) else { panic!() };
        let Versioning::ExternalGte(b) = v.next("b", false) else { panic!() };
        assert!(b > a && a > 1_600_000_000_000, "milliseconds since the epoch, unique: {a} {b}");
        assert_eq!(v.next("a", true), Versioning::ExternalGte(a), "the same revision again");
        assert!(!v.superseded("a", Versioning::ExternalGte(a)));
        let Versioning::ExternalGte(c) = v.next("a", false) else { panic!() };
        assert!(c > b);
        assert!(v.superseded("a", Versioning::ExternalGte(a)), "a newer write of a was issued");
        assert!(!v.superseded("a", Versioning::Internal));
    }
}
