//! `[reports.NAME]`: a lake query written as a file. `sluice report NAME` runs one now;
//! `sluice serve` runs each at the ticks of its schedule. Every run goes into the run history
//! (source `reports`, table NAME) and a failing report raises an alert like a failing table.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

use sluice_core::config::{ReportConfig, DEFAULT_REPORT_SCHEDULE};
use sluice_core::schedule::Schedule;

use crate::alerts::Condition;
use crate::serve::{stopped_within, Serving, SourceRuns};
use crate::state::RunRecord;
use crate::{EngineError, Project};

/// The run history's source name for reports.
pub const REPORTS: &str = "reports";
const REPORT_LEASE: &str = "report:";

#[derive(Debug, Clone, Serialize)]
pub struct ReportRun {
    pub report: String,
    /// The file written (its `{date}` and `{time}` filled in).
    pub out: String,
    pub rows: usize,
    pub bytes: usize,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
}

/// Report `name`'s config (Err names the reports there are).
pub fn config_of<'p>(project: &'p Project, name: &str) -> Result<&'p ReportConfig, EngineError> {
    project.config.reports.get(name).ok_or_else(|| {
        let have: Vec<&str> = project.config.reports.keys().map(String::as_str).collect();
        EngineError::Usage(format!(
            "no report named `{name}` (have: {})",
            if have.is_empty() {
                "none".into()
            } else {
                have.join(", ")
            }
        ))
    })
}

/// Runs report `name` as of `at` (the time its `{date}` and `{time}` take).
pub async fn run(
    project: &Project,
    name: &str,
    at: DateTime<Utc>,
) -> Result<ReportRun, EngineError> {
    let report = config_of(project, name)?;
    let started_at = Utc::now();
    let dest = report.destination(name, at);
    // Paths in the config are relative to its folder, not to where sluice runs.
    let dest = if dest.contains("://") {
        dest
    } else {
        project.config.resolve_path(&dest)
    };
    let context = |e: EngineError| EngineError::Usage(format!("report {name}: {e}"));
    let batches = crate::query::query_lake(project, &report.sql, None)
        .await
        .map_err(context)?;
    let bytes = crate::export::write_out(project, &batches, &dest)
        .await
        .map_err(context)?;
    Ok(ReportRun {
        report: name.to_string(),
        out: dest,
        rows: batches.iter().map(|b| b.num_rows()).sum(),
        bytes,
        started_at,
        ended_at: Utc::now(),
    })
}

/// The run history's record of a report run (rows written count as extracted and landed).
pub fn record_of(
    name: &str,
    trigger: &str,
    started_at: DateTime<Utc>,
    outcome: &Result<ReportRun, EngineError>,
) -> RunRecord {
    let (rows, bytes) = match outcome {
        Ok(r) => (r.rows as u64, r.bytes as u64),
        Err(_) => (0, 0),
    };
    RunRecord {
        id: None,
        source: REPORTS.into(),
        table: name.into(),
        trigger: trigger.into(),
        started_at,
        ended_at: Utc::now(),
        outcome: if outcome.is_ok() { "ok" } else { "failed" }.into(),
        rows_extracted: rows,
        rows_landed: rows,
        bytes_landed: bytes,
        rows_quarantined: 0,
        changes_loaded: 0,
        lake_version: None,
        error: outcome.as_ref().err().map(|e| e.to_string()),
    }
}

/// Each report's schedule, checked (config validation already refused bad ones).
pub fn schedules(project: &Project) -> Result<Vec<(String, Schedule)>, EngineError> {
    project
        .config
        .reports
        .iter()
        .map(|(name, r)| {
            let text = r.schedule.as_deref().unwrap_or(DEFAULT_REPORT_SCHEDULE);
            Schedule::parse(text)
                .map(|s| (name.clone(), s))
                .map_err(|e| EngineError::Usage(format!("reports.{name}.schedule: {e}")))
        })
        .collect()
}

/// Runs report `name` at each tick of `schedule` until `stop`. Of several processes serving
/// one state store, the one that takes the tick's lease runs it; the others skip that tick.
pub async fn serve_report(
    serving: &Serving,
    name: &str,
    schedule: &Schedule,
    mut stop: watch::Receiver<bool>,
) -> SourceRuns {
    let mut runs = SourceRuns {
        source: format!("{REPORTS}.{name}"),
        schedule: schedule.describe(),
        ..SourceRuns::default()
    };
    let mut next = schedule.next_after(Utc::now());
    while let Some(tick) = next {
        let wait = (tick - Utc::now()).to_std().unwrap_or_default();
        if stopped_within(&mut stop, wait).await {
            break;
        }
        let following = schedule.next_after(tick);
        // The lease is the tick's own: whoever takes it runs the tick, and a process that
        // comes late to the same tick finds it taken, however late. Kept a minute past the
        // next tick, then forgotten.
        let hold = following
            .and_then(|f| (f - tick).to_std().ok())
            .unwrap_or_default()
            + std::time::Duration::from_secs(60);
        let lease = format!("{REPORT_LEASE}{name}@{}", tick.timestamp_millis());
        let _ = serving
            .state
            .forget_expired_leases(&format!("{REPORT_LEASE}{name}@"))
            .await;
        match serving.state.take_lease(&lease, &serving.owner, hold).await {
            Ok(true) => {
                let started_at = Utc::now();
                let outcome = run(&serving.project, name, tick).await;
                runs.passes += 1;
                match &outcome {
                    Ok(r) => {
                        runs.rows_landed += r.rows as u64;
                        tracing::info!(report = name, out = %r.out, rows = r.rows, "report written");
                        serving.alerts.clear(Condition::Failure, REPORTS, name);
                    }
                    Err(e) => {
                        runs.failed += 1;
                        tracing::warn!(report = name, error = %e, "report failed");
                        serving
                            .alerts
                            .raise(Condition::Failure, REPORTS, name, &e.to_string());
                    }
                }
                let record = record_of(name, "schedule", started_at, &outcome);
                if let Err(e) = serving.state.record(&[record]).await {
                    tracing::warn!(error = %e, "run history not written");
                }
            }
            Ok(false) => tracing::debug!(report = name, "another process runs this tick"),
            Err(e) => tracing::warn!(report = name, error = %e, "report lease not taken"),
        }
        next = following;
        // Ticks missed while the report ran are skipped, counted.
        let now = Utc::now();
        while let Some(t) = next.filter(|t| *t <= now) {
            runs.skipped_ticks += 1;
            next = schedule.next_after(t);
        }
    }
    runs
}
