//! The writes in flight, on disk (`--journal`): a line before a write is sent to the
//! cluster, another once its events are published or its answer says they were not. A proxy
//! killed in between leaves a line without its end: a write the cluster may have taken
//! whose event may be missing. The next start turns each into a gap notice
//! (`indexferry_schemas::gap`), keeps them in a pending file until they are published on the
//! topic (the consumer records them, reconcile looks at their documents again, `status`
//! counts them), keeps their list for the operator, and serves the count
//! (`/_indexferry/stats`, the metrics).
//!
//! Only the process dying is covered (the lines are written, not synced): a machine that
//! loses its page cache loses the journal's last lines too.

use indexferry_schemas::gap::GapNotice;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub(crate) struct Journal {
    file: Mutex<std::fs::File>,
    next: AtomicU64,
    pending: PathBuf,
}

const FILE: &str = "proxy-journal";
/// The gap notices not yet published, one JSON line each.
const PENDING: &str = "proxy-journal.pending";

impl Journal {
    /// Reads what an earlier run left unfinished (as gap notices of `origin`, with those an
    /// earlier start could not publish), then starts a new journal in `dir`.
    pub(crate) fn open(dir: &Path, origin: &str) -> anyhow::Result<(Journal, Vec<GapNotice>)> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create the journal folder {}: {e}", dir.display()))?;
        let path: PathBuf = dir.join(FILE);
        let fresh = match std::fs::File::open(&path) {
            Ok(f) => unfinished(std::io::BufReader::new(f).lines().map_while(Result::ok), origin),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => anyhow::bail!("cannot read the journal {}: {e}", path.display()),
        };
        let pending = dir.join(PENDING);
        let mut gaps: Vec<GapNotice> = match std::fs::read_to_string(&pending) {
            Ok(text) => text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => anyhow::bail!("cannot read {}: {e}", pending.display()),
        };
        if !fresh.is_empty() {
            // Kept for the operator, beyond the notices' publication.
            let kept = dir.join(format!("{FILE}.gaps-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f")));
            std::fs::write(&kept, lines(&fresh))
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", kept.display()))?;
        }
        gaps.extend(fresh);
        if !gaps.is_empty() {
            // Written before the old journal is replaced: a second crash forgets nothing.
            std::fs::write(&pending, lines(&gaps))
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", pending.display()))?;
        }
        let file = std::fs::File::create(&path)
            .map_err(|e| anyhow::anyhow!("cannot write the journal {}: {e}", path.display()))?;
        Ok((Journal { file: Mutex::new(file), next: AtomicU64::new(1), pending }, gaps))
    }

    /// Keeps `gaps`, the notices not yet on the topic, for the next start (none: forgets).
    pub(crate) fn keep_pending(&self, gaps: &[GapNotice]) -> anyhow::Result<()> {
        let done = match gaps.is_empty() {
            true => match std::fs::remove_file(&self.pending) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            },
            false => std::fs::write(&self.pending, lines(gaps)),
        };
        done.map_err(|e| anyhow::anyhow!("cannot write {}: {e}", self.pending.display()))
    }

    /// Before a write is sent: its number, for [`Journal::end`]. `what` is the notice the
    /// write becomes if the proxy dies before its end.
    pub(crate) fn begin(&self, what: &GapNotice) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.line(&format!("B {n} {}", String::from_utf8_lossy(&what.to_json())));
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

fn lines(gaps: &[GapNotice]) -> String {
    gaps.iter().map(|g| format!("{}\n", String::from_utf8_lossy(&g.to_json()))).collect()
}

/// The begun lines without an end, as notices of `origin`.
fn unfinished(lines: impl Iterator<Item = String>, origin: &str) -> Vec<GapNotice> {
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
    open.into_values()
        .map(|what| {
            serde_json::from_str::<GapNotice>(&what)
                .unwrap_or_else(|_| GapNotice::new(origin, &what, chrono::Utc::now()))
        })
        .map(|mut g| {
            g.origin = origin.to_owned();
            g
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexferry_schemas::gap::GapDoc;

    fn notice(request: &str, ids: &[&str]) -> GapNotice {
        let mut g = GapNotice::new("p", request, chrono::Utc::now());
        g.docs = ids.iter().map(|i| GapDoc { index: "recs".into(), id: (*i).into(), routing: None }).collect();
        g
    }

    #[test]
    fn a_write_begun_and_never_ended_is_a_gap_until_its_notice_is_published() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (j, gaps) = Journal::open(dir.path(), "p").unwrap();
            assert!(gaps.is_empty());
            let a = j.begin(&notice("PUT /recs/_doc/1", &["1"]));
            let _b = j.begin(&notice("POST /_bulk", &["2", "3"]));
            j.end(a);
        }
        let (j, gaps) = Journal::open(dir.path(), "p").unwrap();
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].request, "POST /_bulk");
        assert_eq!(gaps[0].docs.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["2", "3"]);
        // Not published yet: the next start (a second crash) has it again, once.
        drop(j);
        let (j, again) = Journal::open(dir.path(), "p").unwrap();
        assert_eq!(again, gaps);
        j.keep_pending(&[]).unwrap();
        let (_, after) = Journal::open(dir.path(), "p").unwrap();
        assert!(after.is_empty());
        let kept = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains("gaps"))
            .count();
        assert_eq!(kept, 1);
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_an_unreadable_one_is_kept_as_its_text() {
        let line = |g: &GapNotice| format!("B 2 {}", String::from_utf8_lossy(&g.to_json()));
        let b = notice("DELETE /recs/_doc/9", &["9"]);
        let gaps = unfinished(["B 1 a".to_owned(), "E 1".to_owned(), line(&b), "E".to_owned()].into_iter(), "q");
        assert_eq!(gaps.len(), 1);
        assert_eq!((gaps[0].origin.as_str(), gaps[0].docs.clone()), ("q", b.docs));
        let gaps = unfinished(["B 7 POST /recs/_doc".to_owned()].into_iter(), "q");
        assert_eq!(gaps[0].request, "POST /recs/_doc");
    }
}
