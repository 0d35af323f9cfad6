//! Load: apply the lake changes a warehouse table has not seen, exactly once.
//!
//! The ledger says the last `_sluice_seq` applied; the changes after it are read from the
//! lake snapshot (file statistics on `_sluice_seq` skip the files already loaded) and streamed
//! into the warehouse, which applies them and moves its ledger in one transaction.

use std::sync::Arc;

use arrow::array::RecordBatch;
use futures::StreamExt;

use sluice_core::change::{is_change_column, INGEST_DATE, SEQ};
use sluice_core::config::TableSpec;
use sluice_core::names::quote_ident;
use sluice_lake::{LakeTable, TablePath};
use sluice_warehouses::{LedgerEntry, Warehouse};

use crate::{EngineError, Project};

/// Batches in flight between the lake reader and the warehouse writer.
const CHANNEL_BATCHES: usize = 2;

#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadResult {
    pub target: String,
    pub mode: &'static str,
    pub changes: u64,
    pub rows_after: u64,
    pub lake_version: i64,
    pub up_to_date: bool,
}

pub async fn load(project: &Project, spec: &TableSpec) -> Result<Vec<LoadResult>, EngineError> {
    let Some(log) = LakeTable::open(
        &project.lake,
        &TablePath::changes(&spec.source, &spec.table),
    )
    .await?
    else {
        return Ok(Vec::new());
    };
    let lake_seq = log.last_seq().await?;
    let upto = LedgerEntry {
        lake_version: log.version(),
        seq: lake_seq,
    };
    let schema = log.schema()?;
    let mut results = Vec::new();
    let mut wh = project.warehouse(&spec.warehouse)?;
    for target in project.targets(spec) {
        let done = wh.ledger(&target)?;
        let from_seq = done.map(|d| d.seq).unwrap_or(0);
        if from_seq >= lake_seq {
            results.push(LoadResult {
                target: target.display(),
                mode: target.mode.name(),
                changes: 0,
                rows_after: 0,
                lake_version: upto.lake_version,
                up_to_date: true,
            });
            continue;
        }
        // Read the changes after the ledger from the very snapshot `upto` describes.
        let ctx = datafusion::prelude::SessionContext::new();
        log.delta()
            .update_datafusion_session(&ctx.state())
            .map_err(|source| sluice_lake::LakeError::Delta {
                table: log.path().to_string(),
                source,
            })?;
        let provider = log
            .delta()
            .table_provider()
            .await
            .map_err(EngineError::Query)?;
        ctx.register_table("changes", provider)?;
        let cols: Vec<String> = schema
            .fields()
            .iter()
            .filter(|f| f.name() != INGEST_DATE)
            .map(|f| quote_ident(f.name()))
            .collect();
        let sql = format!(
            "SELECT {} FROM changes WHERE {} > {from_seq} AND {} <= {lake_seq}",
            cols.join(", "),
            quote_ident(SEQ),
            quote_ident(SEQ)
        );
        let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
        let load_schema = Arc::new(arrow::datatypes::Schema::new(
            schema
                .fields()
                .iter()
                .filter(|f| f.name() != INGEST_DATE)
                .cloned()
                .collect::<Vec<_>>(),
        ));
        debug_assert!(load_schema
            .fields()
            .iter()
            .any(|f| is_change_column(f.name())));

        let (tx, rx) =
            std::sync::mpsc::sync_channel::<Result<RecordBatch, String>>(CHANNEL_BATCHES);
        let feeder = tokio::spawn(async move {
            while let Some(b) = stream.next().await {
                let stop = b.is_err();
                if tx.send(b.map_err(|e| e.to_string())).is_err() || stop {
                    break;
                }
            }
        });
        let target_c = target.clone();
        let (wh_back, result) = tokio::task::spawn_blocking(move || {
            let mut iter = rx.into_iter();
            let r = wh.load(&target_c, &load_schema, &mut iter, upto);
            (wh, r)
        })
        .await
        .map_err(|e| EngineError::Internal(format!("warehouse task: {e}")))?;
        wh = wh_back;
        feeder.abort();
        let report = result?;
        tracing::info!(target = %target.display(), changes = report.changes, lake_version = upto.lake_version, "loaded");
        results.push(LoadResult {
            target: target.display(),
            mode: target.mode.name(),
            changes: report.changes,
            rows_after: report.rows_after,
            lake_version: upto.lake_version,
            up_to_date: false,
        });
    }
    Ok(results)
}
