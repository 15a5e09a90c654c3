//! The writes in flight, numbered in the order they are sent to the cluster: rollover's
//! drain signal (`GET /_indexferry/inflight`).
//!
//! A ticket is taken before a write is sent and given back once the write's events are
//! published, or its answer says it was not taken (a write block, a full queue: the write is
//! held and sent again under a new ticket). A rollover that has blocked the source reads
//! `next`, then waits until `oldest` is past it: every write the cluster may have taken
//! before the block then has its event in Kafka, and no grace is needed to wait for it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub(crate) struct Inflight {
    /// This run's own number: another one after a restart, so that a rollover polling across
    /// one is not misled by the numbering starting again.
    run: u64,
    next: AtomicU64,
    open: Mutex<BTreeSet<u64>>,
}

/// One write's place in [`Inflight`], given back when dropped.
pub(crate) struct Ticket<'a> {
    n: u64,
    of: &'a Inflight,
}

impl Inflight {
    pub(crate) fn new() -> Inflight {
        Inflight { run: rand::random(), next: AtomicU64::new(0), open: Mutex::new(BTreeSet::new()) }
    }

    /// Before a write is sent.
    pub(crate) fn take(&self) -> Ticket<'_> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        // Numbered under the lock: a ticket is never taken with a number below one already open.
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        open.insert(n);
        Ticket { n, of: self }
    }

    /// `(run, next, oldest open)`: every write numbered below `next` has been sent; none
    /// below `oldest` is still in flight.
    pub(crate) fn snapshot(&self) -> (u64, u64, Option<u64>) {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        (self.run, self.next.load(Ordering::Relaxed), open.first().copied())
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.of.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_open_ticket_is_what_a_drain_waits_for() {
        let f = Inflight::new();
        let a = f.take();
        let b = f.take();
        let (_, next, oldest) = f.snapshot();
        assert_eq!((next, oldest), (2, Some(0)));
        drop(a);
        assert_eq!(f.snapshot().2, Some(1));
        let c = f.take();
        drop(b);
        // Written after the drain read `next` = 2: not waited for.
        assert_eq!(f.snapshot().2, Some(2));
        drop(c);
        assert_eq!(f.snapshot().2, None);
    }
}
