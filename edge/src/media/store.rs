//! [`MediaStore`]: content-addressed objects in an `object_store` (a local
//! directory or S3), partial uploads staged on local disk.
//!
//! Layout in the object store:
//! - `objects/<hex BLAKE3>`: the ciphertext;
//! - `meta/<hex>`: its MIME type (as the uploader declared it);
//! - `owners/<user>/<hex>-<size>`: an empty marker per user who uploaded it
//!   (the user's quota is the sum of the sizes under `owners/<user>/`).
//!
//! Staged uploads: `<staging>/<hex>.part`, appended chunk by chunk.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chorus_schema::UserId;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::MediaConfig;

/// Parts of a multipart put (S3 wants at least 5 MiB).
const PART_BYTES: usize = 8 << 20;

/// A store failure (IO or object store): retryable for the client.
#[derive(Debug, thiserror::Error)]
#[error("media store: {0}")]
pub struct StoreError(pub String);

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// One stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    pub blake3: [u8; 32],
    pub size: u64,
    /// When it was stored (ms since the epoch).
    pub stored_ms: u64,
}

/// The media objects and the staging area.
pub struct MediaStore {
    objects: Arc<dyn ObjectStore>,
    staging: PathBuf,
    /// The staging directory is the local store's `staging/`: a verified
    /// upload is published by a rename, not a copy.
    staged_in_store: bool,
    /// Hashes being uploaded here, one stream at a time each.
    uploading: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for MediaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaStore").field("objects", &self.objects.to_string()).finish_non_exhaustive()
    }
}

fn object_path(hash: &[u8; 32]) -> Path {
    Path::from(format!("objects/{}", hex::encode(hash)))
}

fn meta_path(hash: &[u8; 32]) -> Path {
    Path::from(format!("meta/{}", hex::encode(hash)))
}

fn owners_prefix(user: UserId) -> Path {
    Path::from(format!("owners/{}", user.0))
}

fn owner_path(user: UserId, hash: &[u8; 32], size: u64) -> Path {
    Path::from(format!("owners/{}/{}-{size}", user.0, hex::encode(hash)))
}

fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let mut h = [0u8; 32];
    hex::decode_to_slice(s, &mut h).ok()?;
    Some(h)
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl MediaStore {
    /// Opens the configured store (creating the local directories).
    ///
    /// # Errors
    /// A bad S3 configuration, or directories that cannot be created.
    pub fn open(config: &MediaConfig) -> Result<MediaStore, StoreError> {
        config.validate().map_err(StoreError)?;
        let objects: Arc<dyn ObjectStore> = match &config.s3 {
            Some(s3) => {
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&s3.bucket);
                if let Some(e) = &s3.endpoint {
                    b = b.with_endpoint(e);
                }
                if let Some(r) = &s3.region {
                    b = b.with_region(r);
                }
                if let Some(k) = &s3.access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(k) = &s3.secret_access_key {
                    b = b.with_secret_access_key(k);
                }
                Arc::new(b.with_allow_http(s3.allow_http).build().map_err(err)?)
            }
            None => {
                std::fs::create_dir_all(&config.dir).map_err(|e| err(format!("{}: {e}", config.dir.display())))?;
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&config.dir).map_err(err)?)
            }
        };
        let staging = config.staging();
        let staged_in_store = config.s3.is_none() && config.staging_dir.is_none();
        std::fs::create_dir_all(&staging).map_err(|e| err(format!("{}: {e}", staging.display())))?;
        Ok(MediaStore { objects, staging, staged_in_store, uploading: Mutex::new(HashMap::new()) })
    }

    /// The size of a stored object, if it is stored.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn size_of(&self, hash: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        match self.objects.head(&object_path(hash)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    /// The declared MIME type of a stored object.
    pub async fn mime_of(&self, hash: &[u8; 32]) -> String {
        match self.objects.get(&meta_path(hash)).await {
            Ok(r) => r.bytes().await.ok().and_then(|b| String::from_utf8(b.to_vec()).ok()),
            Err(_) => None,
        }
        .unwrap_or_else(|| "application/octet-stream".into())
    }

    /// `range` of a stored object.
    ///
    /// # Errors
    /// When the store fails (or the object went away).
    pub async fn read(&self, hash: &[u8; 32], range: std::ops::Range<u64>) -> Result<Bytes, StoreError> {
        self.objects.get_range(&object_path(hash), range).await.map_err(err)
    }

    /// The bytes of objects `user` uploaded that are still stored.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn user_bytes(&self, user: UserId) -> Result<u64, StoreError> {
        let metas: Vec<_> = self.objects.list(Some(&owners_prefix(user))).try_collect().await.map_err(err)?;
        Ok(metas
            .iter()
            .filter_map(|m| m.location.filename()?.rsplit_once('-')?.1.parse::<u64>().ok())
            .fold(0u64, u64::saturating_add))
    }

    /// Whether `user` already counts `hash` in their quota.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn owns(&self, user: UserId, hash: &[u8; 32], size: u64) -> Result<bool, StoreError> {
        match self.objects.head(&owner_path(user, hash, size)).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    /// Counts `hash` in `user`'s quota.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn add_owner(&self, user: UserId, hash: &[u8; 32], size: u64) -> Result<(), StoreError> {
        self.objects.put(&owner_path(user, hash, size), PutPayload::new()).await.map_err(err)?;
        Ok(())
    }

    /// Waits until no other stream here uploads `hash` (a dropped
    /// connection's stream may still be ending) and holds it.
    pub async fn lock_upload(&self, hash: &[u8; 32]) -> tokio::sync::OwnedMutexGuard<()> {
        let m = crate::lock(&self.uploading).entry(*hash).or_default().clone();
        m.lock_owned().await
    }

    fn staged_path(&self, hash: &[u8; 32]) -> PathBuf {
        self.staging.join(format!("{}.part", hex::encode(hash)))
    }

    /// Bytes staged for `hash`.
    pub async fn staged_len(&self, hash: &[u8; 32]) -> u64 {
        tokio::fs::metadata(self.staged_path(hash)).await.map_or(0, |m| m.len())
    }

    /// Opens the staging file of `hash` to append at `have` (cutting what
    /// is past it).
    ///
    /// # Errors
    /// On IO failure.
    pub async fn stage(&self, hash: &[u8; 32], have: u64) -> Result<tokio::fs::File, StoreError> {
        let path = self.staged_path(hash);
        let file = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await.map_err(err)?;
        file.set_len(have).await.map_err(err)?;
        Ok(file)
    }

    /// Appends a chunk to a staging file.
    ///
    /// # Errors
    /// On IO failure.
    pub async fn append(file: &mut tokio::fs::File, data: &[u8]) -> Result<(), StoreError> {
        file.write_all(data).await.map_err(err)?;
        file.flush().await.map_err(err)
    }

    /// The BLAKE3 of the staged bytes of `hash`.
    ///
    /// # Errors
    /// On IO failure.
    pub async fn staged_hash(&self, hash: &[u8; 32]) -> Result<[u8; 32], StoreError> {
        let mut file = tokio::fs::File::open(self.staged_path(hash)).await.map_err(err)?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).await.map_err(err)?;
            if n == 0 {
                break;
            }
            hasher.update(buf.get(..n).unwrap_or_default());
        }
        Ok(*hasher.finalize().as_bytes())
    }

    /// Drops the staged bytes of `hash`.
    pub async fn discard(&self, hash: &[u8; 32]) {
        let _ = tokio::fs::remove_file(self.staged_path(hash)).await;
    }

    /// Moves the staged, verified upload of `hash` into the object store
    /// (its MIME type beside it) and drops the staging file.
    ///
    /// # Errors
    /// When the store or the disk fails (the staged file stays).
    pub async fn publish(&self, hash: &[u8; 32], mime: &str) -> Result<(), StoreError> {
        self.objects.put(&meta_path(hash), PutPayload::from(mime.as_bytes().to_vec())).await.map_err(err)?;
        if self.staged_in_store {
            let staged = Path::from(format!("staging/{}.part", hex::encode(hash)));
            return self.objects.rename(&staged, &object_path(hash)).await.map_err(err);
        }
        let mut file = tokio::fs::File::open(self.staged_path(hash)).await.map_err(err)?;
        let upload = self.objects.put_multipart(&object_path(hash)).await.map_err(err)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(err(e));
                }
            };
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(4).await.map_err(err)?;
            writer.write(buf.get(..n).unwrap_or_default());
        }
        writer.finish().await.map_err(err)?;
        self.discard(hash).await;
        Ok(())
    }

    /// Every stored object.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn objects(&self) -> Result<Vec<StoredObject>, StoreError> {
        let metas: Vec<_> = self.objects.list(Some(&Path::from("objects"))).try_collect().await.map_err(err)?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let blake3 = parse_hash(m.location.filename()?)?;
                let stored_ms = u64::try_from(m.last_modified.timestamp_millis()).unwrap_or(0);
                Some(StoredObject { blake3, size: m.size, stored_ms })
            })
            .collect())
    }

    /// Deletes an object, its MIME type and every owner's marker of it.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn delete(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        let suffix = hex::encode(hash);
        let owners: Vec<_> = self.objects.list(Some(&Path::from("owners"))).try_collect().await.map_err(err)?;
        for m in owners {
            if m.location.filename().is_some_and(|f| f.starts_with(&suffix)) {
                self.objects.delete(&m.location).await.map_err(err)?;
            }
        }
        for path in [meta_path(hash), object_path(hash)] {
            match self.objects.delete(&path).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }
}
