//! Parquet files: read in batches with the parquet crate's Arrow reader and cast by column name
//! to the table's schema. A batch that cannot be cast is quarantined whole with the reason.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, RecordBatch};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use sluice_core::reject::Reject;

use super::{FileEvent, ReadStats, BATCH_ROWS};
use crate::SourceError;

/// Casts fail on values that do not fit instead of turning them into NULL.
const STRICT: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: arrow::util::display::FormatOptions::new(),
};

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

/// Splits `c` (column `i` of `schema`, whose strict cast failed) between the column and the
/// first of its `variants` that takes every value the column cannot: the column keeps what
/// casts exactly, the variant gets the rest. None when no variant takes them all.
fn split_to_variant(
    c: &ArrayRef,
    schema: &SchemaRef,
    i: usize,
    variants: &[usize],
) -> Option<(ArrayRef, (usize, ArrayRef))> {
    use arrow::compute::kernels::{boolean, zip::zip};
    let lenient = CastOptions {
        safe: true,
        ..STRICT
    };
    let main = cast_with_options(c, schema.field(i).data_type(), &lenient).ok()?;
    // Rows the column could not take: a value that cast to NULL.
    let off = boolean::and(
        &arrow::compute::is_not_null(c).ok()?,
        &arrow::compute::is_null(&main).ok()?,
    )
    .ok()?;
    for &v in variants {
        let t = schema.field(v).data_type();
        let Ok(all) = cast_with_options(c, t, &lenient) else {
            continue;
        };
        let taken = zip(&off, &all, &new_null_array(t, c.len())).ok()?;
        // Every off-type value must survive the cast into the variant.
        if arrow::compute::is_null(&taken).ok()?.true_count() == c.len() - off.true_count() {
            return Some((main, (v, taken)));
        }
    }
    None
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
    let variants = sluice_core::schema::variants(schema);
    let mut stats = ReadStats::default();
    let mut first_row = 1u64;
    for batch in reader {
        let batch = batch.map_err(|source| SourceError::Arrow {
            file: id.into(),
            source,
        })?;
        let n = batch.num_rows();
        let cast_all = || -> Result<RecordBatch, String> {
            let mut cols: Vec<Option<ArrayRef>> = vec![None; schema.fields().len()];
            for (i, f) in schema.fields().iter().enumerate() {
                let Some(c) = batch.column_by_name(f.name()) else {
                    continue;
                };
                match cast_with_options(c, f.data_type(), &STRICT) {
                    Ok(a) => cols[i] = Some(a),
                    Err(e) => {
                        let (main, variant) = split_to_variant(c, schema, i, &variants[i])
                            .ok_or_else(|| format!("column {}: {e}", f.name()))?;
                        cols[i] = Some(main);
                        cols[variant.0] = Some(variant.1);
                    }
                }
            }
            let cols = cols
                .into_iter()
                .zip(schema.fields())
                .map(|(c, f)| c.unwrap_or_else(|| new_null_array(f.data_type(), n)))
                .collect();
            RecordBatch::try_new(schema.clone(), cols).map_err(|e| e.to_string())
        };
        match cast_all() {
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
