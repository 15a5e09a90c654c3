//! An `init` that fails after it began changing the clusters takes its changes back: the
//! template it replaced on the target (`[templates] overwrite = true`) is as it was, no
//! target index is left, and the source's `index.gc_deletes` is back.

use indexferry_common::es::Method;
use indexferry_tests::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_init_puts_back_the_template_it_replaced_and_the_source_settings() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let (source_url, target_url) = (es8(), es9());
    let (source, target) = (cluster(&source_url).await?, cluster(&target_url).await?);
    let base = unique("undo");
    let (src, dst, alias, topic, name) =
        (format!("{base}-v1"), format!("{base}-v2"), base.clone(), format!("{base}.changes"), format!("{base}-m"));
    let template = |field: &str, priority: u32| {
        json!({ "index_patterns": [format!("{base}-*")], "priority": priority,
                "template": { "mappings": { "properties": { field: { "type": "keyword" } } } } })
    };
    source
        .json::<Value>(Method::Put, &format!("/_index_template/{base}"), &[], Some(&template("on_source", 50)))
        .await?;
    let before = template("on_target", 60);
    target.json::<Value>(Method::Put, &format!("/_index_template/{base}"), &[], Some(&before)).await?;
    let body = json!({ "settings": { "index.number_of_replicas": 0 }, "aliases": { alias.as_str(): { "is_write_index": true } } });
    source.json::<Value>(Method::Put, &format!("/{src}"), &[], Some(&body)).await?;
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 1).await?;
    // A setting the target refuses: creating the target fails, after the template was put.
    let recipe = dir.path().join("r.toml");
    std::fs::write(
        &recipe,
        format!(
            "name = \"{name}\"\n[source]\nurl = \"{source_url}\"\n[target]\nurl = \"{target_url}\"\n\
             [kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\n[templates]\noverwrite = true\n\
             [[indices]]\nsource = \"{src}\"\ntarget = \"{dst}\"\nalias = \"{alias}\"\n\
             settings = {{ no_such_setting = 1 }}\n",
            brokers()
        ),
    )?;
    let out = output(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&dst), "names the target it could not create: {stderr}");

    let held: Value = target.json(Method::Get, &format!("/_index_template/{base}"), &[], None).await?;
    let props = &held["index_templates"][0]["index_template"]["template"]["mappings"]["properties"];
    assert!(
        props.get("on_target").is_some() && props.get("on_source").is_none(),
        "the target's template is back: {held}"
    );
    assert!(!target.exists(&dst).await?, "no target left");
    let s: Value = source.json(Method::Get, &format!("/{src}/_settings"), &[("flat_settings", "true")], None).await?;
    assert!(s[&src]["settings"]["index.gc_deletes"].is_null(), "the source's gc_deletes is back: {s}");
    for c in [&source, &target] {
        let _ = c.json::<Value>(Method::Delete, &format!("/_index_template/{base}"), &[], None).await;
    }
    let _ = source.json::<Value>(Method::Delete, &format!("/{src}"), &[], None).await;
    Ok(())
}
