//! `sluice lake compact SOURCE.TABLE`: the lake's small data files rewritten into files of
//! the lake's target size (`[lake] file_mb`), positions and history untouched.

use serde::Serialize;

use sluice_lake::{Compacted, LakeTable, TablePath};

use crate::schema_cmd::{log_of, spec_of};
use crate::{EngineError, Project};

#[derive(Debug, Serialize)]
pub struct CompactReport {
    pub table: String,
    /// Data files of the table before and after.
    pub files_before: usize,
    pub files_after: usize,
    pub rows: u64,
    #[serde(flatten)]
    pub compacted: Compacted,
}

/// Compacts the change log of `name` (`SOURCE.TABLE`), then its quarantine.
pub async fn compact(project: &Project, name: &str) -> Result<CompactReport, EngineError> {
    let spec = spec_of(project, name).await?;
    let mut log = log_of(project, &spec).await?;
    let files_before = log.data_files(i64::MIN, i64::MAX)?.len();
    let rows = log.row_count()?;
    let compacted = log.compact().await?;
    let files_after = log.data_files(i64::MIN, i64::MAX)?.len();
    let quarantine = TablePath::quarantine(&spec.source, &spec.table);
    if let Some(mut q) = LakeTable::open(&project.lake, &quarantine).await? {
        q.compact().await?;
    }
    tracing::info!(table = %name, files_before, files_after, version = ?compacted.version, "lake table compacted");
    Ok(CompactReport {
        table: name.to_string(),
        files_before,
        files_after,
        rows,
        compacted,
    })
}

pub fn render(r: &CompactReport) -> String {
    match r.compacted.version {
        Some(v) => format!(
            "{}: {} data files rewritten into {} ({} files now, {} rows; lake version {v})\n",
            r.table, r.compacted.files_removed, r.compacted.files_added, r.files_after, r.rows
        ),
        None => format!(
            "{}: nothing to compact ({} data files, {} rows)\n",
            r.table, r.files_after, r.rows
        ),
    }
}
