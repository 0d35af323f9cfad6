//! `sluice status`: per table, what the lake holds and how far each warehouse table is behind.

use serde::Serialize;

use std::collections::HashMap;

use sluice_core::config::{Mode, TableSpec};
use sluice_core::names::quote_ident;
use sluice_lake::{LakeTable, TablePath};
use sluice_sources::source::{Retention, SharedSource};

use crate::{EngineError, Project};

#[derive(Debug, Serialize)]
pub struct TargetStatus {
    pub target: String,
    pub mode: &'static str,
    /// Lake version loaded (None: never loaded).
    pub loaded_version: Option<i64>,
    /// Lake commits not yet loaded.
    pub lag_versions: i64,
    pub halted: bool,
    /// Schema changes the gate has not yet applied to this table, with their policies (the
    /// diff `sluice schema accept` resolves when halted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_pending: Option<String>,
    /// Lake columns frozen out of this table.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
    /// Rows holding a value cut to fit the warehouse (Redshift); whole in the lake.
    pub truncated_rows: u64,
    /// A halting data-quality check stopped this table (`sluice checks accept`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub check_halted: bool,
    /// Each data-quality check's latest result on this table.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::quality::RecordedResult>,
    /// Rows the warehouse table holds, when asked for ([`StatusOptions::count_rows`]) and
    /// the table exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// What [`status_with`] looks at.
#[derive(Debug, Clone, Default)]
pub struct StatusOptions {
    /// Only this `SOURCE.TABLE`.
    pub only: Option<String>,
    /// Count each loaded warehouse table's rows (a query per table).
    pub count_rows: bool,
}

#[derive(Debug, Serialize)]
pub struct TableStatus {
    pub source: String,
    pub table: String,
    pub mode: String,
    pub key: Vec<String>,
    /// Lake version (None: nothing landed yet).
    pub lake_version: Option<i64>,
    /// Change rows in the lake.
    pub changes: i64,
    /// Records in quarantine.
    pub quarantined: u64,
    /// Stream tables: how far the committed position is from the oldest log the source
    /// keeps (`lost` when it is gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<PositionStatus>,
    pub targets: Vec<TargetStatus>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionStatus {
    Kept(Retention),
    /// The source no longer holds it: `sluice sync --resnapshot` (or on_position_lost).
    Lost,
    /// The source could not be asked.
    Unknown(String),
}

/// Rows in a loaded warehouse table.
fn row_count(
    wh: &mut dyn sluice_warehouses::Warehouse,
    t: &sluice_warehouses::Target,
) -> Result<u64, EngineError> {
    use arrow::array::{Array, AsArray};
    let sql = format!(
        "SELECT count(*) FROM {}.{}",
        quote_ident(&t.schema),
        quote_ident(&t.table)
    );
    let batches = wh.query(&sql)?;
    let column = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64).ok());
    match column {
        Some(c) if !c.is_null(0) => {
            Ok(c.as_primitive::<arrow::datatypes::Int64Type>().value(0) as u64)
        }
        _ => Err(EngineError::Internal(format!(
            "counting the rows of {}: no count came back",
            t.display()
        ))),
    }
}

/// Where a stream table's committed position stands at its source.
async fn position_status(
    project: &Project,
    sources: &mut HashMap<String, Option<SharedSource>>,
    spec: &TableSpec,
    log: &LakeTable,
) -> Option<PositionStatus> {
    if project.source(&spec.source).ok()?.mode() != Mode::Cdc {
        return None;
    }
    let source = sources
        .entry(spec.source.clone())
        .or_insert_with(|| crate::sources::build(project, &spec.source).ok())
        .clone()?;
    if !source.capabilities().snapshot {
        return None; // nothing is read again from its positions (events): none to lose
    }
    let at = match crate::capture::stream_position(log, source.as_ref()).await {
        Ok(Some(at)) => at,
        Ok(None) => return None,
        Err(e) => return Some(PositionStatus::Unknown(e.to_string())),
    };
    Some(match source.retention(&at).await {
        Ok(Some(r)) => PositionStatus::Kept(r),
        Ok(None) => PositionStatus::Lost,
        Err(e) => PositionStatus::Unknown(e.to_string()),
    })
}

/// How a transform's last run went: incremental or a full refresh (its position says).
async fn transform_mode(
    project: &Project,
    sources: &mut HashMap<String, Option<SharedSource>>,
    spec: &TableSpec,
    log: Option<&LakeTable>,
) -> String {
    let source = sources
        .entry(spec.source.clone())
        .or_insert_with(|| crate::sources::build(project, &spec.source).ok())
        .clone();
    let at = match (log, source) {
        (Some(log), Some(source)) => crate::capture::stream_position(log, source.as_ref())
            .await
            .ok()
            .flatten(),
        _ => None,
    };
    crate::transform::incremental::mode_of(at.as_ref().map_or(&[][..], |p| p.0.as_slice())).into()
}

pub async fn status(project: &Project) -> Result<Vec<TableStatus>, EngineError> {
    status_with(project, &StatusOptions::default()).await
}

pub async fn status_with(
    project: &Project,
    opts: &StatusOptions,
) -> Result<Vec<TableStatus>, EngineError> {
    let mut out = Vec::new();
    let mut warehouses = std::collections::HashMap::new();
    let mut sources = HashMap::new();
    let wanted = |spec: &TableSpec| {
        opts.only
            .as_ref()
            .is_none_or(|n| *n == format!("{}.{}", spec.source, spec.table))
    };
    for spec in project.known_tables().await?.into_iter().filter(wanted) {
        let src = project.source(&spec.source)?;
        let log = LakeTable::open(
            &project.lake,
            &TablePath::changes(&spec.source, &spec.table),
        )
        .await?;
        let (lake_version, changes) = match &log {
            Some(l) => (Some(l.version()), l.last_seq().await?),
            None => (None, 0),
        };
        let quarantined = match LakeTable::open(
            &project.lake,
            &TablePath::quarantine(&spec.source, &spec.table),
        )
        .await?
        {
            Some(q) => q.row_count()?,
            None => 0,
        };
        let position = match &log {
            Some(l) => position_status(project, &mut sources, &spec, l).await,
            None => None,
        };
        let mut targets = Vec::new();
        // One open per warehouse, not per table.
        let wh = match warehouses.entry(spec.warehouse.clone()) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(project.warehouse(&spec.warehouse)?)
            }
        };
        let lake = match &log {
            Some(l) => Some((l, crate::load::LakeSchema::of(project, &spec, l)?)),
            None => None,
        };
        // A table without checks has no results worth a lookup (one per table, on S3 too).
        let results = match spec.checks.is_empty() {
            true => Vec::new(),
            false => crate::quality::latest(&project.lake, &spec.source, &spec.table).await?,
        };
        for t in project.targets_in(&spec, wh.as_mut())? {
            let gate = match &lake {
                Some((l, schema)) => Some(
                    crate::load::decide_target(&spec, l, schema, wh.as_mut(), &t, false)
                        .await?
                        .0,
                ),
                None => None,
            };
            let done = wh.ledger(&t)?;
            let loaded_version = done.map(|d| d.lake_version);
            let lag_versions = match (lake_version, done) {
                (Some(v), Some(d)) if d.seq < changes => v - d.lake_version,
                (Some(v), None) if changes > 0 => v,
                _ => 0,
            };
            let truncated_rows = match done {
                Some(_) => wh.truncated_rows(&t)?,
                None => 0,
            };
            let rows = match (opts.count_rows, done) {
                (true, Some(_)) => Some(row_count(wh.as_mut(), &t)?),
                _ => None,
            };
            let checks: Vec<_> = results
                .iter()
                .filter(|r| r.target == t.display())
                .cloned()
                .collect();
            // Halted until a load passes the span it halted in.
            let check_halted = checks
                .iter()
                .any(|r| r.outcome == "halted" && done.is_none_or(|d| d.seq < r.upto_seq));
            targets.push(TargetStatus {
                target: t.display(),
                mode: t.mode.name(),
                loaded_version,
                lag_versions,
                halted: gate.as_ref().is_some_and(|g| g.halt.is_some()),
                schema_pending: gate
                    .as_ref()
                    .filter(|g| !g.pending.is_empty())
                    .map(|g| g.diff()),
                left_out: gate.map(|g| g.left_out).unwrap_or_default(),
                truncated_rows,
                check_halted,
                checks,
                rows,
            });
        }
        out.push(TableStatus {
            source: spec.source.clone(),
            table: spec.table.clone(),
            mode: match src.as_transforms() {
                Some(_) => transform_mode(project, &mut sources, &spec, log.as_ref()).await,
                None => format!("{:?}", src.mode()).to_lowercase(),
            },
            key: spec.primary_key.clone(),
            lake_version,
            changes,
            quarantined,
            position,
            targets,
        });
    }
    Ok(out)
}

pub fn render(tables: &[TableStatus]) -> String {
    let mut out = String::new();
    for t in tables {
        let key = if t.key.is_empty() {
            "no key".to_string()
        } else {
            format!("key ({})", t.key.join(", "))
        };
        out += &format!(
            "{}.{}  [{}; {}]  lake version {}, {} change(s), {} quarantined\n",
            t.source,
            t.table,
            t.mode,
            key,
            t.lake_version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            t.changes,
            t.quarantined
        );
        match &t.position {
            Some(PositionStatus::Kept(r)) => {
                out += &format!(
                    "  position: {} log file(s), {} bytes after the oldest the source keeps{}\n",
                    r.files_before,
                    r.bytes_before,
                    r.kept_for_secs
                        .map(|s| format!(" (kept {} h)", s / 3600))
                        .unwrap_or_default()
                )
            }
            Some(PositionStatus::Lost) => {
                out += &format!(
                    "  position: LOST (purged at the source): sluice sync --resnapshot {}.{}\n",
                    t.source, t.table
                )
            }
            Some(PositionStatus::Unknown(e)) => out += &format!("  position: unknown ({e})\n"),
            None => {}
        }
        for g in &t.targets {
            let cut = match g.truncated_rows {
                0 => String::new(),
                n => format!(", {n} row(s) hold values cut to fit (whole in the lake)"),
            };
            out += &format!(
                "  -> {} ({}): loaded version {}, {} version(s) behind{cut}{}\n",
                g.target,
                g.mode,
                g.loaded_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                g.lag_versions,
                if g.halted || g.check_halted {
                    ", HALTED"
                } else {
                    ""
                }
            );
            for c in g.checks.iter().filter(|c| c.outcome != "pass") {
                out += &format!(
                    "     check \"{}\" ({}): {} of {} failing in the changes through seq {}: {}\n",
                    c.check, c.rule, c.failed, c.checked, c.upto_seq, c.outcome
                );
            }
            if g.check_halted {
                out += &format!(
                    "     resume with: a corrected check, or sluice checks accept {}.{}\n",
                    t.source, t.table
                );
            }
            if let Some(p) = &g.schema_pending {
                out += &format!(
                    "     schema changes pending:\n       {}\n",
                    p.replace('\n', "\n       ")
                );
            }
            if g.halted {
                out += &format!(
                    "     resume with: sluice schema accept {}.{}\n",
                    t.source, t.table
                );
            }
            if !g.left_out.is_empty() {
                out += &format!("     frozen out: {}\n", g.left_out.join(", "));
            }
        }
    }
    out
}
