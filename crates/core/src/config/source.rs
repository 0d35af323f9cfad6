//! `[sources.NAME]`: one struct per connector, chosen by `kind` (as warehouses are). Adding a
//! source adds its module here, a variant, and one arm in [`SourceConfig::shared`].

use serde::Deserialize;

use super::events::EventsConfig;
use super::files::FilesConfig;
use super::mongodb::MongodbConfig;
use super::mysql::MysqlConfig;
use super::postgres::PostgresConfig;
use super::transforms::{TransformsConfig, TRANSFORMS_SOURCE};
use super::{Deletes, LoadSpec, Mode, SchemaChangesSpec, Tables};
use crate::schedule::Schedule;

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    Files(FilesConfig),
    Mysql(MysqlConfig),
    Mongodb(MongodbConfig),
    Postgres(PostgresConfig),
    Events(EventsConfig),
    /// `[transforms.NAME]` sections, gathered as one source (never a `kind` of
    /// `[sources.NAME]`).
    #[serde(skip)]
    Transforms(TransformsConfig),
}

/// What every source kind takes alike: where its tables go and how they load.
#[derive(Debug, Default, Clone, Copy)]
pub struct Shared<'a> {
    pub warehouse: Option<&'a String>,
    pub load: Option<&'a LoadSpec>,
    pub deletes: Option<Deletes>,
    pub schema_changes: Option<&'a SchemaChangesSpec>,
    pub tables: Option<&'a Tables>,
    /// The cursor column of incremental reads (sources that have them).
    pub cursor: Option<&'a String>,
    /// `sluice serve`'s scheduling keys.
    pub scheduling: Scheduling<'a>,
    /// How snapshots and change streams are sized (database sources).
    pub tuning: Tuning,
}

/// When `sluice serve` runs a source, as written.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scheduling<'a> {
    pub schedule: Option<&'a String>,
    pub trigger: Option<&'a String>,
    pub poll_interval_secs: Option<u64>,
    /// Freshness alerts: refused until alerts exist.
    pub max_lag_secs: Option<u64>,
}

/// Seconds between listings of a files source triggered by arrival, by default.
pub const DEFAULT_POLL_INTERVAL_SECS: u64 = 60;

impl Scheduling<'_> {
    /// The schedule `sluice serve` runs the source on (`cdc`: whether the source streams
    /// changes): `schedule`, else `trigger = "arrival"` polling every `poll_interval_secs`,
    /// else continuous for CDC and hourly for the rest. Err names the key and the problem.
    pub fn resolve(&self, cdc: bool) -> Result<Schedule, (&'static str, String)> {
        if let Some(t) = self.trigger {
            if t != "arrival" {
                return Err((
                    "trigger",
                    format!("`{t}` is not a trigger (the one there is: \"arrival\")"),
                ));
            }
            if self.schedule.is_some() {
                return Err(("trigger", "set `trigger` or `schedule`, not both".into()));
            }
        }
        if self.poll_interval_secs == Some(0) {
            return Err(("poll_interval_secs", "must be at least 1".into()));
        }
        if self.poll_interval_secs.is_some() && self.trigger.is_none() {
            return Err((
                "poll_interval_secs",
                "only with trigger = \"arrival\"".into(),
            ));
        }
        if self.trigger.is_some() {
            let secs = self
                .poll_interval_secs
                .unwrap_or(DEFAULT_POLL_INTERVAL_SECS);
            return Ok(Schedule::Arrival {
                every: std::time::Duration::from_secs(secs),
            });
        }
        match self.schedule {
            Some(s) => Schedule::parse(s).map_err(|e| ("schedule", e)),
            None if cdc => Ok(Schedule::Continuous),
            None => Ok(Schedule::parse("hourly").expect("a word it knows")),
        }
    }
}

/// The capture driver's sizes, as a source configures them (None: the defaults).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tuning {
    /// Snapshot chunks read at once, each on its own connection.
    pub snapshot_parallelism: Option<usize>,
    /// Rows per snapshot chunk.
    pub chunk_rows: Option<u64>,
    /// Change rows buffered before a lake commit.
    pub batch_max_rows: Option<usize>,
    /// Longest a change waits before its lake commit, in milliseconds.
    pub batch_max_ms: Option<u64>,
    /// What a stream table whose position the source no longer has does.
    pub on_position_lost: OnPositionLost,
    /// Warn when a stream position is within this many log files of the oldest kept.
    pub position_warn_files: Option<u64>,
}

/// What a stream table whose position the source no longer holds does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnPositionLost {
    /// The table fails, naming `sluice sync --resnapshot SOURCE.TABLE`.
    #[default]
    Halt,
    /// The table is snapshotted again, and its stream starts after that.
    Resnapshot,
}

macro_rules! shared {
    ($c:expr, $cursor:expr, $tuning:expr) => {
        Shared {
            warehouse: $c.warehouse.as_ref(),
            load: $c.load.as_ref(),
            deletes: $c.deletes,
            schema_changes: $c.schema_changes.as_ref(),
            tables: $c.tables.as_ref(),
            cursor: $cursor,
            scheduling: Scheduling {
                schedule: $c.schedule.as_ref(),
                trigger: $c.trigger.as_ref(),
                poll_interval_secs: $c.poll_interval_secs,
                max_lag_secs: $c.max_lag_secs,
            },
            tuning: $tuning,
        }
    };
}

/// The sizes of a database source's snapshots and stream (`warn`: its log-retention warning).
macro_rules! tuning {
    ($c:expr, $warn:expr) => {
        Tuning {
            snapshot_parallelism: $c.snapshot_parallelism,
            chunk_rows: $c.chunk_rows,
            batch_max_rows: $c.batch_max_rows,
            batch_max_ms: $c.batch_max_ms,
            on_position_lost: $c.on_position_lost.unwrap_or_default(),
            position_warn_files: $warn,
        }
    };
}

/// A PostgreSQL source's sizes: snapshots only (it has no stream yet).
fn pg_tuning(c: &PostgresConfig) -> Tuning {
    Tuning {
        snapshot_parallelism: c.snapshot_parallelism,
        chunk_rows: c.chunk_rows,
        ..Tuning::default()
    }
}

impl SourceConfig {
    /// The kind, as `kind = "..."` writes it.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Files(_) => "files",
            SourceConfig::Mysql(_) => "mysql",
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::Mongodb(_) => "mongodb",
            SourceConfig::Events(_) => "events",
            SourceConfig::Transforms(_) => "transform",
        }
    }

    pub fn shared(&self) -> Shared<'_> {
        match self {
            SourceConfig::Files(c) => shared!(c, None, Tuning::default()),
            SourceConfig::Mysql(c) => {
                shared!(c, c.cursor.as_ref(), tuning!(c, c.position_warn_files))
            }
            SourceConfig::Mongodb(c) => shared!(c, None, tuning!(c, None)),
            SourceConfig::Postgres(c) => shared!(c, c.cursor.as_ref(), pg_tuning(c)),
            // Its tables are a plain list (no sections), and it has no trigger.
            SourceConfig::Events(c) => Shared {
                warehouse: c.warehouse.as_ref(),
                load: c.load.as_ref(),
                deletes: c.deletes,
                schema_changes: c.schema_changes.as_ref(),
                tables: None,
                cursor: None,
                scheduling: Scheduling {
                    schedule: c.schedule.as_ref(),
                    trigger: None,
                    poll_interval_secs: None,
                    max_lag_secs: c.max_lag_secs,
                },
                tuning: Tuning {
                    batch_max_rows: Some(
                        c.batch_max_rows
                            .unwrap_or(super::events::DEFAULT_EVENTS_BATCH_ROWS),
                    ),
                    batch_max_ms: Some(
                        c.batch_max_ms
                            .unwrap_or(super::events::DEFAULT_EVENTS_BATCH_MS),
                    ),
                    ..Tuning::default()
                },
            },
            // Each transform is a table section; they follow their inputs (one schedule each,
            // read by the transforms' stream).
            SourceConfig::Transforms(c) => Shared {
                tables: Some(c.tables()),
                scheduling: Scheduling {
                    schedule: None,
                    trigger: None,
                    poll_interval_secs: None,
                    max_lag_secs: None,
                },
                ..Shared::default()
            },
        }
    }

    /// The capture mode (files: snapshot, each new file once).
    pub fn mode(&self) -> Mode {
        match self {
            SourceConfig::Mysql(c) => c.mode(),
            SourceConfig::Mongodb(c) => c.mode(),
            SourceConfig::Postgres(c) => c.mode(),
            SourceConfig::Events(c) => c.mode(),
            SourceConfig::Transforms(c) => c.mode(),
            _ => Mode::Snapshot,
        }
    }

    /// Whether the source's tables are found by asking it (databases) rather than named by
    /// the config (a files source feeds the one table it names, an events source those it
    /// lists).
    pub fn discovers_tables(&self) -> bool {
        !matches!(
            self,
            SourceConfig::Files(_) | SourceConfig::Events(_) | SourceConfig::Transforms(_)
        )
    }

    /// Whether a completed capture is the whole table (a database snapshot) rather than the
    /// rows added since the last (the files one sync found).
    pub fn images_are_whole(&self) -> bool {
        !matches!(self, SourceConfig::Files(_))
    }

    /// Where the source is, for messages (never a secret: database URLs carry no password).
    pub fn location(&self) -> String {
        match self {
            SourceConfig::Files(c) => c.url.clone(),
            SourceConfig::Transforms(_) => TRANSFORMS_SOURCE.to_string(),
            other => other.kind().to_string(),
        }
    }

    pub fn as_files(&self) -> Option<&FilesConfig> {
        match self {
            SourceConfig::Files(c) => Some(c),
            _ => None,
        }
    }

    pub fn as_mongodb(&self) -> Option<&MongodbConfig> {
        match self {
            SourceConfig::Mongodb(c) => Some(c),
            _ => None,
        }
    }

    pub fn as_events(&self) -> Option<&EventsConfig> {
        match self {
            SourceConfig::Events(c) => Some(c),
            _ => None,
        }
    }

    pub fn as_transforms(&self) -> Option<&TransformsConfig> {
        match self {
            SourceConfig::Transforms(c) => Some(c),
            _ => None,
        }
    }

    pub fn as_postgres(&self) -> Option<&PostgresConfig> {
        match self {
            SourceConfig::Postgres(c) => Some(c),
            _ => None,
        }
    }

    pub fn as_mysql(&self) -> Option<&MysqlConfig> {
        match self {
            SourceConfig::Mysql(c) => Some(c),
            _ => None,
        }
    }
}

/// The key an "unknown field" error names.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

/// Checks a source's keys against its kind before it is parsed, so every key it does not take
/// is named at once (a strict parse stops at the first): each such key is removed from `src`
/// and reported as `(key, message)`, saying which kind takes it when one does.
pub(super) fn strip_unknown_keys(src: &mut toml::Table) -> Vec<(String, String)> {
    let mut found = Vec::new();
    while let Err(e) = toml::Value::Table(src.clone()).try_into::<SourceConfig>() {
        let Some(key) = unknown_field(&e.to_string()).filter(|k| src.contains_key(k)) else {
            break;
        };
        let value = src.remove(&key).expect("checked above");
        let kind = src
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("?")
            .to_string();
        let takers: Vec<&str> = ["files", "mysql", "postgres", "mongodb", "events"]
            .into_iter()
            .filter(|other| *other != kind)
            .filter(|other| {
                let mut probe = toml::Table::new();
                probe.insert("kind".into(), toml::Value::String(other.to_string()));
                probe.insert(key.clone(), value.clone());
                toml::Value::Table(probe)
                    .try_into::<SourceConfig>()
                    .err()
                    .is_none_or(|e| !e.to_string().contains("unknown field"))
            })
            .collect();
        let message = match takers.as_slice() {
            [] => format!("`{key}` is not an option of {kind} sources"),
            t => format!(
                "`{key}` is not an option of {kind} sources (it is a {} source option)",
                t.join(" and ")
            ),
        };
        found.push((key, message));
    }
    found
}
