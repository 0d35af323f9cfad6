//! Every supported format and option round-trips value by value: the test writes the source
//! files from known values, runs the real `sluice sync`, and reads the DuckDB warehouse back.

mod common;

use std::io::Write;
use std::sync::Arc;

use common::{s, Sandbox};

fn text_rows(sb: &Sandbox, table: &str, cols: &[&str], order: &str) -> Vec<Vec<Option<String>>> {
    let select: Vec<String> = cols.iter().map(|c| format!("\"{c}\"::VARCHAR")).collect();
    sb.duck(&format!(
        "SELECT {} FROM {table} ORDER BY {order}",
        select.join(", ")
    ))
}

fn column_types(sb: &Sandbox, schema: &str, table: &str) -> Vec<(String, String)> {
    sb.duck(&format!(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = '{schema}' AND table_name = '{table}' ORDER BY ordinal_position"
    ))
    .into_iter()
    .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
    .collect()
}

#[test]
fn csv_with_header_quoting_nulls_and_inferred_types() {
    let sb = Sandbox::new();
    sb.write(
        "in/people.csv",
        "id,name,amount,day,at,flag,note\n\
         1,\"Smith, J\",12.50,2024-01-31,2024-01-31 10:11:12.123456,true,\"said \"\"hi\"\"\"\n\
         2,Zoë 😀,-0.01,2024-02-29,2024-02-29 00:00:00,false,NULL\n\
         3,\"multi\nline\",100,2023-12-31,2023-12-31 23:59:59.999999,TRUE,plain\n",
    );
    sb.config(
        r#"
[sources.crm]
kind = "files"
url = "in/"
null_value = "NULL"
table = "people"
[sources.crm.tables.people]
primary_key = ["id"]
"#,
    );
    let report = sb.sync_json();
    assert_eq!(report["tables"][0]["extract"]["rows"], 3, "{report}");
    assert_eq!(report["tables"][0]["extract"]["rejects"], 0);
    let types = column_types(&sb, "crm", "people");
    let want = [
        ("id", "BIGINT"),
        ("name", "VARCHAR"),
        ("amount", "DECIMAL(18,2)"),
        ("day", "DATE"),
        ("at", "TIMESTAMP"),
        ("flag", "BOOLEAN"),
        ("note", "VARCHAR"),
    ];
    for (name, ty) in want {
        assert!(
            types.contains(&(name.to_string(), ty.to_string())),
            "{name} {ty} not in {types:?}"
        );
    }
    assert!(
        types
            .iter()
            .any(|(n, t)| n == "_sluice_loaded_at" && t == "TIMESTAMP WITH TIME ZONE"),
        "{types:?}"
    );
    let rows = text_rows(
        &sb,
        "crm.people",
        &["id", "name", "amount", "day", "at", "flag", "note"],
        "id",
    );
    assert_eq!(
        rows,
        vec![
            vec![
                s("1"),
                s("Smith, J"),
                s("12.50"),
                s("2024-01-31"),
                s("2024-01-31 10:11:12.123456"),
                s("true"),
                s("said \"hi\"")
            ],
            vec![
                s("2"),
                s("Zoë 😀"),
                s("-0.01"),
                s("2024-02-29"),
                s("2024-02-29 00:00:00"),
                s("false"),
                None
            ],
            vec![
                s("3"),
                s("multi\nline"),
                s("100.00"),
                s("2023-12-31"),
                s("2023-12-31 23:59:59.999999"),
                s("true"),
                s("plain")
            ],
        ]
    );
}

/// TPC-H style: `|`-delimited, trailing `|`, no header, declared types, gzip.
#[test]
fn tbl_gzip_with_declared_columns() {
    let sb = Sandbox::new();
    let mut expected = Vec::new();
    let mut text = String::new();
    for i in 1..=2500i64 {
        let bal = format!("{}.{:02}", (i * 7919) % 100_000 - 50_000, i % 100);
        let name = format!("Supplier#{i:09}");
        let comment = if i % 10 == 0 {
            String::new()
        } else {
            format!("comment {i} ok")
        };
        text += &format!("{i}|{name}|{}|{bal}|{comment}|\n", i % 25);
        expected.push(vec![
            s(&i.to_string()),
            s(&name),
            s(&(i % 25).to_string()),
            s(&bal),
            if comment.is_empty() {
                None
            } else {
                s(&comment)
            },
        ]);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    sb.write(
        "drops/supplier/20240101/supplier.tbl.gz",
        gz.finish().unwrap(),
    );
    sb.config(
        r#"
[sources.tpch]
kind = "files"
url = "drops/supplier/{date}/"
delimiter = "|"
header = false
table = "supplier"
columns = ["s_suppkey bigint", "s_name text", "s_nationkey int", "s_acctbal decimal(15,2)", "s_comment text"]
load = "append"
"#,
    );
    let report = sb.sync_json();
    assert_eq!(report["tables"][0]["extract"]["rows"], 2500, "{report}");
    let rows = text_rows(
        &sb,
        "tpch.supplier",
        &[
            "s_suppkey",
            "s_name",
            "s_nationkey",
            "s_acctbal",
            "s_comment",
        ],
        "s_suppkey",
    );
    // DuckDB prints DECIMAL(15,2) with two decimals and no leading '+'.
    let norm: Vec<Vec<Option<String>>> = expected
        .into_iter()
        .map(|mut r| {
            let v: f64 = r[3].as_ref().unwrap().parse().unwrap();
            r[3] = Some(format!("{v:.2}"));
            r
        })
        .collect();
    assert_eq!(rows, norm);
    let types = column_types(&sb, "tpch", "supplier");
    assert!(types.contains(&("s_acctbal".into(), "DECIMAL(15,2)".into())));
    assert!(types.contains(&("s_nationkey".into(), "INTEGER".into())));
    assert!(
        types.contains(&("_sluice_op".into(), "VARCHAR".into())),
        "append tables carry _sluice_op: {types:?}"
    );
}

/// Tab-separated, zstd-compressed, a custom null marker.
#[test]
fn tsv_zstd() {
    let sb = Sandbox::new();
    let text = "k\tv\tx\n1\talpha\t1.5\n2\t\\N\t-2.25e3\n3\tgamma\t\\N\n";
    sb.write(
        "in/a.tsv.zst",
        zstd::encode_all(text.as_bytes(), 3).unwrap(),
    );
    sb.config(
        "[sources.t]\nkind = \"files\"\nurl = \"in/\"\nformat = \"tsv\"\nnull_value = \"\\\\N\"\n",
    );
    sb.sync_json();
    assert!(column_types(&sb, "t", "t").contains(&("x".into(), "DOUBLE".into())));
    let rows = text_rows(&sb, "t.t", &["k", "v", "x"], "k");
    assert_eq!(
        rows,
        vec![
            vec![s("1"), s("alpha"), s("1.5")],
            vec![s("2"), None, s("-2250.0")],
            vec![s("3"), s("gamma"), None]
        ]
    );
}

/// Any one-byte delimiter and quote character.
#[test]
fn semicolon_and_single_quotes() {
    let sb = Sandbox::new();
    sb.write("in/x.txt", "a;b\n1;'x;y'\n2;'it''s'\n");
    sb.config(
        "[sources.q]\nkind = \"files\"\nurl = \"in/x.txt\"\ndelimiter = \";\"\nquote = \"'\"\n",
    );
    sb.sync_json();
    assert_eq!(
        text_rows(&sb, "q.q", &["a", "b"], "a"),
        vec![vec![s("1"), s("x;y")], vec![s("2"), s("it's")]]
    );
}

#[test]
fn json_lines_and_arrays_keep_nested_values_as_json_and_numbers_exact() {
    let sb = Sandbox::new();
    sb.write(
        "lines/e.jsonl",
        "{\"id\": 1, \"amount\": 12.345, \"tags\": [\"a\",\"b\"], \"meta\": {\"k\": 1}, \"ts\": \"2024-01-01T00:00:00Z\", \"ok\": true}\n\
         \n\
         {\"id\": 2, \"amount\": 0.1, \"tags\": [], \"meta\": null, \"ts\": \"2024-06-30T12:30:00.5+02:00\", \"ok\": false, \"extra_text\": \"é\\n\"}\n",
    );
    sb.write(
        "arr/e.json",
        "[ {\"id\": 10, \"amount\": 99999999.999}, {\"id\": 11, \"amount\": -1} ]",
    );
    sb.config("[sources.l]\nkind = \"files\"\nurl = \"lines/\"\n[sources.a]\nkind = \"files\"\nurl = \"arr/\"\n");
    let report = sb.sync_json();
    assert_eq!(report["tables"][0]["extract"]["rejects"], 0, "{report}");
    let types = column_types(&sb, "l", "l");
    assert!(
        types.contains(&("amount".into(), "DECIMAL(18,3)".into())),
        "{types:?}"
    );
    assert!(
        types.contains(&("ts".into(), "TIMESTAMP WITH TIME ZONE".into())),
        "{types:?}"
    );
    assert!(
        types.contains(&("ok".into(), "BOOLEAN".into())),
        "{types:?}"
    );
    let rows = sb.duck(
        "SELECT id::VARCHAR, amount::VARCHAR, tags, meta, epoch_us(ts)::VARCHAR, ok::VARCHAR, extra_text FROM l.l ORDER BY id",
    );
    assert_eq!(
        rows,
        vec![
            vec![
                s("1"),
                s("12.345"),
                s("[\"a\",\"b\"]"),
                s("{\"k\": 1}"),
                s("1704067200000000"),
                s("true"),
                None
            ],
            vec![
                s("2"),
                s("0.100"),
                s("[]"),
                None,
                s("1719743400500000"),
                s("false"),
                s("é\n")
            ],
        ]
    );
    // Objects and arrays are JSON columns in the lake (Arrow's `arrow.json` extension, which
    // PostgreSQL loads as JSONB and Redshift as SUPER); scalars are not.
    let first_commit =
        std::fs::read_to_string(sb.path("lake/changes/l/l/_delta_log/00000000000000000000.json"))
            .unwrap();
    let schema_line = first_commit
        .lines()
        .find(|l| l.starts_with("{\"metaData\""))
        .unwrap();
    let meta: serde_json::Value = serde_json::from_str(schema_line).unwrap();
    let fields: serde_json::Value =
        serde_json::from_str(meta["metaData"]["schemaString"].as_str().unwrap()).unwrap();
    let json_columns: Vec<&str> = fields["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["metadata"]["ARROW:extension:name"] == "arrow.json")
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(json_columns, vec!["meta", "tags"], "{fields}");
    let arr = sb.duck("SELECT id::VARCHAR, amount::VARCHAR FROM a.a ORDER BY id");
    assert_eq!(
        arr,
        vec![vec![s("10"), s("99999999.999")], vec![s("11"), s("-1.000")]]
    );
}

#[test]
fn json_flatten_makes_parent_child_columns_down_to_max_depth() {
    let sb = Sandbox::new();
    sb.write(
        "docs/e.jsonl",
        "{\"id\": 1, \"customer\": {\"name\": \"Ann\", \"address\": {\"city\": \"Oslo\", \"geo\": {\"lat\": 59.9}}}, \"items\": [{\"sku\": \"a\"}]}\n\
         {\"id\": 2, \"customer\": {\"name\": \"Bo\", \"address\": null}, \"items\": []}\n\
         {\"id\": 3, \"customer\": null}\n",
    );
    sb.config(
        "[sources.d]\nkind = \"files\"\nurl = \"docs/\"\nnested = \"flatten\"\nmax_depth = 2\n[sources.d.tables.d]\nprimary_key = [\"id\"]\n",
    );
    let report = sb.sync_json();
    assert_eq!(report["tables"][0]["extract"]["rejects"], 0, "{report}");
    let names: Vec<String> = column_types(&sb, "d", "d")
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| !n.starts_with("_sluice_"))
        .collect();
    // Two levels of objects flattened; the third (geo) and every array stay JSON text.
    assert_eq!(
        names,
        vec![
            "customer__address__city",
            "customer__address__geo",
            "customer__name",
            "id",
            "items"
        ]
    );
    let rows = text_rows(
        &sb,
        "d.d",
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
        "id",
    );
    assert_eq!(
        rows,
        vec![
            vec![
                s("Oslo"),
                s("{\"lat\": 59.9}"),
                s("Ann"),
                s("1"),
                s("[{\"sku\": \"a\"}]")
            ],
            vec![None, None, s("Bo"), s("2"), s("[]")],
            vec![None, None, None, s("3"), None],
        ]
    );
    // Without flatten (the default, nested = "json") the object is one JSON column.
    sb.config("[sources.j]\nkind = \"files\"\nurl = \"docs/\"\nnested = \"json\"\n");
    sb.sync_json();
    let rows = text_rows(&sb, "j.j", &["id", "customer"], "id");
    assert_eq!(
        rows[1],
        vec![s("2"), s("{\"name\": \"Bo\", \"address\": null}")]
    );
    assert_eq!(rows[2], vec![s("3"), None]);
    let bad = sb.run(&["check"], &[]);
    assert_eq!(
        bad.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    sb.config("[sources.j]\nkind = \"files\"\nurl = \"docs/\"\nmax_depth = 2\n");
    let bad = sb.run(&["check"], &[]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("max_depth"));
}

#[test]
fn parquet_files_keep_their_types() {
    use arrow::array::{
        ArrayRef, Date32Array, Decimal128Array, Float64Array, Int64Array, RecordBatch, StringArray,
        TimestampMicrosecondArray,
    };
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let sb = Sandbox::new();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("price", DataType::Decimal128(10, 2), true),
        Field::new("d", DataType::Date32, true),
        Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("f", DataType::Float64, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1, 2, i64::MAX])),
        Arc::new(StringArray::from(vec![Some("a"), None, Some("ü")])),
        Arc::new(
            Decimal128Array::from(vec![Some(12345), Some(-1), None])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        ),
        Arc::new(Date32Array::from(vec![Some(0), Some(19723), None])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1), None, Some(1_700_000_000_123_456)])
                .with_timezone("UTC"),
        ),
        Arc::new(Float64Array::from(vec![Some(0.5), Some(f64::MAX), None])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    sb.write("pq/20240102/part-0.parquet", buf);
    sb.config("[sources.p]\nkind = \"files\"\nurl = \"pq/{date}\"\n");
    sb.sync_json();
    let rows = sb.duck("SELECT id::VARCHAR, name, price::VARCHAR, d::VARCHAR, epoch_us(t)::VARCHAR, f::VARCHAR FROM p.p ORDER BY id");
    assert_eq!(
        rows,
        vec![
            vec![
                s("1"),
                s("a"),
                s("123.45"),
                s("1970-01-01"),
                s("1"),
                s("0.5")
            ],
            vec![
                s("2"),
                None,
                s("-0.01"),
                s("2024-01-01"),
                None,
                s("1.7976931348623157e+308")
            ],
            vec![
                s("9223372036854775807"),
                s("ü"),
                None,
                None,
                s("1700000000123456"),
                None
            ],
        ]
    );
}
