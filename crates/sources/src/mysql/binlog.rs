//! The binlog as a replica reads it: positions, server checks, and a reader that turns events
//! into whole committed source transactions (row changes of the selected tables, with their
//! commit time and the position just after the commit) and DDL statements that touch them.

use std::collections::{HashMap, HashSet};
use std::fmt;

use futures::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Row};

use super::{Flavor, MySql};
use crate::SourceError;
use sluice_core::retry::ErrorKind;

/// A place in the binlog: file and byte offset (the position just after an event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogPosition {
    pub file: String,
    pub pos: u64,
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

impl BinlogPosition {
    /// The file's sequence number (`binlog.000042` → 42).
    pub fn file_seq(&self) -> u64 {
        file_seq(&self.file)
    }

    /// Packed in one i64 (file number in the high half) so it can ride in a Delta
    /// application transaction, committed atomically with the data it covers.
    pub fn encode(&self) -> i64 {
        ((self.file_seq() as i64) << 32) | (self.pos as i64 & 0xffff_ffff)
    }

    /// The position an encoded value names, given the server's binlog file names.
    pub fn decode(value: i64, files: &[String]) -> Option<BinlogPosition> {
        let seq = (value >> 32) as u64;
        let pos = (value & 0xffff_ffff) as u64;
        files
            .iter()
            .find(|f| file_seq(f) == seq)
            .map(|f| BinlogPosition {
                file: f.clone(),
                pos,
            })
    }

    /// Orders positions (file number, then offset).
    pub fn key(&self) -> (u64, u64) {
        (self.file_seq(), self.pos)
    }
}

fn file_seq(file: &str) -> u64 {
    file.rsplit('.')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Refuses a server whose binlog cannot feed CDC, saying what to change.
pub async fn check_server(mysql: &MySql, conn: &mut Conn) -> Result<(), SourceError> {
    let row: Option<Row> = conn
        .query_first("SELECT @@log_bin, @@binlog_format, @@binlog_row_image")
        .await
        .map_err(|e| mysql.db_err("reading binlog settings", e))?;
    let row = row.ok_or_else(|| mysql.err("reading binlog settings: no row"))?;
    let log_bin: Option<String> = row.get(0);
    let format: Option<String> = row.get(1);
    let image: Option<String> = row.get(2);
    if !matches!(log_bin.as_deref(), Some("1") | Some("ON")) {
        return Err(mysql.err(
            "the server's binary log is off: CDC needs log_bin (e.g. log-bin=mysql-bin, binlog_format=ROW in my.cnf)",
        ));
    }
    if !format
        .as_deref()
        .is_some_and(|f| f.eq_ignore_ascii_case("ROW"))
    {
        return Err(mysql.err(format!(
            "binlog_format is {}, CDC needs ROW: SET GLOBAL binlog_format = 'ROW' (and in my.cnf)",
            format.unwrap_or_default()
        )));
    }
    if !image
        .as_deref()
        .is_some_and(|f| f.eq_ignore_ascii_case("FULL"))
    {
        return Err(mysql.err(format!(
            "binlog_row_image is {}, CDC needs FULL: SET GLOBAL binlog_row_image = 'FULL' (and in my.cnf)",
            image.unwrap_or_default()
        )));
    }
    // Column names in the binlog let rows be decoded by name, whatever the table's column
    // order was when they were written (MySQL 8.0.1+, MariaDB 10.5+).
    let metadata: Option<String> = conn
        .query_first("SELECT @@binlog_row_metadata")
        .await
        .unwrap_or(None);
    if !metadata
        .as_deref()
        .is_some_and(|m| m.eq_ignore_ascii_case("FULL"))
    {
        return Err(mysql.err(format!(
            "binlog_row_metadata is {}, CDC needs FULL (column names with every row, so a row is read by name): SET GLOBAL binlog_row_metadata = 'FULL' (and in my.cnf; MySQL 8.0.1+ or MariaDB 10.5+)",
            metadata.unwrap_or_else(|| "not supported by this server".into())
        )));
    }
    Ok(())
}

/// The binlog files the server still has, oldest first.
pub async fn binary_logs(mysql: &MySql, conn: &mut Conn) -> Result<Vec<String>, SourceError> {
    let logs = binary_log_sizes(mysql, conn).await?;
    Ok(logs.into_iter().map(|(name, _)| name).collect())
}

/// The server's binlog files, oldest first, with their sizes in bytes.
pub async fn binary_log_sizes(
    mysql: &MySql,
    conn: &mut Conn,
) -> Result<Vec<(String, u64)>, SourceError> {
    let rows: Vec<Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| mysql.db_err("SHOW BINARY LOGS", e))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<u64, _>(1).unwrap_or(0))))
        .collect())
}

/// How long the server keeps its binlog files (None: until purged by hand).
pub async fn binlog_kept_for(mysql: &MySql, conn: &mut Conn) -> Result<Option<u64>, SourceError> {
    // MySQL 8 and MariaDB 10.6+ say it in seconds; older servers in days.
    let secs: Option<u64> = match conn
        .query_first("SELECT @@global.binlog_expire_logs_seconds")
        .await
    {
        Ok(v) => v,
        Err(_) => conn
            .query_first::<u64, _>("SELECT @@global.expire_logs_days")
            .await
            .map_err(|e| mysql.db_err("reading expire_logs_days", e))?
            .map(|d| d * 86_400),
    };
    Ok(secs.filter(|s| *s > 0))
}

/// The server's current binlog position and GTID set (as text).
pub async fn current_position(
    mysql: &MySql,
    conn: &mut Conn,
    flavor: Flavor,
) -> Result<(BinlogPosition, Option<String>), SourceError> {
    let row: Option<Row> = match conn.query_first("SHOW MASTER STATUS").await {
        Ok(r) => r,
        // MySQL 8.4 renamed it.
        Err(_) => conn
            .query_first("SHOW BINARY LOG STATUS")
            .await
            .map_err(|e| mysql.db_err("reading the binlog position", e))?,
    };
    let row =
        row.ok_or_else(|| mysql.err("the server reports no binlog position: is log_bin on?"))?;
    let file: String = row.get(0).unwrap_or_default();
    let pos: u64 = row.get(1).unwrap_or(4);
    let gtid: Option<String> = match flavor {
        Flavor::MariaDb => conn
            .query_first("SELECT @@gtid_binlog_pos")
            .await
            .map_err(|e| mysql.db_err("reading gtid_binlog_pos", e))?,
        Flavor::MySql => conn
            .query_first("SELECT @@gtid_executed")
            .await
            .map_err(|e| mysql.db_err("reading gtid_executed", e))?,
    };
    Ok((BinlogPosition { file, pos }, gtid.filter(|g| !g.is_empty())))
}

/// Event types that open a transaction in the binlog (MySQL's GTID and anonymous GTID,
/// MariaDB's GTID), whose header time is the transaction's commit time.
const GTID: u8 = 0x21;
const ANONYMOUS_GTID: u8 = 0x22;
const MARIADB_GTID: u8 = 0xa2;
/// MariaDB's GTID event body: sequence number (8 bytes), domain (4), then its flags; the
/// flag of a transaction that ends in `XA PREPARE` (`FL_PREPARED_XA`).
const MARIADB_GTID_FLAGS: usize = 12;
const MARIADB_FL_PREPARED_XA: u8 = 0x40;

/// What a row change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOp {
    Insert,
    Update,
    Delete,
}

pub type Image = Vec<Option<BinlogValue<'static>>>;

/// One row change of a selected table.
#[derive(Debug, Clone)]
pub struct RowChange {
    pub table: String,
    pub op: RowOp,
    pub before: Option<Image>,
    pub after: Option<Image>,
    /// The columns of the row images by name, as the server wrote them
    /// (`binlog_row_metadata = FULL`): the images are decoded by these names, never by the
    /// position of today's definitions.
    pub names: std::sync::Arc<Vec<String>>,
}

/// A committed source transaction.
#[derive(Debug, Clone)]
pub struct SourceTxn {
    pub end: BinlogPosition,
    /// Commit time, microseconds since the epoch (the binlog records seconds).
    pub commit_micros: i64,
    pub changes: Vec<RowChange>,
    /// Selected tables the transaction changed in a way the binlog carries no rows for
    /// (statement-based DML), with why: their capture must stop before this transaction.
    pub unreadable: Vec<(String, String)>,
}

/// A schema statement on a selected table (or a new table in the database).
#[derive(Debug, Clone)]
pub struct Ddl {
    pub statement: String,
    pub tables: Vec<String>,
    /// Position just after the statement.
    pub end: BinlogPosition,
    /// Position just before it: where the table's capture stops if the change halts it.
    pub start: BinlogPosition,
}

#[derive(Debug)]
pub enum StreamItem {
    Txn(SourceTxn),
    /// Rows of the transaction still open, given ahead of its end because it outgrew the
    /// reader's buffer: they belong to the transaction that ends with the next `Txn` (or is
    /// undone by the next `Position`, a rollback). `at` is the end of the last row event in
    /// them; the transaction commits after it.
    Part {
        changes: Vec<RowChange>,
        at: BinlogPosition,
        /// The transaction's commit time (its GTID event's, written at commit), which its
        /// end then carries too.
        commit_micros: i64,
    },
    Ddl(Ddl),
    /// The reader moved on without a change for the selected tables (rotation, other tables).
    Position(BinlogPosition),
}

/// An XA transaction between its PREPARE and its COMMIT or ROLLBACK: its rows wait, and the
/// binlog position before it is held (a restart must read the PREPARE again).
#[derive(Debug)]
struct Prepared {
    start: BinlogPosition,
    changes: Vec<RowChange>,
    unreadable: Vec<(String, String)>,
}

/// Reads the binlog from a position.
pub struct BinlogReader {
    mysql: MySql,
    stream: BinlogStream,
    /// The selected tables, by their name as folded for comparison.
    tables: HashMap<String, String>,
    /// Table names compare case-insensitively (`lower_case_table_names` is 1 or 2).
    fold_case: bool,
    file: String,
    txn: Option<Vec<RowChange>>,
    /// Row-event bytes of the changes in `txn` (an estimate of what they hold).
    txn_bytes: u64,
    /// Past this many bytes, the open transaction's rows are given ahead as a `Part`.
    part_bytes: u64,
    /// The commit time the open transaction's rows given ahead carry, once it gave some.
    parted: Option<i64>,
    /// Seconds of the last GTID event: the commit time of the transaction it opens (the
    /// server writes a transaction to the binlog when it commits).
    gtid_secs: Option<u32>,
    /// The last GTID event opens an XA transaction (MariaDB says so in its flags, with no
    /// `XA START` statement).
    gtid_xa: bool,
    /// The open transaction's GTID time.
    txn_secs: Option<u32>,
    /// The open transaction is an XA one: its rows wait for its PREPARE, never given ahead.
    txn_xa: bool,
    /// Statement-based DML of the open transaction on selected tables.
    unreadable: Vec<(String, String)>,
    /// Savepoints of the open transaction: name and how many changes came before it.
    savepoints: Vec<(String, usize)>,
    /// Where the last complete event group ended: where the open transaction began.
    boundary: BinlogPosition,
    txn_start: Option<BinlogPosition>,
    /// The XA transaction the last `XA END` named.
    xa_ended: Option<String>,
    prepared: HashMap<String, Prepared>,
}

impl BinlogReader {
    /// Starts reading at `from`. With `until_caught_up` the server ends the stream when it
    /// has sent everything it has (a `sync` run); otherwise it waits for new events. Table
    /// names compare as the server compares them (`lower_case_table_names`). A transaction
    /// holding more than `part_bytes` of rows gives them ahead in parts.
    pub async fn open(
        mysql: &MySql,
        from: &BinlogPosition,
        server_id: u32,
        tables: HashSet<String>,
        until_caught_up: bool,
        part_bytes: u64,
    ) -> Result<BinlogReader, SourceError> {
        let mut conn = mysql.connect().await?;
        let lctn: Option<u32> = conn
            .query_first("SELECT @@lower_case_table_names")
            .await
            .map_err(|e| mysql.db_err("reading lower_case_table_names", e))?;
        let fold_case = lctn.unwrap_or(0) != 0;
        if mysql.flavor(&mut conn).await? == Flavor::MariaDb {
            // A replica that knows GTIDs: MariaDB then sends its events as they are, rather
            // than rewriting each GTID event for old replicas, which fails for an XA
            // transaction's when a stream starts at it (a restart held at an XA PREPARE).
            conn.query_drop("SET @mariadb_slave_capability = 4")
                .await
                .map_err(|e| mysql.db_err("announcing the replica's capabilities", e))?;
        }
        let mut request = BinlogStreamRequest::new(server_id)
            .with_filename(from.file.as_bytes())
            .with_pos(from.pos);
        if until_caught_up {
            request = request.with_non_blocking();
        }
        let stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| mysql.db_err(&format!("starting the binlog stream at {from}"), e))?;
        let fold = |t: &str| match fold_case {
            true => t.to_lowercase(),
            false => t.to_string(),
        };
        Ok(BinlogReader {
            mysql: mysql.clone(),
            stream,
            tables: tables.into_iter().map(|t| (fold(&t), t)).collect(),
            fold_case,
            file: from.file.clone(),
            txn: None,
            txn_bytes: 0,
            part_bytes,
            parted: None,
            gtid_secs: None,
            gtid_xa: false,
            txn_secs: None,
            txn_xa: false,
            unreadable: Vec::new(),
            savepoints: Vec::new(),
            boundary: from.clone(),
            txn_start: None,
            xa_ended: None,
            prepared: HashMap::new(),
        })
    }

    /// The selected table a name in a statement or table map means, if any.
    fn selected(&self, database: &str, table: &str) -> Option<String> {
        let same_db = match self.fold_case {
            true => database.eq_ignore_ascii_case(&self.mysql.database),
            false => database == self.mysql.database,
        };
        if !same_db {
            return None;
        }
        let key = match self.fold_case {
            true => table.to_lowercase(),
            false => table.to_string(),
        };
        self.tables.get(&key).cloned()
    }

    /// Where a restart must read from so that no XA transaction prepared but not yet
    /// resolved is lost (its rows are in the binlog only at its PREPARE): the start of the
    /// oldest one, if any.
    pub fn hold(&self) -> Option<BinlogPosition> {
        self.prepared
            .values()
            .map(|p| p.start.clone())
            .min_by_key(|p| p.key())
    }

    /// Starts collecting a transaction at the last boundary (unless one is open).
    fn begin(&mut self) {
        if self.txn.is_none() {
            self.txn = Some(Vec::new());
            self.txn_start = Some(self.boundary.clone());
            self.savepoints.clear();
            self.unreadable.clear();
            self.txn_secs = self.gtid_secs.take();
            self.txn_xa = std::mem::take(&mut self.gtid_xa);
        }
    }

    /// Closes the open transaction (committed, prepared or rolled back).
    fn end_txn(&mut self) -> Vec<RowChange> {
        self.savepoints.clear();
        self.txn_start = None;
        self.txn_bytes = 0;
        self.parted = None;
        self.txn_secs = None;
        self.txn.take().unwrap_or_default()
    }

    /// The rows of the open transaction that can be given ahead, once it holds more than the
    /// reader's buffer: those before its oldest savepoint (a rollback to it undoes only what
    /// came after). Never an XA transaction's: they wait for its PREPARE.
    fn part(&mut self, at: &BinlogPosition, event_secs: u32) -> Option<StreamItem> {
        if self.txn_xa || self.txn_bytes <= self.part_bytes {
            return None;
        }
        let txn = self.txn.as_mut()?;
        let held = txn.len();
        let ahead = self.savepoints.first().map_or(held, |&(_, n)| n);
        if ahead == 0 {
            return None;
        }
        let changes: Vec<RowChange> = txn.drain(..ahead).collect();
        for sp in &mut self.savepoints {
            sp.1 -= ahead;
        }
        self.txn_bytes = self.txn_bytes * (held - ahead) as u64 / held as u64;
        let secs = self.txn_secs.unwrap_or(event_secs);
        let commit_micros = *self.parted.get_or_insert(secs as i64 * 1_000_000);
        Some(StreamItem::Part {
            changes,
            at: at.clone(),
            commit_micros,
        })
    }

    /// The next committed transaction, DDL or position; None when the stream ended.
    pub async fn next(&mut self) -> Result<Option<StreamItem>, SourceError> {
        loop {
            let event = match self.stream.next().await {
                None => return Ok(None),
                Some(Ok(e)) => e,
                Some(Err(e)) if super::error_kind(&e) == ErrorKind::PositionLost => {
                    return Err(SourceError::PositionLost {
                        source_name: self.mysql.source.clone(),
                        message: format!(
                            "the binlog position sluice must resume from is no longer on the server (purged?): {e}. \
                             Re-snapshot the affected tables with `sluice sync --resnapshot {}.TABLE`",
                            self.mysql.source
                        ),
                    });
                }
                Some(Err(e)) => {
                    return Err(self
                        .mysql
                        .db_err(&format!("reading the binlog in {}", self.file), e));
                }
            };
            let header = event.header();
            let end = BinlogPosition {
                file: self.file.clone(),
                pos: header.log_pos() as u64,
            };
            if matches!(
                header.event_type_raw(),
                GTID | ANONYMOUS_GTID | MARIADB_GTID
            ) {
                self.gtid_secs = Some(header.timestamp());
                self.gtid_xa = header.event_type_raw() == MARIADB_GTID
                    && event
                        .data()
                        .get(MARIADB_GTID_FLAGS)
                        .is_some_and(|f| f & MARIADB_FL_PREPARED_XA != 0);
            }
            let data = event.read_data().map_err(|e| {
                self.mysql
                    .err(format!("decoding a binlog event at {end}: {e}"))
            })?;
            let Some(data) = data else {
                continue; // an event type this reader does not know (MariaDB annotations, …)
            };
            match data {
                EventData::RotateEvent(r) => {
                    self.file = clean_file_name(r.name_raw(), &self.file);
                    if header.timestamp() != 0 || header.log_pos() != 0 {
                        let at = BinlogPosition {
                            file: self.file.clone(),
                            pos: r.position(),
                        };
                        if self.txn.is_none() {
                            self.boundary = at.clone();
                        }
                        return Ok(Some(StreamItem::Position(at)));
                    }
                }
                EventData::QueryEvent(q) => {
                    let sql = q.query();
                    let schema = q.schema();
                    if let Some(item) = self.statement(
                        &sql,
                        &schema,
                        &end,
                        header.timestamp(),
                        header.event_size(),
                    )? {
                        return Ok(Some(item));
                    }
                }
                EventData::XidEvent(_) => {
                    let item = self.commit(end.clone(), header.timestamp());
                    return Ok(Some(item));
                }
                EventData::XaPrepareLogEvent(_) => {
                    // The transaction waits for its XA COMMIT or ROLLBACK, named by the XA END
                    // before this event.
                    let xid = self.xa_ended.take().unwrap_or_default();
                    let start = self
                        .txn_start
                        .clone()
                        .unwrap_or_else(|| self.boundary.clone());
                    let changes = self.end_txn();
                    let unreadable = std::mem::take(&mut self.unreadable);
                    self.prepared.insert(
                        xid,
                        Prepared {
                            start,
                            changes,
                            unreadable,
                        },
                    );
                    self.boundary = end.clone();
                    return Ok(Some(StreamItem::Position(end)));
                }
                EventData::RowsEvent(rows) => {
                    self.rows(&rows, &end, header.event_size())?;
                    if let Some(part) = self.part(&end, header.timestamp()) {
                        return Ok(Some(part));
                    }
                }
                _ => {}
            }
        }
    }

    /// A query event: transaction control, XA, statement-based DML or DDL.
    fn statement(
        &mut self,
        sql: &str,
        schema: &str,
        end: &BinlogPosition,
        ts: u32,
        size: u32,
    ) -> Result<Option<StreamItem>, SourceError> {
        let words: Vec<String> = sql
            .split(|c: char| c.is_whitespace() || c == ';')
            .filter(|w| !w.is_empty())
            .take(3)
            .map(|w| w.to_ascii_uppercase())
            .collect();
        let word = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
        match word(0) {
            "BEGIN" => {
                self.begin();
                return Ok(None);
            }
            "START" if word(1) == "TRANSACTION" => {
                self.begin();
                return Ok(None);
            }
            "COMMIT" => return Ok(Some(self.commit(end.clone(), ts))),
            "SAVEPOINT" => {
                self.begin();
                let n = self.txn.as_ref().map_or(0, Vec::len);
                self.savepoints.push((savepoint_name(sql), n));
                return Ok(None);
            }
            "RELEASE" => {
                // The savepoint and those after it are gone: a rollback can no longer
                // reach the rows before them.
                let name = savepoint_name(sql);
                if let Some(i) = self.savepoints.iter().rposition(|(s, _)| *s == name) {
                    self.savepoints.truncate(i);
                }
                return Ok(None);
            }
            "ROLLBACK" if word(1) == "TO" => {
                // The server cut the rows after the savepoint from the transaction when it
                // could; when it logs the statement, the rows after it are undone here.
                let name = savepoint_name(sql);
                if let Some(&(_, n)) = self.savepoints.iter().rev().find(|(s, _)| *s == name) {
                    if let Some(t) = self.txn.as_mut() {
                        let held = t.len().max(1) as u64;
                        t.truncate(n);
                        self.txn_bytes = self.txn_bytes * t.len() as u64 / held;
                    }
                }
                return Ok(None);
            }
            "ROLLBACK" => {
                self.end_txn();
                self.unreadable.clear();
                self.boundary = end.clone();
                return Ok(Some(StreamItem::Position(end.clone())));
            }
            "XA" => return self.xa(sql, word(1), end, ts),
            _ => {}
        }
        if let Some(targets) = dml_tables(sql, schema) {
            // Statement-based DML (a session's binlog_format = STATEMENT or MIXED): the binlog
            // holds the statement, not its rows.
            self.begin();
            let why = format!(
                "the binlog holds a statement, not rows, for a change of this table at {end}: `{}` \
                 (the session wrote it with binlog_format = STATEMENT or MIXED; set binlog_format = ROW for every session, \
                 then re-snapshot with sluice sync --resnapshot {}.TABLE)",
                sql.trim(),
                self.mysql.source
            );
            for (db, t) in targets {
                if let Some(name) = self.selected(&db, &t) {
                    if !self.unreadable.iter().any(|(n, _)| *n == name) {
                        self.unreadable.push((name, why.clone()));
                    }
                }
            }
            return Ok(None);
        }
        let tables: Vec<String> = ddl_names(sql, schema)
            .into_iter()
            .filter_map(|(db, t)| match self.selected(&db, &t) {
                Some(name) => Some(name),
                // A table created in the database may be one a source with no table list
                // will capture.
                None if sql_starts_create(sql) && db.eq_ignore_ascii_case(&self.mysql.database) => {
                    Some(t)
                }
                None => None,
            })
            .collect();
        let start = BinlogPosition {
            file: self.file.clone(),
            pos: end.pos.saturating_sub(size as u64),
        };
        if self.txn.is_none() {
            self.boundary = end.clone();
        }
        if tables.is_empty() {
            return Ok(None);
        }
        Ok(Some(StreamItem::Ddl(Ddl {
            statement: sql.to_string(),
            tables,
            end: end.clone(),
            start,
        })))
    }

    /// XA statements (`XA START|END|COMMIT|ROLLBACK xid`); the PREPARE is its own event.
    fn xa(
        &mut self,
        sql: &str,
        verb: &str,
        end: &BinlogPosition,
        ts: u32,
    ) -> Result<Option<StreamItem>, SourceError> {
        let xid = xa_xid(sql);
        match verb {
            "START" | "BEGIN" => {
                self.begin();
                self.txn_xa = true;
            }
            "END" => self.xa_ended = Some(xid),
            "COMMIT" => {
                if let Some(p) = self.prepared.remove(&xid) {
                    self.boundary = end.clone();
                    return Ok(Some(self.txn_item(
                        end.clone(),
                        ts,
                        p.changes,
                        p.unreadable,
                    )));
                }
                if sql.to_ascii_uppercase().contains("ONE PHASE") {
                    return Ok(Some(self.commit(end.clone(), ts)));
                }
                return Err(self.mysql.err(format!(
                    "XA COMMIT {xid} at {end} ends an XA transaction prepared before the position sluice read from, so its rows are not in the stream: \
                     re-snapshot the source's tables (sluice sync --resnapshot {}.TABLE)",
                    self.mysql.source
                )));
            }
            "ROLLBACK" => {
                if self.prepared.remove(&xid).is_none() {
                    self.end_txn();
                    self.unreadable.clear();
                }
                self.boundary = end.clone();
                return Ok(Some(StreamItem::Position(end.clone())));
            }
            _ => {}
        }
        Ok(None)
    }

    fn commit(&mut self, end: BinlogPosition, ts: u32) -> StreamItem {
        let parted = self.parted.take();
        let changes = self.end_txn();
        let unreadable = std::mem::take(&mut self.unreadable);
        self.boundary = end.clone();
        if let Some(commit_micros) = parted {
            // Its rows given ahead commit here, even with none left, all at one time.
            return StreamItem::Txn(SourceTxn {
                end,
                commit_micros,
                changes,
                unreadable,
            });
        }
        self.txn_item(end, ts, changes, unreadable)
    }

    fn txn_item(
        &self,
        end: BinlogPosition,
        ts: u32,
        changes: Vec<RowChange>,
        unreadable: Vec<(String, String)>,
    ) -> StreamItem {
        if changes.is_empty() && unreadable.is_empty() {
            return StreamItem::Position(end);
        }
        StreamItem::Txn(SourceTxn {
            end,
            commit_micros: ts as i64 * 1_000_000,
            changes,
            unreadable,
        })
    }

    fn rows(
        &mut self,
        rows: &RowsEventData<'_>,
        at: &BinlogPosition,
        size: u32,
    ) -> Result<(), SourceError> {
        let Some(tme) = self.stream.get_tme(rows.table_id()) else {
            return Err(self
                .mysql
                .err(format!("row event without its table map at {at}")));
        };
        let Some(table) = self.selected(&tme.database_name(), &tme.table_name()) else {
            // Rows of another table still belong to the open transaction.
            self.begin();
            return Ok(());
        };
        let names = std::sync::Arc::new(column_names(tme));
        let op = match rows {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => RowOp::Insert,
            RowsEventData::UpdateRowsEventV1(_) | RowsEventData::UpdateRowsEvent(_) => RowOp::Update,
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => RowOp::Delete,
            RowsEventData::PartialUpdateRowsEvent(_) => {
                return Err(self.mysql.err(format!(
                    "`{table}`: partial JSON updates in the binlog at {at}; set binlog_row_value_options = '' so rows carry whole values"
                )))
            }
        };
        let mut out = Vec::new();
        for r in rows.rows(tme) {
            let (before, after) = r.map_err(|e| {
                self.mysql
                    .err(format!("`{table}`: decoding a row at {at}: {e}"))
            })?;
            let image = |row: Option<mysql_async::binlog::row::BinlogRow>| {
                row.map(|mut row| {
                    (0..row.len())
                        .map(|i| row.take(i).map(BinlogValue::into_owned))
                        .collect::<Image>()
                })
            };
            out.push(RowChange {
                table: table.clone(),
                op,
                before: image(before),
                after: image(after),
                names: names.clone(),
            });
        }
        // Outside BEGIN…COMMIT (MariaDB writes none: its GTID event opens the transaction; or
        // a non-transactional engine with autocommit) the rows open the transaction, closed by
        // its XID or COMMIT.
        self.begin();
        self.txn.get_or_insert_with(Vec::new).extend(out);
        self.txn_bytes += size as u64;
        Ok(())
    }
}

/// The column names a table map carries (`binlog_row_metadata = FULL`); empty without them.
fn column_names(tme: &mysql_async::binlog::events::TableMapEvent<'_>) -> Vec<String> {
    use mysql_async::binlog::events::OptionalMetadataField;
    for field in tme.iter_optional_meta() {
        if let Ok(OptionalMetadataField::ColumnName(names)) = field {
            return names
                .iter_names()
                .filter_map(|n| n.ok().map(|n| n.name().into_owned()))
                .collect();
        }
    }
    Vec::new()
}

/// The savepoint a `SAVEPOINT` or `ROLLBACK TO [SAVEPOINT]` statement names.
fn savepoint_name(sql: &str) -> String {
    tokenize(sql)
        .into_iter()
        .map(|(t, _)| t)
        .rfind(|t| t != ";")
        .unwrap_or_default()
}

/// The xid of an XA statement, as written (`X'7831',X'',1`, or `'x1'`): the rest after the
/// verb, with `ONE PHASE` and spaces left out.
fn xa_xid(sql: &str) -> String {
    let rest: Vec<&str> = sql.split_whitespace().skip(2).collect();
    let mut xid = rest.join(" ");
    if let Some(i) = xid.to_ascii_uppercase().find("ONE PHASE") {
        xid.truncate(i);
    }
    xid.split_whitespace()
        .collect::<String>()
        .trim_end_matches(';')
        .to_string()
}

/// A rotate event's file name. Fake rotate events (sent when a stream starts) carry the
/// event checksum after the name on MariaDB, and a checksum byte may be an ASCII digit, so the
/// number's end cannot be found by looking for the last digit. Servers name files
/// `<base>.<number>` with the number zero-padded to six digits (`%06lu`): a number that starts
/// with 0 has exactly six digits; a longer one is the shortest reading that does not go back
/// before `current`, the file the stream is in (rotation only moves forward).
fn clean_file_name(raw: &[u8], current: &str) -> String {
    let digits_after = |i: usize| {
        raw[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let Some(dot) = (0..raw.len()).find(|&i| raw[i] == b'.' && digits_after(i) >= 6) else {
        return String::from_utf8_lossy(raw).into_owned();
    };
    let digits = digits_after(dot);
    let number = |len: usize| -> u64 {
        std::str::from_utf8(&raw[dot + 1..dot + 1 + len])
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0)
    };
    let len = if raw[dot + 1] == b'0' {
        6
    } else {
        (6..=digits)
            .find(|&len| number(len) >= file_seq(current))
            .unwrap_or(digits)
    };
    String::from_utf8_lossy(&raw[..dot + 1 + len]).into_owned()
}

fn first_word(sql: &str) -> String {
    sql.trim_start()
        .split(|c: char| c.is_whitespace() || c == ';')
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

fn sql_starts_create(sql: &str) -> bool {
    first_word(sql) == "CREATE"
}

/// The `(database, table)`s a DDL statement names (`ALTER TABLE a`, `RENAME TABLE a TO b`,
/// `DROP TABLE a, b`, `TRUNCATE a`, `CREATE TABLE a`), unqualified names in
/// `default_schema`; empty for anything else.
pub fn ddl_names(sql: &str, default_schema: &str) -> Vec<(String, String)> {
    let tokens = tokenize(sql);
    let upper: Vec<String> = tokens.iter().map(|t| t.0.to_ascii_uppercase()).collect();
    let is = |i: usize, w: &str| upper.get(i).is_some_and(|u| u == w);
    // Skip modifiers up to TABLE.
    let kind = upper.first().cloned().unwrap_or_default();
    let mut i = 1;
    if !matches!(
        kind.as_str(),
        "ALTER" | "RENAME" | "DROP" | "TRUNCATE" | "CREATE"
    ) {
        return Vec::new();
    }
    while i < upper.len() && !is(i, "TABLE") {
        if kind == "TRUNCATE" {
            break; // TRUNCATE [TABLE] t
        }
        // ALTER ONLINE IGNORE TABLE, CREATE OR REPLACE TEMPORARY TABLE, DROP TEMPORARY TABLE
        if !matches!(
            upper[i].as_str(),
            "ONLINE" | "OFFLINE" | "IGNORE" | "OR" | "REPLACE" | "TEMPORARY"
        ) {
            return Vec::new();
        }
        if is(i, "TEMPORARY") {
            return Vec::new();
        }
        i += 1;
    }
    if is(i, "TABLE") {
        i += 1;
    }
    if is(i, "IF") {
        i += if is(i + 1, "NOT") { 3 } else { 2 };
    }
    let mut names = Vec::new();
    let mut expect_name = true;
    while i < tokens.len() {
        let (tok, quoted) = &tokens[i];
        if expect_name {
            // db.table or table
            let (db, table, used) = qualified(&tokens, i, default_schema);
            if *quoted || !table.is_empty() {
                names.push((db, table));
            }
            i += used;
            expect_name = false;
            continue;
        }
        let u = tok.to_ascii_uppercase();
        match (kind.as_str(), u.as_str()) {
            ("RENAME", "TO") | ("RENAME", ",") | ("DROP", ",") | ("TRUNCATE", ",") => {
                expect_name = true
            }
            ("ALTER", "RENAME") => {
                // ALTER TABLE a RENAME [TO|AS] b
                i += 1;
                if tokens
                    .get(i)
                    .is_some_and(|t| matches!(t.0.to_ascii_uppercase().as_str(), "TO" | "AS"))
                {
                    i += 1;
                }
                expect_name = true;
                continue;
            }
            ("ALTER", _) | ("CREATE", _) => break,
            _ => {}
        }
        i += 1;
    }
    names
}

/// The name at token `i`: `db.table` or `table` (in `default_schema`), and the tokens used.
fn qualified(tokens: &[(String, bool)], i: usize, default_schema: &str) -> (String, String, usize) {
    if tokens.get(i + 1).is_some_and(|t| t.0 == "." && !t.1) {
        (
            tokens[i].0.clone(),
            tokens.get(i + 2).map(|t| t.0.clone()).unwrap_or_default(),
            3,
        )
    } else {
        (
            default_schema.to_string(),
            tokens.get(i).map(|t| t.0.clone()).unwrap_or_default(),
            1,
        )
    }
}

/// The `(database, table)`s a data-changing statement may change (`INSERT`/`REPLACE INTO t`,
/// `UPDATE t ... SET`, `DELETE FROM t`, multi-table `UPDATE`/`DELETE`, `LOAD DATA ... INTO
/// TABLE t`); None when it is no such statement. Multi-table forms yield every name before
/// `SET` or `WHERE`: over-naming stops a table needlessly, under-naming would lose changes.
pub fn dml_tables(sql: &str, default_schema: &str) -> Option<Vec<(String, String)>> {
    let tokens = tokenize(sql);
    let upper: Vec<String> = tokens.iter().map(|t| t.0.to_ascii_uppercase()).collect();
    const MODIFIERS: &[&str] = &[
        "LOW_PRIORITY",
        "DELAYED",
        "HIGH_PRIORITY",
        "IGNORE",
        "QUICK",
        "INTO",
        "CONCURRENT",
        "LOCAL",
        "FROM",
        "USING",
        "JOIN",
        "INNER",
        "LEFT",
        "RIGHT",
        "OUTER",
        "CROSS",
        "NATURAL",
        "STRAIGHT_JOIN",
        "ON",
        "AS",
    ];
    let first = upper.first()?.as_str();
    let mut names = Vec::new();
    match first {
        "INSERT" | "REPLACE" => {
            let i = (1..tokens.len())
                .find(|&i| tokens[i].1 || !MODIFIERS.contains(&upper[i].as_str()))?;
            let (db, t, _) = qualified(&tokens, i, default_schema);
            names.push((db, t));
        }
        "LOAD" => {
            let into = upper.iter().position(|u| u == "INTO")?;
            let i = into + 1 + usize::from(upper.get(into + 1).is_some_and(|u| u == "TABLE"));
            let (db, t, _) = qualified(&tokens, i, default_schema);
            names.push((db, t));
        }
        "UPDATE" | "DELETE" => {
            let stop = ["SET", "WHERE", "ORDER", "LIMIT", "RETURNING"];
            let mut i = 1;
            while i < tokens.len() && (tokens[i].1 || !stop.contains(&upper[i].as_str())) {
                let is_word = tokens[i].1
                    || tokens[i]
                        .0
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
                if is_word && (tokens[i].1 || !MODIFIERS.contains(&upper[i].as_str())) {
                    let (db, t, used) = qualified(&tokens, i, default_schema);
                    names.push((db, t));
                    i += used;
                    continue;
                }
                i += 1;
            }
        }
        _ => return None,
    }
    Some(names)
}

/// Words, quoted identifiers (unquoted, flagged: backquotes, and double quotes as
/// `ANSI_QUOTES` writes them — where a table name stands, a double-quoted text can be nothing
/// else), and single punctuation characters.
fn tokenize(sql: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '`' || c == '"' {
            let quote = c;
            chars.next();
            let mut s = String::new();
            while let Some(c) = chars.next() {
                if c == quote {
                    if chars.peek() == Some(&quote) {
                        chars.next();
                        s.push(quote);
                    } else {
                        break;
                    }
                } else {
                    s.push(c);
                }
            }
            out.push((s, true));
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_alphanumeric() || c == '_' || c == '$' {
                    s.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push((s, false));
        } else if c == '/' {
            // comments: skip /* ... */
            chars.next();
            if chars.peek() == Some(&'*') {
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            } else {
                out.push(("/".into(), false));
            }
        } else {
            chars.next();
            out.push((c.to_string(), false));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_names_its_tables() {
        let t = |sql: &str| -> Vec<String> {
            ddl_names(sql, "shop")
                .into_iter()
                .filter(|(db, _)| db == "shop")
                .map(|(_, t)| t)
                .collect()
        };
        assert_eq!(t("ALTER TABLE `orders` ADD COLUMN x INT"), vec!["orders"]);
        assert_eq!(t("alter table shop.orders drop column x"), vec!["orders"]);
        assert_eq!(
            t("ALTER TABLE other.orders ADD x INT"),
            Vec::<String>::new()
        );
        assert_eq!(t("RENAME TABLE a TO b, c TO d"), vec!["a", "b", "c", "d"]);
        assert_eq!(
            t("DROP TABLE IF EXISTS `a`, b /* generated by server */"),
            vec!["a", "b"]
        );
        assert_eq!(t("TRUNCATE orders"), vec!["orders"]);
        assert_eq!(t("TRUNCATE TABLE `orders`"), vec!["orders"]);
        assert_eq!(t("CREATE TABLE IF NOT EXISTS n (id int)"), vec!["n"]);
        assert_eq!(t("ALTER TABLE a RENAME TO b"), vec!["a", "b"]);
        assert_eq!(t("CREATE TEMPORARY TABLE t (x int)"), Vec::<String>::new());
        assert_eq!(t("INSERT INTO a VALUES (1)"), Vec::<String>::new());
        // ANSI_QUOTES names.
        assert_eq!(t("TRUNCATE \"Orders\""), vec!["Orders"]);
        assert_eq!(t("DROP TABLE \"shop\".\"a\""), vec!["a"]);
    }

    #[test]
    fn statement_dml_names_the_tables_it_changes() {
        let t = |sql: &str| -> Option<Vec<String>> {
            dml_tables(sql, "shop")
                .map(|v| v.into_iter().map(|(d, t)| format!("{d}.{t}")).collect())
        };
        assert_eq!(
            t("INSERT INTO orders VALUES (9,'x')"),
            Some(vec!["shop.orders".into()])
        );
        assert_eq!(
            t("insert low_priority ignore `Orders` (id) values (1)"),
            Some(vec!["shop.Orders".into()])
        );
        assert_eq!(
            t("REPLACE other.t SELECT * FROM orders"),
            Some(vec!["other.t".into()])
        );
        assert_eq!(
            t("UPDATE Orders SET v='x' WHERE id=9"),
            Some(vec!["shop.Orders".into()])
        );
        let multi = t("UPDATE a JOIN shop.b ON a.x = b.y SET a.v = 1").unwrap();
        assert!(
            multi.contains(&"shop.a".to_string()) && multi.contains(&"shop.b".to_string()),
            "{multi:?}"
        );
        assert_eq!(
            t("DELETE FROM \"orders\" WHERE id = 1"),
            Some(vec!["shop.orders".into()])
        );
        let d = t("DELETE t1 FROM t1 JOIN t2 USING (id) WHERE t2.x = 1").unwrap();
        assert!(
            d.contains(&"shop.t1".to_string()) && d.contains(&"shop.t2".to_string()),
            "{d:?}"
        );
        assert_eq!(
            t("LOAD DATA LOCAL INFILE '/x' INTO TABLE orders"),
            Some(vec!["shop.orders".into()])
        );
        assert_eq!(t("ALTER TABLE orders ADD x INT"), None);
        assert_eq!(xa_xid("XA COMMIT X'7831',X'',1"), "X'7831',X'',1");
        assert_eq!(xa_xid("XA COMMIT X'7831',X'',1 ONE PHASE"), "X'7831',X'',1");
        assert_eq!(xa_xid("XA END X'7831',X'',1"), "X'7831',X'',1");
        assert_eq!(savepoint_name("ROLLBACK TO SAVEPOINT `a`"), "a");
        assert_eq!(savepoint_name("SAVEPOINT a"), "a");
    }

    #[test]
    fn rotate_names_lose_trailing_checksum_bytes() {
        assert_eq!(
            clean_file_name(b"binlog.000001\"\xa7\x1f", "binlog.000001"),
            "binlog.000001"
        );
        assert_eq!(
            clean_file_name(b"binlog.000001Ab3x", "binlog.000001"),
            "binlog.000001"
        );
        assert_eq!(
            clean_file_name(b"mysql-bin.000123", "mysql-bin.000122"),
            "mysql-bin.000123"
        );
        // A checksum that starts with a digit (seen: file 1 read as 13).
        assert_eq!(
            clean_file_name(b"binlog.0000013\xa7\x1f\x02", "binlog.000001"),
            "binlog.000001"
        );
        // Past six digits: the reading that does not go back.
        assert_eq!(
            clean_file_name(b"binlog.12345674\x00\x01", "binlog.1234567"),
            "binlog.1234567"
        );
        assert_eq!(
            clean_file_name(b"binlog.10000009\x00", "binlog.999999"),
            "binlog.1000000"
        );
    }

    #[test]
    fn positions_pack_into_one_number() {
        let p = BinlogPosition {
            file: "binlog.000042".into(),
            pos: 123_456,
        };
        let files = vec!["binlog.000041".to_string(), "binlog.000042".to_string()];
        assert_eq!(BinlogPosition::decode(p.encode(), &files), Some(p.clone()));
        assert!(
            p.key()
                > BinlogPosition {
                    file: "binlog.000041".into(),
                    pos: 999_999
                }
                .key()
        );
    }
}
