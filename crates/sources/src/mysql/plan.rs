//! Snapshot plans: how a table is cut into chunks of its primary key's first column, so
//! chunks are read in parallel and a crash resumes from the chunks already committed.
//!
//! - Integer keys (BIGINT UNSIGNED too, while its values fit an i64): the key's range is cut
//!   in even pieces, which the server's row estimates halve or join into chunks of about
//!   `chunk_rows`.
//! - CHAR/VARCHAR and BINARY/VARBINARY keys: the key's index is walked, a start every
//!   `chunk_rows` keys. Chunk bounds are values of the column itself, compared by the server
//!   in the column's own collation, so every key lies in exactly one chunk whatever its
//!   collation makes equal (`'a' = 'A '`). Which chunk a binlog change's key falls in is
//!   decided the same way: by the server's sort keys (`WEIGHT_STRING`) of the key and of
//!   the starts, in the column's collation, padded as the collation pads.
//! - Any other key, or none: one chunk, streamed.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use super::columns::Kind;
use super::convert::{key_integer, key_ordinal, micros_value, unpack_datetime, Origin};
use super::{quote, MySql, TableInfo};
use crate::SourceError;

/// How a table is split: chunk 0 holds the keys below the first start, chunk `i` those from
/// start `i-1` up to (not including) start `i`, the last those from its start up. No starts:
/// one chunk, the whole table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkPlan {
    Ints(Vec<i64>),
    Strings {
        order: StringOrder,
        /// Values of the column, in its character set's bytes.
        starts: Vec<Vec<u8>>,
    },
    /// DATE, DATETIME, TIMESTAMP and DECIMAL keys, as [`key_ordinal`] numbers them.
    Ordinals {
        kind: OrdinalKind,
        starts: Vec<i128>,
    },
}

/// What the numbers of an ordinal plan are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrdinalKind {
    /// DATE and DATETIME parts, packed ([`super::convert::pack_datetime`]).
    DateTime,
    /// TIMESTAMP: microseconds since the epoch (0: the zero timestamp).
    Timestamp,
    /// DECIMAL(p, s), scaled by 10^s.
    Decimal { precision: u8, scale: u8 },
}

impl OrdinalKind {
    fn of(kind: &Kind) -> Option<OrdinalKind> {
        Some(match kind {
            Kind::Date | Kind::DateTime => OrdinalKind::DateTime,
            Kind::Timestamp => OrdinalKind::Timestamp,
            Kind::Decimal { precision, scale } if *scale >= 0 => OrdinalKind::Decimal {
                precision: *precision,
                scale: *scale as u8,
            },
            _ => return None,
        })
    }

    /// Whether `v` can start a chunk: zero and invalid dates order among the others but have
    /// no value a query can compare with (the chunk before holds them).
    fn expressible(&self, v: i128) -> bool {
        match self {
            OrdinalKind::DateTime => match unpack_datetime(v) {
                Value::Date(y, mo, d, h, mi, s, us) => {
                    chrono::NaiveDate::from_ymd_opt(y as i32, mo as u32, d as u32)
                        .and_then(|day| day.and_hms_micro_opt(h as u32, mi as u32, s as u32, us))
                        .is_some()
                }
                _ => false,
            },
            OrdinalKind::Timestamp => v != 0,
            OrdinalKind::Decimal { .. } => true,
        }
    }

    /// A start as the server takes it, and the SQL that makes it the column's type.
    fn param(&self, v: i128) -> (Value, String) {
        match self {
            OrdinalKind::DateTime => (unpack_datetime(v), "CAST(? AS DATETIME(6))".into()),
            OrdinalKind::Timestamp => {
                let value = match v {
                    0 => Value::Date(0, 0, 0, 0, 0, 0, 0),
                    v => micros_value(v as i64),
                };
                // Sessions are in UTC (see `MySql::connect`): the instant is exact.
                (value, "CAST(? AS DATETIME(6))".into())
            }
            OrdinalKind::Decimal { precision, scale } => {
                use arrow::datatypes::{Decimal128Type, DecimalType};
                let text = Decimal128Type::format_decimal(v, *precision, *scale as i8);
                (
                    Value::Bytes(text.into_bytes()),
                    format!("CAST(? AS DECIMAL({precision}, {scale}))"),
                )
            }
        }
    }
}

/// How a string key column compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringOrder {
    /// BINARY(n) (`fixed`: values are zero padded to n bytes), VARBINARY: bytes.
    Bytes { fixed: Option<usize> },
    /// CHAR/VARCHAR: the column's collation decides.
    Collated {
        charset: String,
        collation: String,
        /// PAD SPACE collations compare values as if padded with spaces to the column's
        /// length in characters (`'a\t' < 'a'`); sort keys are taken at that length.
        pad_chars: Option<u32>,
    },
}

/// The most chunks a walk makes (its starts are kept with the run).
const MAX_WALKED_CHUNKS: u64 = 1024;

/// The longest CHAR/VARCHAR key chunked (sort keys are taken at the column's length).
const MAX_KEY_CHARS: u64 = 1024;

/// At most this many row estimates (`EXPLAIN`, index dives) per integer plan.
const PLAN_PROBES: usize = 4096;

impl ChunkPlan {
    pub fn whole() -> ChunkPlan {
        ChunkPlan::Ints(Vec::new())
    }

    /// `chunks` ranges of `step` keys from `lo` (how plans were made before they followed
    /// the rows; resumed runs recorded that way read the same chunks).
    pub fn uniform(lo: i64, step: i64, chunks: i64) -> ChunkPlan {
        if step <= 0 {
            return ChunkPlan::whole();
        }
        let mut starts: Vec<i64> = (1..chunks.max(1))
            .map(|i| lo.saturating_add(i.saturating_mul(step)))
            .collect();
        starts.dedup();
        ChunkPlan::Ints(starts)
    }

    fn starts_len(&self) -> usize {
        match self {
            ChunkPlan::Ints(s) => s.len(),
            ChunkPlan::Strings { starts, .. } => starts.len(),
            ChunkPlan::Ordinals { starts, .. } => starts.len(),
        }
    }

    pub fn chunks(&self) -> i64 {
        self.starts_len() as i64 + 1
    }

    /// Whether the table is read in key ranges (else whole).
    pub fn is_split(&self) -> bool {
        self.starts_len() > 0
    }

    /// The chunk holding integer key value `k` (None: not an integer plan).
    pub fn chunk_of_int(&self, k: i64) -> Option<i64> {
        match self {
            ChunkPlan::Ints(starts) => Some(starts.partition_point(|&s| s <= k) as i64),
            _ => None,
        }
    }

    /// The chunk holding the key numbered `k` (None: not an ordinal plan).
    pub fn chunk_of_ordinal(&self, k: i128) -> Option<i64> {
        match self {
            ChunkPlan::Ordinals { starts, .. } => Some(starts.partition_point(|&s| s <= k) as i64),
            _ => None,
        }
    }

    /// Lower (inclusive) and upper (exclusive) integer bounds of chunk `i`; None is
    /// unbounded.
    #[cfg(test)]
    fn int_bounds(&self, i: i64) -> (Option<i64>, Option<i64>) {
        let ChunkPlan::Ints(starts) = self else {
            return (None, None);
        };
        let i = i.max(0) as usize;
        let lo = i.checked_sub(1).and_then(|j| starts.get(j).copied());
        (lo, starts.get(i).copied())
    }

    /// The `WHERE` condition selecting chunk `i` of key column `col`, with its parameters
    /// (None: the whole table).
    pub fn condition(&self, col: &str, i: i64) -> Option<(String, Vec<Value>)> {
        let i = i.max(0) as usize;
        let bound = |j: usize| -> Option<(Value, String)> {
            match self {
                ChunkPlan::Ints(starts) => starts.get(j).map(|&v| (v.into(), "?".into())),
                ChunkPlan::Strings { order, starts } => starts
                    .get(j)
                    .map(|v| (Value::Bytes(v.clone()), order.value("?"))),
                ChunkPlan::Ordinals { kind, starts } => starts.get(j).map(|&v| kind.param(v)),
            }
        };
        let mut conds = Vec::new();
        let mut params = Vec::new();
        if let Some((lo, sql)) = i.checked_sub(1).and_then(bound) {
            conds.push(format!("{} >= {sql}", quote(col)));
            params.push(lo);
        }
        if let Some((hi, sql)) = bound(i) {
            conds.push(format!("{} < {sql}", quote(col)));
            params.push(hi);
        }
        (!conds.is_empty()).then(|| (conds.join(" AND "), params))
    }
}

impl StringOrder {
    /// `expr` (bytes of the column's character set) as a value of the column's type.
    fn value(&self, expr: &str) -> String {
        match self {
            StringOrder::Bytes { .. } => format!("CAST({expr} AS BINARY)"),
            StringOrder::Collated {
                charset, collation, ..
            } => format!("CONVERT(CAST({expr} AS BINARY) USING {charset}) COLLATE {collation}"),
        }
    }

    /// SQL giving `expr`'s sort key: byte order of sort keys is the column's order.
    fn sort_key(&self, expr: &str) -> String {
        let v = self.value(expr);
        match self {
            StringOrder::Collated {
                pad_chars: Some(n), ..
            } => format!("WEIGHT_STRING({v} AS CHAR({n}))"),
            _ => format!("WEIGHT_STRING({v})"),
        }
    }
}

/// A character set or collation name as the server reported it, checked to be a plain
/// word before it is written into SQL (they cannot be quoted as identifiers everywhere).
fn plain_word(s: &str) -> Option<String> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then(|| s.to_ascii_lowercase())
}

/// How `table`'s key would be chunked: its first column when it is an integer, a
/// CHAR/VARCHAR of at most [`MAX_KEY_CHARS`] characters, a BINARY/VARBINARY, a DATE,
/// DATETIME, TIMESTAMP or DECIMAL (of at most 38 digits).
pub fn chunk_column(table: &TableInfo) -> Option<(&str, Kind)> {
    let first = table.primary_key.first()?;
    let def = table.columns.iter().find(|c| &c.name == first)?;
    let kind = def.kind();
    let chunked = match &kind {
        Kind::Int { .. } | Kind::Year | Kind::UnsignedBig => true,
        Kind::Text { .. } => matches!(def.data_type.as_str(), "char" | "varchar"),
        Kind::FixedBinary { .. } => true,
        Kind::Binary => def.data_type == "varbinary",
        other => OrdinalKind::of(other).is_some(),
    };
    chunked.then_some((first.as_str(), kind))
}

/// Plans chunks of about `chunk_rows` rows.
pub async fn plan(
    mysql: &MySql,
    conn: &mut Conn,
    table: &TableInfo,
    chunk_rows: u64,
) -> Result<ChunkPlan, SourceError> {
    let Some((col, kind)) = chunk_column(table) else {
        return Ok(ChunkPlan::whole());
    };
    // A query's result is read in one streamed pass: ranges over a derived table would run
    // the query once per chunk.
    if mysql.query_of(&table.name).is_some() {
        return Ok(ChunkPlan::whole());
    }
    let rows = rows(mysql, conn, table).await?;
    let chunk_rows = chunk_rows.max(1);
    if rows.div_ceil(chunk_rows) <= 1 {
        return Ok(ChunkPlan::whole());
    }
    match kind {
        Kind::Text { .. } | Kind::FixedBinary { .. } | Kind::Binary => {
            let Some(order) = string_order(mysql, conn, table, col, &kind).await? else {
                return Ok(ChunkPlan::whole());
            };
            let select = format!("CAST({} AS BINARY)", quote(col));
            let starts = walk(
                mysql,
                conn,
                table,
                col,
                (select.as_str(), order.value("?").as_str()),
                rows,
                chunk_rows,
            )
            .await?
            .into_iter()
            .map(|v| match v {
                Value::Bytes(b) => Ok(b),
                other => Err(mysql.err(format!(
                    "`{}`.`{col}`: a key walked as {other:?}",
                    table.name
                ))),
            })
            .collect::<Result<_, _>>()?;
            Ok(ChunkPlan::Strings { order, starts })
        }
        other => match OrdinalKind::of(&other) {
            Some(ordinal) => {
                let param = ordinal.param(0).1;
                let walked = walk(
                    mysql,
                    conn,
                    table,
                    col,
                    (quote(col).as_str(), param.as_str()),
                    rows,
                    chunk_rows,
                )
                .await?;
                let starts = walked
                    .iter()
                    .map(|v| {
                        key_ordinal(&other, v, Origin::Query).ok_or_else(|| {
                            mysql.err(format!("`{}`.`{col}`: a key walked as {v:?}", table.name))
                        })
                    })
                    .collect::<Result<Vec<i128>, _>>()?;
                let starts = starts
                    .into_iter()
                    .filter(|&v| ordinal.expressible(v))
                    .collect();
                Ok(ChunkPlan::Ordinals {
                    kind: ordinal,
                    starts,
                })
            }
            None => plan_ints(mysql, conn, table, col, rows, chunk_rows).await,
        },
    }
}

/// The table's row count as the server estimates it, counted when it has no statistics
/// yet (a freshly filled table).
async fn rows(mysql: &MySql, conn: &mut Conn, table: &TableInfo) -> Result<u64, SourceError> {
    if table.rows_estimate > 0 {
        return Ok(table.rows_estimate);
    }
    let sql = format!("SELECT COUNT(*) FROM {}", mysql.relation(&table.name));
    Ok(conn
        .query_first::<u64, _>(sql)
        .await
        .map_err(|e| mysql.db_err(&format!("counting `{}`", table.name), e))?
        .unwrap_or(0))
}

/// How the string key column `col` compares (None: not in a way sluice can chunk by).
async fn string_order(
    mysql: &MySql,
    conn: &mut Conn,
    table: &TableInfo,
    col: &str,
    kind: &Kind,
) -> Result<Option<StringOrder>, SourceError> {
    match kind {
        Kind::FixedBinary { len } => return Ok(Some(StringOrder::Bytes { fixed: Some(*len) })),
        Kind::Binary => return Ok(Some(StringOrder::Bytes { fixed: None })),
        _ => {}
    }
    let what = format!("reading the collation of `{}`.`{col}`", table.name);
    let row: Option<(Option<String>, Option<String>, Option<u64>)> = conn
        .exec_first(
            "SELECT CHARACTER_SET_NAME, COLLATION_NAME, CHARACTER_MAXIMUM_LENGTH \
             FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND COLUMN_NAME = ?",
            (mysql.database.as_str(), table.name.as_str(), col),
        )
        .await
        .map_err(|e| mysql.db_err(&what, e))?;
    let Some((Some(charset), Some(collation), Some(chars))) = row else {
        return Ok(None);
    };
    let (Some(charset), Some(collation)) = (plain_word(&charset), plain_word(&collation)) else {
        return Ok(None);
    };
    // Bounds travel as the column's bytes; the sets whose ASCII is not one byte a character
    // are left whole.
    if chars > MAX_KEY_CHARS || ["ucs2", "utf16", "utf16le", "utf32"].contains(&charset.as_str()) {
        return Ok(None);
    }
    let mut order = StringOrder::Collated {
        charset,
        collation,
        pad_chars: None,
    };
    // PAD SPACE or NO PAD, as the collation itself answers.
    let pads: Option<i64> = conn
        .exec_first(
            format!("SELECT {} = {}", order.value("?"), order.value("?")),
            (b"a".to_vec(), b"a ".to_vec()),
        )
        .await
        .map_err(|e| mysql.db_err(&what, e))?;
    if pads == Some(1) {
        if let StringOrder::Collated { pad_chars, .. } = &mut order {
            *pad_chars = Some(chars.max(1) as u32);
        }
    }
    Ok(Some(order))
}

/// Walks the key's index: each chunk starts `chunk_rows` keys after the previous start
/// (strictly after it, so a run of keys the collation makes equal never stalls the walk).
/// `(select, param)`: the key as read, and a read start as compared with the column.
async fn walk(
    mysql: &MySql,
    conn: &mut Conn,
    table: &TableInfo,
    col: &str,
    (select, param): (&str, &str),
    rows: u64,
    chunk_rows: u64,
) -> Result<Vec<Value>, SourceError> {
    let step = chunk_rows.max(rows.div_ceil(MAX_WALKED_CHUNKS));
    let what = format!("planning the snapshot of `{}`", table.name);
    tracing::info!(table = %table.name, column = col, step, "planning chunks by walking the key");
    let from = mysql.relation(&table.name);
    let c = quote(col);
    let started = std::time::Instant::now();
    let mut starts: Vec<Value> = Vec::new();
    while (starts.len() as u64) < MAX_WALKED_CHUNKS - 1 {
        // The first start is `step` keys in; each next one `step` keys from the last (which
        // is itself one of them).
        let (after, offset, params) = match starts.last() {
            None => (format!("{c} IS NOT NULL"), step, Vec::new()),
            Some(last) => (format!("{c} > {param}"), step - 1, vec![last.clone()]),
        };
        // Over the binary protocol, as the rest: dates come as dates.
        let next: Option<Value> = conn
            .exec_first(
                format!("SELECT {select} FROM {from} WHERE {after} ORDER BY {c} LIMIT 1 OFFSET {offset}"),
                params,
            )
            .await
            .map_err(|e| mysql.db_err(&what, e))?;
        match next {
            Some(Value::NULL) | None => break,
            Some(start) => starts.push(start),
        }
    }
    let ms = started.elapsed().as_millis() as u64;
    tracing::info!(table = %table.name, chunks = starts.len() + 1, ms, "key walked");
    Ok(starts)
}

/// Cuts an integer key's range in even sub-ranges, four per chunk the row count asks for;
/// the server's estimate of each (`EXPLAIN`, index dives on the key) decides: a sub-range
/// holding more than a chunk is halved until it does not (keys bunched at one end of a
/// range with outliers far away), and neighbours are joined into chunks of about
/// `chunk_rows`. Estimates only size the chunks: every key falls in exactly one chunk
/// whatever they say.
async fn plan_ints(
    mysql: &MySql,
    conn: &mut Conn,
    table: &TableInfo,
    col: &str,
    rows: u64,
    chunk_rows: u64,
) -> Result<ChunkPlan, SourceError> {
    let sql = format!(
        "SELECT MIN({c}), MAX({c}) FROM {}",
        mysql.relation(&table.name),
        c = quote(col)
    );
    let row: Option<(Value, Value)> = conn
        .query_first(sql)
        .await
        .map_err(|e| mysql.db_err(&format!("planning the snapshot of `{}`", table.name), e))?;
    let range = row.and_then(|(lo, hi)| Some((key_integer(&lo)?, key_integer(&hi)?)));
    let Some((lo, hi)) = range else {
        return Ok(ChunkPlan::whole());
    };
    let (Ok(lo), Ok(hi)) = (i64::try_from(lo), i64::try_from(hi)) else {
        tracing::info!(table = %table.name, "key values past 2^63: the snapshot is one chunk");
        return Ok(ChunkPlan::whole());
    };
    let chunks = rows.div_ceil(chunk_rows).max(1);
    // Even sub-ranges [a, b) covering [lo, hi], with their estimates.
    let pieces = (chunks * 4).min(PLAN_PROBES as u64 / 2) as i128;
    let span = hi as i128 - lo as i128 + 1;
    let step = (span / pieces).max(1);
    let mut todo: Vec<(i128, i128)> = Vec::new();
    let mut a = lo as i128;
    while a <= hi as i128 {
        let b = (a + step).min(hi as i128 + 1);
        todo.push((a, b));
        a = b;
    }
    todo.reverse();
    let mut probes = 0;
    let mut sized: Vec<(i128, u64)> = Vec::new();
    while let Some((a, b)) = todo.pop() {
        let n = if probes < PLAN_PROBES {
            probes += 1;
            estimate(mysql, conn, table, col, a, b).await?
        } else {
            // Out of probes: the rest of the range by the average.
            (rows as i128 * (b - a) / span).max(0) as u64
        };
        if n > chunk_rows && b - a > 1 && probes < PLAN_PROBES {
            let mid = a + (b - a) / 2;
            todo.push((mid, b));
            todo.push((a, mid));
            continue;
        }
        sized.push((a, n));
    }
    let mut starts = Vec::new();
    let mut filled = 0u64;
    for (i, &(a, n)) in sized.iter().enumerate() {
        if i > 0 && filled > 0 && filled + n > chunk_rows {
            starts.push(a as i64);
            filled = 0;
        }
        filled += n;
    }
    Ok(ChunkPlan::Ints(starts))
}

/// The server's estimate of the rows with `col` in `[a, b)`.
async fn estimate(
    mysql: &MySql,
    conn: &mut Conn,
    table: &TableInfo,
    col: &str,
    a: i128,
    b: i128,
) -> Result<u64, SourceError> {
    let sql = format!(
        "EXPLAIN SELECT 1 FROM {} WHERE {c} >= {a} AND {c} < {b}",
        mysql.relation(&table.name),
        c = quote(col)
    );
    let row: Option<mysql_async::Row> = conn
        .query_first(sql)
        .await
        .map_err(|e| mysql.db_err(&format!("planning the snapshot of `{}`", table.name), e))?;
    Ok(row
        .and_then(|r| r.get_opt::<Option<u64>, _>("rows"))
        .and_then(Result::ok)
        .flatten()
        .unwrap_or(0))
}

/// Sort keys of string key values (bytes of the column's character set), in the order
/// given: byte order of two sort keys is the column's order of the values. Bytes keys are
/// their own sort keys (BINARY(n) padded as stored); collated ones are the server's.
pub async fn sort_keys(
    mysql: &MySql,
    conn: &mut Conn,
    order: &StringOrder,
    values: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>, SourceError> {
    if let StringOrder::Bytes { fixed } = order {
        return Ok(values
            .iter()
            .map(|v| {
                let mut v = v.clone();
                if let Some(n) = fixed {
                    if v.len() < *n {
                        v.resize(*n, 0);
                    }
                }
                v
            })
            .collect());
    }
    const PER_QUERY: usize = 256;
    let mut keys = Vec::with_capacity(values.len());
    for part in values.chunks(PER_QUERY) {
        let cols: Vec<String> = part.iter().map(|_| order.sort_key("?")).collect();
        let params: Vec<Value> = part.iter().map(|v| Value::Bytes(v.clone())).collect();
        let row: Option<mysql_async::Row> = conn
            .exec_first(format!("SELECT {}", cols.join(", ")), params)
            .await
            .map_err(|e| mysql.db_err("weighing keys in their collation", e))?;
        let row = row.ok_or_else(|| mysql.err("WEIGHT_STRING returned no row"))?;
        for i in 0..part.len() {
            let v: Option<Vec<u8>> = row
                .get_opt(i)
                .and_then(Result::ok)
                .ok_or_else(|| mysql.err("WEIGHT_STRING returned no value"))?;
            keys.push(v.unwrap_or_default());
        }
    }
    Ok(keys)
}

/// A plan as recorded with its run: a tag byte, then the starts.
/// - `S`: each start as 8 bytes, big endian (integer keys);
/// - `B`: the order (a byte: 0 bytes, 1 collated; for bytes the fixed length as 4 bytes, 0
///   when none; for collated the character set and collation, each as a length byte and
///   its bytes, and the padded length as 4 bytes, 0 when NO PAD), then each start as its
///   length in 4 bytes and its bytes.
///
/// Runs recorded before plans followed the rows hold 24 bytes (lo, step, chunks).
pub fn encode(p: &ChunkPlan) -> Vec<u8> {
    let mut b = Vec::new();
    match p {
        ChunkPlan::Ints(starts) => {
            b.push(INT_STARTS);
            for v in starts {
                b.extend_from_slice(&v.to_be_bytes());
            }
        }
        ChunkPlan::Strings { order, starts } => {
            b.push(STRING_STARTS);
            match order {
                StringOrder::Bytes { fixed } => {
                    b.push(0);
                    b.extend_from_slice(&(fixed.unwrap_or(0) as u32).to_be_bytes());
                }
                StringOrder::Collated {
                    charset,
                    collation,
                    pad_chars,
                } => {
                    b.push(1);
                    for word in [charset, collation] {
                        b.push(word.len() as u8);
                        b.extend_from_slice(word.as_bytes());
                    }
                    b.extend_from_slice(&pad_chars.unwrap_or(0).to_be_bytes());
                }
            }
            for s in starts {
                b.extend_from_slice(&(s.len() as u32).to_be_bytes());
                b.extend_from_slice(s);
            }
        }
        ChunkPlan::Ordinals { kind, starts } => {
            b.push(ORDINAL_STARTS);
            match kind {
                OrdinalKind::DateTime => b.push(0),
                OrdinalKind::Timestamp => b.push(1),
                OrdinalKind::Decimal { precision, scale } => {
                    b.extend_from_slice(&[2, *precision, *scale])
                }
            }
            for v in starts {
                b.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
    b
}

const INT_STARTS: u8 = b'S';
const STRING_STARTS: u8 = b'B';
const ORDINAL_STARTS: u8 = b'O';

fn decode_ordinals(b: &[u8]) -> Option<ChunkPlan> {
    let (kind, rest) = match b.split_first()? {
        (&0, rest) => (OrdinalKind::DateTime, rest),
        (&1, rest) => (OrdinalKind::Timestamp, rest),
        (&2, [precision, scale, rest @ ..]) => (
            OrdinalKind::Decimal {
                precision: *precision,
                scale: *scale,
            },
            rest,
        ),
        _ => return None,
    };
    (rest.len() % 16 == 0).then(|| ChunkPlan::Ordinals {
        kind,
        starts: rest
            .chunks_exact(16)
            .map(|w| i128::from_be_bytes(w.try_into().expect("16 bytes")))
            .collect(),
    })
}

/// The plan [`encode`] recorded (None: bytes no version of sluice wrote).
pub fn decode(bytes: &[u8]) -> Option<ChunkPlan> {
    let words = |bytes: &[u8]| -> Vec<i64> {
        bytes
            .chunks_exact(8)
            .map(|w| i64::from_be_bytes(w.try_into().expect("8 bytes")))
            .collect()
    };
    match bytes.split_first() {
        Some((&INT_STARTS, rest)) if rest.len() % 8 == 0 => Some(ChunkPlan::Ints(words(rest))),
        Some((&STRING_STARTS, rest)) if decode_strings(rest).is_some() => decode_strings(rest),
        Some((&ORDINAL_STARTS, rest)) if decode_ordinals(rest).is_some() => decode_ordinals(rest),
        _ => match words(bytes)[..] {
            [lo, step, chunks] if bytes.len() == 24 => Some(ChunkPlan::uniform(lo, step, chunks)),
            _ => None,
        },
    }
}

fn decode_strings(mut b: &[u8]) -> Option<ChunkPlan> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (b.len() >= n).then(|| b.split_at(n))?;
        *b = rest;
        Some(head)
    }
    fn u32_of(b: &mut &[u8]) -> Option<u32> {
        Some(u32::from_be_bytes(take(b, 4)?.try_into().ok()?))
    }
    fn word(b: &mut &[u8]) -> Option<String> {
        let n = *take(b, 1)?.first()? as usize;
        plain_word(std::str::from_utf8(take(b, n)?).ok()?)
    }
    let order = match *take(&mut b, 1)?.first()? {
        0 => StringOrder::Bytes {
            fixed: Some(u32_of(&mut b)? as usize).filter(|&n| n > 0),
        },
        1 => StringOrder::Collated {
            charset: word(&mut b)?,
            collation: word(&mut b)?,
            pad_chars: Some(u32_of(&mut b)?).filter(|&n| n > 0),
        },
        _ => return None,
    };
    let mut starts = Vec::new();
    while !b.is_empty() {
        let n = u32_of(&mut b)? as usize;
        starts.push(take(&mut b, n)?.to_vec());
    }
    Some(ChunkPlan::Strings { order, starts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_key_once() {
        let plan = ChunkPlan::uniform(1, 10, 3);
        assert_eq!(plan, ChunkPlan::Ints(vec![11, 21]));
        assert_eq!(plan.int_bounds(0), (None, Some(11)));
        assert_eq!(plan.int_bounds(1), (Some(11), Some(21)));
        assert_eq!(plan.int_bounds(2), (Some(21), None));
        assert_eq!(ChunkPlan::whole().int_bounds(0), (None, None));
        let uneven = ChunkPlan::Ints(vec![5, 6, 1_000_000_000_000]);
        // Every key lies in the chunk whose bounds hold it.
        for plan in [&plan, &uneven] {
            for k in [i64::MIN, -5, 1, 5, 6, 10, 11, 20, 21, 500, i64::MAX] {
                let (lo, hi) = plan.int_bounds(plan.chunk_of_int(k).unwrap());
                assert!(
                    lo.is_none_or(|lo| k >= lo) && hi.is_none_or(|hi| k < hi),
                    "{k} in {plan:?}"
                );
            }
        }
        assert_eq!(uneven.chunk_of_int(1_000_000_000_001), Some(3));
        assert_eq!(ChunkPlan::whole().chunk_of_int(7), Some(0));
    }

    #[test]
    fn plans_come_back_as_recorded() {
        let plans = [
            ChunkPlan::whole(),
            ChunkPlan::Ints(vec![-3, 7, i64::MAX]),
            ChunkPlan::Strings {
                order: StringOrder::Bytes { fixed: Some(16) },
                starts: vec![vec![0; 16], vec![255; 16]],
            },
            ChunkPlan::Strings {
                order: StringOrder::Bytes { fixed: None },
                starts: vec![vec![], vec![1, 2, 3]],
            },
            ChunkPlan::Strings {
                order: StringOrder::Collated {
                    charset: "utf8mb4".into(),
                    collation: "utf8mb4_general_ci".into(),
                    pad_chars: Some(36),
                },
                starts: vec!["ä b".as_bytes().to_vec(), b"zz".to_vec()],
            },
            ChunkPlan::Strings {
                order: StringOrder::Collated {
                    charset: "latin1".into(),
                    collation: "latin1_bin".into(),
                    pad_chars: None,
                },
                starts: vec![vec![0xe4]],
            },
            ChunkPlan::Ordinals {
                kind: OrdinalKind::Decimal {
                    precision: 38,
                    scale: 10,
                },
                starts: vec![i128::MIN, -5, 0, 10i128.pow(37)],
            },
            ChunkPlan::Ordinals {
                kind: OrdinalKind::Timestamp,
                starts: vec![1, 1_700_000_000_000_000],
            },
        ];
        for p in plans {
            assert_eq!(decode(&encode(&p)), Some(p.clone()), "{p:?}");
        }
        // Runs recorded as lo/step/chunks.
        let legacy: Vec<u8> = [1i64, 10, 3].iter().flat_map(|v| v.to_be_bytes()).collect();
        assert_eq!(decode(&legacy), Some(ChunkPlan::Ints(vec![11, 21])));
        // A cut plan is no plan, never a shorter one.
        let cut = encode(&ChunkPlan::Strings {
            order: StringOrder::Bytes { fixed: None },
            starts: vec![b"abc".to_vec()],
        });
        assert_eq!(decode(&cut[..cut.len() - 1]), None);
    }

    /// Dates number in their own order, zero and invalid ones included, and come back as
    /// the values they were; decimals and timestamps become exact values of their type.
    #[test]
    fn ordinals_keep_the_order_and_the_value() {
        use super::super::convert::pack_datetime;
        let dates = [
            (0, 0, 0, 0, 0, 0, 0),
            (0, 1, 1, 0, 0, 0, 0),
            (2024, 2, 0, 0, 0, 0, 0),
            (2024, 2, 1, 0, 0, 0, 0),
            (2024, 2, 1, 0, 0, 0, 1),
            (2024, 2, 1, 23, 59, 59, 999_999),
            (2024, 2, 30, 0, 0, 0, 0),
            (2024, 12, 31, 0, 0, 0, 0),
            (9999, 12, 31, 23, 59, 59, 999_999),
        ];
        let packed: Vec<i128> = dates
            .iter()
            .map(|&(y, mo, d, h, mi, s, us)| pack_datetime(y, mo, d, h, mi, s, us))
            .collect();
        assert!(packed.windows(2).all(|w| w[0] < w[1]), "{packed:?}");
        for (&(y, mo, d, h, mi, s, us), &p) in dates.iter().zip(&packed) {
            assert_eq!(unpack_datetime(p), Value::Date(y, mo, d, h, mi, s, us));
        }
        let expressible: Vec<bool> = packed
            .iter()
            .map(|&p| OrdinalKind::DateTime.expressible(p))
            .collect();
        assert_eq!(
            expressible,
            [false, true, false, true, true, true, false, true, true]
        );
        let decimal = OrdinalKind::Decimal {
            precision: 15,
            scale: 2,
        };
        assert_eq!(decimal.param(-5).0, Value::Bytes(b"-0.05".to_vec()));
        assert_eq!(decimal.param(123_456).0, Value::Bytes(b"1234.56".to_vec()));
        assert_eq!(decimal.param(0).1, "CAST(? AS DECIMAL(15, 2))");
        let whole = OrdinalKind::Decimal {
            precision: 10,
            scale: 0,
        };
        assert_eq!(whole.param(-42).0, Value::Bytes(b"-42".to_vec()));
        assert_eq!(
            OrdinalKind::Timestamp.param(1_700_000_000_000_001).0,
            Value::Date(2023, 11, 14, 22, 13, 20, 1)
        );
    }

    #[test]
    fn bounds_compare_in_the_columns_own_terms() {
        let plan = ChunkPlan::Strings {
            order: StringOrder::Collated {
                charset: "utf8mb4".into(),
                collation: "utf8mb4_general_ci".into(),
                pad_chars: Some(8),
            },
            starts: vec![b"m".to_vec()],
        };
        let (sql, params) = plan.condition("k`", 1).unwrap();
        assert_eq!(
            sql,
            "`k``` >= CONVERT(CAST(? AS BINARY) USING utf8mb4) COLLATE utf8mb4_general_ci"
        );
        assert_eq!(params, vec![Value::Bytes(b"m".to_vec())]);
        assert!(ChunkPlan::whole().condition("k", 0).is_none());
        assert_eq!(
            plain_word("utf8mb4_0900_ai_ci").as_deref(),
            Some("utf8mb4_0900_ai_ci")
        );
        assert_eq!(plain_word("x; DROP"), None);
    }
}
