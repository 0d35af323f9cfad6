//! Files land once per version, whole, under names of their own: a file re-dropped with new
//! content lands again, one still being written waits, folders wait for their ready marker,
//! warehouse names that map alike stay apart, malformed array elements and invalid UTF-8
//! are quarantined without taking the rest, NULL keys are refused, Parquet INT96 timestamps
//! keep their dates.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use common::{s, Sandbox};

const KEYED: &str = r#"
[sources.s]
kind = "files"
url = "drops/"
table = "t"
columns = ["id bigint", "v text"]
load = ["merge", "append"]
[sources.s.tables.t]
primary_key = ["id"]
"#;

fn merged(sb: &Sandbox) -> Vec<Vec<Option<String>>> {
    sb.duck("SELECT id::VARCHAR, v FROM s.t ORDER BY id")
}

#[test]
fn a_file_dropped_again_with_new_content_lands_again() {
    let sb = Sandbox::new();
    sb.config(KEYED);
    sb.write("drops/a.csv", "id,v\n1,a\n2,b\n");
    assert_eq!(sb.sync_json()["tables"][0]["extract"]["files"], 1);
    // Same name, other content.
    sb.write("drops/a.csv", "id,v\n1,a2\n3,c\n");
    let r = sb.sync_json();
    assert_eq!(r["tables"][0]["extract"]["files"], 1, "{r}");
    assert_eq!(r["tables"][0]["extract"]["rows"], 2, "{r}");
    assert_eq!(
        merged(&sb),
        vec![
            vec![s("1"), s("a2")],
            vec![s("2"), s("b")],
            vec![s("3"), s("c")]
        ]
    );
    assert_eq!(
        sb.sync_json()["tables"][0]["extract"]["files"],
        0,
        "the same version again is nothing new"
    );
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM s.t_append"),
        vec![vec![s("4")]]
    );
}

/// A file still being written is not read (and never read half): the sync that sees it grow
/// leaves it for the next, which reads it whole.
#[test]
fn a_file_still_being_written_waits_until_it_settles() {
    let sb = Sandbox::new();
    sb.config(KEYED);
    let path = sb.write_fresh("drops/g.csv", "id,v\n");
    let writer = std::thread::spawn(move || {
        for i in 1..=30 {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            writeln!(f, "{i},row-{i}").unwrap();
            drop(f);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let r = sb.sync_json();
    assert_eq!(r["tables"][0]["extract"]["files"], 0, "{r}");
    assert_eq!(r["tables"][0]["extract"]["waiting"], 1, "{r}");
    writer.join().unwrap();
    // Settled: read whole.
    std::thread::sleep(Duration::from_millis(2200));
    let r = sb.sync_json();
    assert_eq!(r["tables"][0]["extract"]["files"], 1, "{r}");
    assert_eq!(r["tables"][0]["extract"]["rows"], 30, "{r}");
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM s.t"),
        vec![vec![s("30")]]
    );
}

/// With `ready_marker`, a folder's files are taken once the producer wrote the marker.
#[test]
fn folders_wait_for_their_ready_marker() {
    let sb = Sandbox::new();
    sb.config(&KEYED.replace(
        "url = \"drops/\"",
        "url = \"drops/{date}/\"\nready_marker = \"_SUCCESS\"",
    ));
    sb.write("drops/20240101/a.csv", "id,v\n1,a\n");
    sb.write("drops/20240101/_SUCCESS", "");
    sb.write("drops/20240102/b.csv", "id,v\n2,b\n");
    let r = sb.sync_json();
    assert_eq!(r["tables"][0]["extract"]["files"], 1, "{r}");
    sb.write("drops/20240102/_SUCCESS", "");
    let r = sb.sync_json();
    assert_eq!(r["tables"][0]["extract"]["files"], 1, "{r}");
    assert_eq!(
        merged(&sb),
        vec![vec![s("1"), s("a")], vec![s("2"), s("b")]]
    );
}

/// `s-1`, `s_1` and `S_1` map to one warehouse schema; a table `t_append` sits beside the
/// append table of `t`; a table named `s` meets the aliases of generated SQL. Each lake
/// table still loads into a warehouse table of its own, with its own ledger row; a table that
/// is not sluice's is never loaded into.
#[test]
fn names_that_map_alike_load_their_own_tables() {
    let sb = Sandbox::new();
    let src = |name: &str, folder: &str, table: &str, load: &str| {
        format!(
            "[sources.{name}]\nkind = \"files\"\nurl = \"{folder}/\"\ntable = \"{table}\"\nload = {load}\n[sources.{name}.tables.{table}]\nprimary_key = [\"id\"]\n"
        )
    };
    sb.config(&format!(
        "{}{}{}{}",
        src("\"s-1\"", "a", "t", "[\"merge\", \"append\"]"),
        src("s_1", "b", "t_append", "\"merge\""),
        src("S_1", "c", "T", "[\"merge\", \"history\"]"),
        src("s", "d", "s", "[\"merge\", \"history\", \"append\"]"),
    ));
    for (folder, v) in [
        ("a", "from-a"),
        ("b", "from-b"),
        ("c", "from-c"),
        ("d", "from-d"),
    ] {
        sb.write(&format!("{folder}/x.csv"), format!("id,v\n1,{v}\n2,{v}\n"));
    }
    let r = sb.sync_json();
    for t in r["tables"].as_array().unwrap() {
        assert!(t["error"].is_null(), "{r}");
    }
    let ledger = sb.duck(
        "SELECT source || '.' || source_table || ' ' || load_mode, target_schema || '.' || target_table FROM _sluice.ledger ORDER BY 1",
    );
    let targets: Vec<&str> = ledger.iter().map(|r| r[1].as_deref().unwrap()).collect();
    let mut unique = targets.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        targets.len(),
        "one warehouse table each: {ledger:?}"
    );
    assert_eq!(targets.len(), 8, "{ledger:?}");
    for row in &ledger {
        let (from, table) = (row[0].as_deref().unwrap(), row[1].as_deref().unwrap());
        let folder = match from.split('.').next().unwrap() {
            "s-1" => "a",
            "s_1" => "b",
            "S_1" => "c",
            _ => "d",
        };
        let values = sb.duck(&format!(
            "SELECT DISTINCT v FROM {} ORDER BY 1",
            table
                .split('.')
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(".")
        ));
        assert_eq!(
            values,
            vec![vec![s(&format!("from-{folder}"))]],
            "{from} -> {table}"
        );
    }
    // Names stay as they were, run after run.
    let again = sb.sync_json();
    assert!(again["tables"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["error"].is_null()));
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM _sluice.ledger"),
        vec![vec![s("8")]]
    );

    // A table sluice does not own is refused by name, never loaded into.
    duckdb::Connection::open(sb.path("warehouse.duckdb"))
        .unwrap()
        .execute_batch(
            "CREATE SCHEMA mine; CREATE TABLE mine.keep (id BIGINT, v TEXT); INSERT INTO mine.keep VALUES (7, 'user data')",
        )
        .unwrap();
    sb.config(&src("mine", "e", "keep", "\"replace\""));
    sb.write("e/x.csv", "id,v\n1,sluice\n");
    let out = sb.run(&["sync"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("mine.keep") && text.contains("not sluice's"),
        "{text}"
    );
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, v FROM mine.keep"),
        vec![vec![s("7"), s("user data")]]
    );
}

#[test]
fn a_malformed_array_element_is_one_reject_and_the_rest_land() {
    let sb = Sandbox::new();
    sb.config(
        "[sources.j]\nkind = \"files\"\nurl = \"in/\"\n[sources.j.tables.j]\nprimary_key = [\"id\"]\n",
    );
    sb.write(
        "in/a.json",
        r#"[{"id":1,"v":"a"},{"id":2,"v":"b",},{"id":3,"v":"c, [x] {y}"}, {"id":4,"v":"d"}]"#,
    );
    // JSON lines with a line that is not UTF-8 between good ones.
    let mut lines = b"{\"id\":5,\"v\":\"e\"}\n{\"id\":6,\"v\":\"".to_vec();
    lines.extend_from_slice(&[0xc3, 0x28]);
    lines.extend_from_slice(b"\"}\n{\"id\":7,\"v\":\"g\"}\n");
    sb.write("in/b.jsonl", &lines);
    // An array cut short: the whole elements land, the cut one is quarantined.
    sb.write("in/c.json", r#"[{"id":8,"v":"h"},{"id":9,"v":"#);
    let r = sb.sync_json();
    assert_eq!(r["tables"][0]["extract"]["rows"], 6, "{r}");
    assert_eq!(r["tables"][0]["extract"]["rejects"], 3, "{r}");
    assert_eq!(
        sb.duck("SELECT id::VARCHAR FROM j.j ORDER BY id"),
        [1, 3, 4, 5, 7, 8]
            .iter()
            .map(|i| vec![s(&i.to_string())])
            .collect::<Vec<_>>()
    );
    let q = sb.query_lake("SELECT raw, reason FROM j.j__quarantine ORDER BY file, line");
    let reasons: Vec<&str> = q.iter().map(|r| r["reason"].as_str().unwrap()).collect();
    assert!(q[0]["raw"].as_str().unwrap().contains("\"id\":2"), "{q:?}");
    assert!(reasons[1].contains("invalid UTF-8"), "{reasons:?}");
    assert!(reasons[2].contains("without `]`"), "{reasons:?}");
}

#[test]
fn rows_with_null_keys_are_quarantined() {
    let sb = Sandbox::new();
    sb.config(KEYED);
    sb.write("drops/a.csv", "id,v\n1,a\n,nokey\n2,b\nx,badkey\n");
    let r = sb.sync_json();
    assert_eq!(r["tables"][0]["extract"]["rejects"], 2, "{r}");
    assert_eq!(
        merged(&sb),
        vec![vec![s("1"), s("a")], vec![s("2"), s("b")]]
    );
    let q = sb.query_lake("SELECT line, reason FROM s.t__quarantine ORDER BY line");
    assert_eq!(q.len(), 2);
    assert!(
        q[0]["reason"]
            .as_str()
            .unwrap()
            .contains("NULL in a key column"),
        "{q:?}"
    );
}

/// Spark's INT96 timestamps hold dates past 2262 (9999-12-31 for "forever"), which Arrow's
/// default nanosecond reading wraps into wrong ones: they are read at microseconds, and a
/// value beyond even that is quarantined, never landed as another date.
#[test]
fn parquet_int96_timestamps_keep_their_dates() {
    use parquet::data_type::Int96;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    let sb = Sandbox::new();
    let path = sb.write("pq/ts.parquet", "");
    let schema = Arc::new(
        parse_message_type("message m { required int64 id; optional int96 at; }").unwrap(),
    );
    let file = std::fs::File::create(&path).unwrap();
    let mut w = SerializedFileWriter::new(file, schema, Default::default()).unwrap();
    // Julian day and nanoseconds of the day.
    let int96 = |day: u32, nanos: u64| {
        let mut v = Int96::new();
        v.set_data(nanos as u32, (nanos >> 32) as u32, day);
        v
    };
    const EPOCH_JULIAN: u32 = 2_440_588;
    let values = [
        // 2024-01-01 12:00:00.123456
        int96(EPOCH_JULIAN + 19_723, 43_200_123_456_000),
        // 9999-12-31 23:59:59
        int96(EPOCH_JULIAN + 2_932_896, 86_399_000_000_000),
        // year ~300,000: no microsecond timestamp holds it
        int96(EPOCH_JULIAN + 109_000_000, 0),
    ];
    let mut rg = w.next_row_group().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<parquet::data_type::Int64Type>()
        .write_batch(&[1, 2, 3], None, None)
        .unwrap();
    col.close().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<parquet::data_type::Int96Type>()
        .write_batch(&values, Some(&[1, 1, 1]), None)
        .unwrap();
    col.close().unwrap();
    rg.close().unwrap();
    w.close().unwrap();
    let earlier = std::time::SystemTime::now() - Duration::from_secs(600);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(earlier)
        .unwrap();
    sb.config("[sources.p]\nkind = \"files\"\nurl = \"pq/\"\n");
    let r = sb.sync_json();
    assert_eq!(r["tables"][0]["extract"]["rows"], 2, "{r}");
    assert_eq!(r["tables"][0]["extract"]["rejects"], 1, "{r}");
    assert_eq!(
        sb.duck(
            "SELECT id::VARCHAR, strftime(\"at\", '%Y-%m-%d %H:%M:%S.%f') FROM p.p ORDER BY id"
        ),
        vec![
            vec![s("1"), s("2024-01-01 12:00:00.123456")],
            vec![s("2"), s("9999-12-31 23:59:59.000000")],
        ]
    );
    let q = sb.query_lake("SELECT line, \"column\", reason FROM p.p__quarantine");
    assert_eq!(q[0]["line"], 3, "{q:?}");
    assert!(q[0]["reason"].as_str().unwrap().contains("INT96"), "{q:?}");
}

/// Merge without a key keeps every row of the drops, identical ones counted (DESIGN.md,
/// Keys): files only add rows, so the table holds each row as often as the files do.
#[test]
fn keyless_merge_counts_identical_rows() {
    let sb = Sandbox::new();
    sb.config("[sources.k]\nkind = \"files\"\nurl = \"in/\"\nload = \"merge\"\n");
    sb.write("in/a.csv", "kind,n\nx,1\nx,1\ny,2\n");
    sb.sync_json();
    sb.write("in/b.csv", "kind,n\nx,1\nz,3\n");
    sb.sync_json();
    assert_eq!(
        sb.duck("SELECT kind, n::VARCHAR, count(*)::VARCHAR FROM k.k GROUP BY ALL ORDER BY 1"),
        vec![
            vec![s("x"), s("1"), s("3")],
            vec![s("y"), s("2"), s("1")],
            vec![s("z"), s("3"), s("1")],
        ]
    );
}
