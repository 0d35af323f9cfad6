//! The state store: run history and the leases by which `serve` processes share sources.
//! A SQLite file beside the config by default (`[state] url`), PostgreSQL by URL when several
//! processes on several machines share one config. It holds bookkeeping only: where each
//! table stands is committed in the lake with its data, so losing this store loses history,
//! never a change.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{EngineError, Project};

/// Default file of the run history, relative to the config.
pub const DEFAULT_URL: &str = "sluice-state.db";
/// Default lease: a process owns a source this long after its last heartbeat.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// One table's part in one run (a pass of its source, or a stream until it ended).
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: Option<i64>,
    pub source: String,
    pub table: String,
    /// `sync` (the command), `schedule`, `arrival`, `continuous`, `api` (a pass asked for),
    /// or `accept` (the load an Accept in the console or API ran).
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// `ok`, `failed` or `halted`.
    pub outcome: String,
    pub rows_extracted: u64,
    pub rows_landed: u64,
    /// Bytes of the data files the landed rows went into (Parquet, compressed).
    pub bytes_landed: u64,
    pub rows_quarantined: u64,
    pub changes_loaded: u64,
    /// The lake version after the run's last commit.
    pub lake_version: Option<i64>,
    /// Why it failed, or why it halted.
    pub error: Option<String>,
}

/// Which runs [`StateStore::runs`] reads: each field narrows (None: any).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFilter<'a> {
    pub source: Option<&'a str>,
    pub table: Option<&'a str>,
    /// `ok`, `failed` or `halted`.
    pub outcome: Option<&'a str>,
    /// Only each table's latest run.
    pub latest_per_table: bool,
}

pub enum StateStore {
    Sqlite(Mutex<rusqlite::Connection>),
    Postgres(tokio_postgres::Client),
}

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL, table_name TEXT NOT NULL, trigger TEXT NOT NULL,
    started_at TEXT NOT NULL, ended_at TEXT NOT NULL, outcome TEXT NOT NULL,
    rows_extracted INTEGER NOT NULL, rows_landed INTEGER NOT NULL, bytes_landed INTEGER NOT NULL,
    rows_quarantined INTEGER NOT NULL, changes_loaded INTEGER NOT NULL,
    lake_version INTEGER, error TEXT);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_ms INTEGER NOT NULL);
";

const PG_SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS _sluice;
CREATE TABLE IF NOT EXISTS _sluice.runs (
    id BIGSERIAL PRIMARY KEY,
    source TEXT NOT NULL, table_name TEXT NOT NULL, trigger TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL, ended_at TIMESTAMPTZ NOT NULL, outcome TEXT NOT NULL,
    rows_extracted BIGINT NOT NULL, rows_landed BIGINT NOT NULL, bytes_landed BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL, changes_loaded BIGINT NOT NULL,
    lake_version BIGINT, error TEXT);
CREATE TABLE IF NOT EXISTS _sluice.leases (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_ms BIGINT NOT NULL);
";

/// Takes a lease that is free, expired or already the owner's, and extends it; a row comes
/// back only when the caller owns it now.
const SQLITE_TAKE_LEASE: &str = "
INSERT INTO leases (name, owner, expires_ms) VALUES (?1, ?2, ?3 + ?4)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms
WHERE leases.owner = excluded.owner OR leases.expires_ms < ?3
RETURNING owner";

/// The same on PostgreSQL, on the server's clock (processes on several machines).
const PG_TAKE_LEASE: &str = "
WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms)
INSERT INTO _sluice.leases AS l (name, owner, expires_ms)
SELECT $1, $2, ms + $3 FROM now
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms
WHERE l.owner = excluded.owner OR l.expires_ms < (SELECT ms FROM now)
RETURNING owner";

fn err(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("state store: {what}: {e}"))
}

impl StateStore {
    /// Opens the project's state store (`[state] url`, default `sluice-state.db` beside the
    /// config), creating its tables when missing.
    pub async fn open(project: &Project) -> Result<StateStore, EngineError> {
        let state = project.config.state.as_ref();
        let url = state.map(|s| s.url.as_str()).unwrap_or(DEFAULT_URL);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let state = state.expect("a postgres url is configured");
            let password = match &state.password {
                Some(s) => Some(
                    s.resolve()
                        .map_err(|e| EngineError::Usage(format!("state.password: {e}")))?,
                ),
                None => None,
            };
            let opts = sluice_warehouses::postgres::PgOptions {
                url: url.to_string(),
                password,
                ssl_mode: state.ssl_mode.clone(),
                ssl_ca: state.ssl_ca.clone(),
            };
            let client = sluice_warehouses::postgres::connect_client(&opts)
                .await
                .map_err(|e| err("connecting", e))?;
            // Processes starting together create the tables one at a time.
            client
                .batch_execute(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock(7250031); {PG_SCHEMA} COMMIT;"
                ))
                .await
                .map_err(|e| err("creating its tables", e))?;
            return Ok(StateStore::Postgres(client));
        }
        let path = project
            .config
            .resolve_path(url.trim_start_matches("sqlite://"));
        let conn = rusqlite::Connection::open(&path).map_err(|e| err(&path, e))?;
        // Several processes may share the file: wait for a writer rather than fail.
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| err(&path, e))?;
        conn.execute_batch(&format!("PRAGMA journal_mode = WAL; {SQLITE_SCHEMA}"))
            .map_err(|e| err(&path, e))?;
        Ok(StateStore::Sqlite(Mutex::new(conn)))
    }

    pub async fn record(&self, runs: &[RunRecord]) -> Result<(), EngineError> {
        match self {
            StateStore::Sqlite(conn) => {
                let mut conn = conn.lock().expect("state store");
                let tx = conn.transaction().map_err(|e| err("recording runs", e))?;
                for r in runs {
                    tx.execute(
                        "INSERT INTO runs (source, table_name, trigger, started_at, ended_at, outcome, rows_extracted, rows_landed, bytes_landed, rows_quarantined, changes_loaded, lake_version, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                        rusqlite::params![
                            r.source, r.table, r.trigger,
                            r.started_at.to_rfc3339(), r.ended_at.to_rfc3339(), r.outcome,
                            r.rows_extracted as i64, r.rows_landed as i64, r.bytes_landed as i64,
                            r.rows_quarantined as i64, r.changes_loaded as i64,
                            r.lake_version, r.error,
                        ],
                    )
                    .map_err(|e| err("recording runs", e))?;
                }
                tx.commit().map_err(|e| err("recording runs", e))
            }
            StateStore::Postgres(client) => {
                for r in runs {
                    client
                        .execute(
                            "INSERT INTO _sluice.runs (source, table_name, trigger, started_at, ended_at, outcome, rows_extracted, rows_landed, bytes_landed, rows_quarantined, changes_loaded, lake_version, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                            &[
                                &r.source, &r.table, &r.trigger, &r.started_at, &r.ended_at,
                                &r.outcome, &(r.rows_extracted as i64), &(r.rows_landed as i64), &(r.bytes_landed as i64),
                                &(r.rows_quarantined as i64), &(r.changes_loaded as i64),
                                &r.lake_version, &r.error,
                            ],
                        )
                        .await
                        .map_err(|e| err("recording runs", e))?;
                }
                Ok(())
            }
        }
    }

    /// The latest `limit` runs that `filter` lets through, newest first.
    pub async fn runs(
        &self,
        limit: usize,
        filter: &RunFilter<'_>,
    ) -> Result<Vec<RunRecord>, EngineError> {
        let RunFilter {
            source,
            table,
            outcome,
            latest_per_table,
        } = *filter;
        const COLUMNS: &str = "id, source, table_name, trigger, started_at, ended_at, outcome, rows_extracted, rows_landed, rows_quarantined, changes_loaded, lake_version, error, bytes_landed";
        match self {
            StateStore::Sqlite(conn) => {
                let conn = conn.lock().expect("state store");
                let mut stmt = conn
                    .prepare(&format!(
                        "SELECT {COLUMNS} FROM runs WHERE (?1 IS NULL OR source = ?1) \
                         AND (?3 IS NULL OR table_name = ?3) AND (?4 IS NULL OR outcome = ?4) \
                         AND (?5 = 0 OR id IN (SELECT max(id) FROM runs GROUP BY source, table_name)) \
                         ORDER BY id DESC LIMIT ?2"
                    ))
                    .map_err(|e| err("reading runs", e))?;
                let time = |s: String| {
                    DateTime::parse_from_rfc3339(&s)
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or_default()
                };
                let rows = stmt
                    .query_map(
                        rusqlite::params![source, limit as i64, table, outcome, latest_per_table],
                        |row| {
                            Ok(RunRecord {
                                id: row.get(0)?,
                                source: row.get(1)?,
                                table: row.get(2)?,
                                trigger: row.get(3)?,
                                started_at: time(row.get(4)?),
                                ended_at: time(row.get(5)?),
                                outcome: row.get(6)?,
                                rows_extracted: row.get::<_, i64>(7)? as u64,
                                rows_landed: row.get::<_, i64>(8)? as u64,
                                rows_quarantined: row.get::<_, i64>(9)? as u64,
                                changes_loaded: row.get::<_, i64>(10)? as u64,
                                lake_version: row.get(11)?,
                                error: row.get(12)?,
                                bytes_landed: row.get::<_, i64>(13)? as u64,
                            })
                        },
                    )
                    .map_err(|e| err("reading runs", e))?;
                rows.collect::<Result<_, _>>()
                    .map_err(|e| err("reading runs", e))
            }
            StateStore::Postgres(client) => {
                let rows = client
                    .query(
                        &format!(
                            "SELECT {COLUMNS} FROM _sluice.runs WHERE ($1::text IS NULL OR source = $1) \
                             AND ($3::text IS NULL OR table_name = $3) AND ($4::text IS NULL OR outcome = $4) \
                             AND (NOT $5::boolean OR id IN (SELECT max(id) FROM _sluice.runs GROUP BY source, table_name)) \
                             ORDER BY id DESC LIMIT $2"
                        ),
                        &[&source, &(limit as i64), &table, &outcome, &latest_per_table],
                    )
                    .await
                    .map_err(|e| err("reading runs", e))?;
                Ok(rows
                    .iter()
                    .map(|row| RunRecord {
                        id: row.get(0),
                        source: row.get(1),
                        table: row.get(2),
                        trigger: row.get(3),
                        started_at: row.get(4),
                        ended_at: row.get(5),
                        outcome: row.get(6),
                        rows_extracted: row.get::<_, i64>(7) as u64,
                        rows_landed: row.get::<_, i64>(8) as u64,
                        rows_quarantined: row.get::<_, i64>(9) as u64,
                        changes_loaded: row.get::<_, i64>(10) as u64,
                        lake_version: row.get(11),
                        error: row.get(12),
                        bytes_landed: row.get::<_, i64>(13) as u64,
                    })
                    .collect())
            }
        }
    }

    /// Takes or renews lease `name` for `owner` for `ttl`: true when `owner` holds it now.
    pub async fn take_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, EngineError> {
        let ttl_ms = ttl.as_millis() as i64;
        match self {
            StateStore::Sqlite(conn) => {
                let conn = conn.lock().expect("state store");
                let now_ms = Utc::now().timestamp_millis();
                let mut stmt = conn
                    .prepare_cached(SQLITE_TAKE_LEASE)
                    .map_err(|e| err("taking a lease", e))?;
                let mut rows = stmt
                    .query(rusqlite::params![name, owner, now_ms, ttl_ms])
                    .map_err(|e| err("taking a lease", e))?;
                Ok(rows.next().map_err(|e| err("taking a lease", e))?.is_some())
            }
            StateStore::Postgres(client) => {
                let rows = client
                    .query(PG_TAKE_LEASE, &[&name, &owner, &ttl_ms])
                    .await
                    .map_err(|e| err("taking a lease", e))?;
                Ok(!rows.is_empty())
            }
        }
    }

    /// Leases named `prefix…` held now (by anyone).
    pub async fn live_leases(&self, prefix: &str) -> Result<usize, EngineError> {
        let pattern = like_prefix(prefix);
        match self {
            StateStore::Sqlite(conn) => {
                let conn = conn.lock().expect("state store");
                conn.query_row(
                    "SELECT count(*) FROM leases WHERE name LIKE ?1 ESCAPE '\\' AND expires_ms >= ?2",
                    rusqlite::params![pattern, Utc::now().timestamp_millis()],
                    |row| row.get::<_, i64>(0),
                )
                .map(|n| n as usize)
                .map_err(|e| err("counting leases", e))
            }
            StateStore::Postgres(client) => {
                let row = client
                    .query_one(
                        "SELECT count(*) FROM _sluice.leases WHERE name LIKE $1 ESCAPE '\\' AND expires_ms >= (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                        &[&pattern],
                    )
                    .await
                    .map_err(|e| err("counting leases", e))?;
                Ok(row.get::<_, i64>(0) as usize)
            }
        }
    }

    /// Deletes the expired leases named `prefix…` (leases named per tick would pile up).
    pub async fn forget_expired_leases(&self, prefix: &str) -> Result<(), EngineError> {
        let pattern = like_prefix(prefix);
        match self {
            StateStore::Sqlite(conn) => {
                let conn = conn.lock().expect("state store");
                conn.execute(
                    "DELETE FROM leases WHERE name LIKE ?1 ESCAPE '\\' AND expires_ms < ?2",
                    rusqlite::params![pattern, Utc::now().timestamp_millis()],
                )
                .map_err(|e| err("forgetting leases", e))?;
            }
            StateStore::Postgres(client) => {
                client
                    .execute(
                        "DELETE FROM _sluice.leases WHERE name LIKE $1 ESCAPE '\\' AND expires_ms < (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                        &[&pattern],
                    )
                    .await
                    .map_err(|e| err("forgetting leases", e))?;
            }
        }
        Ok(())
    }

    /// Gives lease `name` up, if `owner` holds it (a clean stop hands sources over at once).
    pub async fn release_lease(&self, name: &str, owner: &str) -> Result<(), EngineError> {
        match self {
            StateStore::Sqlite(conn) => {
                let conn = conn.lock().expect("state store");
                conn.execute(
                    "DELETE FROM leases WHERE name = ?1 AND owner = ?2",
                    rusqlite::params![name, owner],
                )
                .map_err(|e| err("releasing a lease", e))?;
            }
            StateStore::Postgres(client) => {
                client
                    .execute(
                        "DELETE FROM _sluice.leases WHERE name = $1 AND owner = $2",
                        &[&name, &owner],
                    )
                    .await
                    .map_err(|e| err("releasing a lease", e))?;
            }
        }
        Ok(())
    }
}

/// A LIKE pattern (escaped with `\`) matching the names that start with `prefix`.
fn like_prefix(prefix: &str) -> String {
    format!("{}%", prefix.replace('%', "\\%").replace('_', "\\_"))
}

/// Renders runs as lines for `sluice runs`.
pub fn render(runs: &[RunRecord]) -> String {
    let mut out = String::new();
    for r in runs {
        let secs = (r.ended_at - r.started_at).num_milliseconds() as f64 / 1000.0;
        out += &format!(
            "{}  {}.{}  {} ({})  {:.1}s  extracted {}, landed {} ({} bytes), quarantined {}, loaded {}{}\n",
            r.started_at.format("%Y-%m-%d %H:%M:%S"),
            r.source,
            r.table,
            r.outcome,
            r.trigger,
            secs,
            r.rows_extracted,
            r.rows_landed,
            r.bytes_landed,
            r.rows_quarantined,
            r.changes_loaded,
            r.lake_version
                .map(|v| format!(", lake version {v}"))
                .unwrap_or_default()
        );
        if let Some(e) = &r.error {
            out += &format!("    {e}\n");
        }
    }
    out
}

/// Builds a run's records from a sync report.
pub fn records_of(
    report: &crate::sync::SyncReport,
    trigger: &str,
    started_at: DateTime<Utc>,
) -> Vec<RunRecord> {
    let ended_at = Utc::now();
    report
        .tables
        .iter()
        .map(|t| RunRecord {
            id: None,
            source: t.source.clone(),
            table: t.table.clone(),
            trigger: trigger.to_string(),
            started_at,
            ended_at,
            outcome: if t.error.is_some() {
                "failed"
            } else if t.halted.is_some() {
                "halted"
            } else {
                "ok"
            }
            .to_string(),
            rows_extracted: t.extract.rows + t.extract.rejects,
            rows_landed: t.extract.rows,
            bytes_landed: t.extract.bytes,
            rows_quarantined: t.extract.rejects,
            changes_loaded: t.loads.iter().map(|l| l.changes).sum(),
            lake_version: t.extract.lake_version,
            // A halted run's record says why, as a failed one's does.
            error: t.error.clone().or_else(|| t.halted.clone()),
        })
        .collect()
}
