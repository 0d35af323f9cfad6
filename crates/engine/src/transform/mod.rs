//! `[transforms.NAME]`: SQL over lake tables (DataFusion), materialized as a lake table that
//! loads into warehouses like any source table. All transforms are one source
//! ([`TRANSFORMS_SOURCE`]) whose change stream follows their inputs:
//!
//! - a run reads every input at the version the lake holds when it starts ([`plan`]); the
//!   digest of those versions and of the SQL is its position, committed with its rows, so an
//!   unchanged input is never computed again and a crash recomputes from the last commit;
//! - a run lands the difference between the result and the table's current state: rows new
//!   or changed under the key, and deletes for keys the result lost. A row-by-row map of one
//!   table reads only that table's changes since the last run ([`incremental`]); any other
//!   SQL is computed whole (a full refresh), and only what changed lands and loads;
//! - a result whose columns change goes through the schema gate like a source table's.

pub mod incremental;
mod plan;
mod stream;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use sluice_core::config::{
    TransformConfig, TransformsConfig, DEFAULT_TRANSFORM_POLL_SECS, TRANSFORMS_SOURCE,
};
use sluice_lake::Lake;
use sluice_sources::document::{definitions, table_as_stored};
use sluice_sources::source::{
    Capabilities, ChangeStream, Position, Source, SourceTable, StreamTable,
};
use sluice_sources::SourceError;

use crate::EngineError;

pub struct TransformSource {
    lake: Lake,
    transforms: Arc<BTreeMap<String, TransformConfig>>,
    poll: Duration,
}

impl TransformSource {
    pub fn new(lake: Lake, config: &TransformsConfig) -> TransformSource {
        TransformSource {
            lake,
            transforms: Arc::new(config.transforms.clone()),
            poll: Duration::from_secs(DEFAULT_TRANSFORM_POLL_SECS),
        }
    }

    fn config_error(&self, message: String) -> SourceError {
        SourceError::Config {
            source_name: TRANSFORMS_SOURCE.into(),
            message,
        }
    }

    /// Transform `name` as a table: the columns its SQL returns over the lake as it is now.
    async fn describe(&self, name: &str) -> Result<SourceTable, EngineError> {
        let t = &self.transforms[name];
        let key = t.primary_key.clone().unwrap_or_default();
        let run = plan::open(&self.lake, &self.transforms, name, &key).await?;
        let schema = plan::result_schema(&run, name, &t.sql, &key).await?;
        Ok(SourceTable {
            name: name.to_string(),
            definitions: definitions(&schema),
            schema,
            key,
            rows_estimate: 0,
        })
    }
}

/// An engine error as a source's (a transform's failure is the transforms source's).
fn source_error(e: EngineError) -> SourceError {
    match e {
        EngineError::Source(e) => e,
        other => SourceError::Config {
            source_name: TRANSFORMS_SOURCE.into(),
            message: other.to_string(),
        },
    }
}

#[async_trait]
impl Source for TransformSource {
    fn name(&self) -> &str {
        TRANSFORMS_SOURCE
    }

    fn kind(&self) -> &'static str {
        "transform"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            stream: true,
            ..Capabilities::default()
        }
    }

    fn definitions_property(&self) -> &'static str {
        "sluice.transform.columns"
    }

    async fn check(&self) -> Result<String, SourceError> {
        let mut lines = Vec::new();
        for name in self.transforms.keys() {
            match self.describe(name).await {
                Ok(t) => lines.push(format!("{name} ({} column(s))", t.schema.fields().len())),
                // Before the first sync: the sync lands the inputs before it runs transforms.
                Err(EngineError::Source(SourceError::Unavailable { message, .. })) => {
                    lines.push(format!("{message}: checked once it has"))
                }
                Err(e) => return Err(source_error(e)),
            }
        }
        Ok(format!("transforms over the lake: {}", lines.join(", ")))
    }

    async fn tables(&self, selected: Option<&[String]>) -> Result<Vec<SourceTable>, SourceError> {
        for s in selected.unwrap_or_default() {
            if !self.transforms.contains_key(s) {
                return Err(self.config_error(format!(
                    "no transform `{s}` (configured: {})",
                    self.transforms
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let mut out = Vec::new();
        for name in self.transforms.keys() {
            if selected.is_some_and(|s| !s.contains(name)) {
                continue;
            }
            out.push(self.describe(name).await.map_err(source_error)?);
        }
        Ok(out)
    }

    fn table_as(&self, now: &SourceTable, stored: &str) -> Result<SourceTable, SourceError> {
        table_as_stored(now, stored).map_err(|m| self.config_error(m))
    }

    async fn check_stream(&self) -> Result<(), SourceError> {
        Ok(())
    }

    /// Nothing read yet: the first run computes the whole result.
    fn start_position(&self) -> Option<Position> {
        Some(Position(Vec::new()))
    }

    async fn open_stream(
        &self,
        tables: Vec<StreamTable>,
        follow: bool,
    ) -> Result<Box<dyn ChangeStream>, SourceError> {
        Ok(Box::new(stream::TransformStream::new(
            self.lake.clone(),
            self.transforms.clone(),
            tables,
            follow.then_some(self.poll),
        )))
    }
}
