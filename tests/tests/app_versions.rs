//! Applications that version their own documents, migrated under the default `source`
//! version rule: every target document keeps the source's `_version`, so the application's
//! writes go on succeeding after the switch.
//!
//! - An application writing as Invenio's record indexer does (`version_type=external_gte`,
//!   millisecond timestamps as versions, the same version written twice with another body,
//!   deletes and re-creates), with its writes running through the rollover: 0 failed writes,
//!   and an independent comparison finds the same ids, `_source`, routing and `_version`.
//! - A version repeated with another body after the snapshot copied the first: the replay
//!   refuses the event as stale, and reconcile repairs it before the switch.
//! - A version gone backwards (a delete then re-create after the source forgot the
//!   tombstone, as across a source node restart): reconcile names it, and rollover writes it
//!   again at the source's version inside its pause.

use indexferry_common::es::{Cluster, Method};
use indexferry_producer::{Producer, Versioning, WriteError};
use indexferry_tests::*;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn record(id: &str, revision: u64, title: &str) -> String {
    json!({ "id": id, "title": title, "revision": revision % 1_000_000, "active": true }).to_string()
}

/// What the application did.
#[derive(Default)]
struct Tally {
    done: AtomicU64,
    failed: AtomicU64,
    /// The first failures, for the assertion's message.
    first: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.first.lock() {
            if f.len() < 5 {
                f.push(what);
            }
        }
    }
}

/// An application writing records as Invenio's indexer does, one write at a time, until
/// `stop`: `external_gte` with the time in milliseconds as the version; now and then the
/// same version again with another body (a record indexed again at the same revision), a
/// delete (with a version too) and a re-create of a deleted id.
async fn invenio_like(producer: Arc<Producer>, ids: u64, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    while !stop.load(Ordering::Relaxed) {
        let (id, roll) = {
            let mut rng = rand::rng();
            (format!("rec-{}", rng.random_range(0..ids)), rng.random_range(0..100))
        };
        // A version never below the id's last one, even if the clock steps back.
        let fresh = now_ms().max(last.get(&id).copied().unwrap_or(0));
        let result = match roll {
            0..=9 if last.contains_key(&id) => {
                let same = last[&id];
                producer
                    .index_versioned(&id, &record(&id, same, "indexed again"), None, Versioning::ExternalGte(same))
                    .await
            }
            10..=21 => producer.delete_versioned(&id, None, Versioning::ExternalGte(fresh)).await,
            _ => {
                producer
                    .index_versioned(&id, &record(&id, fresh, "a record"), None, Versioning::ExternalGte(fresh))
                    .await
            }
        };
        match result {
            Ok(event) => {
                last.insert(id, event.version);
                tally.done.fetch_add(1, Ordering::Relaxed);
            }
            // Deleting a record that is not there answers 404 with an acknowledgement: not a failure.
            Err(WriteError::Conflict(e)) => tally.fail(format!("{id}: 409 {e}")),
            Err(e) => tally.fail(format!("{id}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
}

async fn connect(url: &str, topic: &str, alias: &str) -> anyhow::Result<Arc<Producer>> {
    Ok(Arc::new(Producer::connect(producer_config(url, topic, alias)).await?))
}

/// The Invenio-like application writing through an in-cluster migration and its switch,
/// under the recipe's `versions` (`None`: the default).
struct Switched {
    m: Migration,
    source: Cluster,
    tally: Arc<Tally>,
}

async fn invenio_through_a_switch(versions: Option<&str>) -> anyhow::Result<Switched> {
    let top = versions.map(|v| format!("versions = \"{v}\"")).unwrap_or_default();
    let mut m = Scenario::new("invenio")
        .recipe(move |r| (r.mappings, r.top) = (changed_mappings(), top.clone()))
        .start()
        .await?;
    let (url, Names { src, alias, topic, .. }) = (m.source_url.clone(), &m.names);
    let source = cluster(&url).await?;
    let producer = connect(&url, topic, alias).await?;
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let app = tokio::spawn(invenio_like(producer.clone(), 400, stop.clone(), tally.clone()));
    wait_docs(&url, src, 200).await?;

    let out = m.init()?;
    match versions {
        None => {
            assert!(out.contains("versions source: every target document keeps the source's _version"), "{out}");
            assert_eq!(gc_deletes(&source, src).await?, json!("24h"), "init raises the source's gc_deletes");
        }
        Some(_) => {
            assert!(out.contains("writing its own versions (external, external_gte) is refused with 409"), "{out}")
        }
    }
    m.run()?;
    m.wait_caught_up(Duration::from_secs(180)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("{}", m.rollover()?);
    // The application goes on writing into the target, through the alias.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    app.await?;
    m.wait_run_exit().await?;
    Ok(Switched { m, source, tally })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_external_gte_application_keeps_writing_through_an_in_cluster_switch() -> anyhow::Result<()> {
    let s = invenio_through_a_switch(None).await?;
    let Names { src, dst, topic, .. } = &s.m.names;
    let (done, failed) = (s.tally.done.load(Ordering::Relaxed), s.tally.failed.load(Ordering::Relaxed));
    let first = s.tally.first.lock().map(|f| f.join("\n")).unwrap_or_default();
    assert_eq!(failed, 0, "no write of the application may fail ({done} done); first:\n{first}");
    assert!(done > 300, "the application really wrote ({done})");
    assert_eq!(gc_deletes(&s.source, src).await?, Value::Null, "rollover puts the source's gc_deletes back");

    // Independent of `verify`: every id not written after the switch has the same
    // `_source`, routing and `_version` on both sides.
    let after_switch: BTreeSet<String> = read_topic_until_idle(topic, Duration::from_secs(3))?
        .into_iter()
        .filter_map(|(_, payload)| indexferry_schemas::decode(None, &payload).ok())
        .filter(|e| e.index == *dst)
        .map(|e| e.id)
        .collect();
    assert!(!after_switch.is_empty(), "the application wrote after the switch");
    let url = &s.m.source_url;
    let (in_source, in_target) = (all_stored(url, src).await?, all_stored(url, dst).await?);
    let ids: BTreeSet<&String> = in_source.keys().chain(in_target.keys()).collect();
    let differ: Vec<&&String> =
        ids.iter().filter(|id| !after_switch.contains(**id) && in_source.get(**id) != in_target.get(**id)).collect();
    assert!(differ.is_empty(), "{} ids differ, first: {:?}", differ.len(), differ.iter().take(5).collect::<Vec<_>>());
    assert!(in_source.values().any(|d| d.version > 1_000_000_000), "the versions compared are the application's");

    let (report, _) = s.m.verify()?;
    assert_eq!(report["identical"], json!(true), "{report}");
    Ok(())
}

/// What the `seq_no` rule costs, as `init` says: the same application's writes to migrated
/// documents are refused after the switch. (This is what every migration did before the
/// `source` rule: 13,715 of 18,428 such writes failed in the run that found it.)
#[tokio::test(flavor = "multi_thread")]
async fn under_the_seq_no_rule_an_external_gte_application_is_refused_after_the_switch() -> anyhow::Result<()> {
    let s = invenio_through_a_switch(Some("seq_no")).await?;
    let failed = s.tally.failed.load(Ordering::Relaxed);
    let first = s.tally.first.lock().map(|f| f.join("\n")).unwrap_or_default();
    assert!(failed > 0, "the target's versions are above the application's");
    assert!(first.contains("409"), "{first}");
    Ok(())
}

async fn gc_deletes(c: &Cluster, index: &str) -> anyhow::Result<Value> {
    let s: Value = c.json(Method::Get, &format!("/{index}/_settings"), &[("flat_settings", "true")], None).await?;
    Ok(s[index]["settings"]["index.gc_deletes"].clone())
}

/// `migration reconcile --json`: the counts of the only pair.
fn reconcile_counts(state: &std::path::Path, name: &str) -> anyhow::Result<Value> {
    let out = output(indexferry(state, &["reconcile", name, "--json"]))?;
    Ok(json_report("reconcile", &out)?["pairs"][0]["counts"].clone())
}

/// An in-cluster migration over a topic of one partition, not yet `init`, and the
/// application's producer on it.
async fn versioned(prefix: &str) -> anyhow::Result<(Migration, Arc<Producer>)> {
    let m = Scenario::new(prefix).partitions(1).start().await?;
    let producer = connect(&m.source_url, &m.names.topic, &m.names.alias).await?;
    Ok((m, producer))
}

/// The consumer alone (the snapshot is done), until it has caught up.
async fn consume(state: &std::path::Path, name: &str, log: &std::path::Path) -> anyhow::Result<Proc> {
    let consumer = spawn(indexferry(state, &["consume", name]), log)?;
    wait_for("the replay to apply every event", Duration::from_secs(60), || {
        Ok((status(state, name)?["replay"]["lag_messages"] == json!(0)).then_some(()))
    })
    .await?;
    Ok(consumer)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_version_with_another_body_is_repaired_before_the_switch() -> anyhow::Result<()> {
    let (m, producer) = versioned("samever").await?;
    producer.index_versioned("r1", &record("r1", 100, "first body"), None, Versioning::ExternalGte(100)).await?;
    producer.index_versioned("r2", &record("r2", 7, "untouched"), None, Versioning::ExternalGte(7)).await?;
    m.init()?;
    m.snapshot()?;
    let (url, state, Names { src, dst, name, .. }) = (&m.source_url, &m.state, &m.names);
    // Indexed again at the same revision, after the snapshot copied the first body: the
    // target refuses the event (version 100 is not above 100).
    producer.index_versioned("r1", &record("r1", 100, "second body"), None, Versioning::ExternalGte(100)).await?;
    let _consumer = consume(state, name, &m.file("consume.log")).await?;
    let target = all_stored(url, dst).await?;
    assert_eq!(target["r1"].source["title"], "first body", "the replay alone cannot tell the bodies apart");
    let s = m.status()?;
    assert!(s["replay"]["stale"].as_u64().unwrap_or(0) >= 1, "{s}");

    let counts = reconcile_counts(state, name)?;
    assert_eq!(counts["same_version_other_body"], json!(1), "{counts}");
    assert_eq!(counts["repaired"], json!(1), "{counts}");
    let target = all_stored(url, dst).await?;
    assert_eq!((target["r1"].version, &target["r1"].source["title"]), (100, &json!("second body")));
    assert_eq!(reconcile_counts(state, name)?["repaired"], json!(0), "a second pass finds nothing");

    m.rollover()?;
    let (in_source, in_target) = (all_stored(url, src).await?, all_stored(url, dst).await?);
    assert_eq!(in_source, in_target);
    let out = run_ok(m.cmd(&["verify", name]))?;
    assert!(out.contains("verify: identical"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_gone_backwards_is_named_and_written_again_inside_the_pause() -> anyhow::Result<()> {
    let (m, producer) = versioned("backwards").await?;
    for n in 0..3 {
        producer.index("d1", &record("d1", n, "before"), None).await?;
    }
    producer.index("d2", &record("d2", 0, "kept"), None).await?;
    m.init()?;
    m.snapshot()?;
    let (url, state, Names { src, dst, name, .. }) = (&m.source_url, &m.state, &m.names);
    let source = cluster(url).await?;

    // The source forgets the delete's tombstone, as a node restart makes it do: the
    // re-created document starts again at _version 1.
    source.put_settings(src, json!({ "index.gc_deletes": "0s" })).await?;
    let deleted = producer.delete("d1", None).await?;
    assert_eq!(deleted.version, 4);
    let mut recreated = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        source.json::<Value>(Method::Post, &format!("/{src}/_refresh"), &[], None).await?;
        let e = producer.index("d1", &record("d1", 9, "re-created"), None).await?;
        if e.version == 1 {
            recreated = Some(e);
            break;
        }
        // Not forgotten yet: delete again and retry.
        producer.delete("d1", None).await?;
    }
    let recreated = recreated.expect("the source forgets a tombstone with index.gc_deletes 0s");
    assert_eq!(recreated.version, 1);
    let _consumer = consume(state, name, &m.file("consume.log")).await?;

    let counts = reconcile_counts(state, name)?;
    assert_eq!(counts["backwards"], json!(1), "{counts}");
    eprintln!("{}", m.rollover()?);
    let (in_source, in_target) = (all_stored(url, src).await?, all_stored(url, dst).await?);
    assert_eq!(in_target["d1"].version, 1, "the target holds the source's version: {:?}", in_target["d1"]);
    assert_eq!(in_source, in_target);
    let out = run_ok(m.cmd(&["verify", name]))?;
    assert!(out.contains("verify: identical"), "{out}");
    Ok(())
}
