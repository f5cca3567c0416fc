//! The pollers' own tables in the server's database (the store lends it,
//! [`Store::database`]; only this module reads or writes them):
//!
//! - `async_events`: the pending asynchronous invocations, one row per event
//!   accepted and not yet completed, `id -> (meta, payload)`, both opaque
//!   bytes. Every change is a batch applied in one durable (fsync'd)
//!   transaction ([`EventTable::apply`]), so the events' group-commit writer
//!   can collect the changes of many requests into one commit and still
//!   answer each only once it is on disk.
//! - `event_source_mappings`: the mappings, opaque records by account and
//!   UUID, written durably and read back whole at start.
//!
//! The names and key/value types are those the store used before these
//! tables moved here, so older data directories load.

use std::sync::Arc;

use ignis_store::{Store, StoreError};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

/// id -> (meta, payload).
const EVENTS: TableDefinition<u64, (&[u8], &[u8])> = TableDefinition::new("async_events");
/// (account, mapping UUID) -> opaque record.
const MAPPINGS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("event_source_mappings");

/// Adds context to redb results.
trait DbContext<T> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> DbContext<T> for Result<T, E> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Db { context, source: e.into() })
    }
}

/// One change to the pending events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventChange {
    /// Inserts or replaces an event.
    Put { id: u64, meta: Vec<u8>, payload: Vec<u8> },
    /// Removes an event (nothing if it is gone already).
    Remove { id: u64 },
}

/// A stored event, without its payload (see [`EventTable::payload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: u64,
    pub meta: Vec<u8>,
}

/// The pending events' table in a store's database.
#[derive(Debug, Clone)]
pub struct EventTable {
    store: Arc<Store>,
}

impl EventTable {
    /// Creates the table if missing, so readers never meet a missing one.
    pub fn open(store: Arc<Store>) -> Result<EventTable, StoreError> {
        const CTX: &str = "creating the events' table";
        let txn = store.database().begin_write().ctx(CTX)?;
        txn.open_table(EVENTS).ctx(CTX)?;
        store.commit_write(txn, true, CTX)?;
        Ok(EventTable { store })
    }

    /// Applies `changes` in order, in one transaction. Durable (fsync'd) when it returns.
    pub fn apply(&self, changes: &[EventChange]) -> Result<(), StoreError> {
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

    /// Every pending event, by id, without payloads.
    pub fn pending(&self) -> Result<Vec<StoredEvent>, StoreError> {
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

    /// The payload of a pending event, if it is still stored.
    pub fn payload(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        const CTX: &str = "reading an asynchronous event";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let table = txn.open_table(EVENTS).ctx(CTX)?;
        Ok(table.get(id).ctx(CTX)?.map(|v| v.value().1.to_vec()))
    }
}

/// The mappings' table in a store's database.
#[derive(Debug, Clone)]
pub(crate) struct MappingTable {
    store: Arc<Store>,
}

impl MappingTable {
    /// Creates the table if missing.
    pub(crate) fn open(store: Arc<Store>) -> Result<MappingTable, StoreError> {
        const CTX: &str = "creating the mappings' table";
        let txn = store.database().begin_write().ctx(CTX)?;
        txn.open_table(MAPPINGS).ctx(CTX)?;
        store.commit_write(txn, true, CTX)?;
        Ok(MappingTable { store })
    }

    /// Stores (inserts or replaces) an event source mapping. Durable when it returns.
    pub(crate) fn put(&self, account: &str, uuid: &str, record: &[u8]) -> Result<(), StoreError> {
        const CTX: &str = "storing an event source mapping";
        let txn = self.store.database().begin_write().ctx(CTX)?;
        txn.open_table(MAPPINGS).ctx(CTX)?.insert((account, uuid), record).ctx(CTX)?;
        self.store.commit_write(txn, true, CTX)
    }

    /// Deletes an event source mapping; answers whether it existed. Durable when it returns.
    pub(crate) fn delete(&self, account: &str, uuid: &str) -> Result<bool, StoreError> {
        const CTX: &str = "deleting an event source mapping";
        let txn = self.store.database().begin_write().ctx(CTX)?;
        let existed = txn.open_table(MAPPINGS).ctx(CTX)?.remove((account, uuid)).ctx(CTX)?.is_some();
        self.store.commit_write(txn, true, CTX)?;
        Ok(existed)
    }

    /// Every event source mapping as `(account, uuid, record)`, by account then UUID.
    pub(crate) fn all(&self) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
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
    use super::*;

    fn put(id: u64, text: &str) -> EventChange {
        EventChange::Put { id, meta: text.as_bytes().to_vec(), payload: format!("payload {text}").into_bytes() }
    }

    #[test]
    fn event_batches_apply_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let events = EventTable::open(Arc::new(Store::open(dir.path()).unwrap())).unwrap();
            assert!(events.pending().unwrap().is_empty());
            events.apply(&[put(1, "a"), put(2, "b"), put(3, "c")]).unwrap();
            events.apply(&[EventChange::Remove { id: 2 }, put(1, "a2"), EventChange::Remove { id: 9 }]).unwrap();
            events.apply(&[put(4, "d"), EventChange::Remove { id: 4 }]).unwrap();
        }
        let events = EventTable::open(Arc::new(Store::open(dir.path()).unwrap())).unwrap();
        let seen: Vec<(u64, String, String)> = events
            .pending()
            .unwrap()
            .into_iter()
            .map(|e| (e.id, String::from_utf8(e.meta).unwrap(), String::from_utf8(events.payload(e.id).unwrap().unwrap()).unwrap()))
            .collect();
        assert_eq!(seen, vec![(1, "a2".into(), "payload a2".into()), (3, "c".into(), "payload c".into())]);
        assert_eq!(events.payload(2).unwrap(), None);
    }

    #[test]
    fn mappings_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let table = MappingTable::open(Arc::new(Store::open(dir.path()).unwrap())).unwrap();
            table.put("111111111111", "b", b"two").unwrap();
            table.put("111111111111", "a", b"one").unwrap();
            table.put("111111111111", "a", b"one'").unwrap();
            table.put("222222222222", "c", b"three").unwrap();
            assert!(table.delete("222222222222", "c").unwrap());
            assert!(!table.delete("222222222222", "c").unwrap());
        }
        let table = MappingTable::open(Arc::new(Store::open(dir.path()).unwrap())).unwrap();
        let expected = vec![
            ("111111111111".to_string(), "a".to_string(), b"one'".to_vec()),
            ("111111111111".to_string(), "b".to_string(), b"two".to_vec()),
        ];
        assert_eq!(table.all().unwrap(), expected);
    }
}
