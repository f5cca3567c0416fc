//! Everything that invokes without a client: durable asynchronous
//! invocation ([`events`]), event source mappings from queues to functions
//! ([`mappings`], with the pure decisions in [`mapping`]), and the keeper of
//! provisioned concurrency ([`provisioning`]).
//!
//! # API boundary
//!
//! Each part takes what it needs at construction, as [`Services`]: the
//! registry (`ignis_registry::Registry`, to read function records), the
//! invoker (`ignis_invoke::Invoker`, the one invoke path: admission, then a
//! sandbox), the queues (`ignis_queues::Queues`, for destinations, dead
//! letters and mapped queues), the store (for the pollers' own tables, see
//! [`tables`], and code trees), the server's clock and its region. It calls
//! them through their Rust APIs and matches on their typed errors
//! (`InvokeError`, `RegistryError`, `QueueError`); its own are
//! [`PollersError`] and [`MappingError`], which only the front end turns into
//! wire errors. Nothing here knows HTTP, SigV4 or Lambda's wire shapes (but
//! for the JSON a function receives: Lambda's SQS event and invocation
//! records, which are what the function runs with). The front end hands in
//! two things of its own: a [`LogBarrier`] (wait until the log lines handed
//! to the log writer so far are committed) and, through the invoker's
//! `log_sink`, where "undelivered" lines go.
//!
//! # Time
//!
//! Every time used here (event age, retry back-off, leases, the
//! dispatcher's waits, batching windows, throttle waits and pauses, poller
//! scaling, the keeper's period, record timestamps) comes from the
//! [`SharedClock`] in [`Services`].

mod destination;
mod error;
pub mod events;
pub mod mapping;
pub mod mappings;
pub mod provisioning;
pub mod tables;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use ignis_clock::SharedClock;

pub use destination::{Destination, parse_destination};
pub use error::{MappingError, PollersError};
pub use events::{Event, Events};
pub use mapping::MappingRecord;
pub use mappings::{Mappings, PollerPlaces};
pub use provisioning::Keeper;

/// A boxed future that can cross tasks.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Waits until every log line handed to the log writer so far is committed
/// (the front end's, given to [`Mappings::start`]).
pub type LogBarrier = Arc<dyn Fn() -> BoxFuture<()> + Send + Sync>;

/// The services the pollers call, and the server's clock and region.
#[derive(Clone)]
pub struct Services {
    pub registry: Arc<dyn ignis_registry::Registry>,
    /// The networks whose ranges a function's sandboxes may reach (read when a record becomes a target).
    pub networks: Arc<dyn ignis_registry::Networks>,
    pub invoker: Arc<ignis_invoke::Invoker>,
    pub queues: Arc<ignis_queues::Queues>,
    /// The pollers' tables live in its database; code trees under its root.
    pub store: Arc<ignis_store::Store>,
    pub clock: SharedClock,
    pub region: String,
}

/// A uniformly random number in `0..1` (an alias's weighted pick).
fn random_unit() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}
