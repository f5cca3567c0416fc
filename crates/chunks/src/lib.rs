//! The chunk store: where the chunks of container images live, named by
//! their content.
//!
//! A container image is flattened into one filesystem image, cut into fixed
//! 512 KiB chunks and each chunk encrypted under a key derived from its
//! plaintext (convergent encryption). The store sees only the ciphertext: a chunk is opaque
//! bytes, named by the SHA-256 of those bytes, its [`ChunkDigest`]. Identical
//! chunks of different images have the same name and are stored once.
//!
//! # API boundary
//! [`ChunkStore`] is the seam: the image builder puts chunks (asking
//! [`ChunkStore::contains`] first, to upload only new ones), the worker's
//! loader gets them on first read, garbage collection lists and deletes.
//! Callers hold an `Arc<dyn ChunkStore>` and never know which implementation
//! is behind it:
//! - [`DirectoryChunkStore`]: a local directory, the embedded default (and the
//!   `--object-store file:///PATH` of a cluster whose nodes share a directory);
//! - [`MemoryChunkStore`]: a map in memory, for tests;
//! - [`S3ChunkStore`]: objects `<prefix>/<root>/<digest hex>` in a bucket of an
//!   S3-compatible object store (`--object-store s3://BUCKET/PREFIX`), opened
//!   per root by [`S3Roots`]; see its module for how each invariant holds
//!   over S3;
//! - cache tiers in front of any of them (`ignis_stripes`), and [`OriginLimit::store`], which bounds how many
//!   reads of the store below them are in flight at once (`limit.rs`).
//!
//! What the store does not know: keys, manifests, images, which chunks are
//! live. One store is one GC *root*: rotating roots (new root, copy forward
//! what live manifests name, retire, expire, delete) is done above this seam,
//! with one store per root ([`RootStores`]: [`DirectoryRoots`],
//! [`S3Roots`], [`MemoryRoots`]); [`roots`] decides the steps (pure).
//! [`ObjectStoreUrl`] is the server's `--object-store` flag, parsed.
//!
//! # Invariants every implementation keeps
//! - Content-addressed: a chunk is stored under the SHA-256 of its bytes,
//!   computed on put (by the store, or by [`NamedChunk::new`], the only way to name a chunk: a caller cannot name
//!   one wrongly), and
//!   `get(d)` returns bytes whose SHA-256 is `d`, checked on every read: bytes
//!   that do not match are [`ChunkError::Corrupt`], never returned
//!   ([`ChunkStore::get_unverified`] skips the check, for callers that verify
//!   the bytes themselves).
//! - Atomic puts: a chunk is visible (to `get`, `contains`, `list`, `size`)
//!   whole or not at all; a crash or an error during a put never leaves part
//!   of a chunk visible.
//! - Idempotent puts: putting a present chunk changes nothing and answers
//!   `new: false`.
//! - Concurrent puts of the same chunk are safe (also from several processes
//!   sharing a directory or a bucket): the chunk ends up stored once, whole.
//! - Bounded chunks: a put of more than the store's limit (1 MiB unless set,
//!   [`DEFAULT_MAX_CHUNK_BYTES`]) is refused with [`ChunkError::TooLarge`] and
//!   stores nothing.
//! - `delete` and `put` of different chunks never affect each other; a
//!   `list` sees every chunk present for its whole duration exactly once.
//! - Bounded in time where the medium is remote: every request of the S3
//!   store has a time limit ([`ChunkError::Backend`] when it passes).

mod directory;
mod limit;
#[cfg(any(test, feature = "garage"))]
pub mod garage;
mod memory;
mod rooted;
pub mod roots;
mod s3;

#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

pub use directory::DirectoryChunkStore;
pub use limit::{OriginLimit, OriginStats, StartPermit, Throttled};
pub use memory::MemoryChunkStore;
pub use rooted::{DirectoryRoots, MemoryRoots, RootStores, valid_root_id};
pub use s3::{ObjectStoreUrl, ParseObjectStoreUrlError, S3ChunkStore, S3Options, S3Roots, valid_prefix};

/// The size of an image's chunks (the store accepts any size up to its limit).
pub const CHUNK_BYTES: usize = 512 * 1024;

/// The largest chunk a store accepts unless told otherwise.
pub const DEFAULT_MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// How many digests [`ChunkStore::all`] asks for per page.
const PAGE: usize = 1000;

/// A boxed future, so that [`ChunkStore`] is object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The name of a stored chunk: the SHA-256 of its bytes (under convergent
/// encryption, of the ciphertext). Its only text form is 64 lowercase hex
/// digits, which is also its file or object name; digests order as their
/// bytes do, which is also the order of their text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkDigest([u8; 32]);

impl ChunkDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ChunkDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ChunkDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkDigest({self})")
    }
}

/// A text that is not 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a chunk digest (64 lowercase hex digits): {0:?}")]
pub struct ParseDigestError(pub String);

impl FromStr for ChunkDigest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let canonical = s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let mut bytes = [0u8; 32];
        match canonical && hex::decode_to_slice(s, &mut bytes).is_ok() {
            true => Ok(Self(bytes)),
            false => Err(ParseDigestError(s.to_string())),
        }
    }
}

/// A chunk with its name, computed from its bytes by [`NamedChunk::new`], the only way to make one: a store given
/// one need not hash it again (the image builder hashes each ciphertext once, to name it and to ask whether the
/// store holds it, and hands the store the result).
#[derive(Debug, Clone)]
pub struct NamedChunk {
    digest: ChunkDigest,
    bytes: Bytes,
}

impl NamedChunk {
    /// `bytes`, named by their SHA-256.
    pub fn new(bytes: Bytes) -> Self {
        Self { digest: ChunkDigest::of(&bytes), bytes }
    }

    pub fn digest(&self) -> ChunkDigest {
        self.digest
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The chunk's name.
    pub digest: ChunkDigest,
    /// Whether this put stored it (it was absent); `false`: it was already
    /// there (a deduplicated chunk).
    pub new: bool,
}

/// How much a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Size {
    pub chunks: u64,
    /// The chunks' bytes (not counting the filesystem's or backend's overhead).
    pub bytes: u64,
}

/// Why a chunk store call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// No chunk has this digest.
    #[error("chunk {0} not found")]
    NotFound(ChunkDigest),
    /// The stored bytes do not hash to their name: tampered with or damaged.
    /// The chunk is left where it is, for inspection; `delete` then `put`
    /// replaces it.
    #[error("chunk {0} is corrupt: its stored bytes do not hash to its name")]
    Corrupt(ChunkDigest),
    /// A put of more bytes than the store's limit; nothing was stored.
    #[error("a chunk of {len} bytes is over the chunk store's limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The store's medium failed (the directory's filesystem).
    #[error("chunk store: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The object store behind the chunk store failed or did not answer in time (S3: refused, unreachable,
    /// a wrong key or bucket, a time limit passed).
    #[error("chunk store: {what}: {source}")]
    Backend {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ChunkError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    fn backend(what: impl Into<String>) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Self {
        let what = what.into();
        move |source| Self::Backend { what, source }
    }
}

/// A store of content-addressed chunks; see the module docs for the
/// invariants every implementation keeps. Object safe: callers hold an
/// `Arc<dyn ChunkStore>`.
pub trait ChunkStore: Send + Sync + fmt::Debug {
    /// Stores `chunk` under its digest, atomically, unless a chunk with that
    /// digest is already there (its name is not computed again: see [`NamedChunk`]).
    /// Of concurrent puts of the same absent chunk,
    /// exactly one answers `new: true` (an implementation over a backend that
    /// cannot decide this says so: at least one then does).
    fn put_named(&self, chunk: NamedChunk) -> BoxFuture<'_, Result<Stored, ChunkError>>;

    /// [`ChunkStore::put_named`] of `chunk`, named here.
    fn put(&self, chunk: Bytes) -> BoxFuture<'_, Result<Stored, ChunkError>> {
        self.put_named(NamedChunk::new(chunk))
    }

    /// The whole chunk named `digest`, its hash checked:
    /// [`ChunkError::NotFound`] if absent, [`ChunkError::Corrupt`] if its
    /// bytes do not match.
    fn get(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>>;

    /// The bytes stored under `digest`, without checking that they hash to it: only for a caller that checks them
    /// otherwise (the image loader checks every decrypted chunk against its authenticated manifest, which also
    /// catches a tampered ciphertext) and so need not pay for a second hash. [`ChunkError::NotFound`] if absent.
    fn get_unverified(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>> {
        self.get(digest)
    }

    /// For each digest, in order, whether the store holds a chunk by that
    /// name (its bytes are not read: a corrupt chunk counts as held).
    fn contains<'a>(&'a self, digests: &'a [ChunkDigest]) -> BoxFuture<'a, Result<Vec<bool>, ChunkError>>;

    /// Removes the chunk named `digest`; whether it was there. Deleting an
    /// absent chunk is not an error. Only garbage collection calls this.
    fn delete(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<bool, ChunkError>>;

    /// Up to `limit` digests of stored chunks, in ascending order, each
    /// greater than `after`: page through the store by passing the last
    /// digest of a page as the next `after`. A chunk present for the whole
    /// paging is listed exactly once; one put or deleted meanwhile may or may
    /// not be.
    fn list(&self, after: Option<ChunkDigest>, limit: usize) -> BoxFuture<'_, Result<Vec<ChunkDigest>, ChunkError>>;

    /// How many chunks, and how many bytes, the store holds. May walk the
    /// whole store: for a gauge at a scrape interval, not for every request.
    fn size(&self) -> BoxFuture<'_, Result<Size, ChunkError>>;

    /// Whether the store holds a chunk named `digest`.
    fn has(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<bool, ChunkError>> {
        Box::pin(async move {
            let held = self.contains(std::slice::from_ref(&digest)).await?;
            Ok(held.first().copied().unwrap_or(false))
        })
    }

    /// Every stored digest, in ascending order ([`ChunkStore::list`] page by page).
    fn all(&self) -> BoxFuture<'_, Result<Vec<ChunkDigest>, ChunkError>> {
        Box::pin(async move {
            let mut all = Vec::new();
            loop {
                let page = self.list(all.last().copied(), PAGE).await?;
                let done = page.len() < PAGE;
                all.extend(page);
                if done {
                    return Ok(all);
                }
            }
        })
    }
}

/// The refusal of a chunk over `max` bytes.
fn check_len(chunk: &[u8], max: usize) -> Result<(), ChunkError> {
    match chunk.len() > max {
        true => Err(ChunkError::TooLarge { len: chunk.len(), max }),
        false => Ok(()),
    }
}
