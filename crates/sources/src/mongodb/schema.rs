//! A collection's columns, from a random sample of its documents and its newest ones, by the
//! policy every source of documents shares.
//! The columns are kept in the lake as definitions ([`document::definitions`]), so a stream
//! resuming later reads with the columns the lake has.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

use super::{convert, Mongo};
use crate::document::{self, definitions, Sample, Scalar};
use crate::source::SourceTable;
use crate::SourceError;

/// The key column.
pub const ID: &str = "_id";

/// A document as columns (`flatten` levels of embedded documents flattened).
pub fn columns(doc: &Document, flatten: usize) -> Result<BTreeMap<String, Scalar>, String> {
    document::columns(convert::fields(doc), flatten)
}

/// What a sample of a collection shows: its columns, and the `_id`s seen (the snapshot
/// plan cuts the collection at them).
#[derive(Default)]
pub struct Sampled {
    pub sample: Sample,
    pub ids: Vec<Bson>,
}

/// Up to `n` documents of `collection` drawn at random (`$sample`: a random cursor on a
/// large collection, so a sample costs `n` reads, not a scan, and shapes from anywhere in the
/// collection count), and the newest `n / 4` by `_id`.
pub async fn sample(
    mongo: &Mongo,
    collection: &str,
    n: usize,
    flatten: usize,
) -> Result<Sampled, SourceError> {
    let coll = mongo.db().await?.collection::<Document>(collection);
    let what = || format!("sampling {collection}");
    let mut cursor = coll
        .aggregate([doc! { "$sample": { "size": n as i64 } }])
        // A sample of 5% or more of a collection is a sort of all of it.
        .allow_disk_use(true)
        .await
        .map_err(|e| mongo.err(&what(), e))?;
    let mut out = Sampled::default();
    let mut read = 0;
    while let Some(d) = cursor.try_next().await.map_err(|e| mongo.err(&what(), e))? {
        read += 1;
        if let Some(id) = d.get(ID) {
            out.ids.push(id.clone());
        }
        if let Ok(cols) = columns(&d, flatten) {
            out.sample.observe(&cols);
        }
    }
    if read < n {
        return Ok(out); // the whole collection
    }
    // Shapes drift: a field added lately is in the newest documents (ObjectIds grow with
    // time), however few. A quarter more from the end of the `_id` index (an index walk of
    // that many on mongod); their ids stay out of the plan's quantiles.
    let mut newest = coll
        .find(doc! {})
        .sort(doc! { ID: -1 })
        .limit(n.div_ceil(4) as i64)
        .await
        .map_err(|e| mongo.err(&what(), e))?;
    while let Some(d) = newest.try_next().await.map_err(|e| mongo.err(&what(), e))? {
        if let Ok(cols) = columns(&d, flatten) {
            out.sample.observe(&cols);
        }
    }
    Ok(out)
}

/// The table a sample makes: `_id` first, the key.
pub fn table(name: &str, sample: &Sample, rows_estimate: u64) -> SourceTable {
    let mut schema = sample.schema(&[ID]);
    if schema.index_of(ID).is_err() {
        // An empty collection: its key is all there is to know.
        let mut fields: Vec<Field> = vec![Field::new(ID, arrow::datatypes::DataType::Utf8, true)];
        fields.extend(schema.fields().iter().map(|f| f.as_ref().clone()));
        schema = Schema::new(fields);
    }
    let schema = Arc::new(schema);
    SourceTable {
        name: name.to_string(),
        definitions: definitions(&schema),
        schema,
        key: vec![ID.to_string()],
        rows_estimate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::widened;
    use arrow::datatypes::DataType;

    #[test]
    fn a_new_field_widens_the_table_and_a_known_one_does_not() {
        let mut s = Sample::default();
        let d1 = columns(&doc! { "_id": 1, "a": "x" }, 0).unwrap();
        s.observe(&d1);
        let t = table("c", &s, 1);
        assert!(widened(&t, &[&d1], false).is_none());
        let d2 = columns(&doc! { "_id": 2, "b": 2.5 }, 0).unwrap();
        let w = widened(&t, &[&d1, &d2], false).unwrap();
        assert_eq!(w.schema.field(2).name(), "b");
        assert_eq!(w.schema.field(2).data_type(), &DataType::Float64);
        assert_eq!(w.key, vec!["_id".to_string()]);
    }
}
