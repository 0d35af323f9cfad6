//! Headless Chromium for the console's tests, driven by ChromeDriver over the W3C WebDriver
//! protocol (JSON over HTTP, sent with curl as the serve helpers send theirs). Debian's
//! `chromium` and `chromium-driver`; `scripts/test.sh` installs them when missing.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// The key W3C WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A Chromium session; the browser and ChromeDriver stop when dropped.
pub struct Browser {
    driver: Child,
    base: String,
}

impl Browser {
    /// Starts ChromeDriver on a free port and a headless Chromium session that saves
    /// downloads into `downloads`.
    pub fn start(downloads: &Path) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver: scripts/test.sh installs it)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
        };
        let session = browser.call(
            "POST",
            "/session",
            Some(json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1360,1000", "--lang=en-US"],
                    "prefs": {
                        "download.default_directory": downloads.to_str().unwrap(),
                        "download.prompt_for_download": false,
                    },
                },
            }}})),
        );
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"));
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    /// One WebDriver command: its `value`, or a panic with the driver's error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut c = Command::new("curl");
        c.args(["-s", "-S", "--max-time", "120", "-X", method]);
        if let Some(b) = body {
            c.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &b.to_string(),
            ]);
        }
        let out = c
            .arg(format!("{}{path}", self.base))
            .output()
            .expect("curl");
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: {e}: {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let value = reply["value"].clone();
        if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
            panic!("{method} {path}: {error}: {}", value["message"]);
        }
        value
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns what it
    /// returns; a returned Promise is waited for.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// The elements `css` selects now.
    pub fn find_all(&self, css: &str) -> Vec<String> {
        self.call(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[ELEMENT].as_str().unwrap().to_string())
        .collect()
    }

    /// The first element `css` selects, waited for up to 30 s.
    pub fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(e) = self.find_all(css).into_iter().next() {
                return e;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nothing on the page matches {css}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A real click (the browser's pointer, as a user's) on the first match of `css`.
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    /// Types `text` into the first match of `css`, after emptying it.
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// The rendered text of the first match of `css`.
    pub fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call("GET", &format!("/element/{e}/text"), None)
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The page's HTML now.
    pub fn source(&self) -> String {
        self.call("GET", "/source", None)
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap())
            .unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = Command::new("curl")
            .args(["-s", "--max-time", "10", "-X", "DELETE", &self.base])
            .output();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
