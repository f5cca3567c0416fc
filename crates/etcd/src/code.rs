//! [`CodeShare`]: code trees shared between front ends through the object
//! store.
//!
//! A front end that stores a record whose trees (its code, its merged
//! layers) only it has first ships them: each tree zipped ([`zip_tree`]:
//! stable, so the same tree gives the same zip), cut into chunks of the chunk
//! store (content-addressed, stored once however many trees share them) and
//! named by a key `code/<tree>` in etcd that lists them ([`Shipped`]). A front
//! end that lacks a tree a record names fetches the chunks, checks the zip
//! against its SHA-256 and unpacks it under the tree's own name
//! (`Store::put_code_named`), so the record's `code_sha256_hex` means the
//! same tree on every node.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use etcd_client::GetOptions;
use ignis_chunks::{CHUNK_BYTES, ChunkDigest, ChunkStore};
use ignis_registry::FunctionRecord;
use ignis_store::{CodeHold, CodeRules, Store, zip_tree};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Etcd, EtcdError, key};

/// Where a shipped tree's zip is: the value of `code/<tree>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipped {
    /// Hex SHA-256 of the zip.
    pub sha256: String,
    /// The zip's length in bytes.
    pub size: u64,
    /// The zip's chunks, in order, by digest.
    pub chunks: Vec<String>,
}

/// Ships code trees to the object store and fetches them from it.
pub struct CodeShare {
    etcd: Etcd,
    store: Arc<Store>,
    chunks: Arc<dyn ChunkStore>,
    /// Trees known to be shipped (so a write ships each at most once per process).
    shipped: Mutex<HashSet<String>>,
}

/// The trees `record` and its versions name: a zip function's code and the merged layers.
pub fn trees(record: &FunctionRecord) -> Vec<String> {
    let mut names: Vec<String> = ignis_registry::live_code(std::iter::once(record)).into_iter().collect();
    names.sort();
    names
}

fn code_key(tree: &str) -> String {
    key(&format!("code/{tree}"))
}

fn object_store(e: impl std::fmt::Display) -> EtcdError {
    EtcdError::Unavailable(format!("the object store: {e}"))
}

impl CodeShare {
    /// Ships to and fetches from `chunks` (the object store's root for code), naming trees in `etcd`.
    pub fn new(etcd: Etcd, store: Arc<Store>, chunks: Arc<dyn ChunkStore>) -> CodeShare {
        CodeShare { etcd, store, chunks, shipped: Mutex::default() }
    }

    fn known(&self, tree: &str) -> bool {
        self.shipped.lock().unwrap_or_else(|e| e.into_inner()).contains(tree)
    }

    /// Ships every tree `record` names that is not shipped yet (each must be on this node's disk).
    pub async fn ship_record(&self, record: &FunctionRecord) -> Result<(), EtcdError> {
        for tree in trees(record) {
            self.ship(&tree).await?;
        }
        Ok(())
    }

    /// Ships the tree `tree` from this node's disk, unless it is shipped already.
    pub async fn ship(&self, tree: &str) -> Result<(), EtcdError> {
        if self.known(tree) {
            return Ok(());
        }
        let at = self.etcd.get(&code_key(tree), Some(GetOptions::new().with_count_only())).await?;
        if at.count() == 0 {
            let dir = self.store.code_dir(tree);
            let zip = tokio::task::spawn_blocking(move || zip_tree(&dir))
                .await
                .map_err(|e| EtcdError::Unavailable(e.to_string()))?
                .map_err(|e| EtcdError::Unavailable(format!("cannot ship code tree {tree}: {e}")))?;
            let mut chunks = Vec::with_capacity(zip.len().div_ceil(CHUNK_BYTES));
            for piece in zip.chunks(CHUNK_BYTES) {
                let stored = self.chunks.put(Bytes::copy_from_slice(piece)).await.map_err(object_store)?;
                chunks.push(stored.digest.to_string());
            }
            let shipped = Shipped { sha256: hex::encode(Sha256::digest(&zip)), size: zip.len() as u64, chunks };
            let value = serde_json::to_vec(&shipped).map_err(|e| EtcdError::Unavailable(e.to_string()))?;
            self.etcd.put(&code_key(tree), value, None).await?;
        }
        self.shipped.lock().unwrap_or_else(|e| e.into_inner()).insert(tree.to_string());
        Ok(())
    }

    /// Makes sure every tree `record` names is on this node's disk, fetching those that are not; the holds
    /// keep them there until the record holds them itself.
    pub async fn fetch_record(&self, record: &FunctionRecord) -> Result<Vec<CodeHold>, EtcdError> {
        let mut holds = Vec::new();
        for tree in trees(record) {
            holds.push(self.fetch(&tree).await?);
        }
        Ok(holds)
    }

    /// A hold of the tree `tree`, fetched from the object store unless it is on this node's disk.
    pub async fn fetch(&self, tree: &str) -> Result<CodeHold, EtcdError> {
        let hold = self.store.hold_code(tree);
        if self.store.has_code(tree) {
            return Ok(hold);
        }
        let name = code_key(tree);
        let got = self.etcd.get(&name, None).await?;
        let Some(kv) = got.kvs().first() else {
            return Err(EtcdError::Unavailable(format!("code tree {tree} was never shipped to the object store")));
        };
        let corrupt = |reason: String| EtcdError::Corrupt { key: name.clone(), reason };
        let shipped: Shipped = serde_json::from_slice(kv.value()).map_err(|e| corrupt(e.to_string()))?;
        let mut zip = Vec::with_capacity(usize::try_from(shipped.size).unwrap_or(0).min(256 << 20));
        for digest in &shipped.chunks {
            let digest: ChunkDigest = digest.parse().map_err(|_| corrupt(format!("{digest:?} is not a chunk digest")))?;
            zip.extend_from_slice(&self.chunks.get(digest).await.map_err(object_store)?);
        }
        if zip.len() as u64 != shipped.size || hex::encode(Sha256::digest(&zip)) != shipped.sha256 {
            return Err(corrupt("the chunks do not make the zip it names".into()));
        }
        let (store, tree_name) = (self.store.clone(), tree.to_string());
        tokio::task::spawn_blocking(move || store.put_code_named(&tree_name, &zip, &CodeRules::default()))
            .await
            .map_err(|e| EtcdError::Unavailable(e.to_string()))?
            .map_err(|e| corrupt(format!("cannot unpack it: {e}")))?;
        self.shipped.lock().unwrap_or_else(|e| e.into_inner()).insert(tree.to_string());
        Ok(hold)
    }
}
