//! Against an Elasticsearch started with TLS (a CA of its own) and a password
//! (`dev/stack up es8-tls`): basic auth, API keys, refused credentials, and a whole
//! migration over TLS — with the password never printed.

use indexferry_common::config::ClusterConfig;
use indexferry_common::es::{Cluster, Method};
use indexferry_common::secret::Secret;
use indexferry_producer::Producer;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn tls_url() -> String {
    es8_tls()
}

fn password() -> String {
    tls_password()
}

fn ca() -> anyhow::Result<PathBuf> {
    tls_ca()
}

fn config(user: Option<&str>, password: Option<&str>, ca: Option<PathBuf>) -> ClusterConfig {
    let mut c = ClusterConfig::at(&tls_url());
    c.username = user.map(str::to_owned);
    c.password = password.map(Secret::new);
    c.ca_cert = ca;
    c
}

/// Which side of a migration es8-tls is.
#[derive(Clone, Copy)]
enum Side {
    Source,
    Target,
}

/// Writes `spec`'s recipe with es8-tls's user and CA on `side` and runs `init`: its output,
/// and how to run the migration's commands with the password in the environment.
fn init_over_tls<'a>(
    dir: &Path,
    state: &'a Path,
    mut spec: RecipeSpec<'_>,
    side: Side,
    pw: &'a str,
) -> anyhow::Result<(String, impl Fn(&[&str]) -> Command + 'a)> {
    let options = format!("username = \"elastic\"\nca_cert = {:?}\n", ca()?.display().to_string());
    let var = match side {
        Side::Source => {
            spec.source_options = options;
            "INDEXFERRY_SOURCE_PASSWORD"
        }
        Side::Target => {
            spec.target_options = options;
            "INDEXFERRY_TARGET_PASSWORD"
        }
    };
    let recipe = spec.write(dir)?;
    let cmd = move |args: &[&str]| {
        let mut c = indexferry(state, args);
        c.env(var, pw);
        c
    };
    let out = run_ok(cmd(&["init", recipe.to_str().unwrap_or_default()]))?;
    Ok((out, cmd))
}

/// Documents `d0`..`d{n-1}`, each `{"i": i}`, written through `p`.
async fn index_docs(p: &Producer, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        p.index(&format!("d{i}"), &json!({ "i": i }).to_string(), None).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_a_custom_ca_basic_auth_and_api_keys() -> anyhow::Result<()> {
    let ca = ca()?;
    let pw = password();
    let c = Cluster::connect(&config(Some("elastic"), Some(&pw), Some(ca.clone())), "source", Duration::from_secs(30))
        .await?;
    assert!(matches!(c.flavor, indexferry_common::es::Flavor::Elasticsearch { major: 8, .. }), "{c:?}");

    // A wrong password is refused at once with the cluster's reason, and not retried.
    let started = std::time::Instant::now();
    let err = Cluster::connect(
        &config(Some("elastic"), Some("wrong-pw-123"), Some(ca.clone())),
        "source",
        Duration::from_secs(30),
    )
    .await
    .expect_err("wrong password");
    assert!(err.to_string().contains("401"), "{err}");
    assert!(!err.to_string().contains("wrong-pw-123"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "a 401 is final");

    // Without the CA the certificate is not trusted.
    let err = Cluster::connect(&config(Some("elastic"), Some(&pw), None), "source", Duration::from_secs(2))
        .await
        .expect_err("untrusted certificate");
    assert!(!err.to_string().contains(&pw), "{err}");

    // An API key made with basic auth authenticates on its own.
    let key: Value =
        c.json(Method::Post, "/_security/api_key", &[], Some(&json!({ "name": unique("ferry-key") }))).await?;
    let mut with_key = config(None, None, Some(ca));
    with_key.api_key = Some(Secret::new(key["encoded"].as_str().unwrap_or_default()));
    let k = Cluster::connect(&with_key, "source", Duration::from_secs(30)).await?;
    let who: Value = k.json(Method::Get, "/_security/_authenticate", &[], None).await?;
    assert_eq!(who["authentication_type"], "api_key", "{who}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_over_tls_with_a_password() -> anyhow::Result<()> {
    let ca = ca()?;
    let pw = password();
    let url = tls_url();
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let Names { src, dst, alias, topic, name } = Names::new("tls");
    let admin =
        Cluster::connect(&config(Some("elastic"), Some(&pw), Some(ca.clone())), "source", Duration::from_secs(30))
            .await?;
    let body =
        json!({ "settings": { "index.number_of_replicas": 0 }, "aliases": { &alias: { "is_write_index": true } } });
    admin.json::<Value>(Method::Put, &format!("/{src}"), &[], Some(&body)).await?;
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 1).await?;
    let mut pcfg = producer_config(&url, &topic, &alias);
    pcfg.cluster = config(Some("elastic"), Some(&pw), Some(ca.clone()));
    let p = Producer::connect(pcfg).await?;
    index_docs(&p, 200).await?;

    let spec = RecipeSpec::new(&name, &url, &url, &topic, &src, &dst, &alias);
    let (mut seen, cmd) = init_over_tls(dir.path(), &state, spec, Side::Source, &pw)?;
    let log = dir.path().join("run.log");
    let mut run = spawn(cmd(&["run", &name]), &log)?;
    for i in 0..50 {
        p.delete(&format!("d{i}"), None).await?;
    }
    wait_for("caught up", Duration::from_secs(60), || {
        let out = output(cmd(&["status", &name, "--json"]))?;
        let s: Value = serde_json::from_slice(&out.stdout)?;
        Ok((caught_up(&s) && s["replay"]["lag_messages"] == json!(0)).then_some(()))
    })
    .await?;
    seen.push_str(&run_ok(cmd(&["rollover", &name]))?);
    let exit = wait_for("run to stop", Duration::from_secs(30), || Ok(run.try_wait()?)).await?;
    assert!(exit.success());
    let out = run_ok(cmd(&["verify", &name]))?;
    assert!(out.contains("verify: identical"), "{out}");
    seen.push_str(&out);
    seen.push_str(&std::fs::read_to_string(&log)?);
    assert!(!seen.contains(&pw), "the password leaked:\n{seen}");
    Ok(())
}

/// The producer follows a switch to a cluster behind TLS and a password with the credentials
/// and CA the application configured for it; the marker carries none of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_producer_follows_a_switch_to_a_cluster_with_tls_and_a_password() -> anyhow::Result<()> {
    let (ca, pw, url, source_url) = (ca()?, password(), tls_url(), es8());
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let Names { src, dst, alias, topic, name } = Names::new("tlsfollow");
    create_source(&source_url, &src, &alias, &topic, 1, source_mappings()).await?;
    let mut pcfg = producer_config(&source_url, &topic, &alias);
    pcfg.follow = vec![config(Some("elastic"), Some(&pw), Some(ca.clone()))];
    let p = Producer::connect(pcfg).await?;
    index_docs(&p, 100).await?;
    let spec = RecipeSpec::new(&name, &source_url, &url, &topic, &src, &dst, &alias);
    let (mut seen, cmd) = init_over_tls(dir.path(), &state, spec, Side::Target, &pw)?;
    seen.push_str(&run_ok(cmd(&["snapshot", &name]))?);
    seen.push_str(&run_ok(cmd(&["rollover", &name]))?);

    // Blocked on the source, the write reads the marker and lands on the TLS cluster.
    let e = p.index("after-1", r#"{"i":-1}"#, None).await?;
    assert_eq!(e.index, dst, "the write landed in the target index: {e:?}");
    assert_eq!(p.followed_to().as_deref(), Some(url.trim_end_matches('/')));
    assert_eq!(p.writes_after_switch(), 1);
    p.delete("d0", None).await?;
    let admin = Cluster::connect(&config(Some("elastic"), Some(&pw), Some(ca)), "t", Duration::from_secs(30)).await?;
    let got: Value = admin.json(Method::Get, &format!("/{dst}/_doc/after-1"), &[], None).await?;
    assert_eq!(got["_source"], json!({ "i": -1 }), "{got}");
    let out = run_ok(cmd(&["verify", &name]))?;
    assert!(out.contains("verify: identical") && out.contains("2 ids written after the switch"), "{out}");
    seen.push_str(&out);
    let meta: Value = cluster(&source_url).await?.json(Method::Get, &format!("/{src}/_mapping"), &[], None).await?;
    seen.push_str(&meta.to_string());
    assert!(!seen.contains(&pw), "the password leaked:\n{seen}");
    Ok(())
}

/// The stack starts es8-tls with `http.max_content_length=256kb`: a bulk request over it is
/// refused with 413. A batch too large is split until it fits; a document too large alone
/// is dead-lettered with the reason, and everything else still arrives.
#[tokio::test(flavor = "multi_thread")]
async fn documents_beyond_the_targets_request_limit_are_dead_lettered_and_the_rest_copied() -> anyhow::Result<()> {
    let ca = ca()?;
    let pw = password();
    let (url, target_url) = (es8(), tls_url());
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let Names { src, dst, alias, topic, name } = Names::new("big");
    create_source(&url, &src, &alias, &topic, 1, json!({})).await?;
    let p = Producer::connect(producer_config(&url, &topic, &alias)).await?;
    // 4 KB documents: a batch of 100 is 400 KB, over the limit, and must be split.
    let filler = "x".repeat(4000);
    let huge = json!({ "blob": "y".repeat(400_000) }).to_string();
    for i in 0..300 {
        p.index(&format!("d{i}"), &json!({ "i": i, "pad": filler }).to_string(), None).await?;
    }
    p.index("huge-snapshot", &huge, None).await?;

    let spec = RecipeSpec::new(&name, &url, &target_url, &topic, &src, &dst, &alias);
    let (_, cmd) = init_over_tls(dir.path(), &state, spec, Side::Target, &pw)?;
    let out = run_ok(cmd(&["snapshot", &name]))?;
    assert!(out.contains("applied=300 stale=0 rejected=1"), "{out}");

    let _consumer = spawn(cmd(&["consume", &name]), &dir.path().join("consume.log"))?;
    p.index("huge-replay", &huge, None).await?;
    for i in 300..400 {
        p.index(&format!("d{i}"), &json!({ "i": i, "pad": filler }).to_string(), None).await?;
    }
    let s = wait_for("the replay to pass the huge event", Duration::from_secs(60), || {
        let out = output(cmd(&["status", &name, "--json"]))?;
        let s: Value = serde_json::from_slice(&out.stdout)?;
        Ok((s["replay"]["lag_messages"] == json!(0) && s["replay"]["applied"].as_u64() >= Some(100)).then_some(s))
    })
    .await?;
    assert_eq!(s["replay"]["dead_lettered"], json!(1), "{s}");

    let letters = read_topic(&format!("{topic}.deadletter"), 2, Duration::from_secs(30))?;
    let mut ids = vec![];
    for (_, payload) in &letters {
        let l: Value = serde_json::from_slice(payload)?;
        assert_eq!(l["kind"], "rejected", "{l}");
        assert!(l["reason"].as_str().is_some_and(|r| r.contains("too large") && r.contains("413")), "{l}");
        ids.push(l["id"].as_str().unwrap_or_default().to_owned());
    }
    ids.sort();
    assert_eq!(ids, ["huge-replay", "huge-snapshot"]);

    let target =
        Cluster::connect(&config(Some("elastic"), Some(&pw), Some(ca)), "target", Duration::from_secs(30)).await?;
    target.json::<Value>(Method::Post, &format!("/{dst}/_refresh"), &[], None).await?;
    let count: Value = target.json(Method::Get, &format!("/{dst}/_count"), &[], None).await?;
    assert_eq!(count["count"], json!(400), "every document under the limit arrived");
    Ok(())
}

/// Kafka settings in the recipe reach librdkafka untouched: the stack's broker also listens
/// with SASL (PLAIN) on 9094, and a migration replays through it. A wrong password is a
/// clear failure that does not print it.
#[tokio::test(flavor = "multi_thread")]
async fn a_migration_through_kafka_with_sasl() -> anyhow::Result<()> {
    migration_through_sasl(9094, "SASL_PLAINTEXT", String::new()).await
}

/// The same over TLS (SASL_SSL on 9095, a certificate signed by the stack's CA): the CA is
/// passed through as `ssl.ca.location`.
#[tokio::test(flavor = "multi_thread")]
async fn a_migration_through_kafka_with_sasl_over_tls() -> anyhow::Result<()> {
    let ca = ca()?;
    migration_through_sasl(9095, "SASL_SSL", format!("\"ssl.ca.location\" = {:?}\n", ca.display().to_string())).await
}

/// `tls` is the TOML lines of the TLS settings; without them a TLS listener must be refused.
async fn migration_through_sasl(port: u16, protocol: &str, tls: String) -> anyhow::Result<()> {
    let sasl_password = std::env::var("INDEXFERRY_KAFKA_SASL_PASSWORD").unwrap_or_else(|_| "kafka-secret".into());
    let url = es8();
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let Names { src, dst, alias, topic, name } = Names::new("sasl");
    create_source(&url, &src, &alias, &topic, 2, json!({})).await?;
    let p = Producer::connect(producer_config(&url, &topic, &alias)).await?;
    for i in 0..100 {
        p.index(&format!("d{i}"), &json!({ "i": i }).to_string(), None).await?;
    }
    let write_recipe = |name: &str, password: &str, tls: &str| -> anyhow::Result<PathBuf> {
        let recipe = RecipeSpec::new(name, &url, &url, &topic, &src, &dst, &alias).write(dir.path())?;
        let listener = format!("brokers = \"127.0.0.1:{port}\"");
        let text = std::fs::read_to_string(&recipe)?.replace(&format!("brokers = \"{}\"", brokers()), &listener)
            + &format!(
                "\n[kafka.properties]\n\"security.protocol\" = \"{protocol}\"\n\"sasl.mechanism\" = \"PLAIN\"\n\
                 \"sasl.username\" = \"indexferry\"\n\"sasl.password\" = \"{password}\"\n{tls}"
            );
        anyhow::ensure!(text.contains(&listener), "the recipe names the SASL listener");
        std::fs::write(&recipe, text)?;
        Ok(recipe)
    };
    let refused = |recipe: PathBuf| -> anyhow::Result<String> {
        let out = output({
            let mut c = indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]);
            c.args(["--connect-timeout", "5s"]);
            c
        })?;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        Ok(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };

    let said = refused(write_recipe(&unique("sasl-wrong"), "not-the-password-42", &tls)?)?;
    assert!(!said.contains("not-the-password-42"), "the password leaked: {said}");
    assert!(said.contains("error: kafka at") && said.contains("Authentication failed"), "says why: {said}");
    if !tls.is_empty() {
        // Without the CA, the broker's certificate is not trusted.
        let said = refused(write_recipe(&unique("sasl-no-ca"), &sasl_password, "")?)?;
        assert!(!said.contains(&sasl_password), "the password leaked: {said}");
        assert!(said.contains("error: kafka at") && said.contains("certificate verify failed"), "says why: {said}");
    }

    let recipe = write_recipe(&name, &sasl_password, &tls)?;
    run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    for i in 0..30 {
        p.delete(&format!("d{i}"), None).await?;
    }
    run_ok(indexferry(&state, &["snapshot", &name]))?;
    let mut consume = spawn(indexferry(&state, &["consume", &name, "--until-caught-up"]), &dir.path().join("c.log"))?;
    let exit =
        wait_for("consume to catch up through SASL", Duration::from_secs(60), || Ok(consume.try_wait()?)).await?;
    assert!(exit.success());
    let docs = all_docs(&url, &dst).await?;
    assert_eq!(docs.len(), 70, "the deletes were replayed through the {protocol} listener");
    assert!(!docs.contains_key("d0") && docs.contains_key("d99"));
    Ok(())
}
