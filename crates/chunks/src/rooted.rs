//! One chunk store per garbage-collection root (see [`roots`](crate::roots)):
//! [`RootStores`] opens a root's store and deletes a whole root at once.
//!
//! A deleted root is never made again: root ids are never reused, and a store
//! opened while its root is removed (the size of every root measured for the
//! metrics, say) would put an empty root back, or make the removal fail.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::{BoxFuture, ChunkError, ChunkStore, DirectoryChunkStore, MemoryChunkStore};

/// The chunk stores of every root, by root id.
pub trait RootStores: Send + Sync + fmt::Debug {
    /// The store of root `id`, made if new; an error for a root deleted by
    /// this value.
    fn root(&self, id: &str) -> Result<Arc<dyn ChunkStore>, ChunkError>;

    /// Removes root `id` with all its chunks (nothing if it is not there);
    /// from its start, [`RootStores::root`] refuses `id`.
    fn delete_root<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ChunkError>>;
}

/// A root id names a directory or prefix: lowercase hex digits only.
pub fn valid_root_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(crate) fn check(id: &str) -> Result<(), ChunkError> {
    if valid_root_id(id) {
        Ok(())
    } else {
        Err(ChunkError::Io {
            what: format!("root id {id:?}"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a root id"),
        })
    }
}

/// Roots open and roots deleted, under one lock.
#[derive(Debug)]
struct Known<S> {
    open: HashMap<String, Arc<S>>,
    deleted: HashSet<String>,
}

impl<S> Default for Known<S> {
    fn default() -> Self {
        Known { open: HashMap::new(), deleted: HashSet::new() }
    }
}

impl<S> Known<S> {
    /// Root `id`'s store, opened by `open` if it is not yet; refused if the root was deleted.
    fn root(&mut self, id: &str, open: impl FnOnce() -> Result<S, ChunkError>) -> Result<Arc<S>, ChunkError> {
        check(id)?;
        if self.deleted.contains(id) {
            return Err(ChunkError::Io {
                what: format!("root {id}"),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "the root was deleted"),
            });
        }
        if let Some(store) = self.open.get(id) {
            return Ok(store.clone());
        }
        let store = Arc::new(open()?);
        self.open.insert(id.to_string(), store.clone());
        Ok(store)
    }

    /// Forgets root `id`'s store and refuses it from now on.
    fn delete(&mut self, id: &str) -> Result<(), ChunkError> {
        check(id)?;
        self.open.remove(id);
        self.deleted.insert(id.to_string());
        Ok(())
    }
}

/// Roots as subdirectories `<base>/<id>/` of one directory, each a
/// [`DirectoryChunkStore`].
#[derive(Debug)]
pub struct DirectoryRoots {
    base: PathBuf,
    /// Held while a store opens, so a deletion that takes it waits for an open in progress.
    known: Mutex<Known<DirectoryChunkStore>>,
}

impl DirectoryRoots {
    pub fn new(base: impl AsRef<Path>) -> Result<DirectoryRoots, ChunkError> {
        let base = base.as_ref().to_path_buf();
        std::fs::create_dir_all(&base)
            .map_err(ChunkError::io(format!("creating {}", base.display())))?;
        Ok(DirectoryRoots {
            base,
            known: Mutex::default(),
        })
    }
}

impl RootStores for DirectoryRoots {
    fn root(&self, id: &str) -> Result<Arc<dyn ChunkStore>, ChunkError> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        Ok(known.root(id, || DirectoryChunkStore::open(self.base.join(id)))?)
    }

    fn delete_root<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ChunkError>> {
        Box::pin(async move {
            self.known.lock().unwrap_or_else(|e| e.into_inner()).delete(id)?;
            let dir = self.base.join(id);
            let removed = tokio::task::spawn_blocking({
                let dir = dir.clone();
                move || std::fs::remove_dir_all(dir)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            match removed {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(ChunkError::io(format!("removing {}", dir.display()))(e))
                }
                _ => Ok(()),
            }
        })
    }
}

/// Roots in memory, for tests.
#[derive(Debug, Default)]
pub struct MemoryRoots {
    roots: Mutex<Known<MemoryChunkStore>>,
}

impl MemoryRoots {
    /// The store of root `id`, to look into or tamper with.
    pub fn store(&self, id: &str) -> Option<Arc<MemoryChunkStore>> {
        self.roots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .get(id)
            .cloned()
    }
}

impl RootStores for MemoryRoots {
    fn root(&self, id: &str) -> Result<Arc<dyn ChunkStore>, ChunkError> {
        let mut roots = self.roots.lock().unwrap_or_else(|e| e.into_inner());
        Ok(roots.root(id, || Ok(MemoryChunkStore::default()))?)
    }

    fn delete_root<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ChunkError>> {
        Box::pin(async move { self.roots.lock().unwrap_or_else(|e| e.into_inner()).delete(id) })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn root_ids_are_short_lowercase_hex() {
        assert!(valid_root_id("0123456789abcdef"));
        for bad in ["", "../x", "ABC", "a/b", ".", &"a".repeat(65)] {
            assert!(!valid_root_id(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn each_root_is_its_own_store_and_goes_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let roots = DirectoryRoots::new(tmp.path()).unwrap();
        let (a, b) = (roots.root("aa").unwrap(), roots.root("bb").unwrap());
        let stored = a.put(Bytes::from_static(b"chunk")).await.unwrap();
        assert!(!b.has(stored.digest).await.unwrap());
        assert!(roots.root("aa").unwrap().has(stored.digest).await.unwrap());
        assert!(roots.root("../aa").is_err());
        roots.delete_root("aa").await.unwrap();
        assert!(!tmp.path().join("aa").exists());
        roots.delete_root("cc").await.unwrap();
        // A deleted root is not made again (an open of it while it is removed would put it back).
        assert!(roots.root("aa").is_err() && roots.root("cc").is_err());
        assert!(!tmp.path().join("aa").exists() && !tmp.path().join("cc").exists());
        assert!(roots.root("bb").unwrap().has(stored.digest).await.is_ok());
        let memory = MemoryRoots::default();
        memory.root("aa").unwrap();
        memory.delete_root("aa").await.unwrap();
        assert!(memory.root("aa").is_err() && memory.store("aa").is_none());
    }
}
