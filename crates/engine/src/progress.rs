//! Progress on long work: rows and rows/s on one rewritten stderr line when stderr is a
//! terminal; silent otherwise (pipes, CI, `--json`).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    enabled: bool,
    label: String,
    rows: u64,
    started: Instant,
    last_draw: Instant,
}

impl Progress {
    pub fn new(enabled: bool, label: impl Into<String>) -> Progress {
        let now = Instant::now();
        Progress {
            enabled: enabled && std::io::stderr().is_terminal(),
            label: label.into(),
            rows: 0,
            started: now,
            last_draw: now,
        }
    }

    pub fn add(&mut self, rows: u64) {
        self.rows += rows;
        if self.enabled && self.last_draw.elapsed() >= Duration::from_millis(250) {
            self.last_draw = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(1e-9);
            let _ = write!(
                std::io::stderr(),
                "\r\x1b[2K{}: {} rows, {:.0} rows/s",
                self.label,
                self.rows,
                self.rows as f64 / secs
            );
        }
    }

    pub fn finish(&mut self) {
        if self.enabled && self.rows > 0 {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
