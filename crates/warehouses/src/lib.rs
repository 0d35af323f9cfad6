//! sluice warehouses. A warehouse takes a stream of change batches for one target table and
//! applies them by the target's load mode, recording how far it got (the lake version and
//! `_sluice_seq`) in its ledger **in the same transaction** as the data. That is the whole
//! exactly-once contract: whatever crashes, a change is in the warehouse iff the ledger says
//! so, and the next load starts after the ledger.
//!
//! - [`duckdb`]: the embedded default.
//! - [`postgres`]: PostgreSQL, loaded by binary COPY into a staging table.
//! - [`redshift`]: Redshift, loaded by COPY from the lake's own Parquet files on S3.
//!
//! All apply staged changes with the same statements ([`sql`]).

mod columns;
pub mod duckdb;
mod error;
pub mod expose;
pub mod pgcopy;
pub mod postgres;
pub mod redshift;
pub mod sql;
mod target;

pub use error::WarehouseError;
pub use expose::{Exposure, LakeView};
pub use target::{LedgerEntry, LedgerMove, LedgerRow, LoadReport, Target};

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

/// The lake's data files holding a load's changes, for a warehouse that copies them from
/// object storage itself.
pub struct LakeFiles {
    /// The lake table's folder (`s3://bucket/lake/changes/src/t/`).
    pub table_url: url::Url,
    /// The object store rooted at that folder.
    pub store: Arc<dyn object_store::ObjectStore>,
    /// `(path relative to the folder, size in bytes)`.
    pub files: Vec<(String, u64)>,
    /// The load's changes are those after this `_sluice_seq` (the files may hold earlier ones).
    pub after: i64,
}

/// A destination for change batches.
pub trait Warehouse: Send {
    /// How far `target` has been loaded (None: never).
    fn ledger(&mut self, target: &Target) -> Result<Option<LedgerEntry>, WarehouseError>;

    /// Every row of the ledger: which warehouse tables sluice loads, from which lake table.
    fn ledger_rows(&mut self) -> Result<Vec<LedgerRow>, WarehouseError>;

    /// Applies `batches` (change rows, `schema` = source columns + `_sluice_op`, `_sluice_seq`,
    /// `_sluice_source_ts`, `_sluice_ingested_at`) to `target` and moves the ledger to
    /// `ledger.to`, all in one transaction: on any error nothing is applied and the ledger is
    /// unchanged. The transaction first locks the target's ledger row and checks it still
    /// holds `ledger.from` for this target ([`Target::check_ledger`]), so two loads at once
    /// never both apply. Creates the target table (and its schema) on first use.
    fn load(
        &mut self,
        target: &Target,
        schema: &SchemaRef,
        batches: &mut (dyn Iterator<Item = Result<RecordBatch, String>> + Send),
        ledger: LedgerMove,
    ) -> Result<LoadReport, WarehouseError>;

    /// The target table's column names in table order (empty: it does not exist yet). The
    /// schema gate compares them with the lake's.
    fn columns(&mut self, target: &Target) -> Result<Vec<String>, WarehouseError>;

    /// What it is and where, for `sluice check` (never a password).
    fn describe(&self) -> String;

    /// Runs a query for `sluice query --warehouse`.
    fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>, WarehouseError>;

    /// Whether loads copy the lake's files themselves (Redshift), and so want
    /// [`Warehouse::use_lake_files`] before each load.
    fn wants_lake_files(&self) -> bool {
        false
    }

    /// Whether a load may be handed the lake's files of `table_url` (through
    /// [`Warehouse::use_lake_files`]) instead of batches, and reads them itself. The engine
    /// still streams batches where only it can shape them (changes a check holds back, row
    /// identities computed on the way).
    fn reads_lake_files(&self, _table_url: &url::Url) -> bool {
        self.wants_lake_files()
    }

    /// The lake files of the next load.
    fn use_lake_files(&mut self, _files: LakeFiles) {}

    /// Runs the statements of an [`Exposure`] made for this kind of warehouse ([`expose`]),
    /// its manifests already written.
    fn expose(&mut self, _exposure: &Exposure) -> Result<(), WarehouseError> {
        Err(WarehouseError::Unsupported(format!(
            "{} cannot read the lake's Parquet files; load the tables into it with `sluice sync` instead",
            self.describe()
        )))
    }

    /// Rows of a loaded `target` holding a value cut to fit (Redshift's width limits).
    fn truncated_rows(&mut self, _target: &Target) -> Result<u64, WarehouseError> {
        Ok(0)
    }
}
