//! Finding the files of a files source: a folder, a single file, or a `{date}` folder pattern,
//! on local disk or an object store.
//!
//! ```text
//!   url = "s3://drops/supplier/{date}/"       static prefix: s3://drops/supplier/
//!          └── 20200604/part-0.tbl.gz          date segment:  {date} = 20200604 -> 2020-06-04
//!          └── 2020-06-05/part-0.tbl.gz        (YYYYMMDD or YYYY-MM-DD; `dt={date}` works too)
//! ```
//!
//! Files are returned in (date, path) order so older drops land first. Hidden files and
//! markers (`.x`, `_SUCCESS`) are skipped.
//!
//! Each file also carries its partition values: the folders between the static prefix and the
//! file, Hive-style `key=value` named by their key and any other folder `partition_<level>`
//! (as Glue names them). A files source with `partitions = true` adds them as columns.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use sluice_core::names::percent_decode;
use sluice_core::store::{location_url, store_for, StoreOptions};

use crate::SourceError;

/// One file found by listing.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// The file's full location (a local path or an `s3://` URL): its identity in positions.
    pub id: String,
    /// Path inside the store.
    pub path: Path,
    /// The date of its `{date}` folder, if the pattern has one.
    pub date: Option<NaiveDate>,
    pub modified: DateTime<Utc>,
    pub size: u64,
    /// The store's entity tag (S3: changes with the content), when it gives one.
    pub etag: Option<String>,
    /// The folders between the prefix and the file, outermost first.
    pub partitions: Vec<PartitionValue>,
}

impl FileEntry {
    /// What identifies this version of the file, beyond its path: a file re-dropped under
    /// the same name with other content is a new file. A hash of its size and its entity tag
    /// (or, where the store gives none, its modification time); never 0 or 1, which positions
    /// written before versions were recorded hold.
    pub fn version(&self) -> i64 {
        let seen = match &self.etag {
            Some(tag) => format!("{}\0etag\0{tag}", self.size),
            None => format!(
                "{}\0mtime\0{}",
                self.size,
                self.modified.timestamp_nanos_opt().unwrap_or_default()
            ),
        };
        let v = (sluice_core::names::stable_hash(seen.as_bytes()) >> 1) as i64;
        v.max(2)
    }

    /// Whether `other` (the same path, seen again) is still this version.
    pub fn same_version(&self, other: &FileEntry) -> bool {
        self.size == other.size && self.etag == other.etag && self.modified == other.modified
    }
}

/// Hive writes NULL partition values as this folder value.
const HIVE_NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// One folder level of a file's path read as a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionValue {
    /// `key` of `key=value`, else `partition_<level>` (0 = outermost).
    pub key: String,
    /// None for Hive's NULL partition.
    pub value: Option<String>,
}

/// The partitions of a file from its folder names (outermost first), percent-decoded; an
/// unnamed date folder in either `{date}` form reads as `YYYY-MM-DD`.
pub fn partitions_of(folders: &[String]) -> Vec<PartitionValue> {
    folders
        .iter()
        .enumerate()
        .map(|(level, seg)| {
            let (key, value) = match seg.split_once('=') {
                Some((k, v)) if !k.is_empty() => (percent_decode(k), percent_decode(v)),
                // A date folder (`20240102` or `2024-01-02`, as `{date}` reads them) is a date.
                _ => (
                    format!("partition_{level}"),
                    parse_folder_date(seg)
                        .map(|d| d.format("%Y-%m-%d").to_string())
                        .unwrap_or_else(|| percent_decode(seg)),
                ),
            };
            PartitionValue {
                key,
                value: (value != HIVE_NULL_PARTITION).then_some(value),
            }
        })
        .collect()
}

/// Where a files source's files live.
#[derive(Clone)]
pub struct FileLocation {
    store: Arc<dyn ObjectStore>,
    /// `file` or `s3`: how to spell ids.
    scheme: String,
    bucket: String,
    /// Fixed part before `{date}` (or the whole location).
    prefix: Path,
    /// `{date}` segment template split around the placeholder, e.g. ("dt=", "").
    date_segment: Option<(String, String)>,
    /// Path after the date segment that files must sit under.
    after_date: Vec<String>,
    /// Glob on file names.
    pattern: Option<String>,
    /// Files are taken only from folders holding a file of this name (`_SUCCESS`).
    ready_marker: Option<String>,
}

impl FileLocation {
    pub fn new(
        location: &str,
        pattern: Option<String>,
        opts: &StoreOptions,
    ) -> Result<FileLocation, String> {
        Self::with_marker(location, pattern, None, opts)
    }

    /// [`FileLocation::new`], taking files only from folders that hold `ready_marker`.
    pub fn with_marker(
        location: &str,
        pattern: Option<String>,
        ready_marker: Option<String>,
        opts: &StoreOptions,
    ) -> Result<FileLocation, String> {
        let (before, date_segment, after) = match location.find("{date}") {
            Some(at) => {
                let seg_start = location[..at].rfind('/').map(|i| i + 1).unwrap_or(0);
                let seg_end = location[at..]
                    .find('/')
                    .map(|i| at + i)
                    .unwrap_or(location.len());
                let seg = &location[seg_start..seg_end];
                let (pre, post) = seg.split_once("{date}").expect("found above");
                let after: Vec<String> = location[seg_end..]
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                (
                    &location[..seg_start],
                    Some((pre.to_string(), post.to_string())),
                    after,
                )
            }
            None => (location, None, Vec::new()),
        };
        let before = if before.is_empty() { "." } else { before };
        let url = location_url(before)?;
        let (store, prefix) = store_for(&url, opts)?;
        Ok(FileLocation {
            store,
            scheme: url.scheme().to_string(),
            bucket: url.host_str().unwrap_or_default().to_string(),
            prefix,
            date_segment,
            after_date: after,
            pattern,
            ready_marker,
        })
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Every file, in (date, path) order.
    pub async fn list(&self) -> Result<Vec<FileEntry>, SourceError> {
        let err = |message: String| SourceError::List {
            location: self.display(&self.prefix),
            message,
        };
        // A single file given directly.
        if self.date_segment.is_none() {
            if let Ok(meta) = self.store.head(&self.prefix).await {
                return Ok(vec![self.entry(meta, None, &[])]);
            }
        }
        let metas: Vec<_> = match self.store.list(Some(&self.prefix)).try_collect().await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(err(e.to_string())),
        };
        // Folders that say their files are complete (the marker is written last).
        let ready: std::collections::HashSet<String> = match &self.ready_marker {
            Some(marker) => metas
                .iter()
                .filter(|m| m.location.filename() == Some(marker.as_str()))
                .map(|m| parent_of(&m.location))
                .collect(),
            None => Default::default(),
        };
        let mut out = Vec::new();
        for meta in metas {
            let rel: Vec<String> = match meta.location.prefix_match(&self.prefix) {
                Some(parts) => parts.map(|p| p.as_ref().to_string()).collect(),
                None => continue,
            };
            let Some(name) = rel.last() else { continue };
            if self.ready_marker.is_some() && !ready.contains(&parent_of(&meta.location)) {
                continue;
            }
            if name.starts_with('.') || name.starts_with('_') || !self.name_matches(name) {
                continue;
            }
            let date = match &self.date_segment {
                None => None,
                Some((pre, post)) => {
                    let Some(seg) = rel.first() else { continue };
                    let Some(d) = seg
                        .strip_prefix(pre.as_str())
                        .and_then(|s| s.strip_suffix(post.as_str()))
                        .and_then(parse_folder_date)
                    else {
                        continue;
                    };
                    if rel.len() < 2 + self.after_date.len()
                        || rel[1..=self.after_date.len()] != self.after_date[..]
                    {
                        continue;
                    }
                    Some(d)
                }
            };
            out.push(self.entry(meta, date, &rel[..rel.len() - 1]));
        }
        out.sort_by(|a, b| (a.date, &a.id).cmp(&(b.date, &b.id)));
        Ok(out)
    }

    fn entry(
        &self,
        meta: object_store::ObjectMeta,
        date: Option<NaiveDate>,
        folders: &[String],
    ) -> FileEntry {
        FileEntry {
            id: self.display(&meta.location),
            path: meta.location,
            date,
            modified: meta.last_modified,
            size: meta.size,
            // The local store's tag is made of the inode, size and time: the time says it.
            etag: meta.e_tag.filter(|_| self.scheme != "file"),
            partitions: partitions_of(folders),
        }
    }

    /// The file as the store has it now (None: gone).
    pub async fn stat(&self, entry: &FileEntry) -> Result<Option<FileEntry>, SourceError> {
        match self.store.head(&entry.path).await {
            Ok(meta) => {
                let mut now = self.entry(meta, entry.date, &[]);
                now.partitions = entry.partitions.clone();
                Ok(Some(now))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(SourceError::File {
                file: entry.id.clone(),
                message: e.to_string(),
            }),
        }
    }

    /// Whether files here can be seen while still being written (a local folder; an object
    /// store shows an object only once its upload completed).
    pub fn can_grow(&self) -> bool {
        self.scheme == "file"
    }

    fn display(&self, p: &Path) -> String {
        match self.scheme.as_str() {
            "file" => format!("/{p}"),
            s => format!("{s}://{}/{p}", self.bucket),
        }
    }

    fn name_matches(&self, name: &str) -> bool {
        self.pattern
            .as_deref()
            .map(|p| sluice_core::pattern::matches(p, name))
            .unwrap_or(true)
    }

    /// Local path of a file, when the store is the local filesystem.
    pub fn local_path(&self, entry: &FileEntry) -> Option<std::path::PathBuf> {
        (self.scheme == "file").then(|| std::path::PathBuf::from(format!("/{}", entry.path)))
    }
}

/// The folder of an object path.
fn parent_of(p: &Path) -> String {
    let s = p.as_ref();
    s.rsplit_once('/')
        .map(|(d, _)| d.to_string())
        .unwrap_or_default()
}

/// `YYYYMMDD` or `YYYY-MM-DD`.
pub fn parse_folder_date(s: &str) -> Option<NaiveDate> {
    match s.len() {
        8 => NaiveDate::parse_from_str(s, "%Y%m%d").ok(),
        10 => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_dates() {
        assert_eq!(
            parse_folder_date("20200604"),
            NaiveDate::from_ymd_opt(2020, 6, 4)
        );
        assert_eq!(
            parse_folder_date("2020-06-04"),
            NaiveDate::from_ymd_opt(2020, 6, 4)
        );
        assert_eq!(parse_folder_date("2020064"), None);
    }

    #[test]
    fn partitions_from_folders() {
        let folders: Vec<String> = [
            "dt=2024-01-02",
            "region=eu%20west",
            "20240102",
            "k=__HIVE_DEFAULT_PARTITION__",
        ]
        .map(String::from)
        .to_vec();
        let p = partitions_of(&folders);
        let pairs: Vec<(&str, Option<&str>)> = p
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_deref()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("dt", Some("2024-01-02")),
                ("region", Some("eu west")),
                ("partition_2", Some("2024-01-02")),
                ("k", None),
            ]
        );
        assert_eq!(percent_decode("a%3Db%2"), "a=b%2");
    }

    #[tokio::test]
    async fn lists_date_folders_in_order_skipping_markers() {
        let dir = tempfile::tempdir().unwrap();
        for p in [
            "s/20200605/b.csv",
            "s/2020-06-04/a.csv",
            "s/20200604/_SUCCESS",
            "s/notadate/x.csv",
            "s/20200606/sub/c.csv",
        ] {
            let f = dir.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "x").unwrap();
        }
        let loc = format!("{}/s/{{date}}/", dir.path().display());
        let l = FileLocation::new(&loc, None, &StoreOptions::default()).unwrap();
        let files = l.list().await.unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.id.rsplit('/').next().unwrap().to_string())
            .collect();
        assert_eq!(names, vec!["a.csv", "b.csv", "c.csv"]);
        assert_eq!(files[0].date, NaiveDate::from_ymd_opt(2020, 6, 4));
        let sub = FileLocation::new(
            &format!("{}/s/{{date}}/sub/", dir.path().display()),
            None,
            &StoreOptions::default(),
        )
        .unwrap();
        assert_eq!(sub.list().await.unwrap().len(), 1);
    }
}
