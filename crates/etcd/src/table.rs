//! [`Table`]: records of one kind under a directory of etcd keys (`<dir>/<name>`, each the record's JSON), followed
//! into memory by a [`Mirror`]: what the registry, the layers and the networks are built on.
//!
//! Reads are a read lock and a map lookup. A write ([`Table::write`]) reads its key and modification revision from
//! etcd (memory may be behind), runs the change on that record, ships the code trees the new record names, and
//! stores it (or deletes the key) with a transaction that compares the revision: another front end's write in
//! between makes it `WriteError::Lost`, storing nothing. Writes through one front end are serialised by its mutex, so they
//! never lose to each other. A write returns once memory shows it. A record is shown only once the trees it names
//! are on this node's disk, and holds them while it is shown.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use ignis_store::Store;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::code::{CodeShare, code_key};
use crate::mirror::{Apply, Kv, Mirror};
use crate::{Etcd, EtcdError, key};

/// A kind of record a [`Table`] keeps.
pub(crate) trait Record: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The code trees it names: fetched before it shows, shipped before it is stored.
    fn trees(&self) -> Vec<String>;
    /// Takes holds of its trees in `store`.
    fn hold(&mut self, store: &Store);
}

/// What a change does to a key.
pub(crate) enum Decision<R> {
    /// Nothing.
    Keep,
    Put(R),
    Delete,
}

/// Why a write stored nothing.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// Another front end changed the key between the write's read and its store.
    Lost,
    Etcd(EtcdError),
}

impl From<EtcdError> for WriteError {
    fn from(e: EtcdError) -> Self {
        WriteError::Etcd(e)
    }
}

/// A record in memory and the revision etcd stored it at.
struct Entry<R> {
    record: Arc<R>,
    revision: i64,
}

/// Called with a key's record before and after each change memory shows (the registry's URL index).
pub(crate) type Listener<R> = Box<dyn Fn(&str, Option<&R>, Option<&R>) + Send + Sync>;

struct Shown<R> {
    store: Arc<Store>,
    code: Arc<CodeShare>,
    records: RwLock<HashMap<String, Entry<R>>>,
    listener: Option<Listener<R>>,
}

impl<R: Record> Shown<R> {
    /// The record `bytes` hold, its code trees fetched to this node and held.
    async fn decode(&self, name: &str, bytes: &[u8]) -> Option<R> {
        let mut record: R = match serde_json::from_slice(bytes) {
            Ok(record) => record,
            Err(e) => {
                tracing::error!(key = name, error = %e, "a record in etcd is unreadable");
                return None;
            }
        };
        // The fetched trees stay until the record holds them.
        let mut _fetched = Vec::new();
        for tree in record.trees() {
            match self.code.fetch(&tree).await {
                Ok(hold) => _fetched.push(hold),
                Err(e) => tracing::warn!(key = name, %tree, error = %e, "cannot fetch a code tree; what runs it fails until it is here"),
            }
        }
        record.hold(&self.store);
        Some(record)
    }

    fn show(&self, name: String, entry: Option<Entry<R>>) {
        let new = entry.as_ref().map(|e| e.record.clone());
        let old = {
            let mut records = self.records.write().unwrap_or_else(|e| e.into_inner());
            match entry {
                Some(entry) => records.insert(name.clone(), entry),
                None => records.remove(&name),
            }
        };
        if let Some(listener) = &self.listener {
            listener(&name, old.as_ref().map(|e| &*e.record), new.as_deref());
        }
    }
}

impl<R: Record> Apply for Shown<R> {
    fn reset(&self, all: Vec<Kv>) -> crate::mirror::BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut decoded = HashMap::new();
            for kv in all {
                let Some(bytes) = &kv.value else { continue };
                if let Some(record) = self.decode(&kv.key, bytes).await {
                    decoded.insert(kv.key, Entry { record: Arc::new(record), revision: kv.mod_revision });
                }
            }
            let gone: Vec<String> = {
                let records = self.records.read().unwrap_or_else(|e| e.into_inner());
                records.keys().filter(|name| !decoded.contains_key(*name)).cloned().collect()
            };
            for name in gone {
                self.show(name, None);
            }
            for (name, entry) in decoded {
                self.show(name, Some(entry));
            }
        })
    }

    fn apply(&self, changes: Vec<Kv>) -> crate::mirror::BoxFuture<'_, ()> {
        Box::pin(async move {
            for kv in changes {
                let entry = match &kv.value {
                    None => None,
                    Some(bytes) => match self.decode(&kv.key, bytes).await {
                        Some(record) => Some(Entry { record: Arc::new(record), revision: kv.mod_revision }),
                        None => continue,
                    },
                };
                self.show(kv.key, entry);
            }
        })
    }
}

/// Records under `<dir>/` in etcd, followed into memory.
pub(crate) struct Table<R> {
    etcd: Etcd,
    dir: String,
    shown: Arc<Shown<R>>,
    mirror: Mirror,
    writes: tokio::sync::Mutex<()>,
}

impl<R: Record> Table<R> {
    /// Loads every record under `dir` (a directory under the prefix, e.g. `functions`), fetching the trees this
    /// node lacks through `code`, and follows them; `listener` hears every change memory shows.
    pub(crate) async fn open(
        etcd: Etcd,
        dir: &str,
        store: Arc<Store>,
        code: Arc<CodeShare>,
        listener: Option<Listener<R>>,
    ) -> Result<Table<R>, EtcdError> {
        let shown = Arc::new(Shown { store, code, records: RwLock::default(), listener });
        let dir = format!("{dir}/");
        let mirror = Mirror::start(etcd.clone(), key(&dir), shown.clone()).await?;
        Ok(Table { etcd, dir, shown, mirror, writes: tokio::sync::Mutex::new(()) })
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<R>> {
        self.shown.records.read().unwrap_or_else(|e| e.into_inner()).get(name).map(|e| e.record.clone())
    }

    /// Every record whose name starts with `prefix`, by name.
    pub(crate) fn starting_with(&self, prefix: &str) -> Vec<(String, Arc<R>)> {
        let records = self.shown.records.read().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<(String, Arc<R>)> =
            records.iter().filter(|(name, _)| name.starts_with(prefix)).map(|(n, e)| (n.clone(), e.record.clone())).collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    fn full_key(&self, name: &str) -> String {
        key(&format!("{}{name}", self.dir))
    }

    /// The record etcd holds under `name` now, and its revision (0: none).
    async fn current(&self, name: &str) -> Result<(Option<Arc<R>>, i64), EtcdError> {
        let full = self.full_key(name);
        let got = self.etcd.get(&full, None).await?;
        let Some(kv) = got.kvs().first() else { return Ok((None, 0)) };
        let shown = {
            let records = self.shown.records.read().unwrap_or_else(|e| e.into_inner());
            records.get(name).filter(|e| e.revision == kv.mod_revision()).map(|e| e.record.clone())
        };
        let record = match shown {
            Some(record) => record,
            None => {
                let mut record: R =
                    serde_json::from_slice(kv.value()).map_err(|e| EtcdError::Corrupt { key: full, reason: e.to_string() })?;
                record.hold(&self.shown.store);
                Arc::new(record)
            }
        };
        Ok((Some(record), kv.mod_revision()))
    }

    /// Runs `change` on the record etcd holds under `name` and stores what it decides, if the key has not changed
    /// since; waits until memory shows it. The record before and after (`None`: none, or deleted), or `None` if the
    /// change kept it.
    pub(crate) async fn write(
        &self,
        name: &str,
        change: impl FnOnce(Option<&R>) -> Decision<R>,
    ) -> Result<Option<(Option<Arc<R>>, Option<Arc<R>>)>, WriteError> {
        let _serial = self.writes.lock().await;
        let (current, revision) = self.current(name).await?;
        let full = self.full_key(name);
        let mut compares = vec![Compare::mod_revision(full.clone(), CompareOp::Equal, revision)];
        let mut ops = Vec::new();
        let (value, new) = match change(current.as_deref()) {
            Decision::Keep => return Ok(None),
            Decision::Delete => (None, None),
            Decision::Put(mut record) => {
                record.hold(&self.shown.store);
                // Each tree it names shipped, still there, and touched: collection spares what is named since.
                let trees: std::collections::BTreeSet<String> = record.trees().into_iter().collect();
                for tree in trees {
                    let shipped = self.shown.code.ship(&tree).await?;
                    compares.push(Compare::version(code_key(&tree), CompareOp::Greater, 0));
                    ops.push(TxnOp::put(code_key(&tree), shipped, None));
                }
                let bytes = serde_json::to_vec(&record).map_err(|e| WriteError::Etcd(EtcdError::Unavailable(e.to_string())))?;
                (Some(bytes), Some(Arc::new(record)))
            }
        };
        ops.push(match &value {
            Some(bytes) => TxnOp::put(full.clone(), bytes.clone(), None),
            None => TxnOp::delete(full.clone(), None),
        });
        let txn = Txn::new().when(compares).and_then(ops);
        let Some(stored) = self.etcd.decide(txn, &full, value.as_deref()).await? else {
            return Err(WriteError::Lost);
        };
        if let Err(e) = self.mirror.reached(stored).await {
            // Stored: the write happened, and memory shows it when the watch brings it.
            tracing::warn!(key = %full, error = %e, "a stored write is not shown yet");
        }
        Ok(Some((current, new)))
    }
}

impl<R> Drop for Table<R> {
    /// The records go from memory, not from etcd: their code stays on disk.
    fn drop(&mut self) {
        self.shown.store.keep_code();
    }
}
