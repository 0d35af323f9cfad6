//! MySQL/MariaDB source against a private MariaDB server: every type through snapshot and
//! binlog, every kind of change, schema changes, incremental reads, and crashes.

mod common;

use common::mariadb::{MariaDb, EDGE_ROWS, TYPES_DDL};
use common::{s, table_of, Sandbox};

fn config(db: &MariaDb, mode: &str, extra: &str) -> String {
    db.config(mode, extra)
}

/// (MariaDB expression, DuckDB expression) per column, both rendering the same text.
const RENDER: &[(&str, &str)] = &[
    ("ti", "ti"),
    ("tu", "tu"),
    ("si", "si"),
    ("su", "su"),
    ("mi", "mi"),
    ("mu", "mu"),
    ("i", "i"),
    ("iu", "iu"),
    ("bi", "bi"),
    ("bu", "bu"),
    ("d1", "d1"),
    ("d2", "d2"),
    ("f", "f"),
    ("dbl", "dbl"),
    ("CAST(b1 AS UNSIGNED)", "CAST(b1 AS INTEGER)"),
    ("LPAD(HEX(b12), 4, '0')", "hex(b12)"),
    ("c", "c"),
    ("vc", "vc"),
    ("tx", "tx"),
    ("l1", "l1"),
    ("HEX(bn)", "hex(bn)"),
    ("HEX(vb)", "hex(vb)"),
    ("HEX(bl)", "hex(bl)"),
    (
        "NULLIF(CAST(dt AS CHAR), '0000-00-00')",
        "CAST(dt AS VARCHAR)",
    ),
    (
        "DATE_FORMAT(dtm, '%Y-%m-%d %H:%i:%s.%f')",
        "strftime(dtm, '%Y-%m-%d %H:%M:%S.%f')",
    ),
    (
        "CAST(UNIX_TIMESTAMP(ts) * 1000000 AS SIGNED)",
        "epoch_us(ts)",
    ),
    ("tm", "tm"),
    ("CAST(yr AS UNSIGNED)", "yr"),
    ("js", "js"),
    ("en", "en"),
    ("st", "st"),
    ("HEX(ST_AsWKB(g))", "hex(g)"),
];

/// Floats render differently (`2.5e-300` / `2.5e-300` but `1e100` / `1e+100`): compared as numbers.
const FLOATS: &[&str] = &["f", "dbl"];

fn assert_same(db: &MariaDb, sb: &Sandbox, ids: &str) {
    let maria: Vec<_> = RENDER.iter().map(|(m, _)| *m).collect();
    let duck: Vec<_> = RENDER
        .iter()
        .map(|(_, d)| format!("CAST({d} AS VARCHAR)"))
        .collect();
    let m = db.rows(&format!(
        "SET time_zone = '+00:00'; SELECT id, {} FROM types WHERE id IN ({ids}) ORDER BY id",
        maria.join(", ")
    ));
    let d = sb.duck(&format!(
        "SELECT CAST(id AS VARCHAR), {} FROM shop.types WHERE id IN ({ids}) ORDER BY id",
        duck.join(", ")
    ));
    assert_eq!(m.len(), d.len(), "row count for ids {ids}");
    assert!(!m.is_empty());
    for (mr, dr) in m.iter().zip(&d) {
        for (i, (mv, dv)) in mr.iter().zip(dr).enumerate() {
            let col = if i == 0 { "id" } else { RENDER[i - 1].0 };
            if FLOATS.contains(&col) {
                let p = |v: &Option<String>| v.as_ref().map(|s| s.parse::<f64>().unwrap());
                assert_eq!(p(mv), p(dv), "row {:?} column {col}", mr[0]);
            } else {
                assert_eq!(mv, dv, "row {:?} column {col}", mr[0]);
            }
        }
    }
}

#[test]
fn every_type_survives_snapshot_and_binlog_identically() {
    let db = MariaDb::start(&[]);
    db.sql(&format!(
        "SET SESSION sql_mode = ''; {TYPES_DDL}; INSERT INTO types VALUES {EDGE_ROWS}"
    ));
    let sb = Sandbox::new();
    sb.config(&config(&db, "cdc", "tables = [\"types\"]"));
    let out = sb.sync_json();
    assert_eq!(out["tables"][0]["extract"]["rows"], 3, "{out}");
    assert_eq!(out["tables"][0]["extract"]["zero_dates"], 1, "{out}");
    assert_same(&db, &sb, "1, 2, 3");

    // The same rows again through the binlog, under new keys.
    db.sql("SET SESSION sql_mode = ''; INSERT INTO types SELECT id + 100, ti, tu, si, su, mi, mu, i, iu, bi, bu, d1, d2, f, dbl, b1, b12, c, vc, tx, l1, bn, vb, bl, dt, dtm, ts, tm, yr, js, en, st, g FROM types");
    let out = sb.sync_json();
    assert_eq!(out["tables"][0]["extract"]["rows"], 3, "{out}");
    assert_same(&db, &sb, "101, 102, 103");
    // Read by snapshot and by CDC, a row lands with identical values.
    for id in [1, 2, 3] {
        let row = |id: i32| {
            // Every source column but the key; the change columns (op, seq, times) differ.
            format!("SELECT COLUMNS(c -> c <> 'id' AND NOT starts_with(c, '_sluice_')) FROM shop.types WHERE id = {id}")
        };
        for (a, b) in [(id, id + 100), (id + 100, id)] {
            let diff = sb.duck(&format!(
                "SELECT count(*)::VARCHAR FROM ({} EXCEPT {})",
                row(a),
                row(b)
            ));
            assert_eq!(
                diff[0][0].as_deref(),
                Some("0"),
                "row {a} differs from row {b}"
            );
        }
    }
    // Updates through the binlog carry every type too.
    db.sql("SET SESSION sql_mode = ''; UPDATE types t JOIN types s ON s.id = t.id + 1 SET t.vc = s.vc, t.js = s.js, t.d2 = s.d2, t.bu = s.bu, t.tm = s.tm WHERE t.id IN (1, 101)");
    sb.sync_json();
    assert_same(&db, &sb, "1, 2, 3, 101, 102, 103");
}

#[test]
fn every_kind_of_change_lands_exactly() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(20), amount DECIMAL(10,2));
            CREATE TABLE events (seen_at DATETIME, what VARCHAR(20));
            INSERT INTO orders VALUES (1, 'ann', 10.00), (2, 'bob', 20.00), (3, 'cy', 30.00);
            INSERT INTO events VALUES ('2026-01-01 00:00:00', 'boot')",
    );
    let sb = Sandbox::new();
    sb.config(&config(&db, "cdc", ""));
    sb.sync_json();
    // Inserts, updates, a key change, deletes; a multi-statement transaction; a rolled-back one.
    db.sql("INSERT INTO orders VALUES (4, 'dee', 40.00);
            UPDATE orders SET amount = amount + 1 WHERE id IN (1, 2);
            UPDATE orders SET id = 30 WHERE id = 3;
            DELETE FROM orders WHERE id = 2;
            START TRANSACTION;
              INSERT INTO orders VALUES (5, 'eve', 50.00);
              UPDATE orders SET customer = 'EVE' WHERE id = 5;
              UPDATE orders SET amount = 99.99 WHERE id = 5;
              DELETE FROM orders WHERE id = 4;
            COMMIT;
            START TRANSACTION;
              INSERT INTO orders VALUES (6, 'ghost', 1.00);
              DELETE FROM orders WHERE id = 1;
            ROLLBACK;
            INSERT INTO events VALUES ('2026-01-02 00:00:00', 'tick'), ('2026-01-02 00:00:00', 'tick')");
    let out = sb.sync_json();
    assert_eq!(out["tables"].as_array().unwrap().len(), 2, "{out}");
    let want = db.rows("SELECT id, customer, amount FROM orders ORDER BY id");
    let got = sb.duck("SELECT CAST(id AS VARCHAR), customer, CAST(amount AS VARCHAR) FROM shop.orders ORDER BY id");
    assert_eq!(got, want);
    assert_eq!(want.len(), 3, "ids 1, 30, 5 remain");
    // No key: append, every insert kept (the duplicate row too).
    let got = sb.duck("SELECT strftime(seen_at, '%Y-%m-%d %H:%M:%S'), what FROM shop.events ORDER BY seen_at, what");
    assert_eq!(
        got,
        db.rows("SELECT seen_at, what FROM events ORDER BY seen_at, what")
    );
    // The change log says what happened, in order, with commit times.
    let ops = sb.query_lake(
        "SELECT _sluice_op AS op, count(*) AS n FROM shop.orders__changes GROUP BY 1 ORDER BY 1",
    );
    let count = |op: &str| {
        ops.iter()
            .find(|r| r["op"] == op)
            .map(|r| r["n"].as_i64().unwrap())
            .unwrap_or(0)
    };
    assert_eq!(count("r"), 3);
    assert_eq!(count("c"), 3, "4, 30 (key change), 5");
    assert_eq!(count("d"), 3, "3 (key change), 2, 4");
    assert_eq!(count("u"), 4, "1, 2, 5, 5");
    let untimed = sb.query_lake("SELECT count(*) AS n FROM shop.orders__changes WHERE _sluice_op <> 'r' AND _sluice_source_ts IS NULL");
    assert_eq!(untimed[0]["n"], 0);
    // Nothing new: a rerun lands nothing.
    let out = sb.sync_json();
    for t in out["tables"].as_array().unwrap() {
        assert_eq!(t["extract"]["rows"], 0, "{out}");
    }
}

fn sync_code(sb: &Sandbox) -> (i32, serde_json::Value) {
    sb.sync_code(&[])
}

#[test]
fn cdc_schema_change_lands_in_the_lake_halts_only_that_table_and_accept_loads_the_backlog_once() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE a (id INT PRIMARY KEY, v INT); CREATE TABLE b (id INT PRIMARY KEY, v INT);
            INSERT INTO a VALUES (1, 1); INSERT INTO b VALUES (1, 1)",
    );
    let sb = Sandbox::new();
    sb.config(&config(&db, "cdc", ""));
    sb.sync_json();
    db.sql("INSERT INTO a VALUES (2, 2); ALTER TABLE a ADD COLUMN w INT; INSERT INTO a VALUES (3, 3, 3);
            CREATE INDEX a_v ON a (v); INSERT INTO b VALUES (2, 2)");
    let (code, report) = sync_code(&sb);
    assert_eq!(code, 3, "{report}");
    // The lake took the change with the binlog: every row, w where the source had it.
    let a = table_of(&report, "shop", "a");
    assert_eq!(a["extract"]["rows"], 2, "{report}");
    assert!(
        a["extract"]["schema_changes"][0]
            .as_str()
            .unwrap()
            .contains("new column w"),
        "{report}"
    );
    // (The JSON rendering leaves NULLs out.)
    let lake = sb.query_lake("SELECT id, w FROM shop.a ORDER BY id");
    assert_eq!(
        lake,
        vec![
            serde_json::json!({"id": 1}),
            serde_json::json!({"id": 2}),
            serde_json::json!({"id": 3, "w": 3}),
        ]
    );
    // The warehouse table halted at the change (halt is the default), having loaded what came
    // before it; b went on.
    let halted = a["halted"].as_str().unwrap();
    assert!(
        halted.contains("new column w") && halted.contains("sluice schema accept shop.a"),
        "{halted}"
    );
    assert!(table_of(&report, "shop", "b")["halted"].is_null());
    assert_eq!(
        sb.duck("SELECT CAST(id AS VARCHAR) FROM shop.a ORDER BY id"),
        vec![vec![common::s("1")], vec![common::s("2")]]
    );
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM shop.b"),
        vec![vec![common::s("2")]]
    );
    // accept: the column is added and the backlog loads once; capture never stopped.
    sb.ok(&["schema", "accept", "shop.a"]);
    db.sql("INSERT INTO a VALUES (4, 4, 4)");
    let (code, report) = sync_code(&sb);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, v::VARCHAR, w::VARCHAR FROM shop.a ORDER BY id"),
        db.rows("SELECT id, v, w FROM a ORDER BY id")
    );
}

#[test]
fn cdc_schema_changes_of_every_kind_evolve_or_freeze_the_warehouse_by_policy() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, qty INT, code INT, old INT);
         INSERT INTO t VALUES (1, 10, 7, 100)",
    );
    let sb = Sandbox::new();
    let mut cfg = String::new();
    for (name, policy) in [("e", "evolve"), ("f", "freeze")] {
        cfg += &format!(
            "[sources.{name}]\nkind = \"mysql\"\nurl = \"{}\"\nmode = \"cdc\"\nschema_changes = \"{policy}\"\n\n",
            db.url()
        );
    }
    sb.config(&cfg);
    sb.sync_json();
    // One change of each kind, each followed by a row that uses it, synced in turn.
    let steps = [
        (
            "ALTER TABLE t ADD COLUMN coupon VARCHAR(10)",
            "INSERT INTO t VALUES (2, 20, 8, 200, 'SPRING')",
            "new column coupon",
        ),
        (
            "ALTER TABLE t DROP COLUMN old",
            "INSERT INTO t VALUES (3, 30, 9, 'X')",
            "dropped column old",
        ),
        (
            "ALTER TABLE t MODIFY qty BIGINT",
            "INSERT INTO t VALUES (4, 5000000000, 10, NULL)",
            "widened type qty",
        ),
        (
            "ALTER TABLE t MODIFY code VARCHAR(10)",
            "INSERT INTO t VALUES (5, 50, 'X-1', NULL), (6, 60, '11', NULL)",
            "incompatible type code",
        ),
    ];
    for (ddl, insert, change) in steps {
        db.sql(&format!("{ddl}; {insert}"));
        let (code, report) = sync_code(&sb);
        assert_eq!(code, 0, "{ddl}: {report}");
        for src in ["e", "f"] {
            let changes = table_of(&report, src, "t")["extract"]["schema_changes"].to_string();
            assert!(changes.contains(change), "{ddl}: {changes}");
        }
    }
    // Lake: every value, the off-type ones in variant columns, the dropped column NULL after.
    let lake = sb.query_lake(
        "SELECT id, qty, qty__bigint, code, code__text, old, coupon FROM e.t ORDER BY id",
    );
    let n = serde_json::Value::Null;
    let row = |v: [serde_json::Value; 7]| {
        let keys = [
            "id",
            "qty",
            "qty__bigint",
            "code",
            "code__text",
            "old",
            "coupon",
        ];
        // The JSON rendering leaves NULLs out.
        serde_json::Value::Object(
            keys.iter()
                .map(|k| k.to_string())
                .zip(v)
                .filter(|(_, v)| !v.is_null())
                .collect(),
        )
    };
    use serde_json::json;
    assert_eq!(
        lake,
        vec![
            row([
                json!(1),
                json!(10),
                n.clone(),
                json!(7),
                n.clone(),
                json!(100),
                n.clone()
            ]),
            row([
                json!(2),
                json!(20),
                n.clone(),
                json!(8),
                n.clone(),
                json!(200),
                json!("SPRING")
            ]),
            row([
                json!(3),
                json!(30),
                n.clone(),
                json!(9),
                n.clone(),
                n.clone(),
                json!("X")
            ]),
            row([
                json!(4),
                n.clone(),
                json!(5000000000i64),
                json!(10),
                n.clone(),
                n.clone(),
                n.clone()
            ]),
            row([
                json!(5),
                json!(50),
                n.clone(),
                n.clone(),
                json!("X-1"),
                n.clone(),
                n.clone()
            ]),
            row([
                json!(6),
                json!(60),
                n.clone(),
                json!(11),
                n.clone(),
                n.clone(),
                n.clone()
            ]),
        ]
    );
    // evolve: the warehouse has every column and the same values as the lake.
    let s = common::s;
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, qty::VARCHAR, qty__bigint::VARCHAR, code::VARCHAR, code__text, old::VARCHAR, coupon FROM e.t ORDER BY id"),
        vec![
            vec![s("1"), s("10"), None, s("7"), None, s("100"), None],
            vec![s("2"), s("20"), None, s("8"), None, s("200"), s("SPRING")],
            vec![s("3"), s("30"), None, s("9"), None, None, s("X")],
            vec![s("4"), None, s("5000000000"), s("10"), None, None, None],
            vec![s("5"), s("50"), None, None, s("X-1"), None, None],
            vec![s("6"), s("60"), None, s("11"), None, None, None],
        ]
    );
    // freeze: the first shape, every row, and the left-out columns named in status.
    assert_eq!(
        sb.duck(
            "SELECT id::VARCHAR, qty::VARCHAR, code::VARCHAR, old::VARCHAR FROM f.t ORDER BY id"
        ),
        vec![
            vec![s("1"), s("10"), s("7"), s("100")],
            vec![s("2"), s("20"), s("8"), s("200")],
            vec![s("3"), s("30"), s("9"), None],
            vec![s("4"), None, s("10"), None],
            vec![s("5"), s("50"), None, None],
            vec![s("6"), s("60"), s("11"), None],
        ]
    );
    let status: serde_json::Value = serde_json::from_str(&sb.ok(&["--json", "status"])).unwrap();
    let f = status
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["source"] == "f")
        .unwrap();
    assert_eq!(
        f["targets"][0]["left_out"],
        serde_json::json!(["coupon", "qty__bigint", "code__text"]),
        "{status}"
    );
}

#[test]
fn refuses_a_statement_binlog_saying_what_to_change() {
    let db = MariaDb::start(&["--binlog-format=STATEMENT"]);
    db.sql("CREATE TABLE a (id INT PRIMARY KEY)");
    let sb = Sandbox::new();
    sb.config(&config(&db, "cdc", ""));
    let out = sb.run(&["sync"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("binlog_format is STATEMENT, CDC needs ROW"),
        "{text}"
    );
}

#[test]
fn incremental_reads_from_the_committed_cursor() {
    let db = MariaDb::start(&[]);
    db.sql("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(10), updated_at DATETIME(3));
            INSERT INTO items VALUES (1, 'a', '2026-01-01 10:00:00'), (2, 'b', '2026-01-01 11:00:00')");
    let sb = Sandbox::new();
    sb.config(&config(
        &db,
        "incremental",
        "cursor = \"updated_at\"\nload = [\"merge\", \"append\"]",
    ));
    let out = sb.sync_json();
    assert_eq!(out["tables"][0]["extract"]["rows"], 2, "{out}");
    // One row updated at the same instant as the last cursor value, one later, one untouched.
    db.sql(
        "INSERT INTO items VALUES (3, 'c', '2026-01-01 11:00:00');
            UPDATE items SET name = 'A', updated_at = '2026-01-01 12:00:00.5' WHERE id = 1",
    );
    let out = sb.sync_json();
    // The bound is inclusive, so row 3 (at the last value, but new) is read; row 2 is read
    // again but is in the lake already: it does not land twice.
    assert_eq!(out["tables"][0]["extract"]["rows"], 2, "{out}");
    let got = sb.duck("SELECT CAST(id AS VARCHAR), name FROM shop.items ORDER BY id");
    assert_eq!(got, db.rows("SELECT id, name FROM items ORDER BY id"));
    let out = sb.sync_json();
    assert_eq!(
        out["tables"][0]["extract"]["rows"], 0,
        "nothing changed, nothing lands: {out}"
    );
    // Every version landed once: the append table holds each (id, name) once.
    assert_eq!(
        sb.duck("SELECT CAST(id AS VARCHAR), name FROM shop.items_append ORDER BY _sluice_seq"),
        vec![
            vec![s("1"), s("a")],
            vec![s("2"), s("b")],
            vec![s("3"), s("c")],
            vec![s("1"), s("A")],
        ]
    );
}

/// A table without a key read incrementally (append, its default) and rows without a cursor
/// value: each row version lands once, identical rows counted, however often syncs run.
#[test]
fn incremental_keyless_rows_and_null_cursors_land_once() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE ev (kind VARCHAR(10), seen DATETIME);
         INSERT INTO ev VALUES ('a', '2026-01-01 10:00:00'), ('a', '2026-01-01 10:00:00'), ('b', NULL)",
    );
    let sb = Sandbox::new();
    sb.config(&config(&db, "incremental", "cursor = \"seen\""));
    let landed = |sb: &Sandbox| sb.sync_json()["tables"][0]["extract"]["rows"].clone();
    assert_eq!(landed(&sb), 3);
    assert_eq!(landed(&sb), 0, "the same rows again: nothing new");
    // A third identical row at the boundary, a new NULL-cursor row, a changed NULL-cursor row.
    db.sql(
        "INSERT INTO ev VALUES ('a', '2026-01-01 10:00:00'), ('c', NULL);
         UPDATE ev SET kind = 'b2' WHERE kind = 'b'",
    );
    assert_eq!(landed(&sb), 3);
    assert_eq!(landed(&sb), 0);
    let rows = sb.duck("SELECT kind, CAST(seen AS VARCHAR) FROM shop.ev ORDER BY kind, seen");
    assert_eq!(
        rows,
        vec![
            vec![s("a"), s("2026-01-01 10:00:00")],
            vec![s("a"), s("2026-01-01 10:00:00")],
            vec![s("a"), s("2026-01-01 10:00:00")],
            vec![s("b"), None],
            vec![s("b2"), None],
            vec![s("c"), None],
        ],
        "each version once (append keeps b and its update b2)"
    );
}

/// A small deterministic generator, seeded from the clock and printed, so a failing crash
/// schedule can be replayed with SLUICE_CRASH_SEED.
struct Lcg(u64);

impl Lcg {
    fn seeded() -> Lcg {
        let seed = std::env::var("SLUICE_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("crash schedule seed: SLUICE_CRASH_SEED={seed}");
        Lcg(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Starts `sluice sync` and kills it (SIGKILL) after a random delay; true if it was still
/// running when killed.
fn sync_killed_after(sb: &Sandbox, rng: &mut Lcg, max_ms: u64) -> bool {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--config")
        .arg(sb.path("sluice.toml"))
        .arg("sync")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50 + rng.below(max_ms)));
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    running
}

/// Kills `sync` runs at random points until `want` kills landed while sluice was running,
/// halving the longest delay after each run that finished first (a fast machine finishes the
/// work sooner); at most `3 * want` runs. Returns the kills that landed.
fn kill_runs(sb: &Sandbox, rng: &mut Lcg, want: u32, mut max_ms: u64) -> u32 {
    let mut landed = 0;
    for _ in 0..want * 3 {
        if sync_killed_after(sb, rng, max_ms) {
            landed += 1;
            if landed == want {
                break;
            }
        } else {
            max_ms = (max_ms / 2).max(50);
        }
    }
    landed
}

fn assert_big_equal(db: &MariaDb, sb: &Sandbox) {
    let want = db.rows("SELECT id, v, n FROM big ORDER BY id");
    let got =
        sb.duck("SELECT CAST(id AS VARCHAR), v, CAST(n AS VARCHAR) FROM shop.big ORDER BY id");
    assert_eq!(got.len(), want.len(), "row count");
    assert!(got == want, "warehouse differs from MariaDB");
}

#[test]
fn kill_9_during_snapshot_and_cdc_loses_and_doubles_nothing() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(40), n BIGINT);
            INSERT INTO big SELECT seq, CONCAT('row-', seq), seq * 7 FROM seq_1_to_1000000",
    );
    let sb = Sandbox::new();
    sb.config(&config(
        &db,
        "cdc",
        "chunk_rows = 10000\nbatch_max_rows = 300\nload = [\"merge\", \"append\", \"history\"]",
    ));
    let mut rng = Lcg::seeded();
    let mut killed_running = 0;
    killed_running += kill_runs(&sb, &mut rng, 4, 2500);
    // Changes during the interrupted snapshot: CDC picks them up from the recorded position.
    db.sql("UPDATE big SET n = -n WHERE id % 1000 = 0; DELETE FROM big WHERE id % 999 = 0");
    killed_running += kill_runs(&sb, &mut rng, 2, 2500);
    sb.sync_json();
    assert_big_equal(&db, &sb);

    // Many small transactions, then crashes while they stream.
    let mut sql = String::new();
    for i in 0..3000 {
        sql += &format!(
            "START TRANSACTION; INSERT INTO big VALUES ({id}, 'new', {i}); UPDATE big SET v = 'upd-{i}' WHERE id = {u}; DELETE FROM big WHERE id = {d}; UPDATE big SET id = {k} WHERE id = {m}; COMMIT;\n",
            id = 2_000_000 + i,
            u = 1 + i * 13,
            d = 2 + i * 17,
            k = 3_000_000 + i,
            m = 3 + i * 19,
        );
    }
    db.sql(&sql);
    killed_running += kill_runs(&sb, &mut rng, 4, 1000);
    sb.sync_json();
    assert_big_equal(&db, &sb);
    assert!(
        killed_running >= 4,
        "too few kills landed while sluice ran ({killed_running})"
    );
    // Killed snapshots resumed their run rather than starting over: no key was read twice.
    let reread = sb.query_lake(
        "SELECT count(*) AS n FROM (SELECT id FROM shop.big__changes WHERE _sluice_op = 'r' GROUP BY id HAVING count(*) > 1)",
    );
    assert_eq!(reread[0]["n"], 0);
    // The append table holds each change of the lake exactly once...
    let lake = sb.query_lake(
        "SELECT count(*) AS n, count(DISTINCT _sluice_seq) AS d, sum(_sluice_seq) AS s, sum(CASE WHEN _sluice_op = 'd' THEN 0 ELSE 1 END) AS live FROM shop.big__changes",
    );
    let appended = sb.duck(
        "SELECT count(*)::VARCHAR, count(DISTINCT _sluice_seq)::VARCHAR, sum(_sluice_seq)::VARCHAR FROM shop.big_append",
    );
    let want = |k: &str| Some(lake[0][k].to_string());
    assert_eq!(
        appended[0],
        vec![want("n"), want("d"), want("s")],
        "append = change log"
    );
    // ...the history table one version per change that is not a delete, and its current
    // versions are exactly the source's rows.
    let versions = sb.duck("SELECT count(*)::VARCHAR FROM shop.big_history");
    assert_eq!(versions[0][0], want("live"), "one version per change");
    let current = sb.duck(
        "SELECT CAST(id AS VARCHAR), v, CAST(n AS VARCHAR) FROM shop.big_history WHERE _sluice_is_current ORDER BY id",
    );
    assert!(
        current == db.rows("SELECT id, v, n FROM big ORDER BY id"),
        "history's current versions differ from MariaDB"
    );
    // And the lake has no change twice: no (seq) repeats, no key read twice in one snapshot run.
    let dup = sb.query_lake("SELECT count(*) AS n FROM (SELECT _sluice_seq FROM shop.big__changes GROUP BY 1 HAVING count(*) > 1)");
    assert_eq!(dup[0]["n"], 0);
}

#[test]
fn tls_verifies_the_server_certificate() {
    let certs = tempfile::tempdir().unwrap();
    common::make_certs(certs.path());
    let p = |f: &str| certs.path().join(f).display().to_string();
    let db = MariaDb::start(&[
        &format!("--ssl-ca={}", p("ca.pem")),
        &format!("--ssl-cert={}", p("server.pem")),
        &format!("--ssl-key={}", p("server.key")),
    ]);
    db.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t VALUES (1, 'secret')",
    );
    let accepted = || {
        db.rows("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'")[0][1]
            .clone()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let before = accepted();
    let sb = Sandbox::new();
    sb.config(&config(
        &db,
        "cdc",
        &format!(
            "ssl_mode = \"verify_identity\"\nssl_ca = \"{}\"",
            p("ca.pem")
        ),
    ));
    sb.sync_json();
    assert_eq!(
        sb.duck("SELECT v FROM shop.t"),
        vec![vec![common::s("secret")]]
    );
    assert!(accepted() > before, "sluice's connections were not TLS");
    // A certificate from another CA is refused, naming the problem.
    let sb = Sandbox::new();
    sb.config(&config(
        &db,
        "cdc",
        &format!(
            "ssl_mode = \"verify_ca\"\nssl_ca = \"{}\"",
            p("other-ca.pem")
        ),
    ));
    let out = sb.run(&["sync"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("tls"),
        "{text}"
    );
}

/// `query = "SELECT …"` tables: a join read by snapshot (a row that leaves the result lands as
/// a delete) and a filter read incrementally by its cursor, each equal value by value to the
/// query run in MariaDB, with the types the query's columns have there.
#[test]
fn query_defined_tables_read_by_snapshot_and_incremental() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(20));
         CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, total DECIMAL(10,2),
           status ENUM('Open','Paid'), updated_at DATETIME(3));
         INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace');
         INSERT INTO orders VALUES (1, 1, 50.00, 'Paid', '2026-01-01 10:00:00'),
           (2, 2, 150.25, 'Open', '2026-01-01 11:00:00'),
           (3, 1, 300.00, 'Paid', '2026-01-01 12:00:00')",
    );
    let paid = "SELECT o.id, c.name AS customer, o.total, o.status, o.total * 2 AS doubled \
                FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status = 'Paid'";
    let big = "SELECT id, total, updated_at FROM orders WHERE total >= 100;";
    let sb = Sandbox::new();
    sb.config(&format!(
        "[sources.shop]\nkind = \"mysql\"\nurl = \"{url}\"\n\
         [sources.shop.tables.customers]\n\
         [sources.shop.tables.paid]\nquery = \"{paid}\"\nprimary_key = [\"id\"]\n\
         [sources.inc]\nkind = \"mysql\"\nurl = \"{url}\"\nmode = \"incremental\"\ncursor = \"updated_at\"\n\
         [sources.inc.tables.big]\nquery = \"{big}\"\nprimary_key = [\"id\"]\n",
        url = db.url()
    ));
    let check = sb.ok(&["check"]);
    assert!(check.contains("1 defined by a query"), "{check}");
    let same = |sb: &Sandbox| {
        assert_eq!(
            sb.duck(
                "SELECT CAST(id AS VARCHAR), customer, CAST(total AS VARCHAR), status, \
                 CAST(doubled AS VARCHAR) FROM shop.paid ORDER BY id"
            ),
            db.rows(&format!(
                "SELECT id, customer, total, status, doubled FROM ({paid}) q ORDER BY id"
            )),
            "shop.paid"
        );
        assert_eq!(
            sb.duck(
                "SELECT CAST(id AS VARCHAR), CAST(total AS VARCHAR), \
                 strftime(updated_at, '%Y-%m-%d %H:%M:%S.%f') FROM inc.big ORDER BY id"
            ),
            db.rows(
                "SELECT id, total, DATE_FORMAT(updated_at, '%Y-%m-%d %H:%i:%s.%f') \
                 FROM orders WHERE total >= 100 ORDER BY id"
            ),
            "inc.big"
        );
    };
    let out = sb.sync_json();
    assert_eq!(
        table_of(&out, "shop", "paid")["extract"]["rows"],
        2,
        "{out}"
    );
    assert_eq!(table_of(&out, "inc", "big")["extract"]["rows"], 2, "{out}");
    same(&sb);
    // The query's own column types, not text: a DECIMAL stays one, the computed column too.
    assert_eq!(
        sb.duck("SELECT typeof(total), typeof(doubled), typeof(status) FROM shop.paid LIMIT 1"),
        vec![vec![s("DECIMAL(10,2)"), s("DECIMAL(11,2)"), s("VARCHAR")]]
    );

    // An order becomes paid (and later), one stops being paid, a customer is renamed, and
    // two orders arrive: one paid under 100, one open over it.
    db.sql(
        "UPDATE orders SET status = 'Paid', updated_at = '2026-01-02 09:00:00' WHERE id = 2;
         UPDATE orders SET status = 'Open' WHERE id = 1;
         UPDATE customers SET name = 'Ada L' WHERE id = 1;
         INSERT INTO orders VALUES (4, 2, 99.99, 'Paid', '2026-01-02 10:00:00'),
           (5, 2, 500.00, 'Open', '2026-01-02 11:00:00')",
    );
    let out = sb.sync_json();
    let paid_report = table_of(&out, "shop", "paid");
    assert_eq!(paid_report["extract"]["deleted"], 1, "order 1 left: {out}");
    // The cursor reads rows at or past 12:00: order 3 again (already in the lake), 2 and 5.
    assert_eq!(table_of(&out, "inc", "big")["extract"]["rows"], 2, "{out}");
    same(&sb);

    // A cursor that is not among the query's columns is refused, naming the table.
    sb.config(&format!(
        "[sources.inc]\nkind = \"mysql\"\nurl = \"{url}\"\nmode = \"incremental\"\ncursor = \"updated_at\"\n\
         [sources.inc.tables.big]\nquery = \"SELECT id, total FROM orders\"\nprimary_key = [\"id\"]\n",
        url = db.url()
    ));
    let (code, out) = sb.sync_code(&[]);
    assert_ne!(code, 0, "{out}");
    let error = table_of(&out, "inc", "big")["error"].to_string();
    assert!(
        error.contains("inc.big") && error.contains("no cursor column `updated_at`"),
        "{out}"
    );
}
