//! What Parquet and ORC files share once decoded into Arrow batches: their columns are held
//! against the table's by name, and each batch is fitted to the table
//! (`sluice_core::conform`: exact casts, off-type values to variant columns), rows with a
//! NULL key quarantined one by one and a batch that cannot be fitted quarantined whole.

use arrow::array::{Array, RecordBatch};
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};

use sluice_core::reject::{row_text, Reject};

use super::{ReadEvent, ReadStats};
use crate::SourceError;

/// The positions of the key columns `keys` in `schema`.
pub(super) fn key_columns(schema: &Schema, keys: &[String]) -> Vec<usize> {
    keys.iter()
        .filter_map(|k| schema.index_of(k).ok())
        .collect()
}

/// The columns a columnar file lands as: each in the type the lake keeps it as
/// ([`sluice_core::types::lake_type`]: nested types keep their shape), all nullable (a later
/// file may hold NULLs), without file metadata. A column the lake has no type for refuses
/// the file, naming the column and its type.
pub(super) fn lake_schema(file: &Schema, id: &str) -> Result<SchemaRef, SourceError> {
    let fields = file
        .fields()
        .iter()
        .map(|f| match sluice_core::types::lake_type(f.data_type()) {
            Some(t) => Ok(Field::new(f.name(), t, true)),
            None => Err(SourceError::File {
                file: id.into(),
                message: format!(
                    "column `{}`: type {} has no lake type (Delta holds no such values)",
                    f.name(),
                    f.data_type()
                ),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// Refuses a file with a column the table lacks (the schema gate adds it first).
pub(super) fn known_columns(file: &Schema, table: &Schema, id: &str) -> Result<(), SourceError> {
    match file
        .fields()
        .iter()
        .find(|f| table.index_of(f.name()).is_err())
    {
        Some(f) => Err(SourceError::File {
            file: id.into(),
            message: format!("column `{}` is not a column of the table", f.name()),
        }),
        None => Ok(()),
    }
}

/// Fits one decoded batch (rows `first_row..`) to `schema` and emits it, or quarantines it
/// with the reason it cannot be fitted.
pub(super) fn fit(
    batch: RecordBatch,
    schema: &SchemaRef,
    keys: &[usize],
    id: &str,
    first_row: u64,
    stats: &mut ReadStats,
    emit: &mut dyn FnMut(ReadEvent) -> Result<(), SourceError>,
) -> Result<(), SourceError> {
    let n = batch.num_rows() as u64;
    match sluice_core::conform::conform(&batch, schema) {
        Ok(b) => {
            let b = refuse_null_keys(b, keys, id, first_row, stats, emit)?;
            stats.rows += b.num_rows() as u64;
            emit(ReadEvent::Rows(b))?;
        }
        Err(reason) => {
            stats.rejects += n;
            emit(ReadEvent::Reject(Reject {
                file: id.into(),
                line: first_row,
                column: None,
                raw: format!("<rows {first_row}..{}>", first_row + n.max(1) - 1),
                reason,
            }))?;
        }
    }
    Ok(())
}

/// `batch` without its rows that have NULL in a key column (each quarantined with its row
/// number: merge cannot place them). `first_row` numbers the batch's first row.
fn refuse_null_keys(
    batch: RecordBatch,
    keys: &[usize],
    id: &str,
    first_row: u64,
    stats: &mut ReadStats,
    emit: &mut dyn FnMut(ReadEvent) -> Result<(), SourceError>,
) -> Result<RecordBatch, SourceError> {
    if keys.iter().all(|&k| batch.column(k).null_count() == 0) {
        return Ok(batch);
    }
    let mut keep = Vec::with_capacity(batch.num_rows());
    for r in 0..batch.num_rows() {
        let null = keys.iter().find(|&&k| batch.column(k).is_null(r));
        keep.push(null.is_none());
        if let Some(&k) = null {
            let column = batch.schema().field(k).name().clone();
            stats.rejects += 1;
            emit(ReadEvent::Reject(Reject {
                file: id.into(),
                line: first_row + r as u64,
                column: Some(column.clone()),
                raw: row_text(&batch, r),
                reason: format!(
                    "column {column}: NULL in a key column (merge cannot place the row)"
                ),
            }))?;
        }
    }
    arrow::compute::filter_record_batch(&batch, &arrow::array::BooleanArray::from(keep)).map_err(
        |source| SourceError::Arrow {
            file: id.into(),
            source,
        },
    )
}
