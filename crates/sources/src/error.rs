use thiserror::Error;

use sluice_core::retry::ErrorKind;

/// What can stop a source. Malformed records are not errors: they are rejects (quarantined).
#[derive(Debug, Error)]
pub enum SourceError {
    /// The source refuses what was asked (settings, credentials, a missing table): fatal.
    #[error("source {source_name}: {message}")]
    Config {
        source_name: String,
        message: String,
    },
    /// The connection or the server failed in a way a later attempt may not (a network
    /// error, a restart, a lock wait or deadlock): transient.
    #[error("source {source_name}: {message}")]
    Unavailable {
        source_name: String,
        message: String,
    },
    /// The position capture must resume from is no longer at the source: only a new
    /// snapshot helps.
    #[error("source {source_name}: {message}")]
    PositionLost {
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

impl SourceError {
    /// Whether trying again may help ([`sluice_core::retry`]).
    pub fn kind(&self) -> ErrorKind {
        use std::io::ErrorKind as Io;
        match self {
            SourceError::Unavailable { .. } | SourceError::List { .. } | SourceError::Sink(_) => {
                ErrorKind::Transient
            }
            SourceError::PositionLost { .. } => ErrorKind::PositionLost,
            SourceError::Io { source, .. } => match source.kind() {
                Io::TimedOut
                | Io::Interrupted
                | Io::ConnectionReset
                | Io::ConnectionAborted
                | Io::ConnectionRefused
                | Io::BrokenPipe
                | Io::WouldBlock => ErrorKind::Transient,
                _ => ErrorKind::Fatal,
            },
            SourceError::Config { .. } | SourceError::File { .. } | SourceError::Arrow { .. } => {
                ErrorKind::Fatal
            }
        }
    }
}
