//! `kind = "events"`: an HTTP collector. Applications POST events (NDJSON or a JSON array) to
//! `/events/SOURCE[/TABLE]` on `sluice serve`'s listener; a 2xx answer means they are
//! committed in the lake. Events become rows by the policy every source of documents shares
//! (`nested`, `max_depth`); new fields reach the warehouse through the schema gate.

use serde::Deserialize;

use super::{Deletes, LoadSpec, Mode, Nested, SchemaChangesSpec};
use crate::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// The tables events are posted to (`/events/SOURCE/TABLE`); default one, `events`
    /// (`/events/SOURCE` posts there).
    pub tables: Option<Vec<String>>,
    /// The bearer token clients send (`Authorization: Bearer …`); required when serve
    /// listens off loopback.
    pub token: Option<Secret>,
    /// The field holding each event's id: the table's key, and what a retried request is
    /// recognised by (an id already landed is not landed again).
    pub id_field: Option<String>,
    /// The field holding when the event happened (RFC 3339 text, or milliseconds since the
    /// epoch): `_sluice_source_ts`. Default: when the collector received it.
    pub time_field: Option<String>,
    /// How long ids are remembered to drop retried events, in seconds; default 600. Costs
    /// about 20 bytes of memory per event received in that time.
    pub dedupe_secs: Option<u64>,
    /// json (default) | flatten: what nested objects become.
    pub nested: Option<Nested>,
    /// With `nested = "flatten"`: levels of objects flattened; deeper ones stay JSON text.
    pub max_depth: Option<usize>,
    /// Largest request body accepted (after gzip), in bytes; default 8 MiB (413 beyond).
    pub max_body_bytes: Option<usize>,
    /// Bytes of requests held until their lake commit; default 64 MiB (429 beyond).
    pub buffer_mb: Option<usize>,
    /// Events buffered before a lake commit; default 100,000.
    pub batch_max_rows: Option<usize>,
    /// Longest an event waits for its lake commit (and its client for the answer), in
    /// milliseconds; default 200.
    pub batch_max_ms: Option<u64>,
    pub warehouse: Option<String>,
    /// append (default without `id_field`) | merge (default with it) | history, or a list.
    pub load: Option<LoadSpec>,
    pub deletes: Option<Deletes>,
    /// halt | evolve | freeze, or per kind of change.
    pub schema_changes: Option<SchemaChangesSpec>,
    /// Always `continuous` (events arrive when they arrive).
    pub schedule: Option<String>,
    pub max_lag_secs: Option<u64>,
}

/// The table `/events/SOURCE` posts to when `tables` names none.
pub const DEFAULT_EVENTS_TABLE: &str = "events";
pub const DEFAULT_EVENTS_BODY_BYTES: usize = 8 << 20;
pub const DEFAULT_EVENTS_BUFFER_MB: usize = 64;
pub const DEFAULT_EVENTS_BATCH_ROWS: usize = 100_000;
pub const DEFAULT_EVENTS_BATCH_MS: u64 = 200;
pub const DEFAULT_DEDUPE_SECS: u64 = 600;

impl EventsConfig {
    /// Events stream: their capture follows, like change data capture.
    pub fn mode(&self) -> Mode {
        Mode::Cdc
    }

    pub fn table_names(&self) -> Vec<String> {
        match &self.tables {
            Some(t) if !t.is_empty() => t.clone(),
            _ => vec![DEFAULT_EVENTS_TABLE.to_string()],
        }
    }

    /// Levels of objects flattened into columns (0: objects stay JSON).
    pub fn flatten(&self) -> usize {
        match self.nested {
            Some(Nested::Flatten) => self.max_depth.unwrap_or(super::DEFAULT_MAX_DEPTH),
            _ => 0,
        }
    }

    /// The key of every table: the id field, when set.
    pub fn key(&self) -> Vec<String> {
        self.id_field.iter().cloned().collect()
    }

    /// Checks without I/O: `(field, message)` pairs.
    pub(super) fn validate(&self) -> Vec<(String, String)> {
        let mut errs: Vec<(String, String)> = Vec::new();
        let mut err = |key: &str, message: String| errs.push((key.to_string(), message));
        for t in self.tables.iter().flatten() {
            if crate::pattern::is_pattern(t) || t.is_empty() || t.contains('/') {
                err(
                    "tables",
                    format!("`{t}` is not a table name: an events source names its tables (they are where clients post)"),
                );
            }
        }
        if self.max_depth.is_some() && self.nested != Some(Nested::Flatten) {
            err("max_depth", "applies to nested = \"flatten\" only".into());
        }
        if let Some(s) = self.schedule.as_deref().filter(|s| *s != "continuous") {
            err(
                "schedule",
                format!("`{s}`: events are taken as they arrive, so the schedule is continuous"),
            );
        }
        for (key, value) in [
            ("max_depth", self.max_depth.map(|v| v as u64)),
            ("max_body_bytes", self.max_body_bytes.map(|v| v as u64)),
            ("buffer_mb", self.buffer_mb.map(|v| v as u64)),
            ("batch_max_rows", self.batch_max_rows.map(|v| v as u64)),
            ("batch_max_ms", self.batch_max_ms),
            ("dedupe_secs", self.dedupe_secs),
        ] {
            if value == Some(0) {
                err(key, "must be at least 1".into());
            }
        }
        if self.max_body_bytes.is_some() || self.buffer_mb.is_some() {
            let body = self.max_body_bytes.unwrap_or(DEFAULT_EVENTS_BODY_BYTES);
            let buffer = self.buffer_mb.unwrap_or(DEFAULT_EVENTS_BUFFER_MB);
            if buffer > 0 && body > buffer << 20 {
                err(
                    "max_body_bytes",
                    format!("{body} is more than the buffer ({buffer} MiB): such a request could never be taken"),
                );
            }
        }
        if let Some(l) = &self.load {
            if l.modes().contains(&super::LoadMode::Replace) {
                err(
                    "load",
                    "load = \"replace\" rebuilds a table from a complete snapshot; events only add: use append, merge or history".into(),
                );
            }
        }
        errs
    }
}
