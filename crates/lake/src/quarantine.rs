//! The quarantine: one Delta table of rejected records per source table, at
//! `quarantine/<source>/<table>`, with the file, line, column, raw text and reason.
//!
//! Rejects of one input unit (a file) are committed with that unit's position id, so when a
//! crash comes between this commit and the data commit, the rerun sees they are already here
//! and does not record them twice.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};

use sluice_core::change::{INGESTED_AT, INGEST_DATE};
use sluice_core::reject::Reject;

use crate::{Lake, LakeError, LakeTable, TablePath};

pub fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("file", DataType::Utf8, false),
        Field::new("line", DataType::Int64, false),
        Field::new("column", DataType::Utf8, true),
        Field::new("raw", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new(
            INGESTED_AT,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new(INGEST_DATE, DataType::Utf8, false),
    ]))
}

pub struct Quarantine {
    lake: Lake,
    path: TablePath,
    table: Option<LakeTable>,
}

impl Quarantine {
    pub fn new(lake: &Lake, source: &str, table: &str) -> Quarantine {
        Quarantine {
            lake: lake.clone(),
            path: TablePath::quarantine(source, table),
            table: None,
        }
    }

    async fn table(&mut self) -> Result<&mut LakeTable, LakeError> {
        if self.table.is_none() {
            self.table = match LakeTable::open(&self.lake, &self.path).await? {
                Some(t) => Some(t),
                None => Some(
                    LakeTable::create(&self.lake, &self.path, &quarantine_schema(), HashMap::new())
                        .await?,
                ),
            };
        }
        Ok(self.table.as_mut().expect("set above"))
    }

    /// The last version of `position` whose rejects are recorded (None: none are).
    pub async fn recorded(&mut self, position: &str) -> Result<Option<i64>, LakeError> {
        self.table().await?.app_version(position).await
    }

    /// Records the rejects of version `version` of the input unit `position` (a file, a
    /// chunk, a commit's binlog range); skipped if that version's are recorded already.
    pub async fn add(
        &mut self,
        position: &str,
        version: i64,
        rejects: Vec<Reject>,
        at: DateTime<Utc>,
    ) -> Result<(), LakeError> {
        self.add_units(vec![(position.to_string(), version, rejects)], at)
            .await
    }

    /// Records the rejects of several input units, `(position, version, rejects)`, in one
    /// commit that carries all their positions; units whose version is recorded already are
    /// skipped (their positions are read once, whatever the number of units).
    pub async fn add_units(
        &mut self,
        units: Vec<(String, i64, Vec<Reject>)>,
        at: DateTime<Utc>,
    ) -> Result<(), LakeError> {
        let name = self.path.to_string();
        let table = self.table().await?;
        let recorded = match units.len() {
            1 => HashMap::from_iter(
                table
                    .app_version(&units[0].0)
                    .await?
                    .map(|v| (units[0].0.clone(), v)),
            ),
            _ => table.app_versions().await?,
        };
        let day = at.format("%Y-%m-%d").to_string();
        let mut writer = table.writer()?;
        let mut positions = Vec::new();
        for (position, version, rejects) in units {
            if recorded.get(&position) == Some(&version) {
                continue;
            }
            // Batches bounded in bytes: one array holds at most 2 GiB of text.
            let mut rest: &[Reject] = &rejects;
            while !rest.is_empty() {
                let mut bytes = 0;
                let take = rest
                    .iter()
                    .take_while(|r| {
                        bytes += r.raw.len() + r.reason.len() + r.file.len();
                        bytes < sluice_core::change::BATCH_BYTES
                    })
                    .count()
                    .max(1);
                let (part, later) = rest.split_at(take);
                rest = later;
                writer.write(batch_of(part, at, &day, &name)?).await?;
            }
            positions.push((position, version));
        }
        if positions.is_empty() {
            return Ok(());
        }
        writer
            .commit(table, positions, serde_json::Map::new())
            .await?;
        Ok(())
    }
}

/// One batch of the quarantine table.
fn batch_of(
    rejects: &[Reject],
    at: DateTime<Utc>,
    day: &str,
    name: &str,
) -> Result<RecordBatch, LakeError> {
    let n = rejects.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| r.file.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rejects.iter().map(|r| r.line as i64),
        )),
        Arc::new(StringArray::from_iter(
            rejects.iter().map(|r| r.column.as_deref()),
        )),
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| r.raw.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| r.reason.as_str()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from(vec![at.timestamp_micros(); n]).with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(day, n))),
    ];
    RecordBatch::try_new(quarantine_schema(), columns).map_err(|source| LakeError::Arrow {
        table: name.to_string(),
        source,
    })
}
