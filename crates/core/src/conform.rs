//! Fitting a batch to a table's schema by column name, losing nothing.
//!
//! A column the table has and the batch lacks is NULL. A column whose type differs is cast
//! exactly (a failed cast is an error, never a NULL); where some values do not fit, the column
//! keeps the ones that do and the first of its variant columns (`qty__bigint`, see
//! [`crate::schema::variants`]) that takes every other value gets them.

use arrow::array::{new_null_array, ArrayRef, RecordBatch};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::SchemaRef;

use crate::schema::variants;

/// Casts fail on values that do not fit instead of turning them into NULL.
const STRICT: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: arrow::util::display::FormatOptions::new(),
};

/// `batch` in `schema`'s columns, order and types. Batch columns the schema lacks are left
/// out (callers that must not lose them check first). Errors name the column that no cast
/// or variant takes.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    let n = batch.num_rows();
    let variants = variants(schema);
    let mut cols: Vec<Option<ArrayRef>> = vec![None; schema.fields().len()];
    for (i, f) in schema.fields().iter().enumerate() {
        let Some(c) = batch.column_by_name(f.name()) else {
            continue;
        };
        if c.data_type() == f.data_type() {
            cols[i] = Some(c.clone());
            continue;
        }
        match cast_with_options(c, f.data_type(), &STRICT) {
            Ok(a) => cols[i] = Some(a),
            Err(e) => {
                let (main, (v, taken)) = split_to_variant(c, schema, i, &variants[i])
                    .ok_or_else(|| format!("column {}: {e}", f.name()))?;
                cols[i] = Some(main);
                cols[v] = Some(taken);
            }
        }
    }
    let cols = cols
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| c.unwrap_or_else(|| new_null_array(f.data_type(), n)))
        .collect();
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| e.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn fits_by_name_and_sends_what_does_not_fit_to_the_variant() {
        let table: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("qty", DataType::Int32, true),
            Field::new("gone", DataType::Utf8, true),
            Field::new("qty__bigint", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("qty", DataType::Int64, true),
                Field::new("id", DataType::Int32, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![Some(7), Some(5_000_000_000), None])),
                Arc::new(Int32Array::from(vec![1, 2, 3])),
            ],
        )
        .unwrap();
        let out = conform(&batch, &table).unwrap();
        let ints = |i: usize| {
            let c = out.column(i);
            (0..c.len())
                .map(|r| {
                    (!c.is_null(r)).then(|| {
                        arrow::compute::cast(&c.slice(r, 1), &DataType::Int64)
                            .unwrap()
                            .as_any()
                            .downcast_ref::<Int64Array>()
                            .unwrap()
                            .value(0)
                    })
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(ints(0), vec![Some(1), Some(2), Some(3)]);
        assert_eq!(ints(1), vec![Some(7), None, None]);
        assert_eq!(out.column(2).null_count(), 3);
        assert_eq!(ints(3), vec![None, Some(5_000_000_000), None]);

        // No variant takes text in an integer column: an error naming the column.
        let text = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("qty", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(vec!["n/a"]))],
        )
        .unwrap();
        assert!(conform(&text, &table).unwrap_err().contains("qty"));
    }
}
