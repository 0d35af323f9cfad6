//! `sluice expose`: the lake's tables as views in a warehouse (or Athena's catalog) that read
//! the lake's own files, nothing copied. The statements come from the warehouse
//! ([`sluice_warehouses::expose`]); this module gathers each table's files at one version and
//! writes the symlink manifests engines that read through a catalog need.

use object_store::ObjectStoreExt;
use serde::Serialize;

use sluice_lake::{LakeTable, TablePath};
use sluice_warehouses::{Exposure, LakeView};

use crate::{EngineError, Project};

/// The schema prefix views go under unless told otherwise: `lake_shop.orders`.
pub const DEFAULT_PREFIX: &str = "lake_";

/// Where the views go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExposeTarget {
    /// A warehouse of the config (DuckDB or Redshift).
    Warehouse(String),
    /// Athena: manifests written, DDL printed to run there (no connection).
    Athena,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExposedTable {
    pub table: String,
    pub version: i64,
    pub files: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExposeReport {
    pub target: String,
    /// False with `--print`: nothing was written or run.
    pub applied: bool,
    pub tables: Vec<ExposedTable>,
    /// Tables left out, each with why.
    pub skipped: Vec<String>,
    pub manifests_written: usize,
    pub statements: Vec<String>,
}

/// Every lake table of the project at the version the lake holds now.
pub async fn lake_views(project: &Project) -> Result<Vec<(LakeView, LakeTable)>, EngineError> {
    let mut views = Vec::new();
    for spec in project.known_tables().await? {
        let path = TablePath::changes(&spec.source, &spec.table);
        let Some(log) = LakeTable::open(&project.lake, &path).await? else {
            continue;
        };
        let files = log
            .data_files(i64::MIN, i64::MAX)?
            .into_iter()
            .map(|f| f.path)
            .collect();
        let view = LakeView {
            source: spec.source.clone(),
            table: spec.table.clone(),
            version: log.version(),
            schema: log.schema()?,
            key: log.primary_key(),
            partition_columns: log.partition_columns()?,
            table_url: log.url().clone(),
            files,
        };
        views.push((view, log));
    }
    Ok(views)
}

/// Exposes every lake table in `target` under schemas `{prefix}{source}`. With `print_only`
/// the statements are returned and nothing is written or run.
pub async fn expose(
    project: &Project,
    target: &ExposeTarget,
    prefix: &str,
    print_only: bool,
) -> Result<ExposeReport, EngineError> {
    let found = lake_views(project).await?;
    let views: Vec<LakeView> = found.iter().map(|(v, _)| v.clone()).collect();
    let exposure = exposure_for(project, target, &views, prefix)?;
    let mut manifests_written = 0;
    if !print_only {
        if exposure.needs_manifests {
            for (view, log) in &found {
                manifests_written += write_manifests(view, log).await?;
            }
        }
        if let ExposeTarget::Warehouse(name) = target {
            project.warehouse(name)?.expose(&exposure)?;
        }
    }
    Ok(ExposeReport {
        target: match target {
            ExposeTarget::Warehouse(name) => name.clone(),
            ExposeTarget::Athena => "athena".into(),
        },
        applied: !print_only,
        tables: views
            .iter()
            .map(|v| ExposedTable {
                table: format!("{}.{}", v.source, v.table),
                version: v.version,
                files: v.files.len(),
            })
            .filter(|t| !exposure.skipped.iter().any(|(name, _)| *name == t.table))
            .collect(),
        skipped: exposure
            .skipped
            .iter()
            .map(|(table, why)| format!("{table}: {why}"))
            .collect(),
        manifests_written,
        statements: exposure.statements.clone(),
    })
}

/// The statements for `target`, from the config alone (nothing connects).
fn exposure_for(
    project: &Project,
    target: &ExposeTarget,
    views: &[LakeView],
    prefix: &str,
) -> Result<Exposure, EngineError> {
    use sluice_core::config::WarehouseConfig;
    use sluice_warehouses::expose;
    let name = match target {
        ExposeTarget::Athena => return Ok(expose::athena(views, prefix)?),
        ExposeTarget::Warehouse(name) => name,
    };
    Ok(match project.config.warehouses.get(name) {
        Some(WarehouseConfig::Duckdb { .. }) => expose::duckdb(views, prefix)?,
        Some(WarehouseConfig::Redshift { iam_role, .. }) => {
            expose::redshift(views, prefix, iam_role)?
        }
        Some(WarehouseConfig::Postgres { .. }) => {
            return Err(EngineError::Usage(format!(
                "warehouse `{name}` is PostgreSQL, which cannot read the lake's Parquet files; \
                 load the tables into it with `sluice sync` instead"
            )))
        }
        None => return Err(EngineError::Usage(format!("no warehouse named `{name}`"))),
    })
}

/// Writes the symlink manifests beside the table's files: the URL of every data file of the
/// view's version, one per line, per partition folder (what Spectrum and Athena read instead
/// of listing the folder, which also holds files no commit took).
async fn write_manifests(view: &LakeView, log: &LakeTable) -> Result<usize, EngineError> {
    let manifests = view.manifests()?;
    let store = log.store();
    for (relative, text) in &manifests {
        let path = object_store::path::Path::from(relative.as_str());
        store
            .put(
                &path,
                object_store::PutPayload::from(text.clone().into_bytes()),
            )
            .await
            .map_err(|e| {
                EngineError::Internal(format!(
                    "lake table {}.{}: writing {relative}: {e}",
                    view.source, view.table
                ))
            })?;
    }
    Ok(manifests.len())
}

/// The report as text: per table its version and files, then what was left out; with
/// `print_only` (or for Athena) the statements to run.
pub fn render(r: &ExposeReport, with_statements: bool) -> String {
    let mut out = String::new();
    if with_statements {
        for s in &r.statements {
            out.push_str(s);
            out.push_str(";\n");
        }
        out.push('\n');
    }
    let verb = if r.applied { "exposed" } else { "would expose" };
    for t in &r.tables {
        out.push_str(&format!(
            "{verb} {} in {} at lake version {} ({} file(s))\n",
            t.table, r.target, t.version, t.files
        ));
    }
    for s in &r.skipped {
        out.push_str(&format!("left out {s}\n"));
    }
    if r.manifests_written > 0 {
        out.push_str(&format!(
            "{} symlink manifest(s) written\n",
            r.manifests_written
        ));
    }
    if r.tables.is_empty() && r.skipped.is_empty() {
        out.push_str("no lake tables yet: run `sluice sync` first\n");
    }
    out
}
