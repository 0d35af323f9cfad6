//! `kind = "mysql"`: a MySQL 8 or MariaDB 10.5+ database, by snapshot, incremental reads or
//! binlog CDC.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::OnPositionLost;
use super::{
    database_source_errors, database_url_errors, DatabaseChecks, Deletes, LoadSpec, Mode,
    SchemaChangesSpec, Tables,
};
use crate::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// `mysql://user@host:3306/database` (the password goes in `password`).
    pub url: String,
    pub password: Option<Secret>,
    /// snapshot (default) | incremental | cdc.
    pub mode: Option<Mode>,
    /// Tables to capture (a list, or `[sources.x.tables.T]` sections of overrides); default:
    /// every base table of the database.
    pub tables: Option<Tables>,
    /// Warehouse name; default the only one configured.
    pub warehouse: Option<String>,
    /// merge | append | replace | history, or a list; default merge when a key is known, else append.
    pub load: Option<LoadSpec>,
    pub deletes: Option<Deletes>,
    /// halt | evolve | freeze, or per kind of change.
    pub schema_changes: Option<SchemaChangesSpec>,
    /// TLS: disabled | preferred (default) | required | verify_ca | verify_identity.
    pub ssl_mode: Option<String>,
    /// CA certificate (PEM) for verify_ca / verify_identity.
    pub ssl_ca: Option<String>,
    /// Cursor column for `mode = "incremental"` (tables may override).
    pub cursor: Option<String>,
    /// Snapshot chunks read at once, each on its own connection; default 2.
    pub snapshot_parallelism: Option<usize>,
    /// Rows per snapshot chunk (the unit of resumption); default 100,000.
    pub chunk_rows: Option<u64>,
    /// Server id sluice uses as a binlog replica; default derived from the source name.
    pub server_id: Option<u32>,
    /// CDC: changes buffered before a lake commit; default 20,000.
    pub batch_max_rows: Option<usize>,
    /// CDC: longest a change waits before its lake commit, in milliseconds; default 1,000.
    pub batch_max_ms: Option<u64>,
    /// CDC: MB of row events one open transaction holds in memory before its rows go to the
    /// lake ahead of its end (written, committed only with it); default 64.
    pub txn_buffer_mb: Option<u64>,
    /// CDC: what a table whose binlog position the server purged does: halt (default: the
    /// table fails naming `--resnapshot`) or resnapshot (by itself).
    pub on_position_lost: Option<OnPositionLost>,
    /// CDC: warn when a table's position is within this many binlog files of the oldest the
    /// server keeps (the next purge takes them); default 1.
    pub position_warn_files: Option<u64>,
    /// Scheduling keys of `sluice serve` (refused until it exists).
    pub trigger: Option<String>,
    pub poll_interval_secs: Option<u64>,
    pub schedule: Option<String>,
    pub max_lag_secs: Option<u64>,
}

impl MysqlConfig {
    pub fn mode(&self) -> Mode {
        self.mode.unwrap_or(Mode::Snapshot)
    }

    /// The tables defined by a query (`[sources.S.tables.NAME] query = "SELECT …"`), by name,
    /// each query without a trailing `;`.
    pub fn queries(&self) -> BTreeMap<String, String> {
        let Some(Tables::Map(m)) = &self.tables else {
            return BTreeMap::new();
        };
        m.iter()
            .filter_map(|(name, t)| Some((name.clone(), t.query.as_deref()?)))
            .map(|(name, q)| (name, q.trim().trim_end_matches(';').trim_end().to_string()))
            .collect()
    }

    /// Checks without I/O: `(field, message)` pairs. `cursors` are the cursor columns of the
    /// configured tables (None: a table without one).
    pub(super) fn validate(&self, cursors: &[(String, Option<String>)]) -> Vec<(String, String)> {
        let mut errs: Vec<(String, String)> =
            database_url_errors(&self.url, &["mysql"], "mysql://user@host:3306")
                .into_iter()
                .map(|(k, m)| (k.to_string(), m))
                .collect();
        let mut err = |key: &str, message: String| errs.push((key.to_string(), message));
        match self.ssl_mode.as_deref() {
            None | Some("disabled") | Some("preferred") | Some("required") => {}
            Some("verify_ca") | Some("verify_identity") => {
                if self.ssl_ca.is_none() {
                    err(
                        "ssl_ca",
                        "verify_ca and verify_identity need ssl_ca = \"/path/ca.pem\"".into(),
                    );
                }
            }
            Some(other) => err(
                "ssl_mode",
                format!("`{other}` is not one of disabled, preferred, required, verify_ca, verify_identity"),
            ),
        }
        if self.batch_max_rows == Some(0) {
            err("batch_max_rows", "must be at least 1".into());
        }
        for (table, query) in self.queries() {
            let field = format!("tables.{table}.query");
            if query.is_empty() {
                err(&field, "is empty: give one SELECT".into());
            } else if self.mode() == Mode::Cdc {
                err(
                    &field,
                    format!("a query has no binlog to follow: read `{table}` with mode = \"snapshot\" or \"incremental\" (a separate source), or capture the tables it reads"),
                );
            }
        }
        if self.txn_buffer_mb == Some(0) {
            err("txn_buffer_mb", "must be at least 1".into());
        }
        errs.extend(database_source_errors(
            DatabaseChecks {
                kind: "MySQL",
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
