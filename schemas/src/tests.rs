use super::*;
use proptest::prelude::*;
use serde_json::json;

fn schema() -> jsonschema::Validator {
    let schema: serde_json::Value = serde_json::from_str(JSON_SCHEMA_V1).expect("schema is JSON");
    jsonschema::options().should_validate_formats(true).build(&schema).expect("schema compiles")
}

fn index_event() -> serde_json::Value {
    json!({
        "schema": SCHEMA_V1, "op": "index", "index": "records-v1", "id": "doc-1",
        "seq_no": 41, "primary_term": 1, "version": 3,
        "source": {"title": "hello", "n": 1.5, "tags": ["a", "b"]},
        "ts": "2026-11-25T12:00:00.123Z"
    })
}

fn delete_event() -> serde_json::Value {
    json!({
        "schema": SCHEMA_V1, "op": "delete", "index": "records-v1", "id": "doc-1",
        "seq_no": 42, "primary_term": 2, "version": 4, "routing": "user-7",
        "ts": "2026-11-25T12:00:01+01:00"
    })
}

fn with(
    mut v: serde_json::Value,
    f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> serde_json::Value {
    f(v.as_object_mut().expect("object"));
    v
}

/// Examples both the JSON Schema and `decode` must reject, with the reason `decode` gives.
fn invalid_examples() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "unknown schema",
            with(index_event(), |m| {
                m.insert("schema".into(), json!("indexferry.change.v2"));
            }),
        ),
        (
            "unknown op",
            with(index_event(), |m| {
                m.insert("op".into(), json!("upsert"));
            }),
        ),
        (
            "missing id",
            with(index_event(), |m| {
                m.remove("id");
            }),
        ),
        (
            "empty id",
            with(index_event(), |m| {
                m.insert("id".into(), json!(""));
            }),
        ),
        (
            "negative seq_no",
            with(index_event(), |m| {
                m.insert("seq_no".into(), json!(-1));
            }),
        ),
        (
            "seq_no as string",
            with(index_event(), |m| {
                m.insert("seq_no".into(), json!("41"));
            }),
        ),
        (
            "primary_term zero",
            with(index_event(), |m| {
                m.insert("primary_term".into(), json!(0));
            }),
        ),
        (
            "index without source",
            with(index_event(), |m| {
                m.remove("source");
            }),
        ),
        (
            "delete with source",
            with(delete_event(), |m| {
                m.insert("source".into(), json!({"a": 1}));
            }),
        ),
        (
            "source not an object",
            with(index_event(), |m| {
                m.insert("source".into(), json!([1, 2]));
            }),
        ),
        (
            "unknown field",
            with(index_event(), |m| {
                m.insert("extra".into(), json!(true));
            }),
        ),
        (
            "bad timestamp",
            with(index_event(), |m| {
                m.insert("ts".into(), json!("yesterday"));
            }),
        ),
        (
            "missing ts",
            with(delete_event(), |m| {
                m.remove("ts");
            }),
        ),
    ]
}

#[test]
fn valid_examples_pass_schema_and_decoder() {
    let validator = schema();
    for example in [index_event(), delete_event()] {
        assert!(validator.is_valid(&example), "schema rejects {example}");
        let bytes = serde_json::to_vec(&example).unwrap();
        let event = decode(Some(b"doc-1"), &bytes).expect("decoder accepts");
        assert_eq!(event.id, "doc-1");
        // What we serialise is valid against the schema too.
        let back: serde_json::Value = serde_json::from_slice(&event.to_json()).unwrap();
        assert!(validator.is_valid(&back), "schema rejects re-encoded {back}");
    }
}

#[test]
fn invalid_examples_fail_schema_and_decoder() {
    let validator = schema();
    for (what, example) in invalid_examples() {
        assert!(!validator.is_valid(&example), "schema accepts {what}: {example}");
        let bytes = serde_json::to_vec(&example).unwrap();
        let err = decode(None, &bytes).expect_err(what);
        assert!(!err.to_string().is_empty(), "{what}");
    }
}

#[test]
fn decoder_reasons_name_the_problem() {
    assert_eq!(decode(None, b""), Err(DecodeError::Empty));
    assert!(matches!(decode(None, b"{not json"), Err(DecodeError::NotJson(_))));
    assert_eq!(decode(None, b"[1,2]"), Err(DecodeError::NotObject));
    assert_eq!(decode(None, b"\"str\""), Err(DecodeError::NotObject));
    let v2 = serde_json::to_vec(&with(index_event(), |m| {
        m.insert("schema".into(), json!("x.v9"));
        m.insert("new".into(), json!(1));
    }))
    .unwrap();
    assert_eq!(decode(None, &v2), Err(DecodeError::UnknownSchema("x.v9".into())));
    let no_source = serde_json::to_vec(&with(index_event(), |m| {
        m.remove("source");
    }))
    .unwrap();
    assert_eq!(decode(None, &no_source), Err(DecodeError::MissingSource));
    let ok = serde_json::to_vec(&index_event()).unwrap();
    assert_eq!(decode(Some(b"other"), &ok), Err(DecodeError::KeyMismatch { key: "other".into(), id: "doc-1".into() }));
    let msg = decode(
        None,
        &serde_json::to_vec(&with(index_event(), |m| {
            m.insert("seq_no".into(), json!("x"));
        }))
        .unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("seq_no"), "{msg}");
}

#[test]
fn source_bytes_are_kept_verbatim() {
    let payload = br#"{"schema":"indexferry.change.v1","op":"index","index":"i","id":"1","seq_no":0,"primary_term":1,"version":1,"source":{"b": 1.0e2, "a":"x"},"ts":"2026-01-01T00:00:00Z"}"#;
    let event = decode(Some(b"1"), payload).unwrap();
    assert_eq!(event.source.as_ref().unwrap().get(), r#"{"b": 1.0e2, "a":"x"}"#);
    assert_eq!(event.external_version(), (1 << SEQ_NO_BITS) + 1);
}

#[test]
fn a_term_or_seq_no_past_the_version_range_is_refused() {
    assert_eq!(external_version(1, MAX_SEQ_NO), Some((1 << SEQ_NO_BITS) | (MAX_SEQ_NO + 1)));
    assert_eq!(external_version(MAX_PRIMARY_TERM, MAX_SEQ_NO), Some(i64::MAX as u64));
    assert_eq!(external_version(1, MAX_SEQ_NO + 1), None);
    assert_eq!(external_version(MAX_PRIMARY_TERM + 1, 0), None);
    let too_far = format!(
        r#"{{"schema":"indexferry.change.v1","op":"delete","index":"i","id":"1","seq_no":{},"primary_term":1,"version":1,"ts":"2026-01-01T00:00:00Z"}}"#,
        MAX_SEQ_NO + 1
    );
    let msg = decode(Some(b"1"), too_far.as_bytes()).unwrap_err().to_string();
    assert!(msg.contains("seq_no` at most"), "{msg}");
    let value: serde_json::Value = serde_json::from_str(&too_far).unwrap();
    assert!(!schema().is_valid(&value), "the JSON Schema refuses it too");
}

fn arb_event() -> impl Strategy<Value = ChangeEvent> {
    (
        prop::bool::ANY,
        "[a-z0-9][a-z0-9._-]{0,20}",
        "[^\u{0}]{1,40}",
        0u64..=MAX_SEQ_NO,
        1u64..=MAX_PRIMARY_TERM,
        1u64..u64::MAX / 2,
        prop::option::of("[a-zA-Z0-9]{1,10}"),
        prop::collection::btree_map(
            "[a-z]{1,8}",
            prop_oneof![
                any::<i64>().prop_map(serde_json::Value::from),
                "[^\u{0}]{0,20}".prop_map(serde_json::Value::from),
                any::<bool>().prop_map(serde_json::Value::from),
            ],
            0..6,
        ),
        0i64..4_000_000_000_000,
    )
        .prop_map(|(is_index, index, id, seq_no, primary_term, version, routing, fields, millis)| {
            let source = is_index.then(|| {
                let map: serde_json::Map<_, _> = fields.into_iter().collect();
                RawValue::from_string(serde_json::Value::Object(map).to_string()).unwrap()
            });
            ChangeEvent {
                schema: SCHEMA_V1.into(),
                op: if is_index { Op::Index } else { Op::Delete },
                index,
                id,
                seq_no,
                primary_term,
                version,
                routing,
                source,
                ts: DateTime::from_timestamp_millis(millis).unwrap(),
            }
        })
}

proptest! {
    #[test]
    fn round_trip(event in arb_event()) {
        let bytes = event.to_json();
        let back = decode(Some(event.id.as_bytes()), &bytes).unwrap();
        prop_assert_eq!(&back, &event);
        prop_assert_eq!(back.external_version() & ((1 << SEQ_NO_BITS) - 1), event.seq_no + 1);
    }

    #[test]
    fn external_versions_order_as_term_then_seq_no(
        a in (1u64..=MAX_PRIMARY_TERM, 0u64..=MAX_SEQ_NO),
        b in (1u64..=MAX_PRIMARY_TERM, 0u64..=MAX_SEQ_NO),
    ) {
        let (va, vb) = (external_version(a.0, a.1).unwrap(), external_version(b.0, b.1).unwrap());
        prop_assert_eq!(va.cmp(&vb), a.cmp(&b));
        prop_assert!(va >= 1 && va <= i64::MAX as u64, "a positive long, as the clusters take it");
    }

    #[test]
    fn encoded_events_satisfy_the_schema(event in arb_event()) {
        let value: serde_json::Value = serde_json::from_slice(&event.to_json()).unwrap();
        prop_assert!(schema().is_valid(&value));
    }

    #[test]
    fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(None, &bytes);
    }
}
