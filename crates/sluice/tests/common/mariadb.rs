//! A private MariaDB server for one test: its own data directory and port on 127.0.0.1,
//! ROW binlog, started from the installed binaries and stopped by pid when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct MariaDb {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
    /// The server's arguments, to start it again (`restart`).
    args: Vec<String>,
    // One test's servers at a time: each test's server and sluice already keep both cores busy.
    _turn: Option<std::sync::MutexGuard<'static, ()>>,
}

static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl MariaDb {
    /// Starts a server with `extra` server options (e.g. `--max-binlog-size=4096`).
    pub fn start(extra: &[&str]) -> MariaDb {
        let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
        Self::start_in_turn(extra, Some(turn))
    }

    /// Two servers for one test (two sources at once).
    pub fn start_two(extra: &[&str]) -> (MariaDb, MariaDb) {
        let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
        let first = Self::start_in_turn(extra, Some(turn));
        let second = Self::start_in_turn(extra, None);
        (first, second)
    }

    fn start_in_turn(extra: &[&str], turn: Option<std::sync::MutexGuard<'static, ()>>) -> MariaDb {
        // Under /tmp: short socket paths, and no surprises with root's home permissions.
        let dir = tempfile::Builder::new()
            .prefix("sluice-mariadb-")
            .tempdir_in("/tmp")
            .expect("tempdir")
            .keep();
        let data = dir.join("data");
        let install = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                &format!("--datadir={}", data.display()),
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .output()
            .expect("mariadb-install-db (apt-get install mariadb-server)");
        assert!(
            install.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&install.stdout),
            String::from_utf8_lossy(&install.stderr)
        );
        let port = free_port();
        let mut args = vec![
            "--no-defaults".to_string(),
            format!("--datadir={}", data.display()),
            "--user=root".into(),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--socket={}", dir.join("sock").display()),
            format!("--pid-file={}", dir.join("pid").display()),
            format!("--log-bin={}", data.join("binlog").display()),
            "--binlog-format=ROW".into(),
            "--binlog-row-metadata=FULL".into(),
            "--server-id=1".into(),
            "--skip-name-resolve".into(),
            "--innodb-buffer-pool-size=64M".into(),
            format!("--log-error={}", dir.join("error.log").display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Self::spawn(&args);
        let db = MariaDb {
            port,
            dir,
            child,
            args,
            _turn: turn,
        };
        db.wait_ready();
        db.client("mysql", "CREATE DATABASE shop")
            .expect("CREATE DATABASE shop");
        db
    }

    fn spawn(args: &[String]) -> Child {
        Command::new("mariadbd")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.client("mysql", "SELECT 1").is_err() {
            assert!(
                Instant::now() < deadline,
                "MariaDB did not start: {}",
                std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server (SIGKILL: a crash, as an outage is) and leaves it down.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on its data, port and binlog, and waits until it answers.
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.args);
        self.wait_ready();
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/shop", self.port)
    }

    /// A `sluice.toml` with this server as source `shop` in `mode`, plus `extra` lines.
    pub fn config(&self, mode: &str, extra: &str) -> String {
        format!(
            "[sources.shop]\nkind = \"mysql\"\nurl = \"{}\"\nmode = \"{mode}\"\n{extra}\n",
            self.url()
        )
    }

    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        self.client("shop", sql)
    }

    fn client(&self, database: &str, sql: &str) -> Result<String, String> {
        use std::io::Write;
        // On stdin: scripts of thousands of statements exceed the argument limit.
        let mut child = Command::new("mariadb")
            .args([
                "--no-defaults",
                "-h127.0.0.1",
                &format!("-P{}", self.port),
                "-uroot",
                "--batch",
                "--skip-column-names",
                "--default-character-set=utf8mb4",
                database,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(sql.as_bytes()).map_err(|e| e.to_string())?;
        drop(stdin);
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs SQL in database `shop`; panics with the server's message on failure.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql).unwrap_or_else(|e| {
            let shown: String = sql.chars().take(300).collect();
            panic!("MariaDB: {e}\nin: {shown}")
        })
    }

    /// Rows of a query, tab-separated fields, `NULL` as None.
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.sql(sql)
            .lines()
            .map(|l| {
                l.split('\t')
                    .map(|f| (f != "NULL").then(|| unescape(f)))
                    .collect()
            })
            .collect()
    }
}

/// The batch output's escapes: `\t`, `\n`, `\\`, `\0`.
fn unescape(f: &str) -> String {
    let mut out = String::new();
    let mut it = f.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some('0') => out.push('\0'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `types` table: every MySQL type at its edges, and how to render each column as the
/// same text in MariaDB and in DuckDB.
pub const TYPES_DDL: &str = "CREATE TABLE types (
  id INT PRIMARY KEY,
  ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED,
  mi MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
  d1 DECIMAL(15,2), d2 DECIMAL(65,30), f FLOAT, dbl DOUBLE,
  b1 BIT(1), b12 BIT(12),
  c CHAR(5), vc VARCHAR(100), tx TEXT, l1 VARCHAR(20) CHARACTER SET latin1,
  bn BINARY(4), vb VARBINARY(10), bl BLOB,
  dt DATE, dtm DATETIME(6), ts TIMESTAMP(6) NULL, tm TIME(6), yr YEAR,
  js JSON, en ENUM('Small','it''s','x,y'), st SET('a','B','c'), g GEOMETRY
) DEFAULT CHARSET=utf8mb4";

pub const EDGE_ROWS: &str = "
(1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
 -9223372036854775808, 18446744073709551615,
 -9999999999999.99, 12345678901234567890123456789012345.123456789012345678901234567890,
 -1.5, 2.5e-300, b'1', b'101010111100',
 'ab', 'naïve 🚀 emoji', 'line1\nline2\ttab \\\\ back', 'café',
 'ab', x'00ff00', x'deadbeef',
 '1000-01-01', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999', '-838:59:59.000000', 2155,
 '{\"a\": [1, 2.50, null], \"b\": {\"c\": \"d\"}}', 'it''s', 'a,B', ST_GeomFromText('POINT(1 2)')),
(2, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0,
 9999999999999.99, -0.000000000000000000000000000001,
 3.25, -1.7976931348623157e308, b'0', b'000000000001',
 '', '', '', '',
 x'00000000', x'', x'',
 '0000-00-00', '2024-02-29 12:00:00.000001', '1970-01-01 00:00:01.000000', '838:59:59.999999', 0,
 '[]', 'Small', '', ST_GeomFromText('LINESTRING(0 0, 1 1)')),
(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)";
