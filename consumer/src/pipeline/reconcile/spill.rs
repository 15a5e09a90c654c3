//! Both sides' ids and versions, spilled into a sorted store on disk and merged by id: a pass
//! costs the clusters one scan of each index and no lookup per document. Only the documents
//! the merge finds different are looked up again, realtime, and judged before anything is
//! repaired (`pass.rs`): the two scans are points in time taken a moment apart, and the
//! replay keeps writing meanwhile.
//!
//! The store is a throw-away RocksDB in the migration's state folder (no write-ahead log, no
//! compaction), removed when the pass ends. Memory stays bounded whatever the index size.

use crate::pipeline::snapshot::reader::Hit;
use crate::pipeline::versions;
use anyhow::Context as _;
use indexferry_common::config::VersionRule;
use rocksdb::{DBCompressionType, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use std::path::Path;

const SOURCE: u8 = b's';
const TARGET: u8 = b't';

/// A document one side holds that the other lacks or holds at another version, to look up
/// again: a source hit (missing or behind in the target, or newer there) or a target hit
/// (perhaps extra).
#[derive(Debug)]
pub(super) enum Difference {
    Source(Hit),
    Target(Hit),
}

pub(super) struct Spill {
    db: DB,
    /// What version the target should hold for a source hit.
    rule: VersionRule,
    _dir: tempfile::TempDir,
}

/// Where the merge has got to on each side: the last key it consumed.
#[derive(Debug, Default)]
pub(super) struct Cursor {
    source: Option<Vec<u8>>,
    target: Option<Vec<u8>>,
    done: bool,
}

impl Spill {
    /// A new, empty store in a fresh folder under `parent`.
    pub(super) fn open(parent: &Path, rule: VersionRule) -> anyhow::Result<Spill> {
        let dir = tempfile::Builder::new()
            .prefix(".reconcile-")
            .tempdir_in(parent)
            .with_context(|| format!("a folder for reconcile's ids under {}", parent.display()))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(DBCompressionType::None);
        opts.set_disable_auto_compactions(true);
        opts.set_write_buffer_size(32 << 20);
        let db = DB::open(&opts, dir.path()).with_context(|| format!("reconcile's ids in {}", dir.path().display()))?;
        Ok(Spill { db, rule, _dir: dir })
    }

    /// Stores one page of source hits (`_primary_term`, `_seq_no`, `_version`) or target hits
    /// (`_version`).
    pub(super) fn put(&self, target: bool, hits: &[Hit]) -> anyhow::Result<()> {
        let mut batch = WriteBatch::default();
        for h in hits {
            let (side, numbers) = match target {
                false => (SOURCE, [h.primary_term, h.seq_no, h.version]),
                true => (TARGET, [h.version, Some(0), Some(0)]),
            };
            let mut value = Vec::with_capacity(24);
            for n in numbers {
                let n = n.with_context(|| {
                    format!("document {}: the search answer lacks its _version or _seq_no/_primary_term", h.id)
                })?;
                value.extend_from_slice(&n.to_be_bytes());
            }
            batch.put(key(side, &h.id, h.routing.as_deref())?, value);
        }
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.db.write_opt(batch, &opts).context("writing reconcile's ids")
    }

    /// Up to `most` differences after `cursor`, merging both sides in key order.
    pub(super) fn differences(&self, cursor: &mut Cursor, most: usize) -> anyhow::Result<Vec<Difference>> {
        let mut out = vec![];
        if cursor.done {
            return Ok(out);
        }
        let mut source = Side::new(&self.db, SOURCE, cursor.source.as_deref())?;
        let mut target = Side::new(&self.db, TARGET, cursor.target.as_deref())?;
        while out.len() < most {
            let (s, t) = (source.peek(), target.peek());
            let diff = match (s, t) {
                (None, None) => {
                    cursor.done = true;
                    break;
                }
                (Some(s), Some(t)) if s.0 == t.0 => {
                    let (hit, version) = (source.hit()?, target.version());
                    source.advance()?;
                    target.advance()?;
                    if in_sync(self.rule, &hit, version) {
                        continue;
                    }
                    Difference::Source(hit)
                }
                (Some(s), t) if t.is_none_or(|t| s.0 < t.0) => {
                    let hit = source.hit()?;
                    source.advance()?;
                    Difference::Source(hit)
                }
                _ => {
                    let hit = target.hit()?;
                    target.advance()?;
                    Difference::Target(hit)
                }
            };
            out.push(diff);
        }
        cursor.source = source.last;
        cursor.target = target.last;
        Ok(out)
    }
}

/// Whether the target's `version` is the one a source hit calls for by the rule, or (under
/// `seq_no`) for a copy by server-side `_reindex` the source's own `_version`.
fn in_sync(rule: VersionRule, source: &Hit, version: u64) -> bool {
    if versions::is_reindex_copy(rule, version) {
        return source.version == Some(version);
    }
    versions::of_source(rule, source.version, source.primary_term, source.seq_no) == Ok(version)
}

/// `side`, the id's length, the id, then the routing (a document's key is its id and routing).
fn key(side: u8, id: &str, routing: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let len = u16::try_from(id.len()).with_context(|| format!("document id of {} bytes", id.len()))?;
    let mut k = Vec::with_capacity(3 + id.len() + routing.map_or(0, str::len));
    k.push(side);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k.extend_from_slice(routing.unwrap_or_default().as_bytes());
    Ok(k)
}

/// The id and routing a key holds.
fn parse_key(k: &[u8]) -> anyhow::Result<(String, Option<String>)> {
    let len = u16::from_be_bytes([k[1], k[2]]) as usize;
    let id = std::str::from_utf8(&k[3..3 + len]).context("a stored id")?;
    let routing = std::str::from_utf8(&k[3 + len..]).context("a stored routing")?;
    Ok((id.to_owned(), (!routing.is_empty()).then(|| routing.to_owned())))
}

/// A stored entry: (key without its side byte, value).
type Entry = (Box<[u8]>, Box<[u8]>);

/// One side's entries in key order, from after a cursor position.
struct Side<'a> {
    side: u8,
    iter: rocksdb::DBIteratorWithThreadMode<'a, DB>,
    /// The entry under the iterator.
    current: Option<Entry>,
    last: Option<Vec<u8>>,
}

impl<'a> Side<'a> {
    fn new(db: &'a DB, side: u8, after: Option<&[u8]>) -> anyhow::Result<Side<'a>> {
        let start = after.map_or_else(|| vec![side], <[u8]>::to_vec);
        let iter = db.iterator(IteratorMode::From(&start, Direction::Forward));
        let mut s = Side { side, iter, current: None, last: after.map(<[u8]>::to_vec) };
        s.load()?;
        if after.is_some() && s.current.as_ref().is_some_and(|(k, _)| Some(s.full_key(k)) == s.last) {
            s.load()?;
        }
        Ok(s)
    }

    fn full_key(&self, k: &[u8]) -> Vec<u8> {
        let mut full = vec![self.side];
        full.extend_from_slice(k);
        full
    }

    fn load(&mut self) -> anyhow::Result<()> {
        self.current = match self.iter.next().transpose().context("reading reconcile's ids")? {
            Some((k, v)) if k.first() == Some(&self.side) => Some((k[1..].into(), v)),
            _ => None,
        };
        Ok(())
    }

    fn peek(&self) -> Option<(&[u8], &[u8])> {
        self.current.as_ref().map(|(k, v)| (&k[..], &v[..]))
    }

    fn advance(&mut self) -> anyhow::Result<()> {
        if let Some((k, _)) = &self.current {
            self.last = Some(self.full_key(k));
        }
        self.load()
    }

    /// The three numbers stored with the current entry.
    fn numbers(&self) -> [u64; 3] {
        let v = self.current.as_ref().map(|(_, v)| &v[..]).unwrap_or(&[0; 24]);
        let n = |i: usize| v.get(i * 8..i * 8 + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
        [n(0), n(1), n(2)]
    }

    fn version(&self) -> u64 {
        self.numbers()[0]
    }

    /// The current entry as a search hit.
    fn hit(&self) -> anyhow::Result<Hit> {
        let (k, _) = self.current.as_ref().context("no current entry")?;
        let mut full = vec![self.side];
        full.extend_from_slice(k);
        let (id, routing) = parse_key(&full)?;
        let [a, b, c] = self.numbers();
        let (primary_term, seq_no, version) = match self.side {
            SOURCE => (Some(a), Some(b), Some(c)),
            _ => (None, None, Some(a)),
        };
        Ok(Hit { id, seq_no, primary_term, routing, version, source: None, sort: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, term: u64, seq: u64) -> Hit {
        Hit {
            id: id.into(),
            seq_no: Some(seq),
            primary_term: Some(term),
            routing: None,
            version: Some(3),
            source: None,
            sort: None,
        }
    }

    fn versioned(id: &str, version: u64, routing: Option<&str>) -> Hit {
        Hit {
            id: id.into(),
            seq_no: None,
            primary_term: None,
            routing: routing.map(Into::into),
            version: Some(version),
            source: None,
            sort: None,
        }
    }

    fn ids(d: &[Difference]) -> Vec<String> {
        d.iter()
            .map(|d| match d {
                Difference::Source(h) => format!("s:{}", h.id),
                Difference::Target(h) => format!("t:{}", h.id),
            })
            .collect()
    }

    #[test]
    fn the_merge_yields_only_what_differs_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::open(dir.path(), VersionRule::SeqNo).unwrap();
        let v = |t, s| indexferry_schemas::external_version(t, s).unwrap();
        // same, behind, missing, newer in target, extra, same under a routing; copies by
        // `_reindex` (the source's `_version`, 3): the same, and one behind.
        spill.put(false, &[hit("a", 1, 1), hit("b", 1, 5), hit("c", 1, 2), hit("d", 1, 3)]).unwrap();
        spill.put(false, &[hit("x1", 1, 8), hit("x2", 1, 9)]).unwrap();
        let mut routed = hit("r", 2, 9);
        routed.routing = Some("x".into());
        spill.put(false, &[routed]).unwrap();
        spill
            .put(
                true,
                &[
                    versioned("a", v(1, 1), None),
                    versioned("b", v(1, 4), None),
                    versioned("d", v(1, 7), None),
                    versioned("e", 3, None),
                    versioned("r", v(2, 9), Some("x")),
                    versioned("x1", 3, None),
                    versioned("x2", 2, None),
                ],
            )
            .unwrap();
        let mut cursor = Cursor::default();
        let mut all = vec![];
        loop {
            let chunk = spill.differences(&mut cursor, 2).unwrap();
            assert!(chunk.len() <= 2);
            if chunk.is_empty() {
                break;
            }
            all.extend(chunk);
        }
        assert_eq!(ids(&all), ["s:b", "s:c", "s:d", "t:e", "s:x2"]);
        let Difference::Target(e) = &all[3] else { panic!() };
        assert_eq!(e.version, Some(3));
        let Difference::Source(b) = &all[0] else { panic!() };
        assert_eq!((b.primary_term, b.seq_no), (Some(1), Some(5)));
    }

    #[test]
    fn under_the_source_rule_the_target_should_hold_the_sources_version() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::open(dir.path(), VersionRule::Source).unwrap();
        // `hit` gives `_version` 3 whatever the term and `_seq_no`.
        spill.put(false, &[hit("a", 1, 1), hit("b", 1, 5), hit("c", 2, 9)]).unwrap();
        let term_and_seq_no = indexferry_schemas::external_version(1, 5).unwrap();
        spill
            .put(true, &[versioned("a", 3, None), versioned("b", term_and_seq_no, None), versioned("c", 2, None)])
            .unwrap();
        let mut cursor = Cursor::default();
        let found = spill.differences(&mut cursor, 10).unwrap();
        assert_eq!(ids(&found), ["s:b", "s:c"], "b holds the seq_no rule's version, c an older _version");
    }

    #[test]
    fn a_key_keeps_its_id_and_routing() {
        for (id, routing) in [("a", None), ("ü/é", Some("r1")), ("", None)] {
            let k = key(SOURCE, id, routing).unwrap();
            assert_eq!(parse_key(&k).unwrap(), (id.to_owned(), routing.map(str::to_owned)));
        }
    }
}
