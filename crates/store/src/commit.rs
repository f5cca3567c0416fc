//! One durable group-commit writer, [`GroupCommit`], for every owner of
//! tables that many callers write to at once (asynchronous events, queue
//! messages, log lines).
//!
//! # How it works
//!
//! Callers hand over requests, each a `Vec<W>` of writes, in order, through
//! an unbounded channel; one thread of the writer's own (the only one that
//! applies them) takes whatever has arrived while it was applying the last
//! group, and hands it, in arrival order, to its owner's `apply` function,
//! which writes it in one redb transaction (group commit). A request's writes
//! are never split between two transactions.
//!
//! # Promises
//!
//! - Order: writes are applied in the order their requests were handed over
//!   (one caller's, and across callers in the order the sends happened).
//! - Acknowledgement after commit: the [`Ack`] of a request is answered only
//!   once the transaction that holds it returned from `apply`, with that
//!   transaction's outcome; a [barrier](GroupCommit::barrier) once every
//!   request handed over before it is committed. How durable a commit is
//!   belongs to `apply` (see each owner: events and queue sends are fsync'd).
//! - Errors: when `apply` fails, every request of that group is answered
//!   with [`CommitError::Failed`]; the writer goes on with the next group.
//! - Batching: a group holds at most [`Limits::max_requests`] requests and,
//!   beyond its first request, at most [`Limits::max_bytes`] (as `size`
//!   counts them). When nobody waits for the group (only
//!   [`push`](GroupCommit::push)ed requests), the writer first lingers
//!   [`Limits::linger`] for more.
//! - Shutdown: dropping the [`GroupCommit`] lets the thread apply everything
//!   handed over, answer it, and end; the drop waits for that (unless it
//!   runs on the writer's own thread). Requests handed to a writer whose
//!   thread is gone are answered [`CommitError::Stopped`].
//!
//! Each group's `apply` is timed: the histogram `ignis_storage_commit_seconds`,
//! labelled `writer` with the writer's name (`events`, `queue`, `logs`).

use std::collections::VecDeque;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::WriteTransaction;
use tokio::sync::{mpsc, oneshot};

use crate::{Store, StoreError};

/// How a [`GroupCommit`] groups requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most requests in one transaction.
    pub max_requests: usize,
    /// Most bytes (as the writer's `size` counts them) in one transaction,
    /// beyond its first request.
    pub max_bytes: usize,
    /// How long to wait for more requests before a group nobody waits for.
    pub linger: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_requests: 4096, max_bytes: usize::MAX, linger: Duration::ZERO }
    }
}

/// Why a request was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The transaction that held it failed.
    #[error("{0}")]
    Failed(String),
    /// The writer has stopped.
    #[error("the {0} writer has stopped")]
    Stopped(&'static str),
}

/// The answer to one request: await [`Ack::wait`] (or drop it, not to wait).
#[derive(Debug)]
pub struct Ack {
    name: &'static str,
    answer: oneshot::Receiver<Result<(), CommitError>>,
}

impl Ack {
    /// The outcome of the commit that held the request.
    pub async fn wait(self) -> Result<(), CommitError> {
        self.answer.await.unwrap_or(Err(CommitError::Stopped(self.name)))
    }

    /// [`Ack::wait`] for a thread outside the async runtime.
    pub fn blocking_wait(self) -> Result<(), CommitError> {
        self.answer.blocking_recv().unwrap_or(Err(CommitError::Stopped(self.name)))
    }
}

struct Request<W> {
    writes: Vec<W>,
    bytes: usize,
    /// Whether a caller waits for it now (no linger then).
    waited: bool,
    done: oneshot::Sender<Result<(), CommitError>>,
}

/// The group-commit writer of writes `W`; see the module docs.
pub struct GroupCommit<W> {
    name: &'static str,
    size: fn(&W) -> usize,
    requests: Option<mpsc::UnboundedSender<Request<W>>>,
    thread: Option<JoinHandle<()>>,
}

impl<W> std::fmt::Debug for GroupCommit<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").field("name", &self.name).finish_non_exhaustive()
    }
}

impl<W: Send + 'static> GroupCommit<W> {
    /// Starts the writer thread `ignis-<name>`. `apply` writes one group, in
    /// order, in one transaction; `size` weighs a write for [`Limits::max_bytes`].
    pub fn start(
        name: &'static str,
        limits: Limits,
        size: fn(&W) -> usize,
        apply: impl FnMut(Vec<W>) -> Result<(), String> + Send + 'static,
    ) -> std::io::Result<GroupCommit<W>> {
        let (requests, receiver) = mpsc::unbounded_channel();
        let thread =
            std::thread::Builder::new().name(format!("ignis-{name}")).spawn(move || run(name, receiver, limits, apply))?;
        Ok(GroupCommit { name, size, requests: Some(requests), thread: Some(thread) })
    }

    fn send(&self, writes: Vec<W>, waited: bool) -> Ack {
        let (done, answer) = oneshot::channel();
        let bytes = writes.iter().map(self.size).fold(0usize, usize::saturating_add);
        let request = Request { writes, bytes, waited, done };
        if let Some(requests) = &self.requests
            && let Err(mpsc::error::SendError(request)) = requests.send(request)
        {
            let _ = request.done.send(Err(CommitError::Stopped(self.name)));
        }
        Ack { name: self.name, answer }
    }

    /// Hands over writes a caller waits for: no linger before their commit.
    pub fn submit(&self, writes: Vec<W>) -> Ack {
        self.send(writes, true)
    }

    /// Hands over writes nobody waits for now (the group may linger); the
    /// [`Ack`] may be dropped, or kept to bound what is in flight.
    pub fn push(&self, writes: Vec<W>) -> Ack {
        self.send(writes, false)
    }

    /// Answered once every request handed over before it is committed.
    pub fn barrier(&self) -> Ack {
        self.send(Vec::new(), true)
    }
}

impl<W> Drop for GroupCommit<W> {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

/// The writer thread.
fn run<W>(
    name: &'static str,
    mut receiver: mpsc::UnboundedReceiver<Request<W>>,
    limits: Limits,
    mut apply: impl FnMut(Vec<W>) -> Result<(), String>,
) {
    let max_requests = limits.max_requests.max(1);
    let mut pending: VecDeque<Request<W>> = VecDeque::new();
    let mut pending_bytes = 0usize;
    loop {
        if pending.is_empty() {
            let Some(first) = receiver.blocking_recv() else { return };
            let linger = !first.waited && !limits.linger.is_zero();
            pending_bytes = first.bytes;
            pending.push_back(first);
            if linger {
                std::thread::sleep(limits.linger);
            }
        }
        while pending.len() < max_requests && pending_bytes < limits.max_bytes {
            match receiver.try_recv() {
                Ok(request) => {
                    pending_bytes = pending_bytes.saturating_add(request.bytes);
                    pending.push_back(request);
                }
                Err(_) => break,
            }
        }
        // One transaction's worth: at least one request, however large.
        let mut writes = Vec::new();
        let mut done = Vec::new();
        let mut bytes = 0usize;
        while let Some(request) = pending.front() {
            if !done.is_empty() && (done.len() >= max_requests || bytes.saturating_add(request.bytes) > limits.max_bytes) {
                break;
            }
            let Some(request) = pending.pop_front() else { break };
            bytes = bytes.saturating_add(request.bytes);
            writes.extend(request.writes);
            done.push(request.done);
        }
        pending_bytes = pending_bytes.saturating_sub(bytes);
        let result = if writes.is_empty() {
            Ok(())
        } else {
            let started = Instant::now();
            let result = apply(writes).map_err(CommitError::Failed);
            metrics::histogram!("ignis_storage_commit_seconds", "writer" => name).record(started.elapsed().as_secs_f64());
            result
        };
        for done in done {
            let _ = done.send(result.clone());
        }
    }
}

impl Store {
    /// Commits a transaction an owner of tables made on [`Store::database`]:
    /// fsync'd if `durable` (or if the last fsync is older than
    /// [`crate::LOG_SYNC_INTERVAL`]), and counted by [`Store::flush`] otherwise.
    pub fn commit_write(&self, txn: WriteTransaction, durable: bool, context: &'static str) -> Result<(), StoreError> {
        self.commit(txn, durable, context)
    }
}

#[cfg(test)]
mod tests;
