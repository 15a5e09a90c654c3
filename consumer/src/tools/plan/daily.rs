//! Daily indices in a plan: indices of one alias group whose names differ only by a trailing
//! date become one recipe pattern entry (`source = "stats-*"`, `target = "{source}"`), so that
//! tomorrow's index is covered too. The entry carries the newest index's converted mappings
//! and settings, which `init` lays over each matched index's own: each day is proven on the
//! target with exactly that (its own proof stands when it comes out the same).

use super::prove::{self, Proof};
use super::{IndexPlan, EXISTS_ON_TARGET, NO_OWN_ALIAS};
use crate::recipe::patterns;
use indexferry_common::config::IndexPair;
use indexferry_common::es::{Cluster, Method};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One pattern entry of a recipe.
#[derive(Debug, Clone, Serialize)]
pub struct PatternPlan {
    /// The recipe (alias group) it is written into.
    pub group: String,
    pub pattern: String,
    /// The target template.
    pub target: String,
    /// The planned indices it matches, oldest first.
    pub members: Vec<String>,
    /// Indices it matches on the source that are not part of this plan.
    pub exclude: Vec<String>,
    /// Whose converted mappings and settings the entry carries: the newest member.
    pub representative: String,
    /// Every alias of the members: all move at rollover.
    pub aliases: Vec<String>,
    /// How each member was proven with what `init` creates it with.
    pub proofs: Vec<MemberProof>,
    pub decisions: Vec<String>,
    #[serde(skip)]
    pub mappings: Value,
    #[serde(skip)]
    pub settings: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberProof {
    pub index: String,
    /// `own`: the entry gives the index its own converted mapping and settings, already
    /// proven; `entry`: proven again with the entry's laid over the index's.
    pub by: &'static str,
    pub proof: Option<Proof>,
}

/// The clusters and options a pattern entry is planned with.
pub struct Ctx<'a> {
    pub source: &'a Cluster,
    pub target: &'a Cluster,
    pub cross: bool,
    pub sample: usize,
    pub target_indices: &'a BTreeSet<String>,
}

/// `logs-2026.11.01` → `logs-`: the name up to its trailing date, when it ends in one.
pub fn date_prefix(name: &str) -> Option<&str> {
    if !super::recipe::looks_daily(name) {
        return None;
    }
    let tail = name.chars().rev().take_while(|c| c.is_ascii_digit() || ".-_".contains(*c)).count();
    let head = &name[..name.len() - tail];
    let separators = name[head.len()..].chars().take_while(|c| !c.is_ascii_digit()).count();
    let prefix = &name[..head.len() + separators];
    (!prefix.is_empty()).then_some(prefix)
}

/// The pattern entries of every alias group: one per date prefix shared by two indices or more.
pub async fn plan(
    ctx: &Ctx<'_>,
    groups: &BTreeMap<String, Vec<String>>,
    plans: &mut [IndexPlan],
) -> anyhow::Result<Vec<PatternPlan>> {
    let mut out = vec![];
    for (group, members) in groups {
        let mut by_prefix: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for m in members {
            if let Some(p) = date_prefix(m) {
                by_prefix.entry(p).or_default().push(m.clone());
            }
        }
        for (prefix, mut days) in by_prefix.into_iter().filter(|(_, d)| d.len() > 1) {
            days.sort();
            out.push(entry(ctx, group, prefix, days, plans).await?);
        }
    }
    Ok(out)
}

async fn entry(
    ctx: &Ctx<'_>,
    group: &str,
    prefix: &str,
    days: Vec<String>,
    plans: &mut [IndexPlan],
) -> anyhow::Result<PatternPlan> {
    let pattern = format!("{prefix}*");
    let target = if ctx.cross { "{source}" } else { "migrated-{source}" };
    let representative = days.last().cloned().unwrap_or_default();
    let rep = plans.iter().find(|p| p.index.name == representative);
    let (mappings, settings) = rep.map(|p| (p.mappings.clone(), p.settings.clone())).unwrap_or_default();
    let mut e = PatternPlan {
        group: group.to_owned(),
        target: target.to_owned(),
        exclude: vec![],
        representative,
        aliases: vec![],
        proofs: vec![],
        decisions: vec![],
        mappings,
        settings,
        members: days,
        pattern,
    };
    let probe = IndexPair {
        source: e.pattern.clone(),
        target: e.target.clone(),
        alias: String::new(),
        exclude: vec![],
        mappings: None,
        mappings_file: None,
        settings: None,
        settings_file: None,
        prefix: String::new(),
    };
    match patterns::matching(ctx.source, &probe, &[]).await {
        Ok(found) => e.exclude = found.into_iter().filter(|n| !e.members.contains(n)).collect(),
        Err(err) => e.decisions.push(format!("init would refuse the pattern: {err:#}")),
    }
    let members = e.members.clone();
    for p in plans.iter_mut().filter(|p| members.contains(&p.index.name)) {
        adopt(ctx, &e, p);
        let proof = prove_member(ctx, &mut e, p).await?;
        e.proofs.push(proof);
    }
    aliases(ctx.source, &mut e, plans).await?;
    Ok(e)
}

/// The member as the pattern makes it: its target from the template, and every alias moved
/// rather than one it must own alone.
fn adopt(ctx: &Ctx<'_>, e: &PatternPlan, p: &mut IndexPlan) {
    p.target_name = e.target.replace("{source}", &p.index.name);
    let has_alias = !p.aliases.is_empty();
    p.decisions.retain(|d| !(d.ends_with(EXISTS_ON_TARGET) || (has_alias && d == NO_OWN_ALIAS)));
    if ctx.target_indices.contains(&p.target_name) {
        p.decisions.push(format!("{:?}{EXISTS_ON_TARGET}", p.target_name));
    }
}

/// Proves on the target what `init` creates the member with: its own mappings with the
/// entry's over them, its copyable settings with the entry's over them.
async fn prove_member(ctx: &Ctx<'_>, e: &mut PatternPlan, p: &IndexPlan) -> anyhow::Result<MemberProof> {
    let name = p.index.name.clone();
    let mut mappings = p.index.mappings.clone();
    patterns::merge(&mut mappings, &e.mappings);
    let flat = Value::Object(p.index.settings.clone());
    let mut settings = patterns::copyable_settings(&flat, ctx.source.flavor, ctx.target.flavor);
    settings.extend(e.settings.clone());
    if (mappings == p.mappings && settings == p.settings) || p.proof.is_none() {
        return Ok(MemberProof { index: name, by: "own", proof: p.proof.clone() });
    }
    let mut dropped = vec![];
    let proof = prove::prove(ctx.source, ctx.target, &name, &mappings, &mut settings, &mut dropped, ctx.sample).await?;
    for d in &dropped {
        e.decisions.push(format!(
            "{name}: init would create it with the setting {} = {} from the source index, which the target refuses ({})",
            d.path, d.from, d.why
        ));
    }
    for r in &proof.rejections {
        e.decisions.push(format!(
            "{name}: with the entry's mappings over its own, the target refuses {} ({}x): {}",
            r.stage, r.count, r.reason
        ));
    }
    Ok(MemberProof { index: name, by: "entry", proof: Some(proof) })
}

/// Every alias of every matched index moves at rollover: one that also names an index the
/// pattern does not match would be split between the clusters.
async fn aliases(source: &Cluster, e: &mut PatternPlan, plans: &[IndexPlan]) -> anyhow::Result<()> {
    let mut names: Vec<String> =
        plans.iter().filter(|p| e.members.contains(&p.index.name)).flat_map(|p| p.aliases.clone()).collect();
    names.sort();
    names.dedup();
    for a in &names {
        let held: BTreeMap<String, Value> = source
            .json(Method::Get, &format!("/_alias/{a}"), &[], None)
            .await
            .map_err(|err| anyhow::anyhow!("cannot read alias {a:?} on the source cluster at {}: {err}", source.url))?;
        let others: Vec<&str> = held.keys().map(String::as_str).filter(|i| !e.members.iter().any(|m| m == i)).collect();
        if !others.is_empty() {
            e.decisions.push(format!(
                "alias {a:?} also names {}, which the pattern {:?} does not migrate: at rollover every alias of every \
                 matched index moves, so {a:?} would be split between the clusters (give those indices their own alias)",
                others.join(", "),
                e.pattern
            ));
        }
    }
    e.aliases = names;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_stops_before_the_date() {
        assert_eq!(date_prefix("x-stats-2026.11.01"), Some("x-stats-"));
        assert_eq!(date_prefix("logs20240501"), Some("logs"));
        assert_eq!(date_prefix("logs_2024-05-01"), Some("logs_"));
        assert_eq!(date_prefix("orders-v2"), None);
        assert_eq!(date_prefix("20240501"), None);
    }
}
