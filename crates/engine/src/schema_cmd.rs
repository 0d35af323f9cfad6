//! `sluice schema show|diff|accept SOURCE.TABLE`: the schema catalog and the gate by hand.

use serde::Serialize;

use sluice_core::config::TableSpec;
use sluice_core::schema::{SchemaHistory, SchemaVersion};
use sluice_lake::{LakeTable, TablePath};

use crate::gate::Decision;
use crate::load::{gate_decisions, load_gated, LoadResult};
use crate::{EngineError, Project};

pub(crate) async fn spec_of(project: &Project, name: &str) -> Result<TableSpec, EngineError> {
    let (source, table) = name
        .split_once('.')
        .ok_or_else(|| EngineError::Usage(format!("`{name}`: name a table as SOURCE.TABLE")))?;
    let known = project.known_tables().await?;
    known
        .iter()
        .find(|s| s.source == source && s.table == table)
        .cloned()
        .ok_or_else(|| {
            EngineError::Usage(format!(
                "no table `{name}`; known tables: {}",
                known
                    .iter()
                    .map(|s| format!("{}.{}", s.source, s.table))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The table's change log; an error saying to sync first when there is none.
pub(crate) async fn log_of(project: &Project, spec: &TableSpec) -> Result<LakeTable, EngineError> {
    LakeTable::open(
        &project.lake,
        &TablePath::changes(&spec.source, &spec.table),
    )
    .await?
    .ok_or_else(|| {
        EngineError::Usage(format!(
            "{}.{} has nothing in the lake yet: run `sluice sync {}.{}` first",
            spec.source, spec.table, spec.source, spec.table
        ))
    })
}

async fn history_of(project: &Project, spec: &TableSpec) -> Result<SchemaHistory, EngineError> {
    Ok(log_of(project, spec).await?.schema_history()?)
}

#[derive(Debug, Serialize)]
pub struct SchemaShow {
    pub table: String,
    pub current: SchemaVersion,
    pub history: Vec<SchemaVersion>,
}

pub async fn show(project: &Project, name: &str) -> Result<SchemaShow, EngineError> {
    let spec = spec_of(project, name).await?;
    let history = history_of(project, &spec).await?;
    Ok(SchemaShow {
        table: name.to_string(),
        current: history.current().clone(),
        history: history.versions,
    })
}

pub fn render_show(s: &SchemaShow) -> String {
    let mut out = format!(
        "{} — schema version {} (lake version {})\n",
        s.table, s.current.version, s.current.lake_version
    );
    let width = s
        .current
        .columns
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for c in &s.current.columns {
        let mut notes = Vec::new();
        if let Some(of) = &c.variant_of {
            notes.push(format!("values of {of} that did not fit"));
        }
        if c.dropped {
            notes.push("dropped at the source; NULL from then on".to_string());
        }
        let notes = match notes.is_empty() {
            true => String::new(),
            false => format!("  ({})", notes.join("; ")),
        };
        out += &format!("  {:width$}  {}{notes}\n", c.name, c.data_type);
    }
    out += "history:\n";
    for v in &s.history {
        let at = if v.at.is_empty() { "-" } else { v.at.as_str() };
        out += &format!(
            "  v{}  {at}  lake version {}, from seq {}: {}\n",
            v.version,
            v.lake_version,
            v.from_seq,
            v.changes
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    out
}

#[derive(Debug, Serialize)]
pub struct TargetDiff {
    pub target: String,
    #[serde(flatten)]
    pub decision: Decision,
}

pub async fn diff(project: &Project, name: &str) -> Result<Vec<TargetDiff>, EngineError> {
    let spec = spec_of(project, name).await?;
    history_of(project, &spec).await?;
    Ok(gate_decisions(project, &spec)
        .await?
        .into_iter()
        .map(|(t, decision)| TargetDiff {
            target: t.display(),
            decision,
        })
        .collect())
}

pub fn render_diff(diffs: &[TargetDiff]) -> String {
    let mut out = String::new();
    for d in diffs {
        let g = &d.decision;
        if g.pending.is_empty() {
            out += &format!(
                "{}: in step with the lake (schema version {})\n",
                d.target, g.decided_version
            );
            continue;
        }
        out += &format!(
            "{}: {}\n",
            d.target,
            match &g.halt {
                Some(h) => format!(
                    "HALTED at schema version {} (changes from seq {} wait)",
                    h.version, h.at_seq
                ),
                None => "changes decided at the next load".to_string(),
            }
        );
        for p in &g.pending {
            out += &format!("  v{} [{}] {}\n", p.version, p.policy.name(), p.change);
        }
        if !g.left_out.is_empty() {
            out += &format!("  frozen out: {}\n", g.left_out.join(", "));
        }
    }
    out
}

/// Decides every pending change of the table as evolve, applies it to the warehouse and loads
/// the backlog.
pub async fn accept(project: &Project, name: &str) -> Result<Vec<LoadResult>, EngineError> {
    let spec = spec_of(project, name).await?;
    history_of(project, &spec).await?;
    load_gated(project, &spec, true).await
}
