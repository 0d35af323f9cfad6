//! The source conformance suite: the same scenarios against every source that can produce
//! them, through the real `sluice` binary and the capture driver, each compared value by
//! value with the source (and with a model computed here from the changes made):
//!
//! | scenario                                   | MariaDB CDC | MariaDB snapshot | PostgreSQL snapshot | MongoDB CDC | files |
//! |--------------------------------------------|:-----------:|:----------------:|:-------------------:|:-----------:|:-----:|
//! | types at their edges                       | ✓           | ✓                | ✓                   | ✓           | ✓     |
//! | a row read by the stream equals its snapshot | ✓         |                  |                     | ✓           |       |
//! | inserts, updates, deletes, key changes     | ✓           | ✓                | ✓                   | ✓ (key change: delete + insert in a transaction) | inserts, updates |
//! | a rolled-back transaction is absent        | ✓           |                  |                     |             |       |
//! | kill -9 during the first capture, resume   | ✓           | ✓                | ✓                   | ✓           | ✓     |
//! | kill -9 while streaming                    | ✓           |                  |                     | ✓           |       |
//! | a new column (evolve)                      | ✓           | ✓                | ✓                   | ✓ (a new field) | ✓ |
//! | a lost position says re-snapshot           | ✓           |                  |                     | ✓ (tests/mongodb.rs) |  |
//!
//! A new source adds a fixture (how to create the table, change it and configure sluice for
//! it) and inherits the scenarios its capabilities allow.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::mariadb::MariaDb;
use common::mongo::MongoServer;
use common::postgres::PgServer;
use common::{s, table_of, Sandbox};

type Rows = Vec<Vec<Option<String>>>;

/// A row of the suite's table `t`, as text (NULL as None).
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: i64,
    name: Option<String>,
    amount: String,
    day: String,
}

fn row(id: i64, name: &str, cents: i64, day: u32) -> Row {
    Row {
        id,
        name: Some(name.to_string()),
        amount: format!("{}.{:02}", cents / 100, cents % 100),
        day: format!("2024-01-{day:02}"),
    }
}

impl Row {
    fn cells(&self) -> Vec<Option<String>> {
        vec![
            s(&self.id.to_string()),
            self.name.clone(),
            s(&self.amount),
            s(&self.day),
        ]
    }
}

/// One change of a source transaction.
#[derive(Debug, Clone)]
enum Change {
    Insert(Row),
    Update(Row),
    Delete(i64),
    /// The key of a row changes: `from` becomes `to.id`.
    Rekey(i64, Row),
}

/// What a source under test can produce.
#[derive(Debug, Clone, Copy, Default)]
struct Caps {
    /// A change stream (each change once, whole transactions only).
    stream: bool,
    /// Deletes and key changes reach the lake (by the stream, or a snapshot no longer
    /// finding the row).
    deletes: bool,
    /// A delete carries the row as it was (MySQL's row images); without, only its key.
    before_images: bool,
}

/// A source under test: source `s`, table `t` (`id` its key) in the warehouse `s.t`.
trait Fixture {
    fn label(&self) -> &'static str;
    fn caps(&self) -> Caps;
    /// The `[sources.s]` section, loading the table `load` (a TOML value), plus `extra`.
    fn config(&self, load: &str, extra: &str) -> String;
    /// Creates `t` with `rows`.
    fn create(&mut self, sb: &Sandbox, rows: &[Row]);
    /// One source transaction.
    fn apply(&mut self, sb: &Sandbox, changes: &[Change]);
    /// Adds column `note` (text); `rows` are then written with their note.
    fn add_note(&mut self, sb: &Sandbox, rows: &[(Row, String)]);
    /// `t` as the source holds it (id order), when the source can be asked; None for files
    /// (the model is the truth).
    fn source_rows(&self, sql_columns: &str) -> Option<Rows>;
    /// Edge values: column definitions, the rows (literal per column) and how the warehouse
    /// renders each as text.
    fn edges(&self) -> Edges;
    /// The config of source `s` holding the edge table `e`.
    fn edges_config(&self) -> String;
    /// Creates the edge table `e` with `edges.rows` (and id 1, 2, …).
    fn create_edges(&mut self, sb: &Sandbox, edges: &Edges);
    /// Inserts the edge rows again with ids after the first ones (stream fixtures).
    fn insert_edges_again(&mut self, _sb: &Sandbox, _edges: &Edges) {}
    /// The server, for scenarios that talk to it.
    fn server(&self) -> Option<&MariaDb> {
        None
    }
    /// The table's key column (`id`, or MongoDB's `_id`).
    fn key(&self) -> &'static str {
        "id"
    }
    /// Chunked snapshots and batched streams can be sized (`chunk_rows`, `batch_max_rows`).
    fn tuned(&self) -> bool {
        self.server().is_some()
    }
    /// Rows of the kill -9 scenario.
    fn kill_rows(&self) -> i64 {
        ROWS
    }
}

/// Edge values of one source: `(name, source type)` columns, rows of source literals, and
/// the warehouse's text for each literal.
struct Edges {
    columns: Vec<(&'static str, &'static str)>,
    rows: Vec<Vec<&'static str>>,
    expected: Rows,
}

// ---------------------------------------------------------------------------------------
// MariaDB

struct Maria {
    db: MariaDb,
    mode: &'static str,
}

fn sql_literal(v: &Option<String>) -> String {
    match v {
        None => "NULL".into(),
        Some(t) => format!("'{}'", t.replace('\\', "\\\\").replace('\'', "''")),
    }
}

fn values(r: &Row) -> String {
    format!(
        "({}, {}, {}, '{}')",
        r.id,
        sql_literal(&r.name),
        r.amount,
        r.day
    )
}

impl Fixture for Maria {
    fn label(&self) -> &'static str {
        match self.mode {
            "cdc" => "MariaDB CDC",
            _ => "MariaDB snapshot",
        }
    }

    fn caps(&self) -> Caps {
        Caps {
            stream: self.mode == "cdc",
            deletes: true,
            before_images: true,
        }
    }

    fn config(&self, load: &str, extra: &str) -> String {
        format!(
            "[sources.s]\nkind = \"mysql\"\nurl = \"{}\"\nmode = \"{}\"\nload = {load}\n{extra}\n",
            self.db.url(),
            self.mode
        )
    }

    fn create(&mut self, _: &Sandbox, rows: &[Row]) {
        self.db.sql(
            "CREATE TABLE t (id BIGINT PRIMARY KEY, name VARCHAR(100) NULL, \
             amount DECIMAL(12,2) NOT NULL, day DATE NOT NULL)",
        );
        for chunk in rows.chunks(5000) {
            let v: Vec<String> = chunk.iter().map(values).collect();
            self.db
                .sql(&format!("INSERT INTO t VALUES {}", v.join(",")));
        }
    }

    fn apply(&mut self, _: &Sandbox, changes: &[Change]) {
        let mut sql = String::from("BEGIN;\n");
        for c in changes {
            sql += &match c {
                Change::Insert(r) => format!(
                    "INSERT INTO t (id, name, amount, day) VALUES {};\n",
                    values(r)
                ),
                Change::Update(r) => format!(
                    "UPDATE t SET name = {}, amount = {}, day = '{}' WHERE id = {};\n",
                    sql_literal(&r.name),
                    r.amount,
                    r.day,
                    r.id
                ),
                Change::Delete(id) => format!("DELETE FROM t WHERE id = {id};\n"),
                Change::Rekey(from, r) => format!(
                    "UPDATE t SET id = {}, name = {}, amount = {}, day = '{}' WHERE id = {from};\n",
                    r.id,
                    sql_literal(&r.name),
                    r.amount,
                    r.day
                ),
            };
        }
        sql += "COMMIT;";
        self.db.sql(&sql);
    }

    fn add_note(&mut self, _: &Sandbox, rows: &[(Row, String)]) {
        self.db
            .sql("ALTER TABLE t ADD COLUMN note VARCHAR(50) NULL");
        let v: Vec<String> = rows
            .iter()
            .map(|(r, note)| {
                format!(
                    "({}, {}, {}, '{}', '{note}')",
                    r.id,
                    sql_literal(&r.name),
                    r.amount,
                    r.day
                )
            })
            .collect();
        self.db.sql(&format!(
            "INSERT INTO t (id, name, amount, day, note) VALUES {}",
            v.join(",")
        ));
    }

    fn source_rows(&self, columns: &str) -> Option<Rows> {
        Some(
            self.db
                .rows(&format!("SELECT {columns} FROM t ORDER BY id")),
        )
    }

    fn edges(&self) -> Edges {
        Edges {
            columns: vec![
                ("i8", "TINYINT"),
                ("i64", "BIGINT"),
                ("u64", "BIGINT UNSIGNED"),
                ("big_dec", "DECIMAL(38,10)"),
                ("f", "DOUBLE"),
                ("d", "DATE"),
                ("ts", "DATETIME(6)"),
                ("txt", "VARCHAR(100) CHARACTER SET utf8mb4"),
            ],
            rows: vec![
                vec![
                    "-128",
                    "-9223372036854775808",
                    "0",
                    "-9999999999999999999999999999.9999999999",
                    "-1.7976931348623157e308",
                    "'1000-01-01'",
                    "'1000-01-01 00:00:00.000001'",
                    "''",
                ],
                vec![
                    "127",
                    "9223372036854775807",
                    "18446744073709551615",
                    "9999999999999999999999999999.9999999999",
                    "2.2250738585072014e-308",
                    "'9999-12-31'",
                    "'9999-12-31 23:59:59.999999'",
                    "'ünï 😀 \"q\" '' \\\\ end'",
                ],
                vec!["NULL"; 8],
            ],
            expected: vec![
                vec![
                    s("-128"),
                    s("-9223372036854775808"),
                    s("0"),
                    s("-9999999999999999999999999999.9999999999"),
                    s("-1.7976931348623157e+308"),
                    s("1000-01-01"),
                    s("1000-01-01 00:00:00.000001"),
                    s(""),
                ],
                vec![
                    s("127"),
                    s("9223372036854775807"),
                    s("18446744073709551615"),
                    s("9999999999999999999999999999.9999999999"),
                    s("2.2250738585072014e-308"),
                    s("9999-12-31"),
                    s("9999-12-31 23:59:59.999999"),
                    s("ünï 😀 \"q\" ' \\ end"),
                ],
                vec![None; 8],
            ],
        }
    }

    fn edges_config(&self) -> String {
        self.config("\"merge\"", "")
    }

    fn create_edges(&mut self, _: &Sandbox, edges: &Edges) {
        let cols: Vec<String> = edges
            .columns
            .iter()
            .map(|(n, t)| format!("{n} {t} NULL"))
            .collect();
        self.db.sql(&format!(
            "CREATE TABLE e (id INT PRIMARY KEY, {}) DEFAULT CHARSET=utf8mb4",
            cols.join(", ")
        ));
        self.insert_edges(edges, 0);
    }

    fn insert_edges_again(&mut self, _: &Sandbox, edges: &Edges) {
        self.insert_edges(edges, edges.rows.len());
    }

    fn server(&self) -> Option<&MariaDb> {
        Some(&self.db)
    }
}

impl Maria {
    fn start(mode: &'static str) -> Maria {
        Maria {
            db: MariaDb::start(&[]),
            mode,
        }
    }

    fn insert_edges(&self, edges: &Edges, after: usize) {
        for (i, r) in edges.rows.iter().enumerate() {
            self.db.sql(&format!(
                "INSERT INTO e VALUES ({}, {})",
                after + i + 1,
                r.join(", ")
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL snapshots: `t (id int8 PRIMARY KEY, name text, amount numeric(12,2), day date)`
// in database `wh` of a private server.

struct Postgres {
    pg: PgServer,
}

/// A PostgreSQL string literal (standard strings: only the quote is doubled).
fn pg_literal(v: &Option<String>) -> String {
    match v {
        None => "NULL".into(),
        Some(t) => format!("'{}'", t.replace('\'', "''")),
    }
}

fn pg_values(r: &Row) -> String {
    format!(
        "({}, {}, {}, '{}')",
        r.id,
        pg_literal(&r.name),
        r.amount,
        r.day
    )
}

impl Postgres {
    fn start() -> Postgres {
        Postgres {
            pg: PgServer::start(None),
        }
    }

    fn sql(&self, sql: &str) {
        self.pg.sql("wh", sql);
    }

    fn insert_edges(&self, edges: &Edges, after: usize) {
        for (i, r) in edges.rows.iter().enumerate() {
            self.sql(&format!(
                "INSERT INTO e VALUES ({}, {})",
                after + i + 1,
                r.join(", ")
            ));
        }
    }
}

impl Fixture for Postgres {
    fn label(&self) -> &'static str {
        "PostgreSQL snapshot"
    }

    fn caps(&self) -> Caps {
        Caps {
            stream: false,
            deletes: true,
            before_images: false,
        }
    }

    fn config(&self, load: &str, extra: &str) -> String {
        // No stream, so no batches to size.
        let extra: Vec<&str> = extra
            .lines()
            .filter(|l| !l.starts_with("batch_max_rows"))
            .collect();
        format!(
            "[sources.s]\nkind = \"postgres\"\nurl = \"{}\"\npassword = {{ file = \"{}\" }}\nload = {load}\n{}\n",
            self.pg.url(),
            self.pg.dir.join("pw").display(),
            extra.join("\n")
        )
    }

    fn create(&mut self, _: &Sandbox, rows: &[Row]) {
        self.sql(
            "CREATE TABLE t (id int8 PRIMARY KEY, name text, amount numeric(12,2) NOT NULL, \
             day date NOT NULL)",
        );
        for chunk in rows.chunks(5000) {
            let v: Vec<String> = chunk.iter().map(pg_values).collect();
            self.sql(&format!("INSERT INTO t VALUES {}", v.join(",")));
        }
    }

    fn apply(&mut self, _: &Sandbox, changes: &[Change]) {
        let mut sql = String::from("BEGIN;\n");
        for c in changes {
            sql += &match c {
                Change::Insert(r) => format!("INSERT INTO t VALUES {};\n", pg_values(r)),
                Change::Update(r) => format!(
                    "UPDATE t SET name = {}, amount = {}, day = '{}' WHERE id = {};\n",
                    pg_literal(&r.name),
                    r.amount,
                    r.day,
                    r.id
                ),
                Change::Delete(id) => format!("DELETE FROM t WHERE id = {id};\n"),
                Change::Rekey(from, r) => format!(
                    "UPDATE t SET id = {}, name = {}, amount = {}, day = '{}' WHERE id = {from};\n",
                    r.id,
                    pg_literal(&r.name),
                    r.amount,
                    r.day
                ),
            };
        }
        sql += "COMMIT;";
        self.sql(&sql);
    }

    fn add_note(&mut self, _: &Sandbox, rows: &[(Row, String)]) {
        self.sql("ALTER TABLE t ADD COLUMN note varchar(50)");
        let v: Vec<String> = rows
            .iter()
            .map(|(r, note)| {
                format!(
                    "({}, {}, {}, '{}', '{note}')",
                    r.id,
                    pg_literal(&r.name),
                    r.amount,
                    r.day
                )
            })
            .collect();
        self.sql(&format!(
            "INSERT INTO t (id, name, amount, day, note) VALUES {}",
            v.join(",")
        ));
    }

    fn source_rows(&self, columns: &str) -> Option<Rows> {
        Some(
            self.pg
                .rows(&format!("SELECT {columns} FROM t ORDER BY id")),
        )
    }

    fn edges(&self) -> Edges {
        Edges {
            columns: vec![
                ("i2", "int2"),
                ("i64", "int8"),
                ("big_dec", "numeric(38,10)"),
                ("f", "float8"),
                ("d", "date"),
                ("ts", "timestamp(6)"),
                ("txt", "text"),
                ("b", "bool"),
            ],
            rows: vec![
                vec![
                    "-32768",
                    "-9223372036854775808",
                    "-9999999999999999999999999999.9999999999",
                    "-1.7976931348623157e308",
                    "'0001-01-01'",
                    "'0001-01-01 00:00:00.000001'",
                    "''",
                    "true",
                ],
                vec![
                    "32767",
                    "9223372036854775807",
                    "9999999999999999999999999999.9999999999",
                    "2.2250738585072014e-308",
                    "'9999-12-31'",
                    "'9999-12-31 23:59:59.999999'",
                    "'ünï 😀 \"q\" '' \\ end'",
                    "false",
                ],
                vec!["NULL"; 8],
            ],
            expected: vec![
                vec![
                    s("-32768"),
                    s("-9223372036854775808"),
                    s("-9999999999999999999999999999.9999999999"),
                    s("-1.7976931348623157e+308"),
                    s("0001-01-01"),
                    s("0001-01-01 00:00:00.000001"),
                    s(""),
                    s("true"),
                ],
                vec![
                    s("32767"),
                    s("9223372036854775807"),
                    s("9999999999999999999999999999.9999999999"),
                    s("2.2250738585072014e-308"),
                    s("9999-12-31"),
                    s("9999-12-31 23:59:59.999999"),
                    s("ünï 😀 \"q\" ' \\ end"),
                    s("false"),
                ],
                vec![None; 8],
            ],
        }
    }

    fn edges_config(&self) -> String {
        self.config("\"merge\"", "")
    }

    fn create_edges(&mut self, _: &Sandbox, edges: &Edges) {
        let cols: Vec<String> = edges
            .columns
            .iter()
            .map(|(n, t)| format!("{n} {t}"))
            .collect();
        self.sql(&format!(
            "CREATE TABLE e (id int4 PRIMARY KEY, {})",
            cols.join(", ")
        ));
        self.insert_edges(edges, 0);
    }

    fn tuned(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------
// MongoDB: `{_id, name, amount: Decimal128, day: "YYYY-MM-DD"}` documents; each source
// transaction a multi-document transaction.

struct Mongo {
    server: MongoServer,
}

fn mongo_doc(r: &Row) -> mongodb::bson::Document {
    use std::str::FromStr;
    mongodb::bson::doc! {
        "_id": r.id,
        "name": r.name.clone().map(mongodb::bson::Bson::String).unwrap_or(mongodb::bson::Bson::Null),
        "amount": mongodb::bson::Decimal128::from_str(&r.amount).unwrap(),
        "day": r.day.clone(),
    }
}

/// A value of a document as the warehouse renders it (`day` strings are dates there).
fn mongo_text(v: Option<&mongodb::bson::Bson>) -> Option<String> {
    use mongodb::bson::Bson;
    match v? {
        Bson::Null => None,
        Bson::String(s) => Some(s.clone()),
        Bson::Int64(i) => Some(i.to_string()),
        Bson::Int32(i) => Some(i.to_string()),
        Bson::Decimal128(d) => Some(d.to_string()),
        other => Some(other.to_string()),
    }
}

impl Mongo {
    fn start() -> Mongo {
        Mongo {
            server: MongoServer::start(&[]),
        }
    }
}

impl Fixture for Mongo {
    fn label(&self) -> &'static str {
        "MongoDB CDC"
    }

    fn caps(&self) -> Caps {
        // The collection keeps pre- and post-images: each change lands as it was made.
        Caps {
            stream: true,
            deletes: true,
            before_images: true,
        }
    }

    fn config(&self, load: &str, extra: &str) -> String {
        format!(
            "[sources.s]\nkind = \"mongodb\"\nurl = \"{}\"\nmode = \"cdc\"\nload = {load}\n{extra}\n",
            self.server.url()
        )
    }

    fn create(&mut self, _: &Sandbox, rows: &[Row]) {
        self.server.create_with_images("t");
        self.server
            .insert("t", rows.iter().map(mongo_doc).collect());
    }

    fn apply(&mut self, _: &Sandbox, changes: &[Change]) {
        use mongodb::bson::doc;
        self.server.transaction(async |db, session| {
            let t = db.collection::<mongodb::bson::Document>("t");
            for c in changes {
                match c {
                    Change::Insert(r) => {
                        t.insert_one(mongo_doc(r))
                            .session(&mut *session)
                            .await
                            .unwrap();
                    }
                    Change::Update(r) => {
                        let mut set = mongo_doc(r);
                        set.remove("_id");
                        t.update_one(doc! { "_id": r.id }, doc! { "$set": set })
                            .session(&mut *session)
                            .await
                            .unwrap();
                    }
                    Change::Delete(id) => {
                        t.delete_one(doc! { "_id": id })
                            .session(&mut *session)
                            .await
                            .unwrap();
                    }
                    // `_id` cannot change: the document moves.
                    Change::Rekey(from, r) => {
                        t.delete_one(doc! { "_id": from })
                            .session(&mut *session)
                            .await
                            .unwrap();
                        t.insert_one(mongo_doc(r))
                            .session(&mut *session)
                            .await
                            .unwrap();
                    }
                }
            }
        });
    }

    fn add_note(&mut self, _: &Sandbox, rows: &[(Row, String)]) {
        let docs = rows
            .iter()
            .map(|(r, note)| {
                let mut d = mongo_doc(r);
                d.insert("note", note.clone());
                d
            })
            .collect();
        self.server.insert("t", docs);
    }

    fn source_rows(&self, columns: &str) -> Option<Rows> {
        let names: Vec<&str> = columns.split(',').map(str::trim).collect();
        Some(
            self.server
                .docs("t")
                .iter()
                .map(|d| names.iter().map(|n| mongo_text(d.get(n))).collect())
                .collect(),
        )
    }

    fn edges(&self) -> Edges {
        // Canonical Extended JSON per value; Decimal128 holds 34 digits.
        Edges {
            columns: vec![
                ("i64", "Int64"),
                ("i32", "Int32"),
                ("big_dec", "Decimal128"),
                ("f", "Double"),
                ("ts", "Date"),
                ("txt", "String"),
                ("oid", "ObjectId"),
                ("flag", "Boolean"),
            ],
            rows: vec![
                vec![
                    r#"{"$numberLong": "-9223372036854775808"}"#,
                    r#"{"$numberInt": "-2147483648"}"#,
                    r#"{"$numberDecimal": "-9999999999999999999999999.999999999"}"#,
                    r#"{"$numberDouble": "-1.7976931348623157E+308"}"#,
                    r#"{"$date": {"$numberLong": "-30610224000000"}}"#,
                    r#""""#,
                    r#"{"$oid": "000000000000000000000000"}"#,
                    "false",
                ],
                vec![
                    r#"{"$numberLong": "9223372036854775807"}"#,
                    r#"{"$numberInt": "2147483647"}"#,
                    r#"{"$numberDecimal": "9999999999999999999999999.999999999"}"#,
                    r#"{"$numberDouble": "2.2250738585072014E-308"}"#,
                    r#"{"$date": {"$numberLong": "253402300799999"}}"#,
                    r#""ünï 😀 \"q\" ' \\ end""#,
                    r#"{"$oid": "ffffffffffffffffffffffff"}"#,
                    "true",
                ],
                vec!["null"; 8],
            ],
            expected: vec![
                vec![
                    s("-9223372036854775808"),
                    s("-2147483648"),
                    s("-9999999999999999999999999.999999999"),
                    s("-1.7976931348623157e+308"),
                    s("1000-01-01 00:00:00+00"),
                    s(""),
                    s("000000000000000000000000"),
                    s("false"),
                ],
                vec![
                    s("9223372036854775807"),
                    s("2147483647"),
                    s("9999999999999999999999999.999999999"),
                    s("2.2250738585072014e-308"),
                    s("9999-12-31 23:59:59.999+00"),
                    s("ünï 😀 \"q\" ' \\ end"),
                    s("ffffffffffffffffffffffff"),
                    s("true"),
                ],
                vec![None; 8],
            ],
        }
    }

    fn edges_config(&self) -> String {
        self.config("\"merge\"", "")
    }

    fn create_edges(&mut self, _: &Sandbox, edges: &Edges) {
        self.insert_edges(edges, 0);
    }

    fn insert_edges_again(&mut self, _: &Sandbox, edges: &Edges) {
        self.insert_edges(edges, edges.rows.len());
    }

    fn key(&self) -> &'static str {
        "_id"
    }

    fn tuned(&self) -> bool {
        true
    }

    fn kill_rows(&self) -> i64 {
        30_000
    }
}

impl Mongo {
    fn insert_edges(&self, edges: &Edges, after: usize) {
        let docs = edges
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut d = mongodb::bson::doc! { "_id": (after + i + 1) as i64 };
                for ((name, _), literal) in edges.columns.iter().zip(r) {
                    let json: serde_json::Value = serde_json::from_str(literal).unwrap();
                    // This bson's Extended JSON reader takes no `$numberDecimal`.
                    let v = match json.get("$numberDecimal").and_then(|d| d.as_str()) {
                        Some(d) => mongodb::bson::Bson::Decimal128(
                            <mongodb::bson::Decimal128 as std::str::FromStr>::from_str(d).unwrap(),
                        ),
                        None => mongodb::bson::Bson::try_from(json).unwrap(),
                    };
                    d.insert(*name, v);
                }
                d
            })
            .collect();
        self.server.insert("e", docs);
    }
}

// ---------------------------------------------------------------------------------------
// Files: each source transaction is a CSV file.

struct Files {
    next_file: usize,
    note: bool,
}

impl Files {
    fn new() -> Files {
        Files {
            next_file: 0,
            note: false,
        }
    }

    fn write_rows(&mut self, sb: &Sandbox, rows: &[(Row, Option<String>)]) {
        let mut text = String::from(if self.note {
            "id,name,amount,day,note\n"
        } else {
            "id,name,amount,day\n"
        });
        for (r, note) in rows {
            let name = r
                .name
                .as_deref()
                .map(|n| format!("\"{}\"", n.replace('"', "\"\"")))
                .unwrap_or_default();
            text += &format!("{},{name},{},{}", r.id, r.amount, r.day);
            if self.note {
                text += &format!(",{}", note.as_deref().unwrap_or(""));
            }
            text += "\n";
        }
        self.next_file += 1;
        sb.write(&format!("drops/{:05}.csv", self.next_file), text);
    }
}

impl Fixture for Files {
    fn label(&self) -> &'static str {
        "files (CSV)"
    }

    fn caps(&self) -> Caps {
        Caps::default()
    }

    fn config(&self, load: &str, extra: &str) -> String {
        format!(
            "[sources.s]\nkind = \"files\"\nurl = \"drops/\"\npattern = \"*.csv\"\ntable = \"t\"\n\
             load = {load}\n{extra}\n[sources.s.tables.t]\nprimary_key = [\"id\"]\n"
        )
    }

    fn edges_config(&self) -> String {
        let columns: Vec<String> = std::iter::once("\"id int\"".to_string())
            .chain(
                self.edges()
                    .columns
                    .iter()
                    .map(|(n, t)| format!("\"{n} {t}\"")),
            )
            .collect();
        format!(
            "[sources.s]\nkind = \"files\"\nurl = \"edges/\"\ntable = \"e\"\ncolumns = [{}]\n\
             null_value = \"\\\\N\"\n[sources.s.tables.e]\nprimary_key = [\"id\"]\n",
            columns.join(", ")
        )
    }

    fn create(&mut self, sb: &Sandbox, rows: &[Row]) {
        for chunk in rows.chunks(2000) {
            let rows: Vec<(Row, Option<String>)> =
                chunk.iter().map(|r| (r.clone(), None)).collect();
            self.write_rows(sb, &rows);
        }
    }

    fn apply(&mut self, sb: &Sandbox, changes: &[Change]) {
        let rows: Vec<(Row, Option<String>)> = changes
            .iter()
            .map(|c| match c {
                Change::Insert(r) | Change::Update(r) => (r.clone(), None),
                other => panic!("files deliver rows, not {other:?}"),
            })
            .collect();
        self.write_rows(sb, &rows);
    }

    fn add_note(&mut self, sb: &Sandbox, rows: &[(Row, String)]) {
        self.note = true;
        let rows: Vec<(Row, Option<String>)> = rows
            .iter()
            .map(|(r, n)| (r.clone(), Some(n.clone())))
            .collect();
        self.write_rows(sb, &rows);
    }

    fn source_rows(&self, _: &str) -> Option<Rows> {
        None
    }

    fn edges(&self) -> Edges {
        Edges {
            columns: vec![
                ("i64", "bigint"),
                ("big_dec", "decimal(38,10)"),
                ("f", "double"),
                ("d", "date"),
                ("ts", "timestamp"),
                ("txt", "text"),
            ],
            rows: vec![
                vec![
                    "-9223372036854775808",
                    "-9999999999999999999999999999.9999999999",
                    "-1.7976931348623157e308",
                    "0001-01-01",
                    "0001-01-01 00:00:00.000001",
                    "\"\"",
                ],
                vec![
                    "9223372036854775807",
                    "9999999999999999999999999999.9999999999",
                    "2.2250738585072014e-308",
                    "9999-12-31",
                    "9999-12-31 23:59:59.999999",
                    "\"ünï 😀 \"\"q\"\" ' \\ end\"",
                ],
                vec!["\\N"; 6],
            ],
            expected: vec![
                vec![
                    s("-9223372036854775808"),
                    s("-9999999999999999999999999999.9999999999"),
                    s("-1.7976931348623157e+308"),
                    s("0001-01-01"),
                    s("0001-01-01 00:00:00.000001"),
                    s(""),
                ],
                vec![
                    s("9223372036854775807"),
                    s("9999999999999999999999999999.9999999999"),
                    s("2.2250738585072014e-308"),
                    s("9999-12-31"),
                    s("9999-12-31 23:59:59.999999"),
                    s("ünï 😀 \"q\" ' \\ end"),
                ],
                vec![None; 6],
            ],
        }
    }

    fn create_edges(&mut self, sb: &Sandbox, edges: &Edges) {
        let mut text = format!(
            "id,{}\n",
            edges
                .columns
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(",")
        );
        for (i, r) in edges.rows.iter().enumerate() {
            text += &format!("{},{}\n", i + 1, r.join(","));
        }
        sb.write("edges/e.csv", text);
    }
}

// ---------------------------------------------------------------------------------------
// The scenarios

/// The warehouse's `s.t` (merge) as text, id order.
fn merged(sb: &Sandbox) -> Rows {
    merged_by(sb, "id")
}

/// The same, the key column named `key`.
fn merged_by(sb: &Sandbox, key: &str) -> Rows {
    sb.duck(&format!(
        "SELECT \"{key}\"::VARCHAR, name, amount::VARCHAR, day::VARCHAR FROM s.t ORDER BY \"{key}\""
    ))
}

/// The model's rows, id order.
fn model_rows(model: &BTreeMap<i64, Row>) -> Rows {
    model.values().map(Row::cells).collect()
}

fn sync_ok(sb: &Sandbox, what: &str) -> serde_json::Value {
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 0, "{what}: {report}");
    report
}

/// Applies `changes` to the model as the source would hold them after.
fn apply_model(model: &mut BTreeMap<i64, Row>, changes: &[Change]) {
    for c in changes {
        match c {
            Change::Insert(r) | Change::Update(r) => {
                model.insert(r.id, r.clone());
            }
            Change::Delete(id) => {
                model.remove(id);
            }
            Change::Rekey(from, r) => {
                model.remove(from);
                model.insert(r.id, r.clone());
            }
        }
    }
}

/// The change rows a stream lands for `changes` made to `model`, as `(id, name, op)`.
fn stream_ops(
    changes: &[Change],
    model: &BTreeMap<i64, Row>,
    before_images: bool,
) -> Vec<(String, Option<String>, String)> {
    let mut model = model.clone();
    let mut out = Vec::new();
    let was = |model: &BTreeMap<i64, Row>, id: &i64| match before_images {
        true => model[id].name.clone(),
        false => None,
    };
    for c in changes {
        match c {
            Change::Insert(r) => out.push((r.id.to_string(), r.name.clone(), "c".into())),
            Change::Update(r) => out.push((r.id.to_string(), r.name.clone(), "u".into())),
            Change::Delete(id) => out.push((id.to_string(), was(&model, id), "d".into())),
            Change::Rekey(from, r) => {
                out.push((from.to_string(), was(&model, from), "d".into()));
                out.push((r.id.to_string(), r.name.clone(), "c".into()));
            }
        }
        apply_model(&mut model, std::slice::from_ref(c));
    }
    out
}

/// Edge values land as the source holds them; from a stream, a row is exactly its snapshot.
fn types_at_their_edges(mut f: impl Fixture) {
    let sb = Sandbox::new();
    let edges = f.edges();
    sb.config(&f.edges_config());
    f.create_edges(&sb, &edges);
    sync_ok(&sb, f.label());
    let cols: Vec<String> = edges
        .columns
        .iter()
        .map(|(n, _)| format!("{n}::VARCHAR"))
        .collect();
    let key = f.key();
    let q = |from: i64, to: i64| {
        sb.duck(&format!(
            "SELECT {} FROM s.e WHERE \"{key}\" BETWEEN {from} AND {to} ORDER BY \"{key}\"",
            cols.join(", ")
        ))
    };
    let n = edges.rows.len() as i64;
    assert_eq!(q(1, n), edges.expected, "{}: edge values", f.label());
    if f.caps().stream {
        f.insert_edges_again(&sb, &edges);
        sync_ok(&sb, f.label());
        assert_eq!(
            q(n + 1, 2 * n),
            q(1, n),
            "{}: rows read from the stream differ from their snapshot",
            f.label()
        );
    }
}

/// Inserts, updates, deletes and key changes over several syncs land exactly: the merge table
/// is the source (value by value), and a stream's append table holds each change once, in
/// order; a rolled-back transaction leaves nothing.
fn every_change_kind(mut f: impl Fixture) {
    let caps = f.caps();
    let key = f.key();
    let merged = |sb: &Sandbox| merged_by(sb, key);
    let sb = Sandbox::new();
    sb.config(&f.config("[\"merge\", \"append\"]", ""));
    let first: Vec<Row> = (1..=20)
        .map(|i| row(i, &format!("n{i}"), i * 101, (i % 28 + 1) as u32))
        .collect();
    f.create(&sb, &first);
    let mut model: BTreeMap<i64, Row> = first.iter().map(|r| (r.id, r.clone())).collect();
    sync_ok(&sb, f.label());
    assert_eq!(
        merged(&sb),
        model_rows(&model),
        "{}: first capture",
        f.label()
    );
    let mut expected_ops: Vec<(String, Option<String>, String)> = model
        .values()
        .map(|r| (r.id.to_string(), r.name.clone(), "r".into()))
        .collect();

    let mut rounds: Vec<Vec<Change>> = vec![
        vec![
            Change::Insert(row(21, "new", 2100, 3)),
            Change::Update(row(2, "two", 1, 4)),
        ],
        vec![
            Change::Update(row(3, "three", 333, 5)),
            Change::Update(row(3, "three again", 334, 6)),
        ],
    ];
    if caps.deletes {
        rounds.push(vec![
            Change::Delete(4),
            Change::Rekey(5, row(500, "moved", 55, 7)),
        ]);
        rounds.push(vec![
            Change::Insert(row(22, "brief", 1, 1)),
            Change::Delete(22),
        ]);
    }
    for (i, changes) in rounds.iter().enumerate() {
        if caps.stream {
            expected_ops.extend(stream_ops(changes, &model, caps.before_images));
        } else if !caps.deletes {
            // Files: each delivered row once, as a read.
            expected_ops.extend(changes.iter().map(|c| match c {
                Change::Insert(r) | Change::Update(r) => {
                    (r.id.to_string(), r.name.clone(), "r".into())
                }
                other => panic!("{other:?}"),
            }));
        }
        f.apply(&sb, changes);
        apply_model(&mut model, changes);
        if let Some(db) = f.server().filter(|_| caps.stream && i == 0) {
            // A rolled-back transaction between committed ones.
            db.sql("BEGIN; INSERT INTO t VALUES (999, 'never', 1, '2024-01-01'); UPDATE t SET name = 'never' WHERE id = 1; ROLLBACK;");
        }
        sync_ok(&sb, f.label());
        assert_eq!(
            merged(&sb),
            model_rows(&model),
            "{}: after round {i}",
            f.label()
        );
        if let Some(src) = f.source_rows(&format!("{key}, name, amount, day")) {
            assert_eq!(
                merged(&sb),
                src,
                "{}: the warehouse is not the source",
                f.label()
            );
        }
    }
    if caps.stream || !caps.deletes {
        let appended: Vec<(String, Option<String>, String)> = sb
            .duck(&format!(
                "SELECT \"{key}\"::VARCHAR, name, _sluice_op FROM s.t_append ORDER BY _sluice_seq"
            ))
            .into_iter()
            .map(|r| (r[0].clone().unwrap(), r[1].clone(), r[2].clone().unwrap()))
            .collect();
        assert_eq!(
            appended,
            expected_ops,
            "{}: each change once, in order",
            f.label()
        );
    }
}

/// Lake commits of `s.t` so far.
fn commits(sb: &Sandbox) -> usize {
    std::fs::read_dir(sb.path("lake/changes/s/t/_delta_log"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))
            })
            .count()
        })
        .unwrap_or(0)
}

/// Starts `sluice sync` and kills it (SIGKILL) once `s.t` has `more` new lake commits; true
/// if it was still running then (the kill landed in the middle of the work).
fn killed_after_commits(sb: &Sandbox, more: usize) -> bool {
    let before = commits(sb);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--config")
        .arg(sb.path("sluice.toml"))
        .args(["sync"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while commits(sb) < before + more
        && child.try_wait().unwrap().is_none()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    running
}

/// Kills three runs, each after a few of its commits; returns the kills that landed while
/// sluice was still working.
fn kill_runs(sb: &Sandbox) -> u32 {
    (1..=3)
        .map(|more| killed_after_commits(sb, more) as u32)
        .sum()
}

/// Rows of the kill -9 scenario's table.
const ROWS: i64 = 100_000;

/// kill -9 during the first capture (and, for streams, while streaming) loses and doubles
/// nothing: after a clean run the merge table is the source and the append table holds each
/// row (each change) once.
fn kill_9_and_resume(mut f: impl Fixture) {
    let caps = f.caps();
    let key = f.key();
    let merged = |sb: &Sandbox| merged_by(sb, key);
    let rows = f.kill_rows();
    let sb = Sandbox::new();
    sb.config(&f.config(
        "[\"merge\", \"append\"]",
        if f.tuned() {
            "chunk_rows = 2000\nsnapshot_parallelism = 2\nbatch_max_rows = 300"
        } else {
            ""
        },
    ));
    let first: Vec<Row> = (1..=rows)
        .map(|i| row(i, &format!("n{i}"), i, (i % 28 + 1) as u32))
        .collect();
    f.create(&sb, &first);
    let mut model: BTreeMap<i64, Row> = first.iter().map(|r| (r.id, r.clone())).collect();
    let landed = kill_runs(&sb);
    assert!(
        landed >= 1,
        "{}: no kill landed during the first capture",
        f.label()
    );
    sync_ok(&sb, f.label());
    assert_eq!(
        merged(&sb),
        model_rows(&model),
        "{}: after kills in the first capture",
        f.label()
    );
    let once = |sb: &Sandbox| {
        sb.duck(&format!("SELECT count(*)::VARCHAR, count(DISTINCT \"{key}\")::VARCHAR FROM s.t_append WHERE _sluice_op = 'r'"))
    };
    if caps.stream || !caps.deletes {
        assert_eq!(
            once(&sb),
            vec![vec![s(&rows.to_string()), s(&rows.to_string())]],
            "{}: each row read once",
            f.label()
        );
    }
    if !caps.stream {
        return;
    }
    // 3,000 changes in 30 transactions, streamed in batches of 300 while being killed.
    let mut changes_landed = 0;
    for t in 0..30 {
        let changes: Vec<Change> = (0..100)
            .map(|k| {
                let id = t * 1000 + k + 1;
                Change::Update(row(id, &format!("v{t}"), id + 7, 9))
            })
            .collect();
        f.apply(&sb, &changes);
        apply_model(&mut model, &changes);
        changes_landed += changes.len();
    }
    let landed = kill_runs(&sb);
    assert!(landed >= 1, "{}: no kill landed while streaming", f.label());
    sync_ok(&sb, f.label());
    assert_eq!(
        merged(&sb),
        model_rows(&model),
        "{}: after kills while streaming",
        f.label()
    );
    assert_eq!(
        sb.duck(&format!("SELECT count(*)::VARCHAR, count(DISTINCT \"{key}\")::VARCHAR FROM s.t_append WHERE _sluice_op = 'u'")),
        vec![vec![s(&changes_landed.to_string()), s(&changes_landed.to_string())]],
        "{}: each change once",
        f.label()
    );
}

/// A new column (schema_changes = "evolve"): rows after it carry it, rows before are NULL
/// there, and the warehouse table is the source.
fn a_new_column(mut f: impl Fixture) {
    let sb = Sandbox::new();
    sb.config(&f.config("\"merge\"", "schema_changes = \"evolve\""));
    let first: Vec<Row> = (1..=5).map(|i| row(i, &format!("n{i}"), i, 1)).collect();
    f.create(&sb, &first);
    sync_ok(&sb, f.label());
    let later: Vec<(Row, String)> = (6..=8)
        .map(|i| (row(i, &format!("n{i}"), i, 2), format!("note {i}")))
        .collect();
    f.add_note(&sb, &later);
    let report = sync_ok(&sb, f.label());
    let t = table_of(&report, "s", "t");
    assert!(
        t["extract"]["schema_changes"].to_string().contains("note"),
        "{}: {report}",
        f.label()
    );
    let mut expected: Rows = first
        .iter()
        .map(|r| vec![s(&r.id.to_string()), None])
        .collect();
    expected.extend(later.iter().map(|(r, n)| vec![s(&r.id.to_string()), s(n)]));
    let key = f.key();
    let got = sb.duck(&format!(
        "SELECT \"{key}\"::VARCHAR, note FROM s.t ORDER BY \"{key}\""
    ));
    assert_eq!(got, expected, "{}", f.label());
    if let Some(src) = f.source_rows(&format!("{key}, note")) {
        assert_eq!(got, src, "{}: the warehouse is not the source", f.label());
    }
}

#[test]
fn mariadb_cdc_conforms() {
    types_at_their_edges(Maria::start("cdc"));
    every_change_kind(Maria::start("cdc"));
    a_new_column(Maria::start("cdc"));
    kill_9_and_resume(Maria::start("cdc"));
}

#[test]
fn mariadb_snapshot_conforms() {
    types_at_their_edges(Maria::start("snapshot"));
    every_change_kind(Maria::start("snapshot"));
    a_new_column(Maria::start("snapshot"));
    kill_9_and_resume(Maria::start("snapshot"));
}

#[test]
fn mongodb_cdc_conforms() {
    types_at_their_edges(Mongo::start());
    every_change_kind(Mongo::start());
    a_new_column(Mongo::start());
    kill_9_and_resume(Mongo::start());
}

#[test]
fn postgres_snapshot_conforms() {
    types_at_their_edges(Postgres::start());
    every_change_kind(Postgres::start());
    a_new_column(Postgres::start());
    kill_9_and_resume(Postgres::start());
}

#[test]
fn files_conform() {
    types_at_their_edges(Files::new());
    every_change_kind(Files::new());
    a_new_column(Files::new());
    kill_9_and_resume(Files::new());
}

/// A stream whose position the server no longer holds fails as `position_lost`, naming the
/// re-snapshot; `--resnapshot` then lands the table as the source holds it.
#[test]
fn a_lost_position_says_resnapshot() {
    let mut f = Maria::start("cdc");
    let sb = Sandbox::new();
    sb.config(&f.config("\"merge\"", ""));
    let first: Vec<Row> = (1..=10).map(|i| row(i, "a", i, 1)).collect();
    f.create(&sb, &first);
    sync_ok(&sb, "first");
    f.apply(&sb, &[Change::Update(row(1, "lost", 1, 1))]);
    purge_binlogs(&f.db);
    f.apply(&sb, &[Change::Update(row(2, "after", 2, 1))]);
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 1, "{report}");
    let t = table_of(&report, "s", "t");
    assert_eq!(t["error_kind"], "position_lost", "{report}");
    assert!(
        t["error"].as_str().unwrap().contains("--resnapshot s.t"),
        "{report}"
    );
    let (code, report) = sb.sync_code(&["--resnapshot", "s.t"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(merged(&sb), f.source_rows("id, name, amount, day").unwrap());
    assert_eq!(merged(&sb)[0][1], s("lost"));
}

/// A `sync --follow` child, killed if the test fails before stopping it.
struct Follower(Option<std::process::Child>);

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Rotates the binlog and purges every file before the new one (InnoDB lets go of a file
/// a moment after the rotation, so the purge is retried until it took).
fn purge_binlogs(db: &MariaDb) {
    db.sql("FLUSH BINARY LOGS");
    let current = db.rows("SHOW MASTER STATUS")[0][0].clone().unwrap();
    for _ in 0..100 {
        db.sql(&format!("PURGE BINARY LOGS TO '{current}'"));
        if db.rows("SHOW BINARY LOGS").len() == 1 {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the old binlog was not purged");
}

/// The log-retention guard: the report and `status` say how far each stream table's
/// position is from the oldest binlog the server keeps, warn when the next purge may take it,
/// and with `on_position_lost = "resnapshot"` a purged position is snapshotted again by itself.
#[test]
fn positions_are_guarded_against_purges() {
    let mut f = Maria::start("cdc");
    let sb = Sandbox::new();
    sb.config(&f.config(
        "\"merge\"",
        "on_position_lost = \"resnapshot\"\nposition_warn_files = 2",
    ));
    let first: Vec<Row> = (1..=10).map(|i| row(i, "a", i, 1)).collect();
    f.create(&sb, &first);
    sync_ok(&sb, "first");
    // The position sits in the only (oldest) binlog file: warned.
    let report = sync_ok(&sb, "second");
    let t = table_of(&report, "s", "t");
    assert_eq!(t["extract"]["retention"]["files_before"], 0, "{report}");
    assert!(
        t["extract"]["position_warning"]
            .as_str()
            .unwrap()
            .contains("a purge would lose it"),
        "{report}"
    );
    let status: serde_json::Value = serde_json::from_str(&sb.ok(&["--json", "status"])).unwrap();
    assert_eq!(status[0]["position"]["kept"]["files_before"], 0, "{status}");
    // Two rotations later the position has moved on past them: no warning.
    f.db.sql("FLUSH BINARY LOGS");
    f.db.sql("FLUSH BINARY LOGS");
    f.apply(&sb, &[Change::Update(row(1, "b", 1, 1))]);
    sync_ok(&sb, "after rotations");
    let report = sync_ok(&sb, "quiet");
    let t = table_of(&report, "s", "t");
    assert_eq!(t["extract"]["retention"]["files_before"], 2, "{report}");
    assert!(t["extract"]["position_warning"].is_null(), "{report}");
    // Purged while sluice was away: snapshotted again by itself, and exact.
    f.apply(&sb, &[Change::Update(row(2, "lost", 2, 1))]);
    purge_binlogs(&f.db);
    f.apply(&sb, &[Change::Delete(3)]);
    let status: serde_json::Value = serde_json::from_str(&sb.ok(&["--json", "status"])).unwrap();
    assert_eq!(status[0]["position"], "lost", "{status}");
    let report = sync_ok(&sb, "after the purge");
    assert_eq!(
        table_of(&report, "s", "t")["extract"]["resnapshotted"],
        true,
        "{report}"
    );
    assert_eq!(merged(&sb), f.source_rows("id, name, amount, day").unwrap());
    assert_eq!(merged(&sb)[1][1], s("lost"));
}

/// Waits (up to a minute) until `done` holds; false if it never did.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// `sync --follow` runs every source at once: two MariaDB binlog streams follow side by side
/// while a files source is polled beside them, each landing while the others wait for
/// changes; SIGTERM then stops all three cleanly, and each warehouse table is its source.
#[test]
fn two_streams_and_a_folder_follow_side_by_side_until_sigterm() {
    let (a, b) = MariaDb::start_two(&[]);
    for db in [&a, &b] {
        db.sql(
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20));
             INSERT INTO t VALUES (1, 'one'), (2, 'two')",
        );
    }
    let sb = Sandbox::new();
    sb.write("drops/1.csv", "id,v\n1,f-one\n");
    let cdc = |name: &str, db: &MariaDb| {
        format!(
            "[sources.{name}]\nkind = \"mysql\"\nurl = \"{}\"\nmode = \"cdc\"\nbatch_max_ms = 200\n",
            db.url()
        )
    };
    sb.config(&format!(
        "{}{}[sources.f]\nkind = \"files\"\nurl = \"drops/\"\ntable = \"t\"\n\
         columns = [\"id int\", \"v text\"]\n[sources.f.tables.t]\nprimary_key = [\"id\"]\n",
        cdc("a", &a),
        cdc("b", &b)
    ));
    let mut follower = Follower(Some(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--config")
            .arg(sb.path("sluice.toml"))
            .args(["--json", "sync", "--follow", "--interval-secs", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    // Lake changes of `source.t` so far (0 until its change log exists).
    let changes = |source: &str| -> i64 {
        let sql = format!("SELECT count(*) AS n FROM {source}.t__changes");
        let out = sb.run(&["--json", "query", &sql], &[]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|rows| rows[0]["n"].as_i64())
            .unwrap_or(0)
    };
    let landed = |want: [i64; 3]| eventually(|| [changes("a"), changes("b"), changes("f")] == want);
    assert!(landed([2, 2, 1]), "the first captures did not all land");
    // While it runs: changes at both servers and a new file, each source landing its own.
    a.sql("INSERT INTO t VALUES (3, 'a3'); UPDATE t SET v = 'a-one' WHERE id = 1");
    b.sql("DELETE FROM t WHERE id = 2");
    sb.write("drops/2.csv", "id,v\n2,f-two\n");
    assert!(
        landed([4, 3, 2]),
        "changes did not land while following: a {} b {} f {}",
        changes("a"),
        changes("b"),
        changes("f")
    );
    let child = follower.0.take().unwrap();
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "sluice did not stop cleanly");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for source in ["a", "b", "f"] {
        assert!(
            table_of(&report, source, "t")["error"].is_null(),
            "{report}"
        );
    }
    for (name, db) in [("a", &a), ("b", &b)] {
        assert_eq!(
            sb.duck(&format!("SELECT id::VARCHAR, v FROM {name}.t ORDER BY id")),
            db.rows("SELECT id, v FROM t ORDER BY id"),
            "source {name}"
        );
    }
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, v FROM f.t ORDER BY id"),
        vec![vec![s("1"), s("f-one")], vec![s("2"), s("f-two")]]
    );
}
