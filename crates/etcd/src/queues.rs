//! The message queues and the event source mappings in etcd: [`EtcdQueueStorage`], a front end's `QueueStorage`,
//! and [`EtcdMappingStorage`], its `MappingStorage`. One front end at a time serves them; every write is fenced on
//! its holding the queues' key ([`Fence`]).
//!
//! # Keys
//! - `queues/definitions/<account>/<name>`: a queue's definition (the record as the queues give it).
//! - `queues/messages/<queue>/<id>`: one message, written once: `u32` length of its metadata (big endian), the
//!   metadata (JSON: wire id, sent and visible-at times, attributes in base64), the body. `<queue>` is the queue's
//!   id in 16 hex digits, `<id>` the message's in 20 digits, so keys sort as ids.
//! - `queues/receives/<queue>/<id>`: the message's receive count and first receive time (`u32`, `u64`, big
//!   endian), so a receive rewrites a few bytes. Absent: never received.
//! - `queues/next/<queue>`: the queue's next message id (20 digits, so etcd compares it as a number); it only grows.
//! - `mappings/<account>/<uuid>`: an event source mapping's record.
//!
//! # Who writes
//! Only the front end holding the fence's key (`leaders/queues`, its lease in hex): every write is a transaction
//! that holds only while the key names this front end's lease, so a front end that lost the key (its lease
//! expired, another took over) changes nothing more and is told so. Reads are not fenced, nor one snapshot: they
//! are made at start, before this front end writes.
//!
//! # A batch
//! [`EtcdQueueStorage::apply`] makes a batch one transaction while it fits etcd's limits, and cuts a larger one into
//! several, applied in order: a failure then leaves the transactions before it applied, and the batch is no longer
//! all or nothing. It is never cut between a `Put` and the `Delete` right after it (dead-lettering: the message
//! moves whole or not at all). etcd refuses a transaction that writes a key twice, so each transaction holds the
//! last write of each key: a `Purge` is a range delete that leaves out the keys put after it in the same
//! transaction; a queue's next id is raised once per transaction, to past its largest id there, by a nested
//! transaction that compares it first.
//!
//! A `Received` for a message gone (deleted in the same transaction, or before) writes nothing, as in the embedded
//! storage: when the transaction does not itself put or delete the message, the receive is a nested transaction
//! that puts it only if the message's key exists. A `Put` without a receive count deletes any receive left at its
//! key, and a `Delete` or `Purge` deletes the receives with the messages, so a receive never outlives its message.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use base64::Engine as _;
use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse, TxnResponse};
use ignis_pollers::tables::MappingStorage;
use ignis_queues::{QueueMessage, QueueStorage, QueueWrite, StoredQueue};
use ignis_store::StoreError;
use serde::{Deserialize, Serialize};

use crate::events::{frame, unframe};
use crate::mirror::prefix_end;
use crate::{Etcd, EtcdError, key};

/// Most operations in one transaction (etcd's `--max-txn-ops` is 128 by default).
const MAX_OPS: usize = 100;
/// Most bytes in one transaction (etcd's request limit is 1.5 MiB by default).
const MAX_TXN_BYTES: usize = 1024 * 1024 + 64 * 1024;
/// Messages read per page (each at most 1 MiB and its metadata: a page stays below [`crate::MAX_ANSWER`]).
const PAGE: i64 = 32;
/// Small records (definitions, mappings, receives) read per page.
const SMALL_PAGE: i64 = 1000;
/// What a write's keys and framing add to its value, at most.
const KEYS_BYTES: usize = 256;

/// Which front end may write the queues: every write is a transaction that holds only while `key` (a full key)
/// holds `lease` in hex; 0: this front end may not write.
#[derive(Clone)]
pub struct Fence {
    pub key: String,
    pub lease: Arc<AtomicI64>,
}

impl Fence {
    /// The compare every write holds under, or the refusal when this front end may not write.
    fn compare(&self) -> Result<Compare, StoreError> {
        match self.lease.load(Ordering::Acquire) {
            0 => Err(not_serving()),
            lease => Ok(Compare::value(self.key.as_str(), CompareOp::Equal, format!("{lease:x}"))),
        }
    }
}

fn not_serving() -> StoreError {
    StoreError::Shared("this front end no longer serves the queues (another holds them, or none does)".into())
}

fn shared(e: EtcdError) -> StoreError {
    StoreError::Shared(e.to_string())
}

/// Runs `ops` in one transaction that holds under `fence`.
async fn fenced(etcd: &Etcd, fence: &Compare, ops: Vec<TxnOp>) -> Result<TxnResponse, StoreError> {
    let (answer, _) = etcd.txn(Txn::new().when([fence.clone()]).and_then(ops)).await.map_err(shared)?;
    if answer.succeeded() { Ok(answer) } else { Err(not_serving()) }
}

/// Whether the first operation of `answer` (a delete) deleted anything.
fn deleted(answer: &TxnResponse) -> bool {
    matches!(answer.op_responses().first(), Some(TxnOpResponse::Delete(d)) if d.deleted() > 0)
}

/// Every key-value under `prefix`, `page` at a time, to `each`.
async fn scan(etcd: &Etcd, prefix: &str, page: i64, mut each: impl FnMut(&KeyValue)) -> Result<(), StoreError> {
    let mut from = prefix.to_string();
    loop {
        let options = GetOptions::new().with_range(prefix_end(prefix)).with_limit(page);
        let got = etcd.get(&from, Some(options)).await.map_err(shared)?;
        got.kvs().iter().for_each(&mut each);
        match got.kvs().last() {
            Some(last) if got.more() => from = format!("{}\0", String::from_utf8_lossy(last.key())),
            _ => return Ok(()),
        }
    }
}

/// Every `(account, name, record)` under `prefix` (whose keys are `<prefix><account>/<name>`), by account then name.
async fn records(etcd: &Etcd, prefix: &str) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    scan(etcd, prefix, SMALL_PAGE, |kv| {
        let named = kv.key_str().ok().and_then(|k| k.strip_prefix(prefix)?.split_once('/'));
        if let Some((account, name)) = named {
            out.push((account.to_string(), name.to_string(), kv.value().to_vec()));
        }
    })
    .await?;
    out.sort();
    Ok(out)
}

/// Where the queues' definitions are, under the prefix (`<account>/<name>` below it).
pub const DEFINITIONS: &str = "queues/definitions/";

fn definition_key(account: &str, name: &str) -> String {
    key(&format!("{DEFINITIONS}{account}/{name}"))
}

fn messages_prefix(queue: u64) -> String {
    key(&format!("queues/messages/{queue:016x}/"))
}

fn message_key(queue: u64, id: u64) -> String {
    key(&format!("queues/messages/{queue:016x}/{id:020}"))
}

fn receives_prefix(queue: u64) -> String {
    key(&format!("queues/receives/{queue:016x}/"))
}

fn receive_key(queue: u64, id: u64) -> String {
    key(&format!("queues/receives/{queue:016x}/{id:020}"))
}

fn next_key(queue: u64) -> String {
    key(&format!("queues/next/{queue:016x}"))
}

/// A message's metadata: all but its id (the key's), body (after it) and receives (a key of their own).
#[derive(Serialize, Deserialize)]
struct Meta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wire_id: Option<String>,
    sent_ms: u64,
    visible_at_ms: u64,
    /// Base64.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    attributes: String,
}

fn encode_message(m: &QueueMessage) -> Vec<u8> {
    let meta = Meta {
        wire_id: m.wire_id.clone(),
        sent_ms: m.sent_ms,
        visible_at_ms: m.visible_at_ms,
        attributes: base64::engine::general_purpose::STANDARD.encode(&m.attributes),
    };
    // A struct of strings and numbers always serialises.
    let meta = serde_json::to_vec(&meta).unwrap_or_default();
    frame(&meta, m.body.as_bytes())
}

/// The message `id` stored as `value`, not yet received.
fn decode_message(id: u64, value: &[u8]) -> Result<QueueMessage, String> {
    let (meta, body) = unframe(value).ok_or("the value is cut short")?;
    let meta: Meta = serde_json::from_slice(meta).map_err(|e| e.to_string())?;
    Ok(QueueMessage {
        id,
        wire_id: meta.wire_id,
        body: String::from_utf8(body.to_vec()).map_err(|e| e.to_string())?,
        attributes: base64::engine::general_purpose::STANDARD.decode(&meta.attributes).map_err(|e| e.to_string())?,
        sent_ms: meta.sent_ms,
        visible_at_ms: meta.visible_at_ms,
        receive_count: 0,
        first_receive_ms: None,
    })
}

fn encode_receive(count: u32, first_ms: u64) -> Vec<u8> {
    [&count.to_be_bytes()[..], &first_ms.to_be_bytes()].concat()
}

fn decode_receive(value: &[u8]) -> Option<(u32, u64)> {
    let count = u32::from_be_bytes(value.get(..4)?.try_into().ok()?);
    let first = u64::from_be_bytes(value.get(4..12)?.try_into().ok()?);
    Some((count, first))
}

/// The id at the end of a message's or receive's key.
fn id_of(kv: &KeyValue, prefix: &str) -> Option<u64> {
    kv.key_str().ok()?.strip_prefix(prefix)?.parse().ok()
}

/// Most bytes `write` adds to a transaction: its value, keys and framing.
fn bytes(write: &QueueWrite) -> usize {
    match write {
        QueueWrite::Put { message: m, .. } => {
            let wire_id = m.wire_id.as_ref().map_or(0, String::len);
            m.body.len() + wire_id + m.attributes.len().div_ceil(3) * 4 + 3 * KEYS_BYTES
        }
        _ => KEYS_BYTES,
    }
}

/// The last write of one key in a transaction.
enum Op {
    Put(Vec<u8>),
    Delete,
    /// A receive: put only if the message at `message` is stored.
    PutIfStored { message: String, value: Vec<u8> },
}

/// The writes of one transaction, reduced to one operation per key (etcd refuses a transaction that puts a key
/// twice, or puts a key it also deletes).
#[derive(Default)]
struct Cut {
    keys: BTreeMap<String, Op>,
    /// Queues purged, before the writes in `keys` of their messages.
    purged: BTreeSet<u64>,
    /// Each queue's next id at least.
    next: BTreeMap<u64, u64>,
    bytes: usize,
}

impl Cut {
    fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.purged.is_empty() && self.next.is_empty()
    }

    /// How many operations the transaction takes ([`Cut::ops`]).
    fn len(&self) -> usize {
        let purges: usize = self.purged.iter().map(|q| 2 + self.kept(*q).count()).sum();
        self.keys.len() + self.next.len() + purges
    }

    /// Most operations `write` adds.
    fn bound(&self, write: &QueueWrite) -> usize {
        match write {
            QueueWrite::Put { queue, .. } => 3 + if self.purged.contains(queue) { 2 } else { 0 },
            QueueWrite::Received { .. } => 1,
            QueueWrite::Delete { .. } | QueueWrite::Purge { .. } => 2,
        }
    }

    /// Whether message `id` of `queue` is stored after this transaction's writes so far; `None`: as before it.
    fn stored(&self, queue: u64, id: u64) -> Option<bool> {
        match self.keys.get(&message_key(queue, id)) {
            Some(Op::Put(_)) => Some(true),
            Some(Op::Delete) => Some(false),
            Some(Op::PutIfStored { .. }) => None,
            None => self.purged.contains(&queue).then_some(false),
        }
    }

    /// The keys of purged `queue` put after its purge (its range delete leaves them out).
    fn kept(&self, queue: u64) -> impl Iterator<Item = &String> {
        [messages_prefix(queue), receives_prefix(queue)].into_iter().flat_map(move |prefix| {
            let end = prefix_end(&prefix);
            self.keys.range(prefix..end).filter(|(_, op)| !matches!(op, Op::Delete)).map(|(k, _)| k)
        })
    }

    fn add(&mut self, write: &QueueWrite) {
        self.bytes += bytes(write);
        match write {
            QueueWrite::Put { queue, message: m } => {
                self.keys.insert(message_key(*queue, m.id), Op::Put(encode_message(m)));
                let receive = match m.receive_count {
                    0 => Op::Delete,
                    count => Op::Put(encode_receive(count, m.first_receive_ms.unwrap_or(m.sent_ms))),
                };
                self.keys.insert(receive_key(*queue, m.id), receive);
                let next = self.next.entry(*queue).or_insert(0);
                *next = (*next).max(m.id.saturating_add(1));
            }
            QueueWrite::Received { queue, id, receive_count, first_receive_ms } => {
                let value = encode_receive(*receive_count, *first_receive_ms);
                let op = match self.stored(*queue, *id) {
                    Some(true) => Op::Put(value),
                    Some(false) => return,
                    None => Op::PutIfStored { message: message_key(*queue, *id), value },
                };
                self.keys.insert(receive_key(*queue, *id), op);
            }
            QueueWrite::Delete { queue, id } => {
                self.keys.insert(message_key(*queue, *id), Op::Delete);
                self.keys.insert(receive_key(*queue, *id), Op::Delete);
            }
            QueueWrite::Purge { queue } => {
                let prefixes = [messages_prefix(*queue), receives_prefix(*queue)];
                self.keys.retain(|k, _| !prefixes.iter().any(|p| k.starts_with(p.as_str())));
                self.purged.insert(*queue);
            }
        }
    }

    /// The transaction's operations: the purges' range deletes, then one operation per key, then the next ids.
    fn ops(self) -> Vec<TxnOp> {
        let mut ops = Vec::with_capacity(self.len());
        for queue in &self.purged {
            for prefix in [messages_prefix(*queue), receives_prefix(*queue)] {
                let end = prefix_end(&prefix);
                let mut from = prefix.clone();
                for (kept, _) in self.keys.range(prefix..end.clone()).filter(|(_, op)| !matches!(op, Op::Delete)) {
                    ops.push(TxnOp::delete(from, Some(DeleteOptions::new().with_range(kept.as_str()))));
                    from = format!("{kept}\0");
                }
                ops.push(TxnOp::delete(from, Some(DeleteOptions::new().with_range(end))));
            }
        }
        for (key, op) in self.keys {
            ops.push(match op {
                Op::Put(value) => TxnOp::put(key, value, None),
                Op::Delete => TxnOp::delete(key, None),
                Op::PutIfStored { message, value } => TxnOp::txn(
                    Txn::new().when([Compare::version(message, CompareOp::Greater, 0)]).and_then([TxnOp::put(key, value, None)]),
                ),
            });
        }
        for (queue, next) in self.next {
            // Raised where lower, made where absent (a value compare fails on an absent key).
            let (key, value) = (next_key(queue), format!("{next:020}"));
            let put = || TxnOp::put(key.as_str(), value.as_str(), None);
            let absent = Txn::new().when([Compare::version(key.as_str(), CompareOp::Equal, 0)]).and_then([put()]);
            let lower = Txn::new()
                .when([Compare::value(key.as_str(), CompareOp::Less, value.as_str())])
                .and_then([put()])
                .or_else([TxnOp::txn(absent)]);
            ops.push(TxnOp::txn(lower));
        }
        ops
    }
}

/// The queues' definitions and messages in etcd.
pub struct EtcdQueueStorage {
    etcd: Etcd,
    fence: Fence,
    runtime: tokio::runtime::Handle,
}

impl EtcdQueueStorage {
    /// The queues stored through `etcd`, written while `fence` holds; the storage's blocking calls run their
    /// requests on `runtime`.
    pub fn new(etcd: Etcd, fence: Fence, runtime: tokio::runtime::Handle) -> EtcdQueueStorage {
        EtcdQueueStorage { etcd, fence, runtime }
    }

    /// Runs `request` to its end from a blocking caller (a writer's thread, a blocking task, a start).
    fn wait<T>(&self, request: impl std::future::Future<Output = T>) -> T {
        crate::blocking_wait(&self.runtime, request)
    }
}

/// The ids of the queues with a key under `area` (`<area><queue>...`): one read per queue, keys only.
async fn queue_ids(etcd: &Etcd, area: &str) -> Result<Vec<u64>, StoreError> {
    let mut ids = Vec::new();
    let mut from = area.to_string();
    loop {
        let options = GetOptions::new().with_range(prefix_end(area)).with_limit(1).with_keys_only();
        let got = etcd.get(&from, Some(options)).await.map_err(shared)?;
        let Some(kv) = got.kvs().first() else { return Ok(ids) };
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let hex = key.strip_prefix(area).and_then(|rest| rest.get(..16)).filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()));
        match hex.and_then(|hex| u64::from_str_radix(hex, 16).ok()) {
            Some(queue) => {
                ids.push(queue);
                // Past every key of this queue (ids are 16 digits: `0` sorts after `/` and before the next id).
                from = format!("{area}{queue:016x}0");
            }
            None => from = format!("{key}\0"),
        }
    }
}

impl QueueStorage for EtcdQueueStorage {
    fn definitions(&self) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
        self.wait(records(&self.etcd, &key(DEFINITIONS)))
    }

    fn put_definition(&self, account: &str, name: &str, record: &[u8]) -> Result<(), StoreError> {
        let fence = self.fence.compare()?;
        let put = TxnOp::put(definition_key(account, name), record, None);
        self.wait(fenced(&self.etcd, &fence, vec![put])).map(drop)
    }

    /// A try whose outcome was unknown and that deleted the definition answers `false` on the try after it.
    fn delete_definition(&self, account: &str, name: &str) -> Result<bool, StoreError> {
        let fence = self.fence.compare()?;
        let delete = TxnOp::delete(definition_key(account, name), None);
        self.wait(fenced(&self.etcd, &fence, vec![delete])).map(|answer| deleted(&answer))
    }

    fn messages(&self, queue: u64) -> Result<StoredQueue, StoreError> {
        self.wait(async {
            let next = self.etcd.get(&next_key(queue), None).await.map_err(shared)?;
            let next_id = next.kvs().first().and_then(|kv| kv.value_str().ok()?.parse().ok()).unwrap_or(0);
            let mut receives = HashMap::new();
            let prefix = receives_prefix(queue);
            scan(&self.etcd, &prefix, SMALL_PAGE, |kv| {
                if let (Some(id), Some(receive)) = (id_of(kv, &prefix), decode_receive(kv.value())) {
                    receives.insert(id, receive);
                }
            })
            .await?;
            let mut messages = Vec::new();
            let prefix = messages_prefix(queue);
            scan(&self.etcd, &prefix, PAGE, |kv| {
                let key = String::from_utf8_lossy(kv.key());
                match id_of(kv, &prefix).ok_or_else(|| "the key names no message id".to_string()).and_then(|id| decode_message(id, kv.value())) {
                    Ok(mut m) => {
                        if let Some(&(count, first)) = receives.get(&m.id).filter(|(count, _)| *count > 0) {
                            (m.receive_count, m.first_receive_ms) = (count, Some(first));
                        }
                        messages.push(m);
                    }
                    Err(reason) => tracing::error!(%key, %reason, "a stored queue message is unreadable, left out"),
                }
            })
            .await?;
            Ok(StoredQueue { messages, next_id })
        })
    }

    /// One transaction per cut within etcd's limits (see the module docs); a repeated try stores the same.
    fn apply(&self, writes: &[QueueWrite]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let fence = self.fence.compare()?;
        self.wait(async {
            let mut cut = Cut::default();
            let mut i = 0;
            while i < writes.len() {
                // A put and the delete right after it go together.
                let unit = match (&writes[i], writes.get(i + 1)) {
                    (QueueWrite::Put { .. }, Some(QueueWrite::Delete { .. })) => 2,
                    _ => 1,
                };
                let unit = &writes[i..i + unit];
                let ops: usize = unit.iter().map(|w| cut.bound(w)).sum();
                let bytes: usize = unit.iter().map(bytes).sum();
                if !cut.is_empty() && (cut.len() + ops > MAX_OPS || cut.bytes + bytes > MAX_TXN_BYTES) {
                    fenced(&self.etcd, &fence, std::mem::take(&mut cut).ops()).await?;
                }
                unit.iter().for_each(|w| cut.add(w));
                i += unit.len();
            }
            if !cut.is_empty() {
                fenced(&self.etcd, &fence, cut.ops()).await?;
            }
            Ok(())
        })
    }

    /// Range deletes of the dead queues' keys, a few queues per transaction.
    fn remove_orphans(&self, live: &HashSet<u64>) -> Result<usize, StoreError> {
        let fence = self.fence.compare()?;
        self.wait(async {
            let mut dead = BTreeSet::new();
            for area in ["queues/messages/", "queues/receives/", "queues/next/"] {
                dead.extend(queue_ids(&self.etcd, &key(area)).await?.into_iter().filter(|q| !live.contains(q)));
            }
            let dead: Vec<u64> = dead.into_iter().collect();
            let mut removed = 0;
            for queues in dead.chunks(MAX_OPS / 3) {
                let ops = queues
                    .iter()
                    .flat_map(|q| {
                        [
                            TxnOp::delete(messages_prefix(*q), Some(DeleteOptions::new().with_prefix())),
                            TxnOp::delete(receives_prefix(*q), Some(DeleteOptions::new().with_prefix())),
                            TxnOp::delete(next_key(*q), None),
                        ]
                    })
                    .collect();
                let answer = fenced(&self.etcd, &fence, ops).await?;
                // The messages' deletes: every third.
                removed += answer
                    .op_responses()
                    .iter()
                    .step_by(3)
                    .map(|r| match r {
                        TxnOpResponse::Delete(d) => usize::try_from(d.deleted()).unwrap_or(0),
                        _ => 0,
                    })
                    .sum::<usize>();
            }
            Ok(removed)
        })
    }
}

/// Where the mappings are: `mappings/<account>/<uuid>`.
pub(crate) const MAPPINGS: &str = "mappings/";

fn mapping_key(account: &str, uuid: &str) -> String {
    key(&format!("{MAPPINGS}{account}/{uuid}"))
}

/// The event source mappings in etcd.
pub struct EtcdMappingStorage {
    etcd: Etcd,
    fence: Fence,
    runtime: tokio::runtime::Handle,
}

impl EtcdMappingStorage {
    /// The mappings stored through `etcd`, written while `fence` holds; the storage's blocking calls run their
    /// requests on `runtime`.
    pub fn new(etcd: Etcd, fence: Fence, runtime: tokio::runtime::Handle) -> EtcdMappingStorage {
        EtcdMappingStorage { etcd, fence, runtime }
    }

    /// Runs `request` to its end from a blocking caller (a writer's thread, a blocking task, a start).
    fn wait<T>(&self, request: impl std::future::Future<Output = T>) -> T {
        crate::blocking_wait(&self.runtime, request)
    }
}

impl MappingStorage for EtcdMappingStorage {
    fn put(&self, account: &str, uuid: &str, record: &[u8]) -> Result<(), StoreError> {
        let fence = self.fence.compare()?;
        let put = TxnOp::put(mapping_key(account, uuid), record, None);
        self.wait(fenced(&self.etcd, &fence, vec![put])).map(drop)
    }

    /// A try whose outcome was unknown and that deleted the mapping answers `false` on the try after it.
    fn delete(&self, account: &str, uuid: &str) -> Result<bool, StoreError> {
        let fence = self.fence.compare()?;
        let delete = TxnOp::delete(mapping_key(account, uuid), None);
        self.wait(fenced(&self.etcd, &fence, vec![delete])).map(|answer| deleted(&answer))
    }

    fn all(&self) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
        self.wait(records(&self.etcd, &key(MAPPINGS)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: u64, bytes: usize) -> QueueMessage {
        QueueMessage {
            id,
            wire_id: id.is_multiple_of(2).then(|| format!("wire-{id}")),
            body: "b".repeat(bytes),
            attributes: vec![1, 2, 3],
            sent_ms: 1000 + id,
            visible_at_ms: 2000 + id,
            receive_count: 0,
            first_receive_ms: None,
        }
    }

    #[test]
    fn messages_and_receives_encode_and_decode() {
        for m in [message(1, 0), message(2, 300), QueueMessage { attributes: Vec::new(), ..message(4, 1) }] {
            assert_eq!(decode_message(m.id, &encode_message(&m)), Ok(m));
        }
        assert!(decode_message(1, b"\0\0\0\x05{}").is_err());
        assert_eq!(decode_receive(&encode_receive(3, u64::MAX)), Some((3, u64::MAX)));
        assert_eq!(decode_receive(&[0; 11]), None);
    }

    /// Every key once per transaction, within etcd's limits, a put with the delete after it.
    #[test]
    fn cuts_write_each_key_once_and_keep_the_limits() {
        let mut cut = Cut::default();
        cut.add(&QueueWrite::Put { queue: 1, message: message(5, 10) });
        cut.add(&QueueWrite::Delete { queue: 1, id: 5 });
        cut.add(&QueueWrite::Put { queue: 1, message: message(5, 10) });
        cut.add(&QueueWrite::Received { queue: 1, id: 5, receive_count: 1, first_receive_ms: 9 });
        cut.add(&QueueWrite::Received { queue: 1, id: 5, receive_count: 2, first_receive_ms: 9 });
        cut.add(&QueueWrite::Received { queue: 1, id: 6, receive_count: 1, first_receive_ms: 9 });
        assert!(matches!(cut.keys.get(&receive_key(1, 5)), Some(Op::Put(v)) if decode_receive(v) == Some((2, 9))));
        assert!(matches!(cut.keys.get(&receive_key(1, 6)), Some(Op::PutIfStored { .. })));
        cut.add(&QueueWrite::Purge { queue: 1 });
        assert!(cut.keys.is_empty(), "a purge drops what came before it");
        cut.add(&QueueWrite::Received { queue: 1, id: 6, receive_count: 1, first_receive_ms: 9 });
        assert!(cut.keys.is_empty(), "a purged message is not received");
        cut.add(&QueueWrite::Put { queue: 1, message: message(7, 10) });
        assert_eq!(cut.len(), 2 + 1 + 2 + 1, "the messages' range cut around the put, the receives', the put's two keys, the next id");
        assert_eq!(cut.len(), cut.ops().len());
    }
}
