//! What happens to an asynchronous invocation (`InvocationType: Event`) after
//! it is accepted: when it may run, whether an outcome ends it or sends it
//! back to wait, and which poller holds it meanwhile.
//!
//! Pure decision logic: no IO, no clocks (time is passed in as milliseconds),
//! no threads. The front end stores events durably, owns one [`Schedule`]
//! behind a mutex, runs what [`Schedule::take`] hands out and does what
//! [`decide`] answers. The schedule serves accounts fairly: each holds at
//! most a share of leases, and the account holding the fewest goes first
//! (see [`Schedule`]).
//!
//! # Lambda's rules
//!
//! - A function error (or a failed invocation) is retried up to
//!   [`Policy::max_retries`] times (0–2, default 2): the first retry after
//!   one [`Policy::retry_delay_ms`] (Lambda: about a minute), the second after
//!   two.
//! - A throttle is not a failure: the event waits and is tried again, with a
//!   wait that doubles from [`THROTTLE_FIRST_DELAY_MS`] up to the retry delay
//!   (at least [`THROTTLE_MIN_CAP_MS`]), for as long as the event is young
//!   enough.
//! - An event older than [`Policy::max_age_ms`] (60 s – 6 h, default 6 h) is
//!   not run again: it fails with [`Condition::EventAgeExceeded`].
//!
//! # Leases
//!
//! ```text
//!  add ──► Waiting(ready_at) ── take (now ≥ ready_at) ──► Leased(token, expires_at)
//!              ▲                                              │
//!              ├──────────── reschedule(lease, at) ───────────┤
//!              └─ take again, once now ≥ expires_at (lease lost) ┤
//!                                                             └── settle(lease) ──► gone
//! ```
//!
//! Every take issues a new [`Lease`] token; only the current lease of an event
//! may reschedule or settle it. A lease that ran out stays current until the
//! event is taken again, so a slow holder can still finish, but one whose
//! event another poller took cannot undo the other's work.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

/// Lambda's default and largest number of retries after a function error.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// Lambda's default and largest event age: 6 hours.
pub const DEFAULT_MAX_AGE_MS: u64 = 6 * 3600 * 1000;
/// The first wait after a throttle.
pub const THROTTLE_FIRST_DELAY_MS: u64 = 100;
/// Throttle waits grow at least up to this, even with a shorter retry delay.
pub const THROTTLE_MIN_CAP_MS: u64 = 1000;

/// How an event's function errors and age are handled (its function's
/// event invoke config, and the server's retry delay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub max_retries: u32,
    pub max_age_ms: u64,
    /// The wait before the first retry; the n-th retry waits n times this.
    pub retry_delay_ms: u64,
}

impl Policy {
    /// Lambda's defaults with the given retry delay.
    pub fn with_delay(retry_delay_ms: u64) -> Policy {
        Policy { max_retries: DEFAULT_MAX_RETRIES, max_age_ms: DEFAULT_MAX_AGE_MS, retry_delay_ms }
    }
}

/// What has happened to an event so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// When it was accepted (ms since the epoch).
    pub accepted_ms: u64,
    /// Invocations that ran (a throttle does not count).
    pub invocations: u32,
    /// Throttles in a row since the last invocation.
    pub throttles: u32,
}

/// How one try of an event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The function answered.
    Success,
    /// The function failed (an error, a timeout, a crash) or could not be run.
    Failed,
    /// No concurrency (or scaling) for it now: not a failure.
    Throttled,
}

/// Why an event ended, as Lambda's destination records name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    Success,
    RetriesExhausted,
    EventAgeExceeded,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Success => "Success",
            Condition::RetriesExhausted => "RetriesExhausted",
            Condition::EventAgeExceeded => "EventAgeExceeded",
        }
    }

    pub fn is_success(self) -> bool {
        self == Condition::Success
    }
}

/// What to do with an event after a try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep it: run it again at `at_ms`, with this progress.
    Retry { at_ms: u64, progress: Progress },
    /// It is over: deliver its record (on success or on failure) and remove it.
    Done { condition: Condition, progress: Progress },
}

/// Whether an event about to be run is too old for it: then it ends with
/// [`Condition::EventAgeExceeded`] without running.
pub fn too_old(policy: &Policy, progress: &Progress, now_ms: u64) -> bool {
    now_ms.saturating_sub(progress.accepted_ms) >= policy.max_age_ms
}

/// The wait after the `n`-th throttle in a row (`n` ≥ 1).
pub fn throttle_delay_ms(policy: &Policy, n: u32) -> u64 {
    let cap = policy.retry_delay_ms.max(THROTTLE_MIN_CAP_MS);
    let doubled = THROTTLE_FIRST_DELAY_MS.saturating_mul(1u64 << (n.saturating_sub(1)).min(40));
    doubled.min(cap)
}

/// The wait before retry number `n` (`n` ≥ 1) after a function error.
pub fn retry_delay_ms(policy: &Policy, n: u32) -> u64 {
    policy.retry_delay_ms.saturating_mul(u64::from(n.max(1)))
}

/// What follows a try that ended with `attempt` at `now_ms`.
pub fn decide(policy: &Policy, progress: Progress, attempt: Attempt, now_ms: u64) -> Decision {
    match attempt {
        Attempt::Success => {
            let progress = Progress { invocations: progress.invocations + 1, throttles: 0, ..progress };
            Decision::Done { condition: Condition::Success, progress }
        }
        Attempt::Failed => {
            let progress = Progress { invocations: progress.invocations + 1, throttles: 0, ..progress };
            let retries_done = progress.invocations - 1;
            if retries_done >= policy.max_retries {
                return Decision::Done { condition: Condition::RetriesExhausted, progress };
            }
            let at_ms = now_ms.saturating_add(retry_delay_ms(policy, retries_done + 1));
            later(policy, progress, at_ms)
        }
        Attempt::Throttled => {
            let progress = Progress { throttles: progress.throttles.saturating_add(1), ..progress };
            let at_ms = now_ms.saturating_add(throttle_delay_ms(policy, progress.throttles));
            later(policy, progress, at_ms)
        }
    }
}

/// A retry at `at_ms`, unless the event is too old by then.
fn later(policy: &Policy, progress: Progress, at_ms: u64) -> Decision {
    if too_old(policy, &progress, at_ms) {
        Decision::Done { condition: Condition::EventAgeExceeded, progress }
    } else {
        Decision::Retry { at_ms, progress }
    }
}

/// The right to work on one event until `expires_at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease<Id> {
    pub id: Id,
    pub token: u64,
    pub expires_at_ms: u64,
}

/// A lease that is no longer its event's current one (it expired and the
/// event was taken again, or the event is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleLease;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Waiting { ready_at_ms: u64 },
    Leased { token: u64, expires_at_ms: u64 },
}

/// One group's (account's) events: waiting, and leased.
#[derive(Debug)]
struct Queue<Id> {
    /// (ready_at, id) of every waiting event.
    waiting: BTreeSet<(u64, Id)>,
    /// (expires_at, id) of every leased event.
    leased: BTreeSet<(u64, Id)>,
}

impl<Id: Copy + Ord> Queue<Id> {
    fn new() -> Self {
        Queue { waiting: BTreeSet::new(), leased: BTreeSet::new() }
    }

    /// The event this group would hand out at `now_ms`: its waiting event
    /// ready longest (only while it holds fewer than `share` leases), or its
    /// lease that ran out first (taking that one again holds no more leases).
    /// Earlier first, then the smallest id; `true` for a lease.
    fn candidate(&self, now_ms: u64, share: usize) -> Option<(u64, Id, bool)> {
        let waiting = self.waiting.first().filter(|&&(t, _)| t <= now_ms && self.leased.len() < share);
        let expired = self.leased.first().filter(|&&(t, _)| t <= now_ms);
        match (waiting, expired) {
            (Some(&(wt, wid)), Some(&(et, eid))) if (et, eid) < (wt, wid) => Some((et, eid, true)),
            (Some(&(t, id)), _) => Some((t, id, false)),
            (None, Some(&(t, id))) => Some((t, id, true)),
            (None, None) => None,
        }
    }

    /// When this group next has something to hand out without a lease of it
    /// being given back: its first waiting event (while under `share`), or its
    /// first lease running out.
    fn next_ready_ms(&self, share: usize) -> Option<u64> {
        let waiting = self.waiting.first().filter(|_| self.leased.len() < share).map(|&(t, _)| t);
        let leased = self.leased.first().map(|&(t, _)| t);
        match (waiting, leased) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.leased.is_empty()
    }
}

/// The events waiting to run and the ones leased to pollers, in groups
/// (accounts) that are served fairly.
///
/// # Fairness
///
/// - A group holds at most `share` leases at once: its further ready events
///   wait until one of its leases is given back (settled or rescheduled), or
///   runs out. Other groups are not limited by it, so the caller may run
///   every lease it gets at once (one task each): a group's events never wait
///   for another group's.
/// - Among the groups with something ready, [`Schedule::take`] serves the one
///   holding the fewest leases, then the event ready longest (then the
///   smallest id): a group with nothing running goes before any group that
///   has something running, however old that group's events are.
///
/// A take looks at each group with events once: O(groups · log events).
#[derive(Debug)]
pub struct Schedule<Id, G> {
    slots: HashMap<Id, (G, Slot)>,
    groups: HashMap<G, Queue<Id>>,
    share: usize,
    next_token: u64,
}

impl<Id: Copy + Ord + Hash, G: Clone + Eq + Hash> Schedule<Id, G> {
    /// An empty schedule whose groups hold at most `share` leases each (at least 1).
    pub fn new(share: usize) -> Self {
        Schedule { slots: HashMap::new(), groups: HashMap::new(), share: share.max(1), next_token: 1 }
    }

    /// Events known (waiting or leased).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Leases `group` holds now (current ones, run out or not).
    pub fn leased(&self, group: &G) -> usize {
        self.groups.get(group).map_or(0, |q| q.leased.len())
    }

    /// Adds an event of `group` that may run from `ready_at_ms`; an id
    /// already known is left as it is (returns false).
    pub fn add(&mut self, id: Id, group: G, ready_at_ms: u64) -> bool {
        if self.slots.contains_key(&id) {
            return false;
        }
        self.groups.entry(group.clone()).or_insert_with(Queue::new).waiting.insert((ready_at_ms, id));
        self.slots.insert(id, (group, Slot::Waiting { ready_at_ms }));
        true
    }

    /// The next event to run, leased until `now_ms + lease_ms`: from the
    /// group with something ready that holds the fewest leases, the waiting
    /// event ready longest or the lease that ran out first (see the type's
    /// docs); none if nothing may be handed out now. A lease that ran out
    /// stays valid until its event is taken again.
    pub fn take(&mut self, now_ms: u64, lease_ms: u64) -> Option<Lease<Id>> {
        let share = self.share;
        let (_, ready_at, id, was_leased) = self
            .groups
            .values()
            .filter_map(|q| q.candidate(now_ms, share).map(|(t, id, leased)| (q.leased.len(), t, id, leased)))
            .min_by_key(|&(held, t, id, _)| (held, t, id))?;
        let token = self.next_token;
        self.next_token += 1;
        let expires_at_ms = now_ms.saturating_add(lease_ms.max(1));
        let (group, slot) = self.slots.get_mut(&id).expect("queued events are known");
        *slot = Slot::Leased { token, expires_at_ms };
        let queue = self.groups.get_mut(group).expect("a known event's group has a queue");
        if was_leased {
            queue.leased.remove(&(ready_at, id));
        } else {
            queue.waiting.remove(&(ready_at, id));
        }
        queue.leased.insert((expires_at_ms, id));
        Some(Lease { id, token, expires_at_ms })
    }

    /// When the next event may be handed out (a waiting one of a group under
    /// its share, or a lease running out) if no lease is given back meanwhile.
    pub fn next_ready_ms(&self) -> Option<u64> {
        self.groups.values().filter_map(|q| q.next_ready_ms(self.share)).min()
    }

    /// The current lease's group and expiry.
    fn check(&self, lease: &Lease<Id>) -> Result<(G, u64), StaleLease> {
        match self.slots.get(&lease.id) {
            Some((group, Slot::Leased { token, expires_at_ms })) if *token == lease.token => Ok((group.clone(), *expires_at_ms)),
            _ => Err(StaleLease),
        }
    }

    /// Gives a leased event back, to run from `ready_at_ms`.
    pub fn reschedule(&mut self, lease: &Lease<Id>, ready_at_ms: u64) -> Result<(), StaleLease> {
        let (group, expires_at) = self.check(lease)?;
        let queue = self.groups.get_mut(&group).expect("a known event's group has a queue");
        queue.leased.remove(&(expires_at, lease.id));
        queue.waiting.insert((ready_at_ms, lease.id));
        self.slots.insert(lease.id, (group, Slot::Waiting { ready_at_ms }));
        Ok(())
    }

    /// Removes a leased event for good (its outcome is recorded).
    pub fn settle(&mut self, lease: &Lease<Id>) -> Result<(), StaleLease> {
        let (group, expires_at) = self.check(lease)?;
        let queue = self.groups.get_mut(&group).expect("a known event's group has a queue");
        queue.leased.remove(&(expires_at, lease.id));
        if queue.is_empty() {
            self.groups.remove(&group);
        }
        self.slots.remove(&lease.id);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
