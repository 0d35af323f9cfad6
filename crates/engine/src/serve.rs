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
//!
//! Several processes may serve one config: each source is run by the process holding its
//! lease in the state store, renewed every third of `lease_secs`. A process that dies stops
//! renewing, and another takes the source over once the lease expires, resuming from the
//! positions committed in the lake. A process that cannot renew stops its passes first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use sluice_core::retry::{ErrorKind, RetryPolicy};
use sluice_core::schedule::Schedule;

use crate::alerts::{Alerts, Condition};
use crate::state::{self, StateStore};
use crate::sync::{sync, SyncOptions, SyncReport};
use crate::{metrics, EngineError, Project};

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

/// Lease names: a source's, and a process's membership.
pub(crate) const SOURCE_LEASE: &str = "source:";
const MEMBER_LEASE: &str = "member:";

/// A pass asked for through the API: the source's tables, or one of them.
type Trigger = Option<String>;

/// A running `serve`: the project, its state store and alerts, and a way to ask a source for
/// a pass now. Shared with the HTTP API.
pub struct Serving {
    pub project: Arc<Project>,
    pub state: StateStore,
    pub alerts: Alerts,
    /// This process, as its leases name it.
    pub owner: String,
    pub started_at: DateTime<Utc>,
    lease: Duration,
    retry: RetryPolicy,
    schedules: Vec<(String, Schedule)>,
    /// `[reports.NAME]` with their schedules.
    reports: Vec<(String, Schedule)>,
    triggers: HashMap<String, mpsc::Sender<Trigger>>,
    waiting: Mutex<HashMap<String, mpsc::Receiver<Trigger>>>,
    /// Per source: whether this process holds its lease now.
    owned: Mutex<HashMap<String, bool>>,
    /// Processes sharing the state store, as this one's membership renewal last counted.
    members: std::sync::atomic::AtomicUsize,
    /// Land in the lake only: no warehouse loads (`serve --lake-only`).
    pub lake_only: bool,
    /// Per source: when the pass running now began (the console's "running").
    running: Mutex<HashMap<String, DateTime<Utc>>>,
}

/// Why a pass asked for through the API did not start.
#[derive(Debug)]
pub enum TriggerRefused {
    NoSuchSource(String),
    /// The source streams continuously: it is always syncing.
    Continuous,
    /// Another process holds the source's lease.
    NotOwned,
    /// Passes are queued already.
    Busy,
}

impl Serving {
    /// Opens the state store, checks every schedule and starts alert delivery.
    pub async fn new(project: Arc<Project>) -> Result<Serving, EngineError> {
        let mut schedules = Vec::new();
        let mut triggers = HashMap::new();
        let mut waiting = HashMap::new();
        for (name, src) in &project.config.sources {
            let cdc = src.mode() == sluice_core::config::Mode::Cdc;
            let schedule = src
                .shared()
                .scheduling
                .resolve(cdc)
                .map_err(|(key, m)| EngineError::Usage(format!("sources.{name}.{key}: {m}")))?;
            schedules.push((name.clone(), schedule));
            let (tx, rx) = mpsc::channel(4);
            triggers.insert(name.clone(), tx);
            waiting.insert(name.clone(), rx);
        }
        let reports = crate::report::schedules(&project)?;
        let state = StateStore::open(&project).await?;
        let alerts = Alerts::start(&project.config.alerts);
        let lease = project
            .config
            .state
            .as_ref()
            .and_then(|s| s.lease_secs)
            .map(Duration::from_secs)
            .unwrap_or(state::DEFAULT_LEASE);
        let mut retry = RetryPolicy::default();
        if let Some(s) = &project.config.serve {
            retry.attempts = s.retries.unwrap_or(retry.attempts);
            retry.first = s
                .retry_first_secs
                .map(Duration::from_secs)
                .unwrap_or(retry.first);
            retry.longest = s
                .retry_max_secs
                .map(Duration::from_secs)
                .unwrap_or(retry.longest);
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        Ok(Serving {
            project,
            state,
            alerts,
            owner: format!(
                "{host}:{}:{}",
                std::process::id(),
                Utc::now().timestamp_micros()
            ),
            started_at: Utc::now(),
            lease,
            retry,
            schedules,
            reports,
            triggers,
            waiting: Mutex::new(waiting),
            owned: Mutex::default(),
            members: std::sync::atomic::AtomicUsize::new(1),
            lake_only: false,
            running: Mutex::default(),
        })
    }

    /// Asks `source` for a pass now (of `table` only, when given).
    pub fn trigger(&self, source: &str, table: Option<&str>) -> Result<(), TriggerRefused> {
        let Some(tx) = self.triggers.get(source) else {
            return Err(TriggerRefused::NoSuchSource(source.to_string()));
        };
        if self
            .schedules
            .iter()
            .any(|(s, sch)| s == source && matches!(sch, Schedule::Continuous))
        {
            return Err(TriggerRefused::Continuous);
        }
        if !self.owns(source) {
            return Err(TriggerRefused::NotOwned);
        }
        tx.try_send(table.map(|t| format!("{source}.{t}")))
            .map_err(|_| TriggerRefused::Busy)
    }

    /// Whether this process runs `source` now.
    pub fn owns(&self, source: &str) -> bool {
        self.owned
            .lock()
            .expect("owned")
            .get(source)
            .copied()
            .unwrap_or(false)
    }

    /// Each source with its schedule, as written.
    pub fn schedules(&self) -> Vec<(String, String)> {
        self.schedules
            .iter()
            .map(|(s, sch)| (s.clone(), sch.describe()))
            .collect()
    }

    /// The sources in a pass now, with when it began (a continuous source: since it started
    /// streaming).
    pub fn running(&self) -> HashMap<String, DateTime<Utc>> {
        self.running.lock().expect("running").clone()
    }

    fn owned_count(&self) -> usize {
        self.owned
            .lock()
            .expect("owned")
            .values()
            .filter(|o| **o)
            .count()
    }

    fn set_owned(&self, source: &str, owned: bool) {
        self.owned
            .lock()
            .expect("owned")
            .insert(source.to_string(), owned);
    }
}

/// Runs every source and report on its schedule until `stop` turns true.
pub async fn serve(serving: &Serving, stop: watch::Receiver<bool>) -> Vec<SourceRuns> {
    let runs = serving.schedules.iter().map(|(name, schedule)| {
        let stop = stop.clone();
        let triggers = serving
            .waiting
            .lock()
            .expect("triggers")
            .remove(name)
            .expect("serve runs once");
        tracing::info!(source = %name, schedule = %schedule.describe(), "serving");
        run_source(serving, name, schedule, triggers, stop)
    });
    // Membership first, so the first shares count this process.
    renew_membership(serving).await;
    let watch = watch_freshness(serving, stop.clone());
    let members = keep_membership(serving, stop.clone());
    let reports = serving.reports.iter().map(|(name, schedule)| {
        tracing::info!(report = %name, schedule = %schedule.describe(), "serving");
        crate::report::serve_report(serving, name, schedule, stop.clone())
    });
    let (mut runs, reports, (), ()) = tokio::join!(
        futures::future::join_all(runs),
        futures::future::join_all(reports),
        watch,
        members
    );
    runs.extend(reports);
    runs
}

/// One source: its lease kept beside its passes.
async fn run_source(
    serving: &Serving,
    source: &str,
    schedule: &Schedule,
    triggers: mpsc::Receiver<Trigger>,
    stop: watch::Receiver<bool>,
) -> SourceRuns {
    let (owned_tx, owned_rx) = watch::channel(false);
    let keeper = keep_lease(serving, source, stop.clone(), owned_tx);
    let work = run_passes(serving, source, schedule, triggers, stop, owned_rx);
    let ((), runs) = tokio::join!(keeper, work);
    runs
}

/// Holds `source`'s lease while this process runs and its share allows: renewed every third
/// of its length; `owned` says whether it is held. A process takes a free source only while
/// it holds fewer than its fair share (sources over live processes, rounded up), and hands
/// one over when it holds more, so processes sharing a state store split the sources.
/// Released on stop.
async fn keep_lease(
    serving: &Serving,
    source: &str,
    mut stop: watch::Receiver<bool>,
    owned: watch::Sender<bool>,
) {
    let name = format!("{SOURCE_LEASE}{source}");
    let mut renewed_at: Option<std::time::Instant> = None;
    loop {
        let members = serving.members.load(std::sync::atomic::Ordering::Relaxed);
        let fair = serving.schedules.len().div_ceil(members);
        let mine = serving.owned_count();
        let holding = *owned.borrow();
        let held = if holding && mine > fair {
            tracing::info!(
                source,
                processes = members,
                "handing the source over: this process holds more than its share"
            );
            give_up(serving, source, &name, &owned).await;
            renewed_at = None;
            false
        } else if !holding && mine >= fair {
            false
        } else {
            match serving
                .state
                .take_lease(&name, &serving.owner, serving.lease)
                .await
            {
                Ok(held) => {
                    renewed_at = held.then(std::time::Instant::now);
                    held
                }
                // The store is unreachable: the lease stands until it would have expired.
                Err(e) => {
                    tracing::warn!(source, error = %e, "lease not renewed");
                    renewed_at.is_some_and(|t| t.elapsed() < serving.lease)
                }
            }
        };
        if held != *owned.borrow() {
            match held {
                true => {
                    tracing::info!(source, owner = %serving.owner, "lease taken: this process runs the source")
                }
                false => tracing::warn!(source, "lease lost: another process runs the source"),
            }
            serving.set_owned(source, held);
            let _ = owned.send(held);
        }
        if stopped_within(&mut stop, serving.lease / 3).await {
            break;
        }
    }
    give_up(serving, source, &name, &owned).await;
}

/// Stops `source`'s passes, waits for the one running to end, then releases its lease.
async fn give_up(serving: &Serving, source: &str, lease: &str, owned: &watch::Sender<bool>) {
    let _ = owned.send(false);
    serving.set_owned(source, false);
    // A running pass holds a receiver (beside the loop's own) until it ends.
    while owned.receiver_count() > 1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Err(e) = serving.state.release_lease(lease, &serving.owner).await {
        tracing::warn!(source, error = %e, "lease not released (it expires by itself)");
    }
}

/// This process's membership: a lease of its own, renewed like the sources', by which the
/// processes sharing the store count one another.
async fn keep_membership(serving: &Serving, mut stop: watch::Receiver<bool>) {
    while !stopped_within(&mut stop, serving.lease / 3).await {
        renew_membership(serving).await;
    }
    let name = format!("{MEMBER_LEASE}{}", serving.owner);
    let _ = serving.state.release_lease(&name, &serving.owner).await;
}

/// Renews this process's membership and counts the live ones, once for all its sources.
async fn renew_membership(serving: &Serving) {
    let name = format!("{MEMBER_LEASE}{}", serving.owner);
    if let Err(e) = serving
        .state
        .take_lease(&name, &serving.owner, serving.lease)
        .await
    {
        tracing::warn!(error = %e, "membership not renewed");
    }
    if let Ok(n) = serving.state.live_leases(MEMBER_LEASE).await {
        serving
            .members
            .store(n.max(1), std::sync::atomic::Ordering::Relaxed);
    }
}

/// One source's passes, while this process holds its lease.
async fn run_passes(
    serving: &Serving,
    source: &str,
    schedule: &Schedule,
    mut triggers: mpsc::Receiver<Trigger>,
    mut stop: watch::Receiver<bool>,
    mut owned: watch::Receiver<bool>,
) -> SourceRuns {
    let mut runs = SourceRuns {
        source: source.to_string(),
        schedule: schedule.describe(),
        ..SourceRuns::default()
    };
    let continuous = matches!(schedule, Schedule::Continuous);
    'owning: loop {
        // Wait for the lease.
        tokio::select! {
            _ = owned.wait_for(|o| *o) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if *stop.borrow() {
            break;
        }
        // Arrivals are looked for at once (files may be waiting), a taken-over cron source
        // waits for its next tick.
        let mut due = match schedule {
            Schedule::Cron { .. } => schedule.next_after(Utc::now()),
            _ => Some(Utc::now()),
        };
        while let Some(at) = due {
            let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            let (trigger, only) = tokio::select! {
                _ = tokio::time::sleep(wait) => (scheduled(schedule), None),
                t = triggers.recv() => ("api", t.flatten()),
                _ = stop.wait_for(|s| *s) => break 'owning,
                _ = owned.wait_for(|o| !*o) => continue 'owning,
            };
            let pass_stop = either(stop.clone(), owned.clone());
            let selector = only.unwrap_or_else(|| source.to_string());
            // Held while the pass runs: the lease keeper waits for it before giving up the lease.
            let in_pass = owned.clone();
            serving
                .running
                .lock()
                .expect("running")
                .insert(source.to_string(), Utc::now());
            pass_with_retries(
                serving, source, &selector, trigger, continuous, pass_stop, &mut runs,
            )
            .await;
            serving.running.lock().expect("running").remove(source);
            drop(in_pass);
            if *stop.borrow() {
                break 'owning;
            }
            if !*owned.borrow() {
                continue 'owning;
            }
            if trigger == "api" {
                continue; // the schedule's own next tick still stands
            }
            // A stream that ended before the stop failed: the retries above are spent, so it
            // starts again after the longest wait.
            due = match schedule {
                Schedule::Continuous => Some(
                    Utc::now()
                        + chrono::Duration::from_std(serving.retry.longest).unwrap_or_default(),
                ),
                _ => {
                    let mut next = schedule.next_after(at);
                    let now = Utc::now();
                    while let Some(t) = next.filter(|t| *t <= now) {
                        runs.skipped_ticks += 1;
                        metrics::skipped_tick(source);
                        next = schedule.next_after(t);
                    }
                    next
                }
            };
        }
        // No more ticks.
        let _ = stop.wait_for(|s| *s).await;
        break;
    }
    tracing::info!(
        source,
        passes = runs.passes,
        failed = runs.failed,
        skipped_ticks = runs.skipped_ticks,
        "stopped"
    );
    runs
}

/// What a pass the schedule started is called in the run history.
fn scheduled(schedule: &Schedule) -> &'static str {
    match schedule {
        Schedule::Continuous => "continuous",
        Schedule::Arrival { .. } => "arrival",
        Schedule::Cron { .. } => "schedule",
    }
}

/// A signal that turns true once `stop` is true or `owned` false.
fn either(
    mut stop: watch::Receiver<bool>,
    mut owned: watch::Receiver<bool>,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(*stop.borrow() || !*owned.borrow());
    tokio::spawn(async move {
        loop {
            if *stop.borrow() || !*owned.borrow() {
                let _ = tx.send(true);
                return;
            }
            tokio::select! {
                r = stop.changed() => if r.is_err() { return },
                r = owned.changed() => if r.is_err() { let _ = tx.send(true); return },
                _ = tx.closed() => return,
            }
        }
    });
    rx
}

/// One pass of `selector`, tried again while it fails with a transient error.
async fn pass_with_retries(
    serving: &Serving,
    source: &str,
    selector: &str,
    trigger: &str,
    follow: bool,
    stop: watch::Receiver<bool>,
    runs: &mut SourceRuns,
) {
    let mut attempt = 0;
    loop {
        let started = std::time::Instant::now();
        let started_at = Utc::now();
        let outcome = sync(
            &serving.project,
            &[selector.to_string()],
            SyncOptions {
                follow: follow.then(|| stop.clone()),
                load: !serving.lake_only,
                ..SyncOptions::default()
            },
        )
        .await;
        runs.passes += 1;
        metrics::pass(source, started.elapsed().as_secs_f64());
        let failure = match &outcome {
            Ok(report) => {
                finished(serving, report, trigger, started_at, follow, runs).await;
                first_failure(report)
            }
            Err(e) => {
                serving
                    .alerts
                    .raise(Condition::Failure, source, "*", &e.to_string());
                Some((e.kind(), e.to_string()))
            }
        };
        let ms = started.elapsed().as_millis() as u64;
        let Some((kind, why)) = failure else {
            tracing::info!(source, ms, "pass done");
            return;
        };
        runs.failed += 1;
        attempt += 1;
        let mut stop = stop.clone();
        match serving.retry.wait(kind, attempt) {
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

/// After a pass: its counts, the run history, metrics and alerts per table.
async fn finished(
    serving: &Serving,
    report: &SyncReport,
    trigger: &str,
    started_at: DateTime<Utc>,
    continuous: bool,
    runs: &mut SourceRuns,
) {
    let mut any_ok = false;
    for t in &report.tables {
        runs.rows_landed += t.extract.rows;
        runs.changes_loaded += t.loads.iter().map(|l| l.changes).sum::<u64>();
        let halted = t.halted.is_some() || t.loads.iter().any(|l| l.halted.is_some());
        let failed_stage = t.error.as_ref().map(|_| match t.extract.lake_version {
            // It landed something, so what failed came later.
            Some(_) if !t.loads.is_empty() => "load",
            _ => "capture",
        });
        metrics::table_pass(&t.source, &t.table, failed_stage, halted);
        if let Some(v) = t.extract.lake_version {
            metrics::lake_at(&t.source, &t.table, v);
        }
        let alerts = &serving.alerts;
        match &t.error {
            Some(e) => alerts.raise(Condition::Failure, &t.source, &t.table, e),
            None => {
                any_ok = true;
                alerts.clear(Condition::Failure, &t.source, &t.table);
                // A pass holds what the source had when it began (a stream keeps its own);
                // a halted load leaves the lake current, a halted capture does not.
                let load_halted = t.loads.iter().any(|l| l.halted.is_some());
                if !continuous && (t.halted.is_none() || load_halted) {
                    metrics::current(&t.source, &t.table, started_at);
                }
            }
        }
        match (&t.halted, t.loads.iter().find_map(|l| l.halted.as_ref())) {
            (Some(why), _) | (None, Some(why)) => {
                alerts.raise(Condition::Halted, &t.source, &t.table, why)
            }
            (None, None) => alerts.clear(Condition::Halted, &t.source, &t.table),
        }
        let failing: Vec<String> = t
            .loads
            .iter()
            .flat_map(|l| {
                l.checks
                    .iter()
                    .filter(|c| c.failed > c.accepted)
                    .map(move |c| format!("{}: {}", l.target, c.summary()))
            })
            .collect();
        if !failing.is_empty() {
            alerts.raise(Condition::Check, &t.source, &t.table, &failing.join("\n"));
        } else if t.loads.iter().any(|l| !l.checks.is_empty()) {
            // Checks ran on new changes and every one passed.
            alerts.clear(Condition::Check, &t.source, &t.table);
        }
    }
    if any_ok {
        if let Some(t) = report.tables.first() {
            serving.alerts.clear(Condition::Failure, &t.source, "*");
        }
    }
    let mut records = state::records_of(report, trigger, started_at);
    // An arrival poll that found nothing is not a run (it comes every few seconds).
    if trigger == "arrival" {
        records.retain(|r| r.rows_extracted > 0 || r.outcome != "ok" || r.lake_version.is_some());
    }
    if let Err(e) = serving.state.record(&records).await {
        tracing::warn!(error = %e, "run history not written");
    }
}

/// Every second, each table of a source with `max_lag_secs` this process runs: raised while
/// the lake is further behind, cleared once it is back.
async fn watch_freshness(serving: &Serving, mut stop: watch::Receiver<bool>) {
    let targets: Vec<(String, u64)> = serving
        .project
        .config
        .sources
        .iter()
        .filter_map(|(name, s)| Some((name.clone(), s.shared().scheduling.max_lag_secs?)))
        .collect();
    if targets.is_empty() {
        return;
    }
    while !stopped_within(&mut stop, Duration::from_secs(1)).await {
        let now = Utc::now();
        for (source, max) in &targets {
            if !serving.owns(source) {
                continue;
            }
            let tables = metrics::tables_of(source);
            // Nothing current yet: the source as a whole, counted from the start.
            let seen: Vec<(String, DateTime<Utc>)> = match tables.is_empty() {
                true => vec![("*".to_string(), serving.started_at)],
                false => tables,
            };
            for (table, as_of) in seen {
                let lag = (now - as_of).num_seconds().max(0) as u64;
                if lag > *max {
                    let message = format!("{lag} s behind its source (max_lag_secs = {max})");
                    serving
                        .alerts
                        .raise(Condition::Freshness, source, &table, &message);
                } else {
                    serving.alerts.clear(Condition::Freshness, source, &table);
                }
            }
        }
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
pub(crate) async fn stopped_within(stop: &mut watch::Receiver<bool>, wait: Duration) -> bool {
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
