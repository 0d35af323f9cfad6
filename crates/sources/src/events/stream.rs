//! The events change stream: each request queued in the intake is one transaction of its
//! table, given to the driver as a `Committed`; new fields become columns first (a `Changed`
//! before the rows that bring them); a request is answered once the driver says its table is
//! committed up to it. Dropping the stream gives the queue back to the intake, and every
//! request not committed is answered by its dropped sender: nothing of it counts.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use super::body::Line;
use super::intake::{Answer, Intake, Posted};
use super::{position, seq_of, Settings};
use crate::document::{added_columns, retyped as retyped_table, texts, widened, Scalar};
use crate::files::rows::RowBatcher;
use crate::source::{ChangeStream, Position, SourceTable, StreamEvent, StreamTable, Taken};
use crate::SourceError;
use sluice_core::change::Op;
use sluice_core::reject::Reject;

/// A table's rows buffered since the driver last took them.
struct Table {
    table: SourceTable,
    batches: Vec<RecordBatch>,
    micros: Vec<Option<i64>>,
    rejects: Vec<Reject>,
    /// Halted or failed: its requests are refused.
    stopped: Option<String>,
}

/// A request given to the driver, waiting for its lake commit.
struct Waiting {
    seq: u64,
    table: String,
    answer: oneshot::Sender<Answer>,
    accepted: u64,
    duplicates: u64,
    rejected: Vec<(u64, String)>,
    _permit: OwnedSemaphorePermit,
}

/// Ids landed or buffered lately, as 128-bit hashes (a collision would drop an event: at
/// 128 bits it does not happen), in generations of a sixteenth of the dedupe window each, the
/// oldest dropped as the window passes: about 20 bytes an id, no time kept per id.
struct Seen {
    generations: VecDeque<(Instant, HashSet<u128>)>,
    window: Duration,
}

impl Seen {
    fn new(window: Duration) -> Seen {
        Seen {
            generations: VecDeque::new(),
            window,
        }
    }

    fn hash(table: &str, id: &str) -> u128 {
        let half = |salt: u8| {
            let mut h = DefaultHasher::new();
            salt.hash(&mut h);
            table.hash(&mut h);
            id.hash(&mut h);
            h.finish() as u128
        };
        (half(1) << 64) | half(2)
    }

    fn contains(&self, h: u128) -> bool {
        self.generations.iter().any(|(_, ids)| ids.contains(&h))
    }

    /// Adds an id (known not to be there).
    fn insert(&mut self, table: &str, id: &str) {
        let now = Instant::now();
        while self
            .generations
            .front()
            .is_some_and(|(born, _)| now.duration_since(*born) > self.window)
        {
            self.generations.pop_front();
        }
        let span = self.window / 16;
        if self
            .generations
            .back()
            .is_none_or(|(born, _)| now.duration_since(*born) >= span)
        {
            self.generations.push_back((now, HashSet::new()));
        }
        let newest = &mut self.generations.back_mut().expect("pushed above").1;
        newest.insert(Self::hash(table, id));
    }
}

pub(super) struct EventsStream {
    source: String,
    settings: Arc<Settings>,
    intake: Arc<Intake>,
    rx: Option<mpsc::UnboundedReceiver<Posted>>,
    follow: bool,
    tables: HashMap<String, Table>,
    /// The last request number given.
    seq: u64,
    queue: VecDeque<StreamEvent>,
    /// A request whose `Changed` is queued: given after it (true: built once already).
    held: Option<(Posted, bool)>,
    waiting: VecDeque<Waiting>,
    seen: Seen,
}

impl EventsStream {
    pub fn new(
        source: &str,
        settings: Arc<Settings>,
        intake: Arc<Intake>,
        rx: mpsc::UnboundedReceiver<Posted>,
        tables: Vec<StreamTable>,
        follow: bool,
    ) -> Result<EventsStream, SourceError> {
        let window = settings.dedupe;
        let mut s = EventsStream {
            source: source.to_string(),
            settings,
            intake,
            rx: Some(rx),
            follow,
            tables: HashMap::new(),
            seq: 0,
            queue: VecDeque::new(),
            held: None,
            waiting: VecDeque::new(),
            seen: Seen::new(window),
        };
        for t in tables {
            s.seq = s.seq.max(seq_of(&t.from));
            s.tables.insert(
                t.table.name.clone(),
                Table {
                    table: t.table,
                    batches: Vec::new(),
                    micros: Vec::new(),
                    rejects: Vec::new(),
                    stopped: None,
                },
            );
        }
        Ok(s)
    }

    pub fn table_names(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    /// Ids that landed in `table` lately: events carrying them again are retries.
    pub fn remember(&mut self, table: &str, ids: Vec<String>) {
        for id in ids {
            self.seen.insert(table, &id);
        }
    }

    /// Takes a request in: a `Changed` first when it brings new fields.
    fn admit(&mut self, p: Posted) {
        let Some(t) = self.tables.get_mut(&p.table) else {
            let _ = p.answer.send(Answer::Refused(format!(
                "no table `{}` in source `{}`",
                p.table, self.source
            )));
            return;
        };
        if let Some(why) = &t.stopped {
            let _ = p.answer.send(Answer::Refused(why.clone()));
            return;
        }
        let docs: Vec<&BTreeMap<String, Scalar>> = p
            .lines
            .iter()
            .filter_map(|l| l.columns.as_ref().ok())
            .collect();
        // The request is built after its `Changed` is taken, and the rows before it were
        // taken with it: the table can read with the new columns from here on.
        if let Some(wider) = widened(&t.table, &docs, true) {
            self.queue.push_back(StreamEvent::Changed {
                table: wider.clone(),
                at: position(self.seq),
                statement: format!(
                    "new fields in events of {}: {}",
                    p.table,
                    added_columns(&t.table, &wider)
                ),
            });
            t.table = wider;
        }
        self.held = Some((p, false));
    }

    /// Puts a request's events in its table: the `Committed` that gives them. Its rows are
    /// built apart first: when values no longer fit their columns, a `Changed` adding variant
    /// columns comes first and the request is built again (`retyped`: once).
    fn give(&mut self, p: Posted, retyped: bool) -> Result<Option<StreamEvent>, SourceError> {
        let Some(t) = self.tables.get_mut(&p.table) else {
            return Ok(None);
        };
        if let Some(why) = &t.stopped {
            let _ = p.answer.send(Answer::Refused(why.clone()));
            return Ok(None);
        }
        let received = p.received.timestamp_micros();
        let mut rows = batcher(&t.table)?;
        let mut built = Vec::new();
        let mut micros = Vec::new();
        let mut ids: HashSet<&str> = HashSet::new();
        let mut rejects: Vec<(&Line, Option<String>, String)> = Vec::new();
        let mut misfits: Vec<&BTreeMap<String, Scalar>> = Vec::new();
        let mut duplicates = 0u64;
        for line in &p.lines {
            let cols = match &line.columns {
                Ok(c) => c,
                Err(reason) => {
                    rejects.push((line, None, reason.clone()));
                    continue;
                }
            };
            let id = self
                .settings
                .id_field
                .as_ref()
                .and_then(|f| cols.get(f))
                .and_then(Scalar::text);
            if let Some(id) = id {
                // Landed before, or earlier in this request.
                if self.seen.contains(Seen::hash(&p.table, id)) || ids.contains(id) {
                    duplicates += 1;
                    continue;
                }
            }
            let texts = match texts(&t.table.schema, cols) {
                Ok(texts) => texts,
                Err(field) => {
                    rejects.push((
                        line,
                        Some(field.clone()),
                        format!("field `{field}` is not a column"),
                    ));
                    continue;
                }
            };
            if let Err(e) = rows.push_row(&texts) {
                let col = t.table.schema.field(e.column).name().clone();
                misfits.push(cols);
                rejects.push((
                    line,
                    Some(col.clone()),
                    format!("column {col}: {}", e.reason),
                ));
                continue;
            }
            if rows.is_full() {
                built.extend(rows.take());
            }
            ids.extend(id);
            micros.push(Some(
                self.settings
                    .time_field
                    .as_ref()
                    .and_then(|f| cols.get(f))
                    .and_then(event_time)
                    .unwrap_or(received),
            ));
        }
        if !misfits.is_empty() && !retyped {
            if let Some(wider) = retyped_table(&t.table, &misfits, true) {
                let added = added_columns(&t.table, &wider);
                self.queue.push_back(StreamEvent::Changed {
                    table: wider.clone(),
                    at: position(self.seq),
                    statement: format!("values of new types in events of {}: {added}", p.table),
                });
                t.table = wider;
                self.held = Some((p, true));
                return Ok(None);
            }
        }
        // What this request brings is final: keep it.
        let from = format!("POST /events/{}/{}", self.source, p.table);
        let mut rejected = Vec::with_capacity(rejects.len());
        for (line, column, reason) in rejects {
            t.rejects.push(Reject {
                file: from.clone(),
                line: line.number,
                column,
                raw: String::from_utf8_lossy(&p.body[line.range.clone()]).into_owned(),
                reason: reason.clone(),
            });
            rejected.push((line.number, reason));
        }
        for id in &ids {
            self.seen.insert(&p.table, id);
        }
        let accepted = micros.len() as u64;
        t.micros.extend(micros);
        built.extend(rows.take());
        t.batches.extend(built);
        self.seq += 1;
        self.waiting.push_back(Waiting {
            seq: self.seq,
            table: p.table.clone(),
            answer: p.answer,
            accepted,
            duplicates,
            rejected,
            _permit: p.permit,
        });
        Ok(Some(StreamEvent::Committed {
            at: position(self.seq),
            commit_micros: received,
            tables: vec![(p.table, accepted as usize)],
        }))
    }

    /// Answers each waiting request of `table` that `answer_of` has an answer for; the
    /// others wait on.
    fn answer(&mut self, table: &str, mut answer_of: impl FnMut(&Waiting) -> Option<Answer>) {
        let mut rest = VecDeque::with_capacity(self.waiting.len());
        for w in self.waiting.drain(..) {
            match (w.table == table).then(|| answer_of(&w)).flatten() {
                Some(a) => {
                    let _ = w.answer.send(a);
                }
                None => rest.push_back(w),
            }
        }
        self.waiting = rest;
    }
}

/// An event time: RFC 3339 text, or milliseconds since the epoch.
fn event_time(v: &Scalar) -> Option<i64> {
    match v {
        Scalar::Str(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_micros()),
        Scalar::Bare(n) => n.parse::<i64>().ok().and_then(|ms| ms.checked_mul(1000)),
        _ => None,
    }
}

fn batcher(table: &SourceTable) -> Result<RowBatcher, SourceError> {
    RowBatcher::for_file(&table.schema, &table.name, &table.key)
}

/// Requests' rows are built apart; runs of small batches are joined when taken (one copy
/// each), so the lake is not written a few rows at a time.
const JOIN_BELOW_ROWS: usize = 8192;

/// `batches` with consecutive ones of one schema joined up to [`JOIN_BELOW_ROWS`] rows.
fn joined(table: &str, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, SourceError> {
    let mut out = Vec::new();
    let mut run: Vec<RecordBatch> = Vec::new();
    let join = |run: &mut Vec<RecordBatch>, out: &mut Vec<RecordBatch>| {
        match run.len() {
            0 => {}
            1 => out.extend(run.pop()),
            _ => out.push(
                arrow::compute::concat_batches(&run[0].schema(), run.iter()).map_err(|source| {
                    SourceError::Arrow {
                        file: table.to_string(),
                        source,
                    }
                })?,
            ),
        }
        run.clear();
        Ok::<(), SourceError>(())
    };
    for b in batches {
        let rows: usize = run.iter().map(RecordBatch::num_rows).sum();
        if run.first().is_some_and(|f| f.schema() != b.schema())
            || rows + b.num_rows() > JOIN_BELOW_ROWS
        {
            join(&mut run, &mut out)?;
        }
        run.push(b);
    }
    join(&mut run, &mut out)?;
    Ok(out)
}

#[async_trait]
impl ChangeStream for EventsStream {
    async fn next(&mut self) -> Result<Option<StreamEvent>, SourceError> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Ok(Some(e));
            }
            if let Some((p, retyped)) = self.held.take() {
                match self.give(p, retyped)? {
                    Some(e) => return Ok(Some(e)),
                    None => continue,
                }
            }
            let rx = self.rx.as_mut().expect("held until dropped");
            // recv is cancel-safe: the driver drops this future when its batch timer fires.
            let posted = match self.follow {
                true => rx.recv().await,
                false => rx.try_recv().ok(),
            };
            match posted {
                Some(p) => self.admit(p),
                None => return Ok(None),
            }
        }
    }

    fn take(&mut self, table: &str) -> Result<Taken, SourceError> {
        let Some(t) = self.tables.get_mut(table) else {
            return Ok(Taken::default());
        };
        let rows = joined(table, std::mem::take(&mut t.batches))?;
        let commit_micros = std::mem::take(&mut t.micros);
        Ok(Taken {
            rows,
            ops: vec![Op::Insert; commit_micros.len()],
            commit_micros,
            rejects: std::mem::take(&mut t.rejects),
            zero_dates: 0,
        })
    }

    fn stop(&mut self, table: &str) {
        let why = format!(
            "{}.{table} is stopped (see sluice status): nothing of this request was committed",
            self.source
        );
        if let Some(t) = self.tables.get_mut(table) {
            t.stopped = Some(why.clone());
        }
        self.answer(table, |_| Some(Answer::Refused(why.clone())));
    }

    fn positions(&self) -> Vec<(String, Position)> {
        // Nothing is read again from a position: a quiet table needs none moved.
        Vec::new()
    }

    fn committed(&mut self, table: &str, at: &Position) {
        let upto = seq_of(at);
        self.answer(table, |w| {
            (w.seq <= upto).then(|| Answer::Committed {
                accepted: w.accepted,
                duplicates: w.duplicates,
                rejected: w.rejected.clone(),
            })
        });
    }
}

impl Drop for EventsStream {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            self.intake.detach(rx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_batches_are_joined_once_up_to_the_limit_and_never_across_schemas() {
        use arrow::array::Int64Array;
        use arrow::datatypes::{DataType, Field, Schema};
        let batch = |name: &str, n: usize| {
            let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Int64, true)]));
            let values: Int64Array = (0..n as i64).map(Some).collect();
            RecordBatch::try_new(schema, vec![Arc::new(values)]).unwrap()
        };
        let mut batches: Vec<RecordBatch> = (0..20).map(|_| batch("a", 500)).collect();
        batches.push(batch("b", 10));
        let out = joined("t", batches).unwrap();
        let rows: Vec<usize> = out.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(rows, [8000, 2000, 10]);
        assert_eq!(out[2].schema().field(0).name(), "b");
    }

    #[test]
    fn ids_are_remembered_for_the_window_then_forgotten() {
        let mut seen = Seen::new(Duration::from_millis(160));
        seen.insert("t", "a");
        assert!(seen.contains(Seen::hash("t", "a")));
        assert!(!seen.contains(Seen::hash("u", "a")), "ids are per table");
        std::thread::sleep(Duration::from_millis(60));
        seen.insert("t", "b");
        assert!(seen.generations.len() >= 2, "a new generation each 10 ms");
        std::thread::sleep(Duration::from_millis(120));
        seen.insert("t", "c");
        assert!(
            !seen.contains(Seen::hash("t", "a")),
            "older than the window"
        );
        assert!(seen.contains(Seen::hash("t", "b")));
        assert!(seen.contains(Seen::hash("t", "c")));
    }
}
