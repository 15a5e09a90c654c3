//! What a migration is tied to: the clusters (by UUID, not by URL text) and the topic that
//! `init` recorded. An override that points it elsewhere is refused; two URLs of one
//! cluster are one cluster; a compacted topic is refused; a dead-letter topic that cannot be
//! written is shown, not waited on in silence.

use indexferry_tests::*;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use serde_json::json;
use std::time::Duration;

fn admin() -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new().set("bootstrap.servers", brokers()).create()?)
}

fn failure(c: std::process::Command) -> anyhow::Result<String> {
    let out = output(c)?;
    anyhow::ensure!(!out.status.success(), "expected a failure: {}", String::from_utf8_lossy(&out.stdout));
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

async fn uuid(url: &str) -> anyhow::Result<String> {
    Ok(cluster(url).await?.uuid().await?.unwrap_or_default())
}

/// A source of no documents on one partition, with no mappings.
fn scenario(prefix: &str) -> Scenario {
    Scenario::new(prefix).partitions(1).mappings(json!({}))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_override_pointing_elsewhere_is_refused() -> anyhow::Result<()> {
    let m = scenario("ident").init().await?;
    let (url, name, topic) = (&m.source_url, m.name(), &m.names.topic);

    let err = failure(m.cmd(&["status", name, "--topic", "some-other-topic"]))?;
    assert!(err.contains("\"some-other-topic\"") && err.contains(&format!("({topic:?})")), "{err}");

    let (here, there) = (uuid(url).await?, uuid(&es9()).await?);
    assert!(!here.is_empty() && here != there);
    let err = failure(m.cmd(&["consume", name, "--until-caught-up", "--source-url", &es9()]))?;
    assert!(
        err.contains(&format!("is cluster {there}")) && err.contains(&format!("initialised on cluster {here}")),
        "{err}"
    );
    let err = failure(m.cmd(&["verify", name, "--target-url", &es9()]))?;
    assert!(err.contains("the target cluster") && err.contains(&there) && err.contains(&here), "{err}");
    // The same cluster through another URL is no other cluster.
    run_ok(m.cmd(&["consume", name, "--until-caught-up", "--source-url", "http://localhost:9200"]))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_urls_of_one_cluster_make_an_in_cluster_migration() -> anyhow::Result<()> {
    let m = scenario("oneclu").to("http://localhost:9200").start().await?;
    let init = m.init()?;
    assert!(init.contains("the same cluster as the source"), "{init}");
    assert_eq!(m.status()?["cross_cluster"], json!(false));
    run_ok(m.cmd(&["snapshot", m.name()]))?;
    let out = m.rollover()?;
    assert!(!out.contains("point the application"), "an in-cluster rollover moves the alias itself: {out}");
    let aliased = cluster(&m.source_url).await?.alias_indices(&m.names.alias).await?;
    assert_eq!(aliased, vec![m.names.dst.clone()], "the alias left the source in the same request");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compacted_topic_is_refused() -> anyhow::Result<()> {
    let m = scenario("compact").topic_config("cleanup.policy", "compact").start().await?;
    let recipe = m.recipe_in(m.dir.path())?;
    let err = failure(m.cmd(&["init", recipe.to_str().unwrap_or_default()]))?;
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert!(errors.len() == 1 && errors[0].contains("is compacted (cleanup.policy=compact)"), "{err}");
    assert!(!cluster(&m.target_url).await?.exists(&m.names.dst).await?, "nothing was created");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_topic_that_refuses_writes_is_shown_in_status() -> anyhow::Result<()> {
    let m = scenario("dlstuck").start().await?;
    // A dead-letter topic whose messages may not exceed 100 bytes: every letter is refused.
    let dead = format!("{}.deadletter", m.names.topic);
    let topic = NewTopic::new(&dead, 1, TopicReplication::Fixed(1)).set("max.message.bytes", "100");
    for r in admin()?.create_topics([&topic], &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("{t}: {e}"))?;
    }
    m.init()?;
    let mut consume = m.spawn("consume", &[])?;
    publish_raw(&m.names.topic, &[("junk", b"{not json at all, and long enough to be refused".to_vec())]).await?;
    let s = wait_for("status to show the dead-letter topic", Duration::from_secs(60), || {
        let s = m.status()?;
        Ok(s["unreachable"].as_array().is_some_and(|u| u.iter().any(|p| p["what"] == "dead-letter topic")).then_some(s))
    })
    .await?;
    assert!(s["unreachable"].to_string().contains(&dead), "{s}");
    assert_eq!(s["replay"]["dead_lettered"], json!(0), "not counted before it is delivered: {s}");

    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(&dead));
    alter = alter.set("max.message.bytes", "1048588");
    for r in admin()?.alter_configs([&alter], &AdminOptions::new()).await? {
        r.map_err(|(_, e)| anyhow::anyhow!("{e}"))?;
    }
    wait_for("the dead letter delivered", Duration::from_secs(60), || {
        let s = m.status()?;
        Ok((s["replay"]["dead_lettered"] == json!(1) && s["unreachable"] == json!([])).then_some(()))
    })
    .await?;
    terminate(&mut consume)?;
    Ok(())
}
