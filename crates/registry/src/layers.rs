//! Lambda layers: every account's layer versions ([`LayerRecord`],
//! [`LayerVersionRecord`]) behind the [`Layers`] seam, and
//! [`EmbeddedLayers`], in memory and written through to the table `layers`
//! (`(account, layer name)` → the record's JSON; this module is its only
//! reader and writer).
//!
//! A layer version is immutable; versions are numbered per layer from 1 and
//! numbers are never reused (the layer's record, with its highest number,
//! stays after its last version is deleted). Each version holds its code tree
//! ([`LayerVersionRecord::code`]) while it exists; a function using it holds
//! its own merged copy (`FunctionRecord::opt`), so deleting a version never
//! breaks a function. Reads are memory only; writes are serialised and
//! durable before they show, as the functions' are.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use ignis_ids::AccountId;
use ignis_store::Store;
use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::embedded::{Key, NamedTable, load_all, put, storage};
use crate::{BoxFuture, CodeRef, RegistryError};

/// (account, layer name) → the layer's record as JSON.
const LAYERS: NamedTable = TableDefinition::new("layers");

/// A layer of one account: its versions, oldest first, and the highest number ever given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub name: String,
    pub last_version: u32,
    #[serde(default)]
    pub versions: Vec<LayerVersionRecord>,
}

impl LayerRecord {
    /// The version numbered `version`, if it exists.
    pub fn version(&self, version: u32) -> Option<&LayerVersionRecord> {
        self.versions.iter().find(|v| v.version == version)
    }
}

/// One published layer version (immutable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerVersionRecord {
    /// Its number (given by [`Layers::publish`]).
    pub version: u32,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_info: Option<String>,
    #[serde(default)]
    pub compatible_runtimes: Vec<String>,
    #[serde(default)]
    pub compatible_architectures: Vec<String>,
    /// Hex SHA-256 of the zip: names the unpacked tree.
    pub code_sha256_hex: String,
    /// Base64 SHA-256 of the zip (Lambda's `CodeSha256`).
    pub code_sha256: String,
    /// The zip's size (Lambda's `CodeSize`).
    pub code_size: u64,
    /// Total bytes unpacked.
    pub unzipped_size: u64,
    /// Milliseconds since the epoch.
    pub created_ms: i64,
    /// Keeps the tree on disk while the version exists; set by the registry.
    #[serde(skip)]
    pub code: CodeRef,
}

/// Every account's layers. Implementations keep the module's invariants.
pub trait Layers: Send + Sync {
    /// `account`'s layer `name` (possibly without versions left).
    fn get(&self, account: &AccountId, name: &str) -> Option<Arc<LayerRecord>>;
    /// `account`'s layers with at least one version, by name.
    fn list(&self, account: &AccountId) -> Vec<Arc<LayerRecord>>;
    /// The trees of every existing layer version (hex names).
    fn live_code(&self) -> HashSet<String>;
    /// Stores `version` as the next version of `account`'s layer `name`
    /// (made if new); answers it with its number.
    fn publish<'a>(
        &'a self,
        account: &'a AccountId,
        name: &'a str,
        version: LayerVersionRecord,
    ) -> BoxFuture<'a, Result<LayerVersionRecord, RegistryError>>;
    /// Deletes one version; whether it existed.
    fn delete_version<'a>(&'a self, account: &'a AccountId, name: &'a str, version: u32) -> BoxFuture<'a, Result<bool, RegistryError>>;
}


/// The layers of one server: in memory, written through to its store.
pub struct EmbeddedLayers {
    store: Arc<Store>,
    layers: RwLock<HashMap<Key, Arc<LayerRecord>>>,
    writes: tokio::sync::Mutex<()>,
}

impl EmbeddedLayers {
    /// Loads every stored layer.
    pub fn load(store: Arc<Store>) -> Result<EmbeddedLayers, RegistryError> {
        let layers = load_all(&store, LAYERS, "layer", hold_code)?;
        Ok(EmbeddedLayers { store, layers: RwLock::new(layers), writes: tokio::sync::Mutex::new(()) })
    }

    /// Stores `record` durably (off the async runtime), then shows it.
    async fn write(&self, account: &AccountId, mut record: LayerRecord) -> Result<(), RegistryError> {
        hold_code(&self.store, &mut record);
        let bytes = serde_json::to_vec(&record).map_err(|e| RegistryError::Storage(e.to_string()))?;
        let store = self.store.clone();
        let (a, n) = (account.as_str().to_string(), record.name.clone());
        tokio::task::spawn_blocking(move || put(&store, LAYERS, &a, &n, Some(&bytes)))
            .await
            .map_err(|e| RegistryError::Storage(e.to_string()))?
            .map_err(storage("storing a layer"))?;
        let mut layers = self.layers.write().unwrap_or_else(|e| e.into_inner());
        layers.insert((account.clone(), record.name.clone()), Arc::new(record));
        Ok(())
    }
}

/// Makes each version of `record` hold its tree.
pub fn hold_code(store: &Store, record: &mut LayerRecord) {
    for v in &mut record.versions {
        if !v.code.holds(&v.code_sha256_hex) {
            v.code = CodeRef::new(store.hold_code(&v.code_sha256_hex));
        }
    }
}

impl Layers for EmbeddedLayers {
    fn get(&self, account: &AccountId, name: &str) -> Option<Arc<LayerRecord>> {
        let layers = self.layers.read().unwrap_or_else(|e| e.into_inner());
        layers.get(&(account.clone(), name.to_string())).cloned()
    }

    fn list(&self, account: &AccountId) -> Vec<Arc<LayerRecord>> {
        let layers = self.layers.read().unwrap_or_else(|e| e.into_inner());
        let sorted: BTreeMap<&str, &Arc<LayerRecord>> = layers
            .iter()
            .filter(|((a, _), r)| a == account && !r.versions.is_empty())
            .map(|((_, n), r)| (n.as_str(), r))
            .collect();
        sorted.into_values().cloned().collect()
    }

    fn live_code(&self) -> HashSet<String> {
        let layers = self.layers.read().unwrap_or_else(|e| e.into_inner());
        layers.values().flat_map(|r| r.versions.iter().map(|v| v.code_sha256_hex.clone())).collect()
    }

    fn publish<'a>(
        &'a self,
        account: &'a AccountId,
        name: &'a str,
        mut version: LayerVersionRecord,
    ) -> BoxFuture<'a, Result<LayerVersionRecord, RegistryError>> {
        Box::pin(async move {
            let _guard = self.writes.lock().await;
            let mut record = match self.get(account, name) {
                Some(current) => (*current).clone(),
                None => LayerRecord { name: name.to_string(), last_version: 0, versions: Vec::new() },
            };
            record.last_version += 1;
            version.version = record.last_version;
            record.versions.push(version.clone());
            self.write(account, record).await?;
            Ok(version)
        })
    }

    fn delete_version<'a>(&'a self, account: &'a AccountId, name: &'a str, version: u32) -> BoxFuture<'a, Result<bool, RegistryError>> {
        Box::pin(async move {
            let _guard = self.writes.lock().await;
            let Some(current) = self.get(account, name).filter(|r| r.version(version).is_some()) else { return Ok(false) };
            let mut record = (*current).clone();
            record.versions.retain(|v| v.version != version);
            self.write(account, record).await?;
            Ok(true)
        })
    }
}

impl Drop for EmbeddedLayers {
    /// The records go from memory, not from storage: their code stays.
    fn drop(&mut self) {
        self.store.keep_code();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(hex: &str) -> LayerVersionRecord {
        LayerVersionRecord {
            version: 0,
            description: String::new(),
            license_info: None,
            compatible_runtimes: Vec::new(),
            compatible_architectures: Vec::new(),
            code_sha256_hex: hex.repeat(32),
            code_sha256: String::new(),
            code_size: 1,
            unzipped_size: 1,
            created_ms: 0,
            code: CodeRef::default(),
        }
    }

    #[tokio::test]
    async fn numbers_are_never_reused_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let account = AccountId::new("123456789012");
        let layers = EmbeddedLayers::load(store.clone()).unwrap();
        assert_eq!(layers.publish(&account, "lib", version("ab")).await.unwrap().version, 1);
        assert_eq!(layers.publish(&account, "lib", version("cd")).await.unwrap().version, 2);
        assert!(layers.delete_version(&account, "lib", 2).await.unwrap());
        assert!(!layers.delete_version(&account, "lib", 2).await.unwrap());
        assert!(layers.delete_version(&account, "lib", 1).await.unwrap());
        assert!(layers.list(&account).is_empty());
        assert!(layers.live_code().is_empty());
        assert_eq!(layers.publish(&account, "lib", version("ef")).await.unwrap().version, 3);
        assert!(layers.list(&AccountId::new("210987654321")).is_empty());
        drop(layers);
        let layers = EmbeddedLayers::load(store).unwrap();
        let record = layers.get(&account, "lib").unwrap();
        assert_eq!((record.last_version, record.versions.len()), (3, 1));
        assert_eq!(layers.live_code(), HashSet::from(["ef".repeat(32)]));
        assert!(record.versions[0].code.holds(&"ef".repeat(32)));
    }
}
