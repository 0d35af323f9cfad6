//! BSON to column values, in this one place, for snapshots and change streams alike:
//!
//! | BSON | column | value |
//! |---|---|---|
//! | ObjectId | text | 24 hex digits |
//! | Int32, Int64 | bigint | exact |
//! | Double | double | exact, NaN and ±inf kept |
//! | Decimal128 | decimal(p,s) | exact digits (never through a double); NaN, ±Infinity and values past 38 digits as text |
//! | Date | timestamptz | UTC, milliseconds |
//! | Boolean | boolean | |
//! | String | text (or what its text infers, as JSON strings do) | |
//! | Binary | text | base64; UUID (subtype 4) as its canonical 8-4-4-4-12 text |
//! | Timestamp, Regex, JavaScript, MinKey, MaxKey, Symbol, DBPointer | text | canonical Extended JSON |
//! | Null, Undefined, missing | NULL | |
//! | array, embedded document | JSON (relaxed Extended JSON) | or flattened (`nested = "flatten"`) |
//!
//! `_id` of any type is the key: its column takes the type its values share, text when they
//! differ.

use arrow::datatypes::DataType;
use base64::Engine as _;
use mongodb::bson::{Bson, Document};

use crate::document::{Node, Scalar};
use sluice_core::types::MAX_DECIMAL_PRECISION;

impl Node for &Bson {
    fn fields(&self) -> Option<Result<Vec<(String, Self)>, String>> {
        match self {
            Bson::Document(d) => Some(Ok(d.iter().map(|(k, v)| (k.clone(), v)).collect())),
            _ => None,
        }
    }

    fn scalar(&self) -> Result<Scalar, String> {
        Ok(scalar(self))
    }
}

/// A document's fields, for [`crate::document::columns`].
pub fn fields(doc: &Document) -> Vec<(String, &Bson)> {
    doc.iter().map(|(k, v)| (k.clone(), v)).collect()
}

fn text(v: &Bson) -> Scalar {
    Scalar::Typed(
        DataType::Utf8,
        v.clone().into_canonical_extjson().to_string(),
    )
}

/// One BSON value as a column receives it.
pub fn scalar(v: &Bson) -> Scalar {
    match v {
        Bson::Null | Bson::Undefined => Scalar::Null,
        Bson::String(s) => Scalar::Str(s.clone()),
        Bson::Boolean(b) => Scalar::Typed(DataType::Boolean, b.to_string()),
        Bson::Int32(i) => Scalar::Typed(DataType::Int64, i.to_string()),
        Bson::Int64(i) => Scalar::Typed(DataType::Int64, i.to_string()),
        Bson::Double(f) => Scalar::Typed(DataType::Float64, double_text(*f)),
        Bson::Decimal128(d) => decimal(&d.to_string()),
        Bson::ObjectId(o) => Scalar::Typed(DataType::Utf8, o.to_hex()),
        Bson::DateTime(d) => match chrono::DateTime::from_timestamp_millis(d.timestamp_millis()) {
            Some(t) => Scalar::Typed(
                DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
                t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            ),
            None => text(v),
        },
        Bson::Binary(b) => {
            let uuid = b.subtype == mongodb::bson::spec::BinarySubtype::Uuid && b.bytes.len() == 16;
            match uuid {
                true => Scalar::Typed(DataType::Utf8, uuid_text(&b.bytes)),
                false => Scalar::Typed(
                    DataType::Utf8,
                    base64::engine::general_purpose::STANDARD.encode(&b.bytes),
                ),
            }
        }
        Bson::Array(_) | Bson::Document(_) => {
            Scalar::Nested(v.clone().into_relaxed_extjson().to_string())
        }
        Bson::Timestamp(_)
        | Bson::RegularExpression(_)
        | Bson::JavaScriptCode(_)
        | Bson::JavaScriptCodeWithScope(_)
        | Bson::Symbol(_)
        | Bson::DbPointer(_)
        | Bson::MinKey
        | Bson::MaxKey => text(v),
    }
}

/// A double as text that parses back to the same value (Rust's shortest round trip); NaN and
/// the infinities as the float parser reads them.
fn double_text(f: f64) -> String {
    match f {
        f if f.is_nan() => "NaN".into(),
        f if f == f64::INFINITY => "inf".into(),
        f if f == f64::NEG_INFINITY => "-inf".into(),
        f => format!("{f:?}"),
    }
}

fn uuid_text(b: &[u8]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A Decimal128 (as its string form: `1.05E+3`, `-0.00`, `NaN`) as an exact decimal, or text
/// when it has no decimal equivalent within 38 digits.
fn decimal(s: &str) -> Scalar {
    match plain_decimal(s) {
        Some((plain, int_digits, scale))
            if int_digits + scale <= MAX_DECIMAL_PRECISION as usize =>
        {
            // Headroom over this value, as inference gives sampled decimals.
            let need = int_digits + scale;
            let p = match need <= 16 {
                true => 18,
                false => MAX_DECIMAL_PRECISION as usize,
            };
            Scalar::Typed(DataType::Decimal128(p as u8, scale as i8), plain)
        }
        _ => Scalar::Typed(DataType::Utf8, s.to_string()),
    }
}

/// `[-]digits[.digits][E[+-]n]` as plain digits, with its integer digits and scale.
fn plain_decimal(s: &str) -> Option<(String, usize, usize)> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (mantissa, exp) = match body.split_once(['E', 'e']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (body, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{int}{frac}");
    // The value is digits × 10^(exp - frac.len()).
    let shift = exp - frac.len() as i64;
    if shift.abs() > 64 {
        return None;
    }
    let (int_part, frac_part) = match shift >= 0 {
        true => (
            format!("{digits}{}", "0".repeat(shift as usize)),
            String::new(),
        ),
        false => {
            let scale = (-shift) as usize;
            let padded = format!("{}{digits}", "0".repeat(scale.saturating_sub(digits.len())));
            let cut = padded.len() - scale;
            (padded[..cut].to_string(), padded[cut..].to_string())
        }
    };
    let int_part = match int_part.trim_start_matches('0') {
        "" => "0".to_string(),
        t => t.to_string(),
    };
    let int_digits = int_part.trim_start_matches('0').len();
    let scale = frac_part.len();
    let sign = if neg { "-" } else { "" };
    let plain = match scale {
        0 => format!("{sign}{int_part}"),
        _ => format!("{sign}{int_part}.{frac_part}"),
    };
    Some((plain, int_digits, scale))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, oid::ObjectId, spec::BinarySubtype, Binary, Decimal128};
    use std::str::FromStr;

    fn typed(v: Bson) -> (DataType, String) {
        match scalar(&v) {
            Scalar::Typed(t, s) => (t, s),
            other => panic!("{v:?} gave {other:?}"),
        }
    }

    #[test]
    fn every_bson_type_has_one_column_value() {
        let oid = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
        assert_eq!(
            typed(Bson::ObjectId(oid)),
            (DataType::Utf8, "65a1b2c3d4e5f60718293a4b".into())
        );
        assert_eq!(
            typed(Bson::Int32(i32::MIN)),
            (DataType::Int64, "-2147483648".into())
        );
        assert_eq!(typed(Bson::Int64(i64::MAX)).1, "9223372036854775807");
        for f in [0.1, -1e300, 5e-324, f64::MAX] {
            let (t, s) = typed(Bson::Double(f));
            assert_eq!(t, DataType::Float64);
            assert_eq!(s.parse::<f64>().unwrap(), f, "{s}");
        }
        assert!(typed(Bson::Double(f64::NAN))
            .1
            .parse::<f64>()
            .unwrap()
            .is_nan());
        assert_eq!(
            typed(Bson::Double(f64::NEG_INFINITY))
                .1
                .parse::<f64>()
                .unwrap(),
            f64::NEG_INFINITY
        );
        let d = |s: &str| typed(Bson::Decimal128(Decimal128::from_str(s).unwrap()));
        assert_eq!(d("1.05E+3"), (DataType::Decimal128(18, 0), "1050".into()));
        assert_eq!(
            d("-0.000123"),
            (DataType::Decimal128(18, 6), "-0.000123".into())
        );
        assert_eq!(d("1.50"), (DataType::Decimal128(18, 2), "1.50".into()));
        assert_eq!(
            d("12345678901234567890.123456789"),
            (
                DataType::Decimal128(38, 9),
                "12345678901234567890.123456789".into()
            )
        );
        assert_eq!(d("NaN"), (DataType::Utf8, "NaN".into()));
        assert_eq!(d("1E+6000"), (DataType::Utf8, "1E+6000".into()));
        let date = mongodb::bson::DateTime::from_millis(1_700_000_000_123);
        let (t, s) = typed(Bson::DateTime(date));
        assert!(matches!(t, DataType::Timestamp(_, Some(_))));
        assert_eq!(s, "2023-11-14T22:13:20.123Z");
        let before_epoch = mongodb::bson::DateTime::from_millis(-1);
        assert_eq!(
            typed(Bson::DateTime(before_epoch)).1,
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(
            typed(Bson::Boolean(true)),
            (DataType::Boolean, "true".into())
        );
        assert_eq!(scalar(&Bson::String("x".into())), Scalar::Str("x".into()));
        let uuid = Binary {
            subtype: BinarySubtype::Uuid,
            bytes: (0u8..16).collect(),
        };
        assert_eq!(
            typed(Bson::Binary(uuid)).1,
            "00010203-0405-0607-0809-0a0b0c0d0e0f"
        );
        let bin = Binary {
            subtype: BinarySubtype::Generic,
            bytes: vec![0, 255, 1],
        };
        assert_eq!(typed(Bson::Binary(bin)).1, "AP8B");
        assert_eq!(scalar(&Bson::Null), Scalar::Null);
        let ts = Bson::Timestamp(mongodb::bson::Timestamp {
            time: 7,
            increment: 3,
        });
        assert_eq!(typed(ts).1, r#"{"$timestamp":{"t":7,"i":3}}"#);
        assert_eq!(typed(Bson::MinKey).1, r#"{"$minKey":1}"#);
        assert_eq!(typed(Bson::MaxKey).1, r#"{"$maxKey":1}"#);
        let re = Bson::RegularExpression(mongodb::bson::Regex {
            pattern: "^a".into(),
            options: "i".into(),
        });
        assert_eq!(
            typed(re).1,
            r#"{"$regularExpression":{"pattern":"^a","options":"i"}}"#
        );
        assert_eq!(
            typed(Bson::JavaScriptCode("f()".into())).1,
            r#"{"$code":"f()"}"#
        );
        let nested = Bson::Document(doc! { "a": [1, {"b": "c"}] });
        assert_eq!(
            scalar(&nested),
            Scalar::Nested(r#"{"a":[1,{"b":"c"}]}"#.into())
        );
    }
}
