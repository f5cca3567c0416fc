//! Pending asynchronous invocations: one row per event accepted and not yet
//! completed, `id -> (meta, payload)`, both opaque bytes.
//!
//! Every change is a batch applied in one durable (fsync'd) transaction, so
//! the events' owner can collect the changes of many requests into one
//! commit (its [`crate::commit::GroupCommit`]) and still answer each only
//! once it is on disk.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::{DbContext, Store, StoreError};

/// id -> (meta, payload).
const EVENTS: TableDefinition<u64, (&[u8], &[u8])> = TableDefinition::new("async_events");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(EVENTS).ctx("creating tables")?;
    Ok(())
}

/// One change to the pending events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventChange {
    /// Inserts or replaces an event.
    Put { id: u64, meta: Vec<u8>, payload: Vec<u8> },
    /// Removes an event (nothing if it is gone already).
    Remove { id: u64 },
}

/// A stored event, without its payload (see [`Store::event_payload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: u64,
    pub meta: Vec<u8>,
}

impl Store {
    /// Applies `changes` in order, in one transaction. Durable (fsync'd) when it returns.
    pub fn apply_event_changes(&self, changes: &[EventChange]) -> Result<(), StoreError> {
        const CTX: &str = "storing asynchronous events";
        let txn = self.db.begin_write().ctx(CTX)?;
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
        self.commit(txn, true, CTX)
    }

    /// Every pending event, by id, without payloads.
    pub fn pending_events(&self) -> Result<Vec<StoredEvent>, StoreError> {
        const CTX: &str = "reading asynchronous events";
        let txn = self.db.begin_read().ctx(CTX)?;
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
    pub fn event_payload(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        const CTX: &str = "reading an asynchronous event";
        let txn = self.db.begin_read().ctx(CTX)?;
        let table = txn.open_table(EVENTS).ctx(CTX)?;
        Ok(table.get(id).ctx(CTX)?.map(|v| v.value().1.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(id: u64, text: &str) -> EventChange {
        EventChange::Put { id, meta: text.as_bytes().to_vec(), payload: format!("payload {text}").into_bytes() }
    }

    #[test]
    fn batches_apply_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert!(store.pending_events().unwrap().is_empty());
            store.apply_event_changes(&[put(1, "a"), put(2, "b"), put(3, "c")]).unwrap();
            store.apply_event_changes(&[EventChange::Remove { id: 2 }, put(1, "a2"), EventChange::Remove { id: 9 }]).unwrap();
            store.apply_event_changes(&[put(4, "d"), EventChange::Remove { id: 4 }]).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let events = store.pending_events().unwrap();
        let seen: Vec<(u64, String, String)> = events
            .into_iter()
            .map(|e| (e.id, String::from_utf8(e.meta).unwrap(), String::from_utf8(store.event_payload(e.id).unwrap().unwrap()).unwrap()))
            .collect();
        assert_eq!(seen, vec![(1, "a2".into(), "payload a2".into()), (3, "c".into(), "payload c".into())]);
        assert_eq!(store.event_payload(2).unwrap(), None);
    }
}
