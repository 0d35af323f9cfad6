use thiserror::Error;

#[derive(Debug, Error)]
pub enum LakeError {
    #[error("lake table {table}: {source}")]
    Delta {
        table: String,
        source: deltalake::DeltaTableError,
    },
    #[error("lake table {table}: {source}")]
    Arrow {
        table: String,
        source: arrow::error::ArrowError,
    },
    #[error("lake table {table}: {message}")]
    Batch { table: String, message: String },
    #[error("lake at {location}: {message}")]
    Location { location: String, message: String },
}
