//! Change batches: the one Arrow shape every source produces and every warehouse consumes.
//!
//! A change batch is the source's columns followed by the change columns below. The names and
//! meanings are a public interface (DESIGN.md, "Change columns"): users query them.
//!
//! ```text
//!  s_suppkey | s_name | ... | _sluice_op | _sluice_seq | _sluice_source_ts | _sluice_ingested_at | _sluice_ingest_date
//!  source columns             'r','c','u','d'  monotonic   commit time (UTC)   when sluice read it    lake partition (day)
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};

/// Debezium-style operation code: `r` snapshot read, `c` insert, `u` update, `d` delete.
pub const OP: &str = "_sluice_op";
/// Monotonic per table; orders changes (latest wins in merge).
pub const SEQ: &str = "_sluice_seq";
/// Commit time at the source, UTC (for files: the file's modification time).
pub const SOURCE_TS: &str = "_sluice_source_ts";
/// When sluice read the change.
pub const INGESTED_AT: &str = "_sluice_ingested_at";
/// Ingestion day (`YYYY-MM-DD`), the lake's partition column.
pub const INGEST_DATE: &str = "_sluice_ingest_date";
/// Added by warehouses: when the row was loaded.
pub const LOADED_AT: &str = "_sluice_loaded_at";
/// Added by warehouses in soft-delete mode.
pub const DELETED: &str = "_sluice_deleted";

/// Added by warehouses in history mode: when this version became true (the source commit
/// time of its change)...
pub const VALID_FROM: &str = "_sluice_valid_from";
/// ...and when the next change of its key replaced or deleted it (NULL while current).
pub const VALID_TO: &str = "_sluice_valid_to";
/// History mode: whether this is the key's live version.
pub const IS_CURRENT: &str = "_sluice_is_current";

/// Added by Redshift: a value of the row was cut to fit (it is whole in the lake).
pub const TRUNCATED: &str = "_sluice_truncated";

/// Merge tables without a key: the row's identity, a hash of its values
/// ([`crate::rowid`]). Rows are matched on it; identical rows share it and are counted.
pub const ROW_ID: &str = "_sluice_row_id";

/// Every column name sluice reserves; a source column may not use one.
pub const RESERVED: [&str; 12] = [
    OP,
    SEQ,
    SOURCE_TS,
    INGESTED_AT,
    INGEST_DATE,
    LOADED_AT,
    DELETED,
    VALID_FROM,
    VALID_TO,
    IS_CURRENT,
    TRUNCATED,
    ROW_ID,
];

/// The operation a change row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Insert,
    Update,
    Delete,
}

impl Op {
    pub fn code(self) -> &'static str {
        match self {
            Op::Read => "r",
            Op::Insert => "c",
            Op::Update => "u",
            Op::Delete => "d",
        }
    }
}

/// True for the `_sluice_*` change columns (and any other reserved name).
pub fn is_change_column(name: &str) -> bool {
    name.starts_with("_sluice_")
}

/// A SELECT of the current state of a keyed change log (`changes`, already quoted): the
/// latest change per key, deletes removed, with the data columns (`schema` minus the
/// `_sluice_*` ones) and the change's source time and sequence number. The one definition of
/// "current state" for `sluice query`, transforms and the views `sluice expose` creates; plain
/// SQL that DataFusion, DuckDB, Redshift and Athena all read.
pub fn current_state_select(changes: &str, schema: &Schema, key: &[String]) -> String {
    use crate::names::quote_ident as q;
    let data: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| !is_change_column(f.name()))
        .map(|f| q(f.name()))
        .collect();
    let keys: Vec<String> = key.iter().map(|k| q(k)).collect();
    format!(
        "SELECT {cols}, {ts}, {seq} FROM (\n  \
         SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY {seq} DESC) AS \"__sluice_rn\"\n  \
         FROM {changes}) AS \"__sluice_latest\"\n\
         WHERE \"__sluice_rn\" = 1 AND {op} <> 'd'",
        cols = data.join(", "),
        ts = q(SOURCE_TS),
        seq = q(SEQ),
        keys = keys.join(", "),
        op = q(OP),
    )
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The most bytes of text and binary values one Arrow batch holds: far below the 2 GiB an
/// array's 32-bit offsets can address, so no batch of large values overflows them (a batch
/// passes it by at most one record, itself bounded by `max_record_bytes` or the source's row
/// size).
pub const BATCH_BYTES: usize = 256 << 20;

/// The change-log schema for a table whose source columns are `data`.
pub fn change_schema(data: &Schema) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = data.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(OP, DataType::Utf8, false)));
    fields.push(Arc::new(Field::new(SEQ, DataType::Int64, false)));
    fields.push(Arc::new(Field::new(SOURCE_TS, utc_micros(), true)));
    fields.push(Arc::new(Field::new(INGESTED_AT, utc_micros(), false)));
    fields.push(Arc::new(Field::new(INGEST_DATE, DataType::Utf8, false)));
    Arc::new(Schema::new(fields))
}

/// The source columns of a change-log schema (everything but the `_sluice_*` columns).
pub fn data_schema(change: &Schema) -> Schema {
    Schema::new(
        change
            .fields()
            .iter()
            .filter(|f| !is_change_column(f.name()))
            .cloned()
            .collect::<Vec<_>>(),
    )
}

/// What is stamped on every row of one batch of changes.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub op: Op,
    /// `_sluice_seq` of the batch's first row; the rows get `first_seq, first_seq + 1, ...`.
    pub first_seq: i64,
    pub source_ts: Option<DateTime<Utc>>,
    pub ingested_at: DateTime<Utc>,
}

/// Appends the change columns to a batch of source rows.
pub fn stamp(data: &RecordBatch, stamp: &Stamp) -> Result<RecordBatch, ArrowError> {
    let n = data.num_rows();
    let source_ts = stamp.source_ts.map(|t| t.timestamp_micros());
    stamp_rows(
        data,
        &vec![stamp.op; n],
        &vec![source_ts; n],
        stamp.first_seq,
        stamp.ingested_at,
    )
}

/// Appends the change columns when each row has its own operation and source commit time
/// (microseconds), as a change stream's rows do.
pub fn stamp_rows(
    data: &RecordBatch,
    ops: &[Op],
    source_ts: &[Option<i64>],
    first_seq: i64,
    ingested_at: DateTime<Utc>,
) -> Result<RecordBatch, ArrowError> {
    let n = data.num_rows();
    if ops.len() != n || source_ts.len() != n {
        return Err(ArrowError::InvalidArgumentError(format!(
            "{n} rows with {} operations and {} commit times",
            ops.len(),
            source_ts.len()
        )));
    }
    let schema = change_schema(data.schema().as_ref());
    let mut columns: Vec<ArrayRef> = data.columns().to_vec();
    columns.push(Arc::new(StringArray::from_iter_values(
        ops.iter().map(|o| o.code()),
    )));
    columns.push(Arc::new(Int64Array::from_iter_values(
        first_seq..first_seq + n as i64,
    )));
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(source_ts.to_vec()).with_timezone("UTC"),
    ));
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(vec![ingested_at.timestamp_micros(); n])
            .with_timezone("UTC"),
    ));
    let day = ingested_at.format("%Y-%m-%d").to_string();
    columns.push(Arc::new(StringArray::from_iter_values(
        std::iter::repeat_n(day.as_str(), n),
    )));
    RecordBatch::try_new(schema, columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;

    #[test]
    fn stamp_appends_change_columns_with_consecutive_seq() {
        let data = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![7, 8, 9]))],
        )
        .unwrap();
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let out = stamp(
            &data,
            &Stamp {
                op: Op::Read,
                first_seq: 41,
                source_ts: None,
                ingested_at: at,
            },
        )
        .unwrap();
        assert_eq!(out.num_columns(), 6);
        let seq = out.column_by_name(SEQ).unwrap().as_primitive::<Int64Type>();
        assert_eq!(seq.values().to_vec(), vec![41, 42, 43]);
        assert_eq!(
            out.column_by_name(OP).unwrap().as_string::<i32>().value(2),
            "r"
        );
        assert!(out.column_by_name(SOURCE_TS).unwrap().is_null(0));
        assert_eq!(
            out.column_by_name(INGEST_DATE)
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "2026-01-02"
        );
        assert_eq!(data_schema(&out.schema()).fields().len(), 1);
    }
}
