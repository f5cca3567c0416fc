//! [`EtcdRegistry`]: every function's record in etcd (`functions/<account>/<name>`, the record's JSON), followed
//! into memory by a [`Mirror`].
//!
//! Reads are the embedded registry's: a read lock and a map lookup. A write reads the key's record and its
//! modification revision from etcd (not from memory, which may be behind), runs the change on it, ships the
//! code trees the new record names ([`CodeShare`]), and stores it with a transaction that compares the
//! revision: another front end's write in between makes it [`RegistryError::Conflict`], storing nothing. Writes
//! through one front end are serialised by its mutex, so they never conflict with each other. The write then
//! waits until the mirror shows its revision.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use ignis_ids::AccountId;
use ignis_registry::{BoxFuture, Change, FunctionRecord, Registry, RegistryError, Written};
use ignis_store::Store;

use crate::code::CodeShare;
use crate::mirror::{Apply, Kv, Mirror};
use crate::{Etcd, EtcdError, key};

type Key = (AccountId, String);

/// A record in memory and the revision etcd stored it at.
struct Entry {
    record: Arc<FunctionRecord>,
    revision: i64,
}

/// What the mirror fills: the records, and the index of their function URLs.
struct Shown {
    store: Arc<Store>,
    code: Arc<CodeShare>,
    functions: RwLock<HashMap<Key, Entry>>,
    /// Function URL id → the function that has it; changed after `functions`.
    urls: RwLock<HashMap<String, Key>>,
}

/// The registry of a cluster's front end: in etcd, followed into memory.
pub struct EtcdRegistry {
    etcd: Etcd,
    region: String,
    shown: Arc<Shown>,
    mirror: Mirror,
    writes: tokio::sync::Mutex<()>,
}

fn record_key(account: &AccountId, name: &str) -> String {
    key(&format!("functions/{account}/{name}"))
}

/// `<account>/<name>` as a key of the map.
fn parse_key(suffix: &str) -> Option<Key> {
    let (account, name) = suffix.split_once('/')?;
    Some((AccountId::new(account), name.to_string()))
}

impl Shown {
    /// The record `bytes` hold, its code trees fetched to this node and held.
    async fn decode(&self, key: &Key, bytes: &[u8]) -> Option<FunctionRecord> {
        let mut record: FunctionRecord = match serde_json::from_slice(bytes) {
            Ok(record) => record,
            Err(e) => {
                tracing::error!(account = %key.0, function = %key.1, error = %e, "a function's record in etcd is unreadable");
                return None;
            }
        };
        // The fetched trees stay until the record holds them.
        let _fetched = match self.code.fetch_record(&record).await {
            Ok(holds) => holds,
            Err(e) => {
                tracing::warn!(account = %key.0, function = %key.1, error = %e, "cannot fetch the function's code; its invocations fail until it is here");
                Vec::new()
            }
        };
        ignis_registry::hold_code(&self.store, &mut record);
        Some(record)
    }

    /// Shows `entry` as `key`'s (`None`: deleted), moving the URL index along.
    fn show(&self, key: Key, entry: Option<Entry>) {
        let new_ids: Vec<String> =
            entry.iter().flat_map(|e| ignis_registry::url_ids(&e.record).map(str::to_string)).collect();
        let old = {
            let mut functions = self.functions.write().unwrap_or_else(|e| e.into_inner());
            match entry {
                Some(entry) => functions.insert(key.clone(), entry),
                None => functions.remove(&key),
            }
        };
        let mut urls = self.urls.write().unwrap_or_else(|e| e.into_inner());
        for id in old.iter().flat_map(|old| ignis_registry::url_ids(&old.record)) {
            urls.remove(id);
        }
        for id in new_ids {
            urls.insert(id, key.clone());
        }
    }
}

impl Apply for Shown {
    fn reset(&self, all: Vec<Kv>) -> crate::mirror::BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut functions = HashMap::new();
            for kv in all {
                let Some(key) = parse_key(&kv.key) else { continue };
                let Some(bytes) = &kv.value else { continue };
                if let Some(record) = self.decode(&key, bytes).await {
                    functions.insert(key, Entry { record: Arc::new(record), revision: kv.mod_revision });
                }
            }
            let urls = functions
                .iter()
                .flat_map(|(key, e)| ignis_registry::url_ids(&e.record).map(|id| (id.to_string(), key.clone())))
                .collect();
            *self.functions.write().unwrap_or_else(|e| e.into_inner()) = functions;
            *self.urls.write().unwrap_or_else(|e| e.into_inner()) = urls;
        })
    }

    fn apply(&self, changes: Vec<Kv>) -> crate::mirror::BoxFuture<'_, ()> {
        Box::pin(async move {
            for kv in changes {
                let Some(key) = parse_key(&kv.key) else { continue };
                let entry = match &kv.value {
                    None => None,
                    Some(bytes) => match self.decode(&key, bytes).await {
                        Some(record) => Some(Entry { record: Arc::new(record), revision: kv.mod_revision }),
                        None => continue,
                    },
                };
                self.show(key, entry);
            }
        })
    }
}

impl EtcdRegistry {
    /// Loads every function from `etcd` (fetching the code trees this node lacks through `code`) and follows
    /// them. `region` names functions in errors.
    pub async fn open(etcd: Etcd, store: Arc<Store>, code: Arc<CodeShare>, region: &str) -> Result<EtcdRegistry, EtcdError> {
        let shown = Arc::new(Shown { store, code, functions: RwLock::default(), urls: RwLock::default() });
        let mirror = Mirror::start(etcd.clone(), key("functions/"), shown.clone()).await?;
        Ok(EtcdRegistry { etcd, region: region.to_string(), shown, mirror, writes: tokio::sync::Mutex::new(()) })
    }

    /// The record etcd holds for `account`'s `name` now, and its revision (0: none).
    async fn current(&self, account: &AccountId, name: &str) -> Result<(Option<Arc<FunctionRecord>>, i64), RegistryError> {
        let got = self.etcd.get(&record_key(account, name), None).await?;
        let Some(kv) = got.kvs().first() else { return Ok((None, 0)) };
        let key = (account.clone(), name.to_string());
        let shown = {
            let functions = self.shown.functions.read().unwrap_or_else(|e| e.into_inner());
            functions.get(&key).filter(|e| e.revision == kv.mod_revision()).map(|e| e.record.clone())
        };
        let record = match shown {
            Some(record) => record,
            None => {
                let mut record: FunctionRecord = serde_json::from_slice(kv.value()).map_err(|e| EtcdError::Corrupt {
                    key: record_key(account, name),
                    reason: e.to_string(),
                })?;
                ignis_registry::hold_code(&self.shown.store, &mut record);
                Arc::new(record)
            }
        };
        Ok((Some(record), kv.mod_revision()))
    }

    /// Stores `value` as `account`'s `name` (`None`: deletes it) if it is still at `revision`, the one the write
    /// read; waits until memory shows it.
    async fn decide(&self, account: &AccountId, name: &str, revision: i64, value: Option<Vec<u8>>) -> Result<(), RegistryError> {
        let key = record_key(account, name);
        let change = match &value {
            Some(bytes) => TxnOp::put(key.clone(), bytes.clone(), None),
            None => TxnOp::delete(key.clone(), None),
        };
        let txn = Txn::new().when([Compare::mod_revision(key.clone(), CompareOp::Equal, revision)]).and_then([change]);
        let Some(stored) = self.etcd.decide(txn, &key, value.as_deref()).await? else {
            let resource = ignis_ids::arn::function(&self.region, account.as_str(), name);
            return Err(RegistryError::Conflict { resource });
        };
        if let Err(e) = self.mirror.reached(stored).await {
            // Stored: the write happened, and memory shows it when the watch brings it.
            tracing::warn!(%account, function = name, error = %e, "a stored write is not shown yet");
        }
        Ok(())
    }
}

impl Registry for EtcdRegistry {
    fn get(&self, account: &AccountId, name: &str) -> Option<Arc<FunctionRecord>> {
        let functions = self.shown.functions.read().unwrap_or_else(|e| e.into_inner());
        functions.get(&(account.clone(), name.to_string())).map(|e| e.record.clone())
    }

    fn list(&self, account: &AccountId) -> Vec<Arc<FunctionRecord>> {
        let functions = self.shown.functions.read().unwrap_or_else(|e| e.into_inner());
        let sorted: BTreeMap<&str, &Entry> =
            functions.iter().filter(|((a, _), _)| a == account).map(|((_, n), e)| (n.as_str(), e)).collect();
        sorted.into_values().map(|e| e.record.clone()).collect()
    }

    fn all(&self) -> Vec<(AccountId, Arc<FunctionRecord>)> {
        let functions = self.shown.functions.read().unwrap_or_else(|e| e.into_inner());
        functions.iter().map(|((account, _), e)| (account.clone(), e.record.clone())).collect()
    }

    fn live_code(&self) -> HashSet<String> {
        let functions = self.shown.functions.read().unwrap_or_else(|e| e.into_inner());
        ignis_registry::live_code(functions.values().map(|e| &*e.record))
    }

    fn find_url(&self, url_id: &str) -> Option<(AccountId, Arc<FunctionRecord>)> {
        let (account, name) = self.shown.urls.read().unwrap_or_else(|e| e.into_inner()).get(url_id)?.clone();
        let record = self.get(&account, &name)?;
        let current = ignis_registry::url_ids(&record).any(|id| id == url_id);
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
            let (current, revision) = self.current(account, name).await?;
            let Some(mut record) = change(current.as_deref()) else { return Ok(None) };
            ignis_registry::set_incarnation(&mut record, current.as_deref().map(|c| c.incarnation));
            ignis_registry::hold_code(&self.shown.store, &mut record);
            self.shown.code.ship_record(&record).await?;
            let bytes = serde_json::to_vec(&record).map_err(|e| RegistryError::Storage(e.to_string()))?;
            self.decide(account, name, revision, Some(bytes)).await?;
            Ok(Some(Written { old: current, new: Arc::new(record) }))
        })
    }

    fn delete<'a>(
        &'a self,
        account: &'a AccountId,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<FunctionRecord>>, RegistryError>> {
        Box::pin(async move {
            let _guard = self.writes.lock().await;
            let (Some(current), revision) = self.current(account, name).await? else { return Ok(None) };
            self.decide(account, name, revision, None).await?;
            Ok(Some(current))
        })
    }
}

impl Drop for EtcdRegistry {
    /// The records go from memory, not from etcd: their code stays on disk.
    fn drop(&mut self) {
        self.shown.store.keep_code();
    }
}
