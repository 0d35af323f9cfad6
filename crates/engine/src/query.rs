//! `sluice query`: SQL over the lake (DataFusion over the Delta tables) or inside a warehouse.
//!
//! Lake names, per source table:
//!
//! | name                        | what |
//! |-----------------------------|------|
//! | `source.table`              | current state: the latest change per key, deletes removed (keyed tables); the change log otherwise |
//! | `source.table__changes`     | the change log, every change with its `_sluice_*` columns |
//! | `source.table__quarantine`  | rejected records: file, line, column, raw, reason |
//! | `source.table__checks`      | data-quality results: one row per check per load |

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::prelude::SessionContext;
use datafusion::sql::TableReference;

use sluice_core::change::current_state_select;
use sluice_core::names::quote_ident as q;
pub use sluice_lake::AsOf;
use sluice_lake::{LakeTable, TablePath};

use crate::{EngineError, Project};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

/// Registers a lake table in a DataFusion session under `name`, at the snapshot `table` holds.
pub(crate) async fn register(
    ctx: &SessionContext,
    name: TableReference,
    table: &LakeTable,
) -> Result<(), EngineError> {
    table
        .delta()
        .update_datafusion_session(&ctx.state())
        .map_err(|source| sluice_lake::LakeError::Delta {
            table: table.path().to_string(),
            source,
        })?;
    let provider = table.delta().table_provider().await?;
    ctx.register_table(name, provider)?;
    Ok(())
}

/// A DataFusion session with sluice's functions: JSON paths and arrays over JSON text
/// (`json_get_str(col, 'a', 'b')`, `col->>'a'`, `unnest(json_get_array(col, 'items'))`).
pub fn new_session() -> Result<SessionContext, EngineError> {
    let mut ctx = SessionContext::new();
    datafusion_functions_json::register_all(&mut ctx)?;
    Ok(ctx)
}

/// A DataFusion session with every lake table of the project registered, as it is now or
/// as it was at `as_of` (tables that did not exist then are left out).
pub async fn lake_session(
    project: &Project,
    as_of: Option<&AsOf>,
) -> Result<SessionContext, EngineError> {
    let ctx = new_session()?;
    for spec in project.known_tables().await? {
        register_source_table(&ctx, &project.lake, &spec.source, &spec.table, as_of).await?;
    }
    Ok(ctx)
}

/// Opens a lake table, moved back to `as_of` when given (None: it did not exist then).
async fn open_as_of(
    lake: &sluice_lake::Lake,
    path: &TablePath,
    as_of: Option<&AsOf>,
) -> Result<Option<LakeTable>, EngineError> {
    let Some(mut t) = LakeTable::open(lake, path).await? else {
        return Ok(None);
    };
    match as_of {
        Some(at) if !t.travel(at).await? => Ok(None),
        _ => Ok(Some(t)),
    }
}

/// Registers `source.table` (its current state), `source.table__changes`,
/// `source.table__quarantine` and `source.table__checks` in `ctx`, each at the version the lake holds now (or held at
/// `as_of`). Returns the change log as registered (None: the table had landed nothing, and
/// only its quarantine, if any, is registered).
pub(crate) async fn register_source_table(
    ctx: &SessionContext,
    lake: &sluice_lake::Lake,
    source: &str,
    table: &str,
    as_of: Option<&AsOf>,
) -> Result<Option<LakeTable>, EngineError> {
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| EngineError::Internal("DataFusion default catalog missing".into()))?;
    if catalog.schema(source).is_none() {
        catalog.register_schema(source, Arc::new(MemorySchemaProvider::new()))?;
    }
    if let Some(qt) = open_as_of(lake, &TablePath::quarantine(source, table), as_of).await? {
        let name = format!("{table}__quarantine");
        register(ctx, TableReference::partial(source, name.as_str()), &qt).await?;
    }
    if let Some(ct) = open_as_of(lake, &TablePath::checks(source, table), as_of).await? {
        let name = format!("{table}__checks");
        register(ctx, TableReference::partial(source, name.as_str()), &ct).await?;
    }
    let Some(log) = open_as_of(lake, &TablePath::changes(source, table), as_of).await? else {
        return Ok(None);
    };
    let changes = format!("{table}__changes");
    register(ctx, TableReference::partial(source, changes.as_str()), &log).await?;
    let key = log.primary_key();
    if key.is_empty() {
        register(ctx, TableReference::partial(source, table), &log).await?;
        return Ok(Some(log));
    }
    let view = current_state_view(
        &TableReference::partial(source, table),
        &TableReference::partial(source, changes.as_str()),
        log.schema()?.as_ref(),
        &key,
    );
    ctx.sql(&view).await?.collect().await?;
    Ok(Some(log))
}

/// `CREATE VIEW name AS` the latest change per key of change log `changes`, deletes removed,
/// with the data columns and the change's source time and sequence number.
pub(crate) fn current_state_view(
    name: &TableReference,
    changes: &TableReference,
    schema: &arrow::datatypes::Schema,
    key: &[String],
) -> String {
    format!(
        "CREATE VIEW {} AS {}",
        quoted_reference(name),
        current_state_select(&quoted_reference(changes), schema, key)
    )
}

/// The tables `sql` reads, as written (CTE names excluded).
pub(crate) fn table_references(
    sql: &str,
) -> Result<Vec<TableReference>, datafusion::error::DataFusionError> {
    let state = SessionContext::new().state();
    let statement = state.sql_to_statement(sql, &datafusion::config::Dialect::Generic)?;
    state.resolve_table_references(&statement)
}

/// A table reference with each part quoted for SQL.
pub(crate) fn quoted_reference(r: &TableReference) -> String {
    match r {
        TableReference::Bare { table } => q(table),
        TableReference::Partial { schema, table } => format!("{}.{}", q(schema), q(table)),
        TableReference::Full {
            catalog,
            schema,
            table,
        } => format!("{}.{}.{}", q(catalog), q(schema), q(table)),
    }
}

/// The values of `column` in the change log of `source.table` ingested since `since`, as
/// text (an events source's ids landed lately). None landed: none.
pub async fn recent_values(
    lake: &sluice_lake::Lake,
    source: &str,
    table: &str,
    column: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<String>, EngineError> {
    let Some(log) = LakeTable::open(lake, &TablePath::changes(source, table)).await? else {
        return Ok(Vec::new());
    };
    if log.schema()?.index_of(column).is_err() {
        return Ok(Vec::new());
    }
    let ctx = new_session()?;
    register(&ctx, TableReference::bare("log"), &log).await?;
    let sql = format!(
        "SELECT CAST({c} AS VARCHAR) FROM log WHERE {c} IS NOT NULL AND {at} >= to_timestamp_micros({since})",
        c = q(column),
        at = q(sluice_core::change::INGESTED_AT),
        since = since.timestamp_micros(),
    );
    let mut out = Vec::new();
    for batch in ctx.sql(&sql).await?.collect().await? {
        let col = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)
            .map_err(|e| EngineError::Internal(format!("ids of {source}.{table}: {e}")))?;
        let values = col
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .ok_or_else(|| EngineError::Internal("ids: not text".into()))?;
        out.extend(values.iter().flatten().map(String::from));
    }
    Ok(out)
}

/// Runs a query over the lake (as it was at `as_of`, when given); at least one batch, empty
/// when no row matched. Read-only: DDL (CREATE
/// EXTERNAL TABLE reads any file), DML (COPY TO writes one) and SET are refused, so the API
/// may offer it.
pub async fn query_lake(
    project: &Project,
    sql: &str,
    as_of: Option<&AsOf>,
) -> Result<Vec<RecordBatch>, EngineError> {
    let ctx = lake_session(project, as_of).await?;
    // Unparsable SQL is left for DataFusion's own message below.
    if let Ok(references) = table_references(sql) {
        if as_of.is_some() {
            if let Some(r) = references.iter().find(|r| {
                r.catalog()
                    .is_some_and(|c| project.config.warehouses.contains_key(c))
            }) {
                return Err(EngineError::Usage(format!(
                    "--as-of reads the lake's history; warehouse table {r} has none"
                )));
            }
        }
        crate::warehouse_table::register_referenced(&ctx, project, &references).await?;
    }
    let read_only = datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let frame = ctx.sql_with_options(sql, read_only).await?;
    let schema = frame.schema().inner().clone();
    let mut batches = frame.collect().await?;
    if batches.is_empty() {
        // At least one batch, so a result without rows still has its columns (a CSV header,
        // a Parquet file's schema).
        batches.push(RecordBatch::new_empty(schema));
    }
    Ok(batches)
}

pub fn query_warehouse(
    project: &Project,
    warehouse: &str,
    sql: &str,
) -> Result<Vec<RecordBatch>, EngineError> {
    Ok(project.warehouse(warehouse)?.query(sql)?)
}

/// Renders query results.
pub fn render(batches: &[RecordBatch], format: OutputFormat) -> Result<String, EngineError> {
    let err =
        |e: arrow::error::ArrowError| EngineError::Internal(format!("rendering results: {e}"));
    match format {
        OutputFormat::Table => Ok(arrow::util::pretty::pretty_format_batches(batches)
            .map_err(err)?
            .to_string()),
        OutputFormat::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf);
                for b in batches {
                    w.write(b).map_err(err)?;
                }
            }
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        OutputFormat::Json => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::json::ArrayWriter::new(&mut buf);
                for b in batches {
                    w.write(b).map_err(err)?;
                }
                w.finish().map_err(err)?;
            }
            if buf.is_empty() {
                buf.extend_from_slice(b"[]");
            }
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
    }
}
