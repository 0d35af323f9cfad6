//! The rows a snapshot run no longer saw: the last change of each key before the run, unless
//! a delete, whose key the run did not read. Both sides are read sorted by key (DataFusion
//! sorts through spill files past a memory limit) and walked side by side, so memory stays
//! bounded whatever the table's size; only the rows found gone are read whole.

use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;

use sluice_core::change::{data_schema, OP, SEQ};
use sluice_core::names::quote_ident as q;
use sluice_lake::LakeTable;

use crate::EngineError;

/// Memory each of the two sorted reads works in before it spills.
const SORT_MEMORY: usize = 256 << 20;

/// The rows `log` held before the run that began at sequence `run_from` whose key the run did
/// not read, as they last were.
pub(crate) async fn vanished(
    log: &LakeTable,
    key: &[String],
    run_from: i64,
) -> Result<SendableRecordBatchStream, EngineError> {
    let keys = key.iter().map(|k| q(k)).collect::<Vec<_>>().join(", ");
    let (seq, op) = (q(SEQ), q(OP));
    let before = sorted(
        log,
        &format!("SELECT {keys}, {seq}, {op} FROM changes WHERE {seq} < {run_from} ORDER BY {keys}, {seq}"),
    )
    .await?;
    let read = sorted(
        log,
        &format!("SELECT DISTINCT {keys} FROM changes WHERE {seq} >= {run_from} ORDER BY {keys}"),
    )
    .await?;
    let gone = gone_seqs(before, read, key.len()).await?;
    rows_at(log, gone).await
}

/// A query's result in its ORDER BY, in a session of its own bounded memory.
async fn sorted(log: &LakeTable, sql: &str) -> Result<SendableRecordBatchStream, EngineError> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(SORT_MEMORY)))
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
    crate::query::register(&ctx, "changes".into(), log).await?;
    Ok(ctx.sql(sql).await?.execute_stream().await?)
}

fn walk_err(e: arrow::error::ArrowError) -> EngineError {
    EngineError::Internal(format!("finding the rows a snapshot no longer saw: {e}"))
}

/// One side of the walk: rows of key values in order, batch by batch.
struct Side {
    stream: SendableRecordBatchStream,
    batch: Option<(RecordBatch, Rows)>,
    at: usize,
}

impl Side {
    /// The current row's batch and index, fetching the next batch when one is used up;
    /// None at the end.
    async fn current(
        &mut self,
        converter: &RowConverter,
        keys: usize,
    ) -> Result<Option<(&RecordBatch, &Rows, usize)>, EngineError> {
        loop {
            if let Some((b, _)) = &self.batch {
                if self.at < b.num_rows() {
                    break;
                }
            }
            match self.stream.next().await {
                None => {
                    self.batch = None;
                    return Ok(None);
                }
                Some(b) => {
                    let mut b = b?;
                    if b.num_columns() > keys + 1 {
                        // The op column as plain strings, whatever string type the reader chose.
                        let mut cols = b.columns().to_vec();
                        cols[keys + 1] = arrow::compute::cast(&cols[keys + 1], &DataType::Utf8)
                            .map_err(walk_err)?;
                        let fields: Vec<Field> = b
                            .schema()
                            .fields()
                            .iter()
                            .zip(&cols)
                            .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
                            .collect();
                        b = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
                            .map_err(walk_err)?;
                    }
                    let rows = converter
                        .convert_columns(&b.columns()[..keys])
                        .map_err(walk_err)?;
                    self.batch = Some((b, rows));
                    self.at = 0;
                }
            }
        }
        let (b, rows) = self.batch.as_ref().expect("set above");
        Ok(Some((b, rows, self.at)))
    }
}

/// Walks the changes before the run (by key, then sequence) beside the keys the run read;
/// returns the sequence numbers of the last change of each key the run did not read, unless
/// that change is a delete.
async fn gone_seqs(
    before: SendableRecordBatchStream,
    read: SendableRecordBatchStream,
    keys: usize,
) -> Result<Vec<i64>, EngineError> {
    let fields: Vec<SortField> = before.schema().fields()[..keys]
        .iter()
        .map(|f| {
            SortField::new_with_options(
                f.data_type().clone(),
                arrow::compute::SortOptions {
                    descending: false,
                    nulls_first: false,
                },
            )
        })
        .collect();
    let converter = RowConverter::new(fields).map_err(walk_err)?;
    let mut before = Side {
        stream: before,
        batch: None,
        at: 0,
    };
    let mut read = Side {
        stream: read,
        batch: None,
        at: 0,
    };
    let mut gone = Vec::new();
    // The key being walked, with its last change so far: (key, seq, deleted).
    let mut last: Option<(OwnedRow, i64, bool)> = None;
    loop {
        let next = match before.current(&converter, keys).await? {
            Some((b, rows, i)) => {
                let seqs = b
                    .column(keys)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or_else(|| {
                        EngineError::Internal(format!("{SEQ} is not a 64-bit integer"))
                    })?;
                let deleted = b.column(keys + 1).as_string::<i32>().value(i) == "d";
                Some((rows.row(i).owned(), seqs.value(i), deleted))
            }
            None => None,
        };
        before.at += 1;
        // A new key (or the end): the one before is complete.
        let done = match (&last, &next) {
            (Some((k, _, _)), Some((n, _, _))) => k.row() != n.row(),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if done {
            let (k, seq, deleted) = last.take().expect("matched above");
            if !deleted && !read_has(&mut read, &converter, keys, &k).await? {
                gone.push(seq);
            }
        }
        match next {
            Some(n) => last = Some(n),
            None => return Ok(gone),
        }
    }
}

/// Whether the run read `key`: moves the read side past the keys below it.
async fn read_has(
    read: &mut Side,
    converter: &RowConverter,
    keys: usize,
    key: &OwnedRow,
) -> Result<bool, EngineError> {
    while let Some((_, rows, i)) = read.current(converter, keys).await? {
        match rows.row(i).cmp(&key.row()) {
            std::cmp::Ordering::Less => read.at += 1,
            std::cmp::Ordering::Equal => return Ok(true),
            std::cmp::Ordering::Greater => return Ok(false),
        }
    }
    Ok(false)
}

/// The data columns of the changes at sequence numbers `seqs` (few: the rows gone).
async fn rows_at(
    log: &LakeTable,
    seqs: Vec<i64>,
) -> Result<SendableRecordBatchStream, EngineError> {
    let ctx = SessionContext::new();
    crate::query::register(&ctx, "changes".into(), log).await?;
    let gone = Arc::new(Schema::new(vec![Field::new(
        "_sluice_at",
        DataType::Int64,
        false,
    )]));
    let batch =
        RecordBatch::try_new(gone, vec![Arc::new(Int64Array::from(seqs))]).map_err(walk_err)?;
    ctx.register_batch("_sluice_gone", batch)?;
    let cols = data_schema(log.schema()?.as_ref())
        .fields()
        .iter()
        .map(|f| format!("_sluice_c.{}", q(f.name())))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {cols} FROM _sluice_gone JOIN changes AS _sluice_c ON _sluice_c.{seq} = _sluice_gone._sluice_at",
        seq = q(SEQ)
    );
    Ok(ctx.sql(&sql).await?.execute_stream().await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    fn stream(schema: Arc<Schema>, batches: Vec<RecordBatch>) -> SendableRecordBatchStream {
        let items = futures::stream::iter(batches.into_iter().map(Ok));
        Box::pin(RecordBatchStreamAdapter::new(schema, items))
    }

    /// Before the run: (key, seq, op) sorted by key then seq, split across batches anywhere,
    /// a key's changes included.
    fn before(batches: &[&[(i64, i64, &str)]]) -> SendableRecordBatchStream {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(SEQ, DataType::Int64, false),
            Field::new(OP, DataType::Utf8View, false),
        ]));
        let batches = batches
            .iter()
            .map(|rows| {
                let ids = Int64Array::from_iter_values(rows.iter().map(|r| r.0));
                let seqs = Int64Array::from_iter_values(rows.iter().map(|r| r.1));
                let ops = StringArray::from_iter_values(rows.iter().map(|r| r.2));
                let ops = arrow::compute::cast(&ops, &DataType::Utf8View).unwrap();
                RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(seqs), ops])
                    .unwrap()
            })
            .collect();
        stream(schema, batches)
    }

    fn read(batches: &[&[i64]]) -> SendableRecordBatchStream {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batches = batches
            .iter()
            .map(|ids| {
                let ids = Int64Array::from_iter_values(ids.iter().copied());
                RecordBatch::try_new(schema.clone(), vec![Arc::new(ids)]).unwrap()
            })
            .collect();
        stream(schema, batches)
    }

    #[tokio::test]
    async fn keys_the_run_did_not_read_are_gone_unless_deleted_last() {
        // 1: changed across a batch boundary, not read → gone at its last seq (4).
        // 2: read by the run → stays. 3: deleted last → not gone again. 5: not read → gone.
        // 6: deleted then inserted again, not read → gone. 9: read after every other key.
        let gone = gone_seqs(
            before(&[
                &[(1, 1, "r"), (1, 2, "u")],
                &[(1, 4, "u"), (2, 3, "r")],
                &[(3, 5, "r"), (3, 6, "d"), (5, 7, "r")],
                &[(6, 8, "d"), (6, 9, "c")],
            ]),
            read(&[&[2], &[4, 9]]),
            1,
        )
        .await
        .unwrap();
        assert_eq!(gone, vec![4, 7, 9]);
    }

    #[tokio::test]
    async fn nothing_is_gone_when_the_run_read_every_key() {
        let gone = gone_seqs(
            before(&[&[(1, 1, "r")], &[(2, 2, "r"), (3, 3, "u")]]),
            read(&[&[1, 2], &[3]]),
            1,
        )
        .await
        .unwrap();
        assert!(gone.is_empty(), "{gone:?}");
        let empty = gone_seqs(before(&[]), read(&[]), 1).await.unwrap();
        assert!(empty.is_empty());
    }
}
