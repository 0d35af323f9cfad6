//! The binlog as a replica reads it: positions, server checks, and a reader that turns events
//! into whole committed source transactions (row changes of the selected tables, with their
//! commit time and the position just after the commit) and DDL statements that touch them.

use std::collections::HashSet;
use std::fmt;

use futures::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Row};

use super::{Flavor, MySql};
use crate::SourceError;

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
    Ok(())
}

/// The binlog files the server still has, oldest first.
pub async fn binary_logs(mysql: &MySql, conn: &mut Conn) -> Result<Vec<String>, SourceError> {
    let rows: Vec<Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| mysql.db_err("SHOW BINARY LOGS", e))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.get::<String, _>(0))
        .collect())
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
    /// Columns in the event's table map (checked against the table's known columns).
    pub columns: usize,
}

/// A committed source transaction.
#[derive(Debug, Clone)]
pub struct SourceTxn {
    /// The position just after its commit: where a restart resumes.
    pub end: BinlogPosition,
    /// Commit time, microseconds since the epoch (the binlog records seconds).
    pub commit_micros: i64,
    pub changes: Vec<RowChange>,
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
    Ddl(Ddl),
    /// The reader moved on without a change for the selected tables (rotation, other tables).
    Position(BinlogPosition),
}

/// Reads the binlog from a position.
pub struct BinlogReader {
    mysql: MySql,
    stream: BinlogStream,
    tables: HashSet<String>,
    file: String,
    txn: Option<Vec<RowChange>>,
}

impl BinlogReader {
    /// Starts reading at `from`. With `until_caught_up` the server ends the stream when it
    /// has sent everything it has (a `sync` run); otherwise it waits for new events.
    pub async fn open(
        mysql: &MySql,
        from: &BinlogPosition,
        server_id: u32,
        tables: HashSet<String>,
        until_caught_up: bool,
    ) -> Result<BinlogReader, SourceError> {
        let conn = mysql.connect().await?;
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
        Ok(BinlogReader {
            mysql: mysql.clone(),
            stream,
            tables,
            file: from.file.clone(),
            txn: None,
        })
    }

    /// The next committed transaction, DDL or position; None when the stream ended.
    pub async fn next(&mut self) -> Result<Option<StreamItem>, SourceError> {
        loop {
            let event = match self.stream.next().await {
                None => return Ok(None),
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    let text = e.to_string();
                    if text.contains("1236")
                        || text
                            .to_lowercase()
                            .contains("could not find first log file")
                    {
                        return Err(self.mysql.err(format!(
                            "the binlog position sluice must resume from is no longer on the server (purged?): {text}. \
                             Re-snapshot the affected tables with `sluice sync --resnapshot {}.TABLE`",
                            self.mysql.source
                        )));
                    }
                    return Err(self
                        .mysql
                        .err(format!("reading the binlog in {}: {text}", self.file)));
                }
            };
            let header = event.header();
            let end = BinlogPosition {
                file: self.file.clone(),
                pos: header.log_pos() as u64,
            };
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
                        return Ok(Some(StreamItem::Position(BinlogPosition {
                            file: self.file.clone(),
                            pos: r.position(),
                        })));
                    }
                }
                EventData::QueryEvent(q) => {
                    let sql = q.query();
                    let word = first_word(&sql);
                    match word.as_str() {
                        "BEGIN" => self.txn = Some(Vec::new()),
                        "COMMIT" => {
                            if let Some(changes) = self.txn.take() {
                                return Ok(Some(self.commit(end, header.timestamp(), changes)));
                            }
                        }
                        "ROLLBACK" => self.txn = None,
                        "XA" | "SAVEPOINT" => {}
                        _ => {
                            let tables = ddl_tables(&sql, &q.schema(), &self.mysql.database);
                            let touched: Vec<String> = tables
                                .into_iter()
                                .filter(|t| self.tables.contains(t) || sql_starts_create(&sql))
                                .collect();
                            if !touched.is_empty() {
                                let start = BinlogPosition {
                                    file: self.file.clone(),
                                    pos: (header.log_pos() as u64)
                                        .saturating_sub(header.event_size() as u64),
                                };
                                return Ok(Some(StreamItem::Ddl(Ddl {
                                    statement: sql.into_owned(),
                                    tables: touched,
                                    end,
                                    start,
                                })));
                            }
                        }
                    }
                }
                EventData::XidEvent(_) => {
                    let changes = self.txn.take().unwrap_or_default();
                    return Ok(Some(self.commit(end, header.timestamp(), changes)));
                }
                EventData::RowsEvent(rows) => {
                    self.rows(&rows, &end)?;
                }
                _ => {}
            }
        }
    }

    fn commit(&mut self, end: BinlogPosition, ts: u32, changes: Vec<RowChange>) -> StreamItem {
        if changes.is_empty() {
            return StreamItem::Position(end);
        }
        StreamItem::Txn(SourceTxn {
            end,
            commit_micros: ts as i64 * 1_000_000,
            changes,
        })
    }

    fn rows(&mut self, rows: &RowsEventData<'_>, at: &BinlogPosition) -> Result<(), SourceError> {
        let Some(tme) = self.stream.get_tme(rows.table_id()) else {
            return Err(self
                .mysql
                .err(format!("row event without its table map at {at}")));
        };
        if tme.database_name() != self.mysql.database.as_str() {
            return Ok(());
        }
        let table = tme.table_name().into_owned();
        if !self.tables.contains(&table) {
            return Ok(());
        }
        let columns = tme.columns_count() as usize;
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
                columns,
            });
        }
        // Outside BEGIN…COMMIT (a non-transactional engine with autocommit), each statement
        // is its own transaction, closed by its COMMIT query event.
        self.txn.get_or_insert_with(Vec::new).extend(out);
        Ok(())
    }
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

/// Tables of `database` that a DDL statement names (`ALTER TABLE a`, `RENAME TABLE a TO b`,
/// `DROP TABLE a, b`, `TRUNCATE a`, `CREATE TABLE a`); empty for anything else.
pub fn ddl_tables(sql: &str, default_schema: &str, database: &str) -> Vec<String> {
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
            let (db, table, used) = if tokens.get(i + 1).is_some_and(|t| t.0 == ".") {
                (
                    tokens[i].0.clone(),
                    tokens.get(i + 2).map(|t| t.0.clone()).unwrap_or_default(),
                    3,
                )
            } else {
                (default_schema.to_string(), tok.clone(), 1)
            };
            if db == database && (*quoted || !table.is_empty()) {
                names.push(table);
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

/// Words, backquoted identifiers (unquoted, flagged), and single punctuation characters.
fn tokenize(sql: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '`' {
            chars.next();
            let mut s = String::new();
            while let Some(c) = chars.next() {
                if c == '`' {
                    if chars.peek() == Some(&'`') {
                        chars.next();
                        s.push('`');
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
        let t = |sql: &str| ddl_tables(sql, "shop", "shop");
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
