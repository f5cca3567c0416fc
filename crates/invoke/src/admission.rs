//! Concurrency admission on the invoke path: the region's [`Counter`] (an
//! `Arc<dyn Counter>`: [`LocalCounter`] in one process, a counter over
//! leased blocks on many machines) and the per-function [`ScaleRate`] of
//! `ignis-counting`, which stays local: each front end limits the sandboxes
//! it starts itself. The scaling rate's mutex is held only for one call into
//! the pure crate (never across an await, never with another lock of this
//! crate).
//!
//! An admitted invocation holds an [`Admitted`] guard; dropping it gives the
//! slot back to the counter that granted it, so the slot returns however the
//! invocation ends (success, error, timeout, a client that went away, a panic
//! in its task).
//!
//! Reservations (PutFunctionConcurrency) are set here too; the front end
//! stores them with the function and calls these to make them count.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ignis_clock::SharedClock;
use ignis_counting::{Limits, Reason, ScaleRate};

use crate::InvokeError;
use crate::counter::{Counter, LocalCounter, Slot};

/// The counter and the scaling rate.
pub struct Admission {
    counter: Arc<dyn Counter>,
    scale: Mutex<ScaleRate<(String, String)>>,
    clock: SharedClock,
    epoch: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Admission {
    /// Every account gets `limits` (a [`LocalCounter`]); at most
    /// `scale_rate` new sandboxes per function per 10 s (of `clock`'s time).
    pub fn new(limits: Limits, scale_rate: u32, clock: SharedClock) -> Arc<Admission> {
        Admission::over(Arc::new(LocalCounter::new(limits)), scale_rate, clock)
    }

    /// Admission through `counter`, with the scaling rate of [`Admission::new`].
    pub fn over(counter: Arc<dyn Counter>, scale_rate: u32, clock: SharedClock) -> Arc<Admission> {
        let epoch = clock.instant();
        Arc::new(Admission {
            counter,
            scale: Mutex::new(ScaleRate::new(scale_rate, ignis_counting::SCALE_WINDOW_MS)),
            clock,
            epoch,
        })
    }

    /// The counter admission counts with.
    pub fn counter(&self) -> &Arc<dyn Counter> {
        &self.counter
    }

    /// A slot for one invocation of `function`, or the throttle.
    pub async fn admit(&self, account: &str, function: &str) -> Result<Admitted, InvokeError> {
        let slot = self.counter.acquire(account, function).await.map_err(InvokeError::Throttled)?;
        Ok(Admitted { counter: self.counter.clone(), slot: Some(slot) })
    }

    /// May `function` start another sandbox now (the scaling rate)? Counts the start.
    pub fn may_start_sandbox(&self, account: &str, function: &str) -> Result<(), InvokeError> {
        let now = self.clock.instant().saturating_duration_since(self.epoch).as_millis() as u64;
        let key = (account.to_string(), function.to_string());
        let mut scale = lock(&self.scale);
        let allowed = scale.may_start_sandbox(&key, now);
        scale.prune(now);
        if allowed { Ok(()) } else { Err(InvokeError::Throttled(Reason::ConcurrentInvocationLimitExceeded)) }
    }

    /// PutFunctionConcurrency's check and effect. Returns the previous reservation.
    pub fn set_reservation(&self, account: &str, function: &str, reserved: u32) -> Result<Option<u32>, InvokeError> {
        Ok(self.counter.set_reservation(account, function, reserved)?)
    }

    /// The account's concurrency not reserved by any function.
    pub fn unreserved_capacity(&self, account: &str) -> u32 {
        self.counter.unreserved_capacity(account)
    }

    /// The account's concurrency limit.
    pub fn concurrency_limit(&self, account: &str) -> u32 {
        self.counter.concurrency_limit(account)
    }

    /// DeleteFunctionConcurrency, and what a deleted function needs.
    pub fn delete_reservation(&self, account: &str, function: &str) -> Option<u32> {
        self.counter.delete_reservation(account, function)
    }

    /// Puts the counter back to `reservation` (after a store write failed).
    pub fn restore_reservation(&self, account: &str, function: &str, reservation: Option<u32>) {
        self.counter.restore_reservation(account, function, reservation);
    }
}

/// An admitted invocation's slot; given back to its counter when dropped.
pub struct Admitted {
    counter: Arc<dyn Counter>,
    slot: Option<Slot>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.counter.release(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use ignis_clock::{ManualClock, SharedClock};
    use ignis_counting::{Limits, Reason};

    use super::Admission;
    use crate::InvokeError;
    use crate::counter::{Counter, LocalCounter};

    const A: &str = "111111111111";
    const THROTTLED: InvokeError = InvokeError::Throttled(Reason::ConcurrentInvocationLimitExceeded);

    #[tokio::test]
    async fn a_dropped_guard_gives_its_slot_back_to_the_counter() {
        let clock: SharedClock = ManualClock::at_epoch_2026();
        let counter = Arc::new(LocalCounter::new(Limits { concurrency: 2, min_unreserved: 0 }));
        let admission = Admission::over(counter.clone(), 10, clock);
        let first = admission.admit(A, "f").await.expect("room");
        let second = admission.admit(A, "g").await.expect("room");
        assert_eq!(admission.admit(A, "f").await.err(), Some(THROTTLED));
        // The counter is the one admission counts with.
        assert_eq!(counter.acquire(A, "h").await.err(), Some(Reason::ConcurrentInvocationLimitExceeded));
        drop(first);
        let third = admission.admit(A, "h").await.expect("the slot came back");
        drop((second, third));
        assert_eq!(counter.unreserved_capacity(A), 2);
        let _both = (admission.admit(A, "f").await.expect("room"), admission.admit(A, "f").await.expect("room"));
    }

    #[test]
    fn reservations_go_to_the_counter() {
        let clock: SharedClock = ManualClock::at_epoch_2026();
        let admission = Admission::new(Limits { concurrency: 10, min_unreserved: 1 }, 10, clock);
        assert_eq!(admission.set_reservation(A, "f", 4), Ok(None));
        assert_eq!(admission.counter().unreserved_capacity(A), 6);
        assert_eq!(admission.unreserved_capacity(A), 6);
        assert!(admission.set_reservation(A, "g", 6).is_err());
        assert_eq!(admission.delete_reservation(A, "f"), Some(4));
        admission.restore_reservation(A, "f", Some(4));
        assert_eq!(admission.unreserved_capacity(A), 6);
        admission.restore_reservation(A, "f", None);
        assert_eq!(admission.unreserved_capacity(A), 10);
    }

    #[test]
    fn the_scaling_rate_is_a_window_on_the_clock() {
        let clock = ManualClock::at_epoch_2026();
        let shared: SharedClock = clock.clone();
        let admission = Admission::new(Limits::default(), 2, shared);
        assert_eq!(admission.may_start_sandbox(A, "f"), Ok(()));
        clock.advance(Duration::from_secs(5));
        assert_eq!(admission.may_start_sandbox(A, "f"), Ok(()));
        assert_eq!(admission.may_start_sandbox(A, "f"), Err(THROTTLED));
        // Per function.
        assert_eq!(admission.may_start_sandbox(A, "g"), Ok(()));
        // 10 s after the first start, one more may start; not two.
        clock.advance(Duration::from_secs(5));
        assert_eq!(admission.may_start_sandbox(A, "f"), Ok(()));
        assert_eq!(admission.may_start_sandbox(A, "f"), Err(THROTTLED));
    }
}
