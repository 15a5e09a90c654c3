//! The comparison of one pair, page by page, ids and versions only, and the repairs.
//!
//! Source hits are judged against the target's `_version` (the version the target should
//! hold is the source's `external_version(term, seq_no)`); target hits are looked up in the
//! source. Both are read realtime: what the scans found different may have converged since. A repair reads the document again from the source (realtime) and writes it
//! with the version it has then, so it never regresses the target and running it twice
//! changes nothing.

use super::{Kind, PairReport};
use crate::context::Ctx;
use crate::mget::Key;
use crate::snapshot::reader::Hit;
use crate::writer::{Doc, Final, Writer};
use anyhow::{bail, Context as _};
use indexferry_common::es::Cluster;
use indexferry_schemas::external_version;
use std::time::Duration;

/// One pair under comparison, with the writer its repairs go through.
pub(super) struct Pair<'a> {
    pub ctx: &'a Ctx,
    pub writer: &'a Writer,
    /// How long a batch of repairs may wait for the target before the pass gives up.
    pub write_limit: Duration,
    pub report: PairReport,
}

/// What a page of source hits needs: the ids (with routing) the target lacks or holds behind.
struct Wanted {
    id: String,
    routing: Option<String>,
}

impl Pair<'_> {
    fn source_index(&self) -> &str {
        &self.report.source
    }

    fn target_index(&self) -> &str {
        &self.report.target
    }

    /// Source hits (ids, `_seq_no`, `_primary_term`, `_routing`) judged against the target
    /// as it is now: missing or behind there → copied again.
    pub(super) async fn source_page(&mut self, hits: &[Hit]) -> anyhow::Result<()> {
        let target = self.target_index().to_owned();
        let found = mget(&self.ctx.target, &target, hits.iter().map(|h| (&h.id, &h.routing)), false).await?;
        let mut wanted = vec![];
        for (h, t) in hits.iter().zip(found) {
            let expected = expected_version(h).with_context(|| format!("source index {}", self.source_index()))?;
            let kind = match t.version {
                _ if !t.found => Kind::Missing,
                Some(v) if is_reindex_copy(v) && Some(v) == h.version => continue,
                Some(v) if is_reindex_copy(v) => Kind::Behind,
                Some(v) if v < expected => Kind::Behind,
                Some(v) if v > expected => Kind::NewerInTarget,
                _ => continue,
            };
            self.report.note(kind, &h.id);
            if kind != Kind::NewerInTarget {
                wanted.push(Wanted { id: h.id.clone(), routing: h.routing.clone() });
            }
        }
        self.copy_from_source(wanted).await
    }

    /// Target hits (ids, `_version`, `_routing`) looked up in the source as it is now: absent
    /// there → deleted from the target.
    pub(super) async fn target_page(&mut self, hits: &[Hit]) -> anyhow::Result<()> {
        let source = self.source_index().to_owned();
        let found = mget(&self.ctx.source, &source, hits.iter().map(|h| (&h.id, &h.routing)), false).await?;
        let mut deletes = vec![];
        for (h, s) in hits.iter().zip(found) {
            if s.found {
                continue;
            }
            self.report.note(Kind::Extra, &h.id);
            let version = h.version.with_context(|| {
                format!("target index {}: the search answer has no _version for {}", self.target_index(), h.id)
            })?;
            deletes.push(Doc {
                index: self.target_index().to_owned(),
                id: h.id.clone(),
                version: version + 1,
                routing: h.routing.clone(),
                source: None,
            });
        }
        // A stale delete: the target holds a newer write, which its own event brought.
        self.write(deletes).await.map(drop)
    }

    /// Reads the wanted documents from the source as they are now and writes them.
    async fn copy_from_source(&mut self, wanted: Vec<Wanted>) -> anyhow::Result<()> {
        if wanted.is_empty() {
            return Ok(());
        }
        let source = self.source_index().to_owned();
        let now = mget(&self.ctx.source, &source, wanted.iter().map(|w| (&w.id, &w.routing)), true).await?;
        let mut docs = vec![];
        // A document deleted from the source meanwhile: its delete reaches the target by the
        // replay, or by pass 2.
        for d in now.into_iter().filter(|d| d.found) {
            let version = match (d.primary_term, d.seq_no) {
                (Some(term), Some(seq)) => external_version(term, seq),
                _ => None,
            }
            .with_context(|| {
                format!("source index {source}: _mget gave no usable _seq_no/_primary_term for {}", d.id)
            })?;
            docs.push(Doc {
                index: self.target_index().to_owned(),
                id: d.id,
                version,
                routing: d.routing,
                source: d.source,
            });
        }
        let stale = self.write(docs).await?;
        self.check_stale_copies(stale).await
    }

    /// Copies the target refused as stale: fine where it holds the document at that version
    /// or newer (the replay got there first). Where it holds none, it keeps a delete newer
    /// than the source's document (a tombstone), which no external-version write can pass
    /// until the target forgets it (`index.gc_deletes`): the document stays missing, so the
    /// repair failed — unless the source changed it meanwhile, which the next pass judges.
    async fn check_stale_copies(&mut self, stale: Vec<Doc>) -> anyhow::Result<()> {
        if stale.is_empty() {
            return Ok(());
        }
        let target = self.target_index().to_owned();
        let in_target = mget(&self.ctx.target, &target, stale.iter().map(|d| (&d.id, &d.routing)), false).await?;
        let absent: Vec<&Doc> = stale.iter().zip(in_target).filter(|(_, t)| !t.found).map(|(d, _)| d).collect();
        if absent.is_empty() {
            return Ok(());
        }
        let source = self.source_index().to_owned();
        let in_source = mget(&self.ctx.source, &source, absent.iter().map(|d| (&d.id, &d.routing)), false).await?;
        for (d, s) in absent.into_iter().zip(in_source) {
            let now = match (s.found, s.primary_term, s.seq_no) {
                (true, Some(term), Some(seq)) => external_version(term, seq),
                _ => None,
            };
            if now == Some(d.version) {
                tracing::warn!(
                    index = %d.index, id = %d.id, version = d.version,
                    "repair refused: the target keeps a newer delete of this document than the source's copy; \
                     it cannot be copied until the target forgets that delete (index.gc_deletes)"
                );
                self.report.note(Kind::Failed, &d.id);
            }
        }
        Ok(())
    }

    /// Writes repairs; the target must accept them within `write_limit`. Returns those it
    /// refused as stale.
    async fn write(&mut self, docs: Vec<Doc>) -> anyhow::Result<Vec<Doc>> {
        if docs.is_empty() {
            return Ok(vec![]);
        }
        let target = &self.ctx.target;
        let outcome = tokio::time::timeout(self.write_limit, self.writer.write(&docs)).await;
        let finals = match outcome {
            Ok(Ok(f)) => f,
            Ok(Err(_)) => bail!(
                "the target cluster {} stopped taking repairs of index {}: {}",
                target.url,
                self.target_index(),
                self.writer.gave_up().unwrap_or_else(|| "cancelled".into())
            ),
            Err(_) => bail!(
                "the target cluster {} did not accept the repairs of index {} within {}: it refuses writes",
                target.url,
                self.target_index(),
                humantime::format_duration(self.write_limit)
            ),
        };
        let mut stale = vec![];
        for (d, f) in docs.into_iter().zip(finals) {
            match f {
                Final::Applied => self.report.note(Kind::Repaired, &d.id),
                // The target holds this version or newer: judged by the caller.
                Final::Stale => stale.push(d),
                Final::Rejected(why) => {
                    tracing::warn!(index = %d.index, id = %d.id, %why, "repair refused by the target");
                    self.report.note(Kind::Failed, &d.id);
                }
            }
        }
        Ok(stale)
    }
}

/// A target version below every `external_version` (2^47, term 1 and up) is a copy by
/// server-side `_reindex`, which keeps the source's own `_version`: in sync when it equals
/// the source's `_version`, else behind (a repair's external version lands above it).
pub(super) fn is_reindex_copy(target_version: u64) -> bool {
    target_version < 1 << indexferry_schemas::SEQ_NO_BITS
}

/// The version the target should hold for a source hit.
fn expected_version(h: &Hit) -> anyhow::Result<u64> {
    match (h.primary_term, h.seq_no) {
        (Some(term), Some(seq)) => external_version(term, seq)
            .with_context(|| format!("document {}: _seq_no {seq} / _primary_term {term} out of range", h.id)),
        _ => bail!("document {}: the search answer has no _seq_no/_primary_term", h.id),
    }
}

/// Looks the ids up in `index` (each with its routing), realtime, in input order; a
/// document the cluster could not look up fails the pass.
async fn mget<'a>(
    cluster: &Cluster,
    index: &str,
    ids: impl Iterator<Item = (&'a String, &'a Option<String>)>,
    with_source: bool,
) -> anyhow::Result<Vec<crate::mget::Doc>> {
    crate::mget::mget_in(cluster, index, ids.map(|(id, routing)| Key::new(id, routing.as_deref())), with_source).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_version_puts_the_term_above_the_seq_no() {
        let h: Hit = serde_json::from_str(r#"{"_id":"a","_seq_no":4,"_primary_term":2}"#).unwrap();
        assert_eq!(expected_version(&h).unwrap(), external_version(2, 4).unwrap());
        let h: Hit = serde_json::from_str(r#"{"_id":"a"}"#).unwrap();
        assert!(expected_version(&h).unwrap_err().to_string().contains("document a"));
    }
}
