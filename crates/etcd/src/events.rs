//! Asynchronous events in etcd: [`EtcdEventStorage`], a front end's `EventStorage`, and [`start_adoption`], which
//! hands the events of a front end that died to one that lives.
//!
//! # Keys
//! - `events/<origin>/<id>`: one pending event, its metadata and payload (`u32` length of the metadata, big
//!   endian, the metadata, the payload). `<origin>` names one start of one front end (random, new at each start),
//!   `<id>` is the event's id there (20 digits, so keys sort as ids).
//! - `origins/<origin>`: every origin that may still hold events (written at start, gone once adopted).
//! - `owners/<origin>`: the front end working the origin's events, under that front end's etcd lease
//!   ([`Presence`]): a front end that dies stops renewing it and the key goes.
//!
//! # Who works an event
//! The front end that accepted an event stores it under its own origin and runs it, as one server does (its
//! `ignis_pollers::Events`, whose group-commit writer calls [`EtcdEventStorage::apply`]: one etcd transaction
//! per group, split where etcd's request limits need it, never between an event's removal and the destination
//! event that follows it). Every front end looks for origins without an owner every [`ADOPT_EVERY`]; the first
//! to claim one (a transaction that makes `owners/<origin>` where it is absent, under its own lease) reads its
//! events, hands them to its own `Events::adopt` (stored again under its own origin, durably), then deletes them.
//! An event is never lost: it is deleted only after its copy is durable. A front end that dies while adopting
//! leaves the rest to the next claimant, which may run some events a second time (as Lambda's asynchronous
//! invocation may).

use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::{GetOptions, Txn, TxnOp};
use ignis_pollers::Events;
use ignis_pollers::tables::{EventChange, EventStorage, StoredEvent};
use ignis_store::StoreError;

use crate::mirror::prefix_end;
use crate::presence::Presence;
use crate::{Etcd, EtcdError, key};

/// How often a front end looks for origins whose front end died.
pub const ADOPT_EVERY: Duration = Duration::from_secs(1);
/// Most operations in one transaction (etcd's `--max-txn-ops` is 128 by default).
const MAX_OPS: usize = 100;
/// Most bytes of values in one transaction (etcd's request limit is 1.5 MiB by default).
const MAX_TXN_BYTES: usize = 1024 * 1024 + 64 * 1024;
/// Events read per page (each at most 1 MiB and its metadata: a page stays below [`crate::MAX_ANSWER`]).
const PAGE: i64 = 32;

fn event_key(origin: &str, id: u64) -> String {
    key(&format!("events/{origin}/{id:020}"))
}

fn events_prefix(origin: &str) -> String {
    key(&format!("events/{origin}/"))
}

fn shared(e: EtcdError) -> StoreError {
    StoreError::Shared(e.to_string())
}

/// An event's value: the metadata's length, the metadata, the payload.
pub(crate) fn frame(meta: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(4 + meta.len() + payload.len());
    value.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    value.extend_from_slice(meta);
    value.extend_from_slice(payload);
    value
}

/// The metadata and payload of an event's value.
pub(crate) fn unframe(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(value.get(..4)?.try_into().ok()?) as usize;
    let rest = value.get(4..)?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// The pending events of one front end's origin, in etcd.
pub struct EtcdEventStorage {
    etcd: Etcd,
    origin: String,
    runtime: tokio::runtime::Handle,
}

impl EtcdEventStorage {
    /// The events of `origin` (this start of this front end), stored through `etcd`; the storage's blocking
    /// calls run their requests on `runtime`.
    pub fn new(etcd: Etcd, origin: String, runtime: tokio::runtime::Handle) -> EtcdEventStorage {
        EtcdEventStorage { etcd, origin, runtime }
    }

    /// Runs `request` to its end from a blocking caller (a writer's thread, a blocking task, a start).
    fn wait<T>(&self, request: impl std::future::Future<Output = T>) -> T {
        crate::blocking_wait(&self.runtime, request)
    }
}

/// `changes` cut into transactions within etcd's limits, never between a removal and the put right after it.
fn groups(changes: &[EventChange]) -> Vec<&[EventChange]> {
    let size = |change: &EventChange| match change {
        EventChange::Put { meta, payload, .. } => meta.len() + payload.len() + 64,
        EventChange::Remove { .. } => 64,
    };
    let mut groups = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    let mut i = 0;
    while i < changes.len() {
        // A removal and the put that follows it go together.
        let unit = match (&changes[i], changes.get(i + 1)) {
            (EventChange::Remove { .. }, Some(EventChange::Put { .. })) => 2,
            _ => 1,
        };
        let unit_bytes: usize = changes[i..i + unit].iter().map(size).sum();
        if i > start && (i + unit - start > MAX_OPS || bytes + unit_bytes > MAX_TXN_BYTES) {
            groups.push(&changes[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += unit_bytes;
        i += unit;
    }
    if start < changes.len() {
        groups.push(&changes[start..]);
    }
    groups
}

impl EventStorage for EtcdEventStorage {
    /// One transaction per group of [`groups`]; a repeated try stores the same.
    fn apply(&self, changes: &[EventChange]) -> Result<(), StoreError> {
        self.wait(async {
            for group in groups(changes) {
                let ops: Vec<TxnOp> = group
                    .iter()
                    .map(|change| match change {
                        EventChange::Put { id, meta, payload } => TxnOp::put(event_key(&self.origin, *id), frame(meta, payload), None),
                        EventChange::Remove { id } => TxnOp::delete(event_key(&self.origin, *id), None),
                    })
                    .collect();
                self.etcd.txn(Txn::new().and_then(ops)).await.map_err(shared)?;
            }
            Ok(())
        })
    }

    fn pending(&self) -> Result<Vec<StoredEvent>, StoreError> {
        self.wait(async {
            let prefix = events_prefix(&self.origin);
            let mut pending = Vec::new();
            let mut from = prefix.clone();
            loop {
                let options = GetOptions::new().with_range(prefix_end(&prefix)).with_limit(PAGE);
                let page = self.etcd.get(&from, Some(options)).await.map_err(shared)?;
                for kv in page.kvs() {
                    let id = kv.key_str().ok().and_then(|k| k.strip_prefix(&prefix)?.parse().ok());
                    if let (Some(id), Some((meta, _))) = (id, unframe(kv.value())) {
                        pending.push(StoredEvent { id, meta: meta.to_vec() });
                    }
                }
                match page.kvs().last() {
                    Some(last) if page.more() => from = format!("{}\0", String::from_utf8_lossy(last.key())),
                    _ => return Ok(pending),
                }
            }
        })
    }

    fn payload(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.wait(async {
            let got = self.etcd.get(&event_key(&self.origin, id), None).await.map_err(shared)?;
            Ok(got.kvs().first().and_then(|kv| unframe(kv.value())).map(|(_, payload)| payload.to_vec()))
        })
    }
}

/// Records `origin` (this front end's start), owned under `presence`, and starts looking for the origins of front
/// ends that died, to adopt their events into `events`; the looking ends when `events` is dropped.
pub async fn start_adoption(etcd: Etcd, presence: Arc<Presence>, origin: String, events: Weak<Events>) -> Result<(), EtcdError> {
    // Owned before it is recorded: another front end never takes a recorded origin for a dead one's.
    if !claim(&etcd, &presence, &origin).await? {
        return Err(EtcdError::Unavailable(format!("the new origin {origin} is owned already")));
    }
    etcd.put(&key(&format!("origins/{origin}")), Vec::new(), None).await?;
    tokio::spawn(adopt_orphans(etcd, presence, origin, events));
    Ok(())
}

/// Makes `owners/<origin>` this front end's where it is absent (or is this one's already); whether it is.
async fn claim(etcd: &Etcd, presence: &Presence, origin: &str) -> Result<bool, EtcdError> {
    presence.claim(etcd, &key(&format!("owners/{origin}"))).await
}

async fn adopt_orphans(etcd: Etcd, presence: Arc<Presence>, origin: String, events: Weak<Events>) {
    loop {
        tokio::time::sleep(ADOPT_EVERY).await;
        let Some(events) = events.upgrade() else { return };
        // This front end's own origin, claimed again under a new lease if etcd let the old one expire.
        match claim(&etcd, &presence, &origin).await {
            Ok(true) => {}
            Ok(false) => tracing::error!(%origin, "another front end adopted this front end's events; they may run twice"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for asynchronous events to adopt");
                continue;
            }
        }
        match orphans(&etcd).await {
            Ok(orphans) => {
                for orphan in orphans {
                    if let Err(e) = adopt(&etcd, &presence, &orphan, &events).await {
                        tracing::warn!(origin = %orphan, error = %e, "cannot adopt a dead front end's events yet");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for asynchronous events to adopt"),
        }
    }
}

/// Origins without an owner.
async fn orphans(etcd: &Etcd) -> Result<Vec<String>, EtcdError> {
    let names = |prefix: String| async move {
        let got = etcd.get(&prefix, Some(GetOptions::new().with_prefix().with_keys_only())).await?;
        Ok::<Vec<String>, EtcdError>(
            got.kvs().iter().filter_map(|kv| kv.key_str().ok()?.strip_prefix(&prefix).map(str::to_string)).collect(),
        )
    };
    let owned = names(key("owners/")).await?;
    Ok(names(key("origins/")).await?.into_iter().filter(|origin| !owned.contains(origin)).collect())
}

/// Claims `orphan` and moves its events into `events`, a page at a time; then forgets the origin.
async fn adopt(etcd: &Etcd, presence: &Presence, orphan: &str, events: &Events) -> Result<(), EtcdError> {
    if !claim(etcd, presence, orphan).await? {
        return Ok(());
    }
    let prefix = events_prefix(orphan);
    let mut adopted = 0;
    loop {
        let page = etcd.get(&prefix, Some(GetOptions::new().with_prefix().with_limit(PAGE))).await?;
        if page.kvs().is_empty() {
            break;
        }
        let mut batch = Vec::with_capacity(page.kvs().len());
        for kv in page.kvs() {
            match unframe(kv.value()) {
                Some((meta, payload)) => batch.push((meta.to_vec(), payload.to_vec())),
                None => tracing::error!(key = %String::from_utf8_lossy(kv.key()), "a dead front end's event is unreadable, dropped"),
            }
        }
        adopted += events.adopt(batch).await.map_err(|e| EtcdError::Unavailable(e.to_string()))?;
        // Stored again as this front end's: the originals go.
        let deletes: Vec<TxnOp> = page.kvs().iter().map(|kv| TxnOp::delete(kv.key().to_vec(), None)).collect();
        etcd.txn(Txn::new().and_then(deletes)).await?;
    }
    etcd.retrying_delete(&key(&format!("origins/{orphan}"))).await?;
    etcd.retrying_delete(&key(&format!("owners/{orphan}"))).await?;
    tracing::info!(origin = orphan, adopted, "adopted a dead front end's asynchronous events");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(id: u64, bytes: usize) -> EventChange {
        EventChange::Put { id, meta: vec![1; 10], payload: vec![2; bytes] }
    }

    #[test]
    fn values_frame_and_unframe() {
        let value = frame(b"meta", b"payload");
        assert_eq!(unframe(&value), Some((&b"meta"[..], &b"payload"[..])));
        assert_eq!(unframe(&[0, 0, 0, 9, 1]), None);
        assert_eq!(unframe(&[0, 0]), None);
        assert_eq!(unframe(&frame(b"", b"")), Some((&b""[..], &b""[..])));
    }

    /// Every way of cutting: within the limits, in order, nothing lost, a removal with its put.
    #[test]
    fn groups_keep_etcds_limits_and_a_removal_with_its_put() {
        for n in [0usize, 1, 2, 99, 100, 101, 250] {
            for bytes in [0usize, 1000, 200_000, 1_100_000] {
                let mut changes = Vec::new();
                for i in 0..n as u64 {
                    if i % 3 == 1 {
                        changes.push(EventChange::Remove { id: i });
                    }
                    changes.push(put(i, bytes));
                }
                let cut = groups(&changes);
                assert_eq!(cut.concat(), changes, "nothing lost or reordered");
                for group in &cut {
                    let total: usize = group
                        .iter()
                        .map(|c| match c {
                            EventChange::Put { meta, payload, .. } => meta.len() + payload.len() + 64,
                            EventChange::Remove { .. } => 64,
                        })
                        .sum();
                    assert!(group.len() <= MAX_OPS, "{} ops", group.len());
                    assert!(total <= MAX_TXN_BYTES || group.len() <= 2, "{total} bytes in {} changes", group.len());
                    assert!(!matches!(group.last(), Some(EventChange::Remove { .. })) || group.len() == changes.len() || {
                        // A removal ends a group only when no put follows it.
                        let end = changes.iter().position(|c| std::ptr::eq(c, group.last().unwrap())).unwrap();
                        !matches!(changes.get(end + 1), Some(EventChange::Put { .. }))
                    });
                }
            }
        }
    }
}
