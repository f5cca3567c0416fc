//! Where the queues keep their state: the [`QueueStorage`] trait (what
//! [`crate::Queues`] needs of storage), and its embedded implementation,
//! [`RedbQueueStorage`], over the server's database. A shared backend (etcd,
//! for several front ends) implements the same trait; `Queues` does not
//! change.
//!
//! What is stored: queue definitions (opaque records, by account and name)
//! and their messages (by the queue's id, a number its definition holds, so a
//! queue deleted and made again under the same name never sees the old one's
//! messages).
//!
//! # Who calls it, and from where
//!
//! The methods are synchronous and may block (on a disk, or on a network):
//! they are called off the async runtime, from the queues' group-commit
//! writer thread ([`QueueStorage::apply`]) or from `spawn_blocking`
//! (definitions), and once at start. They stay synchronous on purpose: the
//! writer's thread is what groups many callers' writes into one batch and
//! keeps their order, and a network backend fits under it as it is (one
//! request, or one transaction, per batch; a blocking client, or an async
//! one driven with its runtime's `Handle::block_on`, both work on those
//! threads). An async trait would gain nothing but a second way to batch.
//!
//! # The promises an implementation keeps
//!
//! - A batch given to [`QueueStorage::apply`] is applied whole or not at all,
//!   in its order (dead-lettering is a put into one queue and a delete from
//!   another in one batch: a message is never lost or doubled between them).
//! - When `apply` returns `Ok` and any write of the batch
//!   [needs it](QueueWrite::needs_sync), the batch survives a crash; a batch
//!   of receive counts alone may be lost with the last instants before a
//!   crash, but never applied out of order.
//! - Definition writes are durable when they return.
//! - Message ids of a queue are not reused: [`StoredQueue::next_id`] only grows.
//!
//! # The embedded tables
//!
//! Only [`RedbQueueStorage`] reads or writes them; the store lends its
//! database ([`Store::database`]). A message's body and attributes are
//! written once; its receive count and first receive time live in a table of
//! their own, so a receive rewrites a few bytes.

use std::collections::HashSet;
use std::sync::Arc;

use ignis_store::{DbContext, Store, StoreError};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

/// (account, queue name) -> opaque record.
const QUEUES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("queues");
/// (queue id, message id) -> (sent_ms, visible_at_ms, body, attributes, wire id or "").
const MESSAGES: TableDefinition<(u64, u64), MessageValue> = TableDefinition::new("queue_messages");
type MessageValue = (u64, u64, &'static str, &'static [u8], &'static str);
/// (queue id, message id) -> (receive_count, first_receive_ms).
const RECEIVES: TableDefinition<(u64, u64), (u32, u64)> = TableDefinition::new("queue_receives");
/// queue id -> the smallest message id never written (ids are not reused).
const NEXT_IDS: TableDefinition<u64, u64> = TableDefinition::new("queue_next_ids");

/// What [`crate::Queues`] needs of storage; see the module docs for the
/// promises and for where it is called from (never on the async runtime).
pub trait QueueStorage: Send + Sync {
    /// Every queue definition as `(account, name, record)`, by account then name.
    fn definitions(&self) -> Result<Vec<(String, String, Vec<u8>)>, StoreError>;

    /// Stores (inserts or replaces) a queue's definition. Durable when it returns.
    fn put_definition(&self, account: &str, name: &str, record: &[u8]) -> Result<(), StoreError>;

    /// Deletes a queue's definition; answers whether it existed. Its
    /// messages go with a [`QueueWrite::Purge`] (or at the next
    /// [`QueueStorage::remove_orphans`]). Durable when it returns.
    fn delete_definition(&self, account: &str, name: &str) -> Result<bool, StoreError>;

    /// The stored messages of queue `queue`, in id order, and its next id
    /// (empty, next id 0, for a queue never written).
    fn messages(&self, queue: u64) -> Result<StoredQueue, StoreError>;

    /// Applies `writes` in order, all or nothing; durable when it returns if
    /// any of them [needs it](QueueWrite::needs_sync).
    fn apply(&self, writes: &[QueueWrite]) -> Result<(), StoreError>;

    /// Removes the messages (and next ids) of every queue id not in `live`:
    /// what a deleted queue left if the server stopped before its purge.
    /// Returns how many messages went. Durable when it returns.
    fn remove_orphans(&self, live: &HashSet<u64>) -> Result<usize, StoreError>;
}

/// The queues' tables in a [`Store`]'s database: the embedded [`QueueStorage`].
#[derive(Debug, Clone)]
pub struct RedbQueueStorage {
    store: Arc<Store>,
}

/// A stored message. The store does not read `attributes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub id: u64,
    /// The id clients know the message by, when the queue does not derive
    /// it from `id` (a message dead-lettered from another queue keeps its own).
    pub wire_id: Option<String>,
    pub body: String,
    pub attributes: Vec<u8>,
    pub sent_ms: u64,
    /// When a message never received becomes visible (the end of its delay).
    pub visible_at_ms: u64,
    pub receive_count: u32,
    pub first_receive_ms: Option<u64>,
}

/// One change to stored messages; `queue` is the queue's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueWrite {
    /// A new message (also raises the queue's next id past it).
    Put { queue: u64, message: QueueMessage },
    /// A receive; ignored if the message is gone.
    Received { queue: u64, id: u64, receive_count: u32, first_receive_ms: u64 },
    Delete { queue: u64, id: u64 },
    /// Every message of the queue.
    Purge { queue: u64 },
}

impl QueueWrite {
    /// Whether the commit that carries it must be durable before anyone is told.
    pub fn needs_sync(&self) -> bool {
        !matches!(self, QueueWrite::Received { .. })
    }
}

/// The state of a stored queue: its messages in id order, and the next id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredQueue {
    pub messages: Vec<QueueMessage>,
    pub next_id: u64,
}

impl RedbQueueStorage {
    /// Creates the tables in `store`'s database if missing, so readers never
    /// meet a missing one.
    pub fn open(store: Arc<Store>) -> Result<RedbQueueStorage, StoreError> {
        const CTX: &str = "creating the queues' tables";
        let txn = store.database().begin_write().ctx(CTX)?;
        txn.open_table(QUEUES).ctx(CTX)?;
        txn.open_table(MESSAGES).ctx(CTX)?;
        txn.open_table(RECEIVES).ctx(CTX)?;
        txn.open_table(NEXT_IDS).ctx(CTX)?;
        store.commit_write(txn, true, CTX)?;
        Ok(RedbQueueStorage { store })
    }
}

impl QueueStorage for RedbQueueStorage {
    fn put_definition(&self, account: &str, name: &str, record: &[u8]) -> Result<(), StoreError> {
        const CTX: &str = "storing a queue";
        let txn = self.store.database().begin_write().ctx(CTX)?;
        txn.open_table(QUEUES).ctx(CTX)?.insert((account, name), record).ctx(CTX)?;
        self.store.commit_write(txn, true, CTX)
    }

    fn delete_definition(&self, account: &str, name: &str) -> Result<bool, StoreError> {
        const CTX: &str = "deleting a queue";
        let txn = self.store.database().begin_write().ctx(CTX)?;
        let existed = txn.open_table(QUEUES).ctx(CTX)?.remove((account, name)).ctx(CTX)?.is_some();
        self.store.commit_write(txn, true, CTX)?;
        Ok(existed)
    }

    fn definitions(&self) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
        const CTX: &str = "listing queues";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let table = txn.open_table(QUEUES).ctx(CTX)?;
        let mut out = Vec::new();
        for item in table.iter().ctx(CTX)? {
            let (k, v) = item.ctx(CTX)?;
            let (account, name) = k.value();
            out.push((account.to_string(), name.to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn messages(&self, queue: u64) -> Result<StoredQueue, StoreError> {
        const CTX: &str = "reading queue messages";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let messages = txn.open_table(MESSAGES).ctx(CTX)?;
        let receives = txn.open_table(RECEIVES).ctx(CTX)?;
        let next_id = txn.open_table(NEXT_IDS).ctx(CTX)?.get(queue).ctx(CTX)?.map_or(0, |g| g.value());
        let mut out = StoredQueue { messages: Vec::new(), next_id };
        for item in messages.range((queue, 0)..=(queue, u64::MAX)).ctx(CTX)? {
            let (k, v) = item.ctx(CTX)?;
            let id = k.value().1;
            let (sent_ms, visible_at_ms, body, attributes, wire_id) = v.value();
            let (receive_count, first) = receives.get((queue, id)).ctx(CTX)?.map_or((0, 0), |g| g.value());
            out.messages.push(QueueMessage {
                id,
                wire_id: (!wire_id.is_empty()).then(|| wire_id.to_string()),
                body: body.to_string(),
                attributes: attributes.to_vec(),
                sent_ms,
                visible_at_ms,
                receive_count,
                first_receive_ms: (receive_count > 0).then_some(first),
            });
        }
        Ok(out)
    }

    /// One transaction, fsync'd if any write needs it.
    fn apply(&self, writes: &[QueueWrite]) -> Result<(), StoreError> {
        const CTX: &str = "writing queue messages";
        let txn = self.store.database().begin_write().ctx(CTX)?;
        {
            let mut messages = txn.open_table(MESSAGES).ctx(CTX)?;
            let mut receives = txn.open_table(RECEIVES).ctx(CTX)?;
            let mut next_ids = txn.open_table(NEXT_IDS).ctx(CTX)?;
            for write in writes {
                match write {
                    QueueWrite::Put { queue, message: m } => {
                        let wire_id = m.wire_id.as_deref().unwrap_or("");
                        let value = (m.sent_ms, m.visible_at_ms, m.body.as_str(), m.attributes.as_slice(), wire_id);
                        messages.insert((*queue, m.id), value).ctx(CTX)?;
                        if m.receive_count > 0 {
                            let first = m.first_receive_ms.unwrap_or(m.sent_ms);
                            receives.insert((*queue, m.id), (m.receive_count, first)).ctx(CTX)?;
                        }
                        let next = next_ids.get(*queue).ctx(CTX)?.map_or(0, |g| g.value());
                        if m.id >= next {
                            next_ids.insert(*queue, m.id.saturating_add(1)).ctx(CTX)?;
                        }
                    }
                    QueueWrite::Received { queue, id, receive_count, first_receive_ms } => {
                        if messages.get((*queue, *id)).ctx(CTX)?.is_some() {
                            receives.insert((*queue, *id), (*receive_count, *first_receive_ms)).ctx(CTX)?;
                        }
                    }
                    QueueWrite::Delete { queue, id } => {
                        messages.remove((*queue, *id)).ctx(CTX)?;
                        receives.remove((*queue, *id)).ctx(CTX)?;
                    }
                    QueueWrite::Purge { queue } => {
                        messages.retain_in((*queue, 0)..=(*queue, u64::MAX), |_, _| false).ctx(CTX)?;
                        receives.retain_in((*queue, 0)..=(*queue, u64::MAX), |_, _| false).ctx(CTX)?;
                    }
                }
            }
        }
        self.store.commit_write(txn, writes.iter().any(QueueWrite::needs_sync), CTX)
    }

    fn remove_orphans(&self, live: &HashSet<u64>) -> Result<usize, StoreError> {
        const CTX: &str = "removing messages of deleted queues";
        let txn = self.store.database().begin_write().ctx(CTX)?;
        let mut removed = 0;
        {
            let mut messages = txn.open_table(MESSAGES).ctx(CTX)?;
            messages
                .retain(|(queue, _), _| {
                    let keep = live.contains(&queue);
                    removed += usize::from(!keep);
                    keep
                })
                .ctx(CTX)?;
            txn.open_table(RECEIVES).ctx(CTX)?.retain(|(queue, _), _| live.contains(&queue)).ctx(CTX)?;
            txn.open_table(NEXT_IDS).ctx(CTX)?.retain(|queue, _| live.contains(&queue)).ctx(CTX)?;
        }
        self.store.commit_write(txn, true, CTX)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    //! Every test goes through [`QueueStorage`] only, so another backend can
    //! run the same checks: each takes a way to open the storage (again, for
    //! "survives reopening") on one place.
    use super::*;

    /// Opens the storage kept in `dir` (the embedded one here).
    type Open = fn(&std::path::Path) -> Box<dyn QueueStorage>;

    fn redb(dir: &std::path::Path) -> Box<dyn QueueStorage> {
        Box::new(RedbQueueStorage::open(Arc::new(Store::open(dir).unwrap())).unwrap())
    }

    fn message(id: u64, body: &str) -> QueueMessage {
        QueueMessage {
            id,
            wire_id: (id == 2).then(|| "from-elsewhere".to_string()),
            body: body.into(),
            attributes: vec![1, 2, 3],
            sent_ms: 1000 + id,
            visible_at_ms: 2000 + id,
            receive_count: 0,
            first_receive_ms: None,
        }
    }

    fn queues_and_messages_survive_reopening(open: Open) {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            store.put_definition("111111111111", "q", b"record").unwrap();
            store.put_definition("222222222222", "q", b"other").unwrap();
            store
                .apply(&[
                    QueueWrite::Put { queue: 7, message: message(0, "a") },
                    QueueWrite::Put { queue: 7, message: message(1, "b") },
                    QueueWrite::Put { queue: 7, message: message(2, "c") },
                    QueueWrite::Put { queue: 8, message: message(0, "other queue") },
                    QueueWrite::Delete { queue: 7, id: 0 },
                ])
                .unwrap();
            store
                .apply(&[
                    QueueWrite::Received { queue: 7, id: 1, receive_count: 3, first_receive_ms: 5000 },
                    QueueWrite::Received { queue: 7, id: 0, receive_count: 1, first_receive_ms: 5000 },
                ])
                .unwrap();
        }
        let store = open(dir.path());
        assert_eq!(
            store.definitions().unwrap(),
            vec![
                ("111111111111".into(), "q".into(), b"record".to_vec()),
                ("222222222222".into(), "q".into(), b"other".to_vec())
            ]
        );
        let stored = store.messages(7).unwrap();
        let received = QueueMessage { receive_count: 3, first_receive_ms: Some(5000), ..message(1, "b") };
        assert_eq!(stored, StoredQueue { messages: vec![received, message(2, "c")], next_id: 3 });
        assert_eq!(store.messages(8).unwrap().messages, vec![message(0, "other queue")]);
        assert_eq!(store.messages(9).unwrap(), StoredQueue::default());
    }

    fn purge_and_orphans(open: Open) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let puts: Vec<QueueWrite> = (0..3)
            .flat_map(|id| [7, 8, 9].map(|queue| QueueWrite::Put { queue, message: message(id, "m") }))
            .collect();
        store.apply(&puts).unwrap();
        store.apply(&[QueueWrite::Purge { queue: 7 }]).unwrap();
        assert_eq!(store.messages(7).unwrap(), StoredQueue { messages: Vec::new(), next_id: 3 }, "ids are not reused");
        assert_eq!(store.remove_orphans(&HashSet::from([7, 8])).unwrap(), 3);
        assert_eq!(store.messages(8).unwrap().messages.len(), 3);
        assert_eq!(store.messages(9).unwrap(), StoredQueue::default());
        assert!(store.delete_definition("111111111111", "none").is_ok_and(|existed| !existed));
    }

    fn definitions_replace_and_delete(open: Open) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert!(store.definitions().unwrap().is_empty());
        store.put_definition("111111111111", "b", b"one").unwrap();
        store.put_definition("111111111111", "a", b"two").unwrap();
        store.put_definition("111111111111", "b", b"one'").unwrap();
        assert!(store.delete_definition("111111111111", "a").unwrap());
        assert!(!store.delete_definition("111111111111", "a").unwrap());
        assert_eq!(store.definitions().unwrap(), vec![("111111111111".into(), "b".into(), b"one'".to_vec())]);
    }

    /// A message put with a receive count keeps it; a later, smaller id does
    /// not lower the next id; a receive of a message that is gone (or never
    /// was) writes nothing; a batch is applied in its order.
    fn writes_apply_in_order(open: Open) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let received = QueueMessage { receive_count: 2, first_receive_ms: Some(4000), ..message(5, "dead letter") };
        store
            .apply(&[
                QueueWrite::Put { queue: 1, message: received.clone() },
                QueueWrite::Put { queue: 1, message: message(3, "earlier id") },
                QueueWrite::Delete { queue: 1, id: 3 },
                QueueWrite::Put { queue: 1, message: message(3, "put again") },
                QueueWrite::Received { queue: 1, id: 4, receive_count: 1, first_receive_ms: 4500 },
            ])
            .unwrap();
        store.apply(&[QueueWrite::Delete { queue: 1, id: 4 }, QueueWrite::Delete { queue: 2, id: 0 }]).unwrap();
        assert_eq!(
            store.messages(1).unwrap(),
            StoredQueue { messages: vec![message(3, "put again"), received], next_id: 6 }
        );
        store.apply(&[QueueWrite::Put { queue: 1, message: message(4, "late") }]).unwrap();
        assert_eq!(store.messages(1).unwrap().messages[1], message(4, "late"), "no receive count left from before");
        assert_eq!(store.messages(1).unwrap().next_id, 6);
    }

    // Every check above, on the embedded storage.
    #[test]
    fn redb_queues_and_messages_survive_reopening() {
        queues_and_messages_survive_reopening(redb);
    }

    #[test]
    fn redb_purge_and_orphans() {
        purge_and_orphans(redb);
    }

    #[test]
    fn redb_definitions_replace_and_delete() {
        definitions_replace_and_delete(redb);
    }

    #[test]
    fn redb_writes_apply_in_order() {
        writes_apply_in_order(redb);
    }
}
