//! Container image repositories: what the OCI distribution API (served by the
//! front end's `oci_api`) stores and the rules it keeps. Ignis plays ECR's part.
//!
//! # What is stored, and who owns it
//!
//! [`Oci`] is the one owner of everything under `<data>/oci/` and of its
//! [`Index`]:
//!
//! - blobs and manifests, content-addressed, as files
//!   `<data>/oci/blobs/sha256/<hex>` (shared by every repository: the same
//!   bytes are stored once), written to a temporary file, fsync'd and renamed,
//!   so a file under its digest always holds exactly those bytes; in a cluster
//!   each is also kept where every front end reads it ([`Contents`], the object
//!   store), before the index names it, and fetched from there by a front end
//!   that lacks it (checked against its digest);
//! - the [`Index`] (the store's `oci_*` tables, [`RedbIndex`], or a cluster's
//!   in etcd): which repository holds which blob and manifest (by
//!   `(repository, digest)`: a repository sees only what was uploaded or
//!   pushed to it, so a digest known elsewhere tells it nothing), repositories
//!   (name → owning account) and tags (`(repository, tag)` → manifest digest).
//!
//! Repository names are one namespace for the endpoint (as one registry
//! host's are); a repository belongs to the account that pushed to it first
//! and no other account may read or write it ([`OciError::Denied`]).
//!
//! # Uploads
//!
//! An upload in progress is a file in `<data>/oci/uploads/` (emptied at
//! start: clients restart an upload they lost) and a running SHA-256 kept in
//! memory. Every upload is at most [`Limits::blob`] bytes, all of them
//! together at most [`Limits::spool`] bytes and [`Limits::uploads`] in number,
//! one account's at most [`Limits::account_uploads`]. An upload untouched for
//! [`Limits::idle`] (by the clock given at open) is abandoned, its room freed,
//! when the next upload starts.
//! A finished upload becomes a blob only if its bytes hash to the digest the
//! client names ([`OciError::DigestInvalid`]).
//!
//! # Manifests
//!
//! A manifest must be JSON of a known media type ([`MEDIA_TYPES`]) whose
//! referenced blobs (config and layers) or manifests (an index's entries)
//! the repository holds ([`OciError::ManifestBlobUnknown`]), and an image's
//! config and layers together at most [`Limits::image`] bytes (10 GiB, Lambda's
//! limit).
//!
//! # Images of functions
//!
//! [`image`]: the `ImageUri` a function names ([`ImageUri::parse`]) and
//! [`Oci::resolve_image`], which resolves a tag or digest to the manifest
//! digest, the image's config and its layers, refusing what a function
//! cannot run (see that module's rules).
//!
//! # API boundary
//!
//! The methods are synchronous and may block on the disk: callers on an async
//! runtime call them from `spawn_blocking`. The caller authenticates; every
//! method takes the account acting.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ignis_clock::SharedClock;

use ignis_store::{Store, StoreError};
use sha2::{Digest as _, Sha256};

pub mod image;
pub mod index;
pub use image::{ImageConfig, ImageReference, ImageUri, ImageUriError, Layer, ResolvedImage};
pub use index::{Index, NewManifest, RedbIndex};

/// Where blob and manifest bytes are kept besides this node's disk (a cluster's object store), so that every front
/// end reads what one stored. Methods may block.
pub trait Contents: Send + Sync + std::fmt::Debug {
    /// Keeps the file at `path`, the bytes of `digest`, where every front end reads them (nothing if they are
    /// kept already).
    fn keep(&self, digest: &str, path: &Path) -> Result<(), OciError>;
    /// Writes the bytes of `digest` to `path` if they are kept; false if they are not. The caller checks them.
    fn fetch(&self, digest: &str, path: &Path) -> Result<bool, OciError>;
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The manifest media types a repository accepts.
pub const MEDIA_TYPES: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// Size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// An image's config and layers together (Lambda's 10 GiB).
    pub image: u64,
    /// One blob upload.
    pub blob: u64,
    /// All uploads in progress together.
    pub spool: u64,
    /// Uploads in progress at once.
    pub uploads: usize,
    /// One account's uploads in progress at once.
    pub account_uploads: usize,
    /// How long an upload may go untouched before it is abandoned.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        const GIB: u64 = 1024 * 1024 * 1024;
        Limits {
            image: 10 * GIB,
            blob: 10 * GIB,
            spool: 20 * GIB,
            uploads: 1024,
            account_uploads: 64,
            idle: Duration::from_secs(3600),
        }
    }
}

/// Everything a registry call can fail with; the front end gives each its
/// distribution-spec code.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    #[error("repository name not known to registry: {0}")]
    NameUnknown(String),
    /// Another account's repository.
    #[error("requested access to the resource is denied: {0}")]
    Denied(String),
    #[error("provided digest did not match uploaded content: {0}")]
    DigestInvalid(String),
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(String),
    #[error("blob upload unknown to registry: {0}")]
    UploadUnknown(String),
    #[error("blob upload invalid: {0}")]
    UploadInvalid(String),
    /// A chunk that does not start where the upload ends.
    #[error("requested range not satisfiable: {0}")]
    RangeInvalid(String),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("manifest references a manifest or blob unknown to the repository: {0}")]
    ManifestBlobUnknown(String),
    #[error("provided length did not match content length: {0}")]
    SizeInvalid(String),
    /// The spool is full or too many uploads are in progress.
    #[error("too many uploads in progress: {0}")]
    TooManyRequests(String),
    /// An image a function cannot use (an index without a linux/amd64
    /// entry, a layer media type other than tar or tar+gzip, a config too large).
    #[error("unsupported image: {0}")]
    ImageUnsupported(String),
    /// An image built for another platform than linux/amd64.
    #[error(
        "the image is built for {os}/{architecture}; Ignis runs linux/amd64 (x86_64) images only"
    )]
    Architecture { os: String, architecture: String },
    #[error("registry storage: {0}")]
    Io(#[from] std::io::Error),
    /// The cluster's shared storage (etcd, the object store) failed.
    #[error("registry storage: {0}")]
    Shared(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An upload in progress.
struct Upload {
    account: String,
    repository: String,
    size: u64,
    hasher: Sha256,
    touched: Instant,
    /// Chunks reserved (hashed, sized) but still being written to the file:
    /// the upload cannot finish until they are on it.
    writing: u32,
}

/// A stored manifest, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// The repositories of one data directory; see the module docs.
pub struct Oci {
    index: Arc<dyn Index>,
    contents: Option<Arc<dyn Contents>>,
    root: PathBuf,
    limits: Limits,
    clock: SharedClock,
    uploads: Mutex<HashMap<String, Upload>>,
}

impl std::fmt::Debug for Oci {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oci")
            .field("root", &self.root)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Whether `digest` is `sha256:` and 64 lowercase hex digits (the only algorithm accepted).
pub fn valid_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Whether `name` is a repository name as the distribution spec spells them:
/// `/`-separated components of lowercase letters and digits joined by `.`,
/// `_`, `__` or runs of `-`; at most 255 bytes.
pub fn valid_name(name: &str) -> bool {
    fn component(c: &str) -> bool {
        let b = c.as_bytes();
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
                return false;
            }
        }
        true
    }
    !name.is_empty() && name.len() <= 255 && name.split('/').all(component)
}

/// Whether `tag` is a tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Oci {
    /// The repositories under `store`'s data directory with the default limits.
    pub fn open(store: Arc<Store>, clock: SharedClock) -> Result<Oci, OciError> {
        Oci::open_with(store, Limits::default(), clock)
    }

    /// Creates the tables and directories if missing; forgets every upload
    /// left in progress.
    pub fn open_with(
        store: Arc<Store>,
        limits: Limits,
        clock: SharedClock,
    ) -> Result<Oci, OciError> {
        let index = Arc::new(RedbIndex::open(store.clone())?);
        Oci::shared(&store, limits, clock, index, None)
    }

    /// The repositories of a cluster's front end: `index` and `contents` are shared with the others, the
    /// uploads and the files under `<data>/oci/` are this front end's.
    pub fn shared(
        store: &Store,
        limits: Limits,
        clock: SharedClock,
        index: Arc<dyn Index>,
        contents: Option<Arc<dyn Contents>>,
    ) -> Result<Oci, OciError> {
        let root = store.data_dir().join("oci");
        let uploads = root.join("uploads");
        if uploads.exists() {
            fs::remove_dir_all(&uploads)?;
        }
        fs::create_dir_all(&uploads)?;
        fs::create_dir_all(root.join("blobs").join("sha256"))?;
        Ok(Oci {
            index,
            contents,
            root,
            limits,
            clock,
            uploads: Mutex::new(HashMap::new()),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("blobs")
            .join("sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn upload_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    /// Checks `account` may read `repository`: it exists and is the account's.
    fn check_read(&self, account: &str, repository: &str) -> Result<(), OciError> {
        if !valid_name(repository) {
            return Err(OciError::NameInvalid(repository.into()));
        }
        match self.index.owner(repository)? {
            None => Err(OciError::NameUnknown(repository.into())),
            Some(owner) if owner != account => Err(OciError::Denied(repository.into())),
            Some(_) => Ok(()),
        }
    }

    /// Checks `account` may write `repository`: it is the account's or does not exist yet.
    fn check_write(&self, account: &str, repository: &str) -> Result<(), OciError> {
        match self.check_read(account, repository) {
            Err(OciError::NameUnknown(_)) => Ok(()),
            other => other,
        }
    }

    // ----- uploads --------------------------------------------------------

    /// Starts an upload into `repository`; answers its id.
    pub fn start_upload(&self, account: &str, repository: &str) -> Result<String, OciError> {
        self.check_write(account, repository)?;
        let now = self.clock.instant();
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        let idle: Vec<String> = uploads
            .iter()
            .filter(|(_, u)| {
                u.writing == 0 && now.saturating_duration_since(u.touched) >= self.limits.idle
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            uploads.remove(&id);
            fs::remove_file(self.upload_path(&id)).ok();
        }
        if uploads.len() >= self.limits.uploads {
            return Err(OciError::TooManyRequests(format!(
                "at most {} uploads at once",
                self.limits.uploads
            )));
        }
        if uploads.values().filter(|u| u.account == account).count() >= self.limits.account_uploads
        {
            return Err(OciError::TooManyRequests(format!(
                "at most {} uploads of one account at once",
                self.limits.account_uploads
            )));
        }
        let id = uuid::Uuid::new_v4().to_string();
        File::create(self.upload_path(&id))?;
        let upload = Upload {
            account: account.into(),
            repository: repository.into(),
            size: 0,
            hasher: Sha256::new(),
            touched: now,
            writing: 0,
        };
        uploads.insert(id.clone(), upload);
        Ok(id)
    }

    /// The bytes received so far by upload `id`.
    pub fn upload_size(&self, account: &str, repository: &str, id: &str) -> Result<u64, OciError> {
        let uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        Self::upload_of(&uploads, account, repository, id).map(|u| u.size)
    }

    fn upload_of<'a>(
        uploads: &'a HashMap<String, Upload>,
        account: &str,
        repository: &str,
        id: &str,
    ) -> Result<&'a Upload, OciError> {
        match uploads.get(id) {
            Some(u) if u.account == account && u.repository == repository => Ok(u),
            _ => Err(OciError::UploadUnknown(id.into())),
        }
    }

    /// Appends `data` to upload `id`, which must now hold `offset` bytes
    /// (the chunk's `Content-Range` start); answers the new size.
    pub fn append(
        &self,
        account: &str,
        repository: &str,
        id: &str,
        offset: Option<u64>,
        data: &[u8],
    ) -> Result<u64, OciError> {
        let start = {
            let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
            let spooled: u64 = uploads.values().map(|u| u.size).sum();
            let upload = Self::upload_of(&uploads, account, repository, id)?;
            if offset.is_some_and(|o| o != upload.size) {
                return Err(OciError::RangeInvalid(format!(
                    "the upload holds {} bytes",
                    upload.size
                )));
            }
            let end = upload.size + data.len() as u64;
            if end > self.limits.blob {
                return Err(OciError::SizeInvalid(format!(
                    "a blob holds at most {} bytes",
                    self.limits.blob
                )));
            }
            if spooled + data.len() as u64 > self.limits.spool {
                return Err(OciError::TooManyRequests("the upload spool is full".into()));
            }
            let upload = uploads.get_mut(id).expect("checked above");
            upload.hasher.update(data);
            upload.size = end;
            upload.touched = self.clock.instant();
            upload.writing += 1;
            end - data.len() as u64
        };
        // The range is reserved above: concurrent chunks land where they were hashed.
        let written = (|| {
            let mut file = OpenOptions::new().write(true).open(self.upload_path(id))?;
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start))?;
            file.write_all(data)
        })();
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(upload) = uploads.get_mut(id) {
            upload.writing -= 1;
            if written.is_err() {
                // The file no longer matches the hash: the upload is lost.
                uploads.remove(id);
                fs::remove_file(self.upload_path(id)).ok();
            }
        }
        written?;
        Ok(start + data.len() as u64)
    }

    /// Ends upload `id`: its bytes become blob `digest` of `repository` if they hash to it.
    pub fn finish_upload(
        &self,
        account: &str,
        repository: &str,
        id: &str,
        digest: &str,
    ) -> Result<(), OciError> {
        let upload = {
            let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
            if Self::upload_of(&uploads, account, repository, id)?.writing > 0 {
                return Err(OciError::UploadInvalid(
                    "a chunk of the upload is still being written".into(),
                ));
            }
            uploads.remove(id).expect("checked above")
        };
        let path = self.upload_path(id);
        let actual = format!("sha256:{}", hex::encode(upload.hasher.finalize()));
        if !valid_digest(digest) || actual != digest {
            fs::remove_file(&path).ok();
            return Err(OciError::DigestInvalid(format!(
                "the upload's digest is {actual}, not {digest}"
            )));
        }
        let result = self
            .commit_file(&path, digest)
            .and_then(|()| self.add_blob(account, repository, digest, upload.size));
        fs::remove_file(&path).ok();
        result
    }

    /// Abandons upload `id`.
    pub fn cancel(&self, account: &str, repository: &str, id: &str) -> Result<(), OciError> {
        {
            let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
            Self::upload_of(&uploads, account, repository, id)?;
            uploads.remove(id);
        }
        fs::remove_file(self.upload_path(id)).ok();
        Ok(())
    }

    /// Makes `path` (fsync'd here) the content file of `digest`, unless one is there already; then keeps it
    /// where every front end reads it (in a cluster).
    fn commit_file(&self, path: &Path, digest: &str) -> Result<(), OciError> {
        let target = self.blob_path(digest);
        if !target.exists() {
            self.place(path, &target)?;
        }
        self.keep(digest)
    }

    /// Keeps content file `digest` where every front end reads it (in a cluster).
    fn keep(&self, digest: &str) -> Result<(), OciError> {
        match &self.contents {
            Some(contents) => contents.keep(digest, &self.blob_path(digest)),
            None => Ok(()),
        }
    }

    /// Renames `path` (fsync'd here) to `target`, durably.
    fn place(&self, path: &Path, target: &Path) -> Result<(), OciError> {
        File::open(path)?.sync_all()?;
        fs::rename(path, target)?;
        File::open(target.parent().expect("under the root"))?.sync_all()?;
        Ok(())
    }

    /// The content file of `digest` on this node, fetched (and checked) from where the cluster keeps it if this
    /// node lacks it.
    fn local(&self, digest: &str) -> Result<PathBuf, OciError> {
        let target = self.blob_path(digest);
        let Some(contents) = self.contents.as_ref().filter(|_| !target.exists()) else { return Ok(target) };
        let temp = self.root.join("uploads").join(format!("{}.fetch", uuid::Uuid::new_v4()));
        let fetched = (|| {
            if !contents.fetch(digest, &temp)? {
                return Err(OciError::Shared(format!("{digest} is not in the object store")));
            }
            let mut hasher = Sha256::new();
            std::io::copy(&mut File::open(&temp)?, &mut hasher)?;
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != digest {
                return Err(OciError::Shared(format!("the object store's copy of {digest} hashes to {actual}")));
            }
            if !target.exists() {
                self.place(&temp, &target)?;
            }
            Ok(())
        })();
        fs::remove_file(&temp).ok();
        fetched.map(|()| target)
    }

    /// Writes `bytes` as the content file of their digest.
    fn write_content(&self, bytes: &[u8]) -> Result<String, OciError> {
        let digest = digest_of(bytes);
        if self.blob_path(&digest).exists() {
            return self.keep(&digest).map(|()| digest);
        }
        let temp = self
            .root
            .join("uploads")
            .join(format!("{}.tmp", uuid::Uuid::new_v4()));
        let result = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(bytes)?;
            drop(file);
            self.commit_file(&temp, &digest)
        })();
        fs::remove_file(&temp).ok();
        result.map(|()| digest)
    }

    /// Records that `repository` (made the account's if new) holds blob `digest`.
    fn add_blob(
        &self,
        account: &str,
        repository: &str,
        digest: &str,
        size: u64,
    ) -> Result<(), OciError> {
        self.index.add_blob(account, repository, digest, size)
    }

    // ----- blobs ----------------------------------------------------------

    /// The size of blob `digest` of `repository`.
    pub fn blob_size(
        &self,
        account: &str,
        repository: &str,
        digest: &str,
    ) -> Result<u64, OciError> {
        self.check_read(account, repository)?;
        let size = self.index.blob(repository, digest)?;
        size.ok_or_else(|| OciError::BlobUnknown(digest.into()))
    }

    /// Opens blob `digest` of `repository`, with its size.
    pub fn open_blob(
        &self,
        account: &str,
        repository: &str,
        digest: &str,
    ) -> Result<(File, u64), OciError> {
        let size = self.blob_size(account, repository, digest)?;
        Ok((File::open(self.local(digest)?)?, size))
    }

    /// Reads blob `digest` of `repository` whole.
    pub fn read_blob(
        &self,
        account: &str,
        repository: &str,
        digest: &str,
    ) -> Result<Vec<u8>, OciError> {
        let (mut file, size) = self.open_blob(account, repository, digest)?;
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    // ----- manifests and tags --------------------------------------------

    /// Stores manifest `bytes` in `repository` under `reference` (a tag, or
    /// its own digest); `content_type` is the request's, if any. Answers the
    /// manifest's digest.
    pub fn put_manifest(
        &self,
        account: &str,
        repository: &str,
        reference: &str,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<String, OciError> {
        self.check_write(account, repository)?;
        if bytes.len() > MAX_MANIFEST {
            return Err(OciError::SizeInvalid(format!(
                "a manifest holds at most {MAX_MANIFEST} bytes"
            )));
        }
        let digest = digest_of(bytes);
        let by_digest = reference.starts_with("sha256:") || reference.contains(':');
        if by_digest && reference != digest {
            return Err(OciError::DigestInvalid(format!(
                "the manifest's digest is {digest}, not {reference}"
            )));
        }
        if !by_digest && !valid_tag(reference) {
            return Err(OciError::ManifestInvalid(format!(
                "invalid tag {reference:?}"
            )));
        }
        let json: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| OciError::ManifestInvalid(format!("not JSON: {e}")))?;
        let declared = json.get("mediaType").and_then(|m| m.as_str());
        let content_type = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| !c.is_empty());
        let media_type = match (declared, content_type) {
            (Some(d), Some(c)) if d != c => {
                return Err(OciError::ManifestInvalid(format!(
                    "mediaType {d} but Content-Type {c}"
                )));
            }
            (Some(m), _) | (None, Some(m)) => m.to_string(),
            (None, None) => return Err(OciError::ManifestInvalid("no media type".into())),
        };
        if !MEDIA_TYPES.contains(&media_type.as_str()) {
            return Err(OciError::ManifestInvalid(format!(
                "unsupported media type {media_type}"
            )));
        }
        let descriptor = |d: &serde_json::Value| -> Result<(String, u64), OciError> {
            let digest = d
                .get("digest")
                .and_then(|x| x.as_str())
                .filter(|x| valid_digest(x));
            let size = d.get("size").and_then(|x| x.as_u64());
            match (digest, size) {
                (Some(digest), Some(size)) => Ok((digest.to_string(), size)),
                _ => Err(OciError::ManifestInvalid(
                    "a descriptor without a valid digest and size".into(),
                )),
            }
        };
        let index = media_type == OCI_INDEX || media_type == DOCKER_LIST;
        let mut referenced = Vec::new();
        if index {
            for m in json
                .get("manifests")
                .and_then(|m| m.as_array())
                .ok_or_else(|| OciError::ManifestInvalid("no manifests".into()))?
            {
                referenced.push(descriptor(m)?);
            }
        } else {
            referenced
                .push(descriptor(json.get("config").ok_or_else(|| {
                    OciError::ManifestInvalid("no config".into())
                })?)?);
            for l in json
                .get("layers")
                .and_then(|l| l.as_array())
                .ok_or_else(|| OciError::ManifestInvalid("no layers".into()))?
            {
                referenced.push(descriptor(l)?);
            }
            let total = referenced
                .iter()
                .try_fold(0u64, |sum, (_, size)| sum.checked_add(*size));
            if total.is_none_or(|t| t > self.limits.image) {
                return Err(OciError::SizeInvalid(format!(
                    "an image holds at most {} bytes",
                    self.limits.image
                )));
            }
        }
        self.write_content(bytes)?;
        let manifest = NewManifest {
            digest: &digest,
            media_type: &media_type,
            tag: (!by_digest).then_some(reference),
            referenced: &referenced,
            index,
        };
        self.index.add_manifest(account, repository, &manifest)?;
        Ok(digest)
    }

    /// The manifest `reference` (a tag or a digest) names in `repository`.
    pub fn get_manifest(
        &self,
        account: &str,
        repository: &str,
        reference: &str,
    ) -> Result<Manifest, OciError> {
        self.check_read(account, repository)?;
        let digest = if reference.contains(':') {
            reference.to_string()
        } else {
            let tag = self.index.tag(repository, reference)?;
            tag.ok_or_else(|| OciError::ManifestUnknown(reference.into()))?
        };
        let media_type = self.index.manifest(repository, &digest)?;
        let media_type = media_type.ok_or_else(|| OciError::ManifestUnknown(reference.into()))?;
        let bytes = fs::read(self.local(&digest)?)?;
        Ok(Manifest {
            digest,
            media_type,
            bytes,
        })
    }

    /// The tags of `repository`, sorted.
    pub fn tags(&self, account: &str, repository: &str) -> Result<Vec<String>, OciError> {
        self.check_read(account, repository)?;
        self.index.tags(repository)
    }

    /// The repositories `account` owns, sorted.
    pub fn repositories(&self, account: &str) -> Result<Vec<String>, OciError> {
        self.index.repositories(account)
    }
}

#[cfg(test)]
mod tests;
