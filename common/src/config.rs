//! Recipes: the TOML file that describes one migration.
//!
//! Unknown fields are rejected, every error names the file and the field, and a handful of
//! environment variables (and the CLI flags that set them) override addresses and secrets,
//! so one recipe serves several environments. `examples/recipe.toml` documents every field.

use crate::secret::Secret;
use crate::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the producer library retries, by default, a write refused by a write block (its
/// `ProducerConfig::retry_for`). A rollover's `grace` plus `drain_timeout` must stay under it:
/// the longest write pause a rollover can cause is then latency for the application, never
/// an error.
pub const PRODUCER_RETRY_WINDOW: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The migration's name: the key of its state and the default consumer group. With a
    /// `prefix`, the prefix followed by the name the recipe gives.
    pub name: String,
    /// Put before every index, alias and pattern name of the recipe, its name (the state's
    /// key) and its consumer group, so that tenants sharing one cluster and one topic never
    /// meet (see [`Recipe::owns`]). Empty: no prefix.
    #[serde(default)]
    pub prefix: String,
    pub source: ClusterConfig,
    /// Defaults to the source cluster (an in-cluster migration).
    #[serde(default)]
    pub target: Option<ClusterConfig>,
    pub kafka: KafkaConfig,
    #[serde(rename = "indices")]
    pub pairs: Vec<IndexPair>,
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    #[serde(default)]
    pub replay: ReplayConfig,
    #[serde(default)]
    pub rollover: RolloverConfig,
    #[serde(default)]
    pub templates: TemplatesConfig,
    /// Which version every target document carries (see [`VersionRule`]).
    #[serde(default)]
    pub versions: VersionRule,
}

/// `versions`: the version every write to the target carries, and so the `_version` each
/// target document ends with. Both order the copies and events of one document, so the
/// snapshot and the replay converge in any order; they differ in what the application meets
/// after the switch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionRule {
    /// The source document's own `_version` (`version_type=external`): every target document
    /// keeps the `_version` it had, so an application that versions its documents itself
    /// (`external`, `external_gte`) goes on writing after the switch. Needs `_version` to grow
    /// with every change to a document: `init` raises the source's `index.gc_deletes` so that
    /// a delete then re-create continues from the delete's version, and reconcile finds and
    /// names a version that goes backwards (before the switch, which it then refuses).
    #[default]
    Source,
    /// `primary_term × 2^47 + _seq_no + 1`: orders every operation without any help from the
    /// source, but the target's `_version`s are large numbers of their own, so an application
    /// writing `external` or `external_gte` versions is refused (409) after the switch.
    /// Internal versioning and `if_seq_no`/`if_primary_term` with a fresh read still work.
    SeqNo,
}

impl VersionRule {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionRule::Source => "source",
            VersionRule::SeqNo => "seq_no",
        }
    }

    /// One line on what the rule means for the application, printed by `init` and `plan`.
    pub fn consequence(self) -> &'static str {
        match self {
            VersionRule::Source => {
                "every target document keeps the source's _version: the application's writes after the switch succeed \
                 with internal, external or external_gte versions"
            }
            VersionRule::SeqNo => {
                "target documents get _version = primary_term * 2^47 + _seq_no + 1: after the switch an application \
                 writing its own versions (external, external_gte) is refused with 409 on every migrated document; \
                 internal versioning and if_seq_no with a fresh read still work"
            }
        }
    }
}

/// Index templates copied to the target cluster (cross-cluster migrations).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplatesConfig {
    /// Replace a template the target already holds with a different body, instead of refusing.
    pub overwrite: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// One or more node URLs of the cluster: requests go to the node that answered last and
    /// fail over to the next URL when a connection fails (`es::Cluster`).
    #[serde(deserialize_with = "one_or_many")]
    pub url: Vec<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// Base64 `id:key` API key, as Elasticsearch returns it in `encoded`.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// PEM file of the CA that signed the cluster's certificate.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Skip certificate verification (development only).
    #[serde(default)]
    pub insecure: bool,
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Gzip request and response bodies: for a slow link between indexferry and the
    /// cluster. Off by default, because the cluster then spends CPU compressing every
    /// search page and bulk answer.
    #[serde(default)]
    pub compression: bool,
    /// How long a running worker keeps retrying this cluster while it does not answer
    /// (connection refused, timeouts, 5xx) or refuses whole requests (401, 403, 404), before
    /// it stops with an error; for its reads and its writes alike. A cluster that answers but
    /// is busy or refuses writes for a while (429, a write block) is waited for.
    #[serde(default = "default_unreachable_timeout", with = "humantime_serde")]
    pub unreachable_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
    /// Where malformed events and rejected documents go; defaults to `<topic>.deadletter`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Consumer group the applied offsets are mirrored to; defaults to `indexferry-<name>`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// librdkafka settings passed through as they are (security.protocol, sasl.*, ssl.*).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexPair {
    /// The concrete source index (not the alias), or a pattern with `*` (`stats-*`): each
    /// index it matches at `init` becomes a pair.
    pub source: String,
    /// The target index; for a pattern, a template where `{source}` is the matched name.
    pub target: String,
    /// The alias the application reads and writes through; moved at rollover. Not given
    /// with a pattern: every alias of every matched index moves.
    #[serde(default)]
    pub alias: String,
    /// With a pattern: names (or patterns) of matching indices to leave alone.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The target's mappings, inline...
    #[serde(default)]
    pub mappings: Option<toml::Table>,
    /// ...or from a JSON file (relative to the recipe).
    #[serde(default)]
    pub mappings_file: Option<PathBuf>,
    /// The target's production settings, restored at rollover (replicas, refresh).
    #[serde(default)]
    pub settings: Option<toml::Table>,
    #[serde(default)]
    pub settings_file: Option<PathBuf>,
    /// The recipe's prefix, already put before `source`, `target`, `alias` and `exclude`; a
    /// pattern's `{source}` stands for the matched name without it (see [`IndexPair::target_for`]).
    #[serde(skip)]
    pub prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Documents per search page and per bulk request.
    pub batch_size: usize,
    /// Parallel slices of the point-in-time read.
    pub slices: u32,
    /// Documents per second over all slices; 0 = unthrottled.
    pub throttle_docs_per_s: u32,
    /// How long the point-in-time stays open between pages; also how long a killed worker
    /// has to come back and resume where it was rather than start its slices over.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// How the documents are copied: `search` (point-in-time read and bulk writes by
    /// indexferry), `reindex` (the cluster's own `_reindex`, run as tasks on the target
    /// cluster: sliced in-cluster, from remote across clusters) or `auto` (see `init`).
    pub method: SnapshotMethod,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            batch_size: 2000,
            slices: 2,
            throttle_docs_per_s: 0,
            keep_alive: Duration::from_secs(600),
            method: SnapshotMethod::Auto,
        }
    }
}

/// `[snapshot] method`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMethod {
    /// `reindex` where the cluster that would run it has the module and it was measured
    /// faster, else `search`; `init` records the choice.
    #[default]
    Auto,
    Search,
    Reindex,
}

impl SnapshotMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMethod::Auto => "auto",
            SnapshotMethod::Search => "search",
            SnapshotMethod::Reindex => "reindex",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayConfig {
    /// A batch is cut at this many events...
    pub batch_size: usize,
    /// ...or this many bytes of events...
    pub batch_bytes: usize,
    /// ...or this long after its first event, whichever comes first.
    #[serde(with = "humantime_serde")]
    pub batch_deadline: Duration,
    /// Batches written at once. Checkpoints still advance in topic order: a batch counts
    /// only once every batch before it is acknowledged too.
    pub in_flight: usize,
    /// The consumer is made again when it has received nothing for this long while the
    /// topic holds events it has not had: librdkafka can leave an assigned partition
    /// unfetched after a broker restart until the consumer is recreated.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            batch_size: 1000,
            batch_bytes: 8 << 20,
            batch_deadline: Duration::from_millis(50),
            in_flight: 8,
            stall_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloverConfig {
    /// Rollover refuses to start while more events than this wait to be applied.
    pub max_lag: u64,
    /// Wait after blocking writes before reading the topic's end offsets; must be longer
    /// than the producer's publish timeout so every acknowledged write's event is in.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Give up (and lift the block) if the consumer has not drained by then. With `grace`, it
    /// must stay under [`PRODUCER_RETRY_WINDOW`].
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// The target's `index.gc_deletes` while the migration runs: delete tombstones must
    /// outlive any older write still to come from the snapshot or a late event.
    pub gc_deletes: String,
    /// Reconcile source and target before blocking writes, and the documents changed since
    /// inside the pause: repairs writes whose events never reached the topic.
    pub reconcile: bool,
    /// The longest write pause: from the block to the swap, every step inside it (grace,
    /// drain, the final reconcile, re-applied deletes, ingest pipelines) shares this one
    /// deadline; past it the rollover lifts the block and says which step overran. Under
    /// [`PRODUCER_RETRY_WINDOW`], so that the application's blocked writes are latency, not
    /// errors.
    #[serde(with = "humantime_serde")]
    pub max_pause: Duration,
    /// The capture proxies (`indexferry-proxy`) that every write of the application goes
    /// through, one URL per replica (not a load balancer in front of them). After the block,
    /// rollover asks each for its writes in flight and ends the grace as soon as every write
    /// sent before the block has its event published; one that does not answer, and the
    /// whole grace is waited. Empty (the default): the grace is waited.
    pub proxies: Vec<String>,
}

impl Default for RolloverConfig {
    fn default() -> Self {
        RolloverConfig {
            max_lag: 10_000,
            grace: Duration::from_millis(500),
            drain_timeout: Duration::from_secs(20),
            gc_deletes: "24h".into(),
            reconcile: true,
            max_pause: PRODUCER_RETRY_WINDOW - Duration::from_secs(5),
            proxies: vec![],
        }
    }
}

impl ClusterConfig {
    /// A cluster at `url` without credentials or TLS settings.
    pub fn at(url: &str) -> Self {
        ClusterConfig {
            url: vec![url.to_owned()],
            username: None,
            password: None,
            api_key: None,
            ca_cert: None,
            insecure: false,
            request_timeout: default_request_timeout(),
            compression: false,
            unreachable_timeout: default_unreachable_timeout(),
        }
    }
}

fn default_unreachable_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// A comma-separated override (`--source-url a,b`) as a URL list.
fn url_list(urls: &str) -> Vec<String> {
    urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect()
}

/// Values that replace what the recipe says: set from CLI flags, else from the
/// environment (`INDEXFERRY_SOURCE_URL`, ...).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub source_url: Option<String>,
    pub target_url: Option<String>,
    pub brokers: Option<String>,
    pub topic: Option<String>,
}

/// Environment variables read on top of [`Overrides`]; secrets only come from here or the file.
pub const ENV_SOURCE_PASSWORD: &str = "INDEXFERRY_SOURCE_PASSWORD";
pub const ENV_TARGET_PASSWORD: &str = "INDEXFERRY_TARGET_PASSWORD";
pub const ENV_SOURCE_API_KEY: &str = "INDEXFERRY_SOURCE_API_KEY";
pub const ENV_TARGET_API_KEY: &str = "INDEXFERRY_TARGET_API_KEY";

impl Recipe {
    /// Reads and validates a recipe file.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Recipe> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.into(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Recipe::parse(&text, path, base, overrides)
    }

    /// Parses recipe text; `origin` names it in errors, `base` resolves relative files.
    pub fn parse(text: &str, origin: &Path, base: &Path, overrides: &Overrides) -> Result<Recipe> {
        let err = |message: String| Error::Recipe { path: origin.into(), message };
        let mut recipe: Recipe = toml::from_str(text).map_err(|e| err(describe_toml_error(&e)))?;
        recipe.apply_prefix().map_err(err)?;
        recipe.apply(overrides, &|name| std::env::var(name).ok());
        recipe.resolve_files(base).map_err(err)?;
        recipe.validate().map_err(err)?;
        Ok(recipe)
    }

    /// Parses a recipe stored by `init`: mapping and settings files were read then and are
    /// not needed again (they may have moved since), so they are not read.
    pub fn parse_stored(text: &str, origin: &Path, base: &Path, overrides: &Overrides) -> Result<Recipe> {
        let err = |message: String| Error::Recipe { path: origin.into(), message };
        let mut recipe: Recipe = toml::from_str(text).map_err(|e| err(describe_toml_error(&e)))?;
        for p in &mut recipe.pairs {
            p.mappings_file = None;
            p.settings_file = None;
        }
        recipe.apply_prefix().map_err(err)?;
        recipe.apply(overrides, &|name| std::env::var(name).ok());
        recipe.resolve_files(base).map_err(err)?;
        recipe.validate().map_err(err)?;
        Ok(recipe)
    }

    fn apply(&mut self, o: &Overrides, env: &dyn Fn(&str) -> Option<String>) {
        let pick = |flag: &Option<String>, var: &str| flag.clone().or_else(|| env(var).filter(|v| !v.is_empty()));
        if let Some(urls) = pick(&o.source_url, "INDEXFERRY_SOURCE_URL") {
            self.source.url = url_list(&urls);
        }
        if let Some(urls) = pick(&o.target_url, "INDEXFERRY_TARGET_URL") {
            match &mut self.target {
                Some(t) => t.url = url_list(&urls),
                None => self.target = Some(ClusterConfig { url: url_list(&urls), ..self.source.clone() }),
            }
        }
        if let Some(b) = pick(&o.brokers, "INDEXFERRY_KAFKA_BROKERS") {
            self.kafka.brokers = b;
        }
        if let Some(t) = pick(&o.topic, "INDEXFERRY_KAFKA_TOPIC") {
            self.kafka.topic = t;
        }
        if let Some(p) = env(ENV_SOURCE_PASSWORD) {
            self.source.password = Some(Secret::new(p));
        }
        if let Some(k) = env(ENV_SOURCE_API_KEY) {
            self.source.api_key = Some(Secret::new(k));
        }
        if let Some(t) = &mut self.target {
            if let Some(p) = env(ENV_TARGET_PASSWORD) {
                t.password = Some(Secret::new(p));
            }
            if let Some(k) = env(ENV_TARGET_API_KEY) {
                t.api_key = Some(Secret::new(k));
            }
        }
    }

    /// Puts the prefix before every name the recipe gives (see `prefix`): the migration's
    /// name, the consumer group (given or default: `<prefix>indexferry-<name>`), and each
    /// entry's source, target, alias and exclusions. The topic is not prefixed: tenants may
    /// share it, and each migration applies only the events of its own indices.
    fn apply_prefix(&mut self) -> std::result::Result<(), String> {
        let prefix = self.prefix.clone();
        if prefix.is_empty() {
            return Ok(());
        }
        if !valid_name(&prefix, false)
            || prefix.starts_with('.')
            || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "prefix: {prefix:?} must use only lowercase letters, digits, '-', '_' and '.', and not start with \
                 '-', '_' or '.'"
            ));
        }
        let group = self.kafka.group_id.take().unwrap_or_else(|| format!("indexferry-{}", self.name));
        self.kafka.group_id = Some(format!("{prefix}{group}"));
        self.name = format!("{prefix}{}", self.name);
        for p in &mut self.pairs {
            for name in [&mut p.source, &mut p.target].into_iter().chain(p.exclude.iter_mut()) {
                *name = format!("{prefix}{name}");
            }
            if !p.alias.is_empty() {
                p.alias = format!("{prefix}{}", p.alias);
            }
            p.prefix = prefix.clone();
        }
        Ok(())
    }

    /// `index` is one of this recipe's: it carries the prefix (every name does without one).
    /// Events of other indices on a shared topic belong to other tenants.
    pub fn owns(&self, index: &str) -> bool {
        index.starts_with(&self.prefix)
    }

    fn resolve_files(&mut self, base: &Path) -> std::result::Result<(), String> {
        for (i, pair) in self.pairs.iter_mut().enumerate() {
            for (inline, file, what) in [
                (&mut pair.mappings, &pair.mappings_file, "mappings"),
                (&mut pair.settings, &pair.settings_file, "settings"),
            ] {
                let Some(file) = file else { continue };
                if inline.is_some() {
                    return Err(format!("indices[{i}]: give either `{what}` or `{what}_file`, not both"));
                }
                let path = base.join(file);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("indices[{i}].{what}_file: cannot read {}: {e}", path.display()))?;
                let json: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| format!("indices[{i}].{what}_file: {} is not JSON: {e}", path.display()))?;
                let table: toml::Table = serde_json::from_value(json).map_err(|e| {
                    format!("indices[{i}].{what}_file: {} must hold a JSON object: {e}", path.display())
                })?;
                *inline = Some(table);
            }
        }
        for c in std::iter::once(&mut self.source).chain(self.target.as_mut()) {
            if let Some(ca) = &mut c.ca_cert {
                *ca = base.join(&*ca);
            }
        }
        Ok(())
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(format!(
                "name: {:?} must be non-empty and use only letters, digits, '-', '_' and '.'",
                self.name
            ));
        }
        for (field, c) in std::iter::once(("source", &self.source)).chain(self.target.as_ref().map(|t| ("target", t))) {
            if c.url.is_empty() {
                return Err(format!("{field}.url: at least one URL is required"));
            }
            for u in &c.url {
                // Never echo a URL that may carry a password.
                let shown = if u.contains('@') { "(a URL with credentials)".to_owned() } else { format!("{u:?}") };
                let parsed = url::Url::parse(u).map_err(|e| format!("{field}.url: {shown} is not a URL: {e}"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(format!("{field}.url: {shown} must be http or https"));
                }
            }
            if c.password.is_some() && c.username.is_none() {
                return Err(format!("{field}.password: needs {field}.username"));
            }
            if c.api_key.is_some() && c.username.is_some() {
                return Err(format!("{field}: give either username/password or api_key, not both"));
            }
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err("kafka.brokers: must not be empty".into());
        }
        if self.kafka.topic.trim().is_empty() {
            return Err("kafka.topic: must not be empty".into());
        }
        if self.pairs.is_empty() {
            return Err("indices: at least one [[indices]] entry is required".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.pairs.iter().enumerate() {
            validate_pair(i, p, self.cross_cluster())?;
            self.check_length(i, p)?;
            if !seen.insert(&p.source) {
                return Err(format!("indices[{i}].source: {:?} appears twice; one source feeds one target", p.source));
            }
        }
        // The name is the state's folder name (and in the consumer group's).
        if self.name.len() > MAX_NAME_BYTES {
            return Err(too_long("name", &self.name, &self.prefix));
        }
        if self.snapshot.batch_size == 0 || self.snapshot.batch_size > 10_000 {
            return Err("snapshot.batch_size: must be between 1 and 10000".into());
        }
        if self.snapshot.slices == 0 || self.snapshot.slices > 1024 {
            return Err("snapshot.slices: must be between 1 and 1024".into());
        }
        if self.replay.batch_size == 0 {
            return Err("replay.batch_size: must be at least 1".into());
        }
        if self.replay.in_flight == 0 || self.replay.in_flight > 64 {
            return Err("replay.in_flight: must be between 1 and 64".into());
        }
        let r = &self.rollover;
        if r.grace + r.drain_timeout >= PRODUCER_RETRY_WINDOW {
            return Err(format!(
                "rollover: drain_timeout ({}) + grace ({}) must be shorter than the producer library's retry window \
                 for blocked writes ({}), or a failed drain turns into failed application writes",
                humantime::format_duration(r.drain_timeout),
                humantime::format_duration(r.grace),
                humantime::format_duration(PRODUCER_RETRY_WINDOW)
            ));
        }
        if r.max_pause >= PRODUCER_RETRY_WINDOW || r.max_pause <= r.grace {
            return Err(format!(
                "rollover: max_pause ({}) must be longer than grace ({}) and shorter than the producer library's retry \
                 window for blocked writes ({})",
                humantime::format_duration(r.max_pause),
                humantime::format_duration(r.grace),
                humantime::format_duration(PRODUCER_RETRY_WINDOW)
            ));
        }
        Ok(())
    }

    /// Refuses a name over the clusters' 255-byte limit (for a pattern's target, its fixed part).
    fn check_length(&self, i: usize, p: &IndexPair) -> std::result::Result<(), String> {
        let target = p.target.replace("{source}", "");
        for (what, name) in [("source", p.source.as_str()), ("target", &target), ("alias", p.alias.as_str())] {
            if name.len() > MAX_NAME_BYTES {
                return Err(too_long(&format!("indices[{i}].{what}"), name, &self.prefix));
            }
        }
        Ok(())
    }

    pub fn target_cluster(&self) -> &ClusterConfig {
        self.target.as_ref().unwrap_or(&self.source)
    }

    /// Source and target are different clusters: their URL lists share no URL (`init` then
    /// tells clusters apart by their UUIDs).
    pub fn cross_cluster(&self) -> bool {
        self.target.as_ref().is_some_and(|t| !t.url.iter().any(|u| self.source.url.contains(u)))
    }

    pub fn dead_letter_topic(&self) -> String {
        self.kafka.dead_letter_topic.clone().unwrap_or_else(|| format!("{}.deadletter", self.kafka.topic))
    }

    pub fn group_id(&self) -> String {
        self.kafka.group_id.clone().unwrap_or_else(|| format!("indexferry-{}", self.name))
    }

    pub fn pair_for_source(&self, index: &str) -> Option<&IndexPair> {
        self.pairs.iter().find(|p| p.source == index)
    }

    /// The pair whose alias is `name` (`init` checked that it points at that pair's source alone).
    pub fn pair_for_alias(&self, name: &str) -> Option<&IndexPair> {
        // The pair added last first: a write alias that moved to a newer index of a pattern
        // (ILM, a daily job) is recorded on that index's pair once `add` took it in.
        self.pairs.iter().rev().find(|p| !p.alias.is_empty() && p.alias == name)
    }

    /// `index` is one of the targets: after rollover the application writes there.
    pub fn is_target(&self, index: &str) -> bool {
        self.pairs.iter().any(|p| p.target == index)
    }
}

/// The longest index or alias name Elasticsearch and OpenSearch accept, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// The refusal of a name over [`MAX_NAME_BYTES`], naming the prefix that made it so.
pub fn too_long(field: &str, name: &str, prefix: &str) -> String {
    let by = if prefix.is_empty() { String::new() } else { format!(" with the prefix {prefix:?}") };
    format!(
        "{field}: {name:?} is {} bytes{by}, over the {MAX_NAME_BYTES}-byte limit for index, alias and migration names",
        name.len()
    )
}

fn valid_name(v: &str, wildcard: bool) -> bool {
    !(v.is_empty()
        || v.starts_with(['_', '-', '+'])
        || v.chars().any(|c| c.is_ascii_uppercase() || "\\/?\"<>| ,#:".contains(c) || (c == '*' && !wildcard)))
}

fn validate_pair(i: usize, p: &IndexPair, cross_cluster: bool) -> std::result::Result<(), String> {
    let bad = |what: &str, v: &str| Err(format!("indices[{i}].{what}: {v:?} is not a valid index or alias name"));
    if !valid_name(&p.source, true) {
        return bad("source", &p.source);
    }
    if !valid_name(&p.target.replace("{source}", "x"), false) {
        return bad("target", &p.target);
    }
    if p.is_pattern() {
        if !p.alias.is_empty() {
            return Err(format!(
                "indices[{i}].alias: {:?} is given with the pattern {:?}; a pattern moves every alias of every matched \
                 index, drop `alias`",
                p.alias, p.source
            ));
        }
        if let Some(x) = p.exclude.iter().find(|x| !valid_name(x, true)) {
            return bad("exclude", x);
        }
        return Ok(());
    }
    if p.target.contains("{source}") {
        return Err(format!("indices[{i}].target: `{{source}}` is for a pattern source; {:?} is one index", p.source));
    }
    if !p.exclude.is_empty() {
        return Err(format!("indices[{i}].exclude: only a pattern source (with `*`) excludes indices"));
    }
    if !valid_name(&p.alias, false) {
        return bad("alias", &p.alias);
    }
    if p.source == p.target && !cross_cluster {
        return Err(format!("indices[{i}]: source and target are the same index {:?}", p.source));
    }
    Ok(())
}

/// `name` matches the index pattern `pattern`, where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

impl IndexPair {
    /// The source names a pattern (`*`), not one index.
    pub fn is_pattern(&self) -> bool {
        self.source.contains('*')
    }

    /// The target of the matched index `source`: the `target` template with `{source}` filled
    /// with the matched name less the recipe's prefix (the template carries it already).
    pub fn target_for(&self, source: &str) -> String {
        self.target.replace("{source}", source.strip_prefix(&self.prefix).unwrap_or(source))
    }

    /// `index` is one this pattern entry leaves alone (`exclude`).
    pub fn excludes(&self, index: &str) -> bool {
        self.exclude.iter().any(|x| glob_match(x, index))
    }

    /// Mappings as JSON for the create-index request.
    pub fn mappings_json(&self) -> Option<serde_json::Value> {
        self.mappings.as_ref().and_then(|m| serde_json::to_value(m).ok())
    }

    /// Production settings as a flat JSON object with `index.` keys: these are restored at
    /// rollover, while the index is created with loading settings on top.
    pub fn production_settings(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut flat = serde_json::Map::new();
        if let Some(s) = &self.settings {
            if let Ok(v) = serde_json::to_value(s) {
                flatten("", &v, &mut flat);
            }
        }
        flat.into_iter()
            .map(|(k, v)| if k.starts_with("index.") { (k, v) } else { (format!("index.{k}"), v) })
            .collect()
    }
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut serde_json::Map<String, serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

/// toml's messages carry a line/column snippet; keep them but make sure the field is named.
fn describe_toml_error(e: &toml::de::Error) -> String {
    e.to_string().trim_end().replace('\n', "\n  ")
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
