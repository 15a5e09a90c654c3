//! Several URLs per cluster: a recipe whose first URL points nowhere still runs a whole
//! migration through the next one, and a cluster none of whose URLs answers fails with one
//! line naming them all.

use indexferry_tests::*;
use serde_json::{json, Value};
use std::path::Path;

/// A loopback URL nothing listens on: a port the kernel handed out and that was closed again.
fn closed_port_url() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    Ok(format!("http://127.0.0.1:{port}"))
}

/// Rewrites the recipe's `[source] url` into a list.
fn with_source_urls(recipe: &Path, url: &str, urls: &[&str]) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(recipe)?;
    let list = urls.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ");
    let changed = text.replacen(&format!("url = \"{url}\""), &format!("url = [{list}]"), 1);
    anyhow::ensure!(changed != text, "the recipe has no source url to replace");
    std::fs::write(recipe, changed)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_first_url_fails_over_to_the_next_node_for_a_whole_migration() -> anyhow::Result<()> {
    let dead = closed_port_url()?;
    let mut m =
        Scenario::new("failover").partitions(1).mappings(json!({})).docs(40, |i| json!({ "i": i })).start().await?;
    let (url, recipe) = (m.source_url.clone(), m.recipe_in(m.dir.path())?);
    with_source_urls(&recipe, &url, &[&dead, &url])?;

    let out = run_ok(m.cmd(&["init", recipe.to_str().unwrap_or_default(), "--connect-timeout", "20s"]))?;
    assert!(out.contains(&format!("{dead},{url}")), "init names both URLs of the source: {out}");
    m.snapshot()?;
    let producer = m.producer().await?;
    for i in 20..60 {
        producer.index(&format!("d{i}"), &json!({ "i": i, "again": true }).to_string(), None).await?;
    }
    producer.delete("d0", None).await?;
    m.catch_up()?;
    let out = m.rollover()?;
    assert!(out.contains("write pause: "), "{out}");
    assert_eq!(m.status()?["state"], "rolled_over");
    let out = run_ok(m.cmd(&["verify", m.name(), "--json"]))?;
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(report["identical"], json!(true), "{report}");
    assert_eq!(report["pairs"][0]["source_docs"], json!(59), "{report}");
    let Names { alias, dst, .. } = &m.names;
    assert_eq!(cluster(&url).await?.alias_indices(alias).await?, vec![dst.clone()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_none_of_whose_urls_answers_fails_init_naming_them_all() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let url = es8();
    let (dead1, dead2) = (closed_port_url()?, closed_port_url()?);
    let Names { src, dst, alias, topic, name } = Names::new("alldead");
    let recipe = RecipeSpec::new(&name, &url, &url, &topic, &src, &dst, &alias).write(dir.path())?;
    with_source_urls(&recipe, &url, &[&dead1, &dead2])?;
    let out = output(indexferry(&state, &["init", recipe.to_str().unwrap_or_default(), "--connect-timeout", "2s"]))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "one error line: {stderr}");
    assert!(last.contains(&dead1) && last.contains(&dead2), "the error names every URL: {last}");
    Ok(())
}
