//! Rows of text fields into Arrow arrays of the table's types, one row at a time and
//! all-or-nothing: a row whose any field fails to parse adds nothing and is reported.

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};

use super::BATCH_ROWS;
use crate::values::{
    parse_bool, parse_date, parse_decimal, parse_int, parse_timestamp, parse_timestamptz,
};
use crate::SourceError;

/// A field parsed but not yet pushed (so a later bad field can abandon the row).
#[derive(Debug, Clone, Copy)]
enum Parsed {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Dec(i128),
    Date(i32),
    Micros(i64),
    /// The field's text itself (text and binary columns).
    Text,
}

enum Builder {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Dec(Decimal128Builder, u8, i8),
    Utf8(StringBuilder),
    Bin(BinaryBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder, Option<Arc<str>>),
}

impl Builder {
    fn new(t: &DataType, cap: usize) -> Result<Builder, String> {
        Ok(match t {
            DataType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(cap)),
            DataType::Int16 => Builder::I16(Int16Builder::with_capacity(cap)),
            DataType::Int32 => Builder::I32(Int32Builder::with_capacity(cap)),
            DataType::Int64 => Builder::I64(Int64Builder::with_capacity(cap)),
            DataType::Float32 => Builder::F32(Float32Builder::with_capacity(cap)),
            DataType::Float64 => Builder::F64(Float64Builder::with_capacity(cap)),
            DataType::Decimal128(p, s) => Builder::Dec(
                Decimal128Builder::with_capacity(cap)
                    .with_precision_and_scale(*p, *s)
                    .map_err(|e| e.to_string())?,
                *p,
                *s,
            ),
            DataType::Utf8 => Builder::Utf8(StringBuilder::with_capacity(cap, cap * 16)),
            DataType::Binary => Builder::Bin(BinaryBuilder::with_capacity(cap, cap * 16)),
            DataType::Date32 => Builder::Date(Date32Builder::with_capacity(cap)),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                Builder::Ts(TimestampMicrosecondBuilder::with_capacity(cap), tz.clone())
            }
            other => return Err(format!("column type {other} cannot be read from text")),
        })
    }

    fn parse(&self, s: &str) -> Result<Parsed, String> {
        Ok(match self {
            Builder::Bool(_) => Parsed::Bool(parse_bool(s)?),
            Builder::I16(_) => Parsed::Int(int_in(s, i16::MIN as i64, i16::MAX as i64)?),
            Builder::I32(_) => Parsed::Int(int_in(s, i32::MIN as i64, i32::MAX as i64)?),
            Builder::I64(_) => Parsed::Int(parse_int(s)?),
            Builder::F32(_) | Builder::F64(_) => Parsed::Float(
                s.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("`{s}` is not a number"))?,
            ),
            Builder::Dec(_, p, sc) => Parsed::Dec(parse_decimal(s, *p, *sc)?),
            Builder::Utf8(_) | Builder::Bin(_) => Parsed::Text,
            Builder::Date(_) => Parsed::Date(parse_date(s)?),
            Builder::Ts(_, None) => Parsed::Micros(parse_timestamp(s)?),
            Builder::Ts(_, Some(_)) => Parsed::Micros(parse_timestamptz(s)?),
        })
    }

    fn push(&mut self, p: Parsed, text: Option<&str>) {
        match (self, p) {
            (b, Parsed::Null) => b.push_null(),
            (Builder::Bool(b), Parsed::Bool(v)) => b.append_value(v),
            (Builder::I16(b), Parsed::Int(v)) => b.append_value(v as i16),
            (Builder::I32(b), Parsed::Int(v)) => b.append_value(v as i32),
            (Builder::I64(b), Parsed::Int(v)) => b.append_value(v),
            (Builder::F32(b), Parsed::Float(v)) => b.append_value(v as f32),
            (Builder::F64(b), Parsed::Float(v)) => b.append_value(v),
            (Builder::Dec(b, ..), Parsed::Dec(v)) => b.append_value(v),
            (Builder::Utf8(b), Parsed::Text) => b.append_value(text.unwrap_or_default()),
            (Builder::Bin(b), Parsed::Text) => b.append_value(text.unwrap_or_default().as_bytes()),
            (Builder::Date(b), Parsed::Date(v)) => b.append_value(v),
            (Builder::Ts(b, _), Parsed::Micros(v)) => b.append_value(v),
            // parse() and push() are paired by construction; anything else is a bug.
            (_, p) => unreachable!("parsed value {p:?} does not match its builder"),
        }
    }

    fn push_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::I16(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::F32(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::Dec(b, ..) => b.append_null(),
            Builder::Utf8(b) => b.append_null(),
            Builder::Bin(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Ts(b, _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::F32(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Dec(b, p, s) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*p, *s)
                    .expect("validated at construction"),
            ),
            Builder::Utf8(b) => Arc::new(b.finish()),
            Builder::Bin(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Ts(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
        }
    }

    fn len(&self) -> usize {
        match self {
            Builder::Bool(b) => b.len(),
            Builder::I16(b) => b.len(),
            Builder::I32(b) => b.len(),
            Builder::I64(b) => b.len(),
            Builder::F32(b) => b.len(),
            Builder::F64(b) => b.len(),
            Builder::Dec(b, ..) => b.len(),
            Builder::Utf8(b) => b.len(),
            Builder::Bin(b) => b.len(),
            Builder::Date(b) => b.len(),
            Builder::Ts(b, _) => b.len(),
        }
    }
}

fn int_in(s: &str, min: i64, max: i64) -> Result<i64, String> {
    let v = parse_int(s)?;
    if v < min || v > max {
        return Err(format!("`{s}` is out of range {min}..={max}"));
    }
    Ok(v)
}

/// `n` copies of `value` (None: NULL) as a column of type `t`, parsed as a text field is.
pub fn repeat_value(t: &DataType, value: Option<&str>, n: usize) -> Result<ArrayRef, String> {
    let mut b = Builder::new(t, n)?;
    let parsed = match value {
        Some(v) => b.parse(v)?,
        None => Parsed::Null,
    };
    for _ in 0..n {
        b.push(parsed, value);
    }
    Ok(b.finish())
}

/// Why a row was refused: which column, and the reason.
#[derive(Debug)]
pub struct RowError {
    pub column: usize,
    pub reason: String,
}

/// Accumulates rows into batches of the table's schema.
///
/// A field that does not parse as its column's type goes to the first of the column's variant
/// columns (`price__text`, see `sluice_core::schema`) that takes it, and the column is NULL in
/// that row; only a field no column takes refuses the row.
pub struct RowBatcher {
    schema: SchemaRef,
    builders: Vec<Builder>,
    parsed: Vec<Parsed>,
    /// Per column, the field whose text it holds in the current row (itself, or the column a
    /// variant took the value of).
    text_of: Vec<usize>,
    variants: Vec<Vec<usize>>,
    batch_rows: usize,
    /// Bytes of text in the current batch.
    bytes: usize,
    /// Key columns: a row with NULL in one (or whose key value went to a variant column) is
    /// refused, since merge cannot place it.
    keys: Vec<usize>,
}

/// Rows the builders reserve room for at first.
const INITIAL_ROWS: usize = 1024;

impl RowBatcher {
    pub fn new(schema: SchemaRef, batch_rows: usize) -> Result<RowBatcher, String> {
        // Builders grow as rows come (and start empty again after each batch): reserving a
        // whole batch up front gives a small file's few rows arrays of a full batch's size,
        // which the lake writer then holds and copies.
        let reserve = batch_rows.min(INITIAL_ROWS);
        let builders = schema
            .fields()
            .iter()
            .map(|f| {
                Builder::new(f.data_type(), reserve)
                    .map_err(|e| format!("column {}: {e}", f.name()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let n = builders.len();
        Ok(RowBatcher {
            variants: sluice_core::schema::variants(&schema),
            schema,
            builders,
            parsed: vec![Parsed::Null; n],
            text_of: (0..n).collect(),
            batch_rows,
            bytes: 0,
            keys: Vec::new(),
        })
    }

    /// A batcher for reading `file`, in batches of [`BATCH_ROWS`], refusing rows without a
    /// value in any of the `keys` columns of `schema`.
    pub fn for_file(
        schema: &SchemaRef,
        file: &str,
        keys: &[String],
    ) -> Result<RowBatcher, SourceError> {
        let mut b =
            RowBatcher::new(schema.clone(), BATCH_ROWS).map_err(|message| SourceError::File {
                file: file.into(),
                message,
            })?;
        b.keys = keys
            .iter()
            .filter_map(|k| schema.index_of(k).ok())
            .collect();
        Ok(b)
    }

    /// Adds one row (one entry per schema column; None is NULL), or nothing and an error.
    pub fn push_row(&mut self, fields: &[Option<&str>]) -> Result<(), RowError> {
        debug_assert_eq!(fields.len(), self.builders.len());
        for (i, t) in self.text_of.iter_mut().enumerate() {
            *t = i;
        }
        for (i, (b, f)) in self.builders.iter().zip(fields).enumerate() {
            self.parsed[i] = match f {
                // A variant already holding an earlier column's value in this row.
                None if self.text_of[i] != i => continue,
                None => {
                    if !self.schema.field(i).is_nullable() {
                        return Err(RowError {
                            column: i,
                            reason: "NULL in a NOT NULL column".into(),
                        });
                    }
                    Parsed::Null
                }
                Some(s) => match b.parse(s) {
                    Ok(p) => p,
                    Err(reason) => {
                        let taker = self.variants[i].iter().copied().find_map(|v| {
                            let free = fields[v].is_none();
                            free.then(|| self.builders[v].parse(s).ok().map(|p| (v, p)))
                                .flatten()
                        });
                        let Some((v, p)) = taker else {
                            return Err(RowError { column: i, reason });
                        };
                        self.parsed[v] = p;
                        self.text_of[v] = i;
                        Parsed::Null
                    }
                },
            };
        }
        if let Some(&k) = self
            .keys
            .iter()
            .find(|&&k| matches!(self.parsed[k], Parsed::Null))
        {
            let reason = match fields[k] {
                None => "NULL in a key column (merge cannot place the row)".to_string(),
                Some(v) => format!(
                    "key value `{v}` is not a {} (merge cannot place the row)",
                    sluice_core::schema::type_name(self.schema.field(k).data_type())
                ),
            };
            return Err(RowError { column: k, reason });
        }
        for (i, b) in self.builders.iter_mut().enumerate() {
            b.push(self.parsed[i], fields[self.text_of[i]]);
        }
        self.bytes += fields.iter().flatten().map(|f| f.len()).sum::<usize>();
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.builders.first().map(Builder::len).unwrap_or(0)
    }

    /// Full by rows, or by bytes (a batch of long values stays far from the 2 GiB an
    /// array can hold).
    pub fn is_full(&self) -> bool {
        self.len() >= self.batch_rows || self.bytes >= sluice_core::change::BATCH_BYTES
    }

    /// The rows so far as a batch (None when empty); starts a new batch.
    pub fn take(&mut self) -> Option<RecordBatch> {
        if self.len() == 0 {
            return None;
        }
        let cols: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        self.bytes = 0;
        Some(RecordBatch::try_new(self.schema.clone(), cols).expect("builders follow the schema"))
    }
}
