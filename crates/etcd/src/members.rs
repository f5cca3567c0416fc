//! [`EtcdMembership`]: the region's worker hosts as etcd keys, each under an etcd lease of its own, followed by
//! every front end with a watch: `ignis_invoke::Membership` over etcd.
//!
//! - A worker registers through any front end. It takes the next id (`worker-ids/next`, raised in the same
//!   transaction) and its key, `members/workers/<id>` (address, capacity, lease), is put under a new lease of the
//!   heartbeat timeout. Members listed at the same address (a new process listens there) have their keys deleted
//!   in that transaction, and their leases revoked.
//! - Its heartbeats, through any front end, renew that lease. A lease that expires (the worker fell silent) or is
//!   revoked (a front end's call to it failed) deletes the key: every front end's watch sees the member gone.
//! - Each front end reports each member gone once, to its own invoker, which forgets the sandboxes *it* placed
//!   there ([`View`], pure: what this front end saw listed, and what it has reported).
//! - Front ends are listed too (`members/front-ends/<lease>`, under each one's [`crate::Presence`] lease). A
//!   worker's memory is shared evenly among the front ends listed ([`share`]): each places on its share, so front
//!   ends placing on one worker independently do not over-commit it. The listing, with the revision this front
//!   end's watch has reached, goes to worker hosts in heartbeats' answers: a host ends the sandboxes of a front
//!   end listed no more (`ignis_cluster::owner`).
//!
//! # Invariants
//! - Ids come from one counter in etcd, raised by the transaction that lists the member: never reused, never 0.
//! - `check`, `fail` and `members` answer from memory; `register` returns once this front end's watch shows the
//!   new member; `heartbeat` is one lease renewal.
//! - Without quorum no lease expires, so no member is reported gone; a heartbeat that cannot reach etcd is
//!   answered as renewed while the member is still listed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use ignis_cluster::Capacity;
use ignis_cluster::owner::FrontEnds;
use ignis_invoke::membership::{Beat, Joined, Member, Membership, MembershipError};
use ignis_invoke::BoxFuture;
use ignis_placement::WorkerId;
use serde::{Deserialize, Serialize};

use crate::{Apply, Etcd, EtcdError, Kv, Mirror, key};

/// What the mirror follows: workers and front ends.
const MEMBERS: &str = "members/";
const WORKERS: &str = "workers/";
const FRONT_ENDS: &str = "front-ends/";
/// The next worker id.
const NEXT_ID: &str = "worker-ids/next";

/// The key listing front end `lease` (under that lease).
pub fn front_end_key(lease: i64) -> String {
    key(&format!("{MEMBERS}{FRONT_ENDS}{lease:x}"))
}

fn worker_key(id: WorkerId) -> String {
    key(&format!("{MEMBERS}{WORKERS}{:010}", id.0))
}

/// A worker's key's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listed {
    address: String,
    memory_mb: u64,
    cpus: u32,
    lease: i64,
}

/// What one front end may place on a worker of `capacity` when `front_ends` front ends (at least 1 counted) share
/// it: an even part of its memory; its CPUs are time-shared, and counted whole.
pub fn share(capacity: Capacity, front_ends: usize) -> Capacity {
    let ways = u64::try_from(front_ends.max(1)).unwrap_or(u64::MAX);
    Capacity { memory_mb: capacity.memory_mb / ways, cpus: capacity.cpus }
}

/// One front end's view of the members (pure): who etcd lists, and what this front end has reported gone.
#[derive(Debug, Default)]
pub struct View {
    /// Listed in etcd now: id → (address, capacity, lease).
    listed: BTreeMap<WorkerId, Listed>,
    /// Front ends listed: lease → the address they are reached at (empty until they say).
    front_ends: BTreeMap<i64, String>,
    /// Seen listed, not yet reported gone: where they were.
    known: BTreeMap<WorkerId, (String, Capacity)>,
    /// Reported gone here, listed (unhealthy) until a new member has its address.
    gone: BTreeMap<WorkerId, (String, Capacity)>,
    /// Being replaced by a registration at their address: reported by it, not by `check`.
    held: BTreeSet<WorkerId>,
}

impl View {
    /// Every key under `members/` at one revision.
    fn reset(&mut self, all: &[Kv]) {
        self.listed.clear();
        self.front_ends.clear();
        self.saw(all);
    }

    /// Changes to keys under `members/`, in order.
    fn saw(&mut self, changes: &[Kv]) {
        for kv in changes {
            if let Some(name) = kv.key.strip_prefix(FRONT_ENDS) {
                let Ok(lease) = i64::from_str_radix(name, 16) else {
                    tracing::warn!(key = %kv.key, "a front end's key that names no lease is ignored");
                    continue;
                };
                match &kv.value {
                    Some(address) => self.front_ends.insert(lease, String::from_utf8_lossy(address).into_owned()),
                    None => self.front_ends.remove(&lease),
                };
            } else if let Some(id) = kv.key.strip_prefix(WORKERS).and_then(|id| id.parse::<u32>().ok()) {
                let id = WorkerId(id);
                match kv.value.as_deref().map(serde_json::from_slice::<Listed>) {
                    Some(Ok(listed)) => self.list(id, listed),
                    Some(Err(e)) => tracing::warn!(key = %kv.key, error = %e, "an unreadable worker key is ignored"),
                    None => {
                        self.listed.remove(&id);
                    }
                }
            }
        }
    }

    /// Member `id` is listed: known here unless it was reported gone already (ids are never reused), and other
    /// members gone at its address leave the list.
    fn list(&mut self, id: WorkerId, listed: Listed) {
        if !self.gone.contains_key(&id) {
            self.known.insert(id, (listed.address.clone(), capacity(&listed)));
        }
        self.gone.retain(|&other, (address, _)| other == id || *address != listed.address);
        self.listed.insert(id, listed);
    }

    /// Members known here and no longer listed: reported now, once (not those a registration is replacing).
    pub fn check(&mut self) -> Vec<WorkerId> {
        let ended: Vec<WorkerId> = self
            .known
            .keys()
            .filter(|id| !self.listed.contains_key(id) && !self.held.contains(id))
            .copied()
            .collect();
        ended.into_iter().filter(|&id| self.end(id)).collect()
    }

    /// Ends member `id` here; true if it was known and not yet reported (nor being replaced).
    pub fn end(&mut self, id: WorkerId) -> bool {
        if self.held.contains(&id) {
            return false;
        }
        let Some(was) = self.known.remove(&id) else { return false };
        self.gone.insert(id, was);
        true
    }

    /// The members at `address`, listed (with their leases) or gone, which a registration there replaces: held
    /// back from [`View::check`] and [`View::end`] until [`View::replaced`].
    pub fn replacing(&mut self, address: &str) -> Vec<(WorkerId, Option<i64>)> {
        let mut at: Vec<(WorkerId, Option<i64>)> =
            self.listed.iter().filter(|(_, l)| l.address == address).map(|(&id, l)| (id, Some(l.lease))).collect();
        at.extend(self.gone.iter().filter(|(id, (a, _))| a == address && !self.listed.contains_key(id)).map(|(&id, _)| (id, None)));
        self.held.extend(at.iter().map(|(id, _)| *id));
        at
    }

    /// The registration that held `ids` back is over: when it `succeeded`, they are reported by its answer and
    /// leave the list; otherwise they are as they were.
    pub fn replaced(&mut self, ids: &[WorkerId], succeeded: bool) {
        for id in ids {
            self.held.remove(id);
            if succeeded {
                self.known.remove(id);
                self.listed.remove(id);
                self.gone.remove(id);
            }
        }
    }

    /// Every listed member, oldest first: the listed ones healthy, with this front end's share of them.
    pub fn members(&self) -> Vec<Member> {
        let front_ends = self.front_ends.len();
        let mut members: Vec<Member> = self
            .listed
            .iter()
            .map(|(&id, l)| match self.gone.get(&id) {
                Some(_) => Member { id, address: l.address.clone(), capacity: capacity(l), healthy: false },
                None => Member { id, address: l.address.clone(), capacity: share(capacity(l), front_ends), healthy: true },
            })
            .collect();
        members.extend(self.gone.iter().filter(|(id, _)| !self.listed.contains_key(id)).map(
            |(&id, (address, capacity))| Member { id, address: address.clone(), capacity: *capacity, healthy: false },
        ));
        members.sort_by_key(|m| m.id);
        members
    }

    /// Whether member `id` is listed and not gone here, and its lease.
    fn lease(&self, id: WorkerId) -> Option<i64> {
        self.listed.get(&id).filter(|_| !self.gone.contains_key(&id)).map(|l| l.lease)
    }
}

fn capacity(listed: &Listed) -> Capacity {
    Capacity { memory_mb: listed.memory_mb, cpus: listed.cpus }
}

/// The region's worker hosts in etcd; see the module docs.
pub struct EtcdMembership {
    etcd: Etcd,
    ttl: Duration,
    view: Arc<Mutex<View>>,
    mirror: Mirror,
}

struct Watched(std::sync::Weak<Mutex<View>>);

impl Apply for Watched {
    fn reset(&self, all: Vec<Kv>) -> crate::mirror::BoxFuture<'_, ()> {
        if let Some(view) = self.0.upgrade() {
            lock(&view).reset(&all);
        }
        Box::pin(async {})
    }

    fn apply(&self, changes: Vec<Kv>) -> crate::mirror::BoxFuture<'_, ()> {
        if let Some(view) = self.0.upgrade() {
            lock(&view).saw(&changes);
        }
        Box::pin(async {})
    }
}

fn lock(view: &Mutex<View>) -> MutexGuard<'_, View> {
    view.lock().unwrap_or_else(|e| e.into_inner())
}

impl EtcdMembership {
    /// Loads the members and follows them; a worker's lease lives `ttl` (whole seconds, at least 1) after its
    /// last heartbeat.
    pub async fn start(etcd: Etcd, ttl: Duration) -> Result<EtcdMembership, EtcdError> {
        let view = Arc::new(Mutex::new(View::default()));
        let watched = Arc::new(Watched(Arc::downgrade(&view)));
        let mirror = Mirror::start(etcd.clone(), key(MEMBERS), watched).await?;
        Ok(EtcdMembership { etcd, ttl, view, mirror })
    }

    fn view(&self) -> MutexGuard<'_, View> {
        lock(&self.view)
    }

    /// The front ends listed with the address they are reached at, by lease.
    pub fn front_ends_reached(&self) -> BTreeMap<i64, String> {
        let view = self.view();
        view.front_ends.iter().filter(|(_, address)| !address.is_empty()).map(|(&l, a)| (l, a.clone())).collect()
    }

    /// Where front end `lease` is reached, if it is listed with an address.
    pub fn front_end_address(&self, lease: i64) -> Option<String> {
        self.view().front_ends.get(&lease).filter(|address| !address.is_empty()).cloned()
    }

    async fn join(&self, address: &str, capacity: Capacity) -> Result<Joined, EtcdError> {
        let ttl = i64::try_from(self.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = self.etcd.client().lease_grant(ttl, None).await?.id();
        let next_key = key(NEXT_ID);
        loop {
            let got = self.etcd.get(&next_key, None).await?;
            let (next, version) = match got.kvs().first() {
                Some(kv) => {
                    let next = std::str::from_utf8(kv.value()).ok().and_then(|n| n.parse::<u32>().ok());
                    let next = next.ok_or_else(|| EtcdError::Corrupt {
                        key: next_key.clone(),
                        reason: "not a worker id".into(),
                    })?;
                    (next, kv.version())
                }
                None => (1, 0),
            };
            let id = WorkerId(next);
            let after = next.checked_add(1).ok_or_else(|| EtcdError::Corrupt {
                key: next_key.clone(),
                reason: "worker ids ran out".into(),
            })?;
            let listed = Listed { address: address.to_string(), memory_mb: capacity.memory_mb, cpus: capacity.cpus, lease };
            let value = serde_json::to_vec(&listed).map_err(|e| EtcdError::Unavailable(e.to_string()))?;
            let same_address = self.view().replacing(address);
            let ids: Vec<WorkerId> = same_address.iter().map(|(id, _)| *id).collect();
            let mut ops = vec![
                TxnOp::put(next_key.as_str(), after.to_string(), None),
                TxnOp::put(worker_key(id), value.clone(), Some(PutOptions::new().with_lease(lease))),
            ];
            ops.extend(ids.iter().map(|old| TxnOp::delete(worker_key(*old), None)));
            let txn = Txn::new().when([Compare::version(next_key.as_str(), CompareOp::Equal, version)]).and_then(ops);
            let decided = match self.etcd.decide(txn, &worker_key(id), Some(&value)).await {
                Ok(Some(revision)) => self.mirror.reached(revision).await.map(|()| true),
                Ok(None) => Ok(false),
                Err(e) => Err(e),
            };
            self.view().replaced(&ids, matches!(decided, Ok(true)));
            if !decided? {
                continue;
            }
            for lease in same_address.iter().filter_map(|(_, lease)| *lease) {
                // Its key is gone already; the lease holds nothing else.
                let _ = self.etcd.client().lease_revoke(lease).await;
            }
            return Ok(Joined { id, replaced: ids });
        }
    }

    /// Renews `lease`: whether etcd still had it (`None`: etcd did not answer).
    async fn renew(&self, lease: i64) -> Option<bool> {
        let (mut keeper, mut answers) = self.etcd.client().lease_keep_alive(lease).await.ok()?;
        keeper.keep_alive().await.ok()?;
        answers.message().await.ok().flatten().map(|answer| answer.ttl() > 0)
    }

    /// The lease of member `id` as etcd lists it now (for a member this front end's watch has not shown yet).
    async fn listed_lease(&self, id: WorkerId) -> Option<i64> {
        let got = self.etcd.get(&worker_key(id), None).await.ok()?;
        got.kvs().first().and_then(|kv| serde_json::from_slice::<Listed>(kv.value()).ok()).map(|l| l.lease)
    }
}

impl Membership for EtcdMembership {
    fn register<'a>(
        &'a self,
        address: &'a str,
        capacity: Capacity,
        _now_ms: u64,
    ) -> BoxFuture<'a, Result<Joined, MembershipError>> {
        Box::pin(async move { self.join(address, capacity).await.map_err(|e| MembershipError(e.to_string())) })
    }

    fn heartbeat(&self, id: WorkerId, _now_ms: u64) -> BoxFuture<'_, Beat> {
        Box::pin(async move {
            let lease = {
                let view = self.view();
                if view.gone.contains_key(&id) {
                    return Beat::Unknown;
                }
                view.lease(id)
            };
            let lease = match lease {
                Some(lease) => lease,
                None => match self.listed_lease(id).await {
                    Some(lease) => lease,
                    // Not listed: gone, reported here now if this front end had seen it.
                    None => return if self.view().end(id) { Beat::Expired } else { Beat::Unknown },
                },
            };
            match self.renew(lease).await {
                Some(false) => {
                    if self.view().end(id) {
                        Beat::Expired
                    } else {
                        Beat::Unknown
                    }
                }
                // Renewed, or etcd did not answer: without quorum no lease expires.
                Some(true) | None => Beat::Renewed,
            }
        })
    }

    fn check(&self, _now_ms: u64) -> Vec<WorkerId> {
        self.view().check()
    }

    fn fail(&self, id: WorkerId) -> bool {
        let (ended, lease) = {
            let mut view = self.view();
            let lease = view.lease(id);
            (view.end(id), lease)
        };
        if let (true, Some(lease)) = (ended, lease) {
            // Gone for every front end: its key goes with its lease.
            let mut client = self.etcd.client();
            tokio::spawn(async move {
                if let Err(e) = client.lease_revoke(lease).await {
                    tracing::warn!(error = %e, "cannot end a failed worker's etcd lease; it expires by itself");
                }
            });
        }
        ended
    }

    fn members(&self) -> Vec<Member> {
        self.view().members()
    }

    fn front_ends(&self) -> Option<FrontEnds> {
        // The revision first: the view shows at least every change up to it.
        let revision = self.mirror.revision();
        let live = self.view().front_ends.keys().copied().collect();
        Some(FrontEnds { revision, live })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPACITY: Capacity = Capacity { memory_mb: 1024, cpus: 2 };

    fn put(id: u32, address: &str) -> Kv {
        let listed = Listed { address: address.into(), memory_mb: 1024, cpus: 2, lease: i64::from(id) + 100 };
        Kv { key: format!("{WORKERS}{id:010}"), value: Some(serde_json::to_vec(&listed).unwrap()), mod_revision: 1 }
    }

    fn deleted(id: u32) -> Kv {
        Kv { key: format!("{WORKERS}{id:010}"), value: None, mod_revision: 2 }
    }

    fn front_end(name: &str, up: bool) -> Kv {
        Kv { key: format!("{FRONT_ENDS}{name}"), value: up.then(Vec::new), mod_revision: 3 }
    }

    fn listed(view: &View) -> Vec<(u32, String, u64, bool)> {
        view.members().into_iter().map(|m| (m.id.0, m.address, m.capacity.memory_mb, m.healthy)).collect()
    }

    #[test]
    fn memory_is_shared_evenly_among_the_front_ends() {
        assert_eq!(share(CAPACITY, 0), CAPACITY);
        assert_eq!(share(CAPACITY, 1), CAPACITY);
        assert_eq!(share(CAPACITY, 3), Capacity { memory_mb: 341, cpus: 2 });
        for ways in 1..=16 {
            assert!(share(CAPACITY, ways).memory_mb * ways as u64 <= CAPACITY.memory_mb, "never over-committed");
        }
    }

    #[test]
    fn a_member_gone_from_etcd_is_reported_once_and_stays_listed_unhealthy() {
        let mut view = View::default();
        view.reset(&[put(1, "a:1"), put(2, "b:1"), front_end("f1", true), front_end("f2", true)]);
        assert_eq!(listed(&view), vec![(1, "a:1".into(), 512, true), (2, "b:1".into(), 512, true)]);
        assert_eq!(view.check(), vec![]);
        view.saw(&[deleted(1), front_end("f2", false)]);
        assert_eq!(view.check(), vec![WorkerId(1)]);
        assert_eq!(view.check(), vec![], "once");
        assert_eq!(listed(&view), vec![(1, "a:1".into(), 1024, false), (2, "b:1".into(), 1024, true)]);
        // A new member at its address takes its place in the list.
        view.saw(&[put(3, "a:1")]);
        assert_eq!(listed(&view), vec![(2, "b:1".into(), 1024, true), (3, "a:1".into(), 1024, true)]);
        assert_eq!(view.check(), vec![]);
    }

    #[test]
    fn a_failed_member_is_reported_by_the_failure_and_never_again() {
        let mut view = View::default();
        view.reset(&[put(1, "a:1")]);
        assert!(view.end(WorkerId(1)));
        assert!(!view.end(WorkerId(1)));
        assert!(!view.end(WorkerId(9)), "unknown");
        assert_eq!(view.lease(WorkerId(1)), None, "no heartbeat renews it here");
        assert_eq!(listed(&view), vec![(1, "a:1".into(), 1024, false)]);
        view.saw(&[deleted(1)]);
        assert_eq!(view.check(), vec![], "the failure reported it");
        // A reload that still lists it (its key outlived the revoke) does not bring it back.
        view.reset(&[put(1, "a:1")]);
        assert_eq!(view.check(), vec![]);
        assert_eq!(listed(&view), vec![(1, "a:1".into(), 1024, false)]);
    }

    #[test]
    fn a_registration_reports_the_members_it_replaced_and_check_does_not() {
        let mut view = View::default();
        view.reset(&[put(1, "a:1"), put(2, "b:1"), put(4, "c:1")]);
        assert!(view.end(WorkerId(2)));
        // Member 3 registers at a:1: its transaction deletes 1's key, and the watch brings both changes before
        // the registration answers.
        assert_eq!(view.replacing("a:1"), vec![(WorkerId(1), Some(101))]);
        view.saw(&[put(3, "a:1"), deleted(1)]);
        assert!(!view.end(WorkerId(1)), "held for the registration");
        assert_eq!(view.check(), vec![], "held for the registration");
        view.replaced(&[WorkerId(1)], true);
        assert_eq!(view.check(), vec![], "the registration reported it");
        // A gone member is replaced too.
        assert_eq!(view.replacing("b:1"), vec![(WorkerId(2), Some(102))]);
        view.replaced(&[WorkerId(2)], true);
        view.saw(&[put(5, "b:1"), deleted(2)]);
        assert_eq!(view.check(), vec![]);
        let ids: Vec<u32> = view.members().iter().map(|m| m.id.0).collect();
        assert_eq!(ids, vec![3, 4, 5]);
    }

    #[test]
    fn a_registration_that_failed_leaves_the_members_it_would_have_replaced() {
        let mut view = View::default();
        view.reset(&[put(1, "a:1")]);
        assert_eq!(view.replacing("a:1"), vec![(WorkerId(1), Some(101))]);
        view.saw(&[deleted(1)]);
        assert_eq!(view.check(), vec![]);
        view.replaced(&[WorkerId(1)], false);
        assert_eq!(view.check(), vec![WorkerId(1)], "reported by the watch after all");
    }

    #[test]
    fn members_seen_only_after_a_reload_are_known_and_those_missing_from_it_are_gone() {
        let mut view = View::default();
        view.reset(&[put(1, "a:1")]);
        view.reset(&[put(2, "b:1")]);
        assert_eq!(view.check(), vec![WorkerId(1)]);
        assert_eq!(view.members().iter().filter(|m| m.healthy).count(), 1);
    }
}
