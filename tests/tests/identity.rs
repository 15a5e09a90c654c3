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

#[tokio::test(flavor = "multi_thread")]
async fn an_override_pointing_elsewhere_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let url = es8();
    let n = Names::new("ident");
    create_source(&url, &n.src, &n.alias, &n.topic, 1, json!({})).await?;
    let recipe = RecipeSpec::new(&n.name, &url, &url, &n.topic, &n.src, &n.dst, &n.alias).write(dir.path())?;
    run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;

    let err = failure(indexferry(&state, &["status", &n.name, "--topic", "some-other-topic"]))?;
    assert!(err.contains("\"some-other-topic\"") && err.contains(&format!("({:?})", n.topic)), "{err}");

    let (here, there) = (uuid(&url).await?, uuid(&es9()).await?);
    assert!(!here.is_empty() && here != there);
    let err = failure(indexferry(&state, &["consume", &n.name, "--until-caught-up", "--source-url", &es9()]))?;
    assert!(
        err.contains(&format!("is cluster {there}")) && err.contains(&format!("initialised on cluster {here}")),
        "{err}"
    );
    let err = failure(indexferry(&state, &["verify", &n.name, "--target-url", &es9()]))?;
    assert!(err.contains("the target cluster") && err.contains(&there) && err.contains(&here), "{err}");
    // The same cluster through another URL is no other cluster.
    run_ok(indexferry(&state, &["consume", &n.name, "--until-caught-up", "--source-url", "http://localhost:9200"]))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_urls_of_one_cluster_make_an_in_cluster_migration() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let (source_url, target_url) = (es8(), "http://localhost:9200".to_owned());
    let n = Names::new("oneclu");
    create_source(&source_url, &n.src, &n.alias, &n.topic, 1, json!({})).await?;
    let recipe =
        RecipeSpec::new(&n.name, &source_url, &target_url, &n.topic, &n.src, &n.dst, &n.alias).write(dir.path())?;
    let init = run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    assert!(init.contains("the same cluster as the source"), "{init}");
    assert_eq!(status(&state, &n.name)?["cross_cluster"], json!(false));
    run_ok(indexferry(&state, &["snapshot", &n.name]))?;
    let out = run_ok(indexferry(&state, &["rollover", &n.name]))?;
    assert!(!out.contains("point the application"), "an in-cluster rollover moves the alias itself: {out}");
    let aliased = cluster(&source_url).await?.alias_indices(&n.alias).await?;
    assert_eq!(aliased, vec![n.dst.clone()], "the alias left the source in the same request");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compacted_topic_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let url = es8();
    let n = Names::new("compact");
    create_source(&url, &n.src, &n.alias, &unique("unused"), 1, json!({})).await?;
    let topic = NewTopic::new(&n.topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    for r in admin()?.create_topics([&topic], &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("{t}: {e}"))?;
    }
    let recipe = RecipeSpec::new(&n.name, &url, &url, &n.topic, &n.src, &n.dst, &n.alias).write(dir.path())?;
    let err = failure(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert!(errors.len() == 1 && errors[0].contains("is compacted (cleanup.policy=compact)"), "{err}");
    assert!(!cluster(&url).await?.exists(&n.dst).await?, "nothing was created");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_topic_that_refuses_writes_is_shown_in_status() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let url = es8();
    let n = Names::new("dlstuck");
    create_source(&url, &n.src, &n.alias, &n.topic, 1, json!({})).await?;
    // A dead-letter topic whose messages may not exceed 100 bytes: every letter is refused.
    let dead = format!("{}.deadletter", n.topic);
    let topic = NewTopic::new(&dead, 1, TopicReplication::Fixed(1)).set("max.message.bytes", "100");
    for r in admin()?.create_topics([&topic], &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("{t}: {e}"))?;
    }
    let recipe = RecipeSpec::new(&n.name, &url, &url, &n.topic, &n.src, &n.dst, &n.alias).write(dir.path())?;
    run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    let mut consume = spawn(indexferry(&state, &["consume", &n.name]), &dir.path().join("consume.log"))?;
    publish_raw(&n.topic, &[("junk", b"{not json at all, and long enough to be refused".to_vec())]).await?;
    let s = wait_for("status to show the dead-letter topic", Duration::from_secs(60), || {
        let s = status(&state, &n.name)?;
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
        let s = status(&state, &n.name)?;
        Ok((s["replay"]["dead_lettered"] == json!(1) && s["unreachable"] == json!([])).then_some(()))
    })
    .await?;
    terminate(&mut consume)?;
    Ok(())
}
