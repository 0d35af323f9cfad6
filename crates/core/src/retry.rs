//! What an error means for the next attempt, and the one policy that acts on it. Sources
//! and warehouses say which kind each of their errors is (from the server's error code, never
//! its text); `sync` reports it and `serve` retries by it.

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The network, a timeout, a server restarting, a lock or deadlock: the same call may
    /// succeed later.
    Transient,
    /// Configuration, credentials, a missing object, data sluice cannot take: retrying
    /// changes nothing until someone does.
    Fatal,
    /// The source no longer holds the position capture must resume from (a purged binlog):
    /// only a new snapshot of the table helps.
    PositionLost,
    /// A schema change waits for a decision (the gate's `schema accept`, or a re-snapshot).
    Schema,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Fatal => "fatal",
            ErrorKind::PositionLost => "position lost",
            ErrorKind::Schema => "schema",
        })
    }
}

/// How transient failures are retried: waits doubling from `first` up to `longest`, at most
/// `attempts` retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first: Duration,
    pub longest: Duration,
    pub attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first: Duration::from_secs(1),
            longest: Duration::from_secs(300),
            attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// How long to wait before retry `attempt` (1 after the first failure) of something that
    /// failed with `kind`; None: do not retry (it is not transient, or the retries are spent).
    pub fn wait(&self, kind: ErrorKind, attempt: u32) -> Option<Duration> {
        if kind != ErrorKind::Transient || attempt == 0 || attempt > self.attempts {
            return None;
        }
        let doubled = self
            .first
            .checked_mul(1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX))
            .unwrap_or(self.longest);
        Some(doubled.min(self.longest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_errors_are_retried_with_doubling_waits() {
        let p = RetryPolicy {
            first: Duration::from_secs(2),
            longest: Duration::from_secs(10),
            attempts: 4,
        };
        let waits: Vec<Option<u64>> = (1..=5)
            .map(|a| p.wait(ErrorKind::Transient, a).map(|d| d.as_secs()))
            .collect();
        assert_eq!(waits, [Some(2), Some(4), Some(8), Some(10), None]);
        for kind in [ErrorKind::Fatal, ErrorKind::PositionLost, ErrorKind::Schema] {
            assert_eq!(p.wait(kind, 1), None, "{kind}");
        }
        assert_eq!(p.wait(ErrorKind::Transient, 0), None);
        let long = RetryPolicy { attempts: 100, ..p };
        assert_eq!(
            long.wait(ErrorKind::Transient, 64),
            Some(Duration::from_secs(10))
        );
    }
}
