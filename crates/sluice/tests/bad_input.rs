//! The bad-input corpus: malformed, oversized, mis-encoded and hostile files and rows, all
//! dropped in one folder and synced at once. Nothing crashes, nothing is dropped silently:
//! every record of every file either lands or is quarantined with a reason, file by file as
//! expected, and the good rows land whole.

mod common;

use std::io::Write;

use common::Sandbox;

/// One file of the corpus: its name, bytes, the rows that land and the rejects it makes.
struct Case {
    name: String,
    bytes: Vec<u8>,
    lands: i64,
    rejects: i64,
}

fn case(name: &str, bytes: impl Into<Vec<u8>>, lands: i64, rejects: i64) -> Case {
    Case {
        name: name.to_string(),
        bytes: bytes.into(),
        lands,
        rejects,
    }
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn parquet_of(ids: &[i64]) -> Vec<u8> {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("v", DataType::Utf8, true),
    ]));
    let batch = arrow::array::RecordBatch::try_new(
        schema.clone(),
        vec![
            std::sync::Arc::new(Int64Array::from(ids.to_vec())),
            std::sync::Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("p{i}")),
            )),
        ],
    )
    .unwrap();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

/// Case `k`'s rows have ids `k * 1000 + j`, so the lake tells which file a row came from.
fn corpus() -> Vec<Case> {
    let h = "id,v,amount,day\n";
    let mut cases = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, lands: i64, rejects: i64| {
        cases.push(case(name, bytes, lands, rejects));
    };
    let k = |n: usize| n * 1000;
    // Delimited text.
    add(
        "c01.csv",
        format!(
            "{h}{},a,1.50,2024-01-01\n{},b,2,2024-01-02\n",
            k(1),
            k(1) + 1
        )
        .into(),
        2,
        0,
    );
    add(
        "c02.csv",
        format!("{h}{},short\n{},ok,1,2024-01-01\n", k(2), k(2) + 1).into(),
        1,
        1,
    );
    add(
        "c03.csv",
        format!("{h}{},a,1,2024-01-01,extra\n", k(3)).into(),
        0,
        1,
    );
    add(
        "c04.csv",
        format!(
            "{h}{},a,1,2024-01-01\n{},\"open,1,2024-01-01\n",
            k(4),
            k(4) + 1
        )
        .into(),
        1,
        1,
    );
    add(
        "c05.csv",
        format!("{h}notanumber,a,1,2024-01-01\n{},b,1,2024-01-01\n", k(5)).into(),
        1,
        1,
    );
    add(
        "c06.csv",
        format!("{h}{},a,1.234,2024-01-01\n", k(6)).into(),
        0,
        1,
    );
    add(
        "c07.csv",
        format!("{h}{},a,99999999999,2024-01-01\n", k(7)).into(),
        0,
        1,
    );
    add(
        "c08.csv",
        format!("{h}{},a,1,2024-02-30\n", k(8)).into(),
        0,
        1,
    );
    add(
        "c09.csv",
        format!("{h}{},a,1,yesterday\n", k(9)).into(),
        0,
        1,
    );
    add(
        "c10.csv",
        format!(
            "{h}99999999999999999999,a,1,2024-01-01\n{},b,1,2024-01-01\n",
            k(10)
        )
        .into(),
        1,
        1,
    );
    let mut bad_utf8 = format!("{h}{},", k(11)).into_bytes();
    bad_utf8.extend_from_slice(b"\xff\xfe,1,2024-01-01\n");
    bad_utf8.extend_from_slice(format!("{},fine,1,2024-01-01\n", k(11) + 1).as_bytes());
    add("c11.csv", bad_utf8, 1, 1);
    add(
        "c12.csv",
        format!("{h}{},a\u{0}b,1,2024-01-01\n", k(12)).into(),
        1,
        0,
    );
    add(
        "c13.csv",
        format!("\u{feff}{h}{},bom,1,2024-01-01\n", k(13)).into(),
        1,
        0,
    );
    add(
        "c14.csv",
        format!(
            "{h}{},crlf,1,2024-01-01\r\n{},crlf2,2,2024-01-02\r\n",
            k(14),
            k(14) + 1
        )
        .into(),
        2,
        0,
    );
    add("c15.csv", Vec::new(), 0, 0);
    add("c16.csv", h.as_bytes().to_vec(), 0, 0);
    add(
        "c17.csv",
        format!("{h}\n\n{},after blank lines,1,2024-01-01\n", k(17)).into(),
        1,
        0,
    );
    add(
        "c18.csv",
        format!("{h}{},\"quoted, with comma\",1,2024-01-01\n", k(18)).into(),
        1,
        0,
    );
    add(
        "c19.csv",
        format!("{h}{},\"multi\nline\",1,2024-01-01\n", k(19)).into(),
        1,
        0,
    );
    add(
        "c20.csv",
        format!("{h}{},\"{}\",1,2024-01-01\n", k(20), "x".repeat(10_000)).into(),
        0,
        1,
    );
    add(
        "c21.csv",
        format!("id,v,amount,day,surprise\n{},a,1,2024-01-01,z\n", k(21)).into(),
        0,
        1,
    );
    add(
        "c22.csv",
        format!("{h}{},a,,2024-01-01\n", k(22)).into(),
        1,
        0,
    );
    add(
        "c23.csv",
        format!("{h}{},a,1e3,2024-01-01\n", k(23)).into(),
        0,
        1,
    );
    add(
        "c24.csv",
        format!("{h}{},a,NaN,2024-01-01\n", k(24)).into(),
        0,
        1,
    );
    add(
        "c25.csv",
        format!(
            "{h}{},a,-0.00,0001-01-01\n{},b,1,9999-12-31\n",
            k(25),
            k(25) + 1
        )
        .into(),
        2,
        0,
    );
    add(
        "c26.csv",
        format!("{h}{},\"a\"\"b\",1,2024-01-01\n", k(26)).into(),
        1,
        0,
    );
    add(
        "c27.csv",
        format!("{h}{},ünïcödé 😀 ✓,1,2024-01-01\n", k(27)).into(),
        1,
        0,
    );
    add(
        "c28.csv.gz",
        gz(format!("{h}{},zipped,1,2024-01-01\n", k(28)).as_bytes()),
        1,
        0,
    );
    let whole = gz(format!(
        "{h}{}",
        (0..3000)
            .map(|j| format!("{},t,1,2024-01-01\n", k(29) + j))
            .collect::<String>()
    )
    .as_bytes());
    add("c29.csv.gz", whole[..whole.len() / 2].to_vec(), 0, 1);
    add("c30.csv.gz", b"\x1f\x8b not really gzip".to_vec(), 0, 1);
    add("c31.csv.zst", b"(\xb5/\xfd not zstd either".to_vec(), 0, 1);
    add(
        "c32.csv",
        format!("{h}{},\"{}\n", k(32), "y".repeat(20_000)).into(),
        0,
        1,
    );
    add(
        "c33 name with spaces.csv",
        format!("{h}{},spaces,1,2024-01-01\n", k(33)).into(),
        1,
        0,
    );
    add(
        "c34#hash?.csv",
        format!("{h}{},hash,1,2024-01-01\n", k(34)).into(),
        1,
        0,
    );
    add(
        "c35%25.csv",
        format!("{h}{},percent,1,2024-01-01\n", k(35)).into(),
        1,
        0,
    );
    add(
        "c36-ünï.csv",
        format!("{h}{},unicode name,1,2024-01-01\n", k(36)).into(),
        1,
        0,
    );
    // JSON.
    add(
        "j37.json",
        format!(
            "{{\"id\": {}, \"v\": \"a\"}}\n{{\"id\": {}, \"v\": \"b\"}}\n",
            k(37),
            k(37) + 1
        )
        .into(),
        2,
        0,
    );
    add(
        "j38.json",
        format!(
            "{{\"id\": {}, \"v\": \"a\"\n{{\"id\": {}, \"v\": \"b\"}}\n",
            k(38),
            k(38) + 1
        )
        .into(),
        1,
        1,
    );
    add(
        "j39.json",
        format!(
            "[{{\"id\": {}}}, {{\"id\": {},}}, {{\"id\": {}}}]",
            k(39),
            k(39) + 1,
            k(39) + 2
        )
        .into(),
        2,
        1,
    );
    add(
        "j40.json",
        format!("[{{\"id\": {}}}, {{\"id\": {}}}", k(40), k(40) + 1).into(),
        2,
        1,
    );
    add(
        "j41.json",
        format!("[1, \"text\", {{\"id\": {}}}]", k(41)).into(),
        1,
        2,
    );
    add(
        "j42.json",
        format!("{{\"id\": \"{}x\"}}\n", k(42)).into(),
        0,
        1,
    );
    add(
        "j43.json",
        format!("{{\"id\": {}, \"v\": \"\\ud800\"}}\n", k(43)).into(),
        0,
        1,
    );
    add(
        "j44.json",
        format!("{{\"id\": {}, \"amount\": 1e400}}\n", k(44)).into(),
        0,
        1,
    );
    add(
        "j45.json",
        format!(
            "{{\"id\": {}, \"v\": {{\"deep\": [1, {{\"x\": null}}]}}}}\n",
            k(45)
        )
        .into(),
        1,
        0,
    );
    let mut j46 = format!("{{\"id\": {}, \"v\": \"", k(46)).into_bytes();
    j46.extend_from_slice(b"\xc3\x28\"}\n");
    add("j46.json", j46, 0, 1);
    add(
        "j47.json",
        format!(
            "{{\"id\": {}, \"v\": \"{}\"}}\n{{\"id\": {}}}\n",
            k(47),
            "z".repeat(10_000),
            k(47) + 1
        )
        .into(),
        1,
        1,
    );
    add(
        "j48.json",
        format!("{{\"id\": {}, \"day\": \"2024-13-01\"}}\n", k(48)).into(),
        0,
        1,
    );
    add("j49.json", b"   \n\n  ".to_vec(), 0, 0);
    add(
        "j50.json",
        format!("[{{\"id\": {}}}] trailing", k(50)).into(),
        1,
        1,
    );
    add(
        "j51.json",
        format!("{{\"id\": {}, \"v\": \"dup\", \"v\": \"dup2\"}}\n", k(51)).into(),
        1,
        0,
    );
    // Parquet.
    add(
        "p52.parquet",
        parquet_of(&[k(52) as i64, k(52) as i64 + 1]),
        2,
        0,
    );
    let good = parquet_of(&[k(53) as i64]);
    add("p53.parquet", good[..good.len() - 10].to_vec(), 0, 1);
    add(
        "p54.parquet",
        b"PAR1 random bytes that are not a parquet file PAR1".to_vec(),
        0,
        1,
    );
    add("p55.parquet", Vec::new(), 0, 1);
    cases
}

#[test]
fn the_bad_input_corpus_lands_or_quarantines_every_record() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[sources.b]
kind = "files"
url = "drops/"
table = "t"
columns = ["id bigint", "v text", "amount decimal(10,2)", "day date"]
max_record_bytes = 4096
"#,
    );
    let cases = corpus();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    for c in &cases {
        sb.write(&format!("drops/{}", c.name), &c.bytes);
    }
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 0, "{report}");
    let t = &report["tables"][0];
    assert_eq!(
        t["extract"]["files"],
        cases.len(),
        "every file taken: {report}"
    );
    let landed = sb.query_lake("SELECT id / 1000 AS k, count(*) AS n FROM b.t__changes GROUP BY 1");
    let quarantined = sb.query_lake(
        "SELECT file, count(*) AS n, min(length(reason)) AS why FROM b.t__quarantine GROUP BY 1",
    );
    let mut wrong = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let k = i as i64 + 1;
        let lands = landed
            .iter()
            .find(|r| r["k"] == k)
            .map_or(0, |r| r["n"].as_i64().unwrap());
        let q = quarantined.iter().find(|r| {
            r["file"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/{}", c.name))
        });
        let rejects = q.map_or(0, |r| r["n"].as_i64().unwrap());
        if let Some(r) = q {
            assert!(
                r["why"].as_i64().unwrap() > 10,
                "{}: a reject without a reason",
                c.name
            );
        }
        if (lands, rejects) != (c.lands, c.rejects) {
            wrong.push(format!(
                "{}: landed {lands} (expected {}), quarantined {rejects} (expected {})",
                c.name, c.lands, c.rejects
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let total_rejects: i64 = cases.iter().map(|c| c.rejects).sum();
    assert_eq!(t["extract"]["rejects"], total_rejects, "{report}");
}
