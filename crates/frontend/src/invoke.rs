//! The invoke path behind the API: reserve a sandbox (assignment), start one
//! when none is idle (worker), run the invocation, give the sandbox back.
//!
//! Admission comes first: an invocation takes a concurrency slot before it
//! reserves a sandbox and holds it (an [`Admitted`] guard, moved into its
//! task) until it ends, however it ends. Starting a new sandbox also asks the
//! scaling rate; a refusal throttles the invocation.
//!
//! The [`Invoker`] owns the assignment pool, the map from sandbox ids to
//! handles, the workers (the local one, if any, and the remote worker hosts
//! that registered) with their placement records and liveness, and which
//! worker each sandbox is on: all under one mutex that is held only for map,
//! pool and record updates, never across an await. Each invocation runs in a
//! task of its own, so a client that goes away does not strand a sandbox
//! half-used: the task finishes the invocation and returns the sandbox.
//!
//! # Workers
//!
//! A new sandbox goes where `ignis_placement::Packing` says, from each
//! worker's capacity and the memory its sandboxes reserve (a sandbox's record
//! is added when it is placed, before it starts, and removed whenever it
//! leaves the handle map: [`State::forget`] is the one way out). When no
//! worker has room, idle sandboxes make it: idle sandboxes are a cache, not a
//! reservation, so the ones `ignis_placement::evict` picks (ordinary idle
//! ones of any account, least recently used first, on the one worker that
//! then fits) are killed and their memory released before the new one is
//! placed; busy, initialising and provisioned sandboxes are never evicted. A remote
//! worker whose heartbeats stop for [`ignis_cluster::HEARTBEAT_TIMEOUT`], or
//! whose connection fails, is unhealthy for good: it gets no new sandbox, its
//! sandboxes leave the pool and the handle map, and every call in flight to
//! it ends at once (the invocation answers `ServiceException`, or runs
//! elsewhere if it never reached a runtime). The health check runs every
//! 200 ms.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ignis_assignment::{Event, Pool, Reservation, SandboxId};
use ignis_cluster::{Capacity, Failure, RemoteSandbox, RemoteWorker};
use ignis_placement::{Evictable, Eviction, FunctionKey, Health, Liveness, Needs, Packing, Placement, WorkerId};
use ignis_sigv4::Credentials;
use ignis_worker::{Completion, FunctionSpec, Invocation, LogBatch, Outcome, SandboxHandle, StartError, Worker};
use tokio::sync::mpsc;

use crate::concurrency::{Admitted, Concurrency};
use crate::error::ApiError;
use ignis_registry::FunctionRecord;

/// How many sandboxes an invocation may try when they die before taking it.
const MAX_ATTEMPTS: usize = 3;

/// How often remote workers' health is checked.
const HEALTH_CHECK_EVERY: Duration = Duration::from_millis(200);

enum Reserved {
    Sandbox(Reservation, Handle),
    /// The sandbox could not start; this is the invocation's answer.
    Failed(Outcome),
}

/// Sandboxes are reused only for the same function revision (a published
/// version has a revision of its own).
type RevisionKey = (String, String, String);

/// Where sandboxes run: the local worker (if the server keeps one) and what
/// remote workers need (the key their calls are signed with, the log writer
/// their lines go to).
pub struct Workers {
    pub local: Option<(Arc<Worker>, Capacity)>,
    pub credentials: Credentials,
    pub logs: mpsc::Sender<LogBatch>,
}

/// A worker, as the invoker drives it.
#[derive(Clone)]
enum Backend {
    Local(Arc<Worker>),
    Remote(Arc<RemoteWorker>),
}

/// A sandbox, on the local worker or on a remote one.
#[derive(Clone)]
enum Handle {
    Local(Arc<SandboxHandle>),
    Remote(Arc<RemoteSandbox>),
}

impl Handle {
    fn is_alive(&self) -> bool {
        match self {
            Handle::Local(h) => h.is_alive(),
            Handle::Remote(h) => h.is_alive(),
        }
    }

    fn kill(&self) {
        match self {
            Handle::Local(h) => h.kill(),
            Handle::Remote(h) => h.kill(),
        }
    }

    async fn prepare(&self) -> Result<(), String> {
        match self {
            Handle::Local(h) => h.prepare().await,
            Handle::Remote(h) => h.prepare().await,
        }
    }

    async fn invoke(&self, invocation: Invocation, timeout: Duration) -> Result<Outcome, Failure> {
        match self {
            Handle::Local(h) => h.invoke(invocation).await.map_err(Failure::Untaken),
            Handle::Remote(h) => h.invoke(invocation, timeout).await,
        }
    }
}

/// One worker's membership: how to reach it and, for a remote one, when it was last heard from.
struct Member {
    backend: Backend,
    address: String,
    liveness: Option<Liveness>,
}

/// A worker as `GET /ignis/workers` shows it.
pub struct WorkerInfo {
    pub id: u32,
    pub address: String,
    pub local: bool,
    pub healthy: bool,
    pub memory_mb: u64,
    pub cpus: u32,
    pub used_memory_mb: u64,
    pub sandboxes: u32,
}

pub struct Invoker {
    concurrency: Arc<Concurrency>,
    state: Mutex<State>,
    keep_alive: Duration,
    epoch: Instant,
    local: Option<Arc<Worker>>,
    credentials: Credentials,
    logs: mpsc::Sender<LogBatch>,
}

struct State {
    pool: Pool<RevisionKey>,
    handles: HashMap<SandboxId, Handle>,
    /// Revisions with provisioned concurrency, as of the last [`Invoker::provision`].
    provisioned: HashMap<RevisionKey, Provision>,
    /// Every worker's placement record, oldest first (the order `Packing` fills them in).
    workers: Vec<ignis_placement::Worker>,
    members: HashMap<WorkerId, Member>,
    /// Which worker each placed sandbox is on, and what it reserved there.
    placed: HashMap<SandboxId, (WorkerId, Needs)>,
    next_worker: u32,
}

impl State {
    /// Takes a sandbox out of the handle map and its worker's placement
    /// record: the only way a sandbox leaves them.
    fn forget(&mut self, id: SandboxId) -> Option<Handle> {
        if let Some((worker, needs)) = self.placed.remove(&id)
            && let Some(record) = self.workers.iter_mut().find(|w| w.id == worker)
        {
            record.remove(&needs);
        }
        self.handles.remove(&id)
    }

    /// Chooses a worker for sandbox `id` and reserves its memory there. When
    /// no worker has room, idle sandboxes are evicted to make it (see
    /// [`State::evict_for`]).
    fn place(&mut self, id: SandboxId, needs: Needs) -> Result<Backend, ignis_placement::Refusal> {
        let worker = match Packing::default().choose(&self.workers, &needs) {
            Placement::Worker(worker) => worker,
            Placement::Refused(refusal) => self.evict_for(&needs).ok_or(refusal)?,
        };
        let record = self.workers.iter_mut().find(|w| w.id == worker).expect("placement chose a listed worker");
        record.add(&needs).expect("placement chose a worker with room");
        self.placed.insert(id, (worker, needs));
        Ok(self.members[&worker].backend.clone())
    }

    /// Idle sandboxes are a cache, not a reservation: ends the ordinary idle
    /// sandboxes (any account's, least recently used first) that
    /// `ignis_placement::evict` chooses so that `needs` fits on one worker,
    /// and returns that worker, which now has room; `None` if it cannot make
    /// room (then, unless the books were out of step, nothing was ended).
    /// Busy, initialising and provisioned sandboxes are never listed.
    fn evict_for(&mut self, needs: &Needs) -> Option<WorkerId> {
        let idle: Vec<Evictable<SandboxId>> = self
            .pool
            .evictable()
            .into_iter()
            .filter_map(|sandbox| {
                let (worker, reserved) = self.placed.get(&sandbox)?;
                Some(Evictable { sandbox, worker: *worker, memory_mb: reserved.memory_mb })
            })
            .collect();
        let Eviction { worker, victims } = ignis_placement::evict(&self.workers, needs, &idle)?;
        for &victim in &victims {
            if self.pool.evict(victim).is_ok()
                && let Some(handle) = self.forget(victim)
            {
                handle.kill();
            }
        }
        if !victims.is_empty() {
            eprintln!(
                "ignis: evicted {} idle sandbox(es) on {worker} for a new sandbox of {} MB",
                victims.len(),
                needs.memory_mb
            );
        }
        // The victims' reservations are released: the worker has room (checked, not assumed).
        self.workers.iter().any(|w| w.id == worker && w.healthy && w.fits(needs.memory_mb)).then_some(worker)
    }

    /// The worker is unhealthy for good: no new sandbox, calls in flight to
    /// it end, its sandboxes leave the pool and the handle map.
    fn drop_worker(&mut self, worker: WorkerId) {
        if !self.workers.iter().any(|w| w.id == worker && w.healthy) {
            return;
        }
        let Some(member) = self.members.get_mut(&worker) else { return };
        if let Some(liveness) = &mut member.liveness {
            liveness.fail();
        }
        if let Backend::Remote(remote) = &member.backend {
            remote.mark_down();
        }
        let address = member.address.clone();
        if let Some(record) = self.workers.iter_mut().find(|w| w.id == worker) {
            record.healthy = false;
        }
        let lost: Vec<SandboxId> =
            self.placed.iter().filter(|(_, (w, _))| *w == worker).map(|(id, _)| *id).collect();
        for &id in &lost {
            self.pool.remove(id);
            self.forget(id);
        }
        eprintln!("ignis: {worker} at {address} is unhealthy: {} sandboxes dropped", lost.len());
    }
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
    pub fn new(workers: Workers, concurrency: Arc<Concurrency>, keep_alive: Duration) -> Arc<Invoker> {
        let mut state = State {
            pool: Pool::new(),
            handles: HashMap::new(),
            provisioned: HashMap::new(),
            workers: Vec::new(),
            members: HashMap::new(),
            placed: HashMap::new(),
            next_worker: 1,
        };
        if let Some((worker, capacity)) = &workers.local {
            let id = WorkerId(0);
            state.workers.push(ignis_placement::Worker::new(id, capacity.memory_mb, capacity.cpus));
            let member = Member { backend: Backend::Local(worker.clone()), address: "local".into(), liveness: None };
            state.members.insert(id, member);
        }
        let invoker = Arc::new(Invoker {
            concurrency,
            state: Mutex::new(state),
            keep_alive,
            epoch: Instant::now(),
            local: workers.local.map(|(worker, _)| worker),
            credentials: workers.credentials,
            logs: workers.logs,
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
        let checker = Arc::downgrade(&invoker);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEALTH_CHECK_EVERY).await;
                let Some(invoker) = checker.upgrade() else { return };
                invoker.check_health();
            }
        });
        invoker
    }

    /// A worker host joined: it gets the next worker id and is healthy until
    /// its heartbeats stop. A worker listed at the same address is gone (a
    /// new process listens there): it is dropped, and leaves the list.
    pub fn register(&self, address: &str, capacity: Capacity) -> u32 {
        let now = self.now_ms();
        let mut state = self.lock();
        let id = WorkerId(state.next_worker);
        state.next_worker += 1;
        let stale: Vec<WorkerId> = state
            .members
            .iter()
            .filter(|(_, m)| m.address == address && m.liveness.is_some())
            .map(|(id, _)| *id)
            .collect();
        for old in stale {
            state.drop_worker(old);
            state.members.remove(&old);
            state.workers.retain(|w| w.id != old);
        }
        state.workers.push(ignis_placement::Worker::new(id, capacity.memory_mb, capacity.cpus));
        let timeout = ignis_cluster::HEARTBEAT_TIMEOUT.as_millis() as u64;
        let member = Member {
            backend: Backend::Remote(RemoteWorker::new(address, self.credentials.clone())),
            address: address.to_string(),
            liveness: Some(Liveness::new(now, timeout)),
        };
        state.members.insert(id, member);
        eprintln!("ignis: {id} joined from {address} ({} MB, {} CPUs)", capacity.memory_mb, capacity.cpus);
        id.0
    }

    /// A heartbeat from worker `id`; false if it is unknown or unhealthy (it must register again).
    pub fn heartbeat(&self, id: u32) -> bool {
        let now = self.now_ms();
        let mut state = self.lock();
        let beat = match state.members.get_mut(&WorkerId(id)).and_then(|m| m.liveness.as_mut()) {
            Some(liveness) => liveness.beat(now),
            None => false,
        };
        if !beat {
            state.drop_worker(WorkerId(id));
        }
        beat
    }

    /// Drops the remote workers that turned unhealthy (silent too long, or their connection failed).
    fn check_health(&self) {
        let now = self.now_ms();
        let mut state = self.lock();
        let State { members, workers, .. } = &mut *state;
        let failing: Vec<WorkerId> = members
            .iter_mut()
            .filter_map(|(id, member)| {
                let liveness = member.liveness.as_mut()?;
                if matches!(&member.backend, Backend::Remote(r) if r.is_down()) {
                    liveness.fail();
                }
                let listed_healthy = workers.iter().any(|w| w.id == *id && w.healthy);
                (listed_healthy && liveness.check(now) == Health::Unhealthy).then_some(*id)
            })
            .collect();
        for id in failing {
            state.drop_worker(id);
        }
    }

    /// Every worker, oldest first.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let state = self.lock();
        state
            .workers
            .iter()
            .map(|w| {
                let member = &state.members[&w.id];
                WorkerInfo {
                    id: w.id.0,
                    address: member.address.clone(),
                    local: matches!(member.backend, Backend::Local(_)),
                    healthy: w.healthy,
                    memory_mb: w.memory_mb,
                    cpus: w.cpus,
                    used_memory_mb: w.used_memory_mb,
                    sandboxes: w.sandboxes(),
                }
            })
            .collect()
    }

    /// Where remote workers' log lines go: the server's log writer.
    pub fn log_sink(&self) -> &mpsc::Sender<LogBatch> {
        &self.logs
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
            if let Some(handle) = state.forget(id) {
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
            if let Some(handle) = state.forget(id) {
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
        let started = self.start_sandbox(id, &target, "provisioned-concurrency").await;
        let prepared = match started {
            Ok(handle) => handle.prepare().await,
            Err(e) => Err(match e {
                StartError::Entrypoint(message) | StartError::Host(message) => message,
                StartError::ShuttingDown => "Ignis is shutting down".into(),
            }),
        };
        let now = self.now_ms();
        let mut state = self.lock();
        let event = if prepared.is_ok() { Event::Ready } else { Event::InitFailed };
        if state.pool.report(id, event, now) != Ok(ignis_assignment::State::Idle) {
            if let Some(handle) = state.forget(id) {
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
        let timeout = Duration::from_secs(target.record.timeout_s.into());
        for _ in 0..MAX_ATTEMPTS {
            let (reservation, handle) = match self.reserve(&key, &target, &invocation.request_id).await {
                Ok(Reserved::Sandbox(reservation, handle)) => (reservation, handle),
                Ok(Reserved::Failed(outcome)) => return Ok(outcome),
                Err(e) => return Err(e),
            };
            let result = handle.invoke(invocation, timeout).await;
            let id = reservation.id();
            let now = self.now_ms();
            {
                let mut state = self.lock();
                if matches!(reservation, Reservation::Cold(_)) {
                    let _ = state.pool.report(id, Event::InitDone, now);
                }
                let reusable = matches!(&result, Ok(outcome) if outcome.reusable);
                let event = if reusable { Event::Released } else { Event::Failed };
                if state.pool.report(id, event, now) != Ok(ignis_assignment::State::Idle) {
                    if let Some(handle) = state.forget(id) {
                        handle.kill();
                    }
                }
            }
            match result {
                Ok(outcome) => return Ok(outcome),
                // The sandbox died, or its worker was unreachable, before a runtime took the event: run it elsewhere.
                Err(Failure::Untaken(untouched)) => {
                    self.check_health();
                    invocation = untouched;
                }
                // Its worker went down during the invocation: it may have run; the answer is lost.
                Err(Failure::Lost(message)) => {
                    self.check_health();
                    return Err(ApiError::Service(message));
                }
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
                    return match self.start_sandbox(id, target, "on-demand").await {
                        Ok(handle) => Ok(Reserved::Sandbox(reservation, handle)),
                        Err(e) => {
                            let _ = self.lock().pool.report(id, Event::InitFailed, self.now_ms());
                            start_failure(e, request_id).map(Reserved::Failed)
                        }
                    };
                }
            }
        }
    }

    /// Places sandbox `id` (see [`State::place`]) and starts it there; it
    /// joins the handle map unless its worker was lost meanwhile.
    async fn start_sandbox(&self, id: SandboxId, target: &Target, initialization: &str) -> Result<Handle, StartError> {
        let needs = Needs { function: function_key(target), memory_mb: target.record.memory_mb.into() };
        let placed = self.lock().place(id, needs);
        let backend = placed.map_err(|refusal| {
            StartError::Host(format!("no worker can take a sandbox of {} MB: {refusal}", needs.memory_mb))
        })?;
        let spec = spec(target, initialization);
        let started = match backend {
            Backend::Local(worker) => worker.start(Arc::new(spec)).await.map(Handle::Local),
            Backend::Remote(worker) => worker.start(&spec, &target.record.code_sha256_hex).await.map(Handle::Remote),
        };
        let mut state = self.lock();
        match started {
            Ok(handle) if state.placed.contains_key(&id) => {
                state.handles.insert(id, handle.clone());
                Ok(handle)
            }
            Ok(handle) => {
                handle.kill();
                Err(StartError::Host("the worker was lost while the sandbox started".into()))
            }
            Err(e) => {
                state.forget(id);
                Err(e)
            }
        }
    }

    fn discard(&self, id: SandboxId) {
        let mut state = self.lock();
        let _ = state.pool.report(id, Event::Failed, 0);
        if let Some(handle) = state.forget(id) {
            handle.kill();
        }
    }

    /// Ends every sandbox and waits for their cleanup (remote ones: until
    /// their worker acknowledged, briefly).
    pub async fn shutdown(&self) {
        let remote: Vec<Arc<RemoteSandbox>> = {
            let mut state = self.lock();
            state.pool.drain();
            let ids: Vec<SandboxId> = state.handles.keys().copied().collect();
            ids.into_iter()
                .filter_map(|id| match state.forget(id) {
                    Some(Handle::Remote(handle)) => Some(handle),
                    _ => None,
                })
                .collect()
        };
        let mut ends = tokio::task::JoinSet::new();
        for handle in remote {
            ends.spawn(async move { handle.end().await });
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), ends.join_all()).await;
        if let Some(worker) = &self.local {
            worker.shutdown().await;
        }
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

/// The revision, as placement's mixing rule tells functions apart.
fn function_key(target: &Target) -> FunctionKey {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    revision_key(target).hash(&mut hasher);
    FunctionKey(hasher.finish())
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
        code_hold: record.code.hold().map(|hold| Box::new(hold.clone()) as Box<dyn Send + Sync>),
    }
}
