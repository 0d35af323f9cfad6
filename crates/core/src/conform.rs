//! Fitting a batch to a table's schema by column name, losing nothing.
//!
//! A column the table has and the batch lacks is NULL. A column whose type differs is cast
//! exactly: a value lands in the column only when the cast keeps it whole (a decimal that
//! would round, a double with a fraction bound for an integer, an integer past 2^53 bound for
//! a double, nanoseconds bound for microseconds do not). The first of the column's variant
//! columns (`qty__bigint`, see [`crate::schema::variants`]) that takes every other value
//! exactly gets them; when none does, the batch is refused with the column named.

use arrow::array::{make_comparator, new_null_array, Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::kernels::{boolean, cmp, zip::zip};
use arrow::compute::{cast_with_options, is_not_null, is_null, CastOptions};
use arrow::datatypes::{DataType, SchemaRef};

use crate::schema::{is_text, variants};

/// Casts that turn a value they cannot convert into NULL (found and routed below).
const LENIENT: CastOptions<'static> = CastOptions {
    safe: true,
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
        let (main, off) =
            exact_cast(c, f.data_type()).map_err(|e| format!("column {}: {e}", f.name()))?;
        if off.true_count() == 0 {
            cols[i] = Some(main);
            continue;
        }
        let (v, taken) = to_variant(c, &off, schema, &variants[i]).ok_or_else(|| {
            let row = (0..off.len()).find(|&r| off.value(r)).unwrap_or(0);
            let shown = arrow::util::display::array_value_to_string(c, row).unwrap_or_default();
            format!(
                "column {}: value {shown} (row {}) does not fit {} exactly, and no variant column takes it",
                f.name(),
                row + 1,
                crate::schema::type_name(f.data_type())
            )
        })?;
        // The column keeps only what fits it exactly.
        cols[i] = Some(
            zip(&off, &new_null_array(main.data_type(), n), &main).map_err(|e| e.to_string())?,
        );
        cols[v] = Some(taken);
    }
    let cols = cols
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| c.unwrap_or_else(|| new_null_array(f.data_type(), n)))
        .collect();
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| e.to_string())
}

/// `c` cast to `to`, and the rows whose value the cast did not keep whole (a value that
/// became NULL, or that does not cast back to itself).
pub fn exact_cast(c: &ArrayRef, to: &DataType) -> Result<(ArrayRef, BooleanArray), String> {
    let cast = cast_with_options(c, to, &LENIENT).map_err(|e| e.to_string())?;
    let lost = boolean::and(
        &is_not_null(c).map_err(|e| e.to_string())?,
        &is_null(&cast).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let changed = changed_by_cast(c, &cast, to)?;
    let off = match changed {
        Some(changed) => boolean::or(&lost, &changed).map_err(|e| e.to_string())?,
        None => lost,
    };
    Ok((cast, off))
}

/// Rows whose non-NULL cast value differs from the original: cast back and compared (NaN
/// equals NaN here, as Arrow compares floats by total order). Text becomes a number by
/// parsing, whose round trip need not give the same text (`1.50`), so text is compared with a
/// parse at a wider scale instead, and only where the target is a decimal (the one parse
/// that rounds). A text target holds any value whole. None: nothing to compare.
fn changed_by_cast(
    c: &ArrayRef,
    cast: &ArrayRef,
    to: &DataType,
) -> Result<Option<BooleanArray>, String> {
    let e = |e: arrow::error::ArrowError| e.to_string();
    if is_text(to) {
        return Ok(None);
    }
    let (original, back) = if is_text(c.data_type()) {
        let DataType::Decimal128(p, s) = to else {
            return Ok(None);
        };
        // Every digit of the integer part, and all the scale the type allows beyond it.
        let wide = DataType::Decimal128(38, (38 - (*p as i8 - *s)).max(*s));
        (
            cast_with_options(c, &wide, &LENIENT).map_err(e)?,
            cast_with_options(cast, &wide, &LENIENT).map_err(e)?,
        )
    } else {
        // A NULL-typed part (a list of NULL) holds only NULLs, which any type keeps: the
        // round trip goes to the source type with those parts in the target's type.
        let through = without_null_parts(c.data_type(), to);
        let original = match &through == c.data_type() {
            true => c.clone(),
            false => cast_with_options(c, &through, &LENIENT).map_err(e)?,
        };
        (
            original,
            cast_with_options(cast, &through, &LENIENT).map_err(e)?,
        )
    };
    let differs = match crate::types::is_nested(original.data_type()) {
        true => nested_distinct(&original, &back).map_err(e)?,
        false => cmp::distinct(&original, &back).map_err(e)?,
    };
    // Only where the cast gave a value: a NULL result is `lost`, counted apart.
    Ok(Some(
        boolean::and(&differs, &is_not_null(cast).map_err(e)?).map_err(e)?,
    ))
}

/// `from` with each part of NULL type replaced by the part of `to` in its place (lists,
/// structs by position, maps), so a value can be cast back to it.
fn without_null_parts(from: &DataType, to: &DataType) -> DataType {
    use std::sync::Arc;
    let field = |f: &arrow::datatypes::FieldRef, t: &arrow::datatypes::FieldRef| {
        Arc::new(
            f.as_ref()
                .clone()
                .with_data_type(without_null_parts(f.data_type(), t.data_type())),
        )
    };
    match (from, to) {
        (DataType::Null, t) => t.clone(),
        (DataType::List(f), DataType::List(t) | DataType::LargeList(t)) => {
            DataType::List(field(f, t))
        }
        (DataType::LargeList(f), DataType::List(t) | DataType::LargeList(t)) => {
            DataType::LargeList(field(f, t))
        }
        (DataType::FixedSizeList(f, n), DataType::List(t) | DataType::LargeList(t)) => {
            DataType::FixedSizeList(field(f, t), *n)
        }
        (DataType::Struct(fs), DataType::Struct(ts)) if fs.len() == ts.len() => {
            DataType::Struct(fs.iter().zip(ts.iter()).map(|(f, t)| field(f, t)).collect())
        }
        (DataType::Map(f, sorted), DataType::Map(t, _)) => DataType::Map(field(f, t), *sorted),
        (other, _) => other.clone(),
    }
}

/// Per row, whether two nested arrays of one type differ (Arrow's comparison kernels take
/// no nested arrays; its comparator does, and orders floats totally, NaN equal to NaN).
fn nested_distinct(a: &ArrayRef, b: &ArrayRef) -> Result<BooleanArray, arrow::error::ArrowError> {
    let compare = make_comparator(a.as_ref(), b.as_ref(), Default::default())?;
    Ok((0..a.len())
        .map(|r| Some(compare(r, r) != std::cmp::Ordering::Equal))
        .collect())
}

/// The first of `variants` (columns of `schema`) that takes every `off` value of `c`
/// exactly: its index and the column holding those values (NULL elsewhere).
fn to_variant(
    c: &ArrayRef,
    off: &BooleanArray,
    schema: &SchemaRef,
    variants: &[usize],
) -> Option<(usize, ArrayRef)> {
    for &v in variants {
        let t = schema.field(v).data_type();
        let Ok((all, not_exact)) = exact_cast(c, t) else {
            continue;
        };
        // Every off-type value must fit the variant exactly.
        let refused = boolean::and(off, &not_exact).ok()?;
        if refused.true_count() > 0 {
            continue;
        }
        let taken = zip(off, &all, &new_null_array(t, c.len())).ok()?;
        return Some((v, taken));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Decimal128Array, Float64Array, Int32Array, Int64Array, StringArray,
        TimestampMicrosecondArray, TimestampNanosecondArray,
    };
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use std::sync::Arc;

    fn ints(c: &ArrayRef) -> Vec<Option<i64>> {
        let c = arrow::compute::cast(c, &DataType::Int64).unwrap();
        let c = c.as_any().downcast_ref::<Int64Array>().unwrap();
        (0..c.len())
            .map(|r| (!c.is_null(r)).then(|| c.value(r)))
            .collect()
    }

    fn texts(c: &ArrayRef) -> Vec<Option<String>> {
        (0..c.len())
            .map(|r| {
                (!c.is_null(r)).then(|| arrow::util::display::array_value_to_string(c, r).unwrap())
            })
            .collect()
    }

    fn one(name: &str, col: ArrayRef) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                name,
                col.data_type().clone(),
                true,
            )])),
            vec![col],
        )
        .unwrap()
    }

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
        assert_eq!(ints(out.column(0)), vec![Some(1), Some(2), Some(3)]);
        assert_eq!(ints(out.column(1)), vec![Some(7), None, None]);
        assert_eq!(out.column(2).null_count(), 3);
        assert_eq!(ints(out.column(3)), vec![None, Some(5_000_000_000), None]);

        // No variant takes text in an integer column: an error naming the column.
        let text = one("qty", Arc::new(StringArray::from(vec!["n/a"])));
        assert!(conform(&text, &table).unwrap_err().contains("qty"));
    }

    /// Casts that succeed but would change the value are not exact: the value goes to the
    /// variant, whole.
    #[test]
    fn rounding_truncating_and_precision_losing_casts_go_to_the_variant() {
        // DECIMAL(10,2) -> DECIMAL(12,4): 1.2345 would land as 1.23.
        let table: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("price", DataType::Decimal128(10, 2), true),
            Field::new("price__decimal_12_4", DataType::Decimal128(12, 4), true),
        ]));
        let prices = Decimal128Array::from(vec![Some(12345), Some(12300), None])
            .with_precision_and_scale(12, 4)
            .unwrap();
        let out = conform(&one("price", Arc::new(prices)), &table).unwrap();
        assert_eq!(texts(out.column(0)), vec![None, Some("1.23".into()), None]);
        assert_eq!(
            texts(out.column(1)),
            vec![Some("1.2345".into()), None, None]
        );

        // Text with more decimals than the column keeps.
        let text = one(
            "price",
            Arc::new(StringArray::from(vec![
                Some("1.2345"),
                Some("1.50"),
                Some("2"),
            ])),
        );
        let out = conform(&text, &table).unwrap();
        assert_eq!(
            texts(out.column(0)),
            vec![None, Some("1.50".into()), Some("2.00".into())]
        );
        assert_eq!(
            texts(out.column(1)),
            vec![Some("1.2345".into()), None, None]
        );

        // double -> bigint: 1.5 would truncate to 1; NaN has no integer.
        let table: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("n__double", DataType::Float64, true),
        ]));
        let out = conform(
            &one("n", Arc::new(Float64Array::from(vec![1.5, 2.0, f64::NAN]))),
            &table,
        )
        .unwrap();
        assert_eq!(ints(out.column(0)), vec![None, Some(2), None]);
        assert_eq!(
            texts(out.column(1)),
            vec![Some("1.5".into()), None, Some("NaN".into())]
        );

        // bigint -> double past 2^53.
        let table: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Float64, true),
            Field::new("n__bigint", DataType::Int64, true),
        ]));
        let big = (1i64 << 53) + 1;
        let out = conform(&one("n", Arc::new(Int64Array::from(vec![big, 3]))), &table).unwrap();
        assert_eq!(texts(out.column(0)), vec![None, Some("3.0".into())]);
        assert_eq!(ints(out.column(1)), vec![Some(big), None]);

        // Nanoseconds into a microsecond column: only whole microseconds fit.
        let us = DataType::Timestamp(TimeUnit::Microsecond, None);
        let ns = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let table: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("t", us.clone(), true),
            Field::new("t__timestamp", ns, true),
        ]));
        let out = conform(
            &one(
                "t",
                Arc::new(TimestampNanosecondArray::from(vec![1_000_001, 2_000_000])),
            ),
            &table,
        )
        .unwrap();
        let micros = out
            .column(0)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert!(micros.is_null(0));
        assert_eq!(micros.value(1), 2_000);
        assert_eq!(out.column(1).null_count(), 1);

        // Without a variant that takes it whole, the batch is refused, naming the value.
        let table: SchemaRef = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let err = conform(
            &one("n", Arc::new(Float64Array::from(vec![2.0, 1.5]))),
            &table,
        )
        .unwrap_err();
        assert!(
            err.contains("column n") && err.contains("1.5") && err.contains("row 2"),
            "{err}"
        );
    }

    #[test]
    fn nested_columns_cast_exactly_or_name_the_row() {
        use arrow::array::{Float32Builder, Int64Builder, ListBuilder};
        let item = |t: DataType| Arc::new(Field::new("item", t, true));
        // list<float16> into list<float>: exact.
        let mut b = ListBuilder::new(Float32Builder::new());
        b.append_value([Some(1.5), None]);
        b.append_value([Some(f32::NAN)]);
        let floats: ArrayRef = Arc::new(b.finish());
        let lists =
            arrow::compute::cast(&floats, &DataType::List(item(DataType::Float16))).unwrap();
        let (cast, off) = exact_cast(&lists, &DataType::List(item(DataType::Float32))).unwrap();
        assert_eq!(off.true_count(), 0);
        assert_eq!(cast.data_type(), &DataType::List(item(DataType::Float32)));
        // A list of NULL type into a list of text: exact (every element is NULL).
        let nulls: ArrayRef = Arc::new(arrow::array::ListArray::new(
            item(DataType::Null),
            arrow::buffer::OffsetBuffer::from_lengths([2, 1]),
            Arc::new(arrow::array::NullArray::new(3)),
            None,
        ));
        let (kept, off) = exact_cast(&nulls, &DataType::List(item(DataType::Utf8))).unwrap();
        assert_eq!(off.true_count(), 0);
        assert_eq!(kept.len(), 2);
        // list<bigint> into list<int>: the row whose value does not fit is named.
        let mut b = ListBuilder::new(Int64Builder::new());
        b.append_value([Some(1), Some(2)]);
        b.append_value([Some(5_000_000_000)]);
        b.append_null();
        let wide: ArrayRef = Arc::new(b.finish());
        let (_, off) = exact_cast(&wide, &DataType::List(item(DataType::Int32))).unwrap();
        assert_eq!(
            (0..3).map(|r| off.value(r)).collect::<Vec<_>>(),
            vec![false, true, false]
        );
    }
}
