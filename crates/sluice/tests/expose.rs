//! `sluice expose`: views in DuckDB over the lake's own Parquet files, compared value by value
//! with what `sluice query` reads from the lake (current state, change log, a keyless table,
//! a transform with deletes); views stay at the version they exposed until exposed again; a
//! file no commit took is never read; warehouses that cannot read the lake are refused.

mod common;

use common::{s, Sandbox};

const CONFIG: &str = r#"
[sources.s]
kind = "files"
url = "drops/"
table = "t"
schema_changes = "evolve"
[sources.s.tables.t]
primary_key = ["id"]

[sources.logs]
kind = "files"
url = "logs/"
table = "e"

[transforms.kept]
sql = "SELECT id, v FROM s.t WHERE v <> 'gone'"
primary_key = ["id"]
"#;

type Rows = Vec<Vec<Option<String>>>;

/// Rows of a lake query, `columns` in order, each value as text (NULL as None).
fn lake_rows(sb: &Sandbox, from: &str, columns: &[&str], order: &str) -> Rows {
    let select: Vec<String> = columns
        .iter()
        .map(|c| format!("CAST(\"{c}\" AS VARCHAR) AS \"{c}\""))
        .collect();
    let sql = format!("SELECT {} FROM {from} ORDER BY {order}", select.join(", "));
    sb.query_lake(&sql)
        .into_iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| row.get(*c).and_then(|v| v.as_str()).map(String::from))
                .collect()
        })
        .collect()
}

/// Rows of the exposed view in DuckDB, the same way.
fn view_rows(sb: &Sandbox, from: &str, columns: &[&str], order: &str) -> Rows {
    let select: Vec<String> = columns
        .iter()
        .map(|c| format!("CAST(\"{c}\" AS VARCHAR)"))
        .collect();
    sb.duck(&format!(
        "SELECT {} FROM {from} ORDER BY {order}",
        select.join(", ")
    ))
}

/// Every exposed view equals its lake table, value by value.
fn assert_views_equal_the_lake(sb: &Sandbox, t_columns: &[&str]) {
    let mut changes_columns = t_columns.to_vec();
    changes_columns.extend(["_sluice_op", "_sluice_seq", "_sluice_ingest_date"]);
    let mut state_columns = t_columns.to_vec();
    state_columns.push("_sluice_seq");
    for (view, lake, columns, order) in [
        ("lake_s.t", "s.t", state_columns.clone(), "id"),
        (
            "lake_s.t__changes",
            "s.t__changes",
            changes_columns,
            "_sluice_seq",
        ),
        ("lake_logs.e", "logs.e", vec!["page", "n"], "page"),
        (
            "lake_transforms.kept",
            "transforms.kept",
            vec!["id", "v"],
            "id",
        ),
    ] {
        let expected = lake_rows(sb, lake, &columns, order);
        assert!(!expected.is_empty(), "{lake} is empty");
        assert_eq!(
            view_rows(sb, view, &columns, order),
            expected,
            "{view} differs from the lake's {lake}"
        );
    }
}

#[test]
fn duckdb_views_read_the_lake_files_and_equal_the_lake() {
    let sb = Sandbox::new();
    sb.config(CONFIG);
    sb.write("drops/a.csv", "id,v\n1,a\n2,b\n3,c\n");
    sb.write("logs/l1.csv", "page,n\nhome,1\ncart,2\n");
    sb.sync_json();
    let out = sb.ok(&["expose", "local"]);
    assert!(
        out.contains("exposed s.t in local at lake version"),
        "{out}"
    );
    assert!(out.contains("exposed transforms.kept"), "{out}");
    assert_views_equal_the_lake(&sb, &["id", "v"]);

    // New rows, an update to "gone" (the transform deletes that key) and a new column.
    sb.write("drops/b.csv", "id,v,w\n2,gone,x\n4,d,y\n");
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 0, "{report}");
    // Until exposed again the views show the version they were made at.
    assert_eq!(
        view_rows(&sb, "lake_s.t", &["id", "v"], "id"),
        vec![
            vec![s("1"), s("a")],
            vec![s("2"), s("b")],
            vec![s("3"), s("c")]
        ]
    );
    sb.ok(&["expose", "local"]);
    assert_views_equal_the_lake(&sb, &["id", "v", "w"]);
    assert_eq!(
        view_rows(&sb, "lake_s.t", &["id", "v", "w"], "id"),
        vec![
            vec![s("1"), s("a"), None],
            vec![s("2"), s("gone"), s("x")],
            vec![s("3"), s("c"), None],
            vec![s("4"), s("d"), s("y")]
        ]
    );
    assert_eq!(
        view_rows(&sb, "lake_transforms.kept", &["id"], "id"),
        vec![vec![s("1")], vec![s("3")], vec![s("4")]],
        "the transform's delete of key 2 shows in its view"
    );

    // A Parquet file in the table's folder that no commit took (a crashed write leaves
    // one) is not read: the views list the committed files, never the folder.
    let partition = std::fs::read_dir(sb.path("lake/changes/s/t"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("_sluice_ingest_date="))
        .expect("a partition folder");
    let committed = std::fs::read_dir(&partition)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "parquet"))
        .expect("a data file");
    std::fs::copy(
        &committed,
        partition.join("part-99999-left-by-a-crash.parquet"),
    )
    .unwrap();
    sb.ok(&["expose", "local"]);
    assert_views_equal_the_lake(&sb, &["id", "v", "w"]);

    // --print shows the statements and changes nothing.
    let printed = sb.ok(&["expose", "local", "--print", "--prefix", "other_"]);
    assert!(
        printed.contains("CREATE OR REPLACE VIEW \"other_s\".\"t\""),
        "{printed}"
    );
    assert!(printed.contains("would expose s.t"), "{printed}");
    assert!(sb
        .duck("SELECT schema_name FROM information_schema.schemata WHERE schema_name = 'other_s'")
        .is_empty());
}

#[test]
fn warehouses_that_cannot_read_the_lake_are_refused_by_name() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[warehouses.pg]
kind = "postgres"
url = "postgres://sluice@127.0.0.1:1/db"

[sources.s]
kind = "files"
url = "drops/"
table = "t"
warehouse = "pg"
"#,
    );
    let out = sb.run(&["expose", "pg"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warehouse `pg` is PostgreSQL, which cannot read the lake's Parquet files"),
        "{err}"
    );
    let out = sb.run(&["expose", "nope"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no warehouse named `nope`"));
    // Athena and Spectrum read S3 only: a local lake is refused with where it is.
    sb.write("drops/a.csv", "id\n1\n");
    let out = sb.run(&["--json", "sync", "--lake-only"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sb.run(&["expose", "--athena"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Athena reads the lake from S3") && err.contains("s.t"),
        "{err}"
    );
}

#[test]
fn expose_true_moves_the_views_after_each_sync_that_landed() {
    let sb = Sandbox::new();
    sb.config(&format!(
        "[warehouses.local]\nkind = \"duckdb\"\nexpose = true\n{CONFIG}"
    ));
    sb.write("drops/a.csv", "id,v\n1,a\n2,b\n3,c\n");
    sb.write("logs/l1.csv", "page,n\nhome,1\ncart,2\n");
    let report = sb.sync_json();
    assert_eq!(report["exposed"][0]["warehouse"], "local", "{report}");
    assert_eq!(report["exposed"][0]["tables"], 3, "{report}");
    assert_views_equal_the_lake(&sb, &["id", "v"]);
    sb.write("drops/b.csv", "id,v,w\n2,gone,x\n4,d,y\n");
    sb.sync_json();
    assert_views_equal_the_lake(&sb, &["id", "v", "w"]);
    // Nothing new: the views are left as they are.
    assert!(sb.sync_json().get("exposed").is_none());

    let pg = Sandbox::new();
    pg.config(
        "[warehouses.pg]\nkind = \"postgres\"\nurl = \"postgres://u@127.0.0.1:1/db\"\nexpose = true\n\n[sources.s]\nkind = \"files\"\nurl = \"d/\"\ntable = \"t\"\n",
    );
    let out = pg.run(&["check"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warehouses.pg.expose") && err.contains("PostgreSQL cannot read"),
        "{err}"
    );
}
