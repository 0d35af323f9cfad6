//! MySQL values → Arrow arrays. Snapshot rows (binary protocol) and binlog rows arrive in
//! different shapes (an ENUM is its label in one and its index in the other, a TIMESTAMP a
//! broken-down UTC time in one and epoch seconds in the other); both go through here so the same
//! row lands with identical values whichever way it was read.

use std::borrow::Cow;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use chrono::NaiveDate;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::Value;

use super::columns::{arrow_schema, ColumnDef, Kind};
use crate::typed::{append, fits, Builder, Cell};
use crate::values::parse_decimal;

/// Where a value was read: its shape depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A query over the binary protocol, session time zone UTC, connection charset utf8mb4.
    Query,
    /// A binlog row image.
    Binlog,
}

/// A row sluice could not convert, for the quarantine: the column to blame, why, and the
/// row's values as SQL literals. Snapshot and binlog rows are refused by the same rules.
#[derive(Debug, Clone, thiserror::Error)]
#[error("column `{column}` ({column_type}): {message}")]
pub struct RowReject {
    pub column: String,
    pub column_type: String,
    pub message: String,
    pub raw: String,
}

/// Builds one table's rows column by column.
pub struct RowsBuilder {
    defs: Vec<ColumnDef>,
    kinds: Vec<Kind>,
    builders: Vec<Builder>,
    schema: SchemaRef,
    rows: usize,
    /// Bytes of text and binary values in the current batch.
    bytes: usize,
    /// Columns that must not be NULL: the key merges match on.
    keys: Vec<usize>,
    /// Zero dates seen (stored as NULL).
    pub zero_dates: u64,
    /// Rows refused since the caller last took them, for the quarantine.
    pub rejects: Vec<RowReject>,
}

impl RowsBuilder {
    pub fn new(defs: &[ColumnDef]) -> RowsBuilder {
        let kinds: Vec<Kind> = defs.iter().map(ColumnDef::kind).collect();
        RowsBuilder {
            builders: kinds
                .iter()
                .map(|k| Builder::for_type(&k.arrow_type()))
                .collect(),
            kinds,
            defs: defs.to_vec(),
            schema: arrow_schema(defs),
            rows: 0,
            bytes: 0,
            keys: Vec::new(),
            zero_dates: 0,
            rejects: Vec::new(),
        }
    }

    /// Refuses rows with NULL in any of `keys` (column indices): merge cannot place them.
    pub fn with_keys(mut self, keys: Vec<usize>) -> RowsBuilder {
        self.keys = keys;
        self
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Whether the batch should be finished: `rows` rows, or values past
    /// [`BATCH_BYTES`](sluice_core::change::BATCH_BYTES) (a 2 GiB text column cannot be one array).
    pub fn is_full(&self, rows: usize) -> bool {
        self.rows >= rows || self.bytes >= sluice_core::change::BATCH_BYTES
    }

    /// Appends one row given as values in column order, or nothing and why (all or
    /// nothing: a refused row leaves the builder as it was).
    pub fn push_row(&mut self, values: Vec<Value>, origin: Origin) -> Result<(), RowReject> {
        self.push_rows(vec![values], origin)
    }

    /// Appends rows that stand or fall together (a key change's delete and insert).
    fn push_rows(&mut self, rows: Vec<Vec<Value>>, origin: Origin) -> Result<(), RowReject> {
        let mut converted = Vec::with_capacity(rows.len());
        let size: usize = rows
            .iter()
            .flatten()
            .map(|v| match v {
                Value::Bytes(b) => b.len(),
                _ => 8,
            })
            .sum();
        for values in &rows {
            debug_assert_eq!(values.len(), self.builders.len());
            let mut cells = Vec::with_capacity(values.len());
            for (i, v) in values.iter().enumerate() {
                let cell = convert(&self.kinds[i], v, origin)
                    .and_then(|c| fits(&self.builders[i], c))
                    .and_then(|c| match c {
                        Cell::Null | Cell::NoEquivalent if self.keys.contains(&i) => {
                            Err("NULL in a key column (merge cannot place the row)".to_string())
                        }
                        c => Ok(c),
                    })
                    .map_err(|m| self.reject(i, m, values))?;
                cells.push(cell);
            }
            converted.push(cells);
        }
        for cells in converted {
            for (i, cell) in cells.into_iter().enumerate() {
                if matches!(cell, Cell::NoEquivalent) {
                    self.zero_dates += 1;
                }
                append(&mut self.builders[i], cell);
            }
            self.rows += 1;
        }
        self.bytes += size;
        Ok(())
    }

    /// Appends binlog row images (MySQL JSON arrives as its binary form), all or none.
    pub fn push_binlog_rows(
        &mut self,
        images: Vec<Vec<Option<BinlogValue<'static>>>>,
    ) -> Result<(), RowReject> {
        let mut rows = Vec::with_capacity(images.len());
        for values in images {
            let mut row = Vec::with_capacity(values.len());
            let mut failed = None;
            for (i, v) in values.into_iter().enumerate() {
                row.push(match v {
                    None => Value::NULL,
                    Some(BinlogValue::Value(v)) => v,
                    Some(BinlogValue::Jsonb(j)) => match serde_json::Value::try_from(j) {
                        Ok(json) => Value::Bytes(json.to_string().into_bytes()),
                        Err(e) => {
                            failed.get_or_insert((i, format!("binary JSON: {e}")));
                            Value::NULL
                        }
                    },
                    Some(BinlogValue::JsonDiff(_)) => {
                        failed.get_or_insert((i, "partial JSON update in the binlog: set binlog_row_value_options='' so rows carry whole values".into()));
                        Value::NULL
                    }
                });
            }
            if let Some((i, message)) = failed {
                return Err(self.reject(i, message, &row));
            }
            rows.push(row);
        }
        self.push_rows(rows, Origin::Binlog)
    }

    /// The rows so far as a batch; the builder starts over.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), columns).expect("builders match the schema")
    }

    fn reject(&self, col: usize, message: String, row: &[Value]) -> RowReject {
        let raw: Vec<String> = self
            .defs
            .iter()
            .zip(row)
            .map(|(d, v)| format!("{} = {}", d.name, v.as_sql(true)))
            .collect();
        RowReject {
            column: self.defs[col].name.clone(),
            column_type: self.defs[col].column_type.clone(),
            message,
            raw: raw.join(", "),
        }
    }
}

/// An integer (or YEAR) column's value in a binlog row image, as the table holds it: what a
/// snapshot chunk's key bounds compare. None for NULL or any other kind of column.
pub fn binlog_int(def: &ColumnDef, v: &Option<BinlogValue<'static>>) -> Option<i64> {
    let Some(BinlogValue::Value(v)) = v else {
        return None;
    };
    match convert(&def.kind(), v, Origin::Binlog) {
        Ok(Cell::I(i)) => Some(i),
        // BIGINT UNSIGNED: chunked while its values fit an i64 (see plan::plan).
        Ok(Cell::D(i)) if def.kind() == Kind::UnsignedBig => i64::try_from(i).ok(),
        _ => None,
    }
}

/// A DATE, DATETIME, TIMESTAMP or DECIMAL key value as a number in the server's order of
/// the column (None for NULL or another kind): dates and datetimes by their parts packed
/// (zero and invalid dates, which the server orders by their parts too, included),
/// timestamps by their UTC instant, decimals at the column's scale. Snapshot chunk bounds
/// and binlog keys compare this way.
pub fn key_ordinal(kind: &Kind, v: &Value, origin: Origin) -> Option<i128> {
    match (kind, v) {
        (Kind::Date | Kind::DateTime, Value::Date(y, mo, d, h, mi, s, us)) => {
            Some(pack_datetime(*y, *mo, *d, *h, *mi, *s, *us))
        }
        (Kind::Timestamp | Kind::Decimal { .. }, _) => match convert(kind, v, origin).ok()? {
            Cell::Micros(m) => Some(m as i128),
            Cell::NoEquivalent => Some(0),
            Cell::D(d) => Some(d),
            _ => None,
        },
        _ => None,
    }
}

/// [`key_ordinal`] of a binlog row image's value.
pub fn binlog_ordinal(kind: &Kind, v: &Option<BinlogValue<'static>>) -> Option<i128> {
    let Some(BinlogValue::Value(v)) = v else {
        return None;
    };
    key_ordinal(kind, v, Origin::Binlog)
}

/// Date and time parts, packed so that numeric order is their order.
pub fn pack_datetime(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> i128 {
    let mut v = y as i128;
    for (part, span) in [
        (mo as i128, 13),
        (d as i128, 32),
        (h as i128, 24),
        (mi as i128, 60),
        (s as i128, 60),
    ] {
        v = v * span + part;
    }
    v * 1_000_000 + us as i128
}

/// Microseconds since the epoch as a date and time value (UTC, as sessions are).
pub fn micros_value(us: i64) -> Value {
    use chrono::{Datelike, Timelike};
    let t = chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .naive_utc();
    Value::Date(
        t.year() as u16,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.nanosecond() / 1000,
    )
}

/// The parts [`pack_datetime`] packed.
pub fn unpack_datetime(v: i128) -> Value {
    let us = (v % 1_000_000) as u32;
    let mut rest = v / 1_000_000;
    let mut parts = [0u8; 5];
    for (i, span) in [60, 60, 24, 32, 13].into_iter().enumerate() {
        parts[4 - i] = (rest % span) as u8;
        rest /= span;
    }
    let [mo, d, h, mi, s] = parts;
    Value::Date(rest as u16, mo, d, h, mi, s, us)
}

/// An integer key value as the server returned it (a plan's MIN or MAX), any signedness.
pub fn key_integer(v: &Value) -> Option<i128> {
    (*v != Value::NULL).then(|| integer(v).ok()).flatten()
}

fn text(v: &Value) -> Result<Cow<'_, [u8]>, String> {
    match v {
        Value::Bytes(b) => Ok(Cow::Borrowed(b)),
        Value::Int(i) => Ok(Cow::Owned(i.to_string().into_bytes())),
        Value::UInt(u) => Ok(Cow::Owned(u.to_string().into_bytes())),
        Value::Float(f) => Ok(Cow::Owned(f.to_string().into_bytes())),
        Value::Double(f) => Ok(Cow::Owned(f.to_string().into_bytes())),
        other => Err(format!("unexpected value {other:?}")),
    }
}

fn utf8(b: Cow<'_, [u8]>) -> Result<Cow<'_, str>, String> {
    match b {
        Cow::Borrowed(b) => std::str::from_utf8(b).map(Cow::Borrowed).map_err(invalid),
        Cow::Owned(b) => String::from_utf8(b)
            .map(Cow::Owned)
            .map_err(|e| invalid(e.utf8_error())),
    }
}

fn invalid(e: std::str::Utf8Error) -> String {
    format!(
        "invalid UTF-8 at byte {} (quarantined rather than landed with replacement characters)",
        e.valid_up_to()
    )
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

fn convert<'a>(kind: &Kind, v: &'a Value, origin: Origin) -> Result<Cell<'a>, String> {
    if *v == Value::NULL {
        return Ok(Cell::Null);
    }
    Ok(match kind {
        Kind::Int {
            width, unsigned, ..
        } => {
            let mut i = integer(v)?;
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
            let i = integer(v)?;
            Cell::D(if i < 0 { i + (1i128 << 64) } else { i })
        }
        Kind::Year => {
            let y = integer(v)?;
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
            Value::Float(f) => Cell::F(*f as f64),
            Value::Double(f) => Cell::F(*f),
            other => {
                let t = utf8(text(other)?)?;
                Cell::F(t.parse().map_err(|_| format!("`{t}` is not a number"))?)
            }
        },
        Kind::Bool => match v {
            Value::Bytes(b) => Cell::B(b.iter().any(|x| *x != 0)),
            other => Cell::B(integer(other)? != 0),
        },
        Kind::Bits { bytes } => {
            let b = match v {
                Value::Bytes(b) => b.clone(),
                other => (integer(other)? as u64).to_be_bytes().to_vec(),
            };
            // Big-endian, exactly ⌈n/8⌉ bytes whichever way it was read.
            let mut out = vec![0u8; *bytes];
            let take = b.len().min(*bytes);
            out[*bytes - take..].copy_from_slice(&b[b.len() - take..]);
            Cell::Bytes(Cow::Owned(out))
        }
        Kind::Text { charset } => {
            let b = text(v)?;
            match origin {
                // The connection's character set is utf8mb4: the server converted.
                Origin::Query => Cell::S(utf8(b)?),
                // The binlog carries the bytes as stored, in the column's character set.
                Origin::Binlog => Cell::S(match b {
                    Cow::Borrowed(b) => charset.decode(b)?,
                    Cow::Owned(b) => Cow::Owned(charset.decode(&b)?.into_owned()),
                }),
            }
        }
        Kind::Json => {
            let b = text(v)?;
            let json: serde_json::Value =
                serde_json::from_slice(&b).map_err(|e| format!("JSON: {e}"))?;
            Cell::S(Cow::Owned(json.to_string()))
        }
        Kind::Enum { labels } => match (origin, v) {
            (Origin::Binlog, Value::Int(i)) => Cell::S(if *i == 0 {
                Cow::Borrowed("")
            } else {
                labels
                    .get(*i as usize - 1)
                    .map(|l| Cow::Owned(l.clone()))
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
                Cell::S(Cow::Owned(chosen.join(",")))
            }
            (_, other) => Cell::S(utf8(text(other)?)?),
        },
        Kind::FixedBinary { len } => {
            let b = text(v)?;
            if origin == Origin::Binlog && b.len() < *len {
                let mut b = b.into_owned();
                b.resize(*len, 0);
                Cell::Bytes(Cow::Owned(b))
            } else {
                Cell::Bytes(b)
            }
        }
        Kind::Binary => Cell::Bytes(text(v)?),
        Kind::Geometry => {
            let b = text(v)?;
            if b.len() < 4 {
                return Err(format!("geometry of {} bytes has no SRID prefix", b.len()));
            }
            Cell::Bytes(match b {
                Cow::Borrowed(b) => Cow::Borrowed(&b[4..]),
                Cow::Owned(b) => Cow::Owned(b[4..].to_vec()),
            })
        }
        Kind::Date => match v {
            Value::Date(y, m, d, ..) => days(*y, *m, *d)
                .map(Cell::Days)
                .unwrap_or(Cell::NoEquivalent),
            other => return Err(format!("unexpected DATE value {other:?}")),
        },
        Kind::DateTime => match v {
            Value::Date(y, mo, d, h, mi, s, us) => micros(*y, *mo, *d, *h, *mi, *s, *us)
                .map(Cell::Micros)
                .unwrap_or(Cell::NoEquivalent),
            other => return Err(format!("unexpected DATETIME value {other:?}")),
        },
        Kind::Timestamp => match v {
            // Read with the session in UTC.
            Value::Date(y, mo, d, h, mi, s, us) => micros(*y, *mo, *d, *h, *mi, *s, *us)
                .map(Cell::Micros)
                .unwrap_or(Cell::NoEquivalent),
            Value::Bytes(b) => epoch_text_micros(b)?
                .map(Cell::Micros)
                .unwrap_or(Cell::NoEquivalent),
            Value::Int(0) => Cell::NoEquivalent,
            Value::Int(sec) => Cell::Micros(sec * 1_000_000),
            other => return Err(format!("unexpected TIMESTAMP value {other:?}")),
        },
        Kind::Time { fsp } => match v {
            Value::Time(neg, days, h, m, s, us) => {
                let hours = *days as u64 * 24 + *h as u64;
                let mut t = format!("{}{hours:02}:{m:02}:{s:02}", if *neg { "-" } else { "" });
                if *fsp > 0 {
                    let frac = format!("{us:06}");
                    t.push('.');
                    t.push_str(&frac[..(*fsp as usize).min(6)]);
                }
                Cell::S(Cow::Owned(t))
            }
            other => Cell::S(utf8(text(other)?)?),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch is full by bytes as well as rows: values of 100 MB fill one in three rows,
    /// far below the 2 GiB one array can hold.
    #[test]
    fn batches_fill_by_bytes() {
        let def = ColumnDef {
            name: "v".into(),
            data_type: "longblob".into(),
            column_type: "longblob".into(),
            charset: None,
            nullable: true,
        };
        let mut b = RowsBuilder::new(std::slice::from_ref(&def));
        let big = vec![7u8; 100 << 20];
        for rows in 1..=3 {
            assert!(!b.is_full(usize::MAX), "full after {} rows", rows - 1);
            b.push_row(vec![Value::Bytes(big.clone())], Origin::Query)
                .unwrap();
        }
        assert!(b.is_full(usize::MAX));
        assert_eq!(b.finish().num_rows(), 3);
        assert!(!b.is_full(usize::MAX), "a finished batch starts empty");
    }

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
        assert!(matches!(convert(&e, &Value::Int(2), Origin::Binlog), Ok(Cell::S(s)) if s == "y"));
        let s = kind("set", "set('a','b','c')");
        assert!(
            matches!(convert(&s, &Value::Bytes(vec![0b101]), Origin::Binlog), Ok(Cell::S(s)) if s == "a,c")
        );
        let t = kind("timestamp", "timestamp(6)");
        let (text, date) = (
            Value::Bytes(b"1.5".to_vec()),
            Value::Date(1970, 1, 1, 0, 0, 1, 500_000),
        );
        let a = convert(&t, &text, Origin::Binlog);
        assert!(matches!(a, Ok(Cell::Micros(1_500_000))));
        let b = convert(&t, &date, Origin::Query);
        assert!(matches!(b, Ok(Cell::Micros(1_500_000))));
        let tm = kind("time", "time(2)");
        assert!(
            matches!(convert(&tm, &Value::Time(true, 34, 22, 59, 59, 120_000), Origin::Binlog), Ok(Cell::S(s)) if s == "-838:59:59.12")
        );
        let latin = kind("varchar", "varchar(5)");
        assert!(
            matches!(convert(&latin, &Value::Bytes(vec![0xe9]), Origin::Binlog), Ok(Cell::S(s)) if s == "é")
        );
        let d = kind("date", "date");
        assert!(matches!(
            convert(&d, &Value::Date(0, 0, 0, 0, 0, 0, 0), Origin::Query),
            Ok(Cell::NoEquivalent)
        ));
    }

    /// Bytes that are not text in their character set are refused the same way whether a
    /// snapshot query or the binlog read them (never landed with U+FFFD).
    #[test]
    fn invalid_text_is_refused_by_snapshot_and_binlog_alike() {
        let mut utf8 = kind("varchar", "varchar(5)");
        if let Kind::Text { charset } = &mut utf8 {
            *charset = crate::mysql::columns::Charset::Utf8;
        }
        let bad = Value::Bytes(vec![b'a', 0xc3, 0x28]);
        for origin in [Origin::Query, Origin::Binlog] {
            let err = convert(&utf8, &bad, origin).err().unwrap();
            assert!(err.contains("invalid UTF-8 at byte 1"), "{origin:?}: {err}");
        }
        // A row refused whole, named by column, the builder as it was.
        let defs = vec![
            ColumnDef {
                name: "id".into(),
                data_type: "int".into(),
                column_type: "int(11)".into(),
                charset: None,
                nullable: false,
            },
            ColumnDef {
                name: "v".into(),
                data_type: "varchar".into(),
                column_type: "varchar(5)".into(),
                charset: Some("utf8mb4".into()),
                nullable: true,
            },
        ];
        let mut b = RowsBuilder::new(&defs).with_keys(vec![0]);
        b.push_row(
            vec![Value::Int(1), Value::Bytes(b"ok".to_vec())],
            Origin::Query,
        )
        .unwrap();
        let r = b
            .push_row(vec![Value::Int(2), bad.clone()], Origin::Binlog)
            .unwrap_err();
        assert_eq!(r.column, "v");
        assert!(r.raw.starts_with("id = 2, v = "), "{}", r.raw);
        let r = b
            .push_row(
                vec![Value::NULL, Value::Bytes(b"x".to_vec())],
                Origin::Query,
            )
            .unwrap_err();
        assert_eq!(r.column, "id");
        assert!(r.message.contains("NULL in a key column"), "{}", r.message);
        assert_eq!(b.len(), 1);
        assert_eq!(b.finish().num_rows(), 1);
    }
}
