//! Placement: which worker (host) gets a new sandbox.
//!
//! Pure decision logic: no IO, no clock, no threads. The caller keeps one
//! [`Worker`] per host (capacity, memory in use, sandboxes per function,
//! health), asks a [`Strategy`] where a sandbox with given [`Needs`] goes, and
//! records the outcome with [`Worker::add`] (and [`Worker::remove`] when the
//! sandbox ends).
//!
//! # Resources
//!
//! Memory is the one hard resource: a sandbox's memory limit is reserved on
//! its host for the sandbox's whole life, and the sum of reservations on a
//! worker never exceeds its `memory_mb`. CPU is time-shared (each sandbox's
//! cgroup weight follows its memory, as in Lambda) and is not a placement
//! constraint; `cpus` is carried for callers and reports.
//!
//! # Strategies
//!
//! - [`RoundRobin`]: from a cursor, the next healthy worker with room.
//! - [`LeastLoaded`]: the healthy worker with room and the lowest memory
//!   utilisation (spreads load evenly).
//! - [`Packing`] (Ignis's):
//!   1. *Candidates*: healthy workers with `used + needs <= capacity`.
//!   2. *Within target, in order*: if some candidate stays at or below the
//!      target utilisation after placing (`(used + needs) / capacity <=
//!      target`, default 90%), only those are considered, **in slice order**,
//!      which the caller keeps stable (oldest worker first): first fit. Load
//!      concentrates on the oldest hosts, so when demand falls the newest
//!      ones empty first and can be released. (With sandboxes that come and
//!      go, first fit keeps fewer hosts busy than best fit, which refills
//!      whichever host just lost a sandbox and so keeps every host half full.)
//!   3. *Mixing*: among the first `mix_window` (default 8) such candidates
//!      that already hold sandboxes, the one with the **fewest sandboxes of
//!      the same function** wins, then the earlier; an empty worker is taken
//!      (the first) only when no busy one stays within the target. Copies of one function (which burst and idle together)
//!      are spread, unlike functions share hosts: statistical multiplexing of
//!      the CPU and of a host's failure.
//!   4. *Fallback*: if no candidate stays within the target, the fleet is
//!      tight: the candidate that keeps the **most headroom** after placing
//!      (the least full after placing; fewest copies only among exact ties,
//!      then slice order), up to 100% of capacity. Balancing free memory then
//!      keeps room for large sandboxes. The target is soft headroom, never a
//!      reason to refuse.
//!   5. *Refusal*: only when there is no candidate at all.
//!
//! # Invariants (all strategies; tested in `tests.rs`)
//!
//! - Never over-commit: a chosen worker has `used + needs <= capacity`.
//! - Never an unhealthy worker.
//! - Refuse only when no healthy worker has room, and then every strategy
//!   gives the same [`Refusal`].
//! - Deterministic: the same workers (in the same order), needs and strategy
//!   state give the same answer.
//! - Packing goes above its target only when no candidate stays within it.
//!
//! A decision reads each worker once or twice and allocates nothing: O(workers).
//!
//! [`evict`] (`evict.rs`) decides which idle sandboxes (least recently used
//! first) end when no worker has room for a new one: idle sandboxes are a
//! cache, not a reservation.
//!
//! [`Liveness`] (`health.rs`) decides, from heartbeat times the caller passes
//! in, when a worker turns unhealthy (final: it must register again).

use std::fmt;

mod evict;
mod health;

pub use evict::{Evictable, Eviction, evict};
pub use health::{Health, Liveness};

/// Identifies one worker (host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub u32);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker-{}", self.0)
    }
}

/// Identifies a function (revision) for the mixing rule; opaque to placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionKey(pub u64);

/// What a new sandbox needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub function: FunctionKey,
    pub memory_mb: u64,
}

/// One worker as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    pub id: WorkerId,
    /// Memory that sandboxes may reserve on this worker.
    pub memory_mb: u64,
    pub cpus: u32,
    /// Memory reserved by its sandboxes.
    pub used_memory_mb: u64,
    /// An unhealthy worker gets no new sandbox (its existing ones stay counted).
    pub healthy: bool,
    /// Live sandboxes per function, sorted by key, no zero counts.
    functions: Vec<(FunctionKey, u32)>,
    sandboxes: u32,
}

/// [`Worker::add`] refused: the sandbox does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom {
    pub worker: WorkerId,
    pub free_mb: u64,
    pub needs_mb: u64,
}

impl fmt::Display for NoRoom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} MB needed, {} MB free", self.worker, self.needs_mb, self.free_mb)
    }
}

impl std::error::Error for NoRoom {}

impl Worker {
    /// An empty, healthy worker.
    pub fn new(id: WorkerId, memory_mb: u64, cpus: u32) -> Self {
        Worker { id, memory_mb, cpus, used_memory_mb: 0, healthy: true, functions: Vec::new(), sandboxes: 0 }
    }

    pub fn free_mb(&self) -> u64 {
        self.memory_mb.saturating_sub(self.used_memory_mb)
    }

    /// Whether a sandbox of `memory_mb` fits without over-committing (health aside).
    pub fn fits(&self, memory_mb: u64) -> bool {
        self.used_memory_mb.checked_add(memory_mb).is_some_and(|after| after <= self.memory_mb)
    }

    /// Live sandboxes on this worker.
    pub fn sandboxes(&self) -> u32 {
        self.sandboxes
    }

    /// Live sandboxes of `function` on this worker.
    pub fn copies(&self, function: FunctionKey) -> u32 {
        match self.functions.binary_search_by_key(&function, |(k, _)| *k) {
            Ok(i) => self.functions[i].1,
            Err(_) => 0,
        }
    }

    /// Distinct functions with a live sandbox on this worker.
    pub fn distinct_functions(&self) -> usize {
        self.functions.len()
    }

    /// Records a sandbox placed here; refused if it would over-commit memory.
    pub fn add(&mut self, needs: &Needs) -> Result<(), NoRoom> {
        if !self.fits(needs.memory_mb) {
            return Err(NoRoom { worker: self.id, free_mb: self.free_mb(), needs_mb: needs.memory_mb });
        }
        self.used_memory_mb += needs.memory_mb;
        self.sandboxes += 1;
        match self.functions.binary_search_by_key(&needs.function, |(k, _)| *k) {
            Ok(i) => self.functions[i].1 += 1,
            Err(i) => self.functions.insert(i, (needs.function, 1)),
        }
        Ok(())
    }

    /// Records that a sandbox placed here with `needs` ended. False (and no
    /// change) if this worker has no sandbox of that function.
    pub fn remove(&mut self, needs: &Needs) -> bool {
        let Ok(i) = self.functions.binary_search_by_key(&needs.function, |(k, _)| *k) else {
            return false;
        };
        self.functions[i].1 -= 1;
        if self.functions[i].1 == 0 {
            self.functions.remove(i);
        }
        self.sandboxes -= 1;
        self.used_memory_mb = self.used_memory_mb.saturating_sub(needs.memory_mb);
        true
    }

    /// Memory in use after placing `memory_mb`, in millionths of capacity.
    /// Only meaningful when it fits (so capacity is not zero unless `memory_mb` is).
    fn ppm_after(&self, memory_mb: u64) -> u64 {
        if self.memory_mb == 0 {
            return 0;
        }
        ((self.used_memory_mb + memory_mb) as u128 * 1_000_000 / self.memory_mb as u128) as u64
    }

    fn ppm(&self) -> u64 {
        if self.memory_mb == 0 { 1_000_000 } else { self.ppm_after(0) }
    }
}

/// Why no worker was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No worker, or none healthy.
    NoHealthyWorker,
    /// Larger than every healthy worker's whole capacity: it will never fit.
    TooLarge { largest_mb: u64 },
    /// It would fit an empty worker, but no healthy worker has that much free now.
    Full { largest_free_mb: u64 },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoHealthyWorker => write!(f, "no healthy worker"),
            Refusal::TooLarge { largest_mb } => write!(f, "larger than any worker ({largest_mb} MB)"),
            Refusal::Full { largest_free_mb } => write!(f, "no worker has room (largest free: {largest_free_mb} MB)"),
        }
    }
}

/// A placement decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Worker(WorkerId),
    Refused(Refusal),
}

impl Placement {
    pub fn worker(self) -> Option<WorkerId> {
        match self {
            Placement::Worker(id) => Some(id),
            Placement::Refused(_) => None,
        }
    }
}

/// The reason to refuse `needs` on `workers`, or `None` when some healthy worker has room.
/// Every strategy refuses exactly when this is `Some`, with this reason.
pub fn refusal(workers: &[Worker], needs: &Needs) -> Option<Refusal> {
    let mut healthy = false;
    let mut largest_mb = 0;
    let mut largest_free_mb = 0;
    for w in workers.iter().filter(|w| w.healthy) {
        if w.fits(needs.memory_mb) {
            return None;
        }
        healthy = true;
        largest_mb = largest_mb.max(w.memory_mb);
        largest_free_mb = largest_free_mb.max(w.free_mb());
    }
    Some(if !healthy {
        Refusal::NoHealthyWorker
    } else if needs.memory_mb > largest_mb {
        Refusal::TooLarge { largest_mb }
    } else {
        Refusal::Full { largest_free_mb }
    })
}

fn refused(workers: &[Worker], needs: &Needs) -> Placement {
    Placement::Refused(refusal(workers, needs).expect("refused only when no healthy worker has room"))
}

/// A placement policy. `place` takes `&mut self` so a strategy may keep a cursor
/// (round-robin); the others are stateless.
pub trait Strategy {
    fn name(&self) -> &'static str;
    fn place(&mut self, workers: &[Worker], needs: &Needs) -> Placement;
}

/// The next healthy worker with room after the last one chosen (slice order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    pub fn new() -> Self {
        RoundRobin::default()
    }
}

impl Strategy for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn place(&mut self, workers: &[Worker], needs: &Needs) -> Placement {
        let n = workers.len();
        for step in 0..n {
            let i = (self.next + step) % n;
            let w = &workers[i];
            if w.healthy && w.fits(needs.memory_mb) {
                self.next = (i + 1) % n;
                return Placement::Worker(w.id);
            }
        }
        refused(workers, needs)
    }
}

/// The healthy worker with room and the lowest memory utilisation; ties go to
/// fewer sandboxes, then the first in the slice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeastLoaded;

impl Strategy for LeastLoaded {
    fn name(&self) -> &'static str {
        "least-loaded"
    }

    fn place(&mut self, workers: &[Worker], needs: &Needs) -> Placement {
        let mut best: Option<(&Worker, u64)> = None;
        for w in workers.iter().filter(|w| w.healthy && w.fits(needs.memory_mb)) {
            let ppm = w.ppm();
            let better = match best {
                None => true,
                Some((b, b_ppm)) => (ppm, w.sandboxes) < (b_ppm, b.sandboxes),
            };
            if better {
                best = Some((w, ppm));
            }
        }
        match best {
            Some((w, _)) => Placement::Worker(w.id),
            None => refused(workers, needs),
        }
    }
}

/// Ignis's strategy: pack toward a target utilisation, mix functions; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packing {
    /// Soft ceiling of memory utilisation, in millionths (900_000 = 90%).
    pub target_ppm: u64,
    /// How many of the first candidates within the target the mixing rule
    /// looks at (at least 1).
    pub mix_window: usize,
}

impl Default for Packing {
    fn default() -> Self {
        Packing { target_ppm: 900_000, mix_window: 8 }
    }
}

impl Packing {
    /// The decision itself (`Strategy::place` without the `&mut`).
    pub fn choose(&self, workers: &[Worker], needs: &Needs) -> Placement {
        let mem = needs.memory_mb;
        let candidates = || workers.iter().filter(|w| w.healthy && w.fits(mem));
        // Within target, in order: the first `mix_window` busy workers, fewest copies first; an empty worker only
        // when no busy one stays within the target (mixing never spreads onto idle hosts).
        let within = candidates().filter(|w| w.ppm_after(mem) <= self.target_ppm);
        let mut chosen: Option<(&Worker, u32)> = None;
        for w in within.clone().filter(|w| w.sandboxes() > 0).take(self.mix_window.max(1)) {
            let copies = w.copies(needs.function);
            if chosen.is_none_or(|(_, fewest)| copies < fewest) {
                chosen = Some((w, copies));
            }
            if copies == 0 {
                break;
            }
        }
        if let Some(w) = chosen.map(|(w, _)| w).or_else(|| within.clone().next()) {
            return Placement::Worker(w.id);
        }
        // Fallback: the most headroom after placing; copies break exact ties, then slice order.
        match candidates().min_by_key(|w| (w.ppm_after(mem), w.copies(needs.function))) {
            Some(w) => Placement::Worker(w.id),
            None => refused(workers, needs),
        }
    }
}

impl Strategy for Packing {
    fn name(&self) -> &'static str {
        "packing (ignis)"
    }

    fn place(&mut self, workers: &[Worker], needs: &Needs) -> Placement {
        self.choose(workers, needs)
    }
}

#[cfg(test)]
mod tests;
