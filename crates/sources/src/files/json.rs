//! JSON files: one object per line (JSON lines) or one array of objects, detected by the first
//! non-blank byte. Arrays are streamed element by element, never held whole.
//!
//! Top-level keys are columns; a nested object or array is kept as its JSON text, or with
//! `nested = "flatten"` an object's keys become `parent__child` columns down to `max_depth`
//! levels (deeper objects and every array stay JSON text). Numbers are read from their original
//! text, so a decimal column receives exactly the digits in the file.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};

use arrow::datatypes::SchemaRef;
use serde_json::value::RawValue;

use sluice_core::reject::Reject;

use super::bound::RecordBound;
use super::rows::RowBatcher;
use super::{ReadEvent, ReadStats};
use crate::document::{self, Node, Scalar};
use crate::values::Inference;
use crate::SourceError;

/// A JSON value as a document node (see [`crate::document`]).
impl Node for &RawValue {
    fn fields(&self) -> Option<Result<Vec<(String, Self)>, String>> {
        self.get().trim_start().starts_with('{').then(|| {
            serde_json::from_str::<BTreeMap<String, &RawValue>>(self.get())
                .map(|m| m.into_iter().collect())
                .map_err(|e| format!("not a JSON object: {e}"))
        })
    }

    fn scalar(&self) -> Result<Scalar, String> {
        let text = self.get().trim();
        Ok(match text.as_bytes().first() {
            Some(b'n') => Scalar::Null,
            Some(b'"') => Scalar::Str(serde_json::from_str(text).map_err(|e| e.to_string())?),
            Some(b'{' | b'[') => Scalar::Nested(text.to_string()),
            _ => Scalar::Bare(text.to_string()),
        })
    }
}

/// The columns of one record; `flatten` levels of objects become `parent__child` columns.
pub(crate) fn object(text: &str, flatten: usize) -> Result<BTreeMap<String, Scalar>, String> {
    let map: BTreeMap<String, &RawValue> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    document::columns(map.into_iter().collect(), flatten)
}

/// One record of a JSON file: its text, or why it is not one.
enum Record<'a> {
    Text(&'a str),
    /// Bytes that cannot be a record (not UTF-8, an array left open): shown lossily, with
    /// the reason, for the quarantine.
    Bad {
        raw: String,
        reason: String,
    },
}

/// Splits the input into records, calling `f(record_no, record)`; `f` returns false to stop.
/// JSON lines: a record per line. An array: a record per element, found by scanning brackets
/// and strings, so a malformed element is one bad record and the elements after it are read
/// (`[{"id":1},{"id":2,},{"id":3}]` yields 1, a reject, and 3). Memory holds one record.
fn for_each_record(
    r: Box<dyn Read + Send>,
    id: &str,
    bound: &RecordBound,
    f: &mut dyn FnMut(u64, Record) -> Result<bool, SourceError>,
) -> Result<(), SourceError> {
    let io = |source: std::io::Error| SourceError::Io {
        file: id.to_string(),
        source,
    };
    let mut r = BufReader::with_capacity(1 << 20, bound.wrap(r));
    let first = loop {
        let buf = r.fill_buf().map_err(io)?;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                let b = buf[i];
                r.consume(i);
                break Some(b);
            }
            None if buf.is_empty() => break None,
            None => {
                let n = buf.len();
                r.consume(n);
                bound.ended(0);
            }
        }
    };
    match first {
        None => Ok(()),
        Some(b'[') => {
            r.consume(1);
            for_each_element(r, id, bound, f)
        }
        Some(_) => {
            let mut line = Vec::new();
            let mut n = 0;
            loop {
                line.clear();
                bound.ended(r.buffer().len());
                match r.read_until(b'\n', &mut line) {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    // A line past the limit (a file without line breaks, a bomb) is one
                    // bad record; reading goes on at the next line.
                    Err(e) if too_long(&e) => {
                        n += 1;
                        let reason = bound.reason(": skipped to the next line");
                        let raw = preview(&line);
                        line.clear();
                        skip_line(&mut r, bound).map_err(io)?;
                        if !f(n, Record::Bad { raw, reason })? {
                            return Ok(());
                        }
                        continue;
                    }
                    Err(e) => return Err(io(e)),
                }
                n += 1;
                if bound.too_long(line.len()) {
                    let reason = format!(
                        "a record of {} bytes, longer than {} bytes (max_record_bytes)",
                        line.len(),
                        bound.limit()
                    );
                    if !f(
                        n,
                        Record::Bad {
                            raw: preview(&line),
                            reason,
                        },
                    )? {
                        return Ok(());
                    }
                    continue;
                }
                while matches!(line.last(), Some(b'\n' | b'\r')) {
                    line.pop();
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if !f(n, record_of(&line))? {
                    return Ok(());
                }
            }
        }
    }
}

/// A record's bytes as text, or a bad record when they are not UTF-8 (the same rule as every
/// other source: such bytes are quarantined, never landed with replacement characters).
fn record_of(bytes: &[u8]) -> Record<'_> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Record::Text(text),
        Err(e) => Record::Bad {
            raw: String::from_utf8_lossy(bytes).into_owned(),
            reason: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        },
    }
}

/// Consumes the rest of a line (past the record limit, so not kept).
fn skip_line(r: &mut BufReader<Box<dyn Read + Send>>, bound: &RecordBound) -> std::io::Result<()> {
    loop {
        bound.ended(r.buffer().len());
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    }
}

/// The first KiB of a record too long to keep, for the quarantine.
fn preview(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(1024)];
    format!("{}…", String::from_utf8_lossy(cut))
}

fn too_long(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<super::bound::TooLong>())
}

/// The elements of an array whose `[` is consumed: each runs to the `,` or `]` at its own
/// nesting level, outside strings. An element past the record limit is one bad record and
/// ends the reading (the nesting after it cannot be told without holding it).
fn for_each_element(
    mut r: BufReader<Box<dyn Read + Send>>,
    id: &str,
    bound: &RecordBound,
    f: &mut dyn FnMut(u64, Record) -> Result<bool, SourceError>,
) -> Result<(), SourceError> {
    let io = |source: std::io::Error| SourceError::Io {
        file: id.to_string(),
        source,
    };
    let mut element: Vec<u8> = Vec::new();
    let (mut depth, mut in_string, mut escaped) = (0i64, false, false);
    let mut n = 0u64;
    let mut closed = false;
    let mut after: Vec<u8> = Vec::new();
    loop {
        let buf = match r.fill_buf() {
            Ok(buf) => buf,
            Err(e) if too_long(&e) => {
                let reason = bound.reason(": it and the rest of the array are not read");
                f(
                    n + 1,
                    Record::Bad {
                        raw: preview(&element),
                        reason,
                    },
                )?;
                return Ok(());
            }
            Err(e) => return Err(io(e)),
        };
        if buf.is_empty() {
            break;
        }
        let len = buf.len();
        let mut consumed = 0;
        for &b in buf {
            consumed += 1;
            if closed {
                if !b.is_ascii_whitespace() && after.len() < 1024 {
                    after.push(b);
                }
                continue;
            }
            if in_string {
                element.push(b);
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b',' | b']' if depth <= 0 => {
                    let end = b == b']';
                    if !element.iter().all(u8::is_ascii_whitespace) || !end {
                        n += 1;
                        let record = match element.iter().all(u8::is_ascii_whitespace) {
                            true => Record::Bad {
                                raw: String::new(),
                                reason: "empty array element".into(),
                            },
                            false if bound.too_long(element.len()) => Record::Bad {
                                raw: preview(&element),
                                reason: format!(
                                    "a record of {} bytes, longer than {} bytes (max_record_bytes)",
                                    element.len(),
                                    bound.limit()
                                ),
                            },
                            false => record_of(trim(&element)),
                        };
                        if !f(n, record)? {
                            return Ok(());
                        }
                    }
                    element.clear();
                    bound.ended(len - consumed);
                    depth = 0;
                    if end {
                        closed = true;
                    }
                }
                b'"' => {
                    in_string = true;
                    element.push(b);
                }
                b'{' | b'[' => {
                    depth += 1;
                    element.push(b);
                }
                b'}' | b']' => {
                    depth -= 1;
                    element.push(b);
                }
                _ => element.push(b),
            }
        }
        debug_assert_eq!(consumed, len);
        r.consume(len);
    }
    if !closed {
        // A whole last element is read; a cut one is quarantined with what there is.
        let whole = depth == 0 && !in_string;
        let rest = trim(&element);
        if whole && !rest.is_empty() {
            n += 1;
            if !f(n, record_of(rest))? {
                return Ok(());
            }
        }
        n += 1;
        f(
            n,
            Record::Bad {
                raw: match whole {
                    true => String::new(),
                    false => String::from_utf8_lossy(rest).into_owned(),
                },
                reason: "the array ends without `]`: the file is cut short or malformed here"
                    .into(),
            },
        )?;
    } else if !after.is_empty() {
        n += 1;
        f(
            n,
            Record::Bad {
                raw: String::from_utf8_lossy(&after).into_owned(),
                reason: "text after the end of the array".into(),
            },
        )?;
    }
    Ok(())
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

pub fn sample(
    r: Box<dyn Read + Send>,
    id: &str,
    flatten: usize,
    max_rows: usize,
    bound: &RecordBound,
    names: &mut Vec<String>,
    infer: &mut Vec<Inference>,
) -> Result<(), SourceError> {
    let mut rows = 0;
    let result = for_each_record(r, id, bound, &mut |_, record| {
        let Record::Text(text) = record else {
            return Ok(true);
        };
        let Ok(obj) = object(text, flatten) else {
            return Ok(true);
        };
        for (k, v) in obj {
            let i = match names.iter().position(|n| *n == k) {
                Some(i) => i,
                None => {
                    names.push(k);
                    infer.push(Inference::default());
                    names.len() - 1
                }
            };
            v.observe(&mut infer[i]);
        }
        rows += 1;
        Ok(rows < max_rows)
    });
    result
}

pub fn read(
    r: Box<dyn Read + Send>,
    id: &str,
    flatten: usize,
    schema: &SchemaRef,
    keys: &[String],
    bound: &RecordBound,
    emit: &mut dyn FnMut(ReadEvent) -> Result<(), SourceError>,
) -> Result<ReadStats, SourceError> {
    let mut batcher = RowBatcher::for_file(schema, id, keys)?;
    let mut stats = ReadStats::default();
    // Keys the table lacks, and what their values say.
    let mut late: Vec<(String, Inference)> = Vec::new();
    let result = for_each_record(r, id, bound, &mut |n, record| {
        let text = match record {
            Record::Text(t) => t,
            Record::Bad { raw, reason } => {
                stats.rejects += 1;
                emit(ReadEvent::Reject(Reject {
                    file: id.to_string(),
                    line: n,
                    column: None,
                    raw,
                    reason,
                }))?;
                return Ok(true);
            }
        };
        let reject = |column: Option<String>, reason: String| {
            ReadEvent::Reject(Reject {
                file: id.to_string(),
                line: n,
                column,
                raw: text.to_string(),
                reason,
            })
        };
        let obj = match object(text, flatten) {
            Ok(o) => o,
            Err(reason) => {
                stats.rejects += 1;
                emit(reject(None, reason))?;
                return Ok(true);
            }
        };
        let texts = match document::texts(schema, &obj) {
            Ok(t) => t,
            Err(k) => {
                for (key, value) in obj.iter().filter(|(key, _)| schema.index_of(key).is_err()) {
                    let i = match late.iter().position(|(n, _)| n == key) {
                        Some(i) => i,
                        None => {
                            late.push((key.clone(), Inference::default()));
                            late.len() - 1
                        }
                    };
                    value.observe(&mut late[i].1);
                }
                stats.rejects += 1;
                let reason = format!("field `{k}` is not a column of the table");
                emit(reject(Some(k), reason))?;
                return Ok(true);
            }
        };
        if let Err(e) = batcher.push_row(&texts) {
            stats.rejects += 1;
            let col = schema.field(e.column).name().clone();
            emit(reject(
                Some(col.clone()),
                format!("column {col}: {}", e.reason),
            ))?;
            return Ok(true);
        }
        stats.rows += 1;
        if batcher.is_full() {
            emit(ReadEvent::Rows(batcher.take().expect("full")))?;
        }
        Ok(true)
    });
    if let Some(b) = batcher.take() {
        emit(ReadEvent::Rows(b))?;
    }
    stats.late_columns = late.iter().map(|(n, i)| document::field(n, i)).collect();
    result.map(|_| stats)
}
