//! A worker's limit on reads of the origin store (the chunk store of record, below every cache), so that an
//! empty cache cannot melt it: [`OriginLimit`].
//!
//! - Reads: [`OriginLimit::store`] wraps an origin [`ChunkStore`]; its `get` and `get_unverified` each take one
//!   of the limit's slots for their whole duration, waiting for one if none is free (the other calls pass
//!   straight through). Every store a limit wraps shares its slots: at most `limit` origin reads at once per
//!   limit, whatever the number of images. [`OriginLimit::set_limit`] changes the limit at any time (a worker's
//!   share of a cluster-wide budget): reads past a lowered limit finish, and no new one starts until the reads in
//!   flight are below it.
//! - Starts: [`OriginLimit::admit`] is asked before a sandbox start that may read the origin (a new mount of an
//!   image). It is admitted while fewer reads wait for a slot, plus starts admitted and not yet mounted, than
//!   there are slots; otherwise it waits until that holds, at most the time given, and is then refused with
//!   [`Throttled`]. So a cold-cache storm is let in at the pace the origin is read and the rest are told to try
//!   again, rather than piling up behind the slots.
//!
//! # Invariants
//! - At most `limit` reads of wrapped stores are in flight at any time ([`OriginStats::peak`] shows the most seen).
//! - An admission answers within the time it was given (plus scheduling), admitted or [`Throttled`].
//! - A [`StartPermit`] counts as waiting until dropped (the caller drops it once its mount is made).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ignis_clock::SharedClock;
use tokio::sync::Notify;

use crate::{BoxFuture, ChunkDigest, ChunkError, ChunkStore, NamedChunk, Size, Stored};

/// A start was not admitted in time: the origin is saturated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "too many sandboxes are loading images at once: {waiting} chunk reads wait for the chunk store ({limit} at a \
     time) after {waited:?}; try again"
)]
pub struct Throttled {
    pub waiting: usize,
    pub limit: usize,
    pub waited: Duration,
}

/// What a limit has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OriginStats {
    /// Reads of the origin started, and the bytes of those that answered a chunk.
    pub reads: u64,
    pub read_bytes: u64,
    /// Reads of the origin in flight now.
    pub in_flight: usize,
    /// The most reads in flight at once so far.
    pub peak: usize,
    /// Reads waiting for a slot now.
    pub waiting: usize,
    /// Starts admitted, and refused.
    pub admitted: u64,
    pub throttled: u64,
}

/// The limit on one worker's reads of the origin; see the module docs.
pub struct OriginLimit {
    limit: AtomicUsize,
    /// Reads waiting for a slot, and starts admitted but not yet mounted.
    waiting: AtomicUsize,
    starting: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    reads: AtomicU64,
    read_bytes: AtomicU64,
    admitted: AtomicU64,
    throttled: AtomicU64,
    /// Told whenever `waiting`, `starting` or `in_flight` goes down, or the limit changes.
    eased: Notify,
    /// What admissions wait by.
    clock: SharedClock,
}

impl std::fmt::Debug for OriginLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginLimit").field("limit", &self.limit()).field("stats", &self.stats()).finish()
    }
}

impl OriginLimit {
    /// A limit of `limit` reads at once (at least 1), admissions waiting by `clock`.
    pub fn new(limit: usize, clock: SharedClock) -> Arc<OriginLimit> {
        let limit = limit.max(1);
        Arc::new(OriginLimit {
            limit: AtomicUsize::new(limit),
            waiting: AtomicUsize::new(0),
            starting: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            reads: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            eased: Notify::new(),
            clock,
        })
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::SeqCst)
    }

    /// Allows `limit` reads at once from now on (at least 1).
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit.max(1), Ordering::SeqCst);
        self.eased.notify_waiters();
    }

    pub fn stats(&self) -> OriginStats {
        OriginStats {
            reads: self.reads.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            peak: self.peak.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            admitted: self.admitted.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
        }
    }

    /// `origin`, its reads under this limit.
    pub fn store(self: &Arc<Self>, origin: Arc<dyn ChunkStore>) -> Arc<dyn ChunkStore> {
        Arc::new(Limited { limit: self.clone(), origin })
    }

    /// The backlog a start is judged by: reads waiting for a slot and starts not yet mounted.
    fn backlog(&self) -> usize {
        self.waiting.load(Ordering::SeqCst) + self.starting.load(Ordering::SeqCst)
    }

    /// Admits a start once the backlog is below the limit, waiting at most `wait`; see the module docs.
    pub async fn admit(self: &Arc<Self>, wait: Duration) -> Result<StartPermit, Throttled> {
        let deadline = self.clock.instant() + wait;
        loop {
            let eased = self.eased.notified();
            tokio::pin!(eased);
            // Registered before the check, so that no easing between the check and the wait is missed.
            eased.as_mut().enable();
            let backlog = self.backlog();
            if backlog < self.limit() {
                self.starting.fetch_add(1, Ordering::SeqCst);
                self.admitted.fetch_add(1, Ordering::Relaxed);
                return Ok(StartPermit { limit: self.clone() });
            }
            let left = deadline.saturating_duration_since(self.clock.instant());
            if ignis_clock::timeout(&*self.clock, left, eased).await.is_err() {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                return Err(Throttled { waiting: backlog, limit: self.limit(), waited: wait });
            }
        }
    }

    fn ease(&self, counter: &AtomicUsize) {
        counter.fetch_sub(1, Ordering::SeqCst);
        self.eased.notify_waiters();
    }

    /// Runs `read` in one of the slots (the counts stay right if the future is dropped at any point).
    async fn read(&self, read: BoxFuture<'_, Result<Bytes, ChunkError>>) -> Result<Bytes, ChunkError> {
        let waiting = Counted::up(self, &self.waiting);
        let in_flight = loop {
            let eased = self.eased.notified();
            tokio::pin!(eased);
            // Registered before the check, so that no slot given back between the check and the wait is missed.
            eased.as_mut().enable();
            let now = self.in_flight.load(Ordering::SeqCst);
            let claimed = now < self.limit()
                && self.in_flight.compare_exchange(now, now + 1, Ordering::SeqCst, Ordering::SeqCst).is_ok();
            if claimed {
                self.peak.fetch_max(now + 1, Ordering::SeqCst);
                break Counted { limit: self, counter: &self.in_flight };
            }
            eased.await;
        };
        drop(waiting);
        self.reads.fetch_add(1, Ordering::Relaxed);
        let out = read.await;
        drop(in_flight);
        if let Ok(bytes) = &out {
            self.read_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        out
    }
}

/// One count of `counter`, given back (and the limit eased) when dropped.
struct Counted<'a> {
    limit: &'a OriginLimit,
    counter: &'a AtomicUsize,
}

impl<'a> Counted<'a> {
    fn up(limit: &'a OriginLimit, counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Counted { limit, counter }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.limit.ease(self.counter);
    }
}

/// An admitted start, counted until dropped.
#[derive(Debug)]
pub struct StartPermit {
    limit: Arc<OriginLimit>,
}

impl Drop for StartPermit {
    fn drop(&mut self) {
        self.limit.ease(&self.limit.starting);
    }
}

/// An origin store whose reads go through an [`OriginLimit`].
#[derive(Debug)]
struct Limited {
    limit: Arc<OriginLimit>,
    origin: Arc<dyn ChunkStore>,
}

impl ChunkStore for Limited {
    fn put_named(&self, chunk: NamedChunk) -> BoxFuture<'_, Result<Stored, ChunkError>> {
        self.origin.put_named(chunk)
    }

    fn get(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>> {
        Box::pin(self.limit.read(self.origin.get(digest)))
    }

    fn get_unverified(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>> {
        Box::pin(self.limit.read(self.origin.get_unverified(digest)))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use ignis_clock::ManualClock;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::MemoryChunkStore;

    /// A store whose gets wait for a permit of `gate` each.
    #[derive(Debug)]
    struct Gated {
        inner: MemoryChunkStore,
        gate: Arc<Semaphore>,
    }

    impl ChunkStore for Gated {
        fn put_named(&self, chunk: NamedChunk) -> BoxFuture<'_, Result<Stored, ChunkError>> {
            self.inner.put_named(chunk)
        }
        fn get(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>> {
            Box::pin(async move {
                let _pass = self.gate.acquire().await;
                self.inner.get(digest).await
            })
        }
        fn contains<'a>(&'a self, digests: &'a [ChunkDigest]) -> BoxFuture<'a, Result<Vec<bool>, ChunkError>> {
            self.inner.contains(digests)
        }
        fn delete(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<bool, ChunkError>> {
            self.inner.delete(digest)
        }
        fn list(&self, after: Option<ChunkDigest>, n: usize) -> BoxFuture<'_, Result<Vec<ChunkDigest>, ChunkError>> {
            self.inner.list(after, n)
        }
        fn size(&self) -> BoxFuture<'_, Result<Size, ChunkError>> {
            self.inner.size()
        }
    }

    async fn wait_for(limit: &OriginLimit, done: impl Fn(OriginStats) -> bool) {
        while !done(limit.stats()) {
            tokio::task::yield_now().await;
        }
    }

    /// `limit.admit(wait)` in a task of its own, once it waits on `clock`.
    async fn admitting(
        limit: &Arc<OriginLimit>,
        clock: &ManualClock,
        wait: Duration,
    ) -> tokio::task::JoinHandle<Result<(), Throttled>> {
        let sleepers = clock.sleepers();
        let admit = tokio::spawn({
            let limit = limit.clone();
            async move { limit.admit(wait).await.map(drop) }
        });
        assert!(clock.until_sleepers(sleepers + 1, 10_000).await, "the admission waits");
        admit
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reads_never_exceed_the_limit_and_starts_wait_then_are_throttled() {
        let gate = Arc::new(Semaphore::new(0));
        let gated = Gated { inner: MemoryChunkStore::new(), gate: gate.clone() };
        let digest = gated.put(Bytes::from_static(b"chunk")).await.unwrap().digest;
        let clock = ManualClock::at_epoch_2026();
        let limit = OriginLimit::new(2, clock.clone());
        let store = limit.store(Arc::new(gated));

        // Nothing waits: a start is admitted at once.
        let first = limit.admit(Duration::ZERO).await.expect("admitted");
        drop(first);

        // Five reads: two in flight, three waiting.
        let reads: Vec<_> = (0..5)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.get(digest).await })
            })
            .collect();
        wait_for(&limit, |s| s.in_flight == 2 && s.waiting == 3).await;

        // The backlog is over the limit: a start waits, and is refused when its time is up.
        let refusal = admitting(&limit, &clock, Duration::from_secs(5)).await;
        clock.advance(Duration::from_secs(5));
        let refused = refusal.await.unwrap().expect_err("throttled");
        assert_eq!((refused.limit, refused.waiting), (2, 3));

        // A start waiting while the backlog drains is admitted.
        let admitted = admitting(&limit, &clock, Duration::from_secs(3600)).await;
        gate.add_permits(5);
        for read in reads {
            assert_eq!(read.await.unwrap().unwrap(), Bytes::from_static(b"chunk"));
        }
        admitted.await.unwrap().expect("admitted once the reads were done");
        let stats = limit.stats();
        let counts = (stats.peak, stats.in_flight, stats.waiting, stats.reads, stats.read_bytes);
        assert_eq!(counts, (2, 0, 0, 5, 25), "{stats:?}");
        assert_eq!((stats.admitted, stats.throttled), (2, 1), "{stats:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_changed_limit_holds_for_the_reads_that_wait() {
        let gate = Arc::new(Semaphore::new(0));
        let gated = Gated { inner: MemoryChunkStore::new(), gate: gate.clone() };
        let digest = gated.put(Bytes::from_static(b"chunk")).await.unwrap().digest;
        let limit = OriginLimit::new(1, ManualClock::at_epoch_2026());
        let store = limit.store(Arc::new(gated));
        let reads: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.get(digest).await })
            })
            .collect();
        wait_for(&limit, |s| s.in_flight == 1 && s.waiting == 3).await;
        limit.set_limit(3);
        wait_for(&limit, |s| s.in_flight == 3 && s.waiting == 1).await;
        // Lowered: the reads in flight finish, and the one waiting starts only when fewer than 2 are.
        limit.set_limit(2);
        gate.add_permits(2);
        wait_for(&limit, |s| s.reads == 4).await;
        gate.add_permits(2);
        for read in reads {
            read.await.unwrap().unwrap();
        }
        assert_eq!((limit.limit(), limit.stats().peak), (2, 3));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn starts_admitted_and_not_yet_mounted_count_as_backlog() {
        let clock = ManualClock::at_epoch_2026();
        let limit = OriginLimit::new(2, clock.clone());
        let a = limit.admit(Duration::ZERO).await.expect("first");
        let b = limit.admit(Duration::ZERO).await.expect("second");
        let third = admitting(&limit, &clock, Duration::from_secs(1)).await;
        clock.advance(Duration::from_secs(1));
        assert!(third.await.unwrap().is_err(), "two starts are loading: a third waits, then is refused");
        let waiting = admitting(&limit, &clock, Duration::from_secs(3600)).await;
        drop(a);
        waiting.await.unwrap().expect("admitted once a start mounted");
        drop(b);
        assert_eq!(limit.stats().throttled, 1);
    }
}
