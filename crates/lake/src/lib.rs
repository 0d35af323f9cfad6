//! The sluice lake: Delta Lake tables on object storage (a local folder by default, `s3://`
//! by URL), through the `deltalake` crate.
//!
//! ```text
//!   <lake>/changes/<source>/<table>/      append-only change log, partitioned by _sluice_ingest_date
//!          _delta_log/000…0N.json         each commit: the data files + the source position
//!   <lake>/quarantine/<source>/<table>/   rejected records: file, line, raw text, reason
//! ```
//!
//! The lake is the checkpoint. A source position is recorded in the same Delta commit as the
//! data it covers, as Delta application transactions (`txn` actions, the Delta protocol's own
//! idempotent-writer mechanism, kept through checkpoints and readable by any Delta reader):
//! `sluice.seq` holds the last `_sluice_seq`; `file:<path>` marks a consumed file. A crash
//! before the commit leaves only unreferenced data files; the position did not move, so the
//! next run reads the same input again.

mod error;
mod quarantine;
mod store;
mod table;
mod txns;

pub use error::LakeError;
pub use quarantine::{quarantine_schema, Quarantine};
pub use store::{FileOptions, Lake};
pub use table::{
    AsOf, Compacted, DataFile, LakeTable, LakeWriter, TablePath, PRIMARY_KEY_PROPERTY,
    SCHEMA_HISTORY_PROPERTY, SEQ_APP_ID,
};
