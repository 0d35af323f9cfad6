//! A request body as events: NDJSON (one object per line) or one JSON array of objects, each
//! turned into columns by the document policy JSON files use. A line that is not an object
//! is rejected with the reason; the others go on.

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::value::RawValue;

use crate::document::Scalar;
use crate::files::json::object;

/// One event of a body: where it is, and its columns or why it has none.
#[derive(Debug)]
pub struct Line {
    /// 1-based: the line of NDJSON, the element of an array.
    pub number: u64,
    /// Its bytes in the body.
    pub range: Range<usize>,
    pub columns: Result<BTreeMap<String, Scalar>, String>,
}

/// The events of `body` (`flatten` levels of objects flattened).
pub fn lines(body: &[u8], flatten: usize) -> Vec<Line> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    match start.map(|i| body[i]) {
        Some(b'[') => array(body, flatten),
        Some(_) => ndjson(body, flatten),
        None => Vec::new(),
    }
}

fn event(text: &str, flatten: usize) -> Result<BTreeMap<String, Scalar>, String> {
    let columns = object(text, flatten)?;
    if columns.is_empty() {
        return Err("the event has no fields".into());
    }
    Ok(columns)
}

fn ndjson(body: &[u8], flatten: usize) -> Vec<Line> {
    let mut out = Vec::new();
    let mut at = 0;
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let range = at..at + line.len();
        at = range.end + 1;
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        let columns = match std::str::from_utf8(trimmed) {
            Ok(text) => event(text, flatten),
            Err(e) => Err(format!("not UTF-8: {e}")),
        };
        out.push(Line {
            number: i as u64 + 1,
            range,
            columns,
        });
    }
    out
}

fn array(body: &[u8], flatten: usize) -> Vec<Line> {
    let whole = |reason: String| {
        vec![Line {
            number: 1,
            range: 0..body.len(),
            columns: Err(reason),
        }]
    };
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => return whole(format!("not UTF-8: {e}")),
    };
    let items: Vec<&RawValue> = match serde_json::from_str(text) {
        Ok(items) => items,
        Err(e) => return whole(format!("not a JSON array of events: {e}")),
    };
    let base = text.as_ptr() as usize;
    items
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            // The element's text is a slice of the body.
            let from = raw.get().as_ptr() as usize - base;
            Line {
                number: i as u64 + 1,
                range: from..from + raw.get().len(),
                columns: event(raw.get(), flatten),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_lines_keep_their_numbers_and_bad_ones_say_why() {
        let body = b"{\"a\":1}\n\n not json\n{}\n[1]\n{\"b\":{\"c\":\"x\"}}\n";
        let l = lines(body, 0);
        let numbers: Vec<u64> = l.iter().map(|l| l.number).collect();
        assert_eq!(numbers, [1, 3, 4, 5, 6]);
        assert!(l[0].columns.is_ok());
        assert!(l[1]
            .columns
            .as_ref()
            .unwrap_err()
            .contains("not a JSON object"));
        assert_eq!(
            l[2].columns.as_ref().unwrap_err(),
            "the event has no fields"
        );
        assert!(l[3].columns.is_err());
        assert_eq!(&body[l[4].range.clone()], b"{\"b\":{\"c\":\"x\"}}");
        assert_eq!(
            l[4].columns.as_ref().unwrap()["b"],
            Scalar::Nested("{\"c\":\"x\"}".into())
        );
    }

    #[test]
    fn an_array_is_one_event_per_element() {
        let body = b" [ {\"a\": 12345678901234567890123}, 5, {\"b\": \"\\u00e9\"} ] ";
        let l = lines(body, 0);
        assert_eq!(l.len(), 3);
        assert_eq!(
            l[0].columns.as_ref().unwrap()["a"],
            Scalar::Bare("12345678901234567890123".into())
        );
        assert!(l[1].columns.is_err());
        assert_eq!(&body[l[2].range.clone()], b"{\"b\": \"\\u00e9\"}");
        assert_eq!(l[2].columns.as_ref().unwrap()["b"], Scalar::Str("é".into()));
        let broken = lines(b"[{\"a\":1}", 0);
        assert_eq!(broken.len(), 1);
        assert!(broken[0]
            .columns
            .as_ref()
            .unwrap_err()
            .contains("JSON array"));
    }
}
