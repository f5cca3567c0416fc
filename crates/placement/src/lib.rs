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
//!   2. *Within target*: if some candidate stays at or below the target
//!      utilisation after placing (`(used + needs) / capacity <= target`,
//!      default 80%), only those are considered, and the preferred ones are
//!      the **fullest after placing** (best fit): load concentrates on few
//!      hosts, the others drain and can be released.
//!   3. *Mixing*: among candidates whose utilisation after placing is within
//!      `tie` (default 5 points) of the best, the one with the **fewest
//!      sandboxes of the same function** wins, then the fuller one, then the
//!      first in the slice. Copies of one function (which burst and idle
//!      together) are spread, unlike functions share hosts: statistical
//!      multiplexing of the CPU and of a host's failure.
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

use std::fmt;

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
    /// Soft ceiling of memory utilisation, in millionths (800_000 = 80%).
    pub target_ppm: u64,
    /// Candidates whose utilisation after placing is within this of the best
    /// (in millionths) count as near-equal for the mixing rule.
    pub tie_ppm: u64,
}

impl Default for Packing {
    fn default() -> Self {
        Packing { target_ppm: 800_000, tie_ppm: 50_000 }
    }
}

impl Packing {
    /// The decision itself (`Strategy::place` without the `&mut`).
    pub fn choose(&self, workers: &[Worker], needs: &Needs) -> Placement {
        let mem = needs.memory_mb;
        let target = self.target_ppm;
        // Pass 1: is any candidate within the target, and the best utilisation
        // after placing in that tier (highest within target, else lowest).
        let mut within = false;
        let mut best: Option<u64> = None;
        for w in workers.iter().filter(|w| w.healthy && w.fits(mem)) {
            let after = w.ppm_after(mem);
            if after <= target {
                best = Some(if within { best.map_or(after, |b| b.max(after)) } else { after });
                within = true;
            } else if !within {
                best = Some(best.map_or(after, |b| b.min(after)));
            }
        }
        let Some(best) = best else { return refused(workers, needs) };
        // Pass 2: among the tier's near-equal candidates (within target: within
        // `tie` of the fullest; fallback: exactly the least full), fewest
        // copies of the function, then the best utilisation, then slice order.
        let near = |after: u64| {
            if within { after <= target && after + self.tie_ppm >= best } else { after == best }
        };
        let mut chosen: Option<(&Worker, u32, u64)> = None;
        for w in workers.iter().filter(|w| w.healthy && w.fits(mem)) {
            let after = w.ppm_after(mem);
            if !near(after) {
                continue;
            }
            let copies = w.copies(needs.function);
            let better = match chosen {
                None => true,
                Some((_, c, a)) => copies < c || (copies == c && if within { after > a } else { after < a }),
            };
            if better {
                chosen = Some((w, copies, after));
            }
        }
        let (w, _, _) = chosen.expect("the best candidate is near itself");
        Placement::Worker(w.id)
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
