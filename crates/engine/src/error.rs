use sluice_core::retry::ErrorKind;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] sluice_core::config::ConfigErrors),
    #[error(transparent)]
    Source(#[from] sluice_sources::SourceError),
    #[error(transparent)]
    Lake(Box<sluice_lake::LakeError>),
    #[error(transparent)]
    Warehouse(#[from] sluice_warehouses::WarehouseError),
    #[error("query: {0}")]
    Query(Box<datafusion::error::DataFusionError>),
    #[error("{0}")]
    Usage(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("internal: {0}")]
    Internal(String),
}

// Boxed: these errors are large, and every engine function returns EngineError.
impl From<sluice_lake::LakeError> for EngineError {
    fn from(e: sluice_lake::LakeError) -> Self {
        EngineError::Lake(Box::new(e))
    }
}

impl From<datafusion::error::DataFusionError> for EngineError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        EngineError::Query(Box::new(e))
    }
}

impl EngineError {
    /// Whether trying again may help ([`sluice_core::retry`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Source(e) => e.kind(),
            EngineError::Warehouse(e) => e.kind(),
            // The lake's store did not answer, or another writer committed first.
            EngineError::Lake(_) | EngineError::Io { .. } => ErrorKind::Transient,
            EngineError::Config(_)
            | EngineError::Usage(_)
            | EngineError::Query(_)
            | EngineError::Internal(_) => ErrorKind::Fatal,
        }
    }

    /// Configuration and usage errors exit 2; everything else 1 (DESIGN.md exit codes).
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::Config(_) | EngineError::Usage(_) => 2,
            _ => 1,
        }
    }
}
