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
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde_json::value::RawValue;

use sluice_core::reject::Reject;

use super::rows::RowBatcher;
use super::{FileEvent, ReadStats};
use crate::values::Inference;
use crate::SourceError;

/// One JSON value as the text a column receives.
enum Scalar {
    Null,
    /// A JSON string, unescaped.
    Str(String),
    /// A number or boolean, as written.
    Bare(String),
    /// An object or array, as JSON text.
    Nested(String),
}

fn scalar(raw: &RawValue) -> Result<Scalar, String> {
    let text = raw.get().trim();
    Ok(match text.as_bytes().first() {
        Some(b'n') => Scalar::Null,
        Some(b'"') => Scalar::Str(serde_json::from_str(text).map_err(|e| e.to_string())?),
        Some(b'{' | b'[') => Scalar::Nested(text.to_string()),
        _ => Scalar::Bare(text.to_string()),
    })
}

/// The fields of one record; `flatten` levels of objects become `parent__child` fields.
fn object(text: &str, flatten: usize) -> Result<BTreeMap<String, Scalar>, String> {
    let map: BTreeMap<String, &RawValue> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    if flatten == 0 {
        return map.into_iter().map(|(k, v)| Ok((k, scalar(v)?))).collect();
    }
    let mut out = BTreeMap::new();
    put_flattened(&mut out, None, map, flatten)?;
    Ok(out)
}

/// Flattened fields of `map` under `parent`. NULLs are left out: a missing field is NULL too,
/// and a NULL where other records hold an object would otherwise make a column of its own.
fn put_flattened(
    out: &mut BTreeMap<String, Scalar>,
    parent: Option<&str>,
    map: BTreeMap<String, &RawValue>,
    depth: usize,
) -> Result<(), String> {
    for (k, v) in map {
        let name = match parent {
            Some(p) => format!("{p}__{k}"),
            None => k,
        };
        if depth > 0 && v.get().trim_start().starts_with('{') {
            let inner: BTreeMap<String, &RawValue> = serde_json::from_str(v.get())
                .map_err(|e| format!("field `{name}`: not a JSON object: {e}"))?;
            put_flattened(out, Some(&name), inner, depth - 1)?;
            continue;
        }
        match scalar(v)? {
            Scalar::Null => {}
            value => {
                out.insert(name, value);
            }
        }
    }
    Ok(())
}

/// Splits the input into records (one object's text each), calling `f(record_no, text)`.
/// A malformed array element cannot be skipped past: it ends the array with an error.
fn for_each_record(
    r: Box<dyn Read + Send>,
    id: &str,
    f: &mut dyn FnMut(u64, &str) -> Result<bool, SourceError>,
) -> Result<(), SourceError> {
    let io = |source: std::io::Error| SourceError::Io {
        file: id.to_string(),
        source,
    };
    let mut r = BufReader::with_capacity(1 << 20, r);
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
            }
        }
    };
    match first {
        None => Ok(()),
        Some(b'[') => {
            struct Elements<'a> {
                f: &'a mut dyn FnMut(u64, &str) -> Result<bool, SourceError>,
                err: Option<SourceError>,
            }
            impl<'de> Visitor<'de> for &mut Elements<'_> {
                type Value = ();
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an array of objects")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                    let mut n = 0;
                    while let Some(el) = seq.next_element::<Box<RawValue>>()? {
                        n += 1;
                        match (self.f)(n, el.get()) {
                            Ok(true) => {}
                            Ok(false) => return Ok(()),
                            Err(e) => {
                                self.err = Some(e);
                                return Ok(());
                            }
                        }
                    }
                    Ok(())
                }
            }
            impl<'de> DeserializeSeed<'de> for &mut Elements<'_> {
                type Value = ();
                fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                    d.deserialize_seq(self)
                }
            }
            let mut el = Elements { f, err: None };
            let mut de = serde_json::Deserializer::from_reader(r);
            let parsed = (&mut el).deserialize(&mut de);
            if let Some(e) = el.err {
                return Err(e);
            }
            parsed.map_err(|e| SourceError::File {
                file: id.into(),
                message: format!("malformed JSON array: {e}"),
            })
        }
        Some(_) => {
            let mut line = Vec::new();
            let mut n = 0;
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line).map_err(io)? == 0 {
                    return Ok(());
                }
                n += 1;
                let text = String::from_utf8_lossy(&line);
                if text.trim().is_empty() {
                    continue;
                }
                if !f(n, text.trim_end_matches(['\n', '\r']))? {
                    return Ok(());
                }
            }
        }
    }
}

pub fn sample(
    r: Box<dyn Read + Send>,
    id: &str,
    flatten: usize,
    max_rows: usize,
    names: &mut Vec<String>,
    infer: &mut Vec<Inference>,
) -> Result<(), SourceError> {
    let mut rows = 0;
    let result = for_each_record(r, id, &mut |_, text| {
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
            match v {
                Scalar::Null => infer[i].observe_null(),
                Scalar::Str(s) => infer[i].observe_json_string(&s),
                Scalar::Bare(s) => infer[i].observe_json_scalar(&s),
                Scalar::Nested(_) => infer[i].observe_nested(),
            }
        }
        rows += 1;
        Ok(rows < max_rows)
    });
    // A malformed tail does not spoil the sample; reading reports it.
    match result {
        Err(SourceError::File { .. }) if rows > 0 => Ok(()),
        other => other,
    }
}

pub fn read(
    r: Box<dyn Read + Send>,
    id: &str,
    flatten: usize,
    schema: &SchemaRef,
    emit: &mut dyn FnMut(FileEvent) -> Result<(), SourceError>,
) -> Result<ReadStats, SourceError> {
    let mut batcher = RowBatcher::for_file(schema, id)?;
    let mut stats = ReadStats::default();
    let ncols = schema.fields().len();
    let result = for_each_record(r, id, &mut |n, text| {
        let reject = |column: Option<String>, reason: String| {
            FileEvent::Reject(Reject {
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
        if let Some(k) = obj.keys().find(|k| schema.index_of(k).is_err()) {
            stats.rejects += 1;
            emit(reject(
                Some(k.clone()),
                format!("field `{k}` is not a column of the table"),
            ))?;
            return Ok(true);
        }
        let mut texts: Vec<Option<&str>> = vec![None; ncols];
        for (k, v) in &obj {
            let i = schema.index_of(k).expect("checked above");
            texts[i] = match v {
                Scalar::Null => None,
                Scalar::Str(s) | Scalar::Bare(s) | Scalar::Nested(s) => Some(s.as_str()),
            };
        }
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
            emit(FileEvent::Rows(batcher.take().expect("full")))?;
        }
        Ok(true)
    });
    if let Some(b) = batcher.take() {
        emit(FileEvent::Rows(b))?;
    }
    match result {
        // An array broken mid-way: what came before landed; the rest is one reject.
        Err(SourceError::File { message, .. }) => {
            stats.rejects += 1;
            emit(FileEvent::Reject(Reject {
                file: id.to_string(),
                line: stats.rows + stats.rejects,
                column: None,
                raw: String::new(),
                reason: format!("{message}; the rest of the array could not be read"),
            }))?;
            Ok(stats)
        }
        other => other.map(|_| stats),
    }
}
