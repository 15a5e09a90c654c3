//! Operator views over the state directory: `status --watch`, one live line per second, and
//! `list`, every migration with its state and its last rollover.

use crate::commands::status::{collect, readiness_line, Status};
use crate::runtime::context::Common;
use crate::state::{Migration, RolloverRecord, StateDir};
use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::time::Duration;

/// One line: state, snapshot progress, rate and ETA, lag (total, seconds, worst partition),
/// dead letters and readiness.
pub fn watch_line(s: &Status) -> String {
    let (copied, total) = s.pairs.iter().fold((0, 0), |(c, t), p| (c + p.copied, t + p.total));
    let done = s.pairs.iter().all(|p| p.done);
    let percent = if done || total == 0 { 100.0 } else { copied as f64 * 100.0 / total as f64 };
    let rate = s.pairs.iter().filter(|p| !p.done).filter_map(|p| p.docs_per_s).fold(0.0, |a, r| a + r);
    let eta = if done {
        "done".to_owned()
    } else {
        s.pairs.iter().filter_map(|p| p.eta_s).max().map_or("-".to_owned(), |e| format!("{e}s"))
    };
    let lag = match s.replay.lag_messages {
        None => "lag ?".to_owned(),
        Some(total) => {
            let secs = s.partitions.iter().filter_map(|p| p.lag_seconds).fold(0.0, f64::max);
            let worst = s.partitions.iter().filter(|p| p.lag_messages.unwrap_or(0) > 0).max_by_key(|p| p.lag_messages);
            match worst {
                Some(w) => format!(
                    "lag {total} events {secs:.1}s (worst partition {}: {})",
                    w.partition,
                    w.lag_messages.unwrap_or(0)
                ),
                None => format!("lag {total} events {secs:.1}s"),
            }
        }
    };
    let dead = s.replay.dead_lettered + s.pairs.iter().map(|p| p.dead_lettered).sum::<u64>();
    format!(
        "{} {} | copied {percent:.1}% {rate:.0} docs/s eta {eta} | {lag} | dead letters {dead} | {}",
        Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        s.state,
        readiness_line(&s.ready)
    )
}

/// Prints [`watch_line`] every second until Ctrl-C, or once the migration is rolled over.
pub async fn watch(common: &Common, name: &str) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let (common, name) = (common.clone(), name.to_owned());
        let s = tokio::task::spawn_blocking(move || collect(&common, &name)).await??;
        println!("{}", watch_line(&s));
        if s.state == crate::state::State::RolledOver.as_str() {
            return Ok(());
        }
    }
}

/// One migration of the state directory, for `list`.
#[derive(Debug, Serialize)]
pub struct Listed {
    pub name: String,
    /// The state, or why the migration's record cannot be read.
    pub state: String,
    pub created_at: Option<DateTime<Utc>>,
    pub pairs: Vec<String>,
    pub cross_cluster: bool,
    pub last_rollover: Option<RolloverRecord>,
    pub last_error: Option<String>,
}

/// Every migration under the state directory, by name.
pub fn list(common: &Common) -> anyhow::Result<Vec<Listed>> {
    let dirs = StateDir::all(&common.state_dir)
        .with_context(|| format!("cannot read the state directory {}", common.state_dir.display()))?;
    Ok(dirs
        .into_iter()
        .map(|dir| match dir.load_migration() {
            Ok(m) => listed(m),
            Err(e) => Listed {
                name: dir.name,
                state: format!("unreadable: {e}"),
                created_at: None,
                pairs: vec![],
                cross_cluster: false,
                last_rollover: None,
                last_error: None,
            },
        })
        .collect())
}

fn listed(m: Migration) -> Listed {
    Listed {
        state: m.state.as_str().to_owned(),
        created_at: Some(m.created_at),
        pairs: m.pairs.iter().map(|p| format!("{} -> {}", p.source, p.target)).collect(),
        cross_cluster: m.cross_cluster,
        last_rollover: m.rollover,
        last_error: m.last_error,
        name: m.name,
    }
}

pub fn print_list(list: &[Listed]) {
    if list.is_empty() {
        println!("no migrations");
        return;
    }
    println!("{:<32} {:<13} {:<20} {:<48} last rollover", "name", "state", "created", "indices");
    for l in list {
        let created = l.created_at.map_or("-".to_owned(), |t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
        let rollover = l.last_rollover.as_ref().map_or("-".to_owned(), |r| {
            format!("{} (write pause {} ms)", r.at.to_rfc3339_opts(SecondsFormat::Secs, true), r.write_pause_ms)
        });
        let pairs = l.pairs.join(", ") + if l.cross_cluster { " (cross-cluster)" } else { "" };
        println!("{:<32} {:<13} {:<20} {:<48} {rollover}", l.name, l.state, created, pairs);
    }
}
