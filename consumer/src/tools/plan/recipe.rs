//! Recipes written by `plan`: one per alias group (indices linked by aliases migrate
//! together), ready for `indexferry migration init`, with the rewrites and the estimate as
//! comments, and the mappings and settings in JSON files next to them.

use super::daily::PatternPlan;
use super::inventory::{Alias, Index};
use super::IndexPlan;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The snapshot's bulk requests aim at about this many bytes: large enough to amortise a
/// request, small enough to stay far below `http.max_content_length` (100 MB).
const TARGET_BULK_BYTES: u64 = 5 << 20;

/// What the plan suggests for one index, from the sample's throughput.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    /// Documents per second the target took in the sample, over one bulk stream.
    pub sample_docs_per_s: f64,
    /// Snapshot time over one stream...
    pub snapshot_seconds_one_stream: f64,
    /// ...and over the suggested slices, if the target keeps up (it may not: the sample's
    /// rate is an upper bound per stream, not a promise for several).
    pub snapshot_seconds: f64,
    pub slices: u32,
    pub batch_size: usize,
    /// Partitions the change-event topic should have.
    pub partitions: u32,
    /// `rollover.max_lag`: what the consumer drains in about 5 s at the sample's rate, well
    /// inside the default 20 s `drain_timeout`.
    pub max_lag: u64,
}

pub fn estimate(index: &Index, docs_per_s: f64, avg_doc_bytes: u64) -> Estimate {
    let slices = if index.docs < 50_000 { 1 } else { index.shards.clamp(2, 8) };
    // Never above the default, the best `dev/bench` measured; lower for large documents.
    let most = indexferry_common::config::SnapshotConfig::default().batch_size as u64;
    let batch = (TARGET_BULK_BYTES / avg_doc_bytes.max(1)).clamp(100, most) / 100 * 100;
    let rate = docs_per_s.max(1.0);
    let partitions = match index.docs {
        0..10_000_000 => 3,
        10_000_000..100_000_000 => 6,
        _ => 12,
    };
    let max_lag = ((rate * 5.0) as u64).clamp(1000, 100_000) / 100 * 100;
    Estimate {
        sample_docs_per_s: (rate * 10.0).round() / 10.0,
        snapshot_seconds_one_stream: (index.docs as f64 / rate).ceil(),
        snapshot_seconds: (index.docs as f64 / (rate * f64::from(slices))).ceil(),
        slices,
        batch_size: batch as usize,
        partitions,
        max_lag,
    }
}

/// Indices linked by aliases, each group named after its first alias (or its index).
pub fn groups(indices: &[&Index], aliases: &[Alias]) -> BTreeMap<String, Vec<String>> {
    let mut group_of: BTreeMap<String, usize> = indices.iter().enumerate().map(|(i, x)| (x.name.clone(), i)).collect();
    let mut by_alias: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for a in aliases.iter().filter(|a| group_of.contains_key(&a.index)) {
        by_alias.entry(&a.name).or_default().push(&a.index);
    }
    // Union by relabelling: the sets are small (an alias group is a handful of indices).
    for members in by_alias.values() {
        let label = members.iter().filter_map(|m| group_of.get(*m)).copied().min().unwrap_or(0);
        let old: Vec<usize> = members.iter().filter_map(|m| group_of.get(*m)).copied().collect();
        for v in group_of.values_mut() {
            if old.contains(v) {
                *v = label;
            }
        }
    }
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut labels: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (name, label) in group_of {
        labels.entry(label).or_default().push(name);
    }
    for members in labels.into_values() {
        let first_alias =
            by_alias.iter().find(|(_, m)| m.iter().any(|x| members.iter().any(|y| y == x))).map(|(a, _)| *a);
        let name = first_alias.map(str::to_owned).unwrap_or_else(|| members[0].clone());
        out.insert(sanitize(&name), members);
    }
    out
}

/// The alias the application writes `index` through: one that names it alone, the write
/// alias first.
pub fn own_alias<'a>(index: &str, aliases: &'a [Alias]) -> Option<&'a Alias> {
    let alone = |a: &&Alias| aliases.iter().filter(|b| b.name == a.name).count() == 1;
    let mine: Vec<&Alias> = aliases.iter().filter(|a| a.index == index).filter(alone).collect();
    mine.iter().find(|a| a.is_write_index == Some(true)).or(mine.first()).copied()
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

/// `logs-2024.05.01`, `logs-20240501`: a name ending in a date.
pub fn looks_daily(name: &str) -> bool {
    let digits: String = name.chars().rev().take_while(|c| c.is_ascii_digit() || ".-_".contains(*c)).collect();
    digits.chars().filter(char::is_ascii_digit).count() >= 8
}

/// How the recipe reaches a cluster; secrets stay in the environment.
pub struct Credentials {
    pub username: Option<String>,
    pub ca_cert: Option<String>,
    /// `SOURCE` or `TARGET`, for the environment variables' names.
    pub role: String,
}

impl Credentials {
    fn write(&self, t: &mut String) {
        if let Some(u) = &self.username {
            let _ = writeln!(t, "# password: set INDEXFERRY_{}_PASSWORD\nusername = {}", self.role, quote(u));
        }
        if let Some(ca) = &self.ca_cert {
            let _ = writeln!(t, "ca_cert = {}", quote(ca));
        }
    }
}

pub struct Clusters<'a> {
    pub source_url: &'a str,
    pub source: Credentials,
    pub target_url: Option<&'a str>,
    pub target: Credentials,
    pub header: String,
    pub brokers: &'a str,
    pub topic: &'a str,
}

/// Writes `<group>.toml` and its `<index>.mappings.json` / `.settings.json` into `out`; the
/// members of a pattern entry are written as that one entry.
pub fn write(
    out: &Path,
    group: &str,
    plans: &[&IndexPlan],
    patterns: &[&PatternPlan],
    clusters: &Clusters<'_>,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    let mut t = String::new();
    let _ = writeln!(t, "# Written by `indexferry plan`: {}", clusters.header);
    let _ = writeln!(t, "name = {}", quote(group));
    let rule = indexferry_common::config::VersionRule::Source;
    let _ = writeln!(t, "# versions: {}; \"seq_no\" instead gives that up (README: Versions)", rule.consequence());
    let _ = writeln!(t, "versions = {}", quote(rule.as_str()));
    let _ = writeln!(t, "\n[source]\nurl = {}", urls(clusters.source_url));
    clusters.source.write(&mut t);
    if let Some(u) = clusters.target_url {
        let _ = writeln!(t, "\n[target]\nurl = {}", urls(u));
        clusters.target.write(&mut t);
    }
    let _ = writeln!(t, "\n[kafka]\nbrokers = {}\ntopic = {}", quote(clusters.brokers), quote(clusters.topic));
    for e in patterns {
        pattern(&mut t, out, e, plans)?;
    }
    for p in plans.iter().filter(|p| !patterns.iter().any(|e| e.members.contains(&p.index.name))) {
        pair(&mut t, out, p)?;
    }
    let widest = plans.iter().filter_map(|p| p.estimate.as_ref()).max_by_key(|e| e.slices);
    if let Some(e) = widest {
        let total: f64 = plans.iter().filter_map(|p| p.estimate.as_ref()).map(|e| e.snapshot_seconds).sum();
        let _ = writeln!(
            t,
            "\n# Estimate: the sample went in at {} docs/s over one stream; the snapshot takes about {} over {} \
             slice(s) if the target keeps up. The topic should have {} partitions or more.",
            e.sample_docs_per_s,
            humantime::format_duration(std::time::Duration::from_secs(total as u64)),
            e.slices,
            e.partitions
        );
        let _ = writeln!(t, "[snapshot]\nslices = {}\nbatch_size = {}", e.slices, e.batch_size);
        let _ = writeln!(
            t,
            "\n# What the consumer drains in about 5 s at the sample's rate.\n[rollover]\nmax_lag = {}",
            e.max_lag
        );
    }
    let path = out.join(format!("{group}.toml"));
    std::fs::write(&path, t).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

fn pair(t: &mut String, out: &Path, p: &IndexPlan) -> anyhow::Result<()> {
    let i = &p.index;
    let _ = writeln!(
        t,
        "\n# {}: {} documents, {} bytes, {} shard(s), {} replica(s)",
        i.name, i.docs, i.size_bytes, i.shards, i.replicas
    );
    for r in &p.rewrites {
        let _ = writeln!(t, "# rewrite [{}] {}: {} -> {}\n#   {}", r.rule, r.path, r.from, r.to, r.why);
    }
    match &p.proof {
        Some(proof) if proof.created && proof.rejections.is_empty() => {
            let _ = writeln!(
                t,
                "# proven on the target: index created, {}/{} sample documents accepted",
                proof.accepted, proof.sampled
            );
        }
        Some(proof) => {
            for r in &proof.rejections {
                let _ = writeln!(t, "# REJECTED by the target ({}, {}x): {}", r.stage, r.count, r.reason);
            }
        }
        None => {}
    }
    if !p.aliases.is_empty() {
        let _ = writeln!(t, "# Every alias of the index moves at rollover: {}", p.aliases.join(", "));
    }
    for d in &p.decisions {
        let _ = writeln!(t, "# DECISION NEEDED: {d}");
    }
    let stem = sanitize(&i.name);
    let mappings = format!("{stem}.mappings.json");
    let settings = format!("{stem}.settings.json");
    std::fs::write(out.join(&mappings), serde_json::to_vec_pretty(&p.mappings)?)?;
    std::fs::write(out.join(&settings), serde_json::to_vec_pretty(&p.settings)?)?;
    let _ = writeln!(t, "[[indices]]\nsource = {}\ntarget = {}", quote(&i.name), quote(&p.target_name));
    let alias = p.alias.as_deref().unwrap_or("CHOOSE-AN-ALIAS");
    let _ = writeln!(
        t,
        "alias = {}\nmappings_file = {}\nsettings_file = {}",
        quote(alias),
        quote(&mappings),
        quote(&settings)
    );
    Ok(())
}

/// One entry for daily indices: tomorrow's index matches it too.
fn pattern(t: &mut String, out: &Path, e: &PatternPlan, plans: &[&IndexPlan]) -> anyhow::Result<()> {
    let _ = writeln!(
        t,
        "\n# {} indices look daily ({}): one pattern entry covers them, and the days to come \
         (`indexferry migration add` takes one created after init).",
        e.members.len(),
        e.members.join(", ")
    );
    let _ = writeln!(
        t,
        "# Mappings and settings: those of {} (the newest), converted; init lays them over each matched index's own.",
        e.representative
    );
    for p in plans.iter().filter(|p| p.index.name == e.representative) {
        for r in &p.rewrites {
            let _ = writeln!(t, "# rewrite [{}] {}: {} -> {}\n#   {}", r.rule, r.path, r.from, r.to, r.why);
        }
    }
    for m in &e.proofs {
        let _ = writeln!(t, "# {}: {}", m.index, super::daily_proof(m));
    }
    let _ = writeln!(t, "# Every alias of every matched index moves at rollover: {}", e.aliases.join(", "));
    let members = plans.iter().filter(|p| e.members.contains(&p.index.name));
    for d in members.flat_map(|p| p.decisions.iter().map(move |d| format!("{}: {d}", p.index.name))) {
        let _ = writeln!(t, "# DECISION NEEDED: {d}");
    }
    for d in &e.decisions {
        let _ = writeln!(t, "# DECISION NEEDED: {d}");
    }
    let stem = sanitize(&e.pattern);
    let mappings = format!("{stem}.mappings.json");
    let settings = format!("{stem}.settings.json");
    std::fs::write(out.join(&mappings), serde_json::to_vec_pretty(&e.mappings)?)?;
    std::fs::write(out.join(&settings), serde_json::to_vec_pretty(&e.settings)?)?;
    let _ = writeln!(t, "[[indices]]\nsource = {}\ntarget = {}", quote(&e.pattern), quote(&e.target));
    if !e.exclude.is_empty() {
        let all: Vec<String> = e.exclude.iter().map(|x| quote(x)).collect();
        let _ = writeln!(t, "exclude = [{}]", all.join(", "));
    }
    let _ = writeln!(t, "mappings_file = {}\nsettings_file = {}", quote(&mappings), quote(&settings));
    Ok(())
}

/// A cluster's comma-separated node URLs as the recipe's `url`: a string, or a list.
fn urls(list: &str) -> String {
    let all: Vec<String> = list.split(',').map(quote).collect();
    if all.len() == 1 {
        all[0].clone()
    } else {
        format!("[{}]", all.join(", "))
    }
}

/// A TOML basic string: JSON's escaping is valid TOML.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_names() {
        assert!(looks_daily("logs-2024.05.01") && looks_daily("logs-20240501"));
        assert!(!looks_daily("orders-v2") && !looks_daily("logs-2024"));
    }
}
