//! sluice engine: the pipelines that tie sources, the lake and warehouses together, and the
//! commands built on them.
//!
//! ```text
//!   sync:   source ──batches──► stamp (_sluice_*) ──► lake commit (data + position)
//!                                                        │
//!           warehouse ◄── staging + merge + ledger ◄─────┘  (changes after the ledger's seq)
//! ```

pub mod alerts;
pub mod capture;
pub mod check;
pub mod crawl;
pub mod demo;
mod error;
pub mod export;
pub mod expose;
pub mod gate;
pub mod image;
pub mod lake_cmd;
pub mod load;
pub mod metrics;
pub mod progress;
mod project;
pub mod quality;
pub mod query;
pub mod reconcile;
pub mod redshift_cmd;
pub mod report;
pub mod schema_cmd;
pub mod serve;
pub mod sources;
pub mod state;
pub mod status;
pub mod sync;
pub mod transform;
mod warehouse_table;

pub use error::EngineError;
pub use project::Project;
