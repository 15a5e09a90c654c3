//! Which requests change documents: the proxy captures those and passes everything else
//! through. A request that would change documents in a way the proxy cannot capture is
//! refused, never passed through unpublished.

use percent_encoding::percent_decode_str;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Searches, reads, cluster and index APIs: forwarded unchanged, answers streamed.
    Pass,
    /// One document written: `_doc` (with or without an id), `_create`, `_update`, a delete.
    Doc(DocWrite),
    /// `_bulk`, with the index the path names (the default of its items), if any.
    Bulk { index: Option<String> },
    /// `_delete_by_query` or `_update_by_query` on the index expression the path names.
    ByQuery { index: String, delete: bool },
    /// A write the proxy cannot capture, with why.
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DocWrite {
    pub op: DocOp,
    /// The index or alias the path names.
    pub index: String,
    /// None: the cluster chooses it (`POST /{index}/_doc`).
    pub id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DocOp {
    Index,
    Create,
    Update,
    Delete,
}

pub(crate) fn classify(method: &http::Method, path: &str) -> Kind {
    use http::Method as M;
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let writes = matches!(*method, M::PUT | M::POST | M::DELETE);
    let doc = |op, index: &str, id: Option<&str>| {
        Kind::Doc(DocWrite { op, index: index.to_owned(), id: id.map(str::to_owned) })
    };
    match (method, seg.as_slice()) {
        (&M::PUT | &M::POST, ["_bulk"]) => Kind::Bulk { index: None },
        (&M::PUT | &M::POST, [index, "_bulk"]) if !index.starts_with('_') => {
            Kind::Bulk { index: Some(index.to_string()) }
        }
        (&M::PUT | &M::POST, [index, "_doc", id]) => doc(DocOp::Index, index, Some(id)),
        (&M::POST, [index, "_doc"]) => doc(DocOp::Index, index, None),
        (&M::PUT | &M::POST, [index, "_create", id]) => doc(DocOp::Create, index, Some(id)),
        (&M::POST, [index, "_update", id]) => doc(DocOp::Update, index, Some(id)),
        (&M::DELETE, [index, "_doc", id]) => doc(DocOp::Delete, index, Some(id)),
        (&M::POST, [index, "_delete_by_query"]) => Kind::ByQuery { index: index.to_string(), delete: true },
        (&M::POST, [index, "_update_by_query"]) => Kind::ByQuery { index: index.to_string(), delete: false },
        (_, [.., "_update_by_query" | "_delete_by_query"]) => {
            Kind::Refused("the by-query APIs are run by the proxy for POST /{index}/_{update,delete}_by_query".into())
        }
        (&M::POST, ["_reindex"]) => Kind::Refused(
            "_reindex through the capture proxy would write documents without change events: run it against the \
             cluster directly on an index that is not being migrated"
                .into(),
        ),
        // Elasticsearch 7's typed document APIs (`/{index}/{type}/{id}`, `.../_update`).
        (_, [index, kind, _id, ..]) if writes && !index.starts_with('_') && !kind.starts_with('_') => Kind::Refused(
            format!("typed document APIs (/{index}/{kind}/...) are not captured: write through /{index}/_doc/..."),
        ),
        _ => Kind::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn doc(op: DocOp, index: &str, id: Option<&str>) -> Kind {
        Kind::Doc(DocWrite { op, index: index.into(), id: id.map(Into::into) })
    }

    #[test]
    fn document_writes_are_told_apart() {
        assert_eq!(classify(&Method::PUT, "/recs/_doc/1"), doc(DocOp::Index, "recs", Some("1")));
        assert_eq!(classify(&Method::POST, "/recs/_doc/1"), doc(DocOp::Index, "recs", Some("1")));
        assert_eq!(classify(&Method::POST, "/recs/_doc"), doc(DocOp::Index, "recs", None));
        assert_eq!(classify(&Method::PUT, "/recs/_create/1"), doc(DocOp::Create, "recs", Some("1")));
        assert_eq!(classify(&Method::POST, "/recs/_update/1"), doc(DocOp::Update, "recs", Some("1")));
        assert_eq!(classify(&Method::DELETE, "/recs/_doc/1"), doc(DocOp::Delete, "recs", Some("1")));
    }

    #[test]
    fn ids_are_percent_decoded() {
        assert_eq!(classify(&Method::PUT, "/recs/_doc/a%2Fb%20c"), doc(DocOp::Index, "recs", Some("a/b c")));
    }

    #[test]
    fn bulk_with_and_without_an_index() {
        assert_eq!(classify(&Method::POST, "/_bulk"), Kind::Bulk { index: None });
        assert_eq!(classify(&Method::PUT, "/recs/_bulk"), Kind::Bulk { index: Some("recs".into()) });
    }

    #[test]
    fn reads_and_index_apis_pass() {
        for (m, p) in [
            (Method::GET, "/recs/_doc/1"),
            (Method::HEAD, "/recs/_doc/1"),
            (Method::POST, "/recs/_search"),
            (Method::GET, "/_cat/indices"),
            (Method::PUT, "/recs"),
            (Method::DELETE, "/recs"),
            (Method::POST, "/recs/_refresh"),
            (Method::PUT, "/recs/_settings"),
            (Method::POST, "/_msearch"),
            (Method::DELETE, "/_search/scroll"),
            (Method::POST, "/recs/_pit"),
            (Method::PUT, "/_index_template/t"),
            (Method::POST, "/_aliases"),
            (Method::GET, "/recs/_mapping/field/a"),
        ] {
            assert_eq!(classify(&m, p), Kind::Pass, "{m} {p}");
        }
    }

    #[test]
    fn writes_it_cannot_capture_are_refused() {
        assert_eq!(
            classify(&Method::POST, "/recs,logs-*/_delete_by_query"),
            Kind::ByQuery { index: "recs,logs-*".into(), delete: true }
        );
        assert_eq!(
            classify(&Method::POST, "/recs/_update_by_query"),
            Kind::ByQuery { index: "recs".into(), delete: false }
        );
        assert!(matches!(classify(&Method::POST, "/_delete_by_query"), Kind::Refused(_)));
        assert!(matches!(classify(&Method::POST, "/_reindex"), Kind::Refused(_)));
        assert!(matches!(classify(&Method::PUT, "/recs/record/1"), Kind::Refused(_)));
        assert!(matches!(classify(&Method::POST, "/recs/record/1/_update"), Kind::Refused(_)));
    }
}
