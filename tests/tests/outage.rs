//! A cluster that stops answering in the middle of a run: the consumer keeps retrying,
//! `status` says what it cannot reach and since when, and once the cluster answers again
//! the replay catches up with nothing lost; past the cluster's `unreachable_timeout` the
//! consumer stops with the reason instead. The outage is a TCP relay in front of the
//! real target that is switched off and on (the cluster itself keeps running, so the other
//! tests sharing it are not disturbed).

use indexferry_tests::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A loopback relay to `upstream` that can drop every connection and refuse new ones.
struct Relay {
    port: u16,
    up: watch::Sender<bool>,
}

impl Relay {
    async fn start(upstream: &str) -> anyhow::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (up, _) = watch::channel(true);
        let state = up.subscribe();
        let upstream = upstream.to_owned();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*state.borrow() {
                    drop(client); // closed at once: the client sees the connection fail
                    continue;
                }
                let (upstream, mut state) = (upstream.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = state.wait_for(|up| !*up) => {} // switched off: both sockets close
                    }
                });
            }
        });
        Ok(Relay { port, up })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

/// A migration from Elasticsearch 8 to Elasticsearch 9 through `relay`, over a topic of
/// `partitions`; its target index is deleted on Elasticsearch 9 itself too, whether the relay
/// is up or not when the test ends.
fn through(relay: &Relay, prefix: &str, partitions: i32) -> Scenario {
    Scenario::new(prefix).to(&relay.url()).partitions(partitions).mappings(json!({}))
}

/// Takes the migration's target index to be deleted on Elasticsearch 9, then starts
/// `consume` (its output in `consume.log`) and waits until the status names its pid.
async fn consumer(m: &mut Migration) -> anyhow::Result<Proc> {
    let dst = m.names.dst.clone();
    m.also_delete(&es9(), &dst);
    let (state, name) = (m.state.clone(), m.name().to_owned());
    let consumer = spawn(m.cmd(&["consume", &name]), &m.file("consume.log"))?;
    wait_for("the consumer to start", Duration::from_secs(30), || {
        Ok(status(&state, &name)?["consumer_pid"].as_i64().map(|_| ()))
    })
    .await?;
    Ok(consumer)
}

fn unreachable(s: &Value) -> Vec<Value> {
    s["unreachable"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_an_unreachable_target_and_the_replay_recovers_when_it_answers() -> anyhow::Result<()> {
    let relay = Arc::new(Relay::start("127.0.0.1:9201").await?);
    let target_url = relay.url();
    let mut m = through(&relay, "out", 2).docs(50, |i| json!({ "i": i })).init().await?;
    m.snapshot()?;
    let _consumer = consumer(&mut m).await?;
    let (state, name) = (m.state.clone(), m.name().to_owned());

    relay.set(false);
    let producer = m.producer().await?;
    for i in 50..80 {
        producer.index(&format!("d{i}"), &json!({ "i": i }).to_string(), None).await?;
    }
    producer.delete("d3", None).await?;
    let problem = wait_for("status to report the target unreachable", Duration::from_secs(60), || {
        let s = status(&state, &name)?;
        Ok(unreachable(&s).into_iter().find(|p| p["what"] == "target"))
    })
    .await?;
    assert!(problem["attempts"].as_u64().unwrap_or(0) >= 1, "{problem}");
    assert!(problem["error"].as_str().is_some_and(|e| e.contains(&target_url)), "names the cluster: {problem}");
    let text = run_ok(indexferry(&state, &["status", &name]))?;
    assert!(text.contains("unreachable: target since"), "{text}");

    relay.set(true);
    let s = wait_for("the replay to recover", Duration::from_secs(90), || {
        let s = status(&state, &name)?;
        Ok((unreachable(&s).is_empty() && s["replay"]["lag_messages"] == json!(0)).then_some(s))
    })
    .await?;
    assert_eq!(s["replay"]["dead_lettered"], json!(0), "an outage is ridden out, not dead-lettered: {s}");
    let docs = all_docs(&target_url, &m.names.dst).await?;
    assert_eq!(docs.len(), 79, "every write made during the outage arrived");
    assert!(!docs.contains_key("d3") && docs.contains_key("d79"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_stays_unreachable_past_its_timeout_stops_the_consumer_with_the_reason() -> anyhow::Result<()> {
    let relay = Relay::start("127.0.0.1:9201").await?;
    let target_url = relay.url();
    let mut m = through(&relay, "gone", 1)
        .recipe(|r| r.target_options = "unreachable_timeout = \"3s\"\n".into())
        .init()
        .await?;
    let mut consume = consumer(&mut m).await?;
    let (name, log) = (m.name().to_owned(), m.file("consume.log"));

    relay.set(false);
    m.producer().await?.index("d1", &json!({ "i": 1 }).to_string(), None).await?;
    let exit = wait_for("the consumer to give up", Duration::from_secs(60), || Ok(consume.try_wait()?)).await?;
    assert_eq!(exit.code(), Some(1));
    let said = std::fs::read_to_string(&log)?;
    let reason = said.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(reason.contains("the target cluster did not answer for") && reason.contains(&target_url), "{said}");
    // Nothing was checkpointed past the event: a consumer started later applies it.
    relay.set(true);
    let mut consume = spawn(m.cmd(&["consume", &name, "--until-caught-up"]), &log)?;
    let exit = wait_for("the consumer to catch up", Duration::from_secs(60), || Ok(consume.try_wait()?)).await?;
    assert!(exit.success());
    assert!(all_docs(&target_url, &m.names.dst).await?.contains_key("d1"));
    Ok(())
}
