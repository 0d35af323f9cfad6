//! Snapshots: a collection cut into `_id` ranges, each read by a cursor of its own.
//!
//! The plan walks the `_id` index once (ids only) and keeps every `chunk_rows`-th id as a
//! boundary. A range query matches one BSON type bracket only (`$gte: ObjectId(…)` never
//! matches a number), so a collection whose first and last `_id` differ in bracket is read
//! as one chunk.
//!
//! MongoDB reads are not a point-in-time view across a long scan: a reader notes the cluster
//! time before it starts, and everything committed by then is in what it reads. Changes
//! after it may or may not be; the change stream starts at the earliest reader's time and
//! gives them again, each with the document as it is now (`updateLookup`), so the lake ends
//! at the collection's state either way.

use arrow::array::RecordBatch;
use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

use super::schema::{columns, ID};
use super::{time_number, Mongo, MongoPosition};
use crate::document;
use crate::files::rows::RowBatcher;
use crate::source::{Chunk, ChunkReader, Position, SnapshotPlan, SourceTable};
use crate::SourceError;
use sluice_core::reject::Reject;

/// Documents per Arrow batch handed on.
const BATCH_ROWS: usize = 8 * 1024;

/// Cuts `collection` into chunks of about `chunk_rows` documents.
pub async fn plan(
    mongo: &Mongo,
    collection: &str,
    estimate: u64,
    chunk_rows: u64,
) -> Result<SnapshotPlan, SourceError> {
    let one = SnapshotPlan {
        chunks: 1,
        plan: Vec::new(),
    };
    if estimate <= chunk_rows {
        return Ok(one);
    }
    let coll = mongo.db().await?.collection::<Document>(collection);
    let err = |e| mongo.err(&format!("planning the snapshot of {collection}"), e);
    let end = |order: i32| {
        let coll = coll.clone();
        async move {
            let d = coll
                .find_one(doc! {})
                .sort(doc! { ID: order })
                .projection(doc! { ID: 1 })
                .await?;
            Ok::<_, mongodb::error::Error>(d.and_then(|d| d.get(ID).cloned()))
        }
    };
    let (first, last) = (end(1).await.map_err(err)?, end(-1).await.map_err(err)?);
    match (first, last) {
        (Some(a), Some(b)) if bracket(&a) == bracket(&b) => {}
        _ => return Ok(one),
    }
    let mut bounds: Vec<Bson> = Vec::new();
    let mut cursor = coll
        .find(doc! {})
        .sort(doc! { ID: 1 })
        .projection(doc! { ID: 1 })
        .batch_size(10_000)
        .await
        .map_err(err)?;
    let mut n: u64 = 0;
    while let Some(d) = cursor.try_next().await.map_err(err)? {
        n += 1;
        if n.is_multiple_of(chunk_rows) {
            if let Some(id) = d.get(ID) {
                bounds.push(id.clone());
            }
        }
    }
    let plan = mongodb::bson::to_vec(&doc! { "bounds": bounds.clone() }).map_err(|e| {
        SourceError::Config {
            source_name: mongo.source.clone(),
            message: format!("encoding the snapshot plan: {e}"),
        }
    })?;
    Ok(SnapshotPlan {
        chunks: bounds.len() as u64 + 1,
        plan,
    })
}

/// The comparison bracket of a BSON value: range queries match within one.
fn bracket(v: &Bson) -> u8 {
    match v {
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 1,
        Bson::String(_) | Bson::Symbol(_) => 2,
        Bson::Document(_) => 3,
        Bson::Array(_) => 4,
        Bson::Binary(_) => 5,
        Bson::ObjectId(_) => 6,
        Bson::Boolean(_) => 7,
        Bson::DateTime(_) => 8,
        Bson::Timestamp(_) => 9,
        _ => 10,
    }
}

/// The filter of chunk `index` of `plan`.
pub fn chunk_filter(plan: &SnapshotPlan, index: u64) -> Result<Document, String> {
    if plan.plan.is_empty() {
        return Ok(doc! {});
    }
    let d: Document = mongodb::bson::from_slice(&plan.plan).map_err(|e| e.to_string())?;
    let bounds = d.get_array("bounds").map_err(|e| e.to_string())?;
    let i = index as usize;
    let mut range = Document::new();
    if i > 0 {
        range.insert("$gte", bounds[i - 1].clone());
    }
    if let Some(hi) = bounds.get(i) {
        range.insert("$lt", hi.clone());
    }
    Ok(doc! { ID: range })
}

/// One snapshot reader: the cluster time it started at, then chunk after chunk.
pub struct Reader {
    pub mongo: std::sync::Arc<Mongo>,
    pub flatten: usize,
    pub started: Option<i64>,
}

pub async fn readers(
    mongo: &std::sync::Arc<Mongo>,
    n: usize,
    positions: bool,
    flatten: usize,
) -> Result<Vec<Box<dyn ChunkReader>>, SourceError> {
    // Readers hold no server-side view: one time, read before any of them reads, is where
    // each stands.
    let started = match positions {
        true => Some(time_number(mongo.cluster_time().await?)),
        false => None,
    };
    let out: Vec<Box<dyn ChunkReader>> = (0..n.max(1))
        .map(|_| {
            Box::new(Reader {
                mongo: mongo.clone(),
                flatten,
                started,
            }) as Box<dyn ChunkReader>
        })
        .collect();
    Ok(out)
}

/// A document that did not become a row, for the quarantine.
pub fn reject(table: &str, doc: &Document, column: Option<String>, reason: String) -> Reject {
    Reject {
        file: table.to_string(),
        line: 0,
        column,
        raw: Bson::Document(doc.clone())
            .into_relaxed_extjson()
            .to_string(),
        reason,
    }
}

/// Adds `doc` to `rows` as the table's columns, or says why it cannot be.
pub fn push_document(
    rows: &mut RowBatcher,
    table: &SourceTable,
    doc: &Document,
    flatten: usize,
) -> Result<(), Reject> {
    let cols = columns(doc, flatten).map_err(|reason| reject(&table.name, doc, None, reason))?;
    push_columns(rows, table, doc, &cols)
}

/// Adds a document's columns to `rows`, or says why they cannot be.
pub fn push_columns(
    rows: &mut RowBatcher,
    table: &SourceTable,
    doc: &Document,
    cols: &std::collections::BTreeMap<String, document::Scalar>,
) -> Result<(), Reject> {
    let texts = document::texts(&table.schema, cols).map_err(|field| {
        reject(
            &table.name,
            doc,
            Some(field.clone()),
            format!("field `{field}` is not a column of the table (its columns were inferred from a sample of documents: raise sample_docs, or sync in cdc mode, which adds new fields as columns)"),
        )
    })?;
    rows.push_row(&texts).map_err(|e| {
        let col = table.schema.field(e.column).name().clone();
        reject(
            &table.name,
            doc,
            Some(col.clone()),
            format!("column {col}: {}", e.reason),
        )
    })
}

/// A batcher of a table's rows, refusing rows without a key.
pub fn batcher(table: &SourceTable) -> Result<RowBatcher, SourceError> {
    RowBatcher::for_file(&table.schema, &table.name, &table.key)
}

#[async_trait]
impl ChunkReader for Reader {
    fn read_at(&self) -> Option<i64> {
        self.started
    }

    fn position(&self) -> Option<Position> {
        self.started
            .map(|time| MongoPosition { time, token: None }.encode())
    }

    async fn read(
        &mut self,
        table: &SourceTable,
        plan: &SnapshotPlan,
        index: u64,
        out: &tokio::sync::mpsc::Sender<RecordBatch>,
    ) -> Result<Chunk, SourceError> {
        let mongo = &self.mongo;
        let filter = chunk_filter(plan, index).map_err(|message| SourceError::Config {
            source_name: mongo.source.clone(),
            message: format!("{}: snapshot plan: {message}", table.name),
        })?;
        let coll = mongo.db().await?.collection::<Document>(&table.name);
        let what = format!("reading chunk {index} of {}", table.name);
        let mut cursor = coll
            .find(filter)
            .batch_size(2_000)
            .await
            .map_err(|e| mongo.err(&what, e))?;
        let mut rows = batcher(table)?;
        let mut chunk = Chunk::default();
        let closed = || SourceError::Sink("the snapshot writer stopped".into());
        while let Some(doc) = cursor.try_next().await.map_err(|e| mongo.err(&what, e))? {
            if let Err(r) = push_document(&mut rows, table, &doc, self.flatten) {
                chunk.rejects.push(r);
            }
            if rows.len() >= BATCH_ROWS || rows.is_full() {
                out.send(rows.take().expect("full"))
                    .await
                    .map_err(|_| closed())?;
            }
        }
        if let Some(b) = rows.take() {
            out.send(b).await.map_err(|_| closed())?;
        }
        Ok(chunk)
    }

    async fn close(self: Box<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_id_range_without_overlap() {
        let plan = SnapshotPlan {
            chunks: 3,
            plan: mongodb::bson::to_vec(&doc! { "bounds": [10, 20] }).unwrap(),
        };
        assert_eq!(
            chunk_filter(&plan, 0).unwrap(),
            doc! { "_id": { "$lt": 10 } }
        );
        assert_eq!(
            chunk_filter(&plan, 1).unwrap(),
            doc! { "_id": { "$gte": 10, "$lt": 20 } }
        );
        assert_eq!(
            chunk_filter(&plan, 2).unwrap(),
            doc! { "_id": { "$gte": 20 } }
        );
        let one = SnapshotPlan {
            chunks: 1,
            plan: Vec::new(),
        };
        assert_eq!(chunk_filter(&one, 0).unwrap(), doc! {});
    }
}
