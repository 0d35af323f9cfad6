//! The PostgreSQL warehouse end to end through the `sluice` binary: files → lake → a private
//! PostgreSQL that accepts TCP only over TLS, verified against a test CA, with the password
//! from the environment; merge, history and append tables compared with psql; a crash inside
//! the warehouse transaction loses and doubles nothing; a wrong CA is refused.

mod common;

use common::postgres::{PgServer, PASSWORD};
use common::{s, Sandbox};

/// The PostgreSQL warehouse over verified TLS, the password from the environment.
fn warehouse(pg: &PgServer, ca: &str) -> String {
    format!(
        r#"
[warehouses.pg]
kind = "postgres"
url = "{url}"
password = {{ env = "PGWH_PASSWORD" }}
ssl_mode = "verify-full"
ssl_ca = "{ca}"
"#,
        url = pg.url(),
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
