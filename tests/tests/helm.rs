//! The Helm chart under deploy/helm/indexferry: `helm lint` and `helm template` pass, and
//! every rendered manifest is valid offline, strictly (unknown fields are errors), against
//! Kubernetes' schemas (kubernetes-validate) and, for the PodMonitor, prometheus-operator's
//! CRD schema. The tools come from `dev/tools` (helm built from the Go module proxy).

use anyhow::Context;
use indexferry_tests::{dev_script, repo_file};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tools() -> anyhow::Result<PathBuf> {
    let out = Command::new(dev_script("tools")).output().context("cannot run dev/tools")?;
    anyhow::ensure!(out.status.success(), "dev/tools failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn chart() -> PathBuf {
    repo_file("deploy/helm/indexferry")
}

fn run(tools: &Path, program: &str, args: &[&str]) -> anyhow::Result<Output> {
    Command::new(tools.join(program)).args(args).output().with_context(|| format!("cannot run {program}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Every part switched on: the proxy, the PodMonitor, the dashboard, credentials.
const VALUES: &str = r#"
migration:
  name: products
  recipe: |
    name = "products"
    [source]
    url = "https://source:9200"
    [kafka]
    brokers = "kafka:9092"
    topic = "products-events"
    [[indices]]
    source = "products-v1"
    target = "products-v2"
    alias = "products"
    mappings_file = "mappings.json"
  files:
    mappings.json: '{"properties":{"title":{"type":"text"}}}'
credentials:
  sourcePassword: secret
proxy:
  enabled: true
  upstream: https://source:9200
  topic: products-events
  brokers: kafka:9092
monitoring:
  podMonitor: { enabled: true }
  dashboard: { enabled: true }
"#;

/// `helm template` of the chart with `values` and `set`; the manifests, as JSON values.
fn render(tools: &Path, dir: &Path, values: &str, set: &[&str]) -> anyhow::Result<(PathBuf, Vec<Value>)> {
    let values_file = dir.join(format!("values-{}.yaml", rand::random::<u32>()));
    std::fs::write(&values_file, values)?;
    let chart = chart();
    let mut args = vec![
        "template",
        "products",
        chart.to_str().unwrap_or_default(),
        "-f",
        values_file.to_str().unwrap_or_default(),
    ];
    for s in set {
        args.extend(["--set", s]);
    }
    let out = run(tools, "helm", &args)?;
    anyhow::ensure!(out.status.success(), "helm template failed: {}", text(&out));
    let rendered = dir.join(format!("rendered-{}.yaml", rand::random::<u32>()));
    std::fs::write(&rendered, &out.stdout)?;
    // YAML to JSON by the tools' Python (PyYAML), so that the test reads what was rendered.
    let script = "import json,sys,yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))";
    let json = run(tools, "python", &["-c", script, rendered.to_str().unwrap_or_default()])?;
    anyhow::ensure!(json.status.success(), "{}", text(&json));
    Ok((rendered, serde_json::from_slice(&json.stdout)?))
}

fn validate(tools: &Path, manifests: &Path) -> anyhow::Result<Output> {
    let crds = tools.join("..").join("crds");
    let script = dev_script("tools.d/validate.py");
    run(
        tools,
        "python",
        &[
            script.to_str().unwrap_or_default(),
            crds.to_str().unwrap_or_default(),
            manifests.to_str().unwrap_or_default(),
        ],
    )
}

fn kinds(manifests: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = manifests
        .iter()
        .map(|m| format!("{} {}", m["kind"].as_str().unwrap_or("?"), m["metadata"]["name"].as_str().unwrap_or("?")))
        .collect();
    k.sort();
    k
}

#[test]
fn the_chart_lints_renders_and_is_valid_offline() -> anyhow::Result<()> {
    let tools = tools()?;
    let dir = tempfile::tempdir()?;
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, VALUES)?;
    let chart = chart();
    let lint = run(
        &tools,
        "helm",
        &["lint", "--strict", chart.to_str().unwrap_or_default(), "-f", values.to_str().unwrap_or_default()],
    )?;
    assert!(lint.status.success(), "{}", text(&lint));

    let (rendered, manifests) = render(&tools, dir.path(), VALUES, &[])?;
    assert_eq!(
        kinds(&manifests),
        [
            "ConfigMap products-indexferry-dashboard",
            "ConfigMap products-indexferry-recipe",
            "Deployment products-indexferry-proxy",
            "Job products-indexferry-rollover",
            "PodMonitor products-indexferry",
            "Secret products-indexferry-credentials",
            "Service products-indexferry-proxy",
            "Service products-indexferry-run",
            "StatefulSet products-indexferry-run",
        ]
    );
    let valid = validate(&tools, &rendered)?;
    assert!(valid.status.success(), "{}", text(&valid));
    assert!(text(&valid).contains("9 manifests, 0 invalid"), "{}", text(&valid));
    let lint = run(
        &tools,
        "yamllint",
        &["-d", "{extends: relaxed, rules: {line-length: disable}}", rendered.to_str().unwrap_or_default()],
    )?;
    assert!(lint.status.success(), "{}", text(&lint));

    let find = |kind: &str| manifests.iter().find(|m| m["kind"] == kind).cloned().unwrap_or_default();
    let sts = find("StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 1);
    let run_args = &sts["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(run_args, &serde_json::json!(["migration", "run", "products", "--stay"]));
    let claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].as_str().unwrap_or_default();
    let job = find("Job");
    assert_eq!(job["spec"]["suspend"], true, "the rollover waits for an operator");
    let job_claim = job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        job_claim,
        format!("{claim}-{}-0", sts["metadata"]["name"].as_str().unwrap_or_default()),
        "the Job mounts run's claim"
    );
    // The dashboard in the chart is the one the dashboard test checks.
    let cm = manifests
        .iter()
        .find(|m| m["metadata"]["name"] == "products-indexferry-dashboard")
        .cloned()
        .unwrap_or_default();
    let dashboard: Value = serde_json::from_str(cm["data"]["indexferry.json"].as_str().unwrap_or_default())?;
    assert!(dashboard["panels"].as_array().is_some_and(|p| !p.is_empty()));

    let (_, started) = render(&tools, dir.path(), VALUES, &["rollover.start=true"])?;
    let job = started.iter().find(|m| m["kind"] == "Job").cloned().unwrap_or_default();
    assert_eq!(job["spec"]["suspend"], false, "--set rollover.start=true starts it");
    Ok(())
}

#[test]
fn the_checks_refuse_what_is_wrong() -> anyhow::Result<()> {
    let tools = tools()?;
    let dir = tempfile::tempdir()?;
    // No migration name: helm says which value is missing.
    let chart = chart();
    let out =
        run(&tools, "helm", &["template", "x", chart.to_str().unwrap_or_default(), "--set", "migration.recipe=x"])?;
    assert!(!out.status.success());
    assert!(text(&out).contains("migration.name is required"), "{}", text(&out));

    // An unknown field in a built-in kind and in the PodMonitor: both invalid.
    let (rendered, _) = render(&tools, dir.path(), VALUES, &[])?;
    let broken = std::fs::read_to_string(&rendered)?
        .replace("\n  serviceName:", "\n  serviceNam: x\n  serviceName:")
        .replace("\n  podMetricsEndpoints:", "\n  podMetricsEndpoint: []\n  podMetricsEndpoints:");
    let bad = dir.path().join("broken.yaml");
    std::fs::write(&bad, broken)?;
    let out = validate(&tools, &bad)?;
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("StatefulSet products-indexferry-run: at spec: Additional properties"), "{t}");
    assert!(t.contains("PodMonitor products-indexferry: at spec: Additional properties"), "{t}");
    Ok(())
}
