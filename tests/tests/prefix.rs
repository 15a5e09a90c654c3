//! Tenants sharing one cluster and one topic (`prefix` in the recipe, the producer's
//! prefix): two migrations at once that never touch each other's indices or events, a
//! tenant's user whose role grants its own indices only, and a prefix over the name limit.

use indexferry_common::config::ClusterConfig;
use indexferry_common::es::{Cluster, Method};
use indexferry_common::secret::Secret;
use indexferry_producer::Producer;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One tenant's names: its prefix and the recipe's names without it.
struct Tenant {
    prefix: String,
    dir: PathBuf,
}

impl Tenant {
    /// The tenant `tag` of the test's ground: its prefix `<base>-<tag>-`.
    fn new(g: &Ground, tag: &str) -> anyhow::Result<Tenant> {
        let prefix = format!("{}-", g.name(tag));
        let dir = g.dir.path().join(&prefix);
        std::fs::create_dir_all(&dir)?;
        Ok(Tenant { prefix, dir })
    }

    fn name(&self, bare: &str) -> String {
        format!("{}{bare}", self.prefix)
    }

    /// A recipe for `src` into `dst` behind `records`, all named without the prefix.
    fn recipe(&self, url: &str, topic: &str, source_options: &str) -> anyhow::Result<PathBuf> {
        let mut spec = RecipeSpec::new("recs", url, url, topic, "src", "dst", "records");
        spec.top = format!("prefix = {:?}", self.prefix);
        spec.source_options = source_options.to_owned();
        spec.write(&self.dir)
    }
}

async fn target_ids(url: &str, index: &str) -> anyhow::Result<Vec<String>> {
    Ok(all_docs(url, index).await?.into_keys().collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_tenants_migrate_at_once_on_one_cluster_and_one_topic_without_touching_each_other() -> anyhow::Result<()> {
    let url = es8();
    let g = Ground::new("tenants", &[&url])?;
    let (state, topic) = (&g.state, &g.topic);
    let tenants = [Tenant::new(&g, "ta")?, Tenant::new(&g, "tb")?];
    let mut loads = vec![];
    for (t, ids) in tenants.iter().zip(["a-", "b-"]) {
        create_source(&url, &t.name("src"), &t.name("records"), topic, 3, source_mappings()).await?;
        let extra = ["--prefix", t.prefix.as_str(), "--id-prefix", ids];
        loads.push(Load::start_with(&t.dir, &url, "records", topic, 300, 40, &extra)?);
    }
    for t in &tenants {
        wait_docs(&url, &t.name("src"), 300).await?;
    }
    let mut runs = vec![];
    for t in &tenants {
        let recipe = t.recipe(&url, topic, "")?;
        let out = run_ok(indexferry(state, &["init", recipe.to_str().unwrap_or_default()]))?;
        assert!(out.contains(&format!("initialized migration \"{}\"", t.name("recs"))), "{out}");
        runs.push(spawn(indexferry(state, &["run", &t.name("recs")]), &t.dir.join("run.log"))?);
    }
    for t in &tenants {
        wait_caught_up(state, &t.name("recs"), Duration::from_secs(120)).await?;
    }
    for t in &tenants {
        let out = run_ok(indexferry(state, &["rollover", &t.name("recs")]))?;
        assert!(out.contains("write pause"), "{out}");
    }
    for (load, t) in loads.into_iter().zip(&tenants) {
        let (done, failed) = load.stop()?;
        assert!(done > 0, "{}: the load wrote through the rollover ({done})", t.prefix);
        assert_eq!(failed, 0, "{}: no write failed", t.prefix);
    }
    for run in &mut runs {
        let exit = wait_for("run to stop after the rollover", Duration::from_secs(60), || Ok(run.try_wait()?)).await?;
        assert!(exit.success(), "{exit:?}");
    }
    let c = cluster(&url).await?;
    for (t, (own, other)) in tenants.iter().zip([("a-", "b-"), ("b-", "a-")]) {
        let name = t.name("recs");
        let out = run_ok(indexferry(state, &["verify", &name]))?;
        assert!(out.contains("verify: identical"), "{name}: {out}");
        let aliased: Value = c.json(Method::Get, &format!("/_alias/{}", t.name("records")), &[], None).await?;
        assert!(aliased.get(t.name("dst")).is_some(), "{name}: the tenant's alias moved to its target: {aliased}");
        let ids = target_ids(&url, &t.name("dst")).await?;
        assert!(!ids.is_empty() && ids.iter().all(|id| id.starts_with(own)), "{name}: only its own documents");
        assert!(!ids.iter().any(|id| id.starts_with(other)), "{name}: none of the other tenant's");
        let s = status(state, &name)?;
        assert_eq!(s["replay"]["ignored_indices"], json!({}), "{name}: the other tenant is no unknown index: {s}");
        assert!(s["replay"]["other_prefix"].as_u64().is_some_and(|n| n > 0), "{name}: ignored as another's: {s}");
        let applied = s["replay"]["applied"].as_u64().unwrap_or(0) + s["replay"]["stale"].as_u64().unwrap_or(0);
        let events = read_topic_until_idle(topic, Duration::from_secs(2))?;
        let own_events = events
            .iter()
            .filter(|(_, p)| serde_json::from_slice::<Value>(p).is_ok_and(|e| e["index"] == json!(t.name("src"))))
            .count() as u64;
        assert!(applied <= own_events, "{name}: judged {applied} events, the tenant published {own_events}: {s}");
    }
    Ok(())
}

fn tls_url() -> String {
    std::env::var("INDEXFERRY_TEST_ES8_TLS").unwrap_or_else(|_| "https://127.0.0.1:9203".into())
}

/// The stack's CA certificate, as `dev/stack tls-ca` reports it.
fn ca() -> anyhow::Result<PathBuf> {
    let out = std::process::Command::new(dev_script("stack")).arg("tls-ca").output()?;
    anyhow::ensure!(out.status.success(), "dev/stack tls-ca: {}", String::from_utf8_lossy(&out.stderr));
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn tls_config(user: &str, password: &str, ca: &Path) -> ClusterConfig {
    let mut c = ClusterConfig::at(&tls_url());
    c.username = Some(user.to_owned());
    c.password = Some(Secret::new(password));
    c.ca_cert = Some(ca.to_owned());
    c
}

/// A user of the es8-tls cluster whose role grants `all` on `<prefix>*` and the cluster's
/// `monitor`, nothing else; [`TenantUser::remove`] deletes it and its role.
struct TenantUser {
    user: String,
    role: String,
    password: String,
}

impl TenantUser {
    async fn create(admin: &Cluster, prefix: &str) -> anyhow::Result<TenantUser> {
        let (user, role) = (unique("ferry-tenant-user"), unique("ferry-tenant-role"));
        let password = format!("pw-{}", unique("x"));
        let grant = json!({
            "cluster": ["monitor"],
            "indices": [{ "names": [format!("{prefix}*")], "privileges": ["all"] }],
        });
        admin.json::<Value>(Method::Put, &format!("/_security/role/{role}"), &[], Some(&grant)).await?;
        let body = json!({ "password": password, "roles": [role] });
        admin.json::<Value>(Method::Put, &format!("/_security/user/{user}"), &[], Some(&body)).await?;
        Ok(TenantUser { user, role, password })
    }

    async fn remove(&self, admin: &Cluster) -> anyhow::Result<()> {
        admin.json::<Value>(Method::Delete, &format!("/_security/user/{}", self.user), &[], None).await?;
        admin.json::<Value>(Method::Delete, &format!("/_security/role/{}", self.role), &[], None).await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_user_migrates_its_own_indices_and_is_refused_another_tenants_at_init() -> anyhow::Result<()> {
    let ca = ca()?;
    let admin_pw = std::env::var("INDEXFERRY_TLS_PASSWORD").unwrap_or_else(|_| "indexferry-secret".into());
    let admin = Cluster::connect(&tls_config("elastic", &admin_pw, &ca), "admin", Duration::from_secs(30)).await?;
    // On the cluster with a password the tenants' indices are deleted here; the ground
    // deletes the topic.
    let g = Ground::new("tenant-tls", &[])?;
    let (a, b) = (Tenant::new(&g, "ta")?, Tenant::new(&g, "tb")?);
    let user = TenantUser::create(&admin, &a.prefix).await?;
    let result = tenant_migration(&admin, &user, &ca, &g, &a, &b).await;
    let removed = user.remove(&admin).await;
    for index in [a.name("src"), a.name("dst"), b.name("src")] {
        let _ = admin.request(Method::Delete, &format!("/{index}"), &[], None).await;
    }
    result?;
    removed
}

async fn tenant_migration(
    admin: &Cluster,
    user: &TenantUser,
    ca: &Path,
    g: &Ground,
    a: &Tenant,
    b: &Tenant,
) -> anyhow::Result<()> {
    let url = tls_url();
    let (state, topic) = (&g.state, g.topic.clone());
    for t in [a, b] {
        let body = json!({
            "settings": { "index.number_of_shards": 2, "index.number_of_replicas": 0 },
            "aliases": { t.name("records"): { "is_write_index": true } },
        });
        admin.json::<Value>(Method::Put, &format!("/{}", t.name("src")), &[], Some(&body)).await?;
    }
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 2).await?;
    // The application writes as the tenant's user, naming its alias without the prefix.
    let mut pcfg = producer_config(&url, &topic, "records");
    pcfg.prefix = a.prefix.clone();
    pcfg.cluster = tls_config(&user.user, &user.password, ca);
    let p = Producer::connect(pcfg).await?;
    for i in 0..100 {
        let e = p.index(&format!("d{i}"), &json!({ "i": i }).to_string(), None).await?;
        assert_eq!(e.index, a.name("src"), "the event names the index with the prefix");
    }
    let options = format!("username = {:?}\nca_cert = {:?}\n", user.user, ca.display().to_string());
    let cmd = |args: &[&str]| {
        let mut c = indexferry(state, args);
        c.env("INDEXFERRY_SOURCE_PASSWORD", &user.password);
        c
    };
    let name = a.name("recs");
    // The reindex method needs task privileges (in `manage`) that the tenant role lacks:
    // `init` names them instead of leaving a copy `cancel` could not stop.
    let recipe = a.recipe(&url, &topic, &options)?;
    let reindex = a.dir.join("reindex.toml");
    std::fs::write(&reindex, std::fs::read_to_string(&recipe)?.replace("method = \"search\"", "method = \"reindex\""))?;
    let out = output(cmd(&["init", reindex.to_str().unwrap_or_default()]))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cluster:admin/tasks/cancel") && stderr.contains("`manage`"), "{stderr}");
    assert!(!state.join(&name).exists(), "nothing was created");
    run_ok(cmd(&["init", recipe.to_str().unwrap_or_default()]))?;
    run_ok(cmd(&["snapshot", &name]))?;
    for i in 0..30 {
        p.delete(&format!("d{i}"), None).await?;
        p.index(&format!("n{i}"), &json!({ "n": i }).to_string(), None).await?;
    }
    run_ok(cmd(&["consume", &name, "--until-caught-up"]))?;
    let out = run_ok(cmd(&["rollover", &name]))?;
    assert!(out.contains("write pause"), "{out}");
    let out = run_ok(cmd(&["verify", &name]))?;
    assert!(out.contains("verify: identical"), "{out}");
    let e = p.index("after", r#"{"after":true}"#, None).await?;
    assert_eq!(e.index, a.name("dst"), "after the rollover the alias leads to the target");

    // The same user's recipe naming tenant B's indices: refused by the cluster, nothing created.
    let out = output(cmd(&["init", b.recipe(&url, &topic, &options)?.to_str().unwrap_or_default()]))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("403") && stderr.contains(&tls_url()), "the cluster's 403 is named: {stderr}");
    assert!(!admin.exists(&b.name("dst")).await?, "no target index was created for tenant B");
    assert!(!state.join(b.name("recs")).exists(), "no migration state was created for tenant B");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prefix_that_makes_a_name_over_255_bytes_is_refused_at_init_in_one_line() -> anyhow::Result<()> {
    let url = es8();
    let g = Ground::new("long", &[&url])?;
    let state = &g.state;
    let mut t = Tenant::new(&g, "long")?;
    t.prefix = format!("{}-", "l".repeat(252));
    let out = output(indexferry(state, &["init", t.recipe(&url, &g.topic, "")?.to_str().unwrap_or("")]))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = stderr.trim_end();
    assert!(!line.contains('\n'), "one line: {stderr}");
    assert!(line.contains("indices[0].source") && line.contains("255-byte limit"), "{stderr}");
    assert!(line.contains(&format!("with the prefix {:?}", t.prefix)), "the prefix is named: {stderr}");
    assert!(!state.exists() || std::fs::read_dir(state)?.next().is_none(), "nothing was created");
    Ok(())
}

/// Nested prefixes (`t1-` and `t1-a-`) can't be told apart: the second tenant's `init` is
/// refused, whether the first one is seen in the same state folder or, from another folder,
/// by its consumer group on Kafka; nothing of the second is created.
#[tokio::test(flavor = "multi_thread")]
async fn a_prefix_nested_in_another_tenants_is_refused_at_init() -> anyhow::Result<()> {
    let url = es8();
    let g = Ground::new("nest", &[&url])?;
    let (root, state, topic) = (&g.dir, &g.state, &g.topic);
    let outer = Tenant::new(&g, "o")?;
    create_source(&url, &outer.name("src"), &outer.name("records"), topic, 1, source_mappings()).await?;
    // Writing on: the worker commits the offsets of events it applied, which makes its group.
    let load = Load::start_with(&outer.dir, &url, "records", topic, 50, 20, &["--prefix", outer.prefix.as_str()])?;
    wait_docs(&url, &outer.name("src"), 50).await?;
    run_ok(indexferry(state, &["init", outer.recipe(&url, topic, "")?.to_str().unwrap_or("")]))?;

    let inner = Tenant { prefix: format!("{}b-", outer.prefix), dir: root.path().join("inner") };
    std::fs::create_dir_all(&inner.dir)?;
    create_source(&url, &inner.name("src"), &inner.name("records"), topic, 1, source_mappings()).await?;
    let recipe = inner.recipe(&url, topic, "")?;
    let refused = |state: &Path, seen: &str| -> anyhow::Result<()> {
        let out = output(indexferry(state, &["init", recipe.to_str().unwrap_or("")]))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("prefix {:?} nests with the prefix {:?}", inner.prefix, outer.prefix)),
            "{stderr}"
        );
        assert!(stderr.contains(seen), "names where the other tenant was seen ({seen}): {stderr}");
        assert!(!state.join(inner.name("recs")).exists(), "nothing of the refused migration was created");
        Ok(())
    };
    refused(state, &format!("migration {:?}", outer.name("recs")))?;

    // From another state folder, once the outer tenant's worker has committed its offsets.
    let mut run = spawn(indexferry(state, &["run", &outer.name("recs")]), &outer.dir.join("run.log"))?;
    wait_caught_up(state, &outer.name("recs"), Duration::from_secs(120)).await?;
    let group = format!("{}indexferry-recs", outer.prefix);
    wait_for("the outer tenant's consumer group", Duration::from_secs(30), || {
        Ok(consumer_groups()?.contains(&group).then_some(()))
    })
    .await?;
    refused(&root.path().join("elsewhere"), &format!("consumer group {group:?}"))?;
    let (_, failed) = load.stop()?;
    assert_eq!(failed, 0);
    terminate(&mut run)?;
    run_ok(indexferry(state, &["cancel", &outer.name("recs")]))?;
    Ok(())
}

/// A prefixed pattern recipe, cross-cluster (es8 → es9): only the tenant's days are matched
/// and moved, only the tenant's own template is copied, and an alias outside the prefix on a
/// matched day is refused at `init` by name.
#[tokio::test(flavor = "multi_thread")]
async fn a_prefixed_pattern_migrates_only_the_tenants_days_and_templates() -> anyhow::Result<()> {
    let (source_url, target_url) = (es8(), es9());
    let (src, dst) = (cluster(&source_url).await?, cluster(&target_url).await?);
    let g = Ground::new("tdays", &[&source_url, &target_url])?;
    let state = &g.state;
    let (a, b) = (Tenant::new(&g, "ta")?, Tenant::new(&g, "tb")?);
    let (own_template, shared_template, shared_alias) = (a.name("stats"), g.name("shared-tpl"), g.name("shared-read"));
    let legacy = |patterns: Value, order: u32| json!({ "index_patterns": patterns, "order": order });
    let templates = [
        (own_template.clone(), legacy(json!([a.name("stats-*")]), 1)),
        (shared_template.clone(), legacy(json!([a.name("stats-*"), b.name("stats-*")]), 2)),
    ];
    for (name, body) in &templates {
        src.json::<Value>(Method::Put, &format!("/_template/{name}"), &[], Some(body)).await?;
    }
    let days = [a.name("stats-2026.11.01"), a.name("stats-2026.11.02"), b.name("stats-2026.11.01")];
    for (i, day) in days.iter().enumerate() {
        let alias = if i < 2 { a.name("stats") } else { b.name("stats") };
        let mut aliases = json!({ alias: {} });
        if i == 1 {
            aliases[shared_alias.as_str()] = json!({});
        }
        let body = json!({ "settings": { "index.number_of_replicas": 0 }, "aliases": aliases });
        src.json::<Value>(Method::Put, &format!("/{day}"), &[], Some(&body)).await?;
        src.json::<Value>(Method::Put, &format!("/{day}/_doc/1"), &[("refresh", "true")], Some(&json!({ "n": i })))
            .await?;
    }
    let topic = g.topic(1).await?;
    let text = format!(
        "prefix = {:?}\nname = \"stats\"\n[source]\nurl = \"{source_url}\"\n[target]\nurl = \"{target_url}\"\n\
         [kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\n[[indices]]\nsource = \"stats-*\"\ntarget = \"v2-{{source}}\"\n",
        a.prefix,
        brokers()
    );
    let r = a.dir.join("stats.toml");
    std::fs::write(&r, text)?;
    let out = output(indexferry(state, &["init", r.to_str().unwrap_or_default()]))?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&shared_alias) && err.contains("prefix"), "{err}");
    assert!(!dst.exists(&a.name("v2-stats-2026.11.01")).await?, "nothing created");
    src.json::<Value>(Method::Delete, &format!("/{}/_alias/{shared_alias}", days[1]), &[], None).await?;

    let out = run_ok(indexferry(state, &["init", r.to_str().unwrap_or_default()]))?;
    for day in &days[..2] {
        let target = day.replacen(&a.prefix, &a.name("v2-"), 1);
        assert!(out.contains(&format!("{day} -> {target}")), "{out}");
    }
    assert!(!out.contains(&b.prefix), "tenant B's day is not matched: {out}");
    assert!(out.contains(&format!("template {own_template} copied")), "{out}");
    assert!(out.contains(&format!("template {shared_template} (_template) not copied")), "{out}");
    let name = a.name("stats");
    run_ok(indexferry(state, &["snapshot", &name]))?;
    run_ok(indexferry(state, &["rollover", &name]))?;
    let out = run_ok(indexferry(state, &["verify", &name]))?;
    assert!(out.contains("verify: identical"), "{out}");
    let moved: Value = dst.json(Method::Get, &format!("/_alias/{}", a.name("stats")), &[], None).await?;
    assert_eq!(moved.as_object().map(|m| m.len()), Some(2), "the tenant's read alias spans its days: {moved}");
    assert!(!dst.exists(&b.name("v2-stats-2026.11.01")).await?, "tenant B's day was not migrated");
    let theirs: Value = src.json(Method::Get, &format!("/{}/_alias", days[2]), &[], None).await?;
    assert!(theirs[&days[2]]["aliases"].get(b.name("stats")).is_some(), "B's alias stayed: {theirs}");
    let held: Value = dst.json(Method::Get, "/_template", &[], None).await?;
    assert!(held.get(&shared_template).is_none(), "the shared template stayed behind");
    Ok(())
}
