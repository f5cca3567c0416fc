//! A [`ChunkStore`] with the shared tier in front of the origin.
//!
//! `get` (and `get_unverified`) asks the tier; on a miss it reads the origin, and this worker (the one that
//! missed) writes the chunk's stripes to the tier in the background. `put_named`, `contains`, `delete`, `list` and `size` go to
//! the origin alone: the tier is a cache, and the origin is the store of record.
//!
//! # Invariants
//! - `get` returns the tier's bytes only if they hash to the digest ([`StripeTier::get`]), else the origin's,
//!   which the origin checks itself: never bytes other than the chunk's. `get_unverified` is the same but for
//!   the origin's check (the tier checks always); the stripes written after it are of bytes that hash to the
//!   digest or none ([`StripeTier::put`] checks).
//! - The origin is not read for a chunk the tier answers.
//! - At most `max_puts` stripe writes are in flight (per [`PutSlots`], which stores may share); a miss past that writes nothing (the next miss of the
//!   chunk will). Writes never delay a get.
//!
//! Its counters are [`TieredStats`]; the worker's metrics of origin reads come from the origin limit below it
//! (`ignis_chunks::OriginLimit`), which sees every origin read, tier or not.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use ignis_chunks::{BoxFuture, ChunkDigest, ChunkError, ChunkStore, NamedChunk, Size, Stored};
use tokio::sync::Semaphore;

use crate::client::StripeTier;

/// Whether the origin checks the chunk's hash (the tier always does: it must, to pick 4 stripes that verify).
#[derive(Debug, Clone, Copy)]
enum Verify {
    Yes,
    No,
}

/// Stripe writes in flight at most, unless set.
pub const DEFAULT_MAX_PUTS: usize = 16;

/// What the tiered store did since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TieredStats {
    /// Gets the origin answered.
    pub origin_fetches: u64,
    pub origin_fetch_bytes: u64,
    /// Misses whose stripes were not written: too many writes were in flight.
    pub puts_dropped: u64,
}

/// A bound on stripe writes in flight, which several tiered stores share (a worker's stores, one per mounted
/// image, share one: the bound is the worker's).
#[derive(Debug, Clone)]
pub struct PutSlots {
    max: usize,
    slots: Arc<Semaphore>,
}

impl PutSlots {
    /// At most `max` writes in flight (at least 1).
    pub fn new(max: usize) -> PutSlots {
        let max = max.max(1);
        PutSlots { max, slots: Arc::new(Semaphore::new(max)) }
    }
}

/// The shared tier in front of an origin chunk store.
#[derive(Debug)]
pub struct TieredChunkStore {
    tier: Arc<StripeTier>,
    origin: Arc<dyn ChunkStore>,
    puts: PutSlots,
    origin_fetches: AtomicU64,
    origin_fetch_bytes: AtomicU64,
    puts_dropped: AtomicU64,
}

impl TieredChunkStore {
    pub fn new(tier: Arc<StripeTier>, origin: Arc<dyn ChunkStore>) -> TieredChunkStore {
        TieredChunkStore {
            tier,
            origin,
            puts: PutSlots::new(DEFAULT_MAX_PUTS),
            origin_fetches: AtomicU64::new(0),
            origin_fetch_bytes: AtomicU64::new(0),
            puts_dropped: AtomicU64::new(0),
        }
    }

    /// The same store with at most `max_puts` stripe writes in flight (at least 1).
    pub fn with_max_puts(self, max_puts: usize) -> TieredChunkStore {
        self.with_puts(PutSlots::new(max_puts))
    }

    /// The same store, its stripe writes counted against `puts` (shared with other stores).
    pub fn with_puts(mut self, puts: PutSlots) -> TieredChunkStore {
        self.puts = puts;
        self
    }

    pub fn stats(&self) -> TieredStats {
        TieredStats {
            origin_fetches: self.origin_fetches.load(Ordering::Relaxed),
            origin_fetch_bytes: self.origin_fetch_bytes.load(Ordering::Relaxed),
            puts_dropped: self.puts_dropped.load(Ordering::Relaxed),
        }
    }

    /// Completes once no stripe write is in flight (for shutdown, and for tests that read back what a miss
    /// wrote).
    pub async fn settled(&self) {
        let all = u32::try_from(self.puts.max).unwrap_or(u32::MAX);
        // The semaphore is never closed.
        let _ = self.puts.slots.acquire_many(all).await;
    }

    async fn get_through(&self, digest: ChunkDigest, verify: Verify) -> Result<Bytes, ChunkError> {
        if let Ok(bytes) = self.tier.get(digest).await {
            return Ok(bytes);
        }
        let chunk = match verify {
            Verify::Yes => self.origin.get(digest).await?,
            Verify::No => self.origin.get_unverified(digest).await?,
        };
        self.origin_fetches.fetch_add(1, Ordering::Relaxed);
        self.origin_fetch_bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        match self.puts.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let tier = self.tier.clone();
                let stripes = chunk.clone();
                tokio::spawn(async move {
                    if let Err(e) = tier.put(digest, stripes).await {
                        tracing::debug!(%digest, error = %e, "the chunk was not written to the shared tier");
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                self.puts_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(chunk)
    }
}

impl ChunkStore for TieredChunkStore {
    fn put_named(&self, chunk: NamedChunk) -> BoxFuture<'_, Result<Stored, ChunkError>> {
        self.origin.put_named(chunk)
    }

    fn get(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>> {
        Box::pin(self.get_through(digest, Verify::Yes))
    }

    fn get_unverified(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>> {
        Box::pin(self.get_through(digest, Verify::No))
    }

    fn contains<'a>(&'a self, digests: &'a [ChunkDigest]) -> BoxFuture<'a, Result<Vec<bool>, ChunkError>> {
        self.origin.contains(digests)
    }

    fn delete(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<bool, ChunkError>> {
        self.origin.delete(digest)
    }

    fn list(&self, after: Option<ChunkDigest>, limit: usize) -> BoxFuture<'_, Result<Vec<ChunkDigest>, ChunkError>> {
        self.origin.list(after, limit)
    }

    fn size(&self) -> BoxFuture<'_, Result<Size, ChunkError>> {
        self.origin.size()
    }
}
