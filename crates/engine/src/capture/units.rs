//! Units: data that arrives as separate files, each landed once per version in one lake
//! commit that carries its `file:<id>` position and the new `sluice.seq`. Rejects go to the
//! quarantine first, marked with the same position and version, so a crash between the two
//! commits neither loses nor doubles them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use chrono::Utc;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

use sluice_core::change::data_schema;
use sluice_core::config::TableSpec;
use sluice_core::failpoint;
use sluice_core::reject::Reject;
use sluice_core::retry::ErrorKind;
use sluice_lake::{LakeTable, LakeWriter, Quarantine, TablePath, SEQ_APP_ID};
use sluice_sources::source::{OpenUnit, ReadEvent, SharedSource, Unit};
use sluice_sources::SourceError;

use super::positions::unit_id;
use super::table::{create_log, quarantine_units};
use super::{write_reads, ExtractReport};
use crate::image::Images;
use crate::progress::Progress;
use crate::{EngineError, Project};

/// The position version of files consumed before file versions were recorded.
const LEGACY_CONSUMED: i64 = 1;

/// Bytes of source files landed in one lake commit, at most (the lake writer's memory is
/// bounded on its own: it writes data files out as its buffer fills).
const GROUP_BYTES: u64 = 1 << 30;
/// Units fetched ahead of the one being read (remote files download meanwhile).
const OPEN_AHEAD: usize = 8;

/// Lands the units `source` holds that the table's change log has not taken in this version,
/// many per lake commit. The units one run lands are the table's latest image (what `replace`
/// loads).
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
    // Every unit's position in one read of the log, however many units there are.
    let consumed = match &log {
        Some(t) => t.app_versions().await?,
        None => HashMap::new(),
    };
    let pending: Vec<Unit> = listing
        .units
        .into_iter()
        .filter(|u| {
            !consumed
                .get(&unit_id(&u.id))
                .is_some_and(|&v| v == u.version || v == LEGACY_CONSUMED)
        })
        .collect();
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
        group: Group::default(),
        widened: HashSet::new(),
    };
    let mut opened = futures::stream::iter(pending.into_iter().map(|unit| {
        let source = source.clone();
        async move {
            let open = source.open_unit(&unit).await;
            (unit, open)
        }
    }))
    .buffered(OPEN_AHEAD);
    // Units of an abandoned group, landed again before the ones after them.
    let mut again: VecDeque<(Unit, Arc<dyn OpenUnit>)> = VecDeque::new();
    loop {
        let (unit, open) = match again.pop_front() {
            Some(u) => u,
            None => match opened.next().await {
                None => break,
                Some((unit, Ok(open))) => (unit, open),
                Some((unit, Err(e))) if e.kind() == ErrorKind::Fatal => {
                    landing
                        .reject_whole(&unit, &e.to_string(), &mut report)
                        .await?;
                    continue;
                }
                Some((_, Err(e))) => return Err(e.into()),
            },
        };
        match landing.add(unit, open, &mut report).await? {
            Added::Landed => {
                if landing.group.is_full(source.units_per_commit()) {
                    landing.commit_group(&mut report).await?;
                }
            }
            // A file that changed while it was read is still being written: nothing of it
            // counts, and the next sync reads it whole. Its rows are in the group's data
            // files: the group is written again without it.
            Added::Changed(unit) => {
                tracing::warn!(source = %spec.source, table = %spec.table, file = %unit.id, "the file changed while it was read (still being written?): taken next sync");
                report.waiting += 1;
                landing.abandon_group(&mut again).await;
            }
            // Columns first seen past the sample were taken: read the group again with them.
            Added::Again(mut units) => {
                units.append(&mut again);
                again = units;
            }
            // A file that cannot be read (corrupt, truncated, columns off its declaration)
            // must not block the ones after it: it is quarantined whole and counted, and
            // lands again only as a new version.
            Added::Unreadable { unit, why, wrote } => {
                if wrote {
                    landing.abandon_group(&mut again).await;
                }
                landing.reject_whole(&unit, &why, &mut report).await?;
            }
        }
    }
    landing.commit_group(&mut report).await?;
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

/// What became of one unit added to the group.
enum Added {
    /// Read whole into the group.
    Landed,
    /// It changed while it was read.
    Changed(Unit),
    /// It cannot be read; `wrote`: some of its rows are in the group's data files.
    Unreadable {
        unit: Unit,
        why: String,
        wrote: bool,
    },
    /// It brought columns past the sample: the table took them, and these units (the group
    /// abandoned, then it) are read again.
    Again(VecDeque<(Unit, Arc<dyn OpenUnit>)>),
}

/// Units read into the open lake commit, not committed yet.
#[derive(Default)]
struct Group {
    writer: Option<LakeWriter>,
    /// The units, still open (fetched), so an abandoned group can be read again.
    members: Vec<(Unit, Arc<dyn OpenUnit>)>,
    /// Each unit's position and version, and its rejects.
    landed: Vec<(String, i64, Vec<Reject>)>,
    /// The `_sluice_seq` before the group's first row (the rows read since: `seq` past it).
    seq_before: i64,
    bytes: u64,
}

impl Group {
    fn is_full(&self, files: usize) -> bool {
        self.members.len() >= files || self.bytes >= GROUP_BYTES
    }
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
    group: Group,
    /// Units read again with columns first seen past the sample.
    widened: HashSet<String>,
}

impl Landing<'_> {
    /// Reads one unit into the group's lake commit, after taking the schema changes it brings
    /// (which commits the group first: its data files have the columns before the change).
    async fn add(
        &mut self,
        unit: Unit,
        open: Arc<dyn OpenUnit>,
        report: &mut ExtractReport,
    ) -> Result<Added, EngineError> {
        let unreadable = |unit: Unit, e: &SourceError, wrote: bool| Added::Unreadable {
            unit,
            why: e.to_string(),
            wrote,
        };
        if !self.declared {
            let drops = !self.inferred_from.contains(&unit.id);
            let reconciled = match schema_changes(&open, &self.data, &self.log, drops).await {
                Ok(r) => r,
                Err(EngineError::Source(e)) if e.kind() == ErrorKind::Fatal => {
                    return Ok(unreadable(unit, &e, false));
                }
                Err(e) => return Err(e),
            };
            if let Some(r) = reconciled {
                self.commit_group(report).await?;
                self.take_changes(r, &unit.id, report).await?;
            }
        }
        if self.group.writer.is_none() {
            self.group.writer = Some(self.log.writer()?);
            self.group.seq_before = self.seq;
        }
        let writer = self.group.writer.as_mut().expect("set above");
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
                    match write_reads(writer, &batch, &mut self.seq, at, &unit.id).await {
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
        let stats = match stats {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::Fatal => return Ok(unreadable(unit, &e, true)),
            Err(e) => return Err(e.into()),
        };
        debug_assert_eq!(stats.rows, rows);
        // Columns first seen past the sample (JSON keys): their rows were rejected. The
        // columns go through the schema gate like any other, and the group is read again
        // with them (once per unit: a column the change does not add stays rejected).
        if !stats.late_columns.is_empty() && !self.declared && self.widened.insert(unit.id.clone())
        {
            let r = sluice_core::schema::reconcile(
                &self.data,
                &self.log.schema_history()?.dropped(),
                &Schema::new(stats.late_columns),
                false,
            );
            if !r.changes.is_empty() {
                let mut members = VecDeque::new();
                self.abandon_group(&mut members).await;
                self.take_changes(r, &unit.id, report).await?;
                members.push_back((unit, open));
                return Ok(Added::Again(members));
            }
        }
        // The version that was read: a unit that changed while being read is still being
        // written, and the next sync reads it whole.
        let Some(version) = open.version_read().await? else {
            return Ok(Added::Changed(unit));
        };
        tracing::debug!(source = %self.spec.source, table = %self.spec.table, file = %unit.id, rows, rejects = rejects.len(), "file read");
        self.group.bytes += unit.bytes.unwrap_or(0);
        self.group
            .landed
            .push((unit_id(&unit.id), version, rejects));
        self.group.members.push((unit, open));
        Ok(Added::Landed)
    }

    /// Commits schema change `r`, which `unit` brought, to the lake table.
    async fn take_changes(
        &mut self,
        r: sluice_core::schema::Reconciled,
        unit: &str,
        report: &mut ExtractReport,
    ) -> Result<(), EngineError> {
        let texts: Vec<String> = r.changes.iter().map(|c| c.to_string()).collect();
        for t in &texts {
            tracing::warn!(table = %self.log.path(), file = %unit, change = %t, "schema change taken into the lake");
        }
        self.log.evolve(&r.add, r.changes).await?;
        self.data = Arc::new(data_schema(self.log.schema()?.as_ref()));
        report.schema_changes.extend(texts);
        Ok(())
    }

    /// Gives up the group's data files and puts its units first in `again`, to be read again.
    async fn abandon_group(&mut self, again: &mut VecDeque<(Unit, Arc<dyn OpenUnit>)>) {
        let group = std::mem::take(&mut self.group);
        if let Some(writer) = group.writer {
            writer.abandon(&self.log).await;
            self.seq = group.seq_before;
        }
        for member in group.members.into_iter().rev() {
            again.push_front(member);
        }
    }

    /// Commits the group: its rejects to the quarantine first, marked with each unit's
    /// position and version, then its rows with every unit's position and the new
    /// `sluice.seq`, in one lake commit.
    async fn commit_group(&mut self, report: &mut ExtractReport) -> Result<(), EngineError> {
        let group = std::mem::take(&mut self.group);
        let Some(writer) = group.writer else {
            return Ok(());
        };
        let rows = (self.seq - group.seq_before) as u64;
        let (project, spec) = (self.project, self.spec);
        let files = group.landed.len() as u64;
        let mut positions: Vec<(String, i64)> = group
            .landed
            .iter()
            .map(|(p, v, _)| (p.clone(), *v))
            .collect();
        let rejects = quarantine_units(&project.lake, spec, group.landed).await?;
        positions.push((SEQ_APP_ID.to_string(), self.seq));
        if rows > 0 {
            positions.extend(self.images.opening(group.seq_before + 1));
        }
        let first = group.members.first().map(|(u, _)| u.id.clone());
        let mut meta = serde_json::Map::new();
        meta.insert("sluice".into(), json!({ "source": spec.source, "table": spec.table, "files": files, "first_file": first, "rows": rows, "rejects": rejects }));
        let version = writer.commit(&mut self.log, positions, meta).await?;
        failpoint::hit(failpoint::AFTER_LAKE_COMMIT);
        report.files += files;
        report.rows += rows;
        report.rejects += rejects;
        report.lake_version = version.or(report.lake_version);
        crate::metrics::landed(
            &spec.source,
            &spec.table,
            rows,
            self.log.committed_bytes(),
            version,
        );
        report.bytes += self.log.committed_bytes();
        tracing::info!(source = %spec.source, table = %spec.table, files, rows = rows, rejects, version = ?version, "files landed");
        Ok(())
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

/// The schema change a unit's columns bring to the lake table's (`table`): new columns,
/// variant columns for off-type values, drops when `drops` and the unit lists all its columns
/// (None: no change). Crash-safe: the data commit that follows finds nothing left to change.
async fn schema_changes(
    open: &Arc<dyn OpenUnit>,
    table: &SchemaRef,
    log: &LakeTable,
    drops: bool,
) -> Result<Option<sluice_core::schema::Reconciled>, EngineError> {
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
    Ok((!r.changes.is_empty()).then_some(r))
}
