//! Test sandbox: a temporary project folder, the real `sluice` binary, and the real DuckDB
//! file it writes, read back as the oracle.
#![allow(dead_code)]

pub mod browser;
pub mod moto;
pub mod serve;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file that was delivered a while ago (modified ten minutes back), as drops
    /// are: sluice waits for files modified within its settle time (see `write_fresh`).
    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.write_fresh(rel, bytes);
        delivered_earlier(&p);
        p
    }

    /// Writes a file modified just now.
    pub fn write_fresh(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    pub fn config(&self, text: &str) {
        self.write("sluice.toml", text);
    }

    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("--config")
            .arg(self.path("sluice.toml"))
            .args(args)
            .current_dir(self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run sluice")
    }

    /// Runs a command that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_env(args, &[])
    }

    /// `ok` with extra environment variables.
    pub fn ok_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.run(args, env);
        assert!(
            out.status.success(),
            "sluice {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `sluice --json sync ARGS`, whatever its outcome: the exit code and the report.
    pub fn sync_code(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = vec!["--json", "sync"];
        all.extend_from_slice(args);
        let out = self.run(&all, &[]);
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), report)
    }

    pub fn sync_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["--json", "sync"])).unwrap()
    }

    pub fn query_lake(&self, sql: &str) -> Vec<serde_json::Value> {
        let out = self.ok(&["--json", "query", sql]);
        match serde_json::from_str(&out).unwrap() {
            serde_json::Value::Array(rows) => rows,
            other => panic!("not an array: {other}"),
        }
    }

    /// Rows of a DuckDB query, every value rendered by DuckDB as text (NULL as None).
    pub fn duck(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        duck_rows(&self.path("warehouse.duckdb"), sql)
    }
}

pub fn duck_rows(db: &Path, sql: &str) -> Vec<Vec<Option<String>>> {
    let conn = duckdb::Connection::open(db).expect("open duckdb");
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut rows = stmt.query([]).unwrap();
    let mut out = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        let n = r.as_ref().column_count();
        out.push(
            (0..n)
                .map(|i| r.get::<_, Option<String>>(i).unwrap())
                .collect(),
        );
    }
    out
}

/// The report of one table in a sync report.
pub fn table_of<'a>(
    report: &'a serde_json::Value,
    source: &str,
    table: &str,
) -> &'a serde_json::Value {
    report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["source"] == source && t["table"] == table)
        .unwrap_or_else(|| panic!("no {source}.{table} in {report}"))
}

/// `Some("x")` shorthand for expected rows.
/// Marks a file as modified ten minutes back (a drop delivered a while ago).
pub fn delivered_earlier(p: &Path) {
    let earlier = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    std::fs::File::options()
        .write(true)
        .open(p)
        .and_then(|f| f.set_modified(earlier))
        .unwrap();
}

pub fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}
pub mod mariadb;
pub mod mongo;
pub mod postgres;

/// A CA and a server certificate for 127.0.0.1, made with the openssl CLI.
pub fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ca = |key: &str, pem: &str, subject: &str| {
        run(&[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", pem, "-days",
            "2", "-subj", subject,
        ])
    };
    ca("ca.key", "ca.pem", "/CN=sluice test CA");
    ca("other.key", "other-ca.pem", "/CN=another CA");
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}
