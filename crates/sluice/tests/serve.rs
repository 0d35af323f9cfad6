//! `sluice serve` runs each source on its schedule: files dropped in a folder watched by
//! arrival land within the poll interval, a cron schedule with seconds fires on its ticks and
//! never twice at once, a MariaDB CDC source streams continuously, a source server that
//! crashes between passes is retried until it is back, and SIGTERM stops serve cleanly with
//! the warehouse holding exactly what landed.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::mariadb::MariaDb;
use common::postgres::{PgServer, PASSWORD};
use common::serve::{http, Serving};
use common::{s, Sandbox};

/// Changes in `sup.supplier`'s change log (0 before its first commit), while serve runs.
fn lake_rows(sb: &Sandbox) -> usize {
    changes_in(sb, "sup.supplier")
}

/// Changes in a lake table's change log (0 before its first commit).
fn changes_in(sb: &Sandbox, table: &str) -> usize {
    let sql = format!("SELECT count(*) AS n FROM {table}__changes");
    let out = sb.run(&["--json", "query", &sql], &[]);
    if !out.status.success() {
        return 0;
    }
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    rows[0]["n"].as_u64().unwrap_or(0) as usize
}

/// Waits until the lake holds `n` supplier rows; how long that took.
fn lands(sb: &Sandbox, n: usize, within: Duration) -> Duration {
    let started = Instant::now();
    while lake_rows(sb) < n {
        assert!(
            started.elapsed() < within,
            "{n} rows did not land within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    started.elapsed()
}

#[test]
fn arrivals_land_within_the_poll_interval_and_cron_ticks_never_overlap() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[sources.sup]
kind = "files"
url = "drops/supplier/{date}/"
format = "csv"
delimiter = "|"
header = false
columns = ["id bigint", "name text", "bal decimal(15,2)"]
table = "supplier"
trigger = "arrival"
poll_interval_secs = 1
[sources.sup.tables.supplier]
primary_key = ["id"]

[sources.tick]
kind = "files"
url = "drops/tick/"
format = "csv"
delimiter = "|"
header = false
columns = ["id bigint"]
table = "tick"
schedule = "*/2 * * * * *"
"#,
    );
    let started = Instant::now();
    let serving = Serving::start(&sb);
    // Nothing there yet: passes find nothing, and say so without failing.
    std::thread::sleep(Duration::from_millis(1500));
    sb.write(
        "drops/supplier/20240101/part-0.tbl",
        "1|a|1.50|\n2|b|2.25|\n",
    );
    let first = lands(&sb, 2, Duration::from_secs(20));
    sb.write(
        "drops/supplier/20240102/part-0.tbl",
        "3|c|-3.00|\n2|b|9.99|\n",
    );
    let second = lands(&sb, 4, Duration::from_secs(20));
    eprintln!("landed after {first:?} and {second:?}");
    // A pass lists the folder every second; landing and loading take a little more.
    assert!(
        first < Duration::from_secs(8) && second < Duration::from_secs(8),
        "{first:?} {second:?}"
    );
    std::thread::sleep(Duration::from_secs(7).saturating_sub(started.elapsed()));
    let ran_for = started.elapsed();
    let (code, summary, stderr) = serving.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    let of = |name: &str| {
        summary
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["source"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {summary}"))
            .clone()
    };
    let sup = of("sup");
    assert_eq!(sup["schedule"], "on arrival (every 1 s)");
    assert_eq!(sup["failed"], 0, "{stderr}");
    assert_eq!(sup["rows_landed"], 4, "{summary}");
    assert!(sup["passes"].as_u64().unwrap() >= 3, "{summary}");
    // Every two seconds, one pass at a time: never more passes than ticks.
    let tick = of("tick");
    let ticks = ran_for.as_secs() / 2 + 1;
    let passes = tick["passes"].as_u64().unwrap();
    assert!(
        passes >= 2 && passes <= ticks,
        "{passes} passes in {ran_for:?}: {summary}"
    );
    assert_eq!(tick["failed"], 0, "{stderr}");
    // The warehouse holds what landed, the later version of a key winning.
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, name, bal::VARCHAR FROM sup.supplier ORDER BY id"),
        vec![
            vec![s("1"), s("a"), s("1.50")],
            vec![s("2"), s("b"), s("9.99")],
            vec![s("3"), s("c"), s("-3.00")]
        ]
    );
}

/// A sandbox whose one source `sup` reads CSV files from `drops/`, with `scheduling` keys.
fn one_csv_source(scheduling: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.config(&format!(
        "[sources.sup]\nkind = \"files\"\nurl = \"drops/\"\nformat = \"csv\"\ncolumns = [\"id bigint\"]\ntable = \"t\"\n{scheduling}\n"
    ));
    sb
}

/// A schedule sluice cannot read stops serve before it starts, naming the key.
#[test]
fn a_bad_schedule_is_refused_by_name() {
    let sb = one_csv_source("schedule = \"every tuesday\"");
    let out = sb.run(&["serve"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sources.sup.schedule") && err.contains("every tuesday"),
        "{err}"
    );
}

/// A CDC source is served continuously (its default): rows committed while serve runs land
/// in the lake as they commit and in the warehouse, and SIGTERM ends the stream with the
/// warehouse equal to MariaDB.
#[test]
fn a_cdc_source_streams_continuously_until_sigterm() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO orders SELECT seq, CONCAT('r-', seq) FROM seq_1_to_1000",
    );
    let sb = Sandbox::new();
    sb.config(&db.config("cdc", "batch_max_ms = 200"));
    let serving = Serving::start(&sb);
    let wait_for = |n: usize| {
        let started = Instant::now();
        while changes_in(&sb, "shop.orders") < n {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{n} changes did not land"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        started.elapsed()
    };
    wait_for(1000);
    db.sql(
        "INSERT INTO orders SELECT seq, CONCAT('n-', seq) FROM seq_1001_to_1500;
         UPDATE orders SET v = 'changed' WHERE id <= 10;
         DELETE FROM orders WHERE id BETWEEN 20 AND 29",
    );
    let took = wait_for(1000 + 500 + 10 + 10);
    eprintln!("520 changes landed {took:?} after their commit");
    // The stream reports its lag and counts as it commits, long before it ends.
    let (code, text) = http(&serving.addr(), "GET", "/metrics", None, None);
    assert_eq!(code, 200, "{text}");
    let m = prometheus_samples(&text);
    let labels = r#"{source="shop",table="orders"}"#;
    assert_eq!(
        m.get(&format!("sluice_rows_landed_total{labels}")),
        Some(&1520.0),
        "{text}"
    );
    let lag = m[&format!("sluice_lag_seconds{labels}")];
    assert!((0.0..10.0).contains(&lag), "lag {lag}\n{text}");
    let (code, summary, stderr) = serving.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(summary[0]["schedule"], "continuous", "{summary}");
    assert_eq!(summary[0]["failed"], 0, "{stderr}");
    let source = db.rows("SELECT id, v FROM orders ORDER BY id");
    assert_eq!(source.len(), 1490);
    assert!(
        sb.duck("SELECT id::VARCHAR, v FROM shop.orders ORDER BY id") == source,
        "the warehouse differs from MariaDB"
    );
}

/// The source server crashes while serve runs a source on a schedule: the passes that fail
/// meanwhile are tried again (transient), the others go on, and once the server is back the
/// rows changed meanwhile land once; the warehouse ends equal to MariaDB.
#[test]
fn a_source_crash_between_passes_is_retried_until_it_is_back() {
    let mut db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO orders SELECT seq, CONCAT('r-', seq) FROM seq_1_to_100",
    );
    let sb = Sandbox::new();
    sb.config(&db.config("snapshot", "schedule = \"* * * * * *\""));
    let serving = Serving::start(&sb);
    let eventually = |what: &str, ok: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !ok() {
            assert!(started.elapsed() < Duration::from_secs(60), "{what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    eventually("the first pass lands", &|| {
        changes_in(&sb, "shop.orders") >= 100
    });
    db.crash();
    std::thread::sleep(Duration::from_secs(3));
    db.restart();
    db.sql("UPDATE orders SET v = 'after' WHERE id <= 5; DELETE FROM orders WHERE id > 95");
    eventually("the changes after the restart land", &|| {
        let out = sb.run(
            &[
                "--json",
                "query",
                "SELECT count(*) AS n FROM shop.orders WHERE v = 'after'",
            ],
            &[],
        );
        out.status.success()
            && serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0]["n"] == 5
    });
    // The pass in flight at SIGTERM ends (a snapshot commits whole chunks only).
    let (code, summary, stderr) = serving.terminate(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let shop = &summary[0];
    assert!(
        shop["failed"].as_u64().unwrap() >= 1,
        "no pass failed during the crash: {summary}"
    );
    assert!(
        stderr.contains("trying again") || stderr.contains("next tick"),
        "{stderr}"
    );
    let source = db.rows("SELECT id, v FROM orders ORDER BY id");
    assert_eq!(source.len(), 95);
    assert!(
        sb.duck("SELECT id::VARCHAR, v FROM shop.orders ORDER BY id") == source,
        "the warehouse differs from MariaDB"
    );
}

/// With `--log-format json` every diagnostic line is one JSON object whose fields (source,
/// schedule) are keys, and no line carries colour codes: what log collectors take.
#[test]
fn serve_logs_one_json_object_per_line() {
    let sb = one_csv_source("trigger = \"arrival\"\npoll_interval_secs = 1");
    sb.write("drops/a.csv", "id\n1\n2\n");
    let serving = Serving::start_with(&sb, &["--log", "info", "--log-format", "json"], &[]);
    std::thread::sleep(Duration::from_secs(2));
    let (code, _, stderr) = serving.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr}"
    );
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["message"] == "serving"
            && l["source"] == "sup"
            && l["level"] == "INFO"
            && l["schedule"] == "on arrival (every 1 s)"),
        "{stderr}"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "pass done"),
        "{stderr}"
    );
}

fn json_of(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: not JSON: {body}"))
}

/// Parses Prometheus text exposition strictly: every sample line is `name{labels} value`, its
/// family declared by a `# TYPE` line before it, and the text ends with `# EOF`. Returns the
/// samples by `name{labels}`.
fn prometheus_samples(text: &str) -> std::collections::HashMap<String, f64> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = std::collections::HashMap::new();
    assert_eq!(text.lines().last(), Some("# EOF"), "{text}");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                ["counter", "gauge", "histogram", "summary", "unknown"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                for pair in labels[1..labels.len() - 1].split(',') {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                    assert!(
                        !k.is_empty() && v.starts_with('"') && v.ends_with('"'),
                        "{line}"
                    );
                }
            }
        }
        let family = ["_total", "_bucket", "_sum", "_count", "_created"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "no # TYPE before {line}");
        samples.insert(series.to_string(), value);
    }
    samples
}

/// serve's HTTP API: /health answers without the token and everything else asks for it; the
/// tables, a pass asked for by POST, SQL over the lake (read-only: COPY TO and DDL refused),
/// the run history (also `sluice runs`), and /metrics as Prometheus text with the rows each
/// stage counted, equal to what landed.
#[test]
fn the_api_metrics_and_run_history_tell_what_serve_did() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[sources.sup]
kind = "files"
url = "drops/"
format = "csv"
columns = ["id bigint", "name text"]
table = "supplier"
trigger = "arrival"
poll_interval_secs = 1
[sources.sup.tables.supplier]
primary_key = ["id"]

[serve]
listen = "127.0.0.1:0"
token = { env = "SLUICE_TEST_TOKEN" }
"#,
    );
    sb.write("drops/a.csv", "id,name\n1,a\n2,b\nnot-a-number,c\n3,c\n");
    let token = "t0ken-for-the-test";
    let serving = Serving::start_with(&sb, &[], &[("SLUICE_TEST_TOKEN", token)]);
    let addr = serving.addr();
    let t = Some(token);
    lands(&sb, 3, Duration::from_secs(30));

    let (code, body) = http(&addr, "GET", "/health", None, None);
    assert_eq!(code, 200, "{body}");
    let health = json_of(&body);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["sources"][0]["source"], "sup");
    assert_eq!(health["sources"][0]["owned"], true, "{body}");

    for (method, path) in [
        ("GET", "/api/tables"),
        ("GET", "/metrics"),
        ("GET", "/api/runs"),
    ] {
        let (code, _) = http(&addr, method, path, None, None);
        assert_eq!(code, 401, "{path} without the token");
        let (code, _) = http(&addr, method, path, Some("wrong"), None);
        assert_eq!(code, 401, "{path} with a wrong token");
    }
    let (code, body) = http(&addr, "GET", "/api/tables", t, None);
    assert_eq!(code, 200, "{body}");
    let tables = json_of(&body);
    assert_eq!(tables[0]["table"], "supplier", "{body}");
    assert_eq!(tables[0]["quarantined"], 1, "{body}");

    let (code, body) = http(
        &addr,
        "POST",
        "/api/query",
        t,
        Some(r#"{"sql": "SELECT id, name FROM sup.supplier ORDER BY id"}"#),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        json_of(&body),
        serde_json::json!([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}])
    );
    let copy_to = sb.path("copied.csv");
    for sql in [
        format!("COPY (SELECT 1) TO '{}'", copy_to.display()),
        "CREATE EXTERNAL TABLE etc STORED AS CSV LOCATION '/etc/passwd'".to_string(),
    ] {
        let body = serde_json::json!({ "sql": sql }).to_string();
        let (code, answer) = http(&addr, "POST", "/api/query", t, Some(&body));
        assert_eq!(code, 400, "{sql}: {answer}");
    }
    assert!(!copy_to.exists(), "COPY TO wrote a file");

    let (code, body) = http(&addr, "POST", "/api/tables/sup.supplier/sync", t, None);
    assert_eq!(code, 202, "{body}");
    let (code, _) = http(&addr, "POST", "/api/tables/nope.x/sync", t, None);
    assert_eq!(code, 404);
    // The pass asked for shows in the run history.
    let started = Instant::now();
    let runs = loop {
        let (code, body) = http(&addr, "GET", "/api/runs?limit=1000", t, None);
        assert_eq!(code, 200, "{body}");
        let runs = json_of(&body);
        if runs
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["trigger"] == "api")
        {
            break runs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no api run: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let runs = runs.as_array().unwrap();
    assert!(runs
        .iter()
        .all(|r| r["source"] == "sup" && r["table"] == "supplier"));
    assert!(runs.iter().all(|r| r["outcome"] == "ok"), "{runs:?}");
    let sum = |key: &str| runs.iter().map(|r| r[key].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("rows_landed"), 3, "{runs:?}");
    assert_eq!(sum("rows_quarantined"), 1, "{runs:?}");
    assert_eq!(sum("changes_loaded"), 3, "{runs:?}");
    // The bytes are the data files the rows went into, as the lake's own log records them.
    let lake_bytes: u64 = walk_files(&sb.path("lake/changes/sup/supplier"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(lake_bytes > 0);
    assert_eq!(sum("bytes_landed"), lake_bytes, "{runs:?}");

    let (code, text) = http(&addr, "GET", "/metrics", t, None);
    assert_eq!(code, 200, "{text}");
    let m = prometheus_samples(&text);
    let at = |series: &str| {
        *m.get(series)
            .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
    };
    let labels = r#"{source="sup",table="supplier"}"#;
    assert_eq!(at(&format!("sluice_rows_landed_total{labels}")), 3.0);
    assert_eq!(at(&format!("sluice_rows_quarantined_total{labels}")), 1.0);
    assert_eq!(at(&format!("sluice_rows_extracted_total{labels}")), 4.0);
    assert_eq!(at(&format!("sluice_rows_loaded_total{labels}")), 3.0);
    assert_eq!(
        at(&format!("sluice_bytes_landed_total{labels}")),
        lake_bytes as f64
    );
    assert_eq!(at(&format!("sluice_table_halted{labels}")), 0.0);
    assert_eq!(at(&format!("sluice_load_lag_versions{labels}")), 0.0);
    let lag = at(&format!("sluice_lag_seconds{labels}"));
    assert!((0.0..30.0).contains(&lag), "lag {lag}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = at(&format!("sluice_last_success_timestamp_seconds{labels}"));
    assert!(now - last < 60.0 && last <= now + 1.0, "{last} vs {now}");
    assert!(at(r#"sluice_pass_duration_seconds_count{source="sup"}"#) >= 2.0);

    let (code, _, stderr) = serving.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    // The history outlives the process.
    let listed: serde_json::Value =
        serde_json::from_str(&sb.ok(&["--json", "runs", "--limit", "1000"])).unwrap();
    assert!(listed.as_array().unwrap().len() >= runs.len(), "{listed}");
    let text = sb.ok(&["runs", "--source", "sup"]);
    assert!(text.contains("sup.supplier  ok (api)"), "{text}");
}

/// A webhook receiver on a free port: every request's path and JSON body, answered 200.
struct Hooks {
    addr: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
}

impl Hooks {
    fn start() -> Hooks {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    if header.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = header.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let body = serde_json::from_slice(&body).unwrap_or_else(|e| {
                    panic!(
                        "{e}: webhook body not JSON: {}",
                        String::from_utf8_lossy(&body)
                    )
                });
                into.lock().unwrap().push((path, body));
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Hooks { addr, got }
    }

    /// The JSON alerts received so far.
    fn alerts(&self) -> Vec<serde_json::Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == "/hook")
            .map(|(_, b)| b.clone())
            .collect()
    }

    fn count(&self, kind: &str, condition: Option<&str>) -> usize {
        self.alerts()
            .iter()
            .filter(|a| a["kind"] == kind && condition.is_none_or(|c| a["condition"] == c))
            .count()
    }

    fn wait_for(&self, kind: &str, condition: Option<&str>, within: Duration) {
        let started = Instant::now();
        while self.count(kind, condition) == 0 {
            assert!(
                started.elapsed() < within,
                "no {kind} {condition:?} alert within {within:?}: {:?}",
                self.alerts()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Webhooks hear, once per condition while it lasts: a schema change halting the table, the
/// source server going down (failure, then freshness past `max_lag_secs`), and a recovery
/// from each once it ends (the server back; the change accepted through the API). Slack's
/// format gets the same alerts as text. The warehouse ends equal to MariaDB.
#[test]
fn webhooks_hear_failure_halt_freshness_and_recovery_once_each() {
    let mut db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO orders SELECT seq, CONCAT('r-', seq) FROM seq_1_to_100",
    );
    let hooks = Hooks::start();
    let sb = Sandbox::new();
    sb.config(&format!(
        "{}\n[[alerts]]\nwebhook = \"http://{a}/hook\"\n[[alerts]]\nwebhook = \"http://{a}/slack\"\nformat = \"slack\"\n",
        db.config(
            "snapshot",
            "schedule = \"* * * * * *\"\nmax_lag_secs = 3\nschema_changes = \"halt\""
        ),
        a = hooks.addr
    ));
    let serving = Serving::start(&sb);
    let addr = serving.addr();
    let eventually = |what: &str, ok: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !ok() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what}\n{}",
                serving.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    eventually("the first pass lands", &|| {
        changes_in(&sb, "shop.orders") >= 100
    });
    assert!(hooks.alerts().is_empty(), "{:?}", hooks.alerts());

    db.sql("ALTER TABLE orders ADD COLUMN note VARCHAR(10) NOT NULL DEFAULT 'n'");
    hooks.wait_for("halted", None, Duration::from_secs(30));

    db.crash();
    hooks.wait_for("failure", None, Duration::from_secs(30));
    hooks.wait_for("freshness", None, Duration::from_secs(30));
    // Passes go on failing meanwhile; the conditions alerted once.
    std::thread::sleep(Duration::from_secs(3));
    db.restart();
    hooks.wait_for("recovery", Some("failure"), Duration::from_secs(60));
    hooks.wait_for("recovery", Some("freshness"), Duration::from_secs(30));

    let (code, body) = http(
        &addr,
        "POST",
        "/api/tables/shop.orders/schema/accept",
        None,
        None,
    );
    assert_eq!(code, 200, "{body}");
    hooks.wait_for("recovery", Some("halted"), Duration::from_secs(30));
    db.sql("UPDATE orders SET note = 'after' WHERE id <= 3");
    eventually("the change after the accept lands", &|| {
        // The lake, not the warehouse: serve holds the DuckDB file's lock while it loads.
        sb.query_lake("SELECT count(*) AS n FROM shop.orders WHERE note = 'after'")[0]["n"] == 3
    });
    let (code, _, stderr) = serving.terminate(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");

    for kind in ["failure", "halted", "freshness"] {
        assert_eq!(hooks.count(kind, None), 1, "{kind}: {:?}", hooks.alerts());
    }
    for condition in ["failure", "halted", "freshness"] {
        assert_eq!(
            hooks.count("recovery", Some(condition)),
            1,
            "{condition}: {:?}",
            hooks.alerts()
        );
    }
    for a in hooks.alerts() {
        assert_eq!(a["source"], "shop", "{a}");
        assert!(a["message"].as_str().is_some_and(|m| !m.is_empty()), "{a}");
    }
    let slack: Vec<_> = hooks
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == "/slack")
        .map(|(_, b)| b.clone())
        .collect();
    assert_eq!(slack.len(), hooks.alerts().len(), "{slack:?}");
    assert!(
        slack
            .iter()
            .all(|b| b["text"].as_str().is_some_and(|t| t.starts_with("sluice "))),
        "{slack:?}"
    );
    let source = db.rows("SELECT id, v, note FROM orders ORDER BY id");
    assert_eq!(source.len(), 100);
    assert!(
        sb.duck("SELECT id::VARCHAR, v, note FROM shop.orders ORDER BY id") == source,
        "the warehouse differs from MariaDB"
    );
}

/// Sources this serve process runs now (its /health).
fn owned_by(addr: &str) -> Vec<String> {
    let (code, body) = http(addr, "GET", "/health", None, None);
    assert_eq!(code, 200, "{body}");
    let mut v: Vec<String> = json_of(&body)["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["owned"] == true)
        .map(|s| s["source"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Two serve processes share one config and one PostgreSQL state store: they split its two
/// sources by lease. Killing (-9) the one streaming the MariaDB CDC source hands that source
/// to the other within the lease time, which resumes from the position committed in the
/// lake: the PostgreSQL warehouse ends equal to MariaDB and to the files dropped, value by
/// value.
#[test]
fn two_serve_processes_split_the_sources_and_one_takes_over_from_a_killed_one() {
    let pg = PgServer::start(None);
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO orders SELECT seq, CONCAT('r-', seq) FROM seq_1_to_500",
    );
    let sb = Sandbox::new();
    let pg_keys = format!(
        "url = \"{}\"\npassword = {{ env = \"PGWH_PASSWORD\" }}\nssl_mode = \"disable\"\n",
        pg.url()
    );
    sb.config(&format!(
        "{}
[sources.sup]
kind = \"files\"
url = \"drops/\"
format = \"csv\"
columns = [\"id bigint\", \"name text\"]
table = \"supplier\"
trigger = \"arrival\"
poll_interval_secs = 1
[sources.sup.tables.supplier]
primary_key = [\"id\"]

[warehouses.pg]
kind = \"postgres\"
{pg_keys}
[state]
{pg_keys}lease_secs = 3

[serve]
listen = \"127.0.0.1:0\"
",
        db.config("cdc", "batch_max_ms = 200")
    ));
    let env = [("PGWH_PASSWORD", PASSWORD)];
    let eventually = |what: &str, within: u64, ok: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !ok() {
            assert!(
                started.elapsed() < Duration::from_secs(within),
                "{what}\n{}\n{}",
                std::fs::read_to_string(sb.path("a.log")).unwrap_or_default(),
                std::fs::read_to_string(sb.path("b.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        started.elapsed()
    };
    let a = Serving::start_as(&sb, "a", &[], &env);
    let a_addr = a.addr();
    eventually("the first process runs both sources", 30, &|| {
        owned_by(&a_addr).len() == 2
    });
    let b = Serving::start_as(&sb, "b", &[], &env);
    let b_addr = b.addr();
    eventually("the two processes split the sources", 30, &|| {
        owned_by(&a_addr).len() == 1 && owned_by(&b_addr).len() == 1
    });
    db.sql(
        "INSERT INTO orders SELECT seq, CONCAT('n-', seq) FROM seq_501_to_800;
         UPDATE orders SET v = 'changed' WHERE id <= 10",
    );
    sb.write("drops/1.csv", "id,name\n1,a\n2,b\n");
    let pg_rows = |sql: &str| -> Option<Vec<Vec<Option<String>>>> {
        let out = pg.try_sql("wh", sql).ok()?;
        Some(
            out.lines()
                .map(|l| l.split('\t').map(|f| Some(f.to_string())).collect())
                .collect(),
        )
    };
    let equal = || {
        pg_rows("SELECT id, v FROM shop.orders ORDER BY id")
            == Some(db.rows("SELECT id, v FROM orders ORDER BY id"))
    };
    eventually("the changes reach the warehouse", 60, &equal);
    // Kill the process streaming `shop`, mid-stream: more changes come meanwhile.
    let (victim, survivor, survivor_addr) = match owned_by(&a_addr).contains(&"shop".to_string()) {
        true => (a, b, b_addr),
        false => (b, a, a_addr),
    };
    db.sql("INSERT INTO orders SELECT seq, CONCAT('k-', seq) FROM seq_801_to_900");
    assert!(Command::new("kill")
        .args(["-KILL", &victim.pid().to_string()])
        .status()
        .unwrap()
        .success());
    drop(victim);
    let took = eventually("the survivor takes the source over", 30, &|| {
        owned_by(&survivor_addr).len() == 2
    });
    eprintln!("taken over {took:?} after the kill (lease 3 s)");
    db.sql(
        "INSERT INTO orders SELECT seq, CONCAT('s-', seq) FROM seq_901_to_1000;
         DELETE FROM orders WHERE id <= 50;
         UPDATE orders SET v = 'late' WHERE id BETWEEN 600 AND 620",
    );
    sb.write("drops/2.csv", "id,name\n2,bb\n3,c\n");
    eventually("the warehouse ends equal to MariaDB", 60, &equal);
    eventually("and to the files", 30, &|| {
        pg_rows("SELECT id, name FROM sup.supplier ORDER BY id")
            == Some(vec![
                vec![s("1"), s("a")],
                vec![s("2"), s("bb")],
                vec![s("3"), s("c")],
            ])
    });
    let (code, _, stderr) = survivor.terminate(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(db.rows("SELECT count(*) FROM orders"), vec![vec![s("950")]]);
    // The run history is the shared store's.
    let runs = pg.sql(
        "wh",
        "SELECT count(*) FROM _sluice.runs WHERE source = 'sup'",
    );
    assert!(runs.trim().parse::<u64>().unwrap() >= 2, "{runs}");
}

/// SIGTERM while serve loads a large snapshot: serve exits within its bound, the lake holds
/// whole commits only and the warehouse exactly the lake's changes up to the seq its ledger
/// records (a load is one transaction with its ledger row); the next sync completes it, equal
/// to MariaDB value by value.
#[test]
fn sigterm_during_a_load_leaves_lake_and_warehouse_consistent() {
    let db = MariaDb::start(&[]);
    db.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, v VARCHAR(60));
         INSERT INTO orders SELECT seq, CONCAT('row-', seq, '-', MD5(seq)) FROM seq_1_to_400000",
    );
    let sb = Sandbox::new();
    sb.config(&db.config("cdc", "batch_max_ms = 200"));
    let serving = Serving::start(&sb);
    let started = Instant::now();
    while changes_in(&sb, "shop.orders") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "nothing landed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, _, stderr) = serving.terminate(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stderr}");
    let exists = |schema: &str, table: &str| {
        sb.duck(&format!("SELECT count(*)::VARCHAR FROM information_schema.tables WHERE table_schema = '{schema}' AND table_name = '{table}'"))
            == vec![vec![s("1")]]
    };
    let loaded = match exists("_sluice", "ledger") {
        true => {
            sb.duck("SELECT lake_seq::VARCHAR FROM _sluice.ledger WHERE target_table = 'orders'")
        }
        false => Vec::new(),
    };
    let warehouse = match exists("shop", "orders") {
        true => sb.duck("SELECT count(*)::VARCHAR FROM shop.orders"),
        false => vec![vec![s("0")]],
    };
    match loaded.first() {
        Some(row) => {
            let seq = row[0].clone().unwrap();
            let lake = sb.query_lake(&format!(
                "SELECT count(DISTINCT id) AS n FROM shop.orders__changes WHERE _sluice_seq <= {seq}"
            ));
            assert_eq!(
                warehouse[0][0].as_deref(),
                Some(lake[0]["n"].to_string().as_str()),
                "the warehouse holds other rows than the lake up to its ledger's seq {seq}"
            );
        }
        None => assert_eq!(
            warehouse,
            vec![vec![s("0")]],
            "rows loaded without a ledger row"
        ),
    }
    eprintln!(
        "at SIGTERM: {} of 400000 rows in the warehouse",
        warehouse[0][0].as_deref().unwrap_or("?")
    );
    sb.ok(&["sync"]);
    let source = db.rows("SELECT id, v FROM orders ORDER BY id");
    assert!(
        sb.duck("SELECT id::VARCHAR, v FROM shop.orders ORDER BY id") == source,
        "the warehouse differs from MariaDB"
    );
}

/// Every file under `dir`, recursively.
fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}
