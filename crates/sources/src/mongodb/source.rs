//! The MongoDB [`Source`]: collections of one database as tables, keyed by `_id`.

use std::sync::Arc;

use async_trait::async_trait;
use mongodb::bson::{doc, Bson, Document};

use super::{schema, snapshot, stream, time_number, Mongo, MongoPosition};
use crate::source::{
    Capabilities, ChangeStream, ChunkReader, Position, Retention, SnapshotPlan, Source,
    SourceTable, StreamTable,
};
use crate::SourceError;
use sluice_core::pattern;

pub struct MongoSource {
    mongo: Arc<Mongo>,
    /// Collections named by the config (empty: every one).
    configured: Vec<String>,
    /// Levels of embedded documents flattened (0: kept as JSON).
    flatten: usize,
    sample_docs: usize,
    /// The `_id`s each collection's schema sample drew, for its snapshot plan.
    sampled_ids: std::sync::Mutex<std::collections::HashMap<String, Vec<Bson>>>,
}

impl MongoSource {
    pub fn new(mongo: Mongo, configured: Vec<String>, flatten: usize, sample_docs: usize) -> Self {
        MongoSource {
            mongo: Arc::new(mongo),
            configured,
            flatten,
            sample_docs,
            sampled_ids: Default::default(),
        }
    }

    async fn collection_names(&self) -> Result<Vec<String>, SourceError> {
        let db = self.mongo.db().await?;
        let mut names = db
            .list_collection_names()
            .filter(doc! { "type": "collection" })
            .await
            .map_err(|e| self.mongo.err("listing collections", e))?;
        names.retain(|n| !n.starts_with("system."));
        names.sort();
        Ok(names)
    }
}

#[async_trait]
impl Source for MongoSource {
    fn name(&self) -> &str {
        &self.mongo.source
    }

    fn kind(&self) -> &'static str {
        "mongodb"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshot: true,
            incremental: false,
            stream: true,
            units: false,
        }
    }

    fn definitions_property(&self) -> &'static str {
        "sluice.mongodb.columns"
    }

    async fn check(&self) -> Result<String, SourceError> {
        let names = self.collection_names().await?;
        let replica = self.mongo.cluster_time().await.is_ok();
        Ok(format!(
            "database {}: {} collection(s){}",
            self.mongo.database,
            names.len(),
            match replica {
                true => ", change streams available",
                false => " (not a replica set: no change streams)",
            }
        ))
    }

    async fn tables(&self, selected: Option<&[String]>) -> Result<Vec<SourceTable>, SourceError> {
        let names = self.collection_names().await?;
        let asked: Vec<String> = match selected {
            Some(s) => s.to_vec(),
            None if !self.configured.is_empty() => self.configured.clone(),
            None => names.clone(),
        };
        // A pattern stands for the collections it matches now (none: nothing to capture).
        let mut wanted: Vec<String> = Vec::new();
        for a in asked {
            let matched: Vec<String> = match pattern::is_pattern(&a) {
                true => names
                    .iter()
                    .filter(|n| pattern::matches(&a, n))
                    .cloned()
                    .collect(),
                false => vec![a],
            };
            for m in matched {
                if !wanted.contains(&m) {
                    wanted.push(m);
                }
            }
        }
        let db = self.mongo.db().await?;
        let mut out = Vec::new();
        for name in wanted {
            if !names.contains(&name) {
                // MongoDB makes a collection at its first write: one not there yet is empty
                // (and one dropped since the last sync says so in its change stream).
                tracing::info!(source = %self.mongo.source, collection = %name, "no such collection yet: captured as empty");
                out.push(schema::table(&name, &Default::default(), 0));
                continue;
            }
            let estimate = db
                .collection::<Document>(&name)
                .estimated_document_count()
                .await
                .map_err(|e| self.mongo.err(&format!("counting {name}"), e))?;
            let sampled =
                schema::sample(&self.mongo, &name, self.sample_docs, self.flatten).await?;
            out.push(schema::table(&name, &sampled.sample, estimate));
            self.sampled_ids
                .lock()
                .expect("sampled ids")
                .insert(name, sampled.ids);
        }
        Ok(out)
    }

    fn table_as(&self, now: &SourceTable, definitions: &str) -> Result<SourceTable, SourceError> {
        if definitions.is_empty() || definitions == now.definitions {
            return Ok(now.clone());
        }
        let schema = crate::document::from_definitions(definitions).map_err(|message| {
            SourceError::Config {
                source_name: self.mongo.source.clone(),
                message: format!("{}: stored columns: {message}", now.name),
            }
        })?;
        Ok(SourceTable {
            schema,
            definitions: definitions.to_string(),
            ..now.clone()
        })
    }

    async fn check_stream(&self) -> Result<(), SourceError> {
        self.mongo.cluster_time().await.map(|_| ())
    }

    async fn plan_snapshot(
        &self,
        table: &SourceTable,
        chunk_rows: u64,
    ) -> Result<SnapshotPlan, SourceError> {
        let cached = self
            .sampled_ids
            .lock()
            .expect("sampled ids")
            .remove(&table.name);
        let ids = match cached {
            Some(ids) => ids,
            None => {
                schema::sample(&self.mongo, &table.name, self.sample_docs, self.flatten)
                    .await?
                    .ids
            }
        };
        snapshot::plan(table.rows_estimate, chunk_rows, ids).map_err(|message| {
            SourceError::Config {
                source_name: self.mongo.source.clone(),
                message: format!("{}: {message}", table.name),
            }
        })
    }

    async fn snapshot_readers(
        &self,
        n: usize,
        positions: bool,
    ) -> Result<Vec<Box<dyn ChunkReader>>, SourceError> {
        snapshot::readers(&self.mongo, n, positions, self.flatten).await
    }

    async fn open_stream(
        &self,
        tables: Vec<StreamTable>,
        follow: bool,
    ) -> Result<Box<dyn ChangeStream>, SourceError> {
        stream::open(&self.mongo, tables, follow, self.flatten).await
    }

    /// Whether the oplog still holds `at`: its oldest entry is at or before it. The oplog
    /// is capped by size, not in files: `files_before` is 1 while the position is held.
    async fn retention(&self, at: &Position) -> Result<Option<Retention>, SourceError> {
        let Some(at) = MongoPosition::decode(at) else {
            return Ok(None);
        };
        let client = self.mongo.client().await?;
        let oplog = client.database("local").collection::<Document>("oplog.rs");
        let first = oplog
            .find_one(doc! {})
            .sort(doc! { "$natural": 1 })
            .projection(doc! { "ts": 1 })
            .await
            .map_err(|e| self.mongo.err("reading the oldest oplog entry", e))?;
        let Some(Bson::Timestamp(oldest)) = first.and_then(|d| d.get("ts").cloned()) else {
            return Err(SourceError::Unavailable {
                source_name: self.mongo.source.clone(),
                message: "the oplog (local.oplog.rs) is empty or not readable".into(),
            });
        };
        if time_number(oldest) > at.time + 1 {
            return Ok(None);
        }
        let now = chrono::Utc::now().timestamp().max(oldest.time as i64);
        Ok(Some(Retention {
            files_before: 1,
            bytes_before: 0,
            kept_for_secs: Some((now - oldest.time as i64) as u64),
        }))
    }
}
