//! Extract and land: read what a source has that the lake does not, stamp the change columns,
//! and commit it to the lake together with the position that covers it.
//!
//! Files: one lake commit per file, carrying the `file:<path>` position of that file and the
//! new `sluice.seq`. Rejects go to the quarantine table first, marked with the same file
//! position, so a crash between the two commits neither loses nor doubles them.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::mpsc;

use sluice_core::change::{change_schema, data_schema, stamp, Op, Stamp};
use sluice_core::config::{FilesConfig, TableSpec};
use sluice_core::failpoint;
use sluice_lake::{LakeTable, LakeWriter, TablePath};
use sluice_sources::files::{FileEntry, FileEvent, FilesSource, InferredSchema};

use crate::image::Images;
use crate::progress::Progress;
use crate::{EngineError, Project};
use sluice_lake::Quarantine;

/// Position id of a consumed file.
pub fn file_position(id: &str) -> String {
    format!("file:{id}")
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ExtractReport {
    pub files: u64,
    pub rows: u64,
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
    /// Schema changes the lake took in this run (new columns, variant columns, drops).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schema_changes: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub async fn extract(
    project: &Project,
    spec: &TableSpec,
    src: &FilesConfig,
    show_progress: bool,
) -> Result<ExtractReport, EngineError> {
    let url = project.config.resolve_path(&src.url);
    let source = Arc::new(
        FilesSource::new(
            &spec.source,
            &spec.table,
            src,
            &url,
            &project.store_options(),
        )?
        .with_key(&spec.primary_key),
    );
    let path = TablePath::changes(&spec.source, &spec.table);
    let mut log = LakeTable::open(&project.lake, &path).await?;

    let listed = source.list().await?;
    let mut pending: Vec<FileEntry> = Vec::new();
    for entry in listed {
        let consumed = match &log {
            Some(t) => t
                .app_version(&file_position(&entry.id))
                .await?
                .is_some_and(|v| v == entry.version() || v == LEGACY_CONSUMED),
            None => false,
        };
        if !consumed {
            pending.push(entry);
        }
    }
    let mut report = ExtractReport::default();
    let (pending, waiting) = settled(&source, pending).await?;
    report.waiting = waiting;
    if pending.is_empty() {
        // An image a crash left open (every file of it landed): it is complete.
        if let Some(log) = log.as_mut() {
            let mut images = Images::of(log).await?;
            if images.open.is_some() {
                let seq = log.last_seq().await?;
                let positions = images.closing(seq, log.version() + 1);
                log.writer()?
                    .commit(log, positions, serde_json::Map::new())
                    .await?;
            }
        }
        return Ok(report);
    }

    // Files the new table's schema was inferred from: the union of their columns, so one of
    // them lacking a column is no drop.
    let mut inferred_from: Vec<String> = Vec::new();
    let mut log = match log.take() {
        Some(t) => t,
        None => {
            let sample = source.inference_sample(&pending);
            inferred_from = sample.iter().map(|e| e.id.clone()).collect();
            create_log(project, spec, &source, &pending, sample).await?
        }
    };
    let mut data = Arc::new(data_schema(log.schema()?.as_ref()));
    let mut seq = log.last_seq().await?;
    let mut images = Images::of(&log).await?;
    let mut quarantine = Quarantine::new(&project.lake, &spec.source, &spec.table);
    let ingested_at = Utc::now();
    let mut progress = Progress::new(
        show_progress,
        format!("{}.{} extract", spec.source, spec.table),
    );

    for entry in pending {
        let position = file_position(&entry.id);
        let first_seq = seq + 1;
        let file = source.fetch(&entry).await?;
        let fetched_as = file.read_as.clone();
        // Declared columns are a contract: values off it are quarantined, not evolved.
        let (file, changes) = match source.declared_schema() {
            Some(_) => (file, Vec::new()),
            None => {
                let drops = !inferred_from.contains(&entry.id);
                take_schema_changes(&source, &entry, file, &data, &mut log, drops).await?
            }
        };
        if !changes.is_empty() {
            data = Arc::new(data_schema(log.schema()?.as_ref()));
            report.schema_changes.extend(changes);
        }
        let mut writer = log.writer()?;
        let mut rejects = Vec::new();
        let (tx, mut rx) = mpsc::channel::<FileEvent>(4);
        let reader = {
            let source = source.clone();
            let entry = entry.clone();
            let data: SchemaRef = data.clone();
            tokio::task::spawn_blocking(move || {
                source.read(&entry, &file, &data, &mut |ev| {
                    tx.blocking_send(ev).map_err(|_| {
                        sluice_sources::SourceError::Sink("lake writer stopped".into())
                    })
                })
            })
        };
        let mut rows = 0u64;
        let mut write_error = None;
        while let Some(ev) = rx.recv().await {
            match ev {
                FileEvent::Rows(batch) => {
                    let at = (Some(entry.modified), ingested_at);
                    match write_reads(&mut writer, &batch, &mut seq, at, &entry.id).await {
                        Ok(n) => {
                            rows += n;
                            progress.add(n);
                        }
                        Err(e) => {
                            write_error = Some(e);
                            break;
                        }
                    }
                }
                FileEvent::Reject(r) => rejects.push(r),
            }
        }
        drop(rx);
        let stats = reader
            .await
            .map_err(|e| EngineError::Internal(format!("reader task: {e}")))?;
        if let Some(e) = write_error {
            return Err(e);
        }
        let stats = stats?;
        debug_assert_eq!(stats.rows, rows);
        // The version of the file that was read: a copy says; a file read in place must be as
        // it was listed, or it changed while being read (still being written): nothing of it
        // is committed, and the next sync reads it whole.
        let read_as = match fetched_as {
            Some(e) => e,
            None => match source.stat(&entry).await? {
                Some(now) if now.same_version(&entry) => entry.clone(),
                _ => {
                    tracing::warn!(source = %spec.source, table = %spec.table, file = %entry.id, "the file changed while it was read (still being written?): taken next sync");
                    seq = first_seq - 1;
                    report.waiting += 1;
                    continue;
                }
            },
        };
        let version = read_as.version();
        if !rejects.is_empty() {
            tracing::warn!(source = %spec.source, table = %spec.table, file = %entry.id, rejects = rejects.len(), "records quarantined");
            quarantine
                .add(&position, version, rejects.clone(), ingested_at)
                .await?;
        }
        let mut meta = serde_json::Map::new();
        meta.insert("sluice".into(), json!({ "source": spec.source, "table": spec.table, "file": entry.id, "rows": rows, "rejects": rejects.len() }));
        let mut positions = vec![
            (position, version),
            (sluice_lake::SEQ_APP_ID.to_string(), seq),
        ];
        if rows > 0 {
            positions.extend(images.opening(first_seq));
        }
        let version = writer.commit(&mut log, positions, meta).await?;
        failpoint::hit(failpoint::AFTER_LAKE_COMMIT);
        report.files += 1;
        report.rows += rows;
        report.rejects += rejects.len() as u64;
        report.lake_version = version.or(report.lake_version);
        tracing::info!(source = %spec.source, table = %spec.table, file = %entry.id, rows, rejects = rejects.len(), version = ?version, "file landed");
    }
    // The files this sync found new are the table's latest image (what `replace` loads). A
    // drop without a single row makes none: a replace table is never emptied by one.
    if images.open.is_some() {
        let positions = images.closing(seq, log.version() + 1);
        report.lake_version = log
            .writer()?
            .commit(&mut log, positions, serde_json::Map::new())
            .await?
            .or(report.lake_version);
    }
    Ok(report)
}

/// The position version of files consumed before file versions were recorded.
const LEGACY_CONSUMED: i64 = 1;

/// `pending` without the local files that may still be being written: a file modified less
/// than the source's settle time ago is waited for (once, for all of them), then taken only
/// if it did not change meanwhile. Returns the files to read and how many wait for the next
/// sync.
async fn settled(
    source: &FilesSource,
    pending: Vec<FileEntry>,
) -> Result<(Vec<FileEntry>, u64), EngineError> {
    let settle = source.settle();
    let now = Utc::now();
    let fresh = |e: &FileEntry| {
        (now - e.modified)
            .to_std()
            .map(|age| age < settle)
            .unwrap_or(true)
    };
    let wait = pending
        .iter()
        .filter(|e| fresh(e))
        .map(|e| settle.saturating_sub((now - e.modified).to_std().unwrap_or_default()))
        .max();
    let Some(wait) = wait else {
        return Ok((pending, 0));
    };
    tracing::info!(source = %source.name, table = %source.table, wait_ms = wait.as_millis() as u64, "waiting for recently changed files to settle");
    tokio::time::sleep(wait).await;
    let mut out = Vec::with_capacity(pending.len());
    let mut waiting = 0;
    for e in pending {
        if !fresh(&e) {
            out.push(e);
            continue;
        }
        match source.stat(&e).await? {
            Some(now) if now.same_version(&e) => out.push(e),
            _ => {
                tracing::info!(source = %source.name, table = %source.table, file = %e.id, "still being written: taken when it settles");
                waiting += 1;
            }
        }
    }
    Ok((out, waiting))
}

/// Holds a file's columns against the lake table's (`table`) and commits what differs as a schema change
/// before the file's data (new columns, variant columns for off-type values, drops when
/// `drops` and the file lists all its columns). Returns the file back and the changes, as
/// text for the report. Crash-safe: the data commit that follows finds nothing left to change.
async fn take_schema_changes(
    source: &Arc<FilesSource>,
    entry: &FileEntry,
    file: sluice_sources::files::LocalFile,
    table: &SchemaRef,
    log: &mut LakeTable,
    drops: bool,
) -> Result<(sluice_sources::files::LocalFile, Vec<String>), EngineError> {
    let (file, incoming) = {
        let (source, entry, table) = (source.clone(), entry.clone(), table.clone());
        tokio::task::spawn_blocking(move || {
            let incoming = source.incoming_schema(&entry, &file, &table);
            (file, incoming)
        })
        .await
        .map_err(|e| EngineError::Internal(format!("schema sampling task: {e}")))?
    };
    let incoming = incoming?;
    let history = log.schema_history()?;
    let r = sluice_core::schema::reconcile(
        table,
        &history.dropped(),
        &incoming.schema,
        incoming.complete && drops,
    );
    if r.changes.is_empty() {
        return Ok((file, Vec::new()));
    }
    let texts: Vec<String> = r.changes.iter().map(|c| c.to_string()).collect();
    for t in &texts {
        tracing::warn!(table = %log.path(), file = %entry.id, change = %t, "schema change taken into the lake");
    }
    log.evolve(&r.add, r.changes).await?;
    Ok((file, texts))
}

/// Stamps source rows as reads (`r`) numbered after `seq`, with `(source_ts, ingested_at)`,
/// writes them, and moves `seq` on. Returns the rows written.
pub(crate) async fn write_reads(
    writer: &mut LakeWriter,
    batch: &RecordBatch,
    seq: &mut i64,
    (source_ts, ingested_at): (Option<DateTime<Utc>>, DateTime<Utc>),
    what: &str,
) -> Result<u64, EngineError> {
    let stamped = stamp(
        batch,
        &Stamp {
            op: Op::Read,
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

/// Fetches `sample` and infers the schema of `listed` from it (off the async threads).
pub async fn infer(
    source: &Arc<FilesSource>,
    listed: &[FileEntry],
    sample: Vec<FileEntry>,
) -> Result<InferredSchema, EngineError> {
    let mut fetched = Vec::with_capacity(sample.len());
    for e in sample {
        let file = source.fetch(&e).await?;
        fetched.push((e, file));
    }
    let (src, listed) = (source.clone(), listed.to_vec());
    let inferred = tokio::task::spawn_blocking(move || src.infer_schema(&listed, &fetched))
        .await
        .map_err(|e| EngineError::Internal(format!("inference task: {e}")))??;
    Ok(inferred)
}

/// Creates the change log from the declared columns, or from a schema inferred over `sample`
/// (spread over the pending files) and the folders of every pending file.
async fn create_log(
    project: &Project,
    spec: &TableSpec,
    source: &Arc<FilesSource>,
    pending: &[FileEntry],
    sample: Vec<FileEntry>,
) -> Result<LakeTable, EngineError> {
    let data = match source.declared_schema() {
        Some(s) => s,
        None => {
            let inferred = infer(source, pending, sample).await?;
            tracing::info!(source = %spec.source, table = %spec.table, files = inferred.files_sampled, "schema inferred");
            for c in inferred.columns.iter().filter(|c| c.conflict) {
                let said: Vec<String> = c
                    .file_types
                    .iter()
                    .map(|t| format!("{} in {} file(s), first {}", t.type_name, t.files, t.first))
                    .collect();
                tracing::warn!(source = %spec.source, table = %spec.table, column = %c.name, files = %said.join("; "), "type conflict: the column is text (sluice crawl shows the evidence)");
            }
            inferred.schema
        }
    };
    for k in &spec.primary_key {
        if data.index_of(k).is_err() {
            return Err(EngineError::Usage(format!(
                "{}.{}: primary_key column `{k}` is not in the files (columns: {})",
                spec.source,
                spec.table,
                data.fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut props = HashMap::new();
    if !spec.primary_key.is_empty() {
        props.insert(
            sluice_lake::PRIMARY_KEY_PROPERTY.to_string(),
            spec.primary_key.join(","),
        );
    }
    Ok(LakeTable::create(
        &project.lake,
        &TablePath::changes(&spec.source, &spec.table),
        &change_schema(&data),
        props,
    )
    .await?)
}
