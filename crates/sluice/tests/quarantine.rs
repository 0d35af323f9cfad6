//! Malformed input never stops the good rows and is never dropped silently: each bad record
//! lands in the quarantine table with its file, line, raw text and reason, and is counted in
//! the sync output and in `sluice status`.

mod common;

use common::{s, Sandbox};

#[test]
fn malformed_rows_are_quarantined_with_reasons_and_counted() {
    let sb = Sandbox::new();
    let mut bytes =
        b"id,qty,day\n1,10,2024-01-01\n2,20\n3,x30,2024-01-03\n4,40,2024-02-30\n".to_vec();
    bytes.extend_from_slice(b"5,50,2024-01-05\n6,\"60,2024-01-06\n7,70,2024-01-07\n");
    // Invalid UTF-8 in an otherwise good row, then a good row after it.
    let mut bad_utf8 = b"8,80,2024-01-08\n".to_vec();
    bad_utf8[2] = 0xff;
    let mut file = b"id,qty,day\n".to_vec();
    file.extend_from_slice(&bad_utf8);
    file.extend_from_slice(b"9,90,2024-01-09\n");
    sb.write("in/a.csv", &bytes);
    sb.write("in/b.csv", &file);
    sb.config(
        r#"
[sources.shop]
kind = "files"
url = "in/"
table = "items"
columns = ["id bigint", "qty int", "day date"]
"#,
    );
    let report = sb.sync_json();
    let t = &report["tables"][0];
    // a.csv: row 2 short, row 3 bad int, row 4 bad date, row 6 opens a quote that swallows the rest.
    // b.csv: row 8 invalid UTF-8.
    assert_eq!(t["extract"]["rows"], 3, "{report}");
    assert_eq!(t["extract"]["rejects"], 5, "{report}");

    let good =
        sb.duck("SELECT id::VARCHAR, qty::VARCHAR, day::VARCHAR FROM shop.items ORDER BY id");
    assert_eq!(
        good,
        vec![
            vec![s("1"), s("10"), s("2024-01-01")],
            vec![s("5"), s("50"), s("2024-01-05")],
            vec![s("9"), s("90"), s("2024-01-09")],
        ]
    );

    let q = sb.query_lake("SELECT file, line, \"column\", raw, reason FROM shop.items__quarantine ORDER BY file, line");
    let summary: Vec<(String, i64, Option<String>, String)> = q
        .iter()
        .map(|r| {
            (
                r["file"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
                r["line"].as_i64().unwrap(),
                r["column"].as_str().map(String::from),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(summary.len(), 5, "{q:?}");
    assert_eq!(
        (summary[0].0.as_str(), summary[0].1, summary[0].2.as_deref()),
        ("a.csv", 3, None)
    );
    assert!(
        summary[0].3.contains("expected 3 fields, found 2"),
        "{summary:?}"
    );
    assert_eq!((summary[1].1, summary[1].2.as_deref()), (4, Some("qty")));
    assert!(summary[1].3.contains("x30"), "{summary:?}");
    assert_eq!((summary[2].1, summary[2].2.as_deref()), (5, Some("day")));
    assert!(summary[2].3.contains("2024-02-30"), "{summary:?}");
    assert_eq!(summary[3].1, 7, "{summary:?}");
    assert_eq!(
        (summary[4].0.as_str(), summary[4].1, summary[4].2.as_deref()),
        ("b.csv", 2, Some("qty"))
    );
    assert!(summary[4].3.contains("UTF-8"), "{summary:?}");
    assert_eq!(q[1]["raw"], "3,x30,2024-01-03");

    let status: serde_json::Value = serde_json::from_str(&sb.ok(&["--json", "status"])).unwrap();
    assert_eq!(status[0]["quarantined"], 5, "{status}");
    assert_eq!(status[0]["changes"], 3, "{status}");
    let text = sb.ok(&["sync"]);
    assert!(text.contains("0 new file(s)"), "{text}");
}
