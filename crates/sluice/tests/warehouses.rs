//! The warehouse conformance suite: the same scenarios against every warehouse (embedded DuckDB,
//! a private PostgreSQL server, and the Redshift loader with PostgreSQL standing in for
//! Redshift: its tables, staging, apply statements and ledger, with the rows sent over the
//! connection instead of copied from S3), each compared value by value with a model computed here
//! from the changes loaded: schema creation, type round trip, merge (updates, deletes, key
//! changes, several changes per key in one load), soft deletes, append, replace, history
//! (SCD2), evolve, and a load that fails between staging and commit. The Redshift loader runs
//! twice: with the rows over the connection, and loading from lake files as on Redshift
//! (manifests, a stage per schema version, each COPY played by the stand-in by position).
//! DuckDB runs twice too: given batches, and reading a load's lake files itself.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, Int8Array, RecordBatch, StringArray,
    Time64MicrosecondArray, TimestampMicrosecondArray, UInt16Array, UInt32Array, UInt64Array,
    UInt8Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::util::display::array_value_to_string;
use chrono::{TimeZone, Utc};

use common::postgres::{PgServer, PASSWORD};
use sluice_core::change::{stamp_rows, Op, INGEST_DATE};
use sluice_core::config::{Deletes, LoadMode};
use sluice_warehouses::duckdb::DuckDb;
use sluice_warehouses::postgres::{PgOptions, Postgres};
use sluice_warehouses::redshift::{Redshift, Staging};
use sluice_warehouses::{LedgerEntry, LedgerMove, Target, Warehouse};

/// One warehouse under test and how its SQL spells the few things that differ.
struct Wh {
    wh: Box<dyn Warehouse>,
    postgres: bool,
    /// The Redshift loader (on a PostgreSQL stand-in).
    redshift: bool,
    _server: Option<PgServer>,
    _dir: tempfile::TempDir,
    /// Lake files written so far, for a warehouse that loads from them.
    files_written: usize,
    /// Hand it the lake's files rather than batches (it reads them itself).
    reads_files: bool,
}

fn duckdb() -> Wh {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.duckdb");
    Wh {
        wh: Box::new(DuckDb::open(path.to_str().unwrap(), "256MB").unwrap()),
        postgres: false,
        redshift: false,
        _server: None,
        _dir: dir,
        files_written: 0,
        reads_files: false,
    }
}

/// DuckDB reading a load's changes from the lake's Parquet files itself, as it does for a
/// local lake (`read_parquet` over the load's files, cut to its seq range).
fn duckdb_reading_files() -> Wh {
    Wh {
        reads_files: true,
        ..duckdb()
    }
}

fn postgres() -> Wh {
    let server = PgServer::start(None);
    let wh = Postgres::connect(&PgOptions {
        url: server.url(),
        password: Some(PASSWORD.into()),
        ssl_mode: Some("disable".into()),
        ssl_ca: None,
    })
    .unwrap();
    Wh {
        wh: Box::new(wh),
        postgres: true,
        redshift: false,
        _server: Some(server),
        _dir: tempfile::tempdir().unwrap(),
        files_written: 0,
        reads_files: false,
    }
}

fn redshift() -> Wh {
    redshift_with(Default::default())
}

/// The Redshift loader on a PostgreSQL stand-in, with `upkeep` after its loads.
fn redshift_with(upkeep: sluice_warehouses::redshift::Maintenance) -> Wh {
    redshift_staged(Staging::PostgresStandIn, upkeep)
}

/// The Redshift loader loading from the lake's files as on Redshift (manifests, a stage per
/// schema version, COPY by column position), the stand-in playing each COPY.
fn redshift_copying() -> Wh {
    redshift_staged(Staging::PostgresStandInCopy, Default::default())
}

fn redshift_staged(staging: Staging, upkeep: sluice_warehouses::redshift::Maintenance) -> Wh {
    let server = PgServer::start(None);
    let wh = Redshift::connect(
        &PgOptions {
            url: server.url(),
            password: Some(PASSWORD.into()),
            ssl_mode: Some("disable".into()),
            ssl_ca: None,
        },
        staging,
    )
    .unwrap()
    .with_maintenance(upkeep)
    .unwrap();
    Wh {
        wh: Box::new(wh),
        postgres: true,
        redshift: true,
        _server: Some(server),
        _dir: tempfile::tempdir().unwrap(),
        files_written: 0,
        reads_files: false,
    }
}

impl Wh {
    /// Rows of a query, every value as text (NULL as None). In `sql`, `{ts:col}` becomes the
    /// column's microseconds since the epoch and `{hex:col}` its bytes in hex, spelled in
    /// the warehouse's dialect.
    fn rows(&mut self, sql: &str) -> Vec<Vec<Option<String>>> {
        let sql = self.dialect(sql);
        let batches = self
            .wh
            .query(&sql)
            .unwrap_or_else(|e| panic!("{e}\nin: {sql}"));
        let mut out = Vec::new();
        for b in batches {
            for row in 0..b.num_rows() {
                out.push(
                    b.columns()
                        .iter()
                        .map(|c| (!c.is_null(row)).then(|| array_value_to_string(c, row).unwrap()))
                        .collect(),
                );
            }
        }
        out
    }

    fn dialect(&self, sql: &str) -> String {
        let mut out = String::new();
        let mut rest = sql;
        while let Some(start) = rest.find('{') {
            out += &rest[..start];
            let end = start + rest[start..].find('}').unwrap();
            let (kind, col) = rest[start + 1..end].split_once(':').unwrap();
            out += &match (kind, self.postgres) {
                ("ts", true) => {
                    format!("CAST(CAST(extract(epoch FROM {col}) * 1000000 AS BIGINT) AS VARCHAR)")
                }
                ("ts", false) => format!("CAST(epoch_us({col}) AS VARCHAR)"),
                ("hex", true) => format!("encode({col}, 'hex')"),
                ("hex", false) => format!("lower(hex({col}))"),
                _ => panic!("unknown placeholder {kind}"),
            };
            rest = &rest[end + 1..];
        }
        out + rest
    }

    fn load(&mut self, t: &Target, batch: &RecordBatch, seq: i64) -> sluice_warehouses::LoadReport {
        self.try_load(t, vec![Ok(batch.clone())], seq).unwrap()
    }

    fn try_load(
        &mut self,
        t: &Target,
        batches: Vec<Result<RecordBatch, String>>,
        seq: i64,
    ) -> Result<sluice_warehouses::LoadReport, sluice_warehouses::WarehouseError> {
        let schema = batches
            .iter()
            .find_map(|b| b.as_ref().ok().map(|b| b.schema()))
            .unwrap();
        let from = self.wh.ledger(t)?.map(|e| e.seq);
        self.load_from(t, &schema, batches, from, seq)
    }

    /// A load planned when the ledger held `from`.
    fn load_from(
        &mut self,
        t: &Target,
        schema: &SchemaRef,
        batches: Vec<Result<RecordBatch, String>>,
        from: Option<i64>,
        seq: i64,
    ) -> Result<sluice_warehouses::LoadReport, sluice_warehouses::WarehouseError> {
        let to = LedgerEntry {
            lake_version: seq,
            seq,
        };
        let ledger = LedgerMove {
            from,
            to,
            image: false,
        };
        self.load_moving(t, schema, batches, ledger)
    }

    /// A load moving the ledger by `ledger`. A warehouse that loads from the lake's files
    /// gets the batches as lake files, one Parquet file each (a broken file for a failed
    /// read), as the engine hands it the files of the commits a load covers.
    fn load_moving(
        &mut self,
        t: &Target,
        schema: &SchemaRef,
        batches: Vec<Result<RecordBatch, String>>,
        ledger: LedgerMove,
    ) -> Result<sluice_warehouses::LoadReport, sluice_warehouses::WarehouseError> {
        if !self.wh.wants_lake_files() && !self.reads_files {
            return self.wh.load(t, schema, &mut batches.into_iter(), ledger);
        }
        let folder = self
            ._dir
            .path()
            .join(format!("lake/{}/{}", t.schema, t.table));
        std::fs::create_dir_all(&folder).unwrap();
        let mut files = Vec::new();
        for batch in &batches {
            let name = format!("part-{:05}.parquet", self.files_written);
            self.files_written += 1;
            let path = folder.join(&name);
            match batch {
                Ok(b) => {
                    let mut w = parquet::arrow::ArrowWriter::try_new(
                        std::fs::File::create(&path).unwrap(),
                        b.schema(),
                        None,
                    )
                    .unwrap();
                    w.write(b).unwrap();
                    w.close().unwrap();
                }
                Err(_) => std::fs::write(&path, b"the lake read broke here").unwrap(),
            }
            files.push((name, std::fs::metadata(&path).unwrap().len()));
        }
        self.wh.use_lake_files(sluice_warehouses::LakeFiles {
            table_url: url::Url::from_directory_path(&folder).unwrap(),
            store: Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(&folder).unwrap(),
            ),
            files,
            after: ledger.from.unwrap_or(0),
        });
        self.wh.load(t, schema, &mut std::iter::empty(), ledger)
    }
}

fn target(table: &str, mode: LoadMode) -> Target {
    Target {
        schema: "shop".into(),
        table: table.into(),
        mode,
        key: vec!["id".into()],
        deletes: Deletes::Hard,
        add_columns: false,
        source: "shop".into(),
        source_table: table.into(),
        layout: Default::default(),
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

/// Source columns + change columns, as the lake hands them to a load (no partition column).
fn changes(data: RecordBatch, ops: &[Op], ts: &[Option<i64>], first_seq: i64) -> RecordBatch {
    let ingested = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let b = stamp_rows(&data, ops, ts, first_seq, ingested).unwrap();
    let keep: Vec<usize> = (0..b.num_columns())
        .filter(|&i| b.schema().field(i).name() != INGEST_DATE)
        .collect();
    b.project(&keep).unwrap()
}

// ---- the small table most scenarios use: (id, name, amount) ----

#[derive(Clone, Copy)]
struct Change {
    op: Op,
    id: i64,
    name: &'static str,
    cents: i64,
    /// Source commit time, seconds.
    ts: i64,
}

fn c(op: Op, id: i64, name: &'static str, cents: i64, ts: i64) -> Change {
    Change {
        op,
        id,
        name,
        cents,
        ts,
    }
}

fn small_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Decimal128(12, 2), true),
    ]))
}

fn batch_of(list: &[Change], first_seq: i64) -> RecordBatch {
    let data = RecordBatch::try_new(
        small_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(list.iter().map(|c| c.id))),
            Arc::new(StringArray::from_iter_values(list.iter().map(|c| c.name))),
            Arc::new(
                Decimal128Array::from_iter_values(list.iter().map(|c| c.cents as i128))
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
        ],
    )
    .unwrap();
    let ops: Vec<Op> = list.iter().map(|c| c.op).collect();
    let ts: Vec<Option<i64>> = list.iter().map(|c| Some(c.ts * 1_000_000)).collect();
    changes(data, &ops, &ts, first_seq)
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Loads `loads` (each a list of changes) one transaction each, numbering changes on.
fn load_all(w: &mut Wh, t: &Target, loads: &[Vec<Change>]) {
    let mut seq = 1;
    for l in loads {
        let b = batch_of(l, seq);
        seq += l.len() as i64;
        let r = w.load(t, &b, seq - 1);
        assert_eq!(r.changes, l.len() as u64);
    }
}

/// The changes of the merge scenarios: inserts; then two updates of one key in one load, a
/// delete, a key change (delete 3 + insert 30), an insert deleted in the same load; then a
/// re-insert of the deleted key; then inserts of a loaded key and of new keys.
fn merge_loads() -> Vec<Vec<Change>> {
    use Op::*;
    vec![
        (1..=5)
            .map(|i| {
                c(
                    Read,
                    i,
                    ["a", "b", "c", "d", "e"][i as usize - 1],
                    i * 100,
                    10,
                )
            })
            .collect(),
        vec![
            c(Update, 1, "a1", 111, 20),
            c(Update, 1, "a2", 112, 21),
            c(Delete, 2, "b", 200, 22),
            c(Delete, 3, "c", 300, 23),
            c(Insert, 30, "c", 300, 23),
            c(Insert, 6, "f", 600, 24),
            c(Delete, 6, "f", 600, 25),
            c(Insert, 7, "g'quote", 700, 26),
        ],
        vec![
            c(Insert, 2, "b-again", 201, 30),
            c(Update, 4, "d1", 401, 31),
        ],
        // Inserts only, one of a key already loaded (PostgreSQL's fast path must fall back)...
        vec![c(Insert, 8, "h", 800, 40), c(Insert, 5, "e-again", 501, 41)],
        // ...and inserts only of new keys (the fast path into a loaded table).
        vec![c(Insert, 9, "i", 900, 50), c(Read, 10, "j", 1000, 50)],
    ]
}

/// Latest state per key after the changes (deleted keys kept, flagged, for soft deletes).
fn merge_model(loads: &[Vec<Change>]) -> BTreeMap<i64, (Change, bool)> {
    let mut m = BTreeMap::new();
    for ch in loads.iter().flatten() {
        m.insert(ch.id, (*ch, ch.op == Op::Delete));
    }
    m
}

/// The rows merge leaves: each live key's latest change, as `small_rows` reads them.
fn live_rows(loads: &[Vec<Change>]) -> Vec<Vec<Option<String>>> {
    merge_model(loads)
        .values()
        .filter(|(_, deleted)| !deleted)
        .map(|(ch, _)| {
            vec![
                s(&ch.id.to_string()),
                s(ch.name),
                s(&money(ch.cents)),
                s(&(ch.ts * 1_000_000).to_string()),
            ]
        })
        .collect()
}

fn small_rows(w: &mut Wh, table: &str, extra: &str) -> Vec<Vec<Option<String>>> {
    w.rows(&format!(
        "SELECT CAST(id AS VARCHAR), name, CAST(amount AS VARCHAR), {{ts:_sluice_source_ts}}{extra} FROM shop.{table} AS t ORDER BY t.id"
    ))
}

fn merge_scenario(mut w: Wh) {
    let t = target("orders", LoadMode::Merge);
    let loads = merge_loads();
    // Load by load, the table equals the model of the changes so far.
    for n in 1..=loads.len() {
        let mut seq = 1 + loads[..n - 1].iter().map(|l| l.len() as i64).sum::<i64>();
        let b = batch_of(&loads[n - 1], seq);
        seq += loads[n - 1].len() as i64;
        w.load(&t, &b, seq - 1);
        assert_eq!(
            small_rows(&mut w, "orders", ""),
            live_rows(&loads[..n]),
            "after load {n}"
        );
    }
    assert_eq!(
        w.wh.ledger(&t).unwrap(),
        Some(LedgerEntry {
            lake_version: 19,
            seq: 19
        })
    );
    // All of it as a table's first load, and a first load of inserts that repeat a key: the
    // same model (PostgreSQL copies a first load straight into the table, then falls back).
    let all: Vec<Change> = loads.iter().flatten().copied().collect();
    let repeated = vec![
        c(Op::Insert, 1, "a", 100, 10),
        c(Op::Insert, 1, "a-again", 101, 11),
        c(Op::Insert, 2, "b", 200, 12),
    ];
    for (table, changes) in [("orders_once", all), ("orders_repeat", repeated)] {
        let t = target(table, LoadMode::Merge);
        w.load(&t, &batch_of(&changes, 1), changes.len() as i64);
        let want = live_rows(std::slice::from_ref(&changes));
        assert_eq!(small_rows(&mut w, table, ""), want, "{table}");
    }
    // Every row carries the load time.
    let unstamped = w.rows("SELECT count(*) FROM shop.orders WHERE _sluice_loaded_at IS NULL");
    assert_eq!(unstamped, vec![vec![s("0")]]);
}

/// Merge with the op column as `Utf8View`, the string type DataFusion's Parquet reader may
/// hand a load: updates and deletes still apply (PostgreSQL's fast path once counted them as
/// inserts when it could not read the column).
fn utf8view_ops_scenario(mut w: Wh) {
    let view = |b: RecordBatch| {
        let i = b.schema().index_of(sluice_core::change::OP).unwrap();
        let mut fields: Vec<Field> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[i] = fields[i].clone().with_data_type(DataType::Utf8View);
        let mut cols = b.columns().to_vec();
        cols[i] = arrow::compute::cast(&cols[i], &DataType::Utf8View).unwrap();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
    };
    let t = target("orders", LoadMode::Merge);
    let loads = merge_loads();
    let mut seq = 1;
    for (n, l) in loads.iter().enumerate() {
        let b = batch_of(l, seq);
        seq += l.len() as i64;
        w.load(&t, &view(b), seq - 1);
        assert_eq!(
            small_rows(&mut w, "orders", ""),
            live_rows(&loads[..=n]),
            "after load {}",
            n + 1
        );
    }
    // Deletes of keys the table never had, read as inserts, would add rows: into a new table
    // (copied straight in) and into a loaded one (inserted directly).
    use Op::*;
    let t = target("orders_view", LoadMode::Merge);
    let loads = vec![
        vec![c(Insert, 1, "a", 100, 10), c(Delete, 2, "b", 200, 11)],
        vec![c(Delete, 3, "c", 300, 12)],
    ];
    load_all_with(&mut w, &t, &loads, view);
    assert_eq!(small_rows(&mut w, "orders_view", ""), live_rows(&loads));
}

/// [`load_all`] with each batch changed by `f` first.
fn load_all_with(
    w: &mut Wh,
    t: &Target,
    loads: &[Vec<Change>],
    f: impl Fn(RecordBatch) -> RecordBatch,
) {
    let mut seq = 1;
    for l in loads {
        let b = f(batch_of(l, seq));
        seq += l.len() as i64;
        let r = w.load(t, &b, seq - 1);
        assert_eq!(r.changes, l.len() as u64);
    }
}

/// Merge without a key (DESIGN.md, Keys): rows matched on `_sluice_row_id`, identical rows
/// counted, an update as the delete of its before image and its after image, a delete of a
/// row the table lacks changing nothing; a snapshot image loaded whole replaces the table.
fn keyless_merge_scenario(mut w: Wh) {
    use Op::*;
    let mut t = target("bag", LoadMode::Merge);
    t.key = Vec::new();
    let with_ids = |b: RecordBatch| {
        let ids = sluice_core::rowid::row_ids(&b, &["id", "name", "amount"]);
        let mut fields: Vec<Field> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(
            sluice_core::change::ROW_ID,
            DataType::Utf8,
            false,
        ));
        let mut cols = b.columns().to_vec();
        cols.push(Arc::new(StringArray::from_iter_values(
            ids.into_iter().map(sluice_core::rowid::row_id_text),
        )));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
    };
    let loads = [
        vec![
            c(Read, 1, "a", 100, 1),
            c(Read, 1, "a", 100, 1),
            c(Read, 2, "b", 200, 1),
        ],
        vec![
            c(Delete, 1, "a", 100, 2),
            c(Delete, 2, "b", 200, 2),
            c(Update, 2, "b2", 201, 2),
            c(Insert, 3, "c", 300, 2),
            c(Insert, 3, "c", 300, 2),
        ],
        vec![
            c(Insert, 1, "a", 100, 3),
            c(Delete, 3, "c", 300, 3),
            c(Delete, 9, "never", 900, 3),
        ],
    ];
    let bag = |w: &mut Wh| {
        w.rows("SELECT CAST(id AS VARCHAR), name, CAST(amount AS VARCHAR) FROM shop.bag AS t ORDER BY t.id, t.name")
    };
    let row = |id: &str, name: &str, cents: i64| vec![s(id), s(name), s(&money(cents))];
    load_all_with(&mut w, &t, &loads[..1], with_ids);
    assert_eq!(
        bag(&mut w),
        vec![row("1", "a", 100), row("1", "a", 100), row("2", "b", 200)]
    );
    let mut seq = 4;
    for l in &loads[1..] {
        let b = with_ids(batch_of(l, seq));
        seq += l.len() as i64;
        w.load(&t, &b, seq - 1);
    }
    assert_eq!(
        bag(&mut w),
        vec![
            row("1", "a", 100),
            row("1", "a", 100),
            row("2", "b2", 201),
            row("3", "c", 300)
        ]
    );
    // A snapshot image: the table becomes exactly its rows.
    let image = with_ids(batch_of(
        &[c(Read, 5, "e", 500, 4), c(Read, 5, "e", 500, 4)],
        seq,
    ));
    let from = w.wh.ledger(&t).unwrap().map(|e| e.seq);
    w.load_moving(
        &t,
        &image.schema(),
        vec![Ok(image.clone())],
        LedgerMove {
            from,
            to: LedgerEntry {
                lake_version: seq + 1,
                seq: seq + 1,
            },
            image: true,
        },
    )
    .unwrap();
    assert_eq!(bag(&mut w), vec![row("5", "e", 500), row("5", "e", 500)]);
}

/// A load applies only from where it was planned: one planned before another load moved the
/// ledger (two `sluice sync` at once) is refused whole, and a table whose ledger row records
/// another lake table is never loaded from this one.
fn ledger_guard_scenario(mut w: Wh) {
    use Op::*;
    let t = target("orders", LoadMode::Append);
    let first = batch_of(&[c(Insert, 1, "a", 100, 10), c(Insert, 2, "b", 200, 11)], 1);
    w.load(&t, &first, 2);
    let before = small_rows(&mut w, "orders", "");
    let second = batch_of(&[c(Update, 1, "a2", 101, 12)], 3);
    for planned in [None, Some(1)] {
        let err = w
            .load_from(&t, &second.schema(), vec![Ok(second.clone())], planned, 3)
            .unwrap_err();
        assert!(
            matches!(err, sluice_warehouses::WarehouseError::LedgerMoved { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("moved"), "{err}");
    }
    let mut foreign = t.clone();
    foreign.source_table = "other".into();
    let err = w
        .load_from(
            &foreign,
            &second.schema(),
            vec![Ok(second.clone())],
            Some(2),
            3,
        )
        .unwrap_err();
    assert!(err.to_string().contains("shop.orders (append)"), "{err}");
    assert_eq!(small_rows(&mut w, "orders", ""), before, "nothing applied");
    assert_eq!(w.wh.ledger(&t).unwrap().unwrap().seq, 2);
    // Planned from where the ledger is, it loads.
    w.load_from(&t, &second.schema(), vec![Ok(second)], Some(2), 3)
        .unwrap();
    assert_eq!(small_rows(&mut w, "orders", "").len(), 3);
}

fn soft_delete_scenario(mut w: Wh) {
    let mut t = target("orders", LoadMode::Merge);
    t.deletes = Deletes::Soft;
    let loads = merge_loads();
    load_all(&mut w, &t, &loads);
    let want: Vec<Vec<Option<String>>> = merge_model(&loads)
        .values()
        .map(|(ch, deleted)| {
            vec![
                s(&ch.id.to_string()),
                s(ch.name),
                s(&money(ch.cents)),
                s(&(ch.ts * 1_000_000).to_string()),
                s(&deleted.to_string()),
            ]
        })
        .collect();
    assert_eq!(
        small_rows(&mut w, "orders", ", CAST(_sluice_deleted AS VARCHAR)"),
        want
    );
}

fn append_scenario(mut w: Wh) {
    let t = target("orders_log", LoadMode::Append);
    let loads = merge_loads();
    load_all(&mut w, &t, &loads);
    let want: Vec<Vec<Option<String>>> = loads
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, ch)| {
            vec![
                s(&ch.id.to_string()),
                s(ch.name),
                s(&money(ch.cents)),
                s(ch.op.code()),
                s(&(i + 1).to_string()),
            ]
        })
        .collect();
    let got = w.rows("SELECT CAST(id AS VARCHAR), name, CAST(amount AS VARCHAR), _sluice_op, CAST(_sluice_seq AS VARCHAR) FROM shop.orders_log AS t ORDER BY t._sluice_seq");
    assert_eq!(got, want);
}

fn replace_scenario(mut w: Wh) {
    let t = target("orders_now", LoadMode::Replace);
    use Op::*;
    let first = vec![c(Read, 1, "a", 100, 10), c(Read, 2, "b", 200, 10)];
    let second = vec![
        c(Read, 2, "b2", 201, 20),
        c(Read, 3, "c", 300, 20),
        c(Update, 3, "c2", 301, 21),
    ];
    load_all(&mut w, &t, &[first, second]);
    assert_eq!(
        small_rows(&mut w, "orders_now", ""),
        vec![
            vec![s("2"), s("b2"), s("2.01"), s("20000000")],
            vec![s("3"), s("c2"), s("3.01"), s("21000000")],
        ]
    );
}

/// Versions per key with times made monotonic per key, as the history contract says.
fn history_model(loads: &[Vec<Change>]) -> Vec<Vec<Option<String>>> {
    let mut by_key: BTreeMap<i64, Vec<(Change, i64)>> = BTreeMap::new();
    for ch in loads.iter().flatten() {
        let list = by_key.entry(ch.id).or_default();
        let t = list.last().map(|(_, t)| (*t).max(ch.ts)).unwrap_or(ch.ts);
        list.push((*ch, t));
    }
    let mut rows = Vec::new();
    for list in by_key.values() {
        for (i, (ch, t)) in list.iter().enumerate() {
            if ch.op == Op::Delete {
                continue;
            }
            let to = list.get(i + 1).map(|(_, t)| (t * 1_000_000).to_string());
            rows.push(vec![
                s(&ch.id.to_string()),
                s(ch.name),
                s(&(t * 1_000_000).to_string()),
                to.clone(),
                s(&to.is_none().to_string()),
            ]);
        }
    }
    rows
}

fn history_scenario(mut w: Wh) {
    let t = target("orders_history", LoadMode::History);
    use Op::*;
    let loads = vec![
        vec![
            c(Insert, 1, "v1", 100, 10),
            c(Update, 1, "v2", 101, 20),
            c(Update, 1, "v3", 102, 30),
            c(Insert, 2, "only", 200, 10),
            // The commit clock steps back: the version starts no earlier than the last one.
            c(Insert, 3, "x1", 300, 50),
            c(Update, 3, "x2", 301, 40),
        ],
        vec![c(Update, 1, "v4", 103, 40), c(Delete, 1, "v4", 103, 50)],
        vec![c(Insert, 1, "back", 104, 60), c(Delete, 2, "only", 200, 60)],
    ];
    load_all(&mut w, &t, &loads);
    let got = w.rows(
        "SELECT CAST(id AS VARCHAR), name, {ts:_sluice_valid_from}, {ts:_sluice_valid_to}, CAST(_sluice_is_current AS VARCHAR) FROM shop.orders_history AS t ORDER BY t.id, t._sluice_seq",
    );
    assert_eq!(got, history_model(&loads));
    // Key 1: five versions; contiguous until the delete at 50, then the re-insert at 60.
    assert_eq!(got.iter().filter(|r| r[0] == s("1")).count(), 5);
    // No two versions of a key overlap, checked by the warehouse itself.
    let overlaps = w.rows(
        "SELECT count(*) FROM shop.orders_history a JOIN shop.orders_history b
           ON a.id = b.id AND a._sluice_seq < b._sluice_seq
          WHERE a._sluice_valid_to IS NULL OR b._sluice_valid_from < a._sluice_valid_to",
    );
    assert_eq!(overlaps, vec![vec![s("0")]]);
    let current = w.rows("SELECT count(*) FROM shop.orders_history WHERE _sluice_is_current GROUP BY id HAVING count(*) > 1");
    assert!(
        current.is_empty(),
        "a key with two current versions: {current:?}"
    );
}

/// Change 2: an insert of key 2 with a column the source gained.
fn with_coupon(code: &str) -> RecordBatch {
    let wide = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Decimal128(12, 2), true),
        Field::new("Coupon Code", DataType::Utf8, true),
    ]));
    let data = RecordBatch::try_new(
        wide,
        vec![
            Arc::new(Int64Array::from(vec![2])),
            Arc::new(StringArray::from(vec!["b"])),
            Arc::new(
                Decimal128Array::from(vec![200])
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
            Arc::new(StringArray::from(vec![code])),
        ],
    )
    .unwrap();
    changes(data, &[Op::Insert], &[Some(20_000_000)], 2)
}

fn evolve_scenario(mut w: Wh) {
    use Op::*;
    let mut t = target("orders", LoadMode::Merge);
    load_all(&mut w, &t, &[vec![c(Read, 1, "a", 100, 10)]]);
    // The source gains a column.
    let b = with_coupon("SPRING");
    // Under halt the load stops, names the column, and changes nothing.
    let err = w
        .try_load(&t, vec![Ok(b.clone())], 2)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("coupon_code") && err.contains("schema gate"),
        "{err}"
    );
    assert_eq!(w.wh.ledger(&t).unwrap().unwrap().seq, 1);
    assert_eq!(
        w.rows("SELECT count(*) FROM shop.orders"),
        vec![vec![s("1")]]
    );
    // Under evolve the column is added and loaded; older rows hold NULL.
    t.add_columns = true;
    w.try_load(&t, vec![Ok(b)], 2).unwrap();
    assert_eq!(
        w.rows("SELECT CAST(id AS VARCHAR), name, coupon_code FROM shop.orders AS t ORDER BY t.id"),
        vec![
            vec![s("1"), s("a"), None],
            vec![s("2"), s("b"), s("SPRING")]
        ]
    );
    // Append tables grow the same way, the new column after sluice's own.
    let mut log = target("orders_log", LoadMode::Append);
    log.add_columns = true;
    load_all(&mut w, &log, &[vec![c(Read, 1, "a", 100, 10)]]);
    let b = with_coupon("SUMMER");
    w.try_load(&log, vec![Ok(b)], 2).unwrap();
    assert_eq!(
        w.rows("SELECT CAST(id AS VARCHAR), _sluice_op, coupon_code FROM shop.orders_log AS t ORDER BY t._sluice_seq"),
        vec![vec![s("1"), s("r"), None], vec![s("2"), s("c"), s("SUMMER")]]
    );
}

/// A load that fails after staging (the lake read breaks midway) leaves the table and the
/// ledger as they were; the retry applies everything once.
fn failed_load_scenario(mut w: Wh) {
    use Op::*;
    for mode in [LoadMode::Merge, LoadMode::Append, LoadMode::History] {
        let t = target(&format!("t_{}", mode.name()), mode);
        load_all(&mut w, &t, &[vec![c(Read, 1, "a", 100, 10)]]);
        let before = small_rows(&mut w, &t.table, "");
        let next = batch_of(
            &[c(Update, 1, "a2", 101, 20), c(Insert, 2, "b", 200, 20)],
            2,
        );
        let err = w
            .try_load(
                &t,
                vec![Ok(next.clone()), Err("lake read failed".into())],
                3,
            )
            .unwrap_err()
            .to_string();
        // A load from lake files meets the failure as a broken file.
        let named = match (w.wh.wants_lake_files(), w.reads_files) {
            (true, _) => "Corrupt footer",
            // DuckDB names the file it could not read.
            (false, true) => "part-",
            (false, false) => "lake read failed",
        };
        assert!(err.contains(named), "{err}");
        assert_eq!(small_rows(&mut w, &t.table, ""), before, "{}", mode.name());
        assert_eq!(w.wh.ledger(&t).unwrap().unwrap().seq, 1);
        w.try_load(&t, vec![Ok(next)], 3).unwrap();
        assert_eq!(w.wh.ledger(&t).unwrap().unwrap().seq, 3);
        let n = w.rows(&format!("SELECT count(*) FROM shop.{}", t.table));
        let want = match mode {
            LoadMode::Merge => "2",
            _ => "3",
        };
        assert_eq!(n, vec![vec![s(want)]], "{}", mode.name());
    }
}

// ---- every type the lake hands a warehouse ----

fn types_scenario(mut w: Wh) {
    let mut json_meta = std::collections::HashMap::new();
    json_meta.insert("ARROW:extension:name".to_string(), "arrow.json".to_string());
    let utc = || Some("UTC".into());
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("b", DataType::Boolean, true),
        Field::new("i8", DataType::Int8, true),
        Field::new("i16", DataType::Int16, true),
        Field::new("i32", DataType::Int32, true),
        Field::new("u8", DataType::UInt8, true),
        Field::new("u16", DataType::UInt16, true),
        Field::new("u32", DataType::UInt32, true),
        Field::new("u64", DataType::UInt64, true),
        Field::new("f32", DataType::Float32, true),
        Field::new("f64", DataType::Float64, true),
        Field::new("d38", DataType::Decimal128(38, 10), true),
        Field::new("d5", DataType::Decimal128(5, 2), true),
        Field::new("txt", DataType::Utf8, true),
        Field::new("doc", DataType::Utf8, true).with_metadata(json_meta),
        Field::new("bin", DataType::Binary, true),
        Field::new("day", DataType::Date32, true),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, utc()),
            true,
        ),
        Field::new(
            "local",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("tod", DataType::Time64(TimeUnit::Microsecond), true),
    ]));
    let big = 10i128.pow(38) - 1;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1, 2, 3])),
        Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
        Arc::new(Int8Array::from(vec![Some(i8::MIN), Some(i8::MAX), None])),
        Arc::new(Int16Array::from(vec![Some(i16::MIN), Some(i16::MAX), None])),
        Arc::new(Int32Array::from(vec![Some(i32::MIN), Some(i32::MAX), None])),
        Arc::new(UInt8Array::from(vec![Some(0), Some(u8::MAX), None])),
        Arc::new(UInt16Array::from(vec![Some(0), Some(u16::MAX), None])),
        Arc::new(UInt32Array::from(vec![Some(0), Some(u32::MAX), None])),
        Arc::new(UInt64Array::from(vec![Some(0), Some(u64::MAX), None])),
        Arc::new(Float32Array::from(vec![Some(1.5), Some(-2.25), None])),
        Arc::new(Float64Array::from(vec![
            Some(0.125),
            Some(-123456.789),
            None,
        ])),
        Arc::new(
            Decimal128Array::from(vec![Some(big), Some(-1), None])
                .with_precision_and_scale(38, 10)
                .unwrap(),
        ),
        Arc::new(
            Decimal128Array::from(vec![Some(-99999), Some(5), None])
                .with_precision_and_scale(5, 2)
                .unwrap(),
        ),
        Arc::new(StringArray::from(vec![
            Some("héllo 🦀 \"q\" 'a'"),
            Some(""),
            None,
        ])),
        Arc::new(StringArray::from(vec![
            Some("{\"a\": [1, 2], \"b\": \"x\"}"),
            Some("[]"),
            None,
        ])),
        Arc::new(BinaryArray::from(vec![
            Some(&[0u8, 1, 255][..]),
            Some(&[][..]),
            None,
        ])),
        Arc::new(Date32Array::from(vec![Some(19782), Some(-719162), None])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_709_211_845_123_456), Some(-1), None])
                .with_timezone("UTC"),
        ),
        Arc::new(TimestampMicrosecondArray::from(vec![
            Some(1_709_211_845_000_001),
            Some(0),
            None,
        ])),
        Arc::new(Time64MicrosecondArray::from(vec![
            Some(86_399_999_999),
            Some(0),
            None,
        ])),
    ];
    let data = RecordBatch::try_new(schema, columns).unwrap();
    let t = target("every_type", LoadMode::Merge);
    let b = changes(data, &[Op::Read; 3], &[Some(1), None, Some(2)], 1);
    w.load(&t, &b, 3);
    let got = w.rows(
        "SELECT CAST(id AS VARCHAR), CAST(b AS VARCHAR), CAST(i8 AS VARCHAR), CAST(i16 AS VARCHAR), CAST(i32 AS VARCHAR),
                CAST(u8 AS VARCHAR), CAST(u16 AS VARCHAR), CAST(u32 AS VARCHAR), CAST(u64 AS VARCHAR),
                CAST(f32 AS VARCHAR), CAST(f64 AS VARCHAR), CAST(d38 AS VARCHAR), CAST(d5 AS VARCHAR),
                txt, CAST(doc AS VARCHAR), {hex:bin}, CAST(day AS VARCHAR), {ts:\"at\"}, {ts:\"local\"}, CAST(tod AS VARCHAR)
           FROM shop.every_type AS t ORDER BY t.id",
    );
    let row = |v: &[Option<&str>]| v.iter().map(|x| x.map(String::from)).collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            row(&[
                Some("1"),
                Some("true"),
                Some("-128"),
                Some("-32768"),
                Some("-2147483648"),
                Some("0"),
                Some("0"),
                Some("0"),
                Some("0"),
                Some("1.5"),
                Some("0.125"),
                Some("9999999999999999999999999999.9999999999"),
                Some("-999.99"),
                Some("héllo 🦀 \"q\" 'a'"),
                Some("{\"a\": [1, 2], \"b\": \"x\"}"),
                Some("0001ff"),
                Some("2024-02-29"),
                Some("1709211845123456"),
                Some("1709211845000001"),
                Some("23:59:59.999999"),
            ]),
            row(&[
                Some("2"),
                Some("false"),
                Some("127"),
                Some("32767"),
                Some("2147483647"),
                Some("255"),
                Some("65535"),
                Some("4294967295"),
                Some("18446744073709551615"),
                Some("-2.25"),
                Some("-123456.789"),
                Some("-0.0000000001"),
                Some("0.05"),
                Some(""),
                Some("[]"),
                Some(""),
                Some("0001-01-01"),
                Some("-1"),
                Some("0"),
                Some("00:00:00"),
            ]),
            row(&[
                Some("3"),
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None
            ]),
        ]
    );
    if w.redshift {
        // Text is a VARCHAR as wide as its longest value, rounded up to a power of two.
        let txt = b.column(b.schema().index_of("txt").unwrap()).clone();
        let longest = (0..txt.len())
            .filter(|&i| !txt.is_null(i))
            .map(|i| array_value_to_string(&txt, i).unwrap().len())
            .max()
            .unwrap();
        assert_eq!(
            w.rows("SELECT data_type, CAST(character_maximum_length AS VARCHAR) FROM information_schema.columns WHERE table_schema = 'shop' AND table_name = 'every_type' AND column_name = 'txt'"),
            vec![vec![
                s("character varying"),
                Some(sluice_warehouses::redshift::varchar_size(longest).to_string())
            ]]
        );
    }
    if w.postgres {
        // The column types the mapping promises.
        let types = w.rows(
            "SELECT column_name, data_type, CAST(numeric_precision AS VARCHAR), CAST(numeric_scale AS VARCHAR)
               FROM information_schema.columns WHERE table_schema = 'shop' AND table_name = 'every_type'
                AND column_name IN ('u64', 'd38', 'doc', 'bin', 'at', 'local', 'i8') ORDER BY column_name",
        );
        assert_eq!(
            types,
            vec![
                vec![s("at"), s("timestamp with time zone"), None, None],
                vec![s("bin"), s("bytea"), None, None],
                vec![s("d38"), s("numeric"), s("38"), s("10")],
                vec![s("doc"), s("jsonb"), None, None],
                vec![s("i8"), s("smallint"), s("16"), s("0")],
                vec![s("local"), s("timestamp without time zone"), None, None],
                vec![s("u64"), s("numeric"), s("20"), s("0")],
            ]
        );
    }
}

/// Redshift only: a VARCHAR is sized from the data and widened when longer values come; a
/// value over Redshift's 65,535 bytes loads cut (on a character boundary) with its row
/// flagged `_sluice_truncated`.
fn redshift_fit_scenario(mut w: Wh) {
    use Op::*;
    let t = target("orders", LoadMode::Merge);
    let width = |w: &mut Wh| {
        w.rows(
            "SELECT CAST(character_maximum_length AS VARCHAR) FROM information_schema.columns
              WHERE table_schema = 'shop' AND table_name = 'orders' AND column_name = 'name'",
        )
    };
    load_all(&mut w, &t, &[vec![c(Read, 1, "a", 100, 10)]]);
    assert_eq!(width(&mut w), vec![vec![s("16")]]);
    let mid: &'static str = Box::leak("m".repeat(300).into_boxed_str());
    w.load(&t, &batch_of(&[c(Insert, 2, mid, 200, 20)], 2), 2);
    assert_eq!(width(&mut w), vec![vec![s("512")]]);
    // 70,001 bytes, a two-byte character straddling the limit.
    let huge: &'static str = Box::leak(format!("{}é", "h".repeat(69_999)).into_boxed_str());
    let r = w.load(
        &t,
        &batch_of(
            &[c(Insert, 3, huge, 300, 30), c(Update, 1, "a2", 110, 30)],
            3,
        ),
        4,
    );
    assert_eq!(r.changes, 2);
    assert_eq!(width(&mut w), vec![vec![s("65535")]]);
    assert_eq!(
        w.rows(
            "SELECT CAST(id AS VARCHAR), CAST(octet_length(name) AS VARCHAR), CAST(name = repeat('h', octet_length(name)) AS VARCHAR), CAST(_sluice_truncated AS VARCHAR)
               FROM shop.orders AS t ORDER BY t.id"
        ),
        vec![
            vec![s("1"), s("2"), s("false"), s("false")],
            vec![s("2"), s("300"), s("false"), s("false")],
            vec![s("3"), s("65535"), s("true"), s("true")],
        ]
    );
    // What `sluice status` reports.
    assert_eq!(w.wh.truncated_rows(&t).unwrap(), 1);
}

// ---- nested columns: lists, structs, maps ----

/// A list of structs, a map and a list of floats that are not numbers land in each
/// warehouse's nested type (DuckDB's own, JSONB, SUPER), and an update of a nested value
/// replaces it (merge) or closes a version (history compares nested values).
fn nested_scenario(mut w: Wh) {
    use arrow::array::{
        Float64Builder, Int64Builder, ListBuilder, MapBuilder, StringBuilder, StructBuilder,
    };
    let item = arrow::datatypes::Fields::from(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
    ]);
    let batch = |ids: &[i64], second: i64| {
        let mut items = ListBuilder::new(StructBuilder::from_fields(item.clone(), 4));
        let mut tags = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
        let mut floats = ListBuilder::new(Float64Builder::new());
        for &id in ids {
            if id != 1 {
                items.append(true);
                tags.append(false).unwrap();
                floats.append_null();
                continue;
            }
            for (k, v) in [("a", Some(second)), ("b \"q\"", None)] {
                let s = items.values();
                s.field_builder::<StringBuilder>(0).unwrap().append_value(k);
                s.field_builder::<Int64Builder>(1).unwrap().append_option(v);
                s.append(true);
            }
            items.append(true);
            tags.keys().append_value("x");
            tags.values().append_value(1);
            tags.append(true).unwrap();
            floats.append_value([Some(0.5), Some(f64::NAN), Some(f64::NEG_INFINITY), None]);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(items.finish()),
            Arc::new(tags.finish()),
            Arc::new(floats.finish()),
        ];
        let schema = Arc::new(Schema::new(
            ["id", "items", "tags", "floats"]
                .iter()
                .zip(&columns)
                .map(|(n, c)| Field::new(*n, c.data_type().clone(), *n != "id"))
                .collect::<Vec<_>>(),
        ));
        RecordBatch::try_new(schema, columns).unwrap()
    };
    for mode in [LoadMode::Merge, LoadMode::History] {
        let t = target(&format!("nested_{}", mode.name()), mode);
        let first = changes(batch(&[1, 2], 7), &[Op::Read; 2], &[Some(1), Some(1)], 1);
        w.load(&t, &first, 2);
        let second = changes(batch(&[1], 8), &[Op::Update], &[Some(2)], 3);
        w.load(&t, &second, 3);
        let order = match mode {
            LoadMode::History => "t.id, t._sluice_seq",
            _ => "t.id",
        };
        let sql = format!(
            "SELECT CAST(id AS VARCHAR), CAST(items AS VARCHAR), CAST(tags AS VARCHAR), CAST(floats AS VARCHAR) FROM shop.nested_{} AS t ORDER BY {order}",
            mode.name()
        );
        let got = w.rows(&sql);
        let (one, two) = match w.postgres {
            // JSONB (SUPER on the stand-in): NaN and infinities as the strings JSON has.
            true => (
                vec![
                    s("1"),
                    s(r#"[{"k": "a", "v": 8}, {"k": "b \"q\"", "v": null}]"#),
                    s(r#"{"x": 1}"#),
                    s(r#"[0.5, "NaN", "-Infinity", null]"#),
                ],
                vec![s("2"), s("[]"), None, None],
            ),
            false => (
                vec![
                    s("1"),
                    s("[{'k': a, 'v': 8}, {'k': 'b \"q\"', 'v': NULL}]"),
                    s("{x=1}"),
                    s("[0.5, nan, -inf, NULL]"),
                ],
                vec![s("2"), s("[]"), None, None],
            ),
        };
        match mode {
            LoadMode::Merge => assert_eq!(got, vec![one, two]),
            // History: the update closed id 1's first version and opened one with v = 8.
            _ => {
                assert_eq!(got.len(), 3, "{got:?}");
                assert_eq!(got[1], one);
                assert_eq!(got[2], two);
                assert!(got[0][1].as_deref().unwrap().contains('7'), "{got:?}");
            }
        }
    }
}

/// Redshift upkeep on the stand-in: VACUUM on its cadence (every load here), ANALYZE once
/// the changes loaded since the last one pass the threshold, both said in the load's
/// report and seen by the server's own statistics.
#[test]
fn redshift_upkeep_analyzes_past_a_threshold_and_vacuums_on_a_cadence() {
    use Op::*;
    let mut w = redshift_with(sluice_warehouses::redshift::Maintenance {
        analyze_after_changes: Some(5),
        vacuum: Some("delete only".into()),
        vacuum_every: std::time::Duration::ZERO,
    });
    let t = target("orders", LoadMode::Merge);
    let first = batch_of(
        &[
            c(Insert, 1, "a", 100, 1),
            c(Insert, 2, "b", 200, 1),
            c(Insert, 3, "c", 300, 1),
        ],
        1,
    );
    let r = w.load(&t, &first, 3);
    assert_eq!(
        r.maintenance,
        vec!["VACUUM \"shop\".\"orders\"".to_string()]
    );
    let second = batch_of(
        &[
            c(Update, 1, "a2", 110, 2),
            c(Delete, 2, "b", 200, 2),
            c(Insert, 4, "d", 400, 2),
        ],
        4,
    );
    let r = w.load(&t, &second, 6);
    assert_eq!(
        r.maintenance,
        vec![
            "ANALYZE after 6 changed rows".to_string(),
            "VACUUM \"shop\".\"orders\"".to_string()
        ]
    );
    assert_eq!(
        w.rows("SELECT CAST(changes_since_analyze AS VARCHAR) FROM _sluice.maintenance WHERE target_table = 'orders'"),
        vec![vec![s("0")]]
    );
    // The server's own record of both (its statistics arrive within a second or so).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let seen = w.rows("SELECT CAST(last_analyze IS NOT NULL AS VARCHAR), CAST(last_vacuum IS NOT NULL AS VARCHAR) FROM pg_stat_user_tables WHERE schemaname = 'shop' AND relname = 'orders'");
        if seen == vec![vec![s("true"), s("true")]] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{seen:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A change of the grown table: op, id, name, cents, then the columns later schema versions
/// add (coupon, tags).
type GrownRow<'a> = (Op, i64, &'a str, i64, Option<&'a str>, Option<Vec<i64>>);

/// The changes of `rows` under a schema version of `columns` columns.
fn version_batch(columns: usize, rows: &[GrownRow], first_seq: i64) -> RecordBatch {
    use arrow::array::{Array, ListArray};
    use arrow::datatypes::Int64Type;
    let mut fields = small_schema().fields().to_vec();
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(
            Decimal128Array::from_iter_values(rows.iter().map(|r| r.3 as i128))
                .with_precision_and_scale(12, 2)
                .unwrap(),
        ),
    ];
    if columns > 3 {
        fields.push(Arc::new(Field::new("coupon", DataType::Utf8, true)));
        arrays.push(Arc::new(StringArray::from_iter(rows.iter().map(|r| r.4))));
    }
    if columns > 4 {
        let tags = ListArray::from_iter_primitive::<Int64Type, _, _>(rows.iter().map(|r| {
            r.5.clone()
                .map(|v| v.into_iter().map(Some).collect::<Vec<_>>())
        }));
        fields.push(Arc::new(Field::new("tags", tags.data_type().clone(), true)));
        arrays.push(Arc::new(tags));
    }
    let data = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap();
    let ops: Vec<Op> = rows.iter().map(|r| r.0).collect();
    let ts: Vec<Option<i64>> = rows.iter().map(|_| Some(1_000_000)).collect();
    changes(data, &ops, &ts, first_seq)
}

/// A load across lake files of three schema versions (a column added, then a nested one):
/// each version's files are copied into a stage of their own columns by position, then into
/// the load's stage by name (the columns a file lacks stay NULL), and applied once. A later
/// load whose file starts before the ledger takes only the changes after it.
fn grown_schema_scenario(mut w: Wh) {
    use Op::*;
    let mut t = target("orders", LoadMode::Merge);
    t.add_columns = true;
    let v0 = version_batch(
        3,
        &[
            (Insert, 1, "a", 100, None, None),
            (Insert, 2, "b", 200, None, None),
        ],
        1,
    );
    let v1 = version_batch(
        4,
        &[
            (Update, 1, "a", 100, Some("X"), None),
            (Insert, 3, "c", 300, Some("Y"), None),
        ],
        3,
    );
    let v2 = version_batch(
        5,
        &[
            (Delete, 2, "b", 200, None, None),
            (Insert, 4, "d", 400, None, Some(vec![1, 2])),
        ],
        5,
    );
    let ledger = |from, seq| LedgerMove {
        from,
        to: LedgerEntry {
            lake_version: seq,
            seq,
        },
        image: false,
    };
    let r = w
        .load_moving(
            &t,
            &v2.schema(),
            vec![Ok(v0), Ok(v1), Ok(v2.clone())],
            ledger(None, 6),
        )
        .unwrap();
    assert_eq!(r.changes, 6);
    let rows = |w: &mut Wh| {
        w.rows("SELECT CAST(id AS VARCHAR), name, CAST(amount AS VARCHAR), coupon, CAST(tags AS VARCHAR) FROM shop.orders AS t ORDER BY t.id")
    };
    assert_eq!(
        rows(&mut w),
        vec![
            vec![s("1"), s("a"), s("1.00"), s("X"), None],
            vec![s("3"), s("c"), s("3.00"), s("Y"), None],
            vec![s("4"), s("d"), s("4.00"), None, s("[1, 2]")],
        ]
    );
    // A file holding seqs 5-8 while the ledger is at 6: only 7 and 8 apply.
    let next = version_batch(
        5,
        &[
            (Delete, 2, "b", 200, None, None),
            (Insert, 4, "d", 400, None, Some(vec![1, 2])),
            (Update, 3, "c2", 310, Some("Y"), Some(vec![])),
            (Insert, 5, "e", 500, Some("Z"), Some(vec![5])),
        ],
        5,
    );
    let r = w
        .load_moving(&t, &v2.schema(), vec![Ok(next)], ledger(Some(6), 8))
        .unwrap();
    assert_eq!(r.changes, 2);
    assert_eq!(
        rows(&mut w),
        vec![
            vec![s("1"), s("a"), s("1.00"), s("X"), None],
            vec![s("3"), s("c2"), s("3.10"), s("Y"), s("[]")],
            vec![s("4"), s("d"), s("4.00"), None, s("[1, 2]")],
            vec![s("5"), s("e"), s("5.00"), s("Z"), s("[5]")],
        ]
    );
    assert_eq!(w.wh.ledger(&t).unwrap().unwrap().seq, 8);
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod duckdb_warehouse {
            $(#[test] fn $scenario() { super::$scenario(super::duckdb()) })*
        }
        mod duckdb_reading_files {
            $(#[test] fn $scenario() { super::$scenario(super::duckdb_reading_files()) })*
            #[test] fn grown_schema_scenario() { super::grown_schema_scenario(super::duckdb_reading_files()) }
        }
        mod postgres_warehouse {
            $(#[test] fn $scenario() { super::$scenario(super::postgres()) })*
        }
        mod redshift_on_postgres {
            $(#[test] fn $scenario() { super::$scenario(super::redshift()) })*
            #[test] fn fit_scenario() { super::redshift_fit_scenario(super::redshift()) }
        }
        mod redshift_copying_on_postgres {
            $(#[test] fn $scenario() { super::$scenario(super::redshift_copying()) })*
            #[test] fn fit_scenario() { super::redshift_fit_scenario(super::redshift_copying()) }
            #[test] fn grown_schema_scenario() { super::grown_schema_scenario(super::redshift_copying()) }
        }
    };
}

conformance!(
    types_scenario,
    nested_scenario,
    merge_scenario,
    soft_delete_scenario,
    append_scenario,
    replace_scenario,
    history_scenario,
    evolve_scenario,
    failed_load_scenario,
    utf8view_ops_scenario,
    ledger_guard_scenario,
    keyless_merge_scenario,
);
