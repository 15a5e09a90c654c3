use super::*;
use std::collections::HashMap;

const MINIMAL: &str = r#"
name = "records-v2"
[source]
url = "http://127.0.0.1:9200"
[kafka]
brokers = "127.0.0.1:9092"
topic = "records.changes"
[[indices]]
source = "records-v1"
target = "records-v2"
alias = "records"
mappings = { properties = { title = { type = "keyword" } } }
settings = { number_of_replicas = 0, refresh_interval = "1s" }
"#;

fn parse(text: &str) -> Result<Recipe> {
    Recipe::parse(text, Path::new("recipe.toml"), Path::new("."), &Overrides::default())
}

#[test]
fn minimal_recipe_has_defaults() {
    let r = parse(MINIMAL).unwrap();
    assert_eq!(r.name, "records-v2");
    assert!(!r.cross_cluster());
    assert_eq!(r.target_cluster().url, vec!["http://127.0.0.1:9200"]);
    assert_eq!(r.dead_letter_topic(), "records.changes.deadletter");
    assert_eq!(r.group_id(), "indexferry-records-v2");
    assert_eq!(r.snapshot.batch_size, 2000);
    assert_eq!(r.replay.in_flight, 8);
    assert!(!r.source.compression, "the cluster does not spend CPU compressing answers unless asked");
    let s = r.pairs[0].production_settings();
    assert_eq!(s["index.number_of_replicas"], 0);
    assert_eq!(s["index.refresh_interval"], "1s");
    assert_eq!(r.pairs[0].mappings_json().unwrap()["properties"]["title"]["type"], "keyword");
}

#[test]
fn unknown_field_is_named_with_the_file() {
    let text = MINIMAL.replace("[kafka]", "[kafka]\nbrokerz = \"x\"");
    let msg = parse(&text).unwrap_err().to_string();
    assert!(msg.starts_with("recipe.toml:"), "{msg}");
    assert!(msg.contains("brokerz"), "{msg}");
}

#[test]
fn missing_source_cluster_is_named() {
    let text = MINIMAL.replace("[source]\nurl = \"http://127.0.0.1:9200\"\n", "");
    let msg = parse(&text).unwrap_err().to_string();
    assert!(msg.contains("source"), "{msg}");
}

#[test]
fn bad_values_are_named() {
    for (from, to, field) in [
        ("http://127.0.0.1:9200", "ftp://x", "source.url"),
        ("alias = \"records\"", "alias = \"Rec*\"", "indices[0].alias"),
        ("name = \"records-v2\"", "name = \"a b\"", "name"),
        ("target = \"records-v2\"", "target = \"records-v1\"", "indices[0]"),
    ] {
        let msg = parse(&MINIMAL.replace(from, to)).unwrap_err().to_string();
        assert!(msg.contains(field), "{field}: {msg}");
    }
    let msg = parse(&format!("{MINIMAL}\n[snapshot]\nslices = 0\n")).unwrap_err().to_string();
    assert!(msg.contains("snapshot.slices"), "{msg}");
}

#[test]
fn snapshot_method_defaults_to_auto_and_names_a_wrong_value() {
    assert_eq!(parse(MINIMAL).unwrap().snapshot.method, crate::config::SnapshotMethod::Auto);
    let r = parse(&format!("{MINIMAL}\n[snapshot]\nmethod = \"reindex\"\n")).unwrap();
    assert_eq!(r.snapshot.method, crate::config::SnapshotMethod::Reindex);
    let msg = parse(&format!("{MINIMAL}\n[snapshot]\nmethod = \"scroll\"\n")).unwrap_err().to_string();
    assert!(msg.contains("method") && msg.contains("reindex"), "{msg}");
}

#[test]
fn overrides_flags_then_environment() {
    let mut r: Recipe = toml::from_str(MINIMAL).unwrap();
    let env: HashMap<&str, &str> = [
        ("INDEXFERRY_KAFKA_BROKERS", "k:1"),
        ("INDEXFERRY_TARGET_URL", "http://other:9201"),
        ("INDEXFERRY_SOURCE_PASSWORD", "s3cret"),
    ]
    .into();
    let flags = Overrides { brokers: Some("flag:2".into()), ..Default::default() };
    r.apply(&flags, &|k| env.get(k).map(|v| v.to_string()));
    assert_eq!(r.kafka.brokers, "flag:2", "a flag wins over the environment");
    assert!(r.cross_cluster());
    assert_eq!(r.target_cluster().url, vec!["http://other:9201"]);
    let flags = Overrides { source_url: Some("http://a:9200, http://b:9200".into()), ..Default::default() };
    r.apply(&flags, &|_| None);
    assert_eq!(r.source.url, vec!["http://a:9200", "http://b:9200"], "an override takes a comma-separated list");
    assert_eq!(r.source.password.as_ref().unwrap().expose(), "s3cret");
    assert!(!format!("{r:?}").contains("s3cret"), "secrets never print");
}

#[test]
fn mappings_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.json"), r#"{"properties":{"n":{"type":"long"}}}"#).unwrap();
    let text = MINIMAL.replace("mappings = {", "mappings_file = \"m.json\"\nx = {").replace("\nx = {", "\n#");
    let r = Recipe::parse(&text, Path::new("r.toml"), dir.path(), &Overrides::default()).unwrap();
    assert_eq!(r.pairs[0].mappings_json().unwrap()["properties"]["n"]["type"], "long");
    std::fs::write(dir.path().join("m.json"), "nope").unwrap();
    let msg = Recipe::parse(&text, Path::new("r.toml"), dir.path(), &Overrides::default()).unwrap_err().to_string();
    assert!(msg.contains("mappings_file") && msg.contains("not JSON"), "{msg}");
}

#[test]
fn the_documented_example_recipe_parses() {
    // Found at run time: a path compiled in could name another clone sharing the target dir.
    let package = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let path = Path::new(&package).join("../examples/recipe.toml");
    let r = Recipe::load(&path, &Overrides::default()).unwrap();
    assert_eq!(r.pairs[0].alias, "records");
    assert_eq!(r.pairs[0].mappings_json().unwrap()["properties"]["quantity"]["type"], "long");
    assert_eq!(r.rollover.grace, std::time::Duration::from_millis(500));
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any text: a recipe or an error naming the file, never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            if let Err(e) = parse(&text) {
                prop_assert!(e.to_string().starts_with("recipe.toml:"), "{}", e);
            }
        }

        /// The valid recipe with one line replaced by arbitrary text.
        #[test]
        fn mutated_recipes_never_panic(line in 0usize..16, junk in "\\PC{0,60}") {
            let mut lines: Vec<&str> = MINIMAL.lines().collect();
            let at = line.min(lines.len() - 1);
            lines[at] = &junk;
            let _ = parse(&lines.join("\n"));
        }

        /// Arbitrary bytes through the TOML front door (invalid UTF-8 included).
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse(&text);
        }
    }
}

#[test]
fn rollover_pause_stays_under_the_producer_retry_window() {
    let d = RolloverConfig::default();
    assert!(d.grace + d.drain_timeout < PRODUCER_RETRY_WINDOW, "the defaults fit");
    let err =
        parse(&format!("{MINIMAL}[rollover]\ngrace = \"1s\"\ndrain_timeout = \"29s\"\n")).unwrap_err().to_string();
    assert!(
        err.contains("drain_timeout (29s) + grace (1s)") && err.contains("retry window") && err.contains("30s"),
        "{err}"
    );
    assert!(parse(&format!("{MINIMAL}[rollover]\ngrace = \"1s\"\ndrain_timeout = \"28s\"\n")).is_ok());
}

#[test]
fn a_pattern_entry_takes_a_source_template_and_no_alias() {
    let base = MINIMAL
        .replace("source = \"records-v1\"", "source = \"stats-*\"")
        .replace("target = \"records-v2\"", "target = \"{source}-v2\"");
    let r = parse(&base.replace("alias = \"records\"\n", "exclude = [\"stats-old-*\"]\n")).unwrap();
    assert!(r.pairs[0].is_pattern());
    assert_eq!(r.pairs[0].target_for("stats-a"), "stats-a-v2");
    assert!(r.pairs[0].excludes("stats-old-1") && !r.pairs[0].excludes("stats-new"));
    let e = parse(&base).unwrap_err().to_string();
    assert!(e.contains("indices[0].alias") && e.contains("drop `alias`"), "{e}");
    let named = MINIMAL.replace("target = \"records-v2\"", "target = \"{source}-v2\"");
    let e = parse(&named).unwrap_err().to_string();
    assert!(e.contains("indices[0].target") && e.contains("`{source}` is for a pattern"), "{e}");
}

#[test]
fn globs_match_like_index_patterns() {
    assert!(glob_match("stats-*", "stats-a-2026.11.01"));
    assert!(glob_match("stats-*-v2", "stats-a-v2") && !glob_match("stats-*-v2", "stats-a-v3"));
    assert!(glob_match("*", "x") && glob_match("a*b*c", "abbbc") && !glob_match("a*b*c", "acb"));
    assert!(glob_match("exact", "exact") && !glob_match("exact", "exactly"));
}

#[test]
fn a_prefix_goes_before_every_name_but_the_topic() {
    let text = MINIMAL.replace("name = \"records-v2\"", "prefix = \"tenant-a-\"\nname = \"records-v2\"");
    let r = parse(&text).unwrap();
    assert_eq!(r.name, "tenant-a-records-v2");
    assert_eq!(r.group_id(), "tenant-a-indexferry-records-v2");
    assert_eq!(r.kafka.topic, "records.changes", "tenants share the topic");
    let p = &r.pairs[0];
    assert_eq!(
        (p.source.as_str(), p.target.as_str(), p.alias.as_str()),
        ("tenant-a-records-v1", "tenant-a-records-v2", "tenant-a-records")
    );
    assert!(r.owns("tenant-a-x") && !r.owns("tenant-b-x"));
    let given = text.replace("topic = \"records.changes\"", "topic = \"records.changes\"\ngroup_id = \"ferry\"");
    assert_eq!(parse(&given).unwrap().group_id(), "tenant-a-ferry");
}

#[test]
fn a_pattern_target_fills_source_without_the_prefix() {
    let text = r#"
prefix = "t1-"
name = "stats"
[source]
url = "http://127.0.0.1:9200"
[kafka]
brokers = "127.0.0.1:9092"
topic = "stats.changes"
[[indices]]
source = "stats-*"
target = "v2-{source}"
exclude = ["stats-old-*"]
"#;
    let r = parse(text).unwrap();
    let p = &r.pairs[0];
    assert_eq!(p.source, "t1-stats-*");
    assert_eq!(p.exclude, ["t1-stats-old-*"]);
    assert_eq!(p.target_for("t1-stats-2026.11.01"), "t1-v2-stats-2026.11.01");
    assert!(p.excludes("t1-stats-old-1") && !p.excludes("stats-old-1"));
}

#[test]
fn a_prefix_over_the_name_limit_or_invalid_is_refused_in_one_line() {
    let long = "t".repeat(250);
    let text = MINIMAL.replace("name = \"records-v2\"", &format!("prefix = \"{long}-\"\nname = \"records-v2\""));
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("indices[0].source") && e.contains("261 bytes") && e.contains("255-byte limit"), "{e}");
    assert!(e.contains(&format!("prefix \"{long}-\"")), "{e}");
    assert!(!e.trim_end().contains('\n'), "one line: {e}");
    for bad in ["Tenant-", "-t", "t*", "t/"] {
        let text = MINIMAL.replace("name = \"records-v2\"", &format!("prefix = \"{bad}\"\nname = \"records-v2\""));
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("prefix:"), "{bad}: {e}");
    }
}
