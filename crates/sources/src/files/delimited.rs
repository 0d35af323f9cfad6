//! Delimited text (CSV, TSV, TPC-H `.tbl` with its trailing `|`, any one-byte delimiter).
//!
//! Each record is checked for field count, UTF-8 and per-column parsing; a record that fails
//! any check becomes a reject with its line number and raw text, and the rest go on.

use std::io::Read;

use arrow::datatypes::SchemaRef;
use csv::ByteRecord;

use sluice_core::reject::Reject;

use super::bound::RecordBound;
use super::rows::RowBatcher;
use super::{ReadEvent, ReadStats, TextOptions};
use crate::values::Inference;
use crate::SourceError;

fn reader(r: Box<dyn Read + Send>, opts: &TextOptions) -> csv::Reader<Box<dyn Read + Send>> {
    csv::ReaderBuilder::new()
        .delimiter(opts.delimiter)
        .quote(opts.quote)
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(r)
}

/// Field count without the empty field a trailing delimiter leaves (`a|b|c|`).
fn field_count(rec: &ByteRecord, expected: usize) -> usize {
    let n = rec.len();
    if n == expected + 1 && rec.get(n - 1).is_some_and(|f| f.is_empty()) {
        n - 1
    } else {
        n
    }
}

fn raw_text(rec: &ByteRecord, delimiter: u8) -> String {
    let joined = rec.iter().collect::<Vec<_>>().join(&[delimiter][..]);
    String::from_utf8_lossy(&joined).into_owned()
}

fn next(
    rdr: &mut csv::Reader<Box<dyn Read + Send>>,
    rec: &mut ByteRecord,
    id: &str,
) -> Result<bool, SourceError> {
    rdr.read_byte_record(rec).map_err(|e| match e.into_kind() {
        csv::ErrorKind::Io(source) => SourceError::Io {
            file: id.to_string(),
            source,
        },
        other => SourceError::File {
            file: id.to_string(),
            message: format!("{other:?}"),
        },
    })
}

/// Header names, without a trailing empty one.
fn header_names(rec: &ByteRecord) -> Vec<String> {
    let mut names: Vec<String> = rec
        .iter()
        .map(|f| String::from_utf8_lossy(f).trim().to_string())
        .collect();
    if names.last().is_some_and(|n| n.is_empty()) {
        names.pop();
    }
    names
}

pub fn sample(
    r: Box<dyn Read + Send>,
    id: &str,
    opts: &TextOptions,
    max_rows: usize,
    bound: &RecordBound,
    names: &mut Vec<String>,
    infer: &mut Vec<Inference>,
) -> Result<(), SourceError> {
    let mut rdr = reader(bound.wrap(r), opts);
    let mut rec = ByteRecord::new();
    // Column position in `names` of each field of this file.
    let mut mapping: Option<Vec<usize>> = None;
    let mut rows = 0;
    // A record past the limit ends the sample (reading quarantines it).
    let more = |rdr: &mut csv::Reader<Box<dyn Read + Send>>, rec: &mut ByteRecord| match next(
        rdr, rec, id,
    ) {
        Ok(more) => {
            bound.ended_at(rdr.position().byte());
            Ok(more)
        }
        Err(e) if RecordBound::refused(&e).is_some() => Ok(false),
        Err(e) => Err(e),
    };
    while rows < max_rows && more(&mut rdr, &mut rec)? {
        let map = match &mapping {
            Some(m) => m,
            None => {
                let here = if opts.header {
                    header_names(&rec)
                } else {
                    let n = field_count(&rec, rec.len().saturating_sub(1));
                    (1..=n).map(|i| format!("c{i}")).collect()
                };
                let m: Vec<usize> = here
                    .iter()
                    .map(|n| match names.iter().position(|x| x == n) {
                        Some(i) => i,
                        None => {
                            names.push(n.clone());
                            infer.push(Inference::default());
                            names.len() - 1
                        }
                    })
                    .collect();
                mapping = Some(m);
                if opts.header {
                    continue;
                }
                mapping.as_ref().expect("just set")
            }
        };
        if field_count(&rec, map.len()) != map.len() {
            continue; // a malformed row says nothing about types; reading will quarantine it
        }
        for (field, &col) in rec.iter().zip(map) {
            match std::str::from_utf8(field) {
                Ok(s) if s == opts.null_value => infer[col].observe_null(),
                Ok(s) => infer[col].observe_text(s),
                Err(_) => infer[col].observe_text("\u{fffd}"),
            }
        }
        rows += 1;
    }
    Ok(())
}

pub fn read(
    r: Box<dyn Read + Send>,
    id: &str,
    opts: &TextOptions,
    schema: &SchemaRef,
    keys: &[String],
    bound: &RecordBound,
    emit: &mut dyn FnMut(ReadEvent) -> Result<(), SourceError>,
) -> Result<ReadStats, SourceError> {
    let mut rdr = reader(bound.wrap(r), opts);
    let mut rec = ByteRecord::new();
    let ncols = schema.fields().len();
    // For each schema column, which field of the record holds it (None: absent from this file).
    // Without a header the fields are the columns in order; variant columns (`price__text`)
    // are never fields, they take the values their column cannot.
    let mut mapping: Vec<Option<usize>> = Vec::with_capacity(ncols);
    let mut expected = 0;
    for i in 0..ncols {
        if sluice_core::schema::variant_parent(schema, i).is_some() {
            mapping.push(None);
        } else {
            mapping.push(Some(expected));
            expected += 1;
        }
    }
    let mut batcher = RowBatcher::for_file(schema, id, keys)?;
    let mut stats = ReadStats::default();
    let mut first = true;
    let mut line = 0;
    loop {
        match next(&mut rdr, &mut rec, id) {
            Ok(true) => bound.ended_at(rdr.position().byte()),
            Ok(false) => break,
            // An unterminated quote takes the rest of the file into one record: it is
            // quarantined, the rows before it land, and nothing after it can be told apart.
            Err(e) if RecordBound::refused(&e).is_some() => {
                stats.rejects += 1;
                emit(ReadEvent::Reject(Reject {
                    file: id.to_string(),
                    line: line + 1,
                    column: None,
                    raw: String::new(),
                    reason: bound.reason(
                        " (an unterminated quote?): it and the rest of the file are not read",
                    ),
                }))?;
                break;
            }
            Err(e) => return Err(e),
        }
        line = rec.position().map(|p| p.line()).unwrap_or(0);
        if bound.too_long(rec.as_slice().len()) {
            stats.rejects += 1;
            let raw: String = raw_text(&rec, opts.delimiter).chars().take(1024).collect();
            emit(ReadEvent::Reject(Reject {
                file: id.to_string(),
                line,
                column: None,
                raw,
                reason: format!(
                    "a record of {} bytes, longer than {} bytes (max_record_bytes)",
                    rec.as_slice().len(),
                    bound.limit()
                ),
            }))?;
            continue;
        }
        if first && opts.header {
            first = false;
            let names = header_names(&rec);
            let unknown: Vec<&String> = names
                .iter()
                .filter(|n| schema.index_of(n).is_err())
                .collect();
            if !unknown.is_empty() {
                return Err(SourceError::File {
                    file: id.into(),
                    message: format!(
                        "header has columns the table does not: {} (table columns: {})",
                        unknown
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            mapping = schema
                .fields()
                .iter()
                .map(|f| names.iter().position(|n| n == f.name()))
                .collect();
            expected = names.len();
            continue;
        }
        first = false;
        let reject = |column: Option<String>, reason: String| {
            ReadEvent::Reject(Reject {
                file: id.to_string(),
                line,
                column,
                raw: raw_text(&rec, opts.delimiter),
                reason,
            })
        };
        let n = field_count(&rec, expected);
        if n != expected {
            stats.rejects += 1;
            emit(reject(
                None,
                format!("expected {expected} fields, found {n}"),
            ))?;
            continue;
        }
        let mut fields: Vec<Option<&str>> = Vec::with_capacity(ncols);
        let mut bad = None;
        for (i, m) in mapping.iter().enumerate() {
            let Some(j) = m else {
                fields.push(None);
                continue;
            };
            match std::str::from_utf8(&rec[*j]) {
                Ok(s) if s == opts.null_value => fields.push(None),
                Ok(s) => fields.push(Some(s)),
                Err(e) => {
                    bad = Some((i, format!("invalid UTF-8 at byte {}", e.valid_up_to())));
                    break;
                }
            }
        }
        let result = match bad {
            Some((column, reason)) => Err(super::rows::RowError { column, reason }),
            None => batcher.push_row(&fields),
        };
        if let Err(e) = result {
            stats.rejects += 1;
            let col = schema.field(e.column).name().clone();
            emit(reject(
                Some(col.clone()),
                format!("column {col}: {}", e.reason),
            ))?;
            continue;
        }
        stats.rows += 1;
        if batcher.is_full() {
            emit(ReadEvent::Rows(batcher.take().expect("full")))?;
        }
    }
    if let Some(b) = batcher.take() {
        emit(ReadEvent::Rows(b))?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    fn opts(header: bool) -> TextOptions {
        TextOptions {
            delimiter: b'|',
            quote: b'"',
            header,
            null_value: String::new(),
        }
    }

    fn run(text: &'static str, header: bool, schema: SchemaRef) -> (Vec<RecordBatch>, Vec<Reject>) {
        let mut batches = Vec::new();
        let mut rejects = Vec::new();
        read(
            Box::new(text.as_bytes()),
            "t",
            &opts(header),
            &schema,
            &[],
            &RecordBound::new(1 << 20),
            &mut |ev| {
                match ev {
                    ReadEvent::Rows(b) => batches.push(b),
                    ReadEvent::Reject(r) => rejects.push(r),
                }
                Ok(())
            },
        )
        .unwrap();
        (batches, rejects)
    }

    use arrow::array::RecordBatch;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]))
    }

    #[test]
    fn trailing_delimiter_is_not_a_field_and_short_rows_are_rejected() {
        let (b, r) = run("1|x|\n2|y\n3\n4|z|extra|\n", false, schema());
        let a = b[0].column(0).as_primitive::<Int64Type>();
        assert_eq!(a.values().to_vec(), vec![1, 2]);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!((r[0].line, r[1].line), (3, 4));
        assert_eq!(r[1].raw, "4|z|extra|");
    }

    #[test]
    fn header_maps_columns_by_name_in_any_order() {
        let (b, r) = run("b|a\nx|1\n|2\n", true, schema());
        assert!(r.is_empty());
        assert_eq!(
            b[0].column(0).as_primitive::<Int64Type>().values().to_vec(),
            vec![1, 2]
        );
        assert_eq!(b[0].column(1).as_string::<i32>().value(0), "x");
        assert!(b[0].column(1).is_null(1));
    }

    #[test]
    fn off_type_values_go_to_the_variant_column() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
            Field::new("a__text", DataType::Utf8, true),
        ]));
        let (b, r) = run("1|x\nn/a|y\n|z\n3|w\n", false, schema);
        assert!(r.is_empty(), "{r:?}");
        let a = b[0].column(0).as_primitive::<Int64Type>();
        assert_eq!(
            (0..4)
                .map(|i| a.is_valid(i).then(|| a.value(i)))
                .collect::<Vec<_>>(),
            vec![Some(1), None, None, Some(3)]
        );
        let v = b[0].column(2).as_string::<i32>();
        assert_eq!(
            (0..4)
                .map(|i| v.is_valid(i).then(|| v.value(i)))
                .collect::<Vec<_>>(),
            vec![None, Some("n/a"), None, None]
        );
        assert_eq!(b[0].column(1).as_string::<i32>().value(1), "y");
    }

    #[test]
    fn unknown_header_column_names_the_columns() {
        let err = read(
            Box::new(&b"a|c\n1|2\n"[..]),
            "f.csv",
            &opts(true),
            &schema(),
            &[],
            &RecordBound::new(1 << 20),
            &mut |_| Ok(()),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("f.csv") && err.to_string().contains("c"),
            "{err}"
        );
    }

    /// An unterminated quote would read the rest of the file into one record: past the
    /// limit it is one reject, and the rows before it are read.
    #[test]
    fn an_unterminated_quote_is_one_reject_past_the_limit() {
        let mut text = String::from("a|b\n1|x\n2|\"open\n");
        for i in 0..200 {
            text += &format!("{i}|more text that is now inside the quote\n");
        }
        let (mut rows, mut rejects) = (0, Vec::new());
        let stats = read(
            Box::new(std::io::Cursor::new(text.into_bytes())),
            "q.csv",
            &opts(true),
            &schema(),
            &[],
            &RecordBound::new(1000),
            &mut |ev| {
                match ev {
                    ReadEvent::Rows(b) => rows += b.num_rows(),
                    ReadEvent::Reject(r) => rejects.push(r),
                }
                Ok(())
            },
        )
        .unwrap();
        assert_eq!((rows, stats.rows, stats.rejects), (1, 1, 1));
        assert!(
            rejects[0].reason.contains("longer than 1000 bytes"),
            "{:?}",
            rejects[0]
        );
    }
}
