//! sluice sources. Each source turns what it reads into Arrow batches of source rows (the
//! engine stamps the change columns and lands them) plus rejects for the quarantine.
//!
//! - [`files`]: CSV/TSV/any delimiter, JSON lines and arrays, Parquet; `.gz`/`.zst`; local
//!   folders and `s3://`; `{date}` folders.
//! - [`mysql`]: MySQL/MariaDB snapshots, incremental reads and binlog CDC.
//! - [`mongodb`]: MongoDB snapshots by `_id` range and change streams.
//! - [`events`]: events posted over HTTP to `sluice serve`, answered once in the lake.
//! - [`document`]: documents as rows (JSON files, MongoDB, events), one policy for all.

pub mod document;
pub mod error;
pub mod events;
pub mod files;
pub mod mongodb;
pub mod mysql;
pub mod postgres;
pub mod source;
pub mod typed;
pub mod values;

pub use error::SourceError;
pub use source::{ChangeStream, ChunkReader, Source};
