//! The PostgreSQL warehouse end to end through the `sluice` binary: files → lake → a private
//! PostgreSQL that accepts TCP only over TLS, verified against a test CA, with the password
//! from the environment; merge, history and append tables compared with psql; a crash inside
//! the warehouse transaction loses and doubles nothing; a wrong CA is refused.

mod common;

use common::postgres::{PgServer, PASSWORD};
use common::{s, Sandbox};

/// The PostgreSQL warehouse over verified TLS, the password from the environment.
fn warehouse(pg: &PgServer, ca: &str) -> String {
    pg.warehouse_section(
        "pg",
        r#"{ env = "PGWH_PASSWORD" }"#,
        &format!("ssl_mode = \"verify-full\"\nssl_ca = \"{ca}\""),
    )
}

fn config(pg: &PgServer, ca: &str) -> String {
    warehouse(pg, ca)
        + r#"
[sources.s]
kind = "files"
url = "drops/{date}/"
table = "t"
columns = ["id bigint", "v text"]
load = ["merge", "history", "append"]
[sources.s.tables.t]
primary_key = ["id"]
"#
}

fn day(sb: &Sandbox, date: &str, rows: &[(i64, &str)]) {
    let mut text = String::from("id,v\n");
    for (id, v) in rows {
        text += &format!("{id},{v}\n");
    }
    sb.write(&format!("drops/{date}/part.csv"), text);
}

/// `sluice sync` with the warehouse password in the environment (plus `env`).
fn sync(sb: &Sandbox, env: &[(&str, &str)]) -> std::process::Output {
    let mut env = env.to_vec();
    env.push(("PGWH_PASSWORD", PASSWORD));
    sb.run(&["--json", "sync"], &env)
}

/// A sync that must succeed: its JSON report.
fn ok(sb: &Sandbox) -> serde_json::Value {
    let out = sb.ok_env(&["--json", "sync"], &[("PGWH_PASSWORD", PASSWORD)]);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn files_into_postgres_over_verified_tls_exactly_once() {
    let certs = tempfile::tempdir().unwrap();
    common::make_certs(certs.path());
    let ca = certs.path().join("ca.pem").display().to_string();
    let pg = PgServer::start(Some(certs.path()));
    let sb = Sandbox::new();
    sb.config(&config(&pg, &ca));

    day(&sb, "20240101", &[(1, "a"), (2, "b")]);
    ok(&sb);
    day(&sb, "20240102", &[(2, "b2"), (3, "c's")]);
    let r = ok(&sb);
    assert_eq!(r["tables"][0]["loads"][0]["changes"], 2, "{r}");

    let merged = || pg.rows("SELECT id, v FROM s.t ORDER BY id");
    assert_eq!(
        merged(),
        vec![
            vec![s("1"), s("a")],
            vec![s("2"), s("b2")],
            vec![s("3"), s("c's")]
        ]
    );
    // History: key 2's first version ends where its second begins; one current version per key.
    let history = pg.rows(
        "SELECT id, v, _sluice_is_current, _sluice_valid_to IS NOT DISTINCT FROM lead(_sluice_valid_from) OVER (PARTITION BY id ORDER BY _sluice_seq)
           FROM s.t_history ORDER BY id, _sluice_seq",
    );
    assert_eq!(
        history,
        vec![
            vec![s("1"), s("a"), s("t"), s("t")],
            vec![s("2"), s("b"), s("f"), s("t")],
            vec![s("2"), s("b2"), s("t"), s("t")],
            vec![s("3"), s("c's"), s("t"), s("t")],
        ]
    );
    let appended = || pg.rows("SELECT id, v, _sluice_seq FROM s.t_append ORDER BY _sluice_seq");
    assert_eq!(appended().len(), 4);

    // A crash inside the warehouse transaction: nothing of day 3 is visible, then the rerun
    // applies it once.
    day(&sb, "20240103", &[(1, "a3")]);
    let out = sync(&sb, &[("SLUICE_FAILPOINT", "before-warehouse-commit")]);
    assert!(!out.status.success(), "the failpoint must kill the run");
    assert_eq!(merged()[0], vec![s("1"), s("a")]);
    assert_eq!(appended().len(), 4);
    ok(&sb);
    assert_eq!(merged()[0], vec![s("1"), s("a3")]);
    let all = appended();
    assert_eq!(all.len(), 5);
    assert_eq!(all[4], vec![s("1"), s("a3"), s("5")]);
    let ledger =
        pg.rows("SELECT target_table, lake_seq, changes_loaded FROM _sluice.ledger ORDER BY 1");
    assert_eq!(
        ledger,
        vec![
            vec![s("t"), s("5"), s("5")],
            vec![s("t_append"), s("5"), s("5")],
            vec![s("t_history"), s("5"), s("5")],
        ]
    );

    // Queries run in the warehouse.
    let out = sb.run(
        &[
            "--json",
            "query",
            "--warehouse",
            "pg",
            "SELECT count(*) AS n FROM s.t_history",
        ],
        &[("PGWH_PASSWORD", PASSWORD)],
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["n"], "5", "{rows}");

    // A server certificate from another CA is refused, naming the problem.
    let other = Sandbox::new();
    other.config(&config(
        &pg,
        &certs.path().join("other-ca.pem").display().to_string(),
    ));
    day(&other, "20240101", &[(1, "a")]);
    let out = sync(&other, &[]);
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase()
        + &String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("certificate"), "{text}");

    // JSON documents: objects and arrays land as JSONB (queryable with ->>), scalars typed.
    let docs = Sandbox::new();
    docs.config(
        &(warehouse(&pg, &ca)
            + r#"
[sources.j]
kind = "files"
url = "docs/"
[sources.j.tables.j]
primary_key = ["id"]
"#),
    );
    docs.write(
        "docs/e.jsonl",
        "{\"id\": 1, \"meta\": {\"k\": \"x\", \"n\": [1, 2]}, \"tags\": [\"a\"]}\n\
         {\"id\": 2, \"meta\": null, \"tags\": []}\n",
    );
    ok(&docs);
    assert_eq!(
        pg.rows(
            "SELECT id, meta->>'k', jsonb_array_length(meta->'n'), jsonb_array_length(tags), pg_typeof(meta)::text
               FROM j.j ORDER BY id"
        ),
        vec![
            vec![s("1"), s("x"), s("2"), s("1"), s("jsonb")],
            vec![s("2"), None, None, s("0"), s("jsonb")],
        ]
    );
}

/// A PostgreSQL warehouse over plain TCP (for tests about loads, not transport).
fn plain(pg: &PgServer) -> String {
    format!(
        "[warehouses.pg]\nkind = \"postgres\"\nurl = \"{}\"\npassword = {{ env = \"PGWH_PASSWORD\" }}\nssl_mode = \"disable\"\n",
        pg.url()
    )
}

/// Two `sluice sync` at once (an overlapping cron run) on one lake and one PostgreSQL
/// warehouse: the lake takes each file once (the second writer of a commit is refused by the
/// Delta log), and each warehouse load applies only from where the ledger was when it was
/// planned. Append and history tables then hold each change exactly once.
#[test]
fn two_syncs_at_once_double_nothing() {
    let pg = PgServer::start(None);
    let sb = Sandbox::new();
    sb.config(
        &(plain(&pg)
            + r#"
[sources.s]
kind = "files"
url = "drops/"
table = "t"
columns = ["id bigint", "v text"]
load = ["merge", "append", "history"]
[sources.s.tables.t]
primary_key = ["id"]
"#),
    );
    let mut next = 0;
    for round in 0..3 {
        for f in 0..8 {
            let mut text = String::from("id,v\n");
            for _ in 0..2000 {
                // Keys repeat across files: merge takes the last, history keeps each.
                text += &format!("{},r{round}-f{f}\n", next % 9000);
                next += 1;
            }
            sb.write(&format!("drops/r{round}-{f}.csv"), text);
        }
        let spawn = || {
            std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
                .arg("--config")
                .arg(sb.path("sluice.toml"))
                .args(["--json", "sync"])
                .env("PGWH_PASSWORD", PASSWORD)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        for out in [&a, &b] {
            // Either finished, or was refused: never a third outcome.
            assert!(matches!(out.status.code(), Some(0) | Some(1)), "{out:?}");
        }
    }
    // What a refused run left over, loaded now.
    ok(&sb);
    let lake = sb.query_lake(
        "SELECT count(*) AS n, count(DISTINCT _sluice_seq) AS d, sum(_sluice_seq) AS s FROM s.t__changes",
    );
    assert_eq!(
        lake[0]["n"],
        3 * 8 * 2000,
        "each file once in the lake: {lake:?}"
    );
    assert_eq!(lake[0]["n"], lake[0]["d"]);
    let n = |v: &serde_json::Value| Some(v.to_string());
    assert_eq!(
        pg.rows("SELECT count(*), count(DISTINCT _sluice_seq), sum(_sluice_seq) FROM s.t_append"),
        vec![vec![n(&lake[0]["n"]), n(&lake[0]["d"]), n(&lake[0]["s"])]]
    );
    assert_eq!(
        pg.rows("SELECT count(*) FROM s.t_history"),
        vec![vec![n(&lake[0]["n"])]]
    );
    // Merge: each key's last value, as the lake's current state says.
    let current = sb.query_lake("SELECT id, v FROM s.t ORDER BY id");
    let merged = pg.rows("SELECT id, v FROM s.t ORDER BY id");
    assert_eq!(merged.len(), current.len());
    for (m, c) in merged.iter().zip(&current) {
        assert_eq!(m[0].as_deref(), Some(c["id"].to_string().as_str()));
        assert_eq!(m[1].as_deref(), c["v"].as_str());
    }
}

/// Rows with a NULL key never reach a PostgreSQL merge table (which would keep them as
/// duplicates). Table names of 63 bytes and more: the key index is named apart from the table
/// (it once took the table's own name), and two names equal in their first 63 bytes, of two
/// sources mapped to one schema, load into tables of their own.
#[test]
fn null_keys_and_long_names_on_postgres() {
    let pg = PgServer::start(None);
    let sb = Sandbox::new();
    let long = "x".repeat(70);
    let src = |name: &str, table: &str, folder: &str| {
        format!(
            "[sources.{name}]\nkind = \"files\"\nurl = \"{folder}/\"\ntable = \"{table}\"\n[sources.{name}.tables.{table}]\nprimary_key = [\"id\"]\n"
        )
    };
    sb.config(&format!(
        "{}{}{}",
        plain(&pg),
        src("\"s-1\"", &format!("{long}_one"), "a"),
        src("s_1", &format!("{long}_two"), "b")
    ));
    sb.write("a/x.csv", "id,v\n1,one\n,none\n1,one-again\n");
    sb.write("b/x.csv", "id,v\n1,two\n2,two\n");
    let r = ok(&sb);
    let rejects: Vec<i64> = r["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["extract"]["rejects"].as_i64().unwrap())
        .collect();
    assert_eq!(rejects.iter().sum::<i64>(), 1, "{r}");
    let ledger = pg.rows(
        "SELECT source, target_table FROM _sluice.ledger WHERE target_schema = 's_1' ORDER BY source",
    );
    assert_eq!(ledger.len(), 2, "{ledger:?}");
    assert_ne!(ledger[0][1], ledger[1][1], "one table each: {ledger:?}");
    for row in &ledger {
        let table = row[1].as_deref().unwrap();
        assert!(table.len() <= 63, "{table}");
        let want = match row[0].as_deref() {
            Some("s-1") => vec![vec![s("1"), s("one-again")]],
            _ => vec![vec![s("1"), s("two")], vec![s("2"), s("two")]],
        };
        assert_eq!(
            pg.rows(&format!("SELECT id, v FROM s_1.\"{table}\" ORDER BY id")),
            want,
            "{row:?}"
        );
        // Its key index is named apart from every table.
        let index = pg.rows(&format!(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 's_1.\"{table}\"'::regclass"
        ));
        assert_eq!(index.len(), 1, "{index:?}");
        assert!(
            index[0][0].as_deref().unwrap().contains("_sluice_key_"),
            "{index:?}"
        );
    }
}

/// Values PostgreSQL cannot store (a NUL character in text, a `\u0000` escape in JSON) no
/// longer stall the load on every retry: they load with U+2400 (␀) standing in, the lake
/// keeps them exact, and the other values are untouched (an escaped backslash before
/// `u0000` is text, not a NUL).
#[test]
fn nul_characters_load_into_postgres_with_a_stand_in() {
    let pg = PgServer::start(None);
    let sb = Sandbox::new();
    sb.config(
        &(plain(&pg)
            + "[sources.j]\nkind = \"files\"\nurl = \"drops/\"\ntable = \"t\"\nformat = \"json\"\n\
               [sources.j.tables.t]\nprimary_key = [\"id\"]\n"),
    );
    sb.write(
        "drops/a.json",
        concat!(
            r#"{"id": 1, "t": "a\u0000b", "doc": {"k": "x\u0000y", "lit": "\\u0000"}}"#,
            "\n",
            r#"{"id": 2, "t": "plain", "doc": {"k": "z"}}"#,
            "\n"
        ),
    );
    let r = ok(&sb);
    assert!(r["tables"][0]["error"].is_null(), "{r}");
    assert_eq!(
        pg.rows("SELECT id, t, doc->>'k', doc->>'lit' FROM j.t ORDER BY id"),
        vec![
            vec![s("1"), s("a\u{2400}b"), s("x\u{2400}y"), s("\\u0000")],
            vec![s("2"), s("plain"), s("z"), None]
        ]
    );
    // The lake holds the NUL itself.
    let lake = sb.query_lake("SELECT t FROM j.t WHERE id = 1");
    assert_eq!(lake[0]["t"], "a\u{0}b");
}
