//! The comparison of one pair, page by page, ids and versions only, and the repairs.
//!
//! Source hits are judged against the target's `_version` (the version the target should
//! hold is the source's by the migration's rule, `crate::pipeline::versions`); target hits are looked
//! up in the source. Both are read realtime: what the scans found different may have
//! converged since. A repair reads the document again from the source (realtime) and writes
//! it with the version it has then, so it never regresses the target and running it twice
//! changes nothing. Under the `source` rule a repair is written `external_gte`: it may
//! replace a body the target holds under the same version (see [`Pair::recheck_page`]).
//!
//! A target version above the source's, read realtime after the target's, is a version that
//! went backwards on the source (see `crate::pipeline::versions`): no versioned write can follow it,
//! so it is counted as `backwards`, and rollover writes it again inside its pause
//! (`reset`).

use super::{Kind, PairReport};
use crate::pipeline::mget::{same_source, Key};
use crate::pipeline::snapshot::reader::Hit;
use crate::pipeline::versions;
use crate::pipeline::writer::{Doc, Final, VersionType, Writer};
use crate::runtime::context::Ctx;
use crate::state::Recheck;
use anyhow::{bail, Context as _};
use indexferry_common::config::VersionRule;
use indexferry_common::es::Cluster;
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
        let rule = self.rule();
        let mut wanted = vec![];
        let mut newer = vec![];
        for (h, t) in hits.iter().zip(found) {
            let expected = versions::of_source(rule, h.version, h.primary_term, h.seq_no)
                .map_err(|why| anyhow::anyhow!("source index {}: document {}: {why}", self.source_index(), h.id))?;
            let kind = match t.version {
                _ if !t.found => Kind::Missing,
                Some(v) if versions::is_reindex_copy(rule, v) && Some(v) == h.version => continue,
                Some(v) if versions::is_reindex_copy(rule, v) => Kind::Behind,
                Some(v) if v < expected => Kind::Behind,
                Some(v) if v > expected => {
                    newer.push((Wanted { id: h.id.clone(), routing: h.routing.clone() }, v));
                    continue;
                }
                _ => continue,
            };
            self.report.note(kind, &h.id);
            wanted.push(Wanted { id: h.id.clone(), routing: h.routing.clone() });
        }
        self.judge_newer(newer).await?;
        self.copy_from_source(wanted).await
    }

    /// Documents the target holds at a higher version than the source's scan: the replay got
    /// there first, unless (under the `source` rule) the source, read again now, is still
    /// below the target — its version went backwards.
    async fn judge_newer(&mut self, newer: Vec<(Wanted, u64)>) -> anyhow::Result<()> {
        if newer.is_empty() {
            return Ok(());
        }
        if self.rule() == VersionRule::SeqNo {
            for (w, _) in &newer {
                self.report.note(Kind::NewerInTarget, &w.id);
            }
            return Ok(());
        }
        let source = self.source_index().to_owned();
        let now = mget(&self.ctx.source, &source, newer.iter().map(|(w, _)| (&w.id, &w.routing)), false).await?;
        for ((w, in_target), s) in newer.iter().zip(now) {
            match s.version {
                Some(v) if s.found && v < *in_target => self.backwards(&w.id, w.routing.as_ref(), v, *in_target),
                _ => self.report.note(Kind::NewerInTarget, &w.id),
            }
        }
        Ok(())
    }

    fn backwards(&mut self, id: &str, routing: Option<&String>, source: u64, target: u64) {
        tracing::warn!(
            index = %self.target_index(), %id, source_version = source, target_version = target,
            "the source's _version went backwards (a delete then re-create after the source forgot the tombstone, or \
             an application lowering its own versions): the target cannot hold the source's version for this document"
        );
        self.report.note(Kind::Backwards, id);
        let key = Recheck { index: self.target_index().to_owned(), id: id.to_owned(), routing: routing.cloned() };
        if !self.report.backwards.contains(&key) {
            self.report.backwards.push(key);
        }
    }

    fn rule(&self) -> VersionRule {
        self.ctx.recipe.versions
    }

    /// The second look at events the replay refused as stale (`source` rule): where the
    /// target holds the source's version with another body, or is missing or behind, the
    /// source's document is written `external_gte`; above the source is `backwards`.
    pub(super) async fn recheck_page(&mut self, rechecks: &[Recheck]) -> anyhow::Result<()> {
        let target = self.target_index().to_owned();
        let keys = || rechecks.iter().map(|r| (&r.id, &r.routing));
        let in_target = mget(&self.ctx.target, &target, keys(), true).await?;
        let source = self.source_index().to_owned();
        let in_source = mget(&self.ctx.source, &source, keys(), true).await?;
        let mut docs = vec![];
        for ((r, t), s) in rechecks.iter().zip(in_target).zip(in_source) {
            self.report.rechecked += 1;
            // Deleted from the source since: its delete is replayed, and pass 2 finds extras.
            let (true, Some(version)) = (s.found, s.version) else { continue };
            let kind = match t.version {
                _ if !t.found => Kind::Missing,
                Some(v) if v < version => Kind::Behind,
                Some(v) if v > version => {
                    self.backwards(&r.id, r.routing.as_ref(), version, v);
                    continue;
                }
                _ if same_source(s.source.as_deref(), t.source.as_deref()) && s.routing == t.routing => continue,
                _ => Kind::SameVersionOtherBody,
            };
            self.report.note(kind, &r.id);
            docs.push(Doc {
                index: target.clone(),
                id: s.id,
                version,
                version_type: VersionType::ExternalGte,
                routing: s.routing,
                source: s.source,
            });
        }
        let stale = self.write(docs).await?;
        self.check_stale_copies(stale).await
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
                version_type: VersionType::External,
                routing: h.routing.clone(),
                source: None,
            });
        }
        // A stale delete: the target holds a newer write, which its own event brought.
        self.write(deletes).await.map(drop)
    }

    /// Every recheck of this pair, a page at a time.
    pub(super) async fn recheck(&mut self, mut rechecks: Vec<Recheck>) -> anyhow::Result<()> {
        // A document this pass judged already is not judged twice.
        rechecks.retain(|r| !self.report.noted.contains(&r.id));
        for page in rechecks.chunks(super::PAGE) {
            self.recheck_page(page).await?;
        }
        Ok(())
    }

    /// The documents gap notices named (a capture proxy died, or could not publish, after
    /// the cluster took their writes), judged as the scans judge them: in the source →
    /// against the target's version ([`Pair::source_page`]); gone from the source but in the
    /// target → deleted there ([`Pair::target_page`]).
    pub(super) async fn gap_docs(&mut self, mut docs: Vec<Recheck>) -> anyhow::Result<()> {
        docs.retain(|r| !self.report.noted.contains(&r.id));
        for page in docs.chunks(super::PAGE) {
            self.report.gap_docs += page.len() as u64;
            let source = self.source_index().to_owned();
            let in_source = mget(&self.ctx.source, &source, page.iter().map(|r| (&r.id, &r.routing)), false).await?;
            let (mut there, mut gone) = (vec![], vec![]);
            for (r, s) in page.iter().zip(in_source) {
                match s.found {
                    true => there.push(looked_up(s, r.routing.as_ref())),
                    false => gone.push(r),
                }
            }
            self.source_page(&there).await?;
            let target = self.target_index().to_owned();
            let in_target = mget(&self.ctx.target, &target, gone.iter().map(|r| (&r.id, &r.routing)), false).await?;
            let extra: Vec<Hit> = in_target.into_iter().filter(|t| t.found).map(|t| looked_up(t, None)).collect();
            self.target_page(&extra).await?;
        }
        Ok(())
    }

    /// Reads the wanted documents from the source as they are now and writes them.
    async fn copy_from_source(&mut self, wanted: Vec<Wanted>) -> anyhow::Result<()> {
        if wanted.is_empty() {
            return Ok(());
        }
        let source = self.source_index().to_owned();
        let now = mget(&self.ctx.source, &source, wanted.iter().map(|w| (&w.id, &w.routing)), true).await?;
        let mut docs = vec![];
        let rule = self.rule();
        // Under `source`, a repair may replace a body the target holds under the same version.
        let version_type = match rule {
            VersionRule::Source => VersionType::ExternalGte,
            VersionRule::SeqNo => VersionType::External,
        };
        // A document deleted from the source meanwhile: its delete reaches the target by the
        // replay, or by pass 2.
        for d in now.into_iter().filter(|d| d.found) {
            let version = versions::of_source(rule, d.version, d.primary_term, d.seq_no)
                .map_err(|why| anyhow::anyhow!("source index {source}: _mget of {}: {why}", d.id))?;
            docs.push(Doc {
                index: self.target_index().to_owned(),
                id: d.id,
                version,
                version_type,
                routing: d.routing,
                source: d.source,
            });
        }
        let stale = self.write(docs).await?;
        self.check_stale_copies(stale).await
    }

    /// Copies the target refused as stale: fine where it holds the document at that version
    /// or newer and the source moved on too (the replay got there first). Where it holds
    /// none, it keeps a delete newer than the source's document (a tombstone), which no
    /// external-version write can pass until the target forgets it (`index.gc_deletes`): the
    /// document stays missing, so the repair failed. Where it holds a newer version than the
    /// source still has, the source's version went backwards. Either way, unless the source
    /// changed it meanwhile, which the next pass judges.
    async fn check_stale_copies(&mut self, stale: Vec<Doc>) -> anyhow::Result<()> {
        if stale.is_empty() {
            return Ok(());
        }
        let target = self.target_index().to_owned();
        let in_target = mget(&self.ctx.target, &target, stale.iter().map(|d| (&d.id, &d.routing)), false).await?;
        let source = self.source_index().to_owned();
        let in_source = mget(&self.ctx.source, &source, stale.iter().map(|d| (&d.id, &d.routing)), false).await?;
        let rule = self.rule();
        for ((d, t), s) in stale.iter().zip(in_target).zip(in_source) {
            let now = match s.found {
                true => versions::of_source(rule, s.version, s.primary_term, s.seq_no).ok(),
                false => None,
            };
            if now != Some(d.version) {
                continue;
            }
            match t.version {
                Some(v) if t.found && rule == VersionRule::Source && v > d.version => {
                    self.backwards(&d.id, d.routing.as_ref(), d.version, v)
                }
                _ if t.found => {}
                // A delete the target keeps above the source's re-created document.
                _ if rule == VersionRule::Source => self.backwards(&d.id, d.routing.as_ref(), d.version, 0),
                _ => {
                    tracing::warn!(
                        index = %d.index, id = %d.id, version = d.version,
                        "repair refused: the target keeps a newer delete of this document than the source's copy; \
                         it cannot be copied until the target forgets that delete (index.gc_deletes)"
                    );
                    self.report.note(Kind::Failed, &d.id);
                }
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

/// Looks the ids up in `index` (each with its routing), realtime, in input order; a
/// document the cluster could not look up fails the pass.
/// A document looked up by id as the scans' hit for it (ids, versions, routing; `routing`
/// where the answer names none).
fn looked_up(d: crate::pipeline::mget::Doc, routing: Option<&String>) -> Hit {
    Hit {
        id: d.id,
        seq_no: d.seq_no,
        primary_term: d.primary_term,
        routing: d.routing.or_else(|| routing.cloned()),
        version: d.version,
        source: None,
        sort: None,
    }
}

async fn mget<'a>(
    cluster: &Cluster,
    index: &str,
    ids: impl Iterator<Item = (&'a String, &'a Option<String>)>,
    with_source: bool,
) -> anyhow::Result<Vec<crate::pipeline::mget::Doc>> {
    crate::pipeline::mget::mget_in(
        cluster,
        index,
        ids.map(|(id, routing)| Key::new(id, routing.as_deref())),
        with_source,
    )
    .await
}
