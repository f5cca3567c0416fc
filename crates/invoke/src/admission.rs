//! Concurrency admission on the invoke path: the account's [`Counter`] and
//! the per-function [`ScaleRate`] of `ignis-counting`, each behind its own
//! mutex, held only for one call into the pure crate (never across an await,
//! never together with another lock of this crate).
//!
//! An admitted invocation holds an [`Admitted`] guard; dropping it gives the
//! slot back, so the slot returns however the invocation ends (success,
//! error, timeout, a client that went away, a panic in its task).
//!
//! Reservations (PutFunctionConcurrency) are set here too; the front end
//! stores them with the function and calls these to make them count.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ignis_clock::SharedClock;
use ignis_counting::{Counter, Limits, Reason, ScaleRate, Slot};

use crate::InvokeError;

/// Keys: account id, function name.
type Books = Counter<String, String>;

/// The counter and the scaling rate.
pub struct Admission {
    counter: Mutex<Books>,
    scale: Mutex<ScaleRate<(String, String)>>,
    clock: SharedClock,
    epoch: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Admission {
    /// Every account gets `limits`; at most `scale_rate` new sandboxes per
    /// function per 10 s (of `clock`'s time).
    pub fn new(limits: Limits, scale_rate: u32, clock: SharedClock) -> Arc<Admission> {
        let epoch = clock.instant();
        Arc::new(Admission {
            counter: Mutex::new(Counter::new(limits, ignis_counting::DEFAULT_LEASE_TTL_MS)),
            scale: Mutex::new(ScaleRate::new(scale_rate, ignis_counting::SCALE_WINDOW_MS)),
            clock,
            epoch,
        })
    }

    /// A slot for one invocation of `function`, or the throttle.
    pub fn admit(self: &Arc<Self>, account: &str, function: &str) -> Result<Admitted, InvokeError> {
        let slot =
            lock(&self.counter).acquire(&account.to_string(), &function.to_string()).map_err(InvokeError::Throttled)?;
        Ok(Admitted { admission: self.clone(), slot: Some(slot) })
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
        Ok(lock(&self.counter).set_reservation(&account.to_string(), &function.to_string(), reserved)?)
    }

    /// The account's concurrency not reserved by any function.
    pub fn unreserved_capacity(&self, account: &str) -> u32 {
        lock(&self.counter).unreserved_capacity(&account.to_string())
    }

    /// DeleteFunctionConcurrency, and what a deleted function needs.
    pub fn delete_reservation(&self, account: &str, function: &str) -> Option<u32> {
        lock(&self.counter).delete_reservation(&account.to_string(), &function.to_string())
    }

    /// Puts the counter back to `reservation` (after a store write failed).
    pub fn restore_reservation(&self, account: &str, function: &str, reservation: Option<u32>) {
        match reservation {
            Some(n) => {
                let _ = self.set_reservation(account, function, n);
            }
            None => {
                self.delete_reservation(account, function);
            }
        }
    }

    fn release(&self, slot: Slot<String, String>) {
        lock(&self.counter).release(slot);
    }
}

/// An admitted invocation's slot; given back when dropped.
pub struct Admitted {
    admission: Arc<Admission>,
    slot: Option<Slot<String, String>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.admission.release(slot);
        }
    }
}
