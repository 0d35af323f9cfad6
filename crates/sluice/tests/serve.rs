//! `sluice serve` runs each source on its schedule: files dropped in a folder watched by
//! arrival land within the poll interval, a cron schedule with seconds fires on its ticks and
//! never twice at once, a MariaDB CDC source streams continuously, a source server that
//! crashes between passes is retried until it is back, and SIGTERM stops serve cleanly with
//! the warehouse holding exactly what landed.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mariadb::MariaDb;
use common::{s, Sandbox};

/// `sluice serve` started in the sandbox, killed if the test fails before it stops.
struct Serving {
    child: Option<Child>,
    /// Where its stderr goes.
    log: std::path::PathBuf,
}

impl Serving {
    fn start(sb: &Sandbox) -> Serving {
        Serving::start_with(sb, &[])
    }

    /// Started with more global arguments. Diagnostics go to a file (a pipe nobody reads
    /// while serve runs would fill and block it).
    fn start_with(sb: &Sandbox, args: &[&str]) -> Serving {
        let log = sb.path("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--config")
            .arg(sb.path("sluice.toml"))
            .args(args)
            .args(["--json", "serve"])
            .current_dir(sb.dir.path())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sluice serve");
        Serving {
            child: Some(child),
            log,
        }
    }

    /// Sends SIGTERM; returns the exit code, the summary per source and stderr.
    fn terminate(mut self, within: Duration) -> (Option<i32>, serde_json::Value, String) {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + within;
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "serve did not stop within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = std::fs::read_to_string(&self.log).unwrap_or_default();
        let summary = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
        (out.status.code(), summary, stderr)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

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
    let serving = Serving::start_with(&sb, &["--log", "info", "--log-format", "json"]);
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
