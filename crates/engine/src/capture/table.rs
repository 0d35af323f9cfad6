//! One table being captured: its change log, the definitions its rows are read with, and
//! what happened to it in this run.

use std::collections::HashMap;

use arrow::datatypes::Schema;
use chrono::Utc;

use sluice_core::change::{change_schema, data_schema};
use sluice_core::config::TableSpec;
use sluice_core::reject::Reject;
use sluice_core::retry::ErrorKind;
use sluice_lake::{Lake, LakeTable, Quarantine, TablePath, PRIMARY_KEY_PROPERTY};
use sluice_sources::source::{Source, SourceTable};

use super::ExtractReport;
use super::TableOutcome;
use crate::{EngineError, Project};

pub(crate) struct Captured {
    pub spec: TableSpec,
    /// The table as its rows are read now (its definitions: those in the lake).
    pub table: SourceTable,
    pub log: LakeTable,
    pub report: ExtractReport,
    pub error: Option<String>,
    pub error_kind: Option<ErrorKind>,
    /// Set when a schema change stopped the table's capture (exit 3).
    pub halted: Option<String>,
}

impl Captured {
    /// Records why the table failed in this run.
    pub fn fail(&mut self, message: impl Into<String>, kind: ErrorKind) {
        self.error = Some(message.into());
        self.error_kind = Some(kind);
    }

    /// Neither failed nor halted.
    pub fn live(&self) -> bool {
        self.error.is_none() && self.halted.is_none()
    }

    /// Counts a lake commit of `rows` change rows at `version` (None: nothing committed) in
    /// the report (lake version, bytes) and the metrics.
    pub fn committed(&mut self, rows: u64, version: Option<i64>) {
        let bytes = self.log.committed_bytes();
        self.report.lake_version = version.or(self.report.lake_version);
        self.report.bytes += bytes;
        crate::metrics::landed(&self.spec.source, &self.spec.table, rows, bytes, version);
    }

    /// Records rows the source could not convert in the table's quarantine, once per input
    /// unit `position` (a rerun after a crash finds them there), and counts them.
    pub async fn quarantine(
        &mut self,
        lake: &Lake,
        position: &str,
        rejects: Vec<Reject>,
    ) -> Result<(), EngineError> {
        let n = quarantine(lake, &self.spec, position, 1, rejects).await?;
        self.report.rejects += n;
        Ok(())
    }

    /// Takes the table's definitions `now` into its change log: new columns added, dropped
    /// ones kept (NULL from now on), a changed type's off-type values sent to a variant
    /// column, each change a catalog version, committed together with the definitions rows
    /// are read with from then on. Nothing is committed when they are the ones in use. A key
    /// column gone halts the table instead.
    pub async fn adopt(
        &mut self,
        source: &dyn Source,
        now: SourceTable,
        why: &str,
    ) -> Result<(), EngineError> {
        if now.definitions == self.table.definitions && now.schema == self.table.schema {
            return Ok(());
        }
        if let Some(why) = key_dropped(&self.spec, &now.schema) {
            self.halted = Some(why);
            return Ok(());
        }
        let lake = data_schema(self.log.schema()?.as_ref());
        let history = self.log.schema_history()?;
        let r = sluice_core::schema::reconcile(&lake, &history.dropped(), &now.schema, true);
        let texts: Vec<String> = r.changes.iter().map(|c| c.to_string()).collect();
        tracing::warn!(table = %self.log.path(), source_change = %why, lake_changes = ?texts, "schema change taken into the lake");
        let properties = match now.definitions.is_empty() {
            true => Vec::new(),
            false => vec![(
                source.definitions_property().to_string(),
                now.definitions.clone(),
            )],
        };
        self.log.evolve_with(&r.add, r.changes, &properties).await?;
        self.table = SourceTable {
            key: self.spec.primary_key.clone(),
            ..now
        };
        self.report.schema_changes.extend(texts);
        Ok(())
    }

    pub fn outcome(self) -> TableOutcome {
        TableOutcome {
            spec: self.spec,
            report: self.report,
            error: self.error,
            error_kind: self.error_kind,
            halted: self.halted,
            reads_units: false,
        }
    }
}

/// Records `rejects` of version `version` of input unit `position` in the table's quarantine
/// (skipped when recorded already); returns how many there were.
pub(crate) async fn quarantine(
    lake: &Lake,
    spec: &TableSpec,
    position: &str,
    version: i64,
    rejects: Vec<Reject>,
) -> Result<u64, EngineError> {
    quarantine_units(lake, spec, vec![(position.to_string(), version, rejects)]).await
}

/// Records the rejects of several input units, `(position, version, rejects)`, in one
/// quarantine commit (units recorded already are skipped); returns how many there were.
pub(crate) async fn quarantine_units(
    lake: &Lake,
    spec: &TableSpec,
    units: Vec<(String, i64, Vec<Reject>)>,
) -> Result<u64, EngineError> {
    let units: Vec<_> = units.into_iter().filter(|u| !u.2.is_empty()).collect();
    if units.is_empty() {
        return Ok(0);
    }
    let mut total = 0u64;
    let mut numbered = Vec::with_capacity(units.len());
    for (position, version, rejects) in units {
        let n = rejects.len() as u64;
        total += n;
        tracing::warn!(source = %spec.source, table = %spec.table, at = %position, rejects = n, "rows quarantined");
        // Rows of a database have no line: they are numbered within the unit.
        let rejects = rejects
            .into_iter()
            .enumerate()
            .map(|(i, r)| Reject {
                line: if r.line == 0 { i as u64 + 1 } else { r.line },
                ..r
            })
            .collect();
        numbered.push((position, version, rejects));
    }
    crate::metrics::quarantined(&spec.source, &spec.table, total);
    Quarantine::new(lake, &spec.source, &spec.table)
        .add_units(numbered, Utc::now())
        .await?;
    Ok(total)
}

/// Why a table cannot take columns `schema`: a key column the loads merge on is gone.
pub(crate) fn key_dropped(spec: &TableSpec, schema: &Schema) -> Option<String> {
    let k = spec
        .primary_key
        .iter()
        .find(|k| schema.index_of(k).is_err())?;
    Some(format!(
        "schema changed at the source: key column `{k}` of {}.{} is gone; set primary_key or \
         re-snapshot (sluice sync --resnapshot {}.{})",
        spec.source, spec.table, spec.source, spec.table
    ))
}

/// Creates a table's change log: the source columns `data` and the change columns, the key
/// and the definitions the source reads rows with as table properties.
pub(crate) async fn create_log(
    project: &Project,
    spec: &TableSpec,
    data: &Schema,
    definitions: Option<(&str, &str)>,
) -> Result<LakeTable, EngineError> {
    for k in &spec.primary_key {
        if data.index_of(k).is_err() {
            return Err(EngineError::Usage(format!(
                "{}.{}: primary_key column `{k}` is not a column of the table (columns: {})",
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
        props.insert(PRIMARY_KEY_PROPERTY.to_string(), spec.primary_key.join(","));
    }
    if let Some((k, v)) = definitions {
        props.insert(k.to_string(), v.to_string());
    }
    Ok(LakeTable::create(
        &project.lake,
        &TablePath::changes(&spec.source, &spec.table),
        &change_schema(data),
        props,
    )
    .await?)
}

/// Opens the table's change log, creating it from `table` on first sight. Returns it with
/// the definitions it holds (`table`'s own when just created).
pub(crate) async fn open_log(
    project: &Project,
    source: &dyn Source,
    spec: &TableSpec,
    table: &SourceTable,
) -> Result<(LakeTable, String), EngineError> {
    let path = TablePath::changes(&spec.source, &spec.table);
    let property = source.definitions_property();
    if let Some(mut log) = LakeTable::open(&project.lake, &path).await? {
        log.keep_change_column_stats().await?;
        let stored = match table.definitions.is_empty() {
            true => String::new(),
            false => log.property(property).ok_or_else(|| {
                EngineError::Internal(format!(
                    "{path}: the change log has no {property} property; was it written by another source kind?"
                ))
            })?,
        };
        return Ok((log, stored));
    }
    let definitions =
        (!table.definitions.is_empty()).then_some((property, table.definitions.as_str()));
    let log = create_log(project, spec, &table.schema, definitions).await?;
    Ok((log, table.definitions.clone()))
}
