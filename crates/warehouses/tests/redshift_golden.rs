//! Golden files for the Redshift dialect: every statement a Redshift load sends, for a fixed
//! table, compared byte for byte with `tests/golden/redshift/*.sql`. There is no Redshift
//! here; these pin what would be sent (review a change to them against Redshift's SQL
//! reference). `SLUICE_BLESS=1 cargo test -p sluice-warehouses --test redshift_golden`
//! rewrites them.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, TimeUnit};
use chrono::TimeZone;

use sluice_core::change::TRUNCATED;
use sluice_core::config::{Deletes, Layout, LoadMode};
use sluice_core::names::quote_ident as q;
use sluice_warehouses::redshift::{
    alter_layout, column_type, copy_manifest, copy_version, create_stage, create_table,
    ledger_upsert, load_time, manifest, stage_type, trim_stage, truncated_flag, widen, Bound,
    CurrentLayout, TableLayout,
};
use sluice_warehouses::sql::{system_columns, Apply, SystemTypes};

const TYPES: SystemTypes = SystemTypes {
    text: "VARCHAR(8)",
    row_id: "VARCHAR(32)",
    bigint: "BIGINT",
    timestamptz: "TIMESTAMPTZ",
    boolean: "BOOLEAN",
};

fn golden(name: &str, actual: &str) {
    let path = format!(
        "{}/tests/golden/redshift/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (SLUICE_BLESS=1 writes it)"));
    assert_eq!(
        actual, expected,
        "{name} differs from its golden file; if the change is meant, SLUICE_BLESS=1 rewrites it"
    );
}

fn json_field(name: &str) -> Field {
    let meta = std::collections::HashMap::from([(
        "ARROW:extension:name".to_string(),
        "arrow.json".to_string(),
    )]);
    Field::new(name, DataType::Utf8, true).with_metadata(meta)
}

/// A lineitem-like table: its data columns with their longest values.
fn data_columns() -> Vec<(String, String)> {
    let fields = [
        (Field::new("l_orderkey", DataType::Int64, false), 0),
        (Field::new("l_linenumber", DataType::Int32, false), 0),
        (
            Field::new("l_quantity", DataType::Decimal128(15, 2), true),
            0,
        ),
        (Field::new("l_shipdate", DataType::Date32, true), 0),
        (Field::new("l_comment", DataType::Utf8, true), 44),
        (Field::new("l_big", DataType::UInt64, true), 0),
        (json_field("l_attrs"), 0),
        (Field::new("l_blob", DataType::Binary, true), 0),
        (
            Field::new(
                "l_updated",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            0,
        ),
    ];
    fields
        .iter()
        .map(|(f, longest)| (f.name().clone(), column_type(f, *longest).unwrap()))
        .collect()
}

fn mapped(c: &str) -> Option<String> {
    data_columns().into_iter().map(|(n, _)| n).find(|n| n == c)
}

fn table_columns(mode: LoadMode, deletes: Deletes) -> Vec<(String, String)> {
    let mut cols = data_columns();
    cols.extend(system_columns(mode, deletes, false, &TYPES));
    cols.push((TRUNCATED.into(), "BOOLEAN NOT NULL DEFAULT false".into()));
    cols
}

#[test]
fn create_table_with_dist_and_sort_keys() {
    let layout = TableLayout::resolve(
        &Layout {
            diststyle: None,
            distkey: Some("l_orderkey".into()),
            sortkey: vec!["l_shipdate".into(), "l_orderkey".into()],
            encode: BTreeMap::new(),
            ..Layout::default()
        },
        mapped,
    )
    .unwrap();
    let sql = create_table(
        "tpch",
        "\"tpch\".\"lineitem\"",
        &table_columns(LoadMode::Merge, Deletes::Hard),
        Some(&layout),
    );
    golden("create_merge_distkey_sortkey.sql", &sql);
}

#[test]
fn create_table_with_column_encodings() {
    let layout = TableLayout::resolve(
        &Layout {
            diststyle: Some("EVEN".into()),
            distkey: None,
            sortkey: vec![],
            encode: BTreeMap::from([
                ("l_comment".to_string(), "zstd".to_string()),
                ("l_orderkey".to_string(), "AZ64".to_string()),
            ]),
            ..Layout::default()
        },
        mapped,
    )
    .unwrap();
    let sql = create_table(
        "tpch",
        "\"tpch\".\"lineitem_history\"",
        &table_columns(LoadMode::History, Deletes::Hard),
        Some(&layout),
    );
    golden("create_history_encodings.sql", &sql);
}

#[test]
fn layout_errors_name_the_problem() {
    let bad = |l: Layout| TableLayout::resolve(&l, mapped).unwrap_err();
    let base = Layout::default();
    assert!(bad(Layout {
        distkey: Some("nope".into()),
        ..base.clone()
    })
    .contains("`nope` is not a column"));
    assert!(bad(Layout {
        diststyle: Some("all".into()),
        distkey: Some("l_orderkey".into()),
        ..base.clone()
    })
    .contains("distkey needs diststyle"));
    assert!(bad(Layout {
        diststyle: Some("key".into()),
        ..base.clone()
    })
    .contains("needs distkey"));
    assert!(bad(Layout {
        encode: BTreeMap::from([("l_comment".into(), "gzip".into())]),
        ..base
    })
    .contains("`gzip` is not one of"));
}

#[test]
fn stage_copy_and_trim() {
    let stage_cols: Vec<(String, String)> = [
        ("l_orderkey", "BIGINT"),
        ("l_comment", "VARCHAR(65535)"),
        ("l_attrs", "VARCHAR(65535)"),
        ("l_blob", "VARBYTE(1024000)"),
        ("_sluice_op", "VARCHAR(8)"),
        ("_sluice_seq", "BIGINT"),
        ("_sluice_source_ts", "TIMESTAMPTZ"),
        ("_sluice_ingested_at", "TIMESTAMPTZ"),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), t.to_string()))
    .collect();
    let sql = format!(
        "{}\n{}\n{}\n",
        create_stage("\"sluice_stage\"", &stage_cols),
        copy_manifest(
            "\"sluice_stage\"",
            "s3://lake-bucket/lake/changes/tpch/lineitem/_sluice_redshift/tpch.lineitem-6001215-1.manifest",
            "arn:aws:iam::123456789012:role/sluice-copy",
            false
        )
        .unwrap(),
        trim_stage("\"sluice_stage\"", 1000, 6_001_215)
    );
    golden("stage_copy_trim.sql", &sql);
    assert!(copy_manifest("s", "s3://b/it's", "arn", false).is_err());
    assert!(copy_manifest("s", "s3://b/x", "arn\\x", false).is_err());
}

/// Lists, structs and maps are staged and kept as SUPER, copied whole from the lake's
/// Parquet with SERIALIZETOJSON (never sized or cut like text).
#[test]
fn nested_columns_stage_as_super_with_serializetojson() {
    let item = Arc::new(Field::new("element", DataType::Int32, true));
    let tags = Field::new("tags", DataType::List(item), true);
    let addr = Field::new(
        "addr",
        DataType::Struct(vec![Field::new("city", DataType::Utf8, true)].into()),
        true,
    );
    for f in [&tags, &addr] {
        assert_eq!(Bound::of(f), Bound::Nested);
        assert_eq!(Bound::of(f).limit(), None);
        assert_eq!(column_type(f, 1 << 30).as_deref(), Some("SUPER"));
        assert_eq!(stage_type(f).as_deref(), Some("SUPER"));
    }
    let stage_cols: Vec<(String, String)> =
        [("id", "BIGINT"), ("tags", "SUPER"), ("addr", "SUPER")]
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
    let sql = format!(
        "{}\n{}\n",
        create_stage("\"sluice_stage\"", &stage_cols),
        copy_manifest(
            "\"sluice_stage\"",
            "s3://lake-bucket/lake/changes/shop/orders/_sluice_redshift/shop.orders-7-1.manifest",
            "arn:aws:iam::123456789012:role/sluice-copy",
            true
        )
        .unwrap(),
    );
    golden("stage_copy_nested.sql", &sql);
}

#[test]
fn manifest_json() {
    let m = manifest(&[
        (
            "s3://lake-bucket/lake/changes/tpch/lineitem/_sluice_ingest_date=2026-11-23/part-00000.zstd.parquet".into(),
            52_428_800,
        ),
        (
            "s3://lake-bucket/lake/changes/tpch/lineitem/_sluice_redshift/tpch.lineitem-6001215-1/00001.parquet".into(),
            1_234,
        ),
    ]);
    golden("manifest.json", &m);
}

fn apply_sql(mode: LoadMode, deletes: Deletes, truncated: &[i64]) -> String {
    let keys = vec!["l_orderkey".to_string(), "l_linenumber".to_string()];
    let columns: Vec<String> = data_columns().into_iter().map(|(n, _)| n).collect();
    let values: Vec<String> = columns
        .iter()
        .map(|c| match c.as_str() {
            "l_attrs" => format!("JSON_PARSE({})", q(c)),
            _ => q(c),
        })
        .collect();
    let extra = [(TRUNCATED.to_string(), truncated_flag(truncated))];
    let now = load_time(
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .unwrap(),
    );
    let a = Apply {
        target: "\"tpch\".\"lineitem\"",
        stage: "\"sluice_stage\"",
        work: "\"sluice_work\"",
        keys: &keys,
        columns: &columns,
        now: &now,
        values: &values,
        extra: &extra,
    };
    let sql = match mode {
        LoadMode::Merge => a.merge(deletes),
        LoadMode::Append => a.append(),
        LoadMode::Replace => a.replace(),
        LoadMode::History => a.history(),
    };
    let [update, insert] = ledger_upsert(&now);
    format!("{sql}\n{update};\n{insert};\n")
}

#[test]
fn apply_statements() {
    golden(
        "apply_merge.sql",
        &apply_sql(LoadMode::Merge, Deletes::Hard, &[]),
    );
    golden(
        "apply_merge_soft_truncated.sql",
        &apply_sql(LoadMode::Merge, Deletes::Soft, &[17, 42]),
    );
    golden(
        "apply_append.sql",
        &apply_sql(LoadMode::Append, Deletes::Hard, &[]),
    );
    golden(
        "apply_replace.sql",
        &apply_sql(LoadMode::Replace, Deletes::Hard, &[]),
    );
    golden(
        "apply_history.sql",
        &apply_sql(LoadMode::History, Deletes::Hard, &[]),
    );
}

#[test]
fn widen_a_varchar() {
    golden(
        "widen.sql",
        &format!("{}\n", widen("\"tpch\".\"lineitem\"", "l_comment", 512)),
    );
}

/// No statement may call what Redshift runs only on its leader node (or not at all).
#[test]
fn no_leader_only_functions() {
    let all = [
        apply_sql(LoadMode::Merge, Deletes::Soft, &[1]),
        apply_sql(LoadMode::Append, Deletes::Hard, &[]),
        apply_sql(LoadMode::Replace, Deletes::Hard, &[]),
        apply_sql(LoadMode::History, Deletes::Hard, &[]),
    ]
    .concat()
    .to_lowercase();
    for f in [
        "now()",
        "current_timestamp",
        "on conflict",
        "distinct on",
        "substr(",
    ] {
        assert!(!all.contains(f), "Redshift cannot run `{f}`");
    }
}

/// A keyed lake table on S3 (three files in two partitions) and a keyless one
/// with a column no external table can declare.
fn lake_views() -> Vec<sluice_warehouses::LakeView> {
    use sluice_core::change::change_schema;
    let orders = arrow::datatypes::Schema::new(vec![
        Field::new("o_orderkey", DataType::Int64, false),
        Field::new("o_total", DataType::Decimal128(15, 2), true),
        Field::new("o_comment", DataType::Utf8, true),
        json_field("o_attrs"),
        Field::new("o_date", DataType::Date32, true),
        Field::new("Odd \"name\"", DataType::Int32, true),
    ]);
    let clicks = arrow::datatypes::Schema::new(vec![
        Field::new("at", DataType::Time64(TimeUnit::Microsecond), true),
        Field::new("page", DataType::Utf8, true),
    ]);
    let url =
        |t: &str| url::Url::parse(&format!("s3://lake-bucket/lake/changes/shop/{t}/")).unwrap();
    vec![
        sluice_warehouses::LakeView {
            source: "shop".into(),
            table: "orders".into(),
            version: 7,
            schema: change_schema(&orders),
            key: vec!["o_orderkey".into()],
            partition_columns: vec!["_sluice_ingest_date".into()],
            table_url: url("orders"),
            files: vec![
                "_sluice_ingest_date=2026-12-05/part-00000-a.zstd.parquet".into(),
                "_sluice_ingest_date=2026-12-05/part-00001-b.zstd.parquet".into(),
                "_sluice_ingest_date=2026-12-06/part-00000-c.zstd.parquet".into(),
            ],
        },
        sluice_warehouses::LakeView {
            source: "shop".into(),
            table: "clicks".into(),
            version: 2,
            schema: change_schema(&clicks),
            key: vec![],
            partition_columns: vec!["_sluice_ingest_date".into()],
            table_url: url("clicks"),
            files: vec!["_sluice_ingest_date=2026-12-06/part-00000-d.zstd.parquet".into()],
        },
    ]
}

#[test]
fn expose_in_spectrum_and_athena() {
    use sluice_warehouses::expose;
    let views = lake_views();
    let render = |e: &sluice_warehouses::Exposure| {
        let mut text = String::new();
        for s in &e.statements {
            text.push_str(s);
            text.push_str(";\n");
        }
        for (table, why) in &e.skipped {
            text.push_str(&format!("-- left out {table}: {why}\n"));
        }
        text
    };
    let spectrum =
        expose::redshift(&views, "lake_", "arn:aws:iam::123456789012:role/spectrum").unwrap();
    assert!(spectrum.needs_manifests);
    golden("expose_spectrum.sql", &render(&spectrum));
    let athena = expose::athena(&views, "lake_").unwrap();
    assert!(athena.needs_manifests);
    golden("expose_athena.sql", &render(&athena));
    let manifests: String = views[0]
        .manifests()
        .unwrap()
        .into_iter()
        .map(|(path, text)| format!("== {path}\n{text}"))
        .collect();
    golden("symlink_manifests.txt", &manifests);
    assert_eq!(
        views[0].manifest_location(),
        "s3://lake-bucket/lake/changes/shop/orders/_symlink_format_manifest/"
    );

    // A local lake: neither engine can read it, and the message says where the lake is.
    let mut local = views[..1].to_vec();
    local[0].table_url = url::Url::parse("file:///tmp/lake/changes/shop/orders/").unwrap();
    let err = expose::athena(&local, "lake_").unwrap_err().to_string();
    assert!(
        err.contains("shop.orders") && err.contains("file:///tmp/lake"),
        "{err}"
    );
    let err = expose::redshift(&local, "lake_", "arn:x")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Redshift Spectrum reads the lake from S3"),
        "{err}"
    );
}

/// A load across three schema versions (a column added, then another): each version's files
/// are copied into a stage of their own columns, then into the load's stage by name.
#[test]
fn grown_schema_copies_each_version_into_its_own_stage() {
    let role = "arn:aws:iam::123456789012:role/sluice-copy";
    let change = [("_sluice_op", "VARCHAR(8)"), ("_sluice_seq", "BIGINT")];
    let version = |data: &[(&str, &str)]| -> Vec<(String, String)> {
        data.iter()
            .chain(change.iter())
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    };
    let v0 = version(&[("id", "BIGINT"), ("name", "VARCHAR(65535)")]);
    let v1 = version(&[("id", "BIGINT"), ("name", "VARCHAR(65535)")])
        .into_iter()
        .chain([("coupon".to_string(), "VARCHAR(65535)".to_string())])
        .collect::<Vec<_>>();
    let v2 = version(&[("id", "BIGINT"), ("name", "VARCHAR(65535)")])
        .into_iter()
        .chain([
            ("coupon".to_string(), "VARCHAR(65535)".to_string()),
            ("tags".to_string(), "SUPER".to_string()),
        ])
        .collect::<Vec<_>>();
    let mut sql = create_stage("\"_sluice_stage\"", &v2) + "\n";
    for (k, cols) in [v0, v1, v2].iter().enumerate() {
        let stage = format!("\"_sluice_stage_v{k}\"");
        let url = format!("s3://lake-bucket/lake/changes/shop/orders/_sluice_redshift/shop.orders-9-1.v{k}.manifest");
        let copy = copy_manifest(&stage, &url, role, k == 2).unwrap();
        sql += &copy_version("\"_sluice_stage\"", &stage, cols, &copy);
        sql += "\n";
    }
    golden("stage_copy_versions.sql", &sql);
}

/// A history table sorted on its validity column (a system column), interleaved; a merge
/// table whose keys changed since it was created is altered in place, and a change to or
/// from an interleaved sort key is refused with the reason.
#[test]
fn layouts_per_table_sort_on_system_columns_and_alter_changed_keys() {
    let system = system_columns(LoadMode::History, Deletes::Hard, false, &TYPES);
    let with_system =
        |c: &str| mapped(c).or_else(|| system.iter().find(|(n, _)| n == c).map(|(n, _)| n.clone()));
    let layout = TableLayout::resolve(
        &Layout {
            sortkey: vec![system[0].0.clone(), "l_orderkey".into()],
            sortkey_style: Some("interleaved".into()),
            ..Layout::default()
        },
        with_system,
    )
    .unwrap();
    let mut sql = create_table(
        "tpch",
        "\"tpch\".\"lineitem_history\"",
        &table_columns(LoadMode::History, Deletes::Hard),
        Some(&layout),
    );
    // pg_class/pg_attribute rows: KEY style, l_orderkey the distkey and first sort column.
    let current = CurrentLayout::from_rows(&[
        (1, Some("l_orderkey".into()), Some(true), Some(1)),
        (1, Some("l_shipdate".into()), Some(false), Some(2)),
    ]);
    assert_eq!(current.diststyle, "key");
    assert_eq!(current.sortkey, vec!["l_orderkey", "l_shipdate"]);
    let wanted = TableLayout::resolve(
        &Layout {
            distkey: Some("l_linenumber".into()),
            sortkey: vec!["l_shipdate".into()],
            ..Layout::default()
        },
        mapped,
    )
    .unwrap();
    let alters = alter_layout("\"tpch\".\"lineitem\"", &current, &wanted).unwrap();
    for (statement, what) in &alters {
        sql += &format!("\n-- {what}\n{statement}");
    }
    sql += "\n";
    golden("layout_history_interleaved_and_alter.sql", &sql);
    // The same layout again: nothing to alter.
    let same = CurrentLayout::from_rows(&[
        (1, Some("l_linenumber".into()), Some(true), Some(0)),
        (1, Some("l_shipdate".into()), Some(false), Some(1)),
    ]);
    assert!(alter_layout("t", &same, &wanted).unwrap().is_empty());
    // An even table asked for ALL; no sort key configured leaves the sort key alone.
    let even = CurrentLayout::from_rows(&[(0, None, None, None)]);
    let all = TableLayout::resolve(
        &Layout {
            diststyle: Some("all".into()),
            ..Layout::default()
        },
        mapped,
    )
    .unwrap();
    assert_eq!(
        alter_layout("t", &even, &all).unwrap(),
        vec![(
            "ALTER TABLE t ALTER DISTSTYLE ALL;".to_string(),
            "diststyle all (was even)".to_string()
        )]
    );
    let interleaved =
        CurrentLayout::from_rows(&[(0, Some("l_orderkey".into()), Some(false), Some(-1))]);
    let e = alter_layout("t", &interleaved, &wanted).unwrap_err();
    assert!(e.contains("interleaved") && e.contains("recreate"), "{e}");
}
