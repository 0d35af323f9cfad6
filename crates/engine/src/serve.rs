//! `sluice serve`: every source on its own schedule in one process, until stopped.
//!
//! - `continuous` (CDC's default): the source follows, change streams open and loading as they
//!   commit, as `sync --follow` does;
//! - a cron pattern (`hourly`, `daily`, `"0 2 * * *"`, `"CRON_TZ=Europe/Berlin 0 2 * * *"`):
//!   one pass at each tick;
//! - `trigger = "arrival"` (files): a pass right away, then every `poll_interval_secs`; a pass
//!   lists the folder and lands only the files it has not taken.
//!
//! One source never runs twice at once: its passes run one after another, and ticks that come
//! while a pass is still running are skipped and counted. A pass that fails with a transient
//! error (network, a server restarting, a lock) is tried again with doubling waits and
//! jitter; a fatal one waits for the next tick; one source failing never stops the others.
//! On stop (SIGTERM, Ctrl-C) no new pass starts; passes and streams in flight end as `sync`
//! ends them (a stream commits what it holds whole; nothing partial is committed).

use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use tokio::sync::watch;

use sluice_core::retry::{ErrorKind, RetryPolicy};
use sluice_core::schedule::Schedule;

use crate::sync::{sync, SyncOptions, SyncReport};
use crate::{EngineError, Project};

/// What `serve` did per source, once stopped.
#[derive(Debug, Default, Serialize)]
pub struct SourceRuns {
    pub source: String,
    pub schedule: String,
    /// Passes run (retries included).
    pub passes: u64,
    /// Passes in which some table failed.
    pub failed: u64,
    /// Ticks that came while a pass was running.
    pub skipped_ticks: u64,
    /// Rows landed in the lake, over every pass.
    pub rows_landed: u64,
    /// Changes loaded into warehouses, over every pass.
    pub changes_loaded: u64,
}

/// Runs every source on its schedule until `stop` turns true.
pub async fn serve(
    project: &Project,
    stop: watch::Receiver<bool>,
    retry: RetryPolicy,
) -> Result<Vec<SourceRuns>, EngineError> {
    let mut plans = Vec::new();
    for (name, src) in &project.config.sources {
        let cdc = src.mode() == sluice_core::config::Mode::Cdc;
        let schedule = src
            .shared()
            .scheduling
            .resolve(cdc)
            .map_err(|(key, m)| EngineError::Internal(format!("sources.{name}.{key}: {m}")))?;
        tracing::info!(source = %name, schedule = %schedule.describe(), "serving");
        plans.push((name.clone(), schedule));
    }
    let runs = plans.into_iter().map(|(name, schedule)| {
        let stop = stop.clone();
        async move { run_source(project, name, schedule, stop, retry).await }
    });
    Ok(futures::future::join_all(runs).await)
}

/// One source's loop.
async fn run_source(
    project: &Project,
    source: String,
    schedule: Schedule,
    mut stop: watch::Receiver<bool>,
    retry: RetryPolicy,
) -> SourceRuns {
    let mut runs = SourceRuns {
        source: source.clone(),
        schedule: schedule.describe(),
        ..SourceRuns::default()
    };
    let follow = matches!(schedule, Schedule::Continuous);
    // Arrivals are looked for at once (files may be waiting); cron passes wait for a tick.
    let mut due = match schedule {
        Schedule::Cron { .. } => schedule.next_after(Utc::now()),
        _ => Some(Utc::now()),
    };
    while let Some(at) = due {
        let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        if stopped_within(&mut stop, wait).await {
            break;
        }
        pass_with_retries(project, &source, follow, &stop, retry, &mut runs).await;
        if *stop.borrow() {
            break;
        }
        // A stream that ended before the stop failed: the retries above are spent, so it
        // starts again after the longest wait.
        due = match schedule {
            Schedule::Continuous => {
                Some(Utc::now() + chrono::Duration::from_std(retry.longest).unwrap_or_default())
            }
            _ => {
                let mut next = schedule.next_after(at);
                let now = Utc::now();
                while let Some(t) = next.filter(|t| *t <= now) {
                    runs.skipped_ticks += 1;
                    next = schedule.next_after(t);
                }
                next
            }
        };
    }
    tracing::info!(source = %source, passes = runs.passes, failed = runs.failed, skipped_ticks = runs.skipped_ticks, "stopped");
    runs
}

/// One pass of `source`, tried again while it fails with a transient error.
async fn pass_with_retries(
    project: &Project,
    source: &str,
    follow: bool,
    stop: &watch::Receiver<bool>,
    retry: RetryPolicy,
    runs: &mut SourceRuns,
) {
    let mut attempt = 0;
    loop {
        let started = std::time::Instant::now();
        let outcome = sync(
            project,
            &[source.to_string()],
            SyncOptions {
                follow: follow.then(|| stop.clone()),
                ..SyncOptions::default()
            },
        )
        .await;
        runs.passes += 1;
        let failure = match &outcome {
            Ok(report) => {
                record(report, runs);
                first_failure(report)
            }
            Err(e) => Some((e.kind(), e.to_string())),
        };
        let ms = started.elapsed().as_millis() as u64;
        let Some((kind, why)) = failure else {
            tracing::info!(source, ms, "pass done");
            return;
        };
        runs.failed += 1;
        attempt += 1;
        let mut stop = stop.clone();
        match retry.wait(kind, attempt) {
            Some(wait) if !*stop.borrow() => {
                let wait = jittered(wait);
                tracing::warn!(source, error = %why, %kind, attempt, wait_ms = wait.as_millis() as u64, "pass failed; trying again");
                if stopped_within(&mut stop, wait).await {
                    return;
                }
            }
            _ => {
                tracing::error!(source, error = %why, %kind, "pass failed; waiting for the next tick");
                return;
            }
        }
    }
}

/// Adds a pass's counts.
fn record(report: &SyncReport, runs: &mut SourceRuns) {
    for t in &report.tables {
        runs.rows_landed += t.extract.rows;
        runs.changes_loaded += t.loads.iter().map(|l| l.changes).sum::<u64>();
    }
}

/// The first table failure of a pass, with its kind (a halted table is not a failure: it
/// waits for `schema accept`, and the others went on).
fn first_failure(report: &SyncReport) -> Option<(ErrorKind, String)> {
    report.tables.iter().find_map(|t| {
        let why = t.error.as_ref()?;
        Some((
            t.error_kind.unwrap_or(ErrorKind::Fatal),
            format!("{}.{}: {why}", t.source, t.table),
        ))
    })
}

/// `wait` plus or minus up to a fifth, so sources failing together do not retry in step.
fn jittered(wait: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let fifth = wait / 5;
    let spread = fifth.as_nanos().max(1) as u64 * 2;
    (wait - fifth) + Duration::from_nanos(nanos as u64 % spread)
}

/// Waits `wait`; true when stopped meanwhile (or already).
async fn stopped_within(stop: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    let stopped = tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = stop.wait_for(|v| *v) => true,
    };
    stopped || *stop.borrow()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_fifth() {
        for secs in [1u64, 8, 300] {
            let w = Duration::from_secs(secs);
            let j = jittered(w);
            assert!(j >= w - w / 5 && j <= w + w / 5, "{secs}: {j:?}");
        }
    }
}
