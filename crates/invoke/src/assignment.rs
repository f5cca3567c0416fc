//! Assignment across front ends: the seam through which a cluster's front end sends a function's invocations to
//! the front end that leads the function's partition, so that one front end at a time keeps the function's
//! sandboxes ([`Assignment`], implemented over etcd by `ignis_etcd::Partitions`).
//!
//! - [`Assignment::leader`]: the front end that runs invocations of a function, when it is another one.
//! - [`Leader::run`]: runs an invocation there, on its sandboxes; the caller has admitted it (concurrency is
//!   counted where an invocation arrives) and the leader never forwards it again
//!   ([`crate::Invoker::run_forwarded`]).
//! - An invocation the leader did not take (it could not be reached, is shutting down, or does not know the
//!   revision yet) comes back ([`Forwarded::NotTaken`]) and runs here, and so does one whose leader was lost
//!   while it ran (as the SDKs' retry of the `ServiceException` would run it again): a leader's loss fails no
//!   invocation. One that gets no answer within its timeout (and a margin) fails as one whose worker was lost.
//! - Errors cross between front ends as [`encode_error`]'s JSON; what the leader answers is what the caller gets.

use std::sync::Arc;

use ignis_worker::{Invocation, Outcome};
use serde_json::{Value, json};

use crate::backend::BoxFuture;
use crate::{InvokeError, Target};

/// Which front end runs a function's invocations (see the module docs).
pub trait Assignment: Send + Sync {
    /// The front end that runs invocations of `function` of `account`, if it is another one.
    fn leader(&self, account: &str, function: &str) -> Option<Arc<dyn Leader>>;

    /// The partition of `function` of `account`, and who leads it.
    fn describe(&self, account: &str, function: &str) -> Described;
}

/// A function's partition as one front end sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub partition: u32,
    /// The address of the front end leading it (`None`: no one does now).
    pub leader: Option<String>,
    /// Whether its leader is the front end that should lead it (no move is under way).
    pub settled: bool,
}

/// A front end that leads a partition, as another front end reaches it.
pub trait Leader: Send + Sync {
    /// Runs `invocation` of `target` there.
    fn run<'a>(&'a self, target: &'a Target, invocation: Invocation) -> BoxFuture<'a, Result<Outcome, Forwarded>>;
}

/// Why a forwarded invocation has no outcome.
pub enum Forwarded {
    /// The leader ran it, or tried to, and answered this error.
    Refused(InvokeError),
    /// The leader did not take it: it comes back, to run here.
    NotTaken(Invocation),
}

/// `e` as it crosses to the front end that forwarded the invocation.
pub fn encode_error(e: &InvokeError) -> Value {
    match e {
        InvokeError::Throttled(reason) => json!({ "Kind": "Throttled", "Reason": reason.as_str() }),
        InvokeError::StartThrottled(message) => json!({ "Kind": "StartThrottled", "Message": message }),
        other => json!({ "Kind": "Failed", "Message": other.to_string() }),
    }
}

/// [`encode_error`]'s JSON back; `None` if it is not.
pub fn decode_error(v: &Value) -> Option<InvokeError> {
    let message = || v.get("Message").and_then(Value::as_str).map(str::to_string);
    match v.get("Kind")?.as_str()? {
        "Throttled" => match v.get("Reason")?.as_str()? {
            "ReservedFunctionConcurrentInvocationLimitExceeded" => {
                Some(InvokeError::Throttled(ignis_counting::Reason::ReservedFunctionConcurrentInvocationLimitExceeded))
            }
            "ConcurrentInvocationLimitExceeded" => {
                Some(InvokeError::Throttled(ignis_counting::Reason::ConcurrentInvocationLimitExceeded))
            }
            _ => None,
        },
        "StartThrottled" => Some(InvokeError::StartThrottled(message()?)),
        "Failed" => Some(InvokeError::Elsewhere(message()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use ignis_counting::Reason;
    use ignis_placement::Refusal;

    use super::*;

    #[test]
    fn errors_cross_with_the_message_and_kind_the_caller_would_have_answered() {
        let errors = [
            InvokeError::Throttled(Reason::ReservedFunctionConcurrentInvocationLimitExceeded),
            InvokeError::Throttled(Reason::ConcurrentInvocationLimitExceeded),
            InvokeError::StartThrottled("too many sandboxes are loading images".into()),
            InvokeError::NoHealthyWorker { memory_mb: 128 },
            InvokeError::NoRoom { memory_mb: 128, refusal: Refusal::NoHealthyWorker },
            InvokeError::LostWhileStarting,
            InvokeError::StartFailed("the host failed".into()),
            InvokeError::KeptFailing,
            InvokeError::WorkerLost("the worker at h:1 was lost".into()),
            InvokeError::Task("cancelled".into()),
        ];
        for e in errors {
            let back = decode_error(&encode_error(&e)).expect("decodes");
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(back.is_throttle(), e.is_throttle());
            if matches!(e, InvokeError::Throttled(_) | InvokeError::StartThrottled(_)) {
                assert_eq!(back, e);
            }
        }
        assert_eq!(decode_error(&json!({ "Kind": "Throttled", "Reason": "Other" })), None);
        assert_eq!(decode_error(&json!({ "Kind": "Failed" })), None);
        assert_eq!(decode_error(&json!("x")), None);
    }
}
