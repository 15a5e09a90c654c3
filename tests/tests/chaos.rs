//! The chaos harness: a cross-cluster migration (Elasticsearch 8 → 9) under a steady write
//! load — creates, updates, deletes, delete-then-recreate of hot ids — while faults are
//! injected at random points, repeatedly:
//!
//! - SIGKILL of the snapshot worker and of the consumer, then a restart;
//! - a restart of the Kafka broker, of the source cluster and of the target cluster;
//! - the target refusing bulk work for a while (a temporary write block);
//! - the consumer stopped for longer than the target's production `gc_deletes` (2s here);
//! - rollover interrupted (SIGTERM or SIGKILL) at a random point, then retried;
//! - operator races: a `cancel`, or a second `rollover`, started at a random point of a
//!   rollover (refused: the first holds the migration's lock), and a new index of the
//!   recipe's pattern made at a random point of one (the rollover refuses, naming it, and
//!   the harness `add`s it as an operator would).
//!
//! The rollover interruptions come once the snapshot is done and the replay caught up (a
//! rollover refuses to start before), with the load still running: each starts `rollover`
//! and signals it either at a random moment of its first 1.5 s or at a random moment of its
//! write pause (before the swap: the recipe's grace is 3 s), sometimes a SIGKILL first — which
//! leaves the source blocked and the record at `rolling_over` for the next attempt to find —
//! and always a SIGTERM last, after which the source must be writable and the migration
//! `initialized`. Then the load stops, and the final rollover is SIGKILLed once at a random
//! point of its pause or just after its swap, and run again to the end.
//!
//! Then verify: zero missing, extra, different and resurrected (an extra document whose last
//! event was a delete), and no failed write of the load. `INDEXFERRY_CHAOS_FAULTS` sets the
//! number of faults (default one of each kind); `dev/chaos --faults N` runs it. Under the
//! default `source` version rule `verify` compares `_version` too, so "different" covers it;
//! a source restart makes delete-then-recreate start again at `_version` 1, which reconcile
//! finds and rollover writes again inside its pause.
//!
//! Who publishes the events (`INDEXFERRY_CHAOS_CAPTURE`, `dev/chaos --capture`): by default
//! the load itself, through the producer library (`indexferry-producer load`). With `proxy`
//! the application knows nothing of the migration: an official Python client
//! (`dev/clients.d/load.py`) writes, with its own ids, through two `indexferry-proxy`s behind
//! its list of hosts, each with a journal and following the switch to the target; it retries
//! what a careful application retries (429 and 5xx refusals after their `Retry-After`, lost
//! connections) for up to 180 s, as the producer library's load does. One more kind joins
//! the plan: `kill_proxy`, a SIGKILL of one proxy under the load, started again 0-500 ms later
//! on its port and journal; the writes it had in flight are gaps its journal counts, which
//! the client's retry or rollover's reconcile repairs. The proxies' counters, summed over
//! their runs, end the output.

#[path = "chaos/capture.rs"]
mod capture;
#[path = "chaos/rollover_faults.rs"]
mod rollover_faults;

use capture::*;
use indexferry_common::es::Method;
use indexferry_tests::*;
use rand::seq::SliceRandom;
use rand::Rng;
use rollover_faults::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillSnapshot,
    KillConsumer,
    RestartKafka,
    RestartSource,
    RestartTarget,
    BlockTarget,
    PauseConsumer,
    InterruptRollover,
    RaceCancel,
    RaceRollover,
    NewPatternIndex,
    KillProxy,
}

const ALL: [Fault; 11] = [
    Fault::KillSnapshot,
    Fault::KillConsumer,
    Fault::RestartKafka,
    Fault::RestartSource,
    Fault::RestartTarget,
    Fault::BlockTarget,
    Fault::PauseConsumer,
    Fault::InterruptRollover,
    Fault::RaceCancel,
    Fault::RaceRollover,
    Fault::NewPatternIndex,
];

/// The kinds injected during the plan (the first of `ALL`); the others come around rollovers.
const IN_PLAN: usize = 7;

/// The kinds of a run: `ALL`, and with the proxy capturing the writes, a killed proxy among
/// the plan's.
fn kinds(capture: Capture) -> Vec<Fault> {
    let mut kinds = ALL.to_vec();
    if capture == Capture::Proxy {
        kinds.insert(IN_PLAN, Fault::KillProxy);
    }
    kinds
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::KillSnapshot => "kill_snapshot",
            Fault::KillConsumer => "kill_consumer",
            Fault::RestartKafka => "restart_kafka",
            Fault::RestartSource => "restart_source",
            Fault::RestartTarget => "restart_target",
            Fault::BlockTarget => "block_target",
            Fault::PauseConsumer => "pause_consumer",
            Fault::InterruptRollover => "interrupt_rollover",
            Fault::RaceCancel => "race_cancel",
            Fault::RaceRollover => "race_rollover",
            Fault::NewPatternIndex => "new_pattern_index",
            Fault::KillProxy => "kill_proxy",
        }
    }

    /// Run once the snapshot is done and the replay caught up, each around a rollover.
    fn around_rollover(self) -> bool {
        matches!(self, Fault::InterruptRollover | Fault::RaceCancel | Fault::RaceRollover | Fault::NewPatternIndex)
    }
}

fn stack(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(dev_script("stack")).args(args).output()?;
    anyhow::ensure!(out.status.success(), "dev/stack {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

fn restart(component: &str) -> anyhow::Result<()> {
    stack(&["down", component])?;
    stack(&["up", component])
}

struct Workers {
    state: PathBuf,
    name: String,
    log: PathBuf,
    snapshot: Option<Proc>,
    consumer: Option<Proc>,
}

impl Workers {
    fn start_snapshot(&mut self) -> anyhow::Result<()> {
        self.start_snapshot_with(&[])
    }

    fn start_snapshot_with(&mut self, args: &[&str]) -> anyhow::Result<()> {
        let mut c = indexferry(&self.state, &["snapshot", &self.name]);
        c.args(args);
        self.snapshot = Some(spawn(c, &self.log)?);
        Ok(())
    }

    fn start_consumer(&mut self) -> anyhow::Result<()> {
        self.consumer = Some(spawn(indexferry(&self.state, &["consume", &self.name]), &self.log)?);
        Ok(())
    }

    /// SIGKILL of a live process; `false` if it had already finished.
    fn kill(slot: &mut Option<Proc>) -> anyhow::Result<bool> {
        let Some(p) = slot.as_mut() else { return Ok(false) };
        if p.try_wait()?.is_some() {
            return Ok(false);
        }
        kill9(p)?;
        Ok(true)
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "restarts the shared stack for minutes: run it with dev/chaos"]
async fn chaos() -> anyhow::Result<()> {
    let _alone = RESTARTS.lock().await;
    let capture = Capture::from_env()?;
    let kinds = kinds(capture);
    let faults: usize =
        std::env::var("INDEXFERRY_CHAOS_FAULTS").ok().and_then(|v| v.parse().ok()).unwrap_or(kinds.len());
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    // `INDEXFERRY_CHAOS_METHOD=reindex` (`dev/chaos --method reindex`): the snapshot is a
    // reindex from remote, Elasticsearch 7 into OpenSearch 3 (both have the module).
    let method = std::env::var("INDEXFERRY_CHAOS_METHOD").unwrap_or_else(|_| "search".into());
    let (servers, (source_url, target_url)) = if method == "reindex" {
        (("es7", "opensearch3"), (es7(), opensearch3()))
    } else {
        (("es8", "es9"), (es8(), es9()))
    };
    let Names { src, dst, alias, topic, name } = Names::new("chaos");
    create_source(&source_url, &src, &alias, &topic, 3, source_mappings()).await?;
    let initial = 3000 + 150 * faults as u64;
    // Throttled so that the snapshot runs through the first faults of the plan (about 4s
    // each) instead of finishing before them; it finishes unthrottled after the plan.
    let throttle = (initial / (4 * faults.max(1) as u64)).clamp(20, 250) as u32;
    // `INDEXFERRY_CHAOS_VERSIONING=external-gte` (`dev/chaos --versioning external-gte`): the
    // load versions its writes as an application with its own versions does.
    let versioning = std::env::var("INDEXFERRY_CHAOS_VERSIONING").unwrap_or_else(|_| "internal".into());
    let mut captors = vec![];
    let load = match capture {
        Capture::App => {
            let load = Load::start_with(
                dir.path(),
                &source_url,
                &alias,
                &topic,
                initial,
                80,
                &["--retry-for", "180s", "--versioning", &versioning],
            )?;
            wait_docs(&source_url, &src, initial).await?;
            Writer::Own(load)
        }
        Capture::Proxy => {
            captors = start_captors(dir.path(), &source_url, &target_url, &topic, &name).await?;
            let urls: Vec<&str> = captors.iter().map(|c| c.proxy.url.as_str()).collect();
            // Elasticsearch's client for Elasticsearch; OpenSearch's for the reindex pair
            // (Elasticsearch 7 into OpenSearch 3), which it speaks to both.
            let client = if method == "reindex" { "opensearch" } else { "elasticsearch" };
            let (initial_docs, hot) = (initial.to_string(), initial.min(2000).to_string());
            // Ops of one document, now and then a by-query or a bulk of 20: 40/s write about
            // as many documents as the producer library's 80.
            let args = ["--initial", &initial_docs, "--ids", &hot, "--rate", "40", "--compress"];
            let retry = ["--retries", "3", "--retry-for", "180"];
            let load = PyLoad::start(dir.path(), client, &urls.join(","), &alias, &[&args[..], &retry[..]].concat())?;
            // The steady load deletes at once: the count may never show all of them.
            let log = dir.path().join("pyload.log");
            let written = format!("load: initial {initial} documents written");
            wait_for("the initial documents", Duration::from_secs(300), || {
                Ok(std::fs::read_to_string(&log).unwrap_or_default().contains(&written).then_some(()))
            })
            .await?;
            Writer::Proxied(load)
        }
    };
    let recipe = RecipeSpec {
        // Long enough that a rollover signalled inside its pause has not swapped yet.
        grace: ROLLOVER_GRACE,
        mappings: changed_mappings(),
        slices: 2,
        batch_size: 200,
        throttle,
        method: &method,
        ..RecipeSpec::new(&name, &source_url, &target_url, &topic, &src, &dst, &alias)
    }
    .write(dir.path())?;
    // The target's production gc_deletes is short; the migration raises it while it runs.
    let text = std::fs::read_to_string(&recipe)?
        .replace("refresh_interval = \"1s\" }", "refresh_interval = \"1s\", gc_deletes = \"2s\" }");
    // A pattern next to the named pair, with one day at init: `new_pattern_index` makes more.
    let days = Days { cluster: cluster(&source_url).await?, prefix: format!("{src}-day-"), made: 0 };
    days.make(0).await?;
    std::fs::write(
        &recipe,
        format!("{text}\n[[indices]]\nsource = \"{}*\"\ntarget = \"v2-{{source}}\"\n", days.prefix),
    )?;
    let mut days = days;
    run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    let mut w = Workers {
        state: state.clone(),
        name: name.clone(),
        log: dir.path().join("workers.log"),
        snapshot: None,
        consumer: None,
    };
    w.start_snapshot()?;
    w.start_consumer()?;

    // Random order, except that the snapshot worker is killed first, while it surely runs.
    let mut plan: Vec<Fault> = (1..faults).map(|i| kinds[i % kinds.len()]).collect();
    plan.shuffle(&mut rand::rng());
    plan.insert(0, Fault::KillSnapshot);
    // Rollover interruptions need a complete snapshot: they come after the others.
    let (interrupts, plan): (Vec<Fault>, Vec<Fault>) = plan.into_iter().partition(|f| f.around_rollover());
    let mut injected: BTreeMap<Fault, usize> = BTreeMap::new();
    let in_plan = kinds.iter().take_while(|f| !f.around_rollover()).count();
    let target = cluster(&target_url).await?;
    let started = Instant::now();
    for (i, planned) in plan.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(500..2500))).await;
        // A snapshot worker that has finished cannot be killed: another kind takes its turn,
        // so that the run injects as many faults as asked.
        let snapshot_done = w.snapshot.as_mut().is_none_or(|p| p.try_wait().ok().flatten().is_some());
        let fault = match planned {
            Fault::KillSnapshot if snapshot_done => &kinds[1 + i % (in_plan - 1)],
            f => f,
        };
        let mut how = String::new();
        let done = match fault {
            Fault::KillSnapshot => {
                let killed = Workers::kill(&mut w.snapshot)?;
                if killed {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    w.start_snapshot()?;
                }
                killed
            }
            Fault::KillConsumer => {
                Workers::kill(&mut w.consumer)?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                w.start_consumer()?;
                true
            }
            Fault::RestartKafka => restart("kafka").map(|()| true)?,
            Fault::RestartSource => restart(servers.0).map(|()| true)?,
            Fault::RestartTarget => restart(servers.1).map(|()| true)?,
            Fault::BlockTarget => {
                target.put_settings(&dst, json!({ "index.blocks.write": true })).await?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                target.put_settings(&dst, json!({ "index.blocks.write": null })).await?;
                true
            }
            Fault::PauseConsumer => {
                if let Some(mut c) = w.consumer.take() {
                    terminate(&mut c)?;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
                w.start_consumer()?;
                true
            }
            Fault::KillProxy => {
                let n = rand::rng().random_range(0..captors.len());
                let pause = captors[n].kill_and_start_again().await?;
                how = format!(" (proxy {}, started again after {} ms)", n + 1, pause.as_millis());
                true
            }
            f => unreachable!("{} runs after the plan", f.name()),
        };
        if done {
            *injected.entry(*fault).or_default() += 1;
        }
        eprintln!(
            "chaos: fault {}/{} {}{}{how} at {:.0}s",
            i + 1,
            plan.len(),
            fault.name(),
            if fault != planned { " (instead of kill_snapshot: the worker had finished)" } else { "" },
            started.elapsed().as_secs_f64()
        );
    }
    // Whatever was killed last comes back; the snapshot finishes, unthrottled, and the replay
    // catches up.
    let exited = w.snapshot.as_mut().and_then(|p| p.try_wait().ok().flatten());
    if !exited.is_some_and(|s| s.success()) {
        if let (Some(p), None) = (w.snapshot.as_mut(), exited) {
            terminate(p)?;
        }
        w.start_snapshot_with(&["--throttle", "0"])?;
    }
    let caught = wait_caught_up(&state, &name, Duration::from_secs(600)).await;
    if let Err(e) = caught {
        eprintln!("{}", std::fs::read_to_string(&w.log).unwrap_or_default());
        return Err(e);
    }
    let source = cluster(&source_url).await?;
    let mut interrupted = false;
    for (i, fault) in interrupts.iter().enumerate() {
        let what = match fault {
            Fault::InterruptRollover => {
                interrupted = true;
                let in_pause = interrupt_rollover(&w, &source, &src).await?;
                format!("reached the write pause: {in_pause}")
            }
            Fault::RaceCancel => race(&w, &source, &src, &["cancel", &w.name]).await?,
            Fault::RaceRollover => race(&w, &source, &src, &["rollover", &w.name]).await?,
            Fault::NewPatternIndex => {
                let made = new_pattern_index(&w, &source, &src, &mut days).await?;
                wait_caught_up(&state, &name, Duration::from_secs(300)).await?;
                made
            }
            f => unreachable!("{} runs in the plan", f.name()),
        };
        *injected.entry(*fault).or_default() += 1;
        eprintln!(
            "chaos: fault {}/{} {} ({what}) at {:.0}s",
            plan.len() + i + 1,
            plan.len() + interrupts.len(),
            fault.name(),
            started.elapsed().as_secs_f64()
        );
    }
    let written = load.stop()?;
    let (done, failed) = (written.done, written.failed);
    if failed > 0 {
        println!("chaos: first failed writes: {}", written.failures);
        // The client's own words on them (its log goes with the run's folder).
        if capture == Capture::Proxy {
            let log = std::fs::read_to_string(dir.path().join("pyload.log")).unwrap_or_default();
            for line in log.lines().filter(|l| l.contains("write failed")) {
                println!("chaos:   {line}");
            }
        }
    }
    final_rollover(&w, interrupted).await?;
    let out = output(indexferry(&state, &["verify", &name, "--json", "--samples", "100000"]))?;
    let report: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("verify printed no report ({e}): {}", String::from_utf8_lossy(&out.stderr)))?;
    let pair = &report["pairs"][0];
    // Every pair: the named one and the pattern's days.
    let count = |k: &str| {
        report["pairs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p[k].as_u64().unwrap_or(u64::MAX))
            .fold(0u64, u64::saturating_add)
    };

    // Resurrected: extra in the target although the source's last word on it was a delete.
    let mut last_op: HashMap<String, (u64, bool)> = HashMap::new();
    for (_, payload) in read_topic_until_idle(&topic, Duration::from_secs(3))? {
        if let Ok(e) = indexferry_schemas::decode(None, &payload) {
            let entry = last_op.entry(e.id).or_insert((0, false));
            if e.seq_no >= entry.0 {
                *entry = (e.seq_no, e.op == indexferry_schemas::Op::Delete);
            }
        }
    }
    let resurrected = pair["sample_extra"]
        .as_array()
        .map(|ids| {
            ids.iter().filter(|id| id.as_str().is_some_and(|id| last_op.get(id).is_some_and(|(_, del)| *del))).count()
        })
        .unwrap_or(0);
    for f in &kinds {
        println!("chaos: {:<15} injected={}", f.name(), injected.get(f).copied().unwrap_or(0));
    }
    match written.retried {
        Some(retried) => println!(
            "chaos: load writes={done} failed={failed} retried={retried}; source documents={}",
            pair["source_docs"]
        ),
        None => println!("chaos: load writes={done} failed={failed}; source documents={}", pair["source_docs"]),
    }
    for (n, c) in captors.iter().enumerate() {
        println!("chaos: proxy {} {}", n + 1, c.report(&alias, &target_url).await?);
    }
    println!(
        "chaos: faults={} missing={} extra={} different={} resurrected={resurrected}",
        injected.values().sum::<usize>(),
        count("missing"),
        count("extra"),
        count("different")
    );
    let status = status(&state, &name)?;
    println!(
        "chaos: snapshot restarts={} resumes={} recopied<={}",
        status["pairs"][0]["restarts"], status["pairs"][0]["resumes"], status["pairs"][0]["recopied"]
    );
    assert_eq!((count("missing"), count("extra"), count("different"), resurrected), (0, 0, 0, 0), "{report}");
    assert_eq!(failed, 0, "no write failed");
    let _ = target.json::<Value>(Method::Delete, &format!("/{dst}"), &[], None).await;
    Ok(())
}

tests_of!(deleted_document_stays_deleted {
    /// The fault the harness found, made deterministic: a delete reaches the target, the target
    /// restarts (forgetting its tombstone), and an older copy of the document arrives. The
    /// target accepts it; rollover must delete it again before the switch.
    a_target_restart_does_not_let_a_deleted_document_back: (false),
    /// The same, when the delete had reached the target before: a consumer killed after its bulk
    /// and before its checkpoint. Replayed again, the delete meets the target's own tombstone and
    /// is judged stale; rollover must know of it all the same.
    a_delete_replayed_after_a_kill_is_remembered: (true),
});

/// The tests of this file restart the target: one at a time.
static RESTARTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn deleted_document_stays_deleted(applied_before_the_kill: bool) -> anyhow::Result<()> {
    let _alone = RESTARTS.lock().await;
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let (source_url, target_url) = (es8(), es9());
    let Names { src, dst, alias, topic, name } = Names::new("tomb");
    create_source(&source_url, &src, &alias, &topic, 1, json!({})).await?;
    let p = indexferry_producer::Producer::connect(producer_config(&source_url, &topic, &alias)).await?;
    let old = p.index("d", r#"{"v":"old"}"#, None).await?;
    p.index("keep", r#"{"v":"keep"}"#, None).await?;
    let recipe = RecipeSpec::new(&name, &source_url, &target_url, &topic, &src, &dst, &alias).write(dir.path())?;
    run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    run_ok(indexferry(&state, &["snapshot", &name]))?;
    let delete = p.delete("d", None).await?;
    if applied_before_the_kill {
        // What the killed consumer's bulk left behind.
        let version = delete.version.to_string();
        let query = [("version", version.as_str()), ("version_type", "external")];
        cluster(&target_url).await?.request(Method::Delete, &format!("/{dst}/_doc/d"), &query, None).await?;
    }
    let log = dir.path().join("consume.log");
    let mut consume = spawn(indexferry(&state, &["consume", &name]), &log)?;
    let judged = if applied_before_the_kill { "stale" } else { "applied" };
    wait_for("delete judged", Duration::from_secs(30), || {
        Ok((status(&state, &name)?["replay"][judged] == json!(1)).then_some(()))
    })
    .await?;
    terminate(&mut consume)?;

    restart("es9")?;
    // The older copy arrives late (as a slow snapshot would send it): the restarted target
    // has no tombstone left to refuse it.
    publish_raw(&topic, &[("d", old.to_json())]).await?;
    let mut consume = spawn(indexferry(&state, &["consume", &name]), &log)?;
    wait_for("late copy judged", Duration::from_secs(60), || {
        let s = status(&state, &name)?;
        Ok((s["replay"]["lag_messages"] == json!(0)).then_some(()))
    })
    .await?;
    terminate(&mut consume)?;
    let target = cluster(&target_url).await?;
    let doc_path = format!("/{dst}/_doc/d");
    let on_target = || target.request(Method::Get, &doc_path, &[], None);
    // The scenario itself: the restarted target took the older copy. If it refused it, the
    // test would prove nothing about rollover, so that is a failure too.
    assert!(on_target().await.is_ok(), "the restarted target accepted the older copy of the deleted document");

    let out = run_ok(indexferry(&state, &["rollover", &name]))?;
    assert!(out.contains("re-applied 1 recorded deletes before the switch"), "the delete was recorded: {out}");
    assert!(out.contains("1 documents had come back and were deleted again"), "{out}");
    let gone = on_target().await;
    assert!(matches!(&gone, Err(e) if e.status() == Some(404)), "deleted again before the switch: {gone:?}");
    let out = run_ok(indexferry(&state, &["verify", &name]))?;
    assert!(out.contains("verify: identical"), "{out}");
    Ok(())
}

/// A target restart during the rollover itself — after its sweep, inside the write pause —
/// while an older copy of a deleted document is still to be drained: the restarted target
/// accepts it, and rollover must see the restart and delete it again before the switch.
#[tokio::test(flavor = "multi_thread")]
async fn a_target_restart_during_rollover_does_not_let_a_deleted_document_back() -> anyhow::Result<()> {
    let _alone = RESTARTS.lock().await;
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let (source_url, target_url) = (es8(), es9());
    let Names { src, dst, alias, topic, name } = Names::new("midroll");
    create_source(&source_url, &src, &alias, &topic, 1, json!({})).await?;
    let p = indexferry_producer::Producer::connect(producer_config(&source_url, &topic, &alias)).await?;
    let old = p.index("d", r#"{"v":"old"}"#, None).await?;
    p.index("keep", r#"{"v":"keep"}"#, None).await?;
    // A grace long enough to restart the target inside it; with the drain it must stay under
    // the producer library's 30s retry window for blocked writes (init refuses otherwise).
    let spec = RecipeSpec {
        grace: "22s",
        extra: "drain_timeout = \"7s\"",
        ..RecipeSpec::new(&name, &source_url, &target_url, &topic, &src, &dst, &alias)
    };
    let recipe = spec.write(dir.path())?;
    run_ok(indexferry(&state, &["init", recipe.to_str().unwrap_or_default()]))?;
    run_ok(indexferry(&state, &["snapshot", &name]))?;
    p.delete("d", None).await?;
    let mut consume = spawn(indexferry(&state, &["consume", &name]), &dir.path().join("consume.log"))?;
    wait_for("delete applied", Duration::from_secs(30), || {
        Ok((status(&state, &name)?["replay"]["applied"] == json!(1)).then_some(()))
    })
    .await?;

    let rollover_log = dir.path().join("rollover.log");
    let mut rollover = spawn(indexferry(&state, &["rollover", &name]), &rollover_log)?;
    wait_for("writes blocked", Duration::from_secs(60), || {
        Ok((status(&state, &name)?["state"] == json!("rolling_over")).then_some(()))
    })
    .await?;
    let blocked = std::time::Instant::now();
    restart("es9")?;
    eprintln!("the target restarted {:.0}s into the 22s grace", blocked.elapsed().as_secs_f64());
    // The older copy, as a slow writer racing the delete would publish it: the restarted
    // target has no tombstone left to refuse it, and the drain applies it.
    publish_raw(&topic, &[("d", old.to_json())]).await?;
    let exit = wait_for("rollover", Duration::from_secs(120), || Ok(rollover.try_wait()?)).await?;
    let out = std::fs::read_to_string(&rollover_log)?;
    assert!(exit.success(), "{out}");
    assert!(out.contains("1 documents had come back and were deleted again"), "{out}");
    let _ = terminate(&mut consume);
    let out = run_ok(indexferry(&state, &["verify", &name]))?;
    assert!(out.contains("verify: identical"), "{out}");
    Ok(())
}
