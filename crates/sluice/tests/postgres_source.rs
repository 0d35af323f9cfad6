//! The PostgreSQL source against a private server: every type lands value by value (its
//! edges included), snapshots in parallel chunks of one shared snapshot converge on the
//! source after updates and deletes, and incremental reads follow a cursor.

mod common;

use common::postgres::{PgServer, PASSWORD};
use common::{table_of, Sandbox};

type Rows = Vec<Vec<Option<String>>>;

/// A sandbox whose config reads database `shop` of `pg` with `extra` settings.
fn project(pg: &PgServer, extra: &str) -> Sandbox {
    let sb = Sandbox::new();
    let pw = sb.write("pg-password", PASSWORD);
    sb.config(&format!(
        "[sources.shop]\nkind = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:{}/shop\"\npassword = {{ file = \"{}\" }}\n{extra}\n",
        pg.port,
        pw.display()
    ));
    sb
}

fn shop(pg: &PgServer, sql: &str) -> String {
    pg.sql("shop", sql)
}

/// Rows of a query in database `shop` (fields tab-separated, NULL as None).
fn shop_rows(pg: &PgServer, sql: &str) -> Rows {
    shop(
        pg,
        &format!("\\pset null '\\\\N'\nSET IntervalStyle = iso_8601;\n{sql}"),
    )
    .lines()
    .map(|l| {
        l.split('\t')
            .map(|f| (f != "\\N").then(|| f.to_string()))
            .collect()
    })
    .collect()
}

/// Text of a float as either side writes it, compared as the number it names.
fn same_float(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            let (x, y) = (a.parse::<f64>().unwrap(), b.parse::<f64>().unwrap());
            (x.is_nan() && y.is_nan()) || x == y
        }
        (a, b) => a == b,
    }
}

#[test]
fn every_type_lands_value_by_value() {
    let pg = PgServer::start(None);
    pg.sql("postgres", "CREATE DATABASE shop");
    shop(
        &pg,
        r#"
        CREATE TYPE mood AS ENUM ('sad', 'happy');
        CREATE TYPE address AS (street text, zip int);
        CREATE DOMAIN positive AS int4 CHECK (VALUE > 0);
        CREATE TABLE every_type (
            id int8 PRIMARY KEY, i2 int2, i4 int4, n numeric(12,2), nu numeric,
            f4 float4, f8 float8, t text, vc varchar(10), ch char(5), b bytea, ok bool,
            d date, ts timestamp, tstz timestamptz, tm time, tmtz timetz, iv interval,
            u uuid, js json, jb jsonb, arr int4[], tarr text[], e mood, ad address,
            dom positive, ip inet, net cidr, mac macaddr, cash money, bits bit(4),
            vbits varbit, tsv tsvector);
        INSERT INTO every_type VALUES
          (1, -32768, -2147483648, -9999999999.99, 'NaN', 'NaN', 'Infinity', '', 'ünï €', 'ab',
           '\x00ff', true, '0044-03-15 BC', '0001-01-01 00:00:00 BC', 'infinity', '00:00:00',
           '23:59:59.999999+05:30', '1 year 2 mons 3 days 04:05:06.789',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2],  "z": 1}', '{"b": {"c": null}}',
           '{1,NULL,3}', '{"x","y z"}', 'happy', ROW('Main St', 12345), 7, '192.168.0.1/24',
           '10.0.0.0/8', '08:00:2b:01:02:03', 12.34, B'1010', B'101', 'a fat cat'),
          (2, 32767, 2147483647, 9999999999.99, '123456789012345678901234567890.123456789',
           '-Infinity', 1e308, E'tab\there "quoted" \\ back\nline', 'x', 'abcde', '', false,
           '9999-12-31', 'infinity', '-infinity', '23:59:59.999999', '00:00:00-08',
           '-3 days -00:00:00.000001', '00000000-0000-0000-0000-000000000000', '[]', '"text"',
           '{}', '{NULL}', 'sad', ROW(NULL, NULL), 2147483647, '::1', '::/0',
           'ff:ff:ff:ff:ff:ff', -0.01, B'0000', B'', ''),
          (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL),
          (4, 0, 0, 'NaN', 0, 0, 0, 'not a decimal', NULL, NULL, NULL, NULL, '2024-02-29',
           '2024-02-29 12:00:00.000001', '1970-01-01 00:00:00+00', NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
          (5, 1, 1, 0.01, -0.000000000000000001, 1.5, 0.1, 'ok', 'v', 'c', '\xdeadbeef', true,
           '1970-01-01', '1969-12-31 23:59:59.999999', '2000-01-01 00:00:00+14', '12:00',
           '12:00+00', '0', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 'null', '[1, "2", 3.0]',
           '{2147483647}', '{"{a}"}', 'happy', ROW('Ünïcode', 0), 1, '0.0.0.0', '0.0.0.0/32',
           '00:00:00:00:00:00', 92233720368547758.07, B'1111', B'1', 'a:1 b:2');
        "#,
    );
    let sb = project(&pg, "");
    let check = sb.ok(&["check"]);
    assert!(check.contains("PostgreSQL 1"), "{check}");
    assert!(check.contains("1 table(s)"), "{check}");
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 0, "{report}");
    let t = table_of(&report, "shop", "every_type");
    // Row 4's numeric(12,2) NaN has no decimal value: quarantined, named; the rest land.
    assert_eq!(t["extract"]["rows"], 4, "{report}");
    assert_eq!(t["extract"]["rejects"], 1, "{report}");
    // ±infinity dates and timestamps have no Arrow value: NULL, counted.
    assert_eq!(t["extract"]["zero_dates"], 3, "{report}");
    let quarantined =
        sb.query_lake("SELECT \"column\", raw, reason FROM shop.every_type__quarantine");
    let reasons = format!("{quarantined:?}");
    assert!(
        reasons.contains("column n (numeric(12,2)): NaN has no decimal value"),
        "{reasons}"
    );
    assert!(reasons.contains("n = 'NaN'"), "{reasons}");

    let source = shop_rows(
        &pg,
        "SELECT id::text, i2::text, i4::text, n::text, nu::text, f4::text, f8::text,
                replace(replace(t, E'\\n', '<NL>'), E'\\t', '<TAB>'), vc, ch,
                encode(b, 'hex'), CASE WHEN ok THEN 'true' WHEN NOT ok THEN 'false' END,
                CASE WHEN isfinite(d) THEN (d - DATE '1970-01-01')::text END,
                CASE WHEN isfinite(ts) THEN (extract(epoch FROM ts) * 1000000)::int8::text END,
                CASE WHEN isfinite(tstz) THEN (extract(epoch FROM tstz) * 1000000)::int8::text END,
                tm::text, tmtz::text, iv::text, u::text, js::text, jb::text,
                to_jsonb(arr)::text, to_jsonb(tarr)::text, e::text, to_jsonb(ad)::text,
                dom::text, ip::text, net::text, mac::text, cash::numeric::text, bits::text,
                vbits::text, tsv::text
           FROM every_type WHERE id <> 4 ORDER BY every_type.id",
    );
    let warehouse = sb.duck(
        "SELECT CAST(id AS VARCHAR), CAST(i2 AS VARCHAR), CAST(i4 AS VARCHAR), CAST(n AS VARCHAR),
                nu, CAST(f4 AS VARCHAR), CAST(f8 AS VARCHAR),
                replace(replace(t, chr(10), '<NL>'), chr(9), '<TAB>'), vc, ch, lower(hex(b)),
                CAST(ok AS VARCHAR), CAST(d - DATE '1970-01-01' AS VARCHAR),
                CAST(epoch_us(ts) AS VARCHAR), CAST(epoch_us(tstz) AS VARCHAR), tm, tmtz, iv, u,
                CAST(js AS VARCHAR), CAST(jb AS VARCHAR), CAST(arr AS VARCHAR),
                CAST(tarr AS VARCHAR), e, CAST(ad AS VARCHAR), CAST(dom AS VARCHAR), ip, net,
                mac, cash, bits, vbits, tsv
           FROM shop.every_type ORDER BY id",
    );
    assert_eq!(source.len(), 4);
    assert_eq!(warehouse.len(), source.len());
    let names = [
        "id", "i2", "i4", "n", "nu", "f4", "f8", "t", "vc", "ch", "b", "ok", "d", "ts", "tstz",
        "tm", "tmtz", "iv", "u", "js", "jb", "arr", "tarr", "e", "ad", "dom", "ip", "net", "mac",
        "cash", "bits", "vbits", "tsv",
    ];
    for (s, w) in source.iter().zip(&warehouse) {
        assert_eq!(s.len(), names.len());
        for (i, name) in names.iter().enumerate() {
            let same = match *name {
                "f4" | "f8" => same_float(&s[i], &w[i]),
                _ => s[i] == w[i],
            };
            assert!(
                same,
                "row {:?} column {name}: source {:?}, warehouse {:?}",
                s[0], s[i], w[i]
            );
        }
    }
    // The edges themselves, spelled out (so a change on both sides cannot hide).
    assert_eq!(warehouse[0][12].as_deref(), Some("-735160"), "44 BC");
    assert_eq!(warehouse[0][14], None, "infinity");
    assert_eq!(
        warehouse[1][4].as_deref(),
        Some("123456789012345678901234567890.123456789")
    );
    assert_eq!(warehouse[1][9].as_deref(), Some("abcde"));
    assert_eq!(
        warehouse[0][9].as_deref(),
        Some("ab   "),
        "char(5) keeps its padding"
    );
}

#[test]
fn parallel_chunks_converge_and_incremental_reads_follow_the_cursor() {
    let pg = PgServer::start(None);
    pg.sql("postgres", "CREATE DATABASE shop");
    shop(
        &pg,
        "CREATE TABLE big (id int8 PRIMARY KEY, v text, amount numeric(10,2),
                           updated_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO big SELECT g, 'v-' || g, g / 100.0, '2026-01-01'::timestamptz + g * interval '1 second'
           FROM generate_series(1, 60000) g;
         ANALYZE big;
         CREATE TABLE keyless (a int, b text);
         INSERT INTO keyless VALUES (1, 'x'), (1, 'x'), (NULL, NULL);",
    );
    let image = |pg: &PgServer| -> Rows {
        shop_rows(
            pg,
            "SELECT id::text, v, amount::text FROM big ORDER BY big.id",
        )
    };
    let loaded = |sb: &Sandbox| -> Rows {
        sb.duck("SELECT CAST(id AS VARCHAR), v, CAST(amount AS VARCHAR) FROM shop.big ORDER BY id")
    };
    let sb = project(
        &pg,
        "chunk_rows = 5000\nsnapshot_parallelism = 3\ntables = [\"big\", \"keyless\"]",
    );
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        table_of(&report, "shop", "big")["extract"]["rows"],
        60000,
        "{report}"
    );
    let (l, i) = (loaded(&sb), image(&pg));
    let diff: Vec<_> = l.iter().zip(&i).filter(|(a, b)| a != b).take(3).collect();
    assert!(
        l == i,
        "first snapshot differs from the source: {} vs {} rows, {diff:?}",
        l.len(),
        i.len()
    );
    // Keyless rows land as they are, duplicates included.
    assert_eq!(
        sb.duck("SELECT CAST(a AS VARCHAR), b FROM shop.keyless ORDER BY a NULLS LAST"),
        vec![
            vec![Some("1".into()), Some("x".into())],
            vec![Some("1".into()), Some("x".into())],
            vec![None, None]
        ]
    );

    shop(
        &pg,
        "UPDATE big SET v = 'changed', amount = -amount WHERE id % 7 = 0;
         DELETE FROM big WHERE id % 11 = 0;
         INSERT INTO big SELECT g, 'new', 1.23, '2026-06-01'::timestamptz + g * interval '1 second'
           FROM generate_series(60001, 61000) g;",
    );
    let (code, report) = sb.sync_code(&[]);
    assert_eq!(code, 0, "{report}");
    assert!(
        loaded(&sb) == image(&pg),
        "second snapshot differs from the source"
    );

    // Incremental: rows at or past the last cursor value, updates included.
    let inc = project(
        &pg,
        "mode = \"incremental\"\ncursor = \"updated_at\"\ntables = [\"big\"]",
    );
    let (code, report) = inc.sync_code(&[]);
    assert_eq!(code, 0, "{report}");
    assert!(loaded(&inc) == image(&pg), "first incremental read differs");
    shop(
        &pg,
        "UPDATE big SET v = 'later', updated_at = '2030-01-01' WHERE id IN (1, 2, 3);
         INSERT INTO big VALUES (70000, 'newest', 9.99, '2030-01-02');",
    );
    let (code, report) = inc.sync_code(&[]);
    assert_eq!(code, 0, "{report}");
    let t = table_of(&report, "shop", "big");
    assert_eq!(
        t["extract"]["rows"], 4,
        "only the rows past the cursor are read: {report}"
    );
    assert!(
        loaded(&inc) == image(&pg),
        "second incremental read differs"
    );
}

#[test]
fn misconfigured_postgres_sources_are_refused_by_field() {
    let pg_conf = |extra: &str| {
        format!("[sources.pg]\nkind = \"postgres\"\nurl = \"postgres://u@h:5432/db\"\n{extra}\n")
    };
    let sb = Sandbox::new();
    for (extra, field, words) in [
        ("mode = \"cdc\"", "sources.pg.mode", "not in this build yet"),
        (
            "ssl_mode = \"verify-full\"",
            "sources.pg.ssl_ca",
            "need ssl_ca",
        ),
        (
            "slot = \"s\"",
            "slot",
            "is not an option of postgres sources",
        ),
        (
            "mode = \"incremental\"\ntables = [\"t\"]",
            "sources.pg.cursor",
            "needs a cursor column",
        ),
    ] {
        sb.config(&pg_conf(extra));
        let out = sb.run(&["check"], &[]);
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{extra}: {text}");
        assert!(
            text.contains(field) && text.contains(words),
            "{extra}: {text}"
        );
    }
}
