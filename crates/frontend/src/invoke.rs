//! The invoke path behind the API: reserve a sandbox (assignment), start one
//! when none is idle (worker), run the invocation, give the sandbox back.
//!
//! Admission comes first: an invocation takes a concurrency slot before it
//! reserves a sandbox and holds it (an [`Admitted`] guard, moved into its
//! task) until it ends, however it ends. Starting a new sandbox also asks the
//! scaling rate; a refusal throttles the invocation.
//!
//! The [`Invoker`] owns the assignment pool and the map from sandbox ids to
//! worker handles, both under one mutex that is held only for map and pool
//! updates, never across an await. Each invocation runs in a task of its own,
//! so a client that goes away does not strand a sandbox half-used: the task
//! finishes the invocation and returns the sandbox.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ignis_assignment::{Event, Pool, Reservation, SandboxId};
use ignis_worker::{Completion, FunctionSpec, Invocation, Outcome, SandboxHandle, StartError, Worker};

use crate::concurrency::{Admitted, Concurrency};
use crate::error::ApiError;
use crate::function::FunctionRecord;

/// How many sandboxes an invocation may try when they die before taking it.
const MAX_ATTEMPTS: usize = 3;

enum Reserved {
    Sandbox(Reservation, Arc<SandboxHandle>),
    /// The sandbox could not start; this is the invocation's answer.
    Failed(Outcome),
}

/// Sandboxes are reused only for the same function revision (a published
/// version has a revision of its own).
type RevisionKey = (String, String, String);

pub struct Invoker {
    worker: Arc<Worker>,
    concurrency: Arc<Concurrency>,
    state: Mutex<State>,
    keep_alive: Duration,
    epoch: Instant,
}

struct State {
    pool: Pool<RevisionKey>,
    handles: HashMap<SandboxId, Arc<SandboxHandle>>,
    /// Revisions with provisioned concurrency, as of the last [`Invoker::provision`].
    provisioned: HashMap<RevisionKey, Provision>,
}

/// One revision's provisioned concurrency.
#[derive(Default)]
struct Provision {
    /// When the configuration was last set: a new setting tries again after a failure.
    since_ms: i64,
    /// Why the last sandbox started for it failed its init; no more are started until the setting changes.
    failure: Option<String>,
}

/// What [`Invoker::provision`] keeps: `requested` initialised sandboxes of `target`, as configured at `since_ms`.
pub struct Provisioned {
    pub target: Target,
    pub requested: u32,
    pub since_ms: i64,
}

/// Provisioned sandboxes of a revision: how many are ready, and why the last start failed, if it did.
pub struct Allocation {
    pub allocated: u32,
    pub failure: Option<String>,
}

/// What the caller needs to run a function.
#[derive(Clone)]
pub struct Target {
    pub account: String,
    pub region: String,
    pub record: Arc<FunctionRecord>,
    pub code_dir: PathBuf,
}

impl Invoker {
    pub fn new(worker: Arc<Worker>, concurrency: Arc<Concurrency>, keep_alive: Duration) -> Arc<Invoker> {
        let invoker = Arc::new(Invoker {
            worker,
            concurrency,
            state: Mutex::new(State { pool: Pool::new(), handles: HashMap::new(), provisioned: HashMap::new() }),
            keep_alive,
            epoch: Instant::now(),
        });
        let reaper = Arc::downgrade(&invoker);
        let period = (keep_alive / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(invoker) = reaper.upgrade() else { return };
                invoker.expire();
            }
        });
        invoker
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kills idle sandboxes past the keep-alive.
    fn expire(&self) {
        let now = self.now_ms();
        let mut state = self.lock();
        for id in state.pool.expire(now, self.keep_alive.as_millis() as u64) {
            if let Some(handle) = state.handles.remove(&id) {
                handle.kill();
            }
        }
    }

    /// The function changed or is gone: its idle sandboxes die now, its busy
    /// ones when their invocation ends.
    pub fn retire(&self, account: &str, record: &FunctionRecord) {
        let key = (account.to_string(), record.name.clone(), record.revision_id.clone());
        let mut state = self.lock();
        for id in state.pool.retire(&key) {
            if let Some(handle) = state.handles.remove(&id) {
                handle.kill();
            }
        }
    }

    /// Keeps each target's `requested` sandboxes initialised (provisioned
    /// concurrency): starts what is missing, and makes the extra ones, and
    /// those of revisions no longer listed, ordinary sandboxes that age out.
    /// Called again and again: it also replaces provisioned sandboxes that died.
    pub fn provision(self: &Arc<Self>, wanted: Vec<Provisioned>) {
        let now = self.now_ms();
        let mut starts = Vec::new();
        {
            let mut state = self.lock();
            let keys: std::collections::HashSet<RevisionKey> = wanted.iter().map(|w| revision_key(&w.target)).collect();
            let dropped: Vec<RevisionKey> = state.provisioned.keys().filter(|k| !keys.contains(*k)).cloned().collect();
            for key in dropped {
                let (initialising, ready) = state.pool.provisioned(&key);
                state.pool.unprovision(&key, initialising + ready, now);
                state.provisioned.remove(&key);
            }
            for Provisioned { target, requested, since_ms } in wanted {
                let key = revision_key(&target);
                let provision = state.provisioned.entry(key.clone()).or_default();
                if provision.since_ms != since_ms {
                    *provision = Provision { since_ms, failure: None };
                }
                if provision.failure.is_some() {
                    continue;
                }
                let (initialising, ready) = state.pool.provisioned(&key);
                let live = (initialising + ready) as u32;
                if live > requested {
                    state.pool.unprovision(&key, (live - requested) as usize, now);
                }
                for _ in live..requested {
                    starts.push((state.pool.provision(&key), key.clone(), target.clone()));
                }
            }
        }
        for (id, key, target) in starts {
            tokio::spawn(self.clone().start_provisioned(id, key, target));
        }
    }

    /// Starts one provisioned sandbox and waits for its runtime's init; then it is idle, ready for invocations.
    async fn start_provisioned(self: Arc<Self>, id: SandboxId, key: RevisionKey, target: Target) {
        let started = self.worker.start(Arc::new(spec(&target, "provisioned-concurrency"))).await;
        let prepared = match started {
            Ok(handle) => {
                self.lock().handles.insert(id, handle.clone());
                handle.prepare().await
            }
            Err(e) => Err(match e {
                StartError::Entrypoint(message) | StartError::Host(message) => message,
                StartError::ShuttingDown => "Ignis is shutting down".into(),
            }),
        };
        let now = self.now_ms();
        let mut state = self.lock();
        let event = if prepared.is_ok() { Event::Ready } else { Event::InitFailed };
        if state.pool.report(id, event, now) != Ok(ignis_assignment::State::Idle) {
            if let Some(handle) = state.handles.remove(&id) {
                handle.kill();
            }
        }
        if let (Err(reason), Some(provision)) = (prepared, state.provisioned.get_mut(&key)) {
            provision.failure = Some(reason);
        }
    }

    /// How far the provisioned concurrency of `target` is.
    pub fn allocation(&self, target: &Target) -> Allocation {
        let key = revision_key(target);
        let state = self.lock();
        let (_, ready) = state.pool.provisioned(&key);
        let failure = state.provisioned.get(&key).and_then(|p| p.failure.clone());
        Allocation { allocated: ready as u32, failure }
    }

    /// Runs one invocation to its end, in a task of its own, if admission
    /// gives it a slot now (else `TooManyRequests`). The task holds the slot
    /// until the invocation ends, even if the caller stops waiting.
    pub async fn invoke(self: &Arc<Self>, target: Target, invocation: Invocation) -> Result<Outcome, ApiError> {
        let admitted = self.admit(&target)?;
        self.invoke_admitted(target, invocation, admitted).await
    }

    /// A concurrency slot for an invocation of `target`, or the throttle.
    pub fn admit(&self, target: &Target) -> Result<Admitted, ApiError> {
        self.concurrency.admit(&target.account, &target.record.name)
    }

    /// [`Invoker::invoke`] with the slot already taken.
    pub async fn invoke_admitted(
        self: &Arc<Self>,
        target: Target,
        invocation: Invocation,
        admitted: Admitted,
    ) -> Result<Outcome, ApiError> {
        let invoker = self.clone();
        tokio::spawn(async move { invoker.run(target, invocation, admitted).await })
            .await
            .map_err(|e| ApiError::Service(format!("invocation failed: {e}")))?
    }

    async fn run(&self, target: Target, mut invocation: Invocation, admitted: Admitted) -> Result<Outcome, ApiError> {
        // Released when this returns (or the task is dropped), whatever the outcome.
        let _admitted = admitted;
        let key = revision_key(&target);
        for _ in 0..MAX_ATTEMPTS {
            let (reservation, handle) = match self.reserve(&key, &target, &invocation.request_id).await {
                Ok(Reserved::Sandbox(reservation, handle)) => (reservation, handle),
                Ok(Reserved::Failed(outcome)) => return Ok(outcome),
                Err(e) => return Err(e),
            };
            let result = handle.invoke(invocation).await;
            let id = reservation.id();
            let now = self.now_ms();
            let mut state = self.lock();
            if matches!(reservation, Reservation::Cold(_)) {
                let _ = state.pool.report(id, Event::InitDone, now);
            }
            let reusable = matches!(&result, Ok(outcome) if outcome.reusable);
            let event = if reusable { Event::Released } else { Event::Failed };
            if state.pool.report(id, event, now) != Ok(ignis_assignment::State::Idle) {
                if let Some(handle) = state.handles.remove(&id) {
                    handle.kill();
                }
            }
            match result {
                Ok(outcome) => return Ok(outcome),
                // The sandbox died before its runtime took the event: run it elsewhere.
                Err(untouched) => invocation = untouched,
            }
        }
        Err(ApiError::Service("the function's sandboxes kept failing before they could take the event".into()))
    }

    /// A sandbox for `key`: an idle one, else a new one.
    async fn reserve(&self, key: &RevisionKey, target: &Target, request_id: &str) -> Result<Reserved, ApiError> {
        loop {
            let reservation = self.lock().pool.reserve(key);
            match reservation {
                Reservation::Warm(id) => {
                    let handle = self.lock().handles.get(&id).cloned();
                    match handle {
                        Some(handle) if handle.is_alive() => return Ok(Reserved::Sandbox(reservation, handle)),
                        // It died while idle (its runtime exited): drop it, take another.
                        _ => self.discard(id),
                    }
                }
                Reservation::Cold(id) => {
                    if let Err(throttled) = self.concurrency.may_start_sandbox(&target.account, &target.record.name) {
                        let _ = self.lock().pool.report(id, Event::InitFailed, self.now_ms());
                        return Err(throttled);
                    }
                    return match self.worker.start(Arc::new(spec(target, "on-demand"))).await {
                        Ok(handle) => {
                            self.lock().handles.insert(id, handle.clone());
                            Ok(Reserved::Sandbox(reservation, handle))
                        }
                        Err(e) => {
                            let _ = self.lock().pool.report(id, Event::InitFailed, self.now_ms());
                            start_failure(e, request_id).map(Reserved::Failed)
                        }
                    };
                }
            }
        }
    }

    fn discard(&self, id: SandboxId) {
        let mut state = self.lock();
        let _ = state.pool.report(id, Event::Failed, 0);
        if let Some(handle) = state.handles.remove(&id) {
            handle.kill();
        }
    }

    /// Ends every sandbox and waits for their cleanup.
    pub async fn shutdown(&self) {
        {
            let mut state = self.lock();
            state.pool.drain();
            state.handles.clear();
        }
        self.worker.shutdown().await;
    }
}

fn start_failure(e: StartError, request_id: &str) -> Result<Outcome, ApiError> {
    match e {
        StartError::Entrypoint(message) => Ok(Outcome {
            completion: Completion::Failed {
                error_type: "Runtime.InvalidEntrypoint",
                message: format!("RequestId: {request_id} Error: {message}"),
            },
            log: String::new(),
            reusable: false,
        }),
        StartError::Host(message) => Err(ApiError::Service(format!("could not start a sandbox: {message}"))),
        StartError::ShuttingDown => Err(ApiError::Service("Ignis is shutting down".into())),
    }
}

fn revision_key(target: &Target) -> RevisionKey {
    (target.account.clone(), target.record.name.clone(), target.record.revision_id.clone())
}

/// The sandbox's view of a function: its code, limits and Lambda's environment;
/// `initialization` is `AWS_LAMBDA_INITIALIZATION_TYPE`.
fn spec(target: &Target, initialization: &str) -> FunctionSpec {
    let record = &target.record;
    let mut env: Vec<(String, String)> = vec![
        ("AWS_LAMBDA_FUNCTION_NAME".into(), record.name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION".into(), record.version_label()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), record.memory_mb.to_string()),
        ("AWS_LAMBDA_LOG_GROUP_NAME".into(), record.log_group()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE".into(), initialization.into()),
        ("AWS_REGION".into(), target.region.clone()),
        ("AWS_DEFAULT_REGION".into(), target.region.clone()),
        ("AWS_EXECUTION_ENV".into(), format!("AWS_Lambda_{}", record.runtime)),
        ("_HANDLER".into(), record.handler.clone()),
        ("LAMBDA_TASK_ROOT".into(), "/var/task".into()),
        ("LAMBDA_RUNTIME_DIR".into(), "/var/runtime".into()),
        ("TZ".into(), ":UTC".into()),
        ("LANG".into(), "en_US.UTF-8".into()),
        ("PATH".into(), "/usr/local/bin:/usr/bin/:/bin:/opt/bin".into()),
        (
            "LD_LIBRARY_PATH".into(),
            "/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib".into(),
        ),
    ];
    env.extend(record.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
    FunctionSpec {
        code_dir: target.code_dir.clone(),
        memory_mb: record.memory_mb,
        tmp_mb: record.ephemeral_mb,
        timeout: Duration::from_secs(record.timeout_s.into()),
        env,
        version: record.version_label(),
        log_account: target.account.clone(),
        log_group: record.log_group(),
    }
}
