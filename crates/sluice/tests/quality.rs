//! Data-quality checks: every check kind under every action it takes, on a real drop of
//! orders with one known bad row per kind, loaded into DuckDB. Warn loads everything and
//! reports the failing rows; quarantine holds exactly them back (recorded with the check's
//! name); halt loads the changes before the first failing one, exits 3, leaves the other
//! tables loading, and `sluice checks accept` lets the rest through.

mod common;

use std::collections::BTreeSet;

use common::{s, table_of, Sandbox};

/// Orders in file order (so `_sluice_seq` order). Row by row, what is wrong with it:
const ORDERS: &str = "id,customer_id,status,amount,email,day
1,10,paid,100.50,a@x.com,2024-01-01
2,,paid,20.00,b@x.com,2024-01-02
3,11,lost,30.00,c@x.com,2024-01-03
4,12,paid,-5.00,d@x.com,2024-01-04
5,13,new,50.00,not-an-email,2024-01-05
6,14,new,60.00,a@x.com,2024-01-06
7,99,paid,70.00,g@x.com,2024-01-07
8,15,shipped,80.00,h@x.com,2023-12-31
9,16,paid,,i@x.com,2024-01-09
";
// 2: customer_id NULL; 3: status not accepted; 4: amount below 0; 5: email not an address;
// 1 and 6: same email; 7: customer 99 does not exist; 8: day before 2024; 9: amount NULL,
// which passes a range (SQL CHECK semantics).

const CUSTOMERS: &str = "id,name\n10,Ada\n11,Bo\n12,Cy\n13,Di\n14,Ed\n15,Flo\n16,Gus\n";

/// Each row kind with its check (without `action`) and the orders it fails.
const ROW_CHECKS: [(&str, &str, &[i64]); 7] = [
    ("not_null", "kind = \"not_null\"\ncolumn = \"customer_id\"", &[2]),
    (
        "accepted_values",
        "kind = \"accepted_values\"\ncolumn = \"status\"\nvalues = [\"new\", \"paid\", \"shipped\"]",
        &[3],
    ),
    (
        "range",
        "kind = \"range\"\ncolumn = \"amount\"\nmin = 0\nmax = 10000",
        &[4],
    ),
    (
        "pattern",
        "kind = \"pattern\"\ncolumn = \"email\"\nregex = \"^[^@ ]+@[^@ ]+$\"",
        &[5],
    ),
    ("unique", "kind = \"unique\"\ncolumn = \"email\"", &[1, 6]),
    (
        "reference",
        "kind = \"reference\"\ncolumn = \"customer_id\"\nto = \"crm.customers.id\"",
        &[7],
    ),
    (
        "sql",
        "kind = \"sql\"\nname = \"this_year\"\nexpr = \"day >= DATE '2024-01-01'\"",
        &[8],
    ),
];

fn project(check: &str, action: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.write("crm/customers.csv", CUSTOMERS);
    sb.write("drops/orders.csv", ORDERS);
    sb.config(&format!(
        r#"
[sources.crm]
kind = "files"
url = "crm/"
table = "customers"
columns = ["id bigint", "name text"]

[sources.shop]
kind = "files"
url = "drops/"
table = "orders"
columns = ["id bigint", "customer_id bigint", "status text", "amount decimal(10,2)", "email text", "day date"]

[sources.shop.tables.orders]
primary_key = ["id"]

[[sources.shop.tables.orders.checks]]
{check}
action = "{action}"
"#
    ));
    sb
}

/// The orders of `ORDERS` with these ids, as DuckDB renders them.
fn source_rows(ids: &BTreeSet<i64>) -> Vec<Vec<Option<String>>> {
    ORDERS
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(String::from).collect::<Vec<_>>())
        .filter(|f| ids.contains(&f[0].parse::<i64>().unwrap()))
        .map(|f| {
            f.into_iter()
                .map(|v| (!v.is_empty()).then_some(v))
                .collect()
        })
        .collect()
}

/// The warehouse's orders (none while the table does not exist: nothing loaded yet).
fn warehouse_rows(sb: &Sandbox) -> Vec<Vec<Option<String>>> {
    let exists = sb.duck(
        "SELECT count(*)::VARCHAR FROM information_schema.tables \
         WHERE table_schema = 'shop' AND table_name = 'orders'",
    );
    if exists[0][0].as_deref() == Some("0") {
        return Vec::new();
    }
    sb.duck(
        "SELECT id::VARCHAR, customer_id::VARCHAR, status, amount::VARCHAR, email, day::VARCHAR \
         FROM shop.orders ORDER BY id",
    )
}

fn all_ids() -> BTreeSet<i64> {
    (1..=9).collect()
}

/// The check results of the one warehouse table of shop.orders in a sync report.
fn checks_of(report: &serde_json::Value) -> Vec<serde_json::Value> {
    table_of(report, "shop", "orders")["loads"][0]["checks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The order ids in the quarantine whose reason names `check`.
fn quarantined_ids(sb: &Sandbox, check: &str) -> Vec<i64> {
    let rows = sb.query_lake(&format!(
        "SELECT raw, reason, line FROM shop.orders__quarantine WHERE reason LIKE '%check \"{check}\"%' ORDER BY line"
    ));
    rows.iter()
        .map(|r| {
            let raw: serde_json::Value = serde_json::from_str(r["raw"].as_str().unwrap()).unwrap();
            raw["id"].as_i64().unwrap()
        })
        .collect()
}

/// `sluice status` of shop.orders.
fn orders_status(sb: &Sandbox) -> serde_json::Value {
    let status: serde_json::Value = serde_json::from_str(&sb.ok(&["--json", "status"])).unwrap();
    status
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "orders")
        .cloned()
        .unwrap_or_else(|| panic!("no orders in {status}"))
}

fn customers_loaded(sb: &Sandbox) {
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM crm.customers"),
        vec![vec![s("7")]],
        "the other table loads whatever a check does to shop.orders"
    );
}

#[test]
fn warn_loads_every_row_and_reports_the_failing_ones() {
    for (kind, check, failing) in ROW_CHECKS {
        let sb = project(check, "warn");
        let (code, report) = sb.sync_code(&[]);
        assert_eq!(code, 0, "{kind}: {report}");
        assert_eq!(warehouse_rows(&sb), source_rows(&all_ids()), "{kind}");
        let results = checks_of(&report);
        assert_eq!(results.len(), 1, "{kind}: {report}");
        assert_eq!(results[0]["failed"], failing.len(), "{kind}: {report}");
        assert_eq!(results[0]["checked"], 9, "{kind}: {report}");
        assert_eq!(
            orders_status(&sb)["quarantined"],
            0,
            "{kind}: warn quarantines nothing"
        );
        // The result is kept in the lake.
        let kept = sb.query_lake("SELECT outcome, failed FROM shop.orders__checks");
        assert_eq!(kept.len(), 1, "{kind}: {kept:?}");
        assert_eq!(kept[0]["outcome"], "warned", "{kind}");
        assert_eq!(kept[0]["failed"], failing.len(), "{kind}");
        customers_loaded(&sb);
    }
}

#[test]
fn quarantine_holds_back_exactly_the_failing_rows_with_the_checks_name() {
    for (kind, check, failing) in ROW_CHECKS {
        let sb = project(check, "quarantine");
        let (code, report) = sb.sync_code(&[]);
        assert_eq!(code, 0, "{kind}: {report}");
        let failing: BTreeSet<i64> = failing.iter().copied().collect();
        let passing: BTreeSet<i64> = all_ids().difference(&failing).copied().collect();
        assert_eq!(warehouse_rows(&sb), source_rows(&passing), "{kind}");
        let name = checks_of(&report)[0]["check"].as_str().unwrap().to_string();
        let held: BTreeSet<i64> = quarantined_ids(&sb, &name).into_iter().collect();
        assert_eq!(held, failing, "{kind}: quarantined under check {name}");
        // The lake keeps every change: it is the record of what the source said.
        assert_eq!(
            sb.query_lake("SELECT count(*) AS n FROM shop.orders__changes")[0]["n"],
            9,
            "{kind}"
        );
        // A sync with nothing new records nothing twice.
        let (code, _) = sb.sync_code(&[]);
        assert_eq!(code, 0);
        assert_eq!(quarantined_ids(&sb, &name).len(), failing.len(), "{kind}");
        customers_loaded(&sb);
    }
}

#[test]
fn halt_loads_up_to_the_first_failing_change_and_accept_resumes() {
    for (kind, check, failing) in ROW_CHECKS {
        let sb = project(check, "halt");
        let (code, report) = sb.sync_code(&[]);
        assert_eq!(code, 3, "{kind}: {report}");
        let first = *failing.iter().min().unwrap();
        let before: BTreeSet<i64> = (1..first).collect();
        assert_eq!(warehouse_rows(&sb), source_rows(&before), "{kind}");
        let halted = table_of(&report, "shop", "orders")["halted"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            halted.contains("sluice checks accept shop.orders"),
            "{kind}: {halted}"
        );
        customers_loaded(&sb);

        let orders = orders_status(&sb);
        assert_eq!(
            orders["targets"][0]["check_halted"], true,
            "{kind}: {orders}"
        );

        // Still halted on the next sync: the failing change is still in the lake.
        let (code, _) = sb.sync_code(&[]);
        assert_eq!(code, 3, "{kind}");

        let out = sb.run(&["checks", "accept", "shop.orders"], &[]);
        assert_eq!(out.status.code(), Some(0), "{kind}: {out:?}");
        assert_eq!(warehouse_rows(&sb), source_rows(&all_ids()), "{kind}");
        let target = &orders_status(&sb)["targets"][0];
        assert_ne!(target["check_halted"], true, "{kind}: {target}");
        assert_eq!(
            target["checks"][0]["outcome"], "accepted",
            "{kind}: {target}"
        );
        let (code, report) = sb.sync_code(&[]);
        assert_eq!(code, 0, "{kind}: {report}");
    }
}

#[test]
fn a_later_failing_row_is_caught_in_its_own_load_once() {
    let sb = project(ROW_CHECKS[0].1, "quarantine");
    sb.ok(&["sync"]);
    assert_eq!(quarantined_ids(&sb, "not_null_customer_id"), vec![2]);
    sb.write(
        "drops/orders-2.csv",
        "id,customer_id,status,amount,email,day\n10,,new,1.00,j@x.com,2024-02-01\n11,16,new,2.00,k@x.com,2024-02-01\n",
    );
    let report = sb.sync_json();
    let results = checks_of(&report);
    assert_eq!(results[0]["checked"], 2, "only the new changes: {report}");
    assert_eq!(results[0]["failed"], 1, "{report}");
    assert_eq!(quarantined_ids(&sb, "not_null_customer_id"), vec![2, 10]);
    let ids: Vec<_> = sb.duck("SELECT id::VARCHAR FROM shop.orders ORDER BY id");
    let ids: Vec<String> = ids.into_iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(ids, ["1", "3", "4", "5", "6", "7", "8", "9", "11"]);
    let shown = sb.ok(&["checks", "show", "shop.orders"]);
    assert!(shown.contains("quarantined"), "{shown}");
}

#[test]
fn table_checks_warn_or_halt() {
    // Too few rows in a load: warn loads them, halt loads none until accepted.
    let few = "kind = \"row_count\"\nname = \"full_drop\"\nmin = 100";
    let sb = project(few, "warn");
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(checks_of(&report)[0]["failed"], 1, "{report}");
    assert_eq!(warehouse_rows(&sb), source_rows(&all_ids()));

    let sb = project(few, "halt");
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 3, "{report}");
    assert!(warehouse_rows(&sb).is_empty());
    customers_loaded(&sb);
    assert_eq!(
        sb.run(&["checks", "accept", "shop.orders"], &[])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(warehouse_rows(&sb), source_rows(&all_ids()));

    // Within bounds: passes.
    let sb = project("kind = \"row_count\"\nmin = 1\nmax = 9", "halt");
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(checks_of(&report)[0]["failed"], 0, "{report}");

    // The newest order day is long past: stale. Landing time is now: fresh.
    let sb = project(
        "kind = \"freshness\"\ncolumn = \"day\"\nmax_age_secs = 86400",
        "warn",
    );
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 0, "{report}");
    let r = &checks_of(&report)[0];
    assert_eq!(r["failed"], 1, "{report}");
    assert!(
        r["sample"][0].as_str().unwrap().contains("2024-01-09"),
        "{r}"
    );
    // Nothing new: still judged (staleness is nothing arriving).
    let (_, again) = sb.sync_code(&[]);
    assert_eq!(checks_of(&again)[0]["failed"], 1, "{again}");
    let sb = project("kind = \"freshness\"\nmax_age_secs = 3600", "warn");
    let (_, report) = sb.sync_code(&[]);
    assert_eq!(checks_of(&report)[0]["failed"], 0, "{report}");
}

#[test]
fn a_check_the_build_cannot_run_is_refused_with_its_field() {
    let cases = [
        (
            "kind = \"row_count\"\nmin = 1\naction = \"quarantine\"",
            "checks[0].action",
        ),
        ("kind = \"not_null\"\naction = \"warn\"", "checks[0].column"),
        (
            "kind = \"pattern\"\ncolumn = \"email\"\nregex = \"([\"\naction = \"warn\"",
            "checks[0].regex",
        ),
        (
            "kind = \"reference\"\ncolumn = \"customer_id\"\nto = \"nope.customers.id\"\naction = \"warn\"",
            "checks[0].to",
        ),
        (
            "kind = \"not_null\"\ncolumn = \"id\"\non = \"warehouse\"",
            "`on`",
        ),
    ];
    for (check, field) in cases {
        let sb = Sandbox::new();
        sb.write("drops/orders.csv", ORDERS);
        sb.config(&format!(
            "[sources.shop]\nkind = \"files\"\nurl = \"drops/\"\ntable = \"orders\"\n[[sources.shop.tables.orders.checks]]\n{check}\n"
        ));
        let out = sb.run(&["sync"], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{check}: {err}");
        assert!(err.contains(field), "{check}: {err}");
    }
    // A column the table does not have is named with the table and the check.
    let sb = project("kind = \"not_null\"\ncolumn = \"nope\"", "warn");
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 1, "{report}");
    let err = table_of(&report, "shop", "orders")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains("shop.orders") && err.contains("not_null_nope") && err.contains("`nope`"),
        "{err}"
    );
}

/// Through the binlog into PostgreSQL: a row held back by a quarantine check loads once the
/// source corrects it (the correction is a change of its own), and the table then equals the
/// source, value by value, but for the row still failing.
#[test]
fn a_corrected_row_loads_from_the_binlog_into_postgres() {
    use common::mariadb::MariaDb;
    use common::postgres::{PgServer, PASSWORD};
    let env = [("PGWH_PASSWORD", PASSWORD)];
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT NULL, amount DECIMAL(10,2) NOT NULL);
         INSERT INTO orders VALUES (1, 10, 5.00), (2, NULL, 6.00), (3, 12, 7.00);",
    );
    let pg = PgServer::start(None);
    let sb = Sandbox::new();
    sb.config(&format!(
        "[warehouses.pg]\nkind = \"postgres\"\nurl = \"{}\"\npassword = {{ env = \"PGWH_PASSWORD\" }}\nssl_mode = \"disable\"\n{}\
         [[sources.shop.tables.orders.checks]]\nkind = \"not_null\"\ncolumn = \"customer_id\"\naction = \"quarantine\"\n",
        pg.url(),
        db.config("cdc", "")
    ));
    let warehouse = || pg.rows("SELECT id, customer_id, amount FROM shop.orders ORDER BY id");
    let source = |except: &[&str]| {
        db.rows("SELECT id, customer_id, amount FROM orders ORDER BY id")
            .into_iter()
            .filter(|r| !except.contains(&r[0].as_deref().unwrap()))
            .collect::<Vec<_>>()
    };
    sb.ok_env(&["sync"], &env);
    assert_eq!(warehouse(), source(&["2"]));

    db.sql(
        "UPDATE orders SET customer_id = 11 WHERE id = 2; DELETE FROM orders WHERE id = 3;
         INSERT INTO orders VALUES (4, NULL, 8.00), (5, 13, 9.00);",
    );
    let report: serde_json::Value =
        serde_json::from_str(&sb.ok_env(&["--json", "sync"], &env)).unwrap();
    let r = &checks_of(&report)[0];
    assert_eq!(r["failed"], 1, "{report}");
    assert_eq!(warehouse(), source(&["4"]));
    let held: BTreeSet<i64> = quarantined_ids(&sb, "not_null_customer_id")
        .into_iter()
        .collect();
    assert_eq!(held, BTreeSet::from([2, 4]));
}

/// Without a key every change is a row of the table: a second drop repeating a name fails
/// once, in its own load, beside the earlier row it repeats (which loaded before).
#[test]
fn unique_on_a_table_without_a_key() {
    let sb = Sandbox::new();
    sb.write("crm/a.csv", CUSTOMERS);
    sb.config(
        "[sources.crm]\nkind = \"files\"\nurl = \"crm/\"\ntable = \"customers\"\ncolumns = [\"id bigint\", \"name text\"]\n\
         [[sources.crm.tables.customers.checks]]\nkind = \"unique\"\ncolumns = [\"name\"]\naction = \"quarantine\"\n",
    );
    let report = sb.sync_json();
    let r = &table_of(&report, "crm", "customers")["loads"][0]["checks"][0];
    assert_eq!(r["failed"], 0, "{report}");
    sb.write("crm/b.csv", "id,name\n17,Hal\n18,Bo\n19,Hal\n");
    let report = sb.sync_json();
    let r = &table_of(&report, "crm", "customers")["loads"][0]["checks"][0];
    assert_eq!(r["failed"], 3, "Bo again, and Hal twice: {report}");
    assert_eq!(
        sb.duck("SELECT string_agg(name, ',' ORDER BY id) FROM crm.customers"),
        vec![vec![s("Ada,Bo,Cy,Di,Ed,Flo,Gus")]]
    );
}
