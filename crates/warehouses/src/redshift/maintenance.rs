//! Table upkeep after loads: `ANALYZE` once enough changes were loaded since the last one,
//! `VACUUM` on a cadence, and the encodings `ANALYZE COMPRESSION` suggests. Redshift runs
//! VACUUM only outside a transaction block, so all of it runs after the load committed; a
//! failure is reported, never undoes the load. What was done since is kept per table in
//! `_sluice.maintenance` (a counter, a time), which a crash between a load and its upkeep can
//! leave one load behind: upkeep is a heuristic, not part of exactly-once.

use std::time::Duration;

use sluice_core::names::quote_ident as q;
use tokio_postgres::Client;

use super::dialect::ENCODINGS;

/// What upkeep a warehouse's loads do (`[warehouses.X]` `analyze_after_changes`, `vacuum`,
/// `vacuum_every_hours`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// ANALYZE a table once this many changes were loaded into it since its last ANALYZE.
    pub analyze_after_changes: Option<u64>,
    /// VACUUM a table with this option (`DELETE ONLY`, `SORT ONLY`, `FULL`) ...
    pub vacuum: Option<String>,
    /// ... when its last VACUUM by sluice is older than this.
    pub vacuum_every: Duration,
}

/// The table upkeep keeps its counts in, created when a warehouse with upkeep connects.
pub const MAINTENANCE_DDL: &str = "CREATE SCHEMA IF NOT EXISTS _sluice;
CREATE TABLE IF NOT EXISTS _sluice.maintenance (
  target_schema VARCHAR(128) NOT NULL,
  target_table VARCHAR(128) NOT NULL,
  changes_since_analyze BIGINT NOT NULL,
  analyzed_at TIMESTAMPTZ,
  vacuumed_at TIMESTAMPTZ
);";

impl Maintenance {
    pub fn is_on(&self) -> bool {
        self.analyze_after_changes.is_some() || self.vacuum.is_some()
    }

    /// The VACUUM statement for `target` (`"schema"."table"`); the PostgreSQL stand-in
    /// takes no Redshift option.
    pub fn vacuum_statement(&self, target: &str, stand_in: bool) -> Option<String> {
        // The option as config spells it (checked there against `VACUUM_OPTIONS`) is its SQL.
        let option = self
            .vacuum
            .as_deref()
            .filter(|o| sluice_core::config::VACUUM_OPTIONS.contains(o))?;
        Some(match stand_in {
            true => format!("VACUUM {target};"),
            false => format!("VACUUM {} {target};", option.to_ascii_uppercase()),
        })
    }

    /// Records `changes` loaded into `schema.table` and runs what is due; returns what was
    /// done (or failed), for the load's report.
    pub async fn after_load(
        &self,
        client: &Client,
        schema: &str,
        table: &str,
        changes: u64,
        stand_in: bool,
    ) -> Vec<String> {
        match self.run(client, schema, table, changes, stand_in).await {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(table = %format!("{schema}.{table}"), "table upkeep after the load failed (the load stands): {e}");
                vec![format!("upkeep failed (the load stands): {e}")]
            }
        }
    }

    async fn run(
        &self,
        client: &Client,
        schema: &str,
        table: &str,
        changes: u64,
        stand_in: bool,
    ) -> Result<Vec<String>, tokio_postgres::Error> {
        let mut done = Vec::new();
        let key: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&schema, &table];
        let changes = changes as i64;
        let updated = client
            .execute(
                "UPDATE _sluice.maintenance SET changes_since_analyze = changes_since_analyze + $3
                  WHERE target_schema = $1 AND target_table = $2",
                &[&schema, &table, &changes],
            )
            .await?;
        if updated == 0 {
            // A table's first upkeep: its VACUUM clock starts now.
            client
                .execute(
                    &format!(
                        "INSERT INTO _sluice.maintenance (target_schema, target_table, changes_since_analyze, vacuumed_at)
                         VALUES ($1, $2, $3, {})",
                        now()
                    ),
                    &[&schema, &table, &changes],
                )
                .await?;
        }
        let row = client
            .query_one(
                "SELECT changes_since_analyze, CAST(EXTRACT(EPOCH FROM vacuumed_at) AS BIGINT) FROM _sluice.maintenance
                  WHERE target_schema = $1 AND target_table = $2",
                &key,
            )
            .await?;
        let pending: i64 = row.get(0);
        let vacuumed_at: Option<i64> = row.get(1);
        let target = format!("{}.{}", q(schema), q(table));
        if let Some(limit) = self.analyze_after_changes {
            if pending as u64 >= limit {
                client.batch_execute(&format!("ANALYZE {target};")).await?;
                client
                    .execute(
                        &format!(
                            "UPDATE _sluice.maintenance SET changes_since_analyze = 0, analyzed_at = {}
                              WHERE target_schema = $1 AND target_table = $2",
                            now()
                        ),
                        &key,
                    )
                    .await?;
                tracing::info!(table = %target, changes = pending, "ANALYZE");
                done.push(format!("ANALYZE after {pending} changed rows"));
            }
        }
        if let Some(vacuum) = self.vacuum_statement(&target, stand_in) {
            let due = match vacuumed_at {
                Some(at) => {
                    let age = chrono::Utc::now().timestamp().saturating_sub(at).max(0) as u64;
                    Duration::from_secs(age) >= self.vacuum_every
                }
                None => true,
            };
            if due {
                client.batch_execute(&vacuum).await?;
                client
                    .execute(
                        &format!(
                            "UPDATE _sluice.maintenance SET vacuumed_at = {}
                              WHERE target_schema = $1 AND target_table = $2",
                            now()
                        ),
                        &key,
                    )
                    .await?;
                tracing::info!(table = %target, "{vacuum}");
                done.push(vacuum.trim_end_matches(';').to_string());
            }
        }
        Ok(done)
    }
}

/// Now, as a literal (Redshift runs `now()` only on its leader node).
fn now() -> String {
    super::dialect::load_time(chrono::Utc::now())
}

/// `ANALYZE COMPRESSION` of one table.
pub fn analyze_compression(target: &str) -> String {
    format!("ANALYZE COMPRESSION {target};")
}

/// One column's suggestion from `ANALYZE COMPRESSION` (its columns: Table, Column, Encoding,
/// Est_reduction_pct).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Suggestion {
    pub column: String,
    pub encoding: String,
    /// The estimated size reduction, in percent of the column.
    pub reduction_pct: f64,
}

/// The statements applying the suggestions that would shrink a column (`ALTER TABLE ... ALTER
/// COLUMN ... ENCODE ...`, each its own transaction in Redshift).
pub fn apply_encodings(target: &str, suggestions: &[Suggestion]) -> Vec<String> {
    suggestions
        .iter()
        // Only encodings Redshift documents: the name goes into the statement unquoted.
        .filter(|s| {
            s.reduction_pct > 0.0 && ENCODINGS.contains(&s.encoding.to_ascii_lowercase().as_str())
        })
        .map(|s| {
            format!(
                "ALTER TABLE {target} ALTER COLUMN {} ENCODE {};",
                q(&s.column),
                s.encoding.to_ascii_uppercase()
            )
        })
        .collect()
}
