//! [`EmbeddedRegistry`]: every record in memory, written through to the
//! store's redb database (table `functions`: `(account, name)` → the record's
//! JSON; this module is its only reader and writer).
//!
//! Reads take a read lock for a map lookup and never touch storage. Writes
//! (create, update, delete) are serialised by one async mutex, store the record
//! durably first and then change the map, so the map never shows what storage
//! does not hold.
//!
//! A write that creates a function gives it a new incarnation; every other write keeps the current one (callers
//! cannot change it), and versions carry their function's.
//!
//! Every record in the map, and each of its versions, holds its code tree
//! (`FunctionRecord::code`) and its merged layers (`FunctionRecord::opt`), set
//! here on every load and write.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use ignis_ids::AccountId;
use ignis_store::Store;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::{BoxFuture, Change, CodeRef, FunctionRecord, Registry, RegistryError, Written};

/// A table of records as JSON by (account, name).
pub(crate) type NamedTable = TableDefinition<'static, (&'static str, &'static str), &'static [u8]>;

/// (account, function name) → the record as JSON.
const FUNCTIONS: NamedTable = TableDefinition::new("functions");

pub(crate) type Key = (AccountId, String);

/// The registry of one server: in memory, written through to its store.
pub struct EmbeddedRegistry {
    store: Arc<Store>,
    functions: RwLock<HashMap<Key, Arc<FunctionRecord>>>,
    /// Function URL id → the function that has it; changed only under `writes`, after `functions`.
    urls: RwLock<HashMap<String, Key>>,
    writes: tokio::sync::Mutex<()>,
}

/// The ids of `record`'s function URLs.
pub fn url_ids(record: &FunctionRecord) -> impl Iterator<Item = &str> {
    record.urls.values().map(|url| url.url_id.as_str())
}

pub(crate) fn storage(context: &str) -> impl FnOnce(redb::Error) -> RegistryError + '_ {
    move |e| RegistryError::Storage(format!("storage: database error while {context}: {e}"))
}

/// Every record stored in `table` as `(account, name, JSON)`, ordered by account then name
/// (the table is made if missing).
pub(crate) fn stored(store: &Store, table: NamedTable) -> Result<Vec<(String, String, Vec<u8>)>, redb::Error> {
    let db = store.database();
    let txn = db.begin_write()?;
    txn.open_table(table)?;
    txn.commit()?;
    let txn = db.begin_read()?;
    let table = txn.open_table(table)?;
    let mut out = Vec::new();
    for item in table.iter()? {
        let (k, v) = item?;
        let (account, name) = k.value();
        out.push((account.to_string(), name.to_string(), v.value().to_vec()));
    }
    Ok(out)
}

/// Stores (`Some`) or deletes (`None`) one record of `table`, durably (fsync'd) when it returns.
pub(crate) fn put(store: &Store, table: NamedTable, account: &str, name: &str, record: Option<&[u8]>) -> Result<(), redb::Error> {
    let txn = store.database().begin_write()?;
    {
        let mut table = txn.open_table(table)?;
        match record {
            Some(bytes) => drop(table.insert((account, name), bytes)?),
            None => drop(table.remove((account, name))?),
        }
    }
    txn.commit()?;
    Ok(())
}

/// Every record of `table` (of what `kind` names: "function", "layer"), read,
/// each made to hold its code trees by `hold`.
pub(crate) fn load_all<T: serde::de::DeserializeOwned>(
    store: &Store,
    table: NamedTable,
    kind: &str,
    hold: fn(&Store, &mut T),
) -> Result<HashMap<Key, Arc<T>>, RegistryError> {
    let mut records = HashMap::new();
    for (account, name, bytes) in stored(store, table).map_err(storage(&format!("listing {kind}s")))? {
        let mut record: T = serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::Storage(format!("stored {kind} {account}/{name} is unreadable: {e}")))?;
        hold(store, &mut record);
        records.insert((AccountId::new(account), name), Arc::new(record));
    }
    Ok(records)
}

impl EmbeddedRegistry {
    /// Loads every stored function.
    pub fn load(store: Arc<Store>) -> Result<EmbeddedRegistry, RegistryError> {
        let functions = load_all(&store, FUNCTIONS, "function", hold_code)?;
        let urls = functions.iter().flat_map(|(key, r)| url_ids(r).map(|id| (id.to_string(), key.clone()))).collect();
        Ok(EmbeddedRegistry {
            store,
            functions: RwLock::new(functions),
            urls: RwLock::new(urls),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    /// Moves the index from `old`'s URLs to `new`'s (of the function `key`).
    fn index_urls(&self, key: &Key, old: Option<&FunctionRecord>, new: Option<&FunctionRecord>) {
        let mut urls = self.urls.write().unwrap_or_else(|e| e.into_inner());
        for id in old.into_iter().flat_map(url_ids) {
            urls.remove(id);
        }
        for id in new.into_iter().flat_map(url_ids) {
            urls.insert(id.to_string(), key.clone());
        }
    }

    /// Stores `record` (or deletes, `None`) off the async runtime.
    async fn store(&self, account: &AccountId, name: &str, record: Option<Vec<u8>>) -> Result<(), RegistryError> {
        let store = self.store.clone();
        let (a, n) = (account.as_str().to_string(), name.to_string());
        let context = if record.is_some() { "storing a function" } else { "deleting a function" };
        tokio::task::spawn_blocking(move || put(&store, FUNCTIONS, &a, &n, record.as_deref()))
            .await
            .map_err(|e| RegistryError::Storage(e.to_string()))?
            .map_err(storage(context))
    }
}

impl Registry for EmbeddedRegistry {
    fn get(&self, account: &AccountId, name: &str) -> Option<Arc<FunctionRecord>> {
        let functions = self.functions.read().unwrap_or_else(|e| e.into_inner());
        functions.get(&(account.clone(), name.to_string())).cloned()
    }

    fn list(&self, account: &AccountId) -> Vec<Arc<FunctionRecord>> {
        let functions = self.functions.read().unwrap_or_else(|e| e.into_inner());
        let sorted: BTreeMap<&str, &Arc<FunctionRecord>> =
            functions.iter().filter(|((a, _), _)| a == account).map(|((_, n), r)| (n.as_str(), r)).collect();
        sorted.into_values().cloned().collect()
    }

    fn all(&self) -> Vec<(AccountId, Arc<FunctionRecord>)> {
        let functions = self.functions.read().unwrap_or_else(|e| e.into_inner());
        functions.iter().map(|((account, _), record)| (account.clone(), record.clone())).collect()
    }

    fn live_code(&self) -> HashSet<String> {
        live_code(self.functions.read().unwrap_or_else(|e| e.into_inner()).values().map(|r| &**r))
    }

    fn find_url(&self, url_id: &str) -> Option<(AccountId, Arc<FunctionRecord>)> {
        let (account, name) = self.urls.read().unwrap_or_else(|e| e.into_inner()).get(url_id)?.clone();
        let record = self.get(&account, &name)?;
        let current = url_ids(&record).any(|id| id == url_id);
        current.then_some((account, record))
    }

    fn write<'a>(
        &'a self,
        account: &'a AccountId,
        name: &'a str,
        change: Change<'a>,
    ) -> BoxFuture<'a, Result<Option<Written>, RegistryError>> {
        Box::pin(async move {
            let _guard = self.writes.lock().await;
            let current = self.get(account, name);
            let Some(mut record) = change(current.as_deref()) else { return Ok(None) };
            set_incarnation(&mut record, current.as_deref().map(|c| c.incarnation));
            hold_code(&self.store, &mut record);
            let bytes = serde_json::to_vec(&record).map_err(|e| RegistryError::Storage(e.to_string()))?;
            self.store(account, name, Some(bytes)).await?;
            let record = Arc::new(record);
            let key = (account.clone(), name.to_string());
            self.functions.write().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), record.clone());
            self.index_urls(&key, current.as_deref(), Some(&record));
            Ok(Some(Written { old: current, new: record }))
        })
    }

    fn delete<'a>(
        &'a self,
        account: &'a AccountId,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<FunctionRecord>>, RegistryError>> {
        Box::pin(async move {
            let _guard = self.writes.lock().await;
            let Some(current) = self.get(account, name) else { return Ok(None) };
            self.store(account, name, None).await?;
            let key = (account.clone(), name.to_string());
            self.functions.write().unwrap_or_else(|e| e.into_inner()).remove(&key);
            self.index_urls(&key, Some(&current), None);
            Ok(Some(current))
        })
    }
}

impl Drop for EmbeddedRegistry {
    /// The records go from memory, not from storage: their code stays.
    fn drop(&mut self) {
        self.store.keep_code();
    }
}

/// The code trees (hex SHA-256) `records` and their versions use: zip functions' code and merged layers.
pub fn live_code<'a>(records: impl Iterator<Item = &'a FunctionRecord>) -> HashSet<String> {
    records
        .flat_map(|r| std::iter::once(r).chain(r.versions.iter()))
        .flat_map(|r| {
            let code = Some(&r.code_sha256_hex).filter(|_| r.image.is_none());
            code.into_iter().chain(Some(&r.opt_sha256_hex).filter(|o| !o.is_empty()))
        })
        .cloned()
        .collect()
}

/// Gives `record` and its versions the function's incarnation: the current record's (`existing`), or a new random
/// one (never 0) when the write creates the function.
pub fn set_incarnation(record: &mut FunctionRecord, existing: Option<u64>) {
    let incarnation = existing.unwrap_or_else(crate::sessions::new_incarnation);
    record.incarnation = incarnation;
    for version in &mut record.versions {
        version.incarnation = incarnation;
    }
}

/// Makes `record` and each of its versions hold their code trees (and their merged layers).
pub fn hold_code(store: &Store, record: &mut FunctionRecord) {
    fn hold(store: &Store, r: &mut FunctionRecord) {
        if !r.code.holds(&r.code_sha256_hex) {
            r.code = CodeRef::new(store.hold_code(&r.code_sha256_hex));
        }
        if r.opt_sha256_hex.is_empty() {
            r.opt = CodeRef::default();
        } else if !r.opt.holds(&r.opt_sha256_hex) {
            r.opt = CodeRef::new(store.hold_code(&r.opt_sha256_hex));
        }
    }
    hold(store, record);
    for version in &mut record.versions {
        hold(store, version);
    }
}
