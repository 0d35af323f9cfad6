//! The events collector over real HTTP (`sluice serve`, curl as the client): events land
//! value by value, bad lines are named and quarantined while the rest land, retries with ids
//! are not doubled, kill -9 of serve while clients post loses and doubles nothing that was
//! acknowledged, a full buffer answers 429, an oversize body 413 and a wrong token 401.

mod common;

use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::serve::Serving;
use common::{s, Sandbox};

/// A POST through curl: (status, body, Retry-After). Status 0: no answer (serve is down).
fn post(
    addr: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
    gzip: bool,
) -> (u16, String, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    let headers = dir.path().join("headers");
    let bytes = match gzip {
        true => {
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(body).unwrap();
            z.finish().unwrap()
        }
        false => body.to_vec(),
    };
    std::fs::write(&file, bytes).unwrap();
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "--max-time",
        "90",
        "-X",
        "POST",
        "-w",
        "\n%{http_code}",
    ])
    .arg("-D")
    .arg(&headers)
    .arg("--data-binary")
    .arg(format!("@{}", file.display()))
    .args(["-H", "Content-Type: application/x-ndjson"]);
    if gzip {
        c.args(["-H", "Content-Encoding: gzip"]);
    }
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = c
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let retry_after = std::fs::read_to_string(&headers)
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after:")
                .map(|v| v.trim().to_string())
        });
    (
        code.trim().parse().unwrap_or(0),
        body.to_string(),
        retry_after,
    )
}

fn json_of(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: not JSON: {body}"))
}

const CONFIG: &str = r#"
[warehouses.local]
kind = "duckdb"
path = "warehouse.duckdb"

[sources.clicks]
kind = "events"
tables = ["events", "pages"]
id_field = "id"
time_field = "ts"
schema_changes = "evolve"
batch_max_ms = 100
"#;

#[test]
fn events_land_value_by_value_and_bad_lines_are_named() {
    let sb = Sandbox::new();
    sb.config(CONFIG);
    let serving = Serving::start(&sb);
    let addr = serving.addr();
    let first = concat!(
        r#"{"id":"e1","ts":"2026-12-01T10:00:00Z","user":{"id":7,"name":"Zoë"},"tags":["a","b"],"n":12345678901234567890123,"price":19.99}"#,
        "\n",
        r#"{"id":"e2","ts":1764583200000,"user":{"id":8,"name":"李"},"tags":[],"n":1,"price":0.5}"#,
        "\n",
        "not json\n",
        "{}\n",
        r#"{"id":"e3","user":null,"n":-5,"price":3,"note":"tab\there \"quoted\""}"#,
        "\n",
    );
    let (code, body, _) = post(&addr, "/events/clicks", None, first.as_bytes(), false);
    assert_eq!(code, 200, "{body}\n{}", serving.log());
    let answer = json_of(&body);
    assert_eq!(answer["accepted"], 3, "{answer}");
    assert_eq!(answer["duplicates"], 0, "{answer}");
    let rejected = answer["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{answer}");
    assert_eq!(rejected[0]["line"], 3);
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a JSON object"),
        "{answer}"
    );
    assert_eq!(rejected[1]["line"], 4);
    assert_eq!(rejected[1]["reason"], "the event has no fields");

    // A JSON array, gzipped, to the second table; a field new to it becomes a column.
    let pages = r#"[{"id":"p1","path":"/a"},{"id":"p2","path":"/b","extra":{"k":true}}]"#;
    let (code, body, _) = post(&addr, "/events/clicks/pages", None, pages.as_bytes(), true);
    assert_eq!(code, 200, "{body}");
    assert_eq!(json_of(&body)["accepted"], 2, "{body}");

    // The same request again (a client that never heard the answer): nothing doubles.
    let (code, body, _) = post(&addr, "/events/clicks", None, first.as_bytes(), false);
    assert_eq!(code, 200, "{body}");
    let again = json_of(&body);
    assert_eq!(again["accepted"], 0, "{again}");
    assert_eq!(again["duplicates"], 3, "{again}");

    // A value its column cannot hold lands in a variant column, not the quarantine.
    let misfit = br#"{"id":"e4","n":"many","price":1.5}"#;
    let (code, body, _) = post(&addr, "/events/clicks", None, misfit, false);
    assert_eq!(code, 200, "{body}");
    assert_eq!(json_of(&body)["accepted"], 1, "{body}");

    // No such table, no such source.
    assert_eq!(
        post(&addr, "/events/clicks/nope", None, b"{\"a\":1}", false).0,
        404
    );
    assert_eq!(
        post(&addr, "/events/other", None, b"{\"a\":1}", false).0,
        404
    );

    // The lake holds each event once, value by value, as committed before the answers.
    let rows = sb.query_lake(
        "SELECT id, CAST(user AS VARCHAR) AS user, CAST(tags AS VARCHAR) AS tags, \
         CAST(n AS VARCHAR) AS n, CAST(price AS VARCHAR) AS price, note, \
         CAST(_sluice_source_ts AS VARCHAR) AS at, _sluice_op AS op \
         FROM clicks.events__changes WHERE id <> 'e4' ORDER BY id",
    );
    let v = |r: &serde_json::Value, k: &str| r[k].as_str().map(String::from);
    let got: Vec<Vec<Option<String>>> = rows
        .iter()
        .map(|r| {
            ["id", "user", "tags", "n", "price", "note", "at", "op"]
                .iter()
                .map(|k| v(r, k))
                .collect()
        })
        .collect();
    assert_eq!(
        got,
        vec![
            vec![
                s("e1"),
                s(r#"{"id":7,"name":"Zoë"}"#),
                s(r#"["a","b"]"#),
                s("12345678901234567890123"),
                s("19.990000000"),
                None,
                s("2026-12-01T10:00:00Z"),
                s("c"),
            ],
            vec![
                s("e2"),
                s(r#"{"id":8,"name":"李"}"#),
                s("[]"),
                s("1"),
                s("0.500000000"),
                None,
                s("2025-12-01T10:00:00Z"),
                s("c"),
            ],
            vec![
                s("e3"),
                None,
                None,
                s("-5"),
                s("3.000000000"),
                s("tab\there \"quoted\""),
                got[2][6].clone(),
                s("c"),
            ],
        ],
        "{rows:?}"
    );
    let e4 = sb.query_lake(
        "SELECT CAST(n AS VARCHAR) AS n, n__text, CAST(price AS VARCHAR) AS price FROM clicks.events WHERE id = 'e4'",
    );
    assert_eq!(e4.len(), 1, "{e4:?}");
    assert_eq!(e4[0]["n"], serde_json::Value::Null, "{e4:?}");
    assert_eq!(e4[0]["n__text"], "many", "{e4:?}");
    assert_eq!(e4[0]["price"], "1.500000000", "{e4:?}");
    let pages = sb.query_lake(
        "SELECT id, path, CAST(extra AS VARCHAR) AS extra FROM clicks.pages ORDER BY id",
    );
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert_eq!(pages[1]["extra"], r#"{"k":true}"#, "{pages:?}");
    // The bad lines are in the quarantine with their text and reason (twice: sent twice).
    let q = sb.query_lake(
        "SELECT line, raw, reason FROM clicks.events__quarantine ORDER BY line, reason",
    );
    assert_eq!(q.len(), 4, "{q:?}");
    assert_eq!(q[0]["raw"], "not json", "{q:?}");
    assert_eq!(q[3]["line"], 4, "{q:?}");
    assert_eq!(q[3]["raw"], "{}", "{q:?}");

    // Loaded into the warehouse by key, the new columns evolved in.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        // serve holds the DuckDB file while it loads; `status` meanwhile cannot open it.
        let out = sb.run(&["--json", "status"], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && stderr.contains("Could not set lock") {
            assert!(Instant::now() < deadline, "{stderr}");
            std::thread::sleep(Duration::from_millis(300));
            continue;
        }
        assert!(out.status.success(), "sluice status failed: {stderr}");
        let st = json_of(&String::from_utf8_lossy(&out.stdout));
        let loaded = st
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["source"] == "clicks")
            .all(|t| t["warehouses"][0]["lag_versions"] == 0);
        if loaded || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let (code, _, stderr) = serving.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        sb.duck("SELECT id, user::VARCHAR, n::VARCHAR, n__text FROM clicks.events ORDER BY id"),
        vec![
            vec![
                s("e1"),
                s(r#"{"id":7,"name":"Zoë"}"#),
                s("12345678901234567890123"),
                None
            ],
            vec![s("e2"), s(r#"{"id":8,"name":"李"}"#), s("1"), None],
            vec![s("e3"), None, s("-5"), None],
            vec![s("e4"), None, None, s("many")],
        ],
        "{status}"
    );
    assert_eq!(
        sb.duck("SELECT id, path, extra::VARCHAR FROM clicks.pages ORDER BY id"),
        vec![
            vec![s("p1"), s("/a"), None],
            vec![s("p2"), s("/b"), s(r#"{"k":true}"#)],
        ]
    );
}

#[test]
fn a_wrong_token_an_oversize_body_and_a_full_buffer_are_refused() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[sources.clicks]
kind = "events"
token = { env = "CLICKS_TOKEN" }
max_body_bytes = 300000
buffer_mb = 1
batch_max_ms = 8000
"#,
    );
    // Lake only: the warehouse is never opened.
    let serving = Serving::start_with(&sb, &["--lake-only"], &[("CLICKS_TOKEN", "s3cret")]);
    let addr = serving.addr();
    let event = b"{\"a\":1}\n";
    assert_eq!(post(&addr, "/events/clicks", None, event, false).0, 401);
    assert_eq!(
        post(&addr, "/events/clicks", Some("wrong"), event, false).0,
        401
    );
    let token = Some("s3cret");

    // 310 KB of events: over max_body_bytes, plain or gzipped (its compressed form is small).
    let big: String = (0..3100)
        .map(|i| format!("{{\"i\":{i:>6},\"pad\":\"{}\"}}\n", "x".repeat(78)))
        .collect();
    assert!(big.len() > 300_000);
    let (code, body, _) = post(&addr, "/events/clicks", token, big.as_bytes(), false);
    assert_eq!(code, 413, "{body}");
    let (code, body, _) = post(&addr, "/events/clicks", token, big.as_bytes(), true);
    assert_eq!(code, 413, "{body}");

    // Three requests of 290 KB wait for their commit (batch_max_ms = 8 s) holding 850 KB of
    // the 1 MiB buffer: a fourth is told to come back, and takes nothing.
    let part = |k: usize| -> String {
        (0..2900)
            .map(|i| {
                format!(
                    "{{\"i\":{},\"pad\":\"{}\"}}\n",
                    k * 10_000 + i,
                    "x".repeat(80)
                )
            })
            .collect()
    };
    let started = Instant::now();
    let waiting: Vec<_> = (0..3)
        .map(|k| {
            let (addr, body) = (addr.clone(), part(k));
            std::thread::spawn(move || {
                post(
                    &addr,
                    "/events/clicks",
                    Some("s3cret"),
                    body.as_bytes(),
                    false,
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let (code, body, retry) = post(&addr, "/events/clicks", token, part(3).as_bytes(), false);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the batch committed before the fourth request"
    );
    assert_eq!(code, 429, "{body}");
    assert_eq!(retry.as_deref(), Some("1"), "{body}");
    for w in waiting {
        let (code, body, _) = w.join().unwrap();
        assert_eq!(code, 200, "{body}");
        assert_eq!(json_of(&body)["accepted"], 2900, "{body}");
    }
    // Answered, their share of the buffer is free again.
    let (code, body, _) = post(&addr, "/events/clicks", token, part(3).as_bytes(), false);
    assert_eq!(code, 200, "{body}");
    let (code, _, stderr) = serving.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !sb.path("warehouse.duckdb").exists(),
        "serve --lake-only loaded"
    );
    // Events cannot be read again: a re-snapshot is refused, naming the table.
    let out = sb.run(
        &["sync", "--lake-only", "--resnapshot", "clicks.events"],
        &[],
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("clicks.events: --resnapshot: this source has no snapshot"),
        "{text}"
    );
    let n =
        sb.query_lake("SELECT count(*) AS n, count(DISTINCT i) AS d FROM clicks.events__changes");
    assert_eq!(n[0]["n"], 4 * 2900, "{n:?}");
    assert_eq!(n[0]["d"], 4 * 2900, "{n:?}");
}

/// Clients post batches of events with ids, each until it is acknowledged; serve is killed
/// with SIGKILL twice while they post, and started again. In the end every event is in the
/// lake exactly once, with its values.
#[test]
fn kill_9_while_clients_post_loses_and_doubles_nothing() {
    const CLIENTS: usize = 4;
    const BATCHES: usize = 40;
    const EVENTS: usize = 25;
    let sb = Sandbox::new();
    sb.config(
        r#"
[sources.clicks]
kind = "events"
id_field = "id"
batch_max_ms = 50
"#,
    );
    let mut serving = Serving::start(&sb);
    let addr = Arc::new(Mutex::new(serving.addr()));
    let acked = Arc::new(Mutex::new(0usize));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (addr, acked) = (addr.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut retries = 0;
                for b in 0..BATCHES {
                    let body: String = (0..EVENTS)
                        .map(|i| {
                            format!(
                                "{{\"id\":\"c{c}-{b}-{i}\",\"client\":{c},\"v\":{}}}\n",
                                (b * EVENTS + i) * 3
                            )
                        })
                        .collect();
                    loop {
                        let at = addr.lock().unwrap().clone();
                        let (code, answer, _) =
                            post(&at, "/events/clicks", None, body.as_bytes(), false);
                        if code == 200 {
                            let a = json_of(&answer);
                            let landed =
                                a["accepted"].as_u64().unwrap() + a["duplicates"].as_u64().unwrap();
                            assert_eq!(landed, EVENTS as u64, "{answer}");
                            *acked.lock().unwrap() += 1;
                            break;
                        }
                        retries += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                retries
            })
        })
        .collect();
    for round in 1..=2 {
        let target = round * CLIENTS * BATCHES / 3;
        let deadline = Instant::now() + Duration::from_secs(120);
        while *acked.lock().unwrap() < target {
            assert!(
                Instant::now() < deadline,
                "clients stalled:\n{}",
                serving.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(Command::new("kill")
            .args(["-KILL", &serving.pid().to_string()])
            .status()
            .unwrap()
            .success());
        drop(serving);
        serving = Serving::start_as(&sb, &format!("serve{round}"), &[], &[]);
        *addr.lock().unwrap() = serving.addr();
    }
    let retries: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(retries > 0, "no request was refused while serve was down");
    let (code, _, stderr) = serving.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    let doubled = sb.query_lake(
        "SELECT id, count(*) AS n FROM clicks.events__changes GROUP BY id HAVING count(*) > 1",
    );
    assert!(doubled.is_empty(), "doubled: {doubled:?}");
    let rows = sb.query_lake("SELECT id, client, v FROM clicks.events__changes ORDER BY id");
    let mut want: Vec<(String, u64, u64)> = Vec::new();
    for c in 0..CLIENTS {
        for b in 0..BATCHES {
            for i in 0..EVENTS {
                want.push((
                    format!("c{c}-{b}-{i}"),
                    c as u64,
                    ((b * EVENTS + i) * 3) as u64,
                ));
            }
        }
    }
    want.sort();
    let got: Vec<(String, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["client"].as_u64().unwrap(),
                r["v"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "lake differs from what was posted");
}
