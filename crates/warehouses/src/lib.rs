//! sluice warehouses. A warehouse takes a stream of change batches for one target table and
//! applies them by the target's load mode, recording how far it got (the lake version and
//! `_sluice_seq`) in its ledger **in the same transaction** as the data. That is the whole
//! exactly-once contract: whatever crashes, a change is in the warehouse iff the ledger says
//! so, and the next load starts after the ledger.
//!
//! - [`duckdb`]: the embedded default.
//! - [`postgres`]: PostgreSQL, loaded by binary COPY into a staging table.
//!
//! Both apply staged changes with the same statements ([`sql`]).

mod columns;
pub mod duckdb;
mod error;
pub mod pgcopy;
mod pgtls;
pub mod postgres;
pub mod sql;
mod target;

pub use error::WarehouseError;
pub use target::{LedgerEntry, LoadReport, Target};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

/// A destination for change batches.
pub trait Warehouse: Send {
    /// How far `target` has been loaded (None: never).
    fn ledger(&mut self, target: &Target) -> Result<Option<LedgerEntry>, WarehouseError>;

    /// Applies `batches` (change rows, `schema` = source columns + `_sluice_op`, `_sluice_seq`,
    /// `_sluice_source_ts`, `_sluice_ingested_at`) to `target` and records `upto` in the
    /// ledger, all in one transaction: on any error nothing is applied and the ledger is
    /// unchanged. Creates the target table (and its schema) on first use.
    fn load(
        &mut self,
        target: &Target,
        schema: &SchemaRef,
        batches: &mut (dyn Iterator<Item = Result<RecordBatch, String>> + Send),
        upto: LedgerEntry,
    ) -> Result<LoadReport, WarehouseError>;

    /// What it is and where, for `sluice check` (never a password).
    fn describe(&self) -> String;

    /// Runs a query for `sluice query --warehouse`.
    fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>, WarehouseError>;
}
