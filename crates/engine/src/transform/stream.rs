//! The transforms' change stream: each transform's run is one transaction, given when its
//! inputs (or its SQL) changed since the position committed. Caught up, it ends; following,
//! it looks at the inputs again every poll interval (and at a scheduled transform's ticks).
//!
//! Every await it makes keeps its state in the stream, so the driver may drop `next` at any
//! point (it does, to commit on time) and the next call goes on where that one was.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::sql::TableReference;
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::time::Instant;

use sluice_core::change::Op;
use sluice_core::config::{TransformConfig, TRANSFORMS_SOURCE};
use sluice_core::retry::ErrorKind;
use sluice_core::schedule::Schedule;
use sluice_lake::{Lake, LakeTable, TablePath};
use sluice_sources::document::definitions;
use sluice_sources::source::{
    ChangeStream, Position, SourceTable, StreamEvent, StreamTable, Taken,
};
use sluice_sources::SourceError;

use super::incremental;
use super::plan::{self, OWN_STATE};
use crate::query::{current_state_view, register};
use crate::EngineError;
use sluice_core::names::quote_ident as q;

/// A run's rows are given to the driver (to be written ahead of the run's commit) each time
/// this many bytes of them are buffered: a result of any size streams through.
const OPEN_BYTES: usize = 64 << 20;

/// The change log of a transform's own table, as a run's session names it.
const OWN_CHANGES: &str = "__sluice_own_changes";

struct Table {
    table: SourceTable,
    /// The position of the last run given (committed, or being committed).
    committed: Position,
    /// A run was given and the driver has not committed it yet: the table's state in the
    /// lake is behind, so no run may start from it.
    in_flight: bool,
    stopped: bool,
    schedule: Option<Schedule>,
    /// Following with a schedule: the next tick.
    due: Option<DateTime<Utc>>,
    buffered: Taken,
    buffered_bytes: usize,
}

/// What looking at a transform found.
enum Start {
    /// Its inputs and SQL are as they were at the committed position.
    Unchanged,
    /// Its result's columns changed: the table as it is now.
    Changed(SourceTable),
    /// The changes that bring its table to the result, as they are computed.
    Run {
        rows: SendableRecordBatchStream,
        at: Position,
    },
}

struct Running {
    index: usize,
    rows: SendableRecordBatchStream,
    at: Position,
    /// Rows buffered since the last `Open` (or the start).
    given: usize,
    micros: i64,
}

pub(super) struct TransformStream {
    lake: Lake,
    transforms: Arc<BTreeMap<String, TransformConfig>>,
    tables: Vec<Table>,
    /// Following: how often the inputs are looked at.
    poll: Option<Duration>,
    /// The next table to look at in this round.
    next: usize,
    starting: Option<(usize, BoxFuture<'static, Result<Start, EngineError>>)>,
    running: Option<Running>,
    /// Following, between rounds: when the next round starts.
    resume_at: Option<Instant>,
}

impl TransformStream {
    pub fn new(
        lake: Lake,
        transforms: Arc<BTreeMap<String, TransformConfig>>,
        tables: Vec<StreamTable>,
        poll: Option<Duration>,
    ) -> TransformStream {
        let tables = tables
            .into_iter()
            .map(|t| Table {
                schedule: transforms
                    .get(&t.table.name)
                    .and_then(|c| c.schedule.as_deref())
                    .and_then(|s| Schedule::parse(s).ok()),
                table: t.table,
                committed: t.from,
                in_flight: false,
                stopped: false,
                due: None,
                buffered: Taken::default(),
                buffered_bytes: 0,
            })
            .collect();
        TransformStream {
            lake,
            transforms,
            tables,
            poll,
            next: 0,
            starting: None,
            running: None,
            resume_at: None,
        }
    }

    fn index(&self, table: &str) -> Option<usize> {
        self.tables.iter().position(|t| t.table.name == table)
    }

    /// Ends the run under way: its rows are dropped, and the table fails with `why`.
    fn fail_run(&mut self, why: String) -> StreamEvent {
        let run = self.running.take().expect("a run under way");
        let t = &mut self.tables[run.index];
        t.buffered = Taken::default();
        t.buffered_bytes = 0;
        StreamEvent::Failed {
            table: t.table.name.clone(),
            why: format!("transform {}: {why}", t.table.name),
            kind: ErrorKind::Fatal,
        }
    }
}

impl Table {
    /// Whether the transform may run now: always caught up; following, at its schedule's
    /// ticks when it has one (the first tick after the stream opened).
    fn due(&mut self, following: bool) -> bool {
        let (Some(schedule), true) = (&self.schedule, following) else {
            return true;
        };
        let now = Utc::now();
        match self.due {
            Some(d) if now >= d => {
                self.due = schedule.next_after(now);
                true
            }
            Some(_) => false,
            None => {
                self.due = schedule.next_after(now);
                false
            }
        }
    }

    /// Buffers one batch of the difference: its rows in the table's columns, each with its
    /// operation. A NULL key or a key on several result rows is the SQL's error, told with
    /// the key.
    fn buffer(&mut self, batch: &RecordBatch, micros: i64) -> Result<usize, String> {
        let schema = self.table.schema.clone();
        let width = schema.fields().len();
        let text = |e: arrow::error::ArrowError| e.to_string();
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(j, f)| cast(batch.column(j), f.data_type()))
            .collect::<Result<_, _>>()
            .map_err(text)?;
        let rows = RecordBatch::try_new(schema.clone(), columns).map_err(text)?;
        let ops = cast(batch.column(width), &DataType::Utf8).map_err(text)?;
        let counts = cast(batch.column(width + 1), &DataType::Int64).map_err(text)?;
        let (ops, counts) = (ops.as_string::<i32>(), counts.as_primitive::<Int64Type>());
        let keys: Vec<(&String, &ArrayRef)> = self
            .table
            .key
            .iter()
            .filter_map(|k| Some((k, rows.column(schema.index_of(k).ok()?))))
            .collect();
        let key_of = |row: usize| -> String {
            keys.iter()
                .map(|(k, col)| {
                    let value = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())
                        .map(|f| f.value(row).to_string())
                        .unwrap_or_default();
                    format!("{k} = {value}")
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (k, col) in &keys {
            if let Some(row) = (0..rows.num_rows()).find(|&r| col.is_null(r)) {
                return Err(format!(
                    "a result row has NULL in key column `{k}` ({}): filter such rows out, or key on other columns",
                    key_of(row)
                ));
            }
        }
        if let Some(row) = (0..rows.num_rows()).find(|&r| counts.value(r) > 1) {
            return Err(format!(
                "{} result rows share the key ({}): make the key unique (GROUP BY it, or add columns to primary_key)",
                counts.value(row),
                key_of(row)
            ));
        }
        for r in 0..rows.num_rows() {
            self.buffered.ops.push(match ops.value(r) {
                "c" => Op::Insert,
                "u" => Op::Update,
                _ => Op::Delete,
            });
        }
        let n = rows.num_rows();
        self.buffered
            .commit_micros
            .extend(std::iter::repeat_n(Some(micros), n));
        self.buffered_bytes += rows.get_array_memory_size();
        self.buffered.rows.push(rows);
        Ok(n)
    }
}

/// Looks at transform `table`: whether its inputs moved past `committed`, whether its
/// columns changed, and if it is to run, starts computing its difference.
async fn start(
    lake: Lake,
    transforms: Arc<BTreeMap<String, TransformConfig>>,
    table: SourceTable,
    committed: Position,
) -> Result<Start, EngineError> {
    let name = table.name.clone();
    let sql = &transforms[&name].sql;
    let run = plan::open(&lake, &transforms, &name, &table.key).await?;
    // The digest leads every position (an incremental one goes on with its watermark).
    if committed.0.get(..run.at.0.len()) == Some(run.at.0.as_slice()) {
        return Ok(Start::Unchanged);
    }
    let schema = plan::result_schema(&run, &name, sql, &table.key).await?;
    let now = definitions(&schema);
    if now != table.definitions {
        return Ok(Start::Changed(SourceTable {
            definitions: now,
            schema,
            ..table
        }));
    }
    let own = LakeTable::open(&lake, &TablePath::changes(TRANSFORMS_SOURCE, &name))
        .await?
        .ok_or_else(|| EngineError::Internal(format!("transform {name}: no change log")))?;
    register(&run.ctx, TableReference::bare(OWN_CHANGES), &own).await?;
    let own_schema = own.schema()?;
    let follow = incremental::follow(&run, sql, &table.key).await?;
    let (after, at) = match &follow {
        Some(f) => {
            let watermark = f.watermark;
            // A watermark past the input's highest change: the input was made again.
            let after = f.after(&committed).filter(|w| *w <= watermark);
            (after, f.position(&run, watermark))
        }
        None => (None, run.at.clone()),
    };
    match (&follow, after) {
        (Some(f), Some(watermark)) => {
            f.narrow(
                &run.ctx,
                watermark,
                &q(OWN_CHANGES),
                own_schema.as_ref(),
                &q(OWN_STATE),
            )
            .await?;
            tracing::info!(transform = %name, after_seq = watermark, "incremental run: the input's changes after the last run");
        }
        _ => {
            let view = current_state_view(
                &TableReference::bare(OWN_STATE),
                &TableReference::bare(OWN_CHANGES),
                own_schema.as_ref(),
                &table.key,
            );
            run.ctx.sql(&view).await?.collect().await?;
        }
    }
    let rows = run
        .ctx
        .sql(&plan::difference(sql, &schema, &table.key, &own_schema))
        .await?
        .execute_stream()
        .await?;
    Ok(Start::Run { rows, at })
}

#[async_trait]
impl ChangeStream for TransformStream {
    async fn next(&mut self) -> Result<Option<StreamEvent>, SourceError> {
        loop {
            if let Some(run) = self.running.as_mut() {
                let i = run.index;
                match run.rows.next().await {
                    Some(Ok(batch)) => {
                        let micros = run.micros;
                        match self.tables[i].buffer(&batch, micros) {
                            Ok(n) => {
                                let run = self.running.as_mut().expect("still running");
                                run.given += n;
                                let t = &mut self.tables[i];
                                if t.buffered_bytes >= OPEN_BYTES {
                                    t.buffered_bytes = 0;
                                    let rows = std::mem::take(&mut run.given);
                                    return Ok(Some(StreamEvent::Open {
                                        tables: vec![(t.table.name.clone(), rows)],
                                    }));
                                }
                            }
                            Err(why) => return Ok(Some(self.fail_run(why))),
                        }
                    }
                    Some(Err(e)) => {
                        return Ok(Some(self.fail_run(format!("computing the result: {e}"))))
                    }
                    None => {
                        let run = self.running.take().expect("still running");
                        let t = &mut self.tables[i];
                        t.committed = run.at.clone();
                        t.in_flight = true;
                        return Ok(Some(StreamEvent::Committed {
                            at: run.at,
                            commit_micros: run.micros,
                            tables: vec![(t.table.name.clone(), run.given)],
                        }));
                    }
                }
                continue;
            }
            if let Some((i, starting)) = self.starting.as_mut() {
                let i = *i;
                let started = starting.await;
                self.starting = None;
                let t = &mut self.tables[i];
                match started {
                    Ok(Start::Unchanged) => self.next = i + 1,
                    // Looked at again once the driver has taken the change (or stopped it).
                    Ok(Start::Changed(now)) => {
                        t.table = now.clone();
                        return Ok(Some(StreamEvent::Changed {
                            table: now,
                            at: t.committed.clone(),
                            statement: "the transform's result has other columns".into(),
                        }));
                    }
                    Ok(Start::Run { rows, at }) => {
                        self.running = Some(Running {
                            index: i,
                            rows,
                            at,
                            given: 0,
                            micros: Utc::now().timestamp_micros(),
                        });
                        self.next = i + 1;
                    }
                    // Following, what may pass (an input not landed yet) is tried next round.
                    Err(e) if self.poll.is_some() && e.kind() != ErrorKind::Fatal => {
                        tracing::warn!(transform = %t.table.name, error = %e, "transform not run; trying again next round");
                        self.next = i + 1;
                    }
                    Err(e) => {
                        self.next = i + 1;
                        return Ok(Some(StreamEvent::Failed {
                            table: t.table.name.clone(),
                            why: e.to_string(),
                            kind: e.kind(),
                        }));
                    }
                }
                continue;
            }
            if self.next < self.tables.len() {
                let i = self.next;
                let following = self.poll.is_some();
                let t = &mut self.tables[i];
                if t.stopped || t.in_flight || !t.due(following) {
                    self.next += 1;
                    continue;
                }
                let look = start(
                    self.lake.clone(),
                    self.transforms.clone(),
                    t.table.clone(),
                    t.committed.clone(),
                );
                self.starting = Some((i, Box::pin(look)));
                continue;
            }
            let Some(poll) = self.poll else {
                return Ok(None);
            };
            let at = *self.resume_at.get_or_insert_with(|| Instant::now() + poll);
            tokio::time::sleep_until(at).await;
            self.resume_at = None;
            self.next = 0;
        }
    }

    fn take(&mut self, table: &str) -> Result<Taken, SourceError> {
        let Some(i) = self.index(table) else {
            return Ok(Taken::default());
        };
        let t = &mut self.tables[i];
        t.buffered_bytes = 0;
        Ok(std::mem::take(&mut t.buffered))
    }

    fn stop(&mut self, table: &str) {
        let Some(i) = self.index(table) else {
            return;
        };
        self.tables[i].stopped = true;
        if self.running.as_ref().is_some_and(|r| r.index == i) {
            self.running = None;
        }
        if self.starting.as_ref().is_some_and(|(s, _)| *s == i) {
            self.starting = None;
            self.next = i + 1;
        }
    }

    fn positions(&self) -> Vec<(String, Position)> {
        self.tables
            .iter()
            .filter(|t| !t.stopped)
            .map(|t| (t.table.name.clone(), t.committed.clone()))
            .collect()
    }

    fn committed(&mut self, table: &str, at: &Position) {
        if let Some(i) = self.index(table) {
            if self.tables[i].committed == *at {
                self.tables[i].in_flight = false;
            }
        }
    }
}
