//! Positions and the ledger: a rerun ingests nothing twice, a new date folder brings only its
//! files, and a crash between the lake commit and the warehouse commit (or inside the warehouse
//! transaction) loses and doubles nothing.

mod common;

use common::{s, Sandbox};

const CONFIG: &str = r#"
[sources.s]
kind = "files"
url = "drops/{date}/"
table = "t"
columns = ["id bigint", "v text"]
load = ["merge", "append"]
[sources.s.tables.t]
primary_key = ["id"]
"#;

fn day(sb: &Sandbox, date: &str, name: &str, rows: &[(i64, &str)]) {
    let mut text = String::from("id,v\n");
    for (id, v) in rows {
        text += &format!("{id},{v}\n");
    }
    sb.write(&format!("drops/{date}/{name}"), text);
}

fn merged(sb: &Sandbox) -> Vec<Vec<Option<String>>> {
    sb.duck("SELECT id::VARCHAR, v FROM s.t ORDER BY id")
}

fn appended(sb: &Sandbox) -> Vec<Vec<Option<String>>> {
    sb.duck("SELECT id::VARCHAR, v, _sluice_seq::VARCHAR FROM s.t_append ORDER BY _sluice_seq")
}

/// Day 1 (1 a, 2 b) then day 2 (2 b2, 3 c), each change once, in order.
fn four_changes() -> Vec<Vec<Option<String>>> {
    vec![
        vec![s("1"), s("a"), s("1")],
        vec![s("2"), s("b"), s("2")],
        vec![s("2"), s("b2"), s("3")],
        vec![s("3"), s("c"), s("4")],
    ]
}

#[test]
fn rerun_ingests_nothing_and_new_folders_only_their_files() {
    let sb = Sandbox::new();
    sb.config(CONFIG);
    day(&sb, "20240101", "a.csv", &[(1, "a"), (2, "b")]);
    let r = sb.sync_json();
    assert_eq!(r["tables"][0]["extract"]["files"], 1);
    let again = sb.sync_json();
    assert_eq!(again["tables"][0]["extract"]["files"], 0, "{again}");
    assert_eq!(
        again["tables"][0]["loads"][0]["up_to_date"], true,
        "{again}"
    );
    day(&sb, "2024-01-02", "b.csv", &[(2, "b2"), (3, "c")]);
    let r = sb.sync_json();
    assert_eq!(r["tables"][0]["extract"]["files"], 1, "{r}");
    assert_eq!(r["tables"][0]["extract"]["rows"], 2);
    assert_eq!(
        merged(&sb),
        vec![
            vec![s("1"), s("a")],
            vec![s("2"), s("b2")],
            vec![s("3"), s("c")]
        ]
    );
    assert_eq!(appended(&sb), four_changes());
    // A late file in an old folder is new too.
    day(&sb, "20240101", "late.csv", &[(4, "d")]);
    let r = sb.sync_json();
    assert_eq!(r["tables"][0]["extract"]["files"], 1, "{r}");
    assert_eq!(merged(&sb).len(), 4);
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM s.t_append"),
        vec![vec![s("5")]]
    );
}

fn crash_then_recover(failpoint: &str) {
    let sb = Sandbox::new();
    sb.config(CONFIG);
    day(&sb, "20240101", "a.csv", &[(1, "a"), (2, "b")]);
    sb.sync_json();
    day(&sb, "20240102", "b.csv", &[(2, "b2"), (3, "c")]);
    let out = sb.run(&["sync"], &[("SLUICE_FAILPOINT", failpoint)]);
    assert!(!out.status.success(), "the failpoint must kill the run");
    assert!(String::from_utf8_lossy(&out.stderr).contains(failpoint));
    // Nothing of day 2 is in the warehouse yet.
    assert_eq!(
        merged(&sb),
        vec![vec![s("1"), s("a")], vec![s("2"), s("b")]]
    );
    let r = sb.sync_json();
    let extracted = r["tables"][0]["extract"]["files"].as_u64().unwrap();
    // After a lake commit the file is consumed; inside the warehouse transaction it was too.
    assert_eq!(extracted, 0, "{r}");
    assert_eq!(
        merged(&sb),
        vec![
            vec![s("1"), s("a")],
            vec![s("2"), s("b2")],
            vec![s("3"), s("c")]
        ]
    );
    assert_eq!(appended(&sb), four_changes(), "no change doubled");
    let lake = sb.query_lake("SELECT count(*) AS n FROM s.t__changes");
    assert_eq!(lake[0]["n"], 4);
}

#[test]
fn crash_after_lake_commit_loses_and_doubles_nothing() {
    crash_then_recover("after-lake-commit");
}

#[test]
fn crash_inside_warehouse_transaction_loses_and_doubles_nothing() {
    crash_then_recover("before-warehouse-commit");
}

/// A backlog loaded a few changes per transaction ends exactly as one transaction would,
/// including several changes to one key that fall in different chunks.
#[test]
fn chunked_loads_equal_a_single_transaction() {
    let mut results = Vec::new();
    for per_txn in [None, Some(2), Some(1)] {
        let sb = Sandbox::new();
        let wh = match per_txn {
            Some(n) => format!(
                "[warehouses.local]\nkind = \"duckdb\"\nmax_changes_per_transaction = {n}\n"
            ),
            None => String::new(),
        };
        sb.config(&format!("{wh}{CONFIG}"));
        day(&sb, "20240101", "a.csv", &[(1, "a"), (2, "b"), (3, "c")]);
        day(
            &sb,
            "20240102",
            "b.csv",
            &[(2, "b2"), (4, "d"), (2, "b3"), (1, "a2")],
        );
        sb.ok(&["sync", "--lake-only"]);
        let r = sb.sync_json();
        assert_eq!(r["tables"][0]["loads"][0]["changes"], 7, "{r}");
        let ledger =
            sb.duck("SELECT target_table, lake_seq::VARCHAR FROM _sluice.ledger ORDER BY 1");
        assert_eq!(
            ledger,
            vec![vec![s("t"), s("7")], vec![s("t_append"), s("7")]]
        );
        results.push((merged(&sb), appended(&sb)));
    }
    assert_eq!(
        results[0].0,
        vec![
            vec![s("1"), s("a2")],
            vec![s("2"), s("b3")],
            vec![s("3"), s("c")],
            vec![s("4"), s("d")]
        ]
    );
    assert_eq!(results[0].1.len(), 7);
    assert_eq!(results[1], results[0]);
    assert_eq!(results[2], results[0]);
}

/// `replace` (seed 002's staging table): each load's changes replace the table's content, in
/// one transaction; a sync with nothing new leaves the table as it is.
#[test]
fn replace_holds_exactly_the_latest_load() {
    let sb = Sandbox::new();
    sb.config(&CONFIG.replace(
        "load = [\"merge\", \"append\"]",
        "load = [\"replace\", \"append\"]",
    ));
    day(&sb, "20240101", "a.csv", &[(1, "a"), (2, "b")]);
    sb.sync_json();
    assert_eq!(
        merged(&sb),
        vec![vec![s("1"), s("a")], vec![s("2"), s("b")]]
    );
    day(&sb, "20240102", "b.csv", &[(3, "c"), (2, "b2"), (2, "b3")]);
    sb.sync_json();
    assert_eq!(
        merged(&sb),
        vec![vec![s("2"), s("b3")], vec![s("3"), s("c")]],
        "latest load only, latest per key"
    );
    let again = sb.sync_json();
    assert_eq!(again["tables"][0]["loads"][0]["up_to_date"], true);
    assert_eq!(merged(&sb).len(), 2, "nothing new keeps the table");
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM s.t_append"),
        vec![vec![s("5")]]
    );
}
