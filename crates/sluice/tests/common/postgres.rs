//! A private PostgreSQL server for one test: its own data directory (under /tmp, owned by the
//! `postgres` user the server must run as) and port on 127.0.0.1, password authentication over
//! TCP, started from the installed binaries and stopped by pid when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The test server's superuser password (the tests pass it to sluice through the environment).
pub const PASSWORD: &str = "sluice-test-pw";

pub struct PgServer {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
    /// The server's options, to start it again (`restart`).
    options: String,
    _turn: std::sync::MutexGuard<'static, ()>,
}

static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The newest installed server's bin folder (Debian: /usr/lib/postgresql/<major>/bin).
fn pg_bin() -> PathBuf {
    let mut majors: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    majors.sort();
    PathBuf::from(format!(
        "/usr/lib/postgresql/{}/bin",
        majors.last().expect("a PostgreSQL major version")
    ))
}

fn as_postgres(bin: &Path, tool: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
    c
}

fn check(what: &str, out: std::process::Output) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgServer {
    /// Starts a server; `tls` = a folder with server.pem/server.key (made by `make_certs`).
    pub fn start(tls: Option<&Path>) -> PgServer {
        let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg-")
            .tempdir_in("/tmp")
            .expect("tempdir")
            .keep();
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        let chown = |p: &Path| {
            check(
                "chown",
                Command::new("chown")
                    .args(["-R", "postgres:"])
                    .arg(p)
                    .output()
                    .unwrap(),
            )
        };
        chown(&dir);
        check(
            "initdb",
            as_postgres(&bin, "initdb")
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ])
                .args(["-E", "UTF8", "--locale=C.UTF-8"])
                .arg(format!("--pwfile={}", pwfile.display()))
                .output()
                .expect("initdb"),
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=64MB",
            dir.display()
        );
        if let Some(certs) = tls {
            // The server reads its key as postgres, and insists the key is private.
            for f in ["server.pem", "server.key"] {
                std::fs::copy(certs.join(f), data.join(f)).unwrap();
            }
            chown(&data);
            Command::new("chmod")
                .arg("600")
                .arg(data.join("server.key"))
                .status()
                .unwrap();
            options += " -c ssl=on -c ssl_cert_file=server.pem -c ssl_key_file=server.key";
            // TCP only over TLS: a connection that gets in was encrypted.
            let hba = data.join("pg_hba.conf");
            let text = std::fs::read_to_string(&hba).unwrap();
            let text: String = text
                .lines()
                .map(|l| match l.strip_prefix("host ") {
                    Some(rest) => format!("hostssl {rest}\n"),
                    None => format!("{l}\n"),
                })
                .collect();
            std::fs::write(&hba, text).unwrap();
        }
        let pg = PgServer {
            port,
            dir,
            bin,
            options,
            _turn: turn,
        };
        pg.pg_ctl(&["-w", "-t", "60", "-o", &pg.options, "start"]);
        pg.sql("postgres", "CREATE DATABASE wh");
        let deadline = Instant::now() + Duration::from_secs(10);
        while pg.try_sql("wh", "SELECT 1").is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        pg
    }

    fn pg_ctl(&self, args: &[&str]) {
        check(
            "pg_ctl",
            as_postgres(&self.bin, "pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .args(args)
                .stdout(Stdio::null())
                .output()
                .expect("pg_ctl"),
        );
    }

    /// Stops the server at once (`-m immediate`: no shutdown checkpoint, as a crash).
    pub fn crash(&self) {
        self.pg_ctl(&["-w", "-m", "immediate", "stop"]);
    }

    /// Starts the server again on its data and port.
    pub fn restart(&self) {
        self.pg_ctl(&["-w", "-t", "60", "-o", &self.options, "start"]);
    }

    /// The URL sluice is given (the password comes from the environment).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/wh", self.port)
    }

    /// A `[warehouses.NAME]` section loading into this server: its password written as
    /// `password` (`{ env = "PGWH_PASSWORD" }`, or another place), then the `extra` lines
    /// (TLS settings, say).
    pub fn warehouse_section(&self, name: &str, password: &str, extra: &str) -> String {
        format!(
            "\n[warehouses.{name}]\nkind = \"postgres\"\nurl = \"{}\"\npassword = {password}\n{extra}\n",
            self.url()
        )
    }

    /// Runs SQL (fed on stdin) in `database` with psql over TCP (password auth).
    pub fn try_sql(&self, database: &str, sql: &str) -> Result<String, String> {
        use std::io::Write;
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", database])
            .env("PGPASSWORD", PASSWORD)
            .env("PGSSLMODE", "prefer")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(sql.as_bytes())?;
                c.wait_with_output()
            })
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn sql(&self, database: &str, sql: &str) -> String {
        self.try_sql(database, sql)
            .unwrap_or_else(|e| panic!("PostgreSQL: {e}\nin: {sql}"))
    }

    /// Rows of a query in database `wh`, tab-separated fields; NULL is shown as `\N`.
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.sql("wh", &format!("\\pset null '\\\\N'\n{sql}"))
            .lines()
            .map(|l| {
                l.split('\t')
                    .map(|f| (f != "\\N").then(|| f.to_string()))
                    .collect()
            })
            .collect()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Fast shutdown by pid (the first line of postmaster.pid).
        if let Ok(pidfile) = std::fs::read_to_string(self.dir.join("data/postmaster.pid")) {
            if let Some(pid) = pidfile.lines().next() {
                let _ = Command::new("kill").args(["-INT", pid]).status();
                let deadline = Instant::now() + Duration::from_secs(20);
                while self.dir.join("data/postmaster.pid").exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
