//! Unattended runs survive bad input and keep secrets: a file that cannot be read is
//! quarantined whole and the files after it land; no output repeats a secret's value; errors
//! carry no backtraces.

mod common;

use std::io::Write;

use common::mariadb::MariaDb;
use common::{s, Sandbox};

const DECLARED: &str = r#"
[sources.s]
kind = "files"
url = "drops/"
table = "t"
columns = ["id bigint", "v text"]
[sources.s.tables.t]
primary_key = ["id"]
"#;

fn gzip(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

/// A truncated `.gz`, a Parquet file that is not one, and a header with a column the
/// declaration lacks: each is one quarantined reject naming why, the good files around them
/// land, a rerun does not read them again, and a corrected drop (a new version) lands.
#[test]
fn an_unreadable_file_is_quarantined_whole_and_the_rest_land() {
    let sb = Sandbox::new();
    sb.config(DECLARED);
    sb.write("drops/1.csv", "id,v\n1,a\n2,b\n");
    let rows: String = (0..5000).map(|i| format!("{},x{i}\n", i + 100)).collect();
    let whole = gzip(&format!("id,v\n{rows}"));
    let truncated = &whole[..whole.len() / 2];
    sb.write("drops/2.csv.gz", truncated);
    sb.write("drops/3.parquet", b"PAR1 this is not parquet at all");
    sb.write("drops/4.csv", "id,v,extra\n4,d,z\n");
    sb.write("drops/5.csv", "id,v\n5,e\n");
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 0, "{report}");
    let t = &report["tables"][0];
    assert_eq!(t["extract"]["unreadable"], 3, "{report}");
    assert_eq!(t["extract"]["files"], 5, "{report}");
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, v FROM s.t ORDER BY id"),
        vec![
            vec![s("1"), s("a")],
            vec![s("2"), s("b")],
            vec![s("5"), s("e")]
        ]
    );
    let q = sb.query_lake("SELECT file, reason FROM s.t__quarantine ORDER BY file");
    let files: Vec<&str> = q
        .iter()
        .map(|r| r["file"].as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    assert_eq!(files, ["2.csv.gz", "3.parquet", "4.csv"], "{q:?}");
    assert!(
        !q[0]["reason"].as_str().unwrap().contains("header"),
        "{q:?}"
    );
    for r in &q {
        let reason = r["reason"].as_str().unwrap();
        assert!(reason.contains("the whole file is unreadable"), "{reason}");
    }
    assert!(q[2]["reason"].as_str().unwrap().contains("extra"), "{q:?}");
    // Nothing is read again; a corrected drop is a new version and lands.
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(
        (code, &report["tables"][0]["extract"]["files"]),
        (0, &serde_json::json!(0)),
        "{report}"
    );
    sb.write("drops/4.csv", "id,v\n4,d\n");
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, v FROM s.t ORDER BY id"),
        vec![
            vec![s("1"), s("a")],
            vec![s("2"), s("b")],
            vec![s("4"), s("d")],
            vec![s("5"), s("e")]
        ]
    );
}

/// Errors from the lake (here a corrupt Delta log) reach the user as a message, without the
/// backtrace the Delta kernel captures when RUST_BACKTRACE is set, and without colour codes
/// when stderr is not a terminal.
#[test]
fn errors_carry_no_backtrace() {
    let sb = Sandbox::new();
    sb.config(DECLARED);
    sb.write("drops/1.csv", "id,v\n1,a\n");
    sb.sync_json();
    let log = sb.path("lake/changes/s/t/_delta_log");
    let last = std::fs::read_dir(&log)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .max()
        .unwrap();
    std::fs::write(&last, "{ this is not a delta action").unwrap();
    let out = sb.run(&["sync"], &[("RUST_BACKTRACE", "1")]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(!all.contains('\u{1b}'), "colour codes in a pipe: {all:?}");
    assert!(
        !all.contains("with_backtrace")
            && !all.contains("stack backtrace")
            && !all.contains("   0: "),
        "a backtrace reached the user:\n{all}"
    );
}

/// A password written in place of `{ env = ... }` is refused without being repeated.
#[test]
fn a_password_in_place_is_never_repeated() {
    let sb = Sandbox::new();
    sb.config(
        "[sources.shop]\nkind = \"mysql\"\nurl = \"mysql://app@127.0.0.1:1/shop\"\npassword = \"hunter2-in-config\"\n",
    );
    for cmd in [&["check"][..], &["sync"], &["status"], &["--json", "sync"]] {
        let out = sb.run(cmd, &[]);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {all}");
        assert!(all.contains("password"), "{cmd:?} names the field: {all}");
        assert!(
            !all.contains("hunter2"),
            "{cmd:?} repeated the secret: {all}"
        );
    }
}

/// Every file under `dir` whose bytes hold `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

/// A planted password, given as `{ env = ... }`, appears in no output of any command (debug
/// logs included, failures included) and in no file sluice writes.
#[test]
fn a_planted_password_appears_nowhere() {
    const SECRET: &str = "planted-Secret-7f3a9";
    let db = MariaDb::start(&[]);
    db.sql(&format!(
        "CREATE USER app@'%' IDENTIFIED BY '{SECRET}'; GRANT ALL ON *.* TO app@'%';
         CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t VALUES (1, 'a')"
    ));
    let sb = Sandbox::new();
    let url = db.url().replace("root@", "app@");
    sb.config(&format!(
        "[sources.shop]\nkind = \"mysql\"\nurl = \"{url}\"\nmode = \"cdc\"\npassword = {{ env = \"SHOP_PW\" }}\n"
    ));
    let good = [("SHOP_PW", SECRET)];
    let wrong = [("SHOP_PW", "planted-Wrong-0c1d")];
    type Env<'a> = &'a [(&'a str, &'a str)];
    let runs: Vec<(Vec<&str>, Env)> = vec![
        (vec!["check"], &good),
        (vec!["--log", "debug", "sync"], &good),
        (vec!["--json", "--log", "trace", "sync"], &good),
        (vec!["status"], &good),
        (vec!["--json", "status"], &good),
        (vec!["query", "SELECT * FROM shop.t"], &good),
        (vec!["schema", "show", "shop.t"], &good),
        (vec!["--log", "debug", "sync"], &wrong),
        (vec!["--json", "sync"], &wrong),
        (vec!["check"], &wrong),
        (vec!["sync"], &[]),
    ];
    for (args, env) in runs {
        let out = sb.run(&args, env);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for planted in [SECRET, "planted-Wrong-0c1d"] {
            assert!(
                !all.contains(planted),
                "{args:?} printed a password:\n{all}"
            );
        }
    }
    assert_eq!(sb.duck("SELECT v FROM shop.t"), vec![vec![s("a")]]);
    // The test server has no TLS: the password crossed in the clear, and sluice says so once
    // per source (over every connection of the run), naming the production setting.
    db.sql("INSERT INTO t VALUES (2, 'b')");
    let out = sb.run(&["sync"], &good);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("ssl_mode = \"verify_identity\"").count(),
        1,
        "{err}"
    );
    assert!(err.contains("unencrypted"), "{err}");
    let holding = files_holding(sb.dir.path(), SECRET.as_bytes());
    assert!(
        holding.is_empty(),
        "files holding the password: {holding:?}"
    );
}

/// Table names that mean something in a path or a URL land each in its own lake folder:
/// `../other/orders` does not write into source `other`'s `orders`, `?` and `#` do not cut
/// the name short, `%` escapes nothing, `..` is a name; each table holds its own row in the
/// lake and the warehouse.
#[test]
fn hostile_table_names_stay_in_their_own_folders() {
    let db = MariaDb::start(&[]);
    let long = "n".repeat(64);
    let names = [
        "../other/orders",
        "a?b",
        "a#b",
        "100%",
        "%2F",
        "..",
        "ünï ñ",
        long.as_str(),
        "orders",
    ];
    for (i, n) in names.iter().enumerate() {
        db.sql(&format!(
            "CREATE TABLE `{n}` (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO `{n}` VALUES ({i}, 'from {i}')"
        ));
    }
    let sb = Sandbox::new();
    sb.write("drops/o.csv", "id,v\n100,other's own\n");
    sb.config(&format!(
        "{}[sources.other]\nkind = \"files\"\nurl = \"drops/\"\ntable = \"orders\"\ncolumns = [\"id int\", \"v text\"]\n",
        db.config("snapshot", "")
    ));
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 0, "{report}");
    for (i, n) in names.iter().enumerate() {
        let t = common::table_of(&report, "shop", n);
        assert!(t["error"].is_null(), "{n}: {report}");
        assert_eq!(t["extract"]["rows"], 1, "{n}: {report}");
        let rows = sb.query_lake(&format!("SELECT id, v FROM shop.\"{n}\""));
        assert_eq!(
            rows,
            vec![serde_json::json!({"id": i, "v": format!("from {i}")})],
            "{n}"
        );
    }
    assert_eq!(
        sb.query_lake("SELECT id, v FROM other.orders"),
        vec![serde_json::json!({"id": 100, "v": "other's own"})]
    );
    // Every folder under the lake is one of the two sources'.
    let mut top: Vec<String> = std::fs::read_dir(sb.path("lake/changes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["other", "shop"]);
    assert_eq!(
        std::fs::read_dir(sb.path("lake/changes/shop"))
            .unwrap()
            .count(),
        names.len()
    );
    assert_eq!(
        std::fs::read_dir(sb.path("lake/changes/other"))
            .unwrap()
            .count(),
        1
    );
}

/// A table wider than the 32 columns delta-rs keeps statistics for by default still has
/// them on `_sluice_seq` (a load picks its files by them instead of reading the whole
/// change log).
#[test]
fn wide_tables_keep_statistics_on_the_change_columns() {
    let sb = Sandbox::new();
    let names: Vec<String> = (1..=40).map(|i| format!("c{i:02}")).collect();
    let columns: Vec<String> = std::iter::once("\"id bigint\"".to_string())
        .chain(names.iter().map(|n| format!("\"{n} text\"")))
        .collect();
    sb.config(&format!(
        "[sources.w]\nkind = \"files\"\nurl = \"drops/\"\ntable = \"t\"\ncolumns = [{}]\n[sources.w.tables.t]\nprimary_key = [\"id\"]\n",
        columns.join(", ")
    ));
    let row = |id: i64| {
        std::iter::once(id.to_string())
            .chain(names.iter().map(|n| format!("{n}-{id}")))
            .collect::<Vec<_>>()
            .join(",")
    };
    let header = format!("id,{}\n", names.join(","));
    sb.write("drops/1.csv", format!("{header}{}\n{}\n", row(1), row(2)));
    sb.sync_json();
    sb.write("drops/2.csv", format!("{header}{}\n", row(3)));
    sb.sync_json();
    let mut seq_stats = Vec::new();
    for e in std::fs::read_dir(sb.path("lake/changes/w/t/_delta_log")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        for line in std::fs::read_to_string(&p).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(stats) = action["add"]["stats"].as_str() {
                let stats: serde_json::Value = serde_json::from_str(stats).unwrap();
                seq_stats.push((
                    stats["minValues"]["_sluice_seq"].as_i64(),
                    stats["maxValues"]["_sluice_seq"].as_i64(),
                ));
            }
        }
    }
    seq_stats.sort();
    assert_eq!(seq_stats, vec![(Some(1), Some(2)), (Some(3), Some(3))]);
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, c40 FROM w.t ORDER BY id"),
        vec![
            vec![s("1"), s("c40-1")],
            vec![s("2"), s("c40-2")],
            vec![s("3"), s("c40-3")]
        ]
    );
}

/// Records past `max_record_bytes` are quarantined, never held whole: an unterminated CSV
/// quote (the rows before it land), a JSON line far too long (the lines after it land too),
/// and a gzip bomb of 256 MB with no line break, which stops at the limit.
#[test]
fn oversized_records_are_quarantined_not_held() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[sources.c]
kind = "files"
url = "csv/"
table = "t"
columns = ["id bigint", "v text"]
max_record_bytes = 4096
[sources.j]
kind = "files"
url = "json/"
format = "json"
table = "t"
columns = ["id bigint", "v text"]
max_record_bytes = 4096
"#,
    );
    let mut csv = String::from("id,v\n1,a\n2,\"never closed\n");
    for i in 0..2000 {
        csv += &format!("{i},inside the open quote\n");
    }
    sb.write("csv/q.csv", csv);
    let long = "x".repeat(100_000);
    sb.write(
        "json/a.json",
        format!("{{\"id\": 1, \"v\": \"a\"}}\n{{\"id\": 2, \"v\": \"{long}\"}}\n{{\"id\": 3, \"v\": \"c\"}}\n"),
    );
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![b'z'; 1 << 20];
    for _ in 0..256 {
        bomb.write_all(&chunk).unwrap();
    }
    sb.write("json/b.json.gz", bomb.finish().unwrap());
    let started = std::time::Instant::now();
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 0, "{report}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, v FROM c.t"),
        vec![vec![s("1"), s("a")]]
    );
    // (ids and lengths only: a failure must not print the long value)
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, length(v)::VARCHAR FROM j.t ORDER BY id"),
        vec![vec![s("1"), s("1")], vec![s("3"), s("1")]]
    );
    for (source, files) in [("c", vec!["q.csv"]), ("j", vec!["a.json", "b.json.gz"])] {
        let q = sb.query_lake(&format!(
            "SELECT file, raw, reason FROM {source}.t__quarantine ORDER BY file"
        ));
        let got: Vec<&str> = q
            .iter()
            .map(|r| r["file"].as_str().unwrap().rsplit('/').next().unwrap())
            .collect();
        assert_eq!(got, files, "{q:?}");
        for r in &q {
            let reason = r["reason"].as_str().unwrap();
            assert!(reason.contains("longer than 4096 bytes"), "{reason}");
            assert!(
                r["raw"].as_str().unwrap().len() <= 1100,
                "a quarantined record is held whole: {}",
                r["raw"].as_str().unwrap().len()
            );
        }
    }
}

/// 60,000 rows with a 40 KB field (2.4 GB of text, past the 2 GiB one Arrow array holds):
/// batches are bounded by bytes as well as rows, so they land instead of overflowing.
#[test]
fn batches_are_bounded_by_bytes() {
    let sb = Sandbox::new();
    sb.config(
        "[sources.big]\nkind = \"files\"\nurl = \"drops/\"\ntable = \"t\"\ncolumns = [\"id bigint\", \"v text\"]\n",
    );
    let path = sb.path("drops/big.csv");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        f.write_all(b"id,v\n").unwrap();
        let field = "v".repeat(40_000);
        for i in 0..60_000 {
            writeln!(f, "{i},{field}").unwrap();
        }
    }
    let earlier = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(earlier)
        .unwrap();
    let (code, report) = sb.sync_code(&["--lake-only"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["tables"][0]["extract"]["rows"], 60_000, "{report}");
    let got = sb.query_lake("SELECT count(*) AS n, sum(length(v)) AS chars FROM big.t__changes");
    assert_eq!(
        got,
        vec![serde_json::json!({"n": 60_000, "chars": 2_400_000_000i64})]
    );
    let _ = std::fs::remove_file(&path);
}
