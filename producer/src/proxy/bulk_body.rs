//! A `_bulk` body cut into its actions: what each names (index, id, routing, pipeline) and
//! where its lines are, so that the proxy can hold and send again some of them, publish
//! their documents and say which line the cluster would refuse.

use serde_json::Value;

/// One action of a bulk body: where its lines are, and what its metadata names.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct BulkLine {
    pub action: String,
    pub index: Option<String>,
    pub id: Option<String>,
    pub routing: Option<String>,
    /// The action names an ingest pipeline.
    pub pipeline: bool,
    /// Its action line and (but for a delete) its document line, newlines included.
    pub lines: std::ops::Range<usize>,
    /// Its document line, newline included (none for a delete).
    pub doc: Option<std::ops::Range<usize>>,
}

/// The actions of a bulk body; an error names the line the cluster would refuse.
pub(super) fn parse_bulk(body: &[u8]) -> Result<Vec<BulkLine>, String> {
    let mut lines = vec![];
    let mut start = 0;
    while start < body.len() {
        let end = body[start..].iter().position(|&b| b == b'\n').map(|p| start + p + 1).unwrap_or(body.len());
        lines.push(start..end);
        start = end;
    }
    let blank = |r: &std::ops::Range<usize>| body[r.clone()].iter().all(u8::is_ascii_whitespace);
    let mut out = vec![];
    let mut n = 0;
    while n < lines.len() {
        if blank(&lines[n]) {
            n += 1;
            continue;
        }
        let head: Value = serde_json::from_slice(&body[lines[n].clone()])
            .map_err(|e| format!("bulk line {}: not an action: {e}", n + 1))?;
        let Some((action, meta)) = head.as_object().filter(|o| o.len() == 1).and_then(|o| o.iter().next()) else {
            return Err(format!("bulk line {}: expected one action (index, create, update or delete)", n + 1));
        };
        if !matches!(action.as_str(), "index" | "create" | "update" | "delete") {
            return Err(format!("bulk line {}: unknown action [{action}]", n + 1));
        }
        let text = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_owned);
        let first = lines[n].start;
        let mut last = lines[n].end;
        let mut doc = None;
        if action != "delete" {
            n += 1;
            match lines.get(n) {
                Some(line) => {
                    last = line.end;
                    doc = Some(line.clone());
                }
                None => return Err(format!("bulk line {}: the {action} action has no document line", n)),
            }
        }
        out.push(BulkLine {
            action: action.clone(),
            index: text("_index"),
            id: text("_id"),
            routing: text("routing").or_else(|| text("_routing")),
            pipeline: meta.get("pipeline").is_some(),
            lines: first..last,
            doc,
        });
        n += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_body_is_cut_into_its_actions() {
        let body = b"{\"index\":{\"_index\":\"a\",\"_id\":\"1\"}}\n{\"f\":1}\n\n{\"delete\":{\"_id\":\"2\",\"routing\":\"r\"}}\n{\"update\":{\"_id\":\"3\"}}\n{\"doc\":{\"f\":2}}";
        let items = parse_bulk(body).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].index.as_deref(), Some("a"));
        assert_eq!(&body[items[0].lines.clone()], b"{\"index\":{\"_index\":\"a\",\"_id\":\"1\"}}\n{\"f\":1}\n");
        assert_eq!(items[1].action, "delete");
        assert_eq!(items[1].routing.as_deref(), Some("r"));
        assert_eq!(&body[items[1].lines.clone()], b"{\"delete\":{\"_id\":\"2\",\"routing\":\"r\"}}\n");
        assert_eq!(&body[items[2].lines.clone()], b"{\"update\":{\"_id\":\"3\"}}\n{\"doc\":{\"f\":2}}");
    }

    #[test]
    fn a_bad_bulk_line_is_named() {
        assert!(parse_bulk(b"{\"index\":{}}\n").unwrap_err().contains("no document line"));
        assert!(parse_bulk(b"{\"upsert\":{}}\n{}\n").unwrap_err().contains("unknown action"));
        assert!(parse_bulk(b"nope\n").unwrap_err().contains("line 1"));
    }
}
