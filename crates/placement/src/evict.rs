//! Eviction: which idle sandboxes give up their memory so that a new sandbox fits.
//!
//! Idle sandboxes are a cache, not a reservation. When no healthy worker has
//! room for a new sandbox, [`evict`] walks the idle sandboxes the caller
//! lists, least recently used first (any account, any function), counting
//! what each would free on its worker, and stops at the first one after
//! which some healthy worker fits the new sandbox. The victims are the
//! sandboxes of that walk on that worker, and only those: the shortest prefix
//! of the LRU order that makes room, restricted to the one worker it makes
//! room on.
//!
//! The caller lists only sandboxes it may end: idle ones, never busy,
//! initialising or provisioned ones (those are reservations). Pure: no IO,
//! O(idle × workers) at worst, and it allocates only the answer.

use crate::{Needs, Worker, WorkerId};

/// An idle sandbox that may be evicted: where it is and what it reserved there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evictable<S> {
    pub sandbox: S,
    pub worker: WorkerId,
    pub memory_mb: u64,
}

/// What [`evict`] decided: end `victims` (least recently used first), then
/// `worker` has room for the new sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction<S> {
    pub worker: WorkerId,
    pub victims: Vec<S>,
}

/// The idle sandboxes to end, from `idle` (least recently used first), so
/// that `needs` fits a healthy worker; `None` when ending all of them would
/// not make room. A healthy worker that already has room is answered with no
/// victims (the first such worker in slice order). Idle sandboxes on unknown
/// or unhealthy workers are never chosen.
pub fn evict<S: Copy>(workers: &[Worker], needs: &Needs, idle: &[Evictable<S>]) -> Option<Eviction<S>> {
    if let Some(w) = workers.iter().find(|w| w.healthy && w.fits(needs.memory_mb)) {
        return Some(Eviction { worker: w.id, victims: Vec::new() });
    }
    // Memory freed so far on each worker (by slice index) in the walk.
    let mut freed = vec![0u64; workers.len()];
    for (walked, candidate) in idle.iter().enumerate() {
        let Some(i) = workers.iter().position(|w| w.id == candidate.worker) else { continue };
        let w = &workers[i];
        if !w.healthy {
            continue;
        }
        freed[i] = freed[i].saturating_add(candidate.memory_mb);
        let used = w.used_memory_mb.saturating_sub(freed[i]);
        if used.checked_add(needs.memory_mb).is_some_and(|after| after <= w.memory_mb) {
            let victims = idle[..=walked].iter().filter(|e| e.worker == w.id).map(|e| e.sandbox).collect();
            return Some(Eviction { worker: w.id, victims });
        }
    }
    None
}
