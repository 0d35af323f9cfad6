//! The schema gate on a files source, end to end through the `sluice` binary: the lake takes
//! every change (new columns, variant columns for off-type values, dropped columns as NULLs),
//! and each warehouse table decides by its policy — halt (exit 3, only that table, resumed by
//! `schema accept` with the backlog loaded once), evolve (the column added with its values),
//! freeze (the table keeps its shape, the left-out values counted). Values are compared one
//! by one, lake and warehouse.

mod common;

use std::sync::Arc;

use common::{s, Sandbox};

/// Three sources over the same drops, one per policy, each into its own warehouse schema.
fn three_policies(sb: &Sandbox) {
    let mut cfg = String::new();
    for (name, policy) in [("h", "halt"), ("e", "evolve"), ("f", "freeze")] {
        cfg += &format!(
            "[sources.{name}]\nkind = \"files\"\nurl = \"in/{{date}}/\"\ntable = \"items\"\nschema_changes = \"{policy}\"\n[sources.{name}.tables.items]\nprimary_key = [\"id\"]\n\n"
        );
    }
    sb.config(&cfg);
}

fn sync(sb: &Sandbox) -> (i32, serde_json::Value) {
    sb.sync_code(&[])
}

fn table<'a>(report: &'a serde_json::Value, source: &str) -> &'a serde_json::Value {
    report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["source"] == source)
        .unwrap_or_else(|| panic!("no {source} in {report}"))
}

fn columns(sb: &Sandbox, schema: &str) -> Vec<String> {
    sb.duck(&format!(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = '{schema}' AND table_name = 'items' ORDER BY ordinal_position"
    ))
    .into_iter()
    .map(|r| r[0].clone().unwrap())
    .filter(|c| !c.starts_with("_sluice_"))
    .collect()
}

#[test]
fn new_column_halts_evolves_or_freezes_by_policy_and_accept_loads_the_backlog_once() {
    let sb = Sandbox::new();
    three_policies(&sb);
    sb.write("in/20240101/a.csv", "id,name\n1,a\n2,b\n");
    let (code, _) = sync(&sb);
    assert_eq!(code, 0);

    // The source gains a column, and the next day's rows update one key and add another.
    sb.write("in/20240102/a.csv", "id,name,coupon\n2,B,SPRING\n3,c,\n");
    let (code, report) = sync(&sb);
    assert_eq!(code, 3, "a halted table exits 3: {report}");

    // halt: only h stops; it loaded nothing of the new day, and says why.
    let h = table(&report, "h");
    let halted = h["halted"].as_str().unwrap();
    assert!(
        halted.contains("new column coupon") && halted.contains("sluice schema accept h.items"),
        "{halted}"
    );
    assert!(h["error"].is_null(), "{h}");
    assert_eq!(columns(&sb, "h"), vec!["id", "name"]);
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, name FROM h.items ORDER BY id"),
        vec![vec![s("1"), s("a")], vec![s("2"), s("b")]]
    );
    // ...but the lake took the change and the rows all the same.
    let lake = sb.query_lake("SELECT id, name, coupon FROM h.items__changes ORDER BY _sluice_seq");
    let coupons: Vec<Option<&str>> = lake.iter().map(|r| r["coupon"].as_str()).collect();
    assert_eq!(coupons, vec![None, None, Some("SPRING"), None], "{lake:?}");
    for t in ["e", "f"] {
        assert!(table(&report, t)["halted"].is_null(), "{report}");
    }

    // evolve: the column is added and holds its values.
    assert_eq!(columns(&sb, "e"), vec!["id", "name", "coupon"]);
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, name, coupon FROM e.items ORDER BY id"),
        vec![
            vec![s("1"), s("a"), None],
            vec![s("2"), s("B"), s("SPRING")],
            vec![s("3"), s("c"), None]
        ]
    );

    // freeze: same shape, the rows loaded, the left-out values counted.
    assert_eq!(columns(&sb, "f"), vec!["id", "name"]);
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, name FROM f.items ORDER BY id"),
        vec![
            vec![s("1"), s("a")],
            vec![s("2"), s("B")],
            vec![s("3"), s("c")]
        ]
    );
    let f_load = &table(&report, "f")["loads"][0];
    assert_eq!(
        f_load["left_out"],
        serde_json::json!(["coupon"]),
        "{f_load}"
    );
    assert_eq!(f_load["left_out_rows"], 1, "{f_load}");

    // status and diff show the halt and what waits.
    let status: serde_json::Value = serde_json::from_str(&sb.ok(&["--json", "status"])).unwrap();
    let st = |src: &str| {
        status
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["source"] == src)
            .unwrap()["targets"][0]
            .clone()
    };
    assert_eq!(st("h")["halted"], true, "{status}");
    assert!(
        st("h")["schema_pending"]
            .as_str()
            .unwrap()
            .contains("coupon"),
        "{status}"
    );
    assert_eq!(st("e")["halted"], false);
    assert_eq!(st("f")["left_out"], serde_json::json!(["coupon"]));
    let diff = sb.ok(&["schema", "diff", "h.items"]);
    assert!(
        diff.contains("HALTED") && diff.contains("[halt] new column coupon text"),
        "{diff}"
    );

    // Syncing again changes nothing while halted (and still exits 3).
    sb.write("in/20240103/a.csv", "id,name,coupon\n4,d,FALL\n");
    let (code, _) = sync(&sb);
    assert_eq!(code, 3);
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM h.items"),
        vec![vec![s("2")]]
    );

    // accept: the column is added and the whole backlog loads, once.
    let accepted = sb.ok(&["schema", "accept", "h.items"]);
    assert!(accepted.contains("schema accepted"), "{accepted}");
    let expected = vec![
        vec![s("1"), s("a"), None],
        vec![s("2"), s("B"), s("SPRING")],
        vec![s("3"), s("c"), None],
        vec![s("4"), s("d"), s("FALL")],
    ];
    let h_rows = || sb.duck("SELECT id::VARCHAR, name, coupon FROM h.items ORDER BY id");
    assert_eq!(h_rows(), expected);
    let (code, report) = sync(&sb);
    assert_eq!(code, 0, "{report}");
    assert_eq!(h_rows(), expected);
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, name, coupon FROM e.items ORDER BY id"),
        expected
    );
    let diff = sb.ok(&["schema", "diff", "h.items"]);
    assert!(diff.contains("in step with the lake"), "{diff}");
}

#[test]
fn off_type_values_land_in_variant_columns_and_dropped_columns_stay_as_nulls() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[sources.shop]
kind = "files"
url = "in/{date}/"
table = "items"
schema_changes = { new_column = "evolve", dropped_column = "evolve", incompatible_type = "halt" }

[sources.shop.tables.items]
primary_key = ["id"]
"#,
    );
    sb.write("in/20240101/a.csv", "id,price,note\n1,10,x\n2,20,y\n");
    assert_eq!(sync(&sb).0, 0);
    // The note column stops coming: a drop, evolved (the column stays, NULL from now on).
    sb.write("in/20240102/a.csv", "id,price\n3,30\n");
    let (code, report) = sync(&sb);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, price::VARCHAR, note FROM shop.items ORDER BY id"),
        vec![
            vec![s("1"), s("10"), s("x")],
            vec![s("2"), s("20"), s("y")],
            vec![s("3"), s("30"), None]
        ]
    );
    // A text value in the integer column: the lake keeps it in price__text; the incompatible
    // type halts the table at the change, after loading what came before it in the same run.
    sb.write("in/20240103/a.csv", "id,price\n4,n/a\n5,50\n");
    let (code, report) = sync(&sb);
    assert_eq!(code, 3, "{report}");
    let lake = sb.query_lake(
        "SELECT id, price, price__text FROM shop.items__changes WHERE id >= 4 ORDER BY id",
    );
    assert_eq!(lake[0]["price"], serde_json::Value::Null, "{lake:?}");
    assert_eq!(lake[0]["price__text"], "n/a", "{lake:?}");
    assert_eq!(lake[1]["price"], 50, "{lake:?}");
    assert_eq!(lake[1]["price__text"], serde_json::Value::Null, "{lake:?}");
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM shop.items"),
        vec![vec![s("3")]]
    );

    // The catalog holds each version and what changed.
    let show: serde_json::Value =
        serde_json::from_str(&sb.ok(&["--json", "schema", "show", "shop.items"])).unwrap();
    let kinds: Vec<Vec<&str>> = show["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["kind"].as_str().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            vec!["new_table"],
            vec!["dropped_column"],
            vec!["incompatible_type"]
        ]
    );
    let v3 = &show["history"][2]["changes"][0];
    assert_eq!(
        (
            v3["column"].as_str(),
            v3["from"].as_str(),
            v3["to"].as_str(),
            v3["variant"].as_str()
        ),
        (
            Some("price"),
            Some("bigint"),
            Some("text"),
            Some("price__text")
        )
    );
    let note = show["current"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "note")
        .unwrap()
        .clone();
    assert_eq!(note["dropped"], true, "{show}");
    let text = sb.ok(&["schema", "show", "shop.items"]);
    assert!(
        text.contains("price__text") && text.contains("values of price that did not fit"),
        "{text}"
    );

    sb.ok(&["schema", "accept", "shop.items"]);
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, price::VARCHAR, price__text FROM shop.items WHERE id >= 3 ORDER BY id"),
        vec![
            vec![s("3"), s("30"), None],
            vec![s("4"), None, s("n/a")],
            vec![s("5"), s("50"), None]
        ]
    );
}

#[test]
fn parquet_type_widening_keeps_every_value() {
    use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    let parquet = |t: DataType, values: ArrayRef| {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("qty", t, true),
        ]));
        let n = values.len() as i64;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..n)), values],
        )
        .unwrap();
        let mut buf = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        buf
    };
    let sb = Sandbox::new();
    sb.config("[sources.p]\nkind = \"files\"\nurl = \"pq/{date}\"\ntable = \"t\"\nload = \"append\"\nschema_changes = \"evolve\"\n");
    sb.write(
        "pq/20240101/a.parquet",
        parquet(DataType::Int32, Arc::new(Int32Array::from(vec![1, 2]))),
    );
    assert_eq!(sync(&sb).0, 0);
    // The source widened qty to bigint: values that fit stay in qty, one that does not goes
    // to qty__bigint; both load (evolve).
    sb.write(
        "pq/20240102/a.parquet",
        parquet(
            DataType::Int64,
            Arc::new(Int64Array::from(vec![3, 5_000_000_000])),
        ),
    );
    let (code, report) = sync(&sb);
    assert_eq!(code, 0, "{report}");
    let changes = table(&report, "p")["extract"]["schema_changes"].to_string();
    assert!(
        changes.contains("widened type qty: integer -> bigint"),
        "{changes}"
    );
    assert_eq!(
        sb.duck("SELECT qty::VARCHAR, qty__bigint::VARCHAR FROM p.t ORDER BY _sluice_seq"),
        vec![
            vec![s("1"), None],
            vec![s("2"), None],
            vec![s("3"), None],
            vec![None, s("5000000000")]
        ]
    );
}
