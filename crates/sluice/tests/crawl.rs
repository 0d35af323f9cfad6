//! `sluice crawl` on a folder tree of mixed CSV, JSON and Parquet files under Hive-style
//! partition folders: the types it infers (spread over the files, not fooled by a first file
//! of whole numbers and NULLs), the evidence it reports, and the registered table landing,
//! loading and querying value by value.

mod common;

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use common::{s, Sandbox};

/// One expected row: id, amount, note, at, region, dt (as DuckDB renders them).
type Row = Vec<Option<String>>;

/// Eight days of CSV in region=eu (whole amounts, no notes), then a JSON day and a Parquet
/// day in region=us with cents and notes. Returns every row.
fn drops(sb: &Sandbox) -> Vec<Row> {
    let mut rows = Vec::new();
    for day in 1..=8 {
        let mut csv = String::from("id,amount,note,at\n");
        for k in 0..2 {
            let id = day * 10 + k;
            let amount = id * 3;
            let at = format!("2024-06-{day:02} 1{k}:00:00");
            csv += &format!("{id},{amount},,{at}\n");
            rows.push(vec![
                s(&id.to_string()),
                s(&format!("{amount}.00")),
                None,
                s(&at),
                s("eu"),
                s(&format!("2024-06-{day:02}")),
            ]);
        }
        sb.write(
            &format!("drops/region=eu/dt=2024-06-{day:02}/part-0.csv"),
            csv,
        );
        sb.write(&format!("drops/region=eu/dt=2024-06-{day:02}/_SUCCESS"), "");
    }
    sb.write(
        "drops/region=us/dt=2024-06-09/part-0.json",
        "{\"id\": 90, \"amount\": 12.5, \"note\": \"late\", \"at\": \"2024-06-09 08:30:00\"}\n\
         {\"id\": 91, \"amount\": 7, \"note\": null, \"at\": \"2024-06-09 09:00:00\"}\n",
    );
    rows.push(vec![
        s("90"),
        s("12.50"),
        s("late"),
        s("2024-06-09 08:30:00"),
        s("us"),
        s("2024-06-09"),
    ]);
    rows.push(vec![
        s("91"),
        s("7.00"),
        None,
        s("2024-06-09 09:00:00"),
        s("us"),
        s("2024-06-09"),
    ]);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("amount", DataType::Decimal128(10, 2), true),
        Field::new("note", DataType::Utf8, true),
        Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![100, 101])),
        Arc::new(
            Decimal128Array::from(vec![Some(-1999), None])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        ),
        Arc::new(StringArray::from(vec![Some("refund"), Some("ü")])),
        // 2024-06-10 00:00:00 and 12:00:00
        Arc::new(TimestampMicrosecondArray::from(vec![
            1_717_977_600_000_000,
            1_718_020_800_000_000,
        ])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    sb.write("drops/region=us/dt=2024-06-10/part-0.parquet", buf);
    rows.push(vec![
        s("100"),
        s("-19.99"),
        s("refund"),
        s("2024-06-10 00:00:00"),
        s("us"),
        s("2024-06-10"),
    ]);
    rows.push(vec![
        s("101"),
        None,
        s("ü"),
        s("2024-06-10 12:00:00"),
        s("us"),
        s("2024-06-10"),
    ]);
    rows
}

fn crawl_json(sb: &Sandbox, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json", "crawl", "drops"];
    all.extend_from_slice(args);
    serde_json::from_str(&sb.ok(&all)).unwrap()
}

fn column<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["schema"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no column {name} in {report}"))
}

const WAREHOUSE_ROWS: &str = "SELECT id::VARCHAR, amount::VARCHAR, note, \"at\"::VARCHAR, region, dt::VARCHAR FROM drops.drops ORDER BY id";

#[test]
fn crawl_infers_mixed_partitioned_files_and_the_registered_table_loads_and_queries() {
    let sb = Sandbox::new();
    let mut expected = drops(&sb);
    sb.write("drops/README.md", "what these files are");

    let report = crawl_json(&sb, &[]);
    assert_eq!(report["files"], 10, "{report}");
    assert_eq!(report["formats"]["csv"], 8);
    assert_eq!(report["formats"]["json"], 1);
    assert_eq!(report["formats"]["parquet"], 1);
    assert_eq!(report["partitions"], serde_json::json!(["region", "dt"]));
    assert!(report["skipped"][0]
        .as_str()
        .unwrap()
        .ends_with("README.md"));
    let types: Vec<(String, String, bool)> = report["schema"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["type"].as_str().unwrap().to_string(),
                c["partition"].as_bool().unwrap(),
            )
        })
        .collect();
    let want = [
        ("id", "bigint", false),
        ("amount", "decimal(10,2)", false),
        ("note", "text", false),
        ("at", "timestamp", false),
        ("region", "text", true),
        ("dt", "date", true),
    ];
    assert_eq!(
        types,
        want.map(|(n, t, p)| (n.to_string(), t.to_string(), p))
            .to_vec()
    );
    // The first five files alone say bigint; the sample reached the Parquet file at the end.
    assert_eq!(report["schema"]["files_sampled"], 5);
    let amount = column(&report, "amount");
    let said: Vec<&str> = amount["file_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(said, vec!["bigint", "decimal(10,2)"], "{amount}");
    assert_eq!(amount["conflict"], false);
    let dt = column(&report, "dt");
    assert_eq!(
        (dt["files"].as_u64(), dt["values"].as_u64()),
        (Some(10), Some(10))
    );

    // A folder that also holds files of no readable format is not registered.
    let refused = sb.run(&["crawl", "drops", "--register", "drops"], &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("README.md"));
    assert!(!sb.path("sluice.toml").exists());
    std::fs::remove_file(sb.path("drops/README.md")).unwrap();

    let text = sb.ok(&[
        "crawl",
        "drops",
        "--register",
        "drops",
        "--primary-key",
        "id",
    ]);
    assert!(text.contains("registered source `drops`"), "{text}");
    assert!(
        text.contains("partitions (from folder names): region, dt"),
        "{text}"
    );
    let config = std::fs::read_to_string(sb.path("sluice.toml")).unwrap();
    assert!(config.contains("partitions = true"), "{config}");
    assert!(config.contains("primary_key = [\"id\"]"), "{config}");
    // The same name twice is refused, the config unchanged.
    let again = sb.run(&["crawl", "drops", "--register", "drops"], &[]);
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(sb.path("sluice.toml")).unwrap(),
        config
    );

    let out = sb.sync_json();
    let t = &out["tables"][0];
    assert_eq!(t["extract"]["files"], 10, "{out}");
    assert_eq!(t["extract"]["rejects"], 0, "{out}");
    assert_eq!(sb.duck(WAREHOUSE_ROWS), expected);
    let lake = sb.query_lake(
        "SELECT id, CAST(amount AS VARCHAR) AS amount, note, region, CAST(dt AS VARCHAR) AS dt FROM drops.drops ORDER BY id",
    );
    assert_eq!(lake.len(), expected.len());
    for (got, want) in lake.iter().zip(&expected) {
        let cell = |k: &str| got[k].as_str().map(String::from);
        assert_eq!(
            vec![
                got["id"].as_i64().map(|v| v.to_string()),
                cell("amount"),
                cell("note"),
                cell("region"),
                cell("dt")
            ],
            vec![
                want[0].clone(),
                want[1].clone(),
                want[2].clone(),
                want[4].clone(),
                want[5].clone()
            ]
        );
    }

    // A new partition folder arrives: it lands with its folder values, once.
    sb.write(
        "drops/region=apac/dt=2024-06-11/part-0.csv",
        "id,amount,note,at\n110,1.25,new,2024-06-11 07:00:00\n",
    );
    let out = sb.sync_json();
    assert_eq!(out["tables"][0]["extract"]["files"], 1, "{out}");
    expected.push(vec![
        s("110"),
        s("1.25"),
        s("new"),
        s("2024-06-11 07:00:00"),
        s("apac"),
        s("2024-06-11"),
    ]);
    assert_eq!(sb.duck(WAREHOUSE_ROWS), expected);
}

#[test]
fn a_partition_value_off_its_type_lands_in_a_variant_column() {
    let sb = Sandbox::new();
    sb.write("d/dt=2024-06-01/a.csv", "id,v\n1,x\n");
    sb.write("d/dt=2024-06-02/a.csv", "id,v\n2,y\n");
    sb.ok(&["crawl", "d", "--register", "d", "--primary-key", "id"]);
    sb.sync_json();
    sb.write("d/dt=unknown/a.csv", "id,v\n3,z\n");
    // The lake takes the folder value; the warehouse table halts on the incompatible type.
    let run = sb.run(&["--json", "sync"], &[]);
    assert_eq!(run.status.code(), Some(3));
    let out: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let changes = out["tables"][0]["extract"]["schema_changes"].to_string();
    assert!(changes.contains("dt__text"), "{out}");
    let lake = sb
        .query_lake("SELECT id, CAST(dt AS VARCHAR) AS dt, dt__text FROM d.d__changes ORDER BY id");
    let got: Vec<(i64, Option<&str>, Option<&str>)> = lake
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["dt"].as_str(),
                r["dt__text"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Some("2024-06-01"), None),
            (2, Some("2024-06-02"), None),
            (3, None, Some("unknown")),
        ]
    );
}
