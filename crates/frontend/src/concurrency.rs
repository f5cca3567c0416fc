//! Concurrency admission on the invoke path: the account's [`Counter`] and
//! the per-function [`ScaleRate`] of `ignis-counting`, each behind its own
//! mutex, held only for one call into the pure crate (never across an await).
//!
//! An admitted invocation holds an [`Admitted`] guard; dropping it gives the
//! slot back, so the slot returns however the invocation ends (success,
//! error, timeout, a client that went away, a panic in its task).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ignis_counting::{Counter, Limits, Reason, ReservationError, ScaleRate, Slot};

use crate::error::ApiError;

/// Keys: account id, function name.
type Books = Counter<String, String>;

pub struct Concurrency {
    counter: Mutex<Books>,
    scale: Mutex<ScaleRate<(String, String)>>,
    epoch: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Concurrency {
    /// Every account gets `limits`; at most `scale_rate` new sandboxes per
    /// function per 10 s.
    pub fn new(limits: Limits, scale_rate: u32) -> Arc<Concurrency> {
        Arc::new(Concurrency {
            counter: Mutex::new(Counter::new(limits, ignis_counting::DEFAULT_LEASE_TTL_MS)),
            scale: Mutex::new(ScaleRate::new(scale_rate, ignis_counting::SCALE_WINDOW_MS)),
            epoch: Instant::now(),
        })
    }

    /// A slot for one invocation, or the throttle.
    pub fn admit(self: &Arc<Self>, account: &str, function: &str) -> Result<Admitted, ApiError> {
        let slot = lock(&self.counter)
            .acquire(&account.to_string(), &function.to_string())
            .map_err(ApiError::TooManyRequests)?;
        Ok(Admitted { concurrency: self.clone(), slot: Some(slot) })
    }

    /// May `function` start another sandbox now (the scaling rate)? Counts the start.
    pub fn may_start_sandbox(&self, account: &str, function: &str) -> Result<(), ApiError> {
        let now = self.epoch.elapsed().as_millis() as u64;
        let key = (account.to_string(), function.to_string());
        let mut scale = lock(&self.scale);
        let allowed = scale.may_start_sandbox(&key, now);
        scale.prune(now);
        if allowed { Ok(()) } else { Err(ApiError::TooManyRequests(Reason::ConcurrentInvocationLimitExceeded)) }
    }

    /// PutFunctionConcurrency's check and effect. Returns the previous reservation.
    pub fn set_reservation(&self, account: &str, function: &str, reserved: u32) -> Result<Option<u32>, ApiError> {
        lock(&self.counter)
            .set_reservation(&account.to_string(), &function.to_string(), reserved)
            .map_err(|e: ReservationError| ApiError::InvalidParameterValue(e.to_string()))
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
    concurrency: Arc<Concurrency>,
    slot: Option<Slot<String, String>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.concurrency.release(slot);
        }
    }
}
