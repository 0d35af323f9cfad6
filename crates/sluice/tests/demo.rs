//! `sluice demo` end to end: 10,000 suppliers merged in DuckDB with load timestamps, every
//! load appended, only the day-2 folder read on the second sync, and Delta tables another
//! Delta reader (the Python `deltalake` package) can open.

mod common;

use std::process::Command;

use common::{duck_rows, s};

#[test]
fn demo_builds_lake_and_warehouse() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["demo", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("10000 row(s) landed"), "{stdout}");
    assert!(
        stdout.contains("1 new file(s), 500 row(s) landed"),
        "day 2 reads only its folder:\n{stdout}"
    );

    let db = dir.join("warehouse.duckdb");
    let counts = duck_rows(
        &db,
        "SELECT (SELECT count(*) FROM suppliers.supplier)::VARCHAR,
                (SELECT count(*) FROM suppliers.supplier WHERE _sluice_loaded_at IS NULL)::VARCHAR,
                (SELECT count(*) FROM suppliers.supplier_append)::VARCHAR,
                (SELECT count(DISTINCT _sluice_loaded_at) FROM suppliers.supplier_append)::VARCHAR,
                (SELECT count(*) FROM nation.nation)::VARCHAR",
    );
    assert_eq!(
        counts,
        vec![vec![s("10000"), s("0"), s("10500"), s("2"), s("25")]]
    );

    // Value by value against the generator: day-1 balances, plus the day-2 change for every 20th.
    let (day1, _) = sluice_engine_supplier_drops();
    let want: Vec<Vec<Option<String>>> = day1
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            let key: i64 = f[0].parse().unwrap();
            let cents = (f[5].parse::<f64>().unwrap() * 100.0).round() as i64
                + if key % 20 == 0 { 10_000 } else { 0 };
            let bal = format!(
                "{}{}.{:02}",
                if cents < 0 { "-" } else { "" },
                cents.abs() / 100,
                cents.abs() % 100
            );
            vec![
                s(f[0]),
                s(f[1]),
                s(f[2]),
                s(f[3]),
                s(f[4]),
                s(&bal),
                s(f[6]),
            ]
        })
        .collect();
    let got = duck_rows(
        &db,
        "SELECT s_suppkey::VARCHAR, s_name, s_address, s_nationkey::VARCHAR, s_phone, s_acctbal::VARCHAR, s_comment FROM suppliers.supplier ORDER BY s_suppkey",
    );
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }

    // The transform holds the balance by nation the same join computes over the suppliers
    // loaded, value by value.
    let by_nation = duck_rows(
        &db,
        "SELECT nation, suppliers::VARCHAR, total_balance::VARCHAR FROM transforms.balance_by_nation ORDER BY nation",
    );
    let joined = duck_rows(
        &db,
        "SELECT n.n_name, count(*)::VARCHAR, sum(s.s_acctbal)::VARCHAR FROM suppliers.supplier s \
         JOIN nation.nation n ON s.s_nationkey = n.n_nationkey GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(by_nation.len(), 25);
    assert_eq!(by_nation, joined);
    assert!(stdout.contains("transforms.balance_by_nation"), "{stdout}");

    // Another Delta reader sees the change log with its _sluice_* columns.
    let script = format!(
        "import deltalake, json, os, sys\n\
         t = deltalake.DeltaTable('{}')\n\
         names = [f.name for f in t.schema().fields]\n\
         n = t.to_pyarrow_table().num_rows\n\
         print(json.dumps({{'names': names, 'rows': n, 'version': t.version()}}))\n\
         sys.stdout.flush()\n\
         os._exit(0)",
        dir.join("lake/changes/suppliers/supplier").display()
    );
    // The deltalake wheel can abort during interpreter shutdown ("terminate called without an
    // active exception"; always with RUST_BACKTRACE set, sometimes without): the script
    // leaves with os._exit once its answer is printed.
    let py = Command::new("python3")
        .env_remove("RUST_BACKTRACE")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        py.status.success(),
        "python deltalake could not read the lake: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(v["rows"], 10_500, "{v}");
    for c in [
        "s_suppkey",
        "_sluice_op",
        "_sluice_seq",
        "_sluice_source_ts",
        "_sluice_ingested_at",
        "_sluice_ingest_date",
    ] {
        assert!(
            v["names"].as_array().unwrap().iter().any(|n| n == c),
            "{c} missing from {v}"
        );
    }
}

/// The demo's generator, re-run here so the test has its own copy of the source data.
fn sluice_engine_supplier_drops() -> (String, String) {
    sluice_engine::demo::supplier_drops()
}
