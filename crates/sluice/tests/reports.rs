//! `[reports.NAME]`: lake queries written as files, by `sluice report` and by `serve` at the
//! ticks of their schedule. Contents are compared value by value with `sluice query`; a
//! failing report fails alone, named; two serve processes write each tick's file once.

mod common;

use std::time::{Duration, Instant};

use common::serve::Serving;
use common::{duck_rows, s, Sandbox};

const SOURCE: &str = r#"
[sources.s]
kind = "files"
url = "drops/"
table = "t"
[sources.s.tables.t]
primary_key = ["id"]
"#;

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// A CSV file's rows (header included), each value as text.
fn csv_rows(path: &std::path::Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| l.split(',').map(String::from).collect())
        .collect()
}

#[test]
fn reports_write_the_query_result_and_a_failing_one_fails_alone() {
    let sb = Sandbox::new();
    sb.config(&format!(
        r#"{SOURCE}
[reports.by_kind]
sql = "SELECT kind, count(*) AS n, sum(amount) AS total FROM s.t GROUP BY kind ORDER BY kind"
out = "reports/{{date}}/{{name}}.csv"

[reports.big_ones]
sql = "SELECT id, kind, amount FROM s.t WHERE amount > 100 ORDER BY id"
out = "reports/{{date}}/big.parquet"

[reports.broken]
sql = "SELECT * FROM s.nothing_here"
out = "reports/broken.jsonl"
"#
    ));
    sb.write(
        "drops/a.csv",
        "id,kind,amount\n1,a,10\n2,b,20\n3,a,5\n4,c,7\n",
    );
    sb.sync_json();
    let check = sb.ok(&["check"]);
    assert!(
        check.contains("report by_kind: reads s.t; writes reports/{date}/{name}.csv (daily)"),
        "{check}"
    );

    let out = sb.run(&["report"], &[]);
    assert_eq!(out.status.code(), Some(1), "a failed report exits 1");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("report broken:") && stderr.contains("nothing_here"),
        "{stderr}"
    );
    assert!(
        stdout.contains("report by_kind: 3 row(s) written"),
        "{stdout}"
    );

    // The CSV equals the same query over the lake, value by value.
    let day = today();
    let written = csv_rows(&sb.path(&format!("reports/{day}/by_kind.csv")));
    let lake = sb.query_lake(
        "SELECT kind, CAST(count(*) AS VARCHAR) AS n, CAST(sum(amount) AS VARCHAR) AS total FROM s.t GROUP BY kind ORDER BY kind",
    );
    let mut expected = vec![vec!["kind".to_string(), "n".into(), "total".into()]];
    for row in &lake {
        expected.push(
            ["kind", "n", "total"]
                .iter()
                .map(|c| row[*c].as_str().unwrap().to_string())
                .collect(),
        );
    }
    assert_eq!(written, expected);
    assert_eq!(written[1], ["a", "2", "15"]);

    // No row matched: the Parquet file is still written, with its columns.
    let parquet = sb.path(&format!("reports/{day}/big.parquet"));
    let columns = duck_rows(
        &sb.path("scratch.duckdb"),
        &format!(
            "SELECT name FROM parquet_schema('{}') WHERE name <> 'arrow_schema' AND num_children IS NULL ORDER BY name",
            parquet.display()
        ),
    );
    assert_eq!(
        columns,
        vec![vec![s("amount")], vec![s("id")], vec![s("kind")]]
    );

    // New data, and the report rerun by name: the same file now holds the new rows.
    sb.write("drops/b.csv", "id,kind,amount\n5,b,500\n1,a,150\n");
    sb.sync_json();
    sb.ok(&["report", "big_ones"]);
    assert_eq!(
        duck_rows(
            &sb.path("scratch.duckdb"),
            &format!(
                "SELECT id::VARCHAR, kind, amount::VARCHAR FROM read_parquet('{}') ORDER BY id",
                parquet.display()
            )
        ),
        vec![
            vec![s("1"), s("a"), s("150")],
            vec![s("5"), s("b"), s("500")]
        ]
    );

    // Every run is in the history, the failure with its error.
    let runs: serde_json::Value =
        serde_json::from_str(&sb.ok(&["--json", "runs", "--source", "reports"])).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 4, "{runs:?}");
    let broken = runs.iter().find(|r| r["table"] == "broken").unwrap();
    assert_eq!(broken["outcome"], "failed");
    assert!(broken["error"].as_str().unwrap().contains("nothing_here"));
    assert!(runs
        .iter()
        .filter(|r| r["table"] == "big_ones")
        .all(|r| r["outcome"] == "ok"));

    let out = sb.run(&["report", "nope"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no report named `nope` (have: big_ones, broken, by_kind)"));
}

#[test]
fn serve_runs_reports_on_schedule_once_per_tick_across_processes() {
    let sb = Sandbox::new();
    sb.config(&format!(
        r#"{SOURCE}
[reports.ticks]
sql = "SELECT count(*) AS n FROM s.t"
out = "reports/{{name}}-{{date}}-{{time}}.json"
schedule = "*/2 * * * * *"
"#
    ));
    sb.write("drops/a.csv", "id,kind,amount\n1,a,10\n2,b,20\n");
    sb.sync_json();
    let one = Serving::start_as(&sb, "one", &[], &[]);
    let two = Serving::start_as(&sb, "two", &[], &[]);
    let folder = sb.path("reports");
    let written = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&folder)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                    .filter(|n| n.ends_with(".json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while written().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "no reports written:\n{}\n{}",
            one.log(),
            two.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, _, _) = one.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    let (code, summary, _) = two.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    assert!(
        summary
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["source"] == "reports.ticks"),
        "{summary}"
    );

    let files = written();
    let content = std::fs::read_to_string(folder.join(&files[0])).unwrap();
    let rows: serde_json::Value = serde_json::from_str(&content).unwrap();
    assert_eq!(rows, serde_json::json!([{"n": 2}]), "{content}");
    // Each tick ran once, in one of the processes: as many scheduled runs as files, each
    // file a tick of its own.
    let runs: serde_json::Value =
        serde_json::from_str(&sb.ok(&["--json", "runs", "--source", "reports"])).unwrap();
    let runs: Vec<&serde_json::Value> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"] == "schedule")
        .collect();
    assert!(runs.iter().all(|r| r["outcome"] == "ok"), "{runs:?}");
    assert_eq!(runs.len(), files.len(), "{runs:?}\n{files:?}");
}
