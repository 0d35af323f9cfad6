//! A local AWS server (moto) on 127.0.0.1 for the S3 lake and AWS secrets tests: started per
//! test on a free port, stopped when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_moto() -> Moto {
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
    // Ready once it answers a request, not merely accepts a connection.
    while try_http(port, "GET", "/", b"").is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto { child, port }
}

/// The credentials moto accepts.
pub const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
];

/// A minimal HTTP/1.1 request (moto accepts unsigned requests); returns (status, headers).
/// The test's own set-up calls are idempotent: one the fresh server resets is sent again.
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut tries = 0;
    loop {
        match try_http(port, method, path, body) {
            Ok(r) => return r,
            Err(e) if tries < 10 => {
                tries += 1;
                eprintln!("{method} {path}: {e}; sending it again");
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }
}

pub fn try_http(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut c = TcpStream::connect(("127.0.0.1", port))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes())?;
    c.write_all(body)?;
    let mut resp = Vec::new();
    c.read_to_end(&mut resp)?;
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
    Ok((status, headers))
}

impl Moto {
    /// The endpoint the AWS SDK is pointed at (`AWS_ENDPOINT_URL`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs a boto3 script against this server (boto3 comes with moto); `client(name)`
    /// makes a client for a service. Panics with the script's output if it fails.
    pub fn boto3(&self, script: &str) -> String {
        let prelude = format!(
            "import boto3\ndef client(name):\n    return boto3.client(name, endpoint_url='{}', region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')\n",
            self.endpoint()
        );
        let out = Command::new("python3")
            .args(["-c", &format!("{prelude}{script}")])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "boto3 script failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            script
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
