//! The one mapping from MySQL/MariaDB column definitions to Arrow types.
//!
//! Every column's definition (as `information_schema.COLUMNS` describes it) is kept with the
//! lake table, so binlog rows are decoded with the definitions that were current when they were
//! written, not whatever the table looks like when sluice happens to read them.
//!
//! | MySQL                                   | Arrow                         |
//! |-----------------------------------------|-------------------------------|
//! | TINYINT / SMALLINT / MEDIUMINT, INT / BIGINT | Int8 / Int16 / Int32 / Int64 |
//! | … UNSIGNED                              | the next wider signed type; BIGINT UNSIGNED → Decimal(20,0) |
//! | DECIMAL(p,s), p ≤ 38                    | Decimal128(p,s)               |
//! | DECIMAL(p,s), p > 38                    | Utf8, the exact decimal text (Delta stops at 38 digits) |
//! | FLOAT / DOUBLE                          | Float32 / Float64             |
//! | BIT(1) / BIT(n)                         | Boolean / Binary (big-endian, ⌈n/8⌉ bytes) |
//! | CHAR, VARCHAR, *TEXT, ENUM, SET, JSON   | Utf8 (SET as `a,b`; MySQL JSON normalised) |
//! | BINARY, VARBINARY, *BLOB                | Binary                        |
//! | geometry types                          | Binary, WKB (the 4-byte SRID prefix removed) |
//! | DATE                                    | Date32                        |
//! | DATETIME(fsp)                           | Timestamp(µs)                 |
//! | TIMESTAMP(fsp)                          | Timestamp(µs, UTC)            |
//! | TIME(fsp)                               | Utf8 `[-]H:MM:SS[.f]`, as MySQL prints it (its range, ±838 h, fits no Arrow time type) |
//! | YEAR                                    | Int16                         |
//!
//! Zero dates (`0000-00-00`) have no Arrow value: they become NULL and are counted.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// Column definition as read from `information_schema.COLUMNS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    /// `DATA_TYPE`, lowercase: `int`, `varchar`, `enum`, …
    pub data_type: String,
    /// `COLUMN_TYPE` as the server gives it: `int(10) unsigned`, `enum('Small','it''s')`,
    /// `decimal(65,30)`, … (ENUM and SET labels keep their case: they are the values).
    pub column_type: String,
    /// `CHARACTER_SET_NAME` (None for non-text columns).
    pub charset: Option<String>,
    pub nullable: bool,
}

/// How values of a column become Arrow values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An integer held in `bits`, stored by MySQL in `width` bits, signed or not (the binlog
    /// does not say which unless binlog_row_metadata=FULL, so values are re-read by width).
    Int {
        bits: u8,
        width: u8,
        unsigned: bool,
    },
    /// BIGINT UNSIGNED: its maximum needs 20 digits.
    UnsignedBig,
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// DECIMAL wider than Arrow/Delta's 38 digits: kept as its exact text.
    WideDecimal,
    Float,
    Double,
    Bool,
    /// BIT(n), n > 1.
    Bits {
        bytes: usize,
    },
    Text {
        charset: Charset,
    },
    Json,
    Enum {
        labels: Vec<String>,
    },
    Set {
        labels: Vec<String>,
    },
    /// BINARY(n): the binlog drops trailing zero bytes, which are part of the value.
    FixedBinary {
        len: usize,
    },
    Binary,
    Geometry,
    Date,
    DateTime,
    Timestamp,
    Time {
        fsp: u8,
    },
    Year,
}

/// Character sets whose bytes the binlog carries as stored (a snapshot query gets them
/// converted to utf8mb4 by the server; the binlog must decode them itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    Utf8,
    /// MySQL's latin1 is Windows-1252.
    Latin1,
    /// UTF-32 (big-endian code points).
    Utf32,
    /// Decoded by `encoding_rs`.
    Other(&'static encoding_rs::Encoding),
    /// A character set sluice cannot decode from the binlog (named).
    Unsupported(&'static str),
}

/// MySQL/MariaDB character sets `encoding_rs` decodes (exactly, or as a superset that maps
/// every byte sequence of the smaller set the same way).
const ENCODINGS: &[(&str, &str)] = &[
    ("cp1250", "windows-1250"),
    ("cp1251", "windows-1251"),
    ("cp1256", "windows-1256"),
    ("cp1257", "windows-1257"),
    ("latin2", "iso-8859-2"),
    ("latin5", "windows-1254"),
    ("latin7", "iso-8859-13"),
    ("greek", "iso-8859-7"),
    ("hebrew", "iso-8859-8"),
    ("tis620", "windows-874"),
    ("koi8r", "koi8-r"),
    ("koi8u", "koi8-u"),
    ("cp866", "ibm866"),
    ("macroman", "macintosh"),
    ("sjis", "shift_jis"),
    ("cp932", "shift_jis"),
    ("ujis", "euc-jp"),
    ("eucjpms", "euc-jp"),
    ("gbk", "gbk"),
    ("gb2312", "gbk"),
    ("gb18030", "gb18030"),
    ("big5", "big5"),
    ("euckr", "euc-kr"),
    ("ucs2", "utf-16be"),
    ("utf16", "utf-16be"),
    ("utf16le", "utf-16le"),
];

/// The character sets without a decoder here (named in errors).
const UNSUPPORTED: &[&str] = &[
    "dec8", "cp850", "hp8", "swe7", "armscii8", "keybcs2", "macce", "cp852", "geostd8",
];

impl Charset {
    fn of(name: Option<&str>) -> Charset {
        match name.unwrap_or("utf8mb4") {
            "utf8" | "utf8mb3" | "utf8mb4" | "ascii" | "binary" => Charset::Utf8,
            "latin1" => Charset::Latin1,
            "utf32" => Charset::Utf32,
            other => match ENCODINGS.iter().find(|(n, _)| *n == other) {
                Some((_, label)) => Charset::Other(
                    encoding_rs::Encoding::for_label(label.as_bytes())
                        .expect("encoding_rs knows every label of ENCODINGS"),
                ),
                None => Charset::Unsupported(
                    UNSUPPORTED
                        .iter()
                        .find(|n| **n == other)
                        .copied()
                        .unwrap_or("an unknown character set"),
                ),
            },
        }
    }

    /// Text of stored bytes, or why they are not text in this character set (bytes that do
    /// not decode are refused, as a snapshot query refuses them, never replaced).
    pub fn decode(self, bytes: &[u8]) -> Result<std::borrow::Cow<'_, str>, String> {
        let enc = match self {
            Charset::Utf8 => {
                return std::str::from_utf8(bytes)
                    .map(std::borrow::Cow::Borrowed)
                    .map_err(|e| {
                        format!(
                            "invalid UTF-8 at byte {} (quarantined rather than landed with replacement characters)",
                            e.valid_up_to()
                        )
                    })
            }
            Charset::Utf32 => {
                if !bytes.len().is_multiple_of(4) {
                    return Err(format!("{} bytes are not UTF-32", bytes.len()));
                }
                return bytes
                    .chunks(4)
                    .map(|c| {
                        let cp = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                        char::from_u32(cp).ok_or_else(|| format!("U+{cp:X} is not a character"))
                    })
                    .collect::<Result<String, _>>()
                    .map(std::borrow::Cow::Owned);
            }
            Charset::Unsupported(name) => {
                return Err(format!(
                    "character set {name} cannot be decoded from the binlog"
                ))
            }
            // Windows-1252 gives every byte a character.
            Charset::Latin1 => encoding_rs::WINDOWS_1252,
            Charset::Other(enc) => enc,
        };
        match enc.decode_without_bom_handling_and_without_replacement(bytes) {
            Some(text) => Ok(text),
            None => Err(format!("bytes that are not {} text", enc.name())),
        }
    }
}

impl ColumnDef {
    /// Why the binlog's bytes of this column cannot be read as text, if they cannot (its
    /// character set has no decoder here): CDC refuses the table up front, naming the column.
    pub fn binlog_undecodable(&self) -> Option<String> {
        match self.kind() {
            Kind::Text {
                charset: Charset::Unsupported(name),
            } => Some(format!(
                "column `{}` is in character set {}, which sluice cannot decode from the binlog (a snapshot can): convert it (ALTER TABLE ... CONVERT TO CHARACTER SET utf8mb4) or use mode = \"snapshot\"",
                self.name,
                self.charset.as_deref().unwrap_or(name)
            )),
            _ => None,
        }
    }

    /// The conversion for this column; `Err` names what is not understood.
    pub fn kind(&self) -> Kind {
        let ct = self.column_type.as_str();
        let lower = ct.to_ascii_lowercase();
        let unsigned = lower.contains("unsigned");
        let args = type_args(&lower);
        let arg = |i: usize| args.get(i).and_then(|a| a.trim().parse::<u32>().ok());
        match self.data_type.as_str() {
            "tinyint" if unsigned => int(16, 8, true),
            "tinyint" => int(8, 8, false),
            "smallint" if unsigned => int(32, 16, true),
            "smallint" => int(16, 16, false),
            "mediumint" if unsigned => int(32, 24, true),
            "mediumint" => int(32, 24, false),
            "int" | "integer" if unsigned => int(64, 32, true),
            "int" | "integer" => int(32, 32, false),
            "bigint" if unsigned => Kind::UnsignedBig,
            "bigint" => int(64, 64, false),
            "decimal" | "numeric" => {
                let p = arg(0).unwrap_or(10);
                let s = arg(1).unwrap_or(0);
                if p <= 38 {
                    Kind::Decimal {
                        precision: p as u8,
                        scale: s as i8,
                    }
                } else {
                    Kind::WideDecimal
                }
            }
            "float" => Kind::Float,
            "double" | "real" => Kind::Double,
            "bit" if arg(0).unwrap_or(1) == 1 => Kind::Bool,
            "bit" => Kind::Bits {
                bytes: (arg(0).unwrap_or(1) as usize).div_ceil(8),
            },
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => Kind::Text {
                charset: Charset::of(self.charset.as_deref()),
            },
            "json" => Kind::Json,
            "enum" => Kind::Enum {
                labels: quoted_list(ct),
            },
            "set" => Kind::Set {
                labels: quoted_list(ct),
            },
            "binary" => Kind::FixedBinary {
                len: arg(0).unwrap_or(1) as usize,
            },
            "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Kind::Binary,
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
            | "multipolygon" | "geometrycollection" | "geomcollection" => Kind::Geometry,
            "date" => Kind::Date,
            "datetime" => Kind::DateTime,
            "timestamp" => Kind::Timestamp,
            "time" => Kind::Time {
                fsp: arg(0).unwrap_or(0) as u8,
            },
            "year" => Kind::Year,
            // MariaDB's inet4/inet6/uuid and anything newer: kept as text.
            _ => Kind::Text {
                charset: Charset::Utf8,
            },
        }
    }
}

/// Stored definitions with the ENUM and SET labels of `now` where they differ only in case:
/// earlier builds lowercased every `COLUMN_TYPE`, so CDC turned `'Small'` into `'small'`.
/// Any other difference is a real change and is kept for the schema gate to see.
pub fn with_label_case_of(mut stored: Vec<ColumnDef>, now: &[ColumnDef]) -> Vec<ColumnDef> {
    for def in stored
        .iter_mut()
        .filter(|d| matches!(d.data_type.as_str(), "enum" | "set"))
    {
        let same = now.iter().find(|n| {
            n.name == def.name
                && n.data_type == def.data_type
                && n.column_type != def.column_type
                && n.column_type.to_lowercase() == def.column_type
        });
        if let Some(n) = same {
            def.column_type = n.column_type.clone();
        }
    }
    stored
}

fn int(bits: u8, width: u8, unsigned: bool) -> Kind {
    Kind::Int {
        bits,
        width,
        unsigned,
    }
}

impl Kind {
    pub fn arrow_type(&self) -> DataType {
        match self {
            Kind::Int { bits: 8, .. } => DataType::Int8,
            Kind::Int { bits: 16, .. } => DataType::Int16,
            Kind::Int { bits: 32, .. } => DataType::Int32,
            Kind::Int { .. } => DataType::Int64,
            Kind::UnsignedBig => DataType::Decimal128(20, 0),
            Kind::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            Kind::Float => DataType::Float32,
            Kind::Double => DataType::Float64,
            Kind::Bool => DataType::Boolean,
            Kind::Bits { .. } | Kind::FixedBinary { .. } | Kind::Binary | Kind::Geometry => {
                DataType::Binary
            }
            Kind::WideDecimal
            | Kind::Text { .. }
            | Kind::Json
            | Kind::Enum { .. }
            | Kind::Set { .. }
            | Kind::Time { .. } => DataType::Utf8,
            Kind::Date => DataType::Date32,
            Kind::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::Year => DataType::Int16,
        }
    }
}

/// The Arrow schema of a table's columns (all nullable: zero dates become NULL).
pub fn arrow_schema(columns: &[ColumnDef]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.kind().arrow_type(), true))
            .collect::<Vec<_>>(),
    ))
}

/// The arguments in the first parentheses: `decimal(65,30)` → `["65", "30"]`.
fn type_args(column_type: &str) -> Vec<&str> {
    match (column_type.find('('), column_type.find(')')) {
        (Some(a), Some(b)) if a < b => column_type[a + 1..b].split(',').collect(),
        _ => Vec::new(),
    }
}

/// The labels of `enum('a','it''s')` / `set(...)`, unescaped.
fn quoted_list(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let mut labels = Vec::new();
    let mut chars = column_type[open + 1..].chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        label.push(n);
                    }
                }
                other => label.push(other),
            }
        }
        labels.push(label);
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(data_type: &str, column_type: &str) -> ColumnDef {
        ColumnDef {
            name: "c".into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            charset: None,
            nullable: true,
        }
    }

    #[test]
    fn every_type_maps_to_one_arrow_type() {
        let cases = [
            ("tinyint", "tinyint(4)", DataType::Int8),
            ("tinyint", "tinyint(3) unsigned", DataType::Int16),
            ("smallint", "smallint(5) unsigned", DataType::Int32),
            ("mediumint", "mediumint(8) unsigned", DataType::Int32),
            ("int", "int(10) unsigned", DataType::Int64),
            ("bigint", "bigint(20) unsigned", DataType::Decimal128(20, 0)),
            ("decimal", "decimal(15,2)", DataType::Decimal128(15, 2)),
            ("decimal", "decimal(65,30)", DataType::Utf8),
            ("bit", "bit(1)", DataType::Boolean),
            ("bit", "bit(12)", DataType::Binary),
            ("time", "time(3)", DataType::Utf8),
            ("timestamp", "timestamp(6)", Kind::Timestamp.arrow_type()),
            ("year", "year(4)", DataType::Int16),
            ("point", "point", DataType::Binary),
        ];
        for (dt, ct, want) in cases {
            assert_eq!(def(dt, ct).kind().arrow_type(), want, "{ct}");
        }
    }

    #[test]
    fn enum_labels_are_unescaped() {
        assert_eq!(
            quoted_list("enum('a','it''s','x,y')"),
            vec!["a", "it's", "x,y"]
        );
        assert_eq!(def("bit", "bit(12)").kind(), Kind::Bits { bytes: 2 });
        assert_eq!(
            def("enum", "ENUM('Small','Large')").kind(),
            Kind::Enum {
                labels: vec!["Small".into(), "Large".into()]
            }
        );
        assert_eq!(def("int", "INT(10) UNSIGNED").kind(), int(64, 32, true));
    }

    #[test]
    fn lowercased_labels_take_the_case_of_the_table() {
        let stored = vec![
            def("enum", "enum('small','large')"),
            ColumnDef {
                name: "s".into(),
                ..def("set", "set('a','b')")
            },
        ];
        let now = vec![
            def("enum", "enum('Small','Large')"),
            ColumnDef {
                name: "s".into(),
                ..def("set", "set('A','b','c')")
            },
        ];
        let healed = with_label_case_of(stored, &now);
        assert_eq!(healed[0].column_type, "enum('Small','Large')");
        // A label added is a change of the table, not of case: kept for the gate.
        assert_eq!(healed[1].column_type, "set('a','b')");
    }
}
