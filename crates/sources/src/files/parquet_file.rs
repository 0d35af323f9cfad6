//! Parquet files: read in batches with the parquet crate's Arrow reader and fitted by column
//! name to the table's schema (`sluice_core::conform`: exact casts, off-type values to variant
//! columns). A batch that cannot be fitted is quarantined whole with the reason.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use sluice_core::reject::Reject;

use super::{FileEvent, ReadStats, BATCH_ROWS};
use crate::SourceError;

fn builder(
    path: &Path,
    id: &str,
) -> Result<ParquetRecordBatchReaderBuilder<std::fs::File>, SourceError> {
    let f = std::fs::File::open(path).map_err(|source| SourceError::Io {
        file: id.into(),
        source,
    })?;
    ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| SourceError::File {
        file: id.into(),
        message: e.to_string(),
    })
}

pub fn schema(path: &Path, id: &str) -> Result<SchemaRef, SourceError> {
    let b = builder(path, id)?;
    // Drop file-level metadata; keep fields nullable so later files may hold nulls.
    let fields: Vec<_> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Ok(Arc::new(arrow::datatypes::Schema::new(fields)))
}

pub fn read(
    path: &Path,
    id: &str,
    schema: &SchemaRef,
    emit: &mut dyn FnMut(FileEvent) -> Result<(), SourceError>,
) -> Result<ReadStats, SourceError> {
    let b = builder(path, id)?;
    let file_schema = b.schema().clone();
    if let Some(f) = file_schema
        .fields()
        .iter()
        .find(|f| schema.index_of(f.name()).is_err())
    {
        return Err(SourceError::File {
            file: id.into(),
            message: format!("column `{}` is not a column of the table", f.name()),
        });
    }
    let reader = b
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| SourceError::File {
            file: id.into(),
            message: e.to_string(),
        })?;
    let mut stats = ReadStats::default();
    let mut first_row = 1u64;
    for batch in reader {
        let batch = batch.map_err(|source| SourceError::Arrow {
            file: id.into(),
            source,
        })?;
        let n = batch.num_rows();
        match sluice_core::conform::conform(&batch, schema) {
            Ok(b) => {
                stats.rows += n as u64;
                emit(FileEvent::Rows(b))?;
            }
            Err(reason) => {
                stats.rejects += n as u64;
                emit(FileEvent::Reject(Reject {
                    file: id.into(),
                    line: first_row,
                    column: None,
                    raw: format!("<parquet rows {first_row}..{}>", first_row + n as u64 - 1),
                    reason,
                }))?;
            }
        }
        first_row += n as u64;
    }
    Ok(stats)
}
