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
use sluice_core::reject::Reject;
use sluice_core::retry::ErrorKind;
use sluice_lake::{LakeTable, Quarantine, TablePath, SEQ_APP_ID};
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
    let log = match log.take() {
        Some(mut t) => {
            t.keep_change_column_stats().await?;
            t
        }
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
    let mut landing = Landing {
        project,
        spec,
        data: Arc::new(data_schema(log.schema()?.as_ref())),
        seq: log.last_seq().await?,
        images: Images::of(&log).await?,
        log,
        ingested_at: Utc::now(),
        progress: Progress::new(progress, format!("{}.{} extract", spec.source, spec.table)),
        declared: source.declared().is_some(),
        inferred_from,
    };
    for unit in pending {
        let first_seq = landing.seq + 1;
        match landing.land(source, &unit, &mut report).await {
            Ok(true) => {}
            Ok(false) => {
                landing.seq = first_seq - 1;
                report.waiting += 1;
            }
            // A file that cannot be read (corrupt, truncated, columns off its declaration)
            // must not block the ones after it: it is quarantined whole and counted, and
            // lands again only as a new version.
            Err(EngineError::Source(e)) if e.kind() == ErrorKind::Fatal => {
                landing.seq = first_seq - 1;
                landing
                    .reject_whole(&unit, &e.to_string(), &mut report)
                    .await?;
            }
            Err(e) => return Err(e),
        }
    }
    let Landing {
        mut log,
        mut images,
        seq,
        ..
    } = landing;
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

/// The table a run lands units into, and where it stands.
struct Landing<'a> {
    project: &'a Project,
    spec: &'a TableSpec,
    log: LakeTable,
    /// The change log's source columns.
    data: SchemaRef,
    /// The last `_sluice_seq` written.
    seq: i64,
    images: Images,
    ingested_at: chrono::DateTime<Utc>,
    progress: Progress,
    /// Declared columns are a contract: values off it are quarantined, not evolved.
    declared: bool,
    /// Units the new table's schema was inferred from: the union of their columns, so one of
    /// them lacking a column is no drop.
    inferred_from: Vec<String>,
}

impl Landing<'_> {
    /// Lands one unit in one commit with its position; false when it changed while being
    /// read (still being written: nothing of it counts).
    async fn land(
        &mut self,
        source: &SharedSource,
        unit: &Unit,
        report: &mut ExtractReport,
    ) -> Result<bool, EngineError> {
        let (project, spec) = (self.project, self.spec);
        let position = unit_id(&unit.id);
        let first_seq = self.seq + 1;
        let open = source.open_unit(unit).await?;
        if !self.declared {
            let drops = !self.inferred_from.contains(&unit.id);
            let changes =
                take_schema_changes(&open, unit, &self.data, &mut self.log, drops).await?;
            if !changes.is_empty() {
                self.data = Arc::new(data_schema(self.log.schema()?.as_ref()));
                report.schema_changes.extend(changes);
            }
        }
        let mut writer = self.log.writer()?;
        let mut rejects = Vec::new();
        let (tx, mut rx) = mpsc::channel::<ReadEvent>(4);
        let reader = {
            let (open, data): (Arc<dyn OpenUnit>, SchemaRef) = (open.clone(), self.data.clone());
            tokio::task::spawn_blocking(move || {
                open.read(&data, &mut |ev| {
                    tx.blocking_send(ev)
                        .map_err(|_| SourceError::Sink("lake writer stopped".into()))
                })
            })
        };
        let mut rows = 0u64;
        let mut write_error = None;
        let at = (unit.modified.or(Some(self.ingested_at)), self.ingested_at);
        while let Some(ev) = rx.recv().await {
            match ev {
                ReadEvent::Rows(batch) => {
                    match write_reads(&mut writer, &batch, &mut self.seq, at, &unit.id).await {
                        Ok(n) => {
                            rows += n;
                            self.progress.add(n);
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
        // written, and the next sync reads it whole.
        let Some(version) = open.version_read().await? else {
            tracing::warn!(source = %spec.source, table = %spec.table, file = %unit.id, "the file changed while it was read (still being written?): taken next sync");
            return Ok(false);
        };
        let n_rejects = rejects.len();
        report.rejects += quarantine(&project.lake, spec, &position, version, rejects).await?;
        let mut meta = serde_json::Map::new();
        meta.insert("sluice".into(), json!({ "source": spec.source, "table": spec.table, "file": unit.id, "rows": rows, "rejects": n_rejects }));
        let mut positions = vec![(position, version), (SEQ_APP_ID.to_string(), self.seq)];
        if rows > 0 {
            positions.extend(self.images.opening(first_seq));
        }
        let version = writer.commit(&mut self.log, positions, meta).await?;
        failpoint::hit(failpoint::AFTER_LAKE_COMMIT);
        report.files += 1;
        report.rows += rows;
        report.lake_version = version.or(report.lake_version);
        crate::metrics::landed(
            &spec.source,
            &spec.table,
            rows,
            self.log.committed_bytes(),
            version,
        );
        report.bytes += self.log.committed_bytes();
        tracing::info!(source = %spec.source, table = %spec.table, file = %unit.id, rows, rejects = n_rejects, version = ?version, "file landed");
        Ok(true)
    }

    /// Quarantines a unit that cannot be read as one reject naming why, and commits its
    /// position (as listed) so the next sync goes on past it.
    async fn reject_whole(
        &mut self,
        unit: &Unit,
        why: &str,
        report: &mut ExtractReport,
    ) -> Result<(), EngineError> {
        let (spec, position) = (self.spec, unit_id(&unit.id));
        tracing::error!(source = %spec.source, table = %spec.table, file = %unit.id, error = %why, "file unreadable: quarantined whole");
        let reject = Reject {
            file: unit.id.clone(),
            line: 0,
            column: None,
            raw: String::new(),
            reason: format!("the whole file is unreadable: {why}"),
        };
        Quarantine::new(&self.project.lake, &spec.source, &spec.table)
            .add(&position, unit.version, vec![reject], self.ingested_at)
            .await?;
        let mut meta = serde_json::Map::new();
        meta.insert("sluice".into(), json!({ "source": spec.source, "table": spec.table, "file": unit.id, "rows": 0, "unreadable": why }));
        let version = self
            .log
            .writer()?
            .commit(&mut self.log, vec![(position, unit.version)], meta)
            .await?;
        report.files += 1;
        report.rejects += 1;
        report.unreadable += 1;
        crate::metrics::quarantined(&spec.source, &spec.table, 1);
        report.lake_version = version.or(report.lake_version);
        Ok(())
    }
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
