//! Object stores from URLs: a local folder (or `file://`) and `s3://bucket/prefix`.
//!
//! S3 credentials and settings come from the standard AWS environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP`, ...); config can add an endpoint, a region and server-side encryption.

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;
use url::Url;

pub mod steady;

/// Options for S3 stores beyond the AWS environment.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `aws:kms` or `AES256`.
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
}

/// An S3 config key by its documented name (the encryption keys' enum is not exported).
fn key(name: &str) -> AmazonS3ConfigKey {
    name.parse().expect("a key object_store documents")
}

impl StoreOptions {
    /// As `object_store` S3 config key/value pairs.
    pub fn s3_pairs(&self) -> Vec<(AmazonS3ConfigKey, String)> {
        let mut out = Vec::new();
        if let Some(e) = &self.endpoint {
            out.push((AmazonS3ConfigKey::Endpoint, e.clone()));
            if e.starts_with("http://") {
                out.push((
                    AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
                    "true".into(),
                ));
            }
        }
        if let Some(r) = &self.region {
            out.push((AmazonS3ConfigKey::Region, r.clone()));
        }
        if let Some(s) = &self.sse {
            out.push((key("aws_server_side_encryption"), s.clone()));
        }
        if let Some(k) = &self.sse_kms_key_id {
            out.push((key("aws_sse_kms_key_id"), k.clone()));
        }
        out
    }
}

/// How S3 requests are retried, for the lake and the files sources alike. The client's
/// default (10 retries from 100 ms) gives up within about 2 s when the endpoint refuses
/// connections; these ride out about 15 s per request (measured) before the run fails as
/// transient, and a `--follow` run then retries by its own policy.
pub fn s3_retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(500),
            max_backoff: std::time::Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 12,
        retry_timeout: std::time::Duration::from_secs(180),
    }
}

/// The S3 store of `bucket`: credentials from the AWS environment, `settings` on top, the
/// retries of [`s3_retry`], and reads that outlast a broken connection ([`steady::Steady`]).
/// The lake and the files sources both reach S3 through this.
pub fn s3_store(
    bucket: &str,
    settings: impl IntoIterator<Item = (AmazonS3ConfigKey, String)>,
) -> Result<Arc<dyn ObjectStore>, String> {
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(s3_retry());
    for (k, v) in settings {
        b = b.with_config(k, v);
    }
    let store = b.build().map_err(|e| e.to_string())?;
    Ok(Arc::new(steady::Steady::new(Arc::new(store))))
}

/// Turns a config location (relative or absolute folder, `file://`, `s3://`) into a URL.
/// Relative paths must already be resolved against the config directory.
pub fn location_url(location: &str) -> Result<Url, String> {
    if location.contains("://") {
        return Url::parse(location).map_err(|e| format!("bad URL {location:?}: {e}"));
    }
    let path = std::path::absolute(location).map_err(|e| format!("bad path {location:?}: {e}"))?;
    Url::from_directory_path(&path).map_err(|_| format!("bad path {}", path.display()))
}

/// The store holding `url` (rooted at the bucket or the filesystem root) and the path of `url`
/// inside it.
pub fn store_for(url: &Url, opts: &StoreOptions) -> Result<(Arc<dyn ObjectStore>, Path), String> {
    match url.scheme() {
        "file" => {
            let path = url
                .to_file_path()
                .map_err(|_| format!("bad file URL {url}"))?;
            // Not canonicalised: a drop folder may not exist yet.
            let p =
                Path::from_absolute_path(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((Arc::new(LocalFileSystem::new()), p))
        }
        "s3" | "s3a" => {
            let bucket = url.host_str().ok_or_else(|| format!("{url}: no bucket"))?;
            let store = s3_store(bucket, opts.s3_pairs()).map_err(|e| format!("{url}: {e}"))?;
            let p = Path::parse(url.path().trim_start_matches('/'))
                .map_err(|e| format!("{url}: {e}"))?;
            Ok((store, p))
        }
        other => Err(format!(
            "{url}: unsupported scheme `{other}` (use a folder, file:// or s3://)"
        )),
    }
}
