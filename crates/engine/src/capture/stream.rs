//! Change streams: whole source transactions, batched by time and size, each table's rows
//! committed with the position after its last transaction in one lake commit.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use sluice_core::change::stamp_rows;
use sluice_core::failpoint;
use sluice_core::reject::Reject;
use sluice_core::retry::ErrorKind;
use sluice_lake::{LakeWriter, SEQ_APP_ID};
use sluice_sources::source::{
    ChangeStream, Position, SharedSource, StreamEvent, StreamTable, Taken,
};

use super::positions::{self, Ids};
use super::table::Captured;
use crate::progress::Progress;
use crate::{EngineError, Project};
use sluice_core::config::TableSpec;

/// How a stream is batched and how long it runs.
#[derive(Debug, Clone)]
pub(crate) struct StreamSettings {
    /// A commit once this many change rows wait ...
    pub max_rows: usize,
    /// ... or the oldest has waited this long.
    pub max_wait: Duration,
    /// Keep following after catching up, until the signal turns true.
    pub follow: Option<watch::Receiver<bool>>,
    /// While following, load each table into its warehouse after each lake commit.
    pub load: bool,
    pub progress: bool,
}

/// Following, quiet tables have their position moved up this often (so a restart does not
/// start at a place the server may have dropped by then).
const IDLE_ADVANCE: Duration = Duration::from_secs(60);

/// Following, a stream that has nothing buffered and has had no event for this long has
/// read all the source had committed before the wait began: its tables are current.
const QUIET: Duration = Duration::from_secs(1);

/// A table's rows on their way into one lake commit: its writer and what it holds. Rows of
/// a source transaction still open wait here ahead of its end (committed only with its last
/// rows, dropped if it is rolled back or the table stops).
struct Pending {
    writer: LakeWriter,
    /// The table's last `_sluice_seq` before these rows.
    seq: i64,
    rows: i64,
    rejects: Vec<Reject>,
    zero_dates: u64,
}

impl Pending {
    async fn open(t: &Captured) -> Result<Pending, EngineError> {
        Ok(Pending {
            writer: t.log.writer()?,
            seq: t.log.last_seq().await?,
            rows: 0,
            rejects: Vec::new(),
            zero_dates: 0,
        })
    }

    /// Writes `taken`'s rows after those held, stamped with their change columns: however
    /// many batches a large transaction took, they go into one writer.
    async fn write(&mut self, table: &str, taken: Taken) -> Result<(), EngineError> {
        let now = Utc::now();
        let mut at_row = 0;
        for rows in &taken.rows {
            let range = at_row..at_row + rows.num_rows();
            let batch = stamp_rows(
                rows,
                &taken.ops[range.clone()],
                &taken.commit_micros[range.clone()],
                self.seq + 1 + self.rows + at_row as i64,
                now,
            )
            .map_err(|e| EngineError::Internal(format!("stamping {table}: {e}")))?;
            self.writer.write(batch).await?;
            at_row = range.end;
        }
        debug_assert_eq!(at_row, taken.ops.len());
        self.rows += at_row as i64;
        self.rejects.extend(taken.rejects);
        self.zero_dates += taken.zero_dates;
        Ok(())
    }
}

/// The stream's tables: the captured ones by name, what each has buffered and where it is.
struct Streaming<'a> {
    project: &'a Project,
    ids: Ids,
    tables: &'a mut [Captured],
    index: HashMap<String, usize>,
    /// Per table with rows buffered: the position after its last transaction buffered.
    buffered: BTreeMap<usize, Position>,
    /// Per table: the position committed in its change log.
    committed: HashMap<usize, Position>,
    /// Per table: rows of the open source transaction written ahead.
    ahead: HashMap<usize, Pending>,
    rows: usize,
    since: Option<Instant>,
    /// Following with loads: where committed tables are sent to be loaded beside the stream.
    loads: Option<mpsc::UnboundedSender<TableSpec>>,
}

/// Streams changes for the live `tables` from each one's committed position until caught up
/// (or, following, until stopped). What `stream` fails with is the whole stream's failure;
/// one table's failure or halt is set on that table and the others go on.
pub(crate) async fn stream(
    project: &Project,
    source: &SharedSource,
    tables: &mut [Captured],
    how: StreamSettings,
) -> Result<(), EngineError> {
    if !(how.follow.is_some() && how.load) {
        return stream_tables(project, source, tables, how, None).await;
    }
    // Following, loads run beside the stream, so a lake commit (and the answer to an events
    // client) never waits for a warehouse load; each load takes everything committed before
    // it, so loads coalesce while commits run ahead. The stream's end drops the sender: the
    // loads due finish, then this returns.
    let (tx, rx) = mpsc::unbounded_channel();
    let (streamed, ()) = tokio::join!(
        stream_tables(project, source, tables, how, Some(tx)),
        load_behind(project, rx)
    );
    streamed
}

/// Loads each table sent, once per batch of sends (a table sent twice while a load ran loads
/// once), until the sender is dropped.
async fn load_behind(project: &Project, mut due: mpsc::UnboundedReceiver<TableSpec>) {
    while let Some(first) = due.recv().await {
        let mut specs = vec![first];
        while let Ok(more) = due.try_recv() {
            if !specs
                .iter()
                .any(|s| s.source == more.source && s.table == more.table)
            {
                specs.push(more);
            }
        }
        for spec in specs {
            if let Err(e) = crate::load::load(project, &spec).await {
                tracing::error!(table = %spec.table, error = %e, "load while following failed; retrying after the next commit");
            }
        }
    }
}

async fn stream_tables(
    project: &Project,
    source: &SharedSource,
    tables: &mut [Captured],
    how: StreamSettings,
    loads: Option<mpsc::UnboundedSender<TableSpec>>,
) -> Result<(), EngineError> {
    let mut open = Vec::new();
    let mut committed = HashMap::new();
    let mut index = HashMap::new();
    for (i, t) in tables.iter_mut().enumerate().filter(|(_, t)| t.live()) {
        let stored = positions::stream_position(&t.log, source.as_ref()).await?;
        let Some(from) = stored.or_else(|| source.start_position()) else {
            t.fail(
                "no stream position recorded (the snapshot did not record one)",
                ErrorKind::Fatal,
            );
            continue;
        };
        let snapshot = positions::snapshot_marks(&t.log, source.as_ref()).await?;
        open.push(StreamTable {
            table: t.table.clone(),
            from: from.clone(),
            snapshot,
        });
        committed.insert(i, from);
        index.insert(t.table.name.clone(), i);
    }
    if open.is_empty() {
        return Ok(());
    }
    let following = how.follow.is_some();
    let mut changes = source.open_stream(open, following).await?;
    let mut s = Streaming {
        project,
        ids: Ids::of(source.as_ref()),
        tables,
        index,
        buffered: BTreeMap::new(),
        committed,
        ahead: HashMap::new(),
        rows: 0,
        since: None,
        loads,
    };
    let mut progress = Progress::new(how.progress, format!("{} changes", source.name()));
    let mut last_idle_advance = Instant::now();
    let mut stop = how.follow.clone();
    loop {
        let wait = s
            .since
            .map(|t0| how.max_wait.saturating_sub(t0.elapsed()))
            .unwrap_or(if following { QUIET } else { IDLE_ADVANCE });
        let waiting_since = Utc::now();
        let event = tokio::select! {
            event = changes.next() => event?,
            _ = tokio::time::sleep(wait) => {
                if s.buffered.is_empty() && s.ahead.is_empty() {
                    s.mark_current(waiting_since);
                }
                s.flush_all(changes.as_mut()).await?;
                if following && last_idle_advance.elapsed() >= IDLE_ADVANCE {
                    s.advance_idle(changes.as_ref()).await?;
                    last_idle_advance = Instant::now();
                }
                continue;
            }
            _ = stopped(&mut stop) => None,
        };
        let Some(event) = event else { break };
        match event {
            StreamEvent::Committed { at, tables, .. } => {
                let mut n = 0;
                for (name, rows) in tables {
                    if let Some(&i) = s.index.get(&name) {
                        s.buffered.insert(i, at.clone());
                        n += rows;
                    }
                }
                s.rows += n;
                s.since.get_or_insert_with(Instant::now);
                progress.add(n as u64);
                if s.rows >= how.max_rows {
                    s.flush_all(changes.as_mut()).await?;
                }
            }
            StreamEvent::Open { tables } => {
                for (name, rows) in tables {
                    let Some(&i) = s.index.get(&name) else {
                        continue;
                    };
                    // What committed before is committed first; the open rows wait for it.
                    s.flush(changes.as_mut(), i).await?;
                    s.write_ahead(changes.as_mut(), i).await?;
                    progress.add(rows as u64);
                }
                failpoint::hit(failpoint::AFTER_TXN_PART);
            }
            StreamEvent::RolledBack { tables } => {
                for name in tables {
                    if let Some(&i) = s.index.get(&name) {
                        s.abandon(i).await;
                    }
                }
            }
            StreamEvent::Changed {
                table,
                at: _,
                statement,
            } => {
                let Some(&i) = s.index.get(&table.name) else {
                    continue;
                };
                // Rows before the change were read with the definitions before it.
                s.flush(changes.as_mut(), i).await?;
                let t = &mut s.tables[i];
                match t.adopt(source.as_ref(), table, &statement).await {
                    Ok(()) if t.halted.is_some() => changes.stop(&t.table.name),
                    Ok(()) => {}
                    Err(e) => {
                        t.fail(e.to_string(), e.kind());
                        changes.stop(&t.table.name);
                    }
                }
            }
            StreamEvent::Halted { table, why } => {
                let Some(&i) = s.index.get(&table) else {
                    continue;
                };
                // Rows of the transaction it stops before are never committed.
                s.abandon(i).await;
                s.flush(changes.as_mut(), i).await?;
                tracing::warn!(table = %table, why = %why, "capture halted");
                s.tables[i].halted = Some(why);
                changes.stop(&table);
            }
            StreamEvent::Failed { table, why, kind } => {
                if let Some(&i) = s.index.get(&table) {
                    s.abandon(i).await;
                    s.tables[i].fail(why, kind);
                    changes.stop(&table);
                }
            }
            StreamEvent::Moved(_) => {}
        }
        if following && last_idle_advance.elapsed() >= IDLE_ADVANCE {
            s.flush_all(changes.as_mut()).await?;
            s.advance_idle(changes.as_ref()).await?;
            last_idle_advance = Instant::now();
        }
    }
    s.flush_all(changes.as_mut()).await?;
    // Stopped inside a transaction written ahead: it is read again from its start.
    for i in s.ahead.keys().copied().collect::<Vec<_>>() {
        s.abandon(i).await;
    }
    // Tables with nothing new move up too, so the next run starts here.
    s.advance_idle(changes.as_ref()).await?;
    tracing::info!(source = %source.name(), "caught up");
    Ok(())
}

/// Resolves once the follow signal turns true (never without one).
async fn stopped(stop: &mut Option<watch::Receiver<bool>>) {
    match stop.as_mut() {
        Some(s) => {
            let _ = s.wait_for(|v| *v).await;
        }
        None => std::future::pending::<()>().await,
    }
}

impl Streaming<'_> {
    /// Every live table holds what the source committed up to `at` (the stream was quiet
    /// since, with nothing buffered).
    fn mark_current(&self, at: chrono::DateTime<Utc>) {
        for t in self.tables.iter().filter(|t| t.live()) {
            crate::metrics::current(&t.spec.source, &t.spec.table, at);
        }
    }

    /// Commits every table's buffered changes (and, following, loads them).
    async fn flush_all(&mut self, changes: &mut dyn ChangeStream) -> Result<(), EngineError> {
        let flushed: Vec<usize> = self.buffered.keys().copied().collect();
        for &i in &flushed {
            self.flush(changes, i).await?;
        }
        self.rows = 0;
        self.since = None;
        if let Some(loads) = &self.loads {
            for i in flushed {
                // The loader is gone only once the stream ends.
                let _ = loads.send(self.tables[i].spec.clone());
            }
        }
        Ok(())
    }

    /// Commits table `i`'s buffered changes with the position after its last transaction:
    /// rejects first, recorded under that position (a crash before the data commit reads
    /// the same changes again and finds them recorded), then rows and position in one commit,
    /// with the rows of the transaction written ahead, if any.
    async fn flush(&mut self, changes: &mut dyn ChangeStream, i: usize) -> Result<(), EngineError> {
        let Some(at) = self.buffered.remove(&i) else {
            return Ok(());
        };
        let t = &mut self.tables[i];
        let mut p = match self.ahead.remove(&i) {
            Some(p) => p,
            None => Pending::open(t).await?,
        };
        let taken = changes.take(&t.table.name)?;
        let last_commit = taken.commit_micros.iter().rev().find_map(|m| *m);
        p.write(&t.spec.table, taken).await?;
        let rejects = std::mem::take(&mut p.rejects);
        t.quarantine(&self.project.lake, &self.ids.stream_rejects(&at), rejects)
            .await?;
        let mut apps = positions::position_apps(&self.ids, &at);
        apps.push((SEQ_APP_ID.to_string(), p.seq + p.rows));
        let mut meta = serde_json::Map::new();
        meta.insert("sluice".into(), json!({ "stream": true, "rows": p.rows }));
        let v = p.writer.commit(&mut t.log, apps, meta).await?;
        failpoint::hit(failpoint::AFTER_LAKE_COMMIT);
        changes.committed(&t.table.name, &at);
        t.report.rows += p.rows as u64;
        t.committed(p.rows as u64, v);
        if let Some(at) = last_commit.and_then(chrono::DateTime::from_timestamp_micros) {
            crate::metrics::current(&t.spec.source, &t.spec.table, at);
        }
        t.report.zero_dates += p.zero_dates;
        self.committed.insert(i, at);
        Ok(())
    }

    /// Writes table `i`'s rows of the open source transaction into its lake files, to be
    /// committed by the `flush` after the transaction's end.
    async fn write_ahead(
        &mut self,
        changes: &mut dyn ChangeStream,
        i: usize,
    ) -> Result<(), EngineError> {
        let t = &self.tables[i];
        let taken = changes.take(&t.table.name)?;
        let p = match self.ahead.entry(i) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Pending::open(t).await?),
        };
        p.write(&t.spec.table, taken).await
    }

    /// Drops what table `i` wrote ahead of a transaction that will not commit for it.
    async fn abandon(&mut self, i: usize) {
        if let Some(p) = self.ahead.remove(&i) {
            tracing::info!(table = %self.tables[i].spec.table, rows = p.rows, "rows written ahead of a transaction dropped");
            p.writer.abandon(&self.tables[i].log).await;
        }
    }

    /// Moves the committed position of each live table with nothing buffered up to where
    /// the stream stands for it.
    async fn advance_idle(&mut self, changes: &dyn ChangeStream) -> Result<(), EngineError> {
        for (name, at) in changes.positions() {
            let Some(&i) = self.index.get(&name) else {
                continue;
            };
            let t = &mut self.tables[i];
            if !t.live()
                || self.buffered.contains_key(&i)
                || self.ahead.contains_key(&i)
                || self.committed.get(&i) == Some(&at)
            {
                continue;
            }
            let mut meta = serde_json::Map::new();
            meta.insert("sluice".into(), json!({ "stream": true, "rows": 0 }));
            t.log
                .writer()?
                .commit(&mut t.log, positions::position_apps(&self.ids, &at), meta)
                .await?;
            self.committed.insert(i, at);
        }
        Ok(())
    }
}
