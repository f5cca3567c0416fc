//! Worker membership: the region's seam for which worker hosts exist. A
//! worker is a *member with a lease*: it registers (address, capacity) and
//! gets an id, renews with heartbeats, and a lease that expires means the
//! worker is gone. [`LocalMembership`] is the embedded implementation (the
//! leases are `ignis_placement::Liveness` records in this process); an
//! etcd-backed one keeps members as keys under an etcd lease of the
//! heartbeat timeout and follows them with a watch.
//!
//! # What is here and what stays with the invoker
//!
//! Membership is what every front end of a region must agree on: the members,
//! their addresses and capacities, alive or gone. What a front end does with a
//! worker stays local to its invoker (the `placements` module): the connection
//! to it (its `WorkerBackend`), the placement records (what each placed
//! sandbox reserves on which worker, the memory in use), the local worker
//! (id 0, which is no member: it has no lease to lose and is never dropped),
//! and the failures its own calls saw. The invoker applies what membership
//! reports: a member gone is marked down in the placement records and its
//! sandboxes are forgotten; a connection that failed is reported back
//! ([`Membership::fail`]) and ends the member for every front end. The
//! invoker's health check also follows [`Membership::members`]: a member that
//! joined through another front end gets a connection and a placement record
//! here, and one listed as gone is down here too (so a missed report heals).
//!
//! # Contract
//!
//! - Ids are never reused; 0 is never a member's (it is the local worker's).
//! - A member goes alive → gone once, for good: a worker that comes back
//!   registers again, as a new member. Exactly one call reports each member
//!   as gone (the one that ended it: [`Membership::register`] for members it
//!   replaces, [`Membership::heartbeat`] answering [`Beat::Expired`],
//!   [`Membership::check`], or [`Membership::fail`] answering true), so the
//!   caller forgets a gone worker's sandboxes exactly once.
//! - Gone members stay listed ([`Member::healthy`] false) until a new worker
//!   registers at their address (a new process listens there); then they
//!   leave the list.
//! - Time is passed in as milliseconds of the invoker's clock; an
//!   implementation over etcd's leases may ignore it (etcd's TTLs decide).
//! - `check`, `fail` and `members` answer without waiting (the invoker calls
//!   them from sync code and holds none of its locks while it does): an etcd
//!   implementation answers them from its watched copy. `register` and
//!   `heartbeat` may wait on the region's store (a worker's call waits for
//!   them, no invoke does).
//!
//! [`LocalMembership`] keeps its records behind one mutex of its own, held
//! only for record updates.

use std::sync::{Mutex, MutexGuard};

use ignis_cluster::Capacity;
use ignis_cluster::owner::FrontEnds;
use ignis_placement::{Health, Liveness, WorkerId};

use crate::backend::BoxFuture;

/// The region's worker hosts (see the module docs for the contract).
pub trait Membership: Send + Sync {
    /// A worker joined at `address` with `capacity`, at `now_ms`: its new id,
    /// and the members listed at the same address, which are gone now (if
    /// they were not already) and no longer listed. Fails only when the
    /// region's store of members cannot take the new one.
    fn register<'a>(
        &'a self,
        address: &'a str,
        capacity: Capacity,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Joined, MembershipError>>;

    /// Member `id` renews its lease at `now_ms`.
    fn heartbeat(&self, id: WorkerId, now_ms: u64) -> BoxFuture<'_, Beat>;

    /// Ends the members whose lease expired by `now_ms`; returns them.
    fn check(&self, now_ms: u64) -> Vec<WorkerId>;

    /// Member `id` is gone now (a connection to it failed). True if this call
    /// ended it; false if it was already gone or is unknown.
    fn fail(&self, id: WorkerId) -> bool;

    /// Every listed member, oldest first.
    fn members(&self) -> Vec<Member>;

    /// The front ends of the region as this one sees them, when there are several (worker hosts end the
    /// sandboxes of front ends that are gone: `ignis_cluster::owner`).
    fn front_ends(&self) -> Option<FrontEnds> {
        None
    }
}

/// [`Membership::register`] could not store the new member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot register the worker: {0}")]
pub struct MembershipError(pub String);

/// What [`Membership::register`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub id: WorkerId,
    /// Members that were listed at the same address: gone, and unlisted.
    pub replaced: Vec<WorkerId>,
}

/// What a heartbeat did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// The lease lives on.
    Renewed,
    /// It came too late: the lease had expired, and the member is gone now
    /// (this call reports it).
    Expired,
    /// Not a member, or gone already: it must register again.
    Unknown,
}

/// A listed member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: WorkerId,
    pub address: String,
    pub capacity: Capacity,
    /// False once it is gone.
    pub healthy: bool,
}

struct Record {
    member: Member,
    liveness: Liveness,
}

struct Records {
    /// Oldest first.
    members: Vec<Record>,
    next: u32,
}

/// The embedded membership: a lease of `timeout_ms` after each heartbeat, in this process.
pub struct LocalMembership {
    timeout_ms: u64,
    records: Mutex<Records>,
}

impl LocalMembership {
    /// Members are gone after `timeout_ms` without a heartbeat.
    pub fn new(timeout_ms: u64) -> LocalMembership {
        LocalMembership { timeout_ms, records: Mutex::new(Records { members: Vec::new(), next: 1 }) }
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Records {
    fn get(&mut self, id: WorkerId) -> Option<&mut Record> {
        self.members.iter_mut().find(|r| r.member.id == id)
    }
}

impl Record {
    /// Ends the member; true if it was alive.
    fn end(&mut self) -> bool {
        self.liveness.fail();
        std::mem::replace(&mut self.member.healthy, false)
    }
}

impl LocalMembership {
    fn join(&self, address: &str, capacity: Capacity, now_ms: u64) -> Joined {
        let mut records = self.lock();
        let id = WorkerId(records.next);
        records.next += 1;
        let replaced: Vec<WorkerId> =
            records.members.iter().filter(|r| r.member.address == address).map(|r| r.member.id).collect();
        records.members.retain(|r| r.member.address != address);
        let member = Member { id, address: address.to_string(), capacity, healthy: true };
        records.members.push(Record { member, liveness: Liveness::new(now_ms, self.timeout_ms) });
        Joined { id, replaced }
    }

    fn beat(&self, id: WorkerId, now_ms: u64) -> Beat {
        let mut records = self.lock();
        let Some(record) = records.get(id).filter(|r| r.member.healthy) else { return Beat::Unknown };
        if record.liveness.beat(now_ms) {
            Beat::Renewed
        } else {
            record.end();
            Beat::Expired
        }
    }
}

impl Membership for LocalMembership {
    fn register<'a>(
        &'a self,
        address: &'a str,
        capacity: Capacity,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Joined, MembershipError>> {
        let joined = self.join(address, capacity, now_ms);
        Box::pin(std::future::ready(Ok(joined)))
    }

    fn heartbeat(&self, id: WorkerId, now_ms: u64) -> BoxFuture<'_, Beat> {
        Box::pin(std::future::ready(self.beat(id, now_ms)))
    }

    fn check(&self, now_ms: u64) -> Vec<WorkerId> {
        let mut records = self.lock();
        records
            .members
            .iter_mut()
            .filter_map(|r| {
                let expired = r.member.healthy && r.liveness.check(now_ms) == Health::Unhealthy;
                (expired && r.end()).then_some(r.member.id)
            })
            .collect()
    }

    fn fail(&self, id: WorkerId) -> bool {
        self.lock().get(id).is_some_and(Record::end)
    }

    fn members(&self) -> Vec<Member> {
        self.lock().members.iter().map(|r| r.member.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ignis_clock::{Clock, ManualClock};
    use ignis_cluster::Capacity;
    use ignis_placement::WorkerId;

    use super::{Beat, Joined, LocalMembership, Member, Membership};

    const TIMEOUT: Duration = Duration::from_secs(3);
    const CAPACITY: Capacity = Capacity { memory_mb: 1024, cpus: 2 };

    /// `future`'s output (a local membership's answers are ready at once).
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("a runtime").block_on(future)
    }

    /// A membership over a manual clock, and the clock's time in ms since it started.
    struct World {
        membership: Box<dyn Membership>,
        clock: std::sync::Arc<ManualClock>,
        epoch: std::time::Instant,
    }

    fn world() -> World {
        let clock = ManualClock::at_epoch_2026();
        let epoch = clock.instant();
        World { membership: Box::new(LocalMembership::new(TIMEOUT.as_millis() as u64)), clock, epoch }
    }

    impl World {
        fn now(&self) -> u64 {
            self.clock.instant().duration_since(self.epoch).as_millis() as u64
        }

        fn register(&self, address: &str) -> Joined {
            block_on(self.membership.register(address, CAPACITY, self.now())).expect("registered")
        }

        fn heartbeat(&self, id: WorkerId) -> Beat {
            block_on(self.membership.heartbeat(id, self.now()))
        }

        fn check(&self) -> Vec<WorkerId> {
            self.membership.check(self.now())
        }

        /// (id, address, healthy) of every listed member.
        fn listed(&self) -> Vec<(u32, String, bool)> {
            self.membership.members().into_iter().map(|m| (m.id.0, m.address, m.healthy)).collect()
        }
    }

    #[test]
    fn members_get_new_ids_from_one_and_are_listed_oldest_first() {
        let w = world();
        assert_eq!(w.register("a:1"), Joined { id: WorkerId(1), replaced: vec![] });
        let second = block_on(w.membership.register("b:1", Capacity { memory_mb: 2048, cpus: 4 }, w.now()));
        assert_eq!(second.expect("registered").id, WorkerId(2));
        assert_eq!(
            w.membership.members(),
            vec![
                Member { id: WorkerId(1), address: "a:1".into(), capacity: CAPACITY, healthy: true },
                Member {
                    id: WorkerId(2),
                    address: "b:1".into(),
                    capacity: Capacity { memory_mb: 2048, cpus: 4 },
                    healthy: true
                },
            ]
        );
    }

    #[test]
    fn heartbeats_keep_the_lease_and_silence_ends_it_once() {
        let w = world();
        let id = w.register("a:1").id;
        w.clock.advance(TIMEOUT - Duration::from_millis(1));
        assert_eq!(w.check(), vec![]);
        assert_eq!(w.heartbeat(id), Beat::Renewed);
        w.clock.advance(TIMEOUT - Duration::from_millis(1));
        assert_eq!(w.check(), vec![], "the heartbeat renewed it");
        w.clock.advance(Duration::from_millis(1));
        assert_eq!(w.check(), vec![id]);
        assert_eq!(w.check(), vec![], "reported once");
        assert_eq!(w.heartbeat(id), Beat::Unknown, "it must register again");
        assert_eq!(w.listed(), vec![(1, "a:1".into(), false)], "listed, gone");
    }

    #[test]
    fn a_late_heartbeat_ends_the_member() {
        let w = world();
        let id = w.register("a:1").id;
        w.clock.advance(TIMEOUT);
        assert_eq!(w.heartbeat(id), Beat::Expired);
        assert_eq!(w.check(), vec![], "the heartbeat reported it");
        assert_eq!(w.heartbeat(id), Beat::Unknown);
        assert_eq!(w.heartbeat(WorkerId(9)), Beat::Unknown);
    }

    #[test]
    fn a_failed_connection_ends_the_member_once() {
        let w = world();
        let (a, b) = (w.register("a:1").id, w.register("b:1").id);
        assert!(w.membership.fail(a));
        assert!(!w.membership.fail(a));
        assert!(!w.membership.fail(WorkerId(9)));
        assert_eq!(w.heartbeat(a), Beat::Unknown);
        w.clock.advance(TIMEOUT);
        assert_eq!(w.check(), vec![b], "a was reported by fail");
        assert_eq!(w.listed(), vec![(1, "a:1".into(), false), (2, "b:1".into(), false)]);
    }

    #[test]
    fn a_new_worker_at_an_address_replaces_the_listed_ones() {
        let w = world();
        let old = w.register("a:1").id;
        let other = w.register("b:1").id;
        let again = w.register("a:1");
        assert_eq!(again, Joined { id: WorkerId(3), replaced: vec![old] });
        assert_eq!(w.heartbeat(old), Beat::Unknown);
        assert_eq!(w.listed(), vec![(2, "b:1".into(), true), (3, "a:1".into(), true)]);
        // A gone member is replaced (and unlisted) too.
        assert!(w.membership.fail(other));
        assert_eq!(w.register("b:1").replaced, vec![other]);
        assert_eq!(w.listed(), vec![(3, "a:1".into(), true), (4, "b:1".into(), true)]);
        w.clock.advance(TIMEOUT);
        assert_eq!(w.check(), vec![WorkerId(3), WorkerId(4)], "replaced members are never reported again");
    }
}
