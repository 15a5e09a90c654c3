//! The orderings external versioning must survive, each produced for real: delete then
//! re-create of the same id, an event delivered twice, an event delivered after a newer
//! one, and a delete that reaches the target before the snapshot copies the old version.
//! Plus bad input: a malformed event and a document the target's mapping rejects both go
//! to the dead-letter topic with their reasons, and the pipeline goes on.

use indexferry_common::es::Method;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

async fn target_doc(url: &str, index: &str, id: &str) -> anyhow::Result<Option<Value>> {
    let c = cluster(url).await?;
    match c.json::<Value>(Method::Get, &format!("/{index}/_doc/{id}"), &[], None).await {
        Ok(v) => Ok(Some(v["_source"].clone())),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reorderings_duplicates_and_early_deletes_converge() -> anyhow::Result<()> {
    let mut m = Scenario::new("conv").partitions(2).mappings(json!({})).start().await?;
    let (url, state, name) = (m.source_url.clone(), m.state.clone(), m.name().to_owned());
    let (src, dst, topic) = (m.names.src.clone(), m.names.dst.clone(), m.names.topic.clone());
    for id in ["a", "b", "c", "d"] {
        m.producer().await?.index(id, &json!({ "id": id, "rev": "0" }).to_string(), None).await?;
    }
    m.init()?;
    let p = m.producer().await?;

    // Delete, then re-create "a": _version restarts, _seq_no keeps growing.
    let deleted = p.delete("a", None).await?;
    let recreated = p.index("a", r#"{"id":"a","rev":"recreated"}"#, None).await?;
    assert!(recreated.seq_no > deleted.seq_no, "_seq_no grows across delete-then-recreate");
    // Two updates of "b"; then the newer delivered again, and the older delivered late.
    let b1 = p.index("b", r#"{"id":"b","rev":"1"}"#, None).await?;
    let b2 = p.index("b", r#"{"id":"b","rev":"2"}"#, None).await?;
    publish_raw(&topic, &[("b", b2.to_json()), ("b", b1.to_json())]).await?;
    // "c" is deleted right after the snapshot's view would have been taken: its delete
    // event (seq_no above the copy's) reaches the target before the snapshot copies it.
    let c_now: Value = cluster(&url).await?.json(Method::Get, &format!("/{src}/_doc/c"), &[], None).await?;
    let c_seq = c_now["_seq_no"].as_u64().unwrap_or(0);
    let mut early_delete = b1.clone();
    early_delete.op = indexferry_schemas::Op::Delete;
    early_delete.id = "c".into();
    early_delete.seq_no = c_seq + 1;
    early_delete.source = None;
    publish_raw(&topic, &[("c", early_delete.to_json())]).await?;

    // Replay first, alone, until caught up; then the snapshot, alone.
    let mut consume = m.spawn("consume", &[])?;
    wait_for("replay caught up", Duration::from_secs(60), || {
        let s = status(&state, &name)?;
        Ok((s["replay"]["lag_messages"] == json!(0) && s["replay"]["applied"].as_u64().unwrap_or(0) >= 5).then_some(s))
    })
    .await?;
    let s = status(&state, &name)?;
    assert_eq!(s["replay"]["stale"], json!(2), "the duplicate and the late event are stale: {s}");
    run_ok(indexferry(&state, &["snapshot", &name]))?;
    let s = status(&state, &name)?;
    // a (recreated), b (rev 2) and the early-deleted c were already newer in the target.
    assert_eq!(s["pairs"][0]["stale"], json!(3), "{s}");
    assert_eq!(s["pairs"][0]["applied"], json!(1), "only d came from the snapshot: {s}");

    assert_eq!(target_doc(&url, &dst, "a").await?, Some(json!({"id":"a","rev":"recreated"})));
    assert_eq!(target_doc(&url, &dst, "b").await?, Some(json!({"id":"b","rev":"2"})));
    assert_eq!(target_doc(&url, &dst, "c").await?, None, "the early delete beats the older copy");
    assert_eq!(target_doc(&url, &dst, "d").await?, Some(json!({"id":"d","rev":"0"})));

    // Delivered again, late, after everything: nothing moves.
    publish_raw(&topic, &[("b", b1.to_json()), ("a", recreated.to_json())]).await?;
    wait_for("late events judged", Duration::from_secs(30), || {
        let s = status(&state, &name)?;
        Ok((s["replay"]["lag_messages"] == json!(0) && s["replay"]["stale"] == json!(4)).then_some(()))
    })
    .await?;
    assert_eq!(target_doc(&url, &dst, "b").await?, Some(json!({"id":"b","rev":"2"})));
    terminate(&mut consume)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_events_and_mapping_conflicts_go_to_the_dead_letter_topic() -> anyhow::Result<()> {
    let mut m = Scenario::new("dlq")
        .partitions(1)
        .mappings(json!({ "properties": { "n": { "type": "keyword" } } }))
        .recipe(|r| r.mappings = json!({ "properties": { "n": { "type": "long" } } }))
        .start()
        .await?;
    m.producer().await?.index("seed", r#"{"n":"1"}"#, None).await?;
    m.init()?;
    m.run()?;
    // Bad input only after the snapshot, so that only the replay meets it.
    m.wait_caught_up(Duration::from_secs(60)).await?;
    let (url, dst, topic) = (m.target_url.clone(), m.names.dst.clone(), m.names.topic.clone());

    publish_raw(&topic, &[("junk", b"{this is not json".to_vec())]).await?;
    let p = m.producer().await?;
    p.index("conflict", r#"{"n":"not a number"}"#, None).await?;
    p.index("fine", r#"{"n":"42"}"#, None).await?;
    let s = wait_for("pipeline past the bad input", Duration::from_secs(60), || {
        let s = m.status()?;
        Ok((caught_up(&s) && s["replay"]["lag_messages"] == json!(0) && s["replay"]["dead_lettered"] == json!(2))
            .then_some(s))
    })
    .await?;
    assert_eq!(s["replay"]["applied"], json!(1), "the valid event after the bad ones is applied: {s}");
    assert_eq!(target_doc(&url, &dst, "fine").await?, Some(json!({"n":"42"})));
    assert_eq!(target_doc(&url, &dst, "conflict").await?, None);

    let letters = read_topic(&format!("{topic}.deadletter"), 2, Duration::from_secs(20))?;
    let letters: Vec<Value> = letters.iter().map(|(_, p)| serde_json::from_slice(p)).collect::<Result<_, _>>()?;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let junk = letters.iter().find(|l| l["kind"] == "decode").expect("decode letter");
    assert!(junk["reason"].as_str().unwrap_or_default().contains("not valid JSON"), "{junk}");
    assert_eq!(junk["payload"], "{this is not json");
    assert_eq!(junk["partition"], 0);
    let rejected = letters.iter().find(|l| l["kind"] == "rejected").expect("rejected letter");
    let reason = rejected["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("parsing_exception") || reason.contains("mapper"), "{reason}");
    assert_eq!(rejected["key"], "conflict");
    terminate(m.run_proc())?;
    Ok(())
}

/// A primary failover, as the target sees it: the snapshot copied an operation that was
/// never acknowledged (term 1, `_seq_no` S) and was rolled back when a replica became primary;
/// the new primary (term 2) reused S for the next write of the same document. The target must
/// end with the write the source kept, not with the rolled-back copy. This is the `seq_no`
/// version rule's case (the term in the version's high bits); under `source` the new write
/// reuses the `_version` too, and the replay's refusal is looked at again by reconcile (see
/// app_versions.rs, `the_same_version_with_another_body_is_repaired_before_the_switch`).
#[tokio::test(flavor = "multi_thread")]
async fn a_rolled_back_operation_loses_to_the_new_primarys_reuse_of_its_seq_no() -> anyhow::Result<()> {
    let mut m = Scenario::new("term")
        .partitions(1)
        .mappings(json!({}))
        .recipe(|r| r.top = "versions = \"seq_no\"".into())
        .start()
        .await?;
    let phantom = m.producer().await?.index("x", r#"{"rev":"rolled back"}"#, None).await?;
    assert_eq!(phantom.primary_term, 1);
    m.init()?;
    let (url, dst, topic, name) = (&m.target_url, &m.names.dst, &m.names.topic, m.name());
    run_ok(m.cmd(&["snapshot", name]))?;
    assert_eq!(target_doc(url, dst, "x").await?, Some(json!({"rev":"rolled back"})));

    let mut kept = phantom.clone();
    kept.primary_term = 2;
    kept.source = Some(serde_json::value::RawValue::from_string(r#"{"rev":"kept"}"#.into())?);
    publish_raw(topic, &[("x", kept.to_json())]).await?;
    run_ok(m.cmd(&["consume", name, "--until-caught-up"]))?;
    let s = m.status()?;
    assert_eq!(s["replay"]["applied"], json!(1), "{s}");
    assert_eq!(
        target_doc(url, dst, "x").await?,
        Some(json!({"rev":"kept"})),
        "the higher term wins at the same seq_no"
    );
    Ok(())
}
