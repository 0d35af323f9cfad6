//! Nested values (lists, structs, maps) as JSON text, for warehouses whose nested type is a
//! JSON document (PostgreSQL JSONB, Redshift SUPER). One encoding, arrow-json's, with what
//! JSON itself forces:
//!
//! - a float that is not a number is the string `"NaN"`, `"Infinity"` or `"-Infinity"`: JSON
//!   has no such number, and arrow-json writes `null`, which would lose the value;
//! - a map is an object whose keys are the map keys as text (JSON keys are strings);
//! - a struct's NULL fields are written (`{"a": null}`), so every field is present;
//! - binary is hex text, dates and timestamps ISO 8601 text, decimals exact numbers.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, FieldRef, Float32Type, Float64Type};
use arrow::error::ArrowError;
use arrow::json::writer::{make_encoder, Encoder, EncoderFactory, EncoderOptions, NullableEncoder};

/// Each value of the nested `array` as one JSON document (NULL stays NULL).
pub fn to_json(array: &ArrayRef) -> Result<StringArray, String> {
    let text_keys = with_text_keys(array.data_type());
    let array = match &text_keys == array.data_type() {
        true => array.clone(),
        false => arrow::compute::cast(array, &text_keys).map_err(|e| e.to_string())?,
    };
    let field: FieldRef = Arc::new(Field::new("value", text_keys, true));
    let options = EncoderOptions::default()
        .with_explicit_nulls(true)
        .with_encoder_factory(Arc::new(NonFiniteAsText));
    let mut encoder = make_encoder(&field, array.as_ref(), &options).map_err(|e| e.to_string())?;
    let mut out = StringBuilder::with_capacity(array.len(), array.len() * 16);
    let mut buf = Vec::new();
    for r in 0..array.len() {
        if array.is_null(r) {
            out.append_null();
            continue;
        }
        buf.clear();
        encoder.encode(r, &mut buf);
        out.append_value(std::str::from_utf8(&buf).map_err(|e| e.to_string())?);
    }
    Ok(out.finish())
}

/// `t` with the keys of every map in it as text.
fn with_text_keys(t: &DataType) -> DataType {
    let inner = |f: &FieldRef| -> FieldRef {
        Arc::new(
            f.as_ref()
                .clone()
                .with_data_type(with_text_keys(f.data_type())),
        )
    };
    match t {
        DataType::List(f) => DataType::List(inner(f)),
        DataType::LargeList(f) => DataType::LargeList(inner(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(inner(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(inner).collect()),
        DataType::Map(entries, sorted) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return t.clone();
            };
            let kv: Vec<FieldRef> = kv
                .iter()
                .enumerate()
                .map(|(i, f)| match i {
                    0 => Arc::new(Field::new(f.name(), DataType::Utf8, false)),
                    _ => inner(f),
                })
                .collect();
            DataType::Map(
                Arc::new(Field::new(
                    entries.name(),
                    DataType::Struct(kv.into()),
                    false,
                )),
                *sorted,
            )
        }
        other => other.clone(),
    }
}

/// Floats that are not numbers as strings (see the module).
#[derive(Debug)]
struct NonFiniteAsText;

impl EncoderFactory for NonFiniteAsText {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        let values: Box<dyn Encoder + 'a> = match array.data_type() {
            DataType::Float64 => {
                Box::new(Floats(&array.as_primitive::<Float64Type>().values()[..]))
            }
            DataType::Float32 => {
                Box::new(Floats(&array.as_primitive::<Float32Type>().values()[..]))
            }
            _ => return Ok(None),
        };
        Ok(Some(NullableEncoder::new(values, array.nulls().cloned())))
    }
}

/// Floats of one width; each written as its own shortest text (0.1f32 is 0.1, not
/// 0.10000000149011612).
struct Floats<'a, T>(&'a [T]);

impl<T: Copy + Into<f64> + std::fmt::Debug> Encoder for Floats<'_, T> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let v = self.0[idx];
        // Debug is the shortest text that reads back as the same float, with an exponent
        // where that is shorter (1e300): a valid JSON number when finite.
        let text = match v.into() {
            f if f.is_nan() => "\"NaN\"".to_string(),
            f64::INFINITY => "\"Infinity\"".to_string(),
            f64::NEG_INFINITY => "\"-Infinity\"".to_string(),
            _ => format!("{v:?}"),
        };
        out.extend_from_slice(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Float64Array, Float64Builder, Int32Builder, ListBuilder, MapBuilder, StringBuilder,
        StructArray,
    };

    fn texts(a: &StringArray) -> Vec<Option<&str>> {
        (0..a.len())
            .map(|r| (!a.is_null(r)).then(|| a.value(r)))
            .collect()
    }

    #[test]
    fn lists_keep_not_a_number_and_nulls() {
        let mut b = ListBuilder::new(Float64Builder::new());
        b.append_value([Some(1.5), None, Some(f64::NAN)]);
        b.append_null();
        b.append_value([Some(f64::INFINITY), Some(f64::NEG_INFINITY), Some(1e300)]);
        b.append_value(std::iter::empty::<Option<f64>>());
        let a: ArrayRef = Arc::new(b.finish());
        let j = to_json(&a).unwrap();
        assert_eq!(
            texts(&j),
            vec![
                Some(r#"[1.5,null,"NaN"]"#),
                None,
                Some(r#"["Infinity","-Infinity",1e300]"#),
                Some("[]"),
            ]
        );
    }

    #[test]
    fn maps_with_integer_keys_are_objects_and_struct_nulls_are_written() {
        let mut m = MapBuilder::new(None, Int32Builder::new(), StringBuilder::new());
        m.keys().append_value(7);
        m.values().append_value("seven");
        m.keys().append_value(-1);
        m.values().append_null();
        m.append(true).unwrap();
        m.append(false).unwrap();
        let a: ArrayRef = Arc::new(m.finish());
        let j = to_json(&a).unwrap();
        assert_eq!(texts(&j), vec![Some(r#"{"7":"seven","-1":null}"#), None]);

        let s: ArrayRef = Arc::new(StructArray::from(vec![(
            Arc::new(Field::new("x", DataType::Float64, true)),
            Arc::new(Float64Array::from(vec![Some(0.1), None])) as ArrayRef,
        )]));
        let j = to_json(&s).unwrap();
        assert_eq!(texts(&j), vec![Some(r#"{"x":0.1}"#), Some(r#"{"x":null}"#)]);
    }
}
