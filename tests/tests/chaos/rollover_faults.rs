//! The faults that come around a rollover: one interrupted at a random point, an operator
//! racing one, a new index of the recipe's pattern made during one; and the final rollover,
//! SIGKILLed once.

use super::*;

/// The chaos recipe's rollover grace: signals sent less than this after the block land before the swap.
pub(super) const ROLLOVER_GRACE: &str = "3s";

/// Starts `rollover` with its own log; `in_pause`: returns once it has blocked writes (or
/// exited), else at once. Returns the process and its log.
pub(super) async fn start_rollover(w: &Workers, in_pause: bool) -> anyhow::Result<(Proc, PathBuf)> {
    let log = w.log.with_file_name(format!("{}.log", unique("rollover")));
    let mut p = spawn(indexferry(&w.state, &["rollover", &w.name]), &log)?;
    if in_pause {
        wait_for("rollover to block writes", Duration::from_secs(120), || {
            let blocked = std::fs::read_to_string(&log)?.contains("writes blocked");
            Ok((blocked || p.try_wait()?.is_some()).then_some(()))
        })
        .await?;
    }
    Ok((p, log))
}

/// A rollover started once the consumer runs, left to go on for up to 1.5 s, half the time
/// counted from when it has blocked writes: where a racing command or a new day meets it.
/// Returns whether it was in its write pause, the process and its log.
async fn rollover_at_random_point(w: &Workers) -> anyhow::Result<(bool, Proc, PathBuf)> {
    wait_for("the consumer to run", Duration::from_secs(60), || {
        Ok((!status(&w.state, &w.name)?["consumer_pid"].is_null()).then_some(()))
    })
    .await?;
    let in_pause = rand::rng().random_bool(0.5);
    let (p, log) = start_rollover(w, in_pause).await?;
    tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..1500))).await;
    Ok((in_pause, p, log))
}

/// Sends `signal` to `p` unless it has exited; waits for the exit. `true` if it was still
/// running when signalled.
pub(super) fn signal_and_wait(
    p: &mut Proc,
    signal: nix::sys::signal::Signal,
) -> anyhow::Result<(bool, std::process::ExitStatus)> {
    let live = p.try_wait()?.is_none();
    if live {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.id() as i32), signal);
    }
    let exit = p.wait()?;
    Ok((live, exit))
}

/// One `interrupt_rollover` fault (see the module's documentation). Returns whether an
/// attempt reached the write pause.
pub(super) async fn interrupt_rollover(
    w: &Workers,
    source: &indexferry_common::es::Cluster,
    src: &str,
) -> anyhow::Result<bool> {
    use nix::sys::signal::Signal;
    // A consumer restarting at this moment would race the rollover's in-process replay.
    wait_for("the consumer to run", Duration::from_secs(60), || {
        Ok((!status(&w.state, &w.name)?["consumer_pid"].is_null()).then_some(()))
    })
    .await?;
    let mut reached = false;
    let mut signals = if rand::rng().random_bool(0.5) { vec![Signal::SIGKILL] } else { vec![] };
    signals.push(Signal::SIGTERM);
    let mut attempts = 0;
    while let Some(signal) = signals.first().copied() {
        attempts += 1;
        let in_pause = rand::rng().random_bool(0.5);
        let (mut p, log) = start_rollover(w, in_pause).await?;
        let delay = if in_pause { 2500 } else { 1500 };
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..delay))).await;
        let (signalled, exit) = signal_and_wait(&mut p, signal)?;
        let text = std::fs::read_to_string(&log)?;
        reached |= text.contains("writes blocked");
        anyhow::ensure!(
            !text.contains("rolled over:"),
            "an interrupted rollover switched:
{text}"
        );
        eprintln!("chaos:   rollover attempt {attempts}: {signal:?} (in pause: {in_pause}, sent: {signalled}), {exit}");
        // A SIGTERM that came before the handler was installed killed the process as a
        // SIGKILL would: one more SIGTERM attempt, so the fault ends with a handled one.
        let handled = signal == Signal::SIGKILL || exit.code().is_some();
        if handled {
            signals.remove(0);
        }
        anyhow::ensure!(
            attempts < 6,
            "rollover kept dying of SIGTERM:
{text}"
        );
    }
    rolled_back(w, source, src).await?;
    Ok(reached)
}

/// The source's state after a rollover that did not switch: `initialized`, writable.
pub(super) async fn rolled_back(w: &Workers, source: &indexferry_common::es::Cluster, src: &str) -> anyhow::Result<()> {
    let st = status(&w.state, &w.name)?;
    anyhow::ensure!(st["state"] == json!("initialized"), "after a rollover that did not switch: {st}");
    let settings: Value =
        source.json(Method::Get, &format!("/{src}/_settings"), &[("flat_settings", "true")], None).await?;
    anyhow::ensure!(
        settings[src]["settings"]["index.blocks.write"].is_null(),
        "the source stays write-blocked after a rollover that did not switch: {settings}"
    );
    Ok(())
}

/// `race_cancel` / `race_rollover`: `command` started at a random point of a rollover (its
/// first 1.5 s or its write pause) is refused, naming the rollover that holds the lock; the
/// rollover is then stopped by SIGTERM before its swap and leaves everything as it was.
pub(super) async fn race(
    w: &Workers,
    source: &indexferry_common::es::Cluster,
    src: &str,
    command: &[&str],
) -> anyhow::Result<String> {
    let (in_pause, mut p, log) = rollover_at_random_point(w).await?;
    // A rollover that already ended holds no lock, and a `cancel` then would cancel for real.
    let raced = p.try_wait()?.is_none();
    let refused = match raced {
        true => Some(output(indexferry(&w.state, command))?),
        false => None,
    };
    let (_, exit) = signal_and_wait(&mut p, nix::sys::signal::Signal::SIGTERM)?;
    let text = std::fs::read_to_string(&log)?;
    anyhow::ensure!(!text.contains("rolled over:"), "a rollover stopped before its swap switched:\n{text}");
    if let Some(out) = &refused {
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(
            out.status.code() == Some(1) && stderr.contains("locked by `rollover`"),
            "`{}` during a rollover was not refused by its lock ({}): {stderr}\n{}",
            command.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    rolled_back(w, source, src).await?;
    Ok(format!("in pause: {in_pause}, raced: {raced}, rollover {exit}"))
}

/// The pattern's days: `<src>-day-<n>`, each with a few documents written without events.
pub(super) struct Days {
    pub(super) cluster: indexferry_common::es::Cluster,
    pub(super) prefix: String,
    pub(super) made: usize,
}

impl Days {
    pub(super) async fn make(&self, n: usize) -> anyhow::Result<String> {
        let index = format!("{}{n}", self.prefix);
        let settings = json!({ "settings": { "index.number_of_shards": 1, "index.number_of_replicas": 0 } });
        self.cluster.json::<Value>(Method::Put, &format!("/{index}"), &[], Some(&settings)).await?;
        for i in 0..20 {
            let doc = json!({ "title": format!("day {n} doc {i}"), "n": i });
            self.cluster.json::<Value>(Method::Put, &format!("/{index}/_doc/d{i}"), &[], Some(&doc)).await?;
        }
        self.cluster.json::<Value>(Method::Post, &format!("/{index}/_refresh"), &[], None).await?;
        Ok(index)
    }
}

/// `new_pattern_index`: a day made at a random point of a rollover (its first 1.5 s or its
/// write pause, before the patterns are listed again after the grace) makes it refuse,
/// naming the day; the source is writable again, and `add` migrates the day.
pub(super) async fn new_pattern_index(
    w: &Workers,
    source: &indexferry_common::es::Cluster,
    src: &str,
    days: &mut Days,
) -> anyhow::Result<String> {
    let (in_pause, mut p, log) = rollover_at_random_point(w).await?;
    days.made += 1;
    let day = days.make(days.made).await?;
    let exit = wait_for("the rollover to refuse the new day", Duration::from_secs(120), || Ok(p.try_wait()?)).await?;
    let text = std::fs::read_to_string(&log)?;
    anyhow::ensure!(!text.contains("rolled over:"), "a rollover switched without the new day {day}:\n{text}");
    anyhow::ensure!(
        exit.code() == Some(1) && text.contains(&format!("index {day:?} matches the pattern")),
        "{exit}:\n{text}"
    );
    rolled_back(w, source, src).await?;
    run_ok(indexferry(&w.state, &["add", &w.name, &day]))?;
    // The running consumer takes the new pair in within seconds; until then rollover refuses.
    wait_for("the consumer to take in the new day", Duration::from_secs(120), || {
        Ok(status(&w.state, &w.name)?.get("added_pending").is_none_or(Value::is_null).then_some(()))
    })
    .await?;
    Ok(format!("in pause: {in_pause}, {day} refused then added"))
}

/// The final rollover; with `interrupted`, SIGKILLed first at a random point of its pause
/// or just after its swap, then run again: the rerun switches or finishes the bookkeeping.
pub(super) async fn final_rollover(w: &Workers, interrupted: bool) -> anyhow::Result<()> {
    if interrupted {
        let (mut p, log) = start_rollover(w, true).await?;
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..4500))).await;
        let (killed, exit) = signal_and_wait(&mut p, nix::sys::signal::Signal::SIGKILL)?;
        eprintln!("chaos: final rollover SIGKILLed: {killed} ({exit})");
        if !killed {
            eprint!("{}", std::fs::read_to_string(&log)?);
        }
    }
    if status(&w.state, &w.name)?["state"] != json!("rolled_over") {
        let out = run_ok(indexferry(&w.state, &["rollover", &w.name]))?;
        eprint!("{out}");
    }
    Ok(())
}
