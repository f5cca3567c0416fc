//! One chunk store per garbage-collection root (see [`roots`](crate::roots)):
//! [`RootStores`] opens a root's store and deletes a whole root at once.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::{BoxFuture, ChunkError, ChunkStore, DirectoryChunkStore, MemoryChunkStore};

/// The chunk stores of every root, by root id.
pub trait RootStores: Send + Sync + fmt::Debug {
    /// The store of root `id`, made if new.
    fn root(&self, id: &str) -> Result<Arc<dyn ChunkStore>, ChunkError>;

    /// Removes root `id` with all its chunks (nothing if it is not there).
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

/// Roots as subdirectories `<base>/<id>/` of one directory, each a
/// [`DirectoryChunkStore`].
#[derive(Debug)]
pub struct DirectoryRoots {
    base: PathBuf,
    open: Mutex<HashMap<String, Arc<DirectoryChunkStore>>>,
}

impl DirectoryRoots {
    pub fn new(base: impl AsRef<Path>) -> Result<DirectoryRoots, ChunkError> {
        let base = base.as_ref().to_path_buf();
        std::fs::create_dir_all(&base)
            .map_err(ChunkError::io(format!("creating {}", base.display())))?;
        Ok(DirectoryRoots {
            base,
            open: Mutex::default(),
        })
    }
}

impl RootStores for DirectoryRoots {
    fn root(&self, id: &str) -> Result<Arc<dyn ChunkStore>, ChunkError> {
        check(id)?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = open.get(id) {
            return Ok(store.clone());
        }
        let store = Arc::new(DirectoryChunkStore::open(self.base.join(id))?);
        open.insert(id.to_string(), store.clone());
        Ok(store)
    }

    fn delete_root<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ChunkError>> {
        Box::pin(async move {
            check(id)?;
            self.open
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
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
    roots: Mutex<HashMap<String, Arc<MemoryChunkStore>>>,
}

impl MemoryRoots {
    /// The store of root `id`, to look into or tamper with.
    pub fn store(&self, id: &str) -> Option<Arc<MemoryChunkStore>> {
        self.roots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
}

impl RootStores for MemoryRoots {
    fn root(&self, id: &str) -> Result<Arc<dyn ChunkStore>, ChunkError> {
        check(id)?;
        let mut roots = self.roots.lock().unwrap_or_else(|e| e.into_inner());
        Ok(roots.entry(id.to_string()).or_default().clone())
    }

    fn delete_root<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ChunkError>> {
        Box::pin(async move {
            check(id)?;
            self.roots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
            Ok(())
        })
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
        assert!(!roots.root("aa").unwrap().has(stored.digest).await.unwrap());
        roots.delete_root("cc").await.unwrap();
    }
}
