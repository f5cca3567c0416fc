//! [`DirectoryChunkStore`]: chunks as files in a local directory, the
//! embedded default (and a directory several nodes share, such as an NFS
//! mount, for `--object-store file:///PATH`).
//!
//! Layout under the root:
//! ```text
//! 00/ … ff/           one file per chunk: ab/ab12…(64 hex digits), named by its digest,
//!                      under the directory of its first byte (256 directories, as git's objects)
//! tmp/<owner>.lock    held locked (`flock`) by one open store for as long as it is open
//! tmp/<owner>.<n>     a put of that store in flight
//! ```
//!
//! Invariants:
//! - A chunk's file is only ever made by a hard link from a complete,
//!   fsynced temp file, and a link never replaces an existing name: a
//!   chunk's name appears whole or not at all, and concurrent puts of one
//!   chunk (also from other processes) store it once, with exactly one of
//!   them answering `new`. The fan-out directory is fsynced after the link,
//!   before the put answers. (The filesystem must support hard links: every
//!   local Linux filesystem and NFS do.)
//! - Files in the fan-out directories whose names are not a digest starting
//!   with that directory's byte are not chunks: ignored by every call.
//! - Temp files are owned by the open store whose lock file names them. At
//!   open, a store removes the temp files of owners whose lock it can take
//!   (their store is gone: the kernel drops a lock when its process dies,
//!   even by `SIGKILL`), and temp files with no lock file at all; it never
//!   touches those of a store still open. A dropped store removes its lock
//!   file; its name may then be taken again, by a store that first removes
//!   any temp file under that name.
//! - Deletes are not fsynced: a chunk deleted just before a crash may come
//!   back, which garbage collection's next pass handles.
//!
//! Every call runs its filesystem work on tokio's blocking pool (hashing a
//! chunk is also work the async threads should not do); `open` blocks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::{BoxFuture, ChunkDigest, ChunkError, ChunkStore, DEFAULT_MAX_CHUNK_BYTES, NamedChunk, Size, Stored, check_len};

const TMP: &str = "tmp";
const LOCK: &str = ".lock";

#[derive(Debug, Clone)]
pub struct DirectoryChunkStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    max_chunk_bytes: usize,
    /// This store's name in `tmp/`.
    owner: String,
    /// `tmp/<owner>.lock`, locked for as long as this store is open.
    _lock: File,
    /// The number of this store's next temp file.
    next_temp: AtomicU64,
}

impl DirectoryChunkStore {
    /// Opens (creating if needed) the store in `root`, refusing chunks over
    /// [`DEFAULT_MAX_CHUNK_BYTES`], and removes what puts of stores no longer
    /// open left behind.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, ChunkError> {
        Self::open_with_max_chunk_bytes(root, DEFAULT_MAX_CHUNK_BYTES)
    }

    pub fn open_with_max_chunk_bytes(root: impl AsRef<Path>, max_chunk_bytes: usize) -> Result<Self, ChunkError> {
        let root = root.as_ref().to_path_buf();
        let tmp = root.join(TMP);
        fs::create_dir_all(&tmp).map_err(ChunkError::io(format!("create {}", tmp.display())))?;
        let mut created = false;
        for byte in 0..=u8::MAX {
            let dir = root.join(hex::encode([byte]));
            match fs::create_dir(&dir) {
                Ok(()) => created = true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(ChunkError::io(format!("create {}", dir.display()))(e)),
            }
        }
        if created {
            sync_dir(&root)?;
        }
        let (owner, lock) = claim_owner(&tmp)?;
        clean_temp_files(&tmp, &owner)?;
        Ok(Self { inner: Arc::new(Inner { root, max_chunk_bytes, owner, _lock: lock, next_temp: AtomicU64::new(0) }) })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// This store's name in `tmp/`.
    #[cfg(test)]
    pub(crate) fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Runs `work` on the blocking pool with this store's state.
    fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, ChunkError> + Send + 'static,
    ) -> BoxFuture<'_, Result<T, ChunkError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || work(&inner)).await {
                Ok(result) => result,
                Err(e) => match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(e) => Err(ChunkError::io("a blocking task")(io::Error::other(e))),
                },
            }
        })
    }
}

impl Inner {
    fn fan_out(&self, byte: u8) -> PathBuf {
        self.root.join(hex::encode([byte]))
    }

    fn path(&self, digest: &ChunkDigest) -> PathBuf {
        self.fan_out(digest.as_bytes()[0]).join(digest.to_string())
    }

    fn put(&self, named: &NamedChunk) -> Result<Stored, ChunkError> {
        let (chunk, digest) = (named.bytes(), named.digest());
        check_len(chunk, self.max_chunk_bytes)?;
        let path = self.path(&digest);
        if fs::exists(&path).map_err(ChunkError::io(format!("look up {}", path.display())))? {
            return Ok(Stored { digest, new: false });
        }
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let temp = self.root.join(TMP).join(format!("{}.{n}", self.owner));
        let linked = write_synced(&temp, chunk).and_then(|()| match fs::hard_link(&temp, &path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(ChunkError::io(format!("link {} to {}", temp.display(), path.display()))(e)),
        });
        // Left behind only by a crash here; the next open removes it.
        let _ = fs::remove_file(&temp);
        let new = linked?;
        if new {
            sync_dir(&self.fan_out(digest.as_bytes()[0]))?;
        }
        Ok(Stored { digest, new })
    }

    fn get(&self, digest: ChunkDigest) -> Result<Bytes, ChunkError> {
        let bytes = self.get_unverified(digest)?;
        match ChunkDigest::of(&bytes) == digest {
            true => Ok(bytes),
            false => Err(ChunkError::Corrupt(digest)),
        }
    }

    fn get_unverified(&self, digest: ChunkDigest) -> Result<Bytes, ChunkError> {
        let path = self.path(&digest);
        match fs::read(&path) {
            Ok(bytes) => Ok(Bytes::from(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ChunkError::NotFound(digest)),
            Err(e) => Err(ChunkError::io(format!("read {}", path.display()))(e)),
        }
    }

    fn contains(&self, digests: &[ChunkDigest]) -> Result<Vec<bool>, ChunkError> {
        digests
            .iter()
            .map(|d| {
                let path = self.path(d);
                fs::exists(&path).map_err(ChunkError::io(format!("look up {}", path.display())))
            })
            .collect()
    }

    fn delete(&self, digest: ChunkDigest) -> Result<bool, ChunkError> {
        let path = self.path(&digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ChunkError::io(format!("remove {}", path.display()))(e)),
        }
    }

    /// The chunks in the fan-out directory of `byte`, sorted, with their files' metadata.
    fn chunks_under(&self, byte: u8) -> Result<Vec<(ChunkDigest, fs::DirEntry)>, ChunkError> {
        let dir = self.fan_out(byte);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ChunkError::io(format!("list {}", dir.display()))(e)),
        };
        let mut chunks = Vec::new();
        for entry in entries {
            let entry = entry.map_err(ChunkError::io(format!("list {}", dir.display())))?;
            let digest = entry.file_name().to_str().and_then(|name| name.parse::<ChunkDigest>().ok());
            if let Some(digest) = digest.filter(|d| d.as_bytes()[0] == byte) {
                chunks.push((digest, entry));
            }
        }
        chunks.sort_by_key(|(digest, _)| *digest);
        Ok(chunks)
    }

    fn list(&self, after: Option<ChunkDigest>, limit: usize) -> Result<Vec<ChunkDigest>, ChunkError> {
        let mut page = Vec::new();
        let first = after.map_or(0, |d| d.as_bytes()[0]);
        for byte in first..=u8::MAX {
            if page.len() >= limit {
                break;
            }
            let chunks = self.chunks_under(byte)?;
            let later = chunks.into_iter().map(|(d, _)| d).filter(|d| after.is_none_or(|a| *d > a));
            page.extend(later.take(limit - page.len()));
        }
        Ok(page)
    }

    fn size(&self) -> Result<Size, ChunkError> {
        let mut size = Size::default();
        for byte in 0..=u8::MAX {
            for (_, entry) in self.chunks_under(byte)? {
                match entry.metadata() {
                    Ok(metadata) => {
                        size.chunks += 1;
                        size.bytes += metadata.len();
                    }
                    // Deleted since the listing.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ChunkError::io(format!("stat {}", entry.path().display()))(e)),
                }
            }
        }
        Ok(size)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Removed while still locked, so that no other store takes it for a dead owner's.
        let _ = fs::remove_file(self.root.join(TMP).join(format!("{}{LOCK}", self.owner)));
    }
}

impl ChunkStore for DirectoryChunkStore {
    fn put_named(&self, chunk: NamedChunk) -> BoxFuture<'_, Result<Stored, ChunkError>> {
        // Refused before it is handed to the blocking pool.
        if let Err(e) = check_len(chunk.bytes(), self.inner.max_chunk_bytes) {
            return Box::pin(async move { Err(e) });
        }
        self.blocking(move |inner| inner.put(&chunk))
    }

    fn put(&self, chunk: Bytes) -> BoxFuture<'_, Result<Stored, ChunkError>> {
        if let Err(e) = check_len(&chunk, self.inner.max_chunk_bytes) {
            return Box::pin(async move { Err(e) });
        }
        // Named on the blocking pool, not on the caller's thread.
        self.blocking(move |inner| inner.put(&NamedChunk::new(chunk)))
    }

    fn get(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>> {
        self.blocking(move |inner| inner.get(digest))
    }

    fn get_unverified(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>> {
        self.blocking(move |inner| inner.get_unverified(digest))
    }

    fn contains<'a>(&'a self, digests: &'a [ChunkDigest]) -> BoxFuture<'a, Result<Vec<bool>, ChunkError>> {
        let digests = digests.to_vec();
        self.blocking(move |inner| inner.contains(&digests))
    }

    fn delete(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<bool, ChunkError>> {
        self.blocking(move |inner| inner.delete(digest))
    }

    fn list(&self, after: Option<ChunkDigest>, limit: usize) -> BoxFuture<'_, Result<Vec<ChunkDigest>, ChunkError>> {
        self.blocking(move |inner| inner.list(after, limit))
    }

    fn size(&self) -> BoxFuture<'_, Result<Size, ChunkError>> {
        self.blocking(Inner::size)
    }
}

/// Creates `path` (which must not exist) holding `bytes`, fsynced.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ChunkError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(ChunkError::io(format!("create {}", path.display())))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(ChunkError::io(format!("write {}", path.display())))
}

fn sync_dir(dir: &Path) -> Result<(), ChunkError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(ChunkError::io(format!("sync {}", dir.display())))
}

/// A name in `tmp/` no other open store has, with its lock file, locked.
/// The lock file is made before it is locked: a store cleaning up at that
/// moment may take the lock and remove the file, so the name is kept only if
/// the locked file is still the one at its path.
fn claim_owner(tmp: &Path) -> Result<(String, File), ChunkError> {
    let pid = std::process::id();
    for n in 0u64.. {
        let owner = format!("{pid}-{n}");
        let path = tmp.join(format!("{owner}{LOCK}"));
        let file = match OpenOptions::new().read(true).write(true).create_new(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(ChunkError::io(format!("create {}", path.display()))(e)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => continue,
            Err(fs::TryLockError::Error(e)) => return Err(ChunkError::io(format!("lock {}", path.display()))(e)),
        }
        let held = file.metadata().map_err(ChunkError::io(format!("stat {}", path.display())))?;
        let same = fs::metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == (held.dev(), held.ino()));
        if same {
            return Ok((owner, file));
        }
    }
    unreachable!("u64 names run out")
}

/// Removes the temp files of every owner that is gone (whose lock file can
/// be locked, or is missing) and those named for `me`, the caller.
fn clean_temp_files(tmp: &Path, me: &str) -> Result<(), ChunkError> {
    let list = |tmp: &Path| -> Result<Vec<String>, ChunkError> {
        let entries = fs::read_dir(tmp).map_err(ChunkError::io(format!("list {}", tmp.display())))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(ChunkError::io(format!("list {}", tmp.display())))?;
            names.extend(entry.file_name().to_str().map(str::to_string));
        }
        Ok(names)
    };
    let remove = |path: &Path| match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ChunkError::io(format!("remove {}", path.display()))(e)),
        _ => Ok(()),
    };
    let names = list(tmp)?;
    for owner in names.iter().filter_map(|n| n.strip_suffix(LOCK)).filter(|o| *o != me) {
        let path = tmp.join(format!("{owner}{LOCK}"));
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            // Another store cleaned it up meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ChunkError::io(format!("open {}", path.display()))(e)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => continue,
            Err(fs::TryLockError::Error(e)) => return Err(ChunkError::io(format!("lock {}", path.display()))(e)),
        }
        let prefix = format!("{owner}.");
        for name in names.iter().filter(|n| n.starts_with(&prefix) && !n.ends_with(LOCK)) {
            remove(&tmp.join(name))?;
        }
        remove(&path)?;
    }
    // Temp files whose owner's lock file is gone (a cleanup cut short), and
    // any under `me` (left by an earlier store of that name, which has made
    // none since). A live owner's lock file exists from before its first temp
    // file to after its last, so it is looked up now, not in the listing.
    for name in list(tmp)?.iter().filter(|n| !n.ends_with(LOCK)) {
        let owner = name.rsplit_once('.').map_or(name.as_str(), |(owner, _)| owner);
        let lock = tmp.join(format!("{owner}{LOCK}"));
        if owner == me || !fs::exists(&lock).map_err(ChunkError::io(format!("look up {}", lock.display())))? {
            remove(&tmp.join(name))?;
        }
    }
    Ok(())
}
