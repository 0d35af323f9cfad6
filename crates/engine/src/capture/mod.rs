//! The capture driver: one path from every [`Source`] into the lake. The source knows its
//! protocol; the driver owns exactly-once — what is read, when it commits, and the position
//! committed with it:
//!
//! - [`snapshot`]: chunks across consistent views, committed as they land, resumed from the
//!   chunks not committed, completed as an image (deleting what the source no longer has);
//! - [`incremental`]: rows past the committed cursor value, the value committed with them;
//! - [`stream`]: whole source transactions batched by time and size, each table's rows
//!   committed with its position; schema changes taken (or the table halted) between them;
//! - [`units`]: files, each landed once per version.
//!
//! Positions are bytes the driver keeps in the change log ([`positions`]) and hands back.

mod incremental;
mod positions;

pub(crate) use positions::stream_position;
pub(crate) use table::quarantine;
mod snapshot;
mod stream;
mod table;
mod units;

use std::time::Duration;

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use sluice_core::change::{stamp, Op, Stamp};
use sluice_core::config::{
    Mode, TableSpec, DEFAULT_BATCH_MAX_MS, DEFAULT_BATCH_MAX_ROWS, DEFAULT_CHUNK_ROWS,
    DEFAULT_SNAPSHOT_PARALLELISM,
};
use sluice_core::config::{OnPositionLost, Tuning};
use sluice_core::retry::{ErrorKind, RetryPolicy};
use sluice_lake::LakeWriter;
use sluice_sources::source::{Retention, SharedSource, Source};

use crate::{EngineError, Project};
use snapshot::SnapshotSettings;
use stream::StreamSettings;
use table::Captured;

/// What one table's capture did in a run.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ExtractReport {
    pub files: u64,
    pub rows: u64,
    /// Bytes of data files (Parquet, compressed) the rows landed in.
    pub bytes: u64,
    pub rejects: u64,
    /// Rows a snapshot no longer found at the source, landed as deletes.
    #[serde(skip_serializing_if = "is_zero")]
    pub deleted: u64,
    /// Zero dates (`0000-00-00`) that landed as NULL.
    #[serde(skip_serializing_if = "is_zero")]
    pub zero_dates: u64,
    /// Lake version after the last commit of this run (None: nothing new).
    pub lake_version: Option<i64>,
    /// Files not taken yet: still being written (changed within the settle time, or while
    /// being read).
    #[serde(skip_serializing_if = "is_zero")]
    pub waiting: u64,
    /// Files that could not be read at all (corrupt, truncated): each quarantined whole as
    /// one reject, the files after it landed.
    #[serde(skip_serializing_if = "is_zero")]
    pub unreadable: u64,
    /// Schema changes the lake took in this run (new columns, variant columns, drops).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schema_changes: Vec<String>,
    /// Stream tables: where the committed position stood in the log the source keeps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Stream tables: the position is close to the oldest log kept (the next purge may
    /// take it), said how close.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position_warning: Option<String>,
    /// Stream tables: the position was gone and the table was snapshotted again
    /// (`on_position_lost = "resnapshot"`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resnapshotted: bool,
}

impl ExtractReport {
    /// Adds a later round's counts (a files source polled while following).
    fn add(&mut self, later: ExtractReport) {
        self.files += later.files;
        self.rows += later.rows;
        self.bytes += later.bytes;
        self.rejects += later.rejects;
        self.deleted += later.deleted;
        self.zero_dates += later.zero_dates;
        self.lake_version = later.lake_version.or(self.lake_version);
        self.waiting = later.waiting;
        self.unreadable += later.unreadable;
        self.schema_changes.extend(later.schema_changes);
        self.retention = later.retention.or(self.retention);
        self.position_warning = later.position_warning.or(self.position_warning.take());
        self.resnapshotted |= later.resnapshotted;
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a run asks of one source's capture.
#[derive(Debug, Clone, Default)]
pub struct CaptureOptions {
    pub progress: bool,
    /// Keep capturing after catching up (streams follow, files are polled) until the signal
    /// turns true.
    pub follow: Option<watch::Receiver<bool>>,
    /// While following, load each table into its warehouse after each lake commit.
    pub load_while_following: bool,
    /// Tables of this source to snapshot again from scratch (`--resnapshot`).
    pub resnapshot: Vec<String>,
    /// Following, how long a source without a change stream waits between passes.
    pub interval: Duration,
}

/// One table's outcome.
#[derive(Debug)]
pub struct TableOutcome {
    pub spec: TableSpec,
    pub report: ExtractReport,
    pub error: Option<String>,
    /// Whether trying again may help.
    pub error_kind: Option<ErrorKind>,
    /// Set when a schema change stopped the table's capture (exit 3).
    pub halted: Option<String>,
    /// Its source delivers files (the report counts them).
    pub reads_units: bool,
}

impl TableOutcome {
    fn failed(spec: TableSpec, e: &EngineError) -> TableOutcome {
        TableOutcome {
            spec,
            report: ExtractReport::default(),
            error: Some(e.to_string()),
            error_kind: Some(e.kind()),
            halted: None,
            reads_units: false,
        }
    }
}

/// Captures the selected tables of source `name` (`only`: those named; None: all) into the
/// lake. Following, a change stream follows by itself; any other source runs a pass every
/// `interval` (loading what each pass landed) until the signal turns true.
pub async fn capture(
    project: &Project,
    name: &str,
    only: Option<&[String]>,
    opts: &CaptureOptions,
) -> Result<Vec<TableOutcome>, EngineError> {
    let source = crate::sources::build(project, name)?;
    let streams = !source.capabilities().units && project.source(name)?.mode() == Mode::Cdc;
    let mut outcomes: Vec<TableOutcome> = Vec::new();
    let mut stop = opts.follow.clone();
    let mut pass_opts = opts.clone();
    loop {
        let pass = match source.capabilities().units {
            true => capture_units(project, &source, name, only, &pass_opts).await,
            false => capture_tables(project, &source, name, only, &pass_opts).await,
        };
        // --resnapshot is the first pass's.
        pass_opts.resnapshot.clear();
        let landed: Vec<TableSpec> = match pass {
            Ok(pass) => merge_outcomes(&mut outcomes, pass),
            Err(e) if outcomes.is_empty() || stop.is_none() => return Err(e),
            Err(e) => {
                tracing::error!(source = %name, error = %e, "pass failed; trying again next interval");
                for o in outcomes.iter_mut() {
                    o.error = Some(e.to_string());
                    o.error_kind = Some(e.kind());
                }
                Vec::new()
            }
        };
        let Some(s) = stop.as_mut().filter(|_| !streams) else {
            break;
        };
        if *s.borrow() {
            break;
        }
        if opts.load_while_following {
            for spec in &landed {
                if let Err(e) = crate::load::load(project, spec).await {
                    tracing::error!(table = %spec.table, error = %e, "load while following failed; retrying next pass");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(opts.interval) => {}
            _ = s.wait_for(|v| *v) => break,
        }
    }
    Ok(outcomes)
}

/// Adds a pass's outcomes to the run's (counts summed, the latest error or halt kept);
/// returns the tables the pass landed something in.
fn merge_outcomes(outcomes: &mut Vec<TableOutcome>, pass: Vec<TableOutcome>) -> Vec<TableSpec> {
    let mut landed = Vec::new();
    for o in pass {
        if o.report.lake_version.is_some() {
            landed.push(o.spec.clone());
        }
        match outcomes
            .iter_mut()
            .find(|k| k.spec.source == o.spec.source && k.spec.table == o.spec.table)
        {
            Some(k) => {
                k.report.add(o.report);
                k.error = o.error;
                k.error_kind = o.error_kind;
                k.halted = o.halted;
            }
            None => outcomes.push(o),
        }
    }
    landed
}

/// One pass over a database source's tables: each prepared, then snapshotted or read past
/// its cursor, then (CDC) streamed.
async fn capture_tables(
    project: &Project,
    source: &SharedSource,
    name: &str,
    only: Option<&[String]>,
    opts: &CaptureOptions,
) -> Result<Vec<TableOutcome>, EngineError> {
    let config = project.source(name)?;
    let configured: Vec<String> = project
        .config
        .source_tables(name, config)
        .into_iter()
        .map(|s| s.table)
        .collect();
    let selected: Option<Vec<String>> = match (configured.is_empty(), only) {
        (true, None) => None,
        (true, Some(o)) => Some(o.to_vec()),
        (false, None) => Some(configured.clone()),
        (false, Some(o)) => Some(
            o.iter()
                .filter(|t| sluice_core::pattern::names(&configured, t))
                .cloned()
                .collect(),
        ),
    };
    let mode = config.mode();
    let streams = mode == Mode::Cdc;
    if streams {
        source.check_stream().await?;
    }
    let found = source.tables(selected.as_deref()).await?;
    let mut tables = Vec::new();
    let mut failed = Vec::new();
    for now in found {
        let spec = project.config.table_spec(name, config, &now.name, &now.key);
        let resnapshot = opts.resnapshot.contains(&spec.table);
        match prepare(project, source.as_ref(), spec, now, streams, resnapshot).await {
            Ok(c) => tables.push(c),
            Err(outcome) => failed.push(*outcome),
        }
    }

    let tuning = config.shared().tuning;
    let how = |fresh| SnapshotSettings {
        parallelism: tuning
            .snapshot_parallelism
            .unwrap_or(DEFAULT_SNAPSHOT_PARALLELISM),
        chunk_rows: tuning.chunk_rows.unwrap_or(DEFAULT_CHUNK_ROWS),
        fresh,
        stream: streams,
        progress: opts.progress,
    };
    for t in tables.iter_mut().filter(|t| t.live()) {
        let redo = opts.resnapshot.contains(&t.spec.table);
        let result = match mode {
            Mode::Snapshot => snapshot::snapshot(project, source, t, how(false)).await,
            Mode::Incremental => incremental::incremental(project, source, t, opts.progress).await,
            Mode::Cdc => {
                let ids = positions::Ids::of(source.as_ref());
                let done = t.log.app_version(&ids.done()).await?.is_some();
                // A source without snapshots (events) streams from its start.
                let none = !source.capabilities().snapshot;
                if none && redo {
                    Err(EngineError::Usage(format!(
                        "{}.{}: --resnapshot: this source has no snapshot (its data arrives; nothing can be read again)",
                        t.spec.source, t.spec.table
                    )))
                } else if none || (done && !redo) {
                    Ok(())
                } else {
                    snapshot::snapshot(project, source, t, how(redo)).await
                }
            }
        };
        if let Err(e) = result {
            t.fail(e.to_string(), e.kind());
        }
    }
    if streams {
        guard_positions(project, source, &mut tables, &tuning, how(true)).await;
        let settings = StreamSettings {
            max_rows: tuning.batch_max_rows.unwrap_or(DEFAULT_BATCH_MAX_ROWS),
            max_wait: Duration::from_millis(tuning.batch_max_ms.unwrap_or(DEFAULT_BATCH_MAX_MS)),
            follow: opts.follow.clone(),
            load: opts.load_while_following,
            progress: opts.progress,
        };
        follow_stream(project, source, &mut tables, settings).await;
    }
    failed.extend(tables.into_iter().map(Captured::outcome));
    Ok(failed)
}

/// Warn when a stream position is within this many log files of the oldest kept.
const DEFAULT_POSITION_WARN_FILES: u64 = 1;

/// Where each stream table's position stands in the log the source keeps: reported, warned
/// about when the next purge may take it, and when already gone, with
/// `on_position_lost = "resnapshot"`, snapshotted again (the stream then starts after it;
/// otherwise the stream fails the table naming `--resnapshot`).
async fn guard_positions(
    project: &Project,
    source: &SharedSource,
    tables: &mut [Captured],
    tuning: &Tuning,
    redo: SnapshotSettings,
) {
    if !source.capabilities().snapshot {
        return; // nothing is read again from its positions: none can be lost
    }
    let warn_files = tuning
        .position_warn_files
        .unwrap_or(DEFAULT_POSITION_WARN_FILES);
    for t in tables.iter_mut().filter(|t| t.live()) {
        let at = match positions::stream_position(&t.log, source.as_ref()).await {
            Ok(Some(at)) => at,
            Ok(None) => continue,
            Err(e) => {
                t.fail(e.to_string(), e.kind());
                continue;
            }
        };
        match source.retention(&at).await {
            Ok(Some(r)) => {
                if r.files_before < warn_files {
                    let text = format!(
                        "the committed position is {} log file(s) ({} bytes) from the oldest the source keeps{}: a purge would lose it (sync more often, or keep the log longer)",
                        r.files_before,
                        r.bytes_before,
                        r.kept_for_secs
                            .map(|s| format!(", which it keeps {} h", s / 3600))
                            .unwrap_or_default()
                    );
                    tracing::warn!(source = %t.spec.source, table = %t.spec.table, "{text}");
                    t.report.position_warning = Some(text);
                }
                t.report.retention = Some(r);
            }
            Ok(None) if tuning.on_position_lost == OnPositionLost::Resnapshot => {
                tracing::warn!(source = %t.spec.source, table = %t.spec.table, "the committed position is no longer at the source: snapshotting the table again (on_position_lost = \"resnapshot\")");
                match snapshot::snapshot(project, source, t, redo).await {
                    Ok(()) => t.report.resnapshotted = true,
                    Err(e) => t.fail(e.to_string(), e.kind()),
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(source = %t.spec.source, table = %t.spec.table, error = %e, "could not read how much log the source keeps")
            }
        }
    }
}

/// Streams the tables; while following, a stream that fails in a way that may pass (the
/// server restarted, the network dropped) opens again from the committed positions after the
/// retry policy's wait. Any other failure is each live table's.
async fn follow_stream(
    project: &Project,
    source: &SharedSource,
    tables: &mut [Captured],
    settings: StreamSettings,
) {
    let policy = RetryPolicy::default();
    let mut attempt = 0;
    loop {
        let started = std::time::Instant::now();
        let Err(e) = stream::stream(project, source, tables, settings.clone()).await else {
            return;
        };
        // A stream that ran a while before failing starts its count again.
        if started.elapsed() > policy.longest {
            attempt = 0;
        }
        attempt += 1;
        let mut stop = settings.follow.clone();
        let wait = match stop.as_ref() {
            Some(s) if !*s.borrow() => policy.wait(e.kind(), attempt),
            _ => None,
        };
        if let (Some(wait), Some(stop)) = (wait, stop.as_mut()) {
            tracing::warn!(source = %source.name(), error = %e, attempt, wait_ms = wait.as_millis() as u64, "the change stream failed; opening it again");
            tokio::select! {
                _ = tokio::time::sleep(wait) => continue,
                _ = stop.wait_for(|v| *v) => {}
            }
        }
        let msg = e.to_string();
        for t in tables.iter_mut().filter(|t| t.live()) {
            t.fail(msg.clone(), e.kind());
        }
        return;
    }
}

/// A table ready to capture: its change log open (created on first sight) and the
/// definitions its rows are read with settled. A stream resumes with the definitions the
/// lake holds (it takes each schema change as it reaches it); a snapshot or incremental read
/// sees the table as it is now (as does a stream table snapshotted again, whose stream
/// starts after it), so the lake takes that first (the warehouse side is the schema gate's).
async fn prepare(
    project: &Project,
    source: &dyn Source,
    spec: TableSpec,
    mut now: sluice_sources::source::SourceTable,
    streams: bool,
    resnapshot: bool,
) -> Result<Captured, Box<TableOutcome>> {
    now.key = spec.primary_key.clone();
    let (log, stored) = match table::open_log(project, source, &spec, &now).await {
        Ok(x) => x,
        Err(e) => return Err(Box::new(TableOutcome::failed(spec, &e))),
    };
    let in_lake = match source.table_as(&now, &stored) {
        Ok(t) => t,
        Err(e) => return Err(Box::new(TableOutcome::failed(spec, &EngineError::from(e)))),
    };
    let mut c = Captured {
        spec,
        table: in_lake,
        log,
        report: ExtractReport::default(),
        error: None,
        error_kind: None,
        halted: None,
    };
    if stored != now.definitions && (!streams || resnapshot) {
        if let Err(e) = c.adopt(source, now, "the table as it is now").await {
            c.fail(e.to_string(), e.kind());
        }
    }
    if let Some(why) = source.unusable(&c.table, streams).filter(|_| c.live()) {
        c.fail(why, ErrorKind::Fatal);
    }
    Ok(c)
}

/// One pass over a units source's table(s): the units not landed yet.
async fn capture_units(
    project: &Project,
    source: &SharedSource,
    name: &str,
    only: Option<&[String]>,
    opts: &CaptureOptions,
) -> Result<Vec<TableOutcome>, EngineError> {
    let specs = project.config.source_tables(name, project.source(name)?);
    let mut out = Vec::new();
    for spec in specs
        .into_iter()
        .filter(|s| only.is_none_or(|o| o.contains(&s.table)))
    {
        let (report, error) = match units::capture(project, source, &spec, opts.progress).await {
            Ok(r) => (r, None),
            Err(e) => (ExtractReport::default(), Some(e)),
        };
        out.push(TableOutcome {
            spec,
            report,
            error_kind: error.as_ref().map(EngineError::kind),
            error: error.map(|e| e.to_string()),
            halted: None,
            reads_units: true,
        });
    }
    Ok(out)
}

/// Stamps source rows as reads (`r`) numbered after `seq`, with `(source_ts, ingested_at)`,
/// writes them, and moves `seq` on. Returns the rows written.
pub(crate) async fn write_reads(
    writer: &mut LakeWriter,
    batch: &RecordBatch,
    seq: &mut i64,
    at: (Option<DateTime<Utc>>, DateTime<Utc>),
    what: &str,
) -> Result<u64, EngineError> {
    write_changes(writer, batch, Op::Read, seq, at, what).await
}

/// Stamps source rows as changes `op` numbered after `seq` (see [`write_reads`]).
pub(crate) async fn write_changes(
    writer: &mut LakeWriter,
    batch: &RecordBatch,
    op: Op,
    seq: &mut i64,
    (source_ts, ingested_at): (Option<DateTime<Utc>>, DateTime<Utc>),
    what: &str,
) -> Result<u64, EngineError> {
    let stamped = stamp(
        batch,
        &Stamp {
            op,
            first_seq: *seq + 1,
            source_ts,
            ingested_at,
        },
    )
    .map_err(|e| EngineError::Internal(format!("stamping {what}: {e}")))?;
    writer.write(stamped).await?;
    let n = batch.num_rows() as u64;
    *seq += n as i64;
    Ok(n)
}
