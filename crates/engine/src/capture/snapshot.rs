//! Snapshots: a table read in chunks across several consistent views, committed as chunks
//! land, resumed from the chunks not committed, completed as an image.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::{mpsc, Notify};

use sluice_core::change::{data_schema, stamp_rows, Op};
use sluice_core::failpoint;
use sluice_lake::{LakeTable, LakeWriter, SEQ_APP_ID};
use sluice_sources::source::{Chunk, ChunkReader, SharedSource, SnapshotPlan, SourceTable};
use sluice_sources::SourceError;

use super::positions::{self, Ids};
use super::table::Captured;
use super::write_reads;
use crate::image::Images;
use crate::progress::Progress;
use crate::{EngineError, Project};

/// Snapshot chunks per lake commit: fewer, larger files; a crash re-reads at most this many
/// chunks per reader (with the default 100,000-row chunks, a commit per million rows).
const CHUNKS_PER_COMMIT: u64 = 10;

/// How a snapshot runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SnapshotSettings {
    pub parallelism: usize,
    pub chunk_rows: u64,
    /// Start a new run even if the last one finished (`--resnapshot`).
    pub fresh: bool,
    /// A change stream follows: record where each reader's view stands.
    pub stream: bool,
    pub progress: bool,
}

/// What snapshot readers send the collector: a chunk's rows as they are read, then its end
/// (with where its reader's view stood).
enum Msg {
    Rows {
        index: u64,
        batch: RecordBatch,
    },
    Done {
        index: u64,
        read_at: i64,
        end: Chunk,
    },
}

/// The chunks left to read, shared by the readers, behind a gate the collector closes
/// before a commit so that no chunk is half in it.
struct ChunkQueue {
    state: Mutex<QueueState>,
    /// Wakes readers waiting at the gate.
    opened: Notify,
}

struct QueueState {
    pending: VecDeque<u64>,
    gate_closed: bool,
    /// How many times the gate opened.
    openings: u64,
    stopped: bool,
    /// Chunks whose rows go to the current writer and whose end has not arrived.
    in_flight: usize,
    /// Chunks started while the gate is closed: read ahead, held by their reader until it
    /// opens, then in flight for the next commit.
    ahead: usize,
}

enum Take {
    /// Read it; `ahead` holds it until the gate opening after `openings`.
    Chunk {
        index: u64,
        ahead: Option<u64>,
    },
    Finished,
}

/// What a reader holds of a chunk read ahead of a closed gate, at most.
const READ_AHEAD_BYTES: usize = 64 << 20;

impl ChunkQueue {
    fn new(pending: VecDeque<u64>) -> Self {
        Self {
            state: Mutex::new(QueueState {
                pending,
                gate_closed: false,
                openings: 0,
                stopped: false,
                in_flight: 0,
                ahead: 0,
            }),
            opened: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().expect("chunk queue lock")
    }

    fn take(&self) -> Take {
        let mut q = self.lock();
        if q.stopped || q.pending.is_empty() {
            return Take::Finished;
        }
        let index = q.pending.pop_front().expect("not empty");
        if q.gate_closed {
            q.ahead += 1;
            return Take::Chunk {
                index,
                ahead: Some(q.openings),
            };
        }
        q.in_flight += 1;
        Take::Chunk { index, ahead: None }
    }

    /// Whether the gate opened since `openings`; None once stopped.
    fn opened_since(&self, openings: u64) -> Option<bool> {
        let q = self.lock();
        (!q.stopped).then_some(q.openings > openings)
    }

    /// Waits until the gate opened since `openings`; false once stopped.
    async fn wait_opened(&self, openings: u64) -> bool {
        loop {
            let opened = self.opened.notified();
            match self.opened_since(openings) {
                None => return false,
                Some(true) => return true,
                Some(false) => opened.await,
            }
        }
    }

    /// A chunk's end arrived.
    fn finished_one(&self) {
        let mut q = self.lock();
        q.in_flight = q.in_flight.saturating_sub(1);
    }

    /// Closes the gate (no chunk starts until it opens); true when none is in flight.
    fn close_gate(&self) -> bool {
        let mut q = self.lock();
        q.gate_closed = true;
        q.in_flight == 0
    }

    /// Opens the gate: chunks read ahead are in flight from now on.
    fn open_gate(&self) {
        let mut q = self.lock();
        q.gate_closed = false;
        q.openings += 1;
        q.in_flight += std::mem::take(&mut q.ahead);
        drop(q);
        self.opened.notify_waiters();
    }

    /// No chunk starts any more.
    fn stop(&self) {
        self.lock().stopped = true;
        self.opened.notify_waiters();
    }
}

/// Reads chunk `index` on `reader`, sending its rows to the collector as they come; None
/// when the collector is gone. A chunk taken while the gate is closed (`ahead`) is read
/// ahead, up to [`READ_AHEAD_BYTES`] held, and sent once the gate opens: a reader does not
/// sit idle while the others finish for a commit.
async fn read_chunk(
    reader: &mut dyn ChunkReader,
    (table, plan): (&SourceTable, &SnapshotPlan),
    (index, ahead): (u64, Option<u64>),
    read_at: i64,
    chunks: &ChunkQueue,
    tx: &mpsc::Sender<Result<Msg, SourceError>>,
) -> Option<Result<Msg, SourceError>> {
    let (rows_tx, rows_rx) = mpsc::channel::<RecordBatch>(1);
    let read = async move {
        let end = reader.read(table, plan, index, &rows_tx).await;
        drop(rows_tx);
        end
    };
    // Takes the receiver: when the collector is gone it is dropped, so the reader's next
    // send fails instead of waiting forever.
    let forward = async move {
        let mut rows_rx = rows_rx;
        let held = if let Some(openings) = ahead {
            let mut held = Vec::new();
            let mut bytes = 0;
            let opened = chunks.wait_opened(openings);
            tokio::pin!(opened);
            let opened = loop {
                tokio::select! {
                    open = &mut opened => break open,
                    batch = rows_rx.recv(), if bytes < READ_AHEAD_BYTES => match batch {
                        Some(b) => {
                            bytes += b.get_array_memory_size();
                            held.push(b);
                        }
                        None => break (&mut opened).await,
                    },
                }
            };
            if !opened {
                return false;
            }
            held
        } else {
            Vec::new()
        };
        // What was held first, then the rest as it comes.
        let mut held = held.into_iter();
        loop {
            let batch = match held.next() {
                Some(b) => b,
                None => match rows_rx.recv().await {
                    Some(b) => b,
                    None => return true,
                },
            };
            if tx.send(Ok(Msg::Rows { index, batch })).await.is_err() {
                return false;
            }
        }
    };
    let (end, forwarded) = tokio::join!(read, forward);
    forwarded.then(|| {
        end.map(|end| Msg::Done {
            index,
            read_at,
            end,
        })
    })
}

/// Reads a table in chunks across `parallelism` views and commits them to the lake; resumes
/// an interrupted run.
///
/// A run is an image of the table ([`Images`]): it opens with the run's first commit and
/// completes with its last, which also deletes what the table held before and the run no
/// longer saw (a row deleted at the source leaves merge tables). When a stream follows, the
/// run's first commit records where it starts (the earliest view's position), and each
/// chunk where its own view stood, so the stream applies only what that chunk did not see.
pub(crate) async fn snapshot(
    project: &Project,
    source: &SharedSource,
    t: &mut Captured,
    how: SnapshotSettings,
) -> Result<(), EngineError> {
    let ids = Ids::of(source.as_ref());
    let run = t.log.app_version(&ids.run()).await?;
    let done = t.log.app_version(&ids.done()).await?;
    let resuming = run.is_some() && run != done && !how.fresh;
    let ingested_at = Utc::now();
    let mut readers = source.snapshot_readers(how.parallelism, how.stream).await?;
    let mut images = Images::of(&t.log).await?;
    let (run, plan) = match (resuming, run) {
        (true, Some(run)) => {
            let plan = positions::snapshot_plan(&t.log, source.as_ref())
                .await?
                .ok_or_else(|| {
                    EngineError::Internal(format!(
                        "{}: snapshot run {run} has no plan recorded",
                        t.log.path()
                    ))
                })?;
            tracing::info!(table = %t.spec.table, run, "resuming the snapshot");
            (run, plan)
        }
        _ => {
            let plan = source.plan_snapshot(&t.table, how.chunk_rows).await?;
            let run = ingested_at.timestamp_millis().max(run.unwrap_or(0) + 1);
            let mut apps = vec![(ids.run(), run)];
            apps.extend(positions::plan_apps(&ids, &plan));
            // The stream starts where the earliest view stands (a resumed run keeps it).
            let start = readers
                .iter()
                .filter_map(|r| r.read_at().zip(r.position()))
                .min_by_key(|(at, _)| *at)
                .map(|(_, p)| p);
            if let Some(p) = &start {
                apps.extend(positions::position_apps(&ids, p));
            }
            // A new run is a new image, whatever an abandoned one left open.
            images.open = None;
            apps.extend(images.opening(t.log.last_seq().await? + 1));
            let mut meta = serde_json::Map::new();
            meta.insert(
                "sluice".into(),
                json!({ "snapshot": run, "chunks": plan.chunks, "stream_from": start.is_some() }),
            );
            t.log.writer()?.commit(&mut t.log, apps, meta).await?;
            (run, plan)
        }
    };
    // The chunks already in the lake, from one read of the log (not one per chunk).
    let landed = match resuming {
        true => t.log.app_versions().await?,
        false => Default::default(),
    };
    let pending: VecDeque<u64> = (0..plan.chunks)
        .filter(|&i| !landed.contains_key(&ids.chunk(run, i)))
        .collect();
    let chunks = Arc::new(ChunkQueue::new(pending));
    // A few batches per reader: enough to keep them reading while the writer works, few
    // enough that they do not take the CPU the writer needs (a larger buffer measured slower).
    let (tx, mut rx) = mpsc::channel::<Result<Msg, SourceError>>(4 * how.parallelism.max(1));
    let mut workers = Vec::new();
    for mut reader in readers.drain(..) {
        let (chunks, tx, table, plan) = (chunks.clone(), tx.clone(), t.table.clone(), plan.clone());
        workers.push(tokio::spawn(async move {
            // The chunks of a reader are as of its view's position.
            let read_at = reader.read_at().unwrap_or(1);
            while let Take::Chunk { index, ahead } = chunks.take() {
                let what = (&table, &plan);
                let done =
                    read_chunk(reader.as_mut(), what, (index, ahead), read_at, &chunks, &tx).await;
                let Some(done) = done else { break };
                let failed = done.is_err();
                if tx.send(done).await.is_err() || failed {
                    break;
                }
            }
            reader.close().await;
        }));
    }
    drop(tx);

    // Rows go to the writer as they arrive, the chunks in flight interleaved, never held.
    // A commit must hold whole chunks only, so before one the queue's gate closes: readers
    // finish the chunks in flight and read the next ones ahead, the writer commits, the gate
    // opens.
    let mut seq = t.log.last_seq().await?;
    let mut writer = t.log.writer()?;
    let mut in_commit: Vec<(u64, i64)> = Vec::new();
    let mut open_chunks: HashSet<u64> = HashSet::new();
    let mut rows_in_commit = 0u64;
    let mut progress = Progress::new(
        how.progress,
        format!("{}.{} snapshot", t.spec.source, t.spec.table),
    );
    let mut failure = None;
    let mut zero_dates = 0;
    let at = (Some(ingested_at), ingested_at);
    let outcome: Result<(), EngineError> = async {
        while let Some(msg) = rx.recv().await {
            match msg {
                Err(e) => {
                    failure = Some(EngineError::from(e));
                    break;
                }
                Ok(Msg::Rows { index, batch }) => {
                    open_chunks.insert(index);
                    let n = write_reads(&mut writer, &batch, &mut seq, at, &t.spec.table).await?;
                    rows_in_commit += n;
                    progress.add(n);
                }
                Ok(Msg::Done {
                    index,
                    read_at,
                    end,
                }) => {
                    open_chunks.remove(&index);
                    t.quarantine(&project.lake, &ids.chunk(run, index), end.rejects)
                        .await?;
                    zero_dates += end.zero_dates;
                    in_commit.push((index, read_at));
                    chunks.finished_one();
                    let due = rows_in_commit >= CHUNKS_PER_COMMIT * how.chunk_rows;
                    if due && chunks.close_gate() {
                        let w = std::mem::replace(&mut writer, t.log.writer()?);
                        chunks.open_gate();
                        commit_chunks(t, &ids, w, run, &in_commit, seq, Vec::new()).await?;
                        t.report.rows += rows_in_commit;
                        in_commit.clear();
                        rows_in_commit = 0;
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    // Readers waiting at the gate or sending rows stop too.
    chunks.stop();
    drop(rx);
    for w in workers {
        w.await
            .map_err(|e| EngineError::Internal(format!("snapshot reader: {e}")))?;
    }
    outcome?;
    // What was read whole is committed; on a failure the rest resumes next run. Rows of a
    // chunk cut short share the writer with the chunks read whole since the last commit:
    // those are read again too.
    if !in_commit.is_empty() && open_chunks.is_empty() {
        commit_chunks(t, &ids, writer, run, &in_commit, seq, Vec::new()).await?;
        t.report.rows += rows_in_commit;
    } else if !open_chunks.is_empty() && !in_commit.is_empty() {
        tracing::warn!(table = %t.spec.table, chunks = in_commit.len(), "a chunk was cut short: the chunks read since the last commit are read again next run");
    }
    if zero_dates > 0 {
        tracing::warn!(table = %t.spec.table, zero_dates, "zero dates (0000-00-00) landed as NULL");
        t.report.zero_dates += zero_dates;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    complete_run(t, &ids, &mut images, run, ingested_at).await?;
    tracing::info!(table = %t.spec.table, rows = t.report.rows, run, "snapshot complete");
    Ok(())
}

/// Commits chunks `(index, read at)` of a run with what `writer` holds, and `more` positions.
async fn commit_chunks(
    t: &mut Captured,
    ids: &Ids,
    writer: LakeWriter,
    run: i64,
    chunks: &[(u64, i64)],
    seq: i64,
    more: Vec<(String, i64)>,
) -> Result<(), EngineError> {
    let mut apps: Vec<(String, i64)> = chunks
        .iter()
        .map(|(i, at)| (ids.chunk(run, *i), *at))
        .collect();
    apps.push((SEQ_APP_ID.to_string(), seq));
    let complete = !more.is_empty();
    apps.extend(more);
    let indices: Vec<u64> = chunks.iter().map(|(i, _)| *i).collect();
    let mut meta = serde_json::Map::new();
    meta.insert(
        "sluice".into(),
        json!({ "snapshot": run, "chunks": indices, "rows": writer.rows(), "complete": complete }),
    );
    let rows = writer.rows();
    let v = writer.commit(&mut t.log, apps, meta).await?;
    t.committed(rows, v);
    failpoint::hit(failpoint::AFTER_LAKE_COMMIT);
    Ok(())
}

/// Completes a run whose chunks are all in the lake: one commit that deletes the rows the
/// table held before the run and the run did not see (their keys are gone at the source),
/// marks the run done and closes its image. A crash before it leaves the run to resume with
/// no chunk left to read, and this runs again.
async fn complete_run(
    t: &mut Captured,
    ids: &Ids,
    images: &mut Images,
    run: i64,
    at: DateTime<Utc>,
) -> Result<(), EngineError> {
    let mut seq = t.log.last_seq().await?;
    let mut writer = t.log.writer()?;
    let mut deleted = 0u64;
    let open = images.open.filter(|_| !t.spec.primary_key.is_empty());
    // Only rows landed before the run can have vanished: a first snapshot (no data file with
    // a change before the run, by the commits' statistics) skips the pass over every key.
    let held_before = match open {
        Some(open) => !t.log.data_files(0, open - 1)?.is_empty(),
        None => false,
    };
    if let (true, Some(open)) = (held_before, open) {
        use futures::StreamExt;
        let mut gone = vanished(&t.log, &t.spec.primary_key, open).await?;
        while let Some(batch) = gone.next().await {
            let batch = batch?;
            let n = batch.num_rows();
            let stamped = stamp_rows(
                &batch,
                &vec![Op::Delete; n],
                &vec![Some(at.timestamp_micros()); n],
                seq + 1,
                at,
            )
            .map_err(|e| EngineError::Internal(format!("stamping {}: {e}", t.spec.table)))?;
            writer.write(stamped).await?;
            seq += n as i64;
            deleted += n as u64;
        }
    }
    if deleted > 0 {
        tracing::info!(table = %t.spec.table, rows = deleted, "rows gone from the source since the last snapshot: deleted");
        t.report.deleted += deleted;
    }
    let mut more = vec![(ids.done(), run)];
    more.extend(images.closing(seq, t.log.version() + 1));
    commit_chunks(t, ids, writer, run, &[], seq, more).await
}

/// Memory the pass over every key may hold before it spills to disk.
const VANISHED_MEMORY: usize = 64 << 20;

/// A DataFusion session whose aggregates spill to temporary files past [`VANISHED_MEMORY`]
/// rather than grow with the table's keys.
fn spilling_session() -> Result<datafusion::prelude::SessionContext, EngineError> {
    use datafusion::execution::memory_pool::FairSpillPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(VANISHED_MEMORY)))
        .build_arc()?;
    Ok(datafusion::prelude::SessionContext::new_with_config_rt(
        datafusion::prelude::SessionConfig::new(),
        runtime,
    ))
}

/// The rows the table held before the snapshot run that began at `run_from` (the last change
/// per key, unless a delete) whose key the run did not read. Found in two passes so that
/// memory follows the keys, not the rows: one aggregate over the key columns and
/// `_sluice_seq` gives, per key the run did not read, the seq of its last change before the
/// run; then the change log is read in that seq range and only those rows are kept.
async fn vanished(
    log: &LakeTable,
    key: &[String],
    run_from: i64,
) -> Result<futures::stream::BoxStream<'static, Result<RecordBatch, EngineError>>, EngineError> {
    use arrow::array::{Array, BooleanArray, Int64Array};
    use futures::{StreamExt, TryStreamExt};
    use sluice_core::names::quote_ident as q;
    let ctx = spilling_session()?;
    crate::query::register(&ctx, "changes".into(), log).await?;
    let keys: Vec<String> = key.iter().map(|k| q(k)).collect();
    let (seq, op) = (q(sluice_core::change::SEQ), q(sluice_core::change::OP));
    let last_before = format!(
        "SELECT max(CASE WHEN {seq} < {run_from} THEN {seq} END) AS _sluice_last
         FROM changes GROUP BY {keys}
         HAVING max(CASE WHEN {seq} >= {run_from} THEN 1 ELSE 0 END) = 0",
        keys = keys.join(", "),
    );
    let mut gone = HashSet::new();
    let mut lasts = ctx.sql(&last_before).await?.execute_stream().await?;
    while let Some(batch) = lasts.try_next().await? {
        let col = batch.column(0);
        let Some(seqs) = col.as_any().downcast_ref::<Int64Array>() else {
            return Err(EngineError::Internal(format!(
                "{}: _sluice_seq is {}, not Int64",
                log.path(),
                col.data_type()
            )));
        };
        gone.extend(seqs.iter().flatten());
    }
    let (Some(&lo), Some(&hi)) = (gone.iter().min(), gone.iter().max()) else {
        return Ok(futures::stream::empty().boxed());
    };
    let data: Vec<String> = data_schema(log.schema()?.as_ref())
        .fields()
        .iter()
        .map(|f| q(f.name()))
        .collect();
    let rows = format!(
        "SELECT {cols}, {seq} AS _sluice_s FROM changes
         WHERE {seq} BETWEEN {lo} AND {hi} AND {op} <> 'd'",
        cols = data.join(", "),
    );
    let width = data.len();
    let stream = ctx.sql(&rows).await?.execute_stream().await?;
    Ok(stream
        .map(move |batch| {
            let batch = batch?;
            let seqs = batch
                .column(width)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| EngineError::Internal("_sluice_seq is not Int64".into()))?;
            let keep: BooleanArray = seqs
                .iter()
                .map(|s| Some(s.is_some_and(|s| gone.contains(&s))))
                .collect();
            let arrow_err = |e: arrow::error::ArrowError| EngineError::Internal(e.to_string());
            let kept = arrow::compute::filter_record_batch(&batch, &keep).map_err(arrow_err)?;
            kept.project(&(0..width).collect::<Vec<_>>())
                .map_err(arrow_err)
        })
        .boxed())
}
