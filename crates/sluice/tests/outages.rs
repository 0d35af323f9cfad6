//! Outages survived: the source server crashes while `sync --follow` streams from it (the
//! stream opens again by the retry policy once it is back) and in the middle of a snapshot
//! (the run fails as transient, the next resumes), and the PostgreSQL warehouse is down at
//! load time (the load fails as transient, the next loads what waited). After each recovery
//! the warehouse equals the source, and the append table holds each change once.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mariadb::MariaDb;
use common::postgres::{PgServer, PASSWORD};
use common::{s, table_of, Sandbox};

/// Lake change rows of `shop.t` so far (0 until its change log exists).
fn lake_changes(sb: &Sandbox) -> i64 {
    let out = sb.run(
        &[
            "--json",
            "query",
            "SELECT count(*) AS n FROM shop.t__changes",
        ],
        &[],
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|rows| rows[0]["n"].as_i64())
        .unwrap_or(0)
}

fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{what}: not within 90 s");
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

fn inserts(db: &MariaDb, from: i64, to: i64) {
    let values: Vec<String> = (from..=to).map(|i| format!("({i}, 'v{i}')")).collect();
    db.sql(&format!("INSERT INTO t VALUES {}", values.join(",")));
}

/// The source crashes while sluice follows its binlog: sluice reports, waits by the retry
/// policy, opens the stream again once the server is back, and lands what was committed
/// before and after the crash once each.
#[test]
fn a_source_crash_while_following_is_survived() {
    let mut db = MariaDb::start(&[]);
    db.sql("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))");
    inserts(&db, 1, 10);
    let sb = Sandbox::new();
    sb.config(&db.config("cdc", "batch_max_ms = 200\nload = [\"merge\", \"append\"]"));
    let mut follower = Follower(Some(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--config")
            .arg(sb.path("sluice.toml"))
            .args(["--json", "sync", "--follow", "--interval-secs", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    eventually("the snapshot lands", || lake_changes(&sb) == 10);
    inserts(&db, 11, 20);
    db.sql("UPDATE t SET v = 'changed' WHERE id <= 5");
    eventually("changes before the crash land", || lake_changes(&sb) == 25);
    db.crash();
    std::thread::sleep(Duration::from_secs(3));
    db.restart();
    inserts(&db, 21, 30);
    db.sql("DELETE FROM t WHERE id = 30");
    eventually("changes after the restart land", || lake_changes(&sb) == 36);
    let child = follower.0.take().unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("opening it again"),
        "the failure was not reported: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        table_of(&report, "shop", "t")["error"].is_null(),
        "{report}"
    );
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, v FROM shop.t ORDER BY id"),
        db.rows("SELECT id, v FROM t ORDER BY id")
    );
    // Each change once: 10 reads, 10 + 10 inserts, 5 updates, 1 delete.
    assert_eq!(
        sb.duck("SELECT _sluice_op, count(*)::VARCHAR FROM shop.t_append GROUP BY 1 ORDER BY 1"),
        vec![
            vec![s("c"), s("20")],
            vec![s("d"), s("1")],
            vec![s("r"), s("10")],
            vec![s("u"), s("5")]
        ]
    );
}

/// The source crashes in the middle of a snapshot: the run fails as transient (the chunks
/// read are committed), and once the server is back the next run reads only the rest; each
/// row lands once.
#[test]
fn a_source_crash_during_a_snapshot_resumes() {
    let mut db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_1000000",
    );
    let sb = Sandbox::new();
    sb.config(&db.config(
        "snapshot",
        "chunk_rows = 2000\nsnapshot_parallelism = 1\nload = [\"merge\", \"append\"]",
    ));
    let commits = |sb: &Sandbox| {
        std::fs::read_dir(sb.path("lake/changes/shop/t/_delta_log"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--config")
        .arg(sb.path("sluice.toml"))
        .args(["--json", "sync"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The run's start, then a first commit of chunks.
    let deadline = Instant::now() + Duration::from_secs(60);
    while commits(&sb) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    db.crash();
    let out = child.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{report}");
    let t = table_of(&report, "shop", "t");
    assert_eq!(t["error_kind"], "transient", "{report}");
    let landed = t["extract"]["rows"].as_i64().unwrap();
    assert!(landed > 0 && landed < 1_000_000, "{report}");
    db.restart();
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        table_of(&report, "shop", "t")["extract"]["rows"]
            .as_i64()
            .unwrap(),
        1_000_000 - landed,
        "the resumed run reads only what was not committed: {report}"
    );
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR, count(DISTINCT id)::VARCHAR FROM shop.t_append"),
        vec![vec![s("1000000"), s("1000000")]]
    );
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, v FROM shop.t ORDER BY id LIMIT 3 OFFSET 499999"),
        db.rows("SELECT id, v FROM t ORDER BY id LIMIT 3 OFFSET 499999")
    );
}

/// The PostgreSQL warehouse is down when a sync loads: the lake takes the files, the load
/// fails as transient, and the next sync after the restart loads what waited, once.
#[test]
fn a_warehouse_outage_at_load_time_loads_later_once() {
    let pg = PgServer::start(None);
    let sb = Sandbox::new();
    sb.config(&format!(
        "[warehouses.pg]\nkind = \"postgres\"\nurl = \"{}\"\npassword = {{ env = \"PGWH_PASSWORD\" }}\nssl_mode = \"disable\"\n\
         [sources.s]\nkind = \"files\"\nurl = \"drops/\"\ntable = \"t\"\ncolumns = [\"id bigint\", \"v text\"]\n\
         load = [\"merge\", \"append\"]\n[sources.s.tables.t]\nprimary_key = [\"id\"]\n",
        pg.url()
    ));
    let env = [("PGWH_PASSWORD", PASSWORD)];
    let sync = |sb: &Sandbox| {
        let out = sb.run(&["--json", "sync"], &env);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), report)
    };
    sb.write("drops/1.csv", "id,v\n1,a\n2,b\n");
    let (code, report) = sync(&sb);
    assert_eq!(code, Some(0), "{report}");
    pg.crash();
    sb.write("drops/2.csv", "id,v\n2,b2\n3,c\n");
    let (code, report) = sync(&sb);
    assert_eq!(code, Some(1), "{report}");
    let t = &report["tables"][0];
    assert_eq!(t["extract"]["rows"], 2, "the lake took the file: {report}");
    assert_eq!(t["error_kind"], "transient", "{report}");
    pg.restart();
    let (code, report) = sync(&sb);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(
        pg.rows("SELECT id, v FROM s.t ORDER BY id"),
        vec![
            vec![s("1"), s("a")],
            vec![s("2"), s("b2")],
            vec![s("3"), s("c")]
        ]
    );
    assert_eq!(
        pg.rows("SELECT count(*), count(DISTINCT (id, v)) FROM s.t_append"),
        vec![vec![s("4"), s("4")]]
    );
}
