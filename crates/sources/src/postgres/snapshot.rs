//! Snapshot and incremental reads: each a `COPY (SELECT …) TO STDOUT (FORMAT binary)`, its
//! rows decoded as they stream ([`super::rows`]).
//!
//! A snapshot's readers share one view: the first exports its snapshot
//! (`pg_export_snapshot`) and the others start their REPEATABLE READ transactions in it, so
//! every chunk sees the same committed state, whichever connection reads it.
//!
//! Chunks cut the range of an integer key's first column in even pieces of about
//! `chunk_rows` rows; any other key, or none, is one chunk.

use arrow::array::RecordBatch;
use futures::{pin_mut, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::columns::{ColumnDef, Kind};
use super::rows::{PgRows, Raw};
use super::{Pg, TableInfo};
use crate::SourceError;
use sluice_core::names::quote_ident;

/// Rows per Arrow batch handed on.
pub const BATCH_ROWS: usize = 16 * 1024;

/// How a table is cut: chunk 0 holds the keys below the first start, chunk `i` those from
/// start `i-1` up to (not including) start `i`, the last those from its start up. No column:
/// one chunk, the whole table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkPlan {
    pub column: Option<String>,
    pub starts: Vec<i64>,
}

impl ChunkPlan {
    pub fn chunks(&self) -> u64 {
        match self.column {
            Some(_) => self.starts.len() as u64 + 1,
            None => 1,
        }
    }

    /// The condition that selects chunk `i` (None: every row).
    pub fn condition(&self, i: u64) -> Option<String> {
        let c = quote_ident(self.column.as_ref()?);
        let i = i as usize;
        let lo = i.checked_sub(1).and_then(|j| self.starts.get(j));
        let hi = self.starts.get(i);
        Some(match (lo, hi) {
            // A configured key may hold NULLs: the first chunk reads them (to be rejected).
            (None, Some(hi)) => format!("({c} < {hi} OR {c} IS NULL)"),
            (Some(lo), Some(hi)) => format!("{c} >= {lo} AND {c} < {hi}"),
            (Some(lo), None) => format!("{c} >= {lo}"),
            (None, None) => return None,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a plan serializes")
    }

    pub fn decode(bytes: &[u8]) -> Option<ChunkPlan> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Cuts `table` into chunks of about `chunk_rows` rows.
pub async fn plan(
    pg: &Pg,
    client: &Client,
    table: &TableInfo,
    chunk_rows: u64,
) -> Result<ChunkPlan, SourceError> {
    let Some(column) = table.primary_key.first() else {
        return Ok(ChunkPlan::default());
    };
    let is_int = table
        .columns
        .iter()
        .find(|c| &c.name == column)
        .is_some_and(|c| matches!(c.kind(), Kind::Int16 | Kind::Int32 | Kind::Int64));
    if !is_int {
        return Ok(ChunkPlan::default());
    }
    let what = format!("planning the snapshot of `{}`", table.name);
    let relation = pg.table_ref(&table.name);
    // A table never analyzed estimates 0 rows (-1 in the catalog): count it.
    let rows = match table.rows_estimate {
        0 => client
            .query_one(&format!("SELECT count(*) FROM {relation}"), &[])
            .await
            .map_err(|e| pg.db_err(&what, e))?
            .get::<_, i64>(0) as u64,
        n => n,
    };
    let chunks = rows.div_ceil(chunk_rows.max(1));
    if chunks <= 1 {
        return Ok(ChunkPlan::default());
    }
    let c = quote_ident(column);
    let row = client
        .query_one(
            &format!("SELECT min({c})::int8, max({c})::int8 FROM {relation}"),
            &[],
        )
        .await
        .map_err(|e| pg.db_err(&what, e))?;
    let (Some(lo), Some(hi)) = (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) else {
        return Ok(ChunkPlan::default());
    };
    let span = hi as i128 - lo as i128 + 1;
    let step = (span + chunks as i128 - 1) / chunks as i128;
    let starts = (1..chunks as i128)
        .map(|k| lo as i128 + step * k)
        .take_while(|s| *s <= hi as i128)
        .map(|s| s as i64)
        .collect();
    Ok(ChunkPlan {
        column: Some(column.clone()),
        starts,
    })
}

/// Opens `n` sessions, each in a read-only REPEATABLE READ transaction, all in one snapshot.
pub async fn open_readers(pg: &Pg, n: usize) -> Result<Vec<Client>, SourceError> {
    let what = "starting a snapshot";
    let begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    let first = pg.connect().await?;
    first
        .batch_execute(begin)
        .await
        .map_err(|e| pg.db_err(what, e))?;
    let mut readers = vec![];
    if n > 1 {
        let id: String = first
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(|e| pg.db_err(what, e))?
            .get(0);
        for _ in 1..n {
            let c = pg.connect().await?;
            c.batch_execute(&format!(
                "{begin}; SET TRANSACTION SNAPSHOT {}",
                sluice_core::names::quote_literal(&id)
            ))
            .await
            .map_err(|e| pg.db_err(what, e))?;
            readers.push(c);
        }
    }
    // The exporting transaction stays open as a reader: its snapshot lives as long as it.
    readers.insert(0, first);
    Ok(readers)
}

/// The SELECT of `columns` from `relation`.
fn select(columns: &[ColumnDef], relation: &str) -> String {
    let list: Vec<String> = columns.iter().map(ColumnDef::select).collect();
    format!("SELECT {} FROM {relation}", list.join(", "))
}

/// Reads chunk `index` of `table` as `plan` cuts it.
pub async fn read_chunk(
    pg: &Pg,
    client: &Client,
    table: &TableInfo,
    plan: &ChunkPlan,
    index: u64,
    rows: &mut PgRows,
    out: &tokio::sync::mpsc::Sender<RecordBatch>,
) -> Result<u64, SourceError> {
    let mut sql = select(&table.columns, &pg.table_ref(&table.name));
    if let Some(condition) = plan.condition(index) {
        sql += &format!(" WHERE {condition}");
    }
    let what = format!("{}.{} snapshot chunk {index}", pg.source, table.name);
    copy_rows(pg, client, &sql, table.columns.len(), rows, &what, out).await
}

/// Rows whose cursor column is at or past `from` (a SQL expression), and rows whose cursor is
/// NULL (all rows when `from` is None), in cursor order, NULLs first. The bound is inclusive
/// so rows that share the last value but arrive later are not missed; the engine drops the
/// rows the lake already holds.
pub async fn read_incremental(
    pg: &Pg,
    client: &Client,
    table: &TableInfo,
    cursor: &str,
    from: Option<String>,
    rows: &mut PgRows,
    out: &tokio::sync::mpsc::Sender<RecordBatch>,
) -> Result<u64, SourceError> {
    let c = quote_ident(cursor);
    let mut sql = select(&table.columns, &pg.table_ref(&table.name));
    if let Some(from) = from {
        sql += &format!(" WHERE {c} >= {from} OR {c} IS NULL");
    }
    sql += &format!(" ORDER BY {c} NULLS FIRST");
    let what = format!("{}.{} incremental read by {cursor}", pg.source, table.name);
    copy_rows(pg, client, &sql, table.columns.len(), rows, &what, out).await
}

/// A cursor value as the lake numbers it (integers; days since 1970-01-01 for dates;
/// microseconds since then for timestamps), as a SQL expression of the column's type.
pub fn cursor_literal(kind: Kind, v: i64) -> String {
    match kind {
        Kind::Date => format!("(DATE '1970-01-01' + {v})"),
        Kind::Timestamp => format!("(TIMESTAMP '1970-01-01' + {v} * INTERVAL '1 microsecond')"),
        Kind::Timestamptz => {
            format!("(TIMESTAMPTZ '1970-01-01 00:00:00+00' + {v} * INTERVAL '1 microsecond')")
        }
        _ => v.to_string(),
    }
}

/// Runs `COPY (sql) TO STDOUT (FORMAT binary)`, sending its rows to `out` in batches; the
/// rows it rejects stay in `rows`.
async fn copy_rows(
    pg: &Pg,
    client: &Client,
    sql: &str,
    width: usize,
    rows: &mut PgRows,
    what: &str,
    out: &tokio::sync::mpsc::Sender<RecordBatch>,
) -> Result<u64, SourceError> {
    let copy = format!("COPY ({sql}) TO STDOUT (FORMAT binary)");
    let stream = client
        .copy_out(copy.as_str())
        .await
        .map_err(|e| pg.db_err(what, e))?;
    // The types only let a value be taken as `Raw` (which takes any).
    let stream = BinaryCopyOutStream::new(stream, &vec![Type::BYTEA; width]);
    pin_mut!(stream);
    let mut read = 0u64;
    while let Some(row) = stream.next().await {
        let row = row.map_err(|e| pg.db_err(what, e))?;
        let mut values: Vec<Option<&[u8]>> = Vec::with_capacity(width);
        for i in 0..width {
            let v: Option<Raw> = row.try_get(i).map_err(|e| pg.db_err(what, e))?;
            values.push(v.map(|r| r.0));
        }
        rows.push(&values, what);
        read += 1;
        if rows.is_full(BATCH_ROWS) {
            emit(pg, out, rows.finish()).await?;
        }
    }
    if !rows.is_empty() {
        emit(pg, out, rows.finish()).await?;
    }
    Ok(read)
}

async fn emit(
    pg: &Pg,
    out: &tokio::sync::mpsc::Sender<RecordBatch>,
    batch: RecordBatch,
) -> Result<(), SourceError> {
    out.send(batch)
        .await
        .map_err(|_| pg.err("the lake writer stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_key_once() {
        let p = ChunkPlan {
            column: Some("id".into()),
            starts: vec![10, 20],
        };
        assert_eq!(p.chunks(), 3);
        assert_eq!(
            p.condition(0).as_deref(),
            Some("(\"id\" < 10 OR \"id\" IS NULL)")
        );
        assert_eq!(
            p.condition(1).as_deref(),
            Some("\"id\" >= 10 AND \"id\" < 20")
        );
        assert_eq!(p.condition(2).as_deref(), Some("\"id\" >= 20"));
        assert_eq!(ChunkPlan::decode(&p.encode()), Some(p));
        let whole = ChunkPlan::default();
        assert_eq!((whole.chunks(), whole.condition(0)), (1, None));
        let one_start = ChunkPlan {
            column: Some("id".into()),
            starts: vec![],
        };
        assert_eq!((one_start.chunks(), one_start.condition(0)), (1, None));
    }

    #[test]
    fn cursor_values_become_values_of_the_column_type() {
        assert_eq!(cursor_literal(Kind::Int64, -5), "-5");
        assert_eq!(cursor_literal(Kind::Date, 3), "(DATE '1970-01-01' + 3)");
        assert!(cursor_literal(Kind::Timestamptz, 1).contains("+00"));
    }
}
