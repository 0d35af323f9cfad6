//! Snapshot reads: each reader holds a consistent-snapshot transaction and reads chunks of a
//! table as its plan ([`super::plan`]) cuts them; `open_readers` starts them all at one
//! binlog position when the server allows a brief global read lock.

use arrow::array::RecordBatch;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::binlog::{current_position, BinlogPosition};
use super::convert::{Origin, RowsBuilder};
use super::plan::ChunkPlan;
use super::{quote, Flavor, MySql, TableInfo};
use crate::SourceError;

/// Rows per Arrow batch handed on.
pub const BATCH_ROWS: usize = 16 * 1024;

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
    let range = table
        .primary_key
        .first()
        .and_then(|col| plan.condition(col, i));
    if let Some((condition, values)) = range {
        sql += &format!(" WHERE {condition}");
        params = values;
    }
    let what = format!("reading `{}` (chunk {i})", table.name);
    query_rows(mysql, conn, sql, params, builder, &what, out).await
}

/// `SELECT` of every column, in ordinal order, every identifier quoted.
fn select_all(mysql: &MySql, table: &TableInfo) -> String {
    let cols: Vec<String> = table.columns.iter().map(|c| quote(&c.name)).collect();
    format!(
        "SELECT {} FROM {}",
        cols.join(", "),
        mysql.relation(&table.name)
    )
}

/// The rows of `table` matching `condition` (a repair's keys), as a chunk reads them.
pub async fn read_where(
    mysql: &MySql,
    conn: &mut Conn,
    table: &TableInfo,
    condition: &str,
    builder: &mut RowsBuilder,
    out: &tokio::sync::mpsc::Sender<RecordBatch>,
) -> Result<u64, SourceError> {
    let sql = format!("{} WHERE {condition}", select_all(mysql, table));
    let what = format!("reading rows of `{}` by key", table.name);
    query_rows(mysql, conn, sql, Vec::new(), builder, &what, out).await
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
