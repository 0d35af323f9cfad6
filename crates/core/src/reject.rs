//! A record that could not be read: it goes to the quarantine table with enough context for a
//! person to find and fix it (file, line, raw text, reason). Never dropped silently.

use arrow::array::Array;

/// One rejected input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Where it came from (file path or URL).
    pub file: String,
    /// 1-based line (delimited text, JSON lines) or record number (JSON arrays, Parquet row).
    pub line: u64,
    /// The column it failed on, when one is to blame.
    pub column: Option<String>,
    /// The raw text of the record (invalid UTF-8 shown with replacement characters).
    pub raw: String,
    /// Why it was rejected.
    pub reason: String,
}

/// One row of a batch as the raw text of a reject: a JSON object of its columns (each value
/// as Arrow renders it, when JSON cannot carry the type).
pub fn row_text(batch: &arrow::array::RecordBatch, row: usize) -> String {
    let one = batch.slice(row, 1);
    let mut buf = Vec::new();
    let written = {
        let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
        w.write(&one).and_then(|_| w.finish())
    };
    if written.is_ok() {
        if let Ok(text) = String::from_utf8(buf) {
            return text.trim_end().to_string();
        }
    }
    let fields: serde_json::Map<String, serde_json::Value> = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| {
            let v = match c.is_null(row) {
                true => serde_json::Value::Null,
                false => arrow::util::display::array_value_to_string(c, row)
                    .map(serde_json::Value::String)
                    .unwrap_or(serde_json::Value::Null),
            };
            (f.name().clone(), v)
        })
        .collect();
    serde_json::Value::Object(fields).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BinaryArray, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn a_row_renders_as_one_json_object() {
        let b = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("blob", DataType::Binary, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(BinaryArray::from(vec![Some(&b"\x00\xff"[..]), None])),
            ],
        )
        .unwrap();
        let first: serde_json::Value = serde_json::from_str(&row_text(&b, 0)).unwrap();
        assert_eq!(first["id"], 1);
        assert!(first.get("blob").is_some(), "{first}");
        let second: serde_json::Value = serde_json::from_str(&row_text(&b, 1)).unwrap();
        assert!(second.get("id").is_none_or(|v| v.is_null()), "{second}");
    }
}
