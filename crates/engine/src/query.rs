//! `sluice query`: SQL over the lake (DataFusion over the Delta tables) or inside a warehouse.
//!
//! Lake names, per source table:
//!
//! | name                        | what |
//! |-----------------------------|------|
//! | `source.table`              | current state: the latest change per key, deletes removed (keyed tables); the change log otherwise |
//! | `source.table__changes`     | the change log, every change with its `_sluice_*` columns |
//! | `source.table__quarantine`  | rejected records: file, line, column, raw, reason |

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::prelude::SessionContext;
use datafusion::sql::TableReference;

use sluice_core::change::{is_change_column, OP, SEQ, SOURCE_TS};
use sluice_core::names::quote_ident as q;
use sluice_lake::{LakeTable, TablePath, PRIMARY_KEY_PROPERTY};

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

/// A DataFusion session with every lake table of the project registered.
pub async fn lake_session(project: &Project) -> Result<SessionContext, EngineError> {
    let ctx = SessionContext::new();
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| EngineError::Internal("DataFusion default catalog missing".into()))?;
    for spec in project.known_tables().await? {
        if catalog.schema(&spec.source).is_none() {
            catalog.register_schema(&spec.source, Arc::new(MemorySchemaProvider::new()))?;
        }
        if let Some(qt) = LakeTable::open(
            &project.lake,
            &TablePath::quarantine(&spec.source, &spec.table),
        )
        .await?
        {
            let name = format!("{}__quarantine", spec.table);
            register(
                &ctx,
                TableReference::partial(spec.source.as_str(), name.as_str()),
                &qt,
            )
            .await?;
        }
        let Some(log) = LakeTable::open(
            &project.lake,
            &TablePath::changes(&spec.source, &spec.table),
        )
        .await?
        else {
            continue;
        };
        let changes = format!("{}__changes", spec.table);
        register(
            &ctx,
            TableReference::partial(spec.source.as_str(), changes.as_str()),
            &log,
        )
        .await?;
        let key: Vec<String> = log
            .property(PRIMARY_KEY_PROPERTY)
            .map(|k| k.split(',').map(String::from).collect())
            .unwrap_or_default();
        if key.is_empty() {
            register(
                &ctx,
                TableReference::partial(spec.source.as_str(), spec.table.as_str()),
                &log,
            )
            .await?;
            continue;
        }
        let schema = log.schema()?;
        let data: Vec<String> = schema
            .fields()
            .iter()
            .filter(|f| !is_change_column(f.name()))
            .map(|f| q(f.name()))
            .collect();
        let keys: Vec<String> = key.iter().map(|k| q(k)).collect();
        let view = format!(
            "CREATE VIEW {src}.{tbl} AS SELECT {cols}, {ts}, {seq} FROM (
               SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY {seq} DESC) AS __sluice_rn
               FROM {src}.{chg}) WHERE __sluice_rn = 1 AND {op} <> 'd'",
            src = q(&spec.source),
            tbl = q(&spec.table),
            chg = q(&changes),
            cols = data.join(", "),
            ts = q(SOURCE_TS),
            seq = q(SEQ),
            keys = keys.join(", "),
            op = q(OP),
        );
        ctx.sql(&view).await?.collect().await?;
    }
    Ok(ctx)
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
    let ctx = SessionContext::new();
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

/// Runs a query over the lake. Read-only: DDL (CREATE EXTERNAL TABLE reads any file), DML
/// (COPY TO writes one) and SET are refused, so the API may offer it.
pub async fn query_lake(project: &Project, sql: &str) -> Result<Vec<RecordBatch>, EngineError> {
    let ctx = lake_session(project).await?;
    let read_only = datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    Ok(ctx
        .sql_with_options(sql, read_only)
        .await?
        .collect()
        .await?)
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
