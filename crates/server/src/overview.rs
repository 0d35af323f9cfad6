//! What the console shows: every table's state in one answer (`GET /api/overview`), one
//! table in full (`GET /api/tables/{name}`), and lag sampled over time.
//!
//! The overview is computed at most once per [`FRESH_FOR`] however many consoles poll it,
//! in the background once the first is there: on 1,000 tables it opens every lake log and
//! counts every warehouse table (about 20 s here), which no page load should wait for.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use sluice_engine::serve::Serving;
use sluice_engine::state::{RunFilter, RunRecord};
use sluice_engine::status::{StatusOptions, TableStatus};
use sluice_engine::EngineError;

/// How long a computed overview is served before it is computed again.
const FRESH_FOR: Duration = Duration::from_secs(2);
/// How often lag is sampled, and how many samples each table keeps (an hour).
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const SAMPLES_KEPT: usize = 360;
/// Runs a table page shows.
const TABLE_RUNS: usize = 50;
/// Quarantined records a table page shows.
const QUARANTINE_SHOWN: usize = 100;

/// A table's state, worst first (the overview sorts problems to the top).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Halted,
    Failed,
    Running,
    Idle,
}

#[derive(Debug, Serialize)]
pub struct TableRow {
    pub name: String,
    pub state: State,
    /// Seconds the lake is behind its source (known once this process ran a pass).
    pub lag_seconds: Option<f64>,
    pub last_run: Option<RunRecord>,
    #[serde(flatten)]
    pub status: TableStatus,
}

/// The overview's cache and the lag samples, shared by the API's handlers.
#[derive(Default)]
pub struct Board {
    latest: Mutex<Option<(Instant, Arc<Value>)>>,
    /// Held while an overview is computed: one computation at a time.
    computing: tokio::sync::Mutex<()>,
    /// A refresh is running in the background.
    refreshing: AtomicBool,
    /// Per `SOURCE.TABLE`: its lag samples, oldest first.
    lag: Mutex<HashMap<String, Samples>>,
}

/// (when, seconds behind) pairs.
type Samples = VecDeque<(DateTime<Utc>, f64)>;

impl Board {
    /// The overview. The first is computed while the caller waits; after that the latest
    /// one answers at once, and one older than [`FRESH_FOR`] is computed again in the
    /// background (1,000 tables take seconds to look at, a page must not wait for them).
    pub async fn overview(
        self: &Arc<Self>,
        serving: &Arc<Serving>,
    ) -> Result<Arc<Value>, EngineError> {
        let cached = self.latest.lock().expect("overview").clone();
        if let Some((at, v)) = cached {
            if at.elapsed() >= FRESH_FOR && !self.refreshing.swap(true, Ordering::AcqRel) {
                let (board, serving) = (self.clone(), serving.clone());
                tokio::spawn(async move {
                    if let Err(e) = board.compute(&serving).await {
                        tracing::warn!(error = %e, "the console's overview was not refreshed");
                    }
                    board.refreshing.store(false, Ordering::Release);
                });
            }
            return Ok(v);
        }
        let _one = self.computing.lock().await;
        if let Some((_, v)) = self.latest.lock().expect("overview").clone() {
            return Ok(v); // computed while this request waited
        }
        let v = Arc::new(overview(serving).await?);
        *self.latest.lock().expect("overview") = Some((Instant::now(), v.clone()));
        Ok(v)
    }

    async fn compute(&self, serving: &Serving) -> Result<(), EngineError> {
        let _one = self.computing.lock().await;
        let v = Arc::new(overview(serving).await?);
        *self.latest.lock().expect("overview") = Some((Instant::now(), v));
        Ok(())
    }

    /// Marks the overview stale (an action changed what it shows): the next request
    /// starts computing it again.
    pub fn invalidate(&self) {
        if let Some((at, _)) = self.latest.lock().expect("overview").as_mut() {
            *at = Instant::now() - FRESH_FOR;
        }
    }

    /// One table's lag samples, oldest first: `[[rfc3339, seconds], …]`.
    pub fn lag_of(&self, name: &str) -> Vec<(DateTime<Utc>, f64)> {
        self.lag
            .lock()
            .expect("lag")
            .get(name)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Samples every table's lag every [`SAMPLE_EVERY`] until `stop`.
    pub async fn sample_lag(&self, serving: &Serving, mut stop: watch::Receiver<bool>) {
        loop {
            let now = Utc::now();
            {
                let mut lag = self.lag.lock().expect("lag");
                for source in serving.project.config.sources.keys() {
                    for (table, as_of) in sluice_engine::metrics::tables_of(source) {
                        let seconds = seconds_between(as_of, now);
                        let samples = lag.entry(format!("{source}.{table}")).or_default();
                        if samples.len() == SAMPLES_KEPT {
                            samples.pop_front();
                        }
                        samples.push_back((now, seconds));
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

fn lag_seconds(source: &str, table: &str) -> Option<f64> {
    sluice_engine::metrics::current_as_of(source, table).map(|at| seconds_between(at, Utc::now()))
}

/// How far `as_of` is behind `now`, in seconds (never negative).
fn seconds_between(as_of: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (now - as_of).num_milliseconds().max(0) as f64 / 1000.0
}

/// A table's state from its status, its latest run and whether its source is in a pass.
fn state_of(status: &TableStatus, last: Option<&RunRecord>, running: bool) -> State {
    if status.targets.iter().any(|t| t.halted || t.check_halted) {
        State::Halted
    } else if running {
        State::Running
    } else if last.is_some_and(|r| r.outcome == "failed") {
        State::Failed
    } else {
        State::Idle
    }
}

async fn overview(serving: &Serving) -> Result<Value, EngineError> {
    let started = Instant::now();
    let statuses = sluice_engine::status::status_with(
        &serving.project,
        &StatusOptions {
            only: None,
            count_rows: true,
        },
    )
    .await?;
    let mut last: HashMap<(String, String), RunRecord> = serving
        .state
        .runs(
            usize::MAX >> 1,
            &RunFilter {
                latest_per_table: true,
                ..Default::default()
            },
        )
        .await?
        .into_iter()
        .map(|r| ((r.source.clone(), r.table.clone()), r))
        .collect();
    let running = serving.running();
    let continuous: Vec<String> = serving
        .schedules()
        .into_iter()
        .filter(|(s, schedule)| schedule == "continuous" && serving.owns(s))
        .map(|(s, _)| s)
        .collect();
    let mut rows: Vec<TableRow> = statuses
        .into_iter()
        .map(|status| {
            let run = last.remove(&(status.source.clone(), status.table.clone()));
            let busy = running.contains_key(&status.source) || continuous.contains(&status.source);
            TableRow {
                name: format!("{}.{}", status.source, status.table),
                state: state_of(&status, run.as_ref(), busy),
                lag_seconds: lag_seconds(&status.source, &status.table),
                last_run: run,
                status,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.state.cmp(&b.state).then_with(|| a.name.cmp(&b.name)));
    Ok(json!({
        "generated_at": Utc::now(),
        "took_ms": started.elapsed().as_millis() as u64,
        "owner": serving.owner,
        "tables": rows,
    }))
}

/// One table in full: its status with row counts, schema versions and the gate's pending
/// diff per warehouse table, recent runs, lag samples and quarantined records.
pub async fn table(board: &Board, serving: &Serving, name: &str) -> Result<Value, EngineError> {
    let (source, table) = name
        .split_once('.')
        .ok_or_else(|| EngineError::Usage(format!("`{name}`: name a table as SOURCE.TABLE")))?;
    let project = &serving.project;
    let status = sluice_engine::status::status_with(
        project,
        &StatusOptions {
            only: Some(name.to_string()),
            count_rows: true,
        },
    )
    .await?
    .into_iter()
    .next()
    .ok_or_else(|| EngineError::Usage(format!("no table named `{name}`")))?;
    let runs = serving
        .state
        .runs(
            TABLE_RUNS,
            &RunFilter {
                source: Some(source),
                table: Some(table),
                ..Default::default()
            },
        )
        .await?;
    let landed = status.lake_version.is_some();
    let schema = match landed {
        true => Some(sluice_engine::schema_cmd::show(project, name).await?),
        false => None,
    };
    let diff = match landed {
        true => sluice_engine::schema_cmd::diff(project, name).await?,
        false => Vec::new(),
    };
    let quarantine = match status.quarantined {
        0 => Value::Array(Vec::new()),
        _ => {
            let sql = format!(
                "SELECT * FROM {}.{} ORDER BY {} DESC, line DESC LIMIT {QUARANTINE_SHOWN}",
                sluice_core::names::quote_ident(source),
                sluice_core::names::quote_ident(&format!("{table}__quarantine")),
                sluice_core::names::quote_ident(sluice_core::change::INGESTED_AT),
            );
            let batches = sluice_engine::query::query_lake(project, &sql, None).await?;
            serde_json::from_str(&sluice_engine::query::render(
                &batches,
                sluice_engine::query::OutputFormat::Json,
            )?)
            .map_err(|e| EngineError::Internal(format!("quarantine rows: {e}")))?
        }
    };
    let running = serving.running().contains_key(source);
    Ok(json!({
        "name": name,
        "state": state_of(&status, runs.first(), running),
        "lag_seconds": lag_seconds(source, table),
        "lag": board.lag_of(name),
        "status": status,
        "schema": schema,
        "diff": diff,
        "runs": runs,
        "quarantine": quarantine,
    }))
}

#[cfg(test)]
mod tests {
    use super::State;

    #[test]
    fn problems_sort_first() {
        let mut states = vec![State::Idle, State::Running, State::Failed, State::Halted];
        states.sort();
        assert_eq!(
            states,
            vec![State::Halted, State::Failed, State::Running, State::Idle]
        );
    }
}
