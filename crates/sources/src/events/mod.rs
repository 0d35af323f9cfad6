//! `kind = "events"`: events applications POST to `sluice serve` (`/events/SOURCE[/TABLE]`),
//! landed through the capture driver like any change stream. The HTTP handler parses a
//! request ([`body`]) and queues it in the source's [`intake::Intake`]; the stream gives each
//! request as one transaction, and answers it once the driver has committed it in the lake
//! (`ChangeStream::committed`): a 2xx means durable. Requests arriving together share one lake
//! commit (the driver batches by `batch_max_rows` and `batch_max_ms`).
//!
//! A position is the number of the last request committed; it orders commits and nothing is
//! ever read again from it (a request not answered is the client's to send again). With
//! `id_field`, events whose id landed within `dedupe_secs` are dropped as retries: the ids are
//! read back from the lake when the stream opens, so a retry after a crash is caught too.

pub mod body;
pub mod intake;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::document::{definitions, table_as_stored};
use crate::source::{Capabilities, ChangeStream, Position, Source, SourceTable, StreamTable};
use crate::SourceError;
use intake::Intake;

/// Reads back the ids that landed in a table since a time: `(table, id column, since)`. The
/// engine answers from the lake (a source does not read the lake itself).
pub type RecentIds = Arc<
    dyn Fn(String, String, DateTime<Utc>) -> BoxFuture<'static, Result<Vec<String>, String>>
        + Send
        + Sync,
>;

/// How an events source turns requests into rows.
pub struct Settings {
    pub tables: Vec<String>,
    pub id_field: Option<String>,
    pub time_field: Option<String>,
    /// Levels of objects flattened (0: nested objects stay JSON).
    pub flatten: usize,
    pub dedupe: Duration,
}

pub struct EventsSource {
    name: String,
    settings: Arc<Settings>,
    intake: Arc<Intake>,
    recent: RecentIds,
}

impl EventsSource {
    pub fn new(name: &str, settings: Settings, intake: Arc<Intake>, recent: RecentIds) -> Self {
        EventsSource {
            name: name.to_string(),
            settings: Arc::new(settings),
            intake,
            recent,
        }
    }

    fn config_error(&self, message: String) -> SourceError {
        SourceError::Config {
            source_name: self.name.clone(),
            message,
        }
    }
}

/// A stream position: the number of the last request it covers.
fn position(seq: u64) -> Position {
    Position(seq.to_be_bytes().to_vec())
}

fn seq_of(p: &Position) -> u64 {
    p.0.as_slice()
        .try_into()
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

#[async_trait]
impl Source for EventsSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "events"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            stream: true,
            ..Capabilities::default()
        }
    }

    fn definitions_property(&self) -> &'static str {
        "sluice.events.columns"
    }

    async fn check(&self) -> Result<String, SourceError> {
        Ok(format!(
            "HTTP collector: POST NDJSON or a JSON array to /events/{}/TABLE on sluice serve's listener (tables: {})",
            self.name,
            self.settings.tables.join(", ")
        ))
    }

    /// Each table starts with its id column alone (text: any id's text fits); the fields of
    /// the events posted become columns as they come.
    async fn tables(&self, selected: Option<&[String]>) -> Result<Vec<SourceTable>, SourceError> {
        let mut out = Vec::new();
        for name in &self.settings.tables {
            if selected.is_some_and(|s| !s.contains(name)) {
                continue;
            }
            let fields: Vec<Field> = self
                .settings
                .id_field
                .iter()
                .map(|id| Field::new(id, DataType::Utf8, true))
                .collect();
            let schema = Arc::new(Schema::new(fields));
            out.push(SourceTable {
                name: name.clone(),
                definitions: definitions(&schema),
                schema,
                key: self.settings.id_field.iter().cloned().collect(),
                rows_estimate: 0,
            });
        }
        for s in selected.unwrap_or_default() {
            if !self.settings.tables.contains(s) {
                return Err(self.config_error(format!(
                    "no table `{s}` (this source's tables: {})",
                    self.settings.tables.join(", ")
                )));
            }
        }
        Ok(out)
    }

    fn table_as(&self, now: &SourceTable, stored: &str) -> Result<SourceTable, SourceError> {
        table_as_stored(now, stored).map_err(|m| self.config_error(m))
    }

    async fn check_stream(&self) -> Result<(), SourceError> {
        Ok(())
    }

    fn start_position(&self) -> Option<Position> {
        Some(position(0))
    }

    async fn open_stream(
        &self,
        tables: Vec<StreamTable>,
        follow: bool,
    ) -> Result<Box<dyn ChangeStream>, SourceError> {
        let Some(rx) = self.intake.attach() else {
            return Err(SourceError::Unavailable {
                source_name: self.name.clone(),
                message: "another stream of this source takes its events in this process".into(),
            });
        };
        let mut s = stream::EventsStream::new(
            &self.name,
            self.settings.clone(),
            self.intake.clone(),
            rx,
            tables,
            follow,
        )?;
        if let Some(id) = &self.settings.id_field {
            let since = Utc::now() - self.settings.dedupe;
            for t in s.table_names() {
                let ids = (self.recent)(t.clone(), id.clone(), since)
                    .await
                    .map_err(|m| SourceError::Unavailable {
                        source_name: self.name.clone(),
                        message: format!("{t}: reading the ids landed lately: {m}"),
                    })?;
                s.remember(&t, ids);
            }
        }
        Ok(Box::new(s))
    }
}
