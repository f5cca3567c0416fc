//! [`EtcdRegistry`]: every function's record in etcd (`functions/<account>/<name>`, the record's JSON, as the
//! embedded registry stores it), in a [`Table`]; the index of function URLs follows what memory shows.
//!
//! A write whose key changed through another front end between its read and its store is
//! [`RegistryError::Conflict`] (Lambda's `ResourceConflictException`), nothing stored.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, RwLock};

use ignis_ids::AccountId;
use ignis_registry::{BoxFuture, Change, FunctionRecord, Registry, RegistryError, Written};
use ignis_store::Store;

use crate::EtcdError;
use crate::code::CodeShare;
use crate::table::{Decision, Record, Table, WriteError};

type Key = (AccountId, String);

impl Record for FunctionRecord {
    fn trees(&self) -> Vec<String> {
        crate::code::trees(self)
    }

    fn hold(&mut self, store: &Store) {
        ignis_registry::hold_code(store, self);
    }
}

/// What hears of each function record memory replaces or deletes: its account, the record before, and after.
pub type ChangeHook = Box<dyn Fn(&AccountId, &FunctionRecord, Option<&FunctionRecord>) + Send + Sync>;

/// The registry of a cluster's front end: in etcd, followed into memory.
pub struct EtcdRegistry {
    table: Table<FunctionRecord>,
    region: String,
    /// Function URL id → the function that has it.
    urls: Arc<RwLock<HashMap<String, Key>>>,
    hook: Arc<OnceLock<ChangeHook>>,
}

/// `<account>/<name>`, a record's name in the table.
fn name_of(account: &AccountId, name: &str) -> String {
    format!("{account}/{name}")
}

fn parse(name: &str) -> Option<Key> {
    let (account, name) = name.split_once('/')?;
    Some((AccountId::new(account), name.to_string()))
}

impl EtcdRegistry {
    /// Loads every function from `etcd` (fetching the code trees this node lacks through `code`) and follows
    /// them. `region` names functions in errors.
    pub async fn open(etcd: crate::Etcd, store: Arc<Store>, code: Arc<CodeShare>, region: &str) -> Result<EtcdRegistry, EtcdError> {
        let urls: Arc<RwLock<HashMap<String, Key>>> = Arc::default();
        let hook: Arc<OnceLock<ChangeHook>> = Arc::default();
        let (index, heard) = (urls.clone(), hook.clone());
        let listener = Box::new(move |name: &str, old: Option<&FunctionRecord>, new: Option<&FunctionRecord>| {
            let Some(key) = parse(name) else { return };
            {
                let mut urls = index.write().unwrap_or_else(|e| e.into_inner());
                for id in old.into_iter().flat_map(ignis_registry::url_ids) {
                    urls.remove(id);
                }
                for id in new.into_iter().flat_map(ignis_registry::url_ids) {
                    urls.insert(id.to_string(), key.clone());
                }
            }
            if let (Some(hook), Some(old)) = (heard.get(), old) {
                hook(&key.0, old, new);
            }
        });
        let table = Table::open(etcd, "functions", store, code, Some(listener)).await?;
        Ok(EtcdRegistry { table, region: region.to_string(), urls, hook })
    }

    /// Calls `hook` with every record memory replaces or deletes from now on, whichever front end changed it (the
    /// invoker retires the sandboxes of what no longer runs). Only the first call has effect.
    pub fn on_change(&self, hook: ChangeHook) {
        let _ = self.hook.set(hook);
    }

    fn error(&self, account: &AccountId, name: &str, e: WriteError) -> RegistryError {
        match e {
            WriteError::Lost => RegistryError::Conflict { resource: ignis_ids::arn::function(&self.region, account.as_str(), name) },
            WriteError::Etcd(e) => e.into(),
        }
    }
}

impl Registry for EtcdRegistry {
    fn get(&self, account: &AccountId, name: &str) -> Option<Arc<FunctionRecord>> {
        self.table.get(&name_of(account, name))
    }

    fn list(&self, account: &AccountId) -> Vec<Arc<FunctionRecord>> {
        self.table.starting_with(&format!("{account}/")).into_iter().map(|(_, record)| record).collect()
    }

    fn all(&self) -> Vec<(AccountId, Arc<FunctionRecord>)> {
        self.table.starting_with("").into_iter().filter_map(|(name, record)| Some((parse(&name)?.0, record))).collect()
    }

    fn live_code(&self) -> HashSet<String> {
        let all = self.table.starting_with("");
        ignis_registry::live_code(all.iter().map(|(_, record)| &**record))
    }

    fn find_url(&self, url_id: &str) -> Option<(AccountId, Arc<FunctionRecord>)> {
        let (account, name) = self.urls.read().unwrap_or_else(|e| e.into_inner()).get(url_id)?.clone();
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
            let written = self
                .table
                .write(&name_of(account, name), |current| match change(current) {
                    None => Decision::Keep,
                    Some(mut record) => {
                        ignis_registry::set_incarnation(&mut record, current.map(|c| c.incarnation));
                        Decision::Put(record)
                    }
                })
                .await
                .map_err(|e| self.error(account, name, e))?;
            Ok(written.and_then(|(old, new)| Some(Written { old, new: new? })))
        })
    }

    fn delete<'a>(
        &'a self,
        account: &'a AccountId,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<FunctionRecord>>, RegistryError>> {
        Box::pin(async move {
            let written = self
                .table
                .write(&name_of(account, name), |current| match current {
                    None => Decision::Keep,
                    Some(_) => Decision::Delete,
                })
                .await
                .map_err(|e| self.error(account, name, e))?;
            Ok(written.and_then(|(old, _)| old))
        })
    }
}
