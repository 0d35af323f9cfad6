//! Units: data that arrives as separate files, each landed once per version in one lake
//! commit that carries its `file:<id>` position and the new `sluice.seq`. Rejects go to the
//! quarantine first, marked with the same position and version, so a crash between the two
//! commits neither loses nor doubles them.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use chrono::Utc;
use serde_json::json;
use tokio::sync::mpsc;

use sluice_core::change::data_schema;
use sluice_core::config::TableSpec;
use sluice_core::failpoint;
use sluice_lake::{LakeTable, TablePath, SEQ_APP_ID};
use sluice_sources::source::{OpenUnit, ReadEvent, SharedSource, Unit};
use sluice_sources::SourceError;

use super::positions::unit_id;
use super::table::{create_log, quarantine};
use super::{write_reads, ExtractReport};
use crate::image::Images;
use crate::progress::Progress;
use crate::{EngineError, Project};

/// The position version of files consumed before file versions were recorded.
const LEGACY_CONSUMED: i64 = 1;

/// Lands the units `source` holds that the table's change log has not taken in this version.
/// The units one run lands are the table's latest image (what `replace` loads).
pub(crate) async fn capture(
    project: &Project,
    source: &SharedSource,
    spec: &TableSpec,
    progress: bool,
) -> Result<ExtractReport, EngineError> {
    let path = TablePath::changes(&spec.source, &spec.table);
    let mut log = LakeTable::open(&project.lake, &path).await?;
    let listing = source.units().await?;
    let mut report = ExtractReport {
        waiting: listing.waiting,
        ..ExtractReport::default()
    };
    let mut pending: Vec<Unit> = Vec::new();
    for unit in listing.units {
        let landed = match &log {
            Some(t) => t
                .app_version(&unit_id(&unit.id))
                .await?
                .is_some_and(|v| v == unit.version || v == LEGACY_CONSUMED),
            None => false,
        };
        if !landed {
            pending.push(unit);
        }
    }
    if pending.is_empty() {
        // An image a crash left open (every unit of it landed): it is complete.
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

    // Units the new table's schema was inferred from: the union of their columns, so one of
    // them lacking a column is no drop.
    let mut inferred_from: Vec<String> = Vec::new();
    let mut log = match log.take() {
        Some(t) => t,
        None => {
            let data = match source.declared() {
                Some(s) => s,
                None => {
                    let inferred = source.infer(&pending).await?;
                    inferred_from = inferred.from;
                    inferred.schema
                }
            };
            create_log(project, spec, &data, None).await?
        }
    };
    let mut data = Arc::new(data_schema(log.schema()?.as_ref()));
    let mut seq = log.last_seq().await?;
    let mut images = Images::of(&log).await?;
    let ingested_at = Utc::now();
    let mut progress = Progress::new(progress, format!("{}.{} extract", spec.source, spec.table));
    let declared = source.declared().is_some();

    for unit in pending {
        let position = unit_id(&unit.id);
        let first_seq = seq + 1;
        let open = source.open_unit(&unit).await?;
        // Declared columns are a contract: values off it are quarantined, not evolved.
        if !declared {
            let drops = !inferred_from.contains(&unit.id);
            let changes = take_schema_changes(&open, &unit, &data, &mut log, drops).await?;
            if !changes.is_empty() {
                data = Arc::new(data_schema(log.schema()?.as_ref()));
                report.schema_changes.extend(changes);
            }
        }
        let mut writer = log.writer()?;
        let mut rejects = Vec::new();
        let (tx, mut rx) = mpsc::channel::<ReadEvent>(4);
        let reader = {
            let (open, data): (Arc<dyn OpenUnit>, SchemaRef) = (open.clone(), data.clone());
            tokio::task::spawn_blocking(move || {
                open.read(&data, &mut |ev| {
                    tx.blocking_send(ev)
                        .map_err(|_| SourceError::Sink("lake writer stopped".into()))
                })
            })
        };
        let mut rows = 0u64;
        let mut write_error = None;
        let modified = unit.modified;
        while let Some(ev) = rx.recv().await {
            match ev {
                ReadEvent::Rows(batch) => {
                    let at = (modified.or(Some(ingested_at)), ingested_at);
                    match write_reads(&mut writer, &batch, &mut seq, at, &unit.id).await {
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
                ReadEvent::Reject(r) => rejects.push(r),
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
        // The version that was read: a unit that changed while being read is still being
        // written: nothing of it is committed, and the next sync reads it whole.
        let Some(version) = open.version_read().await? else {
            tracing::warn!(source = %spec.source, table = %spec.table, file = %unit.id, "the file changed while it was read (still being written?): taken next sync");
            seq = first_seq - 1;
            report.waiting += 1;
            continue;
        };
        let n_rejects = rejects.len();
        report.rejects += quarantine(&project.lake, spec, &position, version, rejects).await?;
        let mut meta = serde_json::Map::new();
        meta.insert("sluice".into(), json!({ "source": spec.source, "table": spec.table, "file": unit.id, "rows": rows, "rejects": n_rejects }));
        let mut positions = vec![(position, version), (SEQ_APP_ID.to_string(), seq)];
        if rows > 0 {
            positions.extend(images.opening(first_seq));
        }
        let version = writer.commit(&mut log, positions, meta).await?;
        failpoint::hit(failpoint::AFTER_LAKE_COMMIT);
        report.files += 1;
        report.rows += rows;
        report.lake_version = version.or(report.lake_version);
        tracing::info!(source = %spec.source, table = %spec.table, file = %unit.id, rows, rejects = n_rejects, version = ?version, "file landed");
    }
    // The units this run found new are the table's latest image (what `replace` loads). A
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

/// Holds a unit's columns against the lake table's (`table`) and commits what differs as a
/// schema change before the unit's data (new columns, variant columns for off-type values,
/// drops when `drops` and the unit lists all its columns). Returns the changes as text for
/// the report. Crash-safe: the data commit that follows finds nothing left to change.
async fn take_schema_changes(
    open: &Arc<dyn OpenUnit>,
    unit: &Unit,
    table: &SchemaRef,
    log: &mut LakeTable,
    drops: bool,
) -> Result<Vec<String>, EngineError> {
    let incoming = {
        let (open, table) = (open.clone(), table.clone());
        tokio::task::spawn_blocking(move || open.incoming(&table))
            .await
            .map_err(|e| EngineError::Internal(format!("schema sampling task: {e}")))??
    };
    let history = log.schema_history()?;
    let r = sluice_core::schema::reconcile(
        table,
        &history.dropped(),
        &incoming.schema,
        incoming.complete && drops,
    );
    if r.changes.is_empty() {
        return Ok(Vec::new());
    }
    let texts: Vec<String> = r.changes.iter().map(|c| c.to_string()).collect();
    for t in &texts {
        tracing::warn!(table = %log.path(), file = %unit.id, change = %t, "schema change taken into the lake");
    }
    log.evolve(&r.add, r.changes).await?;
    Ok(texts)
}
