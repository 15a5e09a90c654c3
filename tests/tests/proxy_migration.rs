//! A migration captured only by the proxy: an application writing with an official Python
//! client (compressed requests, bulk helpers, its own `external_gte` versions) through
//! `indexferry-proxy`, through init, run and an in-cluster rollover. No write may fail, the
//! rollover's write block must be held inside the proxy, and the target must end holding
//! the same ids, `_source`, routing and `_version` as the source. Across clusters the proxy
//! follows the switch marker: the application's writes after the switch land in the target.

use indexferry_common::es::Method;
use indexferry_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

/// How the proxies run: one, or two behind the client's list of hosts with one killed and
/// started again mid-migration.
#[derive(Clone, Copy, PartialEq)]
enum Proxies {
    One,
    TwoOneKilled,
    /// One, named in `[rollover] proxies` as the drain signal, with a long grace and no
    /// reconcile: the events of writes taken before the block must be in without waiting
    /// out the grace, and nothing repairs a write whose event the drain missed.
    OneAsDrainSignal,
}

/// The grace of the drain-signal variant: the rollover must end it well before.
const LONG_GRACE: &str = "3s";

async fn captured_by_the_proxy(url: &str, target_url: &str, client: &str, proxies: Proxies) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let Names { src, dst, alias, topic, name } = Names::new("pxmig");
    let source = create_source(url, &src, &alias, &topic, 2, json!({})).await?;
    let follow: Vec<&str> = match url == target_url {
        true => vec![],
        false => vec!["--follow-url", target_url, "--follow-migration", &name],
    };
    let proxy = start_proxy(url, &brokers(), &topic, &dir.path().join("proxy.log"), &follow).await?;
    let mut second = match proxies {
        Proxies::One | Proxies::OneAsDrainSignal => None,
        Proxies::TwoOneKilled => {
            Some(start_proxy(url, &brokers(), &topic, &dir.path().join("proxy2.log"), &follow).await?)
        }
    };
    let (urls, retries) = match &second {
        None => (proxy.url.clone(), "0"),
        Some(p) => (format!("{},{}", proxy.url, p.url), "3"),
    };
    let load = PyLoad::start(
        dir.path(),
        client,
        &urls,
        &alias,
        &["--initial", "1500", "--ids", "2000", "--rate", "80", "--compress", "--auto-ids", "--retries", retries],
    )?;
    wait_docs(url, &src, 1000).await?;
    let drain_signal = format!("reconcile = false\nproxies = [\"{}\"]", proxy.url);
    let recipe = match proxies {
        Proxies::OneAsDrainSignal => RecipeSpec {
            slices: 2,
            grace: LONG_GRACE,
            extra: &drain_signal,
            ..RecipeSpec::new(&name, url, target_url, &topic, &src, &dst, &alias)
        },
        _ => RecipeSpec { slices: 2, ..RecipeSpec::new(&name, url, target_url, &topic, &src, &dst, &alias) },
    }
    .write(dir.path())?;
    run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    let mut run = spawn(indexferry(&state, &["run", &name]), &dir.path().join("run.log"))?;
    if let Some(p) = &mut second {
        // A crash mid-migration: the client goes on through the other proxy.
        tokio::time::sleep(Duration::from_secs(2)).await;
        p.kill9()?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        p.start_again().await?;
    }
    wait_caught_up(&state, &name, Duration::from_secs(180)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = run_ok(indexferry(&state, &["rollover", &name]))?;
    eprintln!("{out}");
    if proxies == Proxies::OneAsDrainSignal {
        let r = status(&state, &name)?["last_rollover"].clone();
        println!("drain signal: write pause {} ms, grace {} ms of {LONG_GRACE}", r["write_pause_ms"], r["grace_ms"]);
        assert!(r["grace_ms"].as_u64().is_some_and(|g| g < 1000), "the proxy ended the grace: {r}");
    }
    // Writes go on through the proxy, now into the target.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.stop()?;
    eprintln!("load: {report}");
    if report["failed"] != json!(0) {
        eprintln!("{}", std::fs::read_to_string(dir.path().join("pyload.log")).unwrap_or_default());
        eprintln!("{}", std::fs::read_to_string(dir.path().join("proxy.log")).unwrap_or_default());
    }
    assert_eq!(report["failed"], json!(0), "no application write may fail: {report}");
    assert!(report["done"].as_u64().unwrap_or(0) > 1700, "the load really ran: {report}");
    let stats = proxy.stats().await?;
    eprintln!("proxy: {stats}");
    if let Some(p) = &second {
        eprintln!("second proxy: {}", p.stats().await?);
        // Started again before the switch, and maybe left alone by the client since the kill
        // (clients rest a node that failed): a read through it reads where the alias is now.
        let on_target = all_stored(target_url, &dst).await?.len();
        let read: Value = reqwest::get(format!("{}/{alias}/_search?size=0", p.url)).await?.json().await?;
        assert_eq!(read["hits"]["total"]["value"], json!(on_target), "{read}");
        if url != target_url {
            let stats = p.stats().await?;
            assert_eq!(stats["followed_to"], json!(target_url), "the second proxy followed the switch too: {stats}");
        }
    }
    assert_eq!(stats["unpublished_writes"], json!(0), "{stats}");
    if url != target_url {
        assert_eq!(stats["followed_to"], json!(target_url), "the proxy followed the switch: {stats}");
    }
    wait_for("run to exit after rollover", Duration::from_secs(30), || Ok(run.try_wait()?)).await?;

    let out = output(indexferry(&state, &["verify", &name, "--json"]))?;
    let verified: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(verified["identical"], json!(true), "{verified}");
    // Independently of verify: every id not written after the switch is the same on both
    // sides, with its _version and routing.
    let after_switch: std::collections::BTreeSet<String> = read_topic_until_idle(&topic, Duration::from_secs(3))?
        .into_iter()
        .filter_map(|(_, payload)| indexferry_schemas::decode(None, &payload).ok())
        .filter(|e| e.index == dst)
        .map(|e| e.id)
        .collect();
    assert!(!after_switch.is_empty(), "the application wrote after the switch, through the proxy");
    let (in_source, in_target) = (all_stored(url, &src).await?, all_stored(target_url, &dst).await?);
    let mut differences = 0;
    for id in in_source.keys().chain(in_target.keys()) {
        if !after_switch.contains(id) && in_source.get(id) != in_target.get(id) {
            differences += 1;
            eprintln!("differs: {id}: source {:?} target {:?}", in_source.get(id), in_target.get(id));
        }
    }
    assert_eq!(differences, 0, "every id not written after the switch is identical");
    assert!(in_source.keys().any(|id| id.starts_with("ext-")), "the application's own versions were written");
    assert!(
        in_source.keys().any(|id| !id.starts_with("ext-") && !id.starts_with("doc-")),
        "ids the cluster chose were written"
    );
    source.json::<Value>(Method::Delete, &format!("/{src}"), &[], None).await?;
    cluster(target_url).await?.json::<Value>(Method::Delete, &format!("/{dst}"), &[], None).await?;
    Ok(())
}

tests_of!(captured_by_the_proxy {
    elasticsearch_8_with_the_elasticsearch_python_client: (&es8(), &es8(), "elasticsearch", Proxies::One),
    opensearch_2_with_opensearch_py: (&opensearch(), &opensearch(), "opensearch", Proxies::One),
    /// Across clusters: after the switch the proxy sends every request to the target.
    elasticsearch_8_to_elasticsearch_9_the_proxy_follows_the_switch: (&es8(), &es9(), "elasticsearch", Proxies::One),
    opensearch_2_to_opensearch_3_the_proxy_follows_the_switch: (
        &opensearch(),
        &opensearch3(),
        "opensearch",
        Proxies::One
    ),
    /// Two proxies in front of one source, as behind a load balancer, one killed and started
    /// again mid-migration: they converge as one does.
    the_proxy_is_the_rollovers_drain_signal: (&es8(), &es8(), "elasticsearch", Proxies::OneAsDrainSignal),
    two_proxies_one_killed_in_cluster: (&es8(), &es8(), "elasticsearch", Proxies::TwoOneKilled),
    two_proxies_one_killed_across_clusters: (&opensearch(), &opensearch3(), "opensearch", Proxies::TwoOneKilled),
});

/// A proxy killed with writes in flight that the cluster took: its next start publishes a gap
/// notice for each (from its journal), the consumer records them, `status` shows them, a
/// rollover without reconcile refuses, and reconcile repairs them: the migration ends
/// identical. The writes are held by a write block when the proxy dies, and then made
/// directly in the source, as the cluster would have taken them: a new document, an update
/// and a delete, none with an event.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_proxys_gaps_are_shown_in_status_and_repaired() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let url = es8();
    let Names { src, dst, alias, topic, name } = Names::new("pxgap");
    let source = create_source(&url, &src, &alias, &topic, 2, json!({})).await?;
    let journal = dir.path().join("journal");
    let mut proxy = start_proxy(
        &url,
        &brokers(),
        &topic,
        &dir.path().join("proxy.log"),
        &["--journal", journal.to_str().unwrap_or_default(), "--hold", "30s", "--name", "proxy-a"],
    )
    .await?;
    let http = reqwest::Client::new();
    let put = |id: &str, n: u32| {
        http.put(format!("{}/{alias}/_doc/{id}?refresh=true", proxy.url))
            .header("content-type", "application/json")
            .body(json!({ "n": n }).to_string())
            .send()
    };
    for i in 0..20 {
        assert!(put(&format!("d{i}"), i).await?.status().is_success());
    }
    let recipe =
        RecipeSpec { extra: "reconcile = false", ..RecipeSpec::new(&name, &url, &url, &topic, &src, &dst, &alias) }
            .write(dir.path())?;
    run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    let mut run = spawn(indexferry(&state, &["run", &name]), &dir.path().join("run.log"))?;
    wait_caught_up(&state, &name, Duration::from_secs(120)).await?;

    // Three writes held by a block when the proxy dies.
    let block = |on: bool| json!({ "index.blocks.write": if on { json!(true) } else { Value::Null } });
    source.put_settings(&src, block(true)).await?;
    let held: Vec<_> = [("PUT", "new1"), ("PUT", "d3"), ("DELETE", "d5")]
        .into_iter()
        .map(|(method, id)| {
            let req = match method {
                "PUT" => http.put(format!("{}/{alias}/_doc/{id}", proxy.url)).body(r#"{"n":100}"#),
                _ => http.delete(format!("{}/{alias}/_doc/{id}", proxy.url)),
            };
            tokio::spawn(req.header("content-type", "application/json").send())
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.kill9()?;
    for h in held {
        assert!(h.await?.is_err(), "the client lost its connection");
    }
    // As the cluster would have taken them, without their events.
    source.put_settings(&src, block(false)).await?;
    for (id, body) in [("new1", Some(json!({ "n": 100 }))), ("d3", Some(json!({ "n": 100 }))), ("d5", None)] {
        let path = format!("/{src}/_doc/{id}");
        match body {
            Some(b) => source.json::<Value>(Method::Put, &path, &[("refresh", "true")], Some(&b)).await?,
            None => source.json::<Value>(Method::Delete, &path, &[("refresh", "true")], None).await?,
        };
    }
    proxy.start_again().await?;
    let mut stats = proxy.stats().await?;
    for _ in 0..100 {
        if stats["gap_notices_published"] == json!(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        stats = proxy.stats().await?;
    }
    assert_eq!(stats["gap_notices_published"], json!(3), "{stats}");
    assert_eq!(stats["gaps_from_earlier_runs"], json!(3), "{stats}");
    let gaps = wait_for("status to show the gaps", Duration::from_secs(30), || {
        let gaps = status(&state, &name)?["proxy_gaps"].clone();
        Ok((gaps["notices"] == json!(3)).then_some(gaps))
    })
    .await?;
    assert_eq!((gaps["docs"].clone(), gaps["since_reconcile"].clone()), (json!(3), json!(3)), "{gaps}");
    assert_eq!(gaps["origins"], json!(["proxy-a"]), "{gaps}");
    let text = run_ok(indexferry(&state, &["status", &name]))?;
    assert!(text.contains("proxy gaps: 3 writes"), "{text}");

    // Without reconcile, rollover refuses; reconcile repairs the three.
    let refused = output(indexferry(&state, &["rollover", &name]))?;
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("capture proxies reported 3 gaps"), "{said}");
    let out = output(indexferry(&state, &["reconcile", &name, "--json"]))?;
    let report: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["repaired"], json!(3), "{report}");
    assert_eq!(status(&state, &name)?["proxy_gaps"]["since_reconcile"], json!(0));
    run_ok(indexferry(&state, &["rollover", &name]))?;
    wait_for("run to exit after rollover", Duration::from_secs(30), || Ok(run.try_wait()?)).await?;
    let out = output(indexferry(&state, &["verify", &name, "--json"]))?;
    let verified: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(verified["identical"], json!(true), "{verified}");
    let target = all_stored(&url, &dst).await?;
    assert!(target.contains_key("new1") && !target.contains_key("d5"), "the gaps are repaired");
    source.json::<Value>(Method::Delete, &format!("/{src},{dst}"), &[], None).await?;
    Ok(())
}
