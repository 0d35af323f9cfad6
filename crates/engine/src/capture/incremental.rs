//! Incremental reads: the rows past a table's committed cursor value, landed with the new
//! value in one commit.

use std::collections::HashMap;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use chrono::Utc;
use serde_json::json;
use tokio::sync::mpsc;

use sluice_core::failpoint;
use sluice_core::rowid::{row_ids, RowId};
use sluice_lake::{LakeTable, SEQ_APP_ID};
use sluice_sources::source::SharedSource;

use super::positions::Ids;
use super::table::Captured;
use super::write_reads;
use crate::progress::Progress;
use crate::{EngineError, Project};

/// Rows past the committed cursor value, and rows at it or with a NULL cursor that the lake
/// does not hold yet; the new value is committed with them.
///
/// Reading `cursor >= last` alone would land the rows at `last` again every run (doubled in
/// append and history tables), and `cursor > last` would miss rows that arrive later with
/// the same value. So the rows at `last` and the rows with no cursor value (which no bound
/// reaches) are read each run and held against the lake's rows there by their identity
/// ([`sluice_core::rowid`]): only those the lake lacks land, identical rows counted. A row
/// that changes back to a version the lake already holds at the same cursor value is the one
/// change this cannot see.
pub(crate) async fn incremental(
    project: &Project,
    source: &SharedSource,
    t: &mut Captured,
    progress: bool,
) -> Result<(), EngineError> {
    let ids = Ids::of(source.as_ref());
    let cursor = t.spec.cursor.clone().ok_or_else(|| {
        EngineError::Usage(format!(
            "{}.{}: incremental mode needs `cursor`",
            t.spec.source, t.spec.table
        ))
    })?;
    let col = t.table.schema.index_of(&cursor).map_err(|_| {
        EngineError::Usage(format!(
            "{}.{}: no cursor column `{cursor}`",
            t.spec.source, t.spec.table
        ))
    })?;
    let from = t.log.app_version(&ids.cursor()).await?;
    let columns: Vec<String> = t
        .table
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut landed = lake_rows_at(&t.log, &columns, &cursor, from).await?;
    let (tx, mut rx) = mpsc::channel::<RecordBatch>(2);
    let reader = {
        let (source, table, cursor) = (source.clone(), t.table.clone(), cursor.clone());
        tokio::spawn(async move { source.read_incremental(&table, &cursor, from, tx).await })
    };
    let ingested_at = Utc::now();
    let mut seq = t.log.last_seq().await?;
    let mut writer = t.log.writer()?;
    let mut high = from;
    let mut rows = 0u64;
    let mut again = 0u64;
    let mut progress = Progress::new(
        progress,
        format!("{}.{} incremental", t.spec.source, t.spec.table),
    );
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    while let Some(b) = rx.recv().await {
        high = high.max(max_cursor(&b, col));
        let (b, dropped) = drop_landed(&b, col, from, &names, &mut landed)?;
        again += dropped;
        if b.num_rows() == 0 {
            continue;
        }
        let at = (Some(ingested_at), ingested_at);
        let n = write_reads(&mut writer, &b, &mut seq, at, &t.spec.table).await?;
        rows += n;
        progress.add(n);
    }
    let end = reader
        .await
        .map_err(|e| EngineError::Internal(format!("incremental reader: {e}")))??;
    if again > 0 {
        tracing::info!(table = %t.spec.table, rows = again, "rows at the last cursor value already in the lake: not landed again");
    }
    let position = format!(
        "{}.from.{}",
        ids.cursor(),
        from.map_or("start".into(), |v| v.to_string())
    );
    t.quarantine(&project.lake, &position, end.rejects).await?;
    t.report.zero_dates += end.zero_dates;
    if rows == 0 {
        return Ok(());
    }
    let mut apps = vec![(SEQ_APP_ID.to_string(), seq)];
    if let Some(h) = high {
        apps.push((ids.cursor(), h));
    }
    let mut meta = serde_json::Map::new();
    meta.insert(
        "sluice".into(),
        json!({ "incremental": cursor, "rows": rows, "cursor": high }),
    );
    let v = writer.commit(&mut t.log, apps, meta).await?;
    failpoint::hit(failpoint::AFTER_LAKE_COMMIT);
    t.report.rows += rows;
    t.committed(rows, v);
    Ok(())
}

/// Largest cursor value in a batch, as the lake numbers cursor values.
fn max_cursor(batch: &RecordBatch, col: usize) -> Option<i64> {
    cursor_values(batch, col).into_iter().flatten().max()
}

/// The cursor values of a batch as the lake numbers them: integers as they are, dates in
/// days and times in microseconds since the epoch (None: NULL, or a type no cursor has).
fn cursor_values(batch: &RecordBatch, col: usize) -> Vec<Option<i64>> {
    use arrow::array::AsArray;
    use arrow::datatypes::*;
    let a = batch.column(col);
    let it: Box<dyn Iterator<Item = Option<i64>>> = match a.data_type() {
        DataType::Int8 => Box::new(
            a.as_primitive::<Int8Type>()
                .iter()
                .map(|v| v.map(i64::from)),
        ),
        DataType::Int16 => Box::new(
            a.as_primitive::<Int16Type>()
                .iter()
                .map(|v| v.map(i64::from)),
        ),
        DataType::Int32 => Box::new(
            a.as_primitive::<Int32Type>()
                .iter()
                .map(|v| v.map(i64::from)),
        ),
        DataType::Int64 => Box::new(a.as_primitive::<Int64Type>().iter()),
        DataType::Date32 => Box::new(
            a.as_primitive::<Date32Type>()
                .iter()
                .map(|v| v.map(i64::from)),
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Box::new(a.as_primitive::<TimestampMicrosecondType>().iter())
        }
        _ => return vec![None; a.len()],
    };
    it.collect()
}

/// How many times the lake holds each row (by identity) whose cursor is `from` or NULL: the
/// rows an incremental read sees again.
async fn lake_rows_at(
    log: &LakeTable,
    columns: &[String],
    cursor: &str,
    from: Option<i64>,
) -> Result<HashMap<RowId, u64>, EngineError> {
    let mut landed = HashMap::new();
    if log.last_seq().await? == 0 {
        return Ok(landed);
    }
    let ctx = datafusion::prelude::SessionContext::new();
    crate::query::register(&ctx, "changes".into(), log).await?;
    let c = sluice_core::names::quote_ident(cursor);
    let at = match from {
        Some(v) => {
            // A literal of the column's own type keeps the files' statistics usable.
            let t = log
                .schema()?
                .field_with_name(cursor)
                .map(|f| f.data_type().clone());
            let literal = match t {
                Ok(DataType::Date32) => format!("arrow_cast(arrow_cast({v}, 'Int32'), 'Date32')"),
                Ok(t @ DataType::Timestamp(..)) => format!("arrow_cast({v}, '{t}')"),
                _ => v.to_string(),
            };
            format!("{c} = {literal} OR ")
        }
        None => String::new(),
    };
    let list: Vec<String> = columns
        .iter()
        .map(|n| sluice_core::names::quote_ident(n))
        .collect();
    let sql = format!(
        "SELECT {} FROM changes WHERE {at}{c} IS NULL",
        list.join(", ")
    );
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    use futures::StreamExt;
    while let Some(b) = stream.next().await {
        for id in row_ids(&b?, &names) {
            *landed.entry(id).or_insert(0) += 1;
        }
    }
    Ok(landed)
}

/// `batch` without the rows the lake already holds: rows whose cursor (column `col`) is
/// `from` or NULL and whose identity is in `landed` (each use spends one). Returns the rows
/// kept and how many were dropped.
fn drop_landed(
    batch: &RecordBatch,
    col: usize,
    from: Option<i64>,
    names: &[&str],
    landed: &mut HashMap<RowId, u64>,
) -> Result<(RecordBatch, u64), EngineError> {
    if landed.is_empty() {
        return Ok((batch.clone(), 0));
    }
    let values = cursor_values(batch, col);
    let ids = row_ids(batch, names);
    let mut dropped = 0;
    let keep: arrow::array::BooleanArray = (0..batch.num_rows())
        .map(|r| {
            let boundary = values[r].is_none() || values[r] == from;
            if boundary {
                if let Some(n) = landed.get_mut(&ids[r]).filter(|n| **n > 0) {
                    *n -= 1;
                    dropped += 1;
                    return Some(false);
                }
            }
            Some(true)
        })
        .collect();
    let kept = arrow::compute::filter_record_batch(batch, &keep)
        .map_err(|e| EngineError::Internal(format!("incremental rows: {e}")))?;
    Ok((kept, dropped))
}
