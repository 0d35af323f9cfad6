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
use arrow::datatypes::DataType;
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use sluice_core::change::{change_schema, data_schema, stamp_rows, Op};
use sluice_core::config::{
    Mode, MysqlConfig, TableSpec, DEFAULT_BATCH_MAX_MS, DEFAULT_BATCH_MAX_ROWS, DEFAULT_CHUNK_ROWS,
    DEFAULT_SNAPSHOT_PARALLELISM,
};
use sluice_core::failpoint;
use sluice_core::reject::Reject;
use sluice_core::rowid::{row_ids, RowId};
use sluice_lake::{LakeTable, TablePath, PRIMARY_KEY_PROPERTY, SEQ_APP_ID};
use sluice_sources::mysql::binlog::{self, BinlogReader, Ddl, RowChange, RowOp, StreamItem};
use sluice_sources::mysql::columns::{arrow_schema, Kind};
use sluice_sources::mysql::convert::{RowReject, RowsBuilder};
use sluice_sources::mysql::snapshot::{self, ChunkPlan};
use sluice_sources::mysql::{BinlogPosition, ColumnDef, Flavor, MySql, SslMode, TableInfo};

use crate::extract::{write_reads, ExtractReport};
use crate::image::Images;
use crate::progress::Progress;
use crate::{EngineError, Project};

pub const BINLOG_APP_ID: &str = "mysql.binlog";
pub const CURSOR_APP_ID: &str = "mysql.cursor";
/// The start of the oldest XA transaction prepared but not resolved when the table last
/// committed (0: none): a restart reads the binlog from there.
const HOLD_APP_ID: &str = "mysql.binlog.hold";

fn hold_value(hold: &Option<BinlogPosition>) -> i64 {
    hold.as_ref().map_or(0, BinlogPosition::encode)
}
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
    /// The positions of the key columns among the table's columns (rows with NULL there are
    /// quarantined: merge cannot place them).
    fn key_columns(&self) -> Vec<usize> {
        self.spec
            .primary_key
            .iter()
            .filter_map(|k| self.info.columns.iter().position(|c| &c.name == k))
            .collect()
    }

    /// Records rows the source could not convert in the table's quarantine, once per input
    /// unit `position` (a rerun after a crash finds them there), and counts them.
    async fn quarantine(
        &mut self,
        lake: &sluice_lake::Lake,
        position: &str,
        what: &str,
        rejects: Vec<RowReject>,
    ) -> Result<(), EngineError> {
        if rejects.is_empty() {
            return Ok(());
        }
        let n = rejects.len() as u64;
        tracing::warn!(source = %self.spec.source, table = %self.spec.table, at = %what, rejects = n, "rows quarantined");
        let rejects = rejects
            .into_iter()
            .enumerate()
            .map(|(i, r)| Reject {
                file: format!("{}.{} {what}", self.spec.source, self.spec.table),
                line: i as u64 + 1,
                column: Some(r.column.clone()),
                raw: r.raw,
                reason: format!("column {} ({}): {}", r.column, r.column_type, r.message),
            })
            .collect();
        sluice_lake::Quarantine::new(lake, &self.spec.source, &self.spec.table)
            .add(position, 1, rejects, Utc::now())
            .await?;
        self.report.rejects += n;
        Ok(())
    }

    fn outcome(self) -> TableOutcome {
        TableOutcome {
            spec: self.spec,
            report: self.report,
            error: self.error,
            halted: self.halted,
        }
    }
}

fn mysql_of(name: &str, src: &MysqlConfig, project: &Project) -> Result<MySql, EngineError> {
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
    src: &MysqlConfig,
) -> Result<Connected, EngineError> {
    let mysql = mysql_of(name, src, project)?;
    let mut conn = mysql.connect().await?;
    let flavor = mysql.flavor(&mut conn).await?;
    let configured = project
        .config
        .source_tables(name, project.source(name)?)
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
    src: &MysqlConfig,
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
    let mode = src.mode();
    if mode == Mode::Cdc {
        binlog::check_server(&mysql, &mut conn).await?;
    }
    let infos = mysql.discover(&mut conn, selected.as_deref()).await?;
    let _ = conn.disconnect().await;

    let mut tables = Vec::new();
    let mut failed = Vec::new();
    for info in infos {
        let spec =
            project
                .config
                .table_spec(name, project.source(name)?, &info.name, &info.primary_key);
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
                let resnapshot = opts.resnapshot.contains(&c.spec.table);
                if stored != c.info.columns {
                    // CDC decodes from its binlog position with the definitions of then, and
                    // takes each DDL as the stream reaches it. Snapshots and incremental reads
                    // see the table as it is now (and so does a CDC table snapshotted again,
                    // whose stream starts after it): the lake takes that first (the warehouse
                    // side is the schema gate's to decide).
                    let current = std::mem::replace(&mut c.info.columns, stored);
                    if mode != Mode::Cdc || resnapshot {
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
                if mode == Mode::Cdc {
                    if let Some(why) = c.info.columns.iter().find_map(|d| d.binlog_undecodable()) {
                        c.error = Some(why);
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
            Mode::Snapshot => {
                snapshot_table(project, &mysql, flavor, t, settings(false, false), opts).await
            }
            Mode::Incremental => incremental_table(project, &mysql, t, opts).await,
            Mode::Cdc => {
                let done = t.log.app_version(DONE).await?.is_some();
                let redo = opts.resnapshot.contains(&t.spec.table);
                if done && !redo {
                    Ok(())
                } else {
                    snapshot_table(project, &mysql, flavor, t, settings(redo, true), opts).await
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
    src: &MysqlConfig,
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
    if src.mode() == Mode::Cdc {
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
///
/// A run is an image of the table ([`Images`]): it opens with the run's first commit and
/// completes with its last, which also deletes what the table held before and the run no
/// longer saw (a row deleted at the source leaves merge tables). For CDC each chunk records
/// the binlog position its reader's snapshot was taken at, so the change stream that follows
/// applies only what that chunk did not already see ([`Watermarks`]).
async fn snapshot_table(
    project: &Project,
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
    let mut readers = snapshot::open_readers(mysql, parallelism, flavor, cdc).await?;
    let mut images = Images::of(&t.log).await?;
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
        let plan = snapshot::plan(mysql, &mut readers[0].conn, &t.info, chunk_rows).await?;
        let run = ingested_at.timestamp_millis().max(run.unwrap_or(0) + 1);
        let mut positions = vec![
            (RUN.to_string(), run),
            (LO.to_string(), plan.lo),
            (STEP.to_string(), plan.step),
            (CHUNKS.to_string(), plan.chunks),
        ];
        // CDC starts where the earliest reader's snapshot stands (a resumed run keeps it).
        let start = readers
            .iter()
            .filter_map(|r| r.position.as_ref())
            .min_by_key(|p| p.key());
        if let Some(p) = start {
            positions.push((BINLOG_APP_ID.to_string(), p.encode()));
        }
        // A new run is a new image, whatever an abandoned one left open.
        images.open = None;
        positions.extend(images.opening(t.log.last_seq().await? + 1));
        let mut meta = serde_json::Map::new();
        meta.insert(
            "sluice".into(),
            json!({ "snapshot": run, "chunks": plan.chunks, "binlog": start.map(|p| p.to_string()) }),
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
    let lake = &project.lake;
    let keys = t.key_columns();
    for reader in readers.drain(..) {
        let (queue, tx, mysql, info) = (queue.clone(), tx.clone(), mysql.clone(), t.info.clone());
        let keys = keys.clone();
        let snapshot::Reader { mut conn, position } = reader;
        // The chunks of a reader are as of its snapshot's position.
        let read_at = position.map(|p| p.encode()).unwrap_or(1);
        workers.push(tokio::spawn(async move {
            let mut builder = RowsBuilder::new(&info.columns).with_keys(keys);
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
                let rejects = std::mem::take(&mut builder.rejects);
                let msg = read.map_err(EngineError::from).map(|rows| ChunkRead {
                    index: i,
                    read_at,
                    rows,
                    batches,
                    rejects,
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
    let mut in_commit: Vec<(i64, i64)> = Vec::new();
    let mut rows_in_commit = 0u64;
    let mut progress = Progress::new(
        opts.progress,
        format!("{}.{} snapshot", t.spec.source, t.spec.table),
    );
    let source_ts = Some(ingested_at);
    let mut failure = None;
    while let Some(msg) = rx.recv().await {
        let mut chunk = match msg {
            Ok(c) => c,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        let rejects = std::mem::take(&mut chunk.rejects);
        let id = chunk_id(run, chunk.index);
        t.quarantine(
            lake,
            &id,
            &format!("snapshot chunk {}", chunk.index),
            rejects,
        )
        .await?;
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
        in_commit.push((chunk.index, chunk.read_at));
        if rows_in_commit >= CHUNKS_PER_COMMIT * chunk_rows {
            let w = std::mem::replace(&mut writer, t.log.writer()?);
            commit_chunks(t, w, run, &in_commit, seq, Vec::new()).await?;
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
    // What was read is committed; on a failure the rest resumes next run.
    if !in_commit.is_empty() {
        commit_chunks(t, writer, run, &in_commit, seq, Vec::new()).await?;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    complete_run(t, &mut images, run, ingested_at).await?;
    if zero_dates > 0 {
        tracing::warn!(table = %t.spec.table, zero_dates, "zero dates (0000-00-00) landed as NULL");
        t.report.zero_dates += zero_dates;
    }
    tracing::info!(table = %t.spec.table, rows = t.report.rows, run, "snapshot complete");
    Ok(())
}

struct ChunkRead {
    index: i64,
    /// The binlog position (encoded) its reader's snapshot was taken at (1: not recorded).
    read_at: i64,
    rows: u64,
    batches: Vec<RecordBatch>,
    /// Rows of the chunk that did not convert.
    rejects: Vec<RowReject>,
}

/// Commits chunks `(index, read at)` of a run with what `writer` holds, and `more` positions.
async fn commit_chunks(
    t: &mut Captured,
    writer: sluice_lake::LakeWriter,
    run: i64,
    chunks: &[(i64, i64)],
    seq: i64,
    more: Vec<(String, i64)>,
) -> Result<(), EngineError> {
    let mut positions: Vec<(String, i64)> = chunks
        .iter()
        .map(|(i, at)| (chunk_id(run, *i), *at))
        .collect();
    positions.push((SEQ_APP_ID.to_string(), seq));
    let complete = !more.is_empty();
    positions.extend(more);
    let indices: Vec<i64> = chunks.iter().map(|(i, _)| *i).collect();
    let mut meta = serde_json::Map::new();
    meta.insert(
        "sluice".into(),
        json!({ "snapshot": run, "chunks": indices, "rows": writer.rows(), "complete": complete }),
    );
    let v = writer.commit(&mut t.log, positions, meta).await?;
    t.report.lake_version = v.or(t.report.lake_version);
    failpoint::hit(failpoint::AFTER_LAKE_COMMIT);
    Ok(())
}

/// Completes a run whose chunks are all in the lake: one commit that deletes the rows the
/// table held before the run and the run did not see (their keys are gone at the source),
/// marks the run done and closes its image. A crash before it leaves the run to resume with
/// no chunk left to read, and this runs again.
async fn complete_run(
    t: &mut Captured,
    images: &mut Images,
    run: i64,
    at: DateTime<Utc>,
) -> Result<(), EngineError> {
    let mut seq = t.log.last_seq().await?;
    let mut writer = t.log.writer()?;
    let mut deleted = 0u64;
    if let (false, Some(open)) = (t.spec.primary_key.is_empty(), images.open) {
        use futures::StreamExt;
        let mut gone = vanished(&t.log, &t.spec.primary_key, open).await?;
        while let Some(batch) = gone.next().await {
            let batch = batch?;
            let n = batch.num_rows();
            let stamped = stamp_rows(
                &batch,
                &vec![Op::Delete; n],
                &vec![Some(at.timestamp_micros()); n],
                seq + 1,
                at,
            )
            .map_err(|e| EngineError::Internal(format!("stamping {}: {e}", t.spec.table)))?;
            writer.write(stamped).await?;
            seq += n as i64;
            deleted += n as u64;
        }
    }
    if deleted > 0 {
        tracing::info!(table = %t.spec.table, rows = deleted, "rows gone from the source since the last snapshot: deleted");
        t.report.deleted += deleted;
    }
    let mut more = vec![(DONE.to_string(), run)];
    more.extend(images.closing(seq, t.log.version() + 1));
    commit_chunks(t, writer, run, &[], seq, more).await
}

/// The rows the table held before the snapshot run that began at `run_from` (the last change
/// per key, unless a delete) whose key the run did not read.
async fn vanished(
    log: &LakeTable,
    key: &[String],
    run_from: i64,
) -> Result<datafusion::physical_plan::SendableRecordBatchStream, EngineError> {
    use sluice_core::names::quote_ident as q;
    let ctx = datafusion::prelude::SessionContext::new();
    crate::query::register(&ctx, "changes".into(), log).await?;
    let data: Vec<String> = data_schema(log.schema()?.as_ref())
        .fields()
        .iter()
        .map(|f| q(f.name()))
        .collect();
    let keys: Vec<String> = key.iter().map(|k| q(k)).collect();
    let same_key: Vec<String> = key
        .iter()
        .map(|k| format!("_sluice_r.{k} = _sluice_b.{k}", k = q(k)))
        .collect();
    let (seq, op) = (q(sluice_core::change::SEQ), q(sluice_core::change::OP));
    let sql = format!(
        "SELECT {cols} FROM (
           SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY {seq} DESC) AS _sluice_rn
           FROM changes WHERE {seq} < {run_from}) AS _sluice_b
         WHERE _sluice_rn = 1 AND {op} <> 'd'
           AND NOT EXISTS (SELECT 1 FROM changes AS _sluice_r
                           WHERE _sluice_r.{seq} >= {run_from} AND {same})",
        cols = data
            .iter()
            .map(|c| format!("_sluice_b.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        keys = keys.join(", "),
        same = same_key.join(" AND "),
    );
    Ok(ctx.sql(&sql).await?.execute_stream().await?)
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
    cursor_values(batch, col).into_iter().flatten().max()
}

/// The cursor values of a batch as the i64s [`cursor_param`] turns back (None: NULL, or a
/// type no cursor has).
fn cursor_values(batch: &RecordBatch, col: usize) -> Vec<Option<i64>> {
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
        _ => return vec![None; a.len()],
    };
    it.collect()
}

/// Rows past the committed cursor value, and rows at it or with a NULL cursor that the lake
/// does not hold yet; the new value is committed with them.
///
/// Reading `cursor >= last` alone would land the rows at `last` again every run (doubled in
/// append and history tables), and `cursor > last` would miss rows that arrive later with
/// the same value. So the rows at `last` and the rows with no cursor value (which no bound
/// reaches) are read each run and held against the lake's rows there by their identity
/// ([`sluice_core::rowid`]): only those the lake lacks land, identical rows counted. A row
/// that changes back to a version the lake already holds at the same cursor value is the one
/// change this cannot see.
async fn incremental_table(
    project: &Project,
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
    let columns: Vec<String> = t.info.columns.iter().map(|c| c.name.clone()).collect();
    let mut landed = lake_rows_at(&t.log, &columns, &cursor, from).await?;
    let mut conn = mysql.connect().await?;
    let (tx, mut rx) = mpsc::channel::<RecordBatch>(2);
    let reader = {
        let (mysql, info, cursor) = (mysql.clone(), t.info.clone(), cursor.clone());
        let keys = t.key_columns();
        let from = from.map(|v| cursor_param(&kind, v));
        tokio::spawn(async move {
            let mut builder = RowsBuilder::new(&info.columns).with_keys(keys);
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
            r.map(|rows| (rows, builder.zero_dates, builder.rejects))
        })
    };
    let ingested_at = Utc::now();
    let mut seq = t.log.last_seq().await?;
    let mut writer = t.log.writer()?;
    let mut high = from;
    let mut rows = 0u64;
    let mut again = 0u64;
    let mut progress = Progress::new(
        opts.progress,
        format!("{}.{} incremental", t.spec.source, t.spec.table),
    );
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    while let Some(b) = rx.recv().await {
        high = high.max(max_cursor(&b, col));
        let (b, dropped) = drop_landed(&b, col, from, &names, &mut landed)?;
        again += dropped;
        if b.num_rows() == 0 {
            continue;
        }
        let at = (Some(ingested_at), ingested_at);
        let n = write_reads(&mut writer, &b, &mut seq, at, &t.spec.table).await?;
        rows += n;
        progress.add(n);
    }
    let (_, zero_dates, rejects) = reader
        .await
        .map_err(|e| EngineError::Internal(format!("incremental reader: {e}")))??;
    if again > 0 {
        tracing::info!(table = %t.spec.table, rows = again, "rows at the last cursor value already in the lake: not landed again");
    }
    let position = format!(
        "{CURSOR_APP_ID}.from.{}",
        from.map_or("start".into(), |v| v.to_string())
    );
    let at = format!(
        "incremental read from {cursor} {}",
        from.map_or("(start)".into(), |v| v.to_string())
    );
    t.quarantine(&project.lake, &position, &at, rejects).await?;
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

/// How many times the lake holds each row (by identity) whose cursor is `from` or NULL: the
/// rows an incremental read sees again.
async fn lake_rows_at(
    log: &LakeTable,
    columns: &[String],
    cursor: &str,
    from: Option<i64>,
) -> Result<HashMap<RowId, u64>, EngineError> {
    let mut landed = HashMap::new();
    if log.last_seq().await? == 0 {
        return Ok(landed);
    }
    let ctx = datafusion::prelude::SessionContext::new();
    crate::query::register(&ctx, "changes".into(), log).await?;
    let c = sluice_core::names::quote_ident(cursor);
    let at = match from {
        Some(v) => {
            // A literal of the column's own type keeps the files' statistics usable.
            let t = log
                .schema()?
                .field_with_name(cursor)
                .map(|f| f.data_type().clone());
            let literal = match t {
                Ok(DataType::Date32) => format!("arrow_cast(arrow_cast({v}, 'Int32'), 'Date32')"),
                Ok(t @ DataType::Timestamp(..)) => format!("arrow_cast({v}, '{t}')"),
                _ => v.to_string(),
            };
            format!("{c} = {literal} OR ")
        }
        None => String::new(),
    };
    let list: Vec<String> = columns
        .iter()
        .map(|n| sluice_core::names::quote_ident(n))
        .collect();
    let sql = format!(
        "SELECT {} FROM changes WHERE {at}{c} IS NULL",
        list.join(", ")
    );
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    use futures::StreamExt;
    while let Some(b) = stream.next().await {
        for id in row_ids(&b?, &names) {
            *landed.entry(id).or_insert(0) += 1;
        }
    }
    Ok(landed)
}

/// `batch` without the rows the lake already holds: rows whose cursor (column `col`) is
/// `from` or NULL and whose identity is in `landed` (each use spends one). Returns the rows
/// kept and how many were dropped.
fn drop_landed(
    batch: &RecordBatch,
    col: usize,
    from: Option<i64>,
    names: &[&str],
    landed: &mut HashMap<RowId, u64>,
) -> Result<(RecordBatch, u64), EngineError> {
    if landed.is_empty() {
        return Ok((batch.clone(), 0));
    }
    let values = cursor_values(batch, col);
    let ids = row_ids(batch, names);
    let mut dropped = 0;
    let keep: arrow::array::BooleanArray = (0..batch.num_rows())
        .map(|r| {
            let boundary = values[r].is_none() || values[r] == from;
            if boundary {
                if let Some(n) = landed.get_mut(&ids[r]).filter(|n| **n > 0) {
                    *n -= 1;
                    dropped += 1;
                    return Some(false);
                }
            }
            Some(true)
        })
        .collect();
    let kept = arrow::compute::filter_record_batch(batch, &keep)
        .map_err(|e| EngineError::Internal(format!("incremental rows: {e}")))?;
    Ok((kept, dropped))
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
            builder: RowsBuilder::new(&t.info.columns).with_keys(t.key_columns()),
            ops: Vec::new(),
            source_ts: Vec::new(),
            end: None,
            key_columns: t.key_columns(),
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
    // A restart reads again from the oldest XA transaction prepared and not yet resolved
    // when a table last committed (its rows are in the binlog only at its PREPARE).
    let mut from = positions.clone();
    for t in tables
        .iter()
        .filter(|t| positions.contains_key(&t.spec.table))
    {
        if let Some(hold) = t.log.app_version(HOLD_APP_ID).await?.filter(|h| *h > 0) {
            let p = BinlogPosition::decode(hold, &files).ok_or_else(|| {
                EngineError::Usage(format!(
                    "{}.{}: an XA transaction prepared in binlog file number {} is not resolved, and the file is no longer on the server: re-snapshot with sluice sync --resnapshot {}.{}",
                    t.spec.source, t.spec.table, hold >> 32, t.spec.source, t.spec.table
                ))
            })?;
            if p.key() < from[&t.spec.table].key() {
                from.insert(t.spec.table.clone(), p);
            }
        }
    }
    let Some(start) = from.values().min_by_key(|p| p.key()).cloned() else {
        return Ok(());
    };
    let mut watermarks = Vec::with_capacity(tables.len());
    for t in tables.iter() {
        watermarks.push(match positions.get(&t.spec.table) {
            Some(p) => Watermarks::of(t, p).await?,
            None => None,
        });
    }
    let index: HashMap<String, usize> = tables
        .iter()
        .enumerate()
        .filter(|(_, t)| positions.contains_key(&t.spec.table))
        .map(|(i, t)| (t.spec.table.clone(), i))
        .collect();
    let mut pending: Vec<Pending> = tables.iter().map(Pending::new).collect();
    let follow = opts.follow.clone();
    let mut hold: Option<BinlogPosition> = None;
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
                commit_buffered(project, tables, &mut pending, &mut buffered, &hold, opts).await?;
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
        hold = reader.hold();
        match item {
            StreamItem::Txn(txn) => {
                last_seen = txn.end.clone();
                for (name, why) in &txn.unreadable {
                    let Some(&ti) = index.get(name) else { continue };
                    let t = &tables[ti];
                    if t.halted.is_some()
                        || t.error.is_some()
                        || positions[name].key() >= txn.end.key()
                    {
                        continue;
                    }
                    commit_buffered(project, tables, &mut pending, &mut buffered, &hold, opts)
                        .await?;
                    tracing::warn!(table = %name, at = %txn.end, "statement-based change in the binlog: capture halted");
                    tables[ti].halted = Some(why.clone());
                }
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
                    let change = match by_name(change, &t.info.columns) {
                        Ok(c) => c,
                        Err(found) => {
                            commit_buffered(
                                project,
                                tables,
                                &mut pending,
                                &mut buffered,
                                &hold,
                                opts,
                            )
                            .await?;
                            let t = &mut tables[ti];
                            t.halted = Some(format!(
                                "schema changed at the source: rows at {} have columns ({found}), not the ({}) of the definitions sluice decodes `{}` with \
                                 (several schema changes while sluice was behind: re-snapshot with sluice sync --resnapshot {}.{})",
                                txn.end,
                                t.info.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
                                t.spec.table,
                                t.spec.source,
                                t.spec.table
                            ));
                            continue;
                        }
                    };
                    // What the table's snapshot already saw is not applied again.
                    let change = match &watermarks[ti] {
                        Some(w) => match w.unseen(change, &txn.end, &t.info) {
                            Some(c) => c,
                            None => continue,
                        },
                        None => change,
                    };
                    let n =
                        add_change(&mut pending[ti], change, txn.commit_micros).map_err(|e| {
                            EngineError::Usage(format!("{}.{}: {e}", t.spec.source, t.spec.table))
                        })?;
                    pending[ti].end = Some(txn.end.clone());
                    buffered.add(n);
                    progress.add(n as u64);
                }
                if buffered.rows >= batching.max_rows {
                    commit_buffered(project, tables, &mut pending, &mut buffered, &hold, opts)
                        .await?;
                }
            }
            StreamItem::Ddl(ddl) => {
                last_seen = ddl.end.clone();
                commit_buffered(project, tables, &mut pending, &mut buffered, &hold, opts).await?;
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
            commit_buffered(project, tables, &mut pending, &mut buffered, &hold, opts).await?;
            advance_idle(tables, &positions, &last_seen, &hold).await?;
            last_idle_advance = Instant::now();
        }
    }
    flush(&project.lake, tables, &mut pending, &hold).await?;
    // Tables with nothing new move up too, so the next run starts here, not at a binlog
    // the server may have purged by then.
    advance_idle(tables, &positions, &last_seen, &hold).await?;
    tracing::info!(source = %mysql.source, at = %last_seen, "caught up");
    Ok(())
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
    let found = || match names.is_empty() {
        true => format!(
            "{} of them, unnamed",
            change
                .after
                .as_ref()
                .or(change.before.as_ref())
                .map_or(0, Vec::len)
        ),
        false => names.join(", "),
    };
    if names.is_empty() {
        // Without names (binlog_row_metadata is not FULL) positions are all there is.
        let width = change
            .after
            .as_ref()
            .or(change.before.as_ref())
            .map_or(0, Vec::len);
        return match width == defs.len() {
            true => Ok(change),
            false => Err(found()),
        };
    }
    let order: Option<Vec<usize>> = defs
        .iter()
        .map(|d| names.iter().position(|n| *n == d.name))
        .collect();
    match order {
        Some(order) if names.len() == defs.len() => {
            let permute = |image: Option<binlog::Image>| {
                image.map(|mut img| {
                    order
                        .iter()
                        .map(|&i| img.get_mut(i).and_then(Option::take))
                        .collect::<binlog::Image>()
                })
            };
            change.before = permute(change.before.take());
            change.after = permute(change.after.take());
            Ok(change)
        }
        _ => Err(found()),
    }
}

/// The binlog positions the chunks of a table's last snapshot run were read at: a change at
/// or before its key's chunk position is already in the lake (the chunk saw it), one after it
/// is not. Without this, CDC after a resumed snapshot (whose later chunks were read later
/// than the run's start) would land some changes twice, once as a read and once as the
/// change: merge absorbs that, append and history would not.
struct Watermarks {
    plan: ChunkPlan,
    /// The chunk column's index among the table's columns (None: the run was one chunk).
    column: Option<usize>,
    /// Encoded position per chunk.
    read_at: Vec<i64>,
    /// The latest of them: later changes are never in a chunk.
    last: i64,
}

impl Watermarks {
    /// The table's last completed run's chunk positions, when some chunk was read after the
    /// position CDC resumes from (else there is nothing to tell apart).
    async fn of(t: &Captured, resume: &BinlogPosition) -> Result<Option<Watermarks>, EngineError> {
        let Some(run) = t.log.app_version(DONE).await? else {
            return Ok(None);
        };
        let plan = ChunkPlan {
            lo: t.log.app_version(LO).await?.unwrap_or(0),
            step: t.log.app_version(STEP).await?.unwrap_or(0),
            chunks: t.log.app_version(CHUNKS).await?.unwrap_or(1),
        };
        let mut read_at = Vec::with_capacity(plan.chunks as usize);
        for i in 0..plan.chunks {
            read_at.push(t.log.app_version(&chunk_id(run, i)).await?.unwrap_or(1));
        }
        let last = read_at.iter().copied().max().unwrap_or(1);
        if last <= resume.encode() {
            return Ok(None);
        }
        let column = snapshot::chunk_column(&t.info)
            .filter(|_| plan.step > 0)
            .and_then(|c| t.info.columns.iter().position(|d| d.name == c));
        Ok(Some(Watermarks {
            plan,
            column,
            read_at,
            last,
        }))
    }

    /// Whether the chunk holding `image`'s key was read at or after `at`.
    fn seen(&self, image: &binlog::Image, at: i64, info: &TableInfo) -> bool {
        let chunk = match self.column {
            Some(c) => {
                let Some(k) = image
                    .get(c)
                    .and_then(|v| sluice_sources::mysql::convert::binlog_int(&info.columns[c], v))
                else {
                    return false;
                };
                self.plan.chunk_of(k)
            }
            None => 0,
        };
        self.read_at.get(chunk as usize).is_some_and(|&r| at <= r)
    }

    /// The part of `change` (committed at `end`) the snapshot did not see: all of it, none
    /// of it, or for an update that moved a key between chunks read on either side of it,
    /// the delete of the old key or the insert of the new.
    fn unseen(
        &self,
        change: RowChange,
        end: &BinlogPosition,
        info: &TableInfo,
    ) -> Option<RowChange> {
        let at = end.encode();
        if at > self.last {
            return Some(change);
        }
        let before = change.before.as_ref().map(|i| self.seen(i, at, info));
        let after = change.after.as_ref().map(|i| self.seen(i, at, info));
        match (change.op, before, after) {
            (RowOp::Insert, _, Some(true)) | (RowOp::Delete, Some(true), _) => None,
            (RowOp::Update, Some(true), Some(true)) => None,
            (RowOp::Update, Some(true), Some(false)) => Some(RowChange {
                op: RowOp::Insert,
                before: None,
                ..change
            }),
            (RowOp::Update, Some(false), Some(true)) => Some(RowChange {
                op: RowOp::Delete,
                after: None,
                ..change
            }),
            _ => Some(change),
        }
    }
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
    hold: &Option<BinlogPosition>,
    opts: &MySqlOptions,
) -> Result<(), EngineError> {
    let flushed = flush(&project.lake, tables, pending, hold).await?;
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
/// Buffers one row change; returns the change rows it produced (a key change is a delete
/// of the old key and an insert of the new; an update of a table without a key, the delete of
/// its before image and the update to its after image). A change whose rows do not convert
/// produces none: it waits in the builder's rejects for the quarantine.
fn add_change(p: &mut Pending, change: RowChange, ts: i64) -> Result<usize, String> {
    let (images, ops) = match change.op {
        RowOp::Insert => (
            vec![change.after.ok_or("insert without a row image")?],
            vec![Op::Insert],
        ),
        RowOp::Delete => (
            vec![change.before.ok_or("delete without a row image")?],
            vec![Op::Delete],
        ),
        RowOp::Update => {
            let before = change.before.ok_or("update without its before image")?;
            let after = change.after.ok_or("update without its after image")?;
            // A table without a key matches rows by their values: the old row goes by its
            // before image.
            if p.key_columns.is_empty() {
                (vec![before, after], vec![Op::Delete, Op::Update])
            } else if p.key_columns.iter().any(|&k| before.get(k) != after.get(k)) {
                (vec![before, after], vec![Op::Delete, Op::Insert])
            } else {
                (vec![after], vec![Op::Update])
            }
        }
    };
    if let Err(r) = p.builder.push_binlog_rows(images) {
        p.builder.rejects.push(r);
        return Ok(0);
    }
    let n = ops.len();
    p.ops.extend(ops);
    p.source_ts.extend(std::iter::repeat_n(Some(ts), n));
    Ok(n)
}

/// Commits every table's buffered changes with the position after its last transaction.
async fn flush(
    lake: &sluice_lake::Lake,
    tables: &mut [Captured],
    pending: &mut [Pending],
    hold: &Option<BinlogPosition>,
) -> Result<Vec<usize>, EngineError> {
    let ingested_at = Utc::now();
    let mut flushed = Vec::new();
    for (i, (t, p)) in tables.iter_mut().zip(pending.iter_mut()).enumerate() {
        let Some(end) = p.end.take() else { continue };
        flushed.push(i);
        // Rejects first, under the commit's position: a crash before the data commit re-reads
        // the same changes and finds them recorded.
        let rejects = std::mem::take(&mut p.builder.rejects);
        let at = format!("binlog {end}");
        t.quarantine(
            lake,
            &format!("{BINLOG_APP_ID}.{}", end.encode()),
            &at,
            rejects,
        )
        .await?;
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
                    (HOLD_APP_ID.to_string(), hold_value(hold)),
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
    hold: &Option<BinlogPosition>,
) -> Result<(), EngineError> {
    for t in tables.iter_mut() {
        if t.halted.is_some() || t.error.is_some() || !started.contains_key(&t.spec.table) {
            continue;
        }
        let current = t.log.app_version(BINLOG_APP_ID).await?;
        let held = t.log.app_version(HOLD_APP_ID).await?.unwrap_or(0);
        if current.is_some_and(|c| c >= to.encode()) && held == hold_value(hold) {
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
                vec![
                    (
                        BINLOG_APP_ID.to_string(),
                        to.encode().max(current.unwrap_or(0)),
                    ),
                    (HOLD_APP_ID.to_string(), hold_value(hold)),
                ],
                meta,
            )
            .await?;
    }
    Ok(())
}
