//! Ingest pipelines (`index.default_pipeline`, `index.final_pipeline`) and the target.
//!
//! The source stored each document after its pipelines ran; the snapshot copies that
//! `_source`, and events carry it too (the producer library reads it back where the index
//! has a pipeline). Running the pipelines again on the target would process documents
//! twice, and `final_pipeline` runs even on writes that ask for `pipeline=_none`. So the
//! target is created with both set to `_none`, and rollover gives it the production ones
//! inside its pause, after the last repair and before the swap: the application's writes
//! after the switch get the pipelines they had. A rollover that fails afterwards, or one
//! killed, leaves them set: the next rollover (and the worker's writes meanwhile) would run
//! them, so every rollover sets `_none` again before it starts, and the undo does too.
//!
//! Across clusters the pipelines must exist on the target: `init` copies the ones the
//! target lacks from the source, and refuses with the target's reason when it cannot (a
//! processor the target has not got).

use crate::state::PairInfo;
use anyhow::{bail, Context as _};
use indexferry_common::es::{Cluster, Method};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// The settings that name a pipeline.
pub const SETTINGS: [&str; 2] = ["index.default_pipeline", "index.final_pipeline"];

/// The pipelines a pair's production settings name (`_none` is none).
pub fn named(production: &Map<String, Value>) -> Vec<String> {
    SETTINGS
        .iter()
        .filter_map(|k| production.get(*k).and_then(Value::as_str))
        .filter(|p| *p != "_none")
        .map(str::to_owned)
        .collect()
}

/// The production pipeline settings of a pair (null where it has none), for the switch.
pub fn production(p: &PairInfo) -> Value {
    let mut out = Map::new();
    for key in SETTINGS {
        out.insert(key.into(), p.production_settings.get(key).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

/// `_none` for both, as the target has them while the migration runs.
pub fn none() -> Value {
    json!({ "index.default_pipeline": "_none", "index.final_pipeline": "_none" })
}

/// Copies to the target the pipelines the pairs name that it lacks; the names copied.
pub async fn copy_missing(
    source: &Cluster,
    target: &Cluster,
    productions: impl Iterator<Item = &Map<String, Value>>,
) -> anyhow::Result<Vec<String>> {
    let names: BTreeSet<String> = productions.flat_map(named).collect();
    let mut copied = vec![];
    for name in names {
        match target.json::<Value>(Method::Get, &format!("/_ingest/pipeline/{name}"), &[], None).await {
            Ok(_) => continue,
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read ingest pipeline {name:?} on the target")),
        }
        let on_source: Value = source
            .json(Method::Get, &format!("/_ingest/pipeline/{name}"), &[], None)
            .await
            .with_context(|| format!("cannot read ingest pipeline {name:?} on the source cluster {}", source.url))?;
        let Some(body) = on_source.get(&name) else {
            bail!(
                "ingest pipeline {name:?}, which a migrated index runs, does not exist on the source cluster {}",
                source.url
            );
        };
        if let Err(e) = target.json::<Value>(Method::Put, &format!("/_ingest/pipeline/{name}"), &[], Some(body)).await {
            bail!(
                "the target cluster {} refuses the ingest pipeline {name:?}, which a migrated index runs ({e}): create \
                 an equivalent one there under that name, or set the index's pipeline in the pair's settings",
                target.url
            );
        }
        copied.push(name);
    }
    Ok(copied)
}
