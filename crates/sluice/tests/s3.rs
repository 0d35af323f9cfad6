//! The lake and a files source on S3, against a local S3-compatible server (moto) on
//! 127.0.0.1: data lands, positions hold across reruns, and server-side encryption is
//! requested on every object sluice writes (seed 001: encrypted at rest).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{s, Sandbox};

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server must be installed (pip install \"moto[server]\"); scripts/test.sh installs it");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto { child, port }
}

/// A minimal HTTP/1.1 request (moto accepts unsigned requests); returns (status, headers).
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(body).unwrap();
    let mut resp = Vec::new();
    c.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    let headers = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    (status, headers)
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
    sb.config(&format!(
        r#"
[lake]
url = "s3://lake/warehouse-lake"
endpoint = "http://127.0.0.1:{p}"
region = "us-east-1"
sse = "aws:kms"
sse_kms_key_id = "alias/sluice-test"

[sources.sup]
kind = "files"
url = "s3://drops/supplier/{{date}}/"
table = "supplier"
columns = ["id bigint", "name text", "bal decimal(15,2)"]
[sources.sup.tables.supplier]
primary_key = ["id"]
"#
    ));
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let sync = |sb: &Sandbox| -> serde_json::Value {
        let out = sb.run(&["--json", "sync"], &env);
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
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
print(json.dumps(out))
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
    let objects: Vec<(String, Option<String>, Option<String>)> =
        serde_json::from_slice(&py.stdout).unwrap();
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
