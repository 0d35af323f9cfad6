//! Snapshots: a table is read in chunks of its primary key's first column (integer keys), so
//! chunks can be read in parallel and a crash resumes from the chunks already committed.
//! Each reader holds a consistent-snapshot transaction; `open_readers` starts them all at
//! one binlog position when the server allows a brief global read lock.

use arrow::array::RecordBatch;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::binlog::{current_position, BinlogPosition};
use super::columns::Kind;
use super::convert::{key_integer, Origin, RowsBuilder};
use super::{quote, Flavor, MySql, TableInfo};
use crate::SourceError;

/// Rows per Arrow batch handed on.
pub const BATCH_ROWS: usize = 16 * 1024;

/// How a table is split, by the key's first column: chunk 0 holds the keys below
/// `starts[0]`, chunk `i` those in `[starts[i-1], starts[i])`, the last those from its start
/// up. No starts: one chunk, the whole table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkPlan {
    pub starts: Vec<i64>,
}

impl ChunkPlan {
    pub fn whole() -> ChunkPlan {
        ChunkPlan { starts: Vec::new() }
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
        ChunkPlan { starts }
    }

    pub fn chunks(&self) -> i64 {
        self.starts.len() as i64 + 1
    }

    /// Whether the table is read in key ranges (else whole).
    pub fn is_split(&self) -> bool {
        !self.starts.is_empty()
    }

    /// The chunk holding key value `k` (of the chunk column).
    pub fn chunk_of(&self, k: i64) -> i64 {
        self.starts.partition_point(|&s| s <= k) as i64
    }

    /// Lower (inclusive) and upper (exclusive) key bounds of chunk `i`; None is unbounded.
    pub fn bounds(&self, i: i64) -> (Option<i64>, Option<i64>) {
        let i = i.max(0) as usize;
        let lo = i.checked_sub(1).and_then(|j| self.starts.get(j).copied());
        (lo, self.starts.get(i).copied())
    }
}

/// The column chunks split on: the key's first column when it is an integer (BIGINT
/// UNSIGNED too, planned while its values fit an i64: auto-increment keys always do).
pub fn chunk_column(table: &TableInfo) -> Option<&str> {
    let first = table.primary_key.first()?;
    let def = table.columns.iter().find(|c| &c.name == first)?;
    matches!(
        def.kind(),
        Kind::Int { .. } | Kind::Year | Kind::UnsignedBig
    )
    .then_some(first.as_str())
}

/// At most this many row estimates (`EXPLAIN`, index dives) per plan.
const PLAN_PROBES: usize = 4096;

/// Plans chunks of about `chunk_rows` rows. The key's range is cut in even sub-ranges, four
/// per chunk the row count asks for; the server's estimate of each (`EXPLAIN`, index dives
/// on the key) decides: a sub-range holding more than a chunk is halved until it does not
/// (keys bunched at one end of a range with outliers far away), and neighbours are joined
/// into chunks of about `chunk_rows`. Estimates only size the chunks: every key falls in
/// exactly one chunk whatever they say.
pub async fn plan(
    mysql: &MySql,
    conn: &mut Conn,
    table: &TableInfo,
    chunk_rows: u64,
) -> Result<ChunkPlan, SourceError> {
    let Some(col) = chunk_column(table) else {
        return Ok(ChunkPlan::whole());
    };
    let sql = format!(
        "SELECT MIN({c}), MAX({c}) FROM {}.{}",
        quote(&mysql.database),
        quote(&table.name),
        c = quote(col)
    );
    let row: Option<(mysql_async::Value, mysql_async::Value)> = conn
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
    let chunk_rows = chunk_rows.max(1);
    let chunks = rows.div_ceil(chunk_rows).max(1);
    if chunks == 1 {
        return Ok(ChunkPlan::whole());
    }
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
    Ok(ChunkPlan { starts })
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
        "EXPLAIN SELECT 1 FROM {}.{} WHERE {c} >= {a} AND {c} < {b}",
        quote(&mysql.database),
        quote(&table.name),
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

/// A connection inside a consistent-snapshot transaction, and the binlog position that
/// snapshot corresponds to (when asked for): changes committed at or before it are in what
/// it reads, later ones are not.
pub struct Reader {
    pub conn: Conn,
    pub position: Option<BinlogPosition>,
}

/// Opens `n` readers, each inside a consistent-snapshot transaction, with (`want_position`)
/// the binlog position of its snapshot.
///
/// MariaDB tells each transaction its own position (`binlog_snapshot_file` and
/// `_position`), so readers need no lock and each position is exact. MySQL has no such
/// status: a global read lock (FLUSH TABLES WITH READ LOCK, held for milliseconds while the
/// transactions start) puts every reader at one position. Without the privilege the position
/// is read before the readers start: they may see a little more than it, and CDC from it
/// replays those changes (a merge absorbs them; an append table would see them twice — the
/// warning says so).
pub async fn open_readers(
    mysql: &MySql,
    n: usize,
    flavor: Flavor,
    want_position: bool,
) -> Result<Vec<Reader>, SourceError> {
    let per_reader = flavor == Flavor::MariaDb && want_position;
    let mut coordinator = mysql.connect().await?;
    // Several readers share one point in time only under the lock (MySQL; MariaDB readers
    // each know their own point).
    let locked = if !per_reader && (want_position || n > 1) {
        match coordinator.query_drop("FLUSH TABLES WITH READ LOCK").await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(source = %mysql.source, error = %e, "no global read lock: snapshot readers start just after the recorded position, and an append or history table may receive the changes of those milliseconds twice");
                false
            }
        }
    } else {
        false
    };
    let mut shared = None;
    if want_position && !per_reader && !locked {
        shared = Some(current_position(mysql, &mut coordinator, flavor).await?.0);
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
            let position = match per_reader {
                true => Some(snapshot_position(mysql, &mut c).await?),
                false => None,
            };
            readers.push(Reader { conn: c, position });
        }
        Ok::<(), SourceError>(())
    }
    .await;
    if locked {
        if started.is_ok() && want_position {
            shared = Some(current_position(mysql, &mut coordinator, flavor).await?.0);
        }
        coordinator
            .query_drop("UNLOCK TABLES")
            .await
            .map_err(|e| mysql.db_err("UNLOCK TABLES", e))?;
    }
    started?;
    let _ = coordinator.disconnect().await;
    if shared.is_some() {
        for r in &mut readers {
            r.position = shared.clone();
        }
    }
    Ok(readers)
}

/// MariaDB: the binlog position of the current consistent-snapshot transaction.
async fn snapshot_position(mysql: &MySql, conn: &mut Conn) -> Result<BinlogPosition, SourceError> {
    let rows: Vec<(String, String)> = conn
        .query("SHOW SESSION STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(|e| mysql.db_err("reading the snapshot's binlog position", e))?;
    let get = |name: &str| {
        rows.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    match (get("binlog_snapshot_file"), get("binlog_snapshot_position")) {
        (Some(file), Some(pos)) if !file.is_empty() => Ok(BinlogPosition {
            file,
            pos: pos
                .parse()
                .map_err(|_| mysql.err(format!("binlog_snapshot_position `{pos}`")))?,
        }),
        _ => Err(mysql.err(
            "the server reports no binlog position for the snapshot (binlog_snapshot_file): is log_bin on?",
        )),
    }
}

/// Reads chunk `i` of `table` on a reader connection into batches of [`BATCH_ROWS`].
pub async fn read_chunk(
    mysql: &MySql,
    conn: &mut Conn,
    table: &TableInfo,
    plan: &ChunkPlan,
    i: i64,
    builder: &mut RowsBuilder,
    out: &tokio::sync::mpsc::Sender<RecordBatch>,
) -> Result<u64, SourceError> {
    let mut sql = select_all(mysql, table);
    let mut params: Vec<mysql_async::Value> = Vec::new();
    if let Some(col) = chunk_column(table).filter(|_| plan.is_split()) {
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
    query_rows(mysql, conn, sql, params, builder, &what, out).await
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

/// Where a query's batches go, with back-pressure.
type Out<'a> = &'a tokio::sync::mpsc::Sender<RecordBatch>;

/// Runs a query over the binary protocol, converting rows into batches of [`BATCH_ROWS`].
async fn query_rows(
    mysql: &MySql,
    conn: &mut Conn,
    sql: String,
    params: Vec<mysql_async::Value>,
    builder: &mut RowsBuilder,
    what: &str,
    out: Out<'_>,
) -> Result<u64, SourceError> {
    let mut result = conn
        .exec_iter(sql, params)
        .await
        .map_err(|e| mysql.db_err(what, e))?;
    let mut rows = 0u64;
    while let Some(row) = result.next().await.map_err(|e| mysql.db_err(what, e))? {
        // A row that does not convert goes to the quarantine; the others land.
        match builder.push_row(row.unwrap(), Origin::Query) {
            Ok(()) => rows += 1,
            Err(r) => builder.rejects.push(r),
        }
        if builder.is_full(BATCH_ROWS) {
            emit(mysql, out, builder.finish()).await?;
        }
    }
    drop(result);
    if !builder.is_empty() {
        emit(mysql, out, builder.finish()).await?;
    }
    Ok(rows)
}

async fn emit(mysql: &MySql, out: Out<'_>, batch: RecordBatch) -> Result<(), SourceError> {
    out.send(batch)
        .await
        .map_err(|_| mysql.err("the lake writer stopped"))
}

/// Rows whose cursor column is at or past `from`, and rows whose cursor is NULL (all rows
/// when `from` is None), in cursor order: seed 004's hourly export. The bound is inclusive so
/// rows that share the last value but arrive later are not missed; the engine drops the rows
/// the lake already holds.
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
        sql += &format!(" WHERE {c} >= ? OR {c} IS NULL", c = quote(cursor));
        params.push(v);
    }
    sql += &format!(" ORDER BY {}", quote(cursor));
    let what = format!("reading `{}` incrementally by `{cursor}`", table.name);
    query_rows(mysql, conn, sql, params, builder, &what, out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_key_once() {
        let plan = ChunkPlan::uniform(1, 10, 3);
        assert_eq!(plan.starts, vec![11, 21]);
        assert_eq!(plan.bounds(0), (None, Some(11)));
        assert_eq!(plan.bounds(1), (Some(11), Some(21)));
        assert_eq!(plan.bounds(2), (Some(21), None));
        assert_eq!(ChunkPlan::whole().bounds(0), (None, None));
        let uneven = ChunkPlan {
            starts: vec![5, 6, 1_000_000_000_000],
        };
        // Every key lies in the chunk whose bounds hold it.
        for plan in [&plan, &uneven] {
            for k in [i64::MIN, -5, 1, 5, 6, 10, 11, 20, 21, 500, i64::MAX] {
                let (lo, hi) = plan.bounds(plan.chunk_of(k));
                assert!(
                    lo.is_none_or(|lo| k >= lo) && hi.is_none_or(|hi| k < hi),
                    "{k} in {plan:?}"
                );
            }
        }
        assert_eq!(uneven.chunk_of(1_000_000_000_001), 3);
        assert_eq!(ChunkPlan::whole().chunk_of(7), 0);
    }
}
