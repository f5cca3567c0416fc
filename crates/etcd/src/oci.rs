//! The container image repositories of a cluster: their records in etcd ([`EtcdIndex`], an `ignis_oci::Index`),
//! their blobs' and manifests' bytes in the object store ([`EtcdContents`], an `ignis_oci::Contents`). An image
//! pushed through one front end is pulled, and run, through any, and outlives the front end it was pushed through.
//!
//! - Records, under `oci/index/` (followed into every front end's memory): `repositories/<repository>` (the
//!   owning account), `blobs/<repository>@<digest>` (the size), `manifests/<repository>@<digest>` (the media type),
//!   `tags/<repository>@<tag>` (the manifest digest). `@` is in no repository name, digest or tag.
//! - A write is one transaction that also claims the repository: it holds only while the repository is the
//!   account's, or makes it the account's where it has no owner. It returns once this front end's memory shows it.
//! - A read is memory's; what memory lacks is read from etcd (a blob or tag another front end recorded an instant
//!   ago, which the watch has not brought yet), so a push through one front end is seen at once through another.
//! - Bytes: `oci/contents/<digest>` names where they are: [`Kept`], the size and the chunks (in the object store's
//!   root [`CONTENTS_ROOT`]) of the list of the content's chunks, made only where absent. Content is kept before
//!   any record names it, and never deleted (nothing deletes an image's blobs).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use ignis_chunks::{CHUNK_BYTES, ChunkDigest, ChunkStore, RootStores};
use ignis_oci::index::{unknown_reference, writable};
use ignis_oci::{Contents, Index, NewManifest, OciError};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use crate::{Apply, Etcd, EtcdError, Kv, Mirror, blocking_wait, key};

const INDEX: &str = "oci/index/";
/// The object store root that holds every repository's content.
pub const CONTENTS_ROOT: &str = "0c1b10b5";

fn shared(e: impl std::fmt::Display) -> OciError {
    OciError::Shared(e.to_string())
}

/// The records, as one front end's memory holds them.
#[derive(Debug, Default)]
struct Records {
    repositories: BTreeMap<String, String>,
    blobs: HashMap<(String, String), u64>,
    manifests: HashMap<(String, String), String>,
    tags: BTreeMap<(String, String), String>,
}

/// A record's key under `oci/index/`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    Repository(String),
    Blob(String, String),
    Manifest(String, String),
    Tag(String, String),
}

impl Record {
    fn parse(key: &str) -> Option<Record> {
        let (kind, rest) = key.split_once('/')?;
        let pair = || rest.split_once('@').map(|(a, b)| (a.to_string(), b.to_string()));
        match kind {
            "repositories" => Some(Record::Repository(rest.to_string())),
            "blobs" => pair().map(|(r, d)| Record::Blob(r, d)),
            "manifests" => pair().map(|(r, d)| Record::Manifest(r, d)),
            "tags" => pair().map(|(r, t)| Record::Tag(r, t)),
            _ => None,
        }
    }

    /// Its full key.
    fn key(&self) -> String {
        key(&format!(
            "{INDEX}{}",
            match self {
                Record::Repository(r) => format!("repositories/{r}"),
                Record::Blob(r, d) => format!("blobs/{r}@{d}"),
                Record::Manifest(r, d) => format!("manifests/{r}@{d}"),
                Record::Tag(r, t) => format!("tags/{r}@{t}"),
            }
        ))
    }
}

impl Records {
    fn saw(&mut self, kv: &Kv) {
        let Some(record) = Record::parse(&kv.key) else { return };
        let value = kv.value.as_deref().and_then(|v| std::str::from_utf8(v).ok()).map(str::to_string);
        match (record, value) {
            (Record::Repository(r), Some(account)) => drop(self.repositories.insert(r, account)),
            (Record::Repository(r), None) => drop(self.repositories.remove(&r)),
            (Record::Blob(r, d), Some(size)) => {
                if let Ok(size) = size.parse() {
                    self.blobs.insert((r, d), size);
                }
            }
            (Record::Blob(r, d), None) => drop(self.blobs.remove(&(r, d))),
            (Record::Manifest(r, d), Some(media_type)) => drop(self.manifests.insert((r, d), media_type)),
            (Record::Manifest(r, d), None) => drop(self.manifests.remove(&(r, d))),
            (Record::Tag(r, t), Some(digest)) => drop(self.tags.insert((r, t), digest)),
            (Record::Tag(r, t), None) => drop(self.tags.remove(&(r, t))),
        }
    }
}

struct Watched(std::sync::Weak<Mutex<Records>>);

impl Apply for Watched {
    fn reset(&self, all: Vec<Kv>) -> crate::mirror::BoxFuture<'_, ()> {
        if let Some(records) = self.0.upgrade() {
            let mut records = lock(&records);
            *records = Records::default();
            all.iter().for_each(|kv| records.saw(kv));
        }
        Box::pin(async {})
    }

    fn apply(&self, changes: Vec<Kv>) -> crate::mirror::BoxFuture<'_, ()> {
        if let Some(records) = self.0.upgrade() {
            let mut records = lock(&records);
            changes.iter().for_each(|kv| records.saw(kv));
        }
        Box::pin(async {})
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The repositories' records in etcd (see the module docs). Its methods block: call them off the async threads.
pub struct EtcdIndex {
    etcd: Etcd,
    runtime: Handle,
    records: Arc<Mutex<Records>>,
    mirror: Mirror,
}

impl std::fmt::Debug for EtcdIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdIndex").finish_non_exhaustive()
    }
}

impl EtcdIndex {
    /// Loads the records and follows them.
    pub async fn open(etcd: Etcd) -> Result<EtcdIndex, EtcdError> {
        let records = Arc::new(Mutex::new(Records::default()));
        let mirror = Mirror::start(etcd.clone(), key(INDEX), Arc::new(Watched(Arc::downgrade(&records)))).await?;
        Ok(EtcdIndex { etcd, runtime: Handle::current(), records, mirror })
    }

    fn records(&self) -> MutexGuard<'_, Records> {
        lock(&self.records)
    }

    /// `record`'s value, from memory or else from etcd.
    fn read(&self, record: Record, in_memory: impl FnOnce(&Records) -> Option<String>) -> Result<Option<String>, OciError> {
        if let Some(found) = in_memory(&self.records()) {
            return Ok(Some(found));
        }
        let got = blocking_wait(&self.runtime, self.etcd.get(&record.key(), None)).map_err(shared)?;
        Ok(got.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// Stores `puts` in one transaction that claims `repository` for `account`; returns once memory shows it.
    fn claimed_write(&self, account: &str, repository: &str, puts: &[(Record, String)]) -> Result<(), OciError> {
        let owner_key = Record::Repository(repository.to_string()).key();
        let ops: Vec<TxnOp> = puts.iter().map(|(record, value)| TxnOp::put(record.key(), value.as_str(), None)).collect();
        blocking_wait(&self.runtime, async {
            // Another front end may make the repository someone's in between: a few tries settle it.
            for _ in 0..4 {
                let own = Txn::new()
                    .when([Compare::value(owner_key.as_str(), CompareOp::Equal, account)])
                    .and_then(ops.clone());
                let (answer, _) = self.etcd.txn(own).await.map_err(shared)?;
                let revision = if answer.succeeded() {
                    answer.header().map_or(0, |h| h.revision())
                } else {
                    let owner = self.etcd.get(&owner_key, None).await.map_err(shared)?;
                    let owner = owner.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
                    writable(owner.as_deref(), account, repository)?;
                    let mut claim = vec![TxnOp::put(owner_key.as_str(), account, None)];
                    claim.extend(ops.clone());
                    let new = Txn::new().when([Compare::version(owner_key.as_str(), CompareOp::Equal, 0)]).and_then(claim);
                    let (answer, _) = self.etcd.txn(new).await.map_err(shared)?;
                    if !answer.succeeded() {
                        continue;
                    }
                    answer.header().map_or(0, |h| h.revision())
                };
                return self.mirror.reached(revision).await.map_err(shared);
            }
            Err(OciError::Shared(format!("repository {repository}: its owner kept changing")))
        })
    }
}

impl Index for EtcdIndex {
    fn owner(&self, repository: &str) -> Result<Option<String>, OciError> {
        self.read(Record::Repository(repository.into()), |r| r.repositories.get(repository).cloned())
    }

    fn blob(&self, repository: &str, digest: &str) -> Result<Option<u64>, OciError> {
        let pair = (repository.to_string(), digest.to_string());
        let size = self.read(Record::Blob(pair.0.clone(), pair.1.clone()), |r| r.blobs.get(&pair).map(u64::to_string))?;
        Ok(size.and_then(|s| s.parse().ok()))
    }

    fn manifest(&self, repository: &str, digest: &str) -> Result<Option<String>, OciError> {
        let pair = (repository.to_string(), digest.to_string());
        self.read(Record::Manifest(pair.0.clone(), pair.1.clone()), |r| r.manifests.get(&pair).cloned())
    }

    fn tag(&self, repository: &str, tag: &str) -> Result<Option<String>, OciError> {
        let pair = (repository.to_string(), tag.to_string());
        self.read(Record::Tag(pair.0.clone(), pair.1.clone()), |r| r.tags.get(&pair).cloned())
    }

    fn tags(&self, repository: &str) -> Result<Vec<String>, OciError> {
        let records = self.records();
        Ok(records.tags.keys().filter(|(r, _)| r == repository).map(|(_, tag)| tag.clone()).collect())
    }

    fn repositories(&self, account: &str) -> Result<Vec<String>, OciError> {
        let records = self.records();
        Ok(records.repositories.iter().filter(|(_, owner)| *owner == account).map(|(name, _)| name.clone()).collect())
    }

    fn add_blob(&self, account: &str, repository: &str, digest: &str, size: u64) -> Result<(), OciError> {
        let blob = Record::Blob(repository.to_string(), digest.to_string());
        self.claimed_write(account, repository, &[(blob, size.to_string())])
    }

    fn add_manifest(&self, account: &str, repository: &str, manifest: &NewManifest<'_>) -> Result<(), OciError> {
        // What the repository holds is never taken back: a reference known now stays known.
        let unknown = unknown_reference(manifest, |d| self.blob(repository, d), |d| Ok(self.manifest(repository, d)?.is_some()))?;
        if let Some(digest) = unknown {
            return Err(OciError::ManifestBlobUnknown(digest));
        }
        let mut puts = vec![(Record::Manifest(repository.into(), manifest.digest.into()), manifest.media_type.to_string())];
        if let Some(tag) = manifest.tag {
            puts.push((Record::Tag(repository.into(), tag.into()), manifest.digest.to_string()));
        }
        self.claimed_write(account, repository, &puts)
    }
}

/// Where a content's bytes are: the value of `oci/contents/<digest>`. Its chunks are listed in chunks of their
/// own (`list`: the JSON list of the content's chunk digests, cut into chunks), so the value stays small whatever
/// the content's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub size: u64,
    pub list: Vec<String>,
}

/// The repositories' bytes in the object store (see the module docs). Its methods block.
pub struct EtcdContents {
    etcd: Etcd,
    runtime: Handle,
    store: Arc<dyn ChunkStore>,
}

impl std::fmt::Debug for EtcdContents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdContents").finish_non_exhaustive()
    }
}

fn contents_key(digest: &str) -> String {
    key(&format!("oci/contents/{digest}"))
}

impl EtcdContents {
    /// Keeps the bytes in `roots`' [`CONTENTS_ROOT`], named in `etcd`.
    pub fn new(etcd: Etcd, roots: &dyn RootStores) -> Result<EtcdContents, EtcdError> {
        let store = roots.root(CONTENTS_ROOT).map_err(|e| EtcdError::Unavailable(format!("the object store: {e}")))?;
        Ok(EtcdContents { etcd, runtime: Handle::current(), store })
    }

    /// Puts `bytes` in chunks; their digests.
    async fn put_all(&self, bytes: &[u8]) -> Result<Vec<String>, OciError> {
        let mut digests = Vec::with_capacity(bytes.len().div_ceil(CHUNK_BYTES));
        for piece in bytes.chunks(CHUNK_BYTES) {
            digests.push(self.store.put(Bytes::copy_from_slice(piece)).await.map_err(shared)?.digest.to_string());
        }
        Ok(digests)
    }

    async fn get(&self, digest: &str) -> Result<Bytes, OciError> {
        let digest: ChunkDigest = digest.parse().map_err(|_| shared(format!("{digest:?} is not a chunk digest")))?;
        self.store.get(digest).await.map_err(shared)
    }
}

impl Contents for EtcdContents {
    fn keep(&self, digest: &str, path: &Path) -> Result<(), OciError> {
        let name = contents_key(digest);
        blocking_wait(&self.runtime, async {
            if self.etcd.get(&name, None).await.map_err(shared)?.kvs().first().is_some() {
                return Ok(());
            }
            let mut file = std::fs::File::open(path)?;
            let (mut chunks, mut size, mut piece) = (Vec::new(), 0u64, vec![0u8; CHUNK_BYTES]);
            loop {
                let mut filled = 0;
                while filled < piece.len() {
                    match file.read(&mut piece[filled..])? {
                        0 => break,
                        n => filled += n,
                    }
                }
                if filled == 0 {
                    break;
                }
                chunks.extend(self.put_all(&piece[..filled]).await?);
                size += filled as u64;
            }
            let list = self.put_all(&serde_json::to_vec(&chunks).map_err(shared)?).await?;
            let value = serde_json::to_vec(&Kept { size, list }).map_err(shared)?;
            let txn = Txn::new()
                .when([Compare::version(name.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(name.as_str(), value, None)]);
            // Kept by another front end meanwhile: the same bytes, either stands.
            self.etcd.txn(txn).await.map_err(shared)?;
            Ok(())
        })
    }

    fn fetch(&self, digest: &str, path: &Path) -> Result<bool, OciError> {
        let name = contents_key(digest);
        blocking_wait(&self.runtime, async {
            let got = self.etcd.get(&name, None).await.map_err(shared)?;
            let Some(kv) = got.kvs().first() else { return Ok(false) };
            let kept: Kept = serde_json::from_slice(kv.value()).map_err(|e| shared(format!("{name}: {e}")))?;
            let mut list = Vec::new();
            for digest in &kept.list {
                list.extend_from_slice(&self.get(digest).await?);
            }
            let chunks: Vec<String> = serde_json::from_slice(&list).map_err(|e| shared(format!("{name}'s chunk list: {e}")))?;
            let mut file = std::fs::File::create(path)?;
            let mut size = 0u64;
            for digest in &chunks {
                let chunk = self.get(digest).await?;
                size += chunk.len() as u64;
                file.write_all(&chunk)?;
            }
            if size != kept.size {
                return Err(shared(format!("{name}: its chunks hold {size} bytes, not {}", kept.size)));
            }
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_round_trip() {
        for record in [
            Record::Repository("team/app".into()),
            Record::Blob("team/app".into(), format!("sha256:{}", "a".repeat(64))),
            Record::Manifest("app".into(), format!("sha256:{}", "b".repeat(64))),
            Record::Tag("a/b/c".into(), "v1.2_rc-3".into()),
        ] {
            let full = record.key();
            let relative = full.split_once(INDEX).unwrap().1;
            assert_eq!(Record::parse(relative), Some(record));
        }
        for bad in ["", "repositories", "blobs/app", "tags/app", "other/app@x"] {
            assert_eq!(Record::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn memory_follows_puts_and_deletes() {
        let mut records = Records::default();
        let kv = |key: &str, value: Option<&str>| Kv { key: key.into(), value: value.map(|v| v.as_bytes().to_vec()), mod_revision: 1 };
        for change in [
            kv("repositories/app", Some("111111111111")),
            kv("blobs/app@sha256:x", Some("42")),
            kv("manifests/app@sha256:m", Some(ignis_oci::OCI_MANIFEST)),
            kv("tags/app@v1", Some("sha256:m")),
            kv("tags/app@v2", Some("sha256:m")),
            kv("tags/app@v2", None),
            kv("blobs/app@sha256:bad", Some("not a number")),
        ] {
            records.saw(&change);
        }
        assert_eq!(records.repositories.get("app").map(String::as_str), Some("111111111111"));
        assert_eq!(records.blobs.get(&("app".into(), "sha256:x".into())), Some(&42));
        assert_eq!(records.blobs.len(), 1);
        assert_eq!(records.tags.keys().cloned().collect::<Vec<_>>(), vec![("app".to_string(), "v1".to_string())]);
        assert_eq!(records.manifests.len(), 1);
    }
}
