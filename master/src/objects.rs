//! Artifact bytes, in one place: under the data dir (`[storage] kind = "filesystem"`, the
//! default) or in a bucket of an S3-compatible object store (`kind = "s3"`, with the
//! `object_store` crate).
//!
//! An upload is streamed: [`Upload::write`] takes the request body a chunk at a time, into a file
//! (`builds/{id}/artifacts/.{name}.partial`) or into the parts of a multipart upload (5 MiB each,
//! at most two in flight), so the master never holds an artifact in memory. Nothing is visible
//! until [`Upload::keep`] (the file renamed, the multipart upload completed); [`Upload::discard`]
//! removes the partial file or aborts the multipart upload. Object keys are
//! `{prefix}/builds/{id}/{name}`.
//!
//! A download is a file (served with Range by the caller), a 307 to a presigned URL of the store
//! (`presign_downloads`: users must be able to reach the store), or the object streamed through
//! the master (with one byte range, as for files).

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use kiln_shared::config::{Config, S3Credentials, StorageKind};
use kiln_shared::BuildId;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::{Path as Key, PathPart};
use object_store::signer::Signer;
use object_store::{
    Attribute, Attributes, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, WriteMultipart,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The object store crate, for tests that look into the bucket.
pub use object_store;

/// Size of one part of a multipart upload (S3's minimum but for the last).
const PART_BYTES: usize = 5 << 20;
/// Parts uploading at once: with the one being filled, what an upload holds in memory. One: a
/// part in flight costs the master about twice its size, and with two a 1 GiB upload took a
/// (debug) master to a peak RSS of 66–69 MiB against 56–58 MiB with one, over the 64 MiB the
/// object-store test allows; the next part still fills while one is sent.
const PARTS_IN_FLIGHT: usize = 1;
/// The longest one request to the store may take (but a streamed download).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// What went wrong with artifact bytes; `error.rs` maps it to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("object store: {0}")]
    Object(#[from] object_store::Error),
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        match self {
            StoreError::Io(e) => e.kind() == std::io::ErrorKind::NotFound,
            StoreError::Object(e) => matches!(e, object_store::Error::NotFound { .. }),
        }
    }
}

pub enum ArtifactStore {
    /// `builds/{id}/artifacts/{name}` under this directory (`master.storage_dir`).
    Filesystem {
        root: PathBuf,
    },
    S3(S3),
}

pub struct S3 {
    pub store: Arc<AmazonS3>,
    /// The same store without a time limit on a whole request: streamed downloads.
    reader: Arc<AmazonS3>,
    prefix: Vec<String>,
    /// How long presigned download URLs last, when downloads are redirects.
    presign: Option<Duration>,
}

/// How a download is answered.
pub enum Download {
    /// A file on disk (served with Range by `tower_http`'s `ServeFile`).
    File(PathBuf),
    /// 307 to this presigned URL.
    Redirect(String),
    /// Bytes streamed from the store: the whole object (`range: None`) or one range of it.
    Stream {
        body: futures_util::stream::BoxStream<'static, Result<Bytes, StoreError>>,
        size: u64,
        range: Option<std::ops::Range<u64>>,
    },
    /// The range asked for lies past the end (416).
    Unsatisfiable { size: u64 },
}

impl ArtifactStore {
    /// The store `[storage]` configures; `root` is `master.storage_dir`. Errors name the key.
    pub fn open(cfg: &Config, root: PathBuf) -> anyhow::Result<ArtifactStore> {
        use anyhow::Context;
        let s = &cfg.storage;
        if s.kind == StorageKind::Filesystem {
            return Ok(ArtifactStore::Filesystem { root });
        }
        // `Config::check` made sure these are set.
        let endpoint = s.endpoint.clone().unwrap_or_default();
        let file = cfg.path(s.credentials_file.as_deref().unwrap_or("".as_ref()));
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "config key storage.credentials_file: cannot read {}",
                file.display()
            )
        })?;
        let creds: S3Credentials = toml::from_str(&text).map_err(|e| {
            // The parser's message may quote the file: say only where and what.
            anyhow::anyhow!(
                "config key storage.credentials_file: {} is not a TOML file with access_key_id and secret_access_key ({})",
                file.display(),
                e.message()
            )
        })?;
        let builder = |client: ClientOptions| {
            // The client options first: they hold `allow_http`, which must not be reset.
            AmazonS3Builder::new()
                .with_client_options(client)
                .with_endpoint(&endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_bucket_name(s.bucket.clone().unwrap_or_default())
                .with_region(&s.region)
                .with_access_key_id(&creds.access_key_id)
                .with_secret_access_key(&creds.secret_access_key)
                .with_virtual_hosted_style_request(!s.path_style)
                .build()
                .context("config section [storage]: cannot set up the S3 client")
        };
        // A request (a part, a listing) that takes minutes has stalled; a download streamed to
        // a person on a slow line may take hours, and is read through a client of its own.
        let store = builder(ClientOptions::new().with_timeout(REQUEST_TIMEOUT))?;
        let reader = builder(ClientOptions::new().with_timeout_disabled())?;
        Ok(ArtifactStore::S3(S3 {
            store: Arc::new(store),
            reader: Arc::new(reader),
            prefix: s
                .prefix
                .as_deref()
                .map(|p| p.split('/').map(str::to_string).collect())
                .unwrap_or_default(),
            presign: s
                .presign_downloads
                .then(|| Duration::from_secs(u64::from(s.presign_secs))),
        }))
    }

    /// Starts storing artifact `name` of `build` (a name checked by `validate_artifact_name`).
    pub async fn begin(&self, build: BuildId, name: &str) -> Result<Upload, StoreError> {
        match self {
            ArtifactStore::Filesystem { root } => {
                let dest = crate::storage::artifact_file(root, build, name);
                let dir = dest.parent().expect("an artifact file has a directory");
                crate::storage::private_dir(dir).await?;
                let partial = dir.join(format!(".{name}.partial"));
                let file = crate::storage::private_file(&partial).await?;
                Ok(Upload::File {
                    file,
                    partial,
                    dest,
                })
            }
            ArtifactStore::S3(s3) => {
                let key = s3.key(build, Some(name));
                let mut attributes = Attributes::new();
                attributes.insert(Attribute::ContentType, "application/octet-stream".into());
                attributes.insert(
                    Attribute::ContentDisposition,
                    content_disposition(name).into(),
                );
                let opts = PutMultipartOptions {
                    attributes,
                    ..Default::default()
                };
                let upload = s3.store.put_multipart_opts(&key, opts).await?;
                Ok(Upload::Object(WriteMultipart::new_with_chunk_size(
                    upload, PART_BYTES,
                )))
            }
        }
    }

    /// Stores a small artifact (a signature) at once.
    pub async fn put_small(
        &self,
        build: BuildId,
        name: &str,
        bytes: Bytes,
    ) -> Result<(), StoreError> {
        let mut up = self.begin(build, name).await?;
        let written = async {
            up.write(bytes).await?;
            up.written().await
        }
        .await;
        match written {
            Ok(()) => up.keep().await,
            Err(e) => {
                up.discard().await;
                Err(e)
            }
        }
    }

    /// The bytes of a small artifact (`SHA256SUMS`), refused past `max` bytes.
    pub async fn read_small(
        &self,
        build: BuildId,
        name: &str,
        max: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        match self {
            ArtifactStore::Filesystem { root } => {
                let path = crate::storage::artifact_file(root, build, name);
                if tokio::fs::metadata(&path).await?.len() > max {
                    return Ok(None);
                }
                Ok(Some(tokio::fs::read(&path).await?.into()))
            }
            ArtifactStore::S3(s3) => {
                let key = s3.key(build, Some(name));
                if s3.store.head(&key).await?.size > max {
                    return Ok(None);
                }
                Ok(Some(s3.store.get(&key).await?.bytes().await?))
            }
        }
    }

    /// How to answer a download of an artifact, given the request's `Range` header (`head`: a
    /// HEAD request, which needs no bytes).
    pub async fn download(
        &self,
        build: BuildId,
        name: &str,
        range: Option<&str>,
        head: bool,
    ) -> Result<Download, StoreError> {
        let s3 = match self {
            ArtifactStore::Filesystem { root } => {
                return Ok(Download::File(crate::storage::artifact_file(
                    root, build, name,
                )))
            }
            ArtifactStore::S3(s3) => s3,
        };
        let key = s3.key(build, Some(name));
        if let Some(ttl) = s3.presign {
            let url = s3
                .store
                .signed_url(axum::http::Method::GET, &key, ttl)
                .await?;
            return Ok(Download::Redirect(url.to_string()));
        }
        let size = s3.store.head(&key).await?.size;
        let range = match range.map(|r| parse_range(r, size)) {
            None | Some(Range::Ignored) => None,
            Some(Range::Unsatisfiable) => return Ok(Download::Unsatisfiable { size }),
            Some(Range::Bytes(r)) => Some(r),
        };
        if head || size == 0 || range.as_ref().is_some_and(|r| r.is_empty()) {
            return Ok(Download::Stream {
                body: futures_util::stream::empty().boxed(),
                size,
                range,
            });
        }
        let opts = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..Default::default()
        };
        let got = s3.reader.get_opts(&key, opts).await?;
        Ok(Download::Stream {
            body: got.into_stream().map_err(StoreError::from).boxed(),
            size,
            range,
        })
    }

    /// Removes one artifact (gone already is fine).
    pub async fn delete(&self, build: BuildId, name: &str) -> Result<(), StoreError> {
        let done = match self {
            ArtifactStore::Filesystem { root } => {
                tokio::fs::remove_file(crate::storage::artifact_file(root, build, name))
                    .await
                    .map_err(StoreError::from)
            }
            ArtifactStore::S3(s3) => s3
                .store
                .delete(&s3.key(build, Some(name)))
                .await
                .map_err(StoreError::from),
        };
        match done {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes every stored object of a build (the build is being deleted). On the filesystem
    /// the artifacts go with the build's directory (`lifecycle::delete_build`): nothing to do.
    pub async fn delete_build(&self, build: BuildId) -> Result<(), StoreError> {
        let ArtifactStore::S3(s3) = self else {
            return Ok(());
        };
        let prefix = s3.key(build, None);
        let keys: Vec<Key> = s3
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        for key in keys {
            match s3.store.delete(&key).await {
                Err(object_store::Error::NotFound { .. }) | Ok(()) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

impl S3 {
    /// `{prefix}/builds/{id}/{name}`, or the build's prefix without a name.
    pub fn key(&self, build: BuildId, name: Option<&str>) -> Key {
        let id = build.0.to_string();
        self.prefix
            .iter()
            .map(String::as_str)
            .chain(["builds", id.as_str()])
            .chain(name)
            .map(PathPart::from)
            .collect()
    }
}

/// An artifact being stored.
pub enum Upload {
    File {
        file: tokio::fs::File,
        partial: PathBuf,
        dest: PathBuf,
    },
    Object(WriteMultipart),
}

impl Upload {
    /// Writes the next chunk of the artifact; waits while the parts in flight are as many as
    /// allowed, so memory stays bounded whatever the artifact's size.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        match self {
            Upload::File { file, .. } => file.write_all(&chunk).await?,
            Upload::Object(w) => {
                w.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                w.put(chunk);
            }
        }
        Ok(())
    }

    /// Every byte written is durable (the file synced); the artifact is not visible yet.
    pub async fn written(&mut self) -> Result<(), StoreError> {
        match self {
            Upload::File { file, .. } => {
                file.flush().await?;
                file.sync_all().await?;
            }
            Upload::Object(w) => w.wait_for_capacity(0).await?,
        }
        Ok(())
    }

    /// Makes the artifact visible under its name (replacing one stored before).
    pub async fn keep(self) -> Result<(), StoreError> {
        match self {
            Upload::File { partial, dest, .. } => tokio::fs::rename(&partial, &dest).await?,
            Upload::Object(w) => {
                w.finish().await?;
            }
        }
        Ok(())
    }

    /// Drops what was written.
    pub async fn discard(self) {
        match self {
            Upload::File { file, partial, .. } => {
                drop(file);
                let _ = tokio::fs::remove_file(&partial).await;
            }
            Upload::Object(w) => {
                if let Err(e) = w.abort().await {
                    tracing::warn!("aborting a multipart upload: {e}");
                }
            }
        }
    }
}

/// RFC 6266: an ASCII fallback, and the exact name percent-encoded as UTF-8.
pub fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        kiln_shared::api::percent_encode(name)
    )
}

#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// Not one byte range we serve (several ranges, another unit, bad syntax): the whole object.
    Ignored,
    Unsatisfiable,
    Bytes(std::ops::Range<u64>),
}

/// One `Range: bytes=…` of an object of `size` bytes (RFC 9110 §14.1.2).
fn parse_range(header: &str, size: u64) -> Range {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Range::Ignored;
    };
    if spec.contains(',') {
        return Range::Ignored;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Ignored;
    };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, true) => Range::Ignored,
        // The last N bytes.
        (true, false) => match num(b) {
            None => Range::Ignored,
            Some(0) => Range::Unsatisfiable,
            Some(n) => Range::Bytes(size.saturating_sub(n)..size),
        },
        (false, open) => {
            let Some(start) = num(a) else {
                return Range::Ignored;
            };
            let end = if open {
                size
            } else {
                match num(b) {
                    Some(e) if e >= start => e.saturating_add(1).min(size),
                    _ => return Range::Ignored,
                }
            };
            if start >= size {
                Range::Unsatisfiable
            } else {
                Range::Bytes(start..end)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(parse_range("bytes=0-9", 100), Range::Bytes(0..10));
        assert_eq!(parse_range("bytes=90-", 100), Range::Bytes(90..100));
        assert_eq!(parse_range("bytes=-10", 100), Range::Bytes(90..100));
        assert_eq!(parse_range("bytes=-500", 100), Range::Bytes(0..100));
        assert_eq!(parse_range("bytes=50-500", 100), Range::Bytes(50..100));
        assert_eq!(parse_range("bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Range::Ignored);
        assert_eq!(parse_range("items=0-1", 100), Range::Ignored);
        assert_eq!(parse_range("bytes=9-1", 100), Range::Ignored);
    }

    #[test]
    fn keys_carry_the_prefix_and_the_build() {
        let store = Arc::new(
            AmazonS3Builder::new()
                .with_endpoint("http://127.0.0.1:1")
                .with_allow_http(true)
                .with_bucket_name("b")
                .with_region("garage")
                .with_access_key_id("k")
                .with_secret_access_key("s")
                .build()
                .unwrap(),
        );
        let s3 = S3 {
            store: store.clone(),
            reader: store,
            prefix: vec!["kiln".into(), "prod".into()],
            presign: None,
        };
        assert_eq!(
            s3.key(BuildId(7), Some("disk.img")).as_ref(),
            "kiln/prod/builds/7/disk.img"
        );
        assert_eq!(s3.key(BuildId(7), None).as_ref(), "kiln/prod/builds/7");
    }
}
