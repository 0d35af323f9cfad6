//! Typed values into Arrow columns, for the sources whose drivers decode values themselves
//! (MySQL's protocol and binlog, PostgreSQL's binary COPY): each converts a value to a
//! [`Cell`], checks it [`fits`] its column's [`Builder`], and [`append`]s it.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, Int8Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, TimeUnit};

/// A converted value, before it goes into its builder; text and bytes borrow the row's
/// value where they can (the builder copies them once).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Null,
    /// A value with no Arrow equivalent (MySQL's zero dates, PostgreSQL's ±infinity):
    /// NULL, counted.
    NoEquivalent,
    I(i64),
    D(i128),
    F(f64),
    B(bool),
    S(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
    Days(i32),
    Micros(i64),
}

/// One column's Arrow builder.
pub enum Builder {
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
    /// The builder of a column of type `t` (Decimal128's precision and scale, a
    /// timestamp's zone kept).
    pub fn for_type(t: &DataType) -> Builder {
        match t {
            DataType::Int8 => Builder::I8(Int8Builder::new()),
            DataType::Int16 => Builder::I16(Int16Builder::new()),
            DataType::Int32 => Builder::I32(Int32Builder::new()),
            DataType::Int64 => Builder::I64(Int64Builder::new()),
            DataType::Decimal128(..) => {
                Builder::Dec(Decimal128Builder::new().with_data_type(t.clone()))
            }
            DataType::Float32 => Builder::F32(Float32Builder::new()),
            DataType::Float64 => Builder::F64(Float64Builder::new()),
            DataType::Boolean => Builder::Bool(BooleanBuilder::new()),
            DataType::Binary => Builder::Bin(BinaryBuilder::new()),
            DataType::Date32 => Builder::Date(Date32Builder::new()),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                Builder::Ts(TimestampMicrosecondBuilder::new().with_timezone_opt(tz.clone()))
            }
            // Text, and any type a source renders as text.
            _ => Builder::Str(StringBuilder::new()),
        }
    }

    pub fn null(&mut self) {
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

    pub fn finish(&mut self) -> ArrayRef {
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

/// `cell` as its column's builder takes it (integers narrowed), or why it does not fit.
pub fn fits<'a>(b: &Builder, cell: Cell<'a>) -> Result<Cell<'a>, String> {
    fn range(v: i64, min: i64, max: i64) -> Result<(), String> {
        (min..=max)
            .contains(&v)
            .then_some(())
            .ok_or_else(|| format!("{v} is out of range"))
    }
    match (b, &cell) {
        (_, Cell::Null | Cell::NoEquivalent) => {}
        (Builder::I8(_), Cell::I(v)) => range(*v, i8::MIN as i64, i8::MAX as i64)?,
        (Builder::I16(_), Cell::I(v)) => range(*v, i16::MIN as i64, i16::MAX as i64)?,
        (Builder::I32(_), Cell::I(v)) => range(*v, i32::MIN as i64, i32::MAX as i64)?,
        (Builder::I64(_), Cell::I(_))
        | (Builder::Dec(_), Cell::D(_))
        | (Builder::F32(_) | Builder::F64(_), Cell::F(_))
        | (Builder::Bool(_), Cell::B(_))
        | (Builder::Str(_), Cell::S(_))
        | (Builder::Bin(_), Cell::Bytes(_))
        | (Builder::Date(_), Cell::Days(_))
        | (Builder::Ts(_), Cell::Micros(_)) => {}
        _ => return Err("value does not fit the column's Arrow type".into()),
    }
    Ok(cell)
}

/// Appends a converted value that [`fits`] its column's builder.
pub fn append(b: &mut Builder, cell: Cell) {
    match (b, cell) {
        (b, Cell::Null | Cell::NoEquivalent) => b.null(),
        (Builder::I8(b), Cell::I(v)) => b.append_value(v as i8),
        (Builder::I16(b), Cell::I(v)) => b.append_value(v as i16),
        (Builder::I32(b), Cell::I(v)) => b.append_value(v as i32),
        (Builder::I64(b), Cell::I(v)) => b.append_value(v),
        (Builder::Dec(b), Cell::D(v)) => b.append_value(v),
        (Builder::F32(b), Cell::F(v)) => b.append_value(v as f32),
        (Builder::F64(b), Cell::F(v)) => b.append_value(v),
        (Builder::Bool(b), Cell::B(v)) => b.append_value(v),
        (Builder::Str(b), Cell::S(v)) => b.append_value(v),
        (Builder::Bin(b), Cell::Bytes(v)) => b.append_value(v),
        (Builder::Date(b), Cell::Days(v)) => b.append_value(v),
        (Builder::Ts(b), Cell::Micros(v)) => b.append_value(v),
        _ => unreachable!("checked by fits"),
    }
}
