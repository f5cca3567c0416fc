//! [`MemoryChunkStore`]: chunks in a map in memory, for tests of the code
//! above the seam (the image builder, the loader, garbage collection).
//!
//! One mutex guards the map; it is held only for a lookup or an insert,
//! never across an await or while hashing. It keeps the same invariants as
//! every store, the hash check on read included, so that
//! [`MemoryChunkStore::tamper`] lets a test see what a damaged chunk does.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use crate::{BoxFuture, ChunkDigest, ChunkError, ChunkStore, DEFAULT_MAX_CHUNK_BYTES, NamedChunk, Size, Stored, check_len};

#[derive(Debug)]
pub struct MemoryChunkStore {
    max_chunk_bytes: usize,
    chunks: Mutex<BTreeMap<ChunkDigest, Bytes>>,
}

impl Default for MemoryChunkStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryChunkStore {
    /// An empty store refusing chunks over [`DEFAULT_MAX_CHUNK_BYTES`].
    pub fn new() -> Self {
        Self::with_max_chunk_bytes(DEFAULT_MAX_CHUNK_BYTES)
    }

    pub fn with_max_chunk_bytes(max_chunk_bytes: usize) -> Self {
        Self { max_chunk_bytes, chunks: Mutex::new(BTreeMap::new()) }
    }

    /// Replaces the stored bytes of `digest` by `change(bytes)` without
    /// renaming the chunk, as damage would (for tests of corruption); whether
    /// the chunk was there.
    pub fn tamper(&self, digest: ChunkDigest, change: impl FnOnce(&[u8]) -> Vec<u8>) -> bool {
        let mut chunks = self.lock();
        let Some(bytes) = chunks.get_mut(&digest) else { return false };
        *bytes = Bytes::from(change(bytes));
        true
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<ChunkDigest, Bytes>> {
        // The map is consistent after any panic (one insert or remove at a time).
        self.chunks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ChunkStore for MemoryChunkStore {
    fn put_named(&self, chunk: NamedChunk) -> BoxFuture<'_, Result<Stored, ChunkError>> {
        Box::pin(async move {
            check_len(chunk.bytes(), self.max_chunk_bytes)?;
            let digest = chunk.digest();
            let mut chunks = self.lock();
            let new = !chunks.contains_key(&digest);
            if new {
                chunks.insert(digest, chunk.into_bytes());
            }
            Ok(Stored { digest, new })
        })
    }

    fn get(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>> {
        Box::pin(async move {
            let bytes = self.get_unverified(digest).await?;
            match ChunkDigest::of(&bytes) == digest {
                true => Ok(bytes),
                false => Err(ChunkError::Corrupt(digest)),
            }
        })
    }

    fn get_unverified(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>> {
        Box::pin(async move { self.lock().get(&digest).cloned().ok_or(ChunkError::NotFound(digest)) })
    }

    fn contains<'a>(&'a self, digests: &'a [ChunkDigest]) -> BoxFuture<'a, Result<Vec<bool>, ChunkError>> {
        Box::pin(async move {
            let chunks = self.lock();
            Ok(digests.iter().map(|d| chunks.contains_key(d)).collect())
        })
    }

    fn delete(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<bool, ChunkError>> {
        Box::pin(async move { Ok(self.lock().remove(&digest).is_some()) })
    }

    fn list(&self, after: Option<ChunkDigest>, limit: usize) -> BoxFuture<'_, Result<Vec<ChunkDigest>, ChunkError>> {
        Box::pin(async move {
            let start = after.map_or(Bound::Unbounded, Bound::Excluded);
            Ok(self.lock().range((start, Bound::Unbounded)).map(|(d, _)| *d).take(limit).collect())
        })
    }

    fn size(&self) -> BoxFuture<'_, Result<Size, ChunkError>> {
        Box::pin(async move {
            let chunks = self.lock();
            Ok(Size { chunks: chunks.len() as u64, bytes: chunks.values().map(|b| b.len() as u64).sum() })
        })
    }
}
