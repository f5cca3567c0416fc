//! Several worker hosts under one server.
//!
//! - `wire`: the worker protocol's JSON bodies (function specs, invocations,
//!   outcomes, log batches); serialisation happens here and nowhere else.
//! - `peer`: a signed HTTP client (SigV4, service `ignis`, the
//!   administrator's key) that keeps connections open for reuse, over HTTP/1.1
//!   or HTTP/2 ([`Protocol`]), and the check of a signed request on the
//!   receiving side.
//! - `remote`: the server's view of a worker host ([`RemoteWorker`]) and of a
//!   sandbox on it ([`RemoteSandbox`]). When the worker is declared down,
//!   every request in flight to it ends at once with [`Failure::Lost`].
//! - `serve`: the accept loop the API server and the worker host share
//!   (HTTP/1.1), and cache nodes (HTTP/1.1 and HTTP/2).
//! - `host`: the `ignis worker` process: registers with the server, reports
//!   its capacity, heartbeats, fetches code by SHA-256, forwards its log lines
//!   and serves the sandbox calls.
//!
//! # The protocol (HTTP/1.1, JSON, every call signed with the administrator's key)
//!
//! Worker → server:
//! - `POST /ignis/workers` `{"Address", "MemoryMb", "Cpus"}` → `{"WorkerId"}`
//! - `POST /ignis/workers/{id}/heartbeat` → 204, or 404 for a worker the
//!   server does not know (any more): it must register again. A cluster's
//!   front end answers 200 `{"FrontEnds": {"Revision", "Live"}}`: the front
//!   ends it lists ([`owner`]).
//! - `GET /ignis/code/{sha256 hex}` → the code tree as a zip.
//! - `GET /ignis/images/{account}/{manifest digest}?repository=NAME` →
//!   `{"Id", "Manifest" (base64), "Key" (base64), "Root"}`: an image's chunk
//!   manifest, prepared now if it is not yet, and the key that opens it.
//! - `GET /ignis/chunks/{root}/{sha256 hex}` → one chunk of an image, as
//!   stored (encrypted); the worker checks it against its name
//!   ([`RemoteChunks`]).
//! - `POST /ignis/logs` `{"Batches": [...]}` → 204.
//!
//! Server → worker:
//! - `POST /sandboxes` (a function spec, and in a cluster its `"Owner"`: the
//!   front end starting it, and its `"Tag"`: what it runs) → 201
//!   `{"SandboxId"}` once started. The host ends the sandboxes of an owner a
//!   heartbeat's answer shows gone, [`owner::ADOPTION_GRACE`] later unless
//!   another front end took them over.
//! - `GET /sandboxes` → `{"Sandboxes": [...]}`: those with a tag
//!   ([`owner::Listed`]).
//! - `POST /sandboxes/{id}/owner` `{"From", "To"}` → 200 once the sandbox is
//!   `To`'s; 409 when it is not `From`'s or runs an invocation; 404 when gone.
//! - `POST /sandboxes/{id}/invoke` (an invocation) → the outcome, or
//!   `{"Untaken": true}` when the sandbox never took it (run it elsewhere).
//!   With `"Stream": true` (its caller reads a streamed response as a
//!   stream), the answer is frames sent as they are made (`wire::Frame`:
//!   the runtime's stream as it comes, then the outcome).
//! - `POST /sandboxes/{id}/prepare` → `{"Error": null | "..."}`.
//! - `DELETE /sandboxes/{id}` → 204.

mod chunks;
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzz;
pub mod host;
mod images;
pub mod owner;
mod peer;
mod remote;
mod serve;
mod wire;

use std::time::Duration;

pub use chunks::{FETCH_TIMEOUT, RemoteChunks};
pub use images::{RemoteManifests, fetch_manifest, image_answer};
pub use peer::{Peer, PeerError, Protocol, Servers, authentic_head};
pub use remote::{Failure, RemoteSandbox, RemoteWorker};
pub use serve::{serve, serve_with_peer};
pub use wire::{decode_invocation, decode_log_batches, decode_outcome, encode_invocation, encode_log_batches, encode_outcome};

/// How often a worker sends a heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
/// Silence after which a worker is unhealthy (and after which a worker that
/// cannot reach the server ends its sandboxes).
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

/// What a host offers sandboxes: its memory (MB) and CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub memory_mb: u64,
    pub cpus: u32,
}

impl Capacity {
    /// This machine's: `MemTotal` of `/proc/meminfo` (or `memory_mb` if given)
    /// and the CPUs this process may use.
    pub fn of_this_host(memory_mb: Option<u64>) -> Capacity {
        let total = || -> Option<u64> {
            let text = std::fs::read_to_string("/proc/meminfo").ok()?;
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024)
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Capacity { memory_mb: memory_mb.or_else(total).unwrap_or(1024), cpus }
    }
}
