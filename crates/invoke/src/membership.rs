//! Worker membership: which workers there are, how to reach each one (its
//! [`WorkerBackend`]), its capacity record (`ignis_placement::Worker`: memory,
//! CPUs, what its sandboxes reserve), its [`Liveness`], and which worker each
//! placed sandbox is on.
//!
//! [`Membership`] owns all of it behind one mutex of its own, held only for
//! record updates, never across an await, and never while taking another
//! lock: the invoker may call in here while it holds its own state lock (the
//! one order: invoker state, then membership), never the reverse.
//!
//! Invariants:
//! - A sandbox's reservation is added when it is placed ([`Membership::take`],
//!   before it starts) and removed exactly once ([`Membership::release`], or
//!   when its worker is dropped, which hands the lost sandboxes back).
//! - A worker turns unhealthy for good (no new sandbox; it must register
//!   again): when its heartbeats stop for the timeout, its connection
//!   fails, a heartbeat comes too late, or a new worker registers at its address.
//! - The local worker (id 0) has no liveness and is never dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ignis_assignment::SandboxId;
use ignis_cluster::Capacity;
use ignis_placement::{Evictable, Eviction, Health, Liveness, Needs, Packing, Placement, Refusal, WorkerId};

use crate::backend::WorkerBackend;

/// One worker's membership: how to reach it and, for a remote one, when it was last heard from.
struct Member {
    backend: Arc<dyn WorkerBackend>,
    address: String,
    liveness: Option<Liveness>,
}

/// A worker as `GET /ignis/workers` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub id: u32,
    pub address: String,
    pub local: bool,
    pub healthy: bool,
    pub memory_mb: u64,
    pub cpus: u32,
    pub used_memory_mb: u64,
    pub sandboxes: u32,
}

/// Where a new sandbox can go.
pub(crate) enum Plan {
    /// This worker has room now.
    Worker(WorkerId),
    /// This worker has room once these idle sandboxes are evicted (the
    /// refusal is what placement said before eviction).
    Evict(Eviction<SandboxId>, Refusal),
    Refused(Refusal),
}

/// A worker dropped as unhealthy, and the sandboxes it took with it.
pub(crate) struct Dropped {
    pub worker: WorkerId,
    pub address: String,
    pub lost: Vec<SandboxId>,
}

#[derive(Default)]
struct Members {
    /// Every worker's placement record, oldest first (the order `Packing` fills them in).
    workers: Vec<ignis_placement::Worker>,
    members: HashMap<WorkerId, Member>,
    /// Which worker each placed sandbox is on, and what it reserved there.
    placed: HashMap<SandboxId, (WorkerId, Needs)>,
    next_worker: u32,
}

/// The workers, their records and their health.
pub(crate) struct Membership {
    inner: Mutex<Members>,
}

impl Membership {
    pub fn new(local: Option<(Arc<dyn WorkerBackend>, Capacity)>) -> Membership {
        let mut members = Members { next_worker: 1, ..Members::default() };
        if let Some((backend, capacity)) = local {
            let id = WorkerId(0);
            members.workers.push(ignis_placement::Worker::new(id, capacity.memory_mb, capacity.cpus));
            members.members.insert(id, Member { backend, address: "local".into(), liveness: None });
        }
        Membership { inner: Mutex::new(members) }
    }

    fn lock(&self) -> MutexGuard<'_, Members> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A worker host joined at `address`: it gets the next id and is healthy
    /// until its heartbeats stop (`timeout_ms` after the last). A worker
    /// listed at the same address is gone (a new process listens there): it
    /// is dropped and leaves the list.
    pub fn register(
        &self,
        address: &str,
        capacity: Capacity,
        backend: Arc<dyn WorkerBackend>,
        now_ms: u64,
        timeout_ms: u64,
    ) -> (WorkerId, Vec<Dropped>) {
        let mut m = self.lock();
        let id = WorkerId(m.next_worker);
        m.next_worker += 1;
        let stale: Vec<WorkerId> =
            m.members.iter().filter(|(_, w)| w.address == address && w.liveness.is_some()).map(|(id, _)| *id).collect();
        let mut dropped = Vec::new();
        for old in stale {
            dropped.extend(m.drop_worker(old));
            m.members.remove(&old);
            m.workers.retain(|w| w.id != old);
        }
        m.workers.push(ignis_placement::Worker::new(id, capacity.memory_mb, capacity.cpus));
        let liveness = Some(Liveness::new(now_ms, timeout_ms));
        m.members.insert(id, Member { backend, address: address.to_string(), liveness });
        (id, dropped)
    }

    /// A heartbeat from worker `id`; false if it is unknown or unhealthy (then
    /// it is dropped, if it was not already).
    pub fn heartbeat(&self, id: WorkerId, now_ms: u64) -> (bool, Option<Dropped>) {
        let mut m = self.lock();
        let beat = m.members.get_mut(&id).and_then(|w| w.liveness.as_mut()).is_some_and(|l| l.beat(now_ms));
        if beat { (true, None) } else { (false, m.drop_worker(id)) }
    }

    /// Drops the remote workers that turned unhealthy (silent too long, or their connection failed).
    pub fn check(&self, now_ms: u64) -> Vec<Dropped> {
        let mut m = self.lock();
        let Members { members, workers, .. } = &mut *m;
        let failing: Vec<WorkerId> = members
            .iter_mut()
            .filter_map(|(id, member)| {
                let liveness = member.liveness.as_mut()?;
                if member.backend.is_down() {
                    liveness.fail();
                }
                let listed_healthy = workers.iter().any(|w| w.id == *id && w.healthy);
                (listed_healthy && liveness.check(now_ms) == Health::Unhealthy).then_some(*id)
            })
            .collect();
        failing.into_iter().filter_map(|id| m.drop_worker(id)).collect()
    }

    /// Where a sandbox with `needs` could go: a worker with room, else the
    /// idle sandboxes among `idle` (ordinary idle ones, least recently used
    /// first) whose eviction makes room on one worker, else the refusal.
    pub fn plan(&self, needs: &Needs, idle: &[SandboxId]) -> Plan {
        let m = self.lock();
        match Packing::default().choose(&m.workers, needs) {
            Placement::Worker(worker) => Plan::Worker(worker),
            Placement::Refused(refusal) => {
                let idle: Vec<Evictable<SandboxId>> = idle
                    .iter()
                    .filter_map(|&sandbox| {
                        let (worker, reserved) = m.placed.get(&sandbox)?;
                        Some(Evictable { sandbox, worker: *worker, memory_mb: reserved.memory_mb })
                    })
                    .collect();
                match ignis_placement::evict(&m.workers, needs, &idle) {
                    Some(eviction) => Plan::Evict(eviction, refusal),
                    None => Plan::Refused(refusal),
                }
            }
        }
    }

    /// Reserves `needs` for sandbox `id` on `worker`, if it is healthy and has
    /// room (checked, not assumed); its backend.
    pub fn take(&self, worker: WorkerId, id: SandboxId, needs: Needs) -> Option<Arc<dyn WorkerBackend>> {
        let mut m = self.lock();
        let record = m.workers.iter_mut().find(|w| w.id == worker && w.healthy)?;
        record.add(&needs).ok()?;
        m.placed.insert(id, (worker, needs));
        Some(m.members[&worker].backend.clone())
    }

    /// Gives back sandbox `id`'s reservation; false if it had none (never
    /// placed, or its worker was dropped).
    pub fn release(&self, id: SandboxId) -> bool {
        let mut m = self.lock();
        let Some((worker, needs)) = m.placed.remove(&id) else { return false };
        if let Some(record) = m.workers.iter_mut().find(|w| w.id == worker) {
            record.remove(&needs);
        }
        true
    }

    /// Whether sandbox `id` still holds a reservation (its worker was not dropped).
    pub fn is_placed(&self, id: SandboxId) -> bool {
        self.lock().placed.contains_key(&id)
    }

    /// Every worker, oldest first.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let m = self.lock();
        m.workers
            .iter()
            .map(|w| {
                let member = &m.members[&w.id];
                WorkerInfo {
                    id: w.id.0,
                    address: member.address.clone(),
                    local: member.liveness.is_none(),
                    healthy: w.healthy,
                    memory_mb: w.memory_mb,
                    cpus: w.cpus,
                    used_memory_mb: w.used_memory_mb,
                    sandboxes: w.sandboxes(),
                }
            })
            .collect()
    }

    /// Every worker's backend (for shutdown).
    pub fn backends(&self) -> Vec<Arc<dyn WorkerBackend>> {
        self.lock().members.values().map(|m| m.backend.clone()).collect()
    }
}

impl Members {
    /// The worker is unhealthy for good: no new sandbox, calls in flight to
    /// it end, its sandboxes' reservations go; `None` if it already was.
    fn drop_worker(&mut self, worker: WorkerId) -> Option<Dropped> {
        if !self.workers.iter().any(|w| w.id == worker && w.healthy) {
            return None;
        }
        let member = self.members.get_mut(&worker)?;
        // The local worker has no heartbeat to miss.
        member.liveness.as_mut()?.fail();
        member.backend.mark_down();
        let address = member.address.clone();
        if let Some(record) = self.workers.iter_mut().find(|w| w.id == worker) {
            record.healthy = false;
        }
        let lost: Vec<SandboxId> = self.placed.iter().filter(|(_, (w, _))| *w == worker).map(|(id, _)| *id).collect();
        for id in &lost {
            if let Some((_, needs)) = self.placed.remove(id)
                && let Some(record) = self.workers.iter_mut().find(|w| w.id == worker)
            {
                record.remove(&needs);
            }
        }
        Some(Dropped { worker, address, lost })
    }
}
