//! Serving reads of an image: the chunks that cover each read, from the local cache of verified plaintext or
//! fetched once from the chunk store.
//!
//! # The cache: a memory tier, then a disk tier
//! Both hold a chunk's plaintext as [`Opened::read_chunk`] answered it (fetched, checked against the
//! authenticated manifest, decrypted), keyed by its stored name and its [`Opened::plaintext_id`]. A hit needs
//! both to match: a manifest that names a stored chunk with other keys (another account's, or a crafted one) never
//! reads bytes cached for another manifest, nor evicts them. A fetched chunk goes into both (write-through): into
//! memory at once, before its readers are answered, and onto disk by a task of its own after; each tier keeps its
//! bytes within its budget by its own [`Eviction`] policy (LRU-2 unless configured: a chunk read once, as by a
//! rarely run function, does not push out chunks read again and again). A lookup tries memory, then disk.
//! - Memory: the chunks' bytes, at most `memory_bytes`.
//! - Disk: one file per chunk in the cache directory, named `<name>-<plaintext id>` (both in hex), written
//!   under a temporary name and renamed into place, so a present name always holds a whole chunk. Disk use: at
//!   most the budget, plus one temporary file per write in progress.
//!
//! # Lock discipline
//! One mutex guards both tiers' indexes, the memory tier's bytes and the map of fetches in progress, and is held
//! across the file operations that must agree with the disk index (open on a hit, rename on admission, unlink on
//! eviction): a name in the disk index always has its file. Nothing waits for the network or for another lock
//! while holding it.
//!
//! # Single flight
//! A chunk that is neither zero nor cached is fetched through a [`Flight`] (a `OnceCell` of the result): the first
//! reader's task fetches, every concurrent reader of that chunk awaits the same cell. The fetching task puts the
//! chunk into the memory tier and removes the flight under the lock in one step (or, when memory cannot hold it,
//! only once its file is on disk), so a reader either finds the flight or the cached chunk, and a chunk is fetched
//! once however many read it at once. A failed fetch is not remembered: the next read tries again.
//!
//! # Bounded
//! At most `max_fetches` fetches at once, each holding its slot until its chunk is also on disk: the chunks that
//! memory holds beyond its budget are at most those of the fetches in progress.
//!
//! # Reads
//! A FUSE read names a byte range of the image; [`Shared::read`] looks each covering chunk up on the FUSE thread.
//! If all are zero or cached it answers there; otherwise it hands the read to the runtime, which awaits the
//! flights (at most `max_fetches` fetching at once, a semaphore) and answers from the task, so FUSE threads never
//! wait for the network. A chunk that cannot be fetched or does not verify fails the whole read with `EIO`.
//!
//! # Prefetch
//! [`Shared::prefetch`] fetches the chunks of a start's record in its order, `max_prefetches` at once, each
//! flying its chunk's flight like a read would (same fetch slots, same cache): a read that needs a chunk being
//! prefetched joins its flight, and one that needs a chunk the prefetch has not reached yet fetches it at once.
//! Reads also tell the image's [`Start`] which chunks they touch (the next record).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use fuser::{Errno, ReplyData};
use ignis_chunks::{ChunkDigest, ChunkStore};
use ignis_images::{AccountKey, ChunkName, Manifest, ManifestError, Opened, ReadError};
use tokio::runtime::Handle;
use tokio::sync::{OnceCell, Semaphore};

use ignis_cachepolicy::{Admission, Eviction};
use crate::starts::Start;

self_cell::self_cell!(
    /// A manifest and its opened key table, kept together for the life of the mount.
    struct OpenedManifest {
        owner: Manifest,
        #[covariant]
        dependent: Opened,
    }
);

/// One image being served: its id (for logs) and its opened manifest.
pub(crate) struct Image {
    id: String,
    manifest: OpenedManifest,
    /// Where its chunks are (a root of the server's store, or the server itself over the network).
    store: Arc<dyn ChunkStore>,
    /// The record of the chunks its mount's reads touch first, if kept.
    start: Option<Arc<Start>>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image").field("id", &self.id).field("bytes", &self.bytes()).finish_non_exhaustive()
    }
}

impl Image {
    /// Opens `manifest` with `key`: refused if it does not authenticate.
    pub(crate) fn open(
        id: &str,
        manifest: Manifest,
        key: &AccountKey,
        store: Arc<dyn ChunkStore>,
    ) -> Result<Image, ManifestError> {
        let manifest = OpenedManifest::try_new(manifest, |m| m.open(key))?;
        Ok(Image { id: id.to_string(), manifest, store, start: None })
    }

    /// The image, recording its start into `start`.
    pub(crate) fn recording(self, start: Arc<Start>) -> Image {
        Image { start: Some(start), ..self }
    }

    pub(crate) fn chunk_count(&self) -> usize {
        self.manifest.borrow_owner().chunks().len()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.manifest.borrow_owner().image_bytes()
    }

    fn opened(&self) -> &Opened<'_> {
        self.manifest.borrow_dependent()
    }
}

/// A cached chunk's identity: its stored name and its plaintext's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    name: ChunkDigest,
    plaintext: [u8; 32],
}

/// Why a chunk could not be had; every one answers `EIO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Missing from the store, or the store failed.
    Fetch,
    /// Its bytes did not verify (corrupt in the store, or not the plaintext its manifest names).
    Verify,
}

type Flight = OnceCell<Result<Bytes, Failure>>;

/// Where the bytes of one chunk's part of a read come from.
enum Source {
    Zero,
    File(File),
    Bytes(Bytes),
}

/// One chunk's part of a read: `len` bytes from `start` within the chunk.
struct Piece {
    source: Option<Source>,
    start: u64,
    len: usize,
}

/// The counters behind [`crate::Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) fetches: AtomicU64,
    pub(crate) fetch_bytes: AtomicU64,
    pub(crate) memory_hits: AtomicU64,
    pub(crate) disk_hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) prefetched: AtomicU64,
    pub(crate) verify_failures: AtomicU64,
    pub(crate) fetch_failures: AtomicU64,
}

struct State {
    /// The memory tier: its index and its chunks.
    memory: Box<dyn Eviction<Key>>,
    held: HashMap<Key, Bytes>,
    /// The disk tier's index (its files are in the cache directory).
    disk: Box<dyn Eviction<Key>>,
    flights: HashMap<Key, Arc<Flight>>,
}

/// What every mounted image of one [`crate::ImageFs`] shares: the cache, the fetch slots, the counters.
pub(crate) struct Shared {
    pub(crate) runtime: Handle,
    fetch_slots: Arc<Semaphore>,
    /// How many of a start record's chunks are fetched at once: as many as there are cores, so that the chunks a
    /// start needs first are not slowed by those it needs later.
    prefetch_slots: Arc<Semaphore>,
    dir: PathBuf,
    state: Mutex<State>,
    temp: AtomicU64,
    pub(crate) counters: Counters,
}

impl Shared {
    pub(crate) fn new(runtime: Handle, dir: &Path, config: &crate::ImageFsConfig) -> Shared {
        let state = State {
            memory: config.eviction.build(config.memory_bytes),
            held: HashMap::new(),
            disk: config.eviction.build(config.disk_bytes),
            flights: HashMap::new(),
        };
        Shared {
            runtime,
            fetch_slots: Arc::new(Semaphore::new(config.max_fetches.max(1))),
            prefetch_slots: Arc::new(Semaphore::new(config.max_prefetches.max(1))),
            dir: dir.to_owned(),
            state: Mutex::new(state),
            temp: AtomicU64::new(0),
            counters: Counters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock(&self.state)
    }

    /// The bytes the cached chunks take: in memory, on disk.
    pub(crate) fn cache_bytes(&self) -> (u64, u64) {
        let state = self.lock();
        (state.memory.used(), state.disk.used())
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{}-{}", key.name, hex::encode(key.plaintext)))
    }

    /// Answers the read of `size` bytes at `offset` of `image` through `reply`, now or from the runtime.
    pub(crate) fn read(self: &Arc<Self>, image: Arc<Image>, offset: u64, size: u32, reply: ReplyData) {
        let manifest = image.opened().manifest();
        let end = offset.saturating_add(u64::from(size)).min(manifest.image_bytes());
        if offset >= end {
            return reply.data(&[]);
        }
        let chunk_bytes = u64::from(manifest.chunk_bytes());
        let mut pieces = Vec::new();
        let mut waits = Vec::new();
        for index in offset / chunk_bytes..=(end - 1) / chunk_bytes {
            let chunk_start = index * chunk_bytes;
            let start = offset.max(chunk_start) - chunk_start;
            let len = (end.min(chunk_start + chunk_bytes) - chunk_start - start) as usize;
            if let Some(record) = &image.start {
                record.touch(index as usize);
            }
            let source = match self.lookup(&image, index as usize, true) {
                Ok(source) => Some(source),
                Err(flight) => {
                    waits.push((pieces.len(), index as usize, flight));
                    None
                }
            };
            pieces.push(Piece { source, start, len });
        }
        if waits.is_empty() {
            return answer(assemble(pieces), reply);
        }
        let shared = self.clone();
        self.runtime.spawn(async move {
            // Every flight is awaited, also after a failure: a flight this read started is always flown.
            let mut failed = false;
            for (at, index, flight) in waits {
                match flight.get_or_init(|| shared.clone().fetch(image.clone(), index)).await {
                    Ok(bytes) => pieces[at].source = Some(Source::Bytes(bytes.clone())),
                    Err(_) => failed = true,
                }
            }
            if failed {
                return reply.error(Errno::EIO);
            }
            match tokio::task::spawn_blocking(move || assemble(pieces)).await {
                Ok(assembled) => answer(assembled, reply),
                Err(_) => reply.error(Errno::EIO),
            }
        });
    }

    /// Starts fetching `chunks` of `image` (indexes below its chunk count), in their order, through the flights
    /// and fetch slots reads use: a read of one joins its flight. Chunks zero, cached or in flight are skipped; the
    /// chunks fetched this way are counted.
    pub(crate) fn prefetch(self: &Arc<Self>, image: &Arc<Image>, chunks: Vec<u32>) {
        let (shared, image) = (self.clone(), image.clone());
        self.runtime.spawn(async move {
            for index in chunks {
                // In the record's order, a few at once (the semaphore is never closed).
                let Ok(slot) = shared.prefetch_slots.clone().acquire_owned().await else { return };
                let index = index as usize;
                let Err(flight) = shared.lookup(&image, index, false) else { continue };
                let (shared, image) = (shared.clone(), image.clone());
                tokio::spawn(async move {
                    let mut fetched = false;
                    let fetch = || {
                        fetched = true;
                        shared.clone().fetch(image, index)
                    };
                    let _ = flight.get_or_init(fetch).await;
                    if fetched {
                        shared.counters.prefetched.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(slot);
                });
            }
        });
    }

    /// Fetches (unless cached) the chunks an erofs mount of `image` reads: the superblock's, then the root inode's
    /// (found from the superblock; the image is Ignis's own erofs layout, see `ignis_images::erofs`).
    pub(crate) async fn before_mount(self: Arc<Self>, image: Arc<Image>) -> io::Result<()> {
        let first = self.chunk(&image, 0).await?;
        let chunk_bytes = u64::from(image.opened().manifest().chunk_bytes());
        if let Some(root) = root_inode_offset(&first).map(|at| at / chunk_bytes).filter(|&i| i != 0) {
            self.chunk(&image, root as usize).await?;
        }
        Ok(())
    }

    /// The plaintext of chunk `index` of `image`, cached or fetched (not counted as a read's).
    async fn chunk(self: &Arc<Self>, image: &Arc<Image>, index: usize) -> io::Result<Bytes> {
        let failed = |what: &str| io::Error::other(format!("chunk {index}, which the mount reads, {what}"));
        let source = match self.lookup(image, index, false) {
            Ok(source) => source,
            Err(flight) => match flight.get_or_init(|| self.clone().fetch(image.clone(), index)).await {
                Ok(bytes) => Source::Bytes(bytes.clone()),
                Err(Failure::Fetch) => return Err(failed("could not be fetched")),
                Err(Failure::Verify) => return Err(failed("did not verify")),
            },
        };
        match source {
            Source::Bytes(bytes) => Ok(bytes),
            Source::Zero => Ok(Bytes::new()),
            Source::File(file) => tokio::task::spawn_blocking(move || {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut &file, &mut bytes).map(|_| Bytes::from(bytes))
            })
            .await
            .map_err(io::Error::other)?,
        }
    }

    /// Chunk `index` of `image` if it can be had now (zero, or cached), else the flight that fetches it; counted
    /// (a hit of its tier, or a miss) if `count`.
    fn lookup(&self, image: &Image, index: usize, count: bool) -> Result<Source, Arc<Flight>> {
        let opened = image.opened();
        let (Some(chunk), Some(plaintext)) = (opened.manifest().chunks().get(index), opened.plaintext_id(index))
        else {
            // Not reached: reads are bounded by the image's size, which the chunks cover.
            return Ok(Source::Zero);
        };
        let name = match chunk.name {
            ChunkName::Zero => return Ok(Source::Zero),
            ChunkName::Stored(name) => name,
        };
        let key = Key { name, plaintext };
        let count = |counter: &AtomicU64| {
            if count {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        };
        let mut state = self.lock();
        if state.memory.touch(&key)
            && let Some(bytes) = state.held.get(&key)
        {
            count(&self.counters.memory_hits);
            return Ok(Source::Bytes(bytes.clone()));
        }
        if state.disk.touch(&key) {
            match File::open(self.path(&key)) {
                Ok(file) => {
                    count(&self.counters.disk_hits);
                    return Ok(Source::File(file));
                }
                Err(e) => {
                    tracing::warn!(error = %e, chunk = %name, "a cached chunk's file cannot be opened; fetching it again");
                    state.disk.remove(&key);
                }
            }
        }
        count(&self.counters.misses);
        Err(state.flights.entry(key).or_default().clone())
    }

    /// Fetches chunk `index` of `image` (waiting for a fetch slot), keeps it in the cache and ends its flight.
    async fn fetch(self: Arc<Self>, image: Arc<Image>, index: usize) -> Result<Bytes, Failure> {
        let opened = image.opened();
        let (Some(chunk), Some(plaintext)) = (opened.manifest().chunks().get(index), opened.plaintext_id(index))
        else {
            return Err(Failure::Fetch);
        };
        let ChunkName::Stored(name) = chunk.name else { return Ok(Bytes::from(vec![0; chunk.len as usize])) };
        let key = Key { name, plaintext };
        // Held until the chunk is also on disk (see "Bounded"); the semaphore is never closed.
        let Ok(slot) = self.fetch_slots.clone().acquire_owned().await else { return Err(Failure::Fetch) };
        self.counters.fetches.fetch_add(1, Ordering::Relaxed);
        let bytes = match opened.read_chunk(index, &*image.store).await {
            Ok(bytes) => bytes,
            Err(e) => {
                let (failure, counter) = match e {
                    ReadError::Corrupt { .. } | ReadError::WrongPlaintext { .. } => {
                        (Failure::Verify, &self.counters.verify_failures)
                    }
                    _ => (Failure::Fetch, &self.counters.fetch_failures),
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(image = %image.id, chunk = index, error = %e, "an image chunk could not be read");
                self.end_flight(&key);
                return Err(failure);
            }
        };
        self.counters.fetch_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let in_memory = self.keep_in_memory(key, &bytes);
        let (shared, kept) = (self.clone(), bytes.clone());
        let write = tokio::task::spawn_blocking(move || {
            shared.keep_on_disk(key, &kept, !in_memory);
            drop(slot);
        });
        if !in_memory && write.await.is_err() {
            self.end_flight(&key);
        }
        Ok(bytes)
    }

    /// Puts a fetched chunk into the memory tier (if it fits) and then ends its flight, in one step under the lock;
    /// whether it is there.
    fn keep_in_memory(&self, key: Key, bytes: &Bytes) -> bool {
        let mut state = self.lock();
        let kept = match state.memory.admit(key, bytes.len() as u64) {
            Admission::Admitted { evicted } => {
                for gone in evicted {
                    state.held.remove(&gone);
                }
                state.held.insert(key, bytes.clone());
                true
            }
            Admission::Present => true,
            Admission::TooLarge => false,
        };
        if kept {
            state.flights.remove(&key);
        }
        kept
    }

    /// Writes a fetched chunk into the disk tier (if it fits; a failure only costs a later fetch), ending its
    /// flight under the same lock if `end_flight`.
    fn keep_on_disk(&self, key: Key, bytes: &Bytes, end_flight: bool) {
        let temp = self.dir.join(format!("tmp.{}", self.temp.fetch_add(1, Ordering::Relaxed)));
        let written = match std::fs::write(&temp, bytes) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "writing a chunk into the image cache");
                false
            }
        };
        let mut state = self.lock();
        let renamed = written
            && match state.disk.admit(key, bytes.len() as u64) {
                Admission::Admitted { evicted } => {
                    for gone in evicted {
                        let _ = std::fs::remove_file(self.path(&gone));
                    }
                    let renamed = std::fs::rename(&temp, self.path(&key));
                    if let Err(e) = &renamed {
                        tracing::warn!(error = %e, "renaming a chunk into the image cache");
                        state.disk.remove(&key);
                    }
                    renamed.is_ok()
                }
                Admission::Present | Admission::TooLarge => false,
            };
        if !renamed {
            let _ = std::fs::remove_file(&temp);
        }
        if end_flight {
            state.flights.remove(&key);
        }
    }

    fn end_flight(&self, key: &Key) {
        self.lock().flights.remove(key);
    }
}

/// Where the root inode of the erofs image whose first chunk is `first` starts (superblock at byte 1024:
/// `blkszbits` at 12, `root_nid` at 14, `meta_blkaddr` at 40; inodes are 32-byte slots from the metadata block).
fn root_inode_offset(first: &[u8]) -> Option<u64> {
    let sb = first.get(1024..1024 + 44)?;
    let magic = u32::from_le_bytes(sb[0..4].try_into().ok()?);
    let bits = u32::from(sb[12]);
    let root_nid = u64::from(u16::from_le_bytes(sb[14..16].try_into().ok()?));
    let meta = u64::from(u32::from_le_bytes(sb[40..44].try_into().ok()?));
    (magic == 0xE0F5_E1E2 && (9..=16).contains(&bits)).then(|| (meta << bits) + root_nid * 32)
}

/// The bytes of a read, in order.
fn assemble(pieces: Vec<Piece>) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(pieces.iter().map(|p| p.len).sum());
    for piece in pieces {
        let at = out.len();
        out.resize(at + piece.len, 0);
        match piece.source {
            Some(Source::Zero) => {}
            Some(Source::File(file)) => file.read_exact_at(&mut out[at..], piece.start)?,
            Some(Source::Bytes(bytes)) => {
                let start = piece.start as usize;
                let part = bytes.get(start..start + piece.len).ok_or(io::ErrorKind::UnexpectedEof)?;
                out[at..].copy_from_slice(part);
            }
            None => return Err(io::ErrorKind::NotFound.into()),
        }
    }
    Ok(out)
}

fn answer(assembled: io::Result<Vec<u8>>, reply: ReplyData) {
    match assembled {
        Ok(bytes) => reply.data(&bytes),
        Err(e) => {
            tracing::warn!(error = %e, "assembling an image read");
            reply.error(Errno::EIO)
        }
    }
}

/// Empties `dir` (making it if absent): the cache starts empty.
pub(crate) fn empty_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        match entry.file_type()?.is_dir() {
            true => std::fs::remove_dir_all(entry.path())?,
            false => std::fs::remove_file(entry.path())?,
        }
    }
    Ok(())
}
