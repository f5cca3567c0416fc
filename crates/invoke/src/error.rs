//! [`InvokeError`]: why an invocation has no outcome. A function's own
//! failure (an error it returned, a crash, a missing entry point) is not an
//! error here but an [`ignis_worker::Outcome`]; these are the platform's
//! answers. The front end maps them to wire errors in one place; pollers
//! match on the variants.

use ignis_counting::{Reason, ReservationError};
use ignis_placement::Refusal;

/// Why the invoker could not run an invocation (or change a reservation).
/// Every message but [`InvokeError::Throttled`]'s is what the API shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// No concurrency slot (the account's limit or the function's
    /// reservation), or the function may start no more sandboxes now (the
    /// scaling rate): Lambda's throttle, with its `Reason`.
    #[error("throttled: {}", .0.as_str())]
    Throttled(Reason),
    /// A reservation the account's limits do not allow.
    #[error("{0}")]
    Reservation(#[from] ReservationError),
    /// No healthy worker is listed (none registered, or all were lost).
    #[error("could not start a sandbox: no worker can take a sandbox of {memory_mb} MB: {}", Refusal::NoHealthyWorker)]
    NoHealthyWorker { memory_mb: u64 },
    /// Healthy workers exist, but none has room, even after evicting idle sandboxes.
    #[error("could not start a sandbox: no worker can take a sandbox of {memory_mb} MB: {refusal}")]
    NoRoom { memory_mb: u64, refusal: Refusal },
    /// The worker was lost while the sandbox started on it.
    #[error("could not start a sandbox: the worker was lost while the sandbox started")]
    LostWhileStarting,
    /// The worker would not start the sandbox now: loading its image would read the chunk store faster than the
    /// worker may (a throttle: the caller may try again).
    #[error("could not start a sandbox: {0}")]
    StartThrottled(String),
    /// The worker could not start the sandbox (its host failed).
    #[error("could not start a sandbox: {0}")]
    StartFailed(String),
    /// Every sandbox tried died before a runtime took the event.
    #[error("the function's sandboxes kept failing before they could take the event")]
    KeptFailing,
    /// The worker went down during the invocation: it may have run, its answer is lost.
    #[error("{0}")]
    WorkerLost(String),
    /// The server is shutting down.
    #[error("Ignis is shutting down")]
    ShuttingDown,
    /// The invocation's task failed (panicked or was cancelled).
    #[error("invocation failed: {0}")]
    Task(String),
    /// The front end leading the function's partition could not run it: its message (`assignment`).
    #[error("{0}")]
    Elsewhere(String),
}

impl InvokeError {
    /// Whether this is a throttle (the caller may try again later).
    pub fn is_throttle(&self) -> bool {
        matches!(self, InvokeError::Throttled(_) | InvokeError::StartThrottled(_))
    }
}
