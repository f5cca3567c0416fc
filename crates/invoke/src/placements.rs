//! Placement bookkeeping, local to one invoker: how to reach each worker
//! (its [`WorkerBackend`]), its capacity record (`ignis_placement::Worker`:
//! memory, CPUs, what its sandboxes reserve, healthy or down), and which
//! worker each placed sandbox is on. Which workers exist is
//! [`Membership`](crate::membership::Membership)'s (the region's); this is
//! what this front end does with them, so it stays in the invoker whatever
//! membership is behind it.
//!
//! [`Placements`] owns all of it behind one mutex of its own, held only for
//! record updates, never across an await, and never while taking another
//! lock: the invoker may call in here while it holds its own state lock (the
//! one order: invoker state, then placements), never the reverse.
//!
//! Invariants:
//! - A sandbox's reservation is added when it is placed ([`Placements::take`],
//!   before it starts) and removed exactly once ([`Placements::release`], or
//!   when its worker goes [`down`](Placements::down), which hands the lost
//!   sandboxes back).
//! - A worker that is down stays down (no new sandbox; it must register
//!   again, as a new worker): the invoker marks it down when membership
//!   reports the member gone.
//! - The local worker (id 0) is no member: it is never down, never removed.
//! - Records are in the order workers were added (the order `Packing` fills them in).
//! - A worker has one backend for its whole life ([`Placements::adopt`] is
//!   idempotent), and a removed worker is never adopted again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use ignis_assignment::SandboxId;
use ignis_cluster::Capacity;
use ignis_placement::{Evictable, Eviction, Needs, Packing, Placement, Refusal, WorkerId};

use crate::backend::WorkerBackend;
use crate::membership::Member;

/// The local worker's id.
pub(crate) const LOCAL: WorkerId = WorkerId(0);

/// Where a new sandbox can go.
pub(crate) enum Plan {
    /// This worker has room now.
    Worker(WorkerId),
    /// This worker has room once these idle sandboxes are evicted (the
    /// refusal is what placement said before eviction).
    Evict(Eviction<SandboxId>, Refusal),
    Refused(Refusal),
}

/// A worker gone down, and the sandboxes it took with it.
pub(crate) struct Dropped {
    pub worker: WorkerId,
    pub address: String,
    pub lost: Vec<SandboxId>,
}

#[derive(Default)]
struct Books {
    /// Every worker's placement record, oldest first.
    workers: Vec<ignis_placement::Worker>,
    /// How to reach each worker, and its address.
    backends: HashMap<WorkerId, (Arc<dyn WorkerBackend>, String)>,
    /// Which worker each placed sandbox is on, and what it reserved there.
    placed: HashMap<SandboxId, (WorkerId, Needs)>,
    /// Workers removed: never adopted again (a stale listing must not bring one back).
    removed: HashSet<WorkerId>,
}

/// The workers this invoker places on, and what its sandboxes reserve there.
pub(crate) struct Placements {
    inner: Mutex<Books>,
}

impl Placements {
    pub fn new(local: Option<(Arc<dyn WorkerBackend>, Capacity)>) -> Placements {
        let placements = Placements { inner: Mutex::new(Books::default()) };
        if let Some((backend, capacity)) = local {
            placements.adopt(LOCAL, "local", capacity, |_| backend);
        }
        placements
    }

    fn lock(&self) -> MutexGuard<'_, Books> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A worker to place on, healthy and empty, reached through what
    /// `connect` makes of its address. For a worker `id` known already, only
    /// its capacity is set to `capacity` (what this front end may place on it
    /// changes as front ends come and go); nothing for one that was removed
    /// (`connect` is not called: one backend per worker, and a removed one
    /// never comes back). `connect` only makes a client (it takes no lock of
    /// the invoker's).
    pub fn adopt(
        &self,
        id: WorkerId,
        address: &str,
        capacity: Capacity,
        connect: impl FnOnce(&str) -> Arc<dyn WorkerBackend>,
    ) {
        let mut books = self.lock();
        if let Some(record) = books.workers.iter_mut().find(|w| w.id == id) {
            (record.memory_mb, record.cpus) = (capacity.memory_mb, capacity.cpus);
            return;
        }
        if books.backends.contains_key(&id) || books.removed.contains(&id) {
            return;
        }
        let backend = connect(address);
        books.workers.push(ignis_placement::Worker::new(id, capacity.memory_mb, capacity.cpus));
        books.backends.insert(id, (backend, address.to_string()));
    }

    /// Worker `id` is down for good: no new sandbox, calls in flight to it
    /// end, its sandboxes' reservations go. `None` if it already was, or is
    /// unknown, or is the local worker.
    pub fn down(&self, id: WorkerId) -> Option<Dropped> {
        if id == LOCAL {
            return None;
        }
        let mut books = self.lock();
        let Books { workers, backends, placed, .. } = &mut *books;
        let record = workers.iter_mut().find(|w| w.id == id && w.healthy)?;
        record.healthy = false;
        let (backend, address) = backends.get(&id)?;
        backend.mark_down();
        let lost: Vec<SandboxId> = placed.iter().filter(|(_, (w, _))| *w == id).map(|(sandbox, _)| *sandbox).collect();
        for sandbox in &lost {
            if let Some((_, needs)) = placed.remove(sandbox) {
                record.remove(&needs);
            }
        }
        Some(Dropped { worker: id, address: address.clone(), lost })
    }

    /// Forgets worker `id` (a new worker registered at its address); it must be down already.
    pub fn remove(&self, id: WorkerId) {
        let mut books = self.lock();
        if id != LOCAL {
            books.workers.retain(|w| w.id != id);
            books.backends.remove(&id);
            books.removed.insert(id);
        }
    }

    /// Whether worker `id` has a record (down or not).
    pub fn knows(&self, id: WorkerId) -> bool {
        self.lock().backends.contains_key(&id)
    }

    /// The remote workers not yet down whose connection failed.
    pub fn unreachable(&self) -> Vec<WorkerId> {
        let books = self.lock();
        books
            .workers
            .iter()
            .filter(|w| w.id != LOCAL && w.healthy)
            .filter(|w| books.backends.get(&w.id).is_some_and(|(backend, _)| backend.is_down()))
            .map(|w| w.id)
            .collect()
    }

    /// Where a sandbox with `needs` could go: a worker with room, else the
    /// idle sandboxes among `idle` (ordinary idle ones, least recently used
    /// first) whose eviction makes room on one worker, else the refusal.
    pub fn plan(&self, needs: &Needs, idle: &[SandboxId]) -> Plan {
        let books = self.lock();
        match Packing::default().choose(&books.workers, needs) {
            Placement::Worker(worker) => Plan::Worker(worker),
            Placement::Refused(refusal) => {
                let idle: Vec<Evictable<SandboxId>> = idle
                    .iter()
                    .filter_map(|&sandbox| {
                        let (worker, reserved) = books.placed.get(&sandbox)?;
                        Some(Evictable { sandbox, worker: *worker, memory_mb: reserved.memory_mb })
                    })
                    .collect();
                match ignis_placement::evict(&books.workers, needs, &idle) {
                    Some(eviction) => Plan::Evict(eviction, refusal),
                    None => Plan::Refused(refusal),
                }
            }
        }
    }

    /// Reserves `needs` for sandbox `id` on `worker`, if it is healthy and has
    /// room (checked, not assumed); its backend.
    pub fn take(&self, worker: WorkerId, id: SandboxId, needs: Needs) -> Option<Arc<dyn WorkerBackend>> {
        let mut books = self.lock();
        let backend = books.backends.get(&worker)?.0.clone();
        let record = books.workers.iter_mut().find(|w| w.id == worker && w.healthy)?;
        record.add(&needs).ok()?;
        books.placed.insert(id, (worker, needs));
        Some(backend)
    }

    /// Gives back sandbox `id`'s reservation; false if it had none (never
    /// placed, or its worker went down).
    pub fn release(&self, id: SandboxId) -> bool {
        let mut books = self.lock();
        let Some((worker, needs)) = books.placed.remove(&id) else { return false };
        if let Some(record) = books.workers.iter_mut().find(|w| w.id == worker) {
            record.remove(&needs);
        }
        true
    }

    /// Whether sandbox `id` still holds a reservation (its worker did not go down).
    pub fn is_placed(&self, id: SandboxId) -> bool {
        self.lock().placed.contains_key(&id)
    }

    /// The worker sandbox `id` is placed on.
    pub fn worker_of(&self, id: SandboxId) -> Option<WorkerId> {
        self.lock().placed.get(&id).map(|(worker, _)| *worker)
    }

    /// The remote workers not down, and their backends.
    pub fn healthy_remote(&self) -> Vec<(WorkerId, Arc<dyn WorkerBackend>)> {
        let books = self.lock();
        let healthy = books.workers.iter().filter(|w| w.id != LOCAL && w.healthy);
        healthy.filter_map(|w| Some((w.id, books.backends.get(&w.id)?.0.clone()))).collect()
    }

    /// Every worker's backend (for shutdown).
    pub fn backends(&self) -> Vec<Arc<dyn WorkerBackend>> {
        self.lock().backends.values().map(|(backend, _)| backend.clone()).collect()
    }
}

/// A worker as `GET /ignis/workers` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub id: WorkerId,
    pub address: String,
    pub local: bool,
    pub healthy: bool,
    pub memory_mb: u64,
    pub cpus: u32,
    pub used_memory_mb: u64,
    pub sandboxes: u32,
}

impl Placements {
    /// The local worker (if any), then `members` in their order, with what
    /// this invoker's sandboxes use on each.
    pub fn workers(&self, members: &[Member]) -> Vec<WorkerInfo> {
        let books = self.lock();
        let record = |id: WorkerId| books.workers.iter().find(|w| w.id == id);
        let local = record(LOCAL).map(|w| WorkerInfo {
            id: LOCAL,
            address: "local".into(),
            local: true,
            healthy: w.healthy,
            memory_mb: w.memory_mb,
            cpus: w.cpus,
            used_memory_mb: w.used_memory_mb,
            sandboxes: w.sandboxes(),
        });
        let remote = members.iter().map(|m| {
            let (used_memory_mb, sandboxes) = record(m.id).map_or((0, 0), |w| (w.used_memory_mb, w.sandboxes()));
            WorkerInfo {
                id: m.id,
                address: m.address.clone(),
                local: false,
                healthy: m.healthy,
                memory_mb: m.capacity.memory_mb,
                cpus: m.capacity.cpus,
                used_memory_mb,
                sandboxes,
            }
        });
        local.into_iter().chain(remote).collect()
    }
}
