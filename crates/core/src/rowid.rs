//! Row identity: a 128-bit hash of a row's source values, the same whoever read the row.
//!
//! A table without a key is matched row by row on it (`_sluice_row_id`, DESIGN.md "Keys"),
//! and an incremental read tells a row it already landed from a new one by it. So it must not
//! depend on how the row travelled:
//!
//! - each value is encoded by what it is, not by its Arrow layout (`Utf8`, `LargeUtf8` and
//!   `Utf8View` alike; every integer width alike; a float as its double);
//! - columns are taken by name, in name order, and a NULL contributes nothing, so a column
//!   added to the table later (NULL in the rows before it) leaves older rows' ids as they were;
//! - the hash is BLAKE3, whose output is fixed by its specification.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Int8Type, Time64MicrosecondType, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};

/// One row's identity.
pub type RowId = u128;

/// The identity of every row of `batch` over its columns named `columns` (the source
/// columns: never the `_sluice_*` change columns).
pub fn row_ids(batch: &RecordBatch, columns: &[&str]) -> Vec<RowId> {
    // Lists, structs and maps as JSON text, whose strings are quoted (their display text
    // would give ["a, b"] and ["a", "b"] one identity); encoded once per batch.
    let mut named: Vec<(&str, &ArrayRef, Option<StringArray>)> = columns
        .iter()
        .filter_map(|c| batch.column_by_name(c).map(|a| (*c, a)))
        .map(|(c, a)| {
            let json = crate::types::is_nested(a.data_type())
                .then(|| crate::nested::to_json(a).ok())
                .flatten();
            (c, a, json)
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    let mut buf = Vec::with_capacity(256);
    (0..batch.num_rows())
        .map(|row| {
            buf.clear();
            for (name, col, json) in &named {
                if col.is_null(row) {
                    continue;
                }
                buf.extend_from_slice(&(name.len() as u32).to_le_bytes());
                buf.extend_from_slice(name.as_bytes());
                match json {
                    Some(json) => bytes(&mut buf, 12, json.value(row).as_bytes()),
                    None => encode(col, row, &mut buf),
                }
            }
            let h = blake3::hash(&buf);
            u128::from_le_bytes(h.as_bytes()[..16].try_into().expect("16 bytes"))
        })
        .collect()
}

/// A row id as the warehouses store it: 32 lowercase hex digits.
pub fn row_id_text(id: RowId) -> String {
    format!("{id:032x}")
}

fn int(buf: &mut Vec<u8>, v: i128) {
    buf.push(2);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn bytes(buf: &mut Vec<u8>, tag: u8, b: &[u8]) {
    buf.push(tag);
    buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
    buf.extend_from_slice(b);
}

fn float(buf: &mut Vec<u8>, v: f64) {
    buf.push(3);
    // One NaN, and 0.0 for -0.0: values SQL calls equal encode alike.
    let v = if v.is_nan() {
        f64::NAN
    } else if v == 0.0 {
        0.0
    } else {
        v
    };
    buf.extend_from_slice(&v.to_bits().to_le_bytes());
}

fn micros(buf: &mut Vec<u8>, tag: u8, v: i128) {
    buf.push(tag);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Appends the encoding of the (non-NULL) value at `row` of `col`.
fn encode(col: &ArrayRef, row: usize, buf: &mut Vec<u8>) {
    match col.data_type() {
        DataType::Boolean => {
            buf.push(1);
            buf.push(col.as_boolean().value(row) as u8);
        }
        DataType::Int8 => int(buf, col.as_primitive::<Int8Type>().value(row) as i128),
        DataType::Int16 => int(buf, col.as_primitive::<Int16Type>().value(row) as i128),
        DataType::Int32 => int(buf, col.as_primitive::<Int32Type>().value(row) as i128),
        DataType::Int64 => int(buf, col.as_primitive::<Int64Type>().value(row) as i128),
        DataType::UInt8 => int(buf, col.as_primitive::<UInt8Type>().value(row) as i128),
        DataType::UInt16 => int(buf, col.as_primitive::<UInt16Type>().value(row) as i128),
        DataType::UInt32 => int(buf, col.as_primitive::<UInt32Type>().value(row) as i128),
        DataType::UInt64 => int(buf, col.as_primitive::<UInt64Type>().value(row) as i128),
        DataType::Float32 => float(buf, col.as_primitive::<Float32Type>().value(row) as f64),
        DataType::Float64 => float(buf, col.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(_, scale) => {
            buf.push(4);
            buf.push(*scale as u8);
            buf.extend_from_slice(
                &col.as_primitive::<Decimal128Type>()
                    .value(row)
                    .to_le_bytes(),
            );
        }
        DataType::Utf8 => bytes(buf, 5, col.as_string::<i32>().value(row).as_bytes()),
        DataType::LargeUtf8 => bytes(buf, 5, col.as_string::<i64>().value(row).as_bytes()),
        DataType::Utf8View => bytes(buf, 5, col.as_string_view().value(row).as_bytes()),
        DataType::Binary => bytes(buf, 6, col.as_binary::<i32>().value(row)),
        DataType::LargeBinary => bytes(buf, 6, col.as_binary::<i64>().value(row)),
        DataType::BinaryView => bytes(buf, 6, col.as_binary_view().value(row)),
        DataType::Date32 => int(buf, col.as_primitive::<Date32Type>().value(row) as i128),
        // Instants, in microseconds where the unit allows (the lake's unit).
        DataType::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => {
                    col.as_primitive::<TimestampSecondType>().value(row) as i128 * 1_000_000
                }
                TimeUnit::Millisecond => {
                    col.as_primitive::<TimestampMillisecondType>().value(row) as i128 * 1_000
                }
                TimeUnit::Microsecond => {
                    col.as_primitive::<TimestampMicrosecondType>().value(row) as i128
                }
                TimeUnit::Nanosecond => {
                    let ns = col.as_primitive::<TimestampNanosecondType>().value(row) as i128;
                    if ns % 1_000 != 0 {
                        // Not a whole microsecond: its own encoding.
                        return micros(buf, 9, ns);
                    }
                    ns / 1_000
                }
            };
            micros(buf, 8, v)
        }
        DataType::Time64(TimeUnit::Microsecond) => micros(
            buf,
            10,
            col.as_primitive::<Time64MicrosecondType>().value(row) as i128,
        ),
        _ => {
            let text = arrow::util::display::array_value_to_string(col, row).unwrap_or_default();
            bytes(buf, 11, text.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray, StringViewArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn batch(fields: Vec<Field>, cols: Vec<ArrayRef>) -> RecordBatch {
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
    }

    #[test]
    fn identity_ignores_layout_order_and_null_columns_but_not_values() {
        let a = batch(
            vec![
                Field::new("id", DataType::Int32, true),
                Field::new("name", DataType::Utf8, true),
            ],
            vec![
                Arc::new(Int32Array::from(vec![1, 1, 2])),
                Arc::new(StringArray::from(vec!["x", "x", "x"])),
            ],
        );
        let b = batch(
            vec![
                Field::new("name", DataType::Utf8View, true),
                Field::new("id", DataType::Int64, true),
                Field::new("added_later", DataType::Utf8, true),
            ],
            vec![
                Arc::new(StringViewArray::from(vec!["x", "x", "y"])),
                Arc::new(Int64Array::from(vec![1, 1, 2])),
                Arc::new(StringArray::from(vec![None, Some("z"), None])),
            ],
        );
        let ia = row_ids(&a, &["id", "name"]);
        let ib = row_ids(&b, &["name", "id", "added_later"]);
        assert_eq!(ia[0], ia[1], "identical rows share an id");
        assert_eq!(
            ia[0], ib[0],
            "layout, order and a NULL column change nothing"
        );
        assert_ne!(ia[1], ib[1], "a value in the new column is a different row");
        assert_ne!(ia[2], ib[2]);
        assert_eq!(row_id_text(ia[0]).len(), 32);
        // Fixed by the encoding and BLAKE3: warehouses hold these, so they may never change.
        assert_eq!(row_id_text(ia[0]), "a93dc60f33baf50f11c9e9b3f6d60b1b");
    }
}
