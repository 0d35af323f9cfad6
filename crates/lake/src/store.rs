//! Where the lake lives, and teaching `deltalake` to reach S3 through `object_store` directly
//! (its default log store commits with conditional puts, which S3 supports), so the lake needs
//! neither the AWS SDK nor a DynamoDB lock table.

use std::collections::HashMap;
use std::sync::{Arc, Once};

use deltalake::logstore::{
    logstore_factories, object_store_factories, ObjectStoreFactory, ObjectStoreRef, StorageConfig,
};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::{DeltaResult, DeltaTableError, Path};
use object_store::aws::AmazonS3ConfigKey;
use url::Url;

use sluice_core::store::{location_url, s3_store, StoreOptions};

use crate::table::TablePath;
use crate::LakeError;

/// The lake root and how to reach it.
#[derive(Debug, Clone)]
pub struct Lake {
    root: Url,
    opts: StoreOptions,
    files: FileOptions,
}

/// How the lake writes its Parquet data files (`[lake] compression`, `file_mb`).
#[derive(Debug, Clone, Copy)]
pub struct FileOptions {
    pub compression: Compression,
    /// Bytes a writer buffers before it writes a data file out; compaction's target size.
    pub target_bytes: u64,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            compression: Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")),
            target_bytes: sluice_core::config::DEFAULT_LAKE_FILE_MB << 20,
        }
    }
}

impl FileOptions {
    /// From the config's names (validated there): `zstd`, `snappy`, `lz4`, `gzip`, `none`.
    pub fn new(compression: Option<&str>, file_mb: Option<u64>) -> FileOptions {
        let default = FileOptions::default();
        FileOptions {
            compression: match compression {
                Some("snappy") => Compression::SNAPPY,
                Some("lz4") => Compression::LZ4_RAW,
                Some("gzip") => Compression::GZIP(Default::default()),
                Some("none") => Compression::UNCOMPRESSED,
                _ => default.compression,
            },
            target_bytes: file_mb.map_or(default.target_bytes, |mb| mb << 20),
        }
    }
}

struct S3Factory;

impl ObjectStoreFactory for S3Factory {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        let bucket = url
            .host_str()
            .ok_or_else(|| DeltaTableError::InvalidTableLocation(url.to_string()))?;
        let settings = config
            .raw
            .iter()
            .filter_map(|(k, v)| Some((k.parse::<AmazonS3ConfigKey>().ok()?, v.clone())));
        let store = s3_store(bucket, settings).map_err(DeltaTableError::Generic)?;
        let path = Path::parse(url.path()).map_err(|e| DeltaTableError::Generic(e.to_string()))?;
        Ok((store, path))
    }
}

fn register_s3() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let file = Url::parse("file://").expect("static URL");
        let default_logstore = logstore_factories().get(&file).map(|f| f.value().clone());
        for scheme in ["s3://", "s3a://"] {
            let u = Url::parse(scheme).expect("static URL");
            object_store_factories().insert(u.clone(), Arc::new(S3Factory));
            if let Some(f) = &default_logstore {
                logstore_factories().insert(u, f.clone());
            }
        }
    });
}

impl Lake {
    /// `location` is a folder (already resolved against the config directory), `file://` or
    /// `s3://bucket/prefix`.
    pub fn new(location: &str, opts: StoreOptions) -> Result<Lake, LakeError> {
        register_s3();
        let mut root = location_url(location).map_err(|message| LakeError::Location {
            location: location.to_string(),
            message,
        })?;
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        if root.scheme() == "file" {
            let p = root.to_file_path().map_err(|_| LakeError::Location {
                location: location.into(),
                message: "not a local path".into(),
            })?;
            std::fs::create_dir_all(&p).map_err(|e| LakeError::Location {
                location: location.into(),
                message: e.to_string(),
            })?;
        }
        Ok(Lake {
            root,
            opts,
            files: FileOptions::default(),
        })
    }

    /// The lake writing its data files with `files`.
    pub fn with_files(mut self, files: FileOptions) -> Lake {
        self.files = files;
        self
    }

    pub fn files(&self) -> FileOptions {
        self.files
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    /// URL of a lake table.
    pub fn url_of(&self, path: &TablePath) -> Url {
        self.url_at(&path.relative())
    }

    /// The URL of a folder under the root.
    pub(crate) fn url_at(&self, relative: &str) -> Url {
        self.root.join(relative).expect("relative path joins")
    }

    /// Names of the tables a source has in the change-log area (`changes/<source>/*`).
    pub async fn tables_of(&self, source: &str) -> Result<Vec<String>, LakeError> {
        let url = self.url_at(&format!("changes/{}/", crate::table::segment(source)));
        let err = |message: String| LakeError::Location {
            location: url.to_string(),
            message,
        };
        let (store, prefix) = sluice_core::store::store_for(&url, &self.opts).map_err(err)?;
        let listing = match store.list_with_delimiter(Some(&prefix)).await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(err(e.to_string())),
        };
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(crate::table::name_of))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Storage options handed to deltalake for this lake.
    pub fn storage_options(&self) -> HashMap<String, String> {
        self.opts
            .s3_pairs()
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), v))
            .collect()
    }
}
