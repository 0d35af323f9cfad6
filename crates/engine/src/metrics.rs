//! The process's metrics, in the Prometheus data model (the Prometheus project's own client):
//! captures and loads count as they commit, `serve` records passes, and `GET /metrics`
//! renders them as text. Labels are the config's own names (source, table, stage), so their
//! number is bounded by the config, never by the data.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex};

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub source: String,
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub source: String,
    pub table: String,
    /// capture (source → lake) or load (lake → warehouse).
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub source: String,
    pub table: String,
    pub check: String,
    /// warn, quarantine or halt.
    pub action: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn pass_histogram() -> Histogram {
    // 50 ms to about 7 minutes.
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

struct Metrics {
    registry: Registry,
    extracted: Family<TableLabels, Counter>,
    landed: Family<TableLabels, Counter>,
    bytes_landed: Family<TableLabels, Counter>,
    quarantined: Family<TableLabels, Counter>,
    loaded: Family<TableLabels, Counter>,
    failures: Family<StageLabels, Counter>,
    pass_seconds: Family<SourceLabels, Histogram, fn() -> Histogram>,
    skipped_ticks: Family<SourceLabels, Counter>,
    last_success: Family<TableLabels, FloatGauge>,
    lag_seconds: Family<TableLabels, FloatGauge>,
    lake_version: Family<TableLabels, Gauge>,
    load_lag_versions: Family<TableLabels, Gauge>,
    halted: Family<TableLabels, Gauge>,
    check_failures: Family<CheckLabels, Counter>,
    /// Per table: the moment up to which the lake is known to hold everything its source had
    /// committed (the lag gauge is now minus this, set at each render).
    current_as_of: Mutex<HashMap<TableLabels, DateTime<Utc>>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sluice");
        let extracted: Family<_, _, _> = Family::default();
        registry.register(
            "rows_extracted",
            "Rows read from the source and committed to the lake or its quarantine",
            extracted.clone(),
        );
        let landed: Family<_, _, _> = Family::default();
        registry.register(
            "rows_landed",
            "Change rows committed to the lake",
            landed.clone(),
        );
        let bytes_landed: Family<_, _, _> = Family::default();
        registry.register(
            "bytes_landed",
            "Bytes of data files (Parquet, compressed) committed to the lake",
            bytes_landed.clone(),
        );
        let quarantined: Family<_, _, _> = Family::default();
        registry.register(
            "rows_quarantined",
            "Records set aside with their reason (lake table __quarantine)",
            quarantined.clone(),
        );
        let loaded: Family<_, _, _> = Family::default();
        registry.register(
            "rows_loaded",
            "Changes loaded into warehouses",
            loaded.clone(),
        );
        let failures: Family<_, _, _> = Family::default();
        registry.register(
            "failures",
            "Failed passes per table and stage",
            failures.clone(),
        );
        let pass_seconds: Family<_, _, _> =
            Family::new_with_constructor(pass_histogram as fn() -> Histogram);
        registry.register(
            "pass_duration_seconds",
            "How long a source's passes took (a continuous stream: until it ended)",
            pass_seconds.clone(),
        );
        let skipped_ticks: Family<_, _, _> = Family::default();
        registry.register(
            "skipped_ticks",
            "Schedule ticks that came while the source's pass was still running",
            skipped_ticks.clone(),
        );
        let last_success: Family<_, _, _> = Family::default();
        registry.register(
            "last_success_timestamp_seconds",
            "When the table last synced without failure (Unix seconds)",
            last_success.clone(),
        );
        let lag_seconds: Family<_, _, _> = Family::default();
        registry.register("lag_seconds", "How far the lake is behind the source: now minus the moment up to which it holds everything", lag_seconds.clone());
        let lake_version: Family<_, _, _> = Family::default();
        registry.register(
            "lake_version",
            "The table's latest lake (Delta) version",
            lake_version.clone(),
        );
        let load_lag_versions: Family<_, _, _> = Family::default();
        registry.register(
            "load_lag_versions",
            "Lake commits not yet loaded into the table's warehouse",
            load_lag_versions.clone(),
        );
        let halted: Family<_, _, _> = Family::default();
        registry.register(
            "table_halted",
            "1 while a schema change halts the table (sluice schema accept)",
            halted.clone(),
        );
        let check_failures: Family<_, _, _> = Family::default();
        registry.register(
            "check_failures",
            "Rows (or loads, for table checks) failing a data-quality check, by check and action",
            check_failures.clone(),
        );
        Metrics {
            registry,
            extracted,
            landed,
            bytes_landed,
            quarantined,
            loaded,
            failures,
            pass_seconds,
            skipped_ticks,
            last_success,
            lag_seconds,
            lake_version,
            load_lag_versions,
            halted,
            check_failures,
            current_as_of: Mutex::default(),
        }
    }
}

fn table(source: &str, table: &str) -> TableLabels {
    TableLabels {
        source: source.to_string(),
        table: table.to_string(),
    }
}

/// A lake commit of a capture: `rows` change rows in `bytes` of data files landed at `version`.
pub fn landed(source: &str, name: &str, rows: u64, bytes: u64, version: Option<i64>) {
    let l = table(source, name);
    METRICS.extracted.get_or_create(&l).inc_by(rows);
    METRICS.landed.get_or_create(&l).inc_by(rows);
    METRICS.bytes_landed.get_or_create(&l).inc_by(bytes);
    if let Some(v) = version {
        lake_at(source, name, v);
    }
}

/// The table's lake is at `version` (or later).
pub fn lake_at(source: &str, name: &str, version: i64) {
    let gauge = METRICS.lake_version.get_or_create(&table(source, name));
    gauge.set(gauge.get().max(version));
}

/// Records quarantined (they were read from the source too).
pub fn quarantined(source: &str, name: &str, records: u64) {
    let l = table(source, name);
    METRICS.extracted.get_or_create(&l).inc_by(records);
    METRICS.quarantined.get_or_create(&l).inc_by(records);
}

/// Changes a data-quality check held back from a load (they are in the lake already).
pub fn quarantined_by_check(source: &str, name: &str, records: u64) {
    METRICS
        .quarantined
        .get_or_create(&table(source, name))
        .inc_by(records);
}

/// A data-quality check found `failed` failing rows (1 for a table check) in a load.
pub fn check_failed(source: &str, name: &str, check: &str, action: &'static str, failed: u64) {
    METRICS
        .check_failures
        .get_or_create(&CheckLabels {
            source: source.to_string(),
            table: name.to_string(),
            check: check.to_string(),
            action,
        })
        .inc_by(failed);
}

/// A load: `changes` loaded, the warehouse table now at lake version `loaded_version`.
pub fn loaded(source: &str, name: &str, changes: u64, loaded_version: i64) {
    let l = table(source, name);
    METRICS.loaded.get_or_create(&l).inc_by(changes);
    let lake = METRICS.lake_version.get_or_create(&l).get();
    METRICS
        .load_lag_versions
        .get_or_create(&l)
        .set((lake - loaded_version).max(0));
}

/// The table's lake holds everything its source had committed up to `as_of`.
pub fn current(source: &str, name: &str, as_of: DateTime<Utc>) {
    let mut map = METRICS.current_as_of.lock().expect("metrics");
    let at = map.entry(table(source, name)).or_insert(as_of);
    *at = (*at).max(as_of);
}

/// When the table was last known current (None: not yet in this process).
pub fn current_as_of(source: &str, name: &str) -> Option<DateTime<Utc>> {
    METRICS
        .current_as_of
        .lock()
        .expect("metrics")
        .get(&table(source, name))
        .copied()
}

/// `source`'s tables known current, each with when it last was.
pub fn tables_of(source: &str) -> Vec<(String, DateTime<Utc>)> {
    let mut v: Vec<_> = METRICS
        .current_as_of
        .lock()
        .expect("metrics")
        .iter()
        .filter(|(l, _)| l.source == source)
        .map(|(l, at)| (l.table.clone(), *at))
        .collect();
    v.sort();
    v
}

/// A pass of `source` ended after `seconds`.
pub fn pass(source: &str, seconds: f64) {
    METRICS
        .pass_seconds
        .get_or_create(&SourceLabels {
            source: source.to_string(),
        })
        .observe(seconds);
}

/// A table's pass ended: well (`failed_stage` None) or failed in that stage.
pub fn table_pass(source: &str, name: &str, failed_stage: Option<&'static str>, halted: bool) {
    let l = table(source, name);
    match failed_stage {
        None => {
            METRICS
                .last_success
                .get_or_create(&l)
                .set(Utc::now().timestamp_millis() as f64 / 1000.0);
        }
        Some(stage) => {
            METRICS
                .failures
                .get_or_create(&StageLabels {
                    source: l.source.clone(),
                    table: l.table.clone(),
                    stage,
                })
                .inc();
        }
    }
    METRICS.halted.get_or_create(&l).set(halted as i64);
}

pub fn skipped_tick(source: &str) {
    METRICS
        .skipped_ticks
        .get_or_create(&SourceLabels {
            source: source.to_string(),
        })
        .inc();
}

/// The metrics as Prometheus text (exposition format 0.0.4 with `# EOF`, which Prometheus
/// reads as OpenMetrics text).
pub fn render() -> String {
    let now = Utc::now();
    for (l, at) in METRICS.current_as_of.lock().expect("metrics").iter() {
        let lag = (now - *at).num_milliseconds().max(0) as f64 / 1000.0;
        METRICS.lag_seconds.get_or_create(l).set(lag);
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &METRICS.registry)
        .expect("writing to a String");
    out
}
