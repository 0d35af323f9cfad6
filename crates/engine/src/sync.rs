//! `sluice sync`: for each selected table, extract what is new into the lake, then load what
//! the warehouse has not seen. A table's failure is reported and the others go on.

use serde::Serialize;

use tokio::sync::watch;

use futures::StreamExt;
use sluice_core::retry::ErrorKind;

use crate::capture::{capture, CaptureOptions, ExtractReport, TableOutcome};
use crate::load::{load, LoadResult};
use crate::{EngineError, Project};
use sluice_core::config::TRANSFORMS_SOURCE;

#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Progress lines on a terminal.
    pub progress: bool,
    /// Load the warehouse after landing (false: lake only).
    pub load: bool,
    /// Change streams stay open, loading as they commit, until this turns true.
    pub follow: Option<watch::Receiver<bool>>,
    /// `SOURCE.TABLE`s to snapshot again from scratch.
    pub resnapshot: Vec<String>,
    /// Following, how long sources without a change stream wait between passes.
    pub interval: std::time::Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            progress: false,
            load: true,
            follow: None,
            resnapshot: Vec::new(),
            interval: std::time::Duration::from_secs(30),
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
    /// Whether trying again may help: transient, fatal, position_lost or schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    /// A schema change stopped this table's capture (see `sluice status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halted: Option<String>,
    /// A files source (its report counts files).
    #[serde(skip)]
    pub reads_files: bool,
}

#[derive(Debug, Serialize)]
pub struct SyncReport {
    pub tables: Vec<TableSync>,
    /// Warehouses whose views over the lake (`expose = true`) this sync moved on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exposed: Vec<Exposed>,
}

/// One warehouse's views moved to the lake's current version after a sync.
#[derive(Debug, Serialize)]
pub struct Exposed {
    pub warehouse: String,
    pub tables: usize,
    pub error: Option<String>,
}

impl SyncReport {
    /// 0 when every table synced, 1 when one failed, 3 when one is halted by a schema
    /// change (DESIGN.md exit codes).
    pub fn exit_code(&self) -> i32 {
        if self.tables.iter().any(|t| t.error.is_some())
            || self.exposed.iter().any(|e| e.error.is_some())
        {
            1
        } else if self.tables.iter().any(|t| t.halted.is_some()) {
            3
        } else {
            0
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for t in &self.tables {
            let e = &t.extract;
            let files = if t.reads_files {
                format!("{} new file(s), ", e.files)
            } else {
                String::new()
            };
            out += &format!(
                "{}.{}: {files}{} row(s) landed, {} rejected{}\n",
                t.source,
                t.table,
                e.rows,
                e.rejects,
                e.lake_version
                    .map(|v| format!(" (lake version {v})"))
                    .unwrap_or_default()
            );
            if e.deleted > 0 {
                out += &format!(
                    "  {} row(s) gone from the source since the last snapshot: landed as deletes\n",
                    e.deleted
                );
            }
            if e.resnapshotted {
                out += "  its position was gone from the source: snapshotted again (on_position_lost = \"resnapshot\")\n";
            }
            if let Some(w) = &e.position_warning {
                out += &format!("  WARNING: {w}\n");
            }
            if e.unreadable > 0 {
                out += &format!(
                    "  {} file(s) unreadable: each quarantined whole with its reason, the others landed\n",
                    e.unreadable
                );
            }
            if e.waiting > 0 {
                out += &format!(
                    "  {} file(s) still being written: taken once they settle\n",
                    e.waiting
                );
            }
            for c in &e.schema_changes {
                out += &format!("  schema change in the lake: {c}\n");
            }
            if e.zero_dates > 0 {
                out += &format!(
                    "  {} zero date(s) (0000-00-00) landed as NULL\n",
                    e.zero_dates
                );
            }
            if let Some(h) = &t.halted {
                out += &format!("  HALTED: {}\n", h.replace('\n', "\n    "));
            }
            if e.rejects > 0 {
                out += &format!(
                    "  quarantined: sluice query \"SELECT * FROM {}.{}__quarantine\"\n",
                    t.source, t.table
                );
            }
            for l in &t.loads {
                if !l.left_out.is_empty() {
                    out += &format!(
                        "  {}: frozen, left out column(s) {} ({} loaded change(s) held values there; whole in the lake)\n",
                        l.target,
                        l.left_out.join(", "),
                        l.left_out_rows
                    );
                }
                for c in l.checks.iter().filter(|c| c.failed > 0) {
                    let did = match crate::quality::outcome(c) {
                        "accepted" => "accepted (sluice checks accept)",
                        "quarantined" => "held back: in the quarantine",
                        "halted" => "halted the table",
                        _ => "loaded anyway (warn)",
                    };
                    out += &format!("  {}: {} — {did}\n", l.target, c.summary());
                }
                if l.halted.is_some() && l.changes == 0 {
                    out += &format!("  {} ({}): halted, nothing loaded\n", l.target, l.mode);
                } else if l.up_to_date {
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
        for e in &self.exposed {
            match &e.error {
                Some(err) => out += &format!("views in {}: FAILED: {err}\n", e.warehouse),
                None => {
                    out += &format!(
                        "views in {}: {} table(s) at the lake's current version\n",
                        e.warehouse, e.tables
                    )
                }
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
    let selected = project.select_sources(selectors)?;
    // Transforms read what the other sources land: caught up, they run after them; following,
    // beside them (they follow the lake).
    let (transforms, sources): (Vec<_>, Vec<_>) = selected
        .into_iter()
        .partition(|(source, _)| source == TRANSFORMS_SOURCE);
    let mut tables = Vec::new();
    if opts.follow.is_some() {
        let all: Vec<_> = sources.into_iter().chain(transforms).collect();
        tables.extend(sync_sources(project, &all, &opts).await);
    } else {
        tables.extend(sync_sources(project, &sources, &opts).await);
        tables.extend(sync_sources(project, &transforms, &opts).await);
    }
    let landed = tables.iter().any(|t| t.extract.lake_version.is_some());
    let exposed = match opts.load && landed {
        true => expose_views(project).await,
        false => Vec::new(),
    };
    Ok(SyncReport { tables, exposed })
}

/// Moves the views of every warehouse with `expose = true` to the lake's current version.
async fn expose_views(project: &Project) -> Vec<Exposed> {
    use crate::expose::{expose, ExposeTarget, DEFAULT_PREFIX};
    let mut out = Vec::new();
    for (name, w) in &project.config.warehouses {
        if !w.exposes() {
            continue;
        }
        let target = ExposeTarget::Warehouse(name.clone());
        let result = expose(project, &target, DEFAULT_PREFIX, false).await;
        out.push(Exposed {
            warehouse: name.clone(),
            tables: result.as_ref().map_or(0, |r| r.tables.len()),
            error: result.err().map(|e| e.to_string()),
        });
    }
    out
}

/// Syncs `selected` side by side (a following stream must not hold up the others), a few at
/// a time; the report lists them in the order given.
async fn sync_sources(
    project: &Project,
    selected: &[crate::project::Selected],
    opts: &SyncOptions,
) -> Vec<TableSync> {
    let runs = selected.iter().map(|(source, only)| {
        let copts = CaptureOptions {
            progress: opts.progress,
            follow: opts.follow.clone(),
            load_while_following: opts.load,
            resnapshot: opts
                .resnapshot
                .iter()
                .filter_map(|s| s.strip_prefix(&format!("{source}.")).map(String::from))
                .collect(),
            interval: opts.interval,
        };
        async move {
            let mut tables = Vec::new();
            match capture(project, source, only.as_deref(), &copts).await {
                Ok(outcomes) => {
                    for o in outcomes {
                        tables.push(finish(project, o, opts).await);
                    }
                }
                Err(e) => tables.push(TableSync {
                    source: source.clone(),
                    table: only
                        .as_ref()
                        .map(|t| t.join(","))
                        .unwrap_or_else(|| "*".into()),
                    extract: ExtractReport::default(),
                    loads: Vec::new(),
                    error: Some(e.to_string()),
                    error_kind: Some(e.kind()),
                    halted: None,
                    reads_files: false,
                }),
            }
            tables
        }
    });
    let done: Vec<Vec<TableSync>> = futures::stream::iter(runs)
        .buffered(SOURCES_AT_ONCE)
        .collect()
        .await;
    done.into_iter().flatten().collect()
}

/// Sources captured at once. Each holds a few connections (a stream, snapshot readers); a
/// following source holds its place until stopped, so this bounds how many can follow.
const SOURCES_AT_ONCE: usize = 8;

/// Loads what the lake holds for a table (even after an extract failure: what landed is
/// still owed) and assembles its report.
async fn finish(project: &Project, outcome: TableOutcome, opts: &SyncOptions) -> TableSync {
    let TableOutcome {
        spec,
        report,
        error,
        error_kind,
        halted,
        reads_units,
    } = outcome;
    let mut ts = TableSync {
        source: spec.source.clone(),
        table: spec.table.clone(),
        extract: report,
        loads: Vec::new(),
        error,
        error_kind,
        halted,
        reads_files: reads_units,
    };
    if opts.load {
        match load(project, &spec).await {
            Ok(l) => {
                // A check's halt says how to resume; the gate's diff does not.
                let halts: Vec<String> = l
                    .iter()
                    .filter_map(|r| {
                        let head = match r.schema_halted {
                            true => format!(
                                "schema change waits for `sluice schema accept {}.{}`; ",
                                spec.source, spec.table
                            ),
                            false => String::new(),
                        };
                        r.halted
                            .as_ref()
                            .map(|h| format!("{head}{}:\n{h}", r.target))
                    })
                    .collect();
                if !halts.is_empty() && ts.halted.is_none() {
                    ts.halted = Some(halts.join("\n"));
                }
                ts.loads = l
            }
            Err(e) => {
                let msg = e.to_string();
                ts.error_kind = ts.error_kind.or(Some(e.kind()));
                ts.error = Some(match ts.error.take() {
                    Some(prev) => format!("{prev}; load: {msg}"),
                    None => msg,
                });
            }
        }
    }
    if let Some(err) = &ts.error {
        tracing::error!(source = %spec.source, table = %spec.table, error = %err, "sync failed");
    }
    ts
}
