//! Files on the source contract ([`crate::source`]): each file a unit, read once per version.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use chrono::Utc;

use super::{FileEntry, FilesSource, InferredSchema, LocalFile};
use crate::source::{
    Capabilities, Incoming, Inferred, Listing, OpenUnit, ReadEvent, ReadStats, Source, SourceTable,
    Unit,
};
use crate::SourceError;

/// The listing entry behind a unit.
fn entry(unit: &Unit) -> Result<&FileEntry, SourceError> {
    unit.detail
        .downcast_ref::<FileEntry>()
        .ok_or_else(|| SourceError::File {
            file: unit.id.clone(),
            message: "not a file of this source".into(),
        })
}

fn unit(e: FileEntry) -> Unit {
    Unit {
        id: e.id.clone(),
        version: e.version(),
        modified: Some(e.modified),
        bytes: Some(e.size),
        detail: Arc::new(e),
    }
}

impl FilesSource {
    /// Fetches `sample` and infers the schema of `listed` from it (off the async threads),
    /// with the evidence for each column.
    pub async fn infer_from(
        &self,
        listed: &[FileEntry],
        sample: Vec<FileEntry>,
    ) -> Result<InferredSchema, SourceError> {
        let mut fetched = Vec::with_capacity(sample.len());
        for e in sample {
            let file = self.fetch(&e).await?;
            fetched.push((e, file));
        }
        let (this, listed) = (self.clone(), listed.to_vec());
        tokio::task::spawn_blocking(move || this.infer_schema(&listed, &fetched))
            .await
            .map_err(|e| SourceError::Sink(format!("inference task: {e}")))?
    }

    /// `listed` without the local files that may still be being written: a file modified
    /// less than the settle time ago is waited for (once, for all of them), then taken only
    /// if it did not change meanwhile. Returns the files to read and how many wait for the
    /// next sync.
    async fn settled(&self, listed: Vec<FileEntry>) -> Result<(Vec<FileEntry>, u64), SourceError> {
        let settle = self.settle();
        let now = Utc::now();
        let age = |e: &FileEntry| (now - e.modified).to_std().ok();
        let fresh = |e: &FileEntry| age(e).is_none_or(|a| a < settle);
        let wait = listed
            .iter()
            .filter(|e| fresh(e))
            .map(|e| settle.saturating_sub(age(e).unwrap_or_default()))
            .max();
        let Some(wait) = wait else {
            return Ok((listed, 0));
        };
        tracing::info!(source = %self.name, table = %self.table, wait_ms = wait.as_millis() as u64, "waiting for recently changed files to settle");
        tokio::time::sleep(wait).await;
        let mut out = Vec::with_capacity(listed.len());
        let mut waiting = 0;
        for e in listed {
            if !fresh(&e) {
                out.push(e);
                continue;
            }
            match self.stat(&e).await? {
                Some(now) if now.same_version(&e) => out.push(e),
                _ => {
                    tracing::info!(source = %self.name, table = %self.table, file = %e.id, "still being written: taken when it settles");
                    waiting += 1;
                }
            }
        }
        Ok((out, waiting))
    }
}

#[async_trait]
impl Source for FilesSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "files"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            units: true,
            ..Capabilities::default()
        }
    }

    async fn check(&self) -> Result<String, SourceError> {
        Ok(format!("{} file(s) found", self.list().await?.len()))
    }

    async fn tables(&self, _: Option<&[String]>) -> Result<Vec<SourceTable>, SourceError> {
        Ok(vec![SourceTable {
            name: self.table.clone(),
            schema: self
                .declared_schema()
                .unwrap_or_else(|| Arc::new(arrow::datatypes::Schema::empty())),
            key: self.key.clone(),
            definitions: String::new(),
            rows_estimate: 0,
        }])
    }

    async fn units(&self) -> Result<Listing, SourceError> {
        let (files, waiting) = self.settled(self.list().await?).await?;
        Ok(Listing {
            units: files.into_iter().map(unit).collect(),
            waiting,
        })
    }

    async fn infer(&self, units: &[Unit]) -> Result<Inferred, SourceError> {
        let listed: Vec<FileEntry> = units
            .iter()
            .map(|u| entry(u).cloned())
            .collect::<Result<_, _>>()?;
        let sample = self.inference_sample(&listed);
        let from = sample.iter().map(|e| e.id.clone()).collect();
        let inferred = self.infer_from(&listed, sample).await?;
        tracing::info!(source = %self.name, table = %self.table, files = inferred.files_sampled, "schema inferred");
        for c in inferred.columns.iter().filter(|c| c.conflict) {
            let said: Vec<String> = c
                .file_types
                .iter()
                .map(|t| format!("{} in {} file(s), first {}", t.type_name, t.files, t.first))
                .collect();
            tracing::warn!(source = %self.name, table = %self.table, column = %c.name, files = %said.join("; "), "type conflict: the column is text (sluice crawl shows the evidence)");
        }
        Ok(Inferred {
            schema: inferred.schema,
            from,
        })
    }

    fn declared(&self) -> Option<SchemaRef> {
        self.declared_schema()
    }

    fn units_per_commit(&self) -> usize {
        self.files_per_commit()
    }

    async fn open_unit(&self, unit: &Unit) -> Result<Arc<dyn OpenUnit>, SourceError> {
        let entry = entry(unit)?.clone();
        let file = self.fetch(&entry).await?;
        Ok(Arc::new(OpenFile {
            source: self.clone(),
            entry,
            file,
        }))
    }
}

/// A file ready to read: in place, or fetched once.
struct OpenFile {
    source: FilesSource,
    entry: FileEntry,
    file: LocalFile,
}

#[async_trait]
impl OpenUnit for OpenFile {
    fn incoming(&self, table: &SchemaRef) -> Result<Incoming, SourceError> {
        let i = self
            .source
            .incoming_schema(&self.entry, &self.file, table)?;
        Ok(Incoming {
            schema: i.schema,
            complete: i.complete,
        })
    }

    fn read(
        &self,
        schema: &SchemaRef,
        emit: &mut dyn FnMut(ReadEvent) -> Result<(), SourceError>,
    ) -> Result<ReadStats, SourceError> {
        self.source.read(&self.entry, &self.file, schema, emit)
    }

    /// A copy says which object it holds; a file read in place must be as it was listed.
    async fn version_read(&self) -> Result<Option<i64>, SourceError> {
        if let Some(e) = &self.file.read_as {
            return Ok(Some(e.version()));
        }
        Ok(match self.source.stat(&self.entry).await? {
            Some(now) if now.same_version(&self.entry) => Some(self.entry.version()),
            _ => None,
        })
    }
}
