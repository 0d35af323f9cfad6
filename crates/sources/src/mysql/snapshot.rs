//! Snapshots: a table is read in chunks of its primary key's first column (integer keys), so
//! chunks can be read in parallel and a crash resumes from the chunks already committed.
//! Each reader holds a consistent-snapshot transaction; `open_readers` starts them all at
//! one binlog position when the server allows a brief global read lock.

use arrow::array::RecordBatch;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::binlog::{current_position, BinlogPosition};
use super::columns::Kind;
use super::convert::{Origin, RowsBuilder};
use super::{quote, Flavor, MySql, TableInfo};
use crate::SourceError;

/// Rows per Arrow batch handed on.
pub const BATCH_ROWS: usize = 16 * 1024;

/// How a table is split: chunk `i` holds keys in `[lo + i·step, lo + (i+1)·step)`, the first
/// and last chunks open-ended. `key` None: one chunk, the whole table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPlan {
    pub lo: i64,
    pub step: i64,
    pub chunks: i64,
}

impl ChunkPlan {
    pub const WHOLE: ChunkPlan = ChunkPlan {
        lo: 0,
        step: 0,
        chunks: 1,
    };

    /// Lower (inclusive) and upper (exclusive) key bounds of chunk `i`; None is unbounded.
    pub fn bounds(&self, i: i64) -> (Option<i64>, Option<i64>) {
        if self.step == 0 {
            return (None, None);
        }
        let lo = (i > 0).then(|| self.lo.saturating_add(i.saturating_mul(self.step)));
        let hi = (i + 1 < self.chunks)
            .then(|| self.lo.saturating_add((i + 1).saturating_mul(self.step)));
        (lo, hi)
    }
}

/// The column chunks split on: the key's first column when it is an integer.
pub fn chunk_column(table: &TableInfo) -> Option<&str> {
    let first = table.primary_key.first()?;
    let def = table.columns.iter().find(|c| &c.name == first)?;
    matches!(def.kind(), Kind::Int { .. } | Kind::Year).then_some(first.as_str())
}

/// Plans chunks of about `chunk_rows` rows from the key's range and the row estimate.
pub async fn plan(
    mysql: &MySql,
    conn: &mut Conn,
    table: &TableInfo,
    chunk_rows: u64,
) -> Result<ChunkPlan, SourceError> {
    let Some(col) = chunk_column(table) else {
        return Ok(ChunkPlan::WHOLE);
    };
    let sql = format!(
        "SELECT MIN({c}), MAX({c}) FROM {}.{}",
        quote(&mysql.database),
        quote(&table.name),
        c = quote(col)
    );
    let row: Option<(Option<i64>, Option<i64>)> = conn
        .query_first(sql)
        .await
        .map_err(|e| mysql.db_err(&format!("planning the snapshot of `{}`", table.name), e))?;
    let Some((Some(lo), Some(hi))) = row else {
        return Ok(ChunkPlan::WHOLE);
    };
    // The statistics' row estimate (InnoDB's can be off by 2×) only sizes the chunks; every
    // key falls in exactly one chunk whatever the estimate.
    let mut rows = table.rows_estimate;
    if rows == 0 {
        // No statistics yet (a freshly filled table): count.
        let sql = format!(
            "SELECT COUNT(*) FROM {}.{}",
            quote(&mysql.database),
            quote(&table.name)
        );
        rows = conn
            .query_first::<u64, _>(sql)
            .await
            .map_err(|e| mysql.db_err(&format!("counting `{}`", table.name), e))?
            .unwrap_or(0);
    }
    let chunks = rows.div_ceil(chunk_rows.max(1)).max(1) as i64;
    let span = (hi as i128 - lo as i128 + 1).max(1);
    let step = (span / chunks as i128 + 1).min(i64::MAX as i128) as i64;
    Ok(ChunkPlan { lo, step, chunks })
}

/// Opens `n` connections, each inside a consistent-snapshot transaction, and the binlog
/// position that snapshot corresponds to.
///
/// With a global read lock (FLUSH TABLES WITH READ LOCK, held for milliseconds while the
/// transactions start) all readers see exactly the returned position. Without the privilege
/// the position is read before the readers start: they may see a little more than it, and
/// CDC from that position replays those changes, which the merge absorbs (full row images
/// make each change idempotent).
pub async fn open_readers(
    mysql: &MySql,
    n: usize,
    flavor: Flavor,
    want_position: bool,
) -> Result<(Vec<Conn>, Option<BinlogPosition>), SourceError> {
    let mut coordinator = mysql.connect().await?;
    // One reader needs no lock to be consistent with itself; several need it to share a
    // point in time, and CDC needs it to know which binlog position that point is.
    let locked = if want_position || n > 1 {
        match coordinator.query_drop("FLUSH TABLES WITH READ LOCK").await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(source = %mysql.source, error = %e, "no global read lock: snapshot readers start just after the recorded position");
                false
            }
        }
    } else {
        false
    };
    let mut position = None;
    if want_position && !locked {
        position = Some(current_position(mysql, &mut coordinator, flavor).await?.0);
    }
    let mut readers = Vec::with_capacity(n);
    let started = async {
        for _ in 0..n.max(1) {
            let mut c = mysql.connect().await?;
            c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .await
                .map_err(|e| mysql.db_err("starting a snapshot", e))?;
            c.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                .await
                .map_err(|e| mysql.db_err("starting a snapshot", e))?;
            readers.push(c);
        }
        Ok::<(), SourceError>(())
    }
    .await;
    if locked {
        if started.is_ok() && want_position {
            position = Some(current_position(mysql, &mut coordinator, flavor).await?.0);
        }
        coordinator
            .query_drop("UNLOCK TABLES")
            .await
            .map_err(|e| mysql.db_err("UNLOCK TABLES", e))?;
    }
    started?;
    let _ = coordinator.disconnect().await;
    Ok((readers, position))
}

/// Reads chunk `i` of `table` on a reader connection into batches of [`BATCH_ROWS`].
pub async fn read_chunk(
    mysql: &MySql,
    conn: &mut Conn,
    table: &TableInfo,
    plan: &ChunkPlan,
    i: i64,
    builder: &mut RowsBuilder,
    out: &mut Vec<RecordBatch>,
) -> Result<u64, SourceError> {
    let mut sql = select_all(mysql, table);
    let mut params: Vec<mysql_async::Value> = Vec::new();
    if let Some(col) = chunk_column(table).filter(|_| plan.step > 0) {
        let (lo, hi) = plan.bounds(i);
        let mut conds = Vec::new();
        if let Some(lo) = lo {
            conds.push(format!("{} >= ?", quote(col)));
            params.push(lo.into());
        }
        if let Some(hi) = hi {
            conds.push(format!("{} < ?", quote(col)));
            params.push(hi.into());
        }
        if !conds.is_empty() {
            sql += &format!(" WHERE {}", conds.join(" AND "));
        }
    }
    let what = format!("reading `{}` (chunk {i})", table.name);
    query_rows(mysql, conn, sql, params, builder, &what, Out::Collect(out)).await
}

/// `SELECT` of every column, in ordinal order, every identifier quoted.
fn select_all(mysql: &MySql, table: &TableInfo) -> String {
    let cols: Vec<String> = table.columns.iter().map(|c| quote(&c.name)).collect();
    format!(
        "SELECT {} FROM {}.{}",
        cols.join(", "),
        quote(&mysql.database),
        quote(&table.name)
    )
}

/// Where a query's batches go.
pub enum Out<'a> {
    /// Kept (a snapshot chunk is committed whole).
    Collect(&'a mut Vec<RecordBatch>),
    /// Streamed on, with back-pressure.
    Send(&'a tokio::sync::mpsc::Sender<RecordBatch>),
}

/// Runs a query over the binary protocol, converting rows into batches of [`BATCH_ROWS`].
async fn query_rows(
    mysql: &MySql,
    conn: &mut Conn,
    sql: String,
    params: Vec<mysql_async::Value>,
    builder: &mut RowsBuilder,
    what: &str,
    mut out: Out<'_>,
) -> Result<u64, SourceError> {
    let mut result = conn
        .exec_iter(sql, params)
        .await
        .map_err(|e| mysql.db_err(what, e))?;
    let mut rows = 0u64;
    while let Some(row) = result.next().await.map_err(|e| mysql.db_err(what, e))? {
        builder
            .push_row(row.unwrap(), Origin::Query)
            .map_err(|e| mysql.err(format!("{what}: {e}")))?;
        rows += 1;
        if builder.len() >= BATCH_ROWS {
            emit(mysql, &mut out, builder.finish()).await?;
        }
    }
    drop(result);
    if !builder.is_empty() {
        emit(mysql, &mut out, builder.finish()).await?;
    }
    Ok(rows)
}

async fn emit(mysql: &MySql, out: &mut Out<'_>, batch: RecordBatch) -> Result<(), SourceError> {
    match out {
        Out::Collect(v) => {
            v.push(batch);
            Ok(())
        }
        Out::Send(tx) => tx
            .send(batch)
            .await
            .map_err(|_| mysql.err("the lake writer stopped")),
    }
}

/// Rows whose cursor column is at or past `from` (all rows when None), in cursor order:
/// seed 004's hourly export, with an inclusive bound so rows sharing the last value are not
/// missed (the merge removes the repeats).
pub async fn read_incremental(
    mysql: &MySql,
    conn: &mut Conn,
    table: &TableInfo,
    cursor: &str,
    from: Option<mysql_async::Value>,
    builder: &mut RowsBuilder,
    out: &tokio::sync::mpsc::Sender<RecordBatch>,
) -> Result<u64, SourceError> {
    let mut sql = select_all(mysql, table);
    let mut params = Vec::new();
    if let Some(v) = from {
        sql += &format!(" WHERE {} >= ?", quote(cursor));
        params.push(v);
    }
    sql += &format!(" ORDER BY {}", quote(cursor));
    let what = format!("reading `{}` incrementally by `{cursor}`", table.name);
    query_rows(mysql, conn, sql, params, builder, &what, Out::Send(out)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_key_once() {
        let plan = ChunkPlan {
            lo: 1,
            step: 10,
            chunks: 3,
        };
        assert_eq!(plan.bounds(0), (None, Some(11)));
        assert_eq!(plan.bounds(1), (Some(11), Some(21)));
        assert_eq!(plan.bounds(2), (Some(21), None));
        assert_eq!(ChunkPlan::WHOLE.bounds(0), (None, None));
    }
}
