//! One `sluice query` over lake tables and warehouse tables (`WAREHOUSE.schema.table`, DuckDB
//! and a private PostgreSQL): the join's values, the filters and columns sent to each
//! warehouse (read from the log), and the filters kept back because the warehouse would
//! judge them otherwise (text ranges, times with a zone) still answered right.

mod common;

use common::postgres::{PgServer, PASSWORD};
use common::Sandbox;

fn config(pg: &PgServer) -> String {
    format!(
        r#"
[warehouses.local]
kind = "duckdb"

[warehouses.pg]
kind = "postgres"
url = "{}"
password = {{ env = "PGWH_PASSWORD" }}
ssl_mode = "disable"

[sources.s]
kind = "files"
url = "drops/"
table = "orders"
columns = ["id bigint", "customer bigint", "amount decimal(10,2)"]
warehouse = "local"
[sources.s.tables.orders]
primary_key = ["id"]
"#,
        pg.url()
    )
}

/// Rows of `sluice --log info query`, each value as text, and its log.
fn query(sb: &Sandbox, sql: &str, columns: &[&str]) -> (Vec<Vec<Option<String>>>, String) {
    let out = sb.run(
        &["--log", "info", "--json", "query", sql],
        &[("PGWH_PASSWORD", PASSWORD)],
    );
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{sql}\n{log}");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| {
                    r.get(*c).and_then(|v| match v {
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Null => None,
                        other => Some(other.to_string()),
                    })
                })
                .collect()
        })
        .collect();
    (rows, log)
}

/// The SELECTs sent to warehouses, from the log.
fn sent(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("reading warehouse table"))
        .map(String::from)
        .collect()
}

fn t(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[test]
fn lake_tables_join_duckdb_and_postgres_tables_with_filters_pushed_down() {
    let pg = PgServer::start(None);
    pg.sql(
        "wh",
        "CREATE SCHEMA crm;
         CREATE TABLE crm.customers (id bigint PRIMARY KEY, name text, tier text, since date,
           score numeric(6,2), active boolean, seen timestamptz);
         INSERT INTO crm.customers VALUES
           (1, 'Ann', 'gold', '2021-03-04', 12.50, true, '2024-01-01 10:00:00+00'),
           (2, 'bob', 'gold', '2019-12-31', 3.00, false, '2024-06-01 23:30:00+02'),
           (3, 'Cy', 'silver', '2022-01-01', NULL, NULL, NULL),
           (4, 'Dee', 'gold', '2023-05-06', 7.25, true, '2025-01-01 00:00:00+00');",
    );
    let sb = Sandbox::new();
    sb.config(&config(&pg));
    sb.write(
        "drops/a.csv",
        "id,customer,amount\n10,1,5.50\n11,2,6.00\n12,3,7.00\n13,4,8.25\n14,1,1.00\n15,9,2.00\n",
    );
    let out = sb.run(&["--json", "sync"], &[("PGWH_PASSWORD", PASSWORD)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    duckdb::Connection::open(sb.path("warehouse.duckdb"))
        .unwrap()
        .execute_batch(
            "CREATE SCHEMA ref; CREATE TABLE ref.tiers (tier VARCHAR, discount DECIMAL(4,2));
             INSERT INTO ref.tiers VALUES ('gold', 0.10), ('silver', 0.05);",
        )
        .unwrap();

    let columns = [
        "id", "amount", "name", "score", "since", "active", "discount",
    ];
    let (rows, log) = query(
        &sb,
        "SELECT o.id, CAST(o.amount AS VARCHAR) AS amount, c.name, CAST(c.score AS VARCHAR) AS score,
                CAST(c.since AS VARCHAR) AS since, c.active, CAST(r.discount AS VARCHAR) AS discount
         FROM s.orders o
         JOIN pg.crm.customers c ON c.id = o.customer
         LEFT JOIN local.ref.tiers r ON r.tier = c.tier
         WHERE c.tier = 'gold' AND (c.since >= DATE '2020-01-01' OR c.id IN (7, 8)) AND r.tier <> 'bronze'
         ORDER BY o.id",
        &columns,
    );
    assert_eq!(
        rows,
        vec![
            vec![
                t("10"),
                t("5.50"),
                t("Ann"),
                t("12.50"),
                t("2021-03-04"),
                t("true"),
                t("0.10")
            ],
            vec![
                t("13"),
                t("8.25"),
                t("Dee"),
                t("7.25"),
                t("2023-05-06"),
                t("true"),
                t("0.10")
            ],
            vec![
                t("14"),
                t("1.00"),
                t("Ann"),
                t("12.50"),
                t("2021-03-04"),
                t("true"),
                t("0.10")
            ],
        ]
    );
    let first = sent(&log);
    let to_pg = first
        .iter()
        .find(|l| l.contains("pg.crm.customers"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        to_pg.contains("\"tier\" = 'gold'") && to_pg.contains("\"since\" >="),
        "the filters were not sent to PostgreSQL: {to_pg}"
    );
    assert!(
        !to_pg.contains("seen"),
        "an unused column was read: {to_pg}"
    );
    let to_duck = first
        .iter()
        .find(|l| l.contains("local.ref.tiers"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        to_duck.contains("WHERE") && to_duck.contains("\"tier\"") && to_duck.contains("'bronze'"),
        "{to_duck}"
    );

    // Kept back, answered by DataFusion: a text range (collations differ) and a time with a
    // zone (the warehouse would read the constant in its own zone).
    let (rows, log) = query(
        &sb,
        "SELECT id, CAST(seen AS VARCHAR) AS seen FROM pg.crm.customers
         WHERE name < 'a' AND seen > TIMESTAMP '2024-06-01 21:00:00' ORDER BY id",
        &["id", "seen"],
    );
    assert_eq!(rows, vec![vec![t("4"), t("2025-01-01T00:00:00Z")]]);
    let sent_now = sent(&log);
    assert!(
        sent_now.iter().all(|l| !l.contains("WHERE")),
        "{sent_now:?}"
    );

    // No column needed: the rows still come.
    let (rows, _) = query(&sb, "SELECT count(*) AS n FROM pg.crm.customers", &["n"]);
    assert_eq!(rows, vec![vec![t("4")]]);

    let out = sb.run(
        &["query", "SELECT * FROM pg.crm.nope"],
        &[("PGWH_PASSWORD", PASSWORD)],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warehouse `pg` has no table crm.nope"),
        "{err}"
    );
    let out = sb.run(
        &["query", "--as-of", "0", "SELECT * FROM pg.crm.customers"],
        &[("PGWH_PASSWORD", PASSWORD)],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has none"));
}
