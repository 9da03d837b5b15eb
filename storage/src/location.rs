//! Where segments live: the local data directory, or an object store named by a URL
//! (`s3://bucket/prefix`, `gs://…`, `az://…`, `file:///path`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;

use crate::error::{Result, StoreError};

/// Environment variables read as object-store options, as the cloud SDKs read them.
const OPTION_PREFIXES: [&str; 3] = ["AWS_", "GOOGLE_", "AZURE_"];

#[derive(Clone)]
pub struct SegmentLocation {
    pub(crate) objects: Arc<dyn ObjectStore>,
    /// The directory behind `objects` when it is a local file system (written files are
    /// fsynced there).
    pub(crate) local_root: Option<PathBuf>,
    url: String,
}

impl std::fmt::Debug for SegmentLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl SegmentLocation {
    /// A local directory (created if missing).
    pub fn local(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            objects: Arc::new(LocalFileSystem::new_with_prefix(dir)?),
            local_root: Some(dir.to_path_buf()),
            url: format!("file://{}", dir.display()),
        })
    }

    /// The store `url` names. Its builder takes the `AWS_*`, `GOOGLE_*` and `AZURE_*`
    /// environment variables (e.g. `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`) and then
    /// `options`, which win (keys as object_store names them: `aws_endpoint_url`, …).
    /// Requests are retried with backoff by the store's client.
    pub fn parse(url: &str, options: &[(String, String)]) -> Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|error| StoreError::Config(format!("storage URL {url:?}: {error}")))?;
        if parsed.scheme() == "file" {
            let dir = parsed.to_file_path().map_err(|()| {
                StoreError::Config(format!("storage URL {url:?} is not a local path"))
            })?;
            return Self::local(&dir);
        }
        if !["s3", "s3a", "gs", "az", "azure", "abfs", "abfss"].contains(&parsed.scheme()) {
            return Err(StoreError::Config(format!(
                "storage URL {url:?}: use s3://, gs://, az:// or file://"
            )));
        }
        let from_env = std::env::vars()
            .filter(|(key, _)| OPTION_PREFIXES.iter().any(|prefix| key.starts_with(prefix)));
        let given = options.iter().cloned();
        let (store, prefix) = object_store::parse_url_opts(&parsed, from_env.chain(given))
            .map_err(|error| StoreError::Config(format!("storage URL {url:?}: {error}")))?;
        let objects: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
            Arc::from(store)
        } else {
            Arc::new(PrefixStore::new(store, prefix))
        };
        Ok(Self {
            objects,
            local_root: None,
            url: url.to_string(),
        })
    }

    /// The URL that other processes (a query cluster's executors) read the objects by:
    /// the storage URL, or the local directory's absolute `file://` URL.
    pub fn absolute_url(&self) -> Result<String> {
        match &self.local_root {
            Some(dir) => directory_url(dir),
            None => Ok(self.url.trim_end_matches('/').to_string()),
        }
    }

    /// The URL, for logs (it holds no secrets: options and credentials are apart).
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// `dir` as an absolute `file://` URL, without the trailing slash.
pub(crate) fn directory_url(dir: &Path) -> Result<String> {
    let absolute = std::fs::canonicalize(dir)?;
    let url = url::Url::from_directory_path(&absolute)
        .map_err(|()| StoreError::Config(format!("{} has no file:// URL", absolute.display())))?;
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_anything_is_written() {
        for bad in ["", "bucket/prefix", "ftp://host/x", "s3//bucket"] {
            assert!(SegmentLocation::parse(bad, &[]).is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        let local = SegmentLocation::parse(url.as_str(), &[]).unwrap();
        assert_eq!(local.local_root.as_deref(), Some(dir.path()));
        let s3 = SegmentLocation::parse(
            "s3://bucket/some/prefix",
            &[("aws_region".into(), "eu-west-1".into())],
        )
        .unwrap();
        assert_eq!(s3.url(), "s3://bucket/some/prefix");
        assert!(s3.local_root.is_none());
    }
}
