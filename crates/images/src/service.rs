//! [`Images`]: the server's owner of prepared images, the chunk store's
//! roots and garbage collection.
//!
//! # What it owns
//! - `image_roots` (root id → state): the chunk store's roots
//!   ([`ignis_chunks::roots`]), mirrored in memory. Exactly one is active.
//! - `images_prepared` ((account, OCI manifest digest) → record): each image a
//!   function uses, prepared once ([`crate::prepare`]): its chunk manifest,
//!   the root its chunks are in, when it was prepared.
//! - The chunks, through [`RootStores`] (one store per root).
//!
//! # Invariants
//! - An image is prepared at most once per account at a time (concurrent
//!   calls for the same image wait for the first and share its answer).
//! - New chunks go only to the active root: a preparation holds the rotation
//!   lock (shared) while it puts chunks, and a rotation takes it exclusively,
//!   so it waits for preparations in flight and none straddles two roots.
//! - Nothing live is lost: [`Images::collect`] copies every manifest that a
//!   live function names (or that was prepared within the retire time, so an
//!   image prepared for a function not yet stored counts too) into the new
//!   root before any older root may expire, and a root that still holds a
//!   live manifest is never expired nor deleted ([`ignis_chunks::roots`]).
//! - Reads go through [`Images::reader`], which applies the root's verdict:
//!   a read of an expired root is served but raises the root's alarm (kept
//!   in the table: that root is never deleted automatically), a read of a
//!   deleted root fails.
//!
//! # API boundary
//! The front end calls [`Images::prepare`] when a function names an image,
//! the invoke path [`Images::find`] and [`Images::reader`] (the local worker,
//! or a worker host through the server's chunk endpoint), the administrator
//! [`Images::collect`] with the set of live images from the registry.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};

use base64::Engine as _;
use bytes::Bytes;
use ignis_chunks::roots::{self, Policy, ReadVerdict, Root, RootState, Step};
use ignis_chunks::{BoxFuture, ChunkDigest, ChunkError, ChunkStore, NamedChunk, RootStores, Size, Stored};
use ignis_clock::SharedClock;
use ignis_ids::AccountId;
use ignis_oci::{Oci, OciError};
use ignis_store::{DbContext, Store, StoreError};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::prepare::{PrepareError, PrepareOptions, prepare};

#[cfg(test)]
mod tests;
use crate::{AccountKey, Manifest, ManifestError, Salt, chunk_and_store};

/// root id → [`RootRecord`] (JSON).
const ROOTS: TableDefinition<&str, &str> = TableDefinition::new("image_roots");
/// (account, OCI manifest digest) → [`PreparedRecord`] (JSON).
const PREPARED: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("images_prepared");

/// The purpose an account's image key is derived for.
pub const ACCOUNT_KEY_PURPOSE: &str = "ignis image key tables v1";

/// An account's key for its images' key tables.
pub type AccountKeys = Arc<dyn Fn(&AccountId) -> AccountKey + Send + Sync>;

/// How [`Images`] prepares.
#[derive(Debug, Clone)]
pub struct ImagesConfig {
    /// Where spools and filesystem images are made while preparing.
    pub work_dir: PathBuf,
    /// The operator's value in every chunk's salt (`--chunk-salt`), if set.
    pub operator_salt: Option<Vec<u8>>,
    pub prepare: PrepareOptions,
}

/// An image ready to be loaded: its chunk manifest, the root its chunks are
/// in, and the key that opens it.
#[derive(Clone)]
pub struct ImageManifest {
    pub manifest: Arc<Manifest>,
    /// Hex SHA-256 of the manifest's bytes: one mount per id on a worker.
    pub id: String,
    pub root: String,
    pub key: AccountKey,
}

/// What [`Images::prepare`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepareReport {
    /// Whether this call prepared it (not found already prepared).
    pub prepared: bool,
    pub image_bytes: u64,
    pub new_bytes: u64,
    pub deduplicated_bytes: u64,
}

/// What one [`Images::collect`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectReport {
    pub active_root: String,
    /// Live manifests copied into the new root.
    pub copied: usize,
    /// Records of images no live function names, forgotten.
    pub dropped: usize,
    pub expired: Vec<String>,
    pub deleted: Vec<String>,
    /// Roots kept because an expired root was read.
    pub alarms: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImagesError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error(transparent)]
    Chunks(#[from] ChunkError),
    #[error(transparent)]
    Storage(#[from] StoreError),
    #[error("image record: {0}")]
    Record(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("chunk store root {0} was deleted")]
    RootGone(String),
    #[error("copying an image forward: {0}")]
    Copy(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RootRecord {
    state: String,
    #[serde(default)]
    since_ms: i64,
    #[serde(default)]
    alarm: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PreparedRecord {
    repository: String,
    root: String,
    /// [`Manifest::encode`], base64.
    manifest: String,
    prepared_ms: i64,
}

fn root_record(root: &Root) -> RootRecord {
    let (state, since_ms) = match root.state {
        RootState::Active => ("Active", 0),
        RootState::Retired { since_ms } => ("Retired", since_ms),
        RootState::Expired { since_ms } => ("Expired", since_ms),
        RootState::Deleted => ("Deleted", 0),
    };
    RootRecord { state: state.into(), since_ms, alarm: root.alarm }
}

fn root_of(id: &str, record: RootRecord) -> Result<Root, ImagesError> {
    let state = match record.state.as_str() {
        "Active" => RootState::Active,
        "Retired" => RootState::Retired { since_ms: record.since_ms },
        "Expired" => RootState::Expired { since_ms: record.since_ms },
        "Deleted" => RootState::Deleted,
        other => return Err(ImagesError::Record(format!("root {id}: unknown state {other:?}"))),
    };
    Ok(Root { id: id.to_string(), state, alarm: record.alarm })
}

fn new_root_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type PrepareLock = Arc<tokio::sync::Mutex<()>>;
/// (account, OCI manifest digest): a prepared image's key.
type ImageKey = (String, String);

pub struct Images {
    store: Arc<Store>,
    oci: Arc<Oci>,
    roots: Arc<dyn RootStores>,
    keys: AccountKeys,
    clock: SharedClock,
    config: ImagesConfig,
    /// The roots' table, in memory (written through to the store).
    table: RwLock<Vec<Root>>,
    /// Shared by preparations while they put chunks; exclusive to a rotation.
    rotation: tokio::sync::RwLock<()>,
    /// Shared by measurements of the roots; exclusive to a root's deletion until the table says it is deleted
    /// (a deleted root cannot be opened).
    deletion: tokio::sync::RwLock<()>,
    /// One lock per image being prepared.
    preparing: Mutex<HashMap<ImageKey, Weak<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Images").field("roots", &self.roots).finish_non_exhaustive()
    }
}

impl Images {
    /// Makes the tables if missing, loads the roots and makes a first active
    /// root if there is none.
    pub fn open(
        store: Arc<Store>,
        oci: Arc<Oci>,
        roots: Arc<dyn RootStores>,
        keys: AccountKeys,
        clock: SharedClock,
        config: ImagesConfig,
    ) -> Result<Arc<Images>, ImagesError> {
        const CTX: &str = "opening the image tables";
        // Spools and filesystem images of preparations a crash interrupted.
        if config.work_dir.exists() {
            std::fs::remove_dir_all(&config.work_dir)
                .map_err(|e| ImagesError::Record(format!("emptying {}: {e}", config.work_dir.display())))?;
        }
        std::fs::create_dir_all(&config.work_dir)
            .map_err(|e| ImagesError::Record(format!("creating {}: {e}", config.work_dir.display())))?;
        let txn = store.database().begin_write().ctx(CTX)?;
        let mut table = Vec::new();
        {
            let mut rows = txn.open_table(ROOTS).ctx(CTX)?;
            txn.open_table(PREPARED).ctx(CTX)?;
            for item in rows.iter().ctx(CTX)? {
                let (id, value) = item.ctx(CTX)?;
                let record: RootRecord =
                    serde_json::from_str(value.value()).map_err(|e| ImagesError::Record(e.to_string()))?;
                table.push(root_of(id.value(), record)?);
            }
            if !table.iter().any(|r| r.state == RootState::Active) {
                let root = Root { id: new_root_id(), state: RootState::Active, alarm: false };
                let json = serde_json::to_string(&root_record(&root)).map_err(|e| ImagesError::Record(e.to_string()))?;
                rows.insert(root.id.as_str(), json.as_str()).ctx(CTX)?;
                table.push(root);
            }
        }
        store.commit_write(txn, true, CTX)?;
        Ok(Arc::new(Images {
            store,
            oci,
            roots,
            keys,
            clock,
            config,
            table: RwLock::new(table),
            rotation: tokio::sync::RwLock::new(()),
            deletion: tokio::sync::RwLock::new(()),
            preparing: Mutex::default(),
        }))
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    fn active_root(&self) -> String {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table.iter().find(|r| r.state == RootState::Active).map(|r| r.id.clone()).unwrap_or_default()
    }

    /// The roots, as the collector sees them.
    pub fn roots(&self) -> Vec<Root> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn lock_for(&self, account: &AccountId, digest: &str) -> PrepareLock {
        let mut preparing = self.preparing.lock().unwrap_or_else(|e| e.into_inner());
        preparing.retain(|_, weak| weak.strong_count() > 0);
        let key = (account.as_str().to_string(), digest.to_string());
        if let Some(lock) = preparing.get(&key).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = PrepareLock::default();
        preparing.insert(key, Arc::downgrade(&lock));
        lock
    }

    /// Prepares the image `digest` of `account`'s `repository` (flatten,
    /// build, chunk, store), unless it already is.
    pub async fn prepare(&self, account: &AccountId, repository: &str, digest: &str) -> Result<PrepareReport, ImagesError> {
        let lock = self.lock_for(account, digest);
        let _one_at_a_time = lock.lock().await;
        if let Some(found) = self.find(account, digest)? {
            let image_bytes = found.manifest.image_bytes();
            return Ok(PrepareReport { prepared: false, image_bytes, new_bytes: 0, deduplicated_bytes: 0 });
        }
        let resolved = {
            let (oci, account, repository, digest) =
                (self.oci.clone(), account.as_str().to_string(), repository.to_string(), digest.to_string());
            tokio::task::spawn_blocking(move || -> Result<_, OciError> {
                let image = oci.resolve_image(&account, &repository, &digest)?;
                let mut layers: Vec<Box<dyn std::io::Read + Send>> = Vec::new();
                for layer in &image.layers {
                    let (file, _) = oci.open_blob(&account, &repository, &layer.digest)?;
                    layers.push(Box::new(std::io::BufReader::new(file)));
                }
                Ok(layers)
            })
            .await
            .map_err(|e| ImagesError::Record(format!("reading the image's layers: {e}")))??
        };
        let _not_rotating = self.rotation.read().await;
        let root = self.active_root();
        let store = self.roots.root(&root)?;
        let salt = Salt::new(&root, self.config.operator_salt.as_deref());
        let key = (self.keys)(account);
        let prepared = prepare(resolved, &self.config.work_dir, &*store, &salt, &key, &self.config.prepare).await?;
        metrics::counter!("ignis_chunks_deduplicated_total").increment(prepared.chunks.deduplicated_chunks);
        let record = PreparedRecord {
            repository: repository.to_string(),
            root,
            manifest: base64::engine::general_purpose::STANDARD.encode(prepared.manifest.encode()),
            prepared_ms: self.now_ms(),
        };
        self.put_record(account.as_str(), digest, &record)?;
        Ok(PrepareReport {
            prepared: true,
            image_bytes: prepared.manifest.image_bytes(),
            new_bytes: prepared.chunks.new_bytes,
            deduplicated_bytes: prepared.chunks.deduplicated_bytes,
        })
    }

    fn put_record(&self, account: &str, digest: &str, record: &PreparedRecord) -> Result<(), ImagesError> {
        const CTX: &str = "storing a prepared image";
        let value = serde_json::to_vec(record).map_err(|e| ImagesError::Record(e.to_string()))?;
        let txn = self.store.database().begin_write().ctx(CTX)?;
        txn.open_table(PREPARED).ctx(CTX)?.insert((account, digest), value.as_slice()).ctx(CTX)?;
        self.store.commit_write(txn, true, CTX)?;
        Ok(())
    }

    fn records(&self) -> Result<Vec<(ImageKey, PreparedRecord)>, ImagesError> {
        const CTX: &str = "reading prepared images";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let table = txn.open_table(PREPARED).ctx(CTX)?;
        let mut out = Vec::new();
        for item in table.iter().ctx(CTX)? {
            let (key, value) = item.ctx(CTX)?;
            let (account, digest) = key.value();
            let record = serde_json::from_slice(value.value()).map_err(|e| ImagesError::Record(e.to_string()))?;
            out.push(((account.to_string(), digest.to_string()), record));
        }
        Ok(out)
    }

    fn manifest_of(&self, account: &AccountId, record: &PreparedRecord) -> Result<ImageManifest, ImagesError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&record.manifest)
            .map_err(|e| ImagesError::Record(format!("manifest: {e}")))?;
        let manifest = Manifest::decode(&bytes)?;
        let id = hex::encode(manifest.digest());
        Ok(ImageManifest { manifest: Arc::new(manifest), id, root: record.root.clone(), key: (self.keys)(account) })
    }

    /// The prepared image `digest` of `account`, if it is.
    pub fn find(&self, account: &AccountId, digest: &str) -> Result<Option<ImageManifest>, ImagesError> {
        const CTX: &str = "reading a prepared image";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let table = txn.open_table(PREPARED).ctx(CTX)?;
        let Some(value) = table.get((account.as_str(), digest)).ctx(CTX)? else {
            return Ok(None);
        };
        let record: PreparedRecord =
            serde_json::from_slice(value.value()).map_err(|e| ImagesError::Record(e.to_string()))?;
        self.manifest_of(account, &record).map(Some)
    }

    /// The prepared image `digest` of `account`'s `repository`, prepared now if it is not (garbage collection
    /// forgets images no function names; a worker may still start one).
    pub async fn prepared(&self, account: &AccountId, repository: &str, digest: &str) -> Result<ImageManifest, ImagesError> {
        if let Some(found) = self.find(account, digest)? {
            return Ok(found);
        }
        self.prepare(account, repository, digest).await?;
        self.find(account, digest)?.ok_or_else(|| ImagesError::Record(format!("the image {digest} is not prepared")))
    }

    /// Reads of root `root`'s chunks, under the root's verdict (see the
    /// module docs).
    pub fn reader(self: &Arc<Self>, root: &str) -> Result<Arc<dyn ChunkStore>, ImagesError> {
        let inner = self.roots.root(root)?;
        Ok(Arc::new(RootReader { images: Arc::downgrade(self), root: root.to_string(), inner }))
    }

    /// The verdict on a read of `root` now, raising its alarm if it is
    /// expired.
    fn verdict(&self, root: &str) -> ReadVerdict {
        let verdict = {
            let table = self.table.read().unwrap_or_else(|e| e.into_inner());
            match table.iter().find(|r| r.id == root) {
                Some(r) => roots::read(r.state),
                None => ReadVerdict::Gone,
            }
        };
        if verdict == ReadVerdict::Alarm {
            let raised = {
                let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
                table.iter_mut().find(|r| r.id == root).map(|r| !std::mem::replace(&mut r.alarm, true)).unwrap_or(false)
            };
            metrics::counter!("ignis_chunk_root_alarms_total").increment(1);
            if raised {
                tracing::error!(root, "a chunk of an expired root was read: the root is kept until an operator decides");
                if let Err(e) = self.save_roots() {
                    tracing::error!(root, error = %e, "cannot record the root's alarm");
                }
            }
        }
        verdict
    }

    fn save_roots(&self) -> Result<(), ImagesError> {
        const CTX: &str = "storing the chunk store's roots";
        let table = self.roots();
        let txn = self.store.database().begin_write().ctx(CTX)?;
        {
            let mut rows = txn.open_table(ROOTS).ctx(CTX)?;
            for root in &table {
                let json = serde_json::to_string(&root_record(root)).map_err(|e| ImagesError::Record(e.to_string()))?;
                rows.insert(root.id.as_str(), json.as_str()).ctx(CTX)?;
            }
        }
        self.store.commit_write(txn, true, CTX)?;
        Ok(())
    }

    fn apply(&self, step: &Step, now_ms: i64, new_id: &str) -> Result<(), ImagesError> {
        roots::apply(&mut self.table.write().unwrap_or_else(|e| e.into_inner()), step, now_ms, new_id);
        self.save_roots()
    }

    /// One garbage collection (see [`ignis_chunks::roots`]): rotates to a new
    /// root, copies forward the manifests of `live` images (account, OCI
    /// manifest digest) and of images prepared within the retire time,
    /// forgets the others, then expires and deletes older roots as `policy`
    /// allows. Safe while images are prepared and read.
    pub async fn collect(&self, live: &HashSet<(AccountId, String)>, policy: Policy) -> Result<CollectReport, ImagesError> {
        let new_id = new_root_id();
        {
            let _no_preparation = self.rotation.write().await;
            self.apply(&Step::Rotate, self.now_ms(), &new_id)?;
        }
        let mut report = CollectReport { active_root: new_id.clone(), ..CollectReport::default() };
        let now = self.now_ms();
        let is_live = |account: &str, digest: &str, record: &PreparedRecord| {
            live.contains(&(AccountId::new(account), digest.to_string()))
                || now.saturating_sub(record.prepared_ms) < policy.retire_for_ms
        };
        for ((account, digest), record) in self.records()? {
            if record.root == new_id {
                continue;
            }
            if is_live(&account, &digest, &record) {
                self.copy_forward(&AccountId::new(&account), &digest, record, &new_id).await?;
                report.copied += 1;
            } else {
                self.forget(&account, &digest, &record)?;
                report.dropped += 1;
            }
        }
        // Which roots still hold a live manifest (one whose copy was raced
        // by a newer preparation, say).
        let holding: HashSet<String> = self.records()?.into_iter().map(|(_, r)| r.root).collect();
        let steps = roots::plan(&self.roots(), |id| holding.contains(id), self.now_ms(), policy, false);
        for step in steps {
            // A root being deleted cannot be opened: measurements wait until the table says it is deleted.
            let _not_measured = match &step {
                Step::Delete(_) => Some(self.deletion.write().await),
                _ => None,
            };
            match &step {
                Step::Expire(id) => report.expired.push(id.clone()),
                Step::Delete(id) => {
                    self.roots.delete_root(id).await?;
                    report.deleted.push(id.clone());
                }
                Step::Rotate => {}
            }
            self.apply(&step, self.now_ms(), &new_id)?;
        }
        report.alarms = self.roots().into_iter().filter(|r| r.alarm).map(|r| r.id).collect();
        Ok(report)
    }

    /// Forgets a prepared image no live function names (only if its record
    /// is still the one read).
    fn forget(&self, account: &str, digest: &str, seen: &PreparedRecord) -> Result<(), ImagesError> {
        const CTX: &str = "forgetting a prepared image";
        let txn = self.store.database().begin_write().ctx(CTX)?;
        {
            let mut table = txn.open_table(PREPARED).ctx(CTX)?;
            let current = table.get((account, digest)).ctx(CTX)?.map(|v| v.value().to_vec());
            let unchanged = current
                .and_then(|bytes| serde_json::from_slice::<PreparedRecord>(&bytes).ok())
                .is_some_and(|r| r.manifest == seen.manifest);
            if unchanged {
                table.remove((account, digest)).ctx(CTX)?;
            }
        }
        self.store.commit_write(txn, true, CTX)?;
        Ok(())
    }

    /// Makes `record`'s image anew in root `to`: every chunk read (and
    /// checked) from its root, re-encrypted under `to`'s salt.
    async fn copy_forward(&self, account: &AccountId, digest: &str, record: PreparedRecord, to: &str) -> Result<(), ImagesError> {
        let image = self.manifest_of(account, &record)?;
        let from = self.roots.root(&record.root)?;
        let opened = image.manifest.open(&image.key)?;
        let copy_error = |e: std::io::Error| ImagesError::Copy(e.to_string());
        let mut plain = tokio::fs::File::from_std(tempfile::tempfile_in(&self.config.work_dir).map_err(copy_error)?);
        for index in 0..image.manifest.chunks().len() {
            let chunk = opened.read_chunk(index, &*from).await.map_err(|e| ImagesError::Copy(e.to_string()))?;
            tokio::io::AsyncWriteExt::write_all(&mut plain, &chunk).await.map_err(copy_error)?;
        }
        tokio::io::AsyncSeekExt::seek(&mut plain, std::io::SeekFrom::Start(0)).await.map_err(copy_error)?;
        let store = self.roots.root(to)?;
        let salt = Salt::new(to, self.config.operator_salt.as_deref());
        let chunked = chunk_and_store(plain, &*store, &salt, &image.key).await.map_err(|e| ImagesError::Copy(e.to_string()))?;
        let copied = PreparedRecord {
            root: to.to_string(),
            manifest: base64::engine::general_purpose::STANDARD.encode(chunked.manifest.encode()),
            ..record
        };
        self.put_record(account.as_str(), digest, &copied)
    }

    /// Chunks and bytes in every root not deleted.
    pub async fn stored(&self) -> Result<Size, ImagesError> {
        let _no_deletion = self.deletion.read().await;
        let mut total = Size::default();
        for root in self.roots().into_iter().filter(|r| r.state != RootState::Deleted) {
            let size = self.roots.root(&root.id)?.size().await?;
            total.chunks += size.chunks;
            total.bytes += size.bytes;
        }
        Ok(total)
    }
}

/// Reads of one root's chunks, each under the root's verdict.
struct RootReader {
    images: Weak<Images>,
    root: String,
    inner: Arc<dyn ChunkStore>,
}

impl std::fmt::Debug for RootReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootReader").field("root", &self.root).finish_non_exhaustive()
    }
}

impl RootReader {
    /// The root's verdict on a read (an expired root's read raises the alarm): an error if it is gone.
    fn judged(&self) -> Result<(), ChunkError> {
        let verdict = self.images.upgrade().map(|images| images.verdict(&self.root));
        if verdict != Some(ReadVerdict::Gone) {
            return Ok(());
        }
        Err(ChunkError::Io {
            what: format!("chunk store root {}", self.root),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "the root was deleted"),
        })
    }
}

impl ChunkStore for RootReader {
    fn put_named(&self, chunk: NamedChunk) -> BoxFuture<'_, Result<Stored, ChunkError>> {
        self.inner.put_named(chunk)
    }

    fn get(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>> {
        Box::pin(async move {
            self.judged()?;
            self.inner.get(digest).await
        })
    }

    fn get_unverified(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>> {
        Box::pin(async move {
            self.judged()?;
            self.inner.get_unverified(digest).await
        })
    }

    fn contains<'a>(&'a self, digests: &'a [ChunkDigest]) -> BoxFuture<'a, Result<Vec<bool>, ChunkError>> {
        self.inner.contains(digests)
    }

    fn delete(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<bool, ChunkError>> {
        self.inner.delete(digest)
    }

    fn list(&self, after: Option<ChunkDigest>, limit: usize) -> BoxFuture<'_, Result<Vec<ChunkDigest>, ChunkError>> {
        self.inner.list(after, limit)
    }

    fn size(&self) -> BoxFuture<'_, Result<Size, ChunkError>> {
        self.inner.size()
    }
}

impl crate::ImagePreparer for Images {
    fn prepare<'a>(&'a self, account: &'a AccountId, repository: &'a str, manifest_digest: &'a str) -> crate::PrepareFuture<'a> {
        Box::pin(async move {
            match Images::prepare(self, account, repository, manifest_digest).await {
                Ok(_) => Ok(crate::PreparedImage { id: manifest_digest.to_string() }),
                Err(e) if e.is_image_fault() => Err(crate::PreparerError::Image(e.to_string())),
                Err(e) => {
                    tracing::error!(%account, repository, manifest_digest, error = %e, "preparing an image failed");
                    Err(crate::PreparerError::Internal(e.to_string()))
                }
            }
        })
    }
}

impl ImagesError {
    /// Whether the image is at fault (not the platform).
    pub fn is_image_fault(&self) -> bool {
        match self {
            ImagesError::Prepare(e) => e.is_image_fault(),
            ImagesError::Oci(e) => !matches!(e, OciError::Io(_) | OciError::Store(_)),
            _ => false,
        }
    }
}
