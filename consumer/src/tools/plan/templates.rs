//! What `init` will do with the source's templates: cross-cluster it copies those covering
//! the recipes' indices (with the recipes' mappings over theirs) and refuses one the target
//! holds with another body (without `[templates] overwrite = true`) or one making data
//! streams. The plan says so, template by template, with `init`'s own reasons.

use super::daily::PatternPlan;
use super::inventory::Inventory;
use super::IndexPlan;
use crate::recipe::templates::{self, Covered, Status};
use indexferry_common::config::glob_match;
use indexferry_common::es::Cluster;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct TemplatePlan {
    pub name: String,
    /// `legacy`, `composable` or `component`.
    pub kind: &'static str,
    pub index_patterns: Vec<String>,
    /// `copied by init`, `identical on the target`, `differs on the target`, `not copied`.
    pub action: String,
}

/// Each source template with what `init` does with it, and the decisions it needs.
pub async fn plan(
    source: &Cluster,
    target: &Cluster,
    inv: &Inventory,
    plans: &[IndexPlan],
    patterns: &[PatternPlan],
    cross: bool,
) -> anyhow::Result<(Vec<TemplatePlan>, Vec<String>)> {
    let mut out: Vec<TemplatePlan> = inv
        .templates
        .iter()
        .map(|t| TemplatePlan {
            name: t.name.clone(),
            kind: t.kind,
            index_patterns: t.index_patterns.clone(),
            action: match cross {
                true => "covers no planned index: not copied".into(),
                false => "one cluster: left as it is".into(),
            },
        })
        .collect();
    let mut decisions = vec![];
    if !cross {
        return Ok((out, decisions));
    }
    let covered: Vec<Covered> = plans
        .iter()
        .filter(|p| p.index.blocker.is_none())
        .map(|p| {
            let entry = patterns.iter().find(|e| e.members.contains(&p.index.name));
            Covered {
                index: p.index.name.clone(),
                mappings: Some(entry.map_or_else(|| p.mappings.clone(), |e| e.mappings.clone())),
            }
        })
        .collect();
    let copies = match templates::candidates(source, &covered).await {
        Ok(c) => c,
        Err(e) => {
            decisions.push(format!("init would refuse: {e:#}"));
            return Ok((out, decisions));
        }
    };
    for c in &copies {
        let action = match templates::status(target, c).await? {
            Status::New => "copied by init".to_owned(),
            Status::Same => "identical on the target: left alone by init".to_owned(),
            Status::Differs => {
                decisions.push(format!(
                    "template {:?} ({}) differs on the target at {}: init refuses it unless the recipe sets \
                     [templates] overwrite = true (which replaces the target's)",
                    c.name,
                    c.kind.api(),
                    target.url
                ));
                "differs on the target: init refuses without [templates] overwrite = true".to_owned()
            }
        };
        let kind = match c.kind {
            templates::Kind::Legacy => "legacy",
            templates::Kind::Composable => "composable",
            templates::Kind::Component => "component",
        };
        match out.iter_mut().find(|t| t.name == c.name && t.kind == kind) {
            Some(t) => t.action = action,
            None => out.push(TemplatePlan { name: c.name.clone(), kind, index_patterns: vec![], action }),
        }
    }
    Ok((out, decisions))
}

/// Data streams the `--indices` patterns name: refused, as `init` refuses them.
pub fn data_stream_decisions(inv: &Inventory, indices: &str) -> Vec<String> {
    let patterns: Vec<&str> = indices.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    inv.data_streams
        .iter()
        .filter(|d| patterns.iter().any(|p| glob_match(p, d)))
        .map(|d| {
            format!(
                "data stream {d:?}: data streams are not migrated (their backing indices take writes only through the \
                 stream); narrow --indices"
            )
        })
        .collect()
}
