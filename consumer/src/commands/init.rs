//! `init`: validate the recipe and both clusters, create each target index tuned for
//! loading, and record the topic's end offsets as the replay start.
//!
//! The offsets are read before the snapshot opens its point-in-time, so every write is
//! covered by one of the two: a write whose event precedes the recorded offset was
//! acknowledged before `init`, hence is visible to the snapshot (which refreshes the
//! source first); every later event is replayed.

use crate::pipeline::snapshot::method;
use crate::recipe::patterns::Planned;
use crate::recipe::targets;
use crate::runtime::context::{connect, end_offsets, Common};
use crate::state::SourceGcDeletes;
use crate::state::{Db, Migration, PairInfo, State, StateDir, MIGRATION_KEY};
use anyhow::{bail, Context as _};
use chrono::Utc;
use indexferry_common::config::{Recipe, SnapshotMethod, VersionRule};
use indexferry_common::es::Cluster;
use indexferry_common::es::Method;
use indexferry_common::kafka::{self, Offsets};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tracing::Instrument;

pub async fn init(common: &Common, recipe_path: &Path) -> anyhow::Result<()> {
    let recipe = Recipe::load(recipe_path, &common.overrides)?;
    let span = tracing::info_span!("init", migration = %recipe.name);
    init_recipe(common, recipe_path, recipe).instrument(span).await
}

async fn init_recipe(common: &Common, recipe_path: &Path, recipe: Recipe) -> anyhow::Result<()> {
    let dir = StateDir::new(&common.state_dir, &recipe.name);
    refuse_existing(common, &recipe, &dir)?;
    refuse_nested_prefix(common, &recipe).await?;
    let clusters = check_clusters(common, &recipe).await?;
    let plan = plan_targets(&clusters, &recipe).await?;
    let retention = check_kafka(&recipe).await?;

    let recipe_text = std::fs::read_to_string(recipe_path)?;
    let recipe_abs = std::path::absolute(recipe_path)?.display().to_string();

    // From here on init changes the clusters; a failure puts back what it changed.
    let Changed { kept, start_offsets, pairs, pipelines, made } = change_clusters(&clusters, &plan, &recipe).await?;
    let migration = Migration {
        name: recipe.name.clone(),
        recipe_text,
        recipe_path: recipe_abs,
        created_at: Utc::now(),
        state: State::Initialized,
        start_offsets,
        pairs,
        source_server: format!("{} {}", clusters.source.flavor, clusters.source.version),
        target_server: format!("{} {}", clusters.target.flavor, clusters.target.version),
        cross_cluster: clusters.cross,
        source_uuid: clusters.source_uuid.clone(),
        target_uuid: clusters.target_uuid.clone(),
        topic: Some(recipe.kafka.topic.clone()),
        rollover: None,
        reconciled: None,
        last_error: None,
        excluded: vec![],
        snapshot_method: plan.snapshot_method,
        versions: recipe.versions,
        swap: vec![],
    };
    record(&dir, &migration, &clusters, made, &kept).await?;
    print_summary(&recipe, &clusters, &plan, &migration, &pipelines, &retention);
    Ok(())
}

/// Refuses a migration whose state folder exists already.
fn refuse_existing(common: &Common, recipe: &Recipe, dir: &StateDir) -> anyhow::Result<()> {
    if dir.exists() {
        bail!(
            "migration {:?} already exists in {} (run `indexferry migration cancel {}` first, or rename it in the recipe)",
            recipe.name,
            common.state_dir.display(),
            recipe.name
        );
    }
    Ok(())
}

/// The two clusters, reached, with each named pair checked on them.
struct Clusters {
    source: Cluster,
    target: Cluster,
    source_uuid: Option<String>,
    target_uuid: Option<String>,
    /// Source and target are two clusters.
    cross: bool,
}

/// Reaches both clusters and checks each named pair: the source index and its alias exist,
/// the target does not.
async fn check_clusters(common: &Common, recipe: &Recipe) -> anyhow::Result<Clusters> {
    let (source, target) = connect(recipe, common.connect_timeout).await?;
    tracing::info!(source = %format!("{} {}", source.flavor, source.version), target = %format!("{} {}", target.flavor, target.version), "clusters reachable");

    let (source_uuid, target_uuid) = (source.uuid().await?, target.uuid().await?);
    for (i, pair) in recipe.pairs.iter().enumerate().filter(|(_, p)| !p.is_pattern()) {
        check_pair(&source, &target, i, pair).await?;
    }
    let cross = match (&source_uuid, &target_uuid) {
        (Some(s), Some(t)) => s != t,
        _ => recipe.cross_cluster(),
    };
    Ok(Clusters { source, target, source_uuid, target_uuid, cross })
}

/// What `init` is to make: the pairs (patterns expanded), the templates to copy, the
/// snapshot method.
struct Plan {
    planned: Vec<Planned>,
    templates: Vec<crate::recipe::templates::Copy>,
    /// Templates not copied: they cover indices outside the prefix.
    foreign_templates: Vec<String>,
    snapshot_method: SnapshotMethod,
    /// Why that method, for the summary.
    why: String,
}

/// Expands the patterns, plans the templates to copy and chooses the snapshot method.
async fn plan_targets(clusters: &Clusters, recipe: &Recipe) -> anyhow::Result<Plan> {
    let Clusters { source, target, cross, .. } = clusters;
    let planned = crate::recipe::patterns::plan(source, target, recipe, *cross).await?;
    let (templates, foreign_templates) = match cross {
        true => crate::recipe::templates::plan(source, target, recipe, &planned).await?,
        false => (vec![], vec![]),
    };
    let (snapshot_method, why) = method::choose(recipe.snapshot.method, source, target, *cross).await?;
    Ok(Plan { planned, templates, foreign_templates, snapshot_method, why })
}

/// Reaches Kafka, refuses a compacted topic, makes the dead-letter topic; the topic's
/// retention, for the summary.
async fn check_kafka(recipe: &Recipe) -> anyhow::Result<kafka::Retention> {
    // Kafka reached (and authenticated: a consumer says why, an admin call only times out)
    // before anything is changed; the replay's offsets are read again below, after the
    // source keeps its tombstones.
    end_offsets(recipe, Duration::from_secs(15)).await?;
    let retention = kafka::retention(&recipe.kafka, &recipe.kafka.topic)
        .await
        .with_context(|| format!("kafka at {}", recipe.kafka.brokers))?;
    if retention.is_compacted() {
        bail!(
            "kafka.topic: {:?} is compacted (cleanup.policy={}): compaction keeps one event per key, and the key is \
             the document id alone, so events of the same id in two indices, or a delete followed by older events, \
             would be lost; use a topic with cleanup.policy=delete",
            recipe.kafka.topic,
            retention.cleanup_policy.as_deref().unwrap_or_default()
        );
    }
    kafka::ensure_topic(&recipe.kafka, &recipe.dead_letter_topic(), 1)
        .await
        .context("cannot create the dead-letter topic")?;
    Ok(retention)
}

/// What `init` changed on the clusters, and the replay's start.
struct Changed {
    /// The source's `index.gc_deletes` raised, by index.
    kept: BTreeMap<String, SourceGcDeletes>,
    start_offsets: Offsets,
    pairs: Vec<PairInfo>,
    /// The ingest pipelines copied to the target.
    pipelines: Vec<String>,
    made: Made,
}

/// Keeps the source's tombstones, reads the replay's start offsets, makes the targets; on a
/// failure, puts back what it changed.
async fn change_clusters(clusters: &Clusters, plan: &Plan, recipe: &Recipe) -> anyhow::Result<Changed> {
    let (source, target) = (&clusters.source, &clusters.target);
    // Before the offsets are read: a delete replayed from them keeps its tombstone.
    let mut kept = BTreeMap::new();
    if recipe.versions == VersionRule::Source {
        for p in &plan.planned {
            kept.insert(p.source.clone(), keep_tombstones(source, &p.source, recipe, &kept).await?);
        }
    }
    let start_offsets = match end_offsets(recipe, Duration::from_secs(15)).await {
        Ok(o) => o,
        Err(e) => {
            crate::pipeline::source_tombstones::restore(source, kept_settings(&kept)).await;
            return Err(e);
        }
    };
    let made = make_targets(source, target, &plan.planned, &plan.templates, recipe, clusters.cross).await;
    let (pairs, pipelines, made) = match made {
        Ok(done) => done,
        Err(e) => {
            crate::pipeline::source_tombstones::restore(source, kept_settings(&kept)).await;
            return Err(e);
        }
    };
    let pairs: Vec<PairInfo> = pairs
        .into_iter()
        .map(|mut info| {
            info.source_gc_deletes = kept.get(&info.source).cloned();
            info
        })
        .collect();
    Ok(Changed { kept, start_offsets, pairs, pipelines, made })
}

/// Writes the migration's record; on a failure, takes back what `init` changed.
async fn record(
    dir: &StateDir,
    migration: &Migration,
    clusters: &Clusters,
    made: Made,
    kept: &BTreeMap<String, SourceGcDeletes>,
) -> anyhow::Result<()> {
    let recorded = dir.open(Db::Meta).and_then(|store| {
        store.put(MIGRATION_KEY, migration)?;
        store.flush()
    });
    if let Err(e) = recorded {
        made.undo(&clusters.target).await;
        crate::pipeline::source_tombstones::restore(&clusters.source, kept_settings(kept)).await;
        return Err(e.into());
    }
    Ok(())
}

/// What `init` did and what comes next, for the operator.
fn print_summary(
    recipe: &Recipe,
    clusters: &Clusters,
    plan: &Plan,
    migration: &Migration,
    pipelines: &[String],
    retention: &kafka::Retention,
) {
    println!("initialized migration {:?}", migration.name);
    let uuid = |u: &Option<String>| u.as_deref().map_or(String::new(), |u| format!(", cluster {u}"));
    println!("  source  {} ({}{})", clusters.source.url, migration.source_server, uuid(&migration.source_uuid));
    println!(
        "  target  {} ({}{}){}",
        clusters.target.url,
        migration.target_server,
        uuid(&migration.target_uuid),
        if migration.cross_cluster { "" } else { ", the same cluster as the source" }
    );
    print_targets(recipe, plan, migration, pipelines);
    print_snapshot_and_replay(recipe, plan, migration, retention);
    println!("next: indexferry migration run {}", migration.name);
}

/// Each pair, and the templates and ingest pipelines copied or not.
fn print_targets(recipe: &Recipe, plan: &Plan, migration: &Migration, pipelines: &[String]) {
    for p in &migration.pairs {
        let aliases: Vec<&str> = p.moved_aliases().into_iter().map(|(a, _)| a).collect();
        let matched = p.pattern.as_deref().map_or(String::new(), |pat| format!("matches {pat}, "));
        println!(
            "  {} -> {} ({matched}aliases {}, {} documents)",
            p.source,
            p.target,
            aliases.join(" "),
            p.source_docs
        );
    }
    for t in &plan.templates {
        println!("  template {} copied to the target ({})", t.name, t.kind.api());
    }
    for name in pipelines {
        println!("  ingest pipeline {name} copied to the target");
    }
    for p in &migration.pairs {
        let named = crate::recipe::pipelines::named(&p.production_settings);
        if !named.is_empty() {
            println!(
                "  {} runs the ingest pipeline(s) {}: the target stores the source's documents as they are, and runs \
                 them from the switch on",
                p.source,
                named.join(" ")
            );
        }
    }
    for t in &plan.foreign_templates {
        println!("  template {t} not copied: it covers indices outside the prefix {:?}", recipe.prefix);
    }
}

/// How the snapshot copies, how versions are kept, where the replay starts.
fn print_snapshot_and_replay(recipe: &Recipe, plan: &Plan, migration: &Migration, retention: &kafka::Retention) {
    println!("  snapshot method {}: {}", plan.snapshot_method.as_str(), plan.why);
    println!("  versions {}: {}", recipe.versions.as_str(), recipe.versions.consequence());
    if recipe.versions == VersionRule::Source {
        let raised: Vec<&str> = migration
            .pairs
            .iter()
            .filter(|p| p.source_gc_deletes.as_ref().is_some_and(|g| g.raised))
            .map(|p| p.source.as_str())
            .collect();
        if !raised.is_empty() {
            println!(
                "  source index.gc_deletes raised to {} on {} until rollover (a delete then re-create keeps its \
                 version order)",
                recipe.rollover.gc_deletes,
                raised.join(" ")
            );
        }
    }
    let offsets: Vec<String> = migration.start_offsets.iter().map(|(p, o)| format!("{p}:{o}")).collect();
    println!("  replay starts at {} offsets {}", recipe.kafka.topic, offsets.join(" "));
    println!(
        "  topic {}: {} (events deleted before they are replayed stop the consumer and refuse the rollover)",
        recipe.kafka.topic, retention
    );
}

/// What `init` made on the target cluster, to take back when a later step fails.
struct Made {
    templates: crate::recipe::templates::Applied,
    targets: Vec<String>,
}

impl Made {
    /// Deletes the targets created and puts the templates back as they were (best effort).
    async fn undo(self, target: &Cluster) {
        for t in &self.targets {
            if let Err(e) = target.request(Method::Delete, &format!("/{t}"), &[], None).await {
                tracing::warn!(index = %t, error = %e, "could not delete a target made by the failed init");
            }
        }
        self.templates.undo(target).await;
    }
}

/// Puts the templates and ingest pipelines the target lacks (across clusters) and creates
/// every target. On a failure, takes back what it made and fails.
async fn make_targets(
    source: &Cluster,
    target: &Cluster,
    planned: &[Planned],
    templates: &[crate::recipe::templates::Copy],
    recipe: &Recipe,
    cross: bool,
) -> anyhow::Result<(Vec<PairInfo>, Vec<String>, Made)> {
    let mut made = Made { templates: crate::recipe::templates::apply(target, templates).await?, targets: vec![] };
    let result = async {
        let pipelines = match cross {
            true => {
                crate::recipe::pipelines::copy_missing(source, target, planned.iter().map(|p| &p.production)).await?
            }
            false => vec![],
        };
        let mut pairs = Vec::new();
        for p in planned {
            let source_docs = source.count(&p.source, true).await?;
            targets::create_target(target, p, &recipe.rollover.gc_deletes).await?;
            made.targets.push(p.target.clone());
            pairs.push(targets::pair_info(p, source_docs));
        }
        anyhow::Ok((pairs, pipelines))
    }
    .await;
    match result {
        Ok((pairs, pipelines)) => Ok((pairs, pipelines, made)),
        Err(e) => {
            made.undo(target).await;
            Err(e)
        }
    }
}

/// Raises the source's `index.gc_deletes` (see `crate::pipeline::source_tombstones`); on failure, puts
/// back what was raised already.
async fn keep_tombstones(
    source: &Cluster,
    index: &str,
    recipe: &Recipe,
    kept: &std::collections::BTreeMap<String, SourceGcDeletes>,
) -> anyhow::Result<SourceGcDeletes> {
    match crate::pipeline::source_tombstones::keep(source, index, &recipe.rollover.gc_deletes).await {
        Ok(g) => Ok(g),
        Err(e) => {
            crate::pipeline::source_tombstones::restore(source, kept_settings(kept)).await;
            Err(e)
        }
    }
}

/// The raised settings, for `source_tombstones::restore`.
fn kept_settings(
    kept: &std::collections::BTreeMap<String, SourceGcDeletes>,
) -> impl Iterator<Item = (&str, &SourceGcDeletes)> {
    kept.iter().map(|(index, g)| (index.as_str(), g))
}

async fn check_pair(
    source: &Cluster,
    target: &Cluster,
    i: usize,
    pair: &indexferry_common::config::IndexPair,
) -> anyhow::Result<()> {
    // A cluster that refuses to say (403: the user's role does not grant the index) is named.
    let on = |cluster: &Cluster, what: &str, name: &str| {
        format!("indices[{i}].{what}: cannot read {name:?} on the {} cluster {}", cluster.role(), cluster.url)
    };
    let aliased = source.alias_indices(&pair.source).await.with_context(|| on(source, "source", &pair.source))?;
    if !aliased.is_empty() {
        bail!(
            "indices[{i}].source: {:?} is an alias (of {}); name the concrete index",
            pair.source,
            aliased.join(", ")
        );
    }
    if !source.exists(&pair.source).await.with_context(|| on(source, "source", &pair.source))? {
        bail!("indices[{i}].source: index {:?} does not exist on the source cluster {}", pair.source, source.url);
    }
    let behind = source.alias_indices(&pair.alias).await.with_context(|| on(source, "alias", &pair.alias))?;
    match behind.as_slice() {
        [one] if *one == pair.source => {}
        [] => bail!("indices[{i}].alias: alias {:?} does not exist on the source cluster; the application must write through it", pair.alias),
        [one] => bail!("indices[{i}].alias: alias {:?} points at {one:?}, not at the source index {:?}", pair.alias, pair.source),
        many => bail!("indices[{i}].alias: alias {:?} points at several indices ({}); it must point at {:?} alone", pair.alias, many.join(", "), pair.source),
    }
    if target.exists(&pair.target).await.with_context(|| on(target, "target", &pair.target))? {
        bail!(
            "indices[{i}].target: index {:?} already exists on the target cluster {} (delete it, or pick another name)",
            pair.target,
            target.url
        );
    }
    Ok(())
}

/// Two tenants whose prefixes nest (`t1-` and `t1-a-`) can't be told apart: every name of
/// `t1-a-` starts with `t1-` too, so the `t1-` migration would take that tenant's events,
/// templates and pattern indices for its own ([`Recipe::owns`]). Refused when the other
/// tenant can be seen: a migration in the same state folder, or a consumer group of the
/// default name (`<prefix>indexferry-<name>`) on the Kafka cluster.
async fn refuse_nested_prefix(common: &Common, recipe: &Recipe) -> anyhow::Result<()> {
    let ours = recipe.prefix.as_str();
    if ours.is_empty() {
        return Ok(());
    }
    let mut others: Vec<(String, String)> = vec![];
    let dirs = StateDir::all(&common.state_dir)
        .with_context(|| format!("cannot read the state directory {}", common.state_dir.display()))?;
    for dir in dirs {
        let Ok(m) = dir.load_migration() else { continue };
        if m.state == State::RolledOver {
            continue;
        }
        if let Some(prefix) = stored_prefix(&m.recipe_text) {
            others.push((prefix, format!("migration {:?} in {}", m.name, common.state_dir.display())));
        }
    }
    let k = recipe.kafka.clone();
    let groups =
        tokio::task::spawn_blocking(move || indexferry_common::kafka::group_names(&k, Duration::from_secs(5))).await?;
    match groups {
        Ok(groups) => others.extend(groups.into_iter().filter_map(|g| {
            g.find("indexferry-").map(|at| {
                (g[..at].to_owned(), format!("consumer group {g:?} on Kafka; delete it if that tenant is gone"))
            })
        })),
        // Listing groups is a courtesy: a login without the right sees none.
        Err(e) => tracing::debug!(error = %e, "cannot list Kafka's consumer groups"),
    }
    if let Some((theirs, seen)) =
        others.iter().find(|(p, _)| !p.is_empty() && p != ours && (p.starts_with(ours) || ours.starts_with(p.as_str())))
    {
        let (short, long) = if theirs.starts_with(ours) { (ours, theirs.as_str()) } else { (theirs.as_str(), ours) };
        bail!(
            "prefix {ours:?} nests with the prefix {theirs:?} of another tenant ({seen}): every name of {long:?} also \
             starts with {short:?}, so the {short:?} migration would take that tenant's events, templates and pattern \
             indices for its own; give tenants prefixes where neither starts the other (\"t1-\" and \"t2-\", or \
             \"t1-a-\" and \"t1-b-\")"
        );
    }
    Ok(())
}

/// The `prefix` of a recipe stored in a migration's record.
fn stored_prefix(recipe_text: &str) -> Option<String> {
    let v: toml::Value = toml::from_str(recipe_text).ok()?;
    v.get("prefix")?.as_str().map(str::to_owned)
}
