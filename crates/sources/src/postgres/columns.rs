//! PostgreSQL column types, mapped in this one place: what each becomes in Arrow, and how a
//! read selects it so its binary value decodes exactly.
//!
//! | PostgreSQL | Arrow | on the wire |
//! |---|---|---|
//! | bool, int2, int4, int8, float4, float8 | the same | binary |
//! | numeric(p, s), 0 ≤ s ≤ p ≤ 38 | Decimal128(p, s) (NaN, ±Infinity: rejected) | text |
//! | numeric unbounded or wider, money | Utf8, exact (`NaN`, `Infinity` kept) | text |
//! | text, varchar, char, name, citext | Utf8 (char keeps its padding) | binary (UTF-8) |
//! | bytea | Binary | binary |
//! | date | Date32 (BC dates exact; ±infinity: NULL, counted) | binary |
//! | timestamp, timestamptz | Timestamp(µs), timestamptz in UTC (±infinity: NULL, counted) | binary |
//! | json, jsonb, arrays, composite types | Utf8 marked JSON (arrays and rows as JSON) | text |
//! | anything else (time, timetz, interval, uuid, enums, inet, cidr, macaddr, bit strings, tsvector, ranges, xml…) | Utf8, as the server writes it | text |
//!
//! Domains are read as their base type. Sessions run with `TimeZone = UTC`,
//! `DateStyle = ISO`, `IntervalStyle = iso_8601` and `extra_float_digits = 3`, so text
//! values do not depend on the server's settings.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use sluice_core::names::quote_ident;
use sluice_core::types::{json_field, MAX_DECIMAL_PRECISION};

/// A column as the catalog describes it (kept in the lake with the table's schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    /// As `format_type` writes it (`numeric(12,2)`, `character varying(40)`), for messages.
    pub column_type: String,
    /// The type's name, a domain's base type's (`int4`, `_text`, `numeric`).
    pub type_name: String,
    /// `pg_type.typtype`: b base, c composite, e enum, r range, m multirange, p pseudo.
    pub type_type: String,
    /// `pg_type.typcategory`: A array, S string, N numeric…
    pub category: String,
    /// The type modifier (-1: none): a numeric's precision and scale.
    pub typmod: i32,
}

/// What a column becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// Text, read as it is stored (string types: their binary form is their UTF-8).
    Text,
    /// Any other type, as the server writes it as text.
    AsText,
    /// JSON text: json and jsonb as text, arrays and composite values through `to_jsonb`.
    Json,
    Bytes,
    Date,
    Timestamp,
    Timestamptz,
}

impl ColumnDef {
    pub fn kind(&self) -> Kind {
        if self.category == "A" || self.type_type == "c" {
            return Kind::Json;
        }
        match self.type_name.as_str() {
            "bool" => Kind::Bool,
            "int2" => Kind::Int16,
            "int4" => Kind::Int32,
            "int8" => Kind::Int64,
            "float4" => Kind::Float32,
            "float8" => Kind::Float64,
            "numeric" => match numeric_shape(self.typmod) {
                Some((p, s))
                    if (0..=p).contains(&s) && (1..=MAX_DECIMAL_PRECISION as i32).contains(&p) =>
                {
                    Kind::Decimal {
                        precision: p as u8,
                        scale: s as i8,
                    }
                }
                _ => Kind::AsText,
            },
            "json" | "jsonb" => Kind::Json,
            "bytea" => Kind::Bytes,
            "date" => Kind::Date,
            "timestamp" => Kind::Timestamp,
            "timestamptz" => Kind::Timestamptz,
            // Enums are category E, not S: their binary form is their label too, but the
            // text cast keeps one rule for everything else.
            "text" | "varchar" | "bpchar" | "name" | "citext" => Kind::Text,
            _ => Kind::AsText,
        }
    }

    /// The expression a read selects for this column (its value as the decoder takes it).
    pub fn select(&self) -> String {
        let c = quote_ident(&self.name);
        match self.kind() {
            Kind::Decimal { .. } => format!("{c}::text"),
            Kind::AsText if self.type_name == "money" => format!("{c}::numeric::text"),
            Kind::AsText => format!("{c}::text"),
            Kind::Json if self.type_name == "json" || self.type_name == "jsonb" => {
                format!("{c}::text")
            }
            Kind::Json => format!("to_jsonb({c})::text"),
            _ => c,
        }
    }
}

impl Kind {
    pub fn arrow_type(&self) -> DataType {
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int16 => DataType::Int16,
            Kind::Int32 => DataType::Int32,
            Kind::Int64 => DataType::Int64,
            Kind::Float32 => DataType::Float32,
            Kind::Float64 => DataType::Float64,
            Kind::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            Kind::Text | Kind::AsText | Kind::Json => DataType::Utf8,
            Kind::Bytes => DataType::Binary,
            Kind::Date => DataType::Date32,
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    /// Whether an incremental read can follow a column of this kind (its values number in
    /// order: integers, days, microseconds).
    pub fn is_cursor(&self) -> bool {
        matches!(
            self,
            Kind::Int16
                | Kind::Int32
                | Kind::Int64
                | Kind::Date
                | Kind::Timestamp
                | Kind::Timestamptz
        )
    }
}

/// A numeric's `(precision, scale)` from its type modifier; None when unbounded.
pub fn numeric_shape(typmod: i32) -> Option<(i32, i32)> {
    if typmod < 4 {
        return None;
    }
    let t = typmod - 4;
    let precision = (t >> 16) & 0xffff;
    // PostgreSQL 15 allows a negative scale: 11 bits, sign extended.
    let scale = ((t & 0x7ff) ^ 1024) - 1024;
    Some((precision, scale))
}

/// The table's Arrow schema (every column nullable: a constraint may be dropped later).
pub fn arrow_schema(columns: &[ColumnDef]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| match c.kind() {
                Kind::Json => json_field(&c.name),
                k => Field::new(&c.name, k.arrow_type(), true),
            })
            .collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(type_name: &str, typmod: i32) -> ColumnDef {
        ColumnDef {
            name: "c".into(),
            column_type: type_name.into(),
            type_name: type_name.into(),
            type_type: "b".into(),
            category: "N".into(),
            typmod,
        }
    }

    #[test]
    fn numerics_by_their_modifier() {
        // numeric(12,2): ((12 << 16) | 2) + 4
        let n = def("numeric", ((12 << 16) | 2) + 4);
        assert_eq!(
            n.kind(),
            Kind::Decimal {
                precision: 12,
                scale: 2
            }
        );
        assert_eq!(n.select(), "\"c\"::text");
        assert_eq!(def("numeric", -1).kind(), Kind::AsText);
        assert_eq!(def("numeric", (39 << 16) + 4).kind(), Kind::AsText);
        // numeric(5,-2) (PostgreSQL 15): the scale's 11 bits are signed.
        assert_eq!(
            numeric_shape(((5 << 16) | (0x7ff & -2i32)) + 4),
            Some((5, -2))
        );
        assert_eq!(
            def("numeric", ((5 << 16) | (0x7ff & -2i32)) + 4).kind(),
            Kind::AsText
        );
        assert_eq!(def("money", -1).select(), "\"c\"::numeric::text");
    }

    #[test]
    fn arrays_and_rows_are_json_text_and_strings_are_read_as_stored() {
        let mut a = def("_int4", -1);
        a.category = "A".into();
        assert_eq!(a.kind(), Kind::Json);
        assert_eq!(a.select(), "to_jsonb(\"c\")::text");
        let mut row = def("address", -1);
        row.type_type = "c".into();
        assert_eq!(row.kind(), Kind::Json);
        assert_eq!(def("jsonb", -1).select(), "\"c\"::text");
        assert_eq!(def("bpchar", 9).select(), "\"c\"");
        assert_eq!(def("uuid", -1).select(), "\"c\"::text");
        let schema = arrow_schema(&[def("jsonb", -1), def("timestamptz", -1)]);
        assert!(sluice_core::types::is_json(schema.field(0)));
        assert_eq!(
            schema.field(1).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
    }
}
