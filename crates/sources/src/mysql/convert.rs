//! MySQL values → Arrow arrays. Snapshot rows (binary protocol) and binlog rows arrive in
//! different shapes (an ENUM is its label in one and its index in the other, a TIMESTAMP a
//! broken-down UTC time in one and epoch seconds in the other); both go through here so the same
//! row lands with identical values whichever way it was read.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, Int8Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use chrono::NaiveDate;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::Value;

use super::columns::{arrow_schema, ColumnDef, Kind};
use crate::values::parse_decimal;

/// Where a value was read: its shape depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A query over the binary protocol, session time zone UTC, connection charset utf8mb4.
    Query,
    /// A binlog row image.
    Binlog,
}

enum Builder {
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    Dec(Decimal128Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
    Bin(BinaryBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
}

impl Builder {
    fn for_kind(kind: &Kind) -> Builder {
        match kind {
            Kind::Int { bits: 8, .. } => Builder::I8(Int8Builder::new()),
            Kind::Int { bits: 16, .. } | Kind::Year => Builder::I16(Int16Builder::new()),
            Kind::Int { bits: 32, .. } => Builder::I32(Int32Builder::new()),
            Kind::Int { .. } => Builder::I64(Int64Builder::new()),
            Kind::UnsignedBig => {
                Builder::Dec(Decimal128Builder::new().with_data_type(kind.arrow_type()))
            }
            Kind::Decimal { .. } => {
                Builder::Dec(Decimal128Builder::new().with_data_type(kind.arrow_type()))
            }
            Kind::Float => Builder::F32(Float32Builder::new()),
            Kind::Double => Builder::F64(Float64Builder::new()),
            Kind::Bool => Builder::Bool(BooleanBuilder::new()),
            Kind::Bits { .. } | Kind::FixedBinary { .. } | Kind::Binary | Kind::Geometry => {
                Builder::Bin(BinaryBuilder::new())
            }
            Kind::WideDecimal
            | Kind::Text { .. }
            | Kind::Json
            | Kind::Enum { .. }
            | Kind::Set { .. }
            | Kind::Time { .. } => Builder::Str(StringBuilder::new()),
            Kind::Date => Builder::Date(Date32Builder::new()),
            Kind::DateTime => Builder::Ts(TimestampMicrosecondBuilder::new()),
            Kind::Timestamp => Builder::Ts(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
        }
    }

    fn null(&mut self) {
        match self {
            Builder::I8(b) => b.append_null(),
            Builder::I16(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::Dec(b) => b.append_null(),
            Builder::F32(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::Bool(b) => b.append_null(),
            Builder::Str(b) => b.append_null(),
            Builder::Bin(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Ts(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::I8(b) => Arc::new(b.finish()),
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::Dec(b) => Arc::new(b.finish()),
            Builder::F32(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Str(b) => Arc::new(b.finish()),
            Builder::Bin(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Ts(b) => Arc::new(b.finish()),
        }
    }
}

/// A value sluice could not convert: names the column and shows the value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("column `{column}` ({column_type}): {message}")]
pub struct ConvertError {
    pub column: String,
    pub column_type: String,
    pub message: String,
}

/// A converted value, before it goes into its builder.
enum Cell {
    Null,
    /// A zero date or time: NULL, counted.
    Zero,
    I(i64),
    D(i128),
    F(f64),
    B(bool),
    S(String),
    Bytes(Vec<u8>),
    Days(i32),
    Micros(i64),
}

/// Builds one table's rows column by column.
pub struct RowsBuilder {
    defs: Vec<ColumnDef>,
    kinds: Vec<Kind>,
    builders: Vec<Builder>,
    schema: SchemaRef,
    rows: usize,
    /// Zero dates seen (stored as NULL).
    pub zero_dates: u64,
}

impl RowsBuilder {
    pub fn new(defs: &[ColumnDef]) -> RowsBuilder {
        let kinds: Vec<Kind> = defs.iter().map(ColumnDef::kind).collect();
        RowsBuilder {
            builders: kinds.iter().map(Builder::for_kind).collect(),
            kinds,
            defs: defs.to_vec(),
            schema: arrow_schema(defs),
            rows: 0,
            zero_dates: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one row given as values in column order.
    pub fn push_row<I>(&mut self, values: I, origin: Origin) -> Result<(), ConvertError>
    where
        I: IntoIterator<Item = Value>,
    {
        let mut n = 0;
        for (i, v) in values.into_iter().enumerate() {
            self.push(i, v, origin)?;
            n += 1;
        }
        debug_assert_eq!(n, self.builders.len());
        self.rows += 1;
        Ok(())
    }

    /// Appends one binlog row image (MySQL JSON arrives as its binary form).
    pub fn push_binlog_row(
        &mut self,
        values: Vec<Option<BinlogValue<'static>>>,
    ) -> Result<(), ConvertError> {
        for (i, v) in values.into_iter().enumerate() {
            let value = match v {
                None => Value::NULL,
                Some(BinlogValue::Value(v)) => v,
                Some(BinlogValue::Jsonb(j)) => {
                    let json = serde_json::Value::try_from(j)
                        .map_err(|e| self.error(i, format!("binary JSON: {e}")))?;
                    Value::Bytes(json.to_string().into_bytes())
                }
                Some(BinlogValue::JsonDiff(_)) => {
                    return Err(self.error(
                        i,
                        "partial JSON update in the binlog: set binlog_row_value_options='' so rows carry whole values".into(),
                    ))
                }
            };
            self.push(i, value, Origin::Binlog)?;
        }
        self.rows += 1;
        Ok(())
    }

    /// The rows so far as a batch; the builder starts over.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), columns).expect("builders match the schema")
    }

    fn error(&self, col: usize, message: String) -> ConvertError {
        ConvertError {
            column: self.defs[col].name.clone(),
            column_type: self.defs[col].column_type.clone(),
            message,
        }
    }

    fn push(&mut self, col: usize, value: Value, origin: Origin) -> Result<(), ConvertError> {
        let cell = convert(&self.kinds[col], value, origin).map_err(|m| self.error(col, m))?;
        if matches!(cell, Cell::Zero) {
            self.zero_dates += 1;
        }
        append(&mut self.builders[col], cell).map_err(|m| self.error(col, m))
    }
}

/// Appends a converted value to its column's builder.
fn append(b: &mut Builder, cell: Cell) -> Result<(), String> {
    fn narrow<T: TryFrom<i64>>(v: i64) -> Result<T, String> {
        T::try_from(v).map_err(|_| format!("{v} is out of range"))
    }
    match (b, cell) {
        (b, Cell::Null | Cell::Zero) => b.null(),
        (Builder::I8(b), Cell::I(v)) => b.append_value(narrow(v)?),
        (Builder::I16(b), Cell::I(v)) => b.append_value(narrow(v)?),
        (Builder::I32(b), Cell::I(v)) => b.append_value(narrow(v)?),
        (Builder::I64(b), Cell::I(v)) => b.append_value(v),
        (Builder::Dec(b), Cell::D(v)) => b.append_value(v),
        (Builder::F32(b), Cell::F(v)) => b.append_value(v as f32),
        (Builder::F64(b), Cell::F(v)) => b.append_value(v),
        (Builder::Bool(b), Cell::B(v)) => b.append_value(v),
        (Builder::Str(b), Cell::S(v)) => b.append_value(v),
        (Builder::Bin(b), Cell::Bytes(v)) => b.append_value(v),
        (Builder::Date(b), Cell::Days(v)) => b.append_value(v),
        (Builder::Ts(b), Cell::Micros(v)) => b.append_value(v),
        _ => return Err("value does not fit the column's Arrow type".into()),
    }
    Ok(())
}

fn text(v: Value) -> Result<Vec<u8>, String> {
    match v {
        Value::Bytes(b) => Ok(b),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        Value::UInt(u) => Ok(u.to_string().into_bytes()),
        Value::Float(f) => Ok(f.to_string().into_bytes()),
        Value::Double(f) => Ok(f.to_string().into_bytes()),
        other => Err(format!("unexpected value {other:?}")),
    }
}

fn utf8(b: Vec<u8>) -> Result<String, String> {
    String::from_utf8(b).map_err(|e| format!("invalid UTF-8: {e}"))
}

fn integer(v: &Value) -> Result<i128, String> {
    match v {
        Value::Int(i) => Ok(*i as i128),
        Value::UInt(u) => Ok(*u as i128),
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse::<i128>().ok())
            .ok_or_else(|| format!("`{}` is not an integer", String::from_utf8_lossy(b))),
        other => Err(format!("unexpected value {other:?}")),
    }
}

fn days(y: u16, m: u8, d: u8) -> Option<i32> {
    let date = NaiveDate::from_ymd_opt(y as i32, m as u32, d as u32)?;
    Some((date - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32)
}

fn micros(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> Option<i64> {
    let t = NaiveDate::from_ymd_opt(y as i32, mo as u32, d as u32)?
        .and_hms_micro_opt(h as u32, mi as u32, s as u32, us)?;
    Some(t.and_utc().timestamp_micros())
}

/// `sec` or `sec.micros`: how the binlog carries TIMESTAMP(fsp).
fn epoch_text_micros(b: &[u8]) -> Result<Option<i64>, String> {
    let s = std::str::from_utf8(b).map_err(|e| e.to_string())?;
    let (sec, frac) = s.split_once('.').unwrap_or((s, "0"));
    let sec: i64 = sec.parse().map_err(|_| format!("bad timestamp `{s}`"))?;
    let frac: i64 = format!("{frac:0<6}")[..6]
        .parse()
        .map_err(|_| format!("bad timestamp `{s}`"))?;
    Ok((sec != 0 || frac != 0).then_some(sec * 1_000_000 + frac))
}

fn convert(kind: &Kind, v: Value, origin: Origin) -> Result<Cell, String> {
    if v == Value::NULL {
        return Ok(Cell::Null);
    }
    Ok(match kind {
        Kind::Int {
            width, unsigned, ..
        } => {
            let mut i = integer(&v)?;
            if origin == Origin::Binlog {
                // The binlog's bits, read with the column's own signedness.
                let span = 1i128 << width;
                if *unsigned && i < 0 {
                    i += span;
                } else if !*unsigned && i >= span / 2 {
                    i -= span;
                }
            }
            Cell::I(i64::try_from(i).map_err(|e| e.to_string())?)
        }
        Kind::UnsignedBig => {
            let i = integer(&v)?;
            Cell::D(if i < 0 { i + (1i128 << 64) } else { i })
        }
        Kind::Year => {
            let y = integer(&v)?;
            // The binlog writes YEAR as 1900 + its stored byte, so 0000 arrives as 1900.
            Cell::I(if origin == Origin::Binlog && y == 1900 {
                0
            } else {
                y as i64
            })
        }
        Kind::Decimal { precision, scale } => {
            let t = utf8(text(v)?)?;
            Cell::D(parse_decimal(&t, *precision, *scale)?)
        }
        Kind::WideDecimal => Cell::S(utf8(text(v)?)?),
        Kind::Float | Kind::Double => match v {
            Value::Float(f) => Cell::F(f as f64),
            Value::Double(f) => Cell::F(f),
            other => {
                let t = utf8(text(other)?)?;
                Cell::F(t.parse().map_err(|_| format!("`{t}` is not a number"))?)
            }
        },
        Kind::Bool => match v {
            Value::Bytes(b) => Cell::B(b.iter().any(|x| *x != 0)),
            other => Cell::B(integer(&other)? != 0),
        },
        Kind::Bits { bytes } => {
            let b = match v {
                Value::Bytes(b) => b,
                other => (integer(&other)? as u64).to_be_bytes().to_vec(),
            };
            // Big-endian, exactly ⌈n/8⌉ bytes whichever way it was read.
            let mut out = vec![0u8; *bytes];
            let take = b.len().min(*bytes);
            out[*bytes - take..].copy_from_slice(&b[b.len() - take..]);
            Cell::Bytes(out)
        }
        Kind::Text { charset } => {
            let b = text(v)?;
            match origin {
                Origin::Query => Cell::S(utf8(b)?),
                Origin::Binlog => Cell::S(charset.decode(&b)),
            }
        }
        Kind::Json => {
            let b = text(v)?;
            let json: serde_json::Value =
                serde_json::from_slice(&b).map_err(|e| format!("JSON: {e}"))?;
            Cell::S(json.to_string())
        }
        Kind::Enum { labels } => match (origin, v) {
            (Origin::Binlog, Value::Int(i)) => Cell::S(if i == 0 {
                String::new()
            } else {
                labels
                    .get(i as usize - 1)
                    .cloned()
                    .ok_or_else(|| format!("enum index {i} beyond its {} labels", labels.len()))?
            }),
            (_, other) => Cell::S(utf8(text(other)?)?),
        },
        Kind::Set { labels } => match (origin, v) {
            (Origin::Binlog, Value::Bytes(mask)) => {
                let chosen: Vec<&str> = labels
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| {
                        mask.get(i / 8)
                            .is_some_and(|byte| byte & (1 << (i % 8)) != 0)
                    })
                    .map(|(_, l)| l.as_str())
                    .collect();
                Cell::S(chosen.join(","))
            }
            (_, other) => Cell::S(utf8(text(other)?)?),
        },
        Kind::FixedBinary { len } => {
            let mut b = text(v)?;
            if origin == Origin::Binlog && b.len() < *len {
                b.resize(*len, 0);
            }
            Cell::Bytes(b)
        }
        Kind::Binary => Cell::Bytes(text(v)?),
        Kind::Geometry => {
            let b = text(v)?;
            if b.len() < 4 {
                return Err(format!("geometry of {} bytes has no SRID prefix", b.len()));
            }
            Cell::Bytes(b[4..].to_vec())
        }
        Kind::Date => match v {
            Value::Date(y, m, d, ..) => days(y, m, d).map(Cell::Days).unwrap_or(Cell::Zero),
            other => return Err(format!("unexpected DATE value {other:?}")),
        },
        Kind::DateTime => match v {
            Value::Date(y, mo, d, h, mi, s, us) => micros(y, mo, d, h, mi, s, us)
                .map(Cell::Micros)
                .unwrap_or(Cell::Zero),
            other => return Err(format!("unexpected DATETIME value {other:?}")),
        },
        Kind::Timestamp => match v {
            // Read with the session in UTC.
            Value::Date(y, mo, d, h, mi, s, us) => micros(y, mo, d, h, mi, s, us)
                .map(Cell::Micros)
                .unwrap_or(Cell::Zero),
            Value::Bytes(b) => epoch_text_micros(&b)?
                .map(Cell::Micros)
                .unwrap_or(Cell::Zero),
            Value::Int(0) => Cell::Zero,
            Value::Int(sec) => Cell::Micros(sec * 1_000_000),
            other => return Err(format!("unexpected TIMESTAMP value {other:?}")),
        },
        Kind::Time { fsp } => match v {
            Value::Time(neg, days, h, m, s, us) => {
                let hours = days as u64 * 24 + h as u64;
                let mut t = format!("{}{hours:02}:{m:02}:{s:02}", if neg { "-" } else { "" });
                if *fsp > 0 {
                    let frac = format!("{us:06}");
                    t.push('.');
                    t.push_str(&frac[..(*fsp as usize).min(6)]);
                }
                Cell::S(t)
            }
            other => Cell::S(utf8(text(other)?)?),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(data_type: &str, column_type: &str) -> Kind {
        ColumnDef {
            name: "c".into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            charset: Some("latin1".into()),
            nullable: true,
        }
        .kind()
    }

    #[test]
    fn binlog_and_query_shapes_agree() {
        let e = kind("enum", "enum('x','y')");
        assert!(matches!(convert(&e, Value::Int(2), Origin::Binlog), Ok(Cell::S(s)) if s == "y"));
        let s = kind("set", "set('a','b','c')");
        assert!(
            matches!(convert(&s, Value::Bytes(vec![0b101]), Origin::Binlog), Ok(Cell::S(s)) if s == "a,c")
        );
        let t = kind("timestamp", "timestamp(6)");
        let a = convert(&t, Value::Bytes(b"1.5".to_vec()), Origin::Binlog);
        assert!(matches!(a, Ok(Cell::Micros(1_500_000))));
        let b = convert(&t, Value::Date(1970, 1, 1, 0, 0, 1, 500_000), Origin::Query);
        assert!(matches!(b, Ok(Cell::Micros(1_500_000))));
        let tm = kind("time", "time(2)");
        assert!(
            matches!(convert(&tm, Value::Time(true, 34, 22, 59, 59, 120_000), Origin::Binlog), Ok(Cell::S(s)) if s == "-838:59:59.12")
        );
        let latin = kind("varchar", "varchar(5)");
        assert!(
            matches!(convert(&latin, Value::Bytes(vec![0xe9]), Origin::Binlog), Ok(Cell::S(s)) if s == "é")
        );
        let d = kind("date", "date");
        assert!(matches!(
            convert(&d, Value::Date(0, 0, 0, 0, 0, 0, 0), Origin::Query),
            Ok(Cell::Zero)
        ));
    }
}
