//! MySQL/MariaDB on the source contract ([`crate::source`]): discovery, chunked consistent
//! snapshots, incremental reads and the binlog as a change stream, every row converted by
//! [`convert`](super::convert).

use std::collections::{HashMap, HashSet, VecDeque};

use arrow::array::RecordBatch;
use async_trait::async_trait;
use mysql_async::Conn;

use sluice_core::canon::Side;
use sluice_core::change::Op;
use sluice_core::reject::Reject;
use sluice_core::retry::ErrorKind;

use super::binlog::{self, BinlogPosition, BinlogReader, Ddl, Image, RowChange, RowOp, StreamItem};
use super::columns::{arrow_schema, with_label_case_of, ColumnDef, Kind};
use super::convert::{micros_value, RowReject, RowsBuilder};
use super::handoff::Watermarks;
use super::plan::{self, ChunkPlan};
use super::{canonical, snapshot};
use super::{Flavor, MySql, TableInfo};
use crate::source::{
    Capabilities, ChangeStream, Chunk, ChunkReader, IncrementalEnd, Position, Retention,
    SnapshotPlan, Source, SourceTable, StreamEvent, StreamTable, Taken,
};
use crate::SourceError;

/// Rows per batch of a table's buffered changes.
const STREAM_BATCH_ROWS: usize = 64 * 1024;

/// Where the lake keeps a table's column definitions (JSON of [`ColumnDef`]s).
pub const COLUMNS_PROPERTY: &str = "sluice.mysql.columns";

/// A MySQL or MariaDB database as a source.
pub struct MySqlSource {
    mysql: MySql,
    server_id: u32,
    /// The tables the config names (empty: every base table).
    configured: Vec<String>,
    cdc: bool,
    /// Rows of one open transaction held before they go to the lake ahead of its end.
    txn_buffer_bytes: u64,
    flavor: std::sync::Mutex<Option<Flavor>>,
}

/// Default of [`MySqlSource::with_txn_buffer_bytes`]: 64 MiB of row events.
pub const TXN_BUFFER_BYTES: u64 = 64 << 20;

impl MySqlSource {
    pub fn new(mysql: MySql, server_id: Option<u32>, configured: Vec<String>, cdc: bool) -> Self {
        let server_id = server_id.unwrap_or_else(|| default_server_id(&mysql.source));
        MySqlSource {
            mysql,
            server_id,
            configured,
            cdc,
            txn_buffer_bytes: TXN_BUFFER_BYTES,
            flavor: Default::default(),
        }
    }

    /// How many bytes of row events one open transaction may hold in the stream before its
    /// rows go to the lake ahead of its end (written, committed only with it).
    pub fn with_txn_buffer_bytes(mut self, bytes: u64) -> Self {
        self.txn_buffer_bytes = bytes;
        self
    }

    /// The server's flavour, asked once.
    async fn flavor(&self, conn: &mut Conn) -> Result<Flavor, SourceError> {
        let cached = *self.flavor.lock().expect("flavor lock");
        if let Some(f) = cached {
            return Ok(f);
        }
        let f = self.mysql.flavor(conn).await?;
        *self.flavor.lock().expect("flavor lock") = Some(f);
        Ok(f)
    }
}

/// A server id in the range replicas rarely use, stable for a source name.
fn default_server_id(source: &str) -> u32 {
    let h = source
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    0x5000_0000 | (h & 0x0fff_ffff)
}

/// A discovered table as the contract has it.
fn source_table(info: &TableInfo) -> SourceTable {
    SourceTable {
        name: info.name.clone(),
        schema: arrow_schema(&info.columns),
        key: info.primary_key.clone(),
        definitions: serde_json::to_string(&info.columns).expect("column definitions serialize"),
        rows_estimate: info.rows_estimate,
    }
}

/// The definitions a table's text holds.
fn definitions(table: &SourceTable) -> Result<Vec<ColumnDef>, SourceError> {
    serde_json::from_str(&table.definitions).map_err(|e| SourceError::Config {
        source_name: table.name.clone(),
        message: format!("unreadable column definitions: {e}"),
    })
}

/// The table as the MySQL readers take it.
fn table_info(table: &SourceTable) -> Result<TableInfo, SourceError> {
    Ok(TableInfo {
        name: table.name.clone(),
        columns: definitions(table)?,
        primary_key: table.key.clone(),
        rows_estimate: table.rows_estimate,
    })
}

/// The end of a read into `builder`: its rejects (named for `what`) and zero dates, taken.
fn chunk_end(what: &str, builder: &mut RowsBuilder) -> Chunk {
    Chunk {
        rejects: builder.rejects.drain(..).map(|r| reject(what, r)).collect(),
        zero_dates: std::mem::take(&mut builder.zero_dates),
    }
}

/// A row builder for the table's columns, rejecting rows with NULL in its key.
fn rows_builder(info: &TableInfo) -> RowsBuilder {
    RowsBuilder::new(&info.columns).with_keys(key_columns(&info.columns, &info.primary_key))
}

/// The positions of `key` among the columns.
fn key_columns(defs: &[ColumnDef], key: &[String]) -> Vec<usize> {
    key.iter()
        .filter_map(|k| defs.iter().position(|c| &c.name == k))
        .collect()
}

/// A plan as recorded with its run.
fn plan_bytes(p: &ChunkPlan) -> SnapshotPlan {
    SnapshotPlan {
        chunks: p.chunks() as u64,
        plan: plan::encode(p),
    }
}

/// The plan a run recorded (whole when no version of sluice wrote it that way).
fn chunk_plan(p: &SnapshotPlan) -> ChunkPlan {
    plan::decode(&p.plan).unwrap_or_else(ChunkPlan::whole)
}

/// A position as bytes: the binlog position after the last change, and where a restart must
/// read from while an XA transaction is prepared but not resolved (0: nowhere earlier).
fn position(at: &BinlogPosition, hold: Option<&BinlogPosition>) -> Position {
    let mut b = at.encode().to_be_bytes().to_vec();
    b.extend_from_slice(&hold.map_or(0, BinlogPosition::encode).to_be_bytes());
    Position(b)
}

/// `(position, hold)` of a position, encoded.
fn encoded(p: &Position) -> (i64, i64) {
    let v = |i: usize| {
        p.0.get(i * 8..i * 8 + 8)
            .and_then(|s| s.try_into().ok())
            .map(i64::from_be_bytes)
            .unwrap_or(0)
    };
    (v(0), v(1))
}

fn reject(what: &str, r: RowReject) -> Reject {
    Reject {
        file: what.to_string(),
        line: 0,
        column: Some(r.column.clone()),
        raw: r.raw,
        reason: format!("column {} ({}): {}", r.column, r.column_type, r.message),
    }
}

#[async_trait]
impl Source for MySqlSource {
    fn name(&self) -> &str {
        &self.mysql.source
    }

    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshot: true,
            incremental: true,
            stream: true,
            units: false,
        }
    }

    fn definitions_property(&self) -> &'static str {
        COLUMNS_PROPERTY
    }

    async fn check(&self) -> Result<String, SourceError> {
        let mut conn = self.mysql.connect().await?;
        let flavor = self.flavor(&mut conn).await?;
        let selected = (!self.configured.is_empty()).then_some(self.configured.as_slice());
        let tables = self.mysql.discover(&mut conn, selected).await?;
        let mut detail = format!("{flavor:?}, {} table(s)", tables.len());
        let queried = tables
            .iter()
            .filter(|t| self.mysql.query_of(&t.name).is_some())
            .count();
        if queried > 0 {
            detail += &format!(" ({queried} defined by a query)");
        }
        if self.cdc {
            binlog::check_server(&self.mysql, &mut conn).await?;
            let (pos, gtid) = binlog::current_position(&self.mysql, &mut conn, flavor).await?;
            detail += &format!(", ROW binlog at {pos}");
            if let Some(g) = gtid {
                detail += &format!(" (GTID {g})");
            }
        }
        detail += &crate::source::keyless_note(
            tables
                .iter()
                .filter(|t| t.primary_key.is_empty())
                .map(|t| t.name.as_str()),
        );
        let _ = conn.disconnect().await;
        Ok(detail)
    }

    async fn tables(&self, selected: Option<&[String]>) -> Result<Vec<SourceTable>, SourceError> {
        let mut conn = self.mysql.connect().await?;
        let flavor = self.flavor(&mut conn).await;
        let found = match flavor {
            Ok(_) => self.mysql.discover(&mut conn, selected).await,
            Err(e) => Err(e),
        };
        let _ = conn.disconnect().await;
        Ok(found?.iter().map(source_table).collect())
    }

    fn unusable(&self, table: &SourceTable, stream: bool) -> Option<String> {
        // The binlog carries text as stored: a column sluice cannot decode stops CDC for its
        // table before anything is read.
        match stream {
            true => definitions(table)
                .ok()?
                .iter()
                .find_map(ColumnDef::binlog_undecodable),
            false => None,
        }
    }

    fn table_as(&self, now: &SourceTable, stored: &str) -> Result<SourceTable, SourceError> {
        let defs: Vec<ColumnDef> =
            serde_json::from_str(stored).map_err(|e| SourceError::Config {
                source_name: self.mysql.source.clone(),
                message: format!("table `{}`: unreadable column definitions: {e}", now.name),
            })?;
        let defs = match definitions(now) {
            Ok(current) => with_label_case_of(defs, &current),
            Err(_) => defs,
        };
        Ok(SourceTable {
            schema: arrow_schema(&defs),
            definitions: serde_json::to_string(&defs).expect("column definitions serialize"),
            ..now.clone()
        })
    }

    fn canonical(&self, table: &SourceTable) -> Option<Side> {
        let defs = definitions(table).ok()?;
        Some(canonical::side(&self.mysql, &table.name, &defs, &table.key))
    }

    async fn query_text(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, SourceError> {
        canonical::query_text(&self.mysql, sql).await
    }

    async fn read_where(
        &self,
        table: &SourceTable,
        condition: &str,
        out: &tokio::sync::mpsc::Sender<RecordBatch>,
    ) -> Result<Chunk, SourceError> {
        let info = table_info(table)?;
        let mut builder = rows_builder(&info);
        let mut conn = self.mysql.connect().await?;
        snapshot::read_where(&self.mysql, &mut conn, &info, condition, &mut builder, out).await?;
        let _ = conn.disconnect().await;
        Ok(chunk_end(
            &format!("{}.{} repair", self.mysql.source, table.name),
            &mut builder,
        ))
    }

    async fn check_stream(&self) -> Result<(), SourceError> {
        let mut conn = self.mysql.connect().await?;
        let r = binlog::check_server(&self.mysql, &mut conn).await;
        let _ = conn.disconnect().await;
        r
    }

    async fn plan_snapshot(
        &self,
        table: &SourceTable,
        chunk_rows: u64,
    ) -> Result<SnapshotPlan, SourceError> {
        let info = table_info(table)?;
        let mut conn = self.mysql.connect().await?;
        let plan = plan::plan(&self.mysql, &mut conn, &info, chunk_rows).await;
        let _ = conn.disconnect().await;
        Ok(plan_bytes(&plan?))
    }

    async fn snapshot_readers(
        &self,
        n: usize,
        positions: bool,
    ) -> Result<Vec<Box<dyn ChunkReader>>, SourceError> {
        let cached = *self.flavor.lock().expect("flavor lock");
        let flavor = match cached {
            Some(f) => f,
            None => {
                let mut conn = self.mysql.connect().await?;
                let flavor = self.flavor(&mut conn).await;
                let _ = conn.disconnect().await;
                flavor?
            }
        };
        let readers = snapshot::open_readers(&self.mysql, n, flavor, positions).await?;
        Ok(readers
            .into_iter()
            .map(|r| {
                Box::new(MySqlChunkReader {
                    mysql: self.mysql.clone(),
                    at: r.position,
                    conn: r.conn,
                    reading: None,
                }) as Box<dyn ChunkReader>
            })
            .collect())
    }

    async fn read_incremental(
        &self,
        table: &SourceTable,
        cursor: &str,
        after: Option<i64>,
        out: tokio::sync::mpsc::Sender<RecordBatch>,
    ) -> Result<IncrementalEnd, SourceError> {
        let info = table_info(table)?;
        let kind = cursor_kind(&info, cursor)?;
        let from = after.map(|v| cursor_param(&kind, v));
        let mut builder = rows_builder(&info);
        let mut conn = self.mysql.connect().await?;
        let r = snapshot::read_incremental(
            &self.mysql,
            &mut conn,
            &info,
            cursor,
            from,
            &mut builder,
            &out,
        )
        .await;
        let _ = conn.disconnect().await;
        r?;
        let what = format!(
            "{}.{} incremental read from {cursor} {}",
            self.mysql.source,
            table.name,
            after.map_or("(start)".into(), |v| v.to_string())
        );
        Ok(IncrementalEnd {
            rejects: builder
                .rejects
                .drain(..)
                .map(|r| reject(&what, r))
                .collect(),
            zero_dates: builder.zero_dates,
        })
    }

    async fn open_stream(
        &self,
        tables: Vec<StreamTable>,
        follow: bool,
    ) -> Result<Box<dyn ChangeStream>, SourceError> {
        Ok(Box::new(MySqlStream::open(self, tables, follow).await?))
    }

    async fn retention(&self, at: &Position) -> Result<Option<Retention>, SourceError> {
        let mut conn = self.mysql.connect().await?;
        let logs = binlog::binary_log_sizes(&self.mysql, &mut conn).await;
        let kept_for = binlog::binlog_kept_for(&self.mysql, &mut conn).await;
        let _ = conn.disconnect().await;
        let (logs, kept_for_secs) = (logs?, kept_for?);
        let names: Vec<String> = logs.iter().map(|(n, _)| n.clone()).collect();
        // A prepared XA transaction's start is where a restart reads from.
        let (pos, hold) = encoded(at);
        let from = [pos, hold]
            .into_iter()
            .filter(|v| *v > 0)
            .map(|v| BinlogPosition::decode(v, &names))
            .collect::<Option<Vec<_>>>();
        let Some(from) = from.and_then(|f| f.into_iter().min_by_key(BinlogPosition::key)) else {
            return Ok(None);
        };
        let before: Vec<&(String, u64)> =
            logs.iter().take_while(|(n, _)| *n != from.file).collect();
        Ok(Some(Retention {
            files_before: before.len() as u64,
            bytes_before: before.iter().map(|(_, size)| size).sum::<u64>() + from.pos,
            kept_for_secs,
        }))
    }

    fn legacy_ids(&self) -> &'static [&'static str] {
        &[
            "mysql.binlog",
            "mysql.binlog.hold",
            "mysql.snapshot.lo",
            "mysql.snapshot.step",
            "mysql.snapshot.chunks",
        ]
    }

    fn legacy_position(&self, app: &dyn Fn(&str) -> Option<i64>) -> Option<Position> {
        let at = app("mysql.binlog")?;
        let hold = app("mysql.binlog.hold").unwrap_or(0);
        let mut b = at.to_be_bytes().to_vec();
        b.extend_from_slice(&hold.to_be_bytes());
        Some(Position(b))
    }

    fn legacy_plan(&self, app: &dyn Fn(&str) -> Option<i64>) -> Option<SnapshotPlan> {
        Some(plan_bytes(&ChunkPlan::uniform(
            app("mysql.snapshot.lo")?,
            app("mysql.snapshot.step")?,
            app("mysql.snapshot.chunks")?,
        )))
    }
}

/// A snapshot reader: one connection inside a consistent-snapshot transaction.
struct MySqlChunkReader {
    mysql: MySql,
    conn: Conn,
    at: Option<BinlogPosition>,
    /// The table being read and its row builder, kept from chunk to chunk.
    reading: Option<(String, TableInfo, RowsBuilder)>,
}

#[async_trait]
impl ChunkReader for MySqlChunkReader {
    fn read_at(&self) -> Option<i64> {
        self.at.as_ref().map(BinlogPosition::encode)
    }

    fn position(&self) -> Option<Position> {
        self.at.as_ref().map(|p| position(p, None))
    }

    async fn read(
        &mut self,
        table: &SourceTable,
        plan: &SnapshotPlan,
        index: u64,
        out: &tokio::sync::mpsc::Sender<RecordBatch>,
    ) -> Result<Chunk, SourceError> {
        if self
            .reading
            .as_ref()
            .is_none_or(|(defs, info, _)| info.name != table.name || *defs != table.definitions)
        {
            let info = table_info(table)?;
            let builder = rows_builder(&info);
            self.reading = Some((table.definitions.clone(), info, builder));
        }
        let (_, info, builder) = self.reading.as_mut().expect("set above");
        snapshot::read_chunk(
            &self.mysql,
            &mut self.conn,
            info,
            &chunk_plan(plan),
            index as i64,
            builder,
            out,
        )
        .await?;
        Ok(chunk_end(
            &format!(
                "{}.{} snapshot chunk {index}",
                self.mysql.source, table.name
            ),
            builder,
        ))
    }

    async fn close(self: Box<Self>) {
        let _ = self.conn.disconnect().await;
    }
}

/// The cursor column's kind: an integer, DATE, DATETIME or TIMESTAMP.
fn cursor_kind(info: &TableInfo, cursor: &str) -> Result<Kind, SourceError> {
    let def = info
        .columns
        .iter()
        .find(|c| c.name == cursor)
        .ok_or_else(|| SourceError::Config {
            source_name: info.name.clone(),
            message: format!("table `{}` has no cursor column `{cursor}`", info.name),
        })?;
    let kind = def.kind();
    match kind {
        Kind::Int { .. } | Kind::Date | Kind::DateTime | Kind::Timestamp => Ok(kind),
        _ => Err(SourceError::Config {
            source_name: info.name.clone(),
            message: format!(
                "cursor `{}`.`{cursor}` is {}: a cursor must be an integer, DATE, DATETIME or TIMESTAMP column",
                info.name, def.column_type
            ),
        }),
    }
}

/// A cursor value as the lake numbers it (integers; days for dates; microseconds for times)
/// back to a query parameter.
fn cursor_param(kind: &Kind, v: i64) -> mysql_async::Value {
    use chrono::{DateTime, Datelike, Utc};
    match kind {
        Kind::Date => {
            let d = DateTime::<Utc>::UNIX_EPOCH.date_naive() + chrono::Days::new(v.max(0) as u64);
            mysql_async::Value::Date(d.year() as u16, d.month() as u8, d.day() as u8, 0, 0, 0, 0)
        }
        Kind::DateTime | Kind::Timestamp => micros_value(v),
        _ => mysql_async::Value::Int(v),
    }
}

/// One captured table in the binlog stream: what it decodes with, what is buffered, where
/// it is in the lake.
struct Streamed {
    table: SourceTable,
    defs: Vec<ColumnDef>,
    builder: RowsBuilder,
    /// Batches the builder filled (by bytes) since the last take.
    sealed: Vec<RecordBatch>,
    ops: Vec<Op>,
    commit_micros: Vec<Option<i64>>,
    key_columns: Vec<usize>,
    /// Changes at or before this position are in the lake ...
    from: (u64, u64),
    /// ... as it was handed over.
    from_position: Position,
    marks: Option<Watermarks>,
    stopped: bool,
    /// Rows buffered before a schema change (decoded with the definitions before it) or
    /// before an open transaction's rows given ahead: the next take gives them alone.
    carried: Option<Taken>,
    /// A `Committed` named the table since its last take.
    untaken: bool,
}

impl Streamed {
    fn new(
        table: SourceTable,
        from: (u64, u64),
        from_position: Position,
        marks: Option<Watermarks>,
    ) -> Result<Self, SourceError> {
        let defs = definitions(&table)?;
        let key_columns = key_columns(&defs, &table.key);
        Ok(Streamed {
            builder: RowsBuilder::new(&defs).with_keys(key_columns.clone()),
            sealed: Vec::new(),
            defs,
            ops: Vec::new(),
            commit_micros: Vec::new(),
            key_columns,
            table,
            from,
            from_position,
            marks,
            stopped: false,
            carried: None,
            untaken: false,
        })
    }

    /// What is buffered, as taken.
    fn take(&mut self, what: &str) -> Taken {
        self.untaken = false;
        let mut rows = std::mem::take(&mut self.sealed);
        if !self.builder.is_empty() {
            rows.push(self.builder.finish());
        }
        Taken {
            rows,
            ops: std::mem::take(&mut self.ops),
            commit_micros: std::mem::take(&mut self.commit_micros),
            rejects: self
                .builder
                .rejects
                .drain(..)
                .map(|r| reject(what, r))
                .collect(),
            zero_dates: std::mem::take(&mut self.builder.zero_dates),
        }
    }

    /// Decodes with `table`'s definitions from now on (after a schema change); what was
    /// buffered with the old ones waits for the next take.
    fn redefine(&mut self, table: SourceTable, what: &str) -> Result<(), SourceError> {
        let buffered = self.take(what);
        let empty = buffered.ops.is_empty() && buffered.rejects.is_empty();
        let carried = match (self.carried.take(), empty) {
            (c, true) => c,
            (None, false) => Some(buffered),
            (Some(_), false) => {
                return Err(SourceError::Config {
                    source_name: what.to_string(),
                    message: "rows of two definitions ago were never taken (the driver takes \
                              a table's rows at each schema change)"
                        .into(),
                })
            }
        };
        let marks = self.marks.take();
        *self = Streamed::new(table, self.from, self.from_position.clone(), marks)?;
        self.carried = carried;
        Ok(())
    }

    /// Sets what committed before apart (the next take gives it alone), before rows of an
    /// open transaction are buffered.
    fn set_committed_apart(&mut self, what: &str) -> Result<(), SourceError> {
        if !self.untaken {
            return Ok(());
        }
        if self.carried.is_some() {
            return Err(SourceError::Config {
                source_name: what.to_string(),
                message: "rows before a schema change were never taken (the driver takes a \
                          table's rows at each schema change)"
                    .into(),
            });
        }
        self.carried = Some(self.take(what));
        Ok(())
    }
}

/// The binlog as a change stream.
struct MySqlStream {
    mysql: MySql,
    /// None when no table could be streamed.
    reader: Option<BinlogReader>,
    tables: HashMap<String, Streamed>,
    /// Events decided and not yet given.
    queued: VecDeque<StreamEvent>,
    /// The end of the last event read.
    last_seen: Option<BinlogPosition>,
    /// A DDL statement being taken, and the index of the next of its tables.
    ddl: Option<(Ddl, usize)>,
    /// Tables given rows of the open transaction ahead of its end (`Open`).
    open: Vec<String>,
    /// Rows of the open transaction given ahead that wait for its end all the same: a
    /// table's snapshot marks decide by the commit position.
    held: Vec<RowChange>,
    /// Tables with rows in `held`: their later rows of the transaction wait too (in order).
    holding: HashSet<String>,
    /// A transaction read and not yet decided: string keys in a snapshot's hand-off window
    /// are weighed by the server first (kept here so a call dropped meanwhile loses nothing).
    deciding: Option<binlog::SourceTxn>,
    /// The connection keys are weighed on.
    weigher: Option<Conn>,
}

impl MySqlStream {
    async fn open(
        source: &MySqlSource,
        tables: Vec<StreamTable>,
        follow: bool,
    ) -> Result<MySqlStream, SourceError> {
        let mysql = &source.mysql;
        let mut conn = mysql.connect().await?;
        let files = binlog::binary_logs(mysql, &mut conn).await?;
        let _ = conn.disconnect().await;
        let mut queued = VecDeque::new();
        let mut streamed = HashMap::new();
        let mut start: Option<BinlogPosition> = None;
        for t in tables {
            let (at, hold) = encoded(&t.from);
            let lost = |v: i64| {
                format!(
                    "the binlog file (number {}) sluice must resume from is no longer on the server (it has {}): \
                     changes since were lost to CDC. Re-snapshot: sluice sync --resnapshot {}.{}",
                    v >> 32,
                    files.first().map(String::as_str).unwrap_or("none"),
                    mysql.source,
                    t.table.name
                )
            };
            let Some(from) = BinlogPosition::decode(at, &files) else {
                queued.push_back(StreamEvent::Failed {
                    table: t.table.name.clone(),
                    why: lost(at),
                    kind: ErrorKind::PositionLost,
                });
                continue;
            };
            // A restart reads again from an XA transaction prepared but not resolved then.
            let begin = match hold {
                0 => from.clone(),
                h => match BinlogPosition::decode(h, &files) {
                    Some(p) if p.key() < from.key() => p,
                    Some(_) => from.clone(),
                    None => {
                        queued.push_back(StreamEvent::Failed {
                            table: t.table.name.clone(),
                            why: lost(h),
                            kind: ErrorKind::PositionLost,
                        });
                        continue;
                    }
                },
            };
            if start.as_ref().is_none_or(|s| begin.key() < s.key()) {
                start = Some(begin);
            }
            let marks = match &t.snapshot {
                Some(m) => Watermarks::of(
                    m,
                    chunk_plan(&m.plan),
                    &definitions(&t.table)?,
                    t.table.key.first(),
                    at,
                ),
                None => None,
            };
            streamed.insert(
                t.table.name.clone(),
                Streamed::new(t.table, from.key(), t.from, marks)?,
            );
        }
        // No table left to stream (each one's position is gone): the stream only says so.
        let reader = match start {
            Some(start) => {
                let names: HashSet<String> = streamed.keys().cloned().collect();
                tracing::info!(source = %mysql.source, from = %start, "streaming the binlog");
                Some(
                    BinlogReader::open(
                        mysql,
                        &start,
                        source.server_id,
                        names,
                        !follow,
                        source.txn_buffer_bytes,
                    )
                    .await?,
                )
            }
            None => None,
        };
        Ok(MySqlStream {
            mysql: mysql.clone(),
            reader,
            tables: streamed,
            queued,
            last_seen: None,
            ddl: None,
            open: Vec::new(),
            held: Vec::new(),
            holding: HashSet::new(),
            deciding: None,
            weigher: None,
        })
    }

    /// Weighs the string keys of the transaction being decided, for each table whose
    /// snapshot hand-off it falls in.
    async fn weigh_keys(&mut self) -> Result<(), SourceError> {
        let Some(txn) = &self.deciding else {
            return Ok(());
        };
        for (name, t) in self.tables.iter_mut() {
            let Some(w) = t
                .marks
                .as_mut()
                .filter(|w| w.weighs_keys() && w.undecided(&txn.end))
            else {
                continue;
            };
            let changes: Vec<&RowChange> = self
                .held
                .iter()
                .chain(&txn.changes)
                .filter(|c| c.table == *name)
                .collect();
            if changes.is_empty() {
                continue;
            }
            if self.weigher.is_none() {
                self.weigher = Some(self.mysql.connect().await?);
            }
            let conn = self.weigher.as_mut().expect("connected above");
            w.weigh(&self.mysql, conn, &changes, &txn.end, &t.defs)
                .await?;
        }
        Ok(())
    }

    fn position(&self, at: &BinlogPosition) -> Position {
        position(
            at,
            self.reader.as_ref().and_then(BinlogReader::hold).as_ref(),
        )
    }

    /// Whether `table` takes events at `end` (captured, running, not yet past it).
    fn takes(&self, table: &str, end: &BinlogPosition) -> bool {
        self.tables
            .get(table)
            .is_some_and(|t| !t.stopped && t.from < end.key())
    }

    /// A committed transaction: its rows buffered, the halts it causes queued.
    fn transaction(&mut self, txn: binlog::SourceTxn) -> StreamEvent {
        for (name, why) in &txn.unreadable {
            if self.takes(name, &txn.end) {
                if let Some(t) = self.tables.get_mut(name) {
                    t.stopped = true;
                }
                self.queued.push_back(StreamEvent::Halted {
                    table: name.clone(),
                    why: why.clone(),
                });
            }
        }
        let mut counts: Vec<(String, usize)> = Vec::new();
        let held = std::mem::take(&mut self.held);
        self.holding.clear();
        for change in held.into_iter().chain(txn.changes) {
            if !self.takes(&change.table, &txn.end) {
                continue;
            }
            let name = change.table.clone();
            let t = self.tables.get_mut(&name).expect("taken above");
            let Some(change) = decode_or_halt(
                t,
                change,
                ("at", &txn.end),
                &self.mysql.source,
                &mut self.queued,
            ) else {
                continue;
            };
            // What the table's snapshot already saw is not given again.
            let change = match &t.marks {
                Some(w) => match w.unseen(change, &txn.end, &t.defs) {
                    Some(c) => c,
                    None => continue,
                },
                None => change,
            };
            let n = add_change(t, change, txn.commit_micros);
            if n > 0 || !t.builder.rejects.is_empty() {
                match counts.iter_mut().find(|(c, _)| *c == name) {
                    Some((_, k)) => *k += n,
                    None => counts.push((name, n)),
                }
            }
        }
        // Tables given rows ahead commit them here, with or without rows left.
        for name in std::mem::take(&mut self.open) {
            if self.takes(&name, &txn.end) && !counts.iter().any(|(c, _)| *c == name) {
                counts.push((name, 0));
            }
        }
        for (name, _) in &counts {
            if let Some(t) = self.tables.get_mut(name) {
                t.untaken = true;
            }
        }
        let at = self.position(&txn.end);
        if counts.is_empty() {
            return StreamEvent::Moved(at);
        }
        StreamEvent::Committed {
            at,
            commit_micros: txn.commit_micros,
            tables: counts,
        }
    }

    /// Rows of the open transaction, given ahead of its end (it ends after `at`): buffered
    /// apart from what committed before, for `Open`. A change the table's snapshot marks may
    /// have seen waits for the commit position that decides it.
    fn part(
        &mut self,
        changes: Vec<RowChange>,
        at: &BinlogPosition,
        commit_micros: i64,
    ) -> Result<Option<StreamEvent>, SourceError> {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for change in changes {
            // The transaction ends after `at`: a table past `at` is past all of it.
            if !self.takes(&change.table, at) {
                continue;
            }
            let name = change.table.clone();
            let t = self.tables.get_mut(&name).expect("taken above");
            let undecided = t.marks.as_ref().is_some_and(|w| w.undecided(at));
            if undecided || self.holding.contains(&name) {
                self.holding.insert(name);
                self.held.push(change);
                continue;
            }
            let Some(change) = decode_or_halt(
                t,
                change,
                ("after", at),
                &self.mysql.source,
                &mut self.queued,
            ) else {
                continue;
            };
            if !self.open.contains(&name) {
                t.set_committed_apart(&format!("{}.{name} binlog", self.mysql.source))?;
                self.open.push(name.clone());
            }
            let n = add_change(t, change, commit_micros);
            match counts.iter_mut().find(|(c, _)| *c == name) {
                Some((_, k)) => *k += n,
                None => counts.push((name, n)),
            }
        }
        Ok((!counts.is_empty()).then_some(StreamEvent::Open { tables: counts }))
    }

    /// Goes on with the DDL statement being taken: `ALTER TABLE` and index statements are
    /// taken with the table's definitions read right after them; anything else (RENAME,
    /// DROP, TRUNCATE: whose row changes the binlog does not carry) halts the table before
    /// it. Table by table, each one's outcome applied only once read: the driver may drop a
    /// call half way (its batching timer), and the next call starts again where it stood.
    async fn continue_ddl(&mut self) -> Result<(), SourceError> {
        while let Some((ddl, k)) = self.ddl.clone() {
            let Some(name) = ddl.tables.get(k) else {
                self.ddl = None;
                self.last_seen = Some(ddl.end.clone());
                if self.queued.is_empty() {
                    self.queued
                        .push_back(StreamEvent::Moved(self.position(&ddl.end)));
                }
                return Ok(());
            };
            if !self.takes(name, &ddl.end) {
                if !self.tables.contains_key(name) {
                    tracing::info!(table = %name, statement = %ddl.statement, "DDL on a table sluice does not capture");
                }
                self.ddl = Some((ddl, k + 1));
                continue;
            }
            let outcome = self.take_ddl(name, &ddl).await?;
            let what = format!("{}.{name} binlog", self.mysql.source);
            let at = self.position(&ddl.end);
            let t = self.tables.get_mut(name).expect("taken above");
            match outcome {
                Ok(table) => {
                    t.redefine(table.clone(), &what)?;
                    self.queued.push_back(StreamEvent::Changed {
                        table,
                        at,
                        statement: ddl.statement.trim().to_string(),
                    });
                }
                Err(why) => {
                    tracing::warn!(table = %name, statement = %ddl.statement, "schema change: capture halted");
                    t.stopped = true;
                    self.queued.push_back(StreamEvent::Halted {
                        table: name.clone(),
                        why,
                    });
                }
            }
            self.ddl = Some((ddl, k + 1));
        }
        Ok(())
    }

    /// The table as it is after `ddl`, or why its capture halts.
    async fn take_ddl(
        &self,
        name: &str,
        ddl: &Ddl,
    ) -> Result<Result<SourceTable, String>, SourceError> {
        let halt = |why: &str| {
            format!(
                "schema change at {}: `{}` ({why}; capture stopped before it)",
                ddl.start,
                ddl.statement.trim()
            )
        };
        let words: Vec<String> = ddl
            .statement
            .split_whitespace()
            .take(4)
            .map(|w| w.to_ascii_uppercase())
            .collect();
        let alter =
            words.first().is_some_and(|w| w == "ALTER") && words.contains(&"TABLE".to_string());
        let index = words.first().is_some_and(|w| w == "CREATE" || w == "DROP")
            && words.contains(&"INDEX".to_string());
        if !alter && !index {
            return Ok(Err(halt("not a change sluice can follow in the binlog")));
        }
        let mut conn = self.mysql.connect().await?;
        let found = self
            .mysql
            .discover(&mut conn, Some(&[name.to_string()]))
            .await;
        let _ = conn.disconnect().await;
        let Some(info) = found.ok().and_then(|mut f| f.pop()) else {
            return Ok(Err(halt("the table is gone or renamed")));
        };
        let old = &self.tables[name].table;
        if let Some(k) = old
            .key
            .iter()
            .find(|k| !info.columns.iter().any(|c| &c.name == *k))
        {
            return Ok(Err(format!(
                "schema changed at the source: key column `{k}` of {}.{name} is gone; set primary_key or \
                 re-snapshot (sluice sync --resnapshot {}.{name})",
                self.mysql.source, self.mysql.source
            )));
        }
        Ok(Ok(SourceTable {
            key: old.key.clone(),
            ..source_table(&info)
        }))
    }
}

#[async_trait]
impl ChangeStream for MySqlStream {
    async fn next(&mut self) -> Result<Option<StreamEvent>, SourceError> {
        loop {
            if let Some(e) = self.queued.pop_front() {
                return Ok(Some(e));
            }
            if self.ddl.is_some() {
                self.continue_ddl().await?;
                continue;
            }
            if self.deciding.is_some() {
                self.weigh_keys().await?;
                let txn = self.deciding.take().expect("checked above");
                self.last_seen = Some(txn.end.clone());
                let event = self.transaction(txn);
                // Halts a transaction causes come before its rows.
                self.queued.push_back(event);
                continue;
            }
            let Some(reader) = self.reader.as_mut() else {
                return Ok(None);
            };
            let Some(item) = reader.next().await? else {
                return Ok(None);
            };
            match item {
                StreamItem::Txn(txn) => self.deciding = Some(txn),
                StreamItem::Part {
                    changes,
                    at,
                    commit_micros,
                } => {
                    if let Some(event) = self.part(changes, &at, commit_micros)? {
                        self.queued.push_back(event);
                    }
                }
                // Taken in continue_ddl; the stream is past it once every table has it.
                StreamItem::Ddl(ddl) => self.ddl = Some((ddl, 0)),
                StreamItem::Position(p) => {
                    // Only a rollback ends a transaction that gave rows ahead this way.
                    self.held.clear();
                    self.holding.clear();
                    let at = self.position(&p);
                    self.last_seen = Some(p);
                    // The driver took each `Open`'s rows as it came: none wait here.
                    let rolled_back = std::mem::take(&mut self.open);
                    if !rolled_back.is_empty() {
                        self.queued.push_back(StreamEvent::Moved(at));
                        return Ok(Some(StreamEvent::RolledBack {
                            tables: rolled_back,
                        }));
                    }
                    return Ok(Some(StreamEvent::Moved(at)));
                }
            }
        }
    }

    fn take(&mut self, table: &str) -> Result<Taken, SourceError> {
        let t = self
            .tables
            .get_mut(table)
            .ok_or_else(|| self.mysql.err(format!("no table `{table}` in the stream")))?;
        let what = format!("{}.{table} binlog", self.mysql.source);
        Ok(match t.carried.take() {
            Some(c) => c,
            None => t.take(&what),
        })
    }

    fn stop(&mut self, table: &str) {
        if let Some(t) = self.tables.get_mut(table) {
            t.stopped = true;
        }
    }

    fn positions(&self) -> Vec<(String, Position)> {
        self.tables
            .iter()
            .filter(|(_, t)| !t.stopped)
            .map(|(name, t)| {
                let at = match &self.last_seen {
                    Some(p) if p.key() > t.from => self.position(p),
                    _ => t.from_position.clone(),
                };
                (name.clone(), at)
            })
            .collect()
    }
}

/// Buffers one row change; returns the change rows it produced (a key change is a delete
/// of the old key and an insert of the new; an update of a table without a key, the delete of
/// its before image and the update to its after image). A change whose rows do not convert
/// produces none: it waits in the builder's rejects for the quarantine.
fn add_change(t: &mut Streamed, change: RowChange, ts: i64) -> usize {
    let images_ops: Option<(Vec<Image>, Vec<Op>)> = match change.op {
        RowOp::Insert => change.after.map(|a| (vec![a], vec![Op::Insert])),
        RowOp::Delete => change.before.map(|b| (vec![b], vec![Op::Delete])),
        RowOp::Update => match (change.before, change.after) {
            (Some(before), Some(after)) => Some(if t.key_columns.is_empty() {
                (vec![before, after], vec![Op::Delete, Op::Update])
            } else if t.key_columns.iter().any(|&k| before.get(k) != after.get(k)) {
                (vec![before, after], vec![Op::Delete, Op::Insert])
            } else {
                (vec![after], vec![Op::Update])
            }),
            _ => None,
        },
    };
    let Some((images, ops)) = images_ops else {
        t.builder.rejects.push(RowReject {
            column: String::new(),
            column_type: String::new(),
            message: "a row change without its row image (binlog_row_image must be FULL)".into(),
            raw: String::new(),
        });
        return 0;
    };
    if let Err(r) = t.builder.push_binlog_rows(images) {
        t.builder.rejects.push(r);
        return 0;
    }
    // A large transaction becomes several batches (one array holds at most 2 GiB).
    if t.builder.is_full(STREAM_BATCH_ROWS) {
        let batch = t.builder.finish();
        t.sealed.push(batch);
    }
    let n = ops.len();
    t.ops.extend(ops);
    t.commit_micros.extend(std::iter::repeat_n(Some(ts), n));
    n
}

/// `change` in the order of `t`'s definitions, or None when its columns are not theirs:
/// then the table stops, with a `Halted` queued naming where the rows are (`rows_at`: at
/// or after a position).
fn decode_or_halt(
    t: &mut Streamed,
    change: RowChange,
    rows_at: (&str, &BinlogPosition),
    source: &str,
    queued: &mut VecDeque<StreamEvent>,
) -> Option<RowChange> {
    match by_name(change, &t.defs) {
        Ok(c) => Some(c),
        Err(found) => {
            t.stopped = true;
            let name = &t.table.name;
            queued.push_back(StreamEvent::Halted {
                table: name.clone(),
                why: format!(
                    "schema changed at the source: rows {} {} have columns ({found}), not the ({}) of the definitions sluice decodes `{name}` with \
                     (several schema changes while sluice was behind: re-snapshot with sluice sync --resnapshot {source}.{name})",
                    rows_at.0,
                    rows_at.1,
                    t.defs.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
                ),
            });
            None
        }
    }
}

/// A change's row images in the order of the definitions `defs`, matched by the column names
/// the binlog carries with them: values go to their own column whatever order the table had
/// when the row was written (two reorders while sluice was stopped must not swap them).
/// Err names the columns when they are not the definitions' columns.
fn by_name(mut change: RowChange, defs: &[ColumnDef]) -> Result<RowChange, String> {
    let names = change.names.clone();
    let same = names.len() == defs.len() && names.iter().zip(defs).all(|(n, d)| *n == d.name);
    if same {
        return Ok(change);
    }
    let width = change
        .after
        .as_ref()
        .or(change.before.as_ref())
        .map_or(0, Vec::len);
    if names.is_empty() {
        // Without names (binlog_row_metadata is not FULL) positions are all there is.
        return match width == defs.len() {
            true => Ok(change),
            false => Err(format!("{width} of them, unnamed")),
        };
    }
    let order: Option<Vec<usize>> = defs
        .iter()
        .map(|d| names.iter().position(|n| *n == d.name))
        .collect();
    match order {
        Some(order) if names.len() == defs.len() => {
            let permute = |image: Option<Image>| {
                image.map(|mut img| {
                    order
                        .iter()
                        .map(|&i| img.get_mut(i).and_then(Option::take))
                        .collect::<Image>()
                })
            };
            change.before = permute(change.before.take());
            change.after = permute(change.after.take());
            Ok(change)
        }
        _ => Err(names.join(", ")),
    }
}
