use thiserror::Error;

/// What can stop a source. Malformed records are not errors: they are rejects (quarantined).
#[derive(Debug, Error)]
pub enum SourceError {
    #[error("source {source_name}: {message}")]
    Config {
        source_name: String,
        message: String,
    },
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("listing {location}: {message}")]
    List { location: String, message: String },
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Arrow {
        file: String,
        source: arrow::error::ArrowError,
    },
    /// The consumer of the rows failed (e.g. the lake write); its error, as text, with context.
    #[error("{0}")]
    Sink(String),
}
