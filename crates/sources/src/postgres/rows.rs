//! Binary COPY rows into Arrow batches, one row at a time and all or nothing: a row whose any
//! value does not convert adds nothing and is kept, with the reason, for the quarantine.

use std::borrow::Cow;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use tokio_postgres::types::{FromSql, Type};

use super::columns::{arrow_schema, ColumnDef, Kind};
use crate::typed::{append, Builder, Cell};
use crate::values::parse_decimal;
use sluice_core::reject::Reject;

/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A value's bytes as the server sent them, whatever its type: its column's kind decodes it.
pub struct Raw<'a>(pub &'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn fixed<const N: usize>(raw: &[u8]) -> Result<[u8; N], String> {
    raw.try_into()
        .map_err(|_| format!("{} bytes where {N} were expected", raw.len()))
}

/// Decodes one value of a column of `kind` (as [`ColumnDef::select`] selects it).
fn decode(kind: Kind, raw: &[u8]) -> Result<Cell<'_>, String> {
    Ok(match kind {
        Kind::Bool => Cell::B(fixed::<1>(raw)?[0] != 0),
        Kind::Int16 => Cell::I(i16::from_be_bytes(fixed(raw)?) as i64),
        Kind::Int32 => Cell::I(i32::from_be_bytes(fixed(raw)?) as i64),
        Kind::Int64 => Cell::I(i64::from_be_bytes(fixed(raw)?)),
        Kind::Float32 => Cell::F(f32::from_be_bytes(fixed(raw)?) as f64),
        Kind::Float64 => Cell::F(f64::from_be_bytes(fixed(raw)?)),
        Kind::Decimal { precision, scale } => {
            let text = utf8(raw)?;
            Cell::D(parse_decimal(text, precision, scale).map_err(|e| match text {
                "NaN" | "Infinity" | "-Infinity" => {
                    format!("{text} has no decimal value (make the column unbounded numeric to keep it as text)")
                }
                _ => e,
            })?)
        }
        Kind::Text | Kind::AsText | Kind::Json => Cell::S(Cow::Borrowed(utf8(raw)?)),
        Kind::Bytes => Cell::Bytes(Cow::Borrowed(raw)),
        Kind::Date => match i32::from_be_bytes(fixed(raw)?) {
            i32::MAX | i32::MIN => Cell::NoEquivalent,
            d => Cell::Days(
                d.checked_add(EPOCH_DAYS)
                    .ok_or_else(|| format!("date {d} days from 2000-01-01 is out of range"))?,
            ),
        },
        Kind::Timestamp | Kind::Timestamptz => match i64::from_be_bytes(fixed(raw)?) {
            i64::MAX | i64::MIN => Cell::NoEquivalent,
            us => Cell::Micros(
                us.checked_add(EPOCH_MICROS)
                    .ok_or_else(|| format!("timestamp {us} µs from 2000-01-01 is out of range"))?,
            ),
        },
    })
}

fn utf8(raw: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(raw).map_err(|e| format!("invalid UTF-8: {e}"))
}

/// Builds one table's rows, column by column.
pub struct PgRows {
    defs: Vec<ColumnDef>,
    kinds: Vec<Kind>,
    builders: Vec<Builder>,
    schema: SchemaRef,
    /// Columns that must not be NULL: the key merges match on.
    keys: Vec<usize>,
    rows: usize,
    /// Bytes of values in the current batch.
    bytes: usize,
    /// Values with no Arrow equivalent (±infinity dates and timestamps), landed as NULL.
    pub no_equivalent: u64,
    /// Rows refused since the caller last took them.
    pub rejects: Vec<Reject>,
}

impl PgRows {
    /// A builder for `defs`, refusing rows with NULL in any column named in `key`.
    pub fn new(defs: &[ColumnDef], key: &[String]) -> PgRows {
        let kinds: Vec<Kind> = defs.iter().map(ColumnDef::kind).collect();
        PgRows {
            builders: kinds
                .iter()
                .map(|k| Builder::for_type(&k.arrow_type()))
                .collect(),
            keys: key
                .iter()
                .filter_map(|k| defs.iter().position(|d| &d.name == k))
                .collect(),
            kinds,
            schema: arrow_schema(defs),
            defs: defs.to_vec(),
            rows: 0,
            bytes: 0,
            no_equivalent: 0,
            rejects: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Whether the batch should be finished: `rows` rows, or values past
    /// [`BATCH_BYTES`](sluice_core::change::BATCH_BYTES).
    pub fn is_full(&self, rows: usize) -> bool {
        self.rows >= rows || self.bytes >= sluice_core::change::BATCH_BYTES
    }

    /// Appends one row given as its values' bytes in column order (None: NULL), or keeps it
    /// as a reject of `what` (a chunk, a read) when a value does not convert.
    pub fn push(&mut self, values: &[Option<&[u8]>], what: &str) {
        debug_assert_eq!(values.len(), self.builders.len());
        let mut cells = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let cell = match v {
                None => Ok(Cell::Null),
                Some(raw) => decode(self.kinds[i], raw),
            }
            .and_then(|c| match c {
                Cell::Null | Cell::NoEquivalent if self.keys.contains(&i) => {
                    Err("NULL in a key column (merge cannot place the row)".to_string())
                }
                c => Ok(c),
            });
            match cell {
                Ok(c) => cells.push(c),
                Err(message) => {
                    let reject = self.reject(i, message, values, what);
                    self.rejects.push(reject);
                    return;
                }
            }
        }
        for (b, c) in self.builders.iter_mut().zip(cells) {
            if matches!(c, Cell::NoEquivalent) {
                self.no_equivalent += 1;
            }
            append(b, c);
        }
        self.rows += 1;
        self.bytes += values.iter().flatten().map(|v| v.len()).sum::<usize>();
    }

    /// The rows so far as a batch; the builder starts over.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), columns).expect("builders match the schema")
    }

    fn reject(&self, col: usize, message: String, values: &[Option<&[u8]>], what: &str) -> Reject {
        let raw: Vec<String> = self
            .defs
            .iter()
            .zip(values)
            .map(|(d, v)| format!("{} = {}", d.name, literal(d.kind(), *v)))
            .collect();
        let def = &self.defs[col];
        Reject {
            file: what.to_string(),
            line: 0,
            column: Some(def.name.clone()),
            raw: raw.join(", "),
            reason: format!("column {} ({}): {message}", def.name, def.column_type),
        }
    }
}

/// A value as SQL would write it, for a reject's record.
fn literal(kind: Kind, v: Option<&[u8]>) -> String {
    let Some(raw) = v else {
        return "NULL".into();
    };
    match decode(kind, raw) {
        Ok(Cell::S(s)) => sluice_core::names::quote_literal(&s),
        Ok(Cell::Bytes(b)) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("'\\x{hex}'")
        }
        Ok(Cell::NoEquivalent) => "'infinity'".into(),
        Ok(Cell::Null) => "NULL".into(),
        Ok(c) => format!("{c:?}"),
        Err(_) => sluice_core::names::quote_literal(&String::from_utf8_lossy(raw)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Date32Type, Decimal128Type, Int64Type, TimestampMicrosecondType};

    fn def(name: &str, type_name: &str, typmod: i32) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            column_type: type_name.into(),
            type_name: type_name.into(),
            type_type: "b".into(),
            category: "X".into(),
            typmod,
        }
    }

    #[test]
    fn binary_values_decode_exactly_at_their_edges() {
        assert_eq!(
            decode(Kind::Int64, &i64::MIN.to_be_bytes()),
            Ok(Cell::I(i64::MIN))
        );
        assert_eq!(decode(Kind::Int16, &(-2i16).to_be_bytes()), Ok(Cell::I(-2)));
        assert!(
            matches!(decode(Kind::Float64, &f64::NAN.to_be_bytes()), Ok(Cell::F(f)) if f.is_nan())
        );
        assert_eq!(
            decode(Kind::Float32, &f32::NEG_INFINITY.to_be_bytes()),
            Ok(Cell::F(f64::NEG_INFINITY))
        );
        // 2000-01-01 is day 0 of PostgreSQL and 10,957 of Arrow; 44 BC is far before both.
        assert_eq!(
            decode(Kind::Date, &0i32.to_be_bytes()),
            Ok(Cell::Days(10_957))
        );
        assert_eq!(
            decode(Kind::Date, &(-742_774i32).to_be_bytes()),
            Ok(Cell::Days(-731_817))
        );
        assert_eq!(
            decode(Kind::Date, &i32::MAX.to_be_bytes()),
            Ok(Cell::NoEquivalent)
        );
        assert_eq!(
            decode(Kind::Timestamptz, &i64::MIN.to_be_bytes()),
            Ok(Cell::NoEquivalent)
        );
        assert_eq!(
            decode(Kind::Timestamp, &1i64.to_be_bytes()),
            Ok(Cell::Micros(EPOCH_MICROS + 1))
        );
        let dec = Kind::Decimal {
            precision: 5,
            scale: 2,
        };
        assert_eq!(decode(dec, b"-123.45"), Ok(Cell::D(-12345)));
        assert!(decode(dec, b"NaN")
            .unwrap_err()
            .contains("no decimal value"));
        assert!(decode(Kind::Int32, &[0, 1]).is_err());
        assert!(decode(Kind::Text, &[0xff]).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn rows_go_in_whole_or_are_rejected_with_the_column_and_values() {
        let defs = [
            def("id", "int8", -1),
            def("amount", "numeric", ((5 << 16) | 2) + 4),
            def("day", "date", -1),
            def("at", "timestamptz", -1),
        ];
        let mut rows = PgRows::new(&defs, &["id".to_string()]);
        let id = 7i64.to_be_bytes();
        let inf = i32::MAX.to_be_bytes();
        let at = 0i64.to_be_bytes();
        rows.push(
            &[
                Some(&id[..]),
                Some(&b"1.50"[..]),
                Some(&inf[..]),
                Some(&at[..]),
            ],
            "t chunk 0",
        );
        rows.push(&[Some(&id[..]), Some(&b"NaN"[..]), None, None], "t chunk 0");
        rows.push(&[None, None, None, None], "t chunk 0");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows.no_equivalent, 1);
        assert_eq!(rows.rejects.len(), 2);
        assert_eq!(rows.rejects[0].column.as_deref(), Some("amount"));
        assert!(
            rows.rejects[0].raw.contains("amount = 'NaN'"),
            "{}",
            rows.rejects[0].raw
        );
        assert!(rows.rejects[1].reason.contains("key column"));
        let batch = rows.finish();
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 7);
        assert_eq!(
            batch.column(1).as_primitive::<Decimal128Type>().value(0),
            150
        );
        assert!(batch.column(2).as_primitive::<Date32Type>().is_null(0));
        assert_eq!(
            batch
                .column(3)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            EPOCH_MICROS
        );
        assert!(rows.is_empty());
    }
}
