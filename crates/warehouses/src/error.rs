use thiserror::Error;

use sluice_core::retry::ErrorKind;

#[derive(Debug, Error)]
pub enum WarehouseError {
    #[error("warehouse table {table}: {source}")]
    Duckdb {
        table: String,
        source: ::duckdb::Error,
    },
    #[error("warehouse table {table}: column {column}: type {data_type} has no warehouse type")]
    Type {
        table: String,
        column: String,
        data_type: String,
    },
    #[error("warehouse table {table}: reading the changes to load failed: {message}")]
    Input { table: String, message: String },
    #[error("warehouse table {table}: {message}")]
    Schema { table: String, message: String },
    #[error("warehouse table {table}: {message}")]
    Postgres {
        table: String,
        message: String,
        /// From the SQLSTATE (or the connection closing).
        kind: ErrorKind,
    },
    #[error("warehouse table {table}: the ledger moved from seq {planned} to {found} while this load ran (another sluice loaded the table at the same time); nothing of this load was applied, the next run loads from the new position")]
    LedgerMoved {
        table: String,
        planned: String,
        found: String,
    },
    /// The warehouse cannot do what was asked (and never will with this configuration).
    #[error("{0}")]
    Unsupported(String),
    #[error("opening warehouse {path}: {message}")]
    Open {
        path: String,
        message: String,
        kind: ErrorKind,
    },
}

impl WarehouseError {
    /// Whether trying again may help ([`sluice_core::retry`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            WarehouseError::Postgres { kind, .. } | WarehouseError::Open { kind, .. } => *kind,
            // Another load moved the ledger first: the next run loads from there.
            WarehouseError::LedgerMoved { .. } => ErrorKind::Transient,
            // Reading the lake's files (an object store that did not answer).
            WarehouseError::Input { .. } => ErrorKind::Transient,
            WarehouseError::Schema { .. } => ErrorKind::Schema,
            WarehouseError::Duckdb { .. }
            | WarehouseError::Type { .. }
            | WarehouseError::Unsupported(_) => ErrorKind::Fatal,
        }
    }
}
