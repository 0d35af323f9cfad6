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
    /// Configuration and usage errors exit 2; everything else 1 (DESIGN.md exit codes).
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::Config(_) | EngineError::Usage(_) => 2,
            _ => 1,
        }
    }
}
