//! Sandbox states and the idle pool: which sandbox serves the next invocation.
//!
//! Pure decision logic: no IO, no clocks (time is passed in as milliseconds),
//! no threads. The caller owns one [`Pool`] and does what its answers say:
//! start a sandbox for [`Reservation::Cold`], destroy the ids that
//! [`Pool::expire`] and [`Pool::retire`] return.
//!
//! # States
//!
//! ```text
//!        reserve (no idle one) / provision
//!                     │
//!                     ▼
//!             ┌──Initialising──┐ InitFailed
//!  InitDone   │      │         └──────────────┐
//!             ▼      │ Ready                  ▼
//!           Busy ── Failed ─────────────────► Dead
//!           ▲  │     │                        ▲
//!   reserve │  │ Released                     │ Expired / Retired / Evicted / Aged
//!           │  ▼     ▼                        │
//!           Idle ─────────────────────────────┘
//! ```
//!
//! A sandbox started for an invocation is bound to it when it is reserved, so
//! its `Initialising` is followed by `Busy`; one started ahead of demand
//! ([`Pool::provision`]: provisioned concurrency) becomes `Idle` when `Ready`.
//! Only `Idle` sandboxes are handed out. Provisioned sandboxes never expire;
//! [`Pool::unprovision`] makes them ordinary ones again.
//! Idle sandboxes are a cache, not a reservation: when a new sandbox needs the
//! memory, ordinary idle ones are evicted, least recently used first
//! ([`Pool::evictable`] lists them in that order, any key); busy,
//! initialising and provisioned sandboxes never are.
//! A sandbox whose function changed (its key was retired) is never handed out
//! again: idle ones die at once, busy ones when they are released. `Dead` is
//! final; dead sandboxes leave the pool. A sandbox whose worker was lost
//! leaves it at once, whatever its state ([`Pool::remove`]).
//!
//! A sandbox may have a renewal time ([`Pool::renew_at`]: its session
//! credentials, fixed in its environment, are then near their expiry). From
//! that time on it is never handed out again, provisioned or not: idle ones
//! die when [`Pool::renew`] is called (`Aged`), busy ones when they are
//! released; the caller starts fresh ones.

use std::collections::HashMap;

/// Identifies one sandbox for its whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SandboxId(pub u64);

impl std::fmt::Display for SandboxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Initialising,
    Idle,
    Busy,
    Dead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The runtime finished its init and took the first invocation.
    InitDone,
    /// A sandbox started ahead of demand finished its init.
    Ready,
    /// The sandbox could not start, or its runtime failed during init.
    InitFailed,
    /// The invocation ended and the sandbox can serve another.
    Released,
    /// The invocation ended in a way that forbids reuse (timeout, crash, out of memory).
    Failed,
    /// An idle sandbox was handed an invocation.
    Reserved,
    /// Idle longer than the keep-alive.
    Expired,
    /// Its function's code or configuration changed, or the function was deleted.
    Retired,
    /// Its memory is needed for a new sandbox (an ordinary idle one only).
    Evicted,
    /// Its renewal time came ([`Pool::renew_at`]): its credentials are near their expiry.
    Aged,
}

/// The state machine: the state after `event`, or `None` when the event is
/// not possible in `state`.
pub fn next(state: State, event: Event) -> Option<State> {
    use Event::*;
    use State::*;
    match (state, event) {
        (Initialising, InitDone) => Some(Busy),
        (Initialising, Ready) => Some(Idle),
        (Initialising, InitFailed) => Some(Dead),
        (Busy, Released) => Some(Idle),
        (Busy, Failed) => Some(Dead),
        (Idle, Reserved) => Some(Busy),
        (Idle, Expired) => Some(Dead),
        (Idle, Retired) => Some(Dead),
        (Idle, Evicted) => Some(Dead),
        (Idle, Aged) => Some(Dead),
        _ => None,
    }
}

/// What [`Pool::reserve`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// An idle sandbox, now busy with this invocation.
    Warm(SandboxId),
    /// No idle sandbox: start this new one (it is `Initialising`).
    Cold(SandboxId),
}

impl Reservation {
    pub fn id(self) -> SandboxId {
        match self {
            Reservation::Warm(id) | Reservation::Cold(id) => id,
        }
    }
}

/// A transition the pool refused: the caller's bookkeeping is out of step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidTransition {
    pub id: SandboxId,
    pub state: Option<State>,
    pub event: Event,
}

impl std::fmt::Display for InvalidTransition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.state {
            Some(state) => write!(f, "sandbox {}: {:?} is not possible when {:?}", self.id, self.event, state),
            None => write!(f, "sandbox {}: unknown", self.id),
        }
    }
}

impl std::error::Error for InvalidTransition {}

#[derive(Debug)]
struct Entry<K> {
    key: K,
    state: State,
    /// When it last became idle, in the caller's milliseconds.
    idle_since: u64,
    /// Its key was retired while it was busy or initialising: never reuse it.
    retired: bool,
    /// Kept for provisioned concurrency: never expires.
    provisioned: bool,
    /// From this time on it is never handed out again ([`Pool::renew_at`]).
    renew_at: Option<u64>,
}

impl<K: Clone> Entry<K> {
    fn new(key: &K, provisioned: bool) -> Self {
        Entry { key: key.clone(), state: State::Initialising, idle_since: 0, retired: false, provisioned, renew_at: None }
    }

    /// Whether it may serve no more invocations: its key was retired, or its renewal time came.
    fn spent(&self, now_ms: u64) -> bool {
        self.retired || self.renew_at.is_some_and(|at| now_ms >= at)
    }
}

/// Every live sandbox, by key (a function revision), and which are idle.
///
/// Idle sandboxes of a key are handed out most recently used first, so a
/// function with spare sandboxes keeps reusing the warmest one and lets the
/// others age out.
#[derive(Debug)]
pub struct Pool<K> {
    entries: HashMap<SandboxId, Entry<K>>,
    /// Idle sandboxes per key; the last one is the most recently released.
    idle: HashMap<K, Vec<SandboxId>>,
    next_id: u64,
}

impl<K: Clone + Eq + std::hash::Hash> Default for Pool<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + std::hash::Hash> Pool<K> {
    pub fn new() -> Self {
        Pool { entries: HashMap::new(), idle: HashMap::new(), next_id: 1 }
    }

    /// Hands out the most recently used idle sandbox of `key`, or a new one to start.
    pub fn reserve(&mut self, key: &K) -> Reservation {
        if let Some(id) = self.idle.get_mut(key).and_then(Vec::pop) {
            let entry = self.entries.get_mut(&id).expect("idle sandboxes are entries");
            entry.state = State::Busy;
            return Reservation::Warm(id);
        }
        Reservation::Cold(self.add(key, false))
    }

    /// A new sandbox of `key` to start ahead of demand and keep (provisioned
    /// concurrency): `Initialising`, then `Idle` once reported `Ready`.
    pub fn provision(&mut self, key: &K) -> SandboxId {
        self.add(key, true)
    }

    /// A sandbox of `key` that runs already, started by another owner, to take over: `Initialising` until the
    /// caller has it (then `Ready` makes it idle) or lets it go ([`Pool::remove`]); kept for provisioned
    /// concurrency if `provisioned`.
    pub fn adopt(&mut self, key: &K, provisioned: bool) -> SandboxId {
        self.add(key, provisioned)
    }

    fn add(&mut self, key: &K, provisioned: bool) -> SandboxId {
        let id = SandboxId(self.next_id);
        self.next_id += 1;
        self.entries.insert(id, Entry::new(key, provisioned));
        id
    }

    /// Live provisioned sandboxes of `key`: (initialising, ready: idle or busy).
    pub fn provisioned(&self, key: &K) -> (usize, usize) {
        let mut counts = (0, 0);
        for entry in self.entries.values().filter(|e| e.provisioned && &e.key == key && !e.retired) {
            match entry.state {
                State::Initialising => counts.0 += 1,
                State::Idle | State::Busy => counts.1 += 1,
                State::Dead => {}
            }
        }
        counts
    }

    /// Makes up to `count` provisioned sandboxes of `key` ordinary ones (idle
    /// ones first, which then age from `now_ms`), and returns how many it changed.
    pub fn unprovision(&mut self, key: &K, count: usize, now_ms: u64) -> usize {
        let mut ids: Vec<(bool, SandboxId)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.provisioned && &e.key == key)
            .map(|(id, e)| (e.state != State::Idle, *id))
            .collect();
        ids.sort();
        ids.truncate(count);
        for (_, id) in &ids {
            let entry = self.entries.get_mut(id).expect("listed above");
            entry.provisioned = false;
            if entry.state == State::Idle {
                entry.idle_since = now_ms;
            }
        }
        ids.len()
    }

    /// Applies an event reported by the worker for `id`. Returns the new state;
    /// a `Released` sandbox whose key was retired meanwhile goes straight to `Dead`.
    pub fn report(&mut self, id: SandboxId, event: Event, now_ms: u64) -> Result<State, InvalidTransition> {
        let entry = self.entries.get_mut(&id).ok_or(InvalidTransition { id, state: None, event })?;
        let refused = InvalidTransition { id, state: Some(entry.state), event };
        if matches!(event, Event::Reserved | Event::Expired | Event::Retired | Event::Evicted | Event::Aged) {
            // These are the pool's own decisions, made through reserve/expire/retire/evict.
            return Err(refused);
        }
        let mut state = next(entry.state, event).ok_or(refused)?;
        if state == State::Idle && entry.spent(now_ms) {
            state = State::Dead;
        }
        entry.state = state;
        match state {
            State::Idle => {
                entry.idle_since = now_ms;
                let key = entry.key.clone();
                self.idle.entry(key).or_default().push(id);
            }
            State::Dead => {
                self.entries.remove(&id);
            }
            State::Initialising | State::Busy => {}
        }
        Ok(state)
    }

    /// Sandbox `id` may not be handed out from `at_ms` on (its credentials
    /// are then near their expiry); false if the pool does not know it.
    pub fn renew_at(&mut self, id: SandboxId, at_ms: u64) -> bool {
        self.entries.get_mut(&id).map(|entry| entry.renew_at = Some(at_ms)).is_some()
    }

    /// Idle sandboxes (provisioned ones too) whose renewal time has come by
    /// `now_ms`: they are now dead (`Aged`), for the caller to destroy and
    /// replace. Called before [`Pool::reserve`] with the same time, no
    /// sandbox past its renewal time is handed out.
    pub fn renew(&mut self, now_ms: u64) -> Vec<SandboxId> {
        self.end_idle(|entry| entry.spent(now_ms))
    }

    /// Idle sandboxes unused for `keep_alive_ms` or more: they are now dead and
    /// the caller destroys them.
    pub fn expire(&mut self, now_ms: u64, keep_alive_ms: u64) -> Vec<SandboxId> {
        self.end_idle(|entry| !entry.provisioned && now_ms.saturating_sub(entry.idle_since) >= keep_alive_ms)
    }

    /// Ends the idle sandboxes for which `ends` holds: they leave the pool; their ids, sorted.
    fn end_idle(&mut self, ends: impl Fn(&Entry<K>) -> bool) -> Vec<SandboxId> {
        let entries = &self.entries;
        let mut ended = Vec::new();
        self.idle.retain(|_, ids| {
            ids.retain(|id| {
                let end = ends(&entries[id]);
                if end {
                    ended.push(*id);
                }
                !end
            });
            !ids.is_empty()
        });
        for id in &ended {
            self.entries.remove(id);
        }
        ended.sort();
        ended
    }

    /// The idle sandboxes that may be evicted (ordinary ones, not
    /// provisioned), least recently used first (then by id), of every key.
    pub fn evictable(&self) -> Vec<SandboxId> {
        let mut ids: Vec<(u64, SandboxId)> = self
            .idle
            .values()
            .flatten()
            .filter_map(|id| {
                let entry = &self.entries[id];
                (!entry.provisioned).then_some((entry.idle_since, *id))
            })
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Ends an idle, ordinary sandbox whose memory a new sandbox needs: it is
    /// now dead (the caller destroys it). Refused (and nothing changes) for any
    /// other sandbox: busy, initialising and provisioned ones are reservations.
    pub fn evict(&mut self, id: SandboxId) -> Result<(), InvalidTransition> {
        let event = Event::Evicted;
        let entry = self.entries.get(&id).ok_or(InvalidTransition { id, state: None, event })?;
        if entry.provisioned || next(entry.state, event).is_none() {
            return Err(InvalidTransition { id, state: Some(entry.state), event });
        }
        self.remove(id);
        Ok(())
    }

    /// The function behind `key` changed or is gone: its idle sandboxes are now
    /// dead (returned for the caller to destroy), its busy and initialising ones
    /// die when they are released.
    pub fn retire(&mut self, key: &K) -> Vec<SandboxId> {
        let mut dead = self.idle.remove(key).unwrap_or_default();
        for id in &dead {
            self.entries.remove(id);
        }
        for entry in self.entries.values_mut().filter(|e| &e.key == key) {
            entry.retired = true;
        }
        dead.sort();
        dead
    }

    /// The sandbox is gone whatever its state (its worker was lost): it leaves
    /// the pool now, and later reports about it are refused. Returns the state
    /// it was in, or `None` if the pool did not know it.
    pub fn remove(&mut self, id: SandboxId) -> Option<State> {
        let entry = self.entries.remove(&id)?;
        if entry.state == State::Idle
            && let Some(ids) = self.idle.get_mut(&entry.key)
        {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.idle.remove(&entry.key);
            }
        }
        Some(entry.state)
    }

    /// Every live sandbox, e.g. to destroy them all at shutdown.
    pub fn drain(&mut self) -> Vec<SandboxId> {
        self.idle.clear();
        let mut ids: Vec<SandboxId> = self.entries.drain().map(|(id, _)| id).collect();
        ids.sort();
        ids
    }

    /// The idle sandboxes whose key `of` picks, sorted.
    pub fn idle_of(&self, of: impl Fn(&K) -> bool) -> Vec<SandboxId> {
        let mut ids: Vec<SandboxId> = self.idle.iter().filter(|(key, _)| of(key)).flat_map(|(_, ids)| ids.iter().copied()).collect();
        ids.sort();
        ids
    }

    /// Whether `id` is kept for provisioned concurrency.
    pub fn is_provisioned(&self, id: SandboxId) -> bool {
        self.entries.get(&id).is_some_and(|e| e.provisioned)
    }

    pub fn state(&self, id: SandboxId) -> Option<State> {
        self.entries.get(&id).map(|e| e.state)
    }

    /// Live sandboxes per state: (initialising, idle, busy).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for entry in self.entries.values() {
            match entry.state {
                State::Initialising => counts.0 += 1,
                State::Idle => counts.1 += 1,
                State::Busy => counts.2 += 1,
                State::Dead => {}
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests;
