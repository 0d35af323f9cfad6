//! Warehouse tables in a lake query: `sluice query` reads `WAREHOUSE.schema.table` (a
//! three-part name whose first part names a configured DuckDB or PostgreSQL warehouse) beside
//! lake tables, so one statement joins them (seed 004's Spectrum join, the other way round).
//!
//! Each such table is a DataFusion table provider that, when the plan runs, sends the
//! warehouse one SELECT of the columns the query uses, with the filters it evaluates exactly
//! as DataFusion does (comparisons with constants, IN lists, IS NULL, combined with AND and
//! OR; text only by equality, since the warehouse's collation may order text otherwise; no
//! times with a zone) and the limit.
//! DataFusion applies every filter again, so a filter the warehouse skips costs rows sent,
//! never a wrong answer. What the warehouse returns is held in memory: filter it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, TableProvider};
use datafusion::catalog::{MemoryCatalogProvider, MemorySchemaProvider, Session};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::SessionContext;
use datafusion::sql::unparser::dialect::{DuckDBDialect, PostgreSqlDialect};
use datafusion::sql::unparser::Unparser;
use datafusion::sql::TableReference;

use futures::StreamExt;
use sluice_core::config::WarehouseConfig;
use sluice_core::names::{quote_ident as q, quote_literal};
use sluice_warehouses::Warehouse;

use crate::{EngineError, Project};

/// Which SQL the warehouse speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    DuckDb,
    Postgres,
}

/// A warehouse connection the scans of one query share (one statement at a time).
#[derive(Clone)]
struct Shared(Arc<Mutex<Box<dyn Warehouse>>>);

impl Shared {
    fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, sluice_warehouses::WarehouseError> {
        self.0.lock().expect("warehouse").query(sql)
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("warehouse")
    }
}

/// Registers every `WAREHOUSE.schema.table` that `sql` names, as a table of catalog
/// `WAREHOUSE` in `ctx`. Names whose first part is no warehouse are left to the lake.
pub(crate) async fn register_referenced(
    ctx: &SessionContext,
    project: &Project,
    references: &[TableReference],
) -> Result<(), EngineError> {
    let mut opened: BTreeMap<String, (Shared, Dialect)> = BTreeMap::new();
    for r in references {
        let TableReference::Full {
            catalog,
            schema,
            table,
        } = r
        else {
            continue;
        };
        let dialect = match project.config.warehouses.get(catalog.as_ref()) {
            Some(WarehouseConfig::Duckdb { .. }) => Dialect::DuckDb,
            Some(WarehouseConfig::Postgres { .. }) => Dialect::Postgres,
            Some(WarehouseConfig::Redshift { .. }) => {
                return Err(EngineError::Usage(format!(
                    "{r}: joining Redshift tables in a lake query is not built; `sluice expose {catalog}` puts the lake in Redshift instead"
                )))
            }
            None => continue,
        };
        if !opened.contains_key(catalog.as_ref()) {
            let w = project.warehouse(catalog)?;
            opened.insert(
                catalog.to_string(),
                (Shared(Arc::new(Mutex::new(w))), dialect),
            );
        }
        let (warehouse, dialect) = opened[catalog.as_ref()].clone();
        let columns = {
            let w = warehouse.clone();
            let (s, t) = (schema.to_string(), table.to_string());
            tokio::task::spawn_blocking(move || table_columns(&w, &s, &t))
                .await
                .map_err(|e| EngineError::Internal(format!("reading {r}'s columns: {e}")))??
        };
        if columns.is_empty() {
            return Err(EngineError::Usage(format!(
                "{r}: warehouse `{catalog}` has no table {schema}.{table}"
            )));
        }
        let provider = WarehouseTable::new(catalog, schema, table, warehouse, dialect, columns);
        let cat = match ctx.catalog(catalog) {
            Some(c) => c,
            None => {
                let c: Arc<dyn CatalogProvider> = Arc::new(MemoryCatalogProvider::new());
                ctx.register_catalog(catalog.as_ref(), c.clone());
                c
            }
        };
        if cat.schema(schema).is_none() {
            cat.register_schema(schema, Arc::new(MemorySchemaProvider::new()))?;
        }
        ctx.register_table(r.clone(), Arc::new(provider))?;
    }
    Ok(())
}

/// One column of a warehouse table: its name, the Arrow type it is read as, and whether the
/// warehouse sends it as text to be parsed (PostgreSQL's query results, and types with no
/// Arrow counterpart, which stay text).
#[derive(Debug, Clone)]
struct Column {
    name: String,
    data_type: DataType,
    /// `information_schema` type, lowercased.
    declared: String,
}

/// The table's columns from `information_schema` (empty: no such table).
fn table_columns(w: &Shared, schema: &str, table: &str) -> Result<Vec<Column>, EngineError> {
    let sql = format!(
        "SELECT column_name, data_type, CAST(numeric_precision AS VARCHAR), CAST(numeric_scale AS VARCHAR) \
         FROM information_schema.columns WHERE table_schema = {} AND table_name = {} ORDER BY ordinal_position",
        quote_literal(schema),
        quote_literal(table)
    );
    let batches = w.query(&sql)?;
    let mut out = Vec::new();
    for b in batches {
        let text = |i: usize| -> Result<StringArray, EngineError> {
            let a = arrow::compute::cast(b.column(i), &DataType::Utf8)
                .map_err(|e| EngineError::Internal(format!("information_schema: {e}")))?;
            Ok(a.as_any()
                .downcast_ref::<StringArray>()
                .expect("cast to Utf8")
                .clone())
        };
        let (names, types, precisions, scales) = (text(0)?, text(1)?, text(2)?, text(3)?);
        for i in 0..b.num_rows() {
            let declared = types.value(i).to_ascii_lowercase();
            let number = |a: &StringArray| {
                (!a.is_null(i))
                    .then(|| a.value(i).parse::<u8>().ok())
                    .flatten()
            };
            out.push(Column {
                name: names.value(i).to_string(),
                data_type: arrow_type(&declared, number(&precisions), number(&scales)),
                declared,
            });
        }
    }
    Ok(out)
}

/// The Arrow type a warehouse column is read as; text for what has no exact counterpart
/// (unbounded numeric, intervals, UUIDs, JSON, arrays).
fn arrow_type(declared: &str, precision: Option<u8>, scale: Option<u8>) -> DataType {
    let base = declared.split('(').next().unwrap_or(declared).trim();
    match base {
        "bigint" | "int8" | "long" => DataType::Int64,
        "integer" | "int" | "int4" => DataType::Int32,
        "smallint" | "int2" => DataType::Int16,
        "tinyint" => DataType::Int8,
        "double" | "double precision" | "float8" => DataType::Float64,
        "real" | "float4" | "float" => DataType::Float32,
        "boolean" | "bool" => DataType::Boolean,
        "date" => DataType::Date32,
        "timestamp" | "timestamp without time zone" => {
            DataType::Timestamp(TimeUnit::Microsecond, None)
        }
        "timestamp with time zone" | "timestamptz" => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        "decimal" | "numeric" => match (precision, scale) {
            (Some(p), Some(s)) if (1..=38).contains(&p) && s <= p => {
                DataType::Decimal128(p, s as i8)
            }
            _ => DataType::Utf8,
        },
        _ => DataType::Utf8,
    }
}

impl Column {
    /// The SELECT expression that sends this column in a form `data_type` reads exactly.
    fn select(&self, dialect: Dialect) -> String {
        let c = q(&self.name);
        let sql = match (&self.data_type, dialect) {
            (DataType::Utf8, _) if !is_text(&self.declared) => format!("CAST({c} AS TEXT)"),
            // PostgreSQL results are text: times in ISO form, in UTC, to the microsecond.
            (DataType::Timestamp(_, Some(_)), Dialect::Postgres) => {
                format!("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')")
            }
            (DataType::Timestamp(_, None), Dialect::Postgres) => {
                format!("to_char({c}, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')")
            }
            _ => return c,
        };
        format!("{sql} AS {c}")
    }

    fn field(&self) -> Field {
        Field::new(&self.name, self.data_type.clone(), true)
    }
}

fn is_text(declared: &str) -> bool {
    let base = declared.split('(').next().unwrap_or(declared).trim();
    matches!(
        base,
        "text" | "varchar" | "character varying" | "character" | "char" | "bpchar" | "string"
    )
}

#[derive(Debug)]
struct WarehouseTable {
    /// `WAREHOUSE.schema.table`, for messages.
    name: String,
    from: String,
    warehouse: Shared,
    dialect: Dialect,
    columns: Vec<Column>,
    schema: SchemaRef,
}

impl WarehouseTable {
    fn new(
        catalog: &str,
        schema: &str,
        table: &str,
        warehouse: Shared,
        dialect: Dialect,
        columns: Vec<Column>,
    ) -> WarehouseTable {
        let fields: Vec<Field> = columns.iter().map(Column::field).collect();
        WarehouseTable {
            name: format!("{catalog}.{schema}.{table}"),
            from: format!("{}.{}", q(schema), q(table)),
            warehouse,
            dialect,
            columns,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    /// The filter as the warehouse's SQL, when the warehouse evaluates it exactly as
    /// DataFusion does.
    fn pushed(&self, filter: &Expr) -> Option<String> {
        if !self.exact_there(filter) {
            return None;
        }
        let sql = match self.dialect {
            Dialect::DuckDb => Unparser::new(&DuckDBDialect::new()).expr_to_sql(filter),
            Dialect::Postgres => Unparser::new(&PostgreSqlDialect {}).expr_to_sql(filter),
        };
        sql.ok().map(|e| e.to_string())
    }

    /// Comparisons of a column with constants, IN lists, IS [NOT] NULL, and ANDs and ORs of them;
    /// text only by equality.
    fn exact_there(&self, e: &Expr) -> bool {
        let column = |e: &Expr| match e {
            Expr::Column(c) => self.columns.iter().find(|col| col.name == c.name),
            _ => None,
        };
        let constant = |e: &Expr| match e {
            Expr::Literal(v, _) => !v.is_null(),
            Expr::Cast(c) => matches!(&*c.expr, Expr::Literal(v, _) if !v.is_null()),
            _ => false,
        };
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::And | Operator::Or => self.exact_there(left) && self.exact_there(right),
                Operator::Eq
                | Operator::NotEq
                | Operator::Lt
                | Operator::LtEq
                | Operator::Gt
                | Operator::GtEq => {
                    let (col, other) = match (column(left), column(right)) {
                        (Some(c), None) => (c, right),
                        (None, Some(c)) => (c, left),
                        _ => return false,
                    };
                    constant(other) && pushable(col, *op)
                }
                _ => false,
            },
            Expr::InList(l) => {
                column(&l.expr).is_some_and(|c| pushable(c, Operator::Eq))
                    && l.list.iter().all(constant)
            }
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => column(inner).is_some(),
            _ => false,
        }
    }
}

/// Whether comparing `col` by `op` with a constant means the same in the warehouse: not for
/// times with a zone (the warehouse would read a zoneless constant in its session's zone),
/// text only by equality and only for text columns (collations order text otherwise; a UUID
/// or JSON column compares by its own rules).
fn pushable(col: &Column, op: Operator) -> bool {
    match &col.data_type {
        DataType::Timestamp(_, Some(_)) => false,
        DataType::Utf8 => is_text(&col.declared) && matches!(op, Operator::Eq | Operator::NotEq),
        _ => true,
    }
}

#[async_trait]
impl TableProvider for WarehouseTable {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match self.pushed(f) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let picked: Vec<&Column> = match projection {
            Some(p) => p.iter().map(|i| &self.columns[*i]).collect(),
            None => self.columns.iter().collect(),
        };
        let schema = Arc::new(Schema::new(
            picked.iter().map(|c| c.field()).collect::<Vec<_>>(),
        ));
        // A query that needs no column (count(*)) still needs the rows.
        let select = if picked.is_empty() {
            "1 AS \"__sluice_row\"".to_string()
        } else {
            picked
                .iter()
                .map(|c| c.select(self.dialect))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let wheres: Vec<String> = filters.iter().filter_map(|f| self.pushed(f)).collect();
        let mut sql = format!("SELECT {select} FROM {}", self.from);
        if !wheres.is_empty() {
            sql.push_str(&format!(" WHERE ({})", wheres.join(") AND (")));
        }
        if let Some(n) = limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        let partition = Arc::new(WarehouseScan {
            name: self.name.clone(),
            sql,
            warehouse: self.warehouse.clone(),
            schema: schema.clone(),
        });
        Ok(Arc::new(StreamingTableExec::try_new(
            schema,
            vec![partition],
            None,
            Vec::new(),
            false,
            limit,
        )?))
    }
}

/// The one SELECT a warehouse table's scan sends, run when the plan runs.
#[derive(Debug)]
struct WarehouseScan {
    name: String,
    sql: String,
    warehouse: Shared,
    schema: SchemaRef,
}

impl PartitionStream for WarehouseScan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (name, sql, warehouse, schema) = (
            self.name.clone(),
            self.sql.clone(),
            self.warehouse.clone(),
            self.schema.clone(),
        );
        let out_schema = schema.clone();
        let batches = async move {
            tracing::info!(table = %name, %sql, "reading warehouse table");
            let rows = tokio::task::spawn_blocking(move || warehouse.query(&sql))
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?
                .map_err(|e| DataFusionError::External(format!("{name}: {e}").into()))?;
            rows.into_iter()
                .map(|b| {
                    conform(&b, &schema)
                        .map_err(|e| DataFusionError::External(format!("{name}: {e}").into()))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let stream = futures::stream::once(batches).flat_map(|r| match r {
            Ok(batches) => futures::stream::iter(batches.into_iter().map(Ok)).boxed(),
            Err(e) => futures::stream::iter(vec![Err(e)]).boxed(),
        });
        Box::pin(RecordBatchStreamAdapter::new(out_schema, stream))
    }
}

/// The warehouse's batch as the declared schema: text parsed, types narrowed or widened.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    if schema.fields().is_empty() {
        return RecordBatch::try_new_with_options(
            schema.clone(),
            Vec::new(),
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )
        .map_err(|e| e.to_string());
    }
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (i, f) in schema.fields().iter().enumerate() {
        let a = batch.column(i);
        let cast = arrow::compute::cast_with_options(
            a,
            f.data_type(),
            &arrow::compute::CastOptions {
                safe: false,
                ..Default::default()
            },
        )
        .map_err(|e| format!("column {}: {e}", f.name()))?;
        columns.push(cast);
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warehouse_types_map_to_exact_arrow_types_or_text() {
        assert_eq!(arrow_type("bigint", None, None), DataType::Int64);
        assert_eq!(
            arrow_type("decimal(15,2)", Some(15), Some(2)),
            DataType::Decimal128(15, 2)
        );
        assert_eq!(arrow_type("numeric", None, None), DataType::Utf8);
        assert_eq!(
            arrow_type("timestamp with time zone", None, None),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(arrow_type("jsonb", None, None), DataType::Utf8);
    }
}
