//! Every Parquet shape lands: nested columns (lists, lists of lists, structs in structs, maps,
//! maps of maps, lists of structs), FLOAT16, NULL-typed columns and lists of them, large and
//! fixed-size lists, dictionaries and unsigned integers, written by Apache Arrow's C++
//! Parquet writer (pyarrow). Each file lands value-equal in DuckDB (in its own nested types,
//! compared with DuckDB's own Parquet reader over the same file) and in PostgreSQL (JSONB,
//! compared with what pyarrow reads from the file); a file the lake cannot hold, or that is
//! not Parquet, is refused with a reason that names it.

mod common;

use std::process::Command;

use common::postgres::{PgServer, PASSWORD};
use common::Sandbox;
use serde_json::Value;

/// Writes one folder of one Parquet file per shape under `shapes/`, and under `expect/` what
/// pyarrow reads from each (JSON lines: `id` and each column's value, NaN and infinities as
/// the strings JSON has for them, map keys as text, binary as hex).
const CORPUS: &str = r#"
import datetime, decimal, json, math, os, sys
import pyarrow as pa, pyarrow.parquet as pq

out = sys.argv[1]
nan, inf = float("nan"), float("inf")
ts = lambda *a: datetime.datetime(*a)
shapes = {
    "list_int": {"v": (pa.list_(pa.int32()), [[1, 2, 3], [], None, [None, 4], [2**31 - 1, -2**31], [0]])},
    "list_of_lists": {"v": (pa.list_(pa.list_(pa.int64())), [[[1], [2, 3]], [[]], None, [None, [None, 5]], [[2**63 - 1]], []])},
    "struct": {"v": (pa.struct([("a", pa.int32()), ("b", pa.string())]),
                     [{"a": 1, "b": "x"}, {"a": None, "b": "y"}, None, {"a": 3, "b": None}, {"a": -1, "b": "ünï \"q\" \\ \n"}, {"a": 0, "b": ""}])},
    "nested_structs": {"v": (pa.struct([("x", pa.struct([("y", pa.float64()), ("z", pa.list_(pa.string()))])), ("n", pa.int64())]),
                             [{"x": {"y": 1.25, "z": ["a", None]}, "n": 1}, {"x": None, "n": 2}, None, {"x": {"y": None, "z": []}, "n": None},
                              {"x": {"y": -0.5, "z": None}, "n": 5}, {"x": {"y": 1e300, "z": ["deep"]}, "n": -6}])},
    "map_str_int": {"v": (pa.map_(pa.string(), pa.int32()), [[("a", 1), ("b", None)], [], None, [("k", 7)], [("x", -1), ("y", 2)], [("z", 0)]])},
    "map_of_map": {"v": (pa.map_(pa.string(), pa.map_(pa.int32(), pa.bool_())),
                         [[("a", [(1, True), (2, False)])], [("b", None)], None, [], [("c", [(-5, None)])], [("d", [])]])},
    "list_of_struct": {"v": (pa.list_(pa.struct([("k", pa.string()), ("v", pa.int64())])),
                             [[{"k": "a", "v": 1}, {"k": "b", "v": None}], [], None, [None], [{"k": None, "v": 9}], [{"k": "z", "v": -9}]])},
    "float16": {"h": (pa.float16(), [1.5, 0.25, None, nan, inf, -65504.0]),
                "lh": (pa.list_(pa.float16()), [[2.5, None], [], None, [-inf], [nan], [0.125]])},
    "nulls": {"n": (pa.null(), [None] * 6),
              "ln": (pa.list_(pa.null()), [[None, None], [], None, [None], [], [None, None, None]])},
    "large_and_fixed": {"ll": (pa.large_list(pa.int16()), [[1], [], None, [None, -2], [32767], [0, 0]]),
                        "fl": (pa.list_(pa.float32(), 3), [[1.0, 2.0, 3.0], [0.5, None, -0.5], None, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [-1.0, 2.0, -3.0]])},
    "dictionary": {"d": (pa.dictionary(pa.int8(), pa.string()), ["red", "green", None, "red", "blue", "green"]),
                   "ld": (pa.list_(pa.dictionary(pa.int32(), pa.string())), [["a", "b"], [], None, ["a"], [None], ["c", "a"]])},
    "unsigned": {"u8": (pa.uint8(), [255, 0, None, 1, 128, 7]),
                 "u16": (pa.uint16(), [65535, 0, None, 1, 32768, 7]),
                 "u32": (pa.uint32(), [4294967295, 0, None, 1, 2147483648, 7]),
                 "u64": (pa.uint64(), [18446744073709551615, 0, None, 1, 9223372036854775808, 7]),
                 "lu": (pa.list_(pa.uint32()), [[4294967295], [], None, [None, 0], [2147483648], [1, 2]])},
    "typed_parts": {"dec": (pa.list_(pa.decimal128(10, 2)), [[decimal.Decimal("12.50"), None], [], None, [decimal.Decimal("-99999999.99")], [decimal.Decimal("0.01")], [decimal.Decimal("1.00")]]),
                    "days": (pa.list_(pa.date32()), [[datetime.date(2024, 2, 29)], [], None, [None, datetime.date(1970, 1, 1)], [datetime.date(9999, 12, 31)], [datetime.date(1, 1, 1)]]),
                    "at": (pa.list_(pa.timestamp("us")), [[ts(2024, 1, 2, 3, 4, 5)], [], None, [ts(2024, 1, 2, 3, 4, 5, 123456)], [ts(9999, 12, 31, 23, 59, 59)], [None]]),
                    "blob": (pa.struct([("b", pa.binary())]), [{"b": b"\x00\x01\xff"}, {"b": None}, None, {"b": b""}, {"b": b"abc"}, {"b": b"\n"}])},
    "floats": {"f": (pa.list_(pa.float64()), [[0.1, nan], [inf, -inf], None, [1e300, -1e-300], [], [None]]),
               "g": (pa.struct([("r", pa.float32())]), [{"r": 0.5}, {"r": nan}, None, {"r": -inf}, {"r": None}, {"r": 3.25}])},
}

def as_json(v, t):
    if v is None:
        return None
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return v
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, datetime.datetime):
        return v.isoformat()
    if isinstance(v, datetime.date):
        return v.isoformat()
    if pa.types.is_map(t):
        return {str(k): as_json(x, t.item_type) for k, x in v}
    if pa.types.is_struct(t):
        return {f.name: as_json(v[f.name], f.type) for f in t}
    if isinstance(v, list):
        return [as_json(x, t.value_type) for x in v]
    return v

for name, cols in shapes.items():
    ids = list(range(1, 7))
    arrays = {"id": pa.array(ids, pa.int64())}
    for col, (t, values) in cols.items():
        if t in (pa.float16(), pa.list_(pa.float16())):
            # pyarrow takes half floats from numpy only; these values are exact as float32.
            wide = pa.float32() if t == pa.float16() else pa.list_(pa.float32())
            arrays[col] = pa.array(values, wide).cast(t)
        elif pa.types.is_dictionary(t):
            arrays[col] = pa.array(values, pa.string()).dictionary_encode()
        elif t == pa.list_(pa.dictionary(pa.int32(), pa.string())):
            plain = pa.array(values, pa.list_(pa.string()))
            arrays[col] = pa.ListArray.from_arrays(plain.offsets, plain.values.dictionary_encode(), mask=plain.is_null())
        else:
            arrays[col] = pa.array(values, t)
    table = pa.table(arrays)
    folder = os.path.join(out, "shapes", name)
    os.makedirs(folder, exist_ok=True)
    pq.write_table(table, os.path.join(folder, "part-0.parquet"))
    back = pq.read_table(os.path.join(folder, "part-0.parquet"))
    assert back.schema.equals(table.schema), (name, back.schema, table.schema)
    os.makedirs(os.path.join(out, "expect"), exist_ok=True)
    with open(os.path.join(out, "expect", name + ".jsonl"), "w") as f:
        for row in back.to_pylist():
            f.write(json.dumps({k: as_json(v, back.schema.field(k).type) for k, v in row.items()}, allow_nan=False) + "\n")

# Refused: a duration (Delta has no such type), and a file that is not Parquet at all.
os.makedirs(os.path.join(out, "shapes", "duration"), exist_ok=True)
pq.write_table(pa.table({"id": pa.array([1], pa.int64()), "took": pa.array([5], pa.duration("s"))}),
               os.path.join(out, "shapes", "duration", "part-0.parquet"))
os.makedirs(os.path.join(out, "shapes", "broken"), exist_ok=True)
with open(os.path.join(out, "shapes", "broken", "part-0.parquet"), "wb") as f:
    f.write(b"PAR1 this is not a parquet file PAR1")
"#;

/// The shapes the corpus writes, with their columns (after `id`).
const SHAPES: &[(&str, &[&str])] = &[
    ("list_int", &["v"]),
    ("list_of_lists", &["v"]),
    ("struct", &["v"]),
    ("nested_structs", &["v"]),
    ("map_str_int", &["v"]),
    ("map_of_map", &["v"]),
    ("list_of_struct", &["v"]),
    ("float16", &["h", "lh"]),
    ("nulls", &["n", "ln"]),
    ("large_and_fixed", &["ll", "fl"]),
    ("dictionary", &["d", "ld"]),
    ("unsigned", &["u8", "u16", "u32", "u64", "lu"]),
    ("typed_parts", &["dec", "days", "at", "blob"]),
    ("floats", &["f", "g"]),
];

fn config(pg: &PgServer) -> String {
    let mut c = "\n[warehouses.local]\nkind = \"duckdb\"\n".to_string()
        + &pg.warehouse_section(
            "pg",
            r#"{ env = "PGWH_PASSWORD" }"#,
            "ssl_mode = \"disable\"",
        );
    let refused = [("duration", &[][..]), ("broken", &[][..])];
    for (shape, _) in SHAPES.iter().chain(refused.iter()) {
        for (prefix, warehouse) in [("d", "local"), ("p", "pg")] {
            c += &format!(
                "\n[sources.{prefix}_{shape}]\nkind = \"files\"\nurl = \"shapes/{shape}/\"\ntable = \"t\"\nwarehouse = \"{warehouse}\"\n[sources.{prefix}_{shape}.tables.t]\nprimary_key = [\"id\"]\n"
            );
        }
    }
    c
}

/// Numbers equal when both are the same integer or the same float (PostgreSQL keeps a JSON
/// number's text, pyarrow a float's shortest text); everything else structurally.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i128(), y.as_i128()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn every_parquet_shape_lands_value_equal_in_duckdb_and_postgresql() {
    let pg = PgServer::start(None);
    let sb = Sandbox::new();
    let status = Command::new("python3")
        .args(["-c", CORPUS, sb.path("").to_str().unwrap()])
        .status()
        .expect("python3 with pyarrow (scripts/test.sh installs it)");
    assert!(status.success(), "the corpus script failed");
    for (shape, _) in SHAPES
        .iter()
        .chain([("duration", &[][..]), ("broken", &[][..])].iter())
    {
        common::delivered_earlier(&sb.path(&format!("shapes/{shape}/part-0.parquet")));
    }
    sb.config(&config(&pg));
    let out = sb.run(&["--json", "sync"], &[("PGWH_PASSWORD", PASSWORD)]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let tables = report["tables"].as_array().expect("tables");
    let table = |source: &str| {
        tables
            .iter()
            .find(|t| t["source"] == source)
            .unwrap_or_else(|| panic!("no report for {source}: {report}"))
    };

    for (shape, columns) in SHAPES {
        for prefix in ["d", "p"] {
            let t = table(&format!("{prefix}_{shape}"));
            assert_eq!(t["extract"]["rows"], 6, "{shape}: {t}");
            assert_eq!(t["extract"]["rejects"], 0, "{shape}: {t}");
        }
        // DuckDB: its own reader over the file against the warehouse table, value by value.
        let file = sb.path(&format!("shapes/{shape}/part-0.parquet"));
        let list: Vec<String> = std::iter::once("id")
            .chain(columns.iter().copied())
            .map(|c| format!("\"{c}\"::VARCHAR"))
            .collect();
        let list = list.join(", ");
        let want = sb.duck(&format!(
            "SELECT {list} FROM read_parquet('{}') ORDER BY id",
            file.display()
        ));
        let got = sb.duck(&format!("SELECT {list} FROM d_{shape}.t ORDER BY id"));
        assert_eq!(want.len(), 6, "{shape}");
        assert_eq!(got, want, "{shape}: DuckDB differs from the file");

        // PostgreSQL: every column as JSON against what pyarrow reads.
        let expect = std::fs::read_to_string(sb.path(&format!("expect/{shape}.jsonl"))).unwrap();
        let expect: Vec<Value> = expect
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let cols: Vec<String> = columns
            .iter()
            .map(|c| format!("to_jsonb(\"{c}\")::text"))
            .collect();
        let rows = pg.rows(&format!(
            "SELECT id::text, {} FROM p_{shape}.t ORDER BY id",
            cols.join(", ")
        ));
        assert_eq!(rows.len(), expect.len(), "{shape}");
        for (row, want) in rows.iter().zip(&expect) {
            assert_eq!(row[0].as_deref(), Some(want["id"].to_string().as_str()));
            for (i, c) in columns.iter().enumerate() {
                let got: Value = row[i + 1]
                    .as_deref()
                    .map(|t| serde_json::from_str(t).unwrap())
                    .unwrap_or(Value::Null);
                assert!(
                    same(&got, &want[*c]),
                    "{shape}.{c} id {}: PostgreSQL has {got}, the file {}",
                    want["id"],
                    want[*c]
                );
            }
        }
    }

    // PostgreSQL keeps nested columns as JSONB, DuckDB in its own types.
    let types = pg.rows(
        "SELECT table_schema || '.' || column_name, data_type FROM information_schema.columns WHERE table_schema IN ('p_nested_structs', 'p_float16', 'p_unsigned') AND column_name <> 'id' AND column_name NOT LIKE '\\_sluice%' ORDER BY 1",
    );
    let types: Vec<(String, String)> = types
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    assert!(
        types.contains(&("p_nested_structs.v".into(), "jsonb".into())),
        "{types:?}"
    );
    assert!(
        types.contains(&("p_float16.h".into(), "real".into())),
        "{types:?}"
    );
    assert!(
        types.contains(&("p_unsigned.u64".into(), "numeric".into())),
        "{types:?}"
    );
    let duck_types = sb.duck(
        "SELECT table_schema || '.' || column_name, data_type FROM information_schema.columns WHERE table_schema IN ('d_map_of_map', 'd_list_of_struct', 'd_nulls') AND column_name IN ('v', 'ln') ORDER BY 1",
    );
    assert_eq!(
        duck_types,
        vec![
            vec![
                Some("d_list_of_struct.v".into()),
                Some("STRUCT(k VARCHAR, v BIGINT)[]".into())
            ],
            vec![
                Some("d_map_of_map.v".into()),
                Some("MAP(VARCHAR, MAP(INTEGER, BOOLEAN))".into())
            ],
            vec![Some("d_nulls.ln".into()), Some("VARCHAR[]".into())],
        ]
    );

    // Refused files name themselves and the reason; the other tables landed regardless.
    let stderr = String::from_utf8_lossy(&out.stderr);
    for prefix in ["d", "p"] {
        let t = table(&format!("{prefix}_duration"));
        assert!(
            t.to_string().contains("took") && t.to_string().contains("no lake type"),
            "{t}\n{stderr}"
        );
        let t = table(&format!("{prefix}_broken"));
        assert!(t.to_string().contains("part-0.parquet"), "{t}\n{stderr}");
    }
}
