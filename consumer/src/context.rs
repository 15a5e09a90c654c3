//! What every command starts from: the migration's state directory, its recipe (with
//! flag and environment overrides) and connections to both clusters.

use crate::state::{Migration, StateDir};
use anyhow::Context as _;
use indexferry_common::config::{Overrides, Recipe};
use indexferry_common::es::Cluster;
use indexferry_common::kafka::Offsets;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Options every command takes.
#[derive(Debug, Clone)]
pub struct Common {
    pub state_dir: PathBuf,
    pub overrides: Overrides,
    /// How long a command keeps trying to reach a cluster before failing.
    pub connect_timeout: Duration,
}

pub struct Ctx {
    pub dir: StateDir,
    pub migration: Migration,
    pub recipe: Recipe,
    pub source: Cluster,
    pub target: Cluster,
}

impl Ctx {
    /// Loads a migration that `init` created and connects to its clusters.
    pub async fn load(common: &Common, name: &str) -> anyhow::Result<Ctx> {
        let dir = StateDir::new(&common.state_dir, name);
        let migration = dir.load_migration()?;
        let recipe = stored_recipe(&migration, &common.overrides)?;
        let (source, target) = connect(&recipe, common.connect_timeout).await?;
        Ok(Ctx { dir, migration, recipe, source, target })
    }
}

/// Parses the recipe kept in the state (files it referenced were read at `init`).
pub fn stored_recipe(m: &Migration, overrides: &Overrides) -> anyhow::Result<Recipe> {
    let base = Path::new(&m.recipe_path).parent().unwrap_or(Path::new(".")).to_owned();
    Recipe::parse_stored(&m.recipe_text, Path::new(&m.recipe_path), &base, overrides)
        .with_context(|| format!("recipe of migration {:?}", m.name))
}

/// The topic's end offsets, read off the async runtime (librdkafka's calls block).
pub async fn end_offsets(recipe: &Recipe, timeout: Duration) -> anyhow::Result<Offsets> {
    let (k, topic) = (recipe.kafka.clone(), recipe.kafka.topic.clone());
    tokio::task::spawn_blocking(move || indexferry_common::kafka::end_offsets(&k, &topic, timeout))
        .await?
        .with_context(|| format!("kafka at {}", recipe.kafka.brokers))
}

pub async fn connect(recipe: &Recipe, deadline: Duration) -> anyhow::Result<(Cluster, Cluster)> {
    let source = Cluster::connect(&recipe.source, "source", deadline).await?;
    let target = if recipe.cross_cluster() {
        Cluster::connect(recipe.target_cluster(), "target", deadline).await?
    } else {
        let mut t = source.clone();
        t.set_role("target");
        t.set_unreachable_timeout(recipe.target_cluster().unreachable_timeout);
        t
    };
    Ok((source, target))
}
