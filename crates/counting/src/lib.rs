//! Concurrency counting: may this invocation run now, and may this function
//! start another sandbox now, by AWS Lambda's rules.
//!
//! Pure decision logic: no IO, no clocks (time is passed in as milliseconds),
//! no threads, nothing beyond `std`. The caller owns one [`Counter`] (and one
//! [`ScaleRate`]) behind its own lock and does what their answers say: run or
//! throttle with the returned [`Reason`], start a sandbox or not.
//!
//! # The rules (Lambda's)
//!
//! - An account has a concurrency limit ([`Limits::concurrency`], default
//!   1000) and a minimum unreserved concurrency ([`Limits::min_unreserved`],
//!   default 100).
//! - A function may have a *reservation* (`PutFunctionConcurrency`,
//!   `ReservedConcurrentExecutions`): that many units are its alone, and it
//!   never runs more than that many at once. A reservation of 0 throttles the
//!   function entirely.
//! - The *unreserved pool* (`limit − Σ reservations`, Lambda's
//!   `UnreservedConcurrentExecutions`) is shared by every function of the
//!   account without a reservation.
//! - A reservation is refused if it would leave the unreserved pool below the
//!   minimum ([`ReservationError`], Lambda's `InvalidParameterValueException`
//!   message).
//! - A throttled invocation gets `TooManyRequestsException` with a
//!   [`Reason`]: `ReservedFunctionConcurrentInvocationLimitExceeded` when the
//!   function's reservation is used up, `ConcurrentInvocationLimitExceeded`
//!   when the unreserved pool (or the account) is.
//! - Scaling: at most N new sandboxes per function in any window of 10 s
//!   (default 1000): [`ScaleRate::may_start_sandbox`], a sliding window that is
//!   exact (no window of `window_ms` ever holds more than N starts).
//!
//! # Units, holders and leases
//!
//! Every unit of concurrency in use is charged to one `(account, function)`
//! and is held either
//!
//! - as a [`Slot`]: one unit taken by [`Counter::acquire`] in this process and
//!   given back by [`Counter::release`], which consumes the slot (it is neither
//!   `Clone` nor `Copy`, so it cannot be released twice); or
//! - as part of a [`Lease`]: a block of units granted by [`Counter::lease`] to a
//!   *holder* (e.g. a front end that counts locally against its blocks). A
//!   holder joins ([`Counter::join`]) and must [`renew`](Counter::renew) before
//!   its expiry; returns unused units with [`give_back`](Counter::give_back).
//!   [`Counter::expire`] reaps every holder that stopped renewing and returns
//!   all its blocks to the pools by itself.
//!
//! ```text
//!  holder:   join ──► Alive ── renew (expiry = now + ttl) ──┐
//!                      │  ▲ ────────────────────────────────┘
//!                      │  └─ lease / give_back (alive only)
//!                      ├── expire(now ≥ expiry) ──► Reaped (final)
//!                      └── leave ─────────────────► Reaped (final)
//!
//!  lease:    lease ──► Held(size ≥ 1) ── give_back(n) ──► Held(size − n)
//!                         │                                  │ size = 0
//!                         ├── holder reaped ─────────────────┴──► Gone (units back in the pools)
//! ```
//!
//! Holder ids are never reused: once reaped, a holder stays unknown, so a
//! front end that was presumed dead learns it ([`UnknownHolder`] from renew or
//! lease, [`UnknownLease`] from give_back) and must drop its blocks and join
//! again; it can never keep admitting on blocks that were given to others. A
//! holder is alive until `expire` reaps it: a late renewal that comes before
//! the reaping keeps everything.
//!
//! # Where a unit counts
//!
//! A function's units count against its reservation while it has one and
//! against the unreserved pool while it has none — the *current* reservation,
//! so setting or deleting a reservation moves the function's units in flight
//! between the pools. Every unit also counts against the account's limit.
//!
//! # Invariants
//!
//! Bookkeeping, always (per account):
//!
//! - **B1** `in_use(account) = Σ in_use(function)` over its functions.
//! - **B2** `unreserved_in_use(account) = Σ in_use(f)` over its functions
//!   without a reservation; `reserved(account) = Σ reservations`.
//! - **B3** `in_use(function) = its slots + Σ sizes of its leases`.
//! - **B4** every lease belongs to a live holder and has size ≥ 1; after
//!   `expire` (or `leave`) nothing is held by a reaped holder: none of its
//!   leases exist and none of its units are counted.
//! - **B5** a function's entry exists only while it has a reservation or units
//!   in use (the books hold nothing for idle functions).
//!
//! Configuration, always:
//!
//! - **C1** `min_unreserved ≤ concurrency`, and
//!   `Σ reservations + min_unreserved ≤ concurrency`: so every reservation is
//!   within `0..=limit` and the unreserved pool is never below its minimum.
//!   [`Counter::set_reservation`] and [`Counter::set_limits`] refuse anything
//!   that would break it.
//!
//! Capacity (what admission guarantees):
//!
//! - **K1** `in_use(account) ≤ limit`
//! - **K2** `in_use(f) ≤ reservation(f)` for every reserved function
//! - **K3** `unreserved_in_use(account) ≤ limit − Σ reservations`
//!
//! Admission ([`Counter::acquire`], [`Counter::lease`]) never breaks K1–K3: it
//! grants a unit exactly when every bound that applies has room (K2 and K1 for
//! a reserved function, K3 and K1 otherwise), so a pool within its bound stays
//! within it. Only a configuration change can push use above a bound — Lambda
//! lets invocations in flight finish when a reservation or limit is lowered,
//! or when a reservation takes units away from the unreserved pool — and then
//! that pool admits nothing and its use only falls until it is back within.
//! When every bound holds (the settled state), K1 never throttles a reserved
//! function that is below its reservation: its units really are its own.
//!
//! Throttle reasons: a reserved function at (or above) its reservation gets
//! `ReservedFunctionConcurrentInvocationLimitExceeded`; anything else refused
//! gets `ConcurrentInvocationLimitExceeded`.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Lambda's default account concurrency limit.
pub const DEFAULT_CONCURRENCY_LIMIT: u32 = 1000;
/// Lambda's default minimum unreserved concurrency.
pub const DEFAULT_MIN_UNRESERVED: u32 = 100;
/// Lambda's default scaling rate: new sandboxes per function per window.
pub const DEFAULT_SCALE_RATE: u32 = 1000;
/// Lambda's scaling window.
pub const SCALE_WINDOW_MS: u64 = 10_000;
/// How long a holder's leases live without a renewal, by default.
pub const DEFAULT_LEASE_TTL_MS: u64 = 10_000;

/// An account's concurrency settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Units the account may use at once.
    pub concurrency: u32,
    /// Units reservations must always leave to the unreserved pool.
    pub min_unreserved: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { concurrency: DEFAULT_CONCURRENCY_LIMIT, min_unreserved: DEFAULT_MIN_UNRESERVED }
    }
}

/// Why an invocation is throttled (`TooManyRequestsException`'s `Reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The function has a reservation and uses all of it (or it is 0).
    ReservedFunctionConcurrentInvocationLimitExceeded,
    /// The unreserved pool, or the account's limit, is used up.
    ConcurrentInvocationLimitExceeded,
}

impl Reason {
    /// The name Lambda puts in the `Reason` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ReservedFunctionConcurrentInvocationLimitExceeded => {
                "ReservedFunctionConcurrentInvocationLimitExceeded"
            }
            Reason::ConcurrentInvocationLimitExceeded => "ConcurrentInvocationLimitExceeded",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reservation [`Counter::set_reservation`] refused (Lambda answers
/// `InvalidParameterValueException` with this message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationError {
    /// It would leave the unreserved pool below the account's minimum.
    BelowMinimumUnreserved { minimum: u32 },
}

impl std::fmt::Display for ReservationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReservationError::BelowMinimumUnreserved { minimum } => write!(
                f,
                "Specified ReservedConcurrentExecutions for function decreases account's \
                 UnreservedConcurrentExecution below its minimum value of [{minimum}]."
            ),
        }
    }
}

impl std::error::Error for ReservationError {}

/// Limits [`Counter::set_limits`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitsError {
    /// `min_unreserved` is above `concurrency`.
    MinimumAboveLimit { concurrency: u32, min_unreserved: u32 },
    /// The account's reservations would not leave `min_unreserved`: lower them first.
    ReservationsDoNotFit { reserved: u32, concurrency: u32, min_unreserved: u32 },
}

impl std::fmt::Display for LimitsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitsError::MinimumAboveLimit { concurrency, min_unreserved } => write!(
                f,
                "minimum unreserved concurrency {min_unreserved} is above the concurrency limit {concurrency}"
            ),
            LimitsError::ReservationsDoNotFit { reserved, concurrency, min_unreserved } => write!(
                f,
                "the account reserves {reserved}, which leaves less than {min_unreserved} unreserved \
                 of a concurrency limit of {concurrency}"
            ),
        }
    }
}

impl std::error::Error for LimitsError {}

/// One unit of concurrency taken by [`Counter::acquire`]. Give it back with
/// [`Counter::release`], which consumes it: a slot cannot be released twice.
/// A slot that is dropped instead is lost until the counter is; anything that
/// can be lost without this process ending should hold a [`Lease`] instead.
#[must_use = "a slot that is not released is lost"]
#[derive(Debug, PartialEq, Eq)]
pub struct Slot<A, F> {
    account: A,
    function: F,
}

impl<A, F> Slot<A, F> {
    pub fn account(&self) -> &A {
        &self.account
    }

    pub fn function(&self) -> &F {
        &self.function
    }
}

/// Something that holds leases (e.g. one front end). Issued by
/// [`Counter::join`], never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HolderId(pub u64);

/// One lease, for its whole life. Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub u64);

/// A block of `size` units of one function, held by `holder`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease<A, F> {
    pub id: LeaseId,
    pub holder: HolderId,
    pub account: A,
    pub function: F,
    pub size: u32,
}

/// The holder was reaped (or never joined): drop every block and join again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownHolder(pub HolderId);

impl std::fmt::Display for UnknownHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "holder {} is not known (its leases expired)", self.0.0)
    }
}

impl std::error::Error for UnknownHolder {}

/// The lease is gone: fully given back, or reaped with its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownLease(pub LeaseId);

impl std::fmt::Display for UnknownLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lease {} is not known", self.0.0)
    }
}

impl std::error::Error for UnknownLease {}

/// Why [`Counter::lease`] granted nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseError {
    Throttled(Reason),
    UnknownHolder(HolderId),
}

impl std::fmt::Display for LeaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseError::Throttled(reason) => write!(f, "throttled: {reason}"),
            LeaseError::UnknownHolder(holder) => UnknownHolder(*holder).fmt(f),
        }
    }
}

impl std::error::Error for LeaseError {}

/// How many more units `function` of an account with `limits` may take now (≥ 1), or why none, given each
/// function's reservation (`reservations`) and units in use (`in_use`; functions absent use none): the rule
/// [`Counter::acquire`] and [`Counter::lease`] apply, for books kept elsewhere (a cluster's, whose blocks are
/// read from a shared store). Reservations are taken as given (C1 is the setter's to keep).
pub fn room<F: Clone + Eq + Hash>(limits: Limits, reservations: &HashMap<F, u32>, in_use: &HashMap<F, u32>, function: &F) -> Result<u32, Reason> {
    let mut account = Account::new(limits);
    for (f, &reserved) in reservations {
        account.reserved = account.reserved.saturating_add(reserved);
        account.function_mut(f).reservation = Some(reserved);
    }
    for (f, &units) in in_use {
        account.charge(f, units);
    }
    account.room(function)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Function {
    reservation: Option<u32>,
    /// Slots plus leased units (B3).
    in_use: u32,
}

#[derive(Debug)]
struct Account<F> {
    limits: Limits,
    /// Σ reservations (B2).
    reserved: u32,
    /// Units of functions without a reservation (B2).
    unreserved_in_use: u32,
    /// Every unit of the account (B1).
    in_use: u32,
    functions: HashMap<F, Function>,
}

impl<F: Clone + Eq + Hash> Account<F> {
    fn new(limits: Limits) -> Self {
        Account { limits, reserved: 0, unreserved_in_use: 0, in_use: 0, functions: HashMap::new() }
    }

    /// `limit − Σ reservations`; never saturates while C1 holds.
    fn unreserved_capacity(&self) -> u32 {
        self.limits.concurrency.saturating_sub(self.reserved)
    }

    /// How many more units `function` may take now (≥ 1), or why none.
    fn room(&self, function: &F) -> Result<u32, Reason> {
        let account_room = self.limits.concurrency.saturating_sub(self.in_use);
        match self.functions.get(function) {
            Some(Function { reservation: Some(reservation), in_use }) => {
                let own = reservation.saturating_sub(*in_use);
                if own == 0 {
                    return Err(Reason::ReservedFunctionConcurrentInvocationLimitExceeded);
                }
                match own.min(account_room) {
                    0 => Err(Reason::ConcurrentInvocationLimitExceeded),
                    room => Ok(room),
                }
            }
            _ => {
                let pool = self.unreserved_capacity().saturating_sub(self.unreserved_in_use);
                match pool.min(account_room) {
                    0 => Err(Reason::ConcurrentInvocationLimitExceeded),
                    room => Ok(room),
                }
            }
        }
    }

    /// The entry for `function`, made if missing.
    fn function_mut(&mut self, function: &F) -> &mut Function {
        if !self.functions.contains_key(function) {
            self.functions.insert(function.clone(), Function { reservation: None, in_use: 0 });
        }
        self.functions.get_mut(function).expect("just made")
    }

    fn charge(&mut self, function: &F, n: u32) {
        let unreserved = match self.functions.get_mut(function) {
            Some(entry) => {
                entry.in_use += n;
                entry.reservation.is_none()
            }
            None => {
                self.functions.insert(function.clone(), Function { reservation: None, in_use: n });
                true
            }
        };
        self.in_use += n;
        if unreserved {
            self.unreserved_in_use += n;
        }
    }

    fn discharge(&mut self, function: &F, n: u32) {
        let entry = self.functions.get_mut(function).expect("units in use have a function entry");
        entry.in_use = entry.in_use.checked_sub(n).expect("a function gives back no more than it holds");
        let Function { reservation, in_use } = *entry;
        self.in_use -= n;
        if reservation.is_none() {
            self.unreserved_in_use -= n;
            if in_use == 0 {
                self.functions.remove(function);
            }
        }
    }
}

#[derive(Debug)]
struct LeaseEntry<A, F> {
    holder: HolderId,
    account: A,
    function: F,
    size: u32,
}

#[derive(Debug)]
struct Holder {
    expires_at_ms: u64,
    leases: Vec<LeaseId>,
}

/// The books: every account's limits, reservations and units in use, and the
/// holders of leased blocks. See the module docs for the rules and invariants.
#[derive(Debug)]
pub struct Counter<A, F> {
    defaults: Limits,
    lease_ttl_ms: u64,
    accounts: HashMap<A, Account<F>>,
    leases: HashMap<LeaseId, LeaseEntry<A, F>>,
    holders: HashMap<HolderId, Holder>,
    next_lease: u64,
    next_holder: u64,
}

impl<A: Clone + Eq + Hash, F: Clone + Eq + Hash> Default for Counter<A, F> {
    fn default() -> Self {
        Self::new(Limits::default(), DEFAULT_LEASE_TTL_MS)
    }
}

impl<A: Clone + Eq + Hash, F: Clone + Eq + Hash> Counter<A, F> {
    /// A counter whose accounts start with `defaults` (until [`set_limits`]
    /// says otherwise) and whose holders' leases live `lease_ttl_ms` after
    /// their last renewal.
    ///
    /// # Panics
    /// If `defaults.min_unreserved > defaults.concurrency` (C1).
    ///
    /// [`set_limits`]: Counter::set_limits
    pub fn new(defaults: Limits, lease_ttl_ms: u64) -> Self {
        assert!(defaults.min_unreserved <= defaults.concurrency, "minimum unreserved above the limit: {defaults:?}");
        Counter {
            defaults,
            lease_ttl_ms,
            accounts: HashMap::new(),
            leases: HashMap::new(),
            holders: HashMap::new(),
            next_lease: 1,
            next_holder: 1,
        }
    }

    fn account_mut(&mut self, account: &A) -> &mut Account<F> {
        if !self.accounts.contains_key(account) {
            self.accounts.insert(account.clone(), Account::new(self.defaults));
        }
        self.accounts.get_mut(account).expect("just made")
    }

    // ---- admission -------------------------------------------------------

    /// One unit for an invocation of `function`, or the reason it is throttled.
    pub fn acquire(&mut self, account: &A, function: &F) -> Result<Slot<A, F>, Reason> {
        self.take(account, function, 1)?;
        Ok(Slot { account: account.clone(), function: function.clone() })
    }

    /// Gives a slot back.
    ///
    /// # Panics
    /// If the slot came from another counter and this one holds no such unit.
    pub fn release(&mut self, slot: Slot<A, F>) {
        let account = self.accounts.get_mut(&slot.account).expect("a slot's account is known");
        account.discharge(&slot.function, 1);
    }

    /// Up to `want` units (at least 1), as many as every applicable bound has room for.
    fn take(&mut self, account: &A, function: &F, want: u32) -> Result<u32, Reason> {
        // Room first: a throttled call on an unknown account or function leaves no entry behind.
        if let Some(entry) = self.accounts.get_mut(account) {
            let n = entry.room(function)?.min(want.max(1));
            entry.charge(function, n);
            return Ok(n);
        }
        let n = Account::<F>::new(self.defaults).room(function)?.min(want.max(1));
        self.account_mut(account).charge(function, n);
        Ok(n)
    }

    // ---- configuration ---------------------------------------------------

    /// `PutFunctionConcurrency`: reserves `reserved` units for `function`.
    /// Returns the previous reservation. Units in flight stay counted and
    /// now count against the reservation.
    pub fn set_reservation(&mut self, account: &A, function: &F, reserved: u32) -> Result<Option<u32>, ReservationError> {
        let defaults = self.defaults;
        let (limits, sum, old) = match self.accounts.get(account) {
            Some(entry) => (entry.limits, entry.reserved, entry.functions.get(function).and_then(|f| f.reservation)),
            None => (defaults, 0, None),
        };
        let new_sum = u64::from(sum) - u64::from(old.unwrap_or(0)) + u64::from(reserved);
        if new_sum + u64::from(limits.min_unreserved) > u64::from(limits.concurrency) {
            return Err(ReservationError::BelowMinimumUnreserved { minimum: limits.min_unreserved });
        }
        let entry = self.account_mut(account);
        let f = entry.function_mut(function);
        f.reservation = Some(reserved);
        let moved = if old.is_none() { f.in_use } else { 0 };
        entry.reserved = new_sum as u32;
        entry.unreserved_in_use -= moved;
        Ok(old)
    }

    /// `DeleteFunctionConcurrency` (and what a deleted function needs):
    /// the function goes back to the unreserved pool, with its units in flight.
    /// Returns the reservation it had.
    pub fn delete_reservation(&mut self, account: &A, function: &F) -> Option<u32> {
        let entry = self.accounts.get_mut(account)?;
        let f = entry.functions.get_mut(function)?;
        let old = f.reservation.take()?;
        let in_use = f.in_use;
        if in_use == 0 {
            entry.functions.remove(function);
        }
        entry.reserved -= old;
        entry.unreserved_in_use += in_use;
        Some(old)
    }

    /// Sets an account's limits. Refused if they break C1 with the account's
    /// reservations. A limit lowered below the units in flight lets them
    /// finish and admits nothing until use is back under it.
    pub fn set_limits(&mut self, account: &A, limits: Limits) -> Result<(), LimitsError> {
        let Limits { concurrency, min_unreserved } = limits;
        if min_unreserved > concurrency {
            return Err(LimitsError::MinimumAboveLimit { concurrency, min_unreserved });
        }
        let reserved = self.accounts.get(account).map_or(0, |a| a.reserved);
        if u64::from(reserved) + u64::from(min_unreserved) > u64::from(concurrency) {
            return Err(LimitsError::ReservationsDoNotFit { reserved, concurrency, min_unreserved });
        }
        self.account_mut(account).limits = limits;
        Ok(())
    }

    // ---- leases ----------------------------------------------------------

    /// A new holder, alive until `now_ms + ttl` unless renewed.
    pub fn join(&mut self, now_ms: u64) -> HolderId {
        let id = HolderId(self.next_holder);
        self.next_holder += 1;
        self.holders.insert(id, Holder { expires_at_ms: now_ms.saturating_add(self.lease_ttl_ms), leases: Vec::new() });
        id
    }

    /// Keeps `holder` and all its leases alive until `now_ms + ttl` (never
    /// shortens). Returns the new expiry.
    pub fn renew(&mut self, holder: HolderId, now_ms: u64) -> Result<u64, UnknownHolder> {
        let entry = self.holders.get_mut(&holder).ok_or(UnknownHolder(holder))?;
        entry.expires_at_ms = entry.expires_at_ms.max(now_ms.saturating_add(self.lease_ttl_ms));
        Ok(entry.expires_at_ms)
    }

    /// A block of up to `want` units (at least 1) of `function` for `holder`:
    /// as many as admission allows, so possibly fewer. Also renews the holder.
    pub fn lease(&mut self, holder: HolderId, account: &A, function: &F, want: u32, now_ms: u64) -> Result<Lease<A, F>, LeaseError> {
        if !self.holders.contains_key(&holder) {
            return Err(LeaseError::UnknownHolder(holder));
        }
        let size = self.take(account, function, want).map_err(LeaseError::Throttled)?;
        let id = LeaseId(self.next_lease);
        self.next_lease += 1;
        self.leases.insert(id, LeaseEntry { holder, account: account.clone(), function: function.clone(), size });
        let entry = self.holders.get_mut(&holder).expect("checked above");
        entry.leases.push(id);
        entry.expires_at_ms = entry.expires_at_ms.max(now_ms.saturating_add(self.lease_ttl_ms));
        Ok(Lease { id, holder, account: account.clone(), function: function.clone(), size })
    }

    /// Returns `n` unused units of a lease (all that is left if `n` is more).
    /// Returns what the lease still holds; at 0 the lease is gone.
    pub fn give_back(&mut self, lease: LeaseId, n: u32) -> Result<u32, UnknownLease> {
        let entry = self.leases.get_mut(&lease).ok_or(UnknownLease(lease))?;
        let n = n.min(entry.size);
        entry.size -= n;
        let left = entry.size;
        let account = self.accounts.get_mut(&entry.account).expect("a lease's account is known");
        account.discharge(&entry.function, n);
        if left == 0 {
            let entry = self.leases.remove(&lease).expect("present");
            let holder = self.holders.get_mut(&entry.holder).expect("a lease's holder is alive (B4)");
            holder.leases.retain(|id| *id != lease);
        }
        Ok(left)
    }

    /// Reaps every holder whose expiry is at or before `now_ms`: their leases
    /// are gone and their units back in the pools. Returns those leases (with
    /// the sizes they had), by id.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Lease<A, F>> {
        let dead: Vec<HolderId> =
            self.holders.iter().filter(|(_, h)| h.expires_at_ms <= now_ms).map(|(id, _)| *id).collect();
        let mut gone = Vec::new();
        for holder in dead {
            gone.extend(self.reap(holder));
        }
        gone.sort_by_key(|lease| lease.id);
        gone
    }

    /// A holder that stops on purpose: returns all its leases at once.
    pub fn leave(&mut self, holder: HolderId) -> Result<Vec<Lease<A, F>>, UnknownHolder> {
        if !self.holders.contains_key(&holder) {
            return Err(UnknownHolder(holder));
        }
        let mut gone = self.reap(holder);
        gone.sort_by_key(|lease| lease.id);
        Ok(gone)
    }

    fn reap(&mut self, holder: HolderId) -> Vec<Lease<A, F>> {
        let Some(entry) = self.holders.remove(&holder) else { return Vec::new() };
        let mut gone = Vec::with_capacity(entry.leases.len());
        for id in entry.leases {
            let lease = self.leases.remove(&id).expect("a holder's leases exist");
            let account = self.accounts.get_mut(&lease.account).expect("a lease's account is known");
            account.discharge(&lease.function, lease.size);
            gone.push(Lease { id, holder, account: lease.account, function: lease.function, size: lease.size });
        }
        gone
    }

    // ---- reading the books ----------------------------------------------

    /// Units `function` has in use (slots and leased).
    pub fn in_use(&self, account: &A, function: &F) -> u32 {
        self.accounts.get(account).and_then(|a| a.functions.get(function)).map_or(0, |f| f.in_use)
    }

    /// Units the account has in use.
    pub fn account_in_use(&self, account: &A) -> u32 {
        self.accounts.get(account).map_or(0, |a| a.in_use)
    }

    /// Units in use by the account's functions without a reservation.
    pub fn unreserved_in_use(&self, account: &A) -> u32 {
        self.accounts.get(account).map_or(0, |a| a.unreserved_in_use)
    }

    /// `GetFunctionConcurrency`.
    pub fn reservation(&self, account: &A, function: &F) -> Option<u32> {
        self.accounts.get(account).and_then(|a| a.functions.get(function)).and_then(|f| f.reservation)
    }

    /// `GetAccountSettings`' `UnreservedConcurrentExecutions`: limit − Σ reservations.
    pub fn unreserved_capacity(&self, account: &A) -> u32 {
        self.accounts.get(account).map_or(self.defaults.concurrency, Account::unreserved_capacity)
    }

    pub fn limits(&self, account: &A) -> Limits {
        self.accounts.get(account).map_or(self.defaults, |a| a.limits)
    }

    /// What a live lease still holds.
    pub fn lease_size(&self, lease: LeaseId) -> Option<u32> {
        self.leases.get(&lease).map(|l| l.size)
    }

    /// When a live holder expires unless renewed.
    pub fn holder_expiry(&self, holder: HolderId) -> Option<u64> {
        self.holders.get(&holder).map(|h| h.expires_at_ms)
    }
}

/// The scaling rate: at most `max_starts` new sandboxes per key (a function)
/// in any window of `window_ms`.
///
/// Exact sliding window: per key, the times of its last `max_starts` starts
/// (a ring, O(1) per check). A start at `now` is allowed iff fewer than
/// `max_starts` starts happened in `(now − window_ms, now]`, i.e. iff the
/// oldest of the last `max_starts` starts is at least `window_ms` old.
/// Invariant: **R1** no half-open window of `window_ms` holds more than
/// `max_starts` allowed starts of one key. Time must not go backwards; if it
/// does, a key's time is held at its latest start (which only refuses more).
#[derive(Debug)]
pub struct ScaleRate<K> {
    max_starts: u32,
    window_ms: u64,
    starts: HashMap<K, VecDeque<u64>>,
}

impl<K: Clone + Eq + Hash> Default for ScaleRate<K> {
    fn default() -> Self {
        Self::new(DEFAULT_SCALE_RATE, SCALE_WINDOW_MS)
    }
}

impl<K: Clone + Eq + Hash> ScaleRate<K> {
    pub fn new(max_starts: u32, window_ms: u64) -> Self {
        ScaleRate { max_starts, window_ms, starts: HashMap::new() }
    }

    /// May `function` start another sandbox at `now_ms`? `true` counts the start.
    pub fn may_start_sandbox(&mut self, function: &K, now_ms: u64) -> bool {
        if self.max_starts == 0 {
            return false;
        }
        let max = self.max_starts as usize;
        if let Some(ring) = self.starts.get_mut(function) {
            let now = now_ms.max(ring.back().copied().unwrap_or(0));
            if ring.len() >= max {
                let oldest = *ring.front().expect("max ≥ 1");
                if now - oldest < self.window_ms {
                    return false;
                }
                ring.pop_front();
            }
            ring.push_back(now);
            return true;
        }
        self.starts.insert(function.clone(), VecDeque::from([now_ms]));
        true
    }

    /// Starts of `function` counted in `(now − window, now]`.
    pub fn starts_in_window(&self, function: &K, now_ms: u64) -> u32 {
        self.starts.get(function).map_or(0, |ring| {
            ring.iter().filter(|&&t| t <= now_ms && now_ms - t < self.window_ms).count() as u32
        })
    }

    /// Forgets keys with no start in the window ending at `now_ms` (they would
    /// be allowed anyway), so memory follows the functions that are scaling.
    pub fn prune(&mut self, now_ms: u64) {
        let window = self.window_ms;
        self.starts.retain(|_, ring| ring.back().is_some_and(|&t| now_ms.saturating_sub(t) < window));
    }

    /// Keys with starts remembered.
    pub fn tracked(&self) -> usize {
        self.starts.len()
    }
}

#[cfg(test)]
mod tests;
