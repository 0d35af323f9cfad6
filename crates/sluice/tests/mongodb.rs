//! The MongoDB source against a real MongoDB-protocol server (SecantusDB, or the replica set
//! `SLUICE_TEST_MONGO_URL` names): every BSON type through snapshot and change stream, update
//! operators on nested paths under both nested policies, a new field halting only its
//! collection, a lost resume token, drops and renames. The conformance suite
//! (tests/sources.rs) runs the shared scenarios (kill -9 among them) on it too.

mod common;

use std::str::FromStr;

use mongodb::bson::{doc, oid::ObjectId, spec::BinarySubtype, Binary, Bson, Decimal128, Document};

use common::mongo::MongoServer;
use common::{s, table_of, Sandbox};

fn config(m: &MongoServer, extra: &str) -> String {
    format!(
        "[sources.m]\nkind = \"mongodb\"\nurl = \"{}\"\nmode = \"cdc\"\nload = [\"merge\", \"append\"]\n{extra}\n",
        m.url()
    )
}

fn sync_ok(sb: &Sandbox, what: &str) -> serde_json::Value {
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 0, "{what}: {report}");
    report
}

/// One document holding every BSON type at an edge, `n` its number.
fn every_type(id: i64, n: i64) -> Document {
    let uuid = Binary {
        subtype: BinarySubtype::Uuid,
        bytes: (0u8..16).collect(),
    };
    doc! {
        "_id": id,
        "oid": ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap(),
        "i32": i32::MIN,
        "i64": i64::MAX - n,
        "dbl": 0.1,
        "nan": f64::NAN,
        "inf": f64::NEG_INFINITY,
        "dec": Decimal128::from_str("1.05E+3").unwrap(),
        "dec_small": Decimal128::from_str("-0.000123").unwrap(),
        "dec_nan": Decimal128::from_str("NaN").unwrap(),
        "at": mongodb::bson::DateTime::from_millis(-1),
        "ts": mongodb::bson::Timestamp { time: 7, increment: 3 },
        "yes": true,
        "str": "ünï 😀 \"q\"",
        "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 255, 1] },
        "uuid": uuid,
        "nul": Bson::Null,
        "arr": [1, "two", { "three": 3 }],
        "obj": { "a": { "b": [true] } },
        "re": mongodb::bson::Regex { pattern: "^a".into(), options: "i".into() },
        "js": Bson::JavaScriptCode("f()".into()),
        "min": Bson::MinKey,
        "max": Bson::MaxKey,
    }
}

const TYPE_COLUMNS: &[(&str, &str)] = &[
    ("oid", "65a1b2c3d4e5f60718293a4b"),
    ("i32", "-2147483648"),
    ("dbl", "0.1"),
    ("nan", "nan"),
    ("inf", "-inf"),
    ("dec", "1050"),
    ("dec_small", "-0.000123"),
    ("dec_nan", "NaN"),
    ("at", "1969-12-31 23:59:59.999+00"),
    ("ts", r#"{"$timestamp":{"t":7,"i":3}}"#),
    ("yes", "true"),
    ("str", "ünï 😀 \"q\""),
    ("bin", "AP8B"),
    ("uuid", "00010203-0405-0607-0809-0a0b0c0d0e0f"),
    ("arr", r#"[1,"two",{"three":3}]"#),
    ("obj", r#"{"a":{"b":[true]}}"#),
    (
        "re",
        r#"{"$regularExpression":{"pattern":"^a","options":"i"}}"#,
    ),
    ("js", r#"{"$code":"f()"}"#),
    ("min", r#"{"$minKey":1}"#),
    ("max", r#"{"$maxKey":1}"#),
];

/// Every BSON type lands as the mapping says, and a document read by the change stream lands
/// exactly as the same document read by the snapshot.
#[test]
fn every_bson_type_lands_the_same_by_snapshot_and_by_stream() {
    let m = MongoServer::start(&[]);
    let sb = Sandbox::new();
    sb.config(&config(&m, ""));
    m.insert(
        "types",
        vec![every_type(1, 0), doc! { "_id": 2_i64, "nul": Bson::Null }],
    );
    sync_ok(&sb, "snapshot");
    m.insert("types", vec![every_type(11, 0), doc! { "_id": 12_i64 }]);
    sync_ok(&sb, "stream");
    let cols: Vec<String> = TYPE_COLUMNS
        .iter()
        .map(|(c, _)| format!("\"{c}\"::VARCHAR"))
        .collect();
    let row = |id: i64| {
        sb.duck(&format!(
            "SELECT {}, i64::VARCHAR FROM m.types WHERE _id = {id}",
            cols.join(", ")
        ))
        .pop()
        .unwrap_or_else(|| panic!("no row {id}"))
    };
    let mut expected: Vec<Option<String>> = TYPE_COLUMNS.iter().map(|(_, v)| s(v)).collect();
    expected.push(s(&i64::MAX.to_string()));
    assert_eq!(row(1), expected, "snapshot values");
    assert_eq!(
        row(11),
        row(1),
        "the stream's values differ from the snapshot's"
    );
    // A field that is null and one that is missing are both NULL.
    assert_eq!(row(2), vec![None; TYPE_COLUMNS.len() + 1]);
    assert_eq!(row(12), row(2));
    let types = sb.duck(
        "SELECT column_name, data_type FROM information_schema.columns \
         WHERE table_schema = 'm' AND table_name = 'types' \
         AND column_name IN ('i32', 'dec', 'at', 'yes', 'dbl') ORDER BY column_name",
    );
    assert_eq!(
        types,
        vec![
            vec![s("at"), s("TIMESTAMP WITH TIME ZONE")],
            vec![s("dbl"), s("DOUBLE")],
            vec![s("dec"), s("DECIMAL(18,0)")],
            vec![s("i32"), s("BIGINT")],
            vec![s("yes"), s("BOOLEAN")],
        ]
    );
}

/// The document as the warehouse's `orders` row should hold it (nested as JSON).
fn order_row(d: &Document) -> Vec<Option<String>> {
    let json = |k: &str| {
        d.get(k)
            .filter(|v| !matches!(v, Bson::Null))
            .map(|v| v.clone().into_relaxed_extjson())
    };
    vec![
        d.get_object_id("_id").ok().map(|o| o.to_hex()),
        d.get("n").map(|v| v.to_string()),
        json("customer").map(|v| v.to_string()),
        json("items").map(|v| v.to_string()),
        d.get("qty").map(|v| v.to_string()),
        d.get("flag").map(|v| v.to_string()),
    ]
}

fn order(n: i64, city: &str) -> Document {
    doc! {
        "_id": ObjectId::new(),
        "n": n,
        "customer": { "name": format!("c{n}"), "address": { "city": city } },
        "items": [ { "sku": "a", "q": 1 } ],
        "qty": 1_i64,
    }
}

/// Applies every kind of change the issue names and compares the warehouse with the
/// collection, value by value.
fn changes_land(nested: &str) {
    let m = MongoServer::start(&[]);
    let sb = Sandbox::new();
    sb.config(&config(
        &m,
        &format!("nested = \"{nested}\"\nschema_changes = \"evolve\""),
    ));
    let first: Vec<Document> = (1..=20).map(|n| order(n, "Oslo")).collect();
    let ids: Vec<ObjectId> = first
        .iter()
        .map(|d| d.get_object_id("_id").unwrap())
        .collect();
    m.insert("orders", first);
    sync_ok(&sb, "snapshot");
    let c = m.coll("orders");
    m.block(async {
        c.insert_one(order(21, "Rome")).await.unwrap();
        c.update_one(
            doc! { "_id": ids[0] },
            doc! { "$set": { "customer.address.city": "Bergen" } },
        )
        .await
        .unwrap();
        c.update_one(doc! { "_id": ids[1] }, doc! { "$unset": { "qty": "" } })
            .await
            .unwrap();
        c.update_one(doc! { "_id": ids[2] }, doc! { "$inc": { "n": 100 } })
            .await
            .unwrap();
        c.update_one(
            doc! { "_id": ids[3] },
            doc! { "$push": { "items": { "sku": "b", "q": 2 } } },
        )
        .await
        .unwrap();
        c.replace_one(doc! { "_id": ids[4] }, doc! { "n": 5, "qty": 50_i64 })
            .await
            .unwrap();
        c.delete_one(doc! { "_id": ids[5] }).await.unwrap();
        c.update_many(
            doc! { "n": { "$gte": 15 } },
            doc! { "$set": { "flag": true } },
        )
        .await
        .unwrap();
        c.delete_many(doc! { "n": { "$in": [7, 8, 9] } })
            .await
            .unwrap();
        // Deleted, then back with the same _id and other values.
        c.delete_one(doc! { "_id": ids[10] }).await.unwrap();
        let mut back = order(111, "Lima");
        back.insert("_id", ids[10]);
        c.insert_one(back).await.unwrap();
    });
    let report = sync_ok(&sb, "changes");
    let t = table_of(&report, "m", "orders");
    assert!(
        t["extract"]["schema_changes"].to_string().contains("flag"),
        "the new field `flag` is a schema change: {report}"
    );
    let docs = m.docs("orders");
    match nested {
        "json" => {
            let got = sb.duck(
                "SELECT _id, n::VARCHAR, customer::VARCHAR, items::VARCHAR, qty::VARCHAR, flag::VARCHAR \
                 FROM m.orders ORDER BY _id",
            );
            let want: Vec<Vec<Option<String>>> = docs.iter().map(order_row).collect();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                // JSON compared as values (key order and spacing are the warehouse's).
                let parse = |v: &Option<String>| {
                    v.as_deref()
                        .map(|t| serde_json::from_str::<serde_json::Value>(t).unwrap_or(t.into()))
                };
                let g: Vec<_> = g.iter().map(parse).collect();
                let w: Vec<_> = w.iter().map(parse).collect();
                assert_eq!(g, w);
            }
        }
        _ => {
            let got = sb.duck(
                "SELECT _id, n::VARCHAR, customer__name, customer__address__city, qty::VARCHAR \
                 FROM m.orders ORDER BY _id",
            );
            let want: Vec<Vec<Option<String>>> = docs
                .iter()
                .map(|d| {
                    let cust = d.get_document("customer").ok();
                    vec![
                        d.get_object_id("_id").ok().map(|o| o.to_hex()),
                        d.get("n").map(|v| v.to_string()),
                        cust.and_then(|c| c.get_str("name").ok()).map(String::from),
                        cust.and_then(|c| c.get_document("address").ok())
                            .and_then(|a| a.get_str("city").ok())
                            .map(String::from),
                        d.get("qty").map(|v| v.to_string()),
                    ]
                })
                .collect();
            assert_eq!(got, want);
        }
    }
    // Each change once in the append table: 20 reads; 2 inserts (n 21, and the document
    // back); 4 operator updates, 1 replace and update_many's 8 (n 15..20, 21 and 103);
    // 1 + 3 (delete_many) + 1 deletes.
    let ops =
        sb.duck("SELECT _sluice_op, count(*)::VARCHAR FROM m.orders_append GROUP BY 1 ORDER BY 1");
    assert_eq!(
        ops,
        vec![
            vec![s("c"), s("2")],
            vec![s("d"), s("5")],
            vec![s("r"), s("20")],
            vec![s("u"), s("13")],
        ]
    );
}

#[test]
fn every_change_lands_with_nested_documents_as_json() {
    changes_land("json");
}

#[test]
fn every_change_lands_with_nested_documents_flattened() {
    changes_land("flatten");
}

/// A new field under `halt` stops only its collection's load (exit 3); the other collection
/// loads; `schema accept` resumes it with the new column.
#[test]
fn a_new_field_under_halt_stops_only_that_collection() {
    let m = MongoServer::start(&[]);
    let sb = Sandbox::new();
    sb.config(&config(&m, "schema_changes = \"halt\""));
    m.insert("a", vec![doc! { "_id": 1_i64, "x": 1_i64 }]);
    m.insert("b", vec![doc! { "_id": 1_i64, "x": 1_i64 }]);
    sync_ok(&sb, "first");
    m.insert("a", vec![doc! { "_id": 2_i64, "x": 2_i64, "extra": "new" }]);
    m.insert("b", vec![doc! { "_id": 2_i64, "x": 2_i64 }]);
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 3, "{report}");
    assert!(
        table_of(&report, "m", "a")["halted"].is_string(),
        "{report}"
    );
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM m.b"),
        vec![vec![s("2")]]
    );
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM m.a"),
        vec![vec![s("1")]]
    );
    sb.ok(&["schema", "accept", "m.a"]);
    assert_eq!(
        sb.duck("SELECT _id::VARCHAR, extra FROM m.a ORDER BY _id"),
        vec![vec![s("1"), None], vec![s("2"), s("new")]]
    );
}

/// A resume token the oplog no longer holds fails the collection as `position_lost`, naming
/// `--resnapshot`; the re-snapshot lands the collection as it is.
#[test]
fn a_lost_resume_token_says_resnapshot() {
    let m = MongoServer::start(&["--oplog-max-entries", "20"]);
    let sb = Sandbox::new();
    sb.config(&config(&m, ""));
    m.insert("c", vec![doc! { "_id": 0_i64, "v": 0_i64 }]);
    sync_ok(&sb, "first");
    m.insert("c", vec![doc! { "_id": 1_i64, "v": 1_i64 }]);
    sync_ok(&sb, "a change");
    // The server trims its oplog to 20 entries every 1,000 writes.
    m.insert(
        "c",
        (2..1202_i64).map(|i| doc! { "_id": i, "v": i }).collect(),
    );
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 1, "{report}");
    let t = table_of(&report, "m", "c");
    assert_eq!(t["error_kind"], "position_lost", "{report}");
    assert!(
        t["error"].as_str().unwrap().contains("--resnapshot m.c"),
        "{report}"
    );
    let (code, report) = sb.sync_code(&["--resnapshot", "m.c"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR, sum(v)::VARCHAR FROM m.c"),
        vec![vec![s("1202"), s(&(0..1202).sum::<i64>().to_string())]]
    );
}

/// A dropped collection and a renamed one are halted, each with the reason; the collection
/// beside them streams on.
#[test]
fn drops_and_renames_halt_their_collection_only() {
    let m = MongoServer::start(&[]);
    let sb = Sandbox::new();
    sb.config(&config(&m, "tables = [\"gone\", \"moved\", \"kept\"]"));
    for c in ["gone", "moved", "kept"] {
        m.insert(c, vec![doc! { "_id": 1_i64 }]);
    }
    sync_ok(&sb, "first");
    m.block(async {
        m.coll("gone").drop().await.unwrap();
        let admin = m.coll("moved").client().database("admin");
        admin
            .run_command(doc! {
                "renameCollection": format!("{}.moved", m.database),
                "to": format!("{}.elsewhere", m.database),
            })
            .await
            .unwrap();
    });
    m.insert("kept", vec![doc! { "_id": 2_i64 }]);
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 3, "{report}");
    let why = |t: &str| {
        table_of(&report, "m", t)["halted"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(why("gone").contains("dropped"), "{report}");
    assert!(why("moved").contains("renamed to `elsewhere`"), "{report}");
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR FROM m.kept"),
        vec![vec![s("2")]]
    );
}

/// TLS: with the server's CA the source syncs; with another CA it is refused, naming the
/// certificate problem, and nothing lands.
#[test]
fn tls_with_the_servers_ca_and_another_ca_refused() {
    let certs = tempfile::tempdir().unwrap();
    common::make_certs(certs.path());
    let m = MongoServer::start_tls(certs.path());
    m.insert("c", vec![doc! { "_id": 1_i64, "v": "over tls" }]);
    let with_ca = |ca: &str| {
        let sb = Sandbox::new();
        let ca = certs.path().join(ca);
        sb.config(&config(&m, &format!("tls_ca_file = \"{}\"", ca.display())));
        sb
    };
    let sb = with_ca("ca.pem");
    sync_ok(&sb, "tls");
    assert_eq!(
        sb.duck("SELECT _id::VARCHAR, v FROM m.c"),
        vec![vec![s("1"), s("over tls")]]
    );
    let wrong = with_ca("other-ca.pem");
    let out = wrong.run(&["sync"], &[]);
    assert!(!out.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.to_lowercase().contains("certificate"), "{said}");
    assert!(!wrong.path("lake/changes/m/c").exists(), "nothing lands");
}

/// A snapshot cut into `_id` ranges at sampled ObjectIds still reads the documents whose
/// `_id` is of another type (a range matches one type only): every document lands once.
#[test]
fn a_chunked_snapshot_reads_ids_of_every_type_once() {
    let m = MongoServer::start(&[]);
    let sb = Sandbox::new();
    sb.config(&config(
        &m,
        "chunk_rows = 1000\nsnapshot_parallelism = 2\nsample_docs = 40",
    ));
    let mut docs: Vec<Document> = (0..10_000_i64)
        .map(|n| doc! { "_id": ObjectId::new(), "n": n })
        .collect();
    let odd = [
        Bson::Int32(5),
        Bson::Double(2.5),
        Bson::String("zz".into()),
        Bson::DateTime(mongodb::bson::DateTime::from_millis(86_400_000)),
        Bson::Document(doc! { "a": 1 }),
        Bson::Boolean(true),
    ];
    for (i, id) in odd.iter().enumerate() {
        docs.push(doc! { "_id": id.clone(), "n": 100_000 + i as i64 });
    }
    m.insert("odd", docs);
    sync_ok(&sb, "snapshot");
    let chunks: Vec<u64> = std::fs::read_dir(sb.path("lake/changes/m/odd/_delta_log"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .flat_map(|log| {
            log.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| v["commitInfo"]["sluice"]["chunks"].as_u64())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        chunks.iter().any(|&c| c > 1),
        "the snapshot was not cut into chunks: {chunks:?}"
    );
    let source: Vec<Option<String>> = m
        .docs("odd")
        .iter()
        .map(|d| Some(d.get_i64("n").unwrap().to_string()))
        .collect();
    let mut landed: Vec<Option<String>> = sb
        .duck("SELECT n::VARCHAR FROM m.odd")
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect();
    let mut source = source;
    source.sort();
    landed.sort();
    assert_eq!(
        landed.len(),
        10_006,
        "documents landed, duplicates included"
    );
    assert_eq!(
        landed, source,
        "the warehouse's documents differ from the collection's"
    );
}

/// A captured collection that stays quiet while others are written keeps its place: its
/// position moves on with the stream's, so trimming the oplog past its last change does
/// not lose it.
#[test]
fn a_quiet_collection_moves_on_with_the_stream() {
    let m = MongoServer::start(&["--oplog-max-entries", "20"]);
    let sb = Sandbox::new();
    sb.config(&config(&m, "tables = [\"c\"]"));
    m.insert("c", vec![doc! { "_id": 0_i64, "v": 0_i64 }]);
    sync_ok(&sb, "snapshot");
    m.insert("c", vec![doc! { "_id": 1_i64, "v": 1_i64 }]);
    sync_ok(&sb, "c's last change for a while");
    let noise = |from: i64, n: i64| {
        m.insert(
            "noise",
            (from..from + n).map(|i| doc! { "_id": i }).collect(),
        )
    };
    noise(0, 50);
    sync_ok(&sb, "while c is quiet");
    // The oplog keeps its last 20 entries: the stream's place at the sync, not c's change.
    noise(50, 10);
    m.trim_oplog();
    m.insert("c", vec![doc! { "_id": 2_i64, "v": 2_i64 }]);
    let report = sync_ok(&sb, "after the oplog was trimmed");
    assert_eq!(
        table_of(&report, "m", "c")["error"],
        serde_json::Value::Null
    );
    assert_eq!(
        sb.duck("SELECT _id::VARCHAR, v::VARCHAR FROM m.c ORDER BY _id"),
        vec![
            vec![s("0"), s("0")],
            vec![s("1"), s("1")],
            vec![s("2"), s("2")]
        ]
    );
}

/// `tables` may name collections by pattern: the ones matching land, the others do not, a
/// collection created later that matches is captured at the next sync, and one of them can
/// be synced alone by name.
#[test]
fn collections_by_pattern() {
    let m = MongoServer::start(&[]);
    let sb = Sandbox::new();
    sb.config(&config(&m, "tables = [\"orders_*\", \"users\"]"));
    m.insert("orders_a", vec![doc! { "_id": 1_i64, "v": 1_i64 }]);
    m.insert("orders_b", vec![doc! { "_id": 2_i64, "v": 2_i64 }]);
    m.insert("misc", vec![doc! { "_id": 3_i64, "v": 3_i64 }]);
    let report = sync_ok(&sb, "first");
    let mut synced: Vec<String> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap().to_string())
        .collect();
    synced.sort();
    assert_eq!(synced, vec!["orders_a", "orders_b", "users"], "{report}");
    m.insert("orders_c", vec![doc! { "_id": 4_i64, "v": 4_i64 }]);
    m.insert("orders_a", vec![doc! { "_id": 5_i64, "v": 5_i64 }]);
    sync_ok(&sb, "a new collection");
    let (code, report) = sb.sync_code(&["m.orders_b"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["tables"].as_array().unwrap().len(), 1, "{report}");
    let rows = |t: &str| sb.duck(&format!("SELECT _id::VARCHAR FROM m.{t} ORDER BY _id"));
    assert_eq!(rows("orders_a"), vec![vec![s("1")], vec![s("5")]]);
    assert_eq!(rows("orders_c"), vec![vec![s("4")]]);
    assert!(
        !sb.path("lake/changes/m/misc").exists(),
        "a collection no pattern names was captured"
    );
    let status: serde_json::Value = serde_json::from_str(&sb.ok(&["--json", "status"])).unwrap();
    let mut listed: Vec<&str> = status
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["table"].as_str())
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec!["orders_a", "orders_b", "orders_c", "users"],
        "{status}"
    );
}

/// A field only the newest documents have is a column from the first snapshot on, however
/// few of them there are: the sample takes the newest by `_id` besides its random draw.
#[test]
fn a_field_only_the_newest_documents_have_is_sampled() {
    let m = MongoServer::start(&[]);
    let sb = Sandbox::new();
    sb.config(&config(&m, "sample_docs = 40"));
    let docs: Vec<Document> = (0..2000_i64)
        .map(|n| match n >= 1995 {
            true => doc! { "_id": ObjectId::new(), "n": n, "rare": format!("r{n}") },
            false => doc! { "_id": ObjectId::new(), "n": n },
        })
        .collect();
    m.insert("drift", docs);
    let report = sync_ok(&sb, "snapshot");
    assert_eq!(
        table_of(&report, "m", "drift")["extract"]["rejects"],
        0,
        "{report}"
    );
    assert_eq!(
        sb.duck("SELECT count(*)::VARCHAR, string_agg(rare, ',' ORDER BY n) FROM m.drift"),
        vec![vec![s("2000"), s("r1995,r1996,r1997,r1998,r1999")]]
    );
}
