//! [`MediaConfig`]: the `[media]` section of an edge's config (and of
//! `chorus media gc`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// An S3-compatible object store. Credentials left out here come from the
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT`…, as `object_store`'s
/// `AmazonS3Builder::from_env` reads them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// E.g. `http://127.0.0.1:9000` for MinIO; none: AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allow a plain-http endpoint (a local MinIO).
    pub allow_http: bool,
}

/// Where media objects live and their limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// The local object store's directory (`LocalFileSystem`), used when
    /// `s3` is not set. `chorus dev`: `<data>/media`.
    pub dir: PathBuf,
    /// Partial uploads, on this edge's disk (default `<dir>/staging`). A
    /// dropped upload resumes from here when the client comes back to the
    /// same edge.
    pub staging_dir: Option<PathBuf>,
    /// An S3-compatible store instead of `dir`.
    pub s3: Option<S3Config>,
    /// Largest object (100 MiB).
    pub file_bytes_max: u64,
    /// Most bytes of objects one user may have uploaded and still stored (1 GiB).
    pub user_quota_bytes: u64,
    /// Largest upload chunk the edge takes (and download chunk it sends),
    /// at most 1 MiB.
    pub chunk_bytes: u32,
    /// Media streams a logged-in connection may have open at once.
    pub streams_per_connection: u32,
    /// An upload no live message references is collected only once it is
    /// older than this (24 h): its message may not have been sent yet.
    pub gc_grace_ms: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            dir: PathBuf::from("data/media"),
            staging_dir: None,
            s3: None,
            file_bytes_max: 100 << 20,
            user_quota_bytes: 1 << 30,
            chunk_bytes: 1 << 20,
            streams_per_connection: 4,
            gc_grace_ms: 24 * 3600 * 1000,
        }
    }
}

impl MediaConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// A message naming the first bad setting.
    pub fn validate(&self) -> Result<(), String> {
        let max = chorus_schema::media::MAX_MEDIA_CHUNK_BYTES;
        if self.chunk_bytes == 0 || self.chunk_bytes as usize > max {
            return Err(format!("media.chunk_bytes must be between 1 and {max}"));
        }
        if self.file_bytes_max == 0 || self.streams_per_connection == 0 {
            return Err("media.file_bytes_max and media.streams_per_connection must be positive".into());
        }
        if let Some(s3) = &self.s3 {
            if s3.bucket.is_empty() {
                return Err("media.s3.bucket is empty".into());
            }
        }
        Ok(())
    }

    /// The staging directory.
    pub fn staging(&self) -> PathBuf {
        self.staging_dir.clone().unwrap_or_else(|| self.dir.join("staging"))
    }
}
