//! The function registry: every function's record, in memory for the invoke
//! path, written through to storage.
//!
//! Reads take a read lock for a map lookup and never touch storage. Writes
//! (create, update, delete) are serialised by one async mutex, store the record
//! durably first and then change the map, so the map never shows what storage
//! does not hold.
//!
//! Every record in the map, and each of its versions, holds its code tree
//! (`FunctionRecord::code`, set here on every load and write): a tree goes
//! when no record, and no clone of one that an invocation or a sandbox keeps,
//! uses it any more.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use ignis_store::Store;

use crate::error::ApiError;
use crate::function::FunctionRecord;

type Key = (String, String);

pub struct Registry {
    store: Arc<Store>,
    functions: RwLock<HashMap<Key, Arc<FunctionRecord>>>,
    writes: tokio::sync::Mutex<()>,
}

impl Registry {
    /// Loads every stored function.
    pub fn load(store: Arc<Store>) -> Result<Registry, ApiError> {
        let mut functions = HashMap::new();
        for (account, name, bytes) in store.functions()? {
            let mut record: FunctionRecord = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::Service(format!("stored function {account}/{name} is unreadable: {e}")))?;
            hold_code(&store, &mut record);
            functions.insert((account, name), Arc::new(record));
        }
        Ok(Registry { store, functions: RwLock::new(functions), writes: tokio::sync::Mutex::new(()) })
    }

    pub fn get(&self, account: &str, name: &str) -> Option<Arc<FunctionRecord>> {
        let functions = self.functions.read().unwrap_or_else(|e| e.into_inner());
        functions.get(&(account.to_string(), name.to_string())).cloned()
    }

    /// The account's functions, sorted by name.
    pub fn list(&self, account: &str) -> Vec<Arc<FunctionRecord>> {
        let functions = self.functions.read().unwrap_or_else(|e| e.into_inner());
        let sorted: BTreeMap<&str, &Arc<FunctionRecord>> =
            functions.iter().filter(|((a, _), _)| a == account).map(|((_, n), r)| (n.as_str(), r)).collect();
        sorted.into_values().cloned().collect()
    }

    /// Every function, with its account.
    pub fn all(&self) -> Vec<(String, Arc<FunctionRecord>)> {
        let functions = self.functions.read().unwrap_or_else(|e| e.into_inner());
        functions.iter().map(|((account, _), record)| (account.clone(), record.clone())).collect()
    }

    /// Every code tree some function or version uses.
    pub fn live_code(&self) -> std::collections::HashSet<String> {
        let functions = self.functions.read().unwrap_or_else(|e| e.into_inner());
        functions
            .values()
            .flat_map(|r| std::iter::once(&**r).chain(r.versions.iter()))
            .map(|r| r.code_sha256_hex.clone())
            .collect()
    }

    /// Applies `change` to the current record (None if absent) under the write
    /// lock, and stores the record it returns. `change` decides conflicts.
    /// Returns the record replaced, if any, and the new one.
    pub async fn write(
        &self,
        account: &str,
        name: &str,
        change: impl FnOnce(Option<&FunctionRecord>) -> Result<FunctionRecord, ApiError>,
    ) -> Result<(Option<Arc<FunctionRecord>>, Arc<FunctionRecord>), ApiError> {
        let _guard = self.writes.lock().await;
        let current = self.get(account, name);
        let mut record = change(current.as_deref())?;
        hold_code(&self.store, &mut record);
        let record = Arc::new(record);
        let bytes = serde_json::to_vec(&*record).map_err(|e| ApiError::Service(e.to_string()))?;
        let store = self.store.clone();
        let (a, n) = (account.to_string(), name.to_string());
        tokio::task::spawn_blocking(move || store.put_function(&a, &n, &bytes))
            .await
            .map_err(|e| ApiError::Service(e.to_string()))??;
        let mut functions = self.functions.write().unwrap_or_else(|e| e.into_inner());
        functions.insert((account.to_string(), name.to_string()), record.clone());
        Ok((current, record))
    }

    /// Deletes a function; returns its last record.
    pub async fn delete(&self, account: &str, name: &str) -> Result<Option<Arc<FunctionRecord>>, ApiError> {
        let _guard = self.writes.lock().await;
        let Some(current) = self.get(account, name) else { return Ok(None) };
        let store = self.store.clone();
        let (a, n) = (account.to_string(), name.to_string());
        tokio::task::spawn_blocking(move || store.delete_function(&a, &n))
            .await
            .map_err(|e| ApiError::Service(e.to_string()))??;
        let mut functions = self.functions.write().unwrap_or_else(|e| e.into_inner());
        functions.remove(&(account.to_string(), name.to_string()));
        Ok(Some(current))
    }
}

impl Drop for Registry {
    /// The records go from memory, not from storage: their code stays.
    fn drop(&mut self) {
        self.store.keep_code();
    }
}

/// Makes `record` and each of its versions hold their code trees.
fn hold_code(store: &Store, record: &mut FunctionRecord) {
    fn hold(store: &Store, r: &mut FunctionRecord) {
        if !r.code.holds(&r.code_sha256_hex) {
            r.code = crate::function::CodeRef::new(store.hold_code(&r.code_sha256_hex));
        }
    }
    hold(store, record);
    for version in &mut record.versions {
        hold(store, version);
    }
}
