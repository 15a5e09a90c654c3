//! An application whose alias comes from an index template (`<base>-*` with
//! `aliases: {<base>: {}}`), as Invenio's and many ILM set-ups have it. The target is named
//! so that the template matches it too; creating it must not add it to the application's
//! alias, not even for a moment: the application writes through the alias throughout, and
//! not one write fails. In-cluster, and cross-cluster where `init` copies the template
//! (aliases included) to the target cluster first.

use indexferry_common::es::{Cluster, Method};
use indexferry_tests::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn template_alias_migration(target_url: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let source_url = es8();
    let base = unique("tplal");
    let (src, dst, alias, topic, name) =
        (format!("{base}-v1"), format!("{base}-v2"), base.clone(), format!("{base}.changes"), format!("{base}-m"));
    let source = cluster(&source_url).await?;
    let template = json!({
        "index_patterns": [format!("{base}-*")],
        "priority": 50,
        "template": {
            "settings": { "index.number_of_shards": 1, "index.number_of_replicas": 0 },
            "aliases": { base.as_str(): {} },
        },
    });
    source.json::<Value>(Method::Put, &format!("/_index_template/{base}"), &[], Some(&template)).await?;
    source.json::<Value>(Method::Put, &format!("/{src}"), &[], None).await?;
    indexferry_common::kafka::ensure_topic(&kafka(&topic), &topic, 1).await?;

    // The application writes through the alias the whole time.
    let producer =
        Arc::new(indexferry_producer::Producer::connect(producer_config(&source_url, &topic, &alias)).await?);
    let (stop, written, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let app = {
        let (p, stop, written, failed, first_error) =
            (producer.clone(), stop.clone(), written.clone(), failed.clone(), first_error.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match p.index(&format!("r{}", n % 300), &json!({ "n": n }).to_string(), None).await {
                    Ok(_) => written.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        first_error.lock().map(|mut f| f.get_or_insert(e.to_string()).clone()).ok();
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    wait_docs(&source_url, &src, 100).await?;

    let recipe = RecipeSpec::new(&name, &source_url, target_url, &topic, &src, &dst, &alias).write(dir.path())?;
    let out = run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    assert!(out.contains(&format!("{dst}: created without the aliases {alias}")), "init says so: {out}");
    let target = cluster(target_url).await?;
    assert_eq!(indices_of(&source, &alias).await?, vec![src.clone()], "the alias still leads to the source alone");
    assert!(indices_of(&target, &alias).await?.iter().all(|i| *i != dst), "the target is outside the alias");
    let shields: Value = target.json(Method::Get, "/_index_template", &[], None).await?;
    assert!(!shields.to_string().contains("indexferry-shield"), "the temporary template is gone");

    let mut run = spawn(indexferry(&state, &["run", &name]), &dir.path().join("run.log"))?;
    wait_caught_up(&state, &name, Duration::from_secs(120)).await?;
    stop.store(true, Ordering::Relaxed);
    app.await?;
    let (done, errors) = (written.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let first = first_error.lock().ok().and_then(|f| f.clone());
    assert_eq!(errors, 0, "no write through the template's alias failed ({done} done): {first:?}");
    let out = run_ok(indexferry(&state, &["rollover", &name]))?;
    assert!(out.contains("write pause:"), "{out}");
    wait_for("run to exit", Duration::from_secs(30), || Ok(run.try_wait()?)).await?;
    assert_eq!(indices_of(&target, &alias).await?, vec![dst.clone()], "the alias moved to the target");
    let out = run_ok(indexferry(&state, &["verify", &name]))?;
    assert!(out.contains("verify: identical"), "{out}");

    for c in [&source, &target] {
        let _ =
            c.json::<Value>(Method::Delete, &format!("/{src},{dst}"), &[("ignore_unavailable", "true")], None).await;
        let _ = c.json::<Value>(Method::Delete, &format!("/_index_template/{base}"), &[], None).await;
    }
    Ok(())
}

/// The indices an alias leads to (none when it does not exist).
async fn indices_of(c: &Cluster, alias: &str) -> anyhow::Result<Vec<String>> {
    match c.json::<Value>(Method::Get, &format!("/_alias/{alias}"), &[], None).await {
        Ok(v) => {
            let mut out: Vec<String> = v.as_object().into_iter().flatten().map(|(i, _)| i.clone()).collect();
            out.sort();
            Ok(out)
        }
        Err(e) if e.status() == Some(404) => Ok(vec![]),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_matching_the_template_that_gives_the_alias_stays_out_of_it_in_cluster() -> anyhow::Result<()> {
    template_alias_migration(&es8()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_matching_a_copied_template_that_gives_the_alias_stays_out_of_it_cross_cluster() -> anyhow::Result<()>
{
    template_alias_migration(&es9()).await
}
