//! `indexferry plan`: the upgrade assistant. It reads what is on the source (and the
//! target), converts each index's mappings and settings for the target with the rules
//! table, proves the result on the target itself (a temporary index and a sample of real
//! documents, always deleted), estimates the snapshot from the sample's throughput, and
//! writes one recipe per alias group. The target's answer is the final word: a rewrite the
//! target still refuses is reported, never hidden.
//!
//! Exit codes: 0 everything is migratable as written; 1 something needs a decision (listed),
//! or a cluster could not be read; 2 usage (a pattern matching nothing).

pub mod daily;
pub mod inventory;
pub mod prove;
pub mod recipe;
pub mod rules;
pub mod templates;

pub use prove::TEMP_PREFIX;

use anyhow::Context as _;
use indexferry_common::config::ClusterConfig;
use indexferry_common::es::Cluster;
use inventory::{Index, Inventory};
use prove::Proof;
use recipe::Estimate;
use rules::Rewrite;
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::Duration;

/// `indexferry plan` options.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The cluster to migrate from (credentials may be in the URL).
    #[arg(long, env = "INDEXFERRY_SOURCE_URL")]
    pub source_url: String,
    /// The cluster to migrate to; without it, a migration inside the source cluster.
    #[arg(long, env = "INDEXFERRY_TARGET_URL")]
    pub target_url: Option<String>,
    /// User for the source (password in INDEXFERRY_SOURCE_PASSWORD; or an API key in
    /// INDEXFERRY_SOURCE_API_KEY; or credentials in the URL).
    #[arg(long, env = "INDEXFERRY_SOURCE_USERNAME")]
    pub source_username: Option<String>,
    /// PEM file of the CA that signed the source's certificate.
    #[arg(long)]
    pub source_ca_cert: Option<PathBuf>,
    /// User for the target (password in INDEXFERRY_TARGET_PASSWORD, API key in INDEXFERRY_TARGET_API_KEY).
    #[arg(long, env = "INDEXFERRY_TARGET_USERNAME")]
    pub target_username: Option<String>,
    /// PEM file of the CA that signed the target's certificate.
    #[arg(long)]
    pub target_ca_cert: Option<PathBuf>,
    /// Which source indices to plan (an index pattern, comma-separated patterns allowed).
    #[arg(long, default_value = "*")]
    pub indices: String,
    /// Kafka bootstrap servers, written into the recipes.
    #[arg(long, env = "INDEXFERRY_KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// The topic the application's producer publishes change events to, written into the recipes.
    #[arg(long, env = "INDEXFERRY_KAFKA_TOPIC")]
    pub topic: Option<String>,
    /// Write one recipe per alias group (and its mappings and settings files) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Documents per index written into the temporary index on the target (at most 10000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub sample: u64,
    /// How long to keep trying an unreachable cluster.
    #[arg(long, default_value = "10s", value_parser = |s: &str| humantime::parse_duration(s).map_err(|e| e.to_string()))]
    pub connect_timeout: Duration,
}

/// The decision for an index no alias names alone.
pub const NO_OWN_ALIAS: &str =
    "no alias names this index alone: the application must read and write through one, which \
                                rollover moves (create it, point the application at it, and plan again)";
/// The end of the decision for a target name taken (after the quoted name).
pub const EXISTS_ON_TARGET: &str = " already exists on the target: pick another target name";

/// A usage error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The plan for one source index.
#[derive(Debug, Clone, Serialize)]
pub struct IndexPlan {
    #[serde(flatten)]
    pub index: Index,
    pub aliases: Vec<String>,
    /// The alias the recipe moves at rollover.
    pub alias: Option<String>,
    pub target_name: String,
    pub rewrites: Vec<Rewrite>,
    pub proof: Option<Proof>,
    pub estimate: Option<Estimate>,
    pub decisions: Vec<String>,
    /// The ingest pipelines the index runs, and whether the target has them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pipelines: Vec<PipelinePlan>,
    #[serde(skip)]
    pub mappings: Value,
    #[serde(skip)]
    pub settings: Map<String, Value>,
}

/// An ingest pipeline a source index runs (`index.default_pipeline`, `index.final_pipeline`).
#[derive(Debug, Clone, Serialize)]
pub struct PipelinePlan {
    pub setting: String,
    pub name: String,
    /// The target cluster holds a pipeline of that name (across clusters `init` copies it
    /// when it does not).
    pub on_target: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub source: Inventory,
    pub target: Inventory,
    pub plans: Vec<IndexPlan>,
    /// Daily indices written as one pattern entry each.
    pub patterns: Vec<daily::PatternPlan>,
    /// What `init` does with each of the source's templates.
    pub templates: Vec<templates::TemplatePlan>,
    pub recipes: Vec<String>,
    /// Everything that needs the operator, one line each.
    pub decisions: Vec<String>,
    pub migratable: bool,
}

/// Runs the plan and prints the report; `Ok(true)` when everything is migratable as written.
pub async fn plan(opts: &Options) -> anyhow::Result<bool> {
    let report = build(opts).await?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    Ok(report.migratable)
}

/// A cluster's settings from the flags and, for secrets, the environment only (as recipes).
pub fn cluster_config(
    url: &str,
    username: Option<&str>,
    ca_cert: Option<&std::path::Path>,
    role: &str,
) -> ClusterConfig {
    use indexferry_common::config as c;
    let (password_var, key_var) = match role {
        "source" => (c::ENV_SOURCE_PASSWORD, c::ENV_SOURCE_API_KEY),
        _ => (c::ENV_TARGET_PASSWORD, c::ENV_TARGET_API_KEY),
    };
    let env = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty()).map(indexferry_common::secret::Secret::new);
    let mut cfg = ClusterConfig::at(url);
    cfg.url = url.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
    cfg.username = username.map(str::to_owned);
    cfg.password = username.and_then(|_| env(password_var));
    cfg.api_key = if username.is_none() { env(key_var) } else { None };
    cfg.ca_cert = ca_cert.map(std::path::Path::to_path_buf);
    cfg
}

async fn connect(cfg: &ClusterConfig, role: &'static str, timeout: Duration) -> anyhow::Result<Cluster> {
    // The error names the cluster and its URL (without credentials).
    Ok(Cluster::connect(cfg, role, timeout).await?)
}

async fn build(opts: &Options) -> anyhow::Result<Report> {
    let source_cfg =
        cluster_config(&opts.source_url, opts.source_username.as_deref(), opts.source_ca_cert.as_deref(), "source");
    let source = connect(&source_cfg, "source", opts.connect_timeout).await?;
    let target = match &opts.target_url {
        Some(u) => {
            let cfg = cluster_config(u, opts.target_username.as_deref(), opts.target_ca_cert.as_deref(), "target");
            connect(&cfg, "target", opts.connect_timeout).await?
        }
        None => {
            let mut t = source.clone();
            t.set_role("target");
            t
        }
    };
    let rules = rules::Rules::load()?;
    let mut inv = inventory::read(&source, &opts.indices, true).await?;
    if inv.indices.is_empty() {
        return Err(Usage(format!(
            "--indices {:?} matches no index on the source cluster at {}",
            opts.indices, source.url
        ))
        .into());
    }
    let target_inv = inventory::read(&target, "*", false).await?;
    let pair =
        rules::Pair { source: source.flavor, target: target.flavor, target_plugins: inventory::plugins(&target).await };
    let mut plans = Vec::new();
    for index in std::mem::take(&mut inv.indices) {
        let p = plan_index(&source, &target, &rules, &pair, &inv, &target_inv, index, opts).await?;
        inv.indices.push(p.index.clone());
        plans.push(p);
    }
    let migratable: Vec<&Index> = plans.iter().filter(|p| p.index.blocker.is_none()).map(|p| &p.index).collect();
    let groups = recipe::groups(&migratable, &inv.aliases);
    let target_indices = target_inv.indices.iter().map(|i| i.name.clone()).collect();
    let ctx = daily::Ctx {
        source: &source,
        target: &target,
        cross: opts.target_url.is_some(),
        sample: opts.sample as usize,
        target_indices: &target_indices,
    };
    let patterns = daily::plan(&ctx, &groups, &mut plans).await?;
    let (templates, template_decisions) =
        templates::plan(&source, &target, &inv, &plans, &patterns, opts.target_url.is_some()).await?;
    let mut decisions: Vec<String> =
        plans.iter().flat_map(|p| p.decisions.iter().map(move |d| format!("{}: {d}", p.index.name))).collect();
    decisions.extend(patterns.iter().flat_map(|e| e.decisions.iter().map(move |d| format!("{}: {d}", e.pattern))));
    decisions.extend(template_decisions);
    decisions.extend(templates::data_stream_decisions(&inv, &opts.indices));
    if opts.brokers.is_none() || opts.topic.is_none() {
        decisions.push("no --brokers/--topic: the recipes name a placeholder Kafka topic".into());
    }
    let recipes = match &opts.out {
        Some(out) => write_recipes(out, &plans, &patterns, &inv, &source, &target, opts)?,
        None => vec![],
    };
    Ok(Report {
        source: inv,
        target: target_inv,
        plans,
        patterns,
        templates,
        recipes,
        migratable: decisions.is_empty(),
        decisions,
    })
}

/// The pipelines `settings` name, each looked up on the target.
async fn pipelines(target: &Cluster, settings: &Map<String, Value>) -> Vec<PipelinePlan> {
    let mut out = vec![];
    for setting in crate::recipe::pipelines::SETTINGS {
        let Some(name) = settings.get(setting).and_then(Value::as_str).filter(|n| *n != "_none") else { continue };
        let on_target = target
            .json::<Value>(indexferry_common::es::Method::Get, &format!("/_ingest/pipeline/{name}"), &[], None)
            .await
            .is_ok();
        out.push(PipelinePlan { setting: setting.to_owned(), name: name.to_owned(), on_target });
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn plan_index(
    source: &Cluster,
    target: &Cluster,
    rules: &rules::Rules,
    pair: &rules::Pair,
    inv: &Inventory,
    target_inv: &Inventory,
    index: Index,
    opts: &Options,
) -> anyhow::Result<IndexPlan> {
    let mut p = new_plan(inv, index, opts);
    p.pipelines = pipelines(target, &p.index.settings).await;
    if let Some(b) = &p.index.blocker {
        p.decisions.push(format!("cannot be migrated: {b}"));
        return Ok(p);
    }
    if p.alias.is_none() {
        p.decisions.push(NO_OWN_ALIAS.into());
    }
    if target_inv.indices.iter().any(|t| t.name == p.target_name) {
        p.decisions.push(format!("{:?}{EXISTS_ON_TARGET}", p.target_name));
    }
    let converted = rules.convert(pair, &p.index.mappings, &p.index.settings);
    p.decisions.extend(converted.refused.iter().cloned());
    p.rewrites = converted.rewrites;
    p.mappings = converted.mappings;
    p.settings = converted.settings;
    if converted.refused.is_empty() {
        let proof = prove_plan(source, target, &mut p, opts.sample as usize).await?;
        record_proof(&mut p, proof);
    }
    Ok(p)
}

/// An index's plan before anything is checked: its aliases, the one the recipe moves, its
/// target's name.
fn new_plan(inv: &Inventory, index: Index, opts: &Options) -> IndexPlan {
    let aliases: Vec<String> = inv.aliases.iter().filter(|a| a.index == index.name).map(|a| a.name.clone()).collect();
    let alias = recipe::own_alias(&index.name, &inv.aliases).map(|a| a.name.clone());
    let target_name = if opts.target_url.is_some() { index.name.clone() } else { format!("{}-migrated", index.name) };
    IndexPlan {
        aliases,
        alias,
        target_name,
        rewrites: vec![],
        proof: None,
        estimate: None,
        decisions: vec![],
        pipelines: vec![],
        mappings: Value::Null,
        settings: Map::new(),
        index,
    }
}

/// Proves the converted index on the target with `sample` documents; the plan's settings
/// keep their ingest pipelines.
async fn prove_plan(source: &Cluster, target: &Cluster, p: &mut IndexPlan, sample: usize) -> anyhow::Result<Proof> {
    // The proof loads samples as the copy does: without the pipelines (see `pipelines`).
    let production: Vec<(String, Value)> = crate::recipe::pipelines::SETTINGS
        .iter()
        .filter_map(|k| p.settings.insert((*k).to_owned(), Value::from("_none")).map(|v| ((*k).to_owned(), v)))
        .collect();
    let proof = prove::prove(source, target, &p.index.name, &p.mappings, &mut p.settings, &mut p.rewrites, sample)
        .await
        .with_context(|| format!("proving index {:?} on the target at {}", p.index.name, target.url));
    for key in crate::recipe::pipelines::SETTINGS {
        p.settings.remove(key);
    }
    p.settings.extend(production);
    proof
}

/// What the proof says: the target's refusals as decisions, the estimate from its throughput.
fn record_proof(p: &mut IndexPlan, proof: Proof) {
    for r in &proof.rejections {
        p.decisions.push(match r.stage {
            "create" => format!("the target refuses the converted index: {}", r.reason),
            _ => format!(
                "the target rejected {} of {} sample documents: {} (e.g. {})",
                r.count,
                proof.sampled,
                r.reason,
                r.ids.join(", ")
            ),
        });
    }
    if proof.accepted > 0 {
        p.estimate = Some(recipe::estimate(&p.index, proof.accepted as f64 / proof.bulk_seconds, proof.avg_doc_bytes));
    }
    p.proof = Some(proof);
}

fn write_recipes(
    out: &std::path::Path,
    plans: &[IndexPlan],
    patterns: &[daily::PatternPlan],
    inv: &Inventory,
    source: &Cluster,
    target: &Cluster,
    opts: &Options,
) -> anyhow::Result<Vec<String>> {
    let migratable: Vec<&Index> = plans.iter().filter(|p| p.index.blocker.is_none()).map(|p| &p.index).collect();
    let header = format!(
        "{} at {} -> {} at {}, {} sample document(s) per index",
        source.flavor, source.url, target.flavor, target.url, opts.sample
    );
    let credentials = |user: &Option<String>, ca: &Option<PathBuf>, role: &str| recipe::Credentials {
        username: user.clone(),
        ca_cert: ca.as_ref().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()).display().to_string()),
        role: role.to_uppercase(),
    };
    let clusters = recipe::Clusters {
        source_url: &source.url,
        source: credentials(&opts.source_username, &opts.source_ca_cert, "source"),
        target_url: opts.target_url.as_ref().map(|_| target.url.as_str()),
        target: credentials(&opts.target_username, &opts.target_ca_cert, "target"),
        header,
        brokers: opts.brokers.as_deref().unwrap_or("CHANGE-ME:9092"),
        topic: opts.topic.as_deref().unwrap_or("CHANGE-ME"),
    };
    let mut written = Vec::new();
    for (group, members) in recipe::groups(&migratable, &inv.aliases) {
        let group_plans: Vec<&IndexPlan> = plans.iter().filter(|p| members.contains(&p.index.name)).collect();
        let group_patterns: Vec<&daily::PatternPlan> = patterns.iter().filter(|e| e.group == group).collect();
        let path = recipe::write(out, &group, &group_plans, &group_patterns, &clusters)?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

/// How a pattern's member was proven, in words.
pub fn daily_proof(m: &daily::MemberProof) -> String {
    let what = match m.by {
        "own" => "proven with its own converted mapping and settings, which the entry gives it unchanged",
        _ => "proven again with the entry's mapping and settings over its own",
    };
    match &m.proof {
        Some(p) if p.created => format!("{what}: created, {}/{} sample documents accepted", p.accepted, p.sampled),
        Some(_) => format!("{what}: the target refused it"),
        None => "not proven (see its decisions)".into(),
    }
}

fn print(r: &Report) {
    let (s, t) = (&r.source, &r.target);
    println!("source  {} {}: {} indices, {} aliases", s.url, s.server, s.indices.len(), s.aliases.len());
    println!("target  {} {}", t.url, t.server);
    let rule = indexferry_common::config::VersionRule::Source;
    println!("versions {} (the recipes' rule): {}", rule.as_str(), rule.consequence());
    for p in &r.plans {
        print_index(r, p);
    }
    for e in &r.patterns {
        print_pattern(e);
    }
    println!();
    for tpl in &r.templates {
        println!("template ({}) {} [{}]: {}", tpl.kind, tpl.name, tpl.index_patterns.join(", "), tpl.action);
    }
    for d in &s.data_streams {
        println!("data stream {d}: not migrated (its backing indices take writes only through the stream)");
    }
    for path in &r.recipes {
        println!("recipe  {path}");
    }
    if r.migratable {
        println!("\neverything is migratable as written");
    } else {
        println!("\n{} decision(s) needed:", r.decisions.len());
        for d in &r.decisions {
            println!("  - {d}");
        }
    }
}

/// An index's paragraph: its size and aliases, why it cannot be migrated, its pipelines,
/// its conversion and proof.
fn print_index(r: &Report, p: &IndexPlan) {
    let i = &p.index;
    let closed = if i.closed { ", closed" } else { "" };
    println!(
        "\nindex {}  {} docs, {} bytes, {} shard(s), {} replica(s){closed}  aliases: {}",
        i.name,
        i.docs,
        i.size_bytes,
        i.shards,
        i.replicas,
        if p.aliases.is_empty() { "-".into() } else { p.aliases.join(", ") }
    );
    print_alias_traits(&r.source, i);
    if let Some(b) = &i.blocker {
        println!("  cannot be migrated: {b}");
    }
    for pl in &p.pipelines {
        println!(
            "  ingest pipeline {} ({}): copied without it (the stored _source as it is), set on the target at the \
             switch; {}",
            pl.name,
            pl.setting,
            match (pl.on_target, r.source.url == r.target.url) {
                (_, true) => "the same cluster",
                (true, false) => "the target has one of that name",
                (false, false) => "not on the target: init copies it (its processors must exist there)",
            }
        );
    }
    print_conversion(p);
}

/// What the index's aliases do besides naming it (write index, filter, routing).
fn print_alias_traits(s: &Inventory, i: &Index) {
    for a in s.aliases.iter().filter(|a| a.index == i.name) {
        let mut traits = Vec::new();
        if a.is_write_index == Some(true) {
            traits.push("write index".to_owned());
        }
        if let Some(f) = &a.filter {
            traits.push(format!("filter {f}"));
        }
        if let Some(r) = &a.index_routing {
            traits.push(format!("index routing {r}"));
        }
        if let Some(r) = &a.search_routing {
            traits.push(format!("search routing {r}"));
        }
        if !traits.is_empty() {
            println!("  alias {}: {}", a.name, traits.join(", "));
        }
    }
}

/// The rewrites, what the target said of the proof, and the estimate.
fn print_conversion(p: &IndexPlan) {
    for w in &p.rewrites {
        println!("  rewrite [{}] {}: {} -> {}", w.rule, w.path, w.from, w.to);
    }
    if let Some(proof) = &p.proof {
        if proof.created {
            println!(
                "  proven on the target: created; {}/{} sample documents accepted in {:.2}s",
                proof.accepted, proof.sampled, proof.bulk_seconds
            );
        }
        for rej in &proof.rejections {
            println!("  rejected ({}, {}x): {}", rej.stage, rej.count, rej.reason);
        }
    }
    if let Some(e) = &p.estimate {
        println!(
            "  estimate: {} docs/s per stream; snapshot about {}s over {} slice(s); batch_size {}, partitions {}, max_lag {}",
            e.sample_docs_per_s, e.snapshot_seconds, e.slices, e.batch_size, e.partitions, e.max_lag
        );
    }
}

/// A pattern entry's paragraph: its members, excluded indices, and how each was proven.
fn print_pattern(e: &daily::PatternPlan) {
    println!("\npattern {} -> {} (recipe {}): {}", e.pattern, e.target, e.group, e.members.join(", "));
    if !e.exclude.is_empty() {
        println!("  exclude {}", e.exclude.join(", "));
    }
    println!("  mappings and settings of {}; every alias moves: {}", e.representative, e.aliases.join(", "));
    for m in &e.proofs {
        println!("  {}: {}", m.index, daily_proof(m));
    }
}
