//! Retry classification and jittered exponential backoff.
//!
//! 429 and 5xx are transient and retried; a write block (`cluster_block_exception`, 403) is
//! an operator's temporary pause and retried too; every other 4xx is final. Bulk items are
//! judged one by one from the typed response (see [`crate::es::bulk`]) by [`classify_item`]:
//! an item refused because of its index (missing, closed) is retried as well, since no other
//! document of that index could be written either and dead-lettering them all would lose them.

use rand::Rng;
use std::time::Duration;

/// What to do with a failed request or bulk item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Retry,
    Final,
}

/// Error types that mean "not now" even though the status is a 4xx.
const TRANSIENT_TYPES: &[&str] = &[
    "cluster_block_exception",
    "es_rejected_execution_exception",
    "rejected_execution_exception",
    "circuit_breaking_exception",
    "unavailable_shards_exception",
    "no_shard_available_action_exception",
    "process_cluster_event_timeout_exception",
];

/// Bulk item errors about the index rather than the document: the index is closed, or gone
/// (a delete does not create a missing index). An operator's doing, undone by reopening or
/// recreating it; retried for as long as it lasts. Whole requests that fail this way are
/// not retried by [`classify`]: an existence check must see a missing index at once.
const INDEX_TYPES: &[&str] = &["index_not_found_exception", "index_closed_exception"];

pub fn classify(status: u16, error_type: Option<&str>) -> Verdict {
    match status {
        429 | 500..=599 => Verdict::Retry,
        408 => Verdict::Retry,
        _ if error_type.is_some_and(|t| TRANSIENT_TYPES.contains(&t)) => Verdict::Retry,
        _ => Verdict::Final,
    }
}

/// One bulk item's error: as [`classify`], and an error about the index is retried too.
pub fn classify_item(status: u16, error_type: Option<&str>) -> Verdict {
    if is_index_error(error_type) {
        return Verdict::Retry;
    }
    classify(status, error_type)
}

/// The error is about the index (missing, closed), not the document.
pub fn is_index_error(error_type: Option<&str>) -> bool {
    error_type.is_some_and(|t| INDEX_TYPES.contains(&t))
}

/// Exponential backoff with full jitter, capped per attempt and in total.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max_delay: Duration,
    /// Give up once this much time has been spent waiting; `None` retries forever.
    pub max_elapsed: Option<Duration>,
    attempt: u32,
    waited: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max_delay: Duration, max_elapsed: Option<Duration>) -> Self {
        Backoff { initial, max_delay, max_elapsed, attempt: 0, waited: Duration::ZERO }
    }

    /// The default for cluster and Kafka calls: 100 ms doubling up to 10 s.
    pub fn standard(max_elapsed: Option<Duration>) -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10), max_elapsed)
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The next delay, or `None` once the budget is spent.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let ceiling = self.initial.saturating_mul(1u32 << self.attempt.min(16)).min(self.max_delay);
        self.attempt += 1;
        let delay = Duration::from_secs_f64(ceiling.as_secs_f64() * rand::rng().random_range(0.5..=1.0));
        if let Some(max) = self.max_elapsed {
            if self.waited >= max {
                return None;
            }
        }
        self.waited += delay;
        Some(delay)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
        self.waited = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify(429, None), Verdict::Retry);
        assert_eq!(classify(503, None), Verdict::Retry);
        assert_eq!(classify(500, Some("anything")), Verdict::Retry);
        assert_eq!(classify(403, Some("cluster_block_exception")), Verdict::Retry);
        assert_eq!(classify(403, Some("security_exception")), Verdict::Final);
        assert_eq!(classify(400, Some("mapper_parsing_exception")), Verdict::Final);
        assert_eq!(classify(404, Some("index_not_found_exception")), Verdict::Final);
        assert_eq!(classify(409, Some("version_conflict_engine_exception")), Verdict::Final);
    }

    #[test]
    fn items_refused_because_of_their_index_are_retried() {
        assert_eq!(classify_item(404, Some("index_not_found_exception")), Verdict::Retry);
        assert_eq!(classify_item(400, Some("index_closed_exception")), Verdict::Retry);
        assert_eq!(classify_item(400, Some("document_parsing_exception")), Verdict::Final);
        assert_eq!(classify_item(403, Some("cluster_block_exception")), Verdict::Retry);
        assert_eq!(classify_item(400, None), Verdict::Final);
    }

    #[test]
    fn backoff_grows_with_jitter_and_stops() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), Some(Duration::from_secs(3)));
        let delays: Vec<_> = std::iter::from_fn(|| b.next_delay()).take(100).collect();
        assert!(delays.len() < 100, "gives up once the budget is spent");
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(delays[4] >= Duration::from_millis(500), "doubles up to the cap: {delays:?}");
        let total: Duration = delays.iter().sum();
        assert!(total >= Duration::from_secs(3) && total < Duration::from_secs(5), "{total:?}");
    }
}
