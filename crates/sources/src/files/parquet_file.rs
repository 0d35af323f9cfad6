//! Parquet files: read in batches with the parquet crate's Arrow reader and fitted by column
//! name to the table's schema (`sluice_core::conform`: exact casts, off-type values to variant
//! columns). A batch that cannot be fitted is quarantined whole with the reason.
//!
//! INT96 timestamps (Spark's and Impala's legacy type) are read at microsecond precision:
//! Arrow's default reads them as nanoseconds, whose range ends in 2262, and a later date
//! (Spark writes 9999-12-31 for "forever") wraps into a wrong one. A value that does not fit
//! microseconds either is quarantined with its row, never landed as another date.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampSecondType};
use parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::basic::Type as PhysicalType;

use sluice_core::reject::{row_text, Reject};

use super::{columnar, ReadEvent, ReadStats, BATCH_ROWS};
use crate::SourceError;

type Builder = ParquetRecordBatchReaderBuilder<std::fs::File>;

fn file_error(id: &str) -> impl Fn(parquet::errors::ParquetError) -> SourceError + '_ {
    move |e| SourceError::File {
        file: id.into(),
        message: e.to_string(),
    }
}

fn open(path: &Path, id: &str) -> Result<std::fs::File, SourceError> {
    std::fs::File::open(path).map_err(|source| SourceError::Io {
        file: id.into(),
        source,
    })
}

/// The top-level columns stored as INT96, by index.
fn int96_columns(b: &Builder) -> Vec<usize> {
    let arrow = b.schema();
    b.parquet_schema()
        .columns()
        .iter()
        .filter(|c| c.physical_type() == PhysicalType::INT96 && c.path().parts().len() == 1)
        .filter_map(|c| arrow.index_of(&c.path().parts()[0]).ok())
        .collect()
}

/// The file's schema with its INT96 columns as timestamps of `unit` (keeping their zone).
fn with_int96_as(schema: &Schema, int96: &[usize], unit: TimeUnit) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| match (int96.contains(&i), f.data_type()) {
            (true, DataType::Timestamp(_, tz)) => f
                .as_ref()
                .clone()
                .with_data_type(DataType::Timestamp(unit, tz.clone())),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// A reader of the file with INT96 read as microseconds; and the INT96 columns.
fn builder(path: &Path, id: &str) -> Result<(Builder, Vec<usize>), SourceError> {
    let plain = Builder::try_new(open(path, id)?).map_err(file_error(id))?;
    let int96 = int96_columns(&plain);
    if int96.is_empty() {
        return Ok((plain, int96));
    }
    let schema = with_int96_as(plain.schema(), &int96, TimeUnit::Microsecond);
    let options = ArrowReaderOptions::new().with_schema(schema);
    let b = Builder::try_new_with_options(open(path, id)?, options).map_err(file_error(id))?;
    Ok((b, int96))
}

/// The file's columns as the lake keeps them ([`columnar::lake_schema`]).
pub fn schema(path: &Path, id: &str) -> Result<SchemaRef, SourceError> {
    let (b, _) = builder(path, id)?;
    columnar::lake_schema(b.schema(), id)
}

/// The INT96 columns again, at whole seconds (their range covers every INT96 value): a
/// microsecond value is right only where it agrees with them. Read in step with the main
/// reader (same batch size), so batch `k` of both holds the same rows.
fn seconds_reader(
    path: &Path,
    id: &str,
    plain: &Schema,
    int96: &[usize],
) -> Result<ParquetRecordBatchReader, SourceError> {
    let options =
        ArrowReaderOptions::new().with_schema(with_int96_as(plain, int96, TimeUnit::Second));
    let b = Builder::try_new_with_options(open(path, id)?, options).map_err(file_error(id))?;
    let mask = ProjectionMask::roots(b.parquet_schema(), int96.iter().copied());
    b.with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(file_error(id))
}

/// Rows of `batch` whose INT96 value did not fit microseconds (it wrapped): their microsecond
/// value disagrees with the seconds read of the same value.
fn wrapped_rows(
    batch: &RecordBatch,
    int96: &[usize],
    seconds: &RecordBatch,
) -> Vec<(usize, String)> {
    let mut bad = Vec::new();
    for (k, &i) in int96.iter().enumerate() {
        let Some(us) = arrow::compute::cast(batch.column(i), &DataType::Int64).ok() else {
            continue;
        };
        let us = us.as_primitive::<arrow::datatypes::Int64Type>();
        let secs = seconds.column(k).as_primitive::<TimestampSecondType>();
        for r in 0..batch.num_rows() {
            if us.is_null(r) || secs.is_null(r) {
                continue;
            }
            if us.value(r).div_euclid(1_000_000) != secs.value(r) {
                let name = batch.schema().field(i).name().clone();
                if !bad.iter().any(|(row, _)| *row == r) {
                    bad.push((r, name));
                }
            }
        }
    }
    bad.sort();
    bad
}

pub fn read(
    path: &Path,
    id: &str,
    schema: &SchemaRef,
    keys: &[String],
    emit: &mut dyn FnMut(ReadEvent) -> Result<(), SourceError>,
) -> Result<ReadStats, SourceError> {
    let keys = columnar::key_columns(schema, keys);
    let (b, int96) = builder(path, id)?;
    let file_schema = b.schema().clone();
    columnar::known_columns(&file_schema, schema, id)?;
    let mut seconds = match int96.is_empty() {
        true => None,
        false => Some(seconds_reader(path, id, &file_schema, &int96)?),
    };
    let reader = b
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(file_error(id))?;
    let mut stats = ReadStats::default();
    let mut first_row = 1u64;
    for batch in reader {
        let mut batch = batch.map_err(|source| SourceError::Arrow {
            file: id.into(),
            source,
        })?;
        let n = batch.num_rows();
        if let Some(seconds) = seconds.as_mut() {
            let secs = seconds
                .next()
                .ok_or_else(|| SourceError::File {
                    file: id.into(),
                    message: "INT96 columns ended before the file's rows".into(),
                })?
                .map_err(|source| SourceError::Arrow {
                    file: id.into(),
                    source,
                })?;
            let bad = wrapped_rows(&batch, &int96, &secs);
            if !bad.is_empty() {
                for (r, column) in &bad {
                    stats.rejects += 1;
                    emit(ReadEvent::Reject(Reject {
                        file: id.into(),
                        line: first_row + *r as u64,
                        column: Some(column.clone()),
                        raw: row_text(&batch, *r),
                        reason: format!(
                            "column {column}: INT96 timestamp out of the range of microsecond timestamps (years -290308 to 294247)"
                        ),
                    }))?;
                }
                let keep = arrow::array::BooleanArray::from(
                    (0..n)
                        .map(|r| !bad.iter().any(|(b, _)| *b == r))
                        .collect::<Vec<_>>(),
                );
                batch = arrow::compute::filter_record_batch(&batch, &keep).map_err(|source| {
                    SourceError::Arrow {
                        file: id.into(),
                        source,
                    }
                })?;
            }
        }
        columnar::fit(batch, schema, &keys, id, first_row, &mut stats, emit)?;
        first_row += n as u64;
    }
    Ok(stats)
}
