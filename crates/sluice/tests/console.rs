//! The web console in a real browser: headless Chromium (Debian's package, driven through
//! ChromeDriver) against `sluice serve` with real data. The page asks for the token and
//! refuses actions without it; the overview counts what the source files hold; a table a
//! schema change halted shows its diff, and Accept loads it (the warehouse gains the
//! column); the SQL workbench shows a query's rows, draws one bar per group and downloads
//! the same rows as CSV. Screenshots of each page go to `$SLUICE_SCREENSHOTS` (default
//! `CARGO_TARGET_TMPDIR/console`); README.md shows copies from `docs/console/`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::serve::Serving;
use common::{s, Sandbox};
use serde_json::json;

const TOKEN: &str = "console-test-token";
const STATUSES: [&str; 4] = ["new", "paid", "returned", "shipped"];

fn screenshots() -> PathBuf {
    let dir = std::env::var("SLUICE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_TARGET_TMPDIR")).join("console"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn screenshot(c: &Browser, name: &str) {
    let png = c.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Waits for the page to have rendered `section` (the console sets `body[data-ready]`).
fn ready(c: &Browser, section: &str) {
    let started = Instant::now();
    loop {
        let at = c.execute("return document.body.dataset.ready || ''", vec![]);
        if at == section {
            return;
        }
        let failure = c.execute(
            "const f = document.getElementById('failure'); return f ? f.textContent : ''",
            vec![],
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the console did not show {section} (at {at}): {failure}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Loads a console route afresh (a new query string each time, so the same route loads
/// again) and waits for it. The token stays in the tab's session storage.
fn open(c: &Browser, base: &str, route: &str, section: &str) {
    static LOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    c.goto(&format!("{base}/?load={n}{route}"));
    ready(c, section);
}

/// The overview's rows, read in one go (the page refreshes itself): name → (state,
/// changes, warehouse rows, quarantined), in the order shown.
fn overview_rows(c: &Browser) -> Vec<(String, String, u64, u64, u64)> {
    let rows = c.execute(
        "return [...document.querySelectorAll('tr[data-table]')].map(tr => [tr.dataset.table, tr.dataset.state,
           tr.querySelector('[data-field=changes]').textContent,
           tr.querySelector('[data-field=rows]').textContent,
           tr.querySelector('[data-field=quarantined]').textContent])",
        vec![],
    );
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let t = |i: usize| r[i].as_str().unwrap().to_string();
            (t(0), t(1), count(&t(2)), count(&t(3)), count(&t(4)))
        })
        .collect()
}

/// A number as the console prints it ("1,234").
fn count(text: &str) -> u64 {
    text.replace(',', "")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("`{text}` is not a count"))
}

/// Each order's latest (status, amount, coupon) by id.
type Orders = BTreeMap<i64, (String, String, Option<String>)>;

/// Day 1: 60 orders over four statuses; day 2: a `coupon` column, 10 orders changed and 5 new.
fn orders() -> (String, String, Orders) {
    let mut current = BTreeMap::new();
    let mut day1 = String::from("id,status,amount\n");
    for id in 1..=60i64 {
        let status = STATUSES[(id * 7 % 4) as usize];
        let amount = format!("{}.{:02}", id * 3, id % 100);
        day1 += &format!("{id},{status},{amount}\n");
        current.insert(id, (status.to_string(), amount, None));
    }
    let mut day2 = String::from("id,status,amount,coupon\n");
    for id in (5..=50i64).step_by(5).chain(61..=65) {
        let status = STATUSES[(id % 4) as usize];
        let amount = format!("{}.50", id * 4);
        let coupon = format!("C{id}");
        day2 += &format!("{id},{status},{amount},{coupon}\n");
        current.insert(id, (status.to_string(), amount, Some(coupon)));
    }
    (day1, day2, current)
}

#[test]
fn the_console_shows_tables_accepts_a_halted_schema_change_and_charts_sql() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[sources.shop]
kind = "files"
url = "orders/{date}/"
format = "csv"
table = "orders"
schema_changes = "halt"
schedule = "0 0 1 1 *"
[sources.shop.tables.orders]
primary_key = ["id"]

[sources.crm]
kind = "files"
url = "customers/"
format = "csv"
table = "customers"
schedule = "0 0 1 1 *"
[sources.crm.tables.customers]
primary_key = ["id"]

[serve]
listen = "127.0.0.1:0"
token = { env = "SLUICE_TEST_TOKEN" }
"#,
    );
    let (day1, day2, expected) = orders();
    sb.write("orders/20260101/a.csv", &day1);
    let customers: String = (1..=23)
        .map(|i| format!("{i},name {i}\n"))
        .fold("id,name\n".to_string(), |a, l| a + &l);
    sb.write("customers/c.csv", &customers);
    sb.ok(&["sync"]);

    let serving = Serving::start_with(&sb, &[], &[("SLUICE_TEST_TOKEN", TOKEN)]);
    let base = format!("http://{}", serving.addr());
    let downloads = sb.path("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let c = Browser::start(&downloads);

    // Without the token the page shows no data: it asks for the token, and the API refuses
    // the console's actions.
    c.goto(&format!("{base}/"));
    ready(&c, "error");
    let login_hidden = c.execute("return document.getElementById('login').hidden", vec![]);
    assert_eq!(login_hidden, false, "the token form shows");
    assert!(c.find_all("tr[data-table]").is_empty());
    for action in [
        "/api/tables/shop.orders/sync",
        "/api/tables/shop.orders/schema/accept",
        "/api/tables/shop.orders/checks/accept",
    ] {
        let status = c.execute(
            "return fetch(arguments[0], {method: 'POST'}).then(r => r.status)",
            vec![json!(action)],
        );
        assert_eq!(status, 401, "{action} without the token");
    }
    assert!(
        !c.source().contains(TOKEN),
        "the page never holds the token"
    );
    screenshot(&c, "login");

    // With the token: the overview lists both tables with what the files hold.
    c.type_into("#token", TOKEN);
    c.execute("document.body.dataset.ready = ''", vec![]);
    c.click("#login button");
    ready(&c, "overview");
    assert!(
        !c.source().contains(TOKEN),
        "the token is not written into the page"
    );
    let mut want = vec![
        ("crm.customers".to_string(), "idle".to_string(), 23, 23, 0),
        ("shop.orders".to_string(), "idle".to_string(), 60, 60, 0),
    ];
    assert_eq!(
        overview_rows(&c),
        want,
        "name, state, changes in the lake, warehouse rows, quarantined"
    );
    screenshot(&c, "overview");

    // Day 2 brings a column: "Sync now" lands it, and the halt policy stops the table.
    sb.write("orders/20260102/a.csv", &day2);
    open(&c, &base, "#/table/shop.orders", "overview");
    c.click("#sync-now");
    let started = Instant::now();
    loop {
        open(&c, &base, "#/table/shop.orders", "overview");
        if !c.find_all("[data-action=accept-schema]").is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the table did not halt: {}",
            serving.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let diff = c.text("[data-target='shop.orders'] .diff");
    assert!(
        diff.contains("coupon"),
        "the diff names the new column: {diff}"
    );
    screenshot(&c, "table-halted");

    // The overview (computed at most every 2 s) puts the halted table first, its new
    // changes in the lake already.
    want.swap(0, 1);
    want[0].1 = "halted".into();
    want[0].2 = 75;
    let started = Instant::now();
    loop {
        open(&c, &base, "#/", "overview");
        let shown = overview_rows(&c);
        if shown == want {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{shown:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let halted = c.execute(
        "return document.querySelector('[data-count=halted] b').textContent",
        vec![],
    );
    assert_eq!(halted, "1");
    screenshot(&c, "overview-halted");

    // Accept: the change applies and the backlog loads.
    open(&c, &base, "#/table/shop.orders", "overview");
    c.execute("document.body.dataset.ready = ''", vec![]);
    c.click("[data-action=accept-schema]");
    ready(&c, "overview");
    let said = c.text("#notice");
    assert!(said.contains("accepted"), "{said}");
    assert!(c.find_all("[data-action=accept-schema]").is_empty());
    let rows = count(&c.text("[data-target='shop.orders'] [data-field=rows]"));
    assert_eq!(rows, expected.len() as u64);
    screenshot(&c, "table");

    // The run history: every run, the Accept's load newest, and filtered to the halted
    // one, which says why.
    open(&c, &base, "#/runs", "runs");
    let all = outcomes(&c);
    assert!(all.len() >= 4, "{all:?}");
    assert!(all.contains(&"halted".to_string()), "{all:?}");
    let newest = c.execute(
        "const tr = document.querySelector('tr[data-outcome]'); return [tr.cells[1].textContent, tr.cells[2].textContent, tr.dataset.outcome, tr.cells[5].textContent]",
        vec![],
    );
    assert_eq!(
        newest,
        json!(["shop.orders", "accept", "ok", "15"]),
        "the Accept's load is a run: 15 changes loaded"
    );
    open(&c, &base, "#/runs?outcome=halted", "runs");
    let halted = outcomes(&c);
    assert!(
        !halted.is_empty() && halted.iter().all(|o| o == "halted"),
        "{halted:?}"
    );
    let why = c.text("tr[data-outcome=halted]");
    assert!(why.contains("coupon"), "the run says why: {why}");
    screenshot(&c, "runs");

    // The SQL workbench: a grouped query's rows, one bar per group, and the same as CSV.
    let sql = "SELECT status, count(*) AS n, sum(amount) AS total FROM shop.orders GROUP BY status ORDER BY status";
    let mut groups: BTreeMap<&str, u64> = BTreeMap::new();
    for (status, _, _) in expected.values() {
        *groups.entry(status.as_str()).or_default() += 1;
    }
    let want: Vec<(String, u64)> = groups.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    open(&c, &base, "#/sql", "sql");
    c.type_into("#sql", sql);
    c.click("#run-sql");
    c.find("#result-grid");
    let shown = c.execute(
        "return [...document.querySelectorAll('#result-grid tbody tr')].map(tr => [...tr.cells].map(td => td.textContent))",
        vec![],
    );
    let shown: Vec<(String, u64)> = shown
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_string(),
                count(r[1].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(shown, want);
    c.click("#chart-bar");
    assert_eq!(
        c.find_all("#chart rect.bar").len(),
        groups.len(),
        "one bar per group"
    );
    screenshot(&c, "sql");

    c.click("#download-csv");
    let file = downloads.join("query.csv");
    let started = Instant::now();
    while !file.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no CSV downloaded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300)); // written whole
    let csv = std::fs::read_to_string(&file).unwrap();
    let cli = sb.ok(&["query", "--format", "csv", sql]);
    assert_eq!(
        csv.trim_end(),
        cli.trim_end(),
        "the download is the query's result"
    );
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("status,n,total"));
    let counted: Vec<(String, u64)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1].parse().unwrap())
        })
        .collect();
    assert_eq!(counted, want);

    // The grid's answer counts the whole result and sends at most max_rows of it.
    let (code, body) = common::serve::http(
        &base["http://".len()..],
        "POST",
        "/api/query",
        Some(TOKEN),
        Some(&json!({ "sql": sql, "format": "table", "max_rows": 2 }).to_string()),
    );
    assert_eq!(code, 200, "{body}");
    let grid: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(grid["row_count"], groups.len());
    assert_eq!(grid["truncated"], true);
    assert_eq!(grid["rows"].as_array().unwrap().len(), 2);
    assert_eq!(grid["columns"][0]["name"], "status");
    assert_eq!(grid["rows"][0]["status"], want[0].0);
    drop(c);
    serving.terminate(Duration::from_secs(30));

    // The warehouse has the accepted column, and every row equals the files' latest.
    let got = sb.duck(
        "SELECT CAST(id AS VARCHAR), status, CAST(amount AS VARCHAR), coupon FROM shop.orders ORDER BY id",
    );
    let number = |a: &str| a.parse::<f64>().unwrap().to_string();
    let got: Vec<Vec<Option<String>>> = got
        .into_iter()
        .map(|mut r| {
            r[2] = r[2].as_deref().map(number);
            r
        })
        .collect();
    let want: Vec<Vec<Option<String>>> = expected
        .iter()
        .map(|(id, (status, amount, coupon))| {
            vec![
                s(&id.to_string()),
                s(status),
                s(&number(amount)),
                coupon.clone(),
            ]
        })
        .collect();
    assert_eq!(got, want);
}

fn outcomes(c: &Browser) -> Vec<String> {
    let found = c.execute(
        "return [...document.querySelectorAll('tr[data-outcome]')].map(tr => tr.dataset.outcome)",
        vec![],
    );
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .collect()
}
