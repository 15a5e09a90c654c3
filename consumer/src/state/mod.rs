//! Durable state under `--state-dir/<name>/`, in three RocksDB databases so that each has
//! exactly one writing process:
//!
//! - `meta/`: the migration record (recipe, recorded offsets, state, rollover results),
//!   written only by the short operator commands (`init`, `rollover`, `cancel`);
//! - `snapshot/`: one checkpoint per slice, written by the snapshot worker;
//! - `replay/`: the next offset to apply per partition, written by the consumer after each
//!   acknowledged bulk.
//!
//! Any process may open any of them read-only at the same time (`status`, `rollover`
//! watching the consumer drain). Values are JSON, keys are plain strings.

mod gaps;
pub mod model;
mod pid;

use rocksdb::{Options, WriteBatch, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use gaps::GapStatus;
pub use model::*;
pub use pid::{held_pids, running_pid, runs_here, OperatorLock, PidGuard};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("no migration named {name:?} in {dir} (run `indexferry migration init` first)")]
    NotFound { name: String, dir: PathBuf },
    #[error("state {path}: {message}")]
    Db { path: PathBuf, message: String },
    #[error("state {path}: corrupt value under {key:?}: {message}")]
    Corrupt { path: PathBuf, key: String, message: String },
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// Where one migration's state lives.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
    pub name: String,
}

/// Which of the three databases.
#[derive(Debug, Clone, Copy)]
pub enum Db {
    Meta,
    Snapshot,
    Replay,
}

impl Db {
    fn dir(self) -> &'static str {
        match self {
            Db::Meta => "meta",
            Db::Snapshot => "snapshot",
            Db::Replay => "replay",
        }
    }
}

impl StateDir {
    pub fn new(root: &Path, name: &str) -> Self {
        StateDir { root: root.to_owned(), name: name.to_owned() }
    }

    pub fn path(&self) -> PathBuf {
        self.root.join(&self.name)
    }

    /// Every migration under `root`, by name (none when `root` does not exist yet).
    pub fn all(root: &Path) -> std::io::Result<Vec<StateDir>> {
        let entries = match std::fs::read_dir(root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let mut out: Vec<StateDir> = entries
            .flatten()
            .map(|entry| StateDir::new(root, &entry.file_name().to_string_lossy()))
            .filter(StateDir::exists)
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn exists(&self) -> bool {
        self.path().join(Db::Meta.dir()).join("CURRENT").exists()
    }

    pub fn db_path(&self, db: Db) -> PathBuf {
        self.path().join(db.dir())
    }

    pub fn pid_file(&self, role: &str) -> PathBuf {
        self.path().join(format!("{role}.pid"))
    }

    /// Where `cancel` asks the workers to stop (the time it asked): they may run in other
    /// containers, which its signals cannot reach.
    pub fn stop_request_file(&self) -> PathBuf {
        self.path().join("stop.request")
    }

    /// Opens a database for writing, creating it if needed. Fails if another process has it.
    pub fn open(&self, db: Db) -> Result<Store> {
        let path = self.db_path(db);
        std::fs::create_dir_all(&path).map_err(|e| StateError::Db { path: path.clone(), message: e.to_string() })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_keep_log_file_num(2);
        let db = DB::open(&opts, &path).map_err(|e| StateError::Db { path: path.clone(), message: explain_lock(e) })?;
        Ok(Store { db, path })
    }

    /// Opens a database read-only (another process may be writing it); `None` if absent.
    pub fn open_read_only(&self, db: Db) -> Result<Option<Store>> {
        let path = self.db_path(db);
        if !path.join("CURRENT").exists() {
            return Ok(None);
        }
        let opts = Options::default();
        let db = DB::open_for_read_only(&opts, &path, false)
            .map_err(|e| StateError::Db { path: path.clone(), message: e.to_string() })?;
        Ok(Some(Store { db, path }))
    }

    /// The migration record, read-only.
    pub fn load_migration(&self) -> Result<Migration> {
        let store = self
            .open_read_only(Db::Meta)?
            .ok_or_else(|| StateError::NotFound { name: self.name.clone(), dir: self.root.clone() })?;
        store
            .get::<Migration>(MIGRATION_KEY)?
            .ok_or_else(|| StateError::NotFound { name: self.name.clone(), dir: self.root.clone() })
    }

    /// Reads, changes and writes back the migration record.
    pub fn update_migration(&self, f: impl FnOnce(&mut Migration)) -> Result<Migration> {
        let store = self.open(Db::Meta)?;
        let mut m = store
            .get::<Migration>(MIGRATION_KEY)?
            .ok_or_else(|| StateError::NotFound { name: self.name.clone(), dir: self.root.clone() })?;
        f(&mut m);
        store.put(MIGRATION_KEY, &m)?;
        store.flush()?;
        Ok(m)
    }

    /// Replay checkpoints as another process left them.
    pub fn read_replay(&self) -> Result<ReplayCheckpoint> {
        Ok(match self.open_read_only(Db::Replay)? {
            Some(s) => s.get(REPLAY_KEY)?.unwrap_or_default(),
            None => ReplayCheckpoint::default(),
        })
    }

    /// Snapshot checkpoints of every slice, keyed `(pair, slice)`.
    pub fn read_snapshot(&self) -> Result<Vec<((usize, u32), SliceCheckpoint)>> {
        match self.open_read_only(Db::Snapshot)? {
            Some(s) => s.slices(),
            None => Ok(vec![]),
        }
    }
}

fn explain_lock(e: rocksdb::Error) -> String {
    let s = e.to_string();
    if s.contains("lock") {
        format!("{s} (another indexferry process is running this part of the migration)")
    } else {
        s
    }
}

pub const MIGRATION_KEY: &str = "migration";
pub const REPLAY_KEY: &str = "replay";

/// One open database.
pub struct Store {
    db: DB,
    path: PathBuf,
}

impl Store {
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let raw = self.db.get(key).map_err(|e| self.err(e))?;
        raw.map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                path: self.path.clone(),
                key: key.to_owned(),
                message: e.to_string(),
            })
        })
        .transpose()
    }

    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| StateError::Db { path: self.path.clone(), message: e.to_string() })?;
        self.db.put(key, bytes).map_err(|e| self.err(e))
    }

    /// Writes several keys atomically.
    pub fn put_all<T: Serialize>(&self, entries: &[(String, T)]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (k, v) in entries {
            let bytes = serde_json::to_vec(v)
                .map_err(|e| StateError::Db { path: self.path.clone(), message: e.to_string() })?;
            batch.put(k, bytes);
        }
        self.db.write(batch).map_err(|e| self.err(e))
    }

    pub fn delete(&self, key: &str) -> Result<()> {
        self.db.delete(key).map_err(|e| self.err(e))
    }

    pub fn flush(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(|e| self.err(e))
    }

    pub fn slices(&self) -> Result<Vec<((usize, u32), SliceCheckpoint)>> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator(SLICE_PREFIX) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let Some(parsed) = parse_slice_key(&key) else {
                break;
            };
            let cp = serde_json::from_slice(&v).map_err(|e| StateError::Corrupt {
                path: self.path.clone(),
                key: key.clone(),
                message: e.to_string(),
            })?;
            out.push((parsed, cp));
        }
        Ok(out)
    }

    /// Up to `limit` recorded tombstones `(index, id, tombstone)` in key order, starting
    /// after `after` (a tombstone key) or at the first; page through them with the last
    /// one's key (`tombstone_key(index, id, tombstone.routing)`).
    pub fn tombstones(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, String, Tombstone)>> {
        let start = after.map_or_else(|| TOMBSTONE_PREFIX.to_owned(), |k| format!("{k}\0"));
        let mut out = Vec::new();
        for item in self.db.iterator(rocksdb::IteratorMode::From(start.as_bytes(), rocksdb::Direction::Forward)) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let key = String::from_utf8_lossy(&k).into_owned();
            if !key.starts_with(TOMBSTONE_PREFIX) {
                break;
            }
            let corrupt = |message: String| StateError::Corrupt { path: self.path.clone(), key: key.clone(), message };
            let t: Tombstone = serde_json::from_slice(&v).map_err(|e| corrupt(e.to_string()))?;
            let (index, id) = parse_tombstone_key(&key, t.routing.as_deref())
                .ok_or_else(|| corrupt(format!("not a tombstone key for routing {:?}", t.routing)))?;
            out.push((index.to_owned(), id.to_owned(), t));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The recorded rechecks of each partition from its offset in `from` on (all of a
    /// partition `from` does not name), in partition and offset order.
    pub fn rechecks(&self, from: &BTreeMap<i32, i64>) -> Result<Vec<Recheck>> {
        self.by_offset(RECHECK_PREFIX, from)
    }

    /// The recorded gap notices, as [`Store::rechecks`].
    pub fn gaps(&self, from: &BTreeMap<i32, i64>) -> Result<Vec<Gap>> {
        self.by_offset(GAP_PREFIX, from)
    }

    /// The values under `prefix` keyed `<prefix><partition>/<offset>`, from `from` on.
    fn by_offset<T: DeserializeOwned>(&self, prefix: &str, from: &BTreeMap<i32, i64>) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator(prefix) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let Some((partition, offset)) = parse_offset_key(prefix, &key) else { break };
            if from.get(&partition).is_some_and(|first| offset < *first) {
                continue;
            }
            let r = serde_json::from_slice(&v).map_err(|e| StateError::Corrupt {
                path: self.path.clone(),
                key: key.clone(),
                message: e.to_string(),
            })?;
            out.push(r);
        }
        Ok(out)
    }

    fn err(&self, e: rocksdb::Error) -> StateError {
        StateError::Db { path: self.path.clone(), message: e.to_string() }
    }
}

const SLICE_PREFIX: &str = "slice/";
const TOMBSTONE_PREFIX: &str = "tomb/";
const RECHECK_PREFIX: &str = "recheck/";
const GAP_PREFIX: &str = "gap/";

/// `recheck/<partition>/<offset>` of the event, zero-padded so that keys sort in offset order.
pub fn recheck_key(partition: i32, offset: i64) -> String {
    format!("{RECHECK_PREFIX}{partition:05}/{offset:020}")
}

/// `gap/<partition>/<offset>` of the gap notice, as [`recheck_key`].
pub fn gap_key(partition: i32, offset: i64) -> String {
    format!("{GAP_PREFIX}{partition:05}/{offset:020}")
}

pub fn parse_recheck_key(key: &str) -> Option<(i32, i64)> {
    parse_offset_key(RECHECK_PREFIX, key)
}

fn parse_offset_key(prefix: &str, key: &str) -> Option<(i32, i64)> {
    let (p, o) = key.strip_prefix(prefix)?.split_once('/')?;
    Some((p.parse().ok()?, o.parse().ok()?))
}

/// `tomb/<target index>/<id>`, followed by `\0<routing>` for a routed document: with
/// custom routing one id may live on several shards, once per routing, and each delete is
/// kept. Index names hold no '/', so the first one ends the index; the routing, stored in
/// the value as well, tells where the id ends (see [`parse_tombstone_key`]).
pub fn tombstone_key(index: &str, id: &str, routing: Option<&str>) -> String {
    match routing {
        Some(r) => format!("{TOMBSTONE_PREFIX}{index}/{id}\0{r}"),
        None => format!("{TOMBSTONE_PREFIX}{index}/{id}"),
    }
}

/// `(index, id)` of a tombstone key written for `routing` (the tombstone's own). A key
/// without the routing is one recorded before routings were part of the key: all id.
pub fn parse_tombstone_key<'k>(key: &'k str, routing: Option<&str>) -> Option<(&'k str, &'k str)> {
    let (index, rest) = key.strip_prefix(TOMBSTONE_PREFIX)?.split_once('/')?;
    let id = routing.and_then(|r| rest.strip_suffix(r)?.strip_suffix('\0')).unwrap_or(rest);
    Some((index, id))
}

/// `slice/<pair>/<slice>`, zero-padded so that keys sort in slice order.
pub fn slice_key(pair: usize, slice: u32) -> String {
    format!("{SLICE_PREFIX}{pair:04}/{slice:05}")
}

pub fn parse_slice_key(key: &str) -> Option<(usize, u32)> {
    let rest = key.strip_prefix(SLICE_PREFIX)?;
    let (p, s) = rest.split_once('/')?;
    Some((p.parse().ok()?, s.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn slice_keys_round_trip_and_sort(a in 0usize..9999, b in 0u32..99999, c in 0usize..9999, d in 0u32..99999) {
            prop_assert_eq!(parse_slice_key(&slice_key(a, b)), Some((a, b)));
            prop_assert_eq!(slice_key(a, b).cmp(&slice_key(c, d)), (a, b).cmp(&(c, d)));
        }

        #[test]
        fn recheck_keys_round_trip_and_sort(a in 0i32..99999, b in 0i64..i64::MAX, c in 0i32..99999, d in 0i64..i64::MAX) {
            prop_assert_eq!(parse_recheck_key(&recheck_key(a, b)), Some((a, b)));
            prop_assert_eq!(recheck_key(a, b).cmp(&recheck_key(c, d)), (a, b).cmp(&(c, d)));
        }

        #[test]
        fn tombstone_keys_round_trip(index in "[a-z0-9_.-]{1,20}", id in "\\PC{1,30}", routing in proptest::option::of("\\PC{1,10}")) {
            let key = tombstone_key(&index, &id, routing.as_deref());
            prop_assert_eq!(parse_tombstone_key(&key, routing.as_deref()), Some((index.as_str(), id.as_str())));
            // A key of the earlier layout (no routing in it) still reads.
            let earlier = tombstone_key(&index, &id, None);
            prop_assert_eq!(parse_tombstone_key(&earlier, routing.as_deref()), Some((index.as_str(), id.as_str())));
        }

        #[test]
        fn one_id_under_two_routings_has_two_keys(id in "\\PC{1,30}", a in "\\PC{1,10}", b in "\\PC{1,10}") {
            prop_assume!(a != b);
            let keys = [tombstone_key("t", &id, None), tombstone_key("t", &id, Some(&a)), tombstone_key("t", &id, Some(&b))];
            prop_assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
        }
    }

    #[test]
    fn a_writer_and_a_reader_share_a_database() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path(), "m");
        let w = dir.open(Db::Replay).unwrap();
        let mut cp = ReplayCheckpoint::default();
        cp.partitions.insert(0, PartitionCheckpoint { next_offset: 7, last_event_ms: Some(5) });
        w.put(REPLAY_KEY, &cp).unwrap();
        // Another handle for writing is refused while the first is open...
        assert!(dir.open(Db::Replay).is_err());
        // ...but readers see what was written, without a flush.
        assert_eq!(dir.read_replay().unwrap().partitions[&0].next_offset, 7);
        cp.partitions.insert(0, PartitionCheckpoint { next_offset: 9, last_event_ms: None });
        w.put(REPLAY_KEY, &cp).unwrap();
        assert_eq!(dir.read_replay().unwrap().partitions[&0].next_offset, 9);
        let s = dir.open(Db::Snapshot).unwrap();
        s.put(&slice_key(0, 1), &SliceCheckpoint { copied: 3, ..Default::default() }).unwrap();
        s.put(&slice_key(0, 0), &SliceCheckpoint { done: true, ..Default::default() }).unwrap();
        s.put("other", &1).unwrap();
        let slices = s.slices().unwrap();
        assert_eq!(slices.len(), 2);
        assert_eq!(slices[0].0, (0, 0));
        assert!(slices[0].1.done);
        assert_eq!(slices[1].1.copied, 3);
        let routed = |r: &str| Tombstone { version: 9, routing: Some(r.into()) };
        s.put(&tombstone_key("t", "a/b", None), &Tombstone { version: 4, routing: None }).unwrap();
        s.put(&tombstone_key("t", "a/b", Some("r/1")), &routed("r/1")).unwrap();
        s.put(&tombstone_key("t", "c", Some("r")), &routed("r")).unwrap();
        let first = s.tombstones(None, 1).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].0.as_str(), first[0].1.as_str(), first[0].2.version), ("t", "a/b", 4));
        let rest = s.tombstones(Some(&tombstone_key("t", "a/b", None)), 10).unwrap();
        assert_eq!(rest.len(), 2, "paging resumes after the given key");
        assert_eq!((rest[0].1.as_str(), rest[0].2.routing.as_deref()), ("a/b", Some("r/1")), "same id, other routing");
        assert_eq!((rest[1].1.as_str(), rest[1].2.routing.as_deref()), ("c", Some("r")));
        let last = s.tombstones(Some(&tombstone_key("t", "a/b", Some("r/1"))), 10).unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].1, "c");
    }
}
