//! The nodes of one cluster, as the recipe lists them, with failover between them.
//!
//! The `elasticsearch` crate's `MultiNodeConnectionPool` hands out its nodes in turn and
//! knows nothing of failures: a node that refuses connections would fail every n-th request.
//! So each URL gets its own client, requests go to the node that answered last, and a request
//! whose connection fails (refused, reset, DNS, TLS handshake: nothing reached the node) is
//! sent again at once to the next URL, until every URL was tried once. Any other transport
//! failure (a timeout) moves the next request to the next URL and is returned to the caller,
//! whose retry then lands there.

use crate::Error;
use elasticsearch::Elasticsearch;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(super) struct Node {
    pub(super) client: Elasticsearch,
    /// Without credentials, for messages.
    pub(super) url: String,
}

pub(super) struct Nodes {
    list: Vec<Node>,
    /// The node requests go to first: the one that answered last.
    current: AtomicUsize,
}

impl Nodes {
    pub(super) fn new(list: Vec<Node>) -> Nodes {
        Nodes { list, current: AtomicUsize::new(0) }
    }

    pub(super) fn get(&self, i: usize) -> &Node {
        &self.list[i]
    }

    /// Every URL, comma-separated, for messages.
    pub(super) fn urls(&self) -> String {
        self.list.iter().map(|n| n.url.as_str()).collect::<Vec<_>>().join(",")
    }

    /// The order in which one request tries the nodes.
    pub(super) fn order(&self) -> Vec<usize> {
        failover_order(self.current.load(Ordering::Relaxed), self.list.len())
    }

    /// Node `i` answered: later requests go there first.
    pub(super) fn answered(&self, i: usize, role: &str) {
        let before = self.current.swap(i, Ordering::Relaxed);
        if before != i {
            tracing::info!(cluster = role, url = %self.list[i].url, "requests now go to this node");
        }
    }

    /// Node `i` failed in a way that may not be a dead node: the next request starts at
    /// the next one (unless another request already moved on).
    pub(super) fn failed(&self, i: usize) {
        let next = (i + 1) % self.list.len().max(1);
        let _ = self.current.compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub(super) fn len(&self) -> usize {
        self.list.len()
    }
}

/// `n` nodes tried from `current` on, wrapping around.
pub(super) fn failover_order(current: usize, n: usize) -> Vec<usize> {
    (0..n).map(|k| (current + k) % n).collect()
}

/// True when the request never reached the node (refused, reset, name not resolved,
/// TLS handshake failed): sending it to another node cannot apply it twice.
pub(super) fn is_connect_error(e: &elasticsearch::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<reqwest::Error>() {
            return r.is_connect();
        }
        source = s.source();
    }
    false
}

/// A client error with its innermost cause ("connection refused"), which its own message
/// leaves out.
pub(super) fn describe(e: &elasticsearch::Error) -> String {
    let mut cause = std::error::Error::source(e);
    let mut innermost = None;
    while let Some(c) = cause {
        innermost = Some(c);
        cause = c.source();
    }
    match innermost.map(|c| c.to_string()) {
        Some(c) if !e.to_string().contains(&c) => format!("{e}: {c}"),
        _ => e.to_string(),
    }
}

/// The error of a request that failed on every node, naming each with its failure.
pub(super) fn all_failed(role: &str, failures: &[(String, String)]) -> Error {
    let message = match failures {
        [(url, e)] => format!("request to {url} failed: {e}"),
        _ => format!(
            "request failed on every node: {}",
            failures.iter().map(|(url, e)| format!("{url}: {e}")).collect::<Vec<_>>().join("; ")
        ),
    };
    Error::Cluster { cluster: role.into(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_starts_at_the_node_that_answered_last_and_wraps() {
        assert_eq!(failover_order(0, 3), vec![0, 1, 2]);
        assert_eq!(failover_order(2, 3), vec![2, 0, 1]);
        assert_eq!(failover_order(0, 1), vec![0]);
        assert!(failover_order(0, 0).is_empty());
    }

    #[test]
    fn a_failure_moves_on_only_from_the_node_that_failed() {
        let client = || Elasticsearch::default();
        let nodes = Nodes::new(vec![
            Node { client: client(), url: "http://a".into() },
            Node { client: client(), url: "http://b".into() },
        ]);
        nodes.failed(0);
        assert_eq!(nodes.order(), vec![1, 0]);
        nodes.failed(0);
        assert_eq!(nodes.order(), vec![1, 0], "another request already moved on");
        nodes.answered(0, "t");
        assert_eq!(nodes.order(), vec![0, 1]);
        assert_eq!(nodes.urls(), "http://a,http://b");
    }

    #[test]
    fn the_error_names_every_node() {
        let e = all_failed("source", &[("http://a".into(), "refused".into()), ("http://b".into(), "reset".into())]);
        assert_eq!(e.to_string(), "source cluster: request failed on every node: http://a: refused; http://b: reset");
        let e = all_failed("source", &[("http://a".into(), "refused".into())]);
        assert_eq!(e.to_string(), "source cluster: request to http://a failed: refused");
    }
}
