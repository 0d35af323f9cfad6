//! `sluice serve` as a child process, and its HTTP API through curl.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Sandbox;

/// `sluice serve` started in the sandbox, killed if the test fails before it stops.
pub struct Serving {
    child: Option<Child>,
    /// Where its stderr goes.
    log: std::path::PathBuf,
}

impl Serving {
    pub fn start(sb: &Sandbox) -> Serving {
        Serving::start_with(sb, &[], &[])
    }

    /// Started with more global arguments and environment variables, its API on a free port
    /// (`[serve] listen` set to port 0 unless the config sets it), logging at info (unless
    /// `args` say otherwise). Diagnostics go to a file (a pipe nobody reads while serve runs
    /// would fill and block it).
    pub fn start_with(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Serving {
        Serving::start_as(sb, "serve", args, env)
    }

    /// `start_with`, its log in `NAME.log` (several processes in one sandbox).
    pub fn start_as(sb: &Sandbox, name: &str, args: &[&str], env: &[(&str, &str)]) -> Serving {
        let config = std::fs::read_to_string(sb.path("sluice.toml")).unwrap();
        if !config.contains("[serve]") {
            sb.config(&format!("{config}\n[serve]\nlisten = \"127.0.0.1:0\"\n"));
        }
        let log = sb.path(&format!("{name}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .arg("--config")
            .arg(sb.path("sluice.toml"))
            .args(args.iter().filter(|a| **a != "--lake-only"));
        if !args.contains(&"--log") {
            command.args(["--log", "info"]);
        }
        // `serve`'s own flags go after it.
        let own: Vec<&str> = args
            .iter()
            .copied()
            .filter(|a| *a == "--lake-only")
            .collect();
        let child = command
            .args(["--json", "serve"])
            .args(own)
            .envs(env.iter().copied())
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

    /// The address its API listens on (read from its log).
    pub fn addr(&self) -> String {
        let started = Instant::now();
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = log.lines().find(|l| l.contains("listening")) {
                let at = line
                    .split_once("addr=")
                    .or_else(|| line.split_once("\"addr\":\""))
                    .unwrap_or_else(|| panic!("no address in {line}"))
                    .1;
                return at
                    .split(|c: char| c == '"' || c.is_whitespace())
                    .next()
                    .unwrap()
                    .to_string();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "serve's API did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM; returns the exit code, the summary per source and stderr.
    pub fn terminate(mut self, within: Duration) -> (Option<i32>, serde_json::Value, String) {
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

/// A request to serve's API with curl: (status, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-S",
        "--max-time",
        "60",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = c
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or_else(|| {
        panic!(
            "{method} {path}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code.trim().parse().unwrap(), body.to_string())
}
