//! What every command starts from: the migration's state directory, its recipe (with
//! flag and environment overrides) and connections to both clusters.

use crate::state::{Migration, OperatorLock, StateDir};
use anyhow::{bail, Context as _};
use indexferry_common::config::{IndexPair, Overrides, Recipe};
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
        same_cluster(&migration, &source, migration.source_uuid.as_deref()).await?;
        same_cluster(&migration, &target, migration.target_uuid.as_deref()).await?;
        Ok(Ctx { dir, migration, recipe, source, target })
    }

    /// [`Ctx::load`] for a command that changes the migration: takes its operator lock
    /// first (see `state::OperatorLock`), held until the returned lock is dropped.
    pub async fn load_locked(common: &Common, name: &str, command: &str) -> anyhow::Result<(OperatorLock, Ctx)> {
        let dir = StateDir::new(&common.state_dir, name);
        dir.load_migration()?;
        let lock = OperatorLock::take(&dir, command)?;
        Ok((lock, Ctx::load(common, name).await?))
    }

    /// The same connections with the migration record read again (a pair was added).
    pub fn reloaded(&self) -> anyhow::Result<Ctx> {
        let migration = self.dir.load_migration()?;
        let mut recipe = self.recipe.clone();
        add_matched(&mut recipe, &migration);
        Ok(Ctx { dir: self.dir.clone(), migration, recipe, source: self.source.clone(), target: self.target.clone() })
    }
}

/// Parses the recipe kept in the state (files it referenced were read at `init`), with the
/// overrides; refuses a topic other than the one `init` recorded its offsets on.
pub fn stored_recipe(m: &Migration, overrides: &Overrides) -> anyhow::Result<Recipe> {
    let base = Path::new(&m.recipe_path).parent().unwrap_or(Path::new(".")).to_owned();
    let mut recipe = Recipe::parse_stored(&m.recipe_text, Path::new(&m.recipe_path), &base, overrides)
        .with_context(|| format!("recipe of migration {:?}", m.name))?;
    add_matched(&mut recipe, m);
    // Every write of a migration carries the version rule it started with.
    recipe.versions = m.versions;
    if let Some(recorded) = m.topic.as_deref().filter(|t| *t != recipe.kafka.topic) {
        bail!(
            "kafka topic {:?} is not the topic migration {:?} was initialised on ({recorded:?}): its recorded offsets \
             belong to that topic; drop the --topic / INDEXFERRY_KAFKA_TOPIC override",
            recipe.kafka.topic,
            m.name
        );
    }
    Ok(recipe)
}

/// The indices a pattern matched become pairs of their own, for the replay to route events
/// by name; the pattern entries stay (no event names them). Pairs of an earlier record go.
fn add_matched(recipe: &mut Recipe, m: &Migration) {
    recipe.pairs.retain(|p| !is_matched(m, p));
    let prefix = recipe.prefix.clone();
    recipe.pairs.extend(m.pairs.iter().filter(|p| p.pattern.is_some()).map(|p| IndexPair {
        source: p.source.clone(),
        target: p.target.clone(),
        alias: p.alias.clone(),
        exclude: vec![],
        mappings: None,
        mappings_file: None,
        settings: None,
        settings_file: None,
        prefix: prefix.clone(),
    }));
}

fn is_matched(m: &Migration, p: &IndexPair) -> bool {
    m.pairs.iter().any(|q| q.pattern.is_some() && q.source == p.source)
}

/// Refuses a cluster other than the one `init` recorded (a URL override pointing elsewhere).
pub(crate) async fn same_cluster(m: &Migration, cluster: &Cluster, recorded: Option<&str>) -> anyhow::Result<()> {
    let Some(recorded) = recorded else { return Ok(()) };
    match cluster.uuid().await? {
        Some(now) if now != recorded => bail!(
            "the {} cluster at {} is cluster {now}, but migration {:?} was initialised on cluster {recorded}: \
             a URL override (--{}-url, INDEXFERRY_{}_URL) must reach the same cluster",
            cluster.role(),
            cluster.url,
            m.name,
            cluster.role(),
            cluster.role().to_uppercase()
        ),
        _ => Ok(()),
    }
}

/// The topic's end offsets, read off the async runtime (librdkafka's calls block).
pub async fn end_offsets(recipe: &Recipe, timeout: Duration) -> anyhow::Result<Offsets> {
    let (k, topic) = (recipe.kafka.clone(), recipe.kafka.topic.clone());
    tokio::task::spawn_blocking(move || indexferry_common::kafka::end_offsets(&k, &topic, timeout))
        .await?
        .with_context(|| format!("kafka at {}", recipe.kafka.brokers))
}

/// The topic's partitions with their first available and end offsets, off the async runtime.
pub async fn watermarks(recipe: &Recipe, timeout: Duration) -> anyhow::Result<indexferry_common::kafka::Watermarks> {
    let (k, topic) = (recipe.kafka.clone(), recipe.kafka.topic.clone());
    tokio::task::spawn_blocking(move || indexferry_common::kafka::watermarks(&k, &topic, timeout))
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
