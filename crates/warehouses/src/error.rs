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
    #[error("opening warehouse {path}: {message}")]
    Open { path: String, message: String },
}
