//! Fitting change rows to Redshift's widths: the longest value of every text column (to size
//! its VARCHAR) and the rows holding a value over Redshift's limit, which load cut to fit
//! and flagged `_sluice_truncated` (the lake keeps them whole).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};

use sluice_core::change::SEQ;

use super::dialect::Bound;

/// What a load's changes need of the table's columns.
#[derive(Debug, Default, Clone)]
pub struct Fit {
    /// Longest value in bytes per column name (text, JSON and bytes columns only), cut values
    /// counted at their limit.
    pub max_bytes: std::collections::BTreeMap<String, usize>,
    /// `_sluice_seq` of every row with a value cut (or, for JSON, nulled).
    pub truncated: Vec<i64>,
}

/// Calls `f(row, byte length)` for every non-null value of a text or bytes array; false (and
/// no calls) for other types.
fn each_length(array: &dyn Array, mut f: impl FnMut(usize, usize)) -> bool {
    let mut visit = |lens: &mut dyn Iterator<Item = Option<usize>>| {
        for (row, len) in lens.enumerate() {
            if let Some(len) = len {
                f(row, len);
            }
        }
    };
    match array.data_type() {
        DataType::Utf8 => visit(&mut array.as_string::<i32>().iter().map(|v| v.map(str::len))),
        DataType::LargeUtf8 => visit(&mut array.as_string::<i64>().iter().map(|v| v.map(str::len))),
        DataType::Utf8View => visit(&mut array.as_string_view().iter().map(|v| v.map(str::len))),
        DataType::Binary => visit(&mut array.as_binary::<i32>().iter().map(|v| v.map(<[u8]>::len))),
        DataType::LargeBinary => {
            visit(&mut array.as_binary::<i64>().iter().map(|v| v.map(<[u8]>::len)))
        }
        DataType::BinaryView => {
            visit(&mut array.as_binary_view().iter().map(|v| v.map(<[u8]>::len)))
        }
        _ => return false,
    }
    true
}

/// The longest prefix of `s` of at most `limit` bytes that ends on a character boundary.
fn cut(s: &str, limit: usize) -> &str {
    let mut end = limit.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `array` with every value over `limit` bytes cut (`null_instead`: made NULL), in its type.
fn cut_array(array: &ArrayRef, limit: usize, null_instead: bool) -> Result<ArrayRef, String> {
    let err = |e: arrow::error::ArrowError| e.to_string();
    let cut_to = |data_type: &DataType, fitted: ArrayRef| -> Result<ArrayRef, String> {
        if fitted.data_type() == data_type {
            Ok(fitted)
        } else {
            cast(&fitted, data_type).map_err(err)
        }
    };
    match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let text = cast(array, &DataType::Utf8).map_err(err)?;
            let fitted: StringArray = text
                .as_string::<i32>()
                .iter()
                .map(|v| match v {
                    Some(s) if s.len() > limit && null_instead => None,
                    Some(s) => Some(cut(s, limit)),
                    None => None,
                })
                .collect();
            cut_to(array.data_type(), Arc::new(fitted))
        }
        _ => {
            let bytes = cast(array, &DataType::Binary).map_err(err)?;
            let fitted: BinaryArray = bytes
                .as_binary::<i32>()
                .iter()
                .map(|v| v.map(|b| &b[..b.len().min(limit)]))
                .collect();
            cut_to(array.data_type(), Arc::new(fitted))
        }
    }
}

impl Fit {
    /// Measures a batch of change rows and returns it with every oversize value cut to fit
    /// (JSON documents nulled), recording the rows cut; `bounds` are per column of `schema`.
    pub fn fit(&mut self, batch: &RecordBatch, bounds: &[Bound]) -> Result<RecordBatch, String> {
        let schema: SchemaRef = batch.schema();
        let seq_index = schema
            .index_of(SEQ)
            .map_err(|_| format!("the change rows have no {SEQ} column"))?;
        let seqs = batch
            .column(seq_index)
            .as_primitive_opt::<arrow::datatypes::Int64Type>()
            .ok_or_else(|| format!("{SEQ} is not a BIGINT column"))?
            .clone();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let mut changed = false;
        for (i, bound) in bounds.iter().enumerate() {
            let Some(limit) = bound.limit() else { continue };
            let name = schema.field(i).name();
            let mut longest = 0usize;
            let mut over = false;
            let truncated = &mut self.truncated;
            let measured = each_length(columns[i].as_ref(), |row, len| {
                if len > limit {
                    over = true;
                    truncated.push(seqs.value(row));
                }
                longest = longest.max(len.min(limit));
            });
            if !measured {
                continue;
            }
            let max = self.max_bytes.entry(name.clone()).or_default();
            *max = (*max).max(longest);
            if over {
                columns[i] = cut_array(&columns[i], limit, *bound == Bound::Json)?;
                changed = true;
            }
        }
        if !changed {
            return Ok(batch.clone());
        }
        self.truncated.sort_unstable();
        self.truncated.dedup();
        RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn measures_and_cuts_on_a_character_boundary() {
        let long = format!("{}é", "a".repeat(65_534)); // 65,536 bytes; é straddles the limit
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("blob", DataType::Binary, true),
            Field::new(SEQ, DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("short"),
                    Some(long.as_str()),
                    None,
                ])),
                Arc::new(BinaryArray::from(vec![
                    Some(&b"\x00\xff"[..]),
                    None,
                    Some(&b"abc"[..]),
                ])),
                Arc::new(Int64Array::from(vec![7, 8, 9])),
            ],
        )
        .unwrap();
        let mut fit = Fit::default();
        let out = fit
            .fit(&batch, &[Bound::Text, Bound::Bytes, Bound::Fixed])
            .unwrap();
        assert_eq!(fit.truncated, vec![8]);
        assert_eq!(fit.max_bytes["name"], 65_535);
        assert_eq!(fit.max_bytes["blob"], 3);
        let names = out.column(0).as_string::<i32>();
        assert_eq!(names.value(0), "short");
        assert_eq!(names.value(1), "a".repeat(65_534));
        assert!(names.is_null(2));
        // JSON too long to cut and still parse loads as NULL.
        let mut fit = Fit::default();
        let out = fit
            .fit(&batch, &[Bound::Json, Bound::Bytes, Bound::Fixed])
            .unwrap();
        assert!(out.column(0).is_null(1));
        assert_eq!(fit.truncated, vec![8]);
    }
}
