//! The source contract: what every source does, and what the capture driver (in the engine)
//! does with it. A source knows its protocol; the driver owns exactly-once.
//!
//! ```text
//!   source                                  driver (engine::capture)
//!   ──────                                  ────────────────────────
//!   tables()         what there is          opens or creates each table's lake change log,
//!                                           takes definitions that changed (schema gate)
//!   plan_snapshot()  chunks of a table      records the run and its plan in the lake, then
//!   snapshot_readers() consistent views     each chunk with the position its view stood at;
//!   ChunkReader::read() one chunk's rows    resumes the chunks not committed; completes the
//!                                           run as an image, deleting what it no longer saw
//!   read_incremental() rows past a cursor   commits the cursor with the rows; drops rows the
//!                                           lake already holds
//!   open_stream()    whole transactions     batches them by time and size (never splitting
//!   ChangeStream     from each table's      one), commits rows + position in one lake commit,
//!                    position               then says so (`committed`: events are answered);
//!                                           flushes before a schema change, halts a table,
//!                                           moves quiet tables on, follows until stopped
//!   units()/read_unit() files               commits each file with its version
//! ```
//!
//! What the driver guarantees a source: a position it is given back is one it produced,
//! committed in the same lake commit as every row up to it and nothing after; a table's rows
//! reach the lake in the order the source gave them; what the source rejects is quarantined,
//! never dropped. What a source promises the driver: every row it gives is converted exactly or
//! rejected with the reason; a stream event at a position is never given again to a table
//! whose position is at or past it; a transaction is given whole or not at all.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;

use sluice_core::canon::Side;
use sluice_core::change::Op;
use sluice_core::reject::Reject;
use sluice_core::retry::ErrorKind;

use crate::SourceError;

/// A place in a source's change stream (a binlog file and offset, a resume token, an LSN),
/// opaque to the driver: stored with the data it covers, handed back untouched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position(pub Vec<u8>);

/// A table as its source sees it now.
#[derive(Debug, Clone)]
pub struct SourceTable {
    pub name: String,
    /// Its columns, as a new lake change log's source columns.
    pub schema: SchemaRef,
    /// The key merges match on: the source's own, or the one configured (set by the driver
    /// before reading; rows with NULL in it are rejected).
    pub key: Vec<String>,
    /// What the source decodes rows with beyond the Arrow schema (MySQL's column
    /// definitions), as text: kept in the lake with the schema, handed back on resume.
    pub definitions: String,
    /// Rows, roughly (sizes snapshot chunks).
    pub rows_estimate: u64,
}

/// How far a stream position is from being lost: the change log the source still keeps
/// before it (a purge takes the oldest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Retention {
    /// Log files kept before the one the position is in (0: it is in the oldest).
    pub files_before: u64,
    /// Bytes of log kept before the position.
    pub bytes_before: u64,
    /// How long the source keeps its log (None: until purged by hand).
    pub kept_for_secs: Option<u64>,
}

/// What a source can do; the driver never calls what is not declared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Chunked, resumable snapshots ([`Source::plan_snapshot`], [`Source::snapshot_readers`]).
    pub snapshot: bool,
    /// Reads past a cursor column ([`Source::read_incremental`]).
    pub incremental: bool,
    /// A change stream of whole transactions ([`Source::open_stream`]).
    pub stream: bool,
    /// Data that arrives as separate files, each read once per version ([`Source::units`]).
    pub units: bool,
}

/// How a table's snapshot is split: how many chunks, and the plan as the source needs it to
/// read them (opaque to the driver, recorded with the run so a resumed run reads the same
/// chunks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPlan {
    pub chunks: u64,
    pub plan: Vec<u8>,
}

/// The end of one chunk read (its rows went to the reader's `out` as they came).
#[derive(Debug, Default)]
pub struct Chunk {
    /// Rows that did not convert (or had no key).
    pub rejects: Vec<Reject>,
    /// Values the source holds that have no equivalent (zero dates), landed as NULL.
    pub zero_dates: u64,
}

/// A reader of snapshot chunks, inside one consistent view of the source.
#[async_trait]
pub trait ChunkReader: Send {
    /// Where this reader's view stands in the change stream, as a number ordered as the
    /// stream's positions are (its chunks hold every change committed at or before it);
    /// None when the view's position was not asked for.
    fn read_at(&self) -> Option<i64>;

    /// The same place as a stream position: where a change stream after the snapshot starts.
    fn position(&self) -> Option<Position>;

    /// Reads chunk `index` of `table` as `plan` splits it, sending its rows to `out` as they
    /// come (bounded batches, never the chunk whole).
    async fn read(
        &mut self,
        table: &SourceTable,
        plan: &SnapshotPlan,
        index: u64,
        out: &tokio::sync::mpsc::Sender<RecordBatch>,
    ) -> Result<Chunk, SourceError>;

    /// Ends the view (closes the connection).
    async fn close(self: Box<Self>);
}

/// The end of an incremental read.
#[derive(Debug, Default)]
pub struct IncrementalEnd {
    pub rejects: Vec<Reject>,
    pub zero_dates: u64,
}

/// A table to stream, from where the lake has it.
#[derive(Debug, Clone)]
pub struct StreamTable {
    pub table: SourceTable,
    /// Its committed position: events at or before it are in the lake already.
    pub from: Position,
    /// The positions its last snapshot's chunks were read at: a change a chunk already saw
    /// is not given again (the hand-off after a resumed snapshot).
    pub snapshot: Option<SnapshotMarks>,
}

/// The chunk positions of a completed snapshot run.
#[derive(Debug, Clone)]
pub struct SnapshotMarks {
    pub plan: SnapshotPlan,
    /// Per chunk, [`ChunkReader::read_at`].
    pub read_at: Vec<i64>,
}

/// What a change stream says next.
#[derive(Debug)]
pub enum StreamEvent {
    /// A source transaction committed, at `at`: the tables it changed and how many change
    /// rows each got (buffered in the stream until [`ChangeStream::take`]).
    Committed {
        at: Position,
        commit_micros: i64,
        tables: Vec<(String, usize)>,
    },
    /// A transaction still open outgrew the stream's buffer: rows of it were buffered for
    /// these tables (how many each), apart from the rows of the transactions before it. A
    /// table a `Committed` named since its last take gives those first (commit them now),
    /// then the open transaction's: write them, but commit them only with the `Committed`
    /// that ends the transaction (it names every table given rows here); drop them on
    /// `RolledBack` or the table's `Halted`/`Failed`. More `Open`s may come before the end.
    Open { tables: Vec<(String, usize)> },
    /// The open transaction whose rows `Open` gave for these tables was rolled back.
    RolledBack { tables: Vec<String> },
    /// `table`'s definitions changed at `at` (its rows buffered before were decoded with the
    /// old ones: take them first). `statement` is what changed it.
    Changed {
        table: SourceTable,
        at: Position,
        statement: String,
    },
    /// `table` cannot be followed past here (why); the stream gives it nothing more.
    Halted { table: String, why: String },
    /// The stream moved on without a change for the captured tables.
    Moved(Position),
    /// `table` cannot be streamed at all (its position is no longer on the server): an
    /// error of `kind` for that table.
    Failed {
        table: String,
        why: String,
        kind: ErrorKind,
    },
}

/// The rows a stream buffered for one table.
#[derive(Debug, Default)]
pub struct Taken {
    /// Source columns, as the table's current definitions decode them: batches in order,
    /// each of bounded size ([`sluice_core::change::BATCH_BYTES`]).
    pub rows: Vec<RecordBatch>,
    /// Per row of all the batches, in order.
    pub ops: Vec<Op>,
    /// Commit time per row, microseconds since the epoch.
    pub commit_micros: Vec<Option<i64>>,
    pub rejects: Vec<Reject>,
    pub zero_dates: u64,
}

/// A stream of whole source transactions for a set of tables.
#[async_trait]
pub trait ChangeStream: Send {
    /// The next event; None when a stream opened to catch up has reached the source's end
    /// (a following stream waits; the driver drops it to stop).
    async fn next(&mut self) -> Result<Option<StreamEvent>, SourceError>;

    /// The rows buffered for `table` since the last take.
    fn take(&mut self, table: &str) -> Result<Taken, SourceError>;

    /// Gives `table` nothing more (its capture stopped).
    fn stop(&mut self, table: &str);

    /// Where each table still streamed stands once everything buffered is taken: the
    /// position to commit for a table with nothing new (so the next run starts there, not at
    /// a place the server may have dropped by then). Never behind the table's own position.
    fn positions(&self) -> Vec<(String, Position)>;

    /// `table`'s rows up to `at` are committed in the lake: what waits for that may go on
    /// (an events client is answered; a server is told it may drop its log up to there).
    fn committed(&mut self, table: &str, at: &Position) {
        let _ = (table, at);
    }
}

/// A file (or other separately delivered unit of data) and the version of it listed.
#[derive(Clone)]
pub struct Unit {
    /// Its identity in positions (a path or URL).
    pub id: String,
    /// What identifies this version of it (content changes, this changes); never 0 or 1.
    pub version: i64,
    /// When it was last written, if known (its rows' source time).
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
    /// Its size in bytes, if known (how many go into one lake commit).
    pub bytes: Option<u64>,
    /// What the source needs to read it again (its listing entry), opaque to the driver.
    pub detail: Arc<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Unit({} v{})", self.id, self.version)
    }
}

/// The units a source holds now.
#[derive(Debug, Default)]
pub struct Listing {
    pub units: Vec<Unit>,
    /// Units left for a later sync (still being written).
    pub waiting: u64,
}

/// The schema of a new table, and the units it was inferred from.
#[derive(Debug)]
pub struct Inferred {
    pub schema: SchemaRef,
    pub from: Vec<String>,
}

/// The columns one unit brings, held against the table's.
#[derive(Debug)]
pub struct Incoming {
    pub schema: SchemaRef,
    /// They are all the columns it has: table columns missing from them were dropped.
    pub complete: bool,
}

/// What reading produces, in order.
pub enum ReadEvent {
    Rows(RecordBatch),
    Reject(Reject),
}

/// Counts of one read.
#[derive(Debug, Default, Clone)]
pub struct ReadStats {
    pub rows: u64,
    pub rejects: u64,
    /// Columns the rows hold that the table lacks, found past the sample the table's columns
    /// were taken from (JSON keys first seen late), with the types their values say. Their
    /// rows were rejected: the engine takes the columns through the schema gate and reads
    /// the unit again.
    pub late_columns: Vec<arrow::datatypes::Field>,
}

/// A unit made readable (a remote file fetched once): its columns, then its rows.
#[async_trait]
pub trait OpenUnit: Send + Sync {
    /// The columns it brings, held against the table's source columns `table` (blocking:
    /// call it off the async threads).
    fn incoming(&self, table: &SchemaRef) -> Result<Incoming, SourceError>;

    /// Reads it into batches of `schema` and rejects, each handed to `emit` as it goes;
    /// `emit` failing stops the read (blocking).
    fn read(
        &self,
        schema: &SchemaRef,
        emit: &mut dyn FnMut(ReadEvent) -> Result<(), SourceError>,
    ) -> Result<ReadStats, SourceError>;

    /// The version that was read; None when it changed while being read (still being
    /// written: nothing of this read counts).
    async fn version_read(&self) -> Result<Option<i64>, SourceError>;
}

/// A source. One implementation per kind, built in one place (`engine::sources`).
#[async_trait]
pub trait Source: Send + Sync {
    /// The source's name in the config.
    fn name(&self) -> &str;

    /// Its kind (`mysql`, `files`): prefixes the positions it keeps in the lake.
    fn kind(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    /// The lake table property that keeps [`SourceTable::definitions`].
    fn definitions_property(&self) -> &'static str {
        "sluice.definitions"
    }

    /// Connects and says what it finds, for `sluice check` (never a secret).
    async fn check(&self) -> Result<String, SourceError>;

    /// The tables to capture: those `selected` (None: every one), as they are now.
    async fn tables(&self, selected: Option<&[String]>) -> Result<Vec<SourceTable>, SourceError>;

    /// Why `table` cannot be captured (`stream`: by the change stream), if it cannot: an
    /// error for that table, the others go on.
    fn unusable(&self, table: &SourceTable, stream: bool) -> Option<String> {
        let _ = (table, stream);
        None
    }

    /// A table's columns as `definitions` (kept in the lake) describe them: what a change
    /// stream resuming from an older position decodes with.
    fn table_as(&self, now: &SourceTable, definitions: &str) -> Result<SourceTable, SourceError> {
        let _ = definitions;
        Ok(now.clone())
    }

    /// The checks a mode needs of the server before it starts (CDC: the binlog's format).
    async fn check_stream(&self) -> Result<(), SourceError> {
        Err(unsupported(self.name(), "change streams"))
    }

    /// Splits a table for a new snapshot run, in chunks of about `chunk_rows` rows.
    async fn plan_snapshot(
        &self,
        table: &SourceTable,
        chunk_rows: u64,
    ) -> Result<SnapshotPlan, SourceError> {
        let _ = (table, chunk_rows);
        Err(unsupported(self.name(), "snapshots"))
    }

    /// `n` readers, each inside a consistent view; with `positions`, each knows where its
    /// view stands in the change stream ([`ChunkReader::read_at`]).
    async fn snapshot_readers(
        &self,
        n: usize,
        positions: bool,
    ) -> Result<Vec<Box<dyn ChunkReader>>, SourceError> {
        let _ = (n, positions);
        Err(unsupported(self.name(), "snapshots"))
    }

    /// Rows whose `cursor` is past `after` (as [`cursor values`](self) number it), at it, or
    /// NULL (every row when None), in cursor order, sent to `out` as they come.
    async fn read_incremental(
        &self,
        table: &SourceTable,
        cursor: &str,
        after: Option<i64>,
        out: tokio::sync::mpsc::Sender<RecordBatch>,
    ) -> Result<IncrementalEnd, SourceError> {
        let _ = (table, cursor, after, out);
        Err(unsupported(self.name(), "incremental reads"))
    }

    /// Where a stream starts for a table with no position yet, when the source has no
    /// snapshot to start it (events: history begins when capture does).
    fn start_position(&self) -> Option<Position> {
        None
    }

    /// Opens the change stream for `tables` (each from its own position); with `follow` it
    /// waits for new changes, else it ends once caught up.
    async fn open_stream(
        &self,
        tables: Vec<StreamTable>,
        follow: bool,
    ) -> Result<Box<dyn ChangeStream>, SourceError> {
        let _ = (tables, follow);
        Err(unsupported(self.name(), "change streams"))
    }

    /// The lake positions (application ids) this kind kept before positions were bytes:
    /// the driver reads them for [`Source::legacy_position`] and [`Source::legacy_plan`].
    fn legacy_ids(&self) -> &'static [&'static str] {
        &[]
    }

    /// Where stream position `at` stands in the log the source keeps; None when the log
    /// there is gone (purged: the table must be snapshotted again).
    async fn retention(&self, at: &Position) -> Result<Option<Retention>, SourceError> {
        let _ = at;
        Err(unsupported(self.name(), "change streams"))
    }

    /// A position stored before positions were kept as bytes, rebuilt from the lake's
    /// numbered positions (`app`: one by name), if this kind kept one.
    fn legacy_position(&self, app: &dyn Fn(&str) -> Option<i64>) -> Option<Position> {
        let _ = app;
        None
    }

    /// A snapshot plan stored before plans were kept as bytes, likewise.
    fn legacy_plan(&self, app: &dyn Fn(&str) -> Option<i64>) -> Option<SnapshotPlan> {
        let _ = app;
        None
    }

    /// The units there are now (files: those settled), each with the version listed.
    async fn units(&self) -> Result<Listing, SourceError> {
        Err(unsupported(self.name(), "files"))
    }

    /// Units landed in one lake commit, at most (their positions commit with them; a crash
    /// re-reads at most this many).
    fn units_per_commit(&self) -> usize {
        sluice_core::config::DEFAULT_FILES_PER_COMMIT
    }

    /// The schema of a new table, from a sample of `units`.
    async fn infer(&self, units: &[Unit]) -> Result<Inferred, SourceError> {
        let _ = units;
        Err(unsupported(self.name(), "files"))
    }

    /// The table's columns as configured, when declared (a contract: values off it are
    /// rejected, never evolved into the lake).
    fn declared(&self) -> Option<SchemaRef> {
        None
    }

    /// Makes `unit` readable.
    async fn open_unit(&self, unit: &Unit) -> Result<Arc<dyn OpenUnit>, SourceError> {
        let _ = unit;
        Err(unsupported(self.name(), "files"))
    }

    /// Reconciliation: `table` as the source checksums it in its own SQL (its key and the
    /// columns in `table.schema` order, each rendered from the source's own definitions);
    /// None when this kind cannot.
    fn canonical(&self, table: &SourceTable) -> Option<Side> {
        let _ = table;
        None
    }

    /// Runs a reconciliation query made from [`Source::canonical`]: every value as text.
    async fn query_text(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, SourceError> {
        let _ = sql;
        Err(unsupported(self.name(), "reconciliation"))
    }

    /// Reads the rows of `table` matching `condition` (made from [`Source::canonical`]), as
    /// a snapshot chunk reads them: the rows a repair lands again.
    async fn read_where(
        &self,
        table: &SourceTable,
        condition: &str,
        out: &tokio::sync::mpsc::Sender<RecordBatch>,
    ) -> Result<Chunk, SourceError> {
        let _ = (table, condition, out);
        Err(unsupported(self.name(), "reconciliation"))
    }
}

/// A shared source.
pub type SharedSource = Arc<dyn Source>;

/// What `sluice check` adds about tables without a primary key (`names`), if any.
pub fn keyless_note<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    match names.is_empty() {
        true => String::new(),
        false => format!(
            "; no primary key (loaded in append mode unless primary_key is set): {}",
            names.join(", ")
        ),
    }
}

fn unsupported(source: &str, what: &str) -> SourceError {
    SourceError::Config {
        source_name: source.to_string(),
        message: format!("this source has no {what}"),
    }
}
