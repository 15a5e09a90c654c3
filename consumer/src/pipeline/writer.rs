//! Writes batches into the target with external versions, judging each item: applied,
//! stale (409: the target already holds this version or newer — expected), rejected for
//! good (dead-lettered by the caller), or transient (retried here with jittered backoff).
//!
//! A target that answers but refuses work for a while — a write block, 429 — is waited
//! for as long as it takes. A target that does not answer, or refuses whole requests (401,
//! 403, 404), is retried for its cluster's `unreachable_timeout`; then the writer gives up
//! and cancels its worker.
//!
//! A batch returns only when every item has a final outcome, or with [`Cancelled`] on
//! shutdown or giving up — in which case nothing was checkpointed and the batch is sent
//! again later, which external versioning makes harmless.

use bytes::Bytes;
pub use indexferry_common::es::bulk::VersionType;
use indexferry_common::es::bulk::{Action, BodyBuilder, Outcome};
use indexferry_common::es::{is_transient, Cluster};
use indexferry_common::metrics::BULK_SECONDS;
use indexferry_common::retry::Backoff;
use serde_json::value::RawValue;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// One document write (or delete) for the target.
#[derive(Debug, Clone)]
pub struct Doc {
    pub index: String,
    pub id: String,
    /// The source operation's version by the migration's rule (`crate::pipeline::versions`).
    pub version: u64,
    /// `External` but for reconcile's repairs of an index action.
    pub version_type: VersionType,
    pub routing: Option<String>,
    pub source: Option<Box<RawValue>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// Final outcome of each item, in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Final {
    Applied,
    Stale,
    Rejected(String),
}

pub struct Writer {
    cluster: Cluster,
    /// Most documents in one `_bulk` request; a larger batch is sent as several at once.
    request_docs: usize,
    /// Why it gave up, once it did (and cancelled the worker).
    gave_up: std::sync::Mutex<Option<String>>,
    phase: &'static str,
    cancel: CancellationToken,
}

impl Writer {
    pub fn new(cluster: Cluster, phase: &'static str, cancel: CancellationToken) -> Self {
        Writer { cluster, phase, cancel, request_docs: 1000, gave_up: std::sync::Mutex::new(None) }
    }

    /// Why the writer gave up, if it did: the worker must fail with this, not stop quietly.
    pub fn gave_up(&self) -> Option<String> {
        self.gave_up.lock().ok().and_then(|g| g.clone())
    }

    /// `Err` with why the writer gave up, if it did.
    pub fn check(&self) -> anyhow::Result<()> {
        match self.gave_up() {
            Some(why) => Err(anyhow::anyhow!(why)),
            None => Ok(()),
        }
    }

    pub async fn write(&self, docs: &[Doc]) -> Result<Vec<Final>, Cancelled> {
        let mut batch = Batch {
            docs,
            outcomes: vec![None; docs.len()],
            chunk: docs.len().clamp(1, self.request_docs),
            unreachable_since: None,
        };
        let mut pending: Vec<usize> = (0..docs.len()).collect();
        let mut backoff = Backoff::standard(None);
        while !pending.is_empty() {
            // The parts of a batch are sent at once: the target indexes them in parallel.
            let parts: Vec<&[usize]> = pending.chunks(batch.chunk).collect();
            let answers = futures::future::join_all(parts.iter().map(|part| self.send(body(docs, part)))).await;
            let mut round = Round::default();
            for (part, answer) in parts.into_iter().zip(answers) {
                self.judge(&mut batch, &mut round, part, answer)?;
            }
            pending = round.retry;
            self.report_item_retries(round.item_retry, pending.len());
            if round.backoff {
                indexferry_common::metrics::retry(self.cluster.role(), self.phase);
                let delay = backoff.next_delay().unwrap_or(Duration::from_secs(10));
                tokio::select! {
                    _ = self.cancel.cancelled() => return Err(Cancelled),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
        Ok(batch.outcomes.into_iter().map(|o| o.unwrap_or(Final::Rejected("no outcome".into()))).collect())
    }

    /// What the target's answer to one part of a round says of its items: final outcomes go
    /// into the batch, items to send again into the round. `Err` once the target has failed
    /// for longer than its `unreachable_timeout`: the writer gives up and cancels its worker.
    fn judge<'d>(
        &self,
        batch: &mut Batch<'d>,
        round: &mut Round<'d>,
        part: &[usize],
        answer: Result<Vec<Outcome>, SendError>,
    ) -> Result<(), Cancelled> {
        let docs = batch.docs;
        match answer {
            Ok(items) if items.len() == part.len() => {
                batch.unreachable_since = None;
                for (&i, outcome) in part.iter().zip(items) {
                    match outcome {
                        Outcome::Applied => batch.outcomes[i] = Some(Final::Applied),
                        Outcome::Stale => batch.outcomes[i] = Some(Final::Stale),
                        Outcome::Rejected(r) => batch.outcomes[i] = Some(Final::Rejected(r)),
                        Outcome::Retry(reason) => {
                            tracing::debug!(phase = self.phase, id = %docs[i].id, %reason, "item will be retried");
                            round.item_retry.get_or_insert((docs[i].index.as_str(), reason));
                            round.again(&[i], true);
                        }
                    }
                }
            }
            Ok(items) => {
                tracing::warn!(
                    phase = self.phase,
                    sent = part.len(),
                    got = items.len(),
                    "bulk answer has the wrong number of items; resending"
                );
                round.again(part, true);
            }
            Err(SendError::TooLarge) if part.len() == 1 => {
                batch.outcomes[part[0]] = Some(Final::Rejected(
                    "document too large: the target refused the request (413 request entity too large)".into(),
                ));
            }
            Err(SendError::TooLarge) => {
                // Items per request, halved when the target says the request is too large.
                batch.chunk = (part.len() / 2).max(1);
                round.again(part, false);
            }
            Err(SendError::Busy(reason)) => {
                // It answered: busy is not unreachable.
                batch.unreachable_since = None;
                tracing::warn!(phase = self.phase, %reason, "the target is busy; retrying");
                round.again(part, true);
            }
            Err(SendError::Failing { reason, refused }) => {
                self.failing(&mut batch.unreachable_since, &reason, refused)?;
                round.again(part, true);
            }
            Err(SendError::Final(reason)) => {
                for &i in part {
                    batch.outcomes[i] = Some(Final::Rejected(reason.clone()));
                }
            }
        }
        Ok(())
    }

    /// A request the target did not answer or refused whole: retried, until it has been so
    /// for the cluster's `unreachable_timeout`; then the writer gives up, says why, and
    /// cancels its worker.
    fn failing(&self, since: &mut Option<Instant>, reason: &str, refused: bool) -> Result<(), Cancelled> {
        crate::runtime::health::failing(self.cluster.role(), reason);
        let since = *since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.cluster.unreachable_timeout() {
            let why = format!(
                "the {} cluster {} for {}: {reason}",
                self.cluster.role(),
                if refused { "refused every request" } else { "did not answer" },
                humantime::format_duration(Duration::from_secs(since.elapsed().as_secs()))
            );
            if let Ok(mut g) = self.gave_up.lock() {
                g.get_or_insert(why);
            }
            self.cancel.cancel();
            return Err(Cancelled);
        }
        tracing::warn!(phase = self.phase, %reason, "bulk request failed; retrying");
        Ok(())
    }

    /// Items the target refused for now keep the batch (and the worker) waiting: the log and
    /// `status` say why, until a round goes through without them.
    fn report_item_retries(&self, first: Option<(&str, String)>, pending: usize) {
        let what = format!("{} writes", self.cluster.role());
        match first {
            Some((index, reason)) => {
                tracing::warn!(phase = self.phase, %index, pending, %reason, "the target refused items for now; retrying");
                crate::runtime::health::failing(&what, &format!("index {index}: {reason}"));
            }
            None => crate::runtime::health::ok(&what),
        }
    }

    async fn send(&self, body: Bytes) -> Result<Vec<Outcome>, SendError> {
        let started = Instant::now();
        let result = self.cluster.bulk_statuses("/_bulk", body).await;
        metrics::histogram!(BULK_SECONDS, "phase" => self.phase).record(started.elapsed().as_secs_f64());
        let role = self.cluster.role();
        match result {
            Ok(r) => {
                crate::runtime::health::ok(role);
                Ok(r.items.iter().map(|i| i.outcome()).collect())
            }
            Err(e) if e.status() == Some(413) => Err(SendError::TooLarge),
            Err(e) if e.status() == Some(429) => Err(SendError::Busy(e.to_string())),
            Err(e) if is_transient(&e) => Err(SendError::Failing { reason: e.to_string(), refused: false }),
            // A whole request refused for good (index missing, bad credentials) is not one
            // document's fault: keep retrying and let the operator see it in status.
            Err(e) if matches!(e.status(), Some(401 | 403 | 404)) => {
                Err(SendError::Failing { reason: e.to_string(), refused: true })
            }
            Err(e) => Err(SendError::Final(e.to_string())),
        }
    }
}

/// One call of [`Writer::write`]: each item's outcome once final, and what carries from one
/// round of requests to the next.
struct Batch<'d> {
    docs: &'d [Doc],
    outcomes: Vec<Option<Final>>,
    /// Items per request; halved when the target says the request is too large.
    chunk: usize,
    /// Since when the target has failed every request (none while it answers).
    unreachable_since: Option<Instant>,
}

/// What one round of requests leaves for the next.
#[derive(Default)]
struct Round<'d> {
    /// The items to send again.
    retry: Vec<usize>,
    /// Whether to wait (with backoff) before the next round.
    backoff: bool,
    /// The first item refused for now (busy, or its index closed or missing): said once a round.
    item_retry: Option<(&'d str, String)>,
}

impl Round<'_> {
    fn again(&mut self, items: &[usize], backoff: bool) {
        self.retry.extend_from_slice(items);
        self.backoff |= backoff;
    }
}

/// The `_bulk` body of the items `part` of `docs`.
fn body(docs: &[Doc], part: &[usize]) -> Bytes {
    let mut body = BodyBuilder::with_capacity(part.len() * 1200);
    for &i in part {
        let d = &docs[i];
        body.push(&Action {
            index: &d.index,
            id: &d.id,
            version: d.version,
            version_type: d.version_type,
            routing: d.routing.as_deref(),
            source: d.source.as_deref().map(RawValue::get),
        });
    }
    body.finish()
}

enum SendError {
    TooLarge,
    /// The whole request was refused with 429: waited for.
    Busy(String),
    /// No answer (or a 5xx), or the whole request refused: retried for `unreachable_timeout`.
    Failing {
        reason: String,
        refused: bool,
    },
    Final(String),
}
