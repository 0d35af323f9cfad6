//! ORC files: read in batches with orc-rust's Arrow reader (every compression ORC writers use:
//! zlib, snappy, lzo, lz4, zstd) and fitted to the table exactly as Parquet is
//! ([`super::columnar`]).
//!
//! Timestamps are read at microsecond precision, the lake's: at nanoseconds their range ends
//! in 2262, and ORC files hold dates past it ("forever" is often 9999-12-31).

use arrow::datatypes::SchemaRef;
use orc_rust::{ArrowReaderBuilder, TimestampPrecision};
use std::path::Path;

use super::{columnar, ReadEvent, ReadStats, BATCH_ROWS};
use crate::SourceError;

type Builder = ArrowReaderBuilder<std::fs::File>;

fn builder(path: &Path, id: &str) -> Result<Builder, SourceError> {
    let file = std::fs::File::open(path).map_err(|source| SourceError::Io {
        file: id.into(),
        source,
    })?;
    let b = Builder::try_new(file).map_err(|e| SourceError::File {
        file: id.into(),
        message: format!("not a readable ORC file: {e}"),
    })?;
    Ok(b.with_timestamp_precision(TimestampPrecision::Microsecond))
}

/// The file's columns as the lake keeps them ([`columnar::lake_schema`]).
pub fn schema(path: &Path, id: &str) -> Result<SchemaRef, SourceError> {
    columnar::lake_schema(&builder(path, id)?.schema(), id)
}

pub fn read(
    path: &Path,
    id: &str,
    schema: &SchemaRef,
    keys: &[String],
    emit: &mut dyn FnMut(ReadEvent) -> Result<(), SourceError>,
) -> Result<ReadStats, SourceError> {
    let keys = columnar::key_columns(schema, keys);
    let b = builder(path, id)?;
    columnar::known_columns(&b.schema(), schema, id)?;
    let mut stats = ReadStats::default();
    let mut first_row = 1u64;
    for batch in b.with_batch_size(BATCH_ROWS).build() {
        let batch = batch.map_err(|source| SourceError::Arrow {
            file: id.into(),
            source,
        })?;
        let n = batch.num_rows() as u64;
        columnar::fit(batch, schema, &keys, id, first_row, &mut stats, emit)?;
        first_row += n;
    }
    Ok(stats)
}
