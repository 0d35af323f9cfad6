//! `kind = "postgres"`: the tables of one PostgreSQL schema, by snapshot or incremental
//! reads (logical replication is refused until it is built).

use serde::Deserialize;

use super::{
    database_source_errors, validate_postgres, DatabaseChecks, Deletes, LoadSpec, Mode,
    SchemaChangesSpec, Tables,
};
use crate::secret::Secret;

/// The schema read when none is configured.
pub const DEFAULT_PG_SCHEMA: &str = "public";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user@host:5432/database` (the password goes in `password`).
    pub url: String,
    pub password: Option<Secret>,
    /// snapshot (default) | incremental.
    pub mode: Option<Mode>,
    /// The schema whose tables are read; default `public`.
    pub schema: Option<String>,
    /// Tables to capture (a list, or `[sources.x.tables.T]` sections of overrides); default:
    /// every table of the schema.
    pub tables: Option<Tables>,
    pub warehouse: Option<String>,
    /// merge | append | replace | history, or a list; default merge when a key is known, else append.
    pub load: Option<LoadSpec>,
    pub deletes: Option<Deletes>,
    /// halt | evolve | freeze, or per kind of change.
    pub schema_changes: Option<SchemaChangesSpec>,
    /// TLS, as libpq names it: disable | prefer (default) | require | verify-ca | verify-full.
    pub ssl_mode: Option<String>,
    /// CA certificate (PEM) for verify-ca / verify-full.
    pub ssl_ca: Option<String>,
    /// Cursor column for `mode = "incremental"` (tables may override).
    pub cursor: Option<String>,
    /// Snapshot chunks read at once, each on its own connection in one shared snapshot;
    /// default 2.
    pub snapshot_parallelism: Option<usize>,
    /// Rows per snapshot chunk (the unit of resumption); default 100,000.
    pub chunk_rows: Option<u64>,
    pub schedule: Option<String>,
    pub trigger: Option<String>,
    pub poll_interval_secs: Option<u64>,
    pub max_lag_secs: Option<u64>,
}

impl PostgresConfig {
    pub fn mode(&self) -> Mode {
        self.mode.unwrap_or(Mode::Snapshot)
    }

    pub fn schema(&self) -> &str {
        self.schema.as_deref().unwrap_or(DEFAULT_PG_SCHEMA)
    }

    /// Checks without I/O: `(field, message)` pairs. `cursors` are the cursor columns of the
    /// configured tables (None: a table without one).
    pub(super) fn validate(&self, cursors: &[(String, Option<String>)]) -> Vec<(String, String)> {
        let mut errs: Vec<(String, String)> = validate_postgres(
            &self.url,
            &["postgres", "postgresql"],
            "postgres://user@host:5432",
            self.ssl_mode.as_deref(),
            self.ssl_ca.is_some(),
        )
        .into_iter()
        .map(|(k, m)| (k.to_string(), m))
        .collect();
        if self.mode() == Mode::Cdc {
            errs.push((
                "mode".into(),
                "mode = \"cdc\" (logical replication) is not in this build yet for PostgreSQL: read with mode = \"snapshot\" or \"incremental\"".into(),
            ));
        }
        if self.schema.as_deref().is_some_and(|s| s.trim().is_empty()) {
            errs.push(("schema".into(), "is empty: name a schema (public)".into()));
        }
        errs.extend(database_source_errors(
            DatabaseChecks {
                kind: "PostgreSQL",
                mode: self.mode(),
                cursor: self.cursor.as_ref(),
                load: self.load.as_ref(),
                tables: self.tables.as_ref(),
                snapshot_parallelism: self.snapshot_parallelism,
                chunk_rows: self.chunk_rows,
            },
            cursors,
        ));
        errs
    }
}
