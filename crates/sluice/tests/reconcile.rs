//! `sluice reconcile`: a private MariaDB source against DuckDB and a private PostgreSQL. Every
//! type checksums alike on both sides; on a million rows, exactly the rows changed behind
//! sluice's back (binlog off) and a value corrupted in the warehouse are found, `--repair`
//! makes the tables equal again through the lake, and a reconcile during a running CDC stream
//! reports no false differences.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::mariadb::{MariaDb, EDGE_ROWS, TYPES_DDL};
use common::postgres::{PgServer, PASSWORD};
use common::Sandbox;
use serde_json::Value;

const PG_ENV: (&str, &str) = ("PGWH_PASSWORD", PASSWORD);

fn pg_warehouse(pg: &PgServer) -> String {
    format!(
        "[warehouses.pg]\nkind = \"postgres\"\nurl = \"{}\"\npassword = {{ env = \"PGWH_PASSWORD\" }}\nssl_mode = \"disable\"\n",
        pg.url()
    )
}

/// `sluice --json reconcile ARGS`: exit code and report.
fn reconcile(sb: &Sandbox, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json", "reconcile"];
    all.extend_from_slice(args);
    let out = sb.run(&all, &[PG_ENV]);
    let text = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "reconcile gave no report ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

/// Keys of one kind in a report, as numbers.
fn keys(report: &Value, kind: &str) -> Vec<i64> {
    report[kind]
        .as_array()
        .unwrap_or_else(|| panic!("no {kind} in {report}"))
        .iter()
        .map(|k| k[0].as_str().unwrap().parse().unwrap())
        .collect()
}

/// Runs statements in a sandbox's DuckDB warehouse (behind sluice's back).
fn duck_exec(sb: &Sandbox, sql: &str) {
    duckdb::Connection::open(sb.path("warehouse.duckdb"))
        .and_then(|c| c.execute_batch(sql))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn sync(sb: &Sandbox) {
    sb.ok_env(&["--json", "sync"], &[PG_ENV]);
}

#[test]
fn every_type_checksums_alike_in_mariadb_duckdb_and_postgres() {
    let db = MariaDb::start(&[]);
    db.sql(&format!(
        "SET SESSION sql_mode = ''; {TYPES_DDL}; INSERT INTO types VALUES {EDGE_ROWS}"
    ));
    let pg = PgServer::start(None);
    for warehouse in ["local", "pg"] {
        let sb = Sandbox::new();
        sb.config(&format!(
            "[warehouses.local]\nkind = \"duckdb\"\n{}{}",
            pg_warehouse(&pg),
            db.config(
                "cdc",
                &format!("tables = [\"types\"]\nwarehouse = \"{warehouse}\"")
            )
        ));
        sync(&sb);
        let (code, report) = reconcile(&sb, &["shop.types", "--settle-secs", "0"]);
        assert_eq!(code, 0, "{warehouse}: {report}");
        assert_eq!(report["work"]["source_rows"], 3, "{report}");
        assert_eq!(report["work"]["warehouse_rows"], 3, "{report}");
        // Every column is compared (MariaDB's JSON is text, kept as the server gives it).
        assert_eq!(report["left_out"], serde_json::json!([]), "{report}");
        assert_eq!(report["columns"].as_array().unwrap().len(), 33, "{report}");

        // One changed value in any column is found: each type's text is really compared.
        let wh_update = |sql: &str| match warehouse {
            "pg" => {
                pg.sql("wh", sql);
            }
            _ => duck_exec(&sb, sql),
        };
        for (column, value) in [
            ("d1", "1.01"),
            ("dbl", "-1.7976931348623155e308"),
            ("f", "-1.25"),
            ("b12", "'\\x0abd'::BLOB"),
            ("ts", "'2038-01-19 03:14:07.999998+00'"),
            ("tm", "'-838:59:58.000000'"),
            ("l1", "'cafe'"),
            ("js", "'{\"a\": 1}'"),
        ] {
            let value = match (warehouse, column) {
                ("pg", "b12") => "'\\x0abd'::bytea".to_string(),
                _ => value.to_string(),
            };
            wh_update(&format!(
                "UPDATE shop.types SET {column} = {value} WHERE id = 1"
            ));
            let (code, report) = reconcile(
                &sb,
                &["shop.types", "--settle-secs", "0", "--rechecks", "0"],
            );
            assert_eq!(code, 1, "{warehouse}.{column}: {report}");
            assert_eq!(
                keys(&report, "different"),
                vec![1],
                "{warehouse}.{column}: {report}"
            );
            // Repaired from the source through the lake: equal again.
            let (code, report) = reconcile(
                &sb,
                &[
                    "shop.types",
                    "--settle-secs",
                    "0",
                    "--rechecks",
                    "0",
                    "--repair",
                ],
            );
            assert_eq!(code, 0, "{warehouse}.{column}: {report}");
            assert_eq!(report["repair"]["rows"], 1, "{report}");
            assert_eq!(report["repair"]["still_differing"], 0, "{report}");
        }
    }
}

#[test]
fn a_million_rows_reconcile_to_exactly_what_changed_behind_sluices_back() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(40), amount DECIMAL(12,2),
           placed DATETIME(6), note TEXT, score DOUBLE);
         INSERT INTO orders SELECT seq, CONCAT('c', seq % 1000), seq * 1.25,
           '2026-01-01' + INTERVAL seq SECOND, IF(seq % 7 = 0, NULL, CONCAT('n', seq)), seq / 3
         FROM seq_1_to_1000000",
    );
    let pg = PgServer::start(None);
    let sandboxes: Vec<(&str, Sandbox)> = ["local", "pg"]
        .into_iter()
        .map(|warehouse| {
            let sb = Sandbox::new();
            sb.config(&format!(
                "[warehouses.local]\nkind = \"duckdb\"\n{}{}",
                pg_warehouse(&pg),
                db.config(
                    "cdc",
                    &format!("tables = [\"orders\"]\nwarehouse = \"{warehouse}\"")
                )
            ));
            sync(&sb);
            (warehouse, sb)
        })
        .collect();
    for (warehouse, sb) in &sandboxes {
        let (code, report) = reconcile(sb, &["shop.orders", "--settle-secs", "0"]);
        assert_eq!(code, 0, "{warehouse}: {report}");
        assert_eq!(report["work"]["source_rows"], 1_000_000, "{report}");
        assert_eq!(report["work"]["warehouse_rows"], 1_000_000, "{report}");
        // Equal tables: no row hash is read.
        assert_eq!(report["work"]["hashes_read"], 0, "{report}");
    }

    // Behind sluice's back: with the binlog off, an update, a delete and an insert.
    db.sql(
        "SET SESSION sql_log_bin = 0;
         UPDATE orders SET amount = amount + 1 WHERE id = 250000;
         DELETE FROM orders WHERE id = 500000;
         INSERT INTO orders VALUES (1000001, 'late', 1.00, '2026-06-01', 'behind', 0.5)",
    );
    // And a value corrupted in each warehouse.
    duck_exec(
        &sandboxes[0].1,
        "UPDATE shop.orders SET customer = 'corrupted' WHERE id = 750000",
    );
    pg.sql(
        "wh",
        "UPDATE shop.orders SET note = 'corrupted' WHERE id = 750001",
    );

    for ((warehouse, sb), corrupted) in sandboxes.iter().zip([750000, 750001]) {
        // A sync sees none of it (nothing in the binlog).
        sync(sb);
        let (code, report) = reconcile(
            sb,
            &["shop.orders", "--settle-secs", "0", "--rechecks", "1"],
        );
        assert_eq!(code, 1, "{warehouse}: {report}");
        assert_eq!(
            keys(&report, "missing"),
            vec![1000001],
            "{warehouse}: {report}"
        );
        assert_eq!(
            keys(&report, "extra"),
            vec![500000],
            "{warehouse}: {report}"
        );
        assert_eq!(
            keys(&report, "different"),
            vec![250000, corrupted],
            "{warehouse}: {report}"
        );
        // Only the hashes of narrowed ranges are read: a small part of the table.
        let read = report["work"]["hashes_read"].as_u64().unwrap();
        assert!(read > 0 && read < 40_000, "{warehouse}: {read} hashes read");

        let (code, report) = reconcile(
            sb,
            &[
                "shop.orders",
                "--settle-secs",
                "0",
                "--rechecks",
                "0",
                "--repair",
            ],
        );
        assert_eq!(code, 0, "{warehouse}: {report}");
        assert_eq!(report["repair"]["rows"], 3, "{report}");
        assert_eq!(report["repair"]["deletes"], 1, "{report}");
        assert_eq!(report["repair"]["still_differing"], 0, "{report}");

        // The lake holds the repair as changes: the re-read rows as `r`, the gone key as `d`.
        let changes = sb.query_lake(&format!(
            "SELECT id, _sluice_op FROM shop.orders__changes WHERE id IN (250000, 500000, {corrupted}, 1000001) AND _sluice_seq > 1000000 ORDER BY id"
        ));
        let ops: Vec<(i64, String)> = changes
            .iter()
            .map(|r| {
                (
                    r["id"].as_i64().unwrap(),
                    r["_sluice_op"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            ops,
            vec![
                (250000, "r".into()),
                (500000, "d".into()),
                (corrupted, "r".into()),
                (1000001, "r".into())
            ]
        );

        // Value by value, the repaired rows equal MariaDB's.
        let maria = db.rows(
            "SELECT id, customer, amount, DATE_FORMAT(placed, '%Y-%m-%d %H:%i:%s'), note, score
             FROM orders WHERE id IN (250000, 500000, 750000, 750001, 1000001) ORDER BY id",
        );
        let sql = "SELECT CAST(id AS TEXT) AS k, customer, CAST(amount AS TEXT), to_char(placed, 'YYYY-MM-DD HH24:MI:SS'), note, CAST(score AS TEXT)
             FROM shop.orders WHERE id IN (250000, 500000, 750000, 750001, 1000001) ORDER BY id";
        let wh = match *warehouse {
            "pg" => pg.rows(sql),
            _ => sb.duck(&sql.replace(
                "to_char(placed, 'YYYY-MM-DD HH24:MI:SS')",
                "strftime(placed, '%Y-%m-%d %H:%M:%S')",
            )),
        };
        assert_eq!(maria.len(), 4);
        assert_eq!(wh.len(), 4, "{wh:?}");
        for (m, w) in maria.iter().zip(&wh) {
            assert_eq!(m[..5], w[..5], "{warehouse}");
            let f = |v: &Option<String>| v.as_ref().unwrap().parse::<f64>().unwrap();
            assert!((f(&m[5]) - f(&w[5])).abs() < 1e-9, "{m:?} {w:?}");
        }
        // And the whole table checksums equal again, also after the next sync.
        sync(sb);
        let (code, report) = reconcile(sb, &["shop.orders", "--settle-secs", "0"]);
        assert_eq!(code, 0, "{warehouse}: {report}");
        assert_eq!(report["work"]["source_rows"], 1_000_000, "{report}");
        assert_eq!(report["work"]["warehouse_rows"], 1_000_000, "{report}");
    }
}

/// A `sluice sync --follow` in the background, stopped when dropped.
struct Follower(std::process::Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_reconcile_during_a_running_cdc_stream_reports_no_false_differences() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, amount INT, note VARCHAR(40));
         INSERT INTO orders SELECT seq, seq, CONCAT('n', seq) FROM seq_1_to_50000",
    );
    // PostgreSQL: the pipeline loads it while reconcile reads it (an embedded DuckDB file
    // takes one process at a time).
    let pg = PgServer::start(None);
    let sb = Sandbox::new();
    sb.config(&format!(
        "{}{}",
        pg_warehouse(&pg),
        db.config("cdc", "tables = [\"orders\"]\nbatch_max_ms = 200")
    ));
    sync(&sb);
    let _follower = Follower(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--config")
            .arg(sb.path("sluice.toml"))
            .args(["sync", "--follow", "--interval-secs", "1"])
            .env(PG_ENV.0, PG_ENV.1)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Writes all the while: an update, an insert and a delete every 10 ms or so.
    let stop = AtomicBool::new(false);
    let (writes, (code, report)) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                db.sql(&format!(
                    "UPDATE orders SET amount = amount + 1 WHERE id = {};
                     INSERT INTO orders VALUES ({}, {i}, 'new');
                     DELETE FROM orders WHERE id = {}",
                    (i * 7919) % 50000 + 1,
                    100000 + i,
                    (i * 104729) % 50000 + 1
                ));
                std::thread::sleep(Duration::from_millis(10));
            }
            i
        });
        std::thread::sleep(Duration::from_secs(3));
        let result = reconcile(
            &sb,
            &[
                "shop.orders",
                "--settle-secs",
                "3",
                "--rechecks",
                "4",
                "--segment-rows",
                "5000",
            ],
        );
        stop.store(true, Ordering::Relaxed);
        (writer.join().unwrap(), result)
    });
    assert!(writes > 50, "only {writes} write rounds ran");
    assert_eq!(code, 0, "false differences during a live stream: {report}");
    assert_eq!(
        report["work"]["source_rows"], report["work"]["warehouse_rows"],
        "{report}"
    );
    eprintln!(
        "in flight while reconciling: {} (over {writes} write rounds)",
        report["work"]["in_flight"]
    );
    // Once the writes stop and the stream has carried them, the tables are equal outright.
    let mut last = Value::Null;
    for _ in 0..15 {
        std::thread::sleep(Duration::from_secs(2));
        let (code, report) = reconcile(&sb, &["shop.orders", "--rechecks", "0"]);
        if code == 0 {
            return;
        }
        last = report;
    }
    panic!("the stream never caught up: {last}");
}

#[test]
fn a_table_without_a_key_compares_as_a_multiset_of_rows() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE events (at DATETIME, what VARCHAR(20), n INT);
         INSERT INTO events VALUES ('2026-01-01 00:00:00', 'boot', 1), ('2026-01-01 00:00:00', 'boot', 1),
           ('2026-01-01 00:00:05', 'stop', NULL), ('2026-01-01 00:00:09', 'tick', 3)",
    );
    let sb = Sandbox::new();
    // Without a key a table loads by append unless told: a merge table is rebuilt from each
    // snapshot, so it holds the source's rows.
    sb.config(&db.config("snapshot", "tables = [\"events\"]\nload = \"merge\""));
    sync(&sb);
    let (code, report) = reconcile(&sb, &["shop.events", "--settle-secs", "0"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["work"]["source_rows"], 4, "{report}");

    // One copy of a duplicated row too many, and a changed row.
    duck_exec(
        &sb,
        "INSERT INTO shop.events SELECT * REPLACE (md5('copy') AS _sluice_row_id) FROM shop.events WHERE what = 'boot' LIMIT 1;
         UPDATE shop.events SET what = 'halt' WHERE what = 'stop'",
    );
    let (code, report) = reconcile(
        &sb,
        &["shop.events", "--settle-secs", "0", "--rechecks", "0"],
    );
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        report["missing"],
        serde_json::json!([["2026-01-01 00:00:05.000000 | stop | NULL"]]),
        "{report}"
    );
    assert_eq!(
        report["extra"],
        serde_json::json!([
            ["2026-01-01 00:00:00.000000 | boot | 1"],
            ["2026-01-01 00:00:05.000000 | halt | NULL"]
        ]),
        "{report}"
    );
    // No key to repair by: refused, naming the way out.
    let out = sb.run(&["reconcile", "shop.events", "--repair"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resnapshot shop.events"));
}
