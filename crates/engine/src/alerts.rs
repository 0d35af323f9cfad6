//! Alerts: webhook POSTs when a table's run fails, a schema change or a check halts it, a
//! data-quality check fails, it falls behind its freshness target (`max_lag_secs`), and when
//! it recovers from any of these. One alert
//! per condition while it lasts (a table failing every minute alerts once, then once more on
//! recovery). Delivery runs beside the pipeline: raising an alert never waits on the network,
//! and a delivery that fails is tried again with doubling waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;

use sluice_core::config::AlertConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// A run of the table failed.
    Failure,
    /// A schema change halted the table (`sluice schema accept`).
    Halted,
    /// The table is further behind its source than `max_lag_secs`.
    Freshness,
    /// A data-quality check failed (warn or quarantine; a halting one raises `Halted`).
    Check,
}

/// What a webhook receives (format `json`).
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// `failure`, `halted`, `freshness`, `check` or `recovery`.
    pub kind: &'static str,
    /// For a recovery: the condition that ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    pub source: String,
    pub table: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

impl Alert {
    /// One line for chat (format `slack`).
    fn text(&self) -> String {
        format!(
            "sluice {}: {}.{}: {}",
            self.kind, self.source, self.table, self.message
        )
    }
}

#[derive(Debug, Clone)]
struct Target {
    url: String,
    slack: bool,
}

/// A condition of one table: (condition, source, table).
type Held = (Condition, String, String);

/// Raises and clears conditions; cheap to clone.
#[derive(Clone)]
pub struct Alerts {
    sender: Option<mpsc::UnboundedSender<Alert>>,
    /// Conditions in force, with the time they were raised.
    active: Arc<Mutex<HashMap<Held, DateTime<Utc>>>>,
}

impl Alerts {
    /// Starts delivery to the configured webhooks (none: conditions are tracked, nothing sent).
    pub fn start(configs: &[AlertConfig]) -> Alerts {
        let targets: Vec<Target> = configs
            .iter()
            .map(|c| Target {
                url: c.webhook.clone(),
                slack: c.format.as_deref() == Some("slack"),
            })
            .collect();
        let sender = (!targets.is_empty()).then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(deliver(rx, targets));
            tx
        });
        Alerts {
            sender,
            active: Arc::default(),
        }
    }

    /// `condition` holds for the table: alerts once, until it is cleared.
    pub fn raise(&self, condition: Condition, source: &str, table: &str, message: &str) {
        let key = (condition, source.to_string(), table.to_string());
        {
            let mut active = self.active.lock().expect("alerts");
            if active.contains_key(&key) {
                return;
            }
            active.insert(key, Utc::now());
        }
        let kind = match condition {
            Condition::Failure => "failure",
            Condition::Halted => "halted",
            Condition::Freshness => "freshness",
            Condition::Check => "check",
        };
        tracing::warn!(source, table, kind, message, "alert");
        self.send(Alert {
            kind,
            condition: None,
            source: source.to_string(),
            table: table.to_string(),
            message: message.to_string(),
            at: Utc::now(),
        });
    }

    /// `condition` no longer holds: a recovery alert if it had been raised.
    pub fn clear(&self, condition: Condition, source: &str, table: &str) {
        let key = (condition, source.to_string(), table.to_string());
        let Some(since) = self.active.lock().expect("alerts").remove(&key) else {
            return;
        };
        let secs = (Utc::now() - since).num_seconds();
        tracing::info!(source, table, ?condition, secs, "recovered");
        self.send(Alert {
            kind: "recovery",
            condition: Some(condition),
            source: source.to_string(),
            table: table.to_string(),
            message: format!("{condition:?} ended after {secs} s").to_lowercase(),
            at: Utc::now(),
        });
    }

    /// Conditions in force now, for the API.
    pub fn active(&self) -> Vec<Held> {
        let mut v: Vec<_> = self
            .active
            .lock()
            .expect("alerts")
            .keys()
            .cloned()
            .collect();
        v.sort_by(|a, b| (&a.1, &a.2).cmp(&(&b.1, &b.2)));
        v
    }

    fn send(&self, alert: Alert) {
        if let Some(tx) = &self.sender {
            let _ = tx.send(alert);
        }
    }
}

/// How often a delivery is tried, and the first wait (doubling).
const TRIES: u32 = 6;
const FIRST_WAIT: Duration = Duration::from_millis(500);

/// Sends each alert to every target, each delivery on its own task so a slow or dead
/// receiver holds up no other.
async fn deliver(mut rx: mpsc::UnboundedReceiver<Alert>, targets: Vec<Target>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "alerts: no HTTP client; alerts are logged only");
            return;
        }
    };
    while let Some(alert) = rx.recv().await {
        for t in &targets {
            let body = if t.slack {
                serde_json::json!({ "text": alert.text() }).to_string()
            } else {
                serde_json::to_string(&alert).expect("alert serializes")
            };
            tokio::spawn(post(client.clone(), t.url.clone(), body));
        }
    }
}

async fn post(client: reqwest::Client, url: String, body: String) {
    let mut wait = FIRST_WAIT;
    for attempt in 1..=TRIES {
        let sent = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let why = match sent {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => e.to_string(),
        };
        // The URL's path may carry a webhook secret (Slack's do): only its host is logged.
        let host = url::Url::parse(&url)
            .ok()
            .and_then(|u| u.host_str().map(String::from))
            .unwrap_or_default();
        tracing::warn!(webhook_host = %host, attempt, error = %why, "alert delivery failed");
        if attempt < TRIES {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
}
