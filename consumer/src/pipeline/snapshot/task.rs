//! The `_reindex` task API as the `reindex` method uses it: start a task, read its status or
//! result, rethrottle it, cancel it, and turn its answer into what was copied or one line
//! naming why it failed.

use anyhow::{bail, Context as _};
use indexferry_common::es::{Cluster, Method};
use serde::Deserialize;
use serde_json::Value;

/// A task's counters, from `task.status` while it runs and from `response` once it is done.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
pub(crate) struct Counts {
    #[serde(default)]
    pub(crate) total: u64,
    #[serde(default)]
    pub(crate) created: u64,
    #[serde(default)]
    pub(crate) updated: u64,
    /// Copies refused because the target holds a newer write (an event's): stale, not failed.
    #[serde(default)]
    pub(crate) version_conflicts: u64,
    #[serde(default)]
    pub(crate) noops: u64,
}

impl Counts {
    /// Documents the task has dealt with: written, or refused as older than the target's.
    pub(crate) fn copied(&self) -> u64 {
        self.created + self.updated + self.version_conflicts + self.noops
    }

    pub(crate) fn applied(&self) -> u64 {
        self.created + self.updated
    }
}

#[derive(Debug, Deserialize)]
struct TaskAnswer {
    #[serde(default)]
    completed: bool,
    #[serde(default)]
    task: Option<TaskInfo>,
    #[serde(default)]
    response: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct TaskInfo {
    #[serde(default)]
    status: Option<Value>,
}

impl TaskInfo {
    fn counts(&self) -> Option<Counts> {
        self.status.as_ref().and_then(|s| serde_json::from_value(s.clone()).ok())
    }

    /// A sliced task's slices: the finished ones' counts, `None` for those still running.
    fn slices(&self) -> Option<Vec<Option<Counts>>> {
        let slices = self.status.as_ref()?.get("slices")?.as_array()?;
        Some(slices.iter().map(|s| serde_json::from_value(s.clone()).ok()).collect())
    }
}

/// Where a task is.
#[derive(Debug, PartialEq)]
pub(crate) enum TaskState {
    Running(Counts),
    Done(Counts),
    /// The task ended without copying everything: the line names the cause.
    Failed(String),
    /// The cluster knows no such task (a node restart forgot it before it stored a result).
    Vanished,
    /// The cluster does not answer (a restart, a network cut): ask again later.
    Unreachable(String),
}

/// Starts `_reindex` with `body` and returns the task id (`node:id`).
pub(crate) async fn start(
    runner: &Cluster,
    body: &Value,
    slices: u32,
    requests_per_second: f64,
) -> anyhow::Result<String> {
    let (slices, rps) = (slices.to_string(), rps_param(requests_per_second));
    let query = [("wait_for_completion", "false"), ("slices", slices.as_str()), ("requests_per_second", rps.as_str())];
    let bytes = bytes::Bytes::from(serde_json::to_vec(body)?);
    let (status, answer) = runner.request_raw(Method::Post, "/_reindex", &query, Some(bytes)).await?;
    if !(200..300).contains(&status) {
        bail!("{}", refusal(runner, status, &answer));
    }
    let v: Value = serde_json::from_slice(&answer).with_context(|| {
        format!("the {} cluster {} answered POST /_reindex with no JSON", runner.role(), runner.url)
    })?;
    v.get("task").and_then(Value::as_str).map(str::to_owned).with_context(|| {
        format!("the {} cluster {} answered POST /_reindex without a task id: {v}", runner.role(), runner.url)
    })
}

/// What the cluster says about `task`.
pub(crate) async fn state(runner: &Cluster, task: &str) -> anyhow::Result<TaskState> {
    let path = format!("/_tasks/{task}");
    let answer = match runner.json::<TaskAnswer>(Method::Get, &path, &[], None).await {
        Ok(a) => a,
        Err(e) if e.status() == Some(404) => return Ok(TaskState::Vanished),
        Err(e) if indexferry_common::es::is_transient(&e) => return Ok(TaskState::Unreachable(e.to_string())),
        Err(e) => return Err(e).with_context(|| format!("cannot read reindex task {task}")),
    };
    let sliced = answer.task.as_ref().is_some_and(|t| t.slices().is_some());
    match judge(answer) {
        TaskState::Running(_) if sliced => Ok(TaskState::Running(sliced_counts(runner, task).await?)),
        other => Ok(other),
    }
}

/// A sliced task's counts while it runs: its own status holds only the finished slices, the
/// running ones are its child tasks.
async fn sliced_counts(runner: &Cluster, task: &str) -> anyhow::Result<Counts> {
    #[derive(Deserialize)]
    struct Listed {
        #[serde(default)]
        nodes: std::collections::HashMap<String, ListedNode>,
    }
    #[derive(Deserialize)]
    struct ListedNode {
        #[serde(default)]
        tasks: std::collections::HashMap<String, TaskInfo>,
    }
    let parent: TaskAnswer = runner
        .json(Method::Get, &format!("/_tasks/{task}"), &[], None)
        .await
        .with_context(|| format!("cannot read reindex task {task}"))?;
    let finished: Vec<Counts> =
        parent.task.and_then(|t| t.slices()).unwrap_or_default().into_iter().flatten().collect();
    let listed: Listed = runner
        .json(Method::Get, "/_tasks", &[("parent_task_id", task), ("detailed", "true")], None)
        .await
        .with_context(|| format!("cannot list the slices of reindex task {task}"))?;
    let running: Vec<Counts> =
        listed.nodes.into_values().flat_map(|n| n.tasks.into_values()).filter_map(|t| t.counts()).collect();
    Ok(finished.iter().chain(&running).fold(Counts::default(), |a, c| Counts {
        total: a.total + c.total,
        created: a.created + c.created,
        updated: a.updated + c.updated,
        version_conflicts: a.version_conflicts + c.version_conflicts,
        noops: a.noops + c.noops,
    }))
}

fn judge(answer: TaskAnswer) -> TaskState {
    if let Some(e) = &answer.error {
        return TaskState::Failed(describe_error(e));
    }
    if !answer.completed {
        return TaskState::Running(answer.task.and_then(|t| t.counts()).unwrap_or_default());
    }
    let Some(response) = answer.response else {
        return TaskState::Failed("the task completed without a response".into());
    };
    if let Some(failure) = response.get("failures").and_then(Value::as_array).and_then(|f| f.first()) {
        let n = response["failures"].as_array().map_or(0, Vec::len);
        return TaskState::Failed(format!("{n} failure(s), the first: {}", describe_failure(failure)));
    }
    if let Some(why) = response.get("canceled").and_then(Value::as_str) {
        return TaskState::Failed(format!("the task was cancelled ({why})"));
    }
    if response.get("timed_out").and_then(Value::as_bool) == Some(true) {
        return TaskState::Failed("the task timed out".into());
    }
    match serde_json::from_value::<Counts>(response) {
        Ok(c) => TaskState::Done(c),
        Err(e) => TaskState::Failed(format!("unreadable task result: {e}")),
    }
}

/// Applies a new `requests_per_second` to a running task.
pub(crate) async fn rethrottle(runner: &Cluster, task: &str, requests_per_second: f64) -> anyhow::Result<()> {
    let rps = rps_param(requests_per_second);
    runner
        .json::<Value>(Method::Post, &format!("/_reindex/{task}/_rethrottle"), &[("requests_per_second", &rps)], None)
        .await
        .with_context(|| format!("cannot rethrottle reindex task {task} to {rps} requests per second"))?;
    Ok(())
}

/// Cancels `task` (and its slices); a task already gone is no error.
pub(crate) async fn cancel(runner: &Cluster, task: &str) -> anyhow::Result<()> {
    match runner.json::<Value>(Method::Post, &format!("/_tasks/{task}/_cancel"), &[], None).await {
        Ok(_) => Ok(()),
        Err(e) if e.status() == Some(404) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot cancel reindex task {task}")),
    }
}

/// `requests_per_second` as the API takes it: -1 for unthrottled.
fn rps_param(rps: f64) -> String {
    if rps > 0.0 {
        format!("{rps}")
    } else {
        "-1".into()
    }
}

/// One line for a refused `POST /_reindex`.
fn refusal(runner: &Cluster, status: u16, body: &[u8]) -> String {
    let reason = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").map(describe_error))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect());
    let hint = if status == 404 || status == 405 || reason.contains("no handler") {
        " (the cluster has no reindex module)"
    } else {
        ""
    };
    format!("the {} cluster {} refused POST /_reindex ({status}): {reason}{hint}", runner.role(), runner.url)
}

/// `type: reason`, down to the innermost cause, with a hint where the fix is known.
pub(crate) fn describe_error(e: &Value) -> String {
    let mut parts = vec![];
    let mut cur = Some(e);
    while let Some(c) = cur {
        let t = c.get("type").and_then(Value::as_str).unwrap_or_default();
        let r = c.get("reason").and_then(Value::as_str).unwrap_or_default();
        match (t, r) {
            ("", "") => {}
            ("", r) => parts.push(r.to_owned()),
            (t, "") => parts.push(t.to_owned()),
            (t, r) => parts.push(format!("{t}: {r}")),
        }
        cur = c.get("caused_by");
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    let mut line = parts.join(", caused by ");
    if line.contains("buffer limit") {
        line.push_str(
            " (the target's client for reindex from remote buffers one batch of at most 100mb: lower [snapshot] batch_size)",
        );
    }
    if line.contains("not allowlisted") || line.contains("not whitelisted") {
        line.push_str(" (add the source to the target cluster's reindex.remote.allowlist, whitelist on Elasticsearch)");
    }
    line
}

/// One entry of a task result's `failures`: a document the target refused, or a search failure.
fn describe_failure(f: &Value) -> String {
    let cause = f.get("cause").or_else(|| f.get("reason")).map(describe_error).unwrap_or_else(|| f.to_string());
    match (f.get("index").and_then(Value::as_str), f.get("id").and_then(Value::as_str)) {
        (Some(index), Some(id)) => format!("document {id} of {index}: {cause}"),
        _ => match f.get("shard").and_then(Value::as_i64) {
            Some(shard) => format!("shard {shard}: {cause}"),
            None => cause,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_of(json: &str) -> TaskState {
        judge(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn a_running_task_reports_its_counts() {
        let s = state_of(
            r#"{"completed":false,"task":{"status":{"total":10,"created":3,"updated":1,"version_conflicts":2,
            "noops":0,"batches":1,"requests_per_second":-1.0}}}"#,
        );
        let TaskState::Running(c) = s else { panic!("{s:?}") };
        assert_eq!((c.total, c.copied(), c.applied()), (10, 6, 4));
    }

    #[test]
    fn a_sliced_task_lists_its_finished_slices() {
        let t: TaskInfo = serde_json::from_str(
            r#"{"status":{"total":0,"created":0,"slices":[null,{"slice_id":1,"total":5,"created":5}]}}"#,
        )
        .unwrap();
        let slices = t.slices().unwrap();
        assert_eq!(slices.len(), 2);
        assert_eq!((slices[0], slices[1].map(|c| c.created)), (None, Some(5)));
        let plain: TaskInfo = serde_json::from_str(r#"{"status":{"total":3,"created":1}}"#).unwrap();
        assert!(plain.slices().is_none());
    }

    #[test]
    fn a_finished_task_with_conflicts_only_is_done() {
        let s = state_of(
            r#"{"completed":true,"task":{},"response":{"took":5,"timed_out":false,"total":3,"created":2,"updated":0,
            "version_conflicts":1,"noops":0,"failures":[]}}"#,
        );
        assert_eq!(s, TaskState::Done(Counts { total: 3, created: 2, updated: 0, version_conflicts: 1, noops: 0 }));
    }

    #[test]
    fn a_failed_document_names_its_id_and_cause() {
        let s = state_of(
            r#"{"completed":true,"response":{"total":3,"created":2,"failures":[{"index":"dst","id":"7",
            "cause":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]"},"status":400}]}}"#,
        );
        assert_eq!(
            s,
            TaskState::Failed(
                "1 failure(s), the first: document 7 of dst: mapper_parsing_exception: failed to parse field [n]"
                    .into()
            )
        );
    }

    #[test]
    fn a_remote_buffer_overflow_says_to_lower_the_batch() {
        let s = state_of(
            r#"{"completed":true,"error":{"type":"exception","reason":"Error reading the remote response",
            "caused_by":{"type":"content_too_long_exception","reason":"entity content is too long [104857601] for the configured buffer limit [104857600]"}}}"#,
        );
        let TaskState::Failed(line) = s else { panic!("{s:?}") };
        assert!(line.contains("buffer limit [104857600]") && line.contains("lower [snapshot] batch_size"), "{line}");
    }

    #[test]
    fn a_cancelled_task_is_a_failure() {
        let s = state_of(
            r#"{"completed":true,"response":{"total":3,"created":1,"canceled":"by user request","failures":[]}}"#,
        );
        assert_eq!(s, TaskState::Failed("the task was cancelled (by user request)".into()));
    }
}
