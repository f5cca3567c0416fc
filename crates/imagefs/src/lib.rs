//! A container image as a read-only filesystem whose chunks are fetched on first read (as in "On-demand container
//! loading in AWS Lambda", ATC'23).
//!
//! The image is an EROFS filesystem image cut into 512 KiB chunks ([`ignis_images`]); its [`Manifest`] names them
//! and a [`ChunkStore`] holds them. The worker presents it to sandboxes without reading it whole:
//!
//! ```text
//!  sandbox: /var/task/... ── a clone of ──► erofs, file-backed (one superblock, one page cache per image)
//!                                                │ reads of the image file
//!                                                ▼
//!  FUSE (one connection per ImageFs, detached): one read-only file per image, FOPEN_DIRECT_IO
//!                                                │ READ(offset, len)
//!                                                ▼
//!  the covering chunks: zero → zeros; cached → the cache file; else one fetch per chunk
//!  memory tier, else disk tier, else one fetch per chunk (single flight, at most max_fetches at once):
//!  store → decrypt → verify → memory (LRU, memory_bytes) → answer; → disk (LRU, disk_bytes) after
//! ```
//!
//! # API boundary
//! - [`ImageFs::new`] with an [`ImageFsConfig`] and a tokio runtime's handle (fetches run on it;
//!   it must keep running while images are mounted): empties the cache directory and starts the FUSE connection.
//!   One [`ImageFs`] per cache directory (and normally per worker).
//! - [`ImageFs::mount`]: one [`MountedImage`] per image id at a time, shared by every sandbox of the image (a
//!   second call while the first's result lives answers the same); blocking (it reads the image's superblock
//!   through the chunk path), so called from a thread that may block, not from the runtime's.
//! - [`MountedImage::tree`]: a detached clone of the image's erofs mount (read-only, nosuid, nodev, private) for
//!   one sandbox, as `ignis_sandbox::code` gives code directories.
//! - [`ImageFs::stats`]: the counters for the metrics endpoint.
//!
//! What it does not know: where manifests, account keys and chunks come from (a worker host's chunk store fetches
//! from the server; this crate sees only the [`ChunkStore`] trait), which images are live.
//!
//! # Prefetch
//! With a `starts_dir`, each mount records the chunks its reads touch first (first-touch order, the first 10 s or
//! 512 chunks; `starts.rs`) into a small file per image id there, and the next mount of the same image id (also
//! after a restart: the directory is not emptied) starts fetching those chunks at once, in that order,
//! `max_prefetches` at a time, through the same flights and `max_fetches` slots as reads, without waiting for
//! them: a read of a chunk being prefetched joins its flight, a read of one not reached yet fetches it itself.
//! Nothing else is fetched ahead of need. A record file that does not parse, or names a chunk
//! the image does not have, is ignored.
//!
//! # Mounts and their lifetimes
//! The FUSE filesystem is mounted with the new mount API and never attached to any tree (`fsopen("fuse")`,
//! `fsmount`); an image's file is opened through that mount fd and erofs is mounted from it, detached, by
//! `/proc/self/fd/N` (`ignis_sandbox::code::mount_image`; through a loop device where the kernel cannot back
//! erofs by a file). Every sandbox gets an `open_tree(OPEN_TREE_CLONE)` clone. Nothing of it appears in any mount
//! table until a sandbox moves its clone into its own namespace.
//!
//! The erofs superblock holds the image file open, and the image's state is kept by the FUSE server as long as
//! that file is open (until its `RELEASE`): a sandbox's tree keeps serving reads after its [`MountedImage`] and
//! even the [`ImageFs`] are dropped. Once the last tree, mount and the [`ImageFs`] are gone, the FUSE superblock
//! is destroyed, the connection aborted, and its threads end.
//!
//! The kernel cannot end a process one of whose threads waits for a FUSE request that the same process's server
//! had read. The only such requests in the worker are the reads erofs makes while [`ImageFs::mount`] mounts (the
//! superblock, the root inode): so `mount` fetches those chunks first, within [`MOUNT_FETCH_LIMIT`], and calls the
//! kernel only once they are cached, when the kernel's reads are answered at once from memory.
//!
//! # Invariants
//! - Never wrong bytes: a read answers only bytes that are zero by the manifest or that [`ignis_images`] verified
//!   (the chunk's bytes against the hash in its authenticated manifest). A chunk that is missing or does not
//!   verify fails the read with `EIO`, counted in [`Stats`]; it is not cached, and the next read tries again. The
//!   cache holds only verified plaintext, keyed by name and plaintext id, in a directory of the worker's own that
//!   it empties at start.
//! - Bounded: the cache's chunks take at most `memory_bytes` in memory and `disk_bytes` on disk (what to evict
//!   is decided by an `ignis_cachepolicy` policy, with no IO), plus one temporary file per disk write in progress;
//!   at most `max_fetches` fetches at once, each holding its slot until its chunk is on disk; memory beyond the
//!   memory tier holds only the chunks of fetches and reads in progress.
//! - Nothing is left after the process dies, even by `kill -9`: the FUSE connection lives only through its
//!   `/dev/fuse` descriptor and its detached mounts, which the kernel ends with the process's descriptors; the
//!   reads erofs makes while it mounts are answered from the cache (see "Mounts and their lifetimes"), so no thread
//!   of the worker waits on its own FUSE server for the store. Sandboxes are other processes: when the worker dies,
//!   their reads fail.

mod cache;
mod fuse;
mod starts;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use ignis_cachepolicy::Policy;
use ignis_chunks::ChunkStore;
use ignis_images::{AccountKey, Manifest, ManifestError};
use ignis_sandbox::code::{clone, loop_device, mount_image};

use crate::cache::{Image, Shared};
use crate::fuse::{Inodes, Server};
use crate::starts::Start;

/// How long the chunks an erofs mount reads (the superblock's, the root inode's) may take to fetch before the
/// mount is given up.
pub const MOUNT_FETCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The memory tier's budget unless set.
pub const DEFAULT_MEMORY_BYTES: u64 = 256 << 20;

/// How an [`ImageFs`] caches and fetches.
#[derive(Debug, Clone)]
pub struct ImageFsConfig {
    /// The cache's directory: the worker's own, emptied at start; one [`ImageFs`] per directory.
    pub cache_dir: PathBuf,
    /// The most bytes the chunks cached in memory may take.
    pub memory_bytes: u64,
    /// The most bytes the chunks cached on disk (in `cache_dir`) may take.
    pub disk_bytes: u64,
    /// Which chunks each tier keeps (LRU-2 unless set).
    pub eviction: Policy,
    /// The most chunk fetches from the store at once.
    pub max_fetches: usize,
    /// The most of them a prefetch makes at once (fetching is mostly decryption and hashing: one per core, so
    /// the chunks a start needs first come first).
    pub max_prefetches: usize,
    /// The threads that serve FUSE requests (reads that must fetch are handed to the runtime, so few suffice).
    pub threads: usize,
    /// Where the records of starts are kept (the chunks a mount's reads touched first, one small file per image
    /// id), which the next mount of the image prefetches: a directory that is not emptied at start. `None`: no
    /// records, no prefetch.
    pub starts_dir: Option<PathBuf>,
}

impl ImageFsConfig {
    /// A cache of [`DEFAULT_MEMORY_BYTES`] in memory and `disk_bytes` in `cache_dir`, LRU-2, 8 fetches at once (a
    /// prefetch: one per core), 4 FUSE threads.
    pub fn new(cache_dir: impl Into<PathBuf>, disk_bytes: u64) -> Self {
        let memory_bytes = DEFAULT_MEMORY_BYTES;
        let (eviction, max_prefetches) = (Policy::default(), std::thread::available_parallelism().map_or(2, |n| n.get()));
        Self {
            cache_dir: cache_dir.into(),
            memory_bytes,
            disk_bytes,
            eviction,
            max_fetches: 8,
            max_prefetches,
            threads: 4,
            starts_dir: None,
        }
    }
}

/// The counters of an [`ImageFs`] (totals since it started, and the cache's size now).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Chunks fetched from the store (each fetch once, however many reads waited for it), failed ones included.
    pub chunk_fetches_total: u64,
    /// The bytes of the chunks fetched and verified.
    pub chunk_fetch_bytes_total: u64,
    /// Chunks a read found in memory.
    pub memory_hits_total: u64,
    /// Chunks a read found on disk, not in memory.
    pub disk_hits_total: u64,
    /// Chunks a read found in neither tier (it fetched them, or joined a fetch in progress).
    pub misses_total: u64,
    /// Chunk fetches started by a prefetch (the record of the image's previous start), not by a read.
    pub prefetched_total: u64,
    /// Fetched chunks that did not verify (corrupt in the store, or not what their manifest names).
    pub verify_failures_total: u64,
    /// Fetches that failed otherwise (a chunk missing from the store, the store failing).
    pub fetch_failures_total: u64,
    /// The bytes the chunks cached in memory take now.
    pub memory_bytes: u64,
    /// The bytes the chunks cached on disk take now.
    pub disk_bytes: u64,
}

/// Why an image could not be mounted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The manifest does not open under the account's key (tampered with, or another account's).
    #[error("image {image}: {source}")]
    Manifest {
        image: String,
        #[source]
        source: ManifestError,
    },
    /// The kernel refused the mount (or its first reads failed: e.g. the superblock's chunk is missing).
    #[error("mounting image {image}: {source}")]
    Mount {
        image: String,
        #[source]
        source: io::Error,
    },
}

/// How erofs is given an image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backing {
    /// Straight from the file (Linux 6.12 and later).
    File,
    /// Through a loop device.
    Loop,
}

/// Container images served lazily from a chunk store; see the crate docs.
pub struct ImageFs {
    shared: Arc<Shared>,
    inodes: Arc<Inodes>,
    /// The FUSE filesystem's detached mount.
    fuse: OwnedFd,
    starts_dir: Option<PathBuf>,
    connection: u32,
    /// How erofs mounts work here, once known.
    backing: Mutex<Option<Backing>>,
    /// Image id → its mount while one lives; each slot locked while its image is being mounted.
    mounted: Mutex<HashMap<String, Arc<Mutex<Weak<MountedImage>>>>>,
}

impl std::fmt::Debug for ImageFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageFs").field("connection", &self.connection).finish_non_exhaustive()
    }
}

/// One image's erofs mount, shared by its sandboxes; dropped with the last [`Arc`] (sandboxes' trees live on).
#[derive(Debug)]
pub struct MountedImage {
    image_id: String,
    image_bytes: u64,
    mount: OwnedFd,
}

/// A mutex's guard, also after a panic elsewhere (every critical section leaves its state whole).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl ImageFs {
    /// Empties `config.cache_dir` and starts the FUSE connection (as root: it opens `/dev/fuse` and mounts).
    pub fn new(config: ImageFsConfig, runtime: tokio::runtime::Handle) -> io::Result<ImageFs> {
        cache::empty_dir(&config.cache_dir).map_err(|e| {
            io::Error::new(e.kind(), format!("emptying the image cache {}: {e}", config.cache_dir.display()))
        })?;
        let shared =
            Arc::new(Shared::new(runtime, &config.cache_dir, &config));
        let inodes = Arc::new(Inodes::default());
        let server = Server { inodes: inodes.clone(), shared: shared.clone() };
        let (fuse, connection) = fuse::mount(server, config.threads)?;
        Ok(ImageFs {
            shared,
            inodes,
            fuse,
            starts_dir: config.starts_dir,
            connection,
            backing: Mutex::new(None),
            mounted: Mutex::new(HashMap::new()),
        })
    }

    /// The image `image_id` (its `manifest` opened with the account's `key`, its chunks in `store`) mounted, or the
    /// mount that already serves it. Blocks while erofs reads the image's superblock (fetching its first chunk if
    /// not cached).
    pub fn mount(
        &self,
        image_id: &str,
        manifest: Manifest,
        key: AccountKey,
        store: Arc<dyn ChunkStore>,
    ) -> Result<Arc<MountedImage>, LoadError> {
        let slot = {
            let mut mounted = lock(&self.mounted);
            // Forget the images that are gone and that no one is mounting.
            mounted.retain(|_, slot| Arc::strong_count(slot) > 1 || lock(slot).strong_count() > 0);
            mounted.entry(image_id.to_string()).or_default().clone()
        };
        let mut held = lock(&slot);
        if let Some(image) = held.upgrade() {
            return Ok(image);
        }
        let mut image = Image::open(image_id, manifest, &key, store)
            .map_err(|source| LoadError::Manifest { image: image_id.to_string(), source })?;
        let image_bytes = image.bytes();
        let mut prefetch = None;
        if let Some(record) = self.starts_dir.as_deref().and_then(|dir| starts::path(dir, image_id)) {
            prefetch = starts::load(&record, image.chunk_count());
            image = image.recording(Start::begin(record, self.shared.runtime.clone()));
        }
        let image = Arc::new(image);
        if let Some(chunks) = prefetch {
            self.shared.prefetch(&image, chunks);
        }
        // What the kernel reads while it mounts is fetched first, and bounded in time: a mount never waits for
        // the store (see "Mounts and their lifetimes").
        let before = self.shared.clone().before_mount(image.clone());
        match self.shared.runtime.block_on(async { tokio::time::timeout(MOUNT_FETCH_LIMIT, before).await }) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(LoadError::Mount { image: image_id.to_string(), source: e }),
            Err(_) => {
                let e = io::Error::new(io::ErrorKind::TimedOut, format!("no superblock in {MOUNT_FETCH_LIMIT:?}"));
                return Err(LoadError::Mount { image: image_id.to_string(), source: e });
            }
        }
        let ino = self.inodes.name(image);
        let mount = self.mount_erofs(ino);
        self.inodes.unname(ino);
        let mount = mount.map_err(|source| LoadError::Mount { image: image_id.to_string(), source })?;
        let image = Arc::new(MountedImage { image_id: image_id.to_string(), image_bytes, mount });
        *held = Arc::downgrade(&image);
        Ok(image)
    }

    /// Whether the image `image_id` is mounted or being mounted now (a [`ImageFs::mount`] of it would make no new
    /// mount, or wait for the one being made). Never blocks.
    pub fn is_mounted(&self, image_id: &str) -> bool {
        let Some(slot) = lock(&self.mounted).get(image_id).cloned() else { return false };
        match slot.try_lock() {
            Ok(held) => held.strong_count() > 0,
            Err(std::sync::TryLockError::Poisoned(held)) => held.into_inner().strong_count() > 0,
            Err(std::sync::TryLockError::WouldBlock) => true,
        }
    }

    /// Mounts erofs from the FUSE file `ino`: from the file if the kernel can, else through a loop device.
    fn mount_erofs(&self, ino: u64) -> io::Result<OwnedFd> {
        let name = CString::new(ino.to_string()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: valid fd and NUL-terminated relative path.
        let fd = unsafe { libc::openat(self.fuse.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("opening the image's file: {e}")));
        }
        // SAFETY: just opened; ours.
        let file = unsafe { OwnedFd::from_raw_fd(fd) };
        let known = *lock(&self.backing);
        if known != Some(Backing::Loop) {
            match mount_image(&format!("/proc/self/fd/{}", file.as_raw_fd()), false) {
                Ok(mount) => {
                    *lock(&self.backing) = Some(Backing::File);
                    return Ok(mount);
                }
                Err(e) if known == Some(Backing::File) => return Err(e),
                Err(from_file) => {
                    let mount = Self::mount_through_loop(&file).map_err(|e| {
                        io::Error::new(e.kind(), format!("file-backed: {from_file}; through a loop device: {e}"))
                    })?;
                    *lock(&self.backing) = Some(Backing::Loop);
                    return Ok(mount);
                }
            }
        }
        Self::mount_through_loop(&file)
    }

    fn mount_through_loop(file: &OwnedFd) -> io::Result<OwnedFd> {
        let (device, path) = loop_device(file)?;
        let mount = mount_image(&path, false);
        // The mount holds the device open; with the last mount of it gone, the kernel detaches it.
        drop(device);
        mount
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let (memory_bytes, disk_bytes) = self.shared.cache_bytes();
        Stats {
            chunk_fetches_total: c.fetches.load(Ordering::Relaxed),
            chunk_fetch_bytes_total: c.fetch_bytes.load(Ordering::Relaxed),
            memory_hits_total: c.memory_hits.load(Ordering::Relaxed),
            disk_hits_total: c.disk_hits.load(Ordering::Relaxed),
            misses_total: c.misses.load(Ordering::Relaxed),
            prefetched_total: c.prefetched.load(Ordering::Relaxed),
            verify_failures_total: c.verify_failures.load(Ordering::Relaxed),
            fetch_failures_total: c.fetch_failures.load(Ordering::Relaxed),
            memory_bytes,
            disk_bytes,
        }
    }

    /// The FUSE connection's number (its directory under `/sys/fs/fuse/connections`).
    pub fn connection(&self) -> u32 {
        self.connection
    }
}

impl MountedImage {
    /// A detached clone of the image's mount (read-only, nosuid, nodev, private) for one sandbox.
    pub fn tree(&self) -> io::Result<OwnedFd> {
        clone(&self.mount)
    }

    pub fn image_id(&self) -> &str {
        &self.image_id
    }

    /// The image's size in bytes (its erofs filesystem image's).
    pub fn image_bytes(&self) -> u64 {
        self.image_bytes
    }
}
