//! A cache node's stripes: a memory tier, then a disk tier, each bounded in bytes.
//!
//! A stripe is opaque bytes under a [`Key`] (chunk digest, stripe index). It lives in one tier at a time:
//!
//! ```text
//!  put ──► memory ──evicted──► disk (if it fits) ──evicted──► gone
//!   └── larger than the memory budget ──► disk
//! ```
//!
//! Each tier's index is an LRU-K policy (K = 2) over the stripes' lengths; a put replaces what the key held.
//! A hit touches the stripe in its tier; a disk hit stays on disk.
//!
//! # Invariants
//! - Each tier's bytes (the policies' `used`) stay within its budget; besides them only the stripes being
//!   written to disk are held in memory (in `writing`, until their write ends: one put's worth each).
//! - Disk files are `{digest hex}-{index}-{generation}` under the data directory, which [`Tiers::open`]
//!   empties. A key's file is registered (in `on_disk`) with a generation that no other write uses, so a
//!   late delete of an evicted or replaced version never removes a newer one; a write that ends after its
//!   version was evicted removes its own file.
//! - One mutex over the indexes, never held across an await or any IO; file IO runs on blocking threads.
//! - A failed disk write (ENOSPC above all) drops that stripe from the disk index and is reported to the
//!   put that caused it ([`StoreError::Full`]); the node goes on serving.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use ignis_chunks::ChunkDigest;

use ignis_cachepolicy::{Admission, Eviction, LruK};

/// A stripe's name: its chunk and its index.
pub(crate) type Key = (ChunkDigest, u8);

/// Why a put stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stripe fits neither tier's budget, or the disk is full.
    #[error("no room for the stripe: {0}")]
    Full(String),
    /// The disk failed otherwise.
    #[error("disk: {0}")]
    Io(#[from] std::io::Error),
}

/// What a node holds, and what it refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub memory_bytes: u64,
    pub memory_stripes: u64,
    pub disk_bytes: u64,
    pub disk_stripes: u64,
    /// Disk writes that failed (a full disk, or another error): those stripes were dropped.
    pub disk_write_failures: u64,
}

#[derive(Debug)]
struct State {
    memory: LruK<Key>,
    in_memory: HashMap<Key, Bytes>,
    disk: LruK<Key>,
    /// Key → generation of its file.
    on_disk: HashMap<Key, u64>,
    /// Stripes whose file is being written: key → (generation, bytes).
    writing: HashMap<Key, (u64, Bytes)>,
    generation: u64,
}

/// A file to write or remove, decided under the lock and done outside it.
#[derive(Debug)]
struct Write {
    key: Key,
    generation: u64,
    bytes: Bytes,
}

#[derive(Debug)]
pub(crate) struct Tiers {
    dir: PathBuf,
    state: Mutex<State>,
    disk_write_failures: AtomicU64,
}

impl Tiers {
    /// Tiers of these budgets, their files under `dir`, which is emptied (and made if absent). Blocking.
    pub(crate) fn open(dir: &Path, memory_bytes: u64, disk_bytes: u64) -> std::io::Result<Tiers> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            match path.is_dir() {
                true => std::fs::remove_dir_all(&path)?,
                false => std::fs::remove_file(&path)?,
            }
        }
        let state = State {
            memory: LruK::lru2(memory_bytes),
            in_memory: HashMap::new(),
            disk: LruK::lru2(disk_bytes),
            on_disk: HashMap::new(),
            writing: HashMap::new(),
            generation: 0,
        };
        Ok(Tiers { dir: dir.to_path_buf(), state: Mutex::new(state), disk_write_failures: AtomicU64::new(0) })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, key: &Key, generation: u64) -> PathBuf {
        self.dir.join(format!("{}-{}-{generation}", key.0, key.1))
    }

    pub(crate) fn stats(&self) -> NodeStats {
        let state = self.state();
        NodeStats {
            memory_bytes: state.memory.used(),
            memory_stripes: state.in_memory.len() as u64,
            disk_bytes: state.disk.used(),
            disk_stripes: state.on_disk.len() as u64,
            disk_write_failures: self.disk_write_failures.load(Ordering::Relaxed),
        }
    }

    /// The stripe under `key`, if held.
    pub(crate) async fn get(&self, key: Key) -> Result<Option<Bytes>, StoreError> {
        let path = {
            let mut state = self.state();
            if state.memory.touch(&key)
                && let Some(bytes) = state.in_memory.get(&key)
            {
                return Ok(Some(bytes.clone()));
            }
            if !state.disk.touch(&key) {
                return Ok(None);
            }
            if let Some((_, bytes)) = state.writing.get(&key) {
                return Ok(Some(bytes.clone()));
            }
            match state.on_disk.get(&key) {
                Some(generation) => self.path(&key, *generation),
                None => return Ok(None),
            }
        };
        let read = blocking(move || std::fs::read(&path)).await;
        match read {
            Ok(bytes) => Ok(Some(bytes.into())),
            // Evicted or replaced since: a miss.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io(e)),
        }
    }

    /// Stores `bytes` under `key`, replacing what it held; answers once its own write (if it went to disk)
    /// and the writes of the stripes it pushed out of memory have ended.
    pub(crate) async fn put(&self, key: Key, bytes: Bytes) -> Result<(), StoreError> {
        let len = bytes.len() as u64;
        let (writes, removals, own) = {
            let mut state = self.state();
            let mut removals = Vec::new();
            state.memory.remove(&key);
            state.in_memory.remove(&key);
            state.disk.remove(&key);
            state.writing.remove(&key);
            if let Some(generation) = state.on_disk.remove(&key) {
                removals.push(self.path(&key, generation));
            }
            let mut to_disk = Vec::new();
            let mut own = false;
            match state.memory.admit(key, len) {
                Admission::Admitted { evicted } => {
                    state.in_memory.insert(key, bytes);
                    for old in evicted {
                        if let Some(old_bytes) = state.in_memory.remove(&old) {
                            to_disk.push((old, old_bytes));
                        }
                    }
                }
                Admission::Present => {}
                Admission::TooLarge => {
                    own = true;
                    to_disk.push((key, bytes));
                }
            }
            let mut writes = Vec::new();
            for (k, b) in to_disk {
                match state.disk.admit(k, b.len() as u64) {
                    Admission::Admitted { evicted } => {
                        for old in evicted {
                            state.writing.remove(&old);
                            if let Some(generation) = state.on_disk.remove(&old) {
                                removals.push(self.path(&old, generation));
                            }
                        }
                        state.generation += 1;
                        let generation = state.generation;
                        state.on_disk.insert(k, generation);
                        state.writing.insert(k, (generation, b.clone()));
                        writes.push(Write { key: k, generation, bytes: b });
                    }
                    Admission::Present => {}
                    Admission::TooLarge if k == key => {
                        return Err(StoreError::Full(format!("a stripe of {len} bytes fits neither tier")));
                    }
                    // A stripe pushed out of memory that the disk cannot take: dropped.
                    Admission::TooLarge => {}
                }
            }
            (writes, removals, own)
        };
        if !removals.is_empty() {
            // Best effort: a file left behind is emptied with the directory at the next start.
            let _ = blocking(move || {
                for path in removals {
                    let _ = std::fs::remove_file(path);
                }
                Ok(())
            })
            .await;
        }
        let mut own_result = Ok(());
        for write in writes {
            let result = self.write(&write).await;
            if write.key == key && own {
                own_result = result;
            }
        }
        own_result
    }

    /// Writes one file and registers the outcome.
    async fn write(&self, write: &Write) -> Result<(), StoreError> {
        let path = self.path(&write.key, write.generation);
        let bytes = write.bytes.clone();
        let target = path.clone();
        let written = blocking(move || {
            let result = std::fs::write(&target, &bytes);
            if result.is_err() {
                let _ = std::fs::remove_file(&target);
            }
            result
        })
        .await;
        let still_ours = {
            let mut state = self.state();
            let ours = state.on_disk.get(&write.key) == Some(&write.generation);
            if state.writing.get(&write.key).is_some_and(|(g, _)| *g == write.generation) {
                state.writing.remove(&write.key);
            }
            if ours && written.is_err() {
                state.on_disk.remove(&write.key);
                state.disk.remove(&write.key);
            }
            ours
        };
        match written {
            Ok(()) if still_ours => Ok(()),
            // Evicted or replaced while being written: its file goes.
            Ok(()) => {
                let _ = blocking(move || std::fs::remove_file(&path)).await;
                Ok(())
            }
            Err(e) => {
                self.disk_write_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %path.display(), error = %e, "a stripe could not be written to disk");
                match e.kind() {
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                        Err(StoreError::Full(format!("disk full: {e}")))
                    }
                    _ => Err(StoreError::Io(e)),
                }
            }
        }
    }
}

/// Runs blocking file IO on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    io: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(io).await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8, index: u8) -> Key {
        (ChunkDigest::of(&[n]), index)
    }

    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir).expect("read dir").count()
    }

    #[tokio::test]
    async fn stripes_move_from_memory_to_disk_and_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("left-over"), b"x").expect("write");
        let tiers = Tiers::open(dir.path(), 20, 30).expect("open");
        assert_eq!(files(dir.path()), 0, "emptied at start");
        for n in 0..5 {
            tiers.put(key(n, 0), Bytes::from(vec![n; 10])).await.expect("put");
        }
        // 2 in memory, 3 on disk.
        let stats = tiers.stats();
        assert_eq!((stats.memory_stripes, stats.memory_bytes, stats.disk_stripes, stats.disk_bytes), (2, 20, 3, 30));
        assert_eq!(files(dir.path()), 3);
        for n in 0..5 {
            assert_eq!(tiers.get(key(n, 0)).await.expect("get"), Some(Bytes::from(vec![n; 10])), "{n}");
        }
        assert_eq!(tiers.get(key(0, 1)).await.expect("get"), None);
        // Two more: the two oldest on disk go.
        for n in 5..7 {
            tiers.put(key(n, 0), Bytes::from(vec![n; 10])).await.expect("put");
        }
        let stats = tiers.stats();
        assert_eq!((stats.memory_stripes, stats.disk_stripes, stats.disk_bytes), (2, 3, 30));
        assert_eq!(files(dir.path()), 3);
        let held = futures::future::join_all((0..7).map(|n| tiers.get(key(n, 0)))).await;
        assert_eq!(held.iter().filter(|h| matches!(h, Ok(Some(_)))).count(), 5);
    }

    #[tokio::test]
    async fn a_scan_does_not_push_stripes_read_twice_out_of_memory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tiers = Tiers::open(dir.path(), 30, 1000).expect("open");
        for n in 0..2 {
            tiers.put(key(n, 0), Bytes::from(vec![n; 10])).await.expect("put");
            assert!(tiers.get(key(n, 0)).await.expect("get").is_some());
        }
        // Stripes put once each, more than memory holds: they push each other out, not the two read again.
        for n in 10..20 {
            tiers.put(key(n, 0), Bytes::from(vec![n; 10])).await.expect("put");
        }
        let in_memory = |n: u8| tiers.state().in_memory.contains_key(&key(n, 0));
        assert!(in_memory(0) && in_memory(1) && in_memory(19));
        assert_eq!(tiers.stats().memory_stripes, 3);
        // The scanned ones went to disk.
        assert_eq!(tiers.stats().disk_stripes, 9);
        assert_eq!(tiers.get(key(10, 0)).await.expect("get"), Some(Bytes::from(vec![10; 10])));
    }

    #[tokio::test]
    async fn a_put_replaces_and_what_fits_nowhere_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tiers = Tiers::open(dir.path(), 10, 10).expect("open");
        tiers.put(key(1, 0), Bytes::from_static(b"first")).await.expect("put");
        tiers.put(key(1, 0), Bytes::from_static(b"second")).await.expect("put");
        assert_eq!(tiers.get(key(1, 0)).await.expect("get"), Some(Bytes::from_static(b"second")));
        assert!(matches!(tiers.put(key(2, 0), Bytes::from(vec![0; 11])).await, Err(StoreError::Full(_))));
        // Memory full of one, a second pushes it to disk; replacing the one on disk removes its file.
        tiers.put(key(3, 0), Bytes::from(vec![3; 10])).await.expect("put");
        assert_eq!(files(dir.path()), 1);
        tiers.put(key(1, 0), Bytes::from(vec![4; 10])).await.expect("put");
        assert_eq!(tiers.get(key(1, 0)).await.expect("get"), Some(Bytes::from(vec![4; 10])));
        assert_eq!(tiers.stats().disk_write_failures, 0);
    }

    #[tokio::test]
    async fn without_memory_stripes_go_straight_to_disk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tiers = Tiers::open(dir.path(), 0, 100).expect("open");
        tiers.put(key(1, 2), Bytes::from_static(b"stripe")).await.expect("put");
        assert_eq!(files(dir.path()), 1);
        assert_eq!(tiers.get(key(1, 2)).await.expect("get"), Some(Bytes::from_static(b"stripe")));
        // A disk that fails (its directory gone): the put is refused, the index forgets the stripe.
        std::fs::remove_dir_all(dir.path()).expect("remove");
        assert!(matches!(tiers.put(key(2, 0), Bytes::from_static(b"x")).await, Err(StoreError::Io(_))));
        assert_eq!(tiers.get(key(2, 0)).await.expect("get"), None);
        assert_eq!(tiers.get(key(1, 2)).await.expect("get"), None);
        assert_eq!(tiers.stats().disk_write_failures, 1);
    }
}
