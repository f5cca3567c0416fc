//! Which cached entries stay: eviction policies under a byte budget. Pure: no IO, no clock (references are
//! ordered by a counter, one tick per reference).
//!
//! The caller (a cache tier) holds the bytes; a policy holds each resident entry's size and what it needs to
//! rank it. After a hit the caller calls [`Eviction::touch`]; after a miss, [`Eviction::admit`], which answers
//! what to evict so that the new entry fits (the caller then drops those). [`Eviction::remove`] forgets a resident
//! entry the caller lost (its file vanished, it failed to verify).
//!
//! # Policies
//!
//! - [`LruK`] (O'Neil, O'Neil and Weikum, "The LRU-K page replacement algorithm", SIGMOD 1993): each key's last
//!   K references are kept. The victim is the resident entry with the largest *backward K-distance*, that is the
//!   oldest K-th most recent reference. An entry referenced fewer than K times has an infinite distance and goes
//!   before any other; among those, the least recently used goes first. So entries read once (a scan) replace
//!   each other and do not push out entries read at least K times. *Retained information*: when an entry leaves
//!   (evicted or removed) its history is kept, so a key that comes back soon counts its earlier references; the
//!   histories of at most `max(len(), min_retained)` non-resident keys are kept (the least recently referenced
//!   forgotten first; `min_retained` defaults to [`LruK::DEFAULT_MIN_RETAINED`]). No correlated-reference
//!   period: every call is one reference (the caller collapses the reads of one chunk into one call).
//! - [`Lru`]: the least recently used entry goes first (LRU-K with K = 1); a [`Queue`] that a hit requeues.
//! - [`Fifo`]: the entry admitted first goes first; a [`Queue`] that hits do not change.
//!
//! # Invariants (every policy, after every call)
//!
//! - `used() <= capacity()`, and `used()` is the sum of the sizes of the resident entries.
//! - An entry larger than `capacity()` is [`Admission::TooLarge`]: nothing is evicted and nothing recorded.
//! - [`Admission::Admitted`] lists the evicted entries in the order they were chosen; none of them is the entry
//!   admitted, and the entry admitted is resident afterwards.
//! - Memory is bounded: the resident entries, and for [`LruK`] at most K references for each of at most
//!   `len() + max(len(), min_retained)` keys.
//! - Each call is O(log n) (hash maps and ordered maps), plus O(log n) per entry evicted or forgotten.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::str::FromStr;

/// What [`Eviction::admit`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission<K> {
    /// The entry is in; these entries (first chosen first) were evicted to make room.
    Admitted { evicted: Vec<K> },
    /// The entry was already resident: the call was a [`Eviction::touch`].
    Present,
    /// The entry is larger than the whole budget: not admitted, nothing evicted, nothing recorded.
    TooLarge,
}

/// An eviction policy: the resident entries, their sizes and their ranks, bounded by `capacity()` bytes.
pub trait Eviction<K>: Send {
    /// A hit: whether `key` is resident; if so, records one reference to it.
    fn touch(&mut self, key: &K) -> bool;

    /// After a miss: records one reference to `key` and makes it resident with `bytes`, evicting entries until
    /// it fits. An entry already resident is only touched ([`Admission::Present`]; its size is not changed).
    fn admit(&mut self, key: K, bytes: u64) -> Admission<K>;

    /// Forgets a resident entry (the caller lost it); whether it was resident.
    fn remove(&mut self, key: &K) -> bool;

    /// The bytes the resident entries take.
    fn used(&self) -> u64;

    /// The budget in bytes.
    fn capacity(&self) -> u64;

    /// How many entries are resident.
    fn len(&self) -> usize;

    /// Whether no entry is resident.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The largest K of [`LruK`]: at most this many references are kept per key.
pub const MAX_K: usize = 64;

/// Where an entry stands: the lowest goes first. `(0, t)` before `(1, t)`; each `t` is one reference's tick, so
/// no two resident entries share a rank.
type Rank = (u8, u64);

/// The resident entries of a policy, ordered by rank: the bookkeeping every policy shares.
#[derive(Debug)]
struct Resident<K> {
    capacity: u64,
    used: u64,
    /// Entry → (size, rank).
    entries: HashMap<K, (u64, Rank)>,
    /// Rank → entry: the first is the next victim.
    order: BTreeMap<Rank, K>,
}

impl<K: Clone + Eq + Hash> Resident<K> {
    fn new(capacity: u64) -> Self {
        Self { capacity, used: 0, entries: HashMap::new(), order: BTreeMap::new() }
    }

    fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Gives a resident `key` a new rank.
    fn rerank(&mut self, key: &K, rank: Rank) {
        if let Some(entry) = self.entries.get_mut(key) {
            self.order.remove(&entry.1);
            entry.1 = rank;
            self.order.insert(rank, key.clone());
        }
    }

    /// Evicts the lowest-ranked entries until `bytes` more fit (`bytes <= capacity`); the evicted, in order.
    fn make_room(&mut self, bytes: u64) -> Vec<K> {
        let mut evicted = Vec::new();
        while self.used + bytes > self.capacity {
            // `used > 0` here (bytes <= capacity), so some entry is resident.
            let Some((_, victim)) = self.order.pop_first() else { break };
            if let Some((size, _)) = self.entries.remove(&victim) {
                self.used -= size;
            }
            evicted.push(victim);
        }
        evicted
    }

    /// Makes `key` (not resident) resident with `rank`, evicting to fit, unless it is larger than the budget.
    fn admit(&mut self, key: K, bytes: u64, rank: Rank) -> Admission<K> {
        if bytes > self.capacity {
            return Admission::TooLarge;
        }
        let evicted = self.make_room(bytes);
        self.order.insert(rank, key.clone());
        self.entries.insert(key, (bytes, rank));
        self.used += bytes;
        Admission::Admitted { evicted }
    }

    /// Forgets `key`; whether it was resident.
    fn remove(&mut self, key: &K) -> bool {
        let Some((size, rank)) = self.entries.remove(key) else { return false };
        self.order.remove(&rank);
        self.used -= size;
        true
    }

    /// The resident entries, next victim first.
    #[cfg(test)]
    fn victims_first(&self) -> Vec<K> {
        self.order.values().cloned().collect()
    }
}

/// The parts of [`Eviction`] every policy answers from its [`Resident`] entries alone.
macro_rules! resident_accessors {
    () => {
        fn used(&self) -> u64 {
            self.resident.used
        }

        fn capacity(&self) -> u64 {
            self.resident.capacity
        }

        fn len(&self) -> usize {
            self.resident.entries.len()
        }
    };
}

/// Least recently used first: a [`Queue`] that a hit moves to the back.
pub type Lru<K> = Queue<K, true>;

/// First admitted, first evicted: a [`Queue`] that hits do not change.
pub type Fifo<K> = Queue<K, false>;

/// Entries in a queue: admitted at the back, evicted from the front; a hit moves an entry to the back if `REQUEUE`
/// ([`Lru`]), else changes nothing ([`Fifo`]).
#[derive(Debug)]
pub struct Queue<K, const REQUEUE: bool> {
    resident: Resident<K>,
    clock: u64,
}

impl<K: Clone + Eq + Hash, const REQUEUE: bool> Queue<K, REQUEUE> {
    pub fn new(capacity: u64) -> Self {
        Self { resident: Resident::new(capacity), clock: 0 }
    }
}

impl<K: Clone + Eq + Hash + Send, const REQUEUE: bool> Eviction<K> for Queue<K, REQUEUE> {
    fn touch(&mut self, key: &K) -> bool {
        if !self.resident.contains(key) {
            return false;
        }
        if REQUEUE {
            self.clock += 1;
            self.resident.rerank(key, (0, self.clock));
        }
        true
    }

    fn admit(&mut self, key: K, bytes: u64) -> Admission<K> {
        if self.touch(&key) {
            return Admission::Present;
        }
        self.clock += 1;
        self.resident.admit(key, bytes, (0, self.clock))
    }

    fn remove(&mut self, key: &K) -> bool {
        self.resident.remove(key)
    }

    resident_accessors!();
}

/// LRU-K: the largest backward K-distance first, entries with fewer than K references before all others (see
/// the module docs).
#[derive(Debug)]
pub struct LruK<K> {
    resident: Resident<K>,
    k: usize,
    min_retained: usize,
    clock: u64,
    /// The last (at most) K reference ticks of every resident and every retained key, oldest first; never empty.
    history: HashMap<K, VecDeque<u64>>,
    /// Retained (not resident) keys by their last reference: the first is forgotten first.
    retained: BTreeMap<u64, K>,
}

impl<K: Clone + Eq + Hash> LruK<K> {
    /// The fewest non-resident keys whose histories are kept, however few entries are resident.
    pub const DEFAULT_MIN_RETAINED: usize = 1024;

    /// LRU-K within `capacity` bytes; `k` is taken within `1..=MAX_K`.
    pub fn new(capacity: u64, k: usize) -> Self {
        Self {
            resident: Resident::new(capacity),
            k: k.clamp(1, MAX_K),
            min_retained: Self::DEFAULT_MIN_RETAINED,
            clock: 0,
            history: HashMap::new(),
            retained: BTreeMap::new(),
        }
    }

    /// LRU-2, the usual choice.
    pub fn lru2(capacity: u64) -> Self {
        Self::new(capacity, 2)
    }

    /// Keeps the histories of at least `min` non-resident keys (and of as many as are resident, if more).
    pub fn retaining(mut self, min: usize) -> Self {
        self.min_retained = min;
        self.trim();
        self
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Records one reference to `key` (resident, or about to be) and answers its rank.
    fn reference(&mut self, key: &K) -> Rank {
        self.clock += 1;
        let history = match self.history.get_mut(key) {
            Some(history) => history,
            None => self.history.entry(key.clone()).or_default(),
        };
        if history.len() == self.k {
            history.pop_front();
        }
        history.push_back(self.clock);
        match history.front() {
            Some(&kth) if history.len() == self.k => (1, kth),
            _ => (0, self.clock),
        }
    }

    /// Keeps `key` (just left) as retained information.
    fn retain(&mut self, key: K) {
        if let Some(&last) = self.history.get(&key).and_then(|h| h.back()) {
            self.retained.insert(last, key);
        }
    }

    /// Forgets the least recently referenced retained keys beyond the bound.
    fn trim(&mut self) {
        let bound = self.resident.entries.len().max(self.min_retained);
        while self.retained.len() > bound {
            let Some((_, key)) = self.retained.pop_first() else { break };
            self.history.remove(&key);
        }
    }

    /// How many keys have a history (resident and retained).
    #[cfg(test)]
    fn known(&self) -> usize {
        self.history.len()
    }
}

impl<K: Clone + Eq + Hash + Send> Eviction<K> for LruK<K> {
    fn touch(&mut self, key: &K) -> bool {
        if !self.resident.contains(key) {
            return false;
        }
        let rank = self.reference(key);
        self.resident.rerank(key, rank);
        true
    }

    fn admit(&mut self, key: K, bytes: u64) -> Admission<K> {
        if self.touch(&key) {
            return Admission::Present;
        }
        if bytes > self.resident.capacity {
            return Admission::TooLarge;
        }
        if let Some(&last) = self.history.get(&key).and_then(|h| h.back()) {
            self.retained.remove(&last);
        }
        let rank = self.reference(&key);
        let admission = self.resident.admit(key, bytes, rank);
        if let Admission::Admitted { evicted } = &admission {
            for victim in evicted {
                self.retain(victim.clone());
            }
        }
        self.trim();
        admission
    }

    fn remove(&mut self, key: &K) -> bool {
        if !self.resident.remove(key) {
            return false;
        }
        self.retain(key.clone());
        self.trim();
        true
    }

    resident_accessors!();
}

/// An eviction policy by name: `lru-K` (K in `1..=64`), `lru`, `fifo`. The default is `lru-2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    LruK(usize),
    Lru,
    Fifo,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::LruK(2)
    }
}

impl Policy {
    /// A policy of this kind within `capacity` bytes.
    pub fn build<K: Clone + Eq + Hash + Send + 'static>(self, capacity: u64) -> Box<dyn Eviction<K>> {
        match self {
            Policy::LruK(k) => Box::new(LruK::new(capacity, k)),
            Policy::Lru => Box::new(Lru::new(capacity)),
            Policy::Fifo => Box::new(Fifo::new(capacity)),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::LruK(k) => write!(f, "lru-{k}"),
            Policy::Lru => f.write_str("lru"),
            Policy::Fifo => f.write_str("fifo"),
        }
    }
}

/// A policy name that is none of `lru-K` (K in `1..=64`), `lru`, `fifo`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown eviction policy {0:?}: expected lru-K (K from 1 to 64), lru or fifo")]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lru" => Ok(Policy::Lru),
            "fifo" => Ok(Policy::Fifo),
            _ => s
                .strip_prefix("lru-")
                .filter(|k| k.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|k| k.parse::<usize>().ok())
                .filter(|k| (1..=MAX_K).contains(k))
                .map(Policy::LruK)
                .ok_or_else(|| UnknownPolicy(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests;
