//! The PostgreSQL [`Source`]: snapshots and incremental reads of one schema's tables.

use std::sync::Arc;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use tokio_postgres::Client;

use super::columns::{arrow_schema, ColumnDef};
use super::rows::PgRows;
use super::snapshot::{self, ChunkPlan};
use super::{Pg, TableInfo};
use crate::source::{
    Capabilities, Chunk, ChunkReader, IncrementalEnd, Position, SnapshotPlan, Source, SourceTable,
};
use crate::SourceError;

/// The lake table property that keeps a table's column definitions.
pub const COLUMNS_PROPERTY: &str = "sluice.postgres.columns";

pub struct PgSource {
    pg: Arc<Pg>,
    /// Tables named by the config (empty: every table of the schema).
    configured: Vec<String>,
}

impl PgSource {
    pub fn new(pg: Pg, configured: Vec<String>) -> Self {
        PgSource {
            pg: Arc::new(pg),
            configured,
        }
    }
}

/// A discovered table as the contract has it.
fn source_table(info: &TableInfo) -> SourceTable {
    SourceTable {
        name: info.name.clone(),
        schema: arrow_schema(&info.columns),
        key: info.primary_key.clone(),
        definitions: serde_json::to_string(&info.columns).expect("column definitions serialize"),
        rows_estimate: info.rows_estimate,
    }
}

fn definitions(source: &str, table: &str, text: &str) -> Result<Vec<ColumnDef>, SourceError> {
    serde_json::from_str(text).map_err(|e| SourceError::Config {
        source_name: source.to_string(),
        message: format!("table `{table}`: unreadable column definitions: {e}"),
    })
}

/// The table as the readers take it (its key as the driver set it).
fn table_info(pg: &Pg, table: &SourceTable) -> Result<TableInfo, SourceError> {
    Ok(TableInfo {
        name: table.name.clone(),
        columns: definitions(&pg.source, &table.name, &table.definitions)?,
        primary_key: table.key.clone(),
        rows_estimate: table.rows_estimate,
    })
}

/// What a read ends with: its rejects and values with no equivalent, taken.
fn chunk_end(rows: &mut PgRows) -> Chunk {
    Chunk {
        rejects: std::mem::take(&mut rows.rejects),
        zero_dates: std::mem::take(&mut rows.no_equivalent),
    }
}

#[async_trait]
impl Source for PgSource {
    fn name(&self) -> &str {
        &self.pg.source
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshot: true,
            incremental: true,
            stream: false,
            units: false,
        }
    }

    fn definitions_property(&self) -> &'static str {
        COLUMNS_PROPERTY
    }

    async fn check(&self) -> Result<String, SourceError> {
        let client = self.pg.connect().await?;
        let version: String = client
            .query_one("SHOW server_version", &[])
            .await
            .map_err(|e| self.pg.db_err("reading the server version", e))?
            .get(0);
        let selected = (!self.configured.is_empty()).then_some(self.configured.as_slice());
        let tables = self.pg.discover(&client, selected).await?;
        let mut detail = format!(
            "PostgreSQL {version}, schema {}: {} table(s)",
            self.pg.schema,
            tables.len()
        );
        detail += &crate::source::keyless_note(
            tables
                .iter()
                .filter(|t| t.primary_key.is_empty())
                .map(|t| t.name.as_str()),
        );
        Ok(detail)
    }

    async fn tables(&self, selected: Option<&[String]>) -> Result<Vec<SourceTable>, SourceError> {
        let client = self.pg.connect().await?;
        let found = self.pg.discover(&client, selected).await?;
        Ok(found.iter().map(source_table).collect())
    }

    fn table_as(&self, now: &SourceTable, stored: &str) -> Result<SourceTable, SourceError> {
        let defs = definitions(&self.pg.source, &now.name, stored)?;
        Ok(SourceTable {
            schema: arrow_schema(&defs),
            definitions: stored.to_string(),
            ..now.clone()
        })
    }

    async fn plan_snapshot(
        &self,
        table: &SourceTable,
        chunk_rows: u64,
    ) -> Result<SnapshotPlan, SourceError> {
        let info = table_info(&self.pg, table)?;
        let client = self.pg.connect().await?;
        let plan = snapshot::plan(&self.pg, &client, &info, chunk_rows).await?;
        Ok(SnapshotPlan {
            chunks: plan.chunks(),
            plan: plan.encode(),
        })
    }

    async fn snapshot_readers(
        &self,
        n: usize,
        positions: bool,
    ) -> Result<Vec<Box<dyn ChunkReader>>, SourceError> {
        if positions {
            return Err(self.pg.err(
                "a change stream cannot start from a PostgreSQL snapshot in this build (no logical replication yet)",
            ));
        }
        let readers = snapshot::open_readers(&self.pg, n.max(1)).await?;
        Ok(readers
            .into_iter()
            .map(|client| {
                Box::new(PgChunkReader {
                    pg: self.pg.clone(),
                    client,
                    reading: None,
                }) as Box<dyn ChunkReader>
            })
            .collect())
    }

    async fn read_incremental(
        &self,
        table: &SourceTable,
        cursor: &str,
        after: Option<i64>,
        out: tokio::sync::mpsc::Sender<RecordBatch>,
    ) -> Result<IncrementalEnd, SourceError> {
        let info = table_info(&self.pg, table)?;
        let def = info
            .columns
            .iter()
            .find(|c| c.name == cursor)
            .ok_or_else(|| {
                self.pg.err(format!(
                    "table `{}` has no cursor column `{cursor}`",
                    info.name
                ))
            })?;
        let kind = def.kind();
        if !kind.is_cursor() {
            return Err(self.pg.err(format!(
                "cursor `{}`.`{cursor}` is {}: a cursor must be an integer, date, timestamp or timestamptz column",
                info.name, def.column_type
            )));
        }
        let from = after.map(|v| snapshot::cursor_literal(kind, v));
        let mut rows = PgRows::new(&info.columns, &info.primary_key);
        let client = self.pg.connect().await?;
        snapshot::read_incremental(&self.pg, &client, &info, cursor, from, &mut rows, &out).await?;
        let end = chunk_end(&mut rows);
        Ok(IncrementalEnd {
            rejects: end.rejects,
            zero_dates: end.zero_dates,
        })
    }
}

/// A snapshot reader: one session inside the shared snapshot.
struct PgChunkReader {
    pg: Arc<Pg>,
    client: Client,
    /// The table being read (its definitions) and its row builder, kept from chunk to chunk.
    reading: Option<(String, TableInfo, PgRows)>,
}

#[async_trait]
impl ChunkReader for PgChunkReader {
    fn read_at(&self) -> Option<i64> {
        None
    }

    fn position(&self) -> Option<Position> {
        None
    }

    async fn read(
        &mut self,
        table: &SourceTable,
        plan: &SnapshotPlan,
        index: u64,
        out: &tokio::sync::mpsc::Sender<RecordBatch>,
    ) -> Result<Chunk, SourceError> {
        if self
            .reading
            .as_ref()
            .is_none_or(|(defs, info, _)| info.name != table.name || *defs != table.definitions)
        {
            let info = table_info(&self.pg, table)?;
            let rows = PgRows::new(&info.columns, &info.primary_key);
            self.reading = Some((table.definitions.clone(), info, rows));
        }
        let (_, info, rows) = self.reading.as_mut().expect("set above");
        let plan = ChunkPlan::decode(&plan.plan).unwrap_or_default();
        snapshot::read_chunk(&self.pg, &self.client, info, &plan, index, rows, out).await?;
        Ok(chunk_end(rows))
    }

    async fn close(self: Box<Self>) {
        let _ = self.client.batch_execute("COMMIT").await;
    }
}
