//! Where the pollers keep their state: the [`EventStorage`] trait (the
//! pending asynchronous events, what [`crate::Events`] needs) and the
//! [`MappingStorage`] trait (the event source mappings, what
//! [`crate::Mappings`] needs), each with its embedded implementation over
//! the server's database beside it ([`RedbEventStorage`],
//! [`RedbMappingStorage`]). A cluster's front end keeps its events in etcd
//! (`ignis_etcd::EtcdEventStorage`); `Events` does not change but for
//! `Events::adopt`, which takes over a dead front end's events.
//!
//! # Who calls them, and from where
//!
//! The methods are synchronous and may block (on a disk, or on a network):
//! they are called off the async runtime, from the events' group-commit
//! writer thread ([`EventStorage::apply`]) or from `spawn_blocking`
//! (payloads, mappings), and once at start. They stay synchronous on
//! purpose: the writer's thread is what groups many requests' changes into
//! one batch and keeps their order, and a network backend fits under it as
//! it is (one request, or one transaction, per batch; a blocking client, or
//! an async one driven with its runtime's `Handle::block_on`, both work on
//! those threads). An async trait would gain nothing but a second way to
//! batch.
//!
//! # The promises an implementation keeps
//!
//! - [`EventStorage::apply`] applies a batch whole or not at all, in its
//!   order, and the batch survives a crash once it returns `Ok` (an event's
//!   removal and its destination's new event are one batch: an outcome is
//!   never lost or delivered twice between them).
//! - Event ids are chosen by the caller (the one [`crate::Events`]): the
//!   storage keeps them as given.
//! - Mapping writes are durable when they return.
//!
//! # The embedded tables
//!
//! Only this module reads or writes them (the store lends its database,
//! [`Store::database`]):
//!
//! - `async_events`: one row per event accepted and not yet completed,
//!   `id -> (meta, payload)`, both opaque bytes, every batch in one durable
//!   (fsync'd) transaction.
//! - `event_source_mappings`: the mappings, opaque records by account and
//!   UUID, written durably and read back whole at start.
//!
//! The names and key/value types are those the store used before these
//! tables moved here, so older data directories load.

use std::sync::Arc;

use ignis_store::{DbContext, Store, StoreError};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

/// id -> (meta, payload).
const EVENTS: TableDefinition<u64, (&[u8], &[u8])> = TableDefinition::new("async_events");
/// (account, mapping UUID) -> opaque record.
const MAPPINGS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("event_source_mappings");

/// One change to the pending events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventChange {
    /// Inserts or replaces an event.
    Put { id: u64, meta: Vec<u8>, payload: Vec<u8> },
    /// Removes an event (nothing if it is gone already).
    Remove { id: u64 },
}

/// A stored event, without its payload (see [`EventStorage::payload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: u64,
    pub meta: Vec<u8>,
}

/// What [`crate::Events`] needs of storage: the pending asynchronous
/// events. See the module docs for the promises and for where it is called
/// from (never on the async runtime).
pub trait EventStorage: Send + Sync {
    /// Applies `changes` in order, all or nothing. Durable when it returns.
    fn apply(&self, changes: &[EventChange]) -> Result<(), StoreError>;

    /// Every pending event, by id, without payloads.
    fn pending(&self) -> Result<Vec<StoredEvent>, StoreError>;

    /// The payload of a pending event, if it is still stored.
    fn payload(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError>;
}

/// What [`crate::Mappings`] needs of storage: the event source mappings, as
/// opaque records. See the module docs for where it is called from (never
/// on the async runtime).
pub trait MappingStorage: Send + Sync {
    /// Stores (inserts or replaces) an event source mapping. Durable when it returns.
    fn put(&self, account: &str, uuid: &str, record: &[u8]) -> Result<(), StoreError>;

    /// Deletes an event source mapping; answers whether it existed. Durable when it returns.
    fn delete(&self, account: &str, uuid: &str) -> Result<bool, StoreError>;

    /// Every event source mapping as `(account, uuid, record)`, by account then UUID.
    fn all(&self) -> Result<Vec<(String, String, Vec<u8>)>, StoreError>;
}

/// The pending events' table in a [`Store`]'s database: the embedded [`EventStorage`].
#[derive(Debug, Clone)]
pub struct RedbEventStorage {
    store: Arc<Store>,
}

impl RedbEventStorage {
    /// Creates the table in `store`'s database if missing, so readers never
    /// meet a missing one.
    pub fn open(store: Arc<Store>) -> Result<RedbEventStorage, StoreError> {
        const CTX: &str = "creating the events' table";
        let txn = store.database().begin_write().ctx(CTX)?;
        txn.open_table(EVENTS).ctx(CTX)?;
        store.commit_write(txn, true, CTX)?;
        Ok(RedbEventStorage { store })
    }
}

impl EventStorage for RedbEventStorage {
    /// One fsync'd transaction.
    fn apply(&self, changes: &[EventChange]) -> Result<(), StoreError> {
        const CTX: &str = "storing asynchronous events";
        let txn = self.store.database().begin_write().ctx(CTX)?;
        {
            let mut table = txn.open_table(EVENTS).ctx(CTX)?;
            for change in changes {
                match change {
                    EventChange::Put { id, meta, payload } => {
                        table.insert(*id, (meta.as_slice(), payload.as_slice())).ctx(CTX)?;
                    }
                    EventChange::Remove { id } => {
                        table.remove(*id).ctx(CTX)?;
                    }
                }
            }
        }
        self.store.commit_write(txn, true, CTX)
    }

    fn pending(&self) -> Result<Vec<StoredEvent>, StoreError> {
        const CTX: &str = "reading asynchronous events";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let table = txn.open_table(EVENTS).ctx(CTX)?;
        let mut out = Vec::new();
        for item in table.iter().ctx(CTX)? {
            let (k, v) = item.ctx(CTX)?;
            let (meta, _) = v.value();
            out.push(StoredEvent { id: k.value(), meta: meta.to_vec() });
        }
        Ok(out)
    }

    fn payload(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        const CTX: &str = "reading an asynchronous event";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let table = txn.open_table(EVENTS).ctx(CTX)?;
        Ok(table.get(id).ctx(CTX)?.map(|v| v.value().1.to_vec()))
    }
}

/// The mappings' table in a [`Store`]'s database: the embedded [`MappingStorage`].
#[derive(Debug, Clone)]
pub struct RedbMappingStorage {
    store: Arc<Store>,
}

impl RedbMappingStorage {
    /// Creates the table in `store`'s database if missing.
    pub fn open(store: Arc<Store>) -> Result<RedbMappingStorage, StoreError> {
        const CTX: &str = "creating the mappings' table";
        let txn = store.database().begin_write().ctx(CTX)?;
        txn.open_table(MAPPINGS).ctx(CTX)?;
        store.commit_write(txn, true, CTX)?;
        Ok(RedbMappingStorage { store })
    }
}

impl MappingStorage for RedbMappingStorage {
    fn put(&self, account: &str, uuid: &str, record: &[u8]) -> Result<(), StoreError> {
        const CTX: &str = "storing an event source mapping";
        let txn = self.store.database().begin_write().ctx(CTX)?;
        txn.open_table(MAPPINGS).ctx(CTX)?.insert((account, uuid), record).ctx(CTX)?;
        self.store.commit_write(txn, true, CTX)
    }

    fn delete(&self, account: &str, uuid: &str) -> Result<bool, StoreError> {
        const CTX: &str = "deleting an event source mapping";
        let txn = self.store.database().begin_write().ctx(CTX)?;
        let existed = txn.open_table(MAPPINGS).ctx(CTX)?.remove((account, uuid)).ctx(CTX)?.is_some();
        self.store.commit_write(txn, true, CTX)?;
        Ok(existed)
    }

    fn all(&self) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
        const CTX: &str = "listing event source mappings";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let table = txn.open_table(MAPPINGS).ctx(CTX)?;
        let mut out = Vec::new();
        for item in table.iter().ctx(CTX)? {
            let (k, v) = item.ctx(CTX)?;
            let (account, uuid) = k.value();
            out.push((account.to_string(), uuid.to_string(), v.value().to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    //! Every check goes through the traits only, so another backend can run
    //! the same ones: each takes a way to open the storage (again, for
    //! "survives reopening") on one place.
    use super::*;

    fn events_in(dir: &std::path::Path) -> Box<dyn EventStorage> {
        Box::new(RedbEventStorage::open(Arc::new(Store::open(dir).unwrap())).unwrap())
    }

    fn mappings_in(dir: &std::path::Path) -> Box<dyn MappingStorage> {
        Box::new(RedbMappingStorage::open(Arc::new(Store::open(dir).unwrap())).unwrap())
    }

    fn put(id: u64, text: &str) -> EventChange {
        EventChange::Put { id, meta: text.as_bytes().to_vec(), payload: format!("payload {text}").into_bytes() }
    }

    /// `(id, meta, payload)` of every pending event.
    fn seen(events: &dyn EventStorage) -> Vec<(u64, String, String)> {
        events
            .pending()
            .unwrap()
            .into_iter()
            .map(|e| (e.id, String::from_utf8(e.meta).unwrap(), String::from_utf8(events.payload(e.id).unwrap().unwrap()).unwrap()))
            .collect()
    }

    fn event_batches_apply_in_order_and_survive_reopening(open: fn(&std::path::Path) -> Box<dyn EventStorage>) {
        let dir = tempfile::tempdir().unwrap();
        {
            let events = open(dir.path());
            assert!(events.pending().unwrap().is_empty());
            events.apply(&[put(1, "a"), put(2, "b"), put(3, "c")]).unwrap();
            events.apply(&[EventChange::Remove { id: 2 }, put(1, "a2"), EventChange::Remove { id: 9 }]).unwrap();
            events.apply(&[put(4, "d"), EventChange::Remove { id: 4 }]).unwrap();
            events.apply(&[]).unwrap();
        }
        let events = open(dir.path());
        assert_eq!(seen(&*events), vec![(1, "a2".into(), "payload a2".into()), (3, "c".into(), "payload c".into())]);
        assert_eq!(events.payload(2).unwrap(), None);
        // Ids are kept as given, and listed in id order whatever the order of the puts.
        events.apply(&[put(40, "late"), put(10, "early"), EventChange::Remove { id: 1 }, EventChange::Remove { id: 1 }]).unwrap();
        let ids: Vec<u64> = events.pending().unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![3, 10, 40]);
    }

    fn mappings_round_trip_and_survive_reopening(open: fn(&std::path::Path) -> Box<dyn MappingStorage>) {
        let dir = tempfile::tempdir().unwrap();
        {
            let table = open(dir.path());
            assert!(table.all().unwrap().is_empty());
            table.put("111111111111", "b", b"two").unwrap();
            table.put("111111111111", "a", b"one").unwrap();
            table.put("111111111111", "a", b"one'").unwrap();
            table.put("222222222222", "c", b"three").unwrap();
            assert!(table.delete("222222222222", "c").unwrap());
            assert!(!table.delete("222222222222", "c").unwrap());
            assert!(!table.delete("111111111111", "c").unwrap(), "a mapping is found by account and UUID");
        }
        let table = open(dir.path());
        let expected = vec![
            ("111111111111".to_string(), "a".to_string(), b"one'".to_vec()),
            ("111111111111".to_string(), "b".to_string(), b"two".to_vec()),
        ];
        assert_eq!(table.all().unwrap(), expected);
    }

    // Every check above, on the embedded storage.
    #[test]
    fn redb_event_batches_apply_in_order_and_survive_reopening() {
        event_batches_apply_in_order_and_survive_reopening(events_in);
    }

    #[test]
    fn redb_mappings_round_trip_and_survive_reopening() {
        mappings_round_trip_and_survive_reopening(mappings_in);
    }
}
