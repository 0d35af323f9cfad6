use sluice_core::config::{Deletes, Layout, LoadMode};

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
}

/// How far a target is loaded: the lake version and the last `_sluice_seq` applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerEntry {
    pub lake_version: i64,
    pub seq: i64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LoadReport {
    /// Change rows read from the lake.
    pub changes: u64,
    /// Rows in the target table after the load.
    pub rows_after: u64,
}
