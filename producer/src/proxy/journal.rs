//! The writes in flight, on disk (`--journal`): a line before a write is sent to the
//! cluster, another once its events are published or its answer says they were not. A proxy
//! killed in between leaves a line without its end: a write the cluster may have taken
//! whose event may be missing. The next start counts those gaps, names their documents in
//! its log, and serves the count (`/_indexferry/stats`, the metrics): rollover's reconcile
//! repairs them, and the count says to look before rolling over.
//!
//! Only the process dying is covered (the lines are written, not synced): a machine that
//! loses its page cache loses the journal's last lines too.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub(crate) struct Journal {
    file: Mutex<std::fs::File>,
    next: AtomicU64,
}

/// A write a killed proxy left without its end: what it named.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Gap {
    pub what: String,
}

const FILE: &str = "proxy-journal";

impl Journal {
    /// Reads what an earlier run left unfinished, then starts a new journal in `dir`.
    pub(crate) fn open(dir: &Path) -> anyhow::Result<(Journal, Vec<Gap>)> {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create the journal folder {}: {e}", dir.display()))?;
        let path: PathBuf = dir.join(FILE);
        let gaps = match std::fs::File::open(&path) {
            Ok(f) => unfinished(std::io::BufReader::new(f).lines().map_while(Result::ok)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => anyhow::bail!("cannot read the journal {}: {e}", path.display()),
        };
        if !gaps.is_empty() {
            // Kept for the operator: the next start would otherwise forget them.
            let kept = dir.join(format!("{FILE}.gaps-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S")));
            std::fs::write(&kept, gaps.iter().map(|g| format!("{}\n", g.what)).collect::<String>())
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", kept.display()))?;
        }
        let file = std::fs::File::create(&path).map_err(|e| anyhow::anyhow!("cannot write the journal {}: {e}", path.display()))?;
        Ok((Journal { file: Mutex::new(file), next: AtomicU64::new(1) }, gaps))
    }

    /// Before a write is sent: its number, for [`Journal::end`].
    pub(crate) fn begin(&self, what: &str) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.line(&format!("B {n} {}", what.replace('\n', " ")));
        n
    }

    /// Once the write's events are published, or its answer says they were not.
    pub(crate) fn end(&self, n: u64) {
        self.line(&format!("E {n}"));
    }

    fn line(&self, line: &str) {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = writeln!(f, "{line}") {
            tracing::warn!(error = %e, "cannot write the journal");
        }
    }
}

/// The begun lines without an end.
fn unfinished(lines: impl Iterator<Item = String>) -> Vec<Gap> {
    let mut open = std::collections::BTreeMap::new();
    for line in lines {
        let mut parts = line.splitn(3, ' ');
        match (parts.next(), parts.next().and_then(|n| n.parse::<u64>().ok())) {
            (Some("B"), Some(n)) => {
                open.insert(n, parts.next().unwrap_or_default().to_owned());
            }
            (Some("E"), Some(n)) => {
                open.remove(&n);
            }
            _ => {}
        }
    }
    open.into_values().map(|what| Gap { what }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_begun_and_never_ended_is_a_gap_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (j, gaps) = Journal::open(dir.path()).unwrap();
            assert!(gaps.is_empty());
            let a = j.begin("PUT recs/_doc/1");
            let _b = j.begin("POST _bulk recs/2 recs/3");
            j.end(a);
        }
        let (_, gaps) = Journal::open(dir.path()).unwrap();
        assert_eq!(gaps, vec![Gap { what: "POST _bulk recs/2 recs/3".into() }]);
        // Kept aside, and the new journal starts empty.
        let (_, gaps) = Journal::open(dir.path()).unwrap();
        assert!(gaps.is_empty());
        let kept = std::fs::read_dir(dir.path()).unwrap().filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().contains("gaps")).count();
        assert_eq!(kept, 1);
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let gaps = unfinished(["B 1 a".to_owned(), "E 1".to_owned(), "B 2 b".to_owned(), "E".to_owned()].into_iter());
        assert_eq!(gaps, vec![Gap { what: "b".into() }]);
    }
}
