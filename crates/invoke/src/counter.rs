//! The concurrency counter: the region-wide seam under [`Admission`]. A
//! [`Counter`] says whether an invocation of `(account, function)` may run
//! now (a [`Slot`], or the throttle's [`Reason`]), takes the slot back, and
//! keeps the reservations (`PutFunctionConcurrency`) the answers depend on.
//! [`LocalCounter`] is the embedded implementation: the books of
//! `ignis_counting` behind one mutex of its own.
//!
//! # Contract
//!
//! - Every method but [`Counter::acquire`] answers without waiting, from
//!   memory; `acquire` waits only when a distributed counter has to lease a
//!   block (the local counter never waits).
//! - A [`Slot`] is granted by [`Counter::acquire`] and given back exactly once,
//!   by [`Counter::release`], which consumes it (a slot is neither `Clone`
//!   nor `Copy`). [`Admitted`](crate::Admitted) is the one holder of slots on
//!   the invoke path and releases when dropped.
//! - Admission never breaks Lambda's bounds (the account's limit, each
//!   reservation, the unreserved pool): the rules and invariants K1–K3 of
//!   `ignis_counting` hold for the whole region, whichever implementation
//!   counts.
//! - Reservations are configuration: [`Counter::set_reservation`] refuses one
//!   that would leave the unreserved pool below the account's minimum, and
//!   moves the function's units in flight between the pools, as the pure
//!   books do.
//! - The scaling rate is not part of the counter: it stays in [`Admission`],
//!   one per front end (each front end limits the sandboxes it starts itself).
//!
//! # A distributed counter
//!
//! Counting must not cost a consensus round per invoke. A cluster's front end
//! counts with `ignis_etcd::EtcdCounter`: blocks of units leased from etcd
//! under the front end's etcd lease (gone with it when the front end dies),
//! each unit taken and given back locally (`Slot::Leased`, naming the lease);
//! only a front end that holds no unit to spare asks etcd for a block, with
//! the rule of `ignis_counting::room` over every front end's holdings. So it
//! implements this trait as it is; [`Admission`] and its callers only await
//! `acquire`.
//!
//! [`Admission`]: crate::Admission
//! [`Admission::admit`]: crate::Admission::admit

use std::sync::{Mutex, MutexGuard};

use crate::BoxFuture;

use ignis_counting::{LeaseId, Limits, Reason, ReservationError};

/// A region's concurrency counter (see the module docs for the contract).
pub trait Counter: Send + Sync {
    /// One unit of concurrency for an invocation of `function` of `account`,
    /// or why it is throttled. The only method that may wait: a counter over
    /// leased blocks asks for a block when it holds none with room (the local
    /// counter answers at once).
    fn acquire<'a>(&'a self, account: &'a str, function: &'a str) -> BoxFuture<'a, Result<Slot, Reason>>;

    /// Gives back a unit [`Counter::acquire`] of this counter granted.
    fn release(&self, slot: Slot);

    /// `PutFunctionConcurrency`: `reserved` units for `function` alone, or the
    /// refusal. Returns the previous reservation.
    fn set_reservation(&self, account: &str, function: &str, reserved: u32) -> Result<Option<u32>, ReservationError>;

    /// `DeleteFunctionConcurrency` (and what a deleted function needs): the
    /// function goes back to the unreserved pool. Returns its reservation.
    fn delete_reservation(&self, account: &str, function: &str) -> Option<u32>;

    /// `GetAccountSettings`' `UnreservedConcurrentExecutions`: the account's
    /// limit less every reservation.
    fn unreserved_capacity(&self, account: &str) -> u32;

    /// `GetAccountSettings`' `ConcurrentExecutions`: the account's limit.
    fn concurrency_limit(&self, account: &str) -> u32;

    /// Puts `function`'s reservation back to `reservation`, as it was before
    /// a change whose store write failed.
    fn restore_reservation(&self, account: &str, function: &str, reservation: Option<u32>) {
        match reservation {
            Some(n) => {
                let _ = self.set_reservation(account, function, n);
            }
            None => {
                self.delete_reservation(account, function);
            }
        }
    }
}

/// One unit of concurrency a [`Counter`] granted; [`Counter::release`]
/// consumes it, so it is given back at most once.
#[must_use = "a slot that is not released is lost"]
#[derive(Debug, PartialEq, Eq)]
pub enum Slot {
    /// A unit of books this process keeps ([`LocalCounter`]).
    Counted(ignis_counting::Slot<String, String>),
    /// A unit counted locally against `lease`, a block leased from a shared counter.
    Leased { lease: LeaseId, account: String, function: String },
}

impl Slot {
    pub fn account(&self) -> &str {
        match self {
            Slot::Counted(slot) => slot.account(),
            Slot::Leased { account, .. } => account,
        }
    }

    pub fn function(&self) -> &str {
        match self {
            Slot::Counted(slot) => slot.function(),
            Slot::Leased { function, .. } => function,
        }
    }
}

/// The embedded counter: every account's books in this process, keyed by
/// account id and function name. The mutex is held for one call into the
/// pure books, never across an await, never with another lock of this crate.
pub struct LocalCounter {
    books: Mutex<ignis_counting::Counter<String, String>>,
}

impl LocalCounter {
    /// Every account starts with `limits`.
    ///
    /// # Panics
    /// If `limits.min_unreserved > limits.concurrency`.
    pub fn new(limits: Limits) -> LocalCounter {
        LocalCounter { books: Mutex::new(ignis_counting::Counter::new(limits, ignis_counting::DEFAULT_LEASE_TTL_MS)) }
    }

    fn books(&self) -> MutexGuard<'_, ignis_counting::Counter<String, String>> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Counter for LocalCounter {
    fn acquire<'a>(&'a self, account: &'a str, function: &'a str) -> BoxFuture<'a, Result<Slot, Reason>> {
        let slot = self.books().acquire(&account.to_string(), &function.to_string()).map(Slot::Counted);
        Box::pin(std::future::ready(slot))
    }

    /// # Panics
    /// If the slot is not one of this counter's (a leased slot, or a unit it does not hold).
    fn release(&self, slot: Slot) {
        match slot {
            Slot::Counted(slot) => self.books().release(slot),
            Slot::Leased { lease, .. } => panic!("lease {} is not a block of the local counter", lease.0),
        }
    }

    fn set_reservation(&self, account: &str, function: &str, reserved: u32) -> Result<Option<u32>, ReservationError> {
        self.books().set_reservation(&account.to_string(), &function.to_string(), reserved)
    }

    fn delete_reservation(&self, account: &str, function: &str) -> Option<u32> {
        self.books().delete_reservation(&account.to_string(), &function.to_string())
    }

    fn unreserved_capacity(&self, account: &str) -> u32 {
        self.books().unreserved_capacity(&account.to_string())
    }

    fn concurrency_limit(&self, account: &str) -> u32 {
        self.books().limits(&account.to_string()).concurrency
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use ignis_counting::{Limits, Reason, ReservationError};

    use super::{Counter, LocalCounter, Slot};
    use crate::BoxFuture;

    /// What the local counter answers, which it does at once.
    fn now<T>(answer: BoxFuture<'_, T>) -> T {
        answer.now_or_never().expect("the local counter answers at once")
    }

    const A: &str = "111111111111";
    const B: &str = "222222222222";

    fn counter(concurrency: u32, min_unreserved: u32) -> Box<dyn Counter> {
        Box::new(LocalCounter::new(Limits { concurrency, min_unreserved }))
    }

    /// Takes `n` slots of `function`, all granted.
    fn take(counter: &dyn Counter, account: &str, function: &str, n: usize) -> Vec<Slot> {
        (0..n)
            .map(|i| now(counter.acquire(account, function)).unwrap_or_else(|r| panic!("slot {i} of {function}: {r}")))
            .collect()
    }

    #[test]
    fn the_account_limit_throttles_and_a_release_makes_room() {
        let c = counter(3, 0);
        let mut held = take(&*c, A, "f", 2);
        held.extend(take(&*c, A, "g", 1));
        assert_eq!(now(c.acquire(A, "f")), Err(Reason::ConcurrentInvocationLimitExceeded));
        assert_eq!(now(c.acquire(A, "h")), Err(Reason::ConcurrentInvocationLimitExceeded));
        // Another account has its own limit.
        let other = take(&*c, B, "f", 3);
        let slot = held.pop().expect("three held");
        assert_eq!((slot.account(), slot.function()), (A, "g"));
        c.release(slot);
        held.extend(take(&*c, A, "f", 1));
        assert_eq!(now(c.acquire(A, "f")), Err(Reason::ConcurrentInvocationLimitExceeded));
        for slot in held.into_iter().chain(other) {
            c.release(slot);
        }
        take(&*c, A, "f", 3);
    }

    #[test]
    fn a_reservation_is_the_functions_alone() {
        let c = counter(10, 2);
        assert_eq!(c.unreserved_capacity(A), 10);
        assert_eq!(c.set_reservation(A, "f", 3), Ok(None));
        assert_eq!(c.unreserved_capacity(A), 7);
        let f = take(&*c, A, "f", 3);
        assert_eq!(now(c.acquire(A, "f")), Err(Reason::ReservedFunctionConcurrentInvocationLimitExceeded));
        // The unreserved pool is the rest: 7.
        let g = take(&*c, A, "g", 7);
        assert_eq!(now(c.acquire(A, "g")), Err(Reason::ConcurrentInvocationLimitExceeded));
        for slot in f.into_iter().chain(g) {
            c.release(slot);
        }
        // A reservation of 0 throttles the function entirely.
        assert_eq!(c.set_reservation(A, "f", 0), Ok(Some(3)));
        assert_eq!(now(c.acquire(A, "f")), Err(Reason::ReservedFunctionConcurrentInvocationLimitExceeded));
    }

    #[test]
    fn a_reservation_must_leave_the_minimum_unreserved() {
        let c = counter(10, 2);
        assert_eq!(c.set_reservation(A, "f", 5), Ok(None));
        assert_eq!(c.set_reservation(A, "g", 4), Err(ReservationError::BelowMinimumUnreserved { minimum: 2 }));
        assert_eq!(c.set_reservation(A, "g", 3), Ok(None));
        assert_eq!(c.unreserved_capacity(A), 2);
        // Raising one reservation counts its old value out.
        assert_eq!(c.set_reservation(A, "f", 6), Err(ReservationError::BelowMinimumUnreserved { minimum: 2 }));
        assert_eq!(c.set_reservation(A, "f", 5), Ok(Some(5)));
    }

    #[test]
    fn deleting_and_restoring_a_reservation() {
        let c = counter(10, 0);
        assert_eq!(c.delete_reservation(A, "f"), None);
        assert_eq!(c.set_reservation(A, "f", 4), Ok(None));
        // Units in flight move between the pools with the reservation.
        let held = take(&*c, A, "f", 4);
        assert_eq!(c.delete_reservation(A, "f"), Some(4));
        assert_eq!(c.unreserved_capacity(A), 10);
        let g = take(&*c, A, "g", 6);
        assert_eq!(now(c.acquire(A, "f")).err(), Some(Reason::ConcurrentInvocationLimitExceeded));
        // A store write failed: the reservation comes back as it was.
        c.restore_reservation(A, "f", Some(4));
        assert_eq!(c.unreserved_capacity(A), 6);
        assert_eq!(now(c.acquire(A, "f")).err(), Some(Reason::ReservedFunctionConcurrentInvocationLimitExceeded));
        c.restore_reservation(A, "f", None);
        assert_eq!(c.unreserved_capacity(A), 10);
        assert_eq!(now(c.acquire(A, "h")).err(), Some(Reason::ConcurrentInvocationLimitExceeded));
        for slot in held.into_iter().chain(g) {
            c.release(slot);
        }
        take(&*c, A, "h", 10);
    }

    #[test]
    #[should_panic(expected = "is not a block of the local counter")]
    fn a_leased_slot_is_not_the_local_counters() {
        let c = counter(10, 0);
        c.release(Slot::Leased { lease: ignis_counting::LeaseId(1), account: A.into(), function: "f".into() });
    }
}
