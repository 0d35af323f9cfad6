//! Files at scale and in every format: thousands of small files land exactly once in a few
//! lake commits (a crash between commits re-reads only what was not committed, a late file
//! in an old folder is found), JSON keys first seen past the sample go through the schema
//! gate, columns are renamed, dropped and typed as declared, and ORC files of every
//! compression land value by value.

mod common;

use std::process::Command;

use common::{s, Sandbox};

const FOLDERS: usize = 50;
const FILES_PER_FOLDER: usize = 100;
const ROWS_PER_FILE: usize = 3;

fn folder(f: usize) -> String {
    let day = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Days::new(f as u64);
    day.format("%Y-%m-%d").to_string()
}

/// The rows of file `n` (numbered across folders): `(id, v)`.
fn rows_of(n: usize) -> Vec<(usize, String)> {
    (0..ROWS_PER_FILE)
        .map(|k| (n * ROWS_PER_FILE + k, format!("file{n}-row{k}")))
        .collect()
}

fn write_file(sb: &Sandbox, rel: &str, rows: &[(usize, String)]) {
    let mut text = String::from("id,v\n");
    for (id, v) in rows {
        text += &format!("{id},{v}\n");
    }
    sb.write(rel, text);
}

/// Lake commits that landed files, and the files each took (from the commit metadata).
fn file_commits(sb: &Sandbox) -> Vec<u64> {
    let log = sb.path("lake/changes/s/t/_delta_log");
    let mut names: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json") && !n.starts_with('_'))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        let text = std::fs::read_to_string(log.join(&n)).unwrap();
        for line in text.lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(files) = action["commitInfo"]["sluice"]["files"].as_u64() {
                out.push(files);
            }
        }
    }
    out
}

#[test]
fn five_thousand_small_files_land_once_in_few_commits_and_a_crash_rereads_only_the_rest() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[sources.s]
kind = "files"
url = "drops/{date}/"
table = "t"
files_per_commit = 500
load = "merge"
[sources.s.tables.t]
primary_key = ["id"]
"#,
    );
    let mut expected = Vec::new();
    for f in 0..FOLDERS {
        for i in 0..FILES_PER_FOLDER {
            let n = f * FILES_PER_FOLDER + i;
            let rows = rows_of(n);
            write_file(&sb, &format!("drops/{}/part-{i:03}.csv", folder(f)), &rows);
            expected.extend(rows);
        }
    }
    let total_files = FOLDERS * FILES_PER_FOLDER;

    // A crash right after the third commit: 1,500 files are in the lake, exactly once.
    let out = sb.run(
        &["sync", "--lake-only"],
        &[("SLUICE_FAILPOINT", "after-lake-commit@3")],
    );
    assert!(!out.status.success(), "the failpoint aborts the sync");
    assert_eq!(file_commits(&sb), vec![500, 500, 500]);
    let lake = sb.query_lake("SELECT count(*) AS n, count(DISTINCT id) AS d FROM s.t__changes");
    assert_eq!(lake[0]["n"], 1500 * ROWS_PER_FILE as u64, "{lake:?}");
    assert_eq!(lake[0]["d"], 1500 * ROWS_PER_FILE as u64, "{lake:?}");

    // The rerun reads only the 3,500 files the crash left, and loads the warehouse.
    let r = sb.sync_json();
    let extract = &r["tables"][0]["extract"];
    assert_eq!(extract["files"], (total_files - 1500) as u64, "{r}");
    assert_eq!(
        extract["rows"],
        ((total_files - 1500) * ROWS_PER_FILE) as u64,
        "{r}"
    );
    assert_eq!(file_commits(&sb), vec![500; 10], "ten commits of 500 files");
    let want: Vec<Vec<Option<String>>> = expected
        .iter()
        .map(|(id, v)| vec![Some(id.to_string()), Some(v.clone())])
        .collect();
    assert_eq!(sb.duck("SELECT id::VARCHAR, v FROM s.t ORDER BY id"), want);
    let lake = sb.query_lake("SELECT count(*) AS n FROM s.t__changes");
    assert_eq!(lake[0]["n"], expected.len() as u64, "nothing doubled");

    // Nothing new: nothing read.
    let again = sb.sync_json();
    assert_eq!(again["tables"][0]["extract"]["files"], 0, "{again}");

    // A late file in an old folder is found, and only it is read.
    let late = vec![
        (1_000_000, "late-a".to_string()),
        (1_000_001, "late-b".to_string()),
    ];
    write_file(&sb, &format!("drops/{}/late.csv", folder(3)), &late);
    let r = sb.sync_json();
    assert_eq!(r["tables"][0]["extract"]["files"], 1, "{r}");
    assert_eq!(r["tables"][0]["extract"]["rows"], 2, "{r}");
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, v FROM s.t WHERE id >= 1000000 ORDER BY id"),
        vec![
            vec![s("1000000"), s("late-a")],
            vec![s("1000001"), s("late-b")]
        ]
    );
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM s.t"),
        vec![vec![Some((expected.len() + 2).to_string())]]
    );
}

/// Day 1: 1,000 events without `coupon`.
fn first_day(sb: &Sandbox) {
    let mut day1 = String::new();
    for i in 1..=1000 {
        day1 += &format!("{{\"id\": {i}, \"v\": \"a{i}\"}}\n");
    }
    sb.write("ev/20260101/events.jsonl", day1);
}

/// Day 2: 6,000 events where `coupon` first appears at row 5,000, far past the 1,000 rows
/// sampled.
fn late_key_day(sb: &Sandbox) {
    let mut day2 = String::new();
    for i in 1001..=7000 {
        match i - 1000 {
            5000 => day2 += &format!("{{\"id\": {i}, \"v\": \"b{i}\", \"coupon\": \"SAVE10\"}}\n"),
            _ => day2 += &format!("{{\"id\": {i}, \"v\": \"b{i}\"}}\n"),
        }
    }
    sb.write("ev/20260102/events.jsonl", day2);
}

fn late_key_config(policy: &str) -> String {
    format!(
        "[sources.j]\nkind = \"files\"\nurl = \"ev/{{date}}/\"\ntable = \"events\"\nschema_changes = \"{policy}\"\n[sources.j.tables.events]\nprimary_key = [\"id\"]\n"
    )
}

#[test]
fn a_json_key_first_seen_at_row_5000_is_evolved_or_halts_by_policy() {
    for policy in ["evolve", "halt"] {
        let sb = Sandbox::new();
        sb.config(&late_key_config(policy));
        first_day(&sb);
        assert_eq!(sb.sync_code(&[]).0, 0);
        late_key_day(&sb);
        let (code, r) = sb.sync_code(&[]);
        let extract = &r["tables"][0]["extract"];
        // The lake took the column and every row: nothing was quarantined.
        assert_eq!(extract["rows"], 6000, "{policy}: {r}");
        assert_eq!(extract["rejects"], 0, "{policy}: {r}");
        let changes = extract["schema_changes"].to_string();
        assert!(changes.contains("coupon"), "{policy}: {r}");
        let lake = sb.query_lake(
            "SELECT id, coupon FROM j.events__changes WHERE coupon IS NOT NULL ORDER BY id",
        );
        assert_eq!(lake.len(), 1, "{lake:?}");
        assert_eq!(lake[0]["id"], 5000 + 1000);
        assert_eq!(lake[0]["coupon"], "SAVE10");
        match policy {
            "evolve" => {
                assert_eq!(code, 0, "{r}");
                assert_eq!(
                    sb.duck("SELECT id::VARCHAR, coupon FROM j.events WHERE coupon IS NOT NULL"),
                    vec![vec![s("6000"), s("SAVE10")]]
                );
                assert_eq!(
                    sb.duck("SELECT count(*)::VARCHAR FROM j.events"),
                    vec![vec![s("7000")]]
                );
            }
            _ => {
                assert_eq!(code, 3, "a halted table exits 3: {r}");
                let halted = r["tables"][0]["halted"].as_str().unwrap_or_default();
                assert!(halted.contains("coupon"), "{r}");
                assert_eq!(
                    sb.duck("SELECT count(*)::VARCHAR FROM j.events"),
                    vec![vec![s("1000")]],
                    "nothing of day 2 loaded while halted"
                );
            }
        }
    }
}

#[test]
fn columns_are_renamed_dropped_and_typed_as_declared() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[sources.m]
kind = "files"
url = "in/"
table = "orders"
columns_map = { "Cust ID" = "customer_id", "Order Total" = "total" }
drop_columns = ["internal note"]
column_types = { total = "decimal(12,2)", customer_id = "bigint" }
[sources.m.tables.orders]
primary_key = ["customer_id"]
"#,
    );
    sb.write(
        "in/a.csv",
        "Cust ID,name,internal note,Order Total\n1,ann,secret-1,10.50\n2,bob,secret-2,7\n3,cy,secret-3,not a number\n",
    );
    sb.write(
        "in/b.jsonl",
        "{\"Cust ID\": 4, \"name\": \"dee\", \"internal note\": \"secret-4\", \"Order Total\": 99.99}\n",
    );
    let r = sb.sync_json();
    let extract = &r["tables"][0]["extract"];
    assert_eq!(extract["rows"], 3, "{r}");
    assert_eq!(extract["rejects"], 1, "{r}");
    let columns = sb.duck(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'm' AND table_name = 'orders' AND column_name NOT LIKE '\\_sluice%' ESCAPE '\\' ORDER BY ordinal_position",
    );
    assert_eq!(
        columns,
        vec![
            vec![s("customer_id"), s("BIGINT")],
            vec![s("name"), s("VARCHAR")],
            vec![s("total"), s("DECIMAL(12,2)")]
        ]
    );
    assert_eq!(
        sb.duck("SELECT customer_id::VARCHAR, name, total::VARCHAR FROM m.orders ORDER BY 1"),
        vec![
            vec![s("1"), s("ann"), s("10.50")],
            vec![s("2"), s("bob"), s("7.00")],
            vec![s("4"), s("dee"), s("99.99")]
        ]
    );
    // The value off the declared type is quarantined with its column named as in the file.
    let q = sb.query_lake("SELECT line, \"column\", reason FROM m.orders__quarantine");
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0]["line"], 4, "{q:?}");
    assert_eq!(q[0]["column"], "Order Total", "{q:?}");
    assert!(
        q[0]["reason"].as_str().unwrap().contains("not a number"),
        "{q:?}"
    );
    // Nothing of the dropped column reached the lake.
    let lake = sb.query_lake("SELECT * FROM m.orders__changes LIMIT 1");
    assert!(
        lake[0]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.contains("note")),
        "{lake:?}"
    );

    // Two file columns renamed to one name are refused, naming the key.
    sb.config(
        "[sources.m]\nkind = \"files\"\nurl = \"in/\"\ncolumns_map = { a = \"x\", b = \"x\" }\n",
    );
    let out = sb.run(&["check"], &[]);
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("columns_map"), "{text}");
}

/// ORC files written by Apache ORC's own C++ writer (through pyarrow), one per compression,
/// land value by value; a file that is not ORC is refused with its name and reason.
#[test]
fn orc_files_of_every_compression_land_value_by_value() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[sources.o]
kind = "files"
url = "orc/"
table = "items"
[sources.o.tables.items]
primary_key = ["id"]
"#,
    );
    let dir = sb.path("orc");
    std::fs::create_dir_all(&dir).unwrap();
    let script = r#"
import datetime, decimal, os, sys
import pyarrow as pa, pyarrow.orc as orc
out = sys.argv[1]
for n, comp in enumerate(["uncompressed", "zlib", "snappy", "lz4", "zstd"]):
    ids = list(range(n * 1000, n * 1000 + 1000))
    t = pa.table({
        "id": pa.array(ids, pa.int64()),
        "small": pa.array([i % 100 - 50 for i in ids], pa.int8()),
        "name": pa.array([None if i % 7 == 0 else f"name-{i}" for i in ids], pa.string()),
        "price": pa.array([decimal.Decimal(i * 125) / 100 for i in ids], pa.decimal128(10, 2)),
        "ratio": pa.array([i / 8 for i in ids], pa.float64()),
        "flag": pa.array([i % 2 == 0 for i in ids], pa.bool_()),
        "day": pa.array([datetime.date(2026, 1, 1) + datetime.timedelta(days=i % 400) for i in ids], pa.date32()),
        "at": pa.array([datetime.datetime(9999, 12, 31, 23, 59, 59) if i % 500 == 1 else datetime.datetime(2026, 1, 1) + datetime.timedelta(seconds=i) for i in ids], pa.timestamp("us")),
    })
    orc.write_table(t, os.path.join(out, f"part-{comp}.orc"), compression=comp)
"#;
    let status = Command::new("python3")
        .args(["-c", script, dir.to_str().unwrap()])
        .status()
        .expect("python3 with pyarrow (scripts/test.sh installs it)");
    assert!(status.success());
    // Files written a while ago (sluice waits for fresh ones to settle).
    for e in std::fs::read_dir(&dir).unwrap() {
        common::delivered_earlier(&e.unwrap().path());
    }
    sb.write("orc/zz-broken.orc", b"ORC but not really an ORC file");
    let r = sb.sync_json();
    let extract = &r["tables"][0]["extract"];
    assert_eq!(extract["rows"], 5000, "{r}");
    assert_eq!(extract["unreadable"], 1, "{r}");
    let q = sb.query_lake("SELECT file, reason FROM o.items__quarantine");
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(
        q[0]["file"].as_str().unwrap().ends_with("zz-broken.orc"),
        "{q:?}"
    );
    assert!(q[0]["reason"].as_str().unwrap().contains("ORC"), "{q:?}");

    let got = sb.duck(
        "SELECT id::VARCHAR, small::VARCHAR, name, price::VARCHAR, ratio::VARCHAR, flag::VARCHAR, day::VARCHAR, \"at\"::VARCHAR FROM o.items ORDER BY id",
    );
    let mut want = Vec::new();
    for i in 0..5000i64 {
        let day = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
            + chrono::Days::new((i % 400) as u64);
        let at = match i % 500 {
            1 => "9999-12-31 23:59:59".to_string(),
            _ => (chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                + chrono::Duration::seconds(i))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        };
        let ratio = i as f64 / 8.0;
        want.push(vec![
            Some(i.to_string()),
            Some((i % 100 - 50).to_string()),
            (i % 7 != 0).then(|| format!("name-{i}")),
            Some(format!("{}.{:02}", i * 125 / 100, i * 125 % 100)),
            Some(if ratio.fract() == 0.0 {
                format!("{ratio:.1}")
            } else {
                ratio.to_string()
            }),
            Some((i % 2 == 0).to_string()),
            Some(day.format("%Y-%m-%d").to_string()),
            Some(at),
        ]);
    }
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
}

/// `sluice lake compact` rewrites the many small data files of one-file commits into few,
/// and every query gives what it gave before: the latest version, an earlier version by
/// time travel, positions (a rerun reads nothing) and the warehouse load after it.
#[test]
fn compaction_leaves_every_query_result_unchanged() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[lake]
compression = "snappy"
[sources.s]
kind = "files"
url = "drops/{date}/"
table = "t"
files_per_commit = 1
load = ["merge", "append"]
[sources.s.tables.t]
primary_key = ["id"]
"#,
    );
    for n in 0..30 {
        // Keys repeat across files: the merge keeps each key's latest value.
        let rows: Vec<(usize, String)> = (0..4)
            .map(|k| ((n * 4 + k) % 50, format!("v{n}-{k}")))
            .collect();
        write_file(&sb, &format!("drops/{}/f{n:02}.csv", folder(n / 10)), &rows);
    }
    sb.ok(&["sync", "--lake-only"]);
    let queries = [
        "SELECT id, v, _sluice_seq FROM s.t__changes ORDER BY _sluice_seq",
        "SELECT id, count(*) AS n, max(_sluice_seq) AS last FROM s.t__changes GROUP BY id ORDER BY id",
        "SELECT * FROM s.t ORDER BY id",
    ];
    let before: Vec<_> = queries.iter().map(|q| sb.query_lake(q)).collect();
    let at_five = |sb: &Sandbox| {
        let out = sb.ok(&[
            "--json",
            "query",
            "--as-of",
            "5",
            "SELECT count(*) AS n, sum(id) AS s FROM s.t__changes",
        ]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let old = at_five(&sb);
    let files = |sb: &Sandbox| {
        walk(&sb.path("lake/changes/s/t"))
            .into_iter()
            .filter(|p| p.ends_with(".parquet"))
            .count()
    };
    assert_eq!(files(&sb), 30, "one data file per one-file commit");

    let out = sb.ok(&["--json", "lake", "compact", "s.t"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["files_before"], 30, "{report}");
    assert!(
        report["files_after"].as_u64().unwrap() <= 3,
        "one per ingestion day: {report}"
    );
    assert_eq!(report["files_removed"], 30, "{report}");
    assert_eq!(report["rows"], 120, "{report}");

    let after: Vec<_> = queries.iter().map(|q| sb.query_lake(q)).collect();
    assert_eq!(after, before, "the same results from the compacted files");
    assert_eq!(
        at_five(&sb),
        old,
        "an earlier version still reads as it was"
    );
    // Positions kept: nothing is read again; then the warehouse loads from compacted files.
    let r = sb.sync_json();
    assert_eq!(r["tables"][0]["extract"]["files"], 0, "{r}");
    let lake_latest: Vec<Vec<Option<String>>> = sb
        .query_lake("SELECT id, v FROM s.t ORDER BY id")
        .iter()
        .map(|r| vec![Some(r["id"].to_string()), r["v"].as_str().map(String::from)])
        .collect();
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, v FROM s.t ORDER BY id"),
        lake_latest
    );
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM s.t_append"),
        vec![vec![s("120")]],
        "every change appended once"
    );
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.to_string_lossy().to_string());
        }
    }
    out
}
