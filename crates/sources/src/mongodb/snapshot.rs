//! Snapshots: a collection cut into `_id` ranges, each read by a cursor of its own.
//!
//! The plan cuts at quantiles of the `_id`s the schema sample drew (as Spark's sample
//! partitioner does), so planning reads nothing more than the sample. A range query
//! matches one BSON type bracket only (`$gte: ObjectId(…)` never matches a number): ranges
//! are cut in the bracket most sampled `_id`s are in, and the first chunk also takes every
//! `_id` of another.
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

/// Cuts a collection of about `estimate` documents into chunks of about `chunk_rows`, at
/// `_id`s drawn at random from it (their quantiles, so chunks come out near even).
pub fn plan(estimate: u64, chunk_rows: u64, mut ids: Vec<Bson>) -> Result<SnapshotPlan, String> {
    let one = SnapshotPlan {
        chunks: 1,
        plan: Vec::new(),
    };
    let wanted = estimate.div_ceil(chunk_rows.max(1)) as usize;
    // Ranges are cut in the bracket most sampled `_id`s are in; the first chunk takes the
    // others.
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for b in ids.iter().filter_map(bracket) {
        match counts.iter_mut().find(|(k, _)| *k == b) {
            Some((_, n)) => *n += 1,
            None => counts.push((b, 1)),
        }
    }
    let Some((bracket, _)) = counts.into_iter().max_by_key(|(_, n)| *n) else {
        return Ok(one);
    };
    if wanted < 2 {
        return Ok(one);
    }
    ids.retain(|id| self::bracket(id) == Some(bracket));
    ids.sort_by(order);
    ids.dedup_by(|a, b| order(a, b).is_eq());
    let chunks = wanted.min(ids.len());
    let bounds: Vec<Bson> = (1..chunks)
        .map(|i| ids[i * ids.len() / chunks].clone())
        .collect();
    if bounds.is_empty() {
        return Ok(one);
    }
    let plan = mongodb::bson::to_vec(&doc! { "bounds": bounds.clone(), "type": bracket })
        .map_err(|e| format!("encoding the snapshot plan: {e}"))?;
    Ok(SnapshotPlan {
        chunks: bounds.len() as u64 + 1,
        plan,
    })
}

/// The `$type` of the comparison bracket `v` is in, for the kinds of `_id` a plan cuts.
fn bracket(v: &Bson) -> Option<&'static str> {
    match v {
        Bson::ObjectId(_) => Some("objectId"),
        Bson::Int32(_) | Bson::Int64(_) => Some("number"),
        Bson::Double(d) if d.is_finite() => Some("number"),
        Bson::String(_) => Some("string"),
        Bson::DateTime(_) => Some("date"),
        _ => None,
    }
}

/// The server's order of two `_id`s of one bracket. An order that differed from the
/// server's would only make chunks overlap, never leave a gap: a document is in the chunk
/// of the greatest bound at or below it.
fn order(a: &Bson, b: &Bson) -> std::cmp::Ordering {
    let number = |v: &Bson| match v {
        Bson::Int32(n) => *n as f64,
        Bson::Int64(n) => *n as f64,
        Bson::Double(d) => *d,
        _ => 0.0,
    };
    match (a, b) {
        (Bson::ObjectId(a), Bson::ObjectId(b)) => a.bytes().cmp(&b.bytes()),
        (Bson::String(a), Bson::String(b)) => a.as_bytes().cmp(b.as_bytes()),
        (Bson::DateTime(a), Bson::DateTime(b)) => a.cmp(b),
        _ => number(a).total_cmp(&number(b)),
    }
}

/// The filter of chunk `index` of `plan`. The first chunk also takes every `_id` outside
/// the plan's bracket (a range matches one bracket only), so no document falls between.
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
    match (i, d.get_str("type")) {
        (0, Ok(t)) => Ok(doc! { "$or": [
            { ID: range },
            { ID: { "$not": { "$type": t } } },
        ] }),
        _ => Ok(doc! { ID: range }),
    }
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
            format!("field `{field}` is not a column of the table (its columns come from a random sample of `sample_docs` documents, which missed it: raise sample_docs and snapshot the collection again, `sluice sync --resnapshot SOURCE.{}`)", table.name),
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
            doc! { "_id": { "$lt": 10 } },
            "a plan from before brackets were recorded reads as it did"
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

    #[test]
    fn a_plan_cuts_at_quantiles_and_its_first_chunk_takes_other_brackets() {
        let ids: Vec<Bson> = (0..1000).rev().map(|i| Bson::Int64(i * 10)).collect();
        let p = plan(100_000, 25_000, ids).unwrap();
        assert_eq!(p.chunks, 4);
        assert_eq!(
            chunk_filter(&p, 0).unwrap(),
            doc! { "$or": [
                { "_id": { "$lt": 2500_i64 } },
                { "_id": { "$not": { "$type": "number" } } },
            ] }
        );
        assert_eq!(
            chunk_filter(&p, 1).unwrap(),
            doc! { "_id": { "$gte": 2500_i64, "$lt": 5000_i64 } }
        );
        assert_eq!(
            chunk_filter(&p, 3).unwrap(),
            doc! { "_id": { "$gte": 7500_i64 } }
        );
        let oids = vec![Bson::ObjectId(mongodb::bson::oid::ObjectId::from_bytes([7; 12])); 10];
        assert_eq!(
            plan(100, 10, oids).unwrap().chunks,
            1,
            "one distinct id: nothing to cut at"
        );
        let mixed = vec![
            Bson::Int32(1),
            Bson::String("a".into()),
            Bson::Int32(3),
            Bson::Boolean(true),
        ];
        let p = plan(100, 50, mixed).unwrap();
        assert_eq!(p.chunks, 2, "cut in the bracket most ids are in");
        assert_eq!(chunk_filter(&p, 1).unwrap(), doc! { "_id": { "$gte": 3 } });
        assert_eq!(
            plan(100, 1000, vec![Bson::Int32(1), Bson::Int32(2)])
                .unwrap()
                .chunks,
            1
        );
    }
}
