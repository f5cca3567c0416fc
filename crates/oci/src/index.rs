//! What the repositories hold, apart from the bytes: which account owns each repository, which blobs and manifests
//! each holds, and its tags ([`Index`]). One process keeps it in its store's database ([`RedbIndex`]); a cluster's
//! front ends share one in etcd (`ignis_etcd::EtcdIndex`).
//!
//! Every write claims its repository for the account acting (made its own if it has no owner; another account's
//! is [`OciError::Denied`]) in the same step as the write. Reads see every write this process made.

use ignis_store::{DbContext, Store};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::sync::Arc;

use crate::OciError;

/// repository name -> owning account.
const REPOSITORIES: TableDefinition<&str, &str> = TableDefinition::new("oci_repositories");
/// (repository, blob digest) -> size.
const BLOBS: TableDefinition<(&str, &str), u64> = TableDefinition::new("oci_blobs");
/// (repository, manifest digest) -> media type.
const MANIFESTS: TableDefinition<(&str, &str), &str> = TableDefinition::new("oci_manifests");
/// (repository, tag) -> manifest digest.
const TAGS: TableDefinition<(&str, &str), &str> = TableDefinition::new("oci_tags");

/// A manifest to record: its digest and media type, the tag it is pushed under (if any), and what it references
/// (blobs with their sizes; for an index, manifests), which the repository must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewManifest<'a> {
    pub digest: &'a str,
    pub media_type: &'a str,
    pub tag: Option<&'a str>,
    pub referenced: &'a [(String, u64)],
    /// It is an index: `referenced` names manifests.
    pub index: bool,
}

/// The repositories' records (see the module docs). Methods may block.
pub trait Index: Send + Sync + std::fmt::Debug {
    /// The account owning `repository`, if it has one.
    fn owner(&self, repository: &str) -> Result<Option<String>, OciError>;
    /// The size of blob `digest` of `repository`, if it holds it.
    fn blob(&self, repository: &str, digest: &str) -> Result<Option<u64>, OciError>;
    /// The media type of manifest `digest` of `repository`, if it holds it.
    fn manifest(&self, repository: &str, digest: &str) -> Result<Option<String>, OciError>;
    /// The manifest digest `tag` of `repository` names.
    fn tag(&self, repository: &str, tag: &str) -> Result<Option<String>, OciError>;
    /// The tags of `repository`, sorted.
    fn tags(&self, repository: &str) -> Result<Vec<String>, OciError>;
    /// The repositories `account` owns, sorted.
    fn repositories(&self, account: &str) -> Result<Vec<String>, OciError>;
    /// Records that `repository` holds blob `digest` of `size` bytes, claiming it for `account`.
    fn add_blob(&self, account: &str, repository: &str, digest: &str, size: u64) -> Result<(), OciError>;
    /// Records `manifest` in `repository`, claiming it for `account`; [`OciError::ManifestBlobUnknown`] if the
    /// repository lacks what it references (a blob of another size counts as lacking).
    fn add_manifest(&self, account: &str, repository: &str, manifest: &NewManifest<'_>) -> Result<(), OciError>;
}

/// Whether `owner` (the repository's, if any) lets `account` write: its own, or no one's yet.
pub fn writable(owner: Option<&str>, account: &str, repository: &str) -> Result<(), OciError> {
    match owner {
        Some(owner) if owner != account => Err(OciError::Denied(repository.into())),
        _ => Ok(()),
    }
}

/// The first of `manifest`'s references that `known` (a blob's size, or whether a manifest is held) says the
/// repository lacks.
pub fn unknown_reference(
    manifest: &NewManifest<'_>,
    blob: impl Fn(&str) -> Result<Option<u64>, OciError>,
    held_manifest: impl Fn(&str) -> Result<bool, OciError>,
) -> Result<Option<String>, OciError> {
    for (digest, size) in manifest.referenced {
        let known = if manifest.index { held_manifest(digest)? } else { blob(digest)? == Some(*size) };
        if !known {
            return Ok(Some(digest.clone()));
        }
    }
    Ok(None)
}

/// The index in the store's database: the `oci_*` tables.
#[derive(Debug)]
pub struct RedbIndex {
    store: Arc<Store>,
}

impl RedbIndex {
    /// Creates the tables if missing.
    pub fn open(store: Arc<Store>) -> Result<RedbIndex, OciError> {
        const CTX: &str = "creating the registry's tables";
        let txn = store.database().begin_write().ctx(CTX)?;
        txn.open_table(REPOSITORIES).ctx(CTX)?;
        txn.open_table(BLOBS).ctx(CTX)?;
        txn.open_table(MANIFESTS).ctx(CTX)?;
        txn.open_table(TAGS).ctx(CTX)?;
        store.commit_write(txn, true, CTX)?;
        Ok(RedbIndex { store })
    }

    /// Makes `repository` the account's if it has no owner yet; another account's is `Denied`.
    fn claim(txn: &redb::WriteTransaction, account: &str, repository: &str, context: &'static str) -> Result<(), OciError> {
        let mut repositories = txn.open_table(REPOSITORIES).ctx(context)?;
        let owner = repositories.get(repository).ctx(context)?.map(|o| o.value().to_string());
        writable(owner.as_deref(), account, repository)?;
        if owner.is_none() {
            repositories.insert(repository, account).ctx(context)?;
        }
        Ok(())
    }
}

impl Index for RedbIndex {
    fn owner(&self, repository: &str) -> Result<Option<String>, OciError> {
        const CTX: &str = "reading a repository";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let owner = txn.open_table(REPOSITORIES).ctx(CTX)?.get(repository).ctx(CTX)?.map(|o| o.value().to_string());
        Ok(owner)
    }

    fn blob(&self, repository: &str, digest: &str) -> Result<Option<u64>, OciError> {
        const CTX: &str = "reading a blob";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let size = txn.open_table(BLOBS).ctx(CTX)?.get((repository, digest)).ctx(CTX)?.map(|s| s.value());
        Ok(size)
    }

    fn manifest(&self, repository: &str, digest: &str) -> Result<Option<String>, OciError> {
        const CTX: &str = "reading a manifest";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let media_type = txn.open_table(MANIFESTS).ctx(CTX)?.get((repository, digest)).ctx(CTX)?.map(|m| m.value().to_string());
        Ok(media_type)
    }

    fn tag(&self, repository: &str, tag: &str) -> Result<Option<String>, OciError> {
        const CTX: &str = "reading a tag";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let digest = txn.open_table(TAGS).ctx(CTX)?.get((repository, tag)).ctx(CTX)?.map(|d| d.value().to_string());
        Ok(digest)
    }

    fn tags(&self, repository: &str) -> Result<Vec<String>, OciError> {
        const CTX: &str = "listing tags";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let table = txn.open_table(TAGS).ctx(CTX)?;
        let mut tags = Vec::new();
        for item in table.range((repository, "")..).ctx(CTX)? {
            let (k, _) = item.ctx(CTX)?;
            let (repo, tag) = k.value();
            if repo != repository {
                break;
            }
            tags.push(tag.to_string());
        }
        Ok(tags)
    }

    fn repositories(&self, account: &str) -> Result<Vec<String>, OciError> {
        const CTX: &str = "listing repositories";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let mut out = Vec::new();
        for item in txn.open_table(REPOSITORIES).ctx(CTX)?.iter().ctx(CTX)? {
            let (name, owner) = item.ctx(CTX)?;
            if owner.value() == account {
                out.push(name.value().to_string());
            }
        }
        Ok(out)
    }

    fn add_blob(&self, account: &str, repository: &str, digest: &str, size: u64) -> Result<(), OciError> {
        const CTX: &str = "adding a blob";
        let txn = self.store.database().begin_write().ctx(CTX)?;
        {
            Self::claim(&txn, account, repository, CTX)?;
            txn.open_table(BLOBS).ctx(CTX)?.insert((repository, digest), size).ctx(CTX)?;
        }
        self.store.commit_write(txn, true, CTX)?;
        Ok(())
    }

    fn add_manifest(&self, account: &str, repository: &str, manifest: &NewManifest<'_>) -> Result<(), OciError> {
        const CTX: &str = "storing a manifest";
        let txn = self.store.database().begin_write().ctx(CTX)?;
        {
            Self::claim(&txn, account, repository, CTX)?;
            let blobs = txn.open_table(BLOBS).ctx(CTX)?;
            let mut manifests = txn.open_table(MANIFESTS).ctx(CTX)?;
            let unknown = unknown_reference(
                manifest,
                |d| Ok(blobs.get((repository, d)).ctx(CTX)?.map(|s| s.value())),
                |d| Ok(manifests.get((repository, d)).ctx(CTX)?.is_some()),
            )?;
            if let Some(digest) = unknown {
                return Err(OciError::ManifestBlobUnknown(digest));
            }
            manifests.insert((repository, manifest.digest), manifest.media_type).ctx(CTX)?;
            if let Some(tag) = manifest.tag {
                txn.open_table(TAGS).ctx(CTX)?.insert((repository, tag), manifest.digest).ctx(CTX)?;
            }
        }
        self.store.commit_write(txn, true, CTX)?;
        Ok(())
    }
}
