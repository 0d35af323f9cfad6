//! `sluice sync`: for each selected table, extract what is new into the lake, then load what
//! the warehouse has not seen. A table's failure is reported and the others go on.

use serde::Serialize;

use sluice_core::config::SourceKind;

use crate::extract::{extract, ExtractReport};
use crate::load::{load, LoadResult};
use crate::{EngineError, Project};

#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// Progress lines on a terminal.
    pub progress: bool,
    /// Load the warehouse after landing (false: lake only).
    pub load: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            progress: false,
            load: true,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TableSync {
    pub source: String,
    pub table: String,
    pub extract: ExtractReport,
    pub loads: Vec<LoadResult>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SyncReport {
    pub tables: Vec<TableSync>,
}

impl SyncReport {
    /// 0 when every table synced, 1 when one failed (DESIGN.md exit codes).
    pub fn exit_code(&self) -> i32 {
        if self.tables.iter().any(|t| t.error.is_some()) {
            1
        } else {
            0
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for t in &self.tables {
            let e = &t.extract;
            out += &format!(
                "{}.{}: {} new file(s), {} row(s) landed, {} rejected{}\n",
                t.source,
                t.table,
                e.files,
                e.rows,
                e.rejects,
                e.lake_version
                    .map(|v| format!(" (lake version {v})"))
                    .unwrap_or_default()
            );
            if e.rejects > 0 {
                out += &format!(
                    "  quarantined: sluice query \"SELECT * FROM {}.{}__quarantine\"\n",
                    t.source, t.table
                );
            }
            for l in &t.loads {
                if l.up_to_date {
                    out += &format!("  {} ({}): up to date\n", l.target, l.mode);
                } else {
                    out += &format!(
                        "  {} ({}): {} change(s) loaded, {} row(s) now\n",
                        l.target, l.mode, l.changes, l.rows_after
                    );
                }
            }
            if let Some(err) = &t.error {
                out += &format!("  FAILED: {err}\n");
            }
        }
        out
    }
}

pub async fn sync(
    project: &Project,
    selectors: &[String],
    opts: SyncOptions,
) -> Result<SyncReport, EngineError> {
    let mut tables = Vec::new();
    for spec in project.select(selectors)? {
        let src = project.source(&spec.source)?;
        let mut ts = TableSync {
            source: spec.source.clone(),
            table: spec.table.clone(),
            extract: ExtractReport::default(),
            loads: Vec::new(),
            error: None,
        };
        let extracted = match src.kind {
            SourceKind::Files => extract(project, &spec, src, opts.progress).await,
            other => Err(EngineError::Usage(format!(
                "source kind {other:?} is not available in this build"
            ))),
        };
        match extracted {
            Ok(r) => ts.extract = r,
            Err(e) => ts.error = Some(e.to_string()),
        }
        // Load even after an extract failure: what the lake already holds is still owed.
        if !opts.load {
            tables.push(ts);
            continue;
        }
        match load(project, &spec).await {
            Ok(l) => ts.loads = l,
            Err(e) => {
                let msg = e.to_string();
                ts.error = Some(match ts.error.take() {
                    Some(prev) => format!("{prev}; load: {msg}"),
                    None => msg,
                });
            }
        }
        if let Some(err) = &ts.error {
            tracing::error!(source = %spec.source, table = %spec.table, error = %err, "sync failed");
        }
        tables.push(ts);
    }
    Ok(SyncReport { tables })
}
