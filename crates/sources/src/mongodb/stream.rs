//! The change stream: one database-level stream for the captured collections, read by a task
//! of its own (the driver's cursor must not be dropped mid-read, and the capture driver
//! drops `next()` whenever its batch timer fires), assembled here into whole transactions.
//!
//! ```text
//!   watch (updateLookup) ──pump task──► channel ──next()──► groups (a transaction's events,
//!                                                            or one event) ──► Changed for new
//!                                                            fields, then Committed
//! ```
//!
//! insert → `c`; update and replace → `u`; delete → `d`. When every captured collection keeps
//! pre- and post-images (`changeStreamPreAndPostImages`), an update carries the document as
//! that update left it and a delete the document it removed; otherwise an update carries the
//! document as it is when read (`updateLookup`: one whose document is gone by then is
//! skipped, its delete follows) and a delete only its key. A
//! transaction's events share a cluster time, `lsid` and `txnNumber`, and arrive together:
//! they are one group, committed whole. A drop or rename halts that collection, an
//! invalidate every one, each with the reason; a resume token the oplog no longer holds
//! fails each table naming `--resnapshot`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use mongodb::bson::{doc, Bson, Document};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::options::{FullDocumentBeforeChangeType, FullDocumentType};
use tokio::sync::mpsc;

use super::schema::{self, ID};
use super::snapshot::{batcher, push_columns, reject};
use super::{convert, time_number, time_of, Mongo, MongoPosition};
use crate::document::Scalar;
use crate::files::rows::RowBatcher;
use crate::source::{ChangeStream, Position, SourceTable, StreamEvent, StreamTable, Taken};
use crate::SourceError;
use sluice_core::change::Op;
use sluice_core::reject::Reject;
use sluice_core::retry::ErrorKind;

/// What the pump task hands on.
enum Msg {
    Change(Box<Change>),
    /// The server had nothing more for now; where the stream stands (its post-batch resume
    /// token, which moves on while the captured collections are quiet), when readable.
    Idle(Option<MongoPosition>),
    Failed(SourceError),
}

#[derive(Debug)]
enum Kind {
    Insert,
    Update,
    Replace,
    Delete,
    Drop,
    Rename(String),
    /// The stream ends for every collection (the database dropped).
    Invalidate,
    Other(String),
}

#[derive(Debug)]
struct Change {
    collection: String,
    kind: Kind,
    key: Option<Bson>,
    doc: Option<Document>,
    /// A delete's pre-image.
    before: Option<Document>,
    at: MongoPosition,
    micros: i64,
    /// `lsid` and `txnNumber` of a multi-document transaction.
    txn: Option<(Document, i64)>,
}

fn change_of(e: ChangeStreamEvent<Document>) -> Result<Change, String> {
    let token = mongodb::bson::to_vec(&e.id).map_err(|e| format!("resume token: {e}"))?;
    let time = e.cluster_time.map(time_number).unwrap_or(0);
    let micros = match (e.wall_time, e.cluster_time) {
        (Some(w), _) => w.timestamp_millis() * 1000,
        (None, Some(t)) => t.time as i64 * 1_000_000,
        _ => 0,
    };
    let kind = match e.operation_type {
        OperationType::Insert => Kind::Insert,
        OperationType::Update => Kind::Update,
        OperationType::Replace => Kind::Replace,
        OperationType::Delete => Kind::Delete,
        OperationType::Drop => Kind::Drop,
        OperationType::Rename => Kind::Rename(
            e.to.as_ref()
                .and_then(|t| t.coll.clone())
                .unwrap_or_else(|| "?".into()),
        ),
        OperationType::DropDatabase | OperationType::Invalidate => Kind::Invalidate,
        OperationType::Other(o) => Kind::Other(o),
        _ => Kind::Other(format!("{:?}", e.operation_type)),
    };
    Ok(Change {
        collection: e.ns.and_then(|n| n.coll).unwrap_or_default(),
        kind,
        key: e.document_key.and_then(|mut k| k.remove(ID)),
        // An update's document as that update left it, when the pre-image says.
        doc: match (&e.full_document_before_change, &e.update_description) {
            (Some(pre), Some(u)) => super::image::post_image(pre, u).or(e.full_document),
            _ => e.full_document,
        },
        before: e.full_document_before_change,
        at: MongoPosition {
            time,
            token: Some(token),
        },
        micros,
        txn: e.lsid.zip(e.txn_number),
    })
}

/// Reads the change stream from `start` into `tx` until `end` (a cluster time; None:
/// follow) or until the receiver is gone.
async fn pump(
    mongo: std::sync::Arc<Mongo>,
    collections: Vec<String>,
    start: MongoPosition,
    end: Option<i64>,
    images: bool,
    tx: mpsc::Sender<Msg>,
) {
    let failed = |e| Msg::Failed(e);
    let db = match mongo.db().await {
        Ok(db) => db,
        Err(e) => {
            let _ = tx.send(failed(e)).await;
            return;
        }
    };
    let pipeline = [doc! { "$match": { "$or": [
        { "ns.coll": { "$in": collections } },
        { "operationType": { "$in": ["invalidate", "dropDatabase"] } },
    ] } }];
    let mut watch = db
        .watch()
        .pipeline(pipeline)
        .max_await_time(Duration::from_millis(500));
    watch = match images {
        true => watch
            .full_document(FullDocumentType::WhenAvailable)
            .full_document_before_change(FullDocumentBeforeChangeType::WhenAvailable),
        false => watch.full_document(FullDocumentType::UpdateLookup),
    };
    watch = match start
        .token
        .as_deref()
        .map(mongodb::bson::from_slice::<ResumeToken>)
    {
        Some(Ok(token)) => watch.start_after(token),
        Some(Err(e)) => {
            let _ = tx
                .send(failed(SourceError::Config {
                    source_name: mongo.source.clone(),
                    message: format!("the stored resume token does not decode: {e}"),
                }))
                .await;
            return;
        }
        // Everything at or before the time is in the lake: start just after it.
        None => watch.start_at_operation_time(time_of(start.time + 1)),
    };
    let mut changes = match watch.await {
        Ok(c) => c,
        Err(e) => {
            let _ = tx
                .send(failed(mongo.err("opening the change stream", e)))
                .await;
            return;
        }
    };
    loop {
        let msg = match changes.next_if_any().await {
            Ok(Some(e)) => match change_of(e) {
                Ok(c) if end.is_some_and(|end| c.at.time > end) => return,
                Ok(c) => Msg::Change(Box::new(c)),
                Err(message) => failed(SourceError::Config {
                    source_name: mongo.source.clone(),
                    message,
                }),
            },
            Ok(None) => {
                let at = changes.resume_token().and_then(|t| idle_position(&t));
                if end.is_some() {
                    let _ = tx.send(Msg::Idle(at)).await;
                    return;
                }
                Msg::Idle(at)
            }
            Err(e) => failed(mongo.err("reading the change stream", e)),
        };
        let stop = matches!(msg, Msg::Failed(_));
        if tx.send(msg).await.is_err() || stop || !changes.is_alive() {
            return;
        }
    }
}

/// The position of a post-batch resume token: everything the stream had up to its time was
/// given before it. Kept as the time alone (the stream resumes just after it): a server
/// need not resume after a token no event carried.
fn idle_position(token: &ResumeToken) -> Option<MongoPosition> {
    let doc = mongodb::bson::to_document(token).ok()?;
    Some(MongoPosition {
        time: super::token_time(&doc)?,
        token: None,
    })
}

/// One streamed collection.
struct Table {
    table: SourceTable,
    /// Events at or before this time are in the lake.
    from: i64,
    /// Where its rows given so far end.
    last: Option<MongoPosition>,
    rows: RowBatcher,
    batches: Vec<RecordBatch>,
    ops: Vec<Op>,
    micros: Vec<Option<i64>>,
    rejects: Vec<Reject>,
    stopped: bool,
    /// Columns to read with once the rows before them are taken (after a `Changed`).
    switch: Option<SourceTable>,
}

impl Table {
    fn new(table: SourceTable, from: i64) -> Result<Table, SourceError> {
        Ok(Table {
            rows: batcher(&table)?,
            table,
            from,
            last: None,
            batches: Vec::new(),
            ops: Vec::new(),
            micros: Vec::new(),
            rejects: Vec::new(),
            stopped: false,
            switch: None,
        })
    }
}

/// A change of a closed group, converted, waiting for its table's new columns.
struct Ready {
    collection: String,
    op: Op,
    columns: BTreeMap<String, Scalar>,
    doc: Document,
}

pub struct MongoStream {
    source: String,
    rx: mpsc::Receiver<Msg>,
    task: tokio::task::JoinHandle<()>,
    tables: HashMap<String, Table>,
    flatten: usize,
    group: Vec<Change>,
    peeked: Option<Msg>,
    queue: VecDeque<StreamEvent>,
    ready: Option<(Vec<Ready>, MongoPosition, i64)>,
    /// The last position whose rows were given, for every table (the stream holds only the
    /// captured collections, so a quiet one has had nothing up to here).
    latest: Option<MongoPosition>,
    /// The pump ended (caught up, or failed).
    ended: bool,
}

impl Drop for MongoStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn open(
    mongo: &std::sync::Arc<Mongo>,
    tables: Vec<StreamTable>,
    follow: bool,
    flatten: usize,
) -> Result<Box<dyn ChangeStream>, SourceError> {
    let mut open = HashMap::new();
    let mut start: Option<MongoPosition> = None;
    for t in tables {
        let from = MongoPosition::decode(&t.from).ok_or_else(|| SourceError::Config {
            source_name: mongo.source.clone(),
            message: format!(
                "{}: the stored stream position is not a MongoDB one",
                t.table.name
            ),
        })?;
        if start.as_ref().is_none_or(|s| from.time < s.time) {
            start = Some(from.clone());
        }
        open.insert(t.table.name.clone(), Table::new(t.table, from.time)?);
    }
    let start = start.expect("the driver opens a stream for at least one table");
    let end = match follow {
        true => None,
        false => Some(time_number(mongo.cluster_time().await?)),
    };
    let (tx, rx) = mpsc::channel(1024);
    let collections: Vec<String> = open.keys().cloned().collect();
    let images = keep_images(mongo, &collections).await?;
    tracing::debug!(source = %mongo.source, images, "change stream opened");
    let task = tokio::spawn(pump(mongo.clone(), collections, start, end, images, tx));
    Ok(Box::new(MongoStream::new(
        &mongo.source,
        rx,
        task,
        open,
        flatten,
    )))
}

/// Whether every one of `collections` keeps pre- and post-images.
async fn keep_images(mongo: &Mongo, collections: &[String]) -> Result<bool, SourceError> {
    use futures::TryStreamExt;
    let specs: Vec<mongodb::results::CollectionSpecification> = mongo
        .db()
        .await?
        .list_collections()
        .filter(doc! { "name": { "$in": collections } })
        .await
        .map_err(|e| mongo.err("listing collections", e))?
        .try_collect()
        .await
        .map_err(|e| mongo.err("listing collections", e))?;
    Ok(specs.len() == collections.len()
        && specs.iter().all(|s| {
            s.options
                .change_stream_pre_and_post_images
                .as_ref()
                .is_some_and(|i| i.enabled)
        }))
}

impl MongoStream {
    fn new(
        source: &str,
        rx: mpsc::Receiver<Msg>,
        task: tokio::task::JoinHandle<()>,
        tables: HashMap<String, Table>,
        flatten: usize,
    ) -> MongoStream {
        MongoStream {
            source: source.to_string(),
            rx,
            task,
            tables,
            flatten,
            group: Vec::new(),
            peeked: None,
            queue: VecDeque::new(),
            ready: None,
            latest: None,
            ended: false,
        }
    }

    fn live(&self, collection: &str) -> Option<&Table> {
        self.tables.get(collection).filter(|t| !t.stopped)
    }

    /// Ends the open group: halts for drops, renames and invalidates; `Changed` for tables
    /// whose documents bring new fields; the rest waits in `ready` for those to be taken.
    fn close_group(&mut self) {
        let group = std::mem::take(&mut self.group);
        let Some(last) = group.last() else { return };
        let (at, micros) = (last.at.clone(), last.micros);
        let mut ready = Vec::new();
        for c in group {
            let Some(t) = self.live(&c.collection).filter(|t| c.at.time > t.from) else {
                if matches!(c.kind, Kind::Invalidate) {
                    self.halt_all("the change stream was invalidated (the database was dropped)");
                }
                continue;
            };
            let name = t.table.name.clone();
            let op = match c.kind {
                Kind::Insert => Op::Insert,
                Kind::Update | Kind::Replace => Op::Update,
                Kind::Delete => Op::Delete,
                Kind::Drop => {
                    self.halt(&name, "the collection was dropped at the source".into());
                    continue;
                }
                Kind::Rename(to) => {
                    self.halt(
                        &name,
                        format!("the collection was renamed to `{to}` at the source"),
                    );
                    continue;
                }
                Kind::Invalidate => {
                    self.halt_all("the change stream was invalidated");
                    continue;
                }
                Kind::Other(o) => {
                    tracing::debug!(source = %self.source, collection = %name, event = %o, "change event skipped");
                    continue;
                }
            };
            let (columns, doc) = match (op, c.doc, c.key) {
                (Op::Delete, _, _) if c.before.is_some() => {
                    let before = c.before.expect("checked");
                    (schema::columns(&before, self.flatten), before)
                }
                (Op::Delete, _, Some(key)) => {
                    let doc = doc! { ID: key.clone() };
                    let mut cols = BTreeMap::new();
                    cols.insert(ID.to_string(), convert::scalar(&key));
                    (Ok(cols), doc)
                }
                // The document is gone by now: its delete comes later in the stream.
                (Op::Update, None, _) => continue,
                (_, Some(doc), _) => (schema::columns(&doc, self.flatten), doc),
                (_, None, key) => {
                    let doc = doc! { ID: key.unwrap_or(Bson::Null) };
                    (Err("the change event carries no document".to_string()), doc)
                }
            };
            match columns {
                Ok(columns) => ready.push(Ready {
                    collection: name,
                    op,
                    columns,
                    doc,
                }),
                Err(reason) => {
                    let r = reject(&name, &doc, None, reason);
                    if let Some(t) = self.tables.get_mut(&name) {
                        t.rejects.push(r);
                    }
                }
            }
        }
        // New fields become columns before the rows that bring them.
        let mut names: Vec<&String> = ready.iter().map(|r| &r.collection).collect();
        names.sort();
        names.dedup();
        for name in names {
            let t = &self.tables[name];
            let docs: Vec<&BTreeMap<String, Scalar>> = ready
                .iter()
                .filter(|r| &r.collection == name)
                .map(|r| &r.columns)
                .collect();
            if let Some(wider) = crate::document::widened(&t.table, &docs, false) {
                self.queue.push_back(StreamEvent::Changed {
                    table: wider.clone(),
                    at: at.encode(),
                    statement: format!(
                        "new fields in documents of {name}: {}",
                        crate::document::added_columns(&t.table, &wider)
                    ),
                });
                self.tables.get_mut(name).expect("named above").switch = Some(wider);
            }
        }
        self.ready = Some((ready, at, micros));
    }

    fn halt(&mut self, name: &str, why: String) {
        if let Some(t) = self.tables.get_mut(name).filter(|t| !t.stopped) {
            t.stopped = true;
            self.queue.push_back(StreamEvent::Halted {
                table: name.to_string(),
                why,
            });
        }
    }

    fn halt_all(&mut self, why: &str) {
        let names: Vec<String> = self.tables.keys().cloned().collect();
        for n in names {
            self.halt(&n, why.to_string());
        }
    }

    /// Puts a closed group's rows in their tables: the `Committed` that gives them.
    fn give(
        &mut self,
        ready: Vec<Ready>,
        at: MongoPosition,
        micros: i64,
    ) -> Result<Option<StreamEvent>, SourceError> {
        for t in self.tables.values_mut() {
            if let Some(wider) = t.switch.take() {
                // The driver takes a table's rows at its `Changed`; none are dropped if not.
                let before = std::mem::replace(&mut t.rows, batcher(&wider)?).take();
                t.batches.extend(before);
                t.table = wider;
            }
        }
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for r in ready {
            let Some(t) = self.tables.get_mut(&r.collection).filter(|t| !t.stopped) else {
                continue;
            };
            let n = counts.entry(r.collection.clone()).or_default();
            match push_columns(&mut t.rows, &t.table, &r.doc, &r.columns) {
                Ok(()) => {
                    t.ops.push(r.op);
                    t.micros.push(Some(micros));
                    *n += 1;
                    if t.rows.is_full() {
                        t.batches.push(t.rows.take().expect("full"));
                    }
                }
                Err(reject) => t.rejects.push(reject),
            }
        }
        for name in counts.keys() {
            if let Some(t) = self.tables.get_mut(name) {
                t.last = Some(at.clone());
            }
        }
        if self.latest.as_ref().is_none_or(|l| at.time >= l.time) {
            self.latest = Some(at.clone());
        }
        if counts.is_empty() {
            return Ok(None);
        }
        Ok(Some(StreamEvent::Committed {
            at: at.encode(),
            commit_micros: micros,
            tables: counts.into_iter().collect(),
        }))
    }

    /// A lost resume point fails every table, naming the way back.
    fn lost(&mut self, e: &SourceError) {
        let names: Vec<String> = self.tables.keys().cloned().collect();
        for name in names {
            let Some(t) = self.tables.get_mut(&name).filter(|t| !t.stopped) else {
                continue;
            };
            t.stopped = true;
            self.queue.push_back(StreamEvent::Failed {
                table: name.clone(),
                why: format!(
                    "{e}: the oplog no longer holds the position this collection's changes resume from, so the changes since were lost to CDC. Re-snapshot: sluice sync --resnapshot {}.{name}",
                    self.source
                ),
                kind: ErrorKind::PositionLost,
            });
        }
    }
}

#[async_trait]
impl ChangeStream for MongoStream {
    async fn next(&mut self) -> Result<Option<StreamEvent>, SourceError> {
        // Cancel-safe: every await is a channel receive, and what it yields is kept in
        // `self` before anything else.
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Ok(Some(e));
            }
            if let Some((ready, at, micros)) = self.ready.take() {
                match self.give(ready, at, micros)? {
                    Some(e) => return Ok(Some(e)),
                    None => continue,
                }
            }
            if self.ended {
                return Ok(None);
            }
            let msg = match self.peeked.take() {
                Some(m) => m,
                None => match self.rx.recv().await {
                    Some(m) => m,
                    None => {
                        self.ended = true;
                        self.close_group();
                        continue;
                    }
                },
            };
            match msg {
                Msg::Failed(e) => {
                    // A transaction cut short is read again from the committed positions.
                    self.group.clear();
                    match e {
                        SourceError::PositionLost { .. } => {
                            self.ended = true;
                            self.lost(&e);
                        }
                        e => return Err(e),
                    }
                }
                Msg::Idle(at) => {
                    self.close_group();
                    // Quiet collections move on with the stream (so the oplog never outruns
                    // their position), once nothing read before is waiting to be given.
                    let settled = self.ready.is_none() && self.queue.is_empty();
                    if let Some(at) = at.filter(|_| settled) {
                        if self.latest.as_ref().is_none_or(|l| at.time > l.time) {
                            self.latest = Some(at);
                        }
                    }
                }
                Msg::Change(c) => {
                    let open = self.group.first().and_then(|g| g.txn.clone());
                    match open {
                        Some(txn) if c.txn.as_ref() == Some(&txn) => self.group.push(*c),
                        Some(_) => {
                            self.peeked = Some(Msg::Change(c));
                            self.close_group();
                        }
                        None if c.txn.is_some() => self.group.push(*c),
                        None => {
                            self.group.push(*c);
                            self.close_group();
                        }
                    }
                }
            }
        }
    }

    fn take(&mut self, table: &str) -> Result<Taken, SourceError> {
        let Some(t) = self.tables.get_mut(table) else {
            return Ok(Taken::default());
        };
        let mut rows = std::mem::take(&mut t.batches);
        rows.extend(t.rows.take());
        Ok(Taken {
            rows,
            ops: std::mem::take(&mut t.ops),
            commit_micros: std::mem::take(&mut t.micros),
            rejects: std::mem::take(&mut t.rejects),
            zero_dates: 0,
        })
    }

    fn stop(&mut self, table: &str) {
        if let Some(t) = self.tables.get_mut(table) {
            t.stopped = true;
        }
    }

    fn positions(&self) -> Vec<(String, Position)> {
        self.tables
            .iter()
            .filter(|(_, t)| !t.stopped)
            .filter_map(|(name, t)| {
                // The later of the table's own rows and the stream's latest; a table that
                // has seen nothing keeps the position it was opened with.
                let best = [t.last.as_ref(), self.latest.as_ref()]
                    .into_iter()
                    .flatten()
                    .filter(|p| p.time >= t.from)
                    .max_by_key(|p| p.time)?;
                Some((name.clone(), best.encode()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn table(name: &str) -> SourceTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new(ID, DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
        ]));
        SourceTable {
            name: name.into(),
            definitions: crate::document::definitions(&schema),
            schema,
            key: vec![ID.into()],
            rows_estimate: 0,
        }
    }

    fn change(coll: &str, time: i64, kind: Kind, doc: Document, txn: Option<i64>) -> Msg {
        Msg::Change(Box::new(Change {
            collection: coll.into(),
            kind,
            key: doc.get(ID).cloned(),
            doc: Some(doc),
            before: None,
            at: MongoPosition {
                time,
                token: Some(vec![time as u8]),
            },
            micros: time,
            txn: txn.map(|n| (doc! { "id": 1 }, n)),
        }))
    }

    async fn stream(msgs: Vec<Msg>) -> MongoStream {
        let (tx, rx) = mpsc::channel(64);
        for m in msgs {
            tx.send(m).await.unwrap();
        }
        drop(tx);
        let mut tables = HashMap::new();
        for name in ["a", "b"] {
            tables.insert(name.to_string(), Table::new(table(name), 10).unwrap());
        }
        MongoStream::new("m", rx, tokio::spawn(async {}), tables, 0)
    }

    async fn events(s: &mut MongoStream) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(e) = s.next().await.unwrap() {
            out.push(match e {
                StreamEvent::Committed { at, tables, .. } => {
                    format!(
                        "commit@{} {tables:?}",
                        MongoPosition::decode(&at).unwrap().time
                    )
                }
                StreamEvent::Changed { statement, .. } => format!("changed: {statement}"),
                StreamEvent::Halted { table, why } => format!("halted {table}: {why}"),
                other => format!("{other:?}"),
            });
        }
        out
    }

    #[tokio::test]
    async fn a_transaction_is_one_commit_and_old_events_are_skipped() {
        let mut s = stream(vec![
            change(
                "a",
                9,
                Kind::Insert,
                doc! { "_id": 1_i64, "v": 1_i64 },
                None,
            ),
            change(
                "a",
                11,
                Kind::Insert,
                doc! { "_id": 2_i64, "v": 2_i64 },
                None,
            ),
            change("a", 12, Kind::Insert, doc! { "_id": 3_i64 }, Some(7)),
            change(
                "b",
                12,
                Kind::Update,
                doc! { "_id": 3_i64, "v": 3_i64 },
                Some(7),
            ),
            change("a", 12, Kind::Delete, doc! { "_id": 2_i64 }, Some(7)),
            change(
                "b",
                13,
                Kind::Insert,
                doc! { "_id": 4_i64, "w": "new" },
                None,
            ),
            change("b", 14, Kind::Drop, doc! {}, None),
        ])
        .await;
        assert_eq!(
            events(&mut s).await,
            vec![
                "commit@11 [(\"a\", 1)]",
                "commit@12 [(\"a\", 2), (\"b\", 1)]",
                "changed: new fields in documents of b: w text",
                "commit@13 [(\"b\", 1)]",
                "halted b: the collection was dropped at the source",
            ]
        );
        let a = s.take("a").unwrap();
        assert_eq!(a.ops, vec![Op::Insert, Op::Insert, Op::Delete]);
        let b = s.take("b").unwrap();
        assert_eq!(b.ops, vec![Op::Update, Op::Insert]);
        // Rows before the new field were taken with the old columns, after it with the new.
        assert_eq!(b.rows.last().unwrap().schema().fields().len(), 3);
    }
}
