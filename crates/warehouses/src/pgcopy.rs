//! Arrow → PostgreSQL binary COPY. The one type mapping of the PostgreSQL warehouse lives here:
//! each Arrow type has a column type and an encoder of its values in PostgreSQL's binary
//! format (`COPY ... FROM STDIN (FORMAT binary)`: a header, then per row a field count and
//! per field a length and the value in network order).
//!
//! Written here rather than through `tokio_postgres::binary_copy`, which takes one boxed
//! `ToSql` per value and has no NUMERIC wider than `rust_decimal`'s 28 digits; this encodes
//! straight from the Arrow buffers and keeps DECIMAL(38) exact.

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, Int8Array, StringArray,
    Time64MicrosecondArray, TimestampMicrosecondArray, UInt16Array, UInt32Array, UInt64Array,
    UInt8Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, TimeUnit};
use bytes::{BufMut, BytesMut};

use sluice_core::types::{is_json, is_nested};

/// Days from 1970-01-01 (Arrow) to 2000-01-01 (PostgreSQL).
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The PostgreSQL column type of an Arrow field: the one mapping for this warehouse.
pub fn postgres_type(field: &Field) -> Option<String> {
    // Text marked as JSON (Arrow's `arrow.json` extension) becomes JSONB.
    // Nested values (lists, structs, maps) too, as JSON documents (`sluice_core::nested`).
    if is_json(field) || is_nested(field.data_type()) {
        return Some("JSONB".into());
    }
    Some(match field.data_type() {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "SMALLINT".into(),
        DataType::Int32 | DataType::UInt16 => "INTEGER".into(),
        DataType::Int64 | DataType::UInt32 => "BIGINT".into(),
        DataType::UInt64 => "NUMERIC(20,0)".into(),
        DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE PRECISION".into(),
        DataType::Decimal128(p, s) if *s >= 0 && *p <= 38 => format!("NUMERIC({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "TEXT".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BYTEA".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        DataType::Time64(_) => "TIME".into(),
        _ => return None,
    })
}

/// The binary COPY stream's header (signature, flags, extension length).
pub fn header() -> &'static [u8] {
    b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0"
}

/// The stream's trailer.
pub fn trailer() -> &'static [u8] {
    &[0xff, 0xff]
}

/// One column's values, narrowed to the array type its encoder reads.
enum Column {
    Bool(BooleanArray),
    I8(Int8Array),
    I16(Int16Array),
    I32(Int32Array),
    I64(Int64Array),
    U8(UInt8Array),
    U16(UInt16Array),
    U32(UInt32Array),
    U64(UInt64Array),
    F32(Float32Array),
    F64(Float64Array),
    Decimal(Decimal128Array, u16),
    Text(StringArray),
    Json(StringArray),
    Bytes(BinaryArray),
    Date(Date32Array),
    Timestamp(TimestampMicrosecondArray),
    Time(Time64MicrosecondArray),
}

impl Column {
    /// Prepares `array` (of `field`'s type) for encoding; views, large and non-µs types are
    /// cast to the one array type each encoder reads.
    fn new(field: &Field, array: &ArrayRef) -> Result<Column, String> {
        let to = |t: DataType| cast(array, &t).map_err(|e| format!("column {}: {e}", field.name()));
        Ok(match array.data_type() {
            DataType::Boolean => Column::Bool(array.as_boolean().clone()),
            DataType::Int8 => Column::I8(array.as_primitive().clone()),
            DataType::Int16 => Column::I16(array.as_primitive().clone()),
            DataType::Int32 => Column::I32(array.as_primitive().clone()),
            DataType::Int64 => Column::I64(array.as_primitive().clone()),
            DataType::UInt8 => Column::U8(array.as_primitive().clone()),
            DataType::UInt16 => Column::U16(array.as_primitive().clone()),
            DataType::UInt32 => Column::U32(array.as_primitive().clone()),
            DataType::UInt64 => Column::U64(array.as_primitive().clone()),
            DataType::Float32 => Column::F32(array.as_primitive().clone()),
            DataType::Float64 => Column::F64(array.as_primitive().clone()),
            DataType::Decimal128(_, s) if *s >= 0 => {
                Column::Decimal(array.as_primitive().clone(), *s as u16)
            }
            DataType::Utf8 if is_json(field) => Column::Json(array.as_string::<i32>().clone()),
            DataType::Utf8 => Column::Text(array.as_string::<i32>().clone()),
            DataType::LargeUtf8 | DataType::Utf8View => {
                let a = to(DataType::Utf8)?;
                return Column::new(field, &a);
            }
            DataType::Binary => Column::Bytes(array.as_binary::<i32>().clone()),
            DataType::LargeBinary | DataType::BinaryView => {
                let a = to(DataType::Binary)?;
                return Column::new(field, &a);
            }
            DataType::Date32 => Column::Date(array.as_primitive().clone()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Column::Timestamp(array.as_primitive().clone())
            }
            DataType::Timestamp(_, tz) => {
                let a = to(DataType::Timestamp(TimeUnit::Microsecond, tz.clone()))?;
                return Column::new(field, &a);
            }
            t if is_nested(t) => Column::Json(
                sluice_core::nested::to_json(array)
                    .map_err(|e| format!("column {}: {e}", field.name()))?,
            ),
            DataType::Time64(TimeUnit::Microsecond) => Column::Time(array.as_primitive().clone()),
            DataType::Time64(_) | DataType::Time32(_) => {
                let a = to(DataType::Time64(TimeUnit::Microsecond))?;
                return Column::new(field, &a);
            }
            other => {
                return Err(format!(
                    "column {}: type {other} has no PostgreSQL encoding",
                    field.name()
                ))
            }
        })
    }

    /// Writes one non-null field (length, then value); true when the value had to be
    /// altered to be stored (see [`storable_text`]).
    fn put(&self, row: usize, buf: &mut BytesMut) -> bool {
        match self {
            Column::Bool(a) => {
                buf.put_i32(1);
                buf.put_u8(a.value(row) as u8);
            }
            Column::I8(a) => {
                buf.put_i32(2);
                buf.put_i16(a.value(row) as i16);
            }
            Column::I16(a) => {
                buf.put_i32(2);
                buf.put_i16(a.value(row));
            }
            Column::U8(a) => {
                buf.put_i32(2);
                buf.put_i16(a.value(row) as i16);
            }
            Column::I32(a) => {
                buf.put_i32(4);
                buf.put_i32(a.value(row));
            }
            Column::U16(a) => {
                buf.put_i32(4);
                buf.put_i32(a.value(row) as i32);
            }
            Column::I64(a) => {
                buf.put_i32(8);
                buf.put_i64(a.value(row));
            }
            Column::U32(a) => {
                buf.put_i32(8);
                buf.put_i64(a.value(row) as i64);
            }
            Column::U64(a) => put_numeric(buf, a.value(row) as i128, 0),
            Column::F32(a) => {
                buf.put_i32(4);
                buf.put_f32(a.value(row));
            }
            Column::F64(a) => {
                buf.put_i32(8);
                buf.put_f64(a.value(row));
            }
            Column::Decimal(a, scale) => put_numeric(buf, a.value(row), *scale),
            Column::Text(a) => {
                let (v, altered) = storable_text(a.value(row));
                buf.put_i32(v.len() as i32);
                buf.put_slice(v.as_bytes());
                return altered;
            }
            Column::Json(a) => {
                // JSONB's binary form: a version byte, then the text.
                let (v, altered) = storable_json(a.value(row));
                buf.put_i32(v.len() as i32 + 1);
                buf.put_u8(1);
                buf.put_slice(v.as_bytes());
                return altered;
            }
            Column::Bytes(a) => {
                let v = a.value(row);
                buf.put_i32(v.len() as i32);
                buf.put_slice(v);
            }
            Column::Date(a) => {
                buf.put_i32(4);
                buf.put_i32(a.value(row) - PG_EPOCH_DAYS);
            }
            Column::Timestamp(a) => {
                buf.put_i32(8);
                buf.put_i64(a.value(row) - PG_EPOCH_MICROS);
            }
            Column::Time(a) => {
                buf.put_i32(8);
                buf.put_i64(a.value(row));
            }
        }
        false
    }
}

/// What PostgreSQL stores in place of a NUL character, which TEXT and JSONB cannot hold:
/// U+2400 SYMBOL FOR NULL, visibly what it stands for. The lake keeps the value exact.
pub const NUL_STAND_IN: char = '\u{2400}';

/// `text` as TEXT can hold it: NUL characters stood in for; true when there were any.
fn storable_text(text: &str) -> (std::borrow::Cow<'_, str>, bool) {
    match text.contains('\0') {
        true => (text.replace('\0', &NUL_STAND_IN.to_string()).into(), true),
        false => (text.into(), false),
    }
}

/// JSON text as JSONB can hold it: `\u0000` escapes (and raw NULs) stood in for, escapes
/// read pair by pair so an escaped backslash before `u0000` is left alone.
fn storable_json(json: &str) -> (std::borrow::Cow<'_, str>, bool) {
    let (json, raw) = storable_text(json);
    if !json.contains("\\u0000") {
        return (json, raw);
    }
    let stand_in = format!("\\u{:04x}", NUL_STAND_IN as u32);
    let mut out = String::with_capacity(json.len());
    let mut rest: &str = &json;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        if escape.len() >= 6 && escape[1..6].eq_ignore_ascii_case("u0000") {
            out.push_str(&stand_in);
            rest = &escape[6..];
        } else {
            // The backslash and the character it escapes.
            let width = escape[1..].chars().next().map_or(0, char::len_utf8);
            out.push_str(&escape[..1 + width]);
            rest = &escape[1 + width..];
        }
    }
    out.push_str(rest);
    (out.into(), true)
}

/// NUMERIC's binary form: base-10000 digits around the decimal point, most significant
/// first, with the weight (position of the first digit), sign and display scale.
fn put_numeric(buf: &mut BytesMut, value: i128, scale: u16) {
    let negative = value < 0;
    let mut magnitude = value.unsigned_abs();
    // Decimal digits, least significant first, at least `scale + 1` of them.
    let mut decimal = [0u8; 48];
    let mut n = 0;
    while magnitude > 0 || n <= scale as usize {
        decimal[n] = (magnitude % 10) as u8;
        magnitude /= 10;
        n += 1;
    }
    let scale = scale as usize;
    // Pad the fraction on the right to whole groups of 4 digits.
    let pad = (4 - scale % 4) % 4;
    let frac_groups = (scale + pad) / 4;
    let int_digits = n - scale;
    let int_groups = int_digits.div_ceil(4);
    // Groups most significant first: integer part, then fraction.
    // The digit at position i of the padded number (0 = its least significant digit).
    let digit = |i: usize| -> u16 {
        if i < pad || i >= n + pad {
            0
        } else {
            decimal[i - pad] as u16
        }
    };
    let total = int_groups + frac_groups;
    let mut groups: Vec<u16> = Vec::with_capacity(total);
    for g in (0..total).rev() {
        let base = g * 4;
        groups.push(
            digit(base + 3) * 1000 + digit(base + 2) * 100 + digit(base + 1) * 10 + digit(base),
        );
    }
    let mut weight = int_groups as i16 - 1;
    let mut first = 0;
    while first < groups.len() && groups[first] == 0 {
        first += 1;
        weight -= 1;
    }
    let mut last = groups.len();
    while last > first && groups[last - 1] == 0 {
        last -= 1;
    }
    let digits = &groups[first..last];
    if digits.is_empty() {
        weight = 0;
    }
    buf.put_i32(8 + 2 * digits.len() as i32);
    buf.put_i16(digits.len() as i16);
    buf.put_i16(weight);
    buf.put_u16(if negative && !digits.is_empty() {
        0x4000
    } else {
        0
    });
    buf.put_u16(scale as u16);
    for d in digits {
        buf.put_u16(*d);
    }
}

/// Encodes the rows of a batch's columns (already in the COPY column order) into `buf`.
/// Errors name the column.
/// Encodes the rows of `arrays` as COPY BINARY tuples; returns how many values had to be
/// altered to be stored (NUL characters, see [`NUL_STAND_IN`]).
pub fn encode(fields: &[&Field], arrays: &[ArrayRef], buf: &mut BytesMut) -> Result<u64, String> {
    let columns = fields
        .iter()
        .zip(arrays)
        .map(|(f, a)| Ok((Column::new(f, a)?, a.logical_nulls())))
        .collect::<Result<Vec<_>, String>>()?;
    let rows = arrays.first().map(|a| a.len()).unwrap_or(0);
    let count = columns.len() as i16;
    let mut altered = 0;
    for row in 0..rows {
        buf.put_i16(count);
        for (c, nulls) in &columns {
            if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                buf.put_i32(-1);
            } else if c.put(row, buf) {
                altered += 1;
            }
        }
    }
    Ok(altered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_stood_in_for_and_escapes_read_in_pairs() {
        assert_eq!(storable_text("a\0b"), ("a\u{2400}b".into(), true));
        assert_eq!(storable_text("plain"), ("plain".into(), false));
        let (j, altered) = storable_json(r#"{"a":"x\u0000y","b":"\\u0000","c":"\U0000"}"#);
        assert!(altered);
        assert_eq!(j, r#"{"a":"x\u2400y","b":"\\u0000","c":"\u2400"}"#);
        assert_eq!(
            storable_json(r#"{"a":"\"q\" é"}"#),
            (r#"{"a":"\"q\" é"}"#.into(), false)
        );
    }

    fn numeric(value: i128, scale: u16) -> (i16, i16, u16, u16, Vec<u16>) {
        let mut buf = BytesMut::new();
        put_numeric(&mut buf, value, scale);
        let b = &buf[..];
        let len = i32::from_be_bytes(b[0..4].try_into().unwrap()) as usize;
        assert_eq!(len, b.len() - 4);
        let r = |i: usize| u16::from_be_bytes(b[4 + 2 * i..6 + 2 * i].try_into().unwrap());
        let ndigits = r(0) as i16;
        let digits = (0..ndigits as usize).map(|i| r(4 + i)).collect();
        (ndigits, r(1) as i16, r(2), r(3), digits)
    }

    #[test]
    fn numeric_groups_digits_around_the_point() {
        // 12345.6789 → 1 2345 . 6789, weight 1
        assert_eq!(numeric(123456789, 4), (3, 1, 0, 4, vec![1, 2345, 6789]));
        // -0.5 at scale 2 → 5000 at weight -1
        assert_eq!(numeric(-50, 2), (1, -1, 0x4000, 2, vec![5000]));
        // zero keeps its scale and has no digits
        assert_eq!(numeric(0, 3), (0, 0, 0, 3, vec![]));
        // 10000 → one digit 1 at weight 1 (trailing zero group dropped)
        assert_eq!(numeric(10000, 0), (1, 1, 0, 0, vec![1]));
        // 0.0001 at scale 4 → weight -1, digit 1
        assert_eq!(numeric(1, 4), (1, -1, 0, 4, vec![1]));
        // 38 nines at scale 38 encode without overflow
        let max = 10i128.pow(38) - 1;
        let (n, w, _, s, d) = numeric(max, 38);
        assert_eq!((n, w, s), (10, -1, 38));
        assert_eq!(d[0], 9999);
        assert_eq!(d[9], 9900);
        // u64::MAX = 1844 6744 0737 0955 1615
        assert_eq!(
            numeric(u64::MAX as i128, 0),
            (5, 4, 0, 0, vec![1844, 6744, 737, 955, 1615])
        );
    }
}
