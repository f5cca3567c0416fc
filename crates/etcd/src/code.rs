//! [`CodeShare`]: code trees shared between front ends through the object
//! store, and collected once nothing uses them.
//!
//! A front end that stores a record whose trees (its code, its merged
//! layers) are not shipped yet first ships them: each tree zipped
//! ([`zip_tree`]), cut into chunks and put in a chunk-store root of its own
//! (a new random root id per shipping), then named by a key `code/<tree>` in
//! etcd ([`Shipped`]: the zip's SHA-256 and size, the root, the chunks), made
//! only where it is absent. A front end that lacks a tree a record names
//! fetches its chunks, checks the zip against its SHA-256 and unpacks it under
//! the tree's own name (`Store::put_code_named`), so the record's
//! `code_sha256_hex` means the same tree on every node.
//!
//! # Collection
//! One front end at a time (the holder of `leaders/code`, under its etcd lease)
//! looks every [`COLLECT_EVERY`] for shipped trees no record and no layer
//! version names; one that stays so for [`GRACE`] is deleted: its key, by a
//! transaction on the modification revision it was seen at, then its root.
//! A record's write touches (puts again) the keys of the trees it names, in the
//! same transaction, which also requires them to exist: a tree named since it
//! was seen is never deleted, and a record never names a deleted one. Roots are
//! never shared between shippings, so deleting one never takes what another
//! shipping of the same tree put. A shipping cut short by a crash leaves its
//! root unnamed (never collected).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use ignis_chunks::{CHUNK_BYTES, ChunkDigest, RootStores};
use ignis_registry::FunctionRecord;
use ignis_store::{CodeHold, CodeRules, Store, zip_tree};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::presence::Presence;
use crate::{Etcd, EtcdError, key};

/// How long a shipped tree nothing names waits before it is collected.
pub const GRACE: Duration = Duration::from_secs(600);
/// How often the collecting front end looks.
pub const COLLECT_EVERY: Duration = Duration::from_secs(60);

/// Where a shipped tree's zip is: the value of `code/<tree>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipped {
    /// Hex SHA-256 of the zip.
    pub sha256: String,
    /// The zip's length in bytes.
    pub size: u64,
    /// The chunk-store root its chunks are in (this shipping's own).
    pub root: String,
    /// The zip's chunks, in order, by digest.
    pub chunks: Vec<String>,
}

/// Ships code trees to the object store, fetches and collects them.
pub struct CodeShare {
    etcd: Etcd,
    store: Arc<Store>,
    roots: Arc<dyn RootStores>,
}

/// The trees `record` and its versions name: a zip function's code and the merged layers.
pub fn trees(record: &FunctionRecord) -> Vec<String> {
    let mut names: Vec<String> = ignis_registry::live_code(std::iter::once(record)).into_iter().collect();
    names.sort();
    names
}

pub(crate) fn code_key(tree: &str) -> String {
    key(&format!("code/{tree}"))
}

fn object_store(e: impl std::fmt::Display) -> EtcdError {
    EtcdError::Unavailable(format!("the object store: {e}"))
}

/// A new random root id (32 hex digits).
fn new_root() -> String {
    let mut bytes = [0u8; 16];
    // The OS's random source failing leaves nothing safe to do.
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    hex::encode(bytes)
}

/// The names of `all` that `referenced` says nothing uses, for [`GRACE`] as `unused` remembers since when (by
/// name, with the revision seen then: a name seen again at another revision starts over); `unused` forgets what is
/// used again or gone. Pure: time is `now_ms`.
pub fn due(
    unused: &mut BTreeMap<String, (u64, i64)>,
    all: &[(String, i64)],
    referenced: impl Fn(&str) -> bool,
    now_ms: u64,
    grace_ms: u64,
) -> Vec<(String, i64)> {
    let present: HashSet<&str> = all.iter().map(|(name, _)| name.as_str()).collect();
    unused.retain(|name, _| present.contains(name.as_str()) && !referenced(name));
    let mut due = Vec::new();
    for (name, revision) in all {
        if referenced(name) {
            continue;
        }
        let since = unused.entry(name.clone()).or_insert((now_ms, *revision));
        if since.1 != *revision {
            *since = (now_ms, *revision);
        }
        if now_ms.saturating_sub(since.0) >= grace_ms {
            due.push((name.clone(), *revision));
        }
    }
    due
}

impl CodeShare {
    /// Ships to and fetches from `roots` (the object store), naming trees in `etcd`.
    pub fn new(etcd: Etcd, store: Arc<Store>, roots: Arc<dyn RootStores>) -> CodeShare {
        CodeShare { etcd, store, roots }
    }

    /// Ships the tree `tree` from this node's disk unless it is shipped already; the value of its key.
    pub async fn ship(&self, tree: &str) -> Result<Vec<u8>, EtcdError> {
        let name = code_key(tree);
        if let Some(kv) = self.etcd.get(&name, None).await?.kvs().first() {
            return Ok(kv.value().to_vec());
        }
        let dir = self.store.code_dir(tree);
        let zip = tokio::task::spawn_blocking(move || zip_tree(&dir))
            .await
            .map_err(|e| EtcdError::Unavailable(e.to_string()))?
            .map_err(|e| EtcdError::Unavailable(format!("cannot ship code tree {tree}: {e}")))?;
        let root = new_root();
        let store = self.roots.root(&root).map_err(object_store)?;
        let mut chunks = Vec::with_capacity(zip.len().div_ceil(CHUNK_BYTES));
        for piece in zip.chunks(CHUNK_BYTES) {
            let stored = store.put(Bytes::copy_from_slice(piece)).await.map_err(object_store)?;
            chunks.push(stored.digest.to_string());
        }
        let shipped = Shipped { sha256: hex::encode(Sha256::digest(&zip)), size: zip.len() as u64, root: root.clone(), chunks };
        let value = serde_json::to_vec(&shipped).map_err(|e| EtcdError::Unavailable(e.to_string()))?;
        let txn = Txn::new()
            .when([Compare::version(name.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(name.clone(), value.clone(), None)]);
        if self.etcd.decide(txn, &name, Some(&value)).await?.is_some() {
            return Ok(value);
        }
        // Another front end shipped it meanwhile: its shipping stands, this one's root goes.
        if let Err(e) = self.roots.delete_root(&root).await {
            tracing::warn!(%root, error = %e, "cannot delete the root of a shipping another front end won");
        }
        let kv = self.etcd.get(&name, None).await?;
        kv.kvs().first().map(|kv| kv.value().to_vec()).ok_or_else(|| EtcdError::Unavailable(format!("code tree {tree} vanished")))
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
        let store = self.roots.root(&shipped.root).map_err(object_store)?;
        let mut zip = Vec::with_capacity(usize::try_from(shipped.size).unwrap_or(0).min(256 << 20));
        for digest in &shipped.chunks {
            let digest: ChunkDigest = digest.parse().map_err(|_| corrupt(format!("{digest:?} is not a chunk digest")))?;
            zip.extend_from_slice(&store.get(digest).await.map_err(object_store)?);
        }
        if zip.len() as u64 != shipped.size || hex::encode(Sha256::digest(&zip)) != shipped.sha256 {
            return Err(corrupt("the chunks do not make the zip it names".into()));
        }
        let (store, tree_name) = (self.store.clone(), tree.to_string());
        tokio::task::spawn_blocking(move || store.put_code_named(&tree_name, &zip, &CodeRules::default()))
            .await
            .map_err(|e| EtcdError::Unavailable(e.to_string()))?
            .map_err(|e| corrupt(format!("cannot unpack it: {e}")))?;
        Ok(hold)
    }

    /// Every shipped tree, with its key's modification revision and its root.
    async fn shipped(&self) -> Result<Vec<(String, i64, String)>, EtcdError> {
        let prefix = key("code/");
        let got = self.etcd.get(&prefix, Some(GetOptions::new().with_prefix())).await?;
        Ok(got
            .kvs()
            .iter()
            .filter_map(|kv| {
                let tree = kv.key_str().ok()?.strip_prefix(&prefix)?.to_string();
                let root = serde_json::from_slice::<Shipped>(kv.value()).ok()?.root;
                Some((tree, kv.mod_revision(), root))
            })
            .collect())
    }

    /// One pass of collection: deletes the trees `unused` says are due (none of `live` for [`GRACE`]); how many.
    pub async fn collect(&self, live: &HashSet<String>, unused: &mut BTreeMap<String, (u64, i64)>, now_ms: u64) -> Result<usize, EtcdError> {
        let shipped = self.shipped().await?;
        let all: Vec<(String, i64)> = shipped.iter().map(|(tree, revision, _)| (tree.clone(), *revision)).collect();
        let mut deleted = 0;
        for (tree, revision) in due(unused, &all, |tree| live.contains(tree), now_ms, GRACE.as_millis() as u64) {
            let name = code_key(&tree);
            let txn = Txn::new()
                .when([Compare::mod_revision(name.clone(), CompareOp::Equal, revision)])
                .and_then([TxnOp::delete(name.clone(), None)]);
            if self.etcd.decide(txn, &name, None).await?.is_none() {
                continue;
            }
            unused.remove(&tree);
            if let Some((_, _, root)) = shipped.iter().find(|(t, _, _)| *t == tree)
                && let Err(e) = self.roots.delete_root(root).await
            {
                tracing::warn!(%tree, %root, error = %e, "cannot delete a collected code tree's root");
            }
            deleted += 1;
        }
        Ok(deleted)
    }
}

/// Collects shipped trees nothing uses, every [`COLLECT_EVERY`], while this front end holds `leaders/code`;
/// `live` answers the trees records and layer versions name. Ends when `code` is dropped.
pub fn start_collection(
    code: &Arc<CodeShare>,
    presence: Arc<Presence>,
    live: impl Fn() -> HashSet<String> + Send + 'static,
    clock: ignis_clock::SharedClock,
) {
    let code = Arc::downgrade(code);
    tokio::spawn(async move {
        let mut unused = BTreeMap::new();
        loop {
            tokio::time::sleep(COLLECT_EVERY).await;
            let Some(code) = code.upgrade() else { return };
            match presence.claim(&code.etcd, &key("leaders/code")).await {
                Ok(true) => {}
                Ok(false) => {
                    unused.clear();
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot collect code trees");
                    continue;
                }
            }
            match code.collect(&live(), &mut unused, clock.now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(trees = n, "collected code trees nothing uses"),
                Err(e) => tracing::warn!(error = %e, "cannot collect code trees"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(due: Vec<(String, i64)>) -> Vec<String> {
        due.into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn a_tree_is_due_only_after_its_grace_unused_and_unchanged() {
        let mut unused = BTreeMap::new();
        let all = vec![("a".to_string(), 1), ("b".to_string(), 2)];
        let live: HashSet<&str> = HashSet::from(["a"]);
        let used = |n: &str| live.contains(n);
        assert!(due(&mut unused, &all, used, 0, 10).is_empty());
        assert!(due(&mut unused, &all, used, 9, 10).is_empty());
        assert_eq!(names(due(&mut unused, &all, used, 10, 10)), ["b"]);
        // Touched (a record named it again): its grace starts over.
        let touched = vec![("a".to_string(), 1), ("b".to_string(), 5)];
        assert!(due(&mut unused, &touched, used, 15, 10).is_empty());
        assert_eq!(names(due(&mut unused, &touched, used, 25, 10)), ["b"]);
        // Used again, then unused: starts over too.
        assert!(due(&mut unused, &touched, |_| true, 26, 10).is_empty());
        assert!(unused.is_empty(), "what is used is forgotten");
        assert!(due(&mut unused, &touched, |_| false, 30, 10).is_empty());
        assert_eq!(names(due(&mut unused, &touched, |_| false, 40, 10)), ["a", "b"]);
        // Gone: forgotten.
        assert!(due(&mut unused, &[], |_| false, 50, 10).is_empty());
        assert!(unused.is_empty());
    }

    #[test]
    fn every_sequence_of_small_passes_keeps_the_grace() {
        // Over every pattern of use of one tree across six passes one unit apart, a tree is due exactly when it
        // went unused and untouched for the whole grace.
        for pattern in 0u32..(1 << 6) {
            for touches in 0u32..(1 << 6) {
                let mut unused = BTreeMap::new();
                let (mut revision, mut unused_since) = (0i64, None::<u64>);
                for pass in 0..6u64 {
                    let used = pattern & (1 << pass) != 0;
                    if touches & (1 << pass) != 0 {
                        revision += 1;
                        unused_since = None;
                    }
                    if used {
                        unused_since = None;
                    } else if unused_since.is_none() {
                        unused_since = Some(pass);
                    }
                    let all = [("t".to_string(), revision)];
                    let got = !due(&mut unused, &all, |_| used, pass, 3).is_empty();
                    let expected = unused_since.is_some_and(|since| pass - since >= 3);
                    assert_eq!(got, expected, "pattern {pattern:06b} touches {touches:06b} pass {pass}");
                }
            }
        }
    }
}
