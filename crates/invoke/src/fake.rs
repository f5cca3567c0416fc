//! An in-memory [`WorkerBackend`] for tests (feature `fake`; always on in
//! this crate's own tests): sandboxes that "start", take invocations and
//! answer scripted outcomes, with counters a test can read. No process, no
//! root, no network.
//!
//! A [`FakeWorker`] answers each start with the next [`Start`] of its script
//! (default: it starts) and each invocation, on any of its sandboxes, with the
//! next [`Step`] (default: [`Step::Succeed`], echoing the payload).
//! [`WorkerBackend::mark_down`] (or [`FakeWorker::lose`]) behaves as a worker
//! host that went away: calls in flight end with [`Failure::Lost`], new ones
//! are [`Failure::Untaken`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use ignis_clock::SharedClock;
use ignis_worker::{Completion, FunctionSpec, Invocation, Outcome, StartError};
use tokio::sync::watch;

use crate::backend::{BoxFuture, Failure, Sandbox, Tag, WorkerBackend};

/// How the next sandbox start goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// It starts (and its init succeeds).
    Starts,
    /// The entry point is missing: the function's error.
    Entrypoint(String),
    /// The host failed.
    HostError(String),
    /// The worker is shutting down.
    ShuttingDown,
    /// It starts, but its runtime's init fails (seen by `prepare`, for provisioned sandboxes).
    InitFails(String),
}

/// How the next invocation goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The runtime answers with the payload; the sandbox stays reusable.
    Succeed,
    /// The function returns an error; the sandbox stays reusable.
    FunctionError,
    /// The runtime's init fails on this first event: the sandbox dies.
    InitFailure,
    /// The sandbox dies before a runtime takes the event (it may run elsewhere).
    DieBeforeTaking,
    /// The sandbox dies after its runtime took the event.
    DieAfterTaking,
    /// Succeeds after this long on the worker's clock.
    Slow(Duration),
    /// Waits until [`FakeWorker::release`] (then succeeds) or the worker is lost.
    Hold,
}

#[derive(Default)]
struct Script {
    starts: VecDeque<Start>,
    steps: VecDeque<Step>,
}

/// An in-memory worker.
pub struct FakeWorker {
    address: String,
    clock: SharedClock,
    script: Mutex<Script>,
    down: watch::Sender<bool>,
    /// Bumped by [`FakeWorker::release`]: held invocations end.
    released: watch::Sender<u64>,
    sandboxes: Mutex<Vec<Weak<FakeSandbox>>>,
    envs: Mutex<Vec<Vec<(String, String)>>>,
    starts: AtomicUsize,
    invocations: AtomicUsize,
    holding: AtomicUsize,
    kills: AtomicUsize,
    shutdowns: AtomicUsize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeWorker {
    /// A worker at `address` whose slow steps sleep on `clock`.
    pub fn new(address: &str, clock: SharedClock) -> Arc<FakeWorker> {
        Arc::new(FakeWorker {
            address: address.to_string(),
            clock,
            script: Mutex::default(),
            down: watch::channel(false).0,
            released: watch::channel(0).0,
            sandboxes: Mutex::default(),
            envs: Mutex::default(),
            starts: AtomicUsize::new(0),
            invocations: AtomicUsize::new(0),
            holding: AtomicUsize::new(0),
            kills: AtomicUsize::new(0),
            shutdowns: AtomicUsize::new(0),
        })
    }

    /// Scripts the next starts (after those already scripted).
    pub fn script_starts(&self, starts: impl IntoIterator<Item = Start>) {
        lock(&self.script).starts.extend(starts);
    }

    /// Scripts the next invocations (after those already scripted).
    pub fn script(&self, steps: impl IntoIterator<Item = Step>) {
        lock(&self.script).steps.extend(steps);
    }

    /// Ends every held invocation (successfully).
    pub fn release(&self) {
        self.released.send_modify(|n| *n += 1);
    }

    /// The worker goes away: its connection fails.
    pub fn lose(&self) {
        self.down.send_replace(true);
    }

    /// Sandboxes started (including those whose init then failed).
    pub fn starts(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }

    /// Invocations that reached a sandbox (whatever became of them).
    pub fn invocations(&self) -> usize {
        self.invocations.load(Ordering::SeqCst)
    }

    /// Invocations waiting in [`Step::Hold`] or [`Step::Slow`] now.
    pub fn holding(&self) -> usize {
        self.holding.load(Ordering::SeqCst)
    }

    /// Sandboxes killed (by the invoker or ended at shutdown).
    pub fn kills(&self) -> usize {
        self.kills.load(Ordering::SeqCst)
    }

    /// Sandboxes alive now.
    pub fn live(&self) -> usize {
        lock(&self.sandboxes).iter().filter_map(Weak::upgrade).filter(|s| s.is_alive()).count()
    }

    /// Times the worker was shut down.
    pub fn shutdowns(&self) -> usize {
        self.shutdowns.load(Ordering::SeqCst)
    }

    /// The environment of every sandbox started, in order.
    pub fn environments(&self) -> Vec<Vec<(String, String)>> {
        lock(&self.envs).clone()
    }

    fn lost(&self) -> String {
        format!("the worker at {} was lost", self.address)
    }
}

impl WorkerBackend for Arc<FakeWorker> {
    fn start<'a>(&'a self, spec: FunctionSpec, _: &'a str, _: Tag) -> BoxFuture<'a, Result<Arc<dyn Sandbox>, StartError>> {
        Box::pin(async move {
            if *self.down.borrow() {
                return Err(StartError::Host(format!("worker {} is down", self.address)));
            }
            let start = lock(&self.script).starts.pop_front().unwrap_or(Start::Starts);
            let init_failure = match start {
                Start::Starts => None,
                Start::InitFails(reason) => Some(reason),
                Start::Entrypoint(message) => return Err(StartError::Entrypoint(message)),
                Start::HostError(message) => return Err(StartError::Host(message)),
                Start::ShuttingDown => return Err(StartError::ShuttingDown),
            };
            self.starts.fetch_add(1, Ordering::SeqCst);
            lock(&self.envs).push(spec.env);
            let sandbox =
                Arc::new(FakeSandbox { worker: (*self).clone(), alive: AtomicBool::new(true), init_failure });
            lock(&self.sandboxes).push(Arc::downgrade(&sandbox));
            Ok(sandbox as Arc<dyn Sandbox>)
        })
    }

    fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    fn mark_down(&self) {
        self.down.send_replace(true);
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }
}

/// A sandbox of a [`FakeWorker`].
struct FakeSandbox {
    worker: Arc<FakeWorker>,
    alive: AtomicBool,
    init_failure: Option<String>,
}

impl FakeSandbox {
    fn die(&self) {
        self.alive.store(false, Ordering::SeqCst);
    }

    /// Waits for `step` (slow or held) unless the worker is lost first.
    async fn wait(&self, step: &Step) -> Result<(), Failure> {
        let mut down = self.worker.down.subscribe();
        let mut released = self.worker.released.subscribe();
        released.borrow_and_update();
        self.worker.holding.fetch_add(1, Ordering::SeqCst);
        let waited = async {
            match step {
                Step::Slow(d) => self.worker.clock.sleep(*d).await,
                _ => {
                    let _ = released.changed().await;
                }
            }
        };
        let result = tokio::select! {
            () = waited => Ok(()),
            _ = down.wait_for(|down| *down) => Err(Failure::Lost(self.worker.lost())),
        };
        self.worker.holding.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

fn failed(error_type: &'static str, message: String) -> Outcome {
    Outcome { completion: Completion::Failed { error_type, message }, log: String::new(), reusable: false }
}

impl Sandbox for FakeSandbox {
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn kill(&self) {
        if self.alive.swap(false, Ordering::SeqCst) {
            self.worker.kills.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn prepare(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match &self.init_failure {
                Some(reason) => {
                    self.die();
                    Err(reason.clone())
                }
                None => Ok(()),
            }
        })
    }

    fn invoke(&self, invocation: Invocation, _: Duration) -> BoxFuture<'_, Result<Outcome, Failure>> {
        Box::pin(async move {
            if *self.worker.down.borrow() || !self.is_alive() {
                return Err(Failure::Untaken(invocation));
            }
            let step = lock(&self.worker.script).steps.pop_front().unwrap_or(Step::Succeed);
            if step == Step::DieBeforeTaking {
                self.die();
                return Err(Failure::Untaken(invocation));
            }
            self.worker.invocations.fetch_add(1, Ordering::SeqCst);
            let request_id = &invocation.request_id;
            if let Some(reason) = &self.init_failure {
                self.die();
                return Ok(failed("Runtime.ExitError", format!("RequestId: {request_id} Error: {reason}")));
            }
            let ok = |payload: Bytes| Outcome { completion: Completion::Response(payload), log: String::new(), reusable: true };
            match step {
                Step::Succeed => Ok(ok(invocation.payload)),
                Step::FunctionError => Ok(Outcome {
                    completion: Completion::Error {
                        body: Bytes::from_static(br#"{"errorMessage":"scripted"}"#),
                        error_type: Some("Scripted".into()),
                    },
                    log: String::new(),
                    reusable: true,
                }),
                Step::InitFailure => {
                    self.die();
                    Ok(failed("Runtime.ExitError", format!("RequestId: {request_id} Error: init failed")))
                }
                Step::DieAfterTaking => {
                    self.die();
                    Ok(failed("Runtime.ExitError", format!("RequestId: {request_id} Error: Runtime exited")))
                }
                Step::Slow(_) | Step::Hold => {
                    self.wait(&step).await?;
                    Ok(ok(invocation.payload))
                }
                Step::DieBeforeTaking => unreachable!("handled above"),
            }
        })
    }

    fn end(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.kill() })
    }
}
