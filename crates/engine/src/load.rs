//! Load: apply the lake changes a warehouse table has not seen, exactly once.
//!
//! The ledger says the last `_sluice_seq` applied; the changes after it are read from the
//! lake snapshot (file statistics on `_sluice_seq` skip the files already loaded) and streamed
//! into the warehouse, which applies them and moves its ledger in one transaction.
//!
//! Large backlogs load in chunks of `max_changes_per_transaction` consecutive sequence numbers, one
//! transaction each: the warehouse's memory stays flat however large the backlog, and a crash
//! keeps every committed chunk (the ledger says which). Chunks apply in sequence order, so
//! merge gives the same result as one big transaction. `replace` loads in one transaction,
//! since truncate-and-load must be atomic.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use sluice_core::change::{INGEST_DATE, SEQ};
use sluice_core::config::{LoadMode, TableSpec};
use sluice_core::names::quote_ident;
use sluice_lake::{LakeTable, TablePath};
use sluice_warehouses::{LakeFiles, LedgerEntry, Target, Warehouse};

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

/// The change log as DataFusion sees it, at the snapshot the handle holds.
async fn changes_session(log: &LakeTable) -> Result<SessionContext, EngineError> {
    let ctx = SessionContext::new();
    crate::query::register(&ctx, "changes".into(), log).await?;
    Ok(ctx)
}

type Loaded = (
    Box<dyn Warehouse>,
    Result<sluice_warehouses::LoadReport, EngineError>,
);

/// Runs the warehouse's (blocking) load of `batches` off the async threads.
async fn apply(
    wh: Box<dyn Warehouse>,
    target: &Target,
    schema: &SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch, String>> + Send + 'static,
    upto: LedgerEntry,
) -> Loaded {
    let target = target.clone();
    let schema = schema.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let mut wh = wh;
        let mut batches = batches;
        let r = wh.load(&target, &schema, &mut batches, upto);
        (wh, r)
    })
    .await;
    match joined {
        Ok((wh, r)) => (wh, r.map_err(EngineError::from)),
        // The warehouse handle was lost with the task: only a panic gets here.
        Err(e) => panic!("warehouse task failed: {e}"),
    }
}

/// Streams changes with `after < _sluice_seq <= upto.seq` into one warehouse transaction.
async fn load_range(
    ctx: &SessionContext,
    wh: Box<dyn Warehouse>,
    target: &Target,
    schema: &SchemaRef,
    after: i64,
    upto: LedgerEntry,
) -> Loaded {
    if wh.wants_lake_files() {
        // It copies the lake's files itself (given before this call): nothing to stream.
        return apply(wh, target, schema, std::iter::empty(), upto).await;
    }
    let cols: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| quote_ident(f.name()))
        .collect();
    let sql = format!(
        "SELECT {} FROM changes WHERE {seq} > {after} AND {seq} <= {}",
        cols.join(", "),
        upto.seq,
        seq = quote_ident(SEQ),
    );
    let mut stream = match async { ctx.sql(&sql).await?.execute_stream().await }.await {
        Ok(s) => s,
        Err(e) => return (wh, Err(e.into())),
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<RecordBatch, String>>(CHANNEL_BATCHES);
    let feeder = tokio::spawn(async move {
        while let Some(b) = stream.next().await {
            let stop = b.is_err();
            if tx.send(b.map_err(|e| e.to_string())).is_err() || stop {
                break;
            }
        }
    });
    let loaded = apply(wh, target, schema, rx.into_iter(), upto).await;
    feeder.abort();
    loaded
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
    let lake_version = log.version();
    let schema: SchemaRef = Arc::new(Schema::new(
        log.schema()?
            .fields()
            .iter()
            .filter(|f| f.name() != INGEST_DATE)
            .cloned()
            .collect::<Vec<_>>(),
    ));
    let ctx = changes_session(&log).await?;
    let mut results = Vec::new();
    let mut wh = project.warehouse(&spec.warehouse)?;
    let chunk = project
        .config
        .warehouses
        .get(&spec.warehouse)
        .map(|w| w.changes_per_transaction())
        .unwrap_or(sluice_core::config::DEFAULT_CHANGES_PER_TRANSACTION);
    for target in project.targets(spec) {
        let mut after = wh.ledger(&target)?.map(|d| d.seq).unwrap_or(0);
        let mut result = LoadResult {
            target: target.display(),
            mode: target.mode.name(),
            changes: 0,
            rows_after: 0,
            lake_version,
            up_to_date: after >= lake_seq,
        };
        while after < lake_seq {
            let end = if target.mode == LoadMode::Replace {
                lake_seq
            } else {
                lake_seq.min(after + chunk)
            };
            let upto = LedgerEntry {
                lake_version,
                seq: end,
            };
            if wh.wants_lake_files() {
                wh.use_lake_files(LakeFiles {
                    table_url: log.url().clone(),
                    store: log.store(),
                    files: log
                        .data_files(after, end)?
                        .into_iter()
                        .map(|f| (f.path, f.size))
                        .collect(),
                    after,
                });
            }
            let (back, report) = load_range(&ctx, wh, &target, &schema, after, upto).await;
            wh = back;
            let report = report?;
            tracing::info!(target = %target.display(), changes = report.changes, seq = end, lake_version, "loaded");
            result.changes += report.changes;
            result.rows_after = report.rows_after;
            after = end;
        }
        results.push(result);
    }
    Ok(results)
}
