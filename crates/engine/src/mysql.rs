//! MySQL/MariaDB → lake: snapshots (chunked, parallel, resumable), incremental reads and
//! binlog CDC, each lake commit carrying the source position that covers it.
//!
//! Positions are Delta application transactions on each table's change log:
//!
//! | app id                        | version                                           |
//! |-------------------------------|---------------------------------------------------|
//! | `mysql.binlog`                | binlog position after the last committed change (file number << 32 \| offset) |
//! | `mysql.snapshot.run`          | id of the snapshot run started (ms since epoch)   |
//! | `mysql.snapshot.lo/step/chunks` | that run's chunk plan                           |
//! | `mysql.snapshot.chunk.<run>.<i>` | chunk `i` of the run is in the lake            |
//! | `mysql.snapshot.done`         | id of the last snapshot run completed             |
//! | `mysql.cursor`                | incremental: the cursor value committed (integer, or µs / days for times) |
//!
//! A snapshot commits its plan and starting binlog position first, then chunks as they are
//! read; a crash resumes the run with the chunks not yet committed. CDC starts at the
//! snapshot's position and commits whole source transactions only.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch};
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use sluice_core::change::{change_schema, data_schema, stamp_rows, Op};
use sluice_core::config::{
    Mode, SourceConfig, TableSpec, DEFAULT_BATCH_MAX_MS, DEFAULT_BATCH_MAX_ROWS,
    DEFAULT_CHUNK_ROWS, DEFAULT_SNAPSHOT_PARALLELISM,
};
use sluice_core::failpoint;
use sluice_lake::{LakeTable, TablePath, PRIMARY_KEY_PROPERTY, SEQ_APP_ID};
use sluice_sources::mysql::binlog::{self, BinlogReader, Ddl, RowChange, RowOp, StreamItem};
use sluice_sources::mysql::columns::{arrow_schema, Kind};
use sluice_sources::mysql::convert::RowsBuilder;
use sluice_sources::mysql::snapshot::{self, ChunkPlan};
use sluice_sources::mysql::{BinlogPosition, ColumnDef, Flavor, MySql, SslMode, TableInfo};

use crate::extract::{write_reads, ExtractReport};
use crate::progress::Progress;
use crate::{EngineError, Project};

pub const BINLOG_APP_ID: &str = "mysql.binlog";
pub const CURSOR_APP_ID: &str = "mysql.cursor";
const RUN: &str = "mysql.snapshot.run";
const LO: &str = "mysql.snapshot.lo";
const STEP: &str = "mysql.snapshot.step";
const CHUNKS: &str = "mysql.snapshot.chunks";
const DONE: &str = "mysql.snapshot.done";
/// Table property: the MySQL column definitions the change log was created from (JSON).
pub const COLUMNS_PROPERTY: &str = "sluice.mysql.columns";
/// Snapshot chunks per lake commit: fewer, larger files; a crash re-reads at most this many
/// chunks per reader (with the default 100,000-row chunks, a commit per million rows).
const CHUNKS_PER_COMMIT: u64 = 10;

fn chunk_id(run: i64, i: i64) -> String {
    format!("mysql.snapshot.chunk.{run}.{i}")
}

/// What `sync` asks of a MySQL source.
#[derive(Debug, Clone, Default)]
pub struct MySqlOptions {
    pub progress: bool,
    /// Keep streaming after catching up, until the signal turns true.
    pub follow: Option<watch::Receiver<bool>>,
    /// While following, load each table into its warehouse after each lake commit.
    pub load_while_following: bool,
    /// Tables to snapshot again from scratch (`--resnapshot`).
    pub resnapshot: Vec<String>,
}

/// One table's outcome.
#[derive(Debug)]
pub struct TableOutcome {
    pub spec: TableSpec,
    pub report: ExtractReport,
    pub error: Option<String>,
    /// Set when a schema change stopped the table's capture (exit 3).
    pub halted: Option<String>,
}

/// A table being captured: its definitions, change log and position.
struct Captured {
    spec: TableSpec,
    info: TableInfo,
    log: LakeTable,
    report: ExtractReport,
    error: Option<String>,
    halted: Option<String>,
}

impl Captured {
    fn outcome(self) -> TableOutcome {
        TableOutcome {
            spec: self.spec,
            report: self.report,
            error: self.error,
            halted: self.halted,
        }
    }
}

fn mysql_of(name: &str, src: &SourceConfig, project: &Project) -> Result<MySql, EngineError> {
    let password = match &src.password {
        Some(s) => Some(
            s.resolve()
                .map_err(|m| EngineError::Usage(format!("source {name}: password: {m}")))?,
        ),
        None => None,
    };
    let ssl_mode = src
        .ssl_mode
        .as_deref()
        .and_then(SslMode::parse)
        .unwrap_or_default();
    let ssl_ca = src
        .ssl_ca
        .as_deref()
        .map(|p| project.config.resolve_path(p).into());
    Ok(MySql::new(name, &src.url, password, ssl_mode, ssl_ca)?)
}

/// A source's connection, its server flavour and the tables its config names (if any).
struct Connected {
    mysql: MySql,
    conn: mysql_async::Conn,
    flavor: Flavor,
    configured: Vec<String>,
}

async fn connect(
    project: &Project,
    name: &str,
    src: &SourceConfig,
) -> Result<Connected, EngineError> {
    let mysql = mysql_of(name, src, project)?;
    let mut conn = mysql.connect().await?;
    let flavor = mysql.flavor(&mut conn).await?;
    let configured = project
        .config
        .source_tables(name, src)
        .into_iter()
        .map(|s| s.table)
        .collect();
    Ok(Connected {
        mysql,
        conn,
        flavor,
        configured,
    })
}

/// Extracts every selected table of one MySQL source into the lake.
pub async fn extract_source(
    project: &Project,
    name: &str,
    src: &SourceConfig,
    only: Option<&[String]>,
    opts: &MySqlOptions,
) -> Result<Vec<TableOutcome>, EngineError> {
    let Connected {
        mysql,
        mut conn,
        flavor,
        configured,
    } = connect(project, name, src).await?;
    let selected: Option<Vec<String>> = match (configured.is_empty(), only) {
        (true, None) => None,
        (true, Some(o)) => Some(o.to_vec()),
        (false, None) => Some(configured.clone()),
        (false, Some(o)) => Some(
            o.iter()
                .filter(|t| configured.contains(t))
                .cloned()
                .collect(),
        ),
    };
    let mode = src.mode.unwrap_or(Mode::Snapshot);
    if mode == Mode::Cdc {
        binlog::check_server(&mysql, &mut conn).await?;
    }
    let infos = mysql.discover(&mut conn, selected.as_deref()).await?;
    let _ = conn.disconnect().await;

    let mut tables = Vec::new();
    let mut failed = Vec::new();
    for info in infos {
        let spec = project
            .config
            .table_spec(name, src, &info.name, &info.primary_key);
        match open_log(project, &spec, &info).await {
            Ok((log, stored)) => {
                let mut c = Captured {
                    spec,
                    info,
                    log,
                    report: ExtractReport::default(),
                    error: None,
                    halted: None,
                };
                if stored != c.info.columns {
                    // CDC decodes from its binlog position with the definitions of then, and
                    // takes each DDL as the stream reaches it. Snapshots and incremental reads
                    // see the table as it is now: the lake takes that first (the warehouse
                    // side is the schema gate's to decide).
                    let current = std::mem::replace(&mut c.info.columns, stored);
                    if mode != Mode::Cdc {
                        match key_dropped(&c.spec, &current) {
                            Some(why) => c.halted = Some(why),
                            None => {
                                if let Err(e) = adopt_definitions(&mut c, current).await {
                                    c.error = Some(e.to_string());
                                }
                            }
                        }
                    }
                }
                tables.push(c);
            }
            Err(e) => failed.push(TableOutcome {
                spec,
                report: ExtractReport::default(),
                error: Some(e.to_string()),
                halted: None,
            }),
        }
    }

    let parallelism = src
        .snapshot_parallelism
        .unwrap_or(DEFAULT_SNAPSHOT_PARALLELISM);
    let chunk_rows = src.chunk_rows.unwrap_or(DEFAULT_CHUNK_ROWS);
    for t in tables
        .iter_mut()
        .filter(|t| t.error.is_none() && t.halted.is_none())
    {
        let settings = |fresh, cdc| SnapshotSettings {
            parallelism,
            chunk_rows,
            fresh,
            cdc,
        };
        let result = match mode {
            Mode::Snapshot => snapshot_table(&mysql, flavor, t, settings(false, false), opts).await,
            Mode::Incremental => incremental_table(&mysql, t, opts).await,
            Mode::Cdc => {
                let done = t.log.app_version(DONE).await?.is_some();
                let redo = opts.resnapshot.contains(&t.spec.table);
                if done && !redo {
                    Ok(())
                } else {
                    snapshot_table(&mysql, flavor, t, settings(redo, true), opts).await
                }
            }
        };
        if let Err(e) = result {
            t.error = Some(e.to_string());
        }
    }
    if mode == Mode::Cdc {
        let server_id = src.server_id.unwrap_or_else(|| default_server_id(name));
        let batching = Batching {
            max_rows: src.batch_max_rows.unwrap_or(DEFAULT_BATCH_MAX_ROWS),
            max_wait: Duration::from_millis(src.batch_max_ms.unwrap_or(DEFAULT_BATCH_MAX_MS)),
        };
        if let Err(e) =
            stream_changes(project, &mysql, &mut tables, server_id, batching, opts).await
        {
            let msg = e.to_string();
            for t in tables
                .iter_mut()
                .filter(|t| t.error.is_none() && t.halted.is_none())
            {
                t.error = Some(msg.clone());
            }
        }
    }
    failed.extend(tables.into_iter().map(Captured::outcome));
    Ok(failed)
}

/// `sluice check`: connects, lists the selected tables and, for CDC, checks the binlog.
pub async fn check_source(
    project: &Project,
    name: &str,
    src: &SourceConfig,
) -> Result<String, EngineError> {
    let Connected {
        mysql,
        mut conn,
        flavor,
        configured,
    } = connect(project, name, src).await?;
    let tables = mysql
        .discover(
            &mut conn,
            (!configured.is_empty()).then_some(configured.as_slice()),
        )
        .await?;
    let mut detail = format!("{flavor:?}, {} table(s)", tables.len());
    if src.mode == Some(Mode::Cdc) {
        binlog::check_server(&mysql, &mut conn).await?;
        let (pos, gtid) = binlog::current_position(&mysql, &mut conn, flavor).await?;
        detail += &format!(", ROW binlog at {pos}");
        if let Some(g) = gtid {
            detail += &format!(" (GTID {g})");
        }
    }
    let keyless: Vec<&str> = tables
        .iter()
        .filter(|t| t.primary_key.is_empty())
        .map(|t| t.name.as_str())
        .collect();
    if !keyless.is_empty() {
        detail += &format!(
            "; no primary key (loaded in append mode unless primary_key is set): {}",
            keyless.join(", ")
        );
    }
    let _ = conn.disconnect().await;
    Ok(detail)
}

/// A server id in the range replicas rarely use, stable for a source name.
fn default_server_id(source: &str) -> u32 {
    let h = source
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    0x5000_0000 | (h & 0x0fff_ffff)
}

/// Opens the table's change log, creating it from the discovered columns on first sight.
/// Returns the column definitions the log was created with.
async fn open_log(
    project: &Project,
    spec: &TableSpec,
    info: &TableInfo,
) -> Result<(LakeTable, Vec<ColumnDef>), EngineError> {
    let path = TablePath::changes(&spec.source, &spec.table);
    if let Some(log) = LakeTable::open(&project.lake, &path).await? {
        let stored = log
            .property(COLUMNS_PROPERTY)
            .and_then(|j| serde_json::from_str::<Vec<ColumnDef>>(&j).ok())
            .ok_or_else(|| {
                EngineError::Internal(format!(
                    "{path}: the change log has no {COLUMNS_PROPERTY} property; was it written by another source kind?"
                ))
            })?;
        return Ok((log, stored));
    }
    for k in &spec.primary_key {
        if !info.columns.iter().any(|c| &c.name == k) {
            return Err(EngineError::Usage(format!(
                "{}.{}: primary_key column `{k}` is not a column of the table",
                spec.source, spec.table
            )));
        }
    }
    let mut props = HashMap::new();
    if !spec.primary_key.is_empty() {
        props.insert(PRIMARY_KEY_PROPERTY.to_string(), spec.primary_key.join(","));
    }
    props.insert(
        COLUMNS_PROPERTY.to_string(),
        serde_json::to_string(&info.columns).expect("column definitions serialize"),
    );
    let schema = change_schema(arrow_schema(&info.columns).as_ref());
    let log = LakeTable::create(&project.lake, &path, &schema, props).await?;
    Ok((log, info.columns.clone()))
}

/// Why a table cannot take definitions `defs`: a key column the loads merge on is gone.
fn key_dropped(spec: &TableSpec, defs: &[ColumnDef]) -> Option<String> {
    let k = spec
        .primary_key
        .iter()
        .find(|k| !defs.iter().any(|c| &c.name == *k))?;
    Some(format!(
        "schema changed at the source: key column `{k}` of {}.{} is gone; set primary_key or \
         re-snapshot (sluice sync --resnapshot {}.{})",
        spec.source, spec.table, spec.source, spec.table
    ))
}

/// Takes the table's definitions `defs` into its change log: new columns added, dropped ones
/// kept (NULL from now on), a changed type's off-type values sent to a variant column, each
/// change a catalog version, committed together with the definitions binlog rows are decoded
/// with from then on. Nothing is committed when the definitions are the ones in use.
async fn adopt_definitions(t: &mut Captured, defs: Vec<ColumnDef>) -> Result<(), EngineError> {
    if defs == t.info.columns {
        return Ok(());
    }
    let diff = describe_diff(&t.info.columns, &defs);
    let lake = data_schema(t.log.schema()?.as_ref());
    let history = t.log.schema_history()?;
    let r = sluice_core::schema::reconcile(
        &lake,
        &history.dropped(),
        arrow_schema(&defs).as_ref(),
        true,
    );
    let texts: Vec<String> = r.changes.iter().map(|c| c.to_string()).collect();
    tracing::warn!(table = %t.log.path(), source_change = %diff, lake_changes = ?texts, "schema change taken into the lake");
    let definitions = serde_json::to_string(&defs).expect("column definitions serialize");
    t.log
        .evolve_with(
            &r.add,
            r.changes,
            &[(COLUMNS_PROPERTY.to_string(), definitions)],
        )
        .await?;
    t.info.columns = defs;
    t.report.schema_changes.extend(texts);
    Ok(())
}

/// A DDL statement on a captured table, reached by the binlog stream. `ALTER TABLE` and index
/// statements are taken into the lake with the table's definitions read right after them;
/// anything else (RENAME, DROP, TRUNCATE: whose row changes the binlog does not carry) halts
/// the table's capture before it. Returns why capture halts, if it does.
async fn take_ddl(
    mysql: &MySql,
    t: &mut Captured,
    ddl: &Ddl,
) -> Result<Option<String>, EngineError> {
    let halt = |why: &str| {
        Some(format!(
            "schema change at {}: `{}` ({why}; capture stopped before it)",
            ddl.start,
            ddl.statement.trim()
        ))
    };
    let words: Vec<String> = ddl
        .statement
        .split_whitespace()
        .take(4)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let alter = words.first().is_some_and(|w| w == "ALTER") && words.contains(&"TABLE".to_string());
    let index = words.first().is_some_and(|w| w == "CREATE" || w == "DROP")
        && words.contains(&"INDEX".to_string());
    if !alter && !index {
        return Ok(halt("not a change sluice can follow in the binlog"));
    }
    let mut conn = mysql.connect().await?;
    let found = mysql
        .discover(&mut conn, Some(std::slice::from_ref(&t.spec.table)))
        .await;
    let _ = conn.disconnect().await;
    let Ok(mut found) = found else {
        return Ok(halt("the table is gone or renamed"));
    };
    let Some(info) = found.pop() else {
        return Ok(halt("the table is gone or renamed"));
    };
    if let Some(why) = key_dropped(&t.spec, &info.columns) {
        return Ok(Some(why));
    }
    adopt_definitions(t, info.columns).await?;
    Ok(None)
}

fn describe_diff(old: &[ColumnDef], new: &[ColumnDef]) -> String {
    let mut parts = Vec::new();
    for c in new {
        match old.iter().find(|o| o.name == c.name) {
            None => parts.push(format!("column `{}` {} added", c.name, c.column_type)),
            Some(o) if o.column_type != c.column_type => parts.push(format!(
                "column `{}` changed from {} to {}",
                c.name, o.column_type, c.column_type
            )),
            _ => {}
        }
    }
    for o in old {
        if !new.iter().any(|c| c.name == o.name) {
            parts.push(format!("column `{}` dropped", o.name));
        }
    }
    if parts.is_empty() {
        parts.push("columns reordered".into());
    }
    parts.join("; ")
}

/// How a snapshot runs.
#[derive(Debug, Clone, Copy)]
struct SnapshotSettings {
    parallelism: usize,
    chunk_rows: u64,
    /// Start a new run even if the last one finished (`--resnapshot`).
    fresh: bool,
    /// Record the binlog position CDC will start from.
    cdc: bool,
}

/// Reads a table in key chunks across `parallelism` connections and commits them to the lake;
/// resumes an interrupted run. With `fresh`, starts a new run even if the last one finished.
async fn snapshot_table(
    mysql: &MySql,
    flavor: Flavor,
    t: &mut Captured,
    how: SnapshotSettings,
    opts: &MySqlOptions,
) -> Result<(), EngineError> {
    let SnapshotSettings {
        parallelism,
        chunk_rows,
        fresh,
        cdc,
    } = how;
    let run = t.log.app_version(RUN).await?;
    let done = t.log.app_version(DONE).await?;
    let resuming = run.is_some() && run != done && !fresh;
    let ingested_at = Utc::now();
    let (mut readers, position) = snapshot::open_readers(
        mysql,
        parallelism,
        flavor,
        // A resumed run keeps the position recorded when it started.
        cdc && !resuming,
    )
    .await?;
    let (run, plan) = if resuming {
        let run = run.expect("resuming a run");
        let plan = ChunkPlan {
            lo: t.log.app_version(LO).await?.unwrap_or(0),
            step: t.log.app_version(STEP).await?.unwrap_or(0),
            chunks: t.log.app_version(CHUNKS).await?.unwrap_or(1),
        };
        tracing::info!(table = %t.spec.table, run, "resuming the snapshot");
        (run, plan)
    } else {
        let plan = snapshot::plan(mysql, &mut readers[0], &t.info, chunk_rows).await?;
        let run = ingested_at.timestamp_millis().max(run.unwrap_or(0) + 1);
        let mut positions = vec![
            (RUN.to_string(), run),
            (LO.to_string(), plan.lo),
            (STEP.to_string(), plan.step),
            (CHUNKS.to_string(), plan.chunks),
        ];
        if let Some(p) = &position {
            positions.push((BINLOG_APP_ID.to_string(), p.encode()));
        }
        let mut meta = serde_json::Map::new();
        meta.insert(
            "sluice".into(),
            json!({ "snapshot": run, "chunks": plan.chunks, "binlog": position.as_ref().map(|p| p.to_string()) }),
        );
        t.log.writer()?.commit(&mut t.log, positions, meta).await?;
        (run, plan)
    };
    let mut pending = VecDeque::new();
    for i in 0..plan.chunks {
        if !resuming || t.log.app_version(&chunk_id(run, i)).await?.is_none() {
            pending.push_back(i);
        }
    }
    let queue = Arc::new(Mutex::new(pending));
    let (tx, mut rx) = mpsc::channel::<Result<ChunkRead, EngineError>>(1);
    let mut workers = Vec::new();
    for mut conn in readers.drain(..) {
        let (queue, tx, mysql, info) = (queue.clone(), tx.clone(), mysql.clone(), t.info.clone());
        workers.push(tokio::spawn(async move {
            let mut builder = RowsBuilder::new(&info.columns);
            loop {
                let next = queue.lock().expect("queue lock").pop_front();
                let Some(i) = next else { break };
                let mut batches = Vec::new();
                let read = snapshot::read_chunk(
                    &mysql,
                    &mut conn,
                    &info,
                    &plan,
                    i,
                    &mut builder,
                    &mut batches,
                )
                .await;
                let msg = read.map_err(EngineError::from).map(|rows| ChunkRead {
                    index: i,
                    rows,
                    batches,
                });
                let failed = msg.is_err();
                if tx.send(msg).await.is_err() || failed {
                    break;
                }
            }
            let _ = conn.disconnect().await;
            builder.zero_dates
        }));
    }
    drop(tx);

    let mut seq = t.log.last_seq().await?;
    let mut writer = t.log.writer()?;
    let mut in_commit: Vec<i64> = Vec::new();
    let mut rows_in_commit = 0u64;
    let mut progress = Progress::new(
        opts.progress,
        format!("{}.{} snapshot", t.spec.source, t.spec.table),
    );
    let source_ts = Some(ingested_at);
    let mut failure = None;
    while let Some(msg) = rx.recv().await {
        let chunk = match msg {
            Ok(c) => c,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        for b in &chunk.batches {
            write_reads(
                &mut writer,
                b,
                &mut seq,
                (source_ts, ingested_at),
                &t.spec.table,
            )
            .await?;
        }
        progress.add(chunk.rows);
        rows_in_commit += chunk.rows;
        t.report.rows += chunk.rows;
        in_commit.push(chunk.index);
        if rows_in_commit >= CHUNKS_PER_COMMIT * chunk_rows {
            let w = std::mem::replace(&mut writer, t.log.writer()?);
            commit_chunks(t, w, run, &in_commit, seq, false).await?;
            in_commit.clear();
            rows_in_commit = 0;
        }
    }
    let mut zero_dates = 0;
    for w in workers {
        zero_dates += w
            .await
            .map_err(|e| EngineError::Internal(format!("snapshot reader: {e}")))?;
    }
    if let Some(e) = failure {
        // What was read is committed; the rest resumes next run.
        if !in_commit.is_empty() {
            commit_chunks(t, writer, run, &in_commit, seq, false).await?;
        }
        return Err(e);
    }
    commit_chunks(t, writer, run, &in_commit, seq, true).await?;
    if zero_dates > 0 {
        tracing::warn!(table = %t.spec.table, zero_dates, "zero dates (0000-00-00) landed as NULL");
        t.report.zero_dates += zero_dates;
    }
    tracing::info!(table = %t.spec.table, rows = t.report.rows, run, "snapshot complete");
    Ok(())
}

struct ChunkRead {
    index: i64,
    rows: u64,
    batches: Vec<RecordBatch>,
}

async fn commit_chunks(
    t: &mut Captured,
    writer: sluice_lake::LakeWriter,
    run: i64,
    chunks: &[i64],
    seq: i64,
    last: bool,
) -> Result<(), EngineError> {
    let mut positions: Vec<(String, i64)> = chunks.iter().map(|i| (chunk_id(run, *i), 1)).collect();
    positions.push((SEQ_APP_ID.to_string(), seq));
    if last {
        positions.push((DONE.to_string(), run));
    }
    let mut meta = serde_json::Map::new();
    meta.insert(
        "sluice".into(),
        json!({ "snapshot": run, "chunks": chunks, "rows": writer.rows(), "complete": last }),
    );
    let v = writer.commit(&mut t.log, positions, meta).await?;
    t.report.lake_version = v.or(t.report.lake_version);
    failpoint::hit(failpoint::AFTER_LAKE_COMMIT);
    Ok(())
}

/// The cursor column's committed value as an i64, and back to a query parameter.
fn cursor_kind(info: &TableInfo, cursor: &str) -> Result<Kind, EngineError> {
    let def = info
        .columns
        .iter()
        .find(|c| c.name == cursor)
        .ok_or_else(|| {
            EngineError::Usage(format!(
                "table `{}` has no cursor column `{cursor}`",
                info.name
            ))
        })?;
    let kind = def.kind();
    match kind {
        Kind::Int { .. } | Kind::Date | Kind::DateTime | Kind::Timestamp => Ok(kind),
        _ => Err(EngineError::Usage(format!(
            "cursor `{}`.`{cursor}` is {}: a cursor must be an integer, DATE, DATETIME or TIMESTAMP column",
            info.name, def.column_type
        ))),
    }
}

fn cursor_param(kind: &Kind, v: i64) -> mysql_async::Value {
    use chrono::{Datelike, Timelike};
    match kind {
        Kind::Date => {
            let d = DateTime::<Utc>::UNIX_EPOCH.date_naive() + chrono::Days::new(v.max(0) as u64);
            mysql_async::Value::Date(d.year() as u16, d.month() as u8, d.day() as u8, 0, 0, 0, 0)
        }
        Kind::DateTime | Kind::Timestamp => {
            let t = DateTime::<Utc>::from_timestamp_micros(v)
                .unwrap_or_default()
                .naive_utc();
            mysql_async::Value::Date(
                t.year() as u16,
                t.month() as u8,
                t.day() as u8,
                t.hour() as u8,
                t.minute() as u8,
                t.second() as u8,
                t.nanosecond() / 1000,
            )
        }
        _ => mysql_async::Value::Int(v),
    }
}

/// Largest cursor value in a batch, as the i64 [`cursor_param`] turns back.
fn max_cursor(batch: &RecordBatch, col: usize) -> Option<i64> {
    use arrow::array::AsArray;
    use arrow::datatypes::*;
    let a = batch.column(col);
    let it: Box<dyn Iterator<Item = Option<i64>>> = match a.data_type() {
        DataType::Int8 => Box::new(
            a.as_primitive::<Int8Type>()
                .iter()
                .map(|v| v.map(i64::from)),
        ),
        DataType::Int16 => Box::new(
            a.as_primitive::<Int16Type>()
                .iter()
                .map(|v| v.map(i64::from)),
        ),
        DataType::Int32 => Box::new(
            a.as_primitive::<Int32Type>()
                .iter()
                .map(|v| v.map(i64::from)),
        ),
        DataType::Int64 => Box::new(a.as_primitive::<Int64Type>().iter()),
        DataType::Date32 => Box::new(
            a.as_primitive::<Date32Type>()
                .iter()
                .map(|v| v.map(i64::from)),
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Box::new(a.as_primitive::<TimestampMicrosecondType>().iter())
        }
        _ => return None,
    };
    it.flatten().max()
}

/// Rows at or past the committed cursor value; the new value is committed with them.
async fn incremental_table(
    mysql: &MySql,
    t: &mut Captured,
    opts: &MySqlOptions,
) -> Result<(), EngineError> {
    let cursor = t.spec.cursor.clone().ok_or_else(|| {
        EngineError::Usage(format!(
            "{}.{}: incremental mode needs `cursor`",
            t.spec.source, t.spec.table
        ))
    })?;
    let kind = cursor_kind(&t.info, &cursor)?;
    let col = t
        .info
        .columns
        .iter()
        .position(|c| c.name == cursor)
        .expect("cursor column exists");
    let from = t.log.app_version(CURSOR_APP_ID).await?;
    let mut conn = mysql.connect().await?;
    let (tx, mut rx) = mpsc::channel::<RecordBatch>(2);
    let reader = {
        let (mysql, info, cursor) = (mysql.clone(), t.info.clone(), cursor.clone());
        let from = from.map(|v| cursor_param(&kind, v));
        tokio::spawn(async move {
            let mut builder = RowsBuilder::new(&info.columns);
            let r = snapshot::read_incremental(
                &mysql,
                &mut conn,
                &info,
                &cursor,
                from,
                &mut builder,
                &tx,
            )
            .await;
            let _ = conn.disconnect().await;
            r.map(|rows| (rows, builder.zero_dates))
        })
    };
    let ingested_at = Utc::now();
    let mut seq = t.log.last_seq().await?;
    let mut writer = t.log.writer()?;
    let mut high = from;
    let mut rows = 0u64;
    let mut progress = Progress::new(
        opts.progress,
        format!("{}.{} incremental", t.spec.source, t.spec.table),
    );
    while let Some(b) = rx.recv().await {
        high = high.max(max_cursor(&b, col));
        let at = (Some(ingested_at), ingested_at);
        let n = write_reads(&mut writer, &b, &mut seq, at, &t.spec.table).await?;
        rows += n;
        progress.add(n);
    }
    let (read, zero_dates) = reader
        .await
        .map_err(|e| EngineError::Internal(format!("incremental reader: {e}")))??;
    debug_assert_eq!(read, rows);
    if rows == 0 {
        return Ok(());
    }
    let mut positions = vec![(SEQ_APP_ID.to_string(), seq)];
    if let Some(h) = high {
        positions.push((CURSOR_APP_ID.to_string(), h));
    }
    let mut meta = serde_json::Map::new();
    meta.insert(
        "sluice".into(),
        json!({ "incremental": cursor, "rows": rows, "cursor": high }),
    );
    let v = writer.commit(&mut t.log, positions, meta).await?;
    failpoint::hit(failpoint::AFTER_LAKE_COMMIT);
    t.report.rows += rows;
    t.report.zero_dates += zero_dates;
    t.report.lake_version = v;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Batching {
    max_rows: usize,
    max_wait: Duration,
}

/// Changes of one table waiting for their lake commit.
struct Pending {
    builder: RowsBuilder,
    ops: Vec<Op>,
    source_ts: Vec<Option<i64>>,
    /// Position after the last source transaction buffered.
    end: Option<BinlogPosition>,
    key_columns: Vec<usize>,
}

impl Pending {
    /// An empty buffer for rows of the table's current definitions.
    fn new(t: &Captured) -> Pending {
        Pending {
            builder: RowsBuilder::new(&t.info.columns),
            ops: Vec::new(),
            source_ts: Vec::new(),
            end: None,
            key_columns: t
                .spec
                .primary_key
                .iter()
                .filter_map(|k| t.info.columns.iter().position(|c| &c.name == k))
                .collect(),
        }
    }
}

/// Streams the binlog from the earliest table position, committing whole source
/// transactions per table, until caught up (or, following, until stopped).
async fn stream_changes(
    project: &Project,
    mysql: &MySql,
    tables: &mut [Captured],
    server_id: u32,
    batching: Batching,
    opts: &MySqlOptions,
) -> Result<(), EngineError> {
    let mut conn = mysql.connect().await?;
    let files = binlog::binary_logs(mysql, &mut conn).await?;
    let _ = conn.disconnect().await;

    let mut positions: HashMap<String, BinlogPosition> = HashMap::new();
    for t in tables
        .iter_mut()
        .filter(|t| t.error.is_none() && t.halted.is_none())
    {
        let Some(v) = t.log.app_version(BINLOG_APP_ID).await? else {
            t.error = Some("no binlog position recorded (the snapshot did not record one)".into());
            continue;
        };
        match BinlogPosition::decode(v, &files) {
            Some(p) => {
                positions.insert(t.spec.table.clone(), p);
            }
            None => {
                t.error = Some(format!(
                    "the binlog file (number {}) sluice must resume from is no longer on the server (it has {}): \
                     changes since were lost to CDC. Re-snapshot: sluice sync --resnapshot {}.{}",
                    v >> 32,
                    files.first().map(String::as_str).unwrap_or("none"),
                    t.spec.source,
                    t.spec.table
                ));
            }
        }
    }
    let Some(start) = positions.values().min_by_key(|p| p.key()).cloned() else {
        return Ok(());
    };
    let index: HashMap<String, usize> = tables
        .iter()
        .enumerate()
        .filter(|(_, t)| positions.contains_key(&t.spec.table))
        .map(|(i, t)| (t.spec.table.clone(), i))
        .collect();
    let mut pending: Vec<Pending> = tables.iter().map(Pending::new).collect();
    let follow = opts.follow.clone();
    let names: HashSet<String> = index.keys().cloned().collect();
    let mut reader = BinlogReader::open(mysql, &start, server_id, names, follow.is_none()).await?;
    tracing::info!(source = %mysql.source, from = %start, "streaming the binlog");
    let mut progress = Progress::new(opts.progress, format!("{} binlog", mysql.source));
    let mut buffered = Buffered::default();
    let mut last_seen = start.clone();
    let mut last_idle_advance = Instant::now();
    let mut stop = follow.clone();
    loop {
        let wait = buffered
            .since
            .map(|t0| batching.max_wait.saturating_sub(t0.elapsed()))
            .unwrap_or(Duration::from_secs(3600));
        let item = tokio::select! {
            item = reader.next() => item?,
            _ = tokio::time::sleep(wait) => {
                commit_buffered(project, tables, &mut pending, &mut buffered, opts).await?;
                continue;
            }
            _ = async {
                match stop.as_mut() {
                    Some(s) => { let _ = s.wait_for(|v| *v).await; }
                    None => std::future::pending::<()>().await,
                }
            } => None,
        };
        let Some(item) = item else { break };
        match item {
            StreamItem::Txn(txn) => {
                last_seen = txn.end.clone();
                for change in txn.changes {
                    let Some(&ti) = index.get(&change.table) else {
                        continue;
                    };
                    let t = &mut tables[ti];
                    if t.halted.is_some()
                        || t.error.is_some()
                        || positions[&change.table].key() >= txn.end.key()
                    {
                        continue; // halted, or already in the lake
                    }
                    if change.columns != t.info.columns.len() {
                        commit_buffered(project, tables, &mut pending, &mut buffered, opts).await?;
                        let t = &mut tables[ti];
                        t.halted = Some(format!(
                            "schema changed at the source: rows at {} have {} columns, the definitions of `{}` sluice decodes with have {} \
                             (several schema changes while sluice was behind: re-snapshot with sluice sync --resnapshot {}.{})",
                            txn.end,
                            change.columns,
                            t.spec.table,
                            t.info.columns.len(),
                            t.spec.source,
                            t.spec.table
                        ));
                        continue;
                    }
                    let n =
                        add_change(&mut pending[ti], change, txn.commit_micros).map_err(|e| {
                            EngineError::Usage(format!("{}.{}: {e}", t.spec.source, t.spec.table))
                        })?;
                    pending[ti].end = Some(txn.end.clone());
                    buffered.add(n);
                    progress.add(n as u64);
                }
                if buffered.rows >= batching.max_rows {
                    commit_buffered(project, tables, &mut pending, &mut buffered, opts).await?;
                }
            }
            StreamItem::Ddl(ddl) => {
                last_seen = ddl.end.clone();
                commit_buffered(project, tables, &mut pending, &mut buffered, opts).await?;
                for name in &ddl.tables {
                    if let Some(&ti) = index.get(name) {
                        let t = &mut tables[ti];
                        if t.halted.is_some()
                            || t.error.is_some()
                            || positions[name].key() >= ddl.end.key()
                        {
                            continue;
                        }
                        match take_ddl(mysql, t, &ddl).await {
                            Ok(None) => pending[ti] = Pending::new(t),
                            Ok(Some(why)) => {
                                tracing::warn!(table = %name, statement = %ddl.statement, "schema change: capture halted");
                                t.halted = Some(why);
                            }
                            Err(e) => t.error = Some(e.to_string()),
                        }
                    } else {
                        tracing::info!(table = %name, statement = %ddl.statement, "DDL on a table sluice does not capture");
                    }
                }
            }
            StreamItem::Position(p) => last_seen = p,
        }
        if follow.is_some() && last_idle_advance.elapsed() >= Duration::from_secs(60) {
            commit_buffered(project, tables, &mut pending, &mut buffered, opts).await?;
            advance_idle(tables, &positions, &last_seen).await?;
            last_idle_advance = Instant::now();
        }
    }
    flush(tables, &mut pending).await?;
    // Tables with nothing new move up too, so the next run starts here, not at a binlog
    // the server may have purged by then.
    advance_idle(tables, &positions, &last_seen).await?;
    tracing::info!(source = %mysql.source, at = %last_seen, "caught up");
    Ok(())
}

/// How many changes wait for the next lake commit, and since when.
#[derive(Default)]
struct Buffered {
    rows: usize,
    since: Option<Instant>,
}

impl Buffered {
    fn add(&mut self, rows: usize) {
        self.rows += rows;
        self.since.get_or_insert_with(Instant::now);
    }
}

/// Commits every table's buffered changes (and, following, loads them); the buffer starts over.
async fn commit_buffered(
    project: &Project,
    tables: &mut [Captured],
    pending: &mut [Pending],
    buffered: &mut Buffered,
    opts: &MySqlOptions,
) -> Result<(), EngineError> {
    let flushed = flush(tables, pending).await?;
    load_flushed(project, tables, &flushed, opts).await;
    *buffered = Buffered::default();
    Ok(())
}

/// Following: loads the tables just committed, so the warehouse trails the source by one
/// batch. A load failure is logged and retried with the next batch (the ledger keeps its place).
async fn load_flushed(
    project: &Project,
    tables: &[Captured],
    flushed: &[usize],
    opts: &MySqlOptions,
) {
    if opts.follow.is_none() || !opts.load_while_following {
        return;
    }
    for &i in flushed {
        if let Err(e) = crate::load::load(project, &tables[i].spec).await {
            tracing::error!(table = %tables[i].spec.table, error = %e, "load while following failed; retrying with the next batch");
        }
    }
}

/// Buffers one row change; returns the change rows it produced (a key change is a delete
/// of the old key and an insert of the new).
fn add_change(p: &mut Pending, change: RowChange, ts: i64) -> Result<usize, String> {
    let e = |e: sluice_sources::mysql::convert::ConvertError| e.to_string();
    match change.op {
        RowOp::Insert => {
            p.builder
                .push_binlog_row(change.after.ok_or("insert without a row image")?)
                .map_err(e)?;
            p.ops.push(Op::Insert);
        }
        RowOp::Delete => {
            p.builder
                .push_binlog_row(change.before.ok_or("delete without a row image")?)
                .map_err(e)?;
            p.ops.push(Op::Delete);
        }
        RowOp::Update => {
            let before = change.before.ok_or("update without its before image")?;
            let after = change.after.ok_or("update without its after image")?;
            let key_changed = p.key_columns.iter().any(|&k| before.get(k) != after.get(k));
            if key_changed {
                p.builder.push_binlog_row(before).map_err(e)?;
                p.ops.push(Op::Delete);
                p.source_ts.push(Some(ts));
                p.builder.push_binlog_row(after).map_err(e)?;
                p.ops.push(Op::Insert);
                p.source_ts.push(Some(ts));
                return Ok(2);
            }
            p.builder.push_binlog_row(after).map_err(e)?;
            p.ops.push(Op::Update);
        }
    }
    p.source_ts.push(Some(ts));
    Ok(1)
}

/// Commits every table's buffered changes with the position after its last transaction.
async fn flush(
    tables: &mut [Captured],
    pending: &mut [Pending],
) -> Result<Vec<usize>, EngineError> {
    let ingested_at = Utc::now();
    let mut flushed = Vec::new();
    for (i, (t, p)) in tables.iter_mut().zip(pending.iter_mut()).enumerate() {
        let Some(end) = p.end.take() else { continue };
        flushed.push(i);
        let data = p.builder.finish();
        let ops = std::mem::take(&mut p.ops);
        let ts = std::mem::take(&mut p.source_ts);
        let n = data.num_rows() as i64;
        let seq = t.log.last_seq().await?;
        let batch = stamp_rows(&data, &ops, &ts, seq + 1, ingested_at)
            .map_err(|e| EngineError::Internal(format!("stamping {}: {e}", t.spec.table)))?;
        let mut writer = t.log.writer()?;
        writer.write(batch).await?;
        let mut meta = serde_json::Map::new();
        meta.insert(
            "sluice".into(),
            json!({ "binlog": end.to_string(), "rows": n }),
        );
        let v = writer
            .commit(
                &mut t.log,
                vec![
                    (BINLOG_APP_ID.to_string(), end.encode()),
                    (SEQ_APP_ID.to_string(), seq + n),
                ],
                meta,
            )
            .await?;
        failpoint::hit(failpoint::AFTER_LAKE_COMMIT);
        t.report.rows += n as u64;
        t.report.lake_version = v.or(t.report.lake_version);
        t.report.zero_dates += std::mem::take(&mut p.builder.zero_dates);
    }
    Ok(flushed)
}

/// Moves the committed position of tables that had nothing new up to `to`.
async fn advance_idle(
    tables: &mut [Captured],
    started: &HashMap<String, BinlogPosition>,
    to: &BinlogPosition,
) -> Result<(), EngineError> {
    for t in tables.iter_mut() {
        if t.halted.is_some() || t.error.is_some() || !started.contains_key(&t.spec.table) {
            continue;
        }
        let current = t.log.app_version(BINLOG_APP_ID).await?;
        if current.is_some_and(|c| c >= to.encode()) {
            continue;
        }
        let mut meta = serde_json::Map::new();
        meta.insert(
            "sluice".into(),
            json!({ "binlog": to.to_string(), "rows": 0 }),
        );
        t.log
            .writer()?
            .commit(
                &mut t.log,
                vec![(BINLOG_APP_ID.to_string(), to.encode())],
                meta,
            )
            .await?;
    }
    Ok(())
}
