//! The runtimes installed on this Ignis: for each runtime name (`python3.11`,
//! `provided.al2023`, ...) the base image zip functions of that runtime run on,
//! an image the administrator pushed (`ignis runtime build` / `import`) and the
//! server prepared like any image function's.
//!
//! A function's record keeps the base its runtime had when its code or
//! configuration last changed (`FunctionRecord::base`, as Lambda's
//! `FunctionUpdate` runtime update mode): installing a runtime again changes
//! what new and updated functions get, never a function or version as it is.
//!
//! [`EmbeddedRuntimes`] keeps them in memory, written through to the table
//! `runtimes` (name → the record's JSON; this module is its only reader and
//! writer). Reads never touch storage; a write is durable before it shows.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use ignis_store::Store;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{BoxFuture, ImageRecord, RegistryError};

/// Runtime name → the record as JSON.
const RUNTIMES: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("runtimes");

/// An installed runtime: the base image its functions run on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeRecord {
    /// The runtime's name, as functions give it in `Runtime`.
    pub name: String,
    /// The account whose repository holds the image (the administrator's): its key opens the prepared image.
    pub account: String,
    /// The image, resolved to its digest and prepared.
    pub image: ImageRecord,
    /// When it was installed, in milliseconds since the epoch.
    pub installed_ms: i64,
}

/// Where the installed runtimes are kept.
pub trait Runtimes: Send + Sync {
    /// The runtime `name`, if installed.
    fn get(&self, name: &str) -> Option<Arc<RuntimeRecord>>;

    /// Every installed runtime, by name.
    fn list(&self) -> Vec<Arc<RuntimeRecord>>;

    /// Installs `record` (replacing what its name had), durably before it shows.
    fn put(&self, record: RuntimeRecord) -> BoxFuture<'_, Result<(), RegistryError>>;
}

/// The runtimes of one server: in memory, written through to its store.
pub struct EmbeddedRuntimes {
    store: Arc<Store>,
    runtimes: RwLock<BTreeMap<String, Arc<RuntimeRecord>>>,
    writes: tokio::sync::Mutex<()>,
}

fn storage(context: &'static str) -> impl FnOnce(redb::Error) -> RegistryError {
    move |e| RegistryError::Storage(format!("storage: database error while {context}: {e}"))
}

impl EmbeddedRuntimes {
    /// Loads every installed runtime (the table is made if missing).
    pub fn load(store: Arc<Store>) -> Result<EmbeddedRuntimes, RegistryError> {
        let stored = (|| -> Result<Vec<Vec<u8>>, redb::Error> {
            let db = store.database();
            let txn = db.begin_write()?;
            txn.open_table(RUNTIMES)?;
            txn.commit()?;
            let txn = db.begin_read()?;
            let table = txn.open_table(RUNTIMES)?;
            table.iter()?.map(|item| Ok(item?.1.value().to_vec())).collect()
        })()
        .map_err(storage("listing runtimes"))?;
        let mut runtimes = BTreeMap::new();
        for bytes in stored {
            let record: RuntimeRecord = serde_json::from_slice(&bytes)
                .map_err(|e| RegistryError::Storage(format!("a stored runtime is unreadable: {e}")))?;
            runtimes.insert(record.name.clone(), Arc::new(record));
        }
        Ok(EmbeddedRuntimes { store, runtimes: RwLock::new(runtimes), writes: tokio::sync::Mutex::new(()) })
    }
}

impl Runtimes for EmbeddedRuntimes {
    fn get(&self, name: &str) -> Option<Arc<RuntimeRecord>> {
        self.runtimes.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    fn list(&self) -> Vec<Arc<RuntimeRecord>> {
        self.runtimes.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    fn put(&self, record: RuntimeRecord) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            let _serial = self.writes.lock().await;
            let bytes = serde_json::to_vec(&record).map_err(|e| RegistryError::Storage(e.to_string()))?;
            let (store, name) = (self.store.clone(), record.name.clone());
            tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
                let txn = store.database().begin_write()?;
                txn.open_table(RUNTIMES)?.insert(name.as_str(), bytes.as_slice())?;
                txn.commit()?;
                Ok(())
            })
            .await
            .map_err(|e| RegistryError::Storage(e.to_string()))?
            .map_err(storage("storing a runtime"))?;
            self.runtimes.write().unwrap_or_else(|e| e.into_inner()).insert(record.name.clone(), Arc::new(record));
            Ok(())
        })
    }
}
