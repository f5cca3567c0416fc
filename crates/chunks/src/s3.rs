//! [`S3Roots`]: the roots' chunk stores in an S3-compatible object store (AWS S3, Garage, MinIO, ...), through
//! the `object_store` crate.
//!
//! Objects are named `<prefix>/<root>/<digest hex>` in one bucket (`<root>/<digest hex>` without a prefix):
//! one [`S3ChunkStore`] per root, the object's body the chunk's bytes. Objects under a root whose name is not a
//! digest are not chunks: `list` and `size` skip them.
//!
//! How the store's invariants hold over S3:
//! - content-addressed: the store hashes the bytes on put and names the object by that; `get` hashes what it
//!   reads ([`ChunkError::Corrupt`] if it does not match, or if the object is larger than any chunk may be);
//! - atomic puts: an S3 PUT of one body is visible whole or not at all;
//! - idempotent puts: a put first asks whether the object is there (HEAD: `new: false`, nothing uploaded), then
//!   uploads with `If-None-Match: *`. A backend that honours it (AWS S3, MinIO) refuses the second of two
//!   concurrent puts (`new: false`); one that ignores it (Garage) stores the same bytes twice, harmlessly, and
//!   both answer `new: true`: over such a backend *at least one* of concurrent puts answers new, as the
//!   trait allows;
//! - `delete` answers whether the chunk was there from a HEAD before the DELETE (S3's DELETE does not say);
//! - `list` is S3's ListObjectsV2 under the root's prefix, ascending, from `start-after` the key of `after`;
//! - bounded: a chunk over the limit is refused before any request; every request has a time limit
//!   ([`S3Options::timeout`], also over the client's retries), so no call hangs on a backend that stopped
//!   answering. Backend failures are [`ChunkError::Backend`].
//!
//! Nothing here keeps state but the client: several servers may share a bucket and prefix.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::list::{PaginatedListOptions, PaginatedListStore as _};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore as _, ObjectStoreExt as _, PutMode, PutOptions, RetryConfig};

use crate::rooted::check;
use crate::{BoxFuture, ChunkDigest, ChunkError, ChunkStore, DEFAULT_MAX_CHUNK_BYTES, NamedChunk, RootStores, Size, Stored, check_len};

/// How many HEADs `contains` has in flight at once.
const PARALLEL_HEADS: usize = 16;

/// The most keys one ListObjectsV2 answers.
const LIST_PAGE: usize = 1000;

/// Where the chunks live and how to reach them.
#[derive(Clone)]
pub struct S3Options {
    pub bucket: String,
    /// Slash-separated segments, without leading or trailing slash; empty: the bucket's top.
    pub prefix: String,
    /// The service's URL (`http://127.0.0.1:3900`); `None`: AWS S3 of `region`.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The time limit of each request to the service, its retries included.
    pub timeout: Duration,
    pub max_chunk_bytes: usize,
}

impl S3Options {
    /// Options with a 30 s time limit and the default chunk limit.
    pub fn new(bucket: &str, prefix: &str, region: &str, access_key_id: &str, secret_access_key: &str) -> Self {
        S3Options {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: None,
            region: region.to_string(),
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
            timeout: Duration::from_secs(30),
            max_chunk_bytes: DEFAULT_MAX_CHUNK_BYTES,
        }
    }

    pub fn with_endpoint(mut self, endpoint: &str) -> Self {
        self.endpoint = Some(endpoint.to_string());
        self
    }
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("timeout", &self.timeout)
            .field("max_chunk_bytes", &self.max_chunk_bytes)
            .finish_non_exhaustive()
    }
}

/// Whether `prefix` can prefix object names: empty, or segments of `A-Za-z0-9._-` (not `.` or `..`) joined by `/`.
pub fn valid_prefix(prefix: &str) -> bool {
    prefix.is_empty()
        || prefix.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

/// Roots as prefixes `<prefix>/<id>/` of one bucket, each an [`S3ChunkStore`].
pub struct S3Roots {
    client: Arc<AmazonS3>,
    options: S3Options,
    open: Mutex<HashMap<String, Arc<S3ChunkStore>>>,
}

impl fmt::Debug for S3Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Roots").field("options", &self.options).finish_non_exhaustive()
    }
}

impl S3Roots {
    /// A client of the bucket; no request is made (a wrong endpoint or key shows on the first call).
    pub fn new(options: S3Options) -> Result<S3Roots, ChunkError> {
        if !valid_prefix(&options.prefix) {
            return Err(ChunkError::backend(format!("object name prefix {:?}", options.prefix))(
                "not slash-separated segments of letters, digits, '.', '_' and '-'".into(),
            ));
        }
        // TLS through rustls over ring (a light build; post-quantum key exchange would need aws-lc); a provider
        // another part of the process installed first is kept.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = ClientOptions::new()
            .with_timeout(options.timeout)
            .with_connect_timeout(options.timeout.min(Duration::from_secs(5)))
            .with_allow_http(options.endpoint.as_deref().is_some_and(|e| e.starts_with("http://")));
        let retry = RetryConfig { max_retries: 3, retry_timeout: options.timeout, ..Default::default() };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&options.bucket)
            .with_region(&options.region)
            .with_access_key_id(&options.access_key_id)
            .with_secret_access_key(&options.secret_access_key)
            .with_client_options(client)
            .with_retry(retry);
        if let Some(endpoint) = &options.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let client = builder
            .build()
            .map_err(|e| ChunkError::backend(format!("bucket {:?}", options.bucket))(e.into()))?;
        Ok(S3Roots { client: Arc::new(client), options, open: Mutex::default() })
    }

    /// The object name prefix of root `id`, ending in `/`.
    fn dir(&self, id: &str) -> String {
        match self.options.prefix.as_str() {
            "" => format!("{id}/"),
            prefix => format!("{prefix}/{id}/"),
        }
    }

    /// The store of root `id`, made if new (what [`RootStores::root`] answers, as its own type).
    pub fn store(&self, id: &str) -> Result<Arc<S3ChunkStore>, ChunkError> {
        check(id)?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = open.get(id) {
            return Ok(store.clone());
        }
        let store = Arc::new(self.unopened(id));
        open.insert(id.to_string(), store.clone());
        Ok(store)
    }

    /// The names of every object under the prefix, roots and chunks or not (for tests).
    #[cfg(any(test, feature = "garage"))]
    pub(crate) async fn object_names(&self) -> Result<Vec<String>, ChunkError> {
        let prefix = match self.options.prefix.as_str() {
            "" => None,
            prefix => Some(Path::from(prefix)),
        };
        let listed = self.client.list(prefix.as_ref()).map_ok(|o| o.location.to_string()).try_collect();
        self.unopened("0").bounded("listing the bucket", listed).await
    }

    fn unopened(&self, id: &str) -> S3ChunkStore {
        S3ChunkStore {
            client: self.client.clone(),
            dir: self.dir(id),
            timeout: self.options.timeout,
            max_chunk_bytes: self.options.max_chunk_bytes,
        }
    }
}

impl RootStores for S3Roots {
    fn root(&self, id: &str) -> Result<Arc<dyn ChunkStore>, ChunkError> {
        Ok(self.store(id)?)
    }

    /// Deletes every object under the root's prefix (chunks or not), page by page.
    fn delete_root<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ChunkError>> {
        Box::pin(async move {
            check(id)?;
            self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
            let store = self.unopened(id);
            let mut token = None;
            loop {
                let page = store.page(None, LIST_PAGE, token.take()).await?;
                let names: Vec<Path> = page.objects.into_iter().map(|(name, _)| name).collect();
                if !names.is_empty() {
                    let what = format!("deleting the objects under {}", store.dir);
                    let deleted = store.client.delete_stream(futures::stream::iter(names.into_iter().map(Ok)).boxed());
                    store.bounded(&what, deleted.try_collect::<Vec<_>>()).await?;
                }
                match page.next {
                    Some(next) => token = Some(next),
                    None => return Ok(()),
                }
            }
        })
    }
}

/// The chunks of one root: the objects named `<dir><digest hex>`.
pub struct S3ChunkStore {
    client: Arc<AmazonS3>,
    /// `<prefix>/<root>/`.
    dir: String,
    timeout: Duration,
    max_chunk_bytes: usize,
}

impl fmt::Debug for S3ChunkStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3ChunkStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// One ListObjectsV2 page: every object (name, size), and the token of the next page if any.
struct Page {
    objects: Vec<(Path, u64)>,
    next: Option<String>,
}

impl S3ChunkStore {
    /// Chunk `digest`, its hash checked if `verify`; an object over the chunk limit is [`ChunkError::Corrupt`]
    /// (never read whole).
    async fn read(&self, digest: ChunkDigest, verify: bool) -> Result<Bytes, ChunkError> {
        let what = format!("reading chunk {digest}");
        let read = async {
            let found = self.client.get(&self.name(digest)).await?;
            match usize::try_from(found.meta.size).is_ok_and(|size| size <= self.max_chunk_bytes) {
                true => found.bytes().await.map(Some),
                false => Ok(None),
            }
        };
        match self.within(&what, read).await? {
            Ok(Some(bytes)) if !verify || ChunkDigest::of(&bytes) == digest => Ok(bytes),
            Ok(_) => Err(ChunkError::Corrupt(digest)),
            Err(object_store::Error::NotFound { .. }) => Err(ChunkError::NotFound(digest)),
            Err(e) => Err(ChunkError::backend(what)(e.into())),
        }
    }

    fn name(&self, digest: ChunkDigest) -> Path {
        Path::from(format!("{}{digest}", self.dir))
    }

    /// The chunk an object's name names, if it is one of this root's.
    fn digest(&self, name: &Path) -> Option<ChunkDigest> {
        name.as_ref().strip_prefix(&self.dir)?.parse().ok()
    }

    /// `call`'s answer, or [`ChunkError::Backend`] if none comes within the time limit.
    async fn within<T>(&self, what: &str, call: impl Future<Output = T>) -> Result<T, ChunkError> {
        tokio::time::timeout(self.timeout, call).await.map_err(|_| {
            let late = format!("no answer within {:?}", self.timeout);
            ChunkError::backend(what)(std::io::Error::new(std::io::ErrorKind::TimedOut, late).into())
        })
    }

    /// `call`'s answer within the time limit, its failure a [`ChunkError::Backend`].
    async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, ChunkError> {
        self.within(what, call).await?.map_err(|e| ChunkError::backend(what)(e.into()))
    }

    /// Whether the object of `digest` is there (HEAD).
    async fn exists(&self, digest: ChunkDigest) -> Result<bool, ChunkError> {
        let what = format!("looking for chunk {digest}");
        match self.within(&what, self.client.head(&self.name(digest))).await? {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(ChunkError::backend(what)(e.into())),
        }
    }

    /// Up to `limit` objects of the root after `after` (or from the page `token` names).
    async fn page(&self, after: Option<ChunkDigest>, limit: usize, token: Option<String>) -> Result<Page, ChunkError> {
        let options = PaginatedListOptions {
            offset: after.map(|d| format!("{}{d}", self.dir)),
            max_keys: Some(limit.min(LIST_PAGE)),
            page_token: token,
            ..Default::default()
        };
        let what = format!("listing {}", self.dir);
        let listed = self.bounded(&what, self.client.list_paginated(Some(&self.dir), options)).await?;
        let objects = listed.result.objects.into_iter().map(|o| (o.location, o.size)).collect();
        Ok(Page { objects, next: listed.page_token })
    }
}

#[cfg(test)]
impl S3ChunkStore {
    /// Writes `bytes` as the object of `digest`, whatever they hash to (for tests of damage).
    pub(crate) async fn overwrite(&self, digest: ChunkDigest, bytes: Vec<u8>) {
        self.client.put(&self.name(digest), bytes.into()).await.expect("overwrite an object");
    }

    /// Writes an object named `name` under the root (for tests of objects that are not chunks).
    pub(crate) async fn put_other(&self, name: &str) {
        let name = Path::from(format!("{}{name}", self.dir));
        self.client.put(&name, Bytes::from_static(b"x").into()).await.expect("put an object");
    }
}

impl ChunkStore for S3ChunkStore {
    fn put_named(&self, chunk: NamedChunk) -> BoxFuture<'_, Result<Stored, ChunkError>> {
        Box::pin(async move {
            check_len(chunk.bytes(), self.max_chunk_bytes)?;
            let digest = chunk.digest();
            let chunk = chunk.into_bytes();
            if self.exists(digest).await? {
                return Ok(Stored { digest, new: false });
            }
            let options = PutOptions { mode: PutMode::Create, ..Default::default() };
            let what = format!("storing chunk {digest}");
            let name = self.name(digest);
            let put = self.client.put_opts(&name, chunk.into(), options);
            match self.within(&what, put).await? {
                Ok(_) => Ok(Stored { digest, new: true }),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(Stored { digest, new: false }),
                Err(e) => Err(ChunkError::backend(what)(e.into())),
            }
        })
    }

    fn get(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>> {
        Box::pin(self.read(digest, true))
    }

    fn get_unverified(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>> {
        Box::pin(self.read(digest, false))
    }

    fn contains<'a>(&'a self, digests: &'a [ChunkDigest]) -> BoxFuture<'a, Result<Vec<bool>, ChunkError>> {
        Box::pin(async move {
            futures::stream::iter(digests.iter().copied().map(|d| self.exists(d)))
                .buffered(PARALLEL_HEADS)
                .try_collect()
                .await
        })
    }

    fn delete(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<bool, ChunkError>> {
        Box::pin(async move {
            if !self.exists(digest).await? {
                return Ok(false);
            }
            self.bounded(&format!("deleting chunk {digest}"), self.client.delete(&self.name(digest))).await?;
            Ok(true)
        })
    }

    fn list(&self, after: Option<ChunkDigest>, limit: usize) -> BoxFuture<'_, Result<Vec<ChunkDigest>, ChunkError>> {
        Box::pin(async move {
            let mut digests = Vec::new();
            let mut token = None;
            // A page may hold fewer keys than asked (and names that are not chunks): go on until full or done.
            while digests.len() < limit {
                let page = self.page(after, limit - digests.len(), token.take()).await?;
                digests.extend(page.objects.iter().filter_map(|(name, _)| self.digest(name)));
                match page.next {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
            digests.truncate(limit);
            Ok(digests)
        })
    }

    fn size(&self) -> BoxFuture<'_, Result<Size, ChunkError>> {
        Box::pin(async move {
            let mut size = Size::default();
            let mut token = None;
            loop {
                let page = self.page(None, LIST_PAGE, token.take()).await?;
                for (name, bytes) in &page.objects {
                    if self.digest(name).is_some() {
                        size.chunks += 1;
                        size.bytes += bytes;
                    }
                }
                match page.next {
                    Some(next) => token = Some(next),
                    None => return Ok(size),
                }
            }
        })
    }
}

/// Where a server keeps its chunks, as `--object-store` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectStoreUrl {
    /// `file:///PATH`: a directory of roots ([`DirectoryRoots`](crate::DirectoryRoots)).
    Directory(std::path::PathBuf),
    /// `s3://BUCKET[/PREFIX]`: prefixes of a bucket ([`S3Roots`]).
    S3 { bucket: String, prefix: String },
}

/// A URL `--object-store` does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an object store URL (file:///PATH or s3://BUCKET[/PREFIX]): {url:?}: {why}")]
pub struct ParseObjectStoreUrlError {
    pub url: String,
    pub why: &'static str,
}

impl std::str::FromStr for ObjectStoreUrl {
    type Err = ParseObjectStoreUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let refuse = |why| ParseObjectStoreUrlError { url: url.to_string(), why };
        if let Some(path) = url.strip_prefix("file://") {
            return match path {
                p if !p.starts_with('/') => Err(refuse("a file URL names an absolute path: file:///PATH")),
                p if p.split('/').any(|s| s == "..") => Err(refuse("the path has a '..'")),
                p => Ok(ObjectStoreUrl::Directory(p.into())),
            };
        }
        let Some(rest) = url.strip_prefix("s3://") else { return Err(refuse("the scheme is neither file nor s3")) };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !valid_bucket(bucket) {
            return Err(refuse("a bucket name is 3 to 63 lowercase letters, digits, '.' and '-'"));
        }
        if !valid_prefix(prefix) {
            return Err(refuse("the prefix is not slash-separated segments of letters, digits, '.', '_' and '-'"));
        }
        Ok(ObjectStoreUrl::S3 { bucket: bucket.to_string(), prefix: prefix.to_string() })
    }
}

/// S3's bucket naming rules, the part that matters for a URL: 3 to 63 of `a-z0-9.-`, a letter or digit at both ends.
fn valid_bucket(bucket: &str) -> bool {
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && edge(bucket.as_bytes().first())
        && edge(bucket.as_bytes().last())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_store_urls_are_a_directory_or_a_bucket_and_prefix() {
        let s3 = |bucket: &str, prefix: &str| ObjectStoreUrl::S3 { bucket: bucket.into(), prefix: prefix.into() };
        let good = [
            ("file:///var/lib/ignis/chunks", ObjectStoreUrl::Directory("/var/lib/ignis/chunks".into())),
            ("file:///", ObjectStoreUrl::Directory("/".into())),
            ("s3://chunks", s3("chunks", "")),
            ("s3://chunks/", s3("chunks", "")),
            ("s3://my.chunks-1/ignis/prod", s3("my.chunks-1", "ignis/prod")),
            ("s3://abc/a_b.c-d/", s3("abc", "a_b.c-d")),
        ];
        for (url, expected) in good {
            assert_eq!(url.parse::<ObjectStoreUrl>(), Ok(expected), "{url}");
        }
        let bad = [
            "", "/var/lib", "file://relative/path", "file:///a/../b", "http://x/y", "s3:/bucket", "s3://", "s3://ab",
            "s3://Bucket", "s3://-bucket", "s3://bucket-", "s3://bu_cket", "s3://bucket//x", "s3://bucket/a//b",
            "s3://bucket/a/../b", "s3://bucket/./b", "s3://bucket/a b", "S3://bucket",
        ];
        for url in bad {
            let refused = url.parse::<ObjectStoreUrl>().unwrap_err();
            assert_eq!(refused.url, url);
        }
        assert!(valid_bucket(&"a".repeat(63)) && !valid_bucket(&"a".repeat(64)));
    }

    #[test]
    fn the_secret_key_is_never_shown() {
        let options = S3Options::new("b", "p", "garage", "GKid", "very-secret");
        assert!(!format!("{options:?}").contains("very-secret"));
        let roots = S3Roots::new(options.with_endpoint("http://127.0.0.1:1")).unwrap();
        assert!(!format!("{roots:?}").contains("very-secret"));
    }

    #[test]
    fn a_bad_prefix_is_refused() {
        let refused = S3Roots::new(S3Options::new("bucket", "a//b", "garage", "k", "s"));
        assert!(matches!(refused, Err(ChunkError::Backend { .. })), "{refused:?}");
    }
}
