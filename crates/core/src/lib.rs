//! sluice-core: the vocabulary every other sluice crate speaks.
//!
//! - [`canon`]: the canonical row text and key ranges that reconciliation checksums inside
//!   each database;
//! - [`change`]: the Arrow shape of a change batch and its `_sluice_*` columns (a public contract);
//! - [`config`]: `sluice.toml`, parsed strictly and validated without I/O;
//! - [`secret`]: secrets resolved at use from env or file, never printed;
//! - [`names`]: source names to warehouse identifiers, and identifier quoting;
//! - [`types`]: the column type names users write in config, mapped to Arrow in one place.
//! - [`nested`]: lists, structs and maps as JSON documents (JSONB, SUPER);
//! - [`conform`]: a batch fitted to a table's schema by name, off-type values to variants;
//! - [`schema`]: the schema catalog (versions and changes) and the rules naming each change;
//! - [`reject`]: a malformed input record on its way to the quarantine;
//! - [`retry`]: what an error means for the next attempt (its kind), and the retry policy;
//! - [`rowid`]: a row's identity from its values (keyless tables, incremental reads);
//! - [`store`]: object stores (local folders, `s3://`) from URLs.

pub mod canon;
pub mod change;
pub mod config;
pub mod conform;
pub mod failpoint;
pub mod names;
pub mod nested;
pub mod pattern;
pub mod reject;
pub mod retry;
pub mod rowid;
pub mod schedule;
pub mod schema;
pub mod secret;
pub mod store;
pub mod types;
