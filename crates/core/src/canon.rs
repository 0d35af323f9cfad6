//! The canonical row: one text per row that MariaDB/MySQL, PostgreSQL and DuckDB compute
//! alike from the same values, so that a source table and its warehouse table can be compared
//! by checksums computed inside each database (`sluice reconcile`): only the rows of ranges
//! whose checksums differ ever leave a server.
//!
//! Each column is written by a [`Render`]: integers and decimals as the database prints them
//! (a decimal with all its scale digits), floats rounded to 6 decimal places, booleans as
//! `1`/`0`, text as UTF-8, binary as upper-case hex, dates and times as
//! `YYYY-MM-DD HH:MM:SS.ffffff` (times with a zone in UTC). NULL is `\x1e`; columns are joined
//! by `\x1f`. A row's hash is the first 60 bits of the MD5 of its text, as an integer: sums of
//! them stay exact in every database (DECIMAL, NUMERIC, HUGEINT).
//!
//! Key ranges are bounds on the key columns in byte order of their canonical text (text keys
//! compare as UTF-8 bytes on every side, whatever each side's collation), given as the
//! canonical texts of a key: the same literal selects the same rows on both sides.

use arrow::datatypes::{DataType, TimeUnit};

/// The SQL a database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    MySql,
    Postgres,
    DuckDb,
}

/// How one column's values are written into the canonical text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Render {
    Integer,
    /// Printed with its scale's digits by every database.
    Decimal,
    /// Rounded to 6 decimal places (the engines print floats differently past that).
    Float,
    Bool,
    Text,
    /// Upper-case hex of the bytes after `skip` of them, left-padded with zeros to `width`
    /// bytes (MySQL BIT(n) is a number to its server, big-endian bytes in the lake).
    Hex {
        width: Option<usize>,
        skip: usize,
    },
    Date,
    DateTime,
    /// A point in time, written in UTC.
    TimestampUtc,
    /// Not compared, and why.
    Left(String),
}

impl Render {
    /// The render of a lake column's type (what a warehouse table was created from).
    pub fn of(t: &DataType) -> Render {
        match t {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => Render::Integer,
            DataType::Decimal128(..) => Render::Decimal,
            DataType::Float32 | DataType::Float64 => Render::Float,
            DataType::Boolean => Render::Bool,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Render::Text,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Render::Hex {
                width: None,
                skip: 0,
            },
            DataType::Date32 => Render::Date,
            DataType::Timestamp(TimeUnit::Microsecond, None) => Render::DateTime,
            DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => Render::TimestampUtc,
            other => Render::Left(format!("type {other} has no canonical text")),
        }
    }

    /// Whether a key column may be of this render (floats never match exactly).
    pub fn keyable(&self) -> bool {
        !matches!(self, Render::Float | Render::Left(_))
    }
}

/// A column as one database names and renders it.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub render: Render,
}

/// A key's canonical texts, one per key column (never NULL: keys have no NULLs).
pub type Key = Vec<String>;

/// A range of keys: from `lo` (inclusive) to `hi` (exclusive); None is open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRange {
    pub lo: Option<Key>,
    pub hi: Option<Key>,
}

/// One side of a comparison: a table in one database, the key and the compared columns in
/// the same order as the other side's.
#[derive(Debug, Clone)]
pub struct Side {
    pub dialect: Dialect,
    /// The table, quoted for the dialect.
    pub relation: String,
    pub key: Vec<Column>,
    pub columns: Vec<Column>,
    /// Rows to leave out (a soft-deleted warehouse row), as a condition on the table.
    pub exclude: Option<String>,
}

impl Side {
    pub fn quote(&self, ident: &str) -> String {
        match self.dialect {
            Dialect::MySql => crate::names::quote_backticked(ident),
            Dialect::Postgres | Dialect::DuckDb => crate::names::quote_ident(ident),
        }
    }

    fn as_text(&self, expr: &str) -> String {
        match self.dialect {
            Dialect::MySql => format!("CAST({expr} AS CHAR)"),
            Dialect::Postgres => format!("CAST({expr} AS TEXT)"),
            Dialect::DuckDb => format!("CAST({expr} AS VARCHAR)"),
        }
    }

    fn chr(&self, code: u8) -> String {
        match self.dialect {
            Dialect::MySql => format!("CHAR({code} USING utf8mb4)"),
            Dialect::Postgres | Dialect::DuckDb => format!("chr({code})"),
        }
    }

    /// The canonical text of column `c` (NULL stays NULL here).
    pub fn text(&self, c: &Column) -> String {
        use Dialect::*;
        let col = self.quote(&c.name);
        let zero_date = |e: String| {
            // MySQL's zero dates land as NULL.
            format!("CASE WHEN MONTH({col}) = 0 OR DAYOFMONTH({col}) = 0 THEN NULL ELSE {e} END")
        };
        match (&c.render, self.dialect) {
            (Render::Integer, MySql) => self.as_text(&format!("{col} + 0")),
            (Render::Integer | Render::Decimal, _) => self.as_text(&col),
            (Render::Float, _) => self.float_text(&col),
            (Render::Bool, MySql) => {
                format!("CASE WHEN {col} + 0 <> 0 THEN '1' WHEN {col} + 0 = 0 THEN '0' END")
            }
            (Render::Bool, _) => format!("CASE WHEN {col} THEN '1' WHEN NOT {col} THEN '0' END"),
            (Render::Text, MySql) => format!("CONVERT({col} USING utf8mb4)"),
            (Render::Text, _) => col,
            (Render::Hex { width, skip }, MySql) => {
                let bytes = match skip {
                    0 => col,
                    n => format!("SUBSTRING({col}, {})", n + 1),
                };
                match width {
                    Some(w) => format!("LPAD(HEX({bytes}), {}, '0')", w * 2),
                    None => format!("HEX({bytes})"),
                }
            }
            (Render::Hex { .. }, Postgres) => format!("upper(encode({col}, 'hex'))"),
            (Render::Hex { .. }, DuckDb) => format!("hex({col})"),
            (Render::Date, MySql) => zero_date(format!("DATE_FORMAT({col}, '%Y-%m-%d')")),
            (Render::Date, Postgres) => format!("to_char({col}, 'YYYY-MM-DD')"),
            (Render::Date, DuckDb) => format!("strftime({col}, '%Y-%m-%d')"),
            // The session's time zone is UTC.
            (Render::DateTime | Render::TimestampUtc, MySql) => {
                zero_date(format!("DATE_FORMAT({col}, '%Y-%m-%d %H:%i:%s.%f')"))
            }
            (Render::DateTime, Postgres) => format!("to_char({col}, 'YYYY-MM-DD HH24:MI:SS.US')"),
            (Render::TimestampUtc, Postgres) => {
                format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
            }
            (Render::DateTime, DuckDb) => format!("strftime({col}, '%Y-%m-%d %H:%M:%S.%f')"),
            // From the instant itself, whatever the session's TimeZone.
            (Render::TimestampUtc, DuckDb) => {
                format!("strftime(make_timestamp(epoch_us({col})), '%Y-%m-%d %H:%M:%S.%f')")
            }
            (Render::Left(_), _) => "NULL".into(),
        }
    }

    /// A float to 6 decimal places; from 1e15 up, its mantissa so and `e` its exponent
    /// (the engines print the digits of a huge double differently).
    fn float_text(&self, col: &str) -> String {
        let fixed = |x: &str| match self.dialect {
            Dialect::MySql => self.as_text(&format!("CAST(CAST({x} AS DOUBLE) AS DECIMAL(65,6))")),
            Dialect::Postgres => format!("CAST(round(CAST({x} AS float8)::numeric, 6) AS TEXT)"),
            Dialect::DuckDb => self.as_text(&format!("CAST(CAST({x} AS DOUBLE) AS DECIMAL(38,6))")),
        };
        let exponent = match self.dialect {
            Dialect::MySql => format!("CAST(FLOOR(LOG10(ABS({col}))) AS SIGNED)"),
            Dialect::Postgres => {
                format!("CAST(floor(log10(abs(CAST({col} AS float8)))) AS BIGINT)")
            }
            Dialect::DuckDb => format!("CAST(floor(log10(abs(CAST({col} AS DOUBLE)))) AS BIGINT)"),
        };
        let mantissa = fixed(&format!("{col} / POWER(10, {exponent})"));
        let big = match self.dialect {
            Dialect::MySql => format!("CONCAT({mantissa}, 'e', {})", self.as_text(&exponent)),
            _ => format!("{mantissa} || 'e' || {}", self.as_text(&exponent)),
        };
        format!(
            "CASE WHEN ABS({col}) < 1e15 THEN {} ELSE {big} END",
            fixed(col)
        )
    }

    /// The row's canonical text: key and compared columns.
    fn row_text(&self) -> String {
        let null = self.chr(30);
        let parts: Vec<String> = self
            .key
            .iter()
            .chain(&self.columns)
            .map(|c| format!("COALESCE({}, {null})", self.text(c)))
            .collect();
        let sep = self.chr(31);
        match self.dialect {
            Dialect::MySql => format!("CONCAT({})", parts.join(&format!(", {sep}, "))),
            _ => parts.join(&format!(" || {sep} || ")),
        }
    }

    /// The row's hash: the first 60 bits of the MD5 of its text, as an integer.
    pub fn row_hash(&self) -> String {
        self.hash_of(&self.row_text())
    }

    /// The hash of a text expression.
    fn hash_of(&self, text: &str) -> String {
        let md5 = format!("md5({text})");
        match self.dialect {
            Dialect::MySql => format!("CAST(CONV(SUBSTRING({md5}, 1, 15), 16, 10) AS UNSIGNED)"),
            Dialect::Postgres => {
                format!("CAST(CAST('x' || substr({md5}, 1, 15) AS bit(60)) AS BIGINT)")
            }
            Dialect::DuckDb => format!("CAST('0x' || substr({md5}, 1, 15) AS BIGINT)"),
        }
    }

    /// A key column as ordered for ranges (text in byte order).
    fn ordered(&self, c: &Column) -> String {
        let col = self.quote(&c.name);
        match (&c.render, self.dialect) {
            (Render::Text, Dialect::MySql) => {
                format!("CAST(CONVERT({col} USING utf8mb4) AS BINARY)")
            }
            (Render::Text, Dialect::Postgres) => format!("{col} COLLATE \"C\""),
            _ => col,
        }
    }

    /// A key column's canonical text as a literal it compares with.
    fn literal(&self, c: &Column, text: &str) -> String {
        let quoted = |s: &str| match self.dialect {
            Dialect::MySql => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''")),
            _ => format!("'{}'", s.replace('\'', "''")),
        };
        match (&c.render, self.dialect) {
            (Render::Integer | Render::Decimal, _)
                if !text.is_empty()
                    && text
                        .chars()
                        .all(|ch| ch.is_ascii_digit() || ch == '-' || ch == '.') =>
            {
                text.to_string()
            }
            (Render::Text, Dialect::MySql) => format!("CAST({} AS BINARY)", quoted(text)),
            (Render::Hex { .. }, Dialect::MySql) => format!("X{}", quoted(text)),
            (Render::Hex { .. }, Dialect::Postgres) => format!("decode({}, 'hex')", quoted(text)),
            (Render::Hex { .. }, Dialect::DuckDb) => format!("unhex({})", quoted(text)),
            (Render::TimestampUtc, Dialect::Postgres | Dialect::DuckDb) => {
                format!("CAST({} AS TIMESTAMPTZ)", quoted(&format!("{text}+00")))
            }
            _ => quoted(text),
        }
    }

    /// `key < bound` (`op` "<") or `key >= bound` (">="), in the key's order.
    fn compare(&self, bound: &Key, op: &str) -> String {
        // (a, b) < (x, y)  ⇔  a < x OR (a = x AND b < y); >= is its negation's mirror.
        let strict = if op == "<" { "<" } else { ">" };
        let n = self.key.len();
        let mut terms = Vec::new();
        for i in 0..n {
            let mut t: Vec<String> = (0..i)
                .map(|j| {
                    format!(
                        "{} = {}",
                        self.ordered(&self.key[j]),
                        self.literal(&self.key[j], &bound[j])
                    )
                })
                .collect();
            let last = if i == n - 1 && op == ">=" {
                ">="
            } else {
                strict
            };
            t.push(format!(
                "{} {last} {}",
                self.ordered(&self.key[i]),
                self.literal(&self.key[i], &bound[i])
            ));
            terms.push(format!("({})", t.join(" AND ")));
        }
        format!("({})", terms.join(" OR "))
    }

    /// The rows of `range` (and not excluded), as a WHERE condition.
    fn range_where(&self, range: &KeyRange) -> String {
        let mut c = vec!["1 = 1".to_string()];
        if let Some(lo) = &range.lo {
            c.push(self.compare(lo, ">="));
        }
        if let Some(hi) = &range.hi {
            c.push(self.compare(hi, "<"));
        }
        if let Some(x) = &self.exclude {
            c.push(format!("NOT ({x})"));
        }
        c.join(" AND ")
    }

    fn key_texts(&self) -> Vec<String> {
        self.key.iter().map(|c| self.text(c)).collect()
    }

    fn order_by(&self) -> String {
        self.key
            .iter()
            .map(|c| self.ordered(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Per segment of `range` cut at `splits` (ascending keys): its index, row count and the
    /// sum of its row hashes, all as text (segments with no rows give no row).
    pub fn sums_sql(&self, range: &KeyRange, splits: &[Key]) -> String {
        let segment = match splits.is_empty() {
            true => "0".to_string(),
            false => {
                let arms: Vec<String> = splits
                    .iter()
                    .enumerate()
                    .map(|(i, s)| format!("WHEN {} THEN {i}", self.compare(s, "<")))
                    .collect();
                format!("CASE {} ELSE {} END", arms.join(" "), splits.len())
            }
        };
        format!(
            "SELECT {}, {}, {} FROM (SELECT {segment} AS seg, {} AS h FROM {} WHERE {}) s GROUP BY seg",
            self.as_text("seg"),
            self.as_text("COUNT(*)"),
            self.as_text("SUM(h)"),
            self.row_hash(),
            self.relation,
            self.range_where(range),
        )
    }

    /// The key `offset` rows into `range` from `from` (inclusive; None: its start), in key
    /// order: one place to cut it. An index seek and a short scan, where numbering the whole
    /// range (`ROW_NUMBER()`) would have MariaDB materialize it.
    pub fn cut_sql(&self, range: &KeyRange, from: Option<&Key>, offset: u64) -> String {
        let mut condition = self.range_where(range);
        if let Some(k) = from {
            condition = format!("{condition} AND {}", self.compare(k, ">="));
        }
        format!(
            "SELECT {} FROM {} WHERE {condition} ORDER BY {} LIMIT 1 OFFSET {offset}",
            self.key_texts().join(", "),
            self.relation,
            self.order_by(),
        )
    }

    /// Every row of `range`: its key texts, then its hash as text.
    pub fn hashes_sql(&self, range: &KeyRange) -> String {
        format!(
            "SELECT {}, {} FROM {} WHERE {}",
            self.key_texts().join(", "),
            self.as_text(&self.row_hash()),
            self.relation,
            self.range_where(range),
        )
    }

    /// The rows with these keys, as a WHERE condition (none: matches nothing).
    pub fn keys_where(&self, keys: &[Key]) -> String {
        if keys.is_empty() {
            return "1 = 0".into();
        }
        let one = |k: &Key| {
            let parts: Vec<String> = self
                .key
                .iter()
                .zip(k)
                .map(|(c, v)| format!("{} = {}", self.ordered(c), self.literal(c, v)))
                .collect();
            format!("({})", parts.join(" AND "))
        };
        let rows: Vec<String> = keys.iter().map(one).collect();
        let mut w = format!("({})", rows.join(" OR "));
        if let Some(x) = &self.exclude {
            w = format!("{w} AND NOT ({x})");
        }
        w
    }

    /// The rows with these keys: key texts, then hash as text.
    pub fn hashes_of_keys_sql(&self, keys: &[Key]) -> String {
        format!(
            "SELECT {}, {} FROM {} WHERE {}",
            self.key_texts().join(", "),
            self.as_text(&self.row_hash()),
            self.relation,
            self.keys_where(keys),
        )
    }
}

impl Side {
    /// A table without a key, compared as a multiset of rows: per bucket of row hashes
    /// (`hash % buckets`), its index, row count and hash sum, as text.
    pub fn bucket_sums_sql(&self, buckets: u64) -> String {
        format!(
            "SELECT {}, {}, {} FROM (SELECT h % {buckets} AS b, h FROM (SELECT {} AS h FROM {} WHERE {}) x) s GROUP BY b",
            self.as_text("b"),
            self.as_text("COUNT(*)"),
            self.as_text("SUM(h)"),
            self.row_hash(),
            self.relation,
            self.range_where(&KeyRange::default()),
        )
    }

    /// The rows of buckets `which`, one per distinct row: its hash, how many times it is
    /// there, and its canonical text, all as text.
    pub fn bucket_rows_sql(&self, buckets: u64, which: &[u64]) -> String {
        let list: Vec<String> = which.iter().map(|b| b.to_string()).collect();
        format!(
            "SELECT {}, {}, MIN(t) FROM (SELECT {} AS h, t FROM (SELECT {} AS t FROM {} WHERE {}) x) s WHERE h % {buckets} IN ({}) GROUP BY h",
            self.as_text("h"),
            self.as_text("COUNT(*)"),
            self.hash_of("t"),
            self.row_text(),
            self.relation,
            self.range_where(&KeyRange::default()),
            list.join(", "),
        )
    }
}

/// A canonical row text as people read it: columns joined by ` | `, NULL as `NULL`.
pub fn readable(text: &str) -> String {
    text.split('\u{1f}')
        .map(|v| if v == "\u{1e}" { "NULL" } else { v })
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(dialect: Dialect, key: &[(&str, Render)]) -> Side {
        Side {
            dialect,
            relation: "t".into(),
            key: key
                .iter()
                .map(|(n, r)| Column {
                    name: n.to_string(),
                    render: r.clone(),
                })
                .collect(),
            columns: vec![Column {
                name: "v".into(),
                render: Render::Text,
            }],
            exclude: None,
        }
    }

    #[test]
    fn composite_bounds_compare_lexicographically() {
        let s = side(
            Dialect::Postgres,
            &[("a", Render::Integer), ("b", Render::Text)],
        );
        let lt = s.compare(&vec!["5".into(), "x'y".into()], "<");
        assert_eq!(
            lt,
            "((\"a\" < 5) OR (\"a\" = 5 AND \"b\" COLLATE \"C\" < 'x''y'))"
        );
        let ge = s.compare(&vec!["5".into(), "x".into()], ">=");
        assert_eq!(
            ge,
            "((\"a\" > 5) OR (\"a\" = 5 AND \"b\" COLLATE \"C\" >= 'x'))"
        );
    }

    #[test]
    fn literals_are_quoted_for_their_dialect() {
        let m = side(Dialect::MySql, &[("k", Render::Text)]);
        assert_eq!(m.literal(&m.key[0], "a\\'b"), "CAST('a\\\\''b' AS BINARY)");
        let i = side(Dialect::DuckDb, &[("k", Render::Integer)]);
        assert_eq!(i.literal(&i.key[0], "-42"), "-42");
        // Not a number: quoted, never pasted.
        assert_eq!(i.literal(&i.key[0], "1 OR 1=1"), "'1 OR 1=1'");
        let t = side(Dialect::Postgres, &[("k", Render::TimestampUtc)]);
        assert_eq!(
            t.literal(&t.key[0], "2024-01-02 03:04:05.000000"),
            "CAST('2024-01-02 03:04:05.000000+00' AS TIMESTAMPTZ)"
        );
    }

    #[test]
    fn soft_deleted_rows_are_left_out_of_ranges_and_keys() {
        let mut s = side(Dialect::DuckDb, &[("k", Render::Integer)]);
        s.exclude = Some("\"_sluice_deleted\"".into());
        let sql = s.hashes_of_keys_sql(&[vec!["1".into()]]);
        assert!(
            sql.ends_with("WHERE ((\"k\" = 1)) AND NOT (\"_sluice_deleted\")"),
            "{sql}"
        );
        assert!(s
            .sums_sql(&KeyRange::default(), &[])
            .contains("NOT (\"_sluice_deleted\")"));
    }
}
