use thiserror::Error;

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
    Postgres { table: String, message: String },
    #[error("warehouse table {table}: the ledger moved from seq {planned} to {found} while this load ran (another sluice loaded the table at the same time); nothing of this load was applied, the next run loads from the new position")]
    LedgerMoved {
        table: String,
        planned: String,
        found: String,
    },
    #[error("opening warehouse {path}: {message}")]
    Open { path: String, message: String },
}
