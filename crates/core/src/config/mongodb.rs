//! `kind = "mongodb"`: a MongoDB replica set (or a server speaking its protocol), by snapshot
//! or change streams. Collections are tables; documents become rows by the same policy as
//! JSON files (`nested`, `max_depth`).

use serde::Deserialize;

use super::OnPositionLost;
use super::{Deletes, LoadMode, LoadSpec, Mode, Nested, SchemaChangesSpec, Tables};
use crate::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongodbConfig {
    /// `mongodb://user@host:27017/database` or `mongodb+srv://user@cluster.example.net/database`
    /// (the password goes in `password`); options after `?` are the driver's.
    pub url: String,
    pub password: Option<Secret>,
    /// snapshot (default) | cdc.
    pub mode: Option<Mode>,
    /// Collections to capture (a list, or `[sources.x.tables.C]` sections of overrides);
    /// default: every collection of the database.
    pub tables: Option<Tables>,
    pub warehouse: Option<String>,
    /// merge | append | replace | history, or a list; default merge (the key is `_id`).
    pub load: Option<LoadSpec>,
    pub deletes: Option<Deletes>,
    /// halt | evolve | freeze, or per kind of change.
    pub schema_changes: Option<SchemaChangesSpec>,
    /// Connect with TLS (also `?tls=true` in the URL).
    pub tls: Option<bool>,
    /// CA certificate (PEM) the server's certificate is checked against.
    pub tls_ca_file: Option<String>,
    /// Client certificate and its key in one PEM file, for servers that ask for one.
    pub tls_cert_key_file: Option<String>,
    /// primary (default) | primaryPreferred | secondary | secondaryPreferred | nearest.
    pub read_preference: Option<String>,
    /// json (default) | flatten: what embedded documents become.
    pub nested: Option<Nested>,
    /// With `nested = "flatten"`: levels of documents flattened; deeper ones stay JSON text.
    pub max_depth: Option<usize>,
    /// Documents sampled per collection (half the first by `_id`, half the last) to infer its
    /// columns; default 1,000. A field the sample missed arrives as a schema change in CDC
    /// and is quarantined, named, in a snapshot.
    pub sample_docs: Option<usize>,
    /// Snapshot chunks read at once, each on its own cursor; default 2.
    pub snapshot_parallelism: Option<usize>,
    /// Documents per snapshot chunk (the unit of resumption); default 100,000.
    pub chunk_rows: Option<u64>,
    /// CDC: changes buffered before a lake commit; default 20,000.
    pub batch_max_rows: Option<usize>,
    /// CDC: longest a change waits before its lake commit, in milliseconds; default 1,000.
    pub batch_max_ms: Option<u64>,
    /// CDC: what a collection whose resume token the oplog no longer holds does: halt
    /// (default: it fails naming `--resnapshot`) or resnapshot.
    pub on_position_lost: Option<OnPositionLost>,
    pub schedule: Option<String>,
    pub trigger: Option<String>,
    pub poll_interval_secs: Option<u64>,
    pub max_lag_secs: Option<u64>,
}

/// Documents sampled per collection by default.
pub const DEFAULT_SAMPLE_DOCS: usize = 1000;

impl MongodbConfig {
    pub fn mode(&self) -> Mode {
        self.mode.unwrap_or(Mode::Snapshot)
    }

    /// Checks without I/O: `(field, message)` pairs.
    pub(super) fn validate(&self) -> Vec<(String, String)> {
        let mut errs: Vec<(String, String)> = Vec::new();
        let mut err = |key: &str, message: String| errs.push((key.to_string(), message));
        let example = "mongodb://user@host:27017/database";
        match url::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "mongodb" | "mongodb+srv") => {
                if u.password().is_some() {
                    err(
                        "url",
                        "holds a password: put it in `password = { env = \"NAME\" }` or `{ file = \"PATH\" }`".into(),
                    );
                }
                if u.path().trim_matches('/').is_empty() {
                    err("url", format!("names no database: {example}"));
                }
            }
            _ => err(
                "url",
                format!("must look like {example} (or mongodb+srv://)"),
            ),
        }
        if self.mode() == Mode::Incremental {
            err(
                "mode",
                "MongoDB sources read by snapshot or cdc (change streams); there is no cursor column".into(),
            );
        }
        if let Some(p) = &self.read_preference {
            if !matches!(
                p.as_str(),
                "primary" | "primaryPreferred" | "secondary" | "secondaryPreferred" | "nearest"
            ) {
                err(
                    "read_preference",
                    format!("`{p}` is not one of primary, primaryPreferred, secondary, secondaryPreferred, nearest"),
                );
            }
        }
        if self.tls == Some(false)
            && (self.tls_ca_file.is_some() || self.tls_cert_key_file.is_some())
        {
            err("tls", "tls = false with TLS files set".into());
        }
        if self.max_depth.is_some() && self.nested != Some(Nested::Flatten) {
            err("max_depth", "applies to nested = \"flatten\" only".into());
        }
        for (key, value) in [
            ("sample_docs", self.sample_docs.map(|v| v as u64)),
            ("max_depth", self.max_depth.map(|v| v as u64)),
            (
                "snapshot_parallelism",
                self.snapshot_parallelism.map(|v| v as u64),
            ),
            ("chunk_rows", self.chunk_rows),
            ("batch_max_rows", self.batch_max_rows.map(|v| v as u64)),
        ] {
            if value == Some(0) {
                err(key, "must be at least 1".into());
            }
        }
        let replaces = |l: &Option<LoadSpec>| {
            l.as_ref()
                .is_some_and(|l| l.modes().contains(&LoadMode::Replace))
        };
        if self.mode() == Mode::Cdc && replaces(&self.load) {
            err(
                "load",
                "load = \"replace\" rebuilds a table from each complete snapshot, but mode = \"cdc\" brings changes: use merge, append or history".into(),
            );
        }
        errs
    }
}
