//! The topic changing under the consumer, for real: events deleted (retention,
//! delete-records) before they were replayed stop the consumer and refuse the rollover, at
//! start and while it runs; partitions added after `init` are replayed; the offsets a
//! transaction's commit markers take are neither a loss nor lag.

use indexferry_common::es::Method;
use indexferry_producer::Producer;
use indexferry_tests::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::time::Duration;

fn admin() -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new().set("bootstrap.servers", brokers()).create()?)
}

/// Deletes partition 0's events before `offset`, as retention would.
async fn delete_records(topic: &str, offset: i64) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))?;
    let result = admin()?.delete_records(&tpl, &AdminOptions::new()).await?;
    for e in result.elements() {
        e.error()?;
    }
    Ok(())
}

fn stderr_of(c: std::process::Command) -> anyhow::Result<(bool, String)> {
    let out = output(c)?;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

async fn write_blocked(url: &str, index: &str) -> anyhow::Result<bool> {
    let s: Value = cluster(url)
        .await?
        .json(Method::Get, &format!("/{index}/_settings/index.blocks.write"), &[("flat_settings", "true")], None)
        .await?;
    Ok(s[index]["settings"]["index.blocks.write"] == json!("true"))
}

/// A one-partition source with two documents, a migration initialised on it and its
/// snapshot done; a producer writing through its alias.
async fn migration(prefix: &str) -> anyhow::Result<(Migration, Producer)> {
    migration_with(prefix, "").await
}

/// [`migration`] with `rollover_options` in the recipe's `[rollover]`.
async fn migration_with(prefix: &str, rollover_options: &'static str) -> anyhow::Result<(Migration, Producer)> {
    let m = Scenario::new(prefix)
        .partitions(1)
        .mappings(json!({}))
        .docs(2, |i| json!({ "id": format!("d{i}") }))
        .recipe(move |r| r.extra = rollover_options)
        .start()
        .await?;
    let init = m.init()?;
    assert!(init.contains("cleanup.policy delete"), "init prints the topic's retention: {init}");
    m.snapshot()?;
    let p = Producer::connect(producer_config(&m.source_url, &m.names.topic, &m.names.alias)).await?;
    Ok((m, p))
}

#[tokio::test(flavor = "multi_thread")]
async fn events_deleted_before_replay_stop_the_consumer_and_refuse_the_rollover() -> anyhow::Result<()> {
    let (m, p) = migration_with("lost", "reconcile = false").await?;
    let (state, n) = (&m.state, &m.names);
    // Offsets 0-1 came before init; 2-6 after it, and 2-4 are deleted unreplayed.
    for i in 0..5 {
        p.index(&format!("late-{i}"), r#"{"late":true}"#, None).await?;
    }
    delete_records(&n.topic, 5).await?;

    let (ok, err) = stderr_of(indexferry(state, &["consume", &n.name, "--until-caught-up"]))?;
    assert!(!ok, "the consumer must not skip deleted events");
    assert!(
        err.contains(&n.topic) && err.contains("partition 0 (checkpoint 2, first available offset 5: 3 events)"),
        "{err}"
    );
    let s = status(state, &n.name)?;
    assert_eq!(s["lost_events"], json!([{ "partition": 0, "next_offset": 2, "first_available": 5 }]), "{s}");
    let table = run_ok(indexferry(state, &["status", &n.name]))?;
    assert!(table.contains("LOST EVENTS: partition 0 checkpoint 2 but the first available offset is 5"), "{table}");

    let (ok, err) = stderr_of(indexferry(state, &["rollover", &n.name]))?;
    assert!(!ok && err.contains("rollover refused") && err.contains("first available offset 5"), "{err}");
    assert!(!write_blocked(&es8(), &n.src).await?, "a refused rollover leaves no write block");

    // The operator accepts the loss: the rest is replayed, the loss stays on record, and the
    // rollover (its own reconcile off) still refuses until a reconcile repaired what the
    // lost events changed.
    run_ok(indexferry(state, &["consume", &n.name, "--until-caught-up", "--accept-lost-events"]))?;
    let s = status(state, &n.name)?;
    assert_eq!(s["lost_events"], json!([]), "{s}");
    assert_eq!(s["accepted_losses"][0]["from"], json!(2), "{s}");
    assert_eq!(s["accepted_losses"][0]["to"], json!(5), "{s}");
    assert_eq!(s["replay"]["applied"], json!(2), "late-3 and late-4 were replayed: {s}");
    let (ok, err) = stderr_of(indexferry(state, &["rollover", &n.name]))?;
    assert!(!ok && err.contains("lost and skipped") && err.contains("no clean reconcile pass"), "{err}");
    assert!(!write_blocked(&es8(), &n.src).await?);
    let out = run_ok(indexferry(state, &["reconcile", &n.name]))?;
    assert!(out.contains("missing=3") && out.contains("reconcile: repaired 3"), "late-0..2 are copied: {out}");
    run_ok(indexferry(state, &["rollover", &n.name]))?;
    run_ok(indexferry(state, &["verify", &n.name]))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn events_deleted_under_a_running_consumer_stop_it() -> anyhow::Result<()> {
    let (m, p) = migration("lostlive").await?;
    let (state, n) = (&m.state, &m.names);
    let log = m.file("consume.log");
    let mut consume = spawn(indexferry(state, &["consume", &n.name]), &log)?;
    p.index("seen", "{}", None).await?;
    wait_for("the first event replayed", Duration::from_secs(30), || {
        Ok((status(state, &n.name)?["replay"]["applied"] == json!(1)).then_some(()))
    })
    .await?;
    // Frozen, the consumer cannot fetch while its next events are written and deleted.
    let pid = nix::unistd::Pid::from_raw(consume.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)?;
    for i in 0..4 {
        p.index(&format!("gone-{i}"), "{}", None).await?;
    }
    let deleted = delete_records(&n.topic, 7).await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT)?;
    deleted?;
    let exit = wait_for("the consumer to stop", Duration::from_secs(60), || Ok(consume.try_wait()?)).await?;
    let log = std::fs::read_to_string(&log)?;
    assert!(!exit.success(), "{log}");
    assert!(log.contains("partition 0 (checkpoint 3, first available offset 7: 4 events)"), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_added_after_init_are_replayed() -> anyhow::Result<()> {
    let (m, _) = migration("grow").await?;
    let (state, n) = (&m.state, &m.names);
    let log = m.file("consume.log");
    let port = 20000 + rand::random::<u16>() % 20000;
    let metrics = format!("127.0.0.1:{port}");
    let mut consume = spawn(indexferry(state, &["consume", &n.name, "--metrics-addr", &metrics]), &log)?;

    let grow = NewPartitions::new(&n.topic, 3);
    for r in admin()?.create_partitions([&grow], &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("cannot add partitions to {t}: {e}"))?;
    }
    // A producer started now knows all three partitions; its events spread over them.
    let p = Producer::connect(producer_config(&es8(), &n.topic, &n.alias)).await?;
    for i in 0..30 {
        p.index(&format!("new-{i}"), "{}", None).await?;
    }
    let ends = indexferry_common::kafka::end_offsets(&kafka(&n.topic), &n.topic, Duration::from_secs(10))?;
    assert!(ends[&1] > 0 && ends[&2] > 0, "events on the new partitions: {ends:?}");

    let s = wait_for("every event replayed", Duration::from_secs(60), || {
        let s = status(state, &n.name)?;
        Ok((s["replay"]["applied"] == json!(30) && s["replay"]["lag_messages"] == json!(0)).then_some(s))
    })
    .await?;
    let partitions: Vec<i64> =
        s["partitions"].as_array().into_iter().flatten().filter_map(|p| p["partition"].as_i64()).collect();
    assert_eq!(partitions, vec![0, 1, 2], "{s}");
    let scraped = wait_for("lag gauges of the new partitions", Duration::from_secs(30), || {
        let body = std::process::Command::new("curl").args(["-s", &format!("http://{metrics}/metrics")]).output()?;
        let body = String::from_utf8_lossy(&body.stdout).into_owned();
        Ok(body.contains("indexferry_consumer_lag_messages{partition=\"2\"} 0").then_some(body))
    })
    .await?;
    assert!(scraped.contains("indexferry_consumer_lag_messages{partition=\"1\"} 0"), "{scraped}");

    terminate(&mut consume)?;
    // A consumer started anew finds all three partitions in its checkpoint or at offset 0.
    run_ok(indexferry(state, &["consume", &n.name, "--until-caught-up"]))?;
    let out = run_ok(indexferry(state, &["rollover", &n.name]))?;
    assert!(out.contains("write pause"), "{out}");
    run_ok(indexferry(state, &["verify", &n.name]))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_markers_are_neither_loss_nor_lag() -> anyhow::Result<()> {
    let (m, p) = migration("txn").await?;
    let (state, n) = (&m.state, &m.names);
    // An application that publishes in transactions: each commit leaves a marker that takes
    // an offset and is never delivered.
    let events: Vec<Vec<u8>> = {
        let mut out = vec![];
        for i in 0..3 {
            out.push(p.index(&format!("t-{i}"), "{}", None).await?.to_json());
        }
        out
    };
    let txn: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", brokers()).set("transactional.id", unique("txn")).create()?;
    txn.init_transactions(Duration::from_secs(30))?;
    for e in &events {
        txn.begin_transaction()?;
        let key = "t";
        txn.send(FutureRecord::to(&n.topic).key(key).payload(e), Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
        txn.commit_transaction(Duration::from_secs(30))?;
    }

    let consumed = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking({
            let (state, name) = (state.clone(), n.name.clone());
            move || run_ok(indexferry(&state, &["consume", &name, "--until-caught-up"]))
        }),
    )
    .await;
    assert!(matches!(consumed, Ok(Ok(Ok(_)))), "--until-caught-up stops after the last marker: {consumed:?}");
    let s = status(state, &n.name)?;
    assert_eq!(s["lost_events"], json!([]), "{s}");
    assert_eq!(s["replay"]["lag_messages"], json!(0), "{s}");
    let out = run_ok(indexferry(state, &["rollover", &n.name]))?;
    assert!(out.contains("write pause"), "{out}");
    Ok(())
}
