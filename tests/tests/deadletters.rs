//! `deadletters`: documents a strict target mapping refuses are listed with their ids,
//! reasons and offsets; once the operator fixes the mapping, `--replay` gets them applied,
//! without regressing a document written again since, and a second `--replay` publishes
//! nothing.

use indexferry_common::es::Method;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::path::Path;

fn deadletters(state: &Path, name: &str, replay: bool) -> anyhow::Result<Value> {
    let args: &[&str] =
        if replay { &["deadletters", name, "--json", "--replay"] } else { &["deadletters", name, "--json"] };
    Ok(serde_json::from_str(&run_ok(indexferry(state, args))?)?)
}

/// `(stage, id, event offset)` of every letter, in the dead-letter topic's order.
fn summary(listing: &Value) -> Vec<(String, String, Option<i64>)> {
    listing["letters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["stage"].as_str().unwrap_or("").into(),
                l["id"].as_str().or(l["key"].as_str()).unwrap_or("").into(),
                l["offset"].as_i64(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_listed_and_replayed_once_the_mapping_is_fixed() -> anyhow::Result<()> {
    // Offsets 0-9 plain, 10 and 11 with a field the target does not know.
    let mut m = Scenario::new("dl")
        .partitions(1)
        .mappings(json!({}))
        .docs(12, |i| if i < 10 { json!({ "i": i }) } else { json!({ "i": i, "tag": "snap" }) })
        .recipe(|r| r.mappings = json!({ "dynamic": "strict", "properties": { "i": { "type": "integer" } } }))
        .init()
        .await?;
    let (state, name) = (m.state.clone(), m.name().to_owned());
    let (url, src, dst, topic) =
        (m.source_url.clone(), m.names.src.clone(), m.names.dst.clone(), m.names.topic.clone());
    run_ok(indexferry(&state, &["snapshot", &name]))?;
    let producer = m.producer().await?;
    // Offset 12: refused; 13: refused, then 14 rewrites d2 without the field (applied);
    // 15: refused.
    producer.index("d1", &json!({ "i": 1, "tag": "event" }).to_string(), None).await?;
    producer.index("d2", &json!({ "i": 2, "tag": "old" }).to_string(), None).await?;
    producer.index("d2", &json!({ "i": 2 }).to_string(), None).await?;
    producer.index("d20", &json!({ "i": 20, "tag": "new" }).to_string(), None).await?;
    // 16: not an event at all.
    publish_raw(&topic, &[("junk", b"not json".to_vec())]).await?;
    run_ok(indexferry(&state, &["consume", &name, "--until-caught-up"]))?;

    let listing = deadletters(&state, &name, false)?;
    let s = |stage: &str, id: &str, offset: Option<i64>| (stage.to_owned(), id.to_owned(), offset);
    let mut letters = summary(&listing);
    letters.sort();
    assert_eq!(
        letters,
        vec![
            s("replay", "d1", Some(12)),
            s("replay", "d2", Some(13)),
            s("replay", "d20", Some(15)),
            s("replay", "junk", Some(16)),
            s("snapshot", "d10", None),
            s("snapshot", "d11", None)
        ],
        "{listing}"
    );
    for l in listing["letters"].as_array().into_iter().flatten().filter(|l| l["offset"] != json!(16)) {
        assert_eq!(l["kind"], "rejected", "{l}");
        assert!(l["reason"].as_str().unwrap_or("").contains("strict_dynamic_mapping_exception"), "{l}");
        assert_eq!(l["replayed"], json!(false), "{l}");
    }
    let junk = listing["letters"].as_array().into_iter().flatten().find(|l| l["offset"] == json!(16));
    assert_eq!(junk.map(|l| l["kind"].clone()), Some(json!("decode")), "{listing}");
    let text = run_ok(indexferry(&state, &["deadletters", &name]))?;
    eprintln!("{text}");
    assert!(text.contains("6, 0 replayed") && text.contains("\"d20\"") && text.contains("offset 0/15"), "{text}");

    // The operator's fix: the target learns the field.
    let c = cluster(&url).await?;
    let fix = json!({ "properties": { "tag": { "type": "keyword" } } });
    c.json::<Value>(Method::Put, &format!("/{dst}/_mapping"), &[], Some(&fix)).await?;

    let replayed = deadletters(&state, &name, true)?;
    assert_eq!(replayed["published"].as_array().map(Vec::len), Some(5), "{replayed}");
    let skipped = replayed["skipped"].as_array().cloned().unwrap_or_default();
    assert_eq!(skipped.len(), 1, "the letter that is no event is skipped: {replayed}");
    assert!(skipped[0]["why"].as_str().unwrap_or("").contains("fix its producer"), "{replayed}");
    run_ok(indexferry(&state, &["consume", &name, "--until-caught-up"]))?;

    let target = all_docs(&url, &dst).await?;
    assert_eq!(target["d1"], json!({ "i": 1, "tag": "event" }));
    assert_eq!(target["d10"], json!({ "i": 10, "tag": "snap" }));
    assert_eq!(target["d11"], json!({ "i": 11, "tag": "snap" }));
    assert_eq!(target["d20"], json!({ "i": 20, "tag": "new" }));
    assert_eq!(target["d2"], json!({ "i": 2 }), "the replayed old event does not regress the newer document");
    assert_eq!(all_docs(&url, &src).await?, target, "the target now equals the source");

    let again = deadletters(&state, &name, true)?;
    assert_eq!(again["published"], json!([]), "a second replay publishes nothing: {again}");
    let listing = deadletters(&state, &name, false)?;
    assert!(listing["letters"].as_array().into_iter().flatten().all(|l| l["replayed"] == json!(true)), "{listing}");
    Ok(())
}
