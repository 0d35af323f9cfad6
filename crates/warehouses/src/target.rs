use sluice_core::config::{Deletes, Layout, LoadMode};

use crate::WarehouseError;

/// One warehouse table and how it is loaded.
#[derive(Debug, Clone)]
pub struct Target {
    /// Warehouse schema (the source name, mapped).
    pub schema: String,
    /// Warehouse table name (mapped).
    pub table: String,
    pub mode: LoadMode,
    /// Key columns (source names) for merge.
    pub key: Vec<String>,
    pub deletes: Deletes,
    /// Whether a load may add the columns of its schema that the table lacks. The engine's
    /// schema gate decides (evolve, or `sluice schema accept`); without it such a load fails.
    pub add_columns: bool,
    /// The lake table it loads from, for the ledger.
    pub source: String,
    pub source_table: String,
    /// Distribution, sort key and encodings where the warehouse has them (Redshift).
    pub layout: Layout,
}

impl Target {
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// Whether `row` (a ledger row) records this target's lake table and load mode.
    pub fn owns(&self, row: &LedgerRow) -> bool {
        row.source == self.source
            && row.source_table == self.source_table
            && row.mode == self.mode.name()
    }

    /// Checks, inside a load's transaction and with the ledger row locked, that the ledger
    /// is where the load was planned from (`planned`: the seq read before it, None: no row)
    /// and that the row is this target's. Two loads of one table at once (an overlapping
    /// cron run, `--follow` beside `schema accept`) would otherwise both apply their range:
    /// the second finds the ledger moved and applies nothing.
    pub fn check_ledger(
        &self,
        planned: Option<i64>,
        found: Option<&LedgerRow>,
    ) -> Result<(), WarehouseError> {
        if let Some(row) = found {
            if !self.owns(row) {
                return Err(WarehouseError::Schema {
                    table: self.display(),
                    message: format!(
                        "the ledger says this table is loaded from {}.{} ({}), not {}.{} ({})",
                        row.source,
                        row.source_table,
                        row.mode,
                        self.source,
                        self.source_table,
                        self.mode.name()
                    ),
                });
            }
        }
        let found_seq = found.map(|r| r.seq);
        if found_seq != planned {
            return Err(WarehouseError::LedgerMoved {
                table: self.display(),
                planned: planned.map_or("none".into(), |s| s.to_string()),
                found: found_seq.map_or("none".into(), |s| s.to_string()),
            });
        }
        Ok(())
    }
}

/// How far a target is loaded: the lake version and the last `_sluice_seq` applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerEntry {
    pub lake_version: i64,
    pub seq: i64,
}

/// A load's move of the ledger: from where it was when the load was planned to where the
/// load takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerMove {
    /// The seq the ledger held when the load was planned (None: no row yet).
    pub from: Option<i64>,
    pub to: LedgerEntry,
    /// The changes are a complete image of the table (a snapshot run): the table is emptied
    /// before they apply. A table without a key is rebuilt this way rather than having
    /// every row added again. (`replace` empties its table on every load.)
    pub image: bool,
}

/// One row of a warehouse's ledger: a warehouse table and the lake table it loads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub schema: String,
    pub table: String,
    pub source: String,
    pub source_table: String,
    pub mode: String,
    pub seq: i64,
}

#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Change rows read from the lake.
    pub changes: u64,
    /// Rows in the target table after the load.
    pub rows_after: u64,
    /// What the load did to the table besides loading it (a changed layout, ANALYZE).
    pub maintenance: Vec<String>,
}
