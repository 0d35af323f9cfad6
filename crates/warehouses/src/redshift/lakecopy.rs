//! Staging straight from the lake: the lake's Parquet data files are the S3 staging area, so
//! a Redshift load lists the files of its commits in a COPY manifest instead of writing a
//! second copy. Before that, each file's text columns are read (only those, and the seq) to
//! size the target's VARCHARs and find values over Redshift's limits. A file holding such a
//! value cannot be copied as it is (COPY from Parquet fails the whole load on it): that file
//! alone is rewritten with the values cut, beside the manifest, and removed after the load.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::Field;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::async_writer::{AsyncArrowWriter, ParquetObjectWriter};
use parquet::arrow::ProjectionMask;

use sluice_core::change::SEQ;

use super::dialect::{self, Bound};
use super::fit::Fit;
use crate::LakeFiles;

/// Where a load's manifest and rewritten files go, inside the lake table's folder (a folder
/// starting with `_`, which Delta readers and VACUUM leave alone).
const SCRATCH: &str = "_sluice_redshift";

/// The load's files of one schema version (one list of columns), in one manifest: COPY
/// from Parquet maps columns by position, so each version is copied into a stage shaped
/// like its own files.
pub struct CopyGroup {
    /// `s3://…/<table>/_sluice_redshift/<load>.manifest` (`<load>.v<k>.manifest` when the
    /// load spans several versions).
    pub url: String,
    /// The columns of these files, in file order, as their footer declares them.
    pub columns: Vec<Field>,
}

/// A load's manifests, written, and what to remove once the load is over.
pub struct Manifest {
    /// One per schema version among the load's files, oldest first.
    pub groups: Vec<CopyGroup>,
    pub fit: Fit,
    /// Files listed, rewritten files among them.
    pub files: usize,
    pub rewritten: usize,
    scratch: Vec<Path>,
}

fn object_path(relative: &str) -> Path {
    Path::parse(relative).unwrap_or_else(|_| Path::from(relative))
}

fn url_of(files: &LakeFiles, relative: &str) -> String {
    format!(
        "{}/{relative}",
        files.table_url.as_str().trim_end_matches('/')
    )
}

/// Reads the bounded columns of one file: its fit, whether a value was over a limit, and
/// the file's columns.
async fn measure(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    size: u64,
    bounds: &HashMap<String, Bound>,
    fit: &mut Fit,
) -> Result<(bool, Vec<Field>), String> {
    let reader = ParquetObjectReader::new(store.clone(), path.clone()).with_file_size(size);
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    let columns: Vec<Field> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let wanted: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            f.name() == SEQ || bounds.get(f.name()).is_some_and(|b| b.limit().is_some())
        })
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
    let mut stream = builder
        .with_projection(mask)
        .build()
        .map_err(|e| format!("{path}: {e}"))?;
    let before = fit.truncated.len();
    while let Some(batch) = stream
        .try_next()
        .await
        .map_err(|e| format!("{path}: {e}"))?
    {
        let b: Vec<Bound> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| bounds.get(f.name()).copied().unwrap_or(Bound::Fixed))
            .collect();
        fit.fit(&batch, &b)?;
    }
    Ok((fit.truncated.len() > before, columns))
}

/// Whether two files have the same columns (names and types, in order).
fn same_columns(a: &[Field], b: &[Field]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

/// Writes `path` again at `to` with every oversize value cut; returns the new size.
async fn rewrite(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    size: u64,
    to: &Path,
    bounds: &HashMap<String, Bound>,
) -> Result<u64, String> {
    let e = |err: parquet::errors::ParquetError| format!("{path}: {err}");
    let reader = ParquetObjectReader::new(store.clone(), path.clone()).with_file_size(size);
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(e)?;
    let schema = builder.schema().clone();
    let b: Vec<Bound> = schema
        .fields()
        .iter()
        .map(|f| bounds.get(f.name()).copied().unwrap_or(Bound::Fixed))
        .collect();
    let mut stream = builder.build().map_err(e)?;
    let mut writer = AsyncArrowWriter::try_new(
        ParquetObjectWriter::new(store.clone(), to.clone()),
        schema,
        None,
    )
    .map_err(e)?;
    let mut scratch_fit = Fit::default();
    while let Some(batch) = stream.try_next().await.map_err(e)? {
        writer
            .write(&scratch_fit.fit(&batch, &b)?)
            .await
            .map_err(e)?;
    }
    writer.close().await.map_err(e)?;
    let head = store.head(to).await.map_err(|err| format!("{to}: {err}"))?;
    Ok(head.size)
}

/// Measures the load's files, rewrites those holding oversize values, and writes one
/// manifest per schema version among them: `<load_id>.manifest`, or `<load_id>.v<k>.manifest`
/// for the k-th version when there are several.
pub async fn write_manifest(
    files: &LakeFiles,
    bounds: &HashMap<String, Bound>,
    load_id: &str,
) -> Result<Manifest, String> {
    let store = &files.store;
    let mut fit = Fit::default();
    // Per schema version: its columns and its files (URL, size).
    type Entries = Vec<(String, u64)>;
    let mut groups: Vec<(Vec<Field>, Entries)> = Vec::new();
    let mut scratch = Vec::new();
    let mut rewritten = 0;
    for (i, (relative, size)) in files.files.iter().enumerate() {
        let path = object_path(relative);
        let (over, columns) = measure(store, &path, *size, bounds, &mut fit).await?;
        let entry = if over {
            let to = Path::from(format!("{SCRATCH}/{load_id}/{i:05}.parquet"));
            let new_size = rewrite(store, &path, *size, &to, bounds).await?;
            tracing::info!(file = %relative, "a value is over Redshift's limit: copying a cut rewrite of the file");
            scratch.push(to.clone());
            rewritten += 1;
            (url_of(files, to.as_ref()), new_size)
        } else {
            (url_of(files, relative), *size)
        };
        match groups.iter_mut().find(|(c, _)| same_columns(c, &columns)) {
            Some((_, entries)) => entries.push(entry),
            None => groups.push((columns, vec![entry])),
        }
    }
    let several = groups.len() > 1;
    let mut written = Vec::new();
    let mut count = 0;
    for (k, (columns, entries)) in groups.into_iter().enumerate() {
        let manifest = match several {
            true => Path::from(format!("{SCRATCH}/{load_id}.v{k}.manifest")),
            false => Path::from(format!("{SCRATCH}/{load_id}.manifest")),
        };
        store
            .put(&manifest, dialect::manifest(&entries).into_bytes().into())
            .await
            .map_err(|e| format!("{manifest}: {e}"))?;
        scratch.push(manifest.clone());
        count += entries.len();
        written.push(CopyGroup {
            url: url_of(files, manifest.as_ref()),
            columns,
        });
    }
    Ok(Manifest {
        groups: written,
        fit,
        files: count,
        rewritten,
        scratch,
    })
}

/// The files a group's manifest lists, as paths in the lake table's store: what the
/// COPY-playing stand-in reads, as Redshift would read the URLs.
pub async fn manifest_files(files: &LakeFiles, group: &CopyGroup) -> Result<Vec<Path>, String> {
    let manifest = relative_of(files, &group.url)?;
    let bytes = files
        .store
        .get(&manifest)
        .await
        .map_err(|e| format!("{manifest}: {e}"))?
        .bytes()
        .await
        .map_err(|e| format!("{manifest}: {e}"))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{manifest}: {e}"))?;
    doc["entries"]
        .as_array()
        .ok_or_else(|| format!("{manifest}: no entries"))?
        .iter()
        .map(|entry| match entry["url"].as_str() {
            Some(url) => relative_of(files, url),
            None => Err(format!("{manifest}: an entry without a url")),
        })
        .collect()
}

/// A URL in the lake table's folder as a path in its store.
fn relative_of(files: &LakeFiles, url: &str) -> Result<Path, String> {
    let folder = format!("{}/", files.table_url.as_str().trim_end_matches('/'));
    url.strip_prefix(&folder)
        .map(object_path)
        .ok_or_else(|| format!("{url} is not in the lake table's folder {folder}"))
}

/// Every batch of one Parquet file (the stand-in's COPY; one file at a time).
pub async fn read_file(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
) -> Result<Vec<arrow::array::RecordBatch>, String> {
    let e = |err: parquet::errors::ParquetError| format!("{path}: {err}");
    ParquetRecordBatchStreamBuilder::new(ParquetObjectReader::new(store.clone(), path.clone()))
        .await
        .map_err(e)?
        .build()
        .map_err(e)?
        .try_collect()
        .await
        .map_err(e)
}

impl Manifest {
    /// Removes the manifest and rewritten files (a leftover is harmless: nothing reads it).
    pub async fn remove(&self, store: &Arc<dyn ObjectStore>) {
        for p in &self.scratch {
            if let Err(e) = store.delete(p).await {
                tracing::warn!(path = %p, "could not remove a Redshift load's scratch file: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use object_store::memory::InMemory;

    async fn put_parquet(
        store: &Arc<dyn ObjectStore>,
        path: &str,
        names: Vec<String>,
        first_seq: i64,
    ) -> u64 {
        let n = names.len() as i64;
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new(SEQ, DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(Int64Array::from_iter_values(first_seq..first_seq + n)),
            ],
        )
        .unwrap();
        put_batch(store, path, &batch).await
    }

    /// Writes `batch` as one Parquet file at `path`; returns its size.
    async fn put_batch(store: &Arc<dyn ObjectStore>, path: &str, batch: &RecordBatch) -> u64 {
        let to = Path::from(path);
        let mut w = AsyncArrowWriter::try_new(
            ParquetObjectWriter::new(store.clone(), to.clone()),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(batch).await.unwrap();
        w.close().await.unwrap();
        store.head(&to).await.unwrap().size
    }

    /// Files within the limits are listed as they are; a file with an oversize value is
    /// rewritten cut, listed instead, and removed with the manifest after the load.
    #[test]
    fn manifest_lists_lake_files_and_rewrites_only_oversize_ones() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let a = "_sluice_ingest_date=2026-11-23/part-a.parquet";
            let b = "_sluice_ingest_date=2026-11-23/part-b.parquet";
            let size_a = put_parquet(&store, a, vec!["x".into(), "hello".into()], 1).await;
            let long = "z".repeat(70_000);
            let size_b = put_parquet(&store, b, vec!["ok".into(), long], 3).await;
            let files = LakeFiles {
                table_url: url::Url::parse("s3://bucket/lake/changes/shop/orders/").unwrap(),
                store: store.clone(),
                files: vec![(a.into(), size_a), (b.into(), size_b)],
                after: 0,
            };
            let bounds = HashMap::from([("name".to_string(), Bound::Text)]);
            let m = write_manifest(&files, &bounds, "load1").await.unwrap();
            assert_eq!(m.groups.len(), 1);
            assert_eq!(
                m.groups[0].url,
                "s3://bucket/lake/changes/shop/orders/_sluice_redshift/load1.manifest"
            );
            assert_eq!((m.files, m.rewritten), (2, 1));
            assert_eq!(m.fit.truncated, vec![4]);
            assert_eq!(m.fit.max_bytes["name"], MAX_VARCHAR_FOR_TEST);
            let text = store
                .get(&Path::from("_sluice_redshift/load1.manifest"))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
            let entries = json["entries"].as_array().unwrap();
            assert_eq!(
                entries[0]["url"],
                format!("s3://bucket/lake/changes/shop/orders/{a}")
            );
            assert_eq!(entries[0]["meta"]["content_length"], size_a);
            assert_eq!(entries[0]["mandatory"], true);
            let rewritten = "_sluice_redshift/load1/00001.parquet";
            assert_eq!(
                entries[1]["url"],
                format!("s3://bucket/lake/changes/shop/orders/{rewritten}")
            );
            let size = store.head(&Path::from(rewritten)).await.unwrap().size;
            assert_eq!(entries[1]["meta"]["content_length"], size);
            // The rewrite holds the same rows, the long value cut to the limit.
            let reader =
                ParquetObjectReader::new(store.clone(), Path::from(rewritten)).with_file_size(size);
            let batches: Vec<RecordBatch> = ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .unwrap()
                .build()
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            let names = batches[0].column(0).as_string::<i32>();
            assert_eq!(names.value(0), "ok");
            assert_eq!(names.value(1).len(), MAX_VARCHAR_FOR_TEST);
            assert!(!names.is_null(1));
            // The lake's own file is untouched; the scratch goes after the load.
            assert_eq!(store.head(&Path::from(b)).await.unwrap().size, size_b);
            m.remove(&store).await;
            assert!(store.head(&Path::from(rewritten)).await.is_err());
            assert!(store
                .head(&Path::from("_sluice_redshift/load1.manifest"))
                .await
                .is_err());
        });
    }

    /// Files of two schema versions (a column added between them) get one manifest each,
    /// with their own columns, in the order the load lists them.
    #[test]
    fn files_of_each_schema_version_get_their_own_manifest() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let old = put_parquet(&store, "d/old.parquet", vec!["a".into()], 1).await;
            let schema = Arc::new(Schema::new(vec![
                Field::new("name", DataType::Utf8, true),
                Field::new(SEQ, DataType::Int64, false),
                Field::new("coupon", DataType::Utf8, true),
            ]));
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(vec!["b"])),
                    Arc::new(Int64Array::from(vec![2])),
                    Arc::new(StringArray::from(vec!["SAVE10"])),
                ],
            )
            .unwrap();
            let new = put_batch(&store, "d/new.parquet", &batch).await;
            let again = put_parquet(&store, "d/again.parquet", vec!["c".into()], 3).await;
            let files = LakeFiles {
                table_url: url::Url::parse("s3://bucket/t/").unwrap(),
                store: store.clone(),
                files: vec![
                    ("d/old.parquet".into(), old),
                    ("d/new.parquet".into(), new),
                    ("d/again.parquet".into(), again),
                ],
                after: 0,
            };
            let bounds = HashMap::from([
                ("name".to_string(), Bound::Text),
                ("coupon".to_string(), Bound::Text),
            ]);
            let m = write_manifest(&files, &bounds, "l").await.unwrap();
            assert_eq!(m.files, 3);
            let names = |g: &CopyGroup| {
                g.columns
                    .iter()
                    .map(|f| f.name().clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(m.groups.len(), 2);
            assert_eq!(names(&m.groups[0]), vec!["name", SEQ]);
            assert_eq!(names(&m.groups[1]), vec!["name", SEQ, "coupon"]);
            assert_eq!(
                m.groups[0].url,
                "s3://bucket/t/_sluice_redshift/l.v0.manifest"
            );
            let listed = |k: usize| {
                let store = store.clone();
                async move {
                    let text = store
                        .get(&Path::from(format!("_sluice_redshift/l.v{k}.manifest")))
                        .await
                        .unwrap()
                        .bytes()
                        .await
                        .unwrap();
                    let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
                    json["entries"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| e["url"].as_str().unwrap().to_string())
                        .collect::<Vec<_>>()
                }
            };
            assert_eq!(
                listed(0).await,
                vec![
                    "s3://bucket/t/d/old.parquet",
                    "s3://bucket/t/d/again.parquet"
                ]
            );
            assert_eq!(listed(1).await, vec!["s3://bucket/t/d/new.parquet"]);
            assert_eq!(m.fit.max_bytes["coupon"], 6);
        });
    }

    const MAX_VARCHAR_FOR_TEST: usize = super::dialect::MAX_VARCHAR;
}
