//! Compatibility proven on the target: the converted index is created there under a
//! temporary name, a sample of the source's documents is written into it, and every
//! rejection is kept with the cluster's reason. The temporary index is deleted on every
//! path: after the proof, on an error, and when the plan is dropped mid-way (Ctrl-C).

use super::rules::Rewrite;
use indexferry_common::es::{parse_error, Cluster, Method};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

/// The prefix of every temporary index; `indexferry plan` never touches another name.
pub const TEMP_PREFIX: &str = "indexferry-plan-";

/// How many times a setting the target does not know is dropped before creating again.
const MAX_SETTING_RETRIES: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    /// `create` (the index itself) or `document`.
    pub stage: &'static str,
    pub reason: String,
    pub count: u64,
    /// A few of the rejected documents' ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Proof {
    /// The target created the converted index.
    pub created: bool,
    pub sampled: u64,
    pub accepted: u64,
    /// Wall time of the sample's bulk request(s).
    pub bulk_seconds: f64,
    /// Average `_source` size of the sample.
    pub avg_doc_bytes: u64,
    pub rejections: Vec<Rejection>,
}

/// The temporary index: deleted by [`Temp::delete`], or by its drop if that never ran.
struct Temp {
    cluster: Cluster,
    name: String,
    done: bool,
}

impl Temp {
    async fn delete(mut self) {
        self.done = true;
        if let Err(e) = self.cluster.request(Method::Delete, &format!("/{}", self.name), &[], None).await {
            if e.status() != Some(404) {
                tracing::warn!(index = %self.name, cluster = %self.cluster.url, error = %e, "cannot delete the temporary index");
            }
        }
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Dropped mid-way (an interrupted plan): delete it on a thread of its own, since the
        // runtime that owned the request may be going away.
        let (cluster, name) = (self.cluster.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(rt) = rt {
                let _ = rt.block_on(cluster.request(Method::Delete, &format!("/{name}"), &[], None));
            }
        })
        .join();
    }
}

/// A temporary index name for `index`, unique per run.
pub fn temp_name(index: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let stem: String = index.trim_start_matches(['.', '_', '-', '+']).chars().take(180).collect();
    format!("{TEMP_PREFIX}{stem}-{:08x}", nanos ^ std::process::id())
}

/// Creates the converted index on the target under a temporary name, writes `sample`
/// documents of `index` from the source into it, and deletes it. Settings the target says
/// it does not know are dropped (and recorded in `rewrites`) until it accepts or refuses
/// for another reason.
pub async fn prove(
    source: &Cluster,
    target: &Cluster,
    index: &str,
    mappings: &Value,
    settings: &mut Map<String, Value>,
    rewrites: &mut Vec<Rewrite>,
    sample: usize,
) -> anyhow::Result<Proof> {
    let temp = Temp { cluster: target.clone(), name: temp_name(index), done: false };
    let mut proof = Proof::default();
    for _ in 0..MAX_SETTING_RETRIES {
        match create(target, &temp.name, mappings, settings).await? {
            Ok(()) => {
                proof.created = true;
                break;
            }
            Err(reason) => match unknown_setting(&reason).filter(|s| settings.contains_key(s)) {
                Some(setting) => {
                    let v = settings.remove(&setting).unwrap_or_default();
                    rewrites.push(Rewrite {
                        rule: "target-unknown-setting".into(),
                        path: setting,
                        from: v.to_string(),
                        to: "(removed)".into(),
                        why: format!("the target refused it: {reason}"),
                    });
                }
                None => {
                    proof.rejections.push(Rejection { stage: "create", reason, count: 1, ids: vec![] });
                    break;
                }
            },
        }
    }
    if !proof.created {
        // Nothing was created (or it was, and refused right after): make sure.
        temp.delete().await;
        return Ok(proof);
    }
    let result = write_sample(source, target, index, &temp.name, sample, &mut proof).await;
    temp.delete().await;
    result.map(|()| proof)
}

/// `Ok(Err(reason))` when the target refused the index; `Err` when it could not be asked.
async fn create(
    target: &Cluster,
    name: &str,
    mappings: &Value,
    settings: &Map<String, Value>,
) -> anyhow::Result<Result<(), String>> {
    let mut settings = settings.clone();
    // A proof needs no copies, and a single-node target could not place them.
    settings.insert("index.number_of_replicas".into(), json!(0));
    let mut body = json!({ "settings": settings });
    if !mappings.is_null() {
        body["mappings"] = mappings.clone();
    }
    let path = format!("/{name}");
    let (status, answer) = target
        .request_raw(Method::Put, &path, &[("wait_for_active_shards", "1")], Some(serde_json::to_vec(&body)?.into()))
        .await?;
    if (200..300).contains(&status) {
        return Ok(Ok(()));
    }
    let (_, reason) = parse_error(&answer);
    Ok(Err(format!("{status} {reason}")))
}

/// `unknown setting [index.x] ...` → `index.x`.
fn unknown_setting(reason: &str) -> Option<String> {
    let rest = &reason[reason.find("unknown setting [")? + "unknown setting [".len()..];
    Some(rest[..rest.find(']')?].to_owned())
}

async fn write_sample(
    source: &Cluster,
    target: &Cluster,
    index: &str,
    temp: &str,
    sample: usize,
    proof: &mut Proof,
) -> anyhow::Result<()> {
    let query = json!({
        "size": sample.min(10_000),
        "query": { "function_score": { "query": { "match_all": {} }, "random_score": { "seed": 42, "field": "_seq_no" } } },
    });
    let hits: Value = source.json(Method::Post, &format!("/{index}/_search"), &[], Some(&query)).await?;
    let hits = hits["hits"]["hits"].as_array().cloned().unwrap_or_default();
    if hits.is_empty() {
        return Ok(());
    }
    let mut body = Vec::new();
    let mut source_bytes = 0usize;
    for h in &hits {
        let mut action = json!({ "_index": temp, "_id": h["_id"] });
        if let Some(r) = h.get("_routing") {
            action["routing"] = r.clone();
        }
        serde_json::to_writer(&mut body, &json!({ "index": action }))?;
        body.push(b'\n');
        let doc = serde_json::to_vec(&h["_source"])?;
        source_bytes += doc.len();
        body.extend_from_slice(&doc);
        body.push(b'\n');
    }
    proof.sampled = hits.len() as u64;
    proof.avg_doc_bytes = (source_bytes / hits.len()) as u64;
    let started = Instant::now();
    let answer = target.request(Method::Post, "/_bulk", &[], Some(body.into())).await?;
    proof.bulk_seconds = started.elapsed().max(Duration::from_millis(1)).as_secs_f64();
    let answer: Value = serde_json::from_slice(&answer)?;
    for item in answer["items"].as_array().into_iter().flatten() {
        let item = &item["index"];
        match item.get("error") {
            None => proof.accepted += 1,
            Some(e) => {
                let (_, reason) = parse_error(&serde_json::to_vec(&json!({ "error": e }))?);
                let reason = strip_document_id(&reason);
                let id = item["_id"].as_str().unwrap_or_default().to_owned();
                match proof.rejections.iter_mut().find(|r| r.reason == reason) {
                    Some(r) => {
                        r.count += 1;
                        if r.ids.len() < 5 {
                            r.ids.push(id);
                        }
                    }
                    None => proof.rejections.push(Rejection { stage: "document", reason, count: 1, ids: vec![id] }),
                }
            }
        }
    }
    Ok(())
}

/// Reasons name the document (`... in document with id 'x'`, `[1:12]`): without them,
/// one cause groups into one line.
fn strip_document_id(reason: &str) -> String {
    let mut r = reason.to_owned();
    if let Some(i) = r.find(" in document with id '") {
        if let Some(end) = r[i + 22..].find('\'') {
            r.replace_range(i..i + 22 + end + 1, "");
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_setting_and_lose_the_id() {
        assert_eq!(
            unknown_setting("400 illegal_argument_exception: unknown setting [index.foo.bar] please check").as_deref(),
            Some("index.foo.bar")
        );
        assert_eq!(
            strip_document_id("failed to parse field [k] of type [keyword] in document with id 'abc'. Preview"),
            "failed to parse field [k] of type [keyword]. Preview"
        );
        assert!(temp_name("_logs").starts_with("indexferry-plan-logs-"));
    }
}
