//! Transforms end to end through the `sluice` binary: SQL joining a MariaDB source (through
//! CDC), a files source and a JSON table, materialized in the lake and loaded into DuckDB and
//! PostgreSQL; each input changed (update, delete, insert, a late file) lands only the result
//! rows that changed; the warehouse tables equal both the hand-computed result and the same SQL
//! run over the lake. JSON paths and arrays in `sluice query`; a transform whose key is not
//! unique fails alone, naming the key.

mod common;

use common::mariadb::MariaDb;
use common::postgres::{PgServer, PASSWORD};
use common::serve::Serving;
use common::{s, table_of, Sandbox};

const REVENUE_SQL: &str = "SELECT c.country, count(*) AS orders, sum(o.amount) AS revenue, \
    sum(o.amount * r.rate) AS revenue_eur \
    FROM shop.orders o JOIN shop.customers c ON o.customer_id = c.id \
    JOIN rates.rates r ON r.country = c.country GROUP BY c.country";

const CLICKS_SQL: &str = "SELECT k.id AS click_id, c.name, json_get_str(k.page, 'path') AS path, \
    json_length(k.page, 'tags') AS tags FROM clicks.clicks k JOIN shop.customers c ON c.id = k.customer";

fn config(db: &MariaDb, pg: &PgServer) -> String {
    format!(
        r#"
[warehouses.local]
kind = "duckdb"

[warehouses.pg]
kind = "postgres"
url = "{pg}"
password = {{ env = "PGWH_PASSWORD" }}
ssl_mode = "disable"

[sources.shop]
kind = "mysql"
url = "{mysql}"
mode = "cdc"
tables = ["customers", "orders"]
warehouse = "local"

[sources.rates]
kind = "files"
url = "drops/rates/{{date}}/"
table = "rates"
columns = ["country text", "rate decimal(6,2)"]
warehouse = "local"
[sources.rates.tables.rates]
primary_key = ["country"]

[sources.clicks]
kind = "files"
url = "drops/clicks/{{date}}/"
format = "json"
table = "clicks"
warehouse = "local"
[sources.clicks.tables.clicks]
primary_key = ["id"]

[transforms.revenue_by_country]
sql = "{REVENUE_SQL}"
primary_key = ["country"]
warehouse = "pg"

[transforms.clicks_by_customer]
sql = "{CLICKS_SQL}"
primary_key = ["click_id"]
warehouse = "local"
"#,
        pg = pg.url(),
        mysql = db.url(),
    )
}

/// A sync in which every table synced: its report.
fn sync(sb: &Sandbox) -> serde_json::Value {
    let out = sb.ok_env(&["--json", "sync"], &[("PGWH_PASSWORD", PASSWORD)]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    for t in r["tables"].as_array().unwrap() {
        assert!(t["error"].is_null(), "{t}");
    }
    r
}

/// `(key, _sluice_op)` rows of a query over a change log.
fn ops_in_lake(sb: &Sandbox, sql: &str) -> Vec<(String, String)> {
    sb.query_lake(sql)
        .iter()
        .map(|r| {
            let row = r.as_object().unwrap();
            let key = row.iter().find(|(k, _)| *k != "_sluice_op").unwrap().1;
            (
                key.as_str().unwrap().to_string(),
                r["_sluice_op"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Numbers compared as numbers (each warehouse renders a decimal's scale its own way).
fn num(v: &Option<String>) -> f64 {
    v.as_deref()
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("not a number: {v:?}"))
}

/// `(country, orders, revenue, revenue_eur)` rows, by country.
type Revenue = Vec<(String, i64, f64, f64)>;

fn revenue_in_pg(pg: &PgServer) -> Revenue {
    pg.rows("SELECT country, orders, revenue, revenue_eur FROM transforms.revenue_by_country ORDER BY country")
        .iter()
        .map(|r| (r[0].clone().unwrap(), num(&r[1]) as i64, num(&r[2]), num(&r[3])))
        .collect()
}

/// The transform's SQL run directly over the lake.
fn revenue_in_lake(sb: &Sandbox) -> Revenue {
    sb.query_lake(&format!("SELECT * FROM ({REVENUE_SQL}) ORDER BY country"))
        .iter()
        .map(|r| {
            let n = |k: &str| match &r[k] {
                serde_json::Value::String(t) => t.parse::<f64>().unwrap(),
                other => other.as_f64().unwrap(),
            };
            (
                r["country"].as_str().unwrap().to_string(),
                n("orders") as i64,
                n("revenue"),
                n("revenue_eur"),
            )
        })
        .collect()
}

fn assert_revenue(got: &Revenue, want: &[(&str, i64, f64, f64)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0.as_str(), g.1), (w.0, w.1), "{what}: {got:?}");
        assert!((g.2 - w.2).abs() < 1e-9, "{what}: revenue {got:?}");
        assert!((g.3 - w.3).abs() < 1e-9, "{what}: revenue_eur {got:?}");
    }
}

fn clicks_in_duck(sb: &Sandbox) -> Vec<Vec<Option<String>>> {
    sb.duck("SELECT click_id::VARCHAR, name, path, tags::VARCHAR FROM transforms.clicks_by_customer ORDER BY click_id")
}

#[test]
fn a_transform_over_cdc_files_and_json_lands_only_what_changed() {
    let db = MariaDb::start(&[]);
    let pg = PgServer::start(None);
    let sb = Sandbox::new();
    db.sql(
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(40), country CHAR(2));
         CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, amount DECIMAL(10,2));
         INSERT INTO customers VALUES (1,'Ada','FR'),(2,'Bo','DE'),(3,'Cy','FR'),(4,'Di','IT');
         INSERT INTO orders VALUES (10,1,100.00),(11,1,50.50),(12,2,20.00),(13,3,7.25),(14,4,1.00);",
    );
    sb.write(
        "drops/rates/20260101/rates.csv",
        "country,rate\nFR,1.10\nDE,1.20\nIT,0.90\n",
    );
    sb.write(
        "drops/clicks/20260101/c.json",
        concat!(
            r#"{"id": 1, "customer": 1, "page": {"path": "/home", "tags": ["a", "b"], "ref": {"src": "ad"}}}"#,
            "\n",
            r#"{"id": 2, "customer": 2, "page": {"path": "/cart", "tags": []}}"#,
            "\n"
        ),
    );
    sb.config(&config(&db, &pg));

    let r = sync(&sb);
    let revenue = table_of(&r, "transforms", "revenue_by_country");
    assert_eq!(revenue["extract"]["rows"], 3, "{revenue}");
    let first = [
        ("DE", 1, 20.00, 24.0),
        ("FR", 3, 157.75, 173.525),
        ("IT", 1, 1.00, 0.9),
    ];
    assert_revenue(
        &revenue_in_pg(&pg),
        &first,
        "PostgreSQL after the first sync",
    );
    assert_revenue(&revenue_in_lake(&sb), &first, "the SQL over the lake");
    assert_eq!(
        clicks_in_duck(&sb),
        vec![
            vec![s("1"), s("Ada"), s("/home"), s("2")],
            vec![s("2"), s("Bo"), s("/cart"), s("0")],
        ]
    );

    // A change in every input: an update and a delete through the binlog, a new customer
    // whose country has no rate yet, then a late rates file that brings it and changes one.
    db.sql(
        "UPDATE orders SET amount = 60.50 WHERE id = 11;
         DELETE FROM orders WHERE id = 12;
         UPDATE customers SET name = 'Ada L.' WHERE id = 1;
         INSERT INTO customers VALUES (5,'Eve','ES');
         INSERT INTO orders VALUES (15,5,30.00);",
    );
    sb.write(
        "drops/rates/20260102/rates.csv",
        "country,rate\nES,1.00\nIT,0.80\n",
    );
    sb.write(
        "drops/clicks/20260102/c.json",
        r#"{"id": 3, "customer": 5, "page": {"path": "/x", "tags": ["c"]}}"#,
    );
    let r = sync(&sb);
    // FR and IT changed, ES is new, DE lost its only order: four changes, not the whole result.
    let revenue = table_of(&r, "transforms", "revenue_by_country");
    assert_eq!(revenue["extract"]["rows"], 4, "{revenue}");
    let second = [
        ("ES", 1, 30.00, 30.0),
        ("FR", 3, 167.75, 184.525),
        ("IT", 1, 1.00, 0.8),
    ];
    assert_revenue(&revenue_in_pg(&pg), &second, "PostgreSQL after the changes");
    assert_revenue(&revenue_in_lake(&sb), &second, "the SQL over the lake");
    let ops = ops_in_lake(
        &sb,
        "SELECT country, _sluice_op FROM transforms.revenue_by_country__changes \
         WHERE _sluice_seq > 3 ORDER BY country",
    );
    assert_eq!(
        ops,
        vec![
            ("DE".into(), "d".into()),
            ("ES".into(), "c".into()),
            ("FR".into(), "u".into()),
            ("IT".into(), "u".into()),
        ]
    );
    let clicks = table_of(&r, "transforms", "clicks_by_customer");
    assert_eq!(clicks["extract"]["rows"], 2, "{clicks}");
    assert_eq!(
        clicks_in_duck(&sb),
        vec![
            vec![s("1"), s("Ada L."), s("/home"), s("2")],
            vec![s("2"), s("Bo"), s("/cart"), s("0")],
            vec![s("3"), s("Eve"), s("/x"), s("1")],
        ]
    );

    // Nothing new anywhere: the transforms are not computed again and land nothing.
    let r = sync(&sb);
    for name in ["revenue_by_country", "clicks_by_customer"] {
        let t = table_of(&r, "transforms", name);
        assert_eq!(t["extract"]["rows"], 0, "{t}");
        assert!(t["extract"]["lake_version"].is_null(), "{t}");
    }
    let status = sb.ok_env(&["status"], &[("PGWH_PASSWORD", PASSWORD)]);
    assert!(
        status.contains("transforms.revenue_by_country  [transform: full refresh"),
        "{status}"
    );

    // JSON in SQL: a path through nested objects, and an array unnested into rows.
    let rows = sb.query_lake(
        "SELECT id, json_get_str(page, 'ref', 'src') AS src, json_as_text(tag) AS tag \
         FROM (SELECT id, page, unnest(json_get_array(page, 'tags')) AS tag FROM clicks.clicks) \
         ORDER BY id, tag",
    );
    let got: Vec<(i64, Option<String>, String)> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["src"].as_str().map(String::from),
                r["tag"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Some("ad".into()), "a".into()),
            (1, Some("ad".into()), "b".into()),
            (3, None, "c".into()),
        ]
    );
}

#[test]
fn a_transform_with_a_key_that_is_not_unique_fails_alone() {
    let sb = Sandbox::new();
    sb.write("drops/p.csv", "id,city\n1,Oslo\n2,Oslo\n3,Rome\n");
    let base = "[sources.people]\nkind = \"files\"\nurl = \"drops/\"\ntable = \"people\"\n\
                [sources.people.tables.people]\nprimary_key = [\"id\"]\n";
    sb.config(
        &(base.to_string()
            + "[transforms.by_city]\nsql = \"SELECT city, count(*) AS n FROM people.people GROUP BY city\"\nprimary_key = [\"city\"]\n\
               [transforms.cities]\nsql = \"SELECT city, id FROM people.people\"\nprimary_key = [\"city\"]\n"),
    );
    // Before anything landed, check says what each transform waits for.
    let check = sb.ok(&["check"]);
    assert!(
        check.contains("by_city reads people.people, which has landed nothing in the lake yet (sync people first): checked once it has"),
        "{check}"
    );
    let (code, r) = sb.sync_code(&[]);
    assert_eq!(code, 1, "{r}");
    let bad = table_of(&r, "transforms", "cities");
    let err = bad["error"].as_str().unwrap();
    assert!(
        err.contains("2 result rows share the key (city = Oslo)"),
        "{err}"
    );
    let good = table_of(&r, "transforms", "by_city");
    assert!(good["error"].is_null(), "{good}");
    assert_eq!(
        sb.duck("SELECT city, n::VARCHAR FROM transforms.by_city ORDER BY city"),
        vec![vec![s("Oslo"), s("2")], vec![s("Rome"), s("1")]]
    );
    // The bad one landed nothing.
    let landed = sb.query_lake("SELECT count(*) AS n FROM transforms.cities__changes");
    assert_eq!(landed[0]["n"], 0);

    // A transform without a key is refused before anything runs, naming the field.
    sb.config(&(base.to_string() + "[transforms.x]\nsql = \"SELECT city FROM people.people\"\n"));
    let out = sb.run(&["sync"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("transforms.x.primary_key"), "{err}");
}

#[test]
fn queries_read_the_lake_as_it_was_and_write_reports_that_read_back_equal() {
    let sb = Sandbox::new();
    sb.config(
        "[sources.s]\nkind = \"files\"\nurl = \"drops/{date}/\"\ntable = \"t\"\n\
         columns = [\"id bigint\", \"v text\", \"x double\"]\n\
         [sources.s.tables.t]\nprimary_key = [\"id\"]\n",
    );
    sb.write("drops/20260101/a.csv", "id,v,x\n1,one,1.5\n2,two,2.5\n");
    let first = sb.sync_json();
    let version = table_of(&first, "s", "t")["extract"]["lake_version"]
        .as_i64()
        .unwrap();
    // Commit times are the log files' times: a second apart, a time between them is clear.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    sb.write("drops/20260102/a.csv", "id,v,x\n2,TWO,20.5\n3,three,3.5\n");
    sb.sync_json();

    let rows = |args: &[&str]| -> Vec<(i64, String)> {
        let mut all = vec!["--json", "query", "SELECT id, v FROM s.t ORDER BY id"];
        all.extend_from_slice(args);
        let out: Vec<serde_json::Value> = serde_json::from_str(&sb.ok(&all)).unwrap();
        out.iter()
            .map(|r| {
                (
                    r["id"].as_i64().unwrap(),
                    r["v"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let then = vec![(1, "one".to_string()), (2, "two".to_string())];
    let now = vec![
        (1, "one".to_string()),
        (2, "TWO".to_string()),
        (3, "three".to_string()),
    ];
    assert_eq!(rows(&[]), now);
    assert_eq!(rows(&["--as-of", &between]), then);
    assert_eq!(rows(&["--as-of", &version.to_string()]), then);
    // Before the table's first commit it was not there.
    let out = sb.run(
        &["query", "SELECT * FROM s.t", "--as-of", "2000-01-01"],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("s.t"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Reports: the same rows, read back from each format.
    let sql = "SELECT id, v, x FROM s.t ORDER BY id";
    for file in ["out/r.csv", "out/r.parquet", "out/r.jsonl", "out/r.json"] {
        sb.ok(&["query", sql, "--out", file]);
    }
    assert_eq!(
        std::fs::read_to_string(sb.path("out/r.csv")).unwrap(),
        "id,v,x\n1,one,1.5\n2,TWO,20.5\n3,three,3.5\n"
    );
    let file = std::fs::File::open(sb.path("out/r.parquet")).unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024).unwrap();
    let mut back = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let cast = |i: usize| {
            arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8).unwrap()
        };
        let (id, v, x) = (cast(0), cast(1), cast(2));
        for r in 0..batch.num_rows() {
            use arrow::array::AsArray;
            back.push(
                [&id, &v, &x]
                    .iter()
                    .map(|c| s(c.as_string::<i32>().value(r)))
                    .collect::<Vec<_>>(),
            );
        }
    }
    assert_eq!(
        back,
        vec![
            vec![s("1"), s("one"), s("1.5")],
            vec![s("2"), s("TWO"), s("20.5")],
            vec![s("3"), s("three"), s("3.5")],
        ]
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(sb.path("out/r.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let array: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(sb.path("out/r.json")).unwrap()).unwrap();
    assert_eq!(lines, array);
    assert_eq!(
        lines[1],
        serde_json::json!({"id": 2, "v": "TWO", "x": 20.5})
    );
}

/// The transform's current state in the lake, once it has one.
fn totals(sb: &Sandbox) -> Option<Vec<(String, i64)>> {
    let out = sb.run(
        &[
            "--json",
            "query",
            "SELECT g, total FROM transforms.totals ORDER BY g",
        ],
        &[],
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        rows.iter()
            .map(|r| {
                (
                    r["g"].as_str().unwrap().to_string(),
                    r["total"].as_i64().unwrap(),
                )
            })
            .collect(),
    )
}

fn until(what: &str, within: std::time::Duration, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

#[test]
fn serve_runs_a_transform_when_its_inputs_change_and_loads_it() {
    let sb = Sandbox::new();
    sb.config(
        "[sources.s]\nkind = \"files\"\nurl = \"drops/{date}/\"\ntable = \"t\"\n\
         columns = [\"id bigint\", \"g text\", \"x bigint\"]\n\
         trigger = \"arrival\"\npoll_interval_secs = 1\n\
         [sources.s.tables.t]\nprimary_key = [\"id\"]\n\
         [transforms.totals]\nsql = \"SELECT g, sum(x) AS total FROM s.t GROUP BY g\"\nprimary_key = [\"g\"]\n",
    );
    sb.write("drops/20260101/a.csv", "id,g,x\n1,a,1\n2,a,2\n3,b,5\n");
    let serving = Serving::start(&sb);
    let within = std::time::Duration::from_secs(60);
    let first = vec![("a".to_string(), 3), ("b".to_string(), 5)];
    until("the first run", within, || {
        totals(&sb) == Some(first.clone())
    });

    // A late file moves b and adds c; a stays as it was.
    sb.write("drops/20260102/a.csv", "id,g,x\n3,b,7\n4,c,1\n");
    let second = vec![
        ("a".to_string(), 3),
        ("b".to_string(), 7),
        ("c".to_string(), 1),
    ];
    until("the run after the late file", within, || {
        totals(&sb) == Some(second.clone())
    });
    // Quiet inputs: looked at every poll, never computed again.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let (code, _, stderr) = serving.terminate(std::time::Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    let log = ops_in_lake(
        &sb,
        "SELECT g, _sluice_op FROM transforms.totals__changes ORDER BY _sluice_seq",
    );
    // Two runs (a run's rows come in no set order): the first result, then what changed.
    assert_eq!(log.len(), 4, "{log:?}");
    let (mut run1, mut run2) = (log[..2].to_vec(), log[2..].to_vec());
    run1.sort();
    run2.sort();
    assert_eq!(
        run1,
        vec![("a".into(), "c".into()), ("b".into(), "c".into())]
    );
    assert_eq!(
        run2,
        vec![("b".into(), "u".into()), ("c".into(), "c".into())]
    );
    // Loaded beside the stream: the warehouse holds the same.
    assert_eq!(
        sb.duck("SELECT g, total::VARCHAR FROM transforms.totals ORDER BY g"),
        vec![
            vec![s("a"), s("3")],
            vec![s("b"), s("7")],
            vec![s("c"), s("1")],
        ]
    );
}

/// A crash right after a transform's lake commit, then one inside its warehouse load: each
/// next sync neither computes the landed run again nor loads a change twice.
#[test]
fn a_crash_after_the_lake_commit_or_inside_the_load_doubles_nothing() {
    let sb = Sandbox::new();
    sb.config(
        "[sources.s]\nkind = \"files\"\nurl = \"drops/{date}/\"\ntable = \"t\"\n\
         columns = [\"id bigint\", \"g text\", \"x bigint\"]\n\
         [sources.s.tables.t]\nprimary_key = [\"id\"]\n\
         [transforms.totals]\nsql = \"SELECT g, sum(x) AS total, count(*) AS n FROM s.t GROUP BY g\"\n\
         primary_key = [\"g\"]\nload = [\"merge\", \"append\"]\n",
    );
    let mut text = String::from("id,g,x\n");
    for i in 0..3000 {
        text += &format!("{i},g{},{}\n", i % 300, i);
    }
    sb.write("drops/20260101/a.csv", &text);
    sb.ok(&["sync", "s"]);
    for failpoint in ["after-lake-commit", "before-warehouse-commit"] {
        let out = sb.run(&["sync", "transforms"], &[("SLUICE_FAILPOINT", failpoint)]);
        assert!(!out.status.success(), "the failpoint must kill the run");
        assert!(String::from_utf8_lossy(&out.stderr).contains(failpoint));
        if failpoint == "before-warehouse-commit" {
            continue;
        }
        // The landed run is not computed again.
        let r = sb.sync_json();
        let t = table_of(&r, "transforms", "totals");
        assert_eq!(t["extract"]["rows"], 0, "{t}");
        // A change for the next crash.
        sb.write("drops/20260102/a.csv", "id,g,x\n1,g1,100000\n");
        sb.ok(&["sync", "s"]);
    }
    let r = sb.sync_json();
    assert!(
        table_of(&r, "transforms", "totals")["error"].is_null(),
        "{r}"
    );
    let want =
        sb.duck("SELECT g, sum(x)::VARCHAR, count(*)::VARCHAR FROM s.t GROUP BY g ORDER BY g");
    assert_eq!(want.len(), 300);
    assert_eq!(
        sb.duck("SELECT g, total::VARCHAR, n::VARCHAR FROM transforms.totals ORDER BY g"),
        want
    );
    // Each change appended once: 300 first rows, then the one group that moved.
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM transforms.totals_append"),
        vec![vec![s("301")]]
    );
    let lake = sb.query_lake("SELECT count(*) AS n FROM transforms.totals__changes");
    assert_eq!(lake[0]["n"], 301);
}

/// The SQL is edited so a column changes type and one is added: the transform runs again
/// (its SQL is part of its position), the lake takes the new type as a variant column, and
/// the run after that lands only the group that changed.
#[test]
fn a_result_column_that_changes_type_lands_only_what_changed_after() {
    let sb = Sandbox::new();
    let config = |sql: &str| {
        format!(
            "[sources.s]\nkind = \"files\"\nurl = \"drops/{{date}}/\"\ntable = \"t\"\n\
             columns = [\"id bigint\", \"g text\", \"x bigint\"]\n\
             [sources.s.tables.t]\nprimary_key = [\"id\"]\n\
             [transforms.totals]\nsql = \"{sql}\"\nprimary_key = [\"g\"]\nschema_changes = \"evolve\"\n"
        )
    };
    sb.config(&config("SELECT g, sum(x) AS total FROM s.t GROUP BY g"));
    sb.write("drops/20260101/a.csv", "id,g,x\n1,a,1\n2,a,2\n3,b,5\n");
    sb.sync_json();
    sb.config(&config(
        "SELECT g, CAST(sum(x) AS DOUBLE) + 0.5 AS total, count(*) AS n FROM s.t GROUP BY g",
    ));
    let r = sb.sync_json();
    let t = table_of(&r, "transforms", "totals");
    assert_eq!(t["extract"]["rows"], 2, "{t}");
    let changes = t["extract"]["schema_changes"].to_string();
    assert!(changes.contains("total__double"), "{changes}");

    sb.write("drops/20260102/a.csv", "id,g,x\n3,b,6\n");
    let r = sb.sync_json();
    let t = table_of(&r, "transforms", "totals");
    assert_eq!(t["extract"]["rows"], 1, "only b changed: {t}");
    assert_eq!(
        sb.duck("SELECT g, total__double::VARCHAR, n::VARCHAR FROM transforms.totals ORDER BY g"),
        vec![
            vec![s("a"), s("3.5"), s("2")],
            vec![s("b"), s("6.5"), s("1")],
        ]
    );
}

/// A transform that maps each row of one table (a projection and a filter, keyed by the
/// table's key) runs from the input's new changes alone: an update, a row leaving and one
/// entering the filter, a delete, an insert and a row changed and changed back land exactly
/// the result's changes, the warehouse equals the same SQL computed by MariaDB, and status
/// says which transform runs incrementally and which is computed whole.
#[test]
fn a_row_by_row_transform_reads_only_the_new_changes() {
    let db = MariaDb::start(&[]);
    let sb = Sandbox::new();
    db.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, amount DECIMAL(10,2), status VARCHAR(10));
         INSERT INTO orders VALUES (1, 10.00, 'new'), (2, 20.00, 'new'), (3, 30.00, 'paid'),
           (4, 40.00, 'paid'), (5, 50.00, 'new'), (6, 1.00, 'new');",
    );
    sb.config(&format!(
        "[sources.shop]\nkind = \"mysql\"\nurl = \"{}\"\nmode = \"cdc\"\ntables = [\"orders\"]\n\
         [transforms.big_orders]\n\
         sql = \"SELECT id AS order_id, amount, upper(status) AS status FROM shop.orders WHERE amount >= 10\"\n\
         primary_key = [\"order_id\"]\n\
         [transforms.by_status]\n\
         sql = \"SELECT status, count(*) AS n FROM shop.orders GROUP BY status\"\n\
         primary_key = [\"status\"]\n",
        db.url()
    ));
    let sync = |sb: &Sandbox| {
        let out = sb.run(&["--log", "info", "--json", "sync"], &[]);
        let log = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{log}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (report, log)
    };
    let same_as_mariadb = |sb: &Sandbox, what: &str| {
        assert_eq!(
            sb.duck(
                "SELECT CAST(order_id AS VARCHAR), CAST(amount AS VARCHAR), status \
                 FROM transforms.big_orders ORDER BY order_id"
            ),
            db.rows("SELECT id, amount, UPPER(status) FROM orders WHERE amount >= 10 ORDER BY id"),
            "{what}"
        );
    };
    let (r, log) = sync(&sb);
    assert_eq!(
        table_of(&r, "transforms", "big_orders")["extract"]["rows"],
        5
    );
    assert!(
        !log.contains("incremental run"),
        "the first run is whole: {log}"
    );
    same_as_mariadb(&sb, "after the first run");

    db.sql(
        "UPDATE orders SET status = 'paid' WHERE id = 1;
         UPDATE orders SET amount = 5.00 WHERE id = 2;
         DELETE FROM orders WHERE id = 3;
         UPDATE orders SET amount = 41.00 WHERE id = 4;
         UPDATE orders SET amount = 40.00 WHERE id = 4;
         UPDATE orders SET amount = 100.00 WHERE id = 6;
         INSERT INTO orders VALUES (7, 70.00, 'new');",
    );
    let (r, log) = sync(&sb);
    let t = table_of(&r, "transforms", "big_orders");
    assert_eq!(t["extract"]["rows"], 5, "{t}");
    let incremental: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("incremental run"))
        .collect();
    assert_eq!(incremental.len(), 1, "{log}");
    assert!(incremental[0].contains("big_orders"), "{log}");
    same_as_mariadb(&sb, "after an incremental run");
    let ops = ops_in_lake(
        &sb,
        "SELECT CAST(order_id AS VARCHAR) AS order_id, _sluice_op \
         FROM transforms.big_orders__changes WHERE _sluice_seq > 5 ORDER BY order_id",
    );
    assert_eq!(
        ops,
        vec![
            ("1".into(), "u".into()),
            ("2".into(), "d".into()),
            ("3".into(), "d".into()),
            ("6".into(), "c".into()),
            ("7".into(), "c".into()),
        ],
        "order 4, changed and changed back, lands nothing"
    );
    // The aggregate is computed whole and still right.
    assert_eq!(
        sb.duck("SELECT status, CAST(n AS VARCHAR) FROM transforms.by_status ORDER BY status"),
        db.rows("SELECT status, COUNT(*) FROM orders GROUP BY status ORDER BY status")
    );

    let (r, _) = sync(&sb);
    assert_eq!(
        table_of(&r, "transforms", "big_orders")["extract"]["rows"],
        0
    );
    let status = sb.ok(&["status"]);
    assert!(
        status.contains("transforms.big_orders  [transform: incremental"),
        "{status}"
    );
    assert!(
        status.contains("transforms.by_status  [transform: full refresh"),
        "{status}"
    );
}
