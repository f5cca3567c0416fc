//! The seam between the invoker and the workers: a [`WorkerBackend`] starts
//! sandboxes, a [`Sandbox`] takes invocations. Three implementations: the
//! local worker ([`LocalWorker`], over `ignis_worker::Worker`), worker hosts
//! reached over the network ([`RemoteHost`], over `ignis_cluster::RemoteWorker`),
//! and an in-memory fake (`crate::fake`, for tests).
//!
//! Invariants every implementation keeps:
//! - `Sandbox::invoke` answers [`Failure::Untaken`] (handing the invocation
//!   back) only when no runtime took the event, so running it elsewhere is
//!   safe; [`Failure::Lost`] when it may have run but the answer is gone.
//! - `kill` never waits; `end` waits (briefly) for the worker's
//!   acknowledgement; both may be called on a dead sandbox.
//! - After `WorkerBackend::mark_down`, every call in flight to the worker
//!   ends at once and no new one is sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use ignis_cluster::Failure;
pub use ignis_cluster::owner::{Listed, Tag};
use ignis_cluster::{RemoteSandbox, RemoteWorker};
use ignis_worker::{FunctionSpec, Invocation, Outcome, SandboxHandle, StartError, Worker};

/// A boxed future, so that the traits are object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A worker, as the invoker drives it.
pub trait WorkerBackend: Send + Sync {
    /// Starts a sandbox for `spec`, whose code tree is named by `code_sha256_hex`; `tag` says what it runs, for
    /// another front end that takes it over (a worker host in a cluster keeps it).
    fn start<'a>(
        &'a self,
        spec: FunctionSpec,
        code_sha256_hex: &'a str,
        tag: Tag,
    ) -> BoxFuture<'a, Result<Arc<dyn Sandbox>, StartError>>;
    /// The sandboxes front ends claimed on this worker (a worker host's in a cluster; none elsewhere).
    fn listed(&self) -> BoxFuture<'_, Result<Vec<Listed>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// Makes `listed` this front end's (`ignis_cluster::owner`); `None` if it is not its listed owner's any more,
    /// runs an invocation, or is gone.
    fn take_over<'a>(&'a self, _listed: &'a Listed) -> BoxFuture<'a, Result<Option<Arc<dyn Sandbox>>, String>> {
        Box::pin(async { Ok(None) })
    }
    /// Whether the worker's connection failed (a local worker never is down).
    fn is_down(&self) -> bool {
        false
    }
    /// The worker is lost: calls in flight to it end now, and no new one is sent.
    fn mark_down(&self) {}
    /// Ends the worker's own machinery when the server stops (the local worker's sandboxes and threads).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A sandbox on some worker.
pub trait Sandbox: Send + Sync {
    fn is_alive(&self) -> bool;
    /// Ends the sandbox without waiting.
    fn kill(&self);
    /// Waits for the runtime's init (provisioned concurrency); the reason if it failed.
    fn prepare(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Runs one invocation; `timeout` is the function's.
    fn invoke(&self, invocation: Invocation, timeout: Duration) -> BoxFuture<'_, Result<Outcome, Failure>>;
    /// Ends the sandbox when the server stops, waiting (briefly) for its worker's acknowledgement.
    fn end(&self) -> BoxFuture<'_, ()>;
    /// Its worker host's id of it (a worker host's sandbox).
    fn host_id(&self) -> Option<&str> {
        None
    }
    /// Gives it up on its worker host for another front end to take over (`ignis_cluster::owner::RELEASED`);
    /// false if it could not (then end it). It is not used here again either way.
    fn release(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { false })
    }
}

/// The worker in this process.
pub struct LocalWorker(pub Arc<Worker>);

impl WorkerBackend for LocalWorker {
    fn start<'a>(&'a self, spec: FunctionSpec, _: &'a str, _: Tag) -> BoxFuture<'a, Result<Arc<dyn Sandbox>, StartError>> {
        Box::pin(async move {
            let handle = self.0.start(Arc::new(spec)).await?;
            Ok(Arc::new(LocalSandbox(handle)) as Arc<dyn Sandbox>)
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.0.shutdown())
    }
}

/// A sandbox of the local worker.
pub struct LocalSandbox(pub Arc<SandboxHandle>);

impl Sandbox for LocalSandbox {
    fn is_alive(&self) -> bool {
        self.0.is_alive()
    }

    fn kill(&self) {
        self.0.kill();
    }

    fn prepare(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self.0.prepare())
    }

    fn invoke(&self, invocation: Invocation, _: Duration) -> BoxFuture<'_, Result<Outcome, Failure>> {
        Box::pin(async move { self.0.invoke(invocation).await.map_err(Failure::Untaken) })
    }

    /// The local worker's shutdown ends its sandboxes.
    fn end(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A worker host that registered with this front end.
pub struct RemoteHost(pub Arc<RemoteWorker>);

impl WorkerBackend for RemoteHost {
    fn start<'a>(
        &'a self,
        spec: FunctionSpec,
        code_sha256_hex: &'a str,
        tag: Tag,
    ) -> BoxFuture<'a, Result<Arc<dyn Sandbox>, StartError>> {
        Box::pin(async move {
            let sandbox = self.0.start(&spec, code_sha256_hex, Some(tag)).await?;
            Ok(Arc::new(RemoteHostSandbox(sandbox)) as Arc<dyn Sandbox>)
        })
    }

    fn listed(&self) -> BoxFuture<'_, Result<Vec<Listed>, String>> {
        Box::pin(self.0.listed())
    }

    fn take_over<'a>(&'a self, listed: &'a Listed) -> BoxFuture<'a, Result<Option<Arc<dyn Sandbox>>, String>> {
        Box::pin(async move {
            let sandbox = self.0.take_over(listed).await?;
            Ok(sandbox.map(|sandbox| Arc::new(RemoteHostSandbox(sandbox)) as Arc<dyn Sandbox>))
        })
    }

    fn is_down(&self) -> bool {
        self.0.is_down()
    }

    fn mark_down(&self) {
        self.0.mark_down();
    }
}

/// A sandbox on a worker host.
pub struct RemoteHostSandbox(pub Arc<RemoteSandbox>);

impl Sandbox for RemoteHostSandbox {
    fn is_alive(&self) -> bool {
        self.0.is_alive()
    }

    fn kill(&self) {
        self.0.kill();
    }

    fn prepare(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self.0.prepare())
    }

    fn invoke(&self, invocation: Invocation, timeout: Duration) -> BoxFuture<'_, Result<Outcome, Failure>> {
        Box::pin(self.0.invoke(invocation, timeout))
    }

    fn end(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.0.end())
    }

    fn host_id(&self) -> Option<&str> {
        Some(self.0.id())
    }

    fn release(&self) -> BoxFuture<'_, bool> {
        Box::pin(self.0.release())
    }
}
