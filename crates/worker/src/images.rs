//! The images of image functions, on this worker: [`Images`] finds an
//! image's chunk manifest through a [`ManifestSource`] (the server's own
//! images service on the local worker; the server, over the worker protocol,
//! on a worker host) and mounts it lazily through one [`ImageFs`] (chunks are
//! fetched on first read, verified, and cached in a bounded directory).
//!
//! A sandbox of an image function holds its [`MountedImage`]: the mount
//! lives as long as a sandbox uses it, and the next cold start of the same
//! image while one lives reuses it (one mount, one page cache per image).
//!
//! Below the loader's own cache, chunks come from the image's origin store
//! (as its source names it) through this worker's [`OriginLimit`] (at most
//! so many origin reads at once), and through a [`ChunkPath`] when one is set
//! (the shared cache tier, in front of the limited origin). A start that must
//! mount its image is admitted by the limit first: it waits while the origin
//! is saturated, at most `start_wait`, and is then refused
//! ([`StartError::Throttled`](crate::StartError::Throttled)).

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use ignis_chunks::{ChunkStore, OriginLimit};
use ignis_imagefs::{ImageFs, MountedImage};
use ignis_images::{AccountKey, Manifest};

use crate::{ImageLaunch, StartError};

/// A boxed future, so that the trait is object safe.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// An image's chunk manifest, what opens it, and where its chunks are.
pub struct ImageManifest {
    /// Names the manifest (hex SHA-256 of its bytes): one mount per id.
    pub id: String,
    pub manifest: Manifest,
    pub key: AccountKey,
    pub chunks: Arc<dyn ChunkStore>,
}

/// Where a worker finds the manifests of the images it runs.
pub trait ManifestSource: Send + Sync {
    /// The manifest of `account`'s image `image`, or why there is none (said
    /// to the caller as the reason the sandbox could not start).
    fn manifest<'a>(&'a self, account: &'a str, image: &'a ImageLaunch) -> BoxFuture<'a, Result<ImageManifest, String>>;
}

/// What stands between an image's origin store and the loader's own cache: the shared cache tier.
pub trait ChunkPath: Send + Sync {
    /// `origin` (already under the worker's origin limit), read through this path.
    fn through(&self, origin: Arc<dyn ChunkStore>) -> Arc<dyn ChunkStore>;
}

/// How often the loader's counters are copied to the metrics.
pub const METRICS_EVERY: Duration = Duration::from_secs(5);

/// Copies the loader's counters to the metrics every [`METRICS_EVERY`] while `images` lives:
/// `ignis_chunk_fetches_total` and `ignis_chunk_fetch_bytes_total` (chunks fetched from below the local cache),
/// `ignis_chunk_cache_hits_total` and `ignis_chunk_cache_misses_total` by `tier` (`memory`, `disk`),
/// `ignis_chunk_prefetched_total` (fetches a start's record began), `ignis_chunk_verify_failures_total`,
/// `ignis_chunk_fetch_failures_total`, and the gauge `ignis_chunk_cache_bytes` by `tier`; the origin limit's
/// `ignis_origin_fetches_total`, `ignis_origin_fetch_bytes_total`, `ignis_origin_fetches_in_flight` (and
/// `_peak`, the most at once so far; `_limit`, the limit now), `ignis_origin_fetches_waiting` and
/// `ignis_image_starts_throttled_total`.
pub async fn publish_metrics(images: Weak<Images>) {
    let mut every = tokio::time::interval(METRICS_EVERY);
    loop {
        every.tick().await;
        let Some(images) = images.upgrade() else { return };
        let stats = images.stats();
        metrics::counter!("ignis_chunk_fetches_total").absolute(stats.chunk_fetches_total);
        metrics::counter!("ignis_chunk_fetch_bytes_total").absolute(stats.chunk_fetch_bytes_total);
        let (memory_misses, disk_misses) = (stats.disk_hits_total + stats.misses_total, stats.misses_total);
        metrics::counter!("ignis_chunk_cache_hits_total", "tier" => "memory").absolute(stats.memory_hits_total);
        metrics::counter!("ignis_chunk_cache_misses_total", "tier" => "memory").absolute(memory_misses);
        metrics::counter!("ignis_chunk_cache_hits_total", "tier" => "disk").absolute(stats.disk_hits_total);
        metrics::counter!("ignis_chunk_cache_misses_total", "tier" => "disk").absolute(disk_misses);
        metrics::counter!("ignis_chunk_prefetched_total").absolute(stats.prefetched_total);
        metrics::counter!("ignis_chunk_verify_failures_total").absolute(stats.verify_failures_total);
        metrics::counter!("ignis_chunk_fetch_failures_total").absolute(stats.fetch_failures_total);
        metrics::gauge!("ignis_chunk_cache_bytes", "tier" => "memory").set(stats.memory_bytes as f64);
        metrics::gauge!("ignis_chunk_cache_bytes", "tier" => "disk").set(stats.disk_bytes as f64);
        let origin = images.origin_stats();
        metrics::counter!("ignis_origin_fetches_total").absolute(origin.reads);
        metrics::counter!("ignis_origin_fetch_bytes_total").absolute(origin.read_bytes);
        metrics::gauge!("ignis_origin_fetches_in_flight").set(origin.in_flight as f64);
        metrics::gauge!("ignis_origin_fetches_peak").set(origin.peak as f64);
        metrics::gauge!("ignis_origin_fetches_limit").set(images.origin.limit() as f64);
        metrics::gauge!("ignis_origin_fetches_waiting").set(origin.waiting as f64);
        metrics::counter!("ignis_image_starts_throttled_total").absolute(origin.throttled);
    }
}

/// Mounts the images of image functions (see the module docs).
pub struct Images {
    fs: Arc<ImageFs>,
    source: Arc<dyn ManifestSource>,
    origin: Arc<OriginLimit>,
    start_wait: Duration,
    path: RwLock<Option<Arc<dyn ChunkPath>>>,
}

impl Images {
    /// Images mounted by `fs`, found by `source`, their origin reads under `origin`; a start that must mount
    /// waits at most `start_wait` for the origin.
    pub fn new(fs: Arc<ImageFs>, source: Arc<dyn ManifestSource>, origin: Arc<OriginLimit>, start_wait: Duration) -> Images {
        Images { fs, source, origin, start_wait, path: RwLock::new(None) }
    }

    /// Reads chunks through `path` from now on (mounts already made keep theirs).
    pub fn set_path(&self, path: Arc<dyn ChunkPath>) {
        *self.path.write().unwrap_or_else(|e| e.into_inner()) = Some(path);
    }

    /// Allows `limit` origin reads at once from now on (a share of a cluster-wide budget).
    pub fn set_origin_limit(&self, limit: usize) {
        self.origin.set_limit(limit);
    }

    /// The origin limit's counters.
    pub fn origin_stats(&self) -> ignis_chunks::OriginStats {
        self.origin.stats()
    }

    /// The lazy loader's counters.
    pub fn stats(&self) -> ignis_imagefs::Stats {
        self.fs.stats()
    }

    /// The mounted image `image` of `account`, mounted now unless a sandbox
    /// already holds it.
    pub async fn mount(&self, account: &str, image: &ImageLaunch) -> Result<Arc<MountedImage>, StartError> {
        let found = self.source.manifest(account, image).await.map_err(StartError::Host)?;
        let permit = match self.fs.is_mounted(&found.id) {
            true => None,
            false => Some(self.origin.admit(self.start_wait).await.map_err(|e| StartError::Throttled(e.to_string()))?),
        };
        let origin = self.origin.store(found.chunks);
        let path = self.path.read().unwrap_or_else(|e| e.into_inner()).clone();
        let chunks = match path {
            Some(path) => path.through(origin),
            None => origin,
        };
        let fs = self.fs.clone();
        let mounted = tokio::task::spawn_blocking(move || fs.mount(&found.id, found.manifest, found.key, chunks))
            .await
            .map_err(|e| StartError::Host(format!("mounting the image failed: {e}")))?
            .map_err(|e| StartError::Host(format!("the image {} cannot be loaded: {e}", image.digest)));
        drop(permit);
        mounted
    }
}
