//! The lake and a files source on S3, against a local S3-compatible server (moto) on
//! 127.0.0.1: data lands, positions hold across reruns, and server-side encryption is
//! requested on every object sluice writes (seed 001: encrypted at rest).

mod common;

use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::moto::{http, start_moto, AWS_ENV};
use common::{s, Sandbox};

/// A config with the lake at `lake` and the supplier drops on the S3 endpoint at `port`
/// (`extra` goes into the `[lake]` table).
fn s3_config(sb: &Sandbox, port: u16, lake: &str, extra: &str) {
    sb.config(&format!(
        r#"
[lake]
url = "{lake}"
endpoint = "http://127.0.0.1:{port}"
region = "us-east-1"
{extra}

[sources.sup]
kind = "files"
url = "s3://drops/supplier/{{date}}/"
table = "supplier"
columns = ["id bigint", "name text", "bal decimal(15,2)"]
[sources.sup.tables.supplier]
primary_key = ["id"]
"#
    ));
}

/// Asserts a command succeeded, showing its output if not.
fn succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn s3_lake_and_s3_files_with_kms_encryption() {
    let moto = start_moto();
    let p = moto.port;
    assert_eq!(http(p, "PUT", "/lake", b"").0, 200);
    assert_eq!(http(p, "PUT", "/drops", b"").0, 200);
    let day1 = "1|a|1.50|\n2|b|2.25|\n";
    let day2 = "3|c|-3.00|\n";
    assert_eq!(
        http(
            p,
            "PUT",
            "/drops/supplier/20240101/part-0.tbl",
            day1.as_bytes()
        )
        .0,
        200
    );

    let sb = Sandbox::new();
    s3_config(
        &sb,
        p,
        "s3://lake/warehouse-lake",
        "sse = \"aws:kms\"\nsse_kms_key_id = \"alias/sluice-test\"",
    );
    let env = AWS_ENV;
    let sync = |sb: &Sandbox| -> serde_json::Value {
        let out = sb.run(&["--json", "sync"], &env);
        succeeded(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let r = sync(&sb);
    assert_eq!(r["tables"][0]["extract"]["rows"], 2, "{r}");
    assert_eq!(
        sync(&sb)["tables"][0]["extract"]["files"],
        0,
        "a rerun reads nothing"
    );
    assert_eq!(
        http(
            p,
            "PUT",
            "/drops/supplier/2024-01-02/part-0.tbl",
            day2.as_bytes()
        )
        .0,
        200
    );
    assert_eq!(sync(&sb)["tables"][0]["extract"]["files"], 1);
    assert_eq!(
        sb.duck("SELECT id::VARCHAR, name, bal::VARCHAR FROM sup.supplier ORDER BY id"),
        vec![
            vec![s("1"), s("a"), s("1.50")],
            vec![s("2"), s("b"), s("2.25")],
            vec![s("3"), s("c"), s("-3.00")]
        ]
    );

    // Athena's view of the lake: a symlink manifest beside the table (checked against the
    // Delta log below) and the DDL over it.
    let out = sb.run(&["expose", "--athena"], &env);
    succeeded(&out);
    let ddl = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        ddl.contains("CREATE EXTERNAL TABLE `lake_sup`.`supplier__changes`")
            && ddl.contains(
                "LOCATION 's3://lake/warehouse-lake/changes/sup/supplier/_symlink_format_manifest/'"
            )
            && ddl.contains("CREATE OR REPLACE VIEW \"lake_sup\".\"supplier\"")
            && ddl.contains("ADD IF NOT EXISTS PARTITION (`_sluice_ingest_date`=")
            && ddl.contains("symlink manifest(s) written"),
        "{ddl}"
    );

    // The crawler reads the same drops on S3 (through the config's endpoint): the date
    // folders are a partition typed as dates, the headerless columns typed from the files.
    let out = sb.run(&["--json", "crawl", "s3://drops/supplier/"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crawl: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(crawl["files"], 2, "{crawl}");
    let types: Vec<(String, String)> = crawl["schema"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            ("c1", "bigint"),
            ("c2", "text"),
            ("c3", "decimal(18,2)"),
            ("partition_0", "date")
        ]
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .to_vec(),
        "{crawl}"
    );

    // The Delta log and data files sluice wrote carry SSE-KMS with the configured key (read
    // with boto3, which moto installs: SSE-KMS objects need signed requests).
    let script = format!(
        r#"
import boto3, json
c = boto3.client("s3", endpoint_url="http://127.0.0.1:{p}", region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test")
out = []
for o in c.list_objects_v2(Bucket="lake", Prefix="warehouse-lake/changes/sup/supplier/")["Contents"]:
    h = c.head_object(Bucket="lake", Key=o["Key"])
    out.append([o["Key"], h.get("ServerSideEncryption"), h.get("SSEKMSKeyId")])
table = "warehouse-lake/changes/sup/supplier/"
get = lambda key: c.get_object(Bucket="lake", Key=key)["Body"].read().decode()
manifest = []
for o in out:
    if o[0].startswith(table + "_symlink_format_manifest/") and o[0].endswith("/manifest"):
        manifest += get(o[0]).splitlines()
adds = []
for key in sorted(o[0] for o in out if o[0].startswith(table + "_delta_log/") and o[0].endswith(".json")):
    for line in get(key).splitlines():
        action = json.loads(line)
        if "add" in action:
            adds.append("s3://lake/" + table + action["add"]["path"])
        assert "remove" not in action
print(json.dumps({{"objects": out, "manifest": manifest, "adds": adds}}))
"#
    );
    let py = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let listing: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let objects: Vec<(String, Option<String>, Option<String>)> =
        serde_json::from_value(listing["objects"].clone()).unwrap();
    // The manifest lists exactly the data files the Delta log added, and is encrypted like
    // every other object (the loop below).
    let mut manifest: Vec<String> = serde_json::from_value(listing["manifest"].clone()).unwrap();
    let mut adds: Vec<String> = serde_json::from_value(listing["adds"].clone()).unwrap();
    manifest.sort();
    adds.sort();
    assert_eq!(adds.len(), 2, "{listing}");
    assert_eq!(manifest, adds);
    assert!(
        objects.iter().any(|o| o
            .0
            .contains("_symlink_format_manifest/_sluice_ingest_date=")),
        "{objects:?}"
    );
    assert!(
        objects.iter().any(|o| o.0.ends_with(".parquet")),
        "{objects:?}"
    );
    assert!(
        objects
            .iter()
            .any(|o| o.0.ends_with("00000000000000000001.json")),
        "{objects:?}"
    );
    for (key, sse, kms) in &objects {
        assert_eq!(sse.as_deref(), Some("aws:kms"), "{key} not encrypted");
        assert!(
            kms.as_deref()
                .is_some_and(|k| k.contains("alias/sluice-test")),
            "{key}: {kms:?}"
        );
    }
}

/// A TCP proxy in front of the S3 endpoint that can go down: every open connection is cut
/// and new ones are closed on arrival, while the server behind it keeps its objects.
struct Outage {
    port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Outage {
    fn before(upstream: u16) -> Outage {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let (d, o) = (down.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: closed on arrival
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut conns = o.lock().unwrap();
                conns.push(client.try_clone().unwrap());
                conns.push(server.try_clone().unwrap());
                drop(conns);
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Outage { port, down, open }
    }

    fn go_down(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn come_back(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The S3 endpoint of the lake and the drops goes away (connections cut, new ones refused)
/// while the server keeps its objects. A sync during the whole outage fails with an error
/// that names what it could not reach, and the next one lands that day's rows once; an
/// outage shorter than the store's retries is ridden out by the sync it hits.
#[test]
fn an_s3_outage_fails_clearly_or_is_ridden_out_and_every_row_lands_once() {
    let moto = start_moto();
    let proxy = Outage::before(moto.port);
    let (m, p) = (moto.port, proxy.port);
    assert_eq!(http(m, "PUT", "/lake", b"").0, 200);
    assert_eq!(http(m, "PUT", "/drops", b"").0, 200);
    let drop_day = |day: &str, rows: &str| {
        let path = format!("/drops/supplier/{day}/part-0.tbl");
        assert_eq!(http(m, "PUT", &path, rows.as_bytes()).0, 200);
    };
    drop_day("20240101", "1|a|1.50|\n2|b|2.25|\n");
    let sb = Sandbox::new();
    s3_config(&sb, p, "s3://lake/outage-lake", "");
    let env = AWS_ENV;
    let sync = |sb: &Sandbox| sb.run(&["--json", "sync"], &env);
    let ok = succeeded;
    ok(&sync(&sb));

    // Down for the whole run: a clear failure, nothing loaded from day 2.
    drop_day("20240102", "3|c|-3.00|\n");
    proxy.go_down();
    let started = Instant::now();
    let failed = sync(&sb);
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&failed.stderr).to_string();
    assert!(
        !failed.status.success(),
        "a sync without S3 succeeded: {err}"
    );
    assert!(
        err.contains(&format!("127.0.0.1:{p}")) || err.contains("s3://"),
        "the error names neither the endpoint nor the S3 location: {err}"
    );
    eprintln!("failed after {took:?}: {err}");
    let rows = |sb: &Sandbox| {
        sb.duck("SELECT id::VARCHAR, name, bal::VARCHAR FROM sup.supplier ORDER BY id")
    };
    assert_eq!(
        rows(&sb),
        vec![
            vec![s("1"), s("a"), s("1.50")],
            vec![s("2"), s("b"), s("2.25")]
        ]
    );

    // Back: day 2 lands, once.
    proxy.come_back();
    ok(&sync(&sb));
    assert_eq!(rows(&sb).len(), 3);

    // A short outage in the middle of a run is ridden out by the store's retries.
    drop_day("20240103", "4|d|4.00|\n2|b|9.99|\n");
    proxy.go_down();
    let coming_back = std::thread::scope(|scope| {
        let run = scope.spawn(|| sync(&sb));
        std::thread::sleep(Duration::from_secs(2));
        proxy.come_back();
        run.join().unwrap()
    });
    ok(&coming_back);
    assert_eq!(
        rows(&sb),
        vec![
            vec![s("1"), s("a"), s("1.50")],
            vec![s("2"), s("b"), s("9.99")],
            vec![s("3"), s("c"), s("-3.00")],
            vec![s("4"), s("d"), s("4.00")]
        ]
    );
    // Each file's rows are in the change log once.
    let out = sb.run(
        &[
            "--json",
            "query",
            "SELECT count(*) AS n, count(DISTINCT _sluice_seq) AS d FROM sup.supplier__changes",
        ],
        &env,
    );
    ok(&out);
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(log[0]["n"], 5, "{log}");
    assert_eq!(log[0]["d"], 5, "{log}");
}
