//! Every change lands once, exactly as MariaDB holds it, on the paths a review found broken:
//! replace during a failed snapshot, rows deleted between snapshots, the snapshot → binlog
//! hand-off after a resumed snapshot, statement-based DML, case-folded and ANSI-quoted DDL,
//! XA transactions and savepoints, reordered columns, tables without a key, NULL keys,
//! character sets, and decimal scale changes. Each against a private MariaDB server.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mariadb::MariaDb;
use common::{s, table_of, Sandbox};

type Rows = Vec<Vec<Option<String>>>;

fn sync(sb: &Sandbox, args: &[&str]) -> (i32, serde_json::Value) {
    sb.sync_code(args)
}

fn table<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    table_of(report, "shop", name)
}

/// Lake commits of a table so far.
fn commits(sb: &Sandbox, table: &str) -> usize {
    std::fs::read_dir(sb.path(&format!("lake/changes/shop/{table}/_delta_log")))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))
            })
            .count()
        })
        .unwrap_or(0)
}

/// Kills every connection to database `shop` but the query's own (sluice's snapshot
/// readers: between chunks they wait, idle, for the lake writer).
fn kill_readers(db: &MariaDb) -> usize {
    let ids = db.rows(
        "SELECT id FROM information_schema.processlist WHERE id <> CONNECTION_ID() AND db = 'shop' AND command <> 'Binlog Dump'",
    );
    for id in &ids {
        let _ = db.try_sql(&format!("KILL {}", id[0].as_deref().unwrap()));
    }
    ids.len()
}

/// `replace` makes its table the last complete snapshot: a run whose reader dies after its
/// first lake commit leaves yesterday's table whole (not the rows read so far), and the
/// resumed run then replaces it with all of today's.
#[test]
fn replace_loads_only_complete_snapshots() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO big SELECT seq, CONCAT('v-', seq) FROM seq_1_to_300000",
    );
    let sb = Sandbox::new();
    sb.config(&db.config(
        "snapshot",
        "chunk_rows = 10000\nsnapshot_parallelism = 1\nload = \"replace\"",
    ));
    let (code, _) = sync(&sb, &[]);
    assert_eq!(code, 0);
    let first = db.rows("SELECT id, v FROM big ORDER BY id");
    let warehouse = |sb: &Sandbox| -> Rows {
        sb.duck("SELECT CAST(id AS VARCHAR), v FROM shop.big ORDER BY id")
    };
    assert!(warehouse(&sb) == first);
    db.sql("UPDATE big SET v = 'day-2' WHERE id % 7 = 0; DELETE FROM big WHERE id % 11 = 0");
    // Kill the reader after the run's first chunk commit; retried until a kill lands.
    let mut failed_half_way = false;
    for _ in 0..5 {
        let before = commits(&sb, "big");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--config")
            .arg(sb.path("sluice.toml"))
            .args(["--json", "sync"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        // The run's start commit, then its first chunks.
        while commits(&sb, "big") < before + 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let killed = kill_readers(&db);
        let out = child.wait_with_output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if killed > 0 && out.status.code() == Some(1) {
            let t = table(&report, "big");
            assert!(t["error"].is_string(), "{report}");
            failed_half_way = true;
            break;
        }
        // The run finished before the kill (and replaced the table whole): a new day, a new try.
        assert!(warehouse(&sb) == db.rows("SELECT id, v FROM big ORDER BY id"));
        db.sql("UPDATE big SET v = CONCAT(v, '+') WHERE id % 13 = 0");
    }
    assert!(failed_half_way, "no kill landed while the snapshot ran");
    // The failed run's chunks are in the lake, but the table is still the last whole image.
    let now = warehouse(&sb);
    assert!(
        now.len() > 250_000,
        "replace loaded part of a snapshot: {} rows",
        now.len()
    );
    assert!(
        now != db.rows("SELECT id, v FROM big ORDER BY id"),
        "the failed run cannot have loaded"
    );
    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(warehouse(&sb) == db.rows("SELECT id, v FROM big ORDER BY id"));
}

/// A snapshot deletes what it no longer finds: rows deleted at the source leave merge tables,
/// append tables record the delete, history closes the version. And a CDC table snapshotted
/// again after its table was dropped and made anew reads it with its new columns.
#[test]
fn snapshots_delete_what_the_source_no_longer_has() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10));
         INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_20",
    );
    let sb = Sandbox::new();
    sb.config(&db.config(
        "snapshot",
        "chunk_rows = 5\nload = [\"merge\", \"append\", \"history\"]",
    ));
    sync(&sb, &[]);
    db.sql("DELETE FROM t WHERE id IN (3, 4, 17); UPDATE t SET v = 'new' WHERE id = 5");
    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(table(&report, "t")["extract"]["deleted"], 3, "{report}");
    let merged = sb.duck("SELECT CAST(id AS VARCHAR), v FROM shop.t ORDER BY id");
    assert_eq!(merged, db.rows("SELECT id, v FROM t ORDER BY id"));
    assert_eq!(
        sb.duck("SELECT CAST(id AS VARCHAR) FROM shop.t_append WHERE _sluice_op = 'd' ORDER BY id"),
        vec![vec![s("3")], vec![s("4")], vec![s("17")]]
    );
    assert_eq!(
        sb.duck("SELECT CAST(id AS VARCHAR), v FROM shop.t_history WHERE _sluice_is_current ORDER BY id"),
        db.rows("SELECT id, v FROM t ORDER BY id"),
        "closed versions for the deleted keys"
    );

    // CDC: the table is dropped and made anew with other columns; capture halts, and
    // --resnapshot reads it as it is now and deletes what the old one had.
    let sb = Sandbox::new();
    sb.config(&db.config("cdc", "chunk_rows = 5\nschema_changes = \"evolve\""));
    sync(&sb, &[]);
    db.sql(
        "DROP TABLE t; CREATE TABLE t (id INT PRIMARY KEY, w INT);
         INSERT INTO t VALUES (1, 10), (30, 300)",
    );
    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 3, "a dropped table halts its capture: {report}");
    let (code, report) = sync(&sb, &["--resnapshot", "shop.t"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        sb.duck("SELECT CAST(id AS VARCHAR), CAST(w AS VARCHAR) FROM shop.t ORDER BY id"),
        vec![vec![s("1"), s("10")], vec![s("30"), s("300")]]
    );
}

/// The snapshot → binlog hand-off after a snapshot resumed from a crash: the resumed chunks
/// were read later than the run's start, so the changes between are in them already; CDC
/// applies to each key only what its chunk did not see. Append and history tables then hold
/// each change once, as merge does.
#[test]
fn the_handoff_after_a_resumed_snapshot_lands_each_change_once() {
    handoff_after_a_resumed_snapshot("INT");
}

/// The same with a BIGINT UNSIGNED key (what Laravel's and Rails' ids are), now chunked
/// like any integer, and two outlying keys far above the rest: before, such a table was one
/// chunk (and with outliers, chunks even in key range put every row in the first), so the
/// run that died had read all of it.
#[test]
fn the_handoff_with_a_bigint_unsigned_skewed_key_lands_each_change_once() {
    handoff_after_a_resumed_snapshot("BIGINT UNSIGNED");
}

/// Table `big` of 200,000 rows keyed by `key_type` (a BIGINT adds two keys near 10^15),
/// captured in chunks of 10,000 into merge, append and history, by a first run that dies at
/// its first chunk commit (chunks 0-9, ids below ~100,000).
fn killed_after_first_chunk_commit(key_type: &str, extra: &str) -> (MariaDb, Sandbox) {
    let db = MariaDb::start(&[]);
    db.sql(&format!(
        "CREATE TABLE big (id {key_type} PRIMARY KEY, v VARCHAR(20));
         INSERT INTO big SELECT seq, CONCAT('r-', seq) FROM seq_1_to_200000"
    ));
    if key_type.starts_with("BIGINT") {
        db.sql("INSERT INTO big VALUES (1000000000000001, 'far'), (1000000000000002, 'far')");
    }
    let sb = Sandbox::new();
    sb.config(&db.config(
        "cdc",
        &format!("chunk_rows = 10000\nsnapshot_parallelism = 1\n{extra}\nload = [\"merge\", \"append\", \"history\"]"),
    ));
    let out = sb.run(&["sync"], &[("SLUICE_FAILPOINT", "after-lake-commit")]);
    assert!(!out.status.success());
    (db, sb)
}

fn handoff_after_a_resumed_snapshot(key_type: &str) {
    let (db, sb) = killed_after_first_chunk_commit(key_type, "");
    db.sql(
        "UPDATE big SET v = 'early' WHERE id IN (10, 20);
         UPDATE big SET v = 'late' WHERE id IN (150000, 160000);
         DELETE FROM big WHERE id IN (170000, 180000);
         INSERT INTO big VALUES (300001, 'new'), (300002, 'new')",
    );
    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 0, "{report}");
    let source = db.rows("SELECT id, v FROM big ORDER BY id");
    let merged = sb.duck("SELECT CAST(id AS VARCHAR), v FROM shop.big ORDER BY id");
    assert!(merged == source, "merge differs from MariaDB");
    // Keys whose chunk was read before the changes have a read and the change; the rest
    // one read only (their chunk saw the change), and the deleted keys nothing.
    let repeated = sb.duck(
        "SELECT CAST(id AS VARCHAR), string_agg(_sluice_op, ',' ORDER BY _sluice_seq) FROM shop.big_append GROUP BY id HAVING count(*) > 1 ORDER BY id",
    );
    assert_eq!(
        repeated,
        vec![vec![s("10"), s("r,u")], vec![s("20"), s("r,u")]]
    );
    assert_eq!(
        sb.duck("SELECT count(DISTINCT id)::VARCHAR, count(*)::VARCHAR FROM shop.big_append"),
        vec![vec![
            Some(source.len().to_string()),
            Some((source.len() + 2).to_string())
        ]]
    );
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM shop.big_append WHERE id IN (170000, 180000)"),
        vec![vec![s("0")]]
    );
    let current = sb.duck(
        "SELECT CAST(id AS VARCHAR), v FROM shop.big_history WHERE _sluice_is_current ORDER BY id",
    );
    assert!(current == source, "history's current versions differ");
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM shop.big_history"),
        vec![vec![Some((source.len() + 2).to_string())]]
    );
}

/// A VARCHAR key in a case- and accent-insensitive collation is chunked (before, such a
/// table was one chunk: one connection, and a crash restarted the whole snapshot), and the
/// hand-off after a resumed run decides each change's chunk in that collation: by bytes,
/// `B…` would sort before `a…` and `ä…` after `C…`, and the first key of the first chunk
/// read after the changes followed by a tab (below that key in a PAD SPACE collation, so in
/// the chunk before it, read before the changes) would be lost.
#[test]
fn the_handoff_with_a_collated_varchar_key_lands_each_change_once() {
    let (db, sb, at) = keyed_killed_after_first_chunk_commit(
        "VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
        "CONCAT(ELT(1 + seq % 4, 'a', 'B', 'ä', 'C'), LPAD(seq, 7, '0'))",
    );
    // Keys of even n ('a', 'ä') come first, then 'B', then 'C'.
    let (last_read, first_unread) = (at.n_at(&db, -1), at.n_at(&db, 0));
    let (late, gone) = (
        at.n_at(&db, 40_000),
        [at.n_at(&db, 45_000), at.n_at(&db, 46_000)],
    );
    db.sql(&format!(
        "UPDATE big SET v = 'early' WHERE n IN (2, 4, {last_read});
         UPDATE big SET v = 'late' WHERE n IN ({first_unread}, {late});
         DELETE FROM big WHERE n IN ({}, {});
         INSERT INTO big VALUES ('A9999999', 300001, 'new'), ('c9999999', 300002, 'new');
         INSERT INTO big SELECT CONCAT(id, '\t'), 300003, 'new' FROM big WHERE n = {first_unread}",
        gone[0], gone[1]
    ));
    let hex = ("HEX(id)", "hex(id)");
    keyed_handoff_lands_each_change_once(&db, &sb, hex, &[2, 4, last_read], &gone, 3);
}

/// BINARY, DATETIME, TIMESTAMP and DECIMAL keys are chunked by walking the key, and the hand-off
/// after a resumed run places each change in its chunk by the key's value:
/// - BINARY(5) values ending in zero bytes (the binlog drops them): the first key of the
///   first chunk the resumed run read is padded as stored, so it is not taken for a key of
///   the chunk before (read before the change);
/// - DATETIME(6), TIMESTAMP(6) and DECIMAL bounds go back as values of the column's type,
///   fractions of a second and signs kept.
#[test]
fn the_handoff_with_binary_date_and_decimal_keys_lands_each_change_once() {
    let cases: [KeyCase; 4] = [
        (
            "BINARY(5)",
            "UNHEX(LPAD(HEX(seq * 256), 8, '0'))",
            ("HEX(id)", "hex(id)"),
            &[0, 16_000_000],
        ),
        (
            "DATETIME(6)",
            "'2024-01-01' + INTERVAL (seq * 1000003) MICROSECOND",
            (
                "TIMESTAMPDIFF(MICROSECOND, '1970-01-01', id)",
                "epoch_us(id)::VARCHAR",
            ),
            &[-7],
        ),
        (
            "TIMESTAMP(6)",
            "FROM_UNIXTIME(1700000000 + seq * 1.000003)",
            (
                "CAST(UNIX_TIMESTAMP(id) * 1000000 AS SIGNED)",
                "epoch_us(id)::VARCHAR",
            ),
            &[-7],
        ),
        (
            "DECIMAL(20, 4)",
            "seq * 1.0007 - 50000",
            ("CAST(id AS CHAR)", "id::VARCHAR"),
            &[-7],
        ),
    ];
    for (key_type, key, text, new_keys) in cases {
        let (db, sb, at) = keyed_killed_after_first_chunk_commit(key_type, key);
        let (last_read, first_unread) = (at.n_at(&db, -1), at.n_at(&db, 0));
        let (late, gone) = (
            at.n_at(&db, 40_000),
            [at.n_at(&db, 45_000), at.n_at(&db, 46_000)],
        );
        let seqs: Vec<String> = new_keys
            .iter()
            .map(|k| format!("SELECT {k} AS seq"))
            .collect();
        db.sql(&format!(
            "UPDATE big SET v = 'early' WHERE n IN (10, {last_read});
             UPDATE big SET v = 'late' WHERE n IN ({first_unread}, {late});
             DELETE FROM big WHERE n IN ({}, {});
             INSERT INTO big SELECT {key}, 300000 + ABS(seq), 'new' FROM ({}) s",
            gone[0],
            gone[1],
            seqs.join(" UNION ALL ")
        ));
        keyed_handoff_lands_each_change_once(
            &db,
            &sb,
            text,
            &[10, last_read],
            &gone,
            new_keys.len(),
        );
    }
}

/// A key type, its values as an SQL expression of `seq`, the key as text (MariaDB's
/// expression, DuckDB's), and the `seq` of keys inserted after the kill.
type KeyCase = (
    &'static str,
    &'static str,
    (&'static str, &'static str),
    &'static [i64],
);

/// Where the run that died stopped: the first chunk it did not commit.
struct Stopped {
    chunk: usize,
}

impl Stopped {
    /// n of the key `offset` keys after the first key of that chunk (before it when
    /// negative), in the key's order: chunks are 10,000 keys each.
    fn n_at(&self, db: &MariaDb, offset: i64) -> u32 {
        let at = self.chunk as i64 * 10_000 + offset;
        let rows = db.rows(&format!(
            "SELECT n FROM big ORDER BY id LIMIT 1 OFFSET {at}"
        ));
        rows[0][0].as_deref().unwrap().parse().unwrap()
    }
}

/// Table `big (id key_type, n, v)` of 200,000 rows, `id` being `key` of n, captured in chunks
/// of 10,000 into merge, append and history by a first run that dies at its first chunk
/// commit, which holds chunks 0 to some k-1 of 20 (k is found in the change log).
fn keyed_killed_after_first_chunk_commit(key_type: &str, key: &str) -> (MariaDb, Sandbox, Stopped) {
    let db = MariaDb::start(&[]);
    db.sql(&format!(
        "CREATE TABLE big (id {key_type} PRIMARY KEY, n INT NOT NULL, v VARCHAR(20));
         INSERT INTO big SELECT {key}, seq, CONCAT('r-', seq) FROM seq_1_to_200000"
    ));
    let sb = Sandbox::new();
    sb.config(&db.config(
        "cdc",
        "chunk_rows = 10000\nsnapshot_parallelism = 1\nload = [\"merge\", \"append\", \"history\"]",
    ));
    let out = sb.run(&["sync"], &[("SLUICE_FAILPOINT", "after-lake-commit")]);
    assert!(!out.status.success());
    let mut committed: Vec<usize> = Vec::new();
    for e in std::fs::read_dir(sb.path("lake/changes/shop/big/_delta_log")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            if let Some(app) = v["txn"]["appId"].as_str() {
                if app.starts_with("mysql.snapshot.chunk.") {
                    committed.push(app.rsplit('.').next().unwrap().parse().unwrap());
                }
            }
        }
    }
    committed.sort_unstable();
    let k = committed.len();
    assert!(
        k > 0 && k < 19 && committed == (0..k).collect::<Vec<_>>(),
        "chunks committed before the kill: {committed:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (db, sb, Stopped { chunk: k })
}

/// After the resumed run: merge and history equal MariaDB, the key compared as `key_text`
/// (MariaDB's expression of it, DuckDB's) byte for byte; the keys
/// `updated_early` (in chunks read before their change) have a read and the change in the
/// append table, every other key one row, the keys `gone` none; `inserted` new keys once.
fn keyed_handoff_lands_each_change_once(
    db: &MariaDb,
    sb: &Sandbox,
    (maria_key, duck_key): (&str, &str),
    updated_early: &[u32],
    gone: &[u32],
    inserted: usize,
) {
    let (code, report) = sync(sb, &[]);
    assert_eq!(code, 0, "{report}");
    let source = db.rows(&format!("SELECT n, {maria_key}, v FROM big ORDER BY n"));
    assert_eq!(source.len(), 200_000 - gone.len() + inserted);
    let merged = sb.duck(&format!(
        "SELECT n::VARCHAR, {duck_key}, v FROM shop.big ORDER BY n"
    ));
    assert!(merged == source, "merge differs from MariaDB");
    let repeated = sb.duck(
        "SELECT n::VARCHAR, string_agg(_sluice_op, ',' ORDER BY _sluice_seq) FROM shop.big_append GROUP BY n HAVING count(*) > 1 ORDER BY n",
    );
    let mut early = updated_early.to_vec();
    early.sort_unstable();
    let expected: Vec<Vec<Option<String>>> = early
        .iter()
        .map(|n| vec![Some(n.to_string()), s("r,u")])
        .collect();
    assert_eq!(repeated, expected);
    assert_eq!(
        sb.duck("SELECT count(DISTINCT n)::VARCHAR, count(*)::VARCHAR FROM shop.big_append"),
        vec![vec![
            Some(source.len().to_string()),
            Some((source.len() + updated_early.len()).to_string())
        ]]
    );
    let gone: Vec<String> = gone.iter().map(u32::to_string).collect();
    assert_eq!(
        sb.duck(&format!(
            "SELECT count(*)::VARCHAR FROM shop.big_append WHERE n IN ({})",
            gone.join(", ")
        )),
        vec![vec![s("0")]]
    );
    let current = sb.duck(&format!(
        "SELECT n::VARCHAR, {duck_key}, v FROM shop.big_history WHERE _sluice_is_current ORDER BY n"
    ));
    assert!(current == source, "history's current versions differ");
}

/// A transaction larger than `txn_buffer_mb` is written into the lake as it is read, never
/// held whole, and lands whole or not at all: a run killed after its first rows were written
/// leaves the lake and the warehouse without any of it; the next run lands every change
/// once, exactly as MariaDB holds it, with the one commit time. A large XA transaction waits
/// for its commit.
#[test]
fn a_transaction_past_the_buffer_lands_whole_or_not_at_all() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, v MEDIUMTEXT);
         CREATE TABLE u (id INT PRIMARY KEY, n INT);
         INSERT INTO t VALUES (0, 'start'); INSERT INTO u VALUES (0, 0)",
    );
    let sb = Sandbox::new();
    sb.config(&db.config("cdc", "txn_buffer_mb = 1\nload = [\"merge\", \"append\"]"));
    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 0, "{report}");
    // About 12 MB of row events in one transaction, tables interleaved.
    db.sql(
        "START TRANSACTION;
         INSERT INTO t SELECT seq, REPEAT(CHAR(65 + seq % 26), 3000) FROM seq_1_to_2000;
         UPDATE u SET n = 1 WHERE id = 0;
         UPDATE t SET v = CONCAT(v, '!') WHERE id <= 1000;
         INSERT INTO u SELECT seq, seq FROM seq_1_to_50;
         DELETE FROM t WHERE id BETWEEN 1500 AND 1600;
         COMMIT",
    );
    let out = sb.run(&["sync"], &[("SLUICE_FAILPOINT", "after-txn-part")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("failpoint after-txn-part"),
        "the run was not stopped after writing part of the transaction: {err}"
    );
    // Nothing of it is visible.
    for table in ["t", "u"] {
        let log = sb.query_lake(&format!(
            "SELECT count(*) AS n FROM shop.{table}__changes WHERE _sluice_op <> 'r'"
        ));
        assert_eq!(log[0]["n"], 0, "{table}: {log:?}");
    }
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM shop.t"),
        vec![vec![s("1")]]
    );

    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(
        sb.duck("SELECT CAST(id AS VARCHAR), md5(v) FROM shop.t ORDER BY id")
            == db.rows("SELECT id, md5(v) FROM t ORDER BY id"),
        "t differs from MariaDB"
    );
    assert_eq!(
        sb.duck("SELECT CAST(id AS VARCHAR), CAST(n AS VARCHAR) FROM shop.u ORDER BY id"),
        db.rows("SELECT id, n FROM u ORDER BY id")
    );
    // Each change once, all at the transaction's commit time.
    for (table, changes) in [("t", 2000 + 1001 + 101), ("u", 1 + 50)] {
        let log = sb.query_lake(&format!(
            "SELECT count(*) AS n, count(DISTINCT _sluice_seq) AS seqs, count(DISTINCT _sluice_source_ts) AS times \
             FROM shop.{table}__changes WHERE _sluice_op <> 'r'"
        ));
        assert_eq!(log[0]["n"], changes, "{table}: {log:?}");
        assert_eq!(log[0]["seqs"], changes, "{table}: {log:?}");
        assert_eq!(log[0]["times"], 1, "{table}: {log:?}");
    }
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM shop.t_append WHERE _sluice_op <> 'r'"),
        vec![vec![Some((2000 + 1001 + 101).to_string())]]
    );

    // A large XA transaction is never given ahead: its rows wait for its PREPARE, and
    // land at its XA COMMIT.
    db.sql(
        "XA START 'big'; INSERT INTO t SELECT seq, REPEAT('x', 3000) FROM seq_10001_to_12000;
         XA END 'big'; XA PREPARE 'big'",
    );
    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 0, "{report}");
    let xa = sb.query_lake("SELECT count(*) AS n FROM shop.t__changes WHERE id > 10000");
    assert_eq!(xa[0]["n"], 0, "{xa:?}");
    db.sql("XA COMMIT 'big'");
    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 0, "{report}");
    let xa = sb.query_lake("SELECT count(*) AS n FROM shop.t__changes WHERE id > 10000");
    assert_eq!(xa[0]["n"], 2000, "{xa:?}");
    assert!(
        sb.duck("SELECT CAST(id AS VARCHAR), md5(v) FROM shop.t ORDER BY id")
            == db.rows("SELECT id, md5(v) FROM t ORDER BY id"),
        "t differs from MariaDB after the XA transaction"
    );
}

/// A large transaction whose rows were written ahead, but which the table cannot be followed
/// through (a statement the binlog holds without its rows, in MIXED format): the table halts
/// before it, nothing of it is committed, and the data files written ahead are deleted.
#[test]
fn rows_written_ahead_of_a_transaction_that_halts_are_dropped() {
    let db = MariaDb::start(&[]);
    db.sql("CREATE TABLE t (id INT PRIMARY KEY, v MEDIUMTEXT); INSERT INTO t VALUES (0, 'start')");
    let sb = Sandbox::new();
    sb.config(&db.config("cdc", "txn_buffer_mb = 1"));
    assert_eq!(sync(&sb, &[]).0, 0);
    let files = |sb: &Sandbox| -> Vec<String> {
        let mut out = Vec::new();
        let mut dirs = vec![sb.path("lake/changes/shop/t")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "parquet") {
                    out.push(p.display().to_string());
                }
            }
        }
        out.sort();
        out
    };
    let before = files(&sb);
    // RANDOM_BYTES makes MIXED log the INSERT as rows: about 100 MB that hardly compress,
    // written ahead past the lake writer's 64 MB buffer, so a data file is written. The
    // UPDATE is logged as a statement.
    db.sql(
        "SET SESSION binlog_format = 'MIXED';
         START TRANSACTION;
         INSERT INTO t SELECT seq, CONCAT(TO_BASE64(RANDOM_BYTES(1024)),
             TO_BASE64(RANDOM_BYTES(1024)), TO_BASE64(RANDOM_BYTES(1024))) FROM seq_1_to_25000;
         UPDATE t SET v = 'changed' WHERE id = 0;
         COMMIT",
    );
    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 3, "{report}");
    assert!(
        table(&report, "t")["halted"]
            .as_str()
            .is_some_and(|h| h.contains("UPDATE t")),
        "{report}"
    );
    assert_eq!(
        sb.duck("SELECT CAST(id AS VARCHAR), v FROM shop.t ORDER BY id"),
        vec![vec![s("0"), s("start")]]
    );
    assert_eq!(files(&sb), before, "data files written ahead stayed");
}

/// A transaction past `txn_buffer_mb` inside the hand-off window of a resumed snapshot: its
/// rows cannot be written ahead (whether a chunk saw them depends on the commit position),
/// so they wait for it, and each change lands once: keys whose chunk was read before it get
/// the change, keys whose chunk was read after it only their read.
#[test]
fn a_large_transaction_in_the_handoff_window_lands_once() {
    let (db, sb) = killed_after_first_chunk_commit("INT", "txn_buffer_mb = 1");
    // About 4 MB of row events, on keys of chunks read before and after it.
    db.sql("UPDATE big SET v = CONCAT('w-', id) WHERE id % 2 = 0");
    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(
        sb.duck("SELECT CAST(id AS VARCHAR), v FROM shop.big ORDER BY id")
            == db.rows("SELECT id, v FROM big ORDER BY id"),
        "merge differs from MariaDB"
    );
    // A change landed twice would repeat a key's value; one landed never would leave the
    // read's value last.
    assert_eq!(
        sb.duck(
            "SELECT count(*)::VARCHAR FROM (SELECT id, v FROM shop.big_append GROUP BY id, v HAVING count(*) > 1)"
        ),
        vec![vec![s("0")]]
    );
    let changed = sb.duck(
        "SELECT count(*)::VARCHAR, min(id)::VARCHAR, max(id)::VARCHAR FROM shop.big_append WHERE _sluice_op = 'u'",
    );
    let n: usize = changed[0][0].as_deref().unwrap().parse().unwrap();
    assert!(
        n > 0 && n < 100_000,
        "updates applied on both sides of the chunks read before the change: {changed:?}"
    );
    assert!(
        sb.duck("SELECT CAST(id AS VARCHAR), v FROM shop.big_history WHERE _sluice_is_current ORDER BY id")
            == db.rows("SELECT id, v FROM big ORDER BY id"),
        "history's current versions differ"
    );
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM shop.big_history"),
        vec![vec![Some((200_000 + n).to_string())]]
    );
}

/// Changes the binlog carries no rows for stop their table with the reason instead of
/// passing unseen: DML a session wrote in STATEMENT format, `TRUNCATE Orders` on a server
/// that folds table names (lower_case_table_names = 1), `TRUNCATE "t"` under ANSI_QUOTES.
/// The other tables go on.
#[test]
fn changes_without_rows_halt_their_table() {
    let db = MariaDb::start(&["--lower-case-table-names=1"]);
    db.sql(
        "CREATE TABLE Orders (id INT PRIMARY KEY, v VARCHAR(10));
         CREATE TABLE stmt (id INT PRIMARY KEY, v VARCHAR(10));
         CREATE TABLE ansi (id INT PRIMARY KEY);
         CREATE TABLE calm (id INT PRIMARY KEY);
         INSERT INTO Orders VALUES (1, 'a'); INSERT INTO stmt VALUES (1, 'a');
         INSERT INTO ansi VALUES (1); INSERT INTO calm VALUES (1)",
    );
    let sb = Sandbox::new();
    sb.config(&db.config("cdc", ""));
    assert_eq!(sync(&sb, &[]).0, 0);
    db.sql(
        "SET SESSION binlog_format = 'STATEMENT'; INSERT INTO stmt VALUES (2, 'lost?');
         SET SESSION binlog_format = 'ROW'; INSERT INTO Orders VALUES (2, 'b');
         TRUNCATE Orders;
         SET SESSION sql_mode = 'ANSI_QUOTES'; TRUNCATE \"ansi\";
         INSERT INTO calm VALUES (2)",
    );
    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 3, "{report}");
    let halted = |t: &str| {
        table(&report, t)["halted"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(halted("stmt").contains("statement"), "{report}");
    assert!(halted("stmt").contains("INSERT INTO stmt"), "{report}");
    assert!(halted("orders").contains("TRUNCATE"), "{report}");
    assert!(halted("ansi").contains("TRUNCATE"), "{report}");
    assert!(table(&report, "calm")["halted"].is_null(), "{report}");
    // What came before each halt landed; nothing after it.
    assert_eq!(
        sb.duck("SELECT CAST(id AS VARCHAR), v FROM shop.orders ORDER BY id"),
        vec![vec![s("1"), s("a")], vec![s("2"), s("b")]]
    );
    assert_eq!(
        sb.duck("SELECT CAST(id AS VARCHAR) FROM shop.calm ORDER BY id"),
        vec![vec![s("1")], vec![s("2")]]
    );
    // Halts persist until the table is snapshotted again.
    assert_eq!(sync(&sb, &[]).0, 3);
    let (code, report) = sync(
        &sb,
        &[
            "--resnapshot",
            "shop.stmt",
            "--resnapshot",
            "shop.orders",
            "--resnapshot",
            "shop.ansi",
        ],
    );
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        sb.duck("SELECT CAST(id AS VARCHAR), v FROM shop.stmt ORDER BY id"),
        db.rows("SELECT id, v FROM stmt ORDER BY id")
    );
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM shop.orders"),
        vec![vec![s("0")]]
    );
}

/// XA transactions land when committed (also when their PREPARE came in an earlier sync),
/// never when rolled back, and never with the transaction after them; a rollback to a
/// savepoint undoes only what came after it.
#[test]
fn xa_transactions_and_savepoints_land_exactly_the_committed_rows() {
    let db = MariaDb::start(&[]);
    db.sql("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t VALUES (0, 'start')");
    let sb = Sandbox::new();
    sb.config(&db.config("cdc", "load = [\"merge\", \"append\"]"));
    sync(&sb, &[]);
    db.sql("XA START 'a'; INSERT INTO t VALUES (1, 'xa'); XA END 'a'; XA PREPARE 'a'");
    db.sql("XA COMMIT 'a'");
    db.sql("XA START 'b'; INSERT INTO t VALUES (2, 'undone'); XA END 'b'; XA PREPARE 'b'");
    db.sql("INSERT INTO t VALUES (4, 'between')");
    db.sql("XA ROLLBACK 'b'");
    db.sql("XA START 'c'; INSERT INTO t VALUES (3, 'one'); XA END 'c'; XA COMMIT 'c' ONE PHASE");
    db.sql(
        "START TRANSACTION; INSERT INTO t VALUES (5, 'kept'); SAVEPOINT s;
         INSERT INTO t VALUES (6, 'undone'); ROLLBACK TO SAVEPOINT s;
         INSERT INTO t VALUES (7, 'kept'); COMMIT",
    );
    // Prepared, and still open when the sync runs.
    db.sql("XA START 'd'; INSERT INTO t VALUES (8, 'later'); XA END 'd'; XA PREPARE 'd'");
    db.sql("INSERT INTO t VALUES (9, 'after')");
    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 0, "{report}");
    let ids =
        |sb: &Sandbox| -> Rows { sb.duck("SELECT CAST(id AS VARCHAR) FROM shop.t ORDER BY id") };
    let want = |list: &[&str]| -> Rows { list.iter().map(|i| vec![s(i)]).collect() };
    assert_eq!(ids(&sb), want(&["0", "1", "3", "4", "5", "7", "9"]));
    db.sql("XA COMMIT 'd'");
    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(ids(&sb), want(&["0", "1", "3", "4", "5", "7", "8", "9"]));
    assert_eq!(
        sb.duck("SELECT CAST(id AS VARCHAR), v FROM shop.t ORDER BY id"),
        db.rows("SELECT id, v FROM t ORDER BY id")
    );
    // Each change once in the append table.
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR, count(DISTINCT id)::VARCHAR FROM shop.t_append"),
        vec![vec![s("8"), s("8")]]
    );
}

/// Rows are decoded by the column names the binlog carries: two reorders while sluice was
/// stopped (each ALTER read with the definitions of after both) do not swap values.
#[test]
fn reordered_columns_decode_by_name() {
    let db = MariaDb::start(&[]);
    db.sql("CREATE TABLE t (id INT PRIMARY KEY, a VARCHAR(10), b VARCHAR(10), c VARCHAR(10))");
    let sb = Sandbox::new();
    sb.config(&db.config("cdc", "schema_changes = \"evolve\""));
    sync(&sb, &[]);
    db.sql(
        "INSERT INTO t VALUES (1, 'a1', 'b1', 'c1');
         ALTER TABLE t MODIFY c VARCHAR(10) AFTER id;
         INSERT INTO t (id, a, b, c) VALUES (2, 'a2', 'b2', 'c2');
         ALTER TABLE t MODIFY b VARCHAR(10) AFTER id;
         INSERT INTO t (id, a, b, c) VALUES (3, 'a3', 'b3', 'c3');
         UPDATE t SET a = 'a1x' WHERE id = 1",
    );
    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        sb.duck("SELECT CAST(id AS VARCHAR), a, b, c FROM shop.t ORDER BY id"),
        db.rows("SELECT id, a, b, c FROM t ORDER BY id")
    );
}

/// A table without a key keeps its exact rows (DESIGN.md, Keys): identical rows are counted,
/// an update replaces one copy by its before image, a delete removes one, and a snapshot
/// taken again rebuilds the table rather than adding its rows twice.
#[test]
fn keyless_tables_keep_their_exact_rows() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE kl (a INT, b VARCHAR(10));
         INSERT INTO kl VALUES (1, 'x'), (1, 'x'), (2, 'y'), (3, 'z')",
    );
    let sb = Sandbox::new();
    sb.config(&db.config("cdc", "load = [\"merge\", \"append\"]"));
    sync(&sb, &[]);
    let same = |sb: &Sandbox| {
        assert_eq!(
            sb.duck("SELECT CAST(a AS VARCHAR), b FROM shop.kl ORDER BY a, b"),
            db.rows("SELECT a, b FROM kl ORDER BY a, b")
        );
    };
    same(&sb);
    db.sql(
        "DELETE FROM kl WHERE a = 1 LIMIT 1;
         UPDATE kl SET b = 'y2' WHERE a = 2;
         INSERT INTO kl VALUES (3, 'z'), (3, 'z');
         DELETE FROM kl WHERE a = 3 LIMIT 1",
    );
    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 0, "{report}");
    same(&sb);
    let (code, report) = sync(&sb, &["--resnapshot", "shop.kl"]);
    assert_eq!(code, 0, "{report}");
    same(&sb);
    db.sql("INSERT INTO kl VALUES (1, 'x'); UPDATE kl SET b = 'w' WHERE a = 3 LIMIT 1");
    sync(&sb, &[]);
    same(&sb);
}

/// Rows whose key is NULL (a `primary_key` set on a nullable column) cannot be placed by a
/// merge: they go to the quarantine with the reason, from the snapshot and the binlog alike,
/// and the other rows land.
#[test]
fn rows_with_null_keys_are_quarantined() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE np (code VARCHAR(5) NULL, v INT, UNIQUE KEY (code));
         INSERT INTO np VALUES ('a', 1), (NULL, 2), ('b', 3)",
    );
    let sb = Sandbox::new();
    sb.config(&db.config("cdc", "[sources.shop.tables.np]\nprimary_key = [\"code\"]"));
    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(table(&report, "np")["extract"]["rejects"], 1, "{report}");
    db.sql("INSERT INTO np VALUES (NULL, 4), ('c', 5)");
    let (_, report) = sync(&sb, &[]);
    assert_eq!(table(&report, "np")["extract"]["rejects"], 1, "{report}");
    assert_eq!(
        sb.duck("SELECT code, CAST(v AS VARCHAR) FROM shop.np ORDER BY code"),
        vec![
            vec![s("a"), s("1")],
            vec![s("b"), s("3")],
            vec![s("c"), s("5")]
        ]
    );
    let q = sb.query_lake("SELECT \"column\", reason FROM shop.np__quarantine ORDER BY raw");
    assert_eq!(q.len(), 2, "{q:?}");
    for r in &q {
        assert_eq!(r["column"], "code");
        assert!(
            r["reason"]
                .as_str()
                .unwrap()
                .contains("NULL in a key column"),
            "{r}"
        );
    }
}

/// Text in character sets other than UTF-8 lands the same through a snapshot (the server
/// converts) and the binlog (sluice decodes the stored bytes); one sluice cannot decode is
/// refused up front for CDC, naming the column, never landed with replacement characters.
#[test]
fn character_sets_decode_alike_from_snapshot_and_binlog() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE cs (id INT PRIMARY KEY,
            th VARCHAR(20) CHARACTER SET tis620, ru VARCHAR(20) CHARACTER SET cp866,
            lt VARCHAR(20) CHARACTER SET latin7, u2 VARCHAR(20) CHARACTER SET ucs2,
            u4 VARCHAR(20) CHARACTER SET utf32, tr VARCHAR(20) CHARACTER SET latin5);
         INSERT INTO cs VALUES (1, 'ภาษาไทย', 'Привет', 'Ąžuolas', 'héllo', 'rocket 🚀', 'İstanbul');
         CREATE TABLE am (id INT PRIMARY KEY, v VARCHAR(10) CHARACTER SET armscii8)",
    );
    let sb = Sandbox::new();
    sb.config(&db.config("cdc", ""));
    sync(&sb, &[]);
    db.sql("INSERT INTO cs VALUES (2, 'สวัสดี', 'мир', 'Šiauliai', 'ça', '𝄞 clef', 'Ğ')");
    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 1, "the armscii8 table is refused: {report}");
    let err = table(&report, "am")["error"].as_str().unwrap();
    assert!(err.contains("armscii8") && err.contains("`v`"), "{err}");
    assert!(table(&report, "cs")["error"].is_null(), "{report}");
    assert_eq!(
        sb.duck("SELECT CAST(id AS VARCHAR), th, ru, lt, u2, u4, tr FROM shop.cs ORDER BY id"),
        db.rows("SELECT id, th, ru, lt, u2, u4, tr FROM cs ORDER BY id")
    );
}

/// A decimal column whose scale grows (DECIMAL(10,2) → DECIMAL(12,4)): a value with more
/// decimals than the lake column keeps is never rounded into it; it lands whole in the
/// variant column, and the warehouse (evolve) has it whole.
#[test]
fn a_grown_decimal_scale_never_rounds() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE p (id INT PRIMARY KEY, price DECIMAL(10,2)); INSERT INTO p VALUES (1, 1.50)",
    );
    let sb = Sandbox::new();
    sb.config(&db.config("cdc", "schema_changes = \"evolve\""));
    sync(&sb, &[]);
    db.sql(
        "ALTER TABLE p MODIFY price DECIMAL(12,4);
         INSERT INTO p VALUES (2, 1.2345), (3, 2.5000)",
    );
    let (code, report) = sync(&sb, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        sb.duck(
            "SELECT CAST(id AS VARCHAR), CAST(price AS VARCHAR), CAST(price__decimal_12_4 AS VARCHAR) FROM shop.p ORDER BY id"
        ),
        vec![
            vec![s("1"), s("1.50"), None],
            vec![s("2"), None, s("1.2345")],
            vec![s("3"), s("2.50"), None],
        ]
    );
}
