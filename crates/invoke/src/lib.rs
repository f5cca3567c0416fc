//! The worker manager: every invocation (the sync API, asynchronous events,
//! event source mappings, provisioned concurrency) enters here, and goes
//! admission → assignment → placement → worker.
//!
//! - [`admission`]: concurrency slots from the region's [`Counter`]
//!   ([`counter`]: the seam, with [`LocalCounter`] over `ignis-counting`) and
//!   the scaling rate, local to this front end. An invocation takes a slot
//!   before it reserves a sandbox and holds it (an [`Admitted`] guard, moved
//!   into its task) until it ends, however it ends.
//!   Starting a new sandbox also asks the scaling rate; a refusal throttles.
//! - The [`Invoker`] (this module): the assignment pool (`ignis-assignment`)
//!   keyed by [`Revision`], the map from sandbox ids to their [`Sandbox`]
//!   handles, and the provisioned revisions. Each invocation runs in a task of
//!   its own, so a client that goes away does not strand a sandbox half-used:
//!   the task finishes the invocation and returns the sandbox.
//! - [`assignment`]: the seam through which a cluster's front end runs a
//!   function's invocations on the front end leading its partition
//!   ([`Invoker::set_assignment`]; that front end runs what it is sent with
//!   [`Invoker::run_forwarded`]).
//! - [`membership`]: the seam for which worker hosts the region has (members
//!   with a lease: register, heartbeat, expiry), with [`LocalMembership`]
//!   beside it; the invoker holds an `Arc<dyn Membership>`.
//! - `placements`: what stays local to this invoker: the connection to each
//!   worker, its capacity record, the local worker, and which worker each
//!   sandbox is on (see [`membership`] for the split).
//! - [`backend`]: the [`WorkerBackend`] and [`Sandbox`] traits, with the local
//!   worker and remote worker hosts behind them; `fake` (feature `fake`) is an
//!   in-memory one for tests.
//! - [`from_record`]: a registry record as a [`Target`] (the one place).
//! - [`metrics`]: Lambda's per-function metrics, recorded where each
//!   invocation ends, under a [`metrics::LabelCap`] that bounds their labels.
//! - [`activity`]: each function's last hour, minute by minute, for the
//!   console ([`Invoker::activity_points`], [`Invoker::activity_totals`]).
//! - [`credentials`]: the session credentials every new sandbox gets in its
//!   environment, from the [`CredentialSource`] the server sets
//!   ([`Invoker::set_credential_source`]); a sandbox whose credentials are
//!   within [`credentials::RENEW_BEFORE`] of their expiry is ended, not reused.
//!   (Where a sandbox reaches Ignis's APIs, `AWS_ENDPOINT_URL`, is its
//!   worker's to say: the gateway of its host's sandbox network.)
//!
//! # API boundary
//!
//! Callers describe what to run as a [`Target`] (a [`Function`]: revision,
//! limits, environment, code; the invoker knows nothing of the registry's
//! records) and call [`Invoker::invoke`] (or [`Invoker::admit`] then
//! [`Invoker::invoke_admitted`]), [`Invoker::provision`] /
//! [`Invoker::allocation`], [`Invoker::retire`] when a function changes,
//! [`Invoker::register`] / [`Invoker::heartbeat`] for worker hosts,
//! [`Invoker::run_forwarded`] for invocations another front end sends,
//! [`Invoker::adopt`] for the sandboxes a cluster's front end that is gone left
//! on worker hosts, and [`Invoker::shutdown`]. A function's own failures are [`Outcome`]s; the
//! platform's are [`InvokeError`]s. Time comes from the [`SharedClock`] given
//! to [`Invoker::new`] (or [`Invoker::with_membership`], which takes the
//! region's [`Membership`]; [`Admission::over`] takes its [`Counter`]).
//!
//! # Locks
//!
//! The invoker's state mutex, the placements' mutex, the local counter's and
//! the scaling rate's mutexes are each held only for map, pool and record
//! updates, never across an await. The only nesting is invoker state →
//! placements (placing, forgetting a sandbox); the metrics' label cap is
//! locked alone, to look one function up; placements never call back
//! into the invoker, admission's locks are never held with another, and the
//! [`Membership`] is called holding no lock of the invoker's.
//!
//! # Workers
//!
//! A new sandbox goes where `ignis_placement::Packing` says, from each
//! worker's capacity and the memory its sandboxes reserve (a sandbox's
//! reservation is added when it is placed, before it starts, and removed
//! whenever it leaves the handle map: [`Invoker::forget`] is the one way out).
//! When no worker has room, idle sandboxes make it: idle sandboxes are a
//! cache, not a reservation, so the ones `ignis_placement::evict` picks
//! (ordinary idle ones of any account, least recently used first, on the one
//! worker that then fits) are killed and their memory released before the
//! new one is placed; busy, initialising and provisioned sandboxes are never
//! evicted. A remote worker whose heartbeats stop for
//! [`ignis_cluster::HEARTBEAT_TIMEOUT`], or whose connection fails, is
//! unhealthy for good: it gets no new sandbox, its sandboxes leave the pool
//! and the handle map, and every call in flight to it ends at once (the
//! invocation answers [`InvokeError::WorkerLost`], or runs elsewhere if it
//! never reached a runtime). The health check runs every 200 ms.

pub mod activity;
pub mod admission;
pub mod assignment;
pub mod backend;
pub mod counter;
pub mod credentials;
pub mod detached;
mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod from_record;
pub mod membership;
pub mod metrics;
mod placements;
#[cfg(test)]
mod seam_tests;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ignis_assignment::{Event, Pool, Reservation, SandboxId};
use ignis_clock::SharedClock;
use ignis_cluster::owner::OwnerSource;
use ignis_cluster::{Capacity, RemoteWorker};
use ignis_placement::{Eviction, FunctionKey, Needs, Refusal, WorkerId};
use ignis_sigv4::Credentials;
use ignis_worker::{
    Completion, FunctionSpec, ImageLaunch, Invocation, LogBatch, LogFormat, Outcome, RuntimeBase, StartError, Worker,
};
use tokio::sync::mpsc;

pub use admission::{Admission, Admitted};
pub use backend::{BoxFuture, Failure, Listed, LocalWorker, RemoteHost, Sandbox, Tag, WorkerBackend};
pub use error::InvokeError;
pub use ignis_ids::Revision;
pub use counter::{Counter, LocalCounter, Slot};
pub use credentials::CredentialSource;
pub use membership::{LocalMembership, Membership, MembershipError};
use activity::Activity;
use membership::{Beat, Joined};
use placements::{Dropped, Placements, Plan};
pub use placements::WorkerInfo;

/// How many sandboxes an invocation may try when they die before taking it.
const MAX_ATTEMPTS: usize = 3;

/// How often remote workers' health is checked.
pub const HEALTH_CHECK_EVERY: Duration = Duration::from_millis(200);

/// What the invoker needs to know of a function revision to run it.
#[derive(Clone)]
pub struct Function {
    /// Account, name and revision id: sandboxes are reused only within it.
    pub revision: Revision,
    /// Which life of the function this is (`ignis_registry::FunctionRecord::incarnation`): its sandboxes'
    /// credentials name it.
    pub incarnation: u64,
    /// `$LATEST` or the version's number.
    pub version: String,
    pub memory_mb: u32,
    /// `/tmp`'s size.
    pub ephemeral_mb: u32,
    pub timeout: Duration,
    /// The runtime's name (`provided.al2023`).
    pub runtime: String,
    pub handler: String,
    /// The function's own environment variables, in order.
    pub environment: Vec<(String, String)>,
    /// `/aws/lambda/NAME`.
    pub log_group: String,
    /// `LoggingConfig`'s format and levels.
    pub log_format: LogFormat,
    /// Hex SHA-256 of the code (names the tree for remote workers).
    pub code_sha256_hex: String,
    /// The unpacked code tree.
    pub code_dir: PathBuf,
    /// The function's layers merged into one code tree, for `/opt` (`None`:
    /// no layers); its directory is named by its SHA-256, as every code tree's.
    pub opt_dir: Option<PathBuf>,
    /// Keeps the code tree (and the `/opt` tree) on disk while a sandbox of it lives.
    pub code_hold: Option<Arc<dyn Send + Sync>>,
    /// A function of package type `Image`: the image to run instead of a
    /// code tree (`None` for a zip function).
    pub image: Option<FunctionImage>,
    /// A zip function's runtime base, its sandbox's root (`None`: the host's base).
    pub base: Option<FunctionBase>,
    /// The networks the function is attached to, with the ranges they allow as this target was made (`None`: no
    /// network).
    pub network: Option<ignis_net::Attachment>,
}

/// The runtime base of a zip function (made by [`from_record::target`]; see [`from_record::base_launch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionBase {
    /// The account whose repository holds the base image.
    pub account: String,
    /// The base image and what runs on it (in `/var/task`); its environment goes under Lambda's variables.
    pub image: FunctionImage,
}

/// What a sandbox of an image function runs (made by
/// [`from_record::target`]; see [`from_record::image_launch`] for how the
/// command and working directory follow from the image and `ImageConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionImage {
    /// The prepared image (the image preparer's id).
    pub prepared_id: String,
    /// `sha256:<hex>` of the image manifest.
    pub manifest_digest: String,
    /// The repository in Ignis's registry.
    pub repository: String,
    /// The program and its arguments: effective ENTRYPOINT followed by effective CMD
    /// (empty: the image names nothing to run, and the runtime's start fails).
    pub command: Vec<String>,
    /// The working directory (`/` when neither the image nor `ImageConfig` sets one).
    pub workdir: String,
    /// The image's own environment, in order. The function's `Environment`
    /// wins over it; merging is the worker's.
    pub env: Vec<(String, String)>,
}

/// What the caller wants run: a function, in a region.
#[derive(Clone)]
pub struct Target {
    pub function: Arc<Function>,
    pub region: String,
}

/// Makes the backend of a worker host that registered at an address.
pub type Connect = Box<dyn Fn(&str) -> Arc<dyn WorkerBackend> + Send + Sync>;

/// Where sandboxes run: the local worker (if the server keeps one), how to
/// reach remote workers that register, and the log writer their lines go to.
pub struct Workers {
    pub local: Option<(Arc<dyn WorkerBackend>, Capacity)>,
    pub connect: Connect,
    pub logs: mpsc::Sender<LogBatch>,
}

impl Workers {
    /// The server's workers: `local` (if any), and worker hosts reached over
    /// the network with calls signed by `credentials`.
    pub fn hosts(local: Option<(Arc<Worker>, Capacity)>, credentials: Credentials, logs: mpsc::Sender<LogBatch>) -> Workers {
        Workers::owned_hosts(local, credentials, None, logs)
    }

    /// [`Workers::hosts`] for a cluster's front end: each sandbox it starts on a worker host is `owner`'s.
    pub fn owned_hosts(
        local: Option<(Arc<Worker>, Capacity)>,
        credentials: Credentials,
        owner: Option<OwnerSource>,
        logs: mpsc::Sender<LogBatch>,
    ) -> Workers {
        Workers {
            local: local.map(|(worker, capacity)| (Arc::new(LocalWorker(worker)) as Arc<dyn WorkerBackend>, capacity)),
            connect: Box::new(move |address| {
                Arc::new(RemoteHost(RemoteWorker::owned(address, credentials.clone(), owner.clone())))
            }),
            logs,
        }
    }
}

/// What [`Invoker::provision`] keeps: `requested` initialised sandboxes of `target`, as configured at `since_ms`.
pub struct Provisioned {
    pub target: Target,
    pub requested: u32,
    pub since_ms: i64,
}

/// Provisioned sandboxes of a revision: how many are ready, and why the last start failed, if it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub allocated: u32,
    pub failure: Option<String>,
}

/// One revision's provisioned concurrency.
#[derive(Default)]
struct Provision {
    /// When the configuration was last set: a new setting tries again after a failure.
    since_ms: i64,
    /// Why the last sandbox started for it failed its init; no more are started until the setting changes.
    failure: Option<String>,
}

enum Reserved {
    Sandbox(Reservation, Arc<dyn Sandbox>),
    /// The sandbox could not start; this is the invocation's answer.
    Failed(Outcome),
}

/// Why a sandbox did not start.
enum StartFailure {
    Worker(StartError),
    Refused { memory_mb: u64, refusal: Refusal },
    LostWhileStarting,
}

impl StartFailure {
    /// The reason a provisioned sandbox shows.
    fn reason(self) -> String {
        match self {
            StartFailure::Worker(
                StartError::Entrypoint(message) | StartError::Host(message) | StartError::Throttled(message),
            ) => message,
            StartFailure::Worker(StartError::ShuttingDown) => InvokeError::ShuttingDown.to_string(),
            StartFailure::Refused { memory_mb, refusal } => format!("no worker can take a sandbox of {memory_mb} MB: {refusal}"),
            StartFailure::LostWhileStarting => "the worker was lost while the sandbox started".into(),
        }
    }

    /// An on-demand invocation's answer: a missing entry point is the function's error.
    fn answer(self, request_id: &str) -> Result<Outcome, InvokeError> {
        match self {
            StartFailure::Worker(StartError::Entrypoint(message)) => Ok(Outcome {
                completion: Completion::Failed {
                    error_type: "Runtime.InvalidEntrypoint",
                    message: format!("RequestId: {request_id} Error: {message}"),
                },
                log: String::new(),
                reusable: false,
            }),
            StartFailure::Worker(StartError::Host(message)) => Err(InvokeError::StartFailed(message)),
            StartFailure::Worker(StartError::Throttled(message)) => Err(InvokeError::StartThrottled(message)),
            StartFailure::Worker(StartError::ShuttingDown) => Err(InvokeError::ShuttingDown),
            StartFailure::Refused { memory_mb, refusal: Refusal::NoHealthyWorker } => {
                Err(InvokeError::NoHealthyWorker { memory_mb })
            }
            StartFailure::Refused { memory_mb, refusal } => Err(InvokeError::NoRoom { memory_mb, refusal }),
            StartFailure::LostWhileStarting => Err(InvokeError::LostWhileStarting),
        }
    }
}

/// What every new sandbox gets besides its function's environment (see [`credentials`]).
#[derive(Default)]
struct SandboxEnv {
    credentials: Option<Arc<dyn CredentialSource>>,
}

/// The invoker's own state (see the module docs for the lock order).
struct State {
    pool: Pool<Revision>,
    handles: HashMap<SandboxId, Arc<dyn Sandbox>>,
    /// Revisions with provisioned concurrency, as of the last [`Invoker::provision`].
    provisioned: HashMap<Revision, Provision>,
}

pub struct Invoker {
    admission: Arc<Admission>,
    state: Mutex<State>,
    membership: Arc<dyn Membership>,
    /// Which front end runs a function's invocations, in a cluster (set once).
    assignment: std::sync::OnceLock<Arc<dyn assignment::Assignment>>,
    placements: Placements,
    keep_alive: Duration,
    clock: SharedClock,
    epoch: Instant,
    connect: Connect,
    logs: mpsc::Sender<LogBatch>,
    /// Set by the server; read when a sandbox starts (its lock is never held with another).
    sandbox_env: std::sync::RwLock<SandboxEnv>,
    /// Lambda's per-function metrics (their label cap's mutex is held only to look one function up).
    metrics: metrics::FunctionMetrics,
    /// Each function's last hour, for the console (its lock is never held with another).
    activity: Mutex<Activity>,
}

impl Invoker {
    /// An invoker over `workers`, admitting through `admission`; idle
    /// sandboxes live `keep_alive`. Starts the keep-alive reaper and the
    /// health check (tasks that end with the invoker); needs a tokio runtime.
    pub fn new(workers: Workers, admission: Arc<Admission>, keep_alive: Duration, clock: SharedClock) -> Arc<Invoker> {
        let timeout = ignis_cluster::HEARTBEAT_TIMEOUT.as_millis() as u64;
        Invoker::with_membership(workers, admission, Arc::new(LocalMembership::new(timeout)), keep_alive, clock)
    }

    /// [`Invoker::new`] with the region's worker hosts kept by `membership`.
    pub fn with_membership(
        workers: Workers,
        admission: Arc<Admission>,
        membership: Arc<dyn Membership>,
        keep_alive: Duration,
        clock: SharedClock,
    ) -> Arc<Invoker> {
        let state = State { pool: Pool::new(), handles: HashMap::new(), provisioned: HashMap::new() };
        let invoker = Arc::new(Invoker {
            admission,
            state: Mutex::new(state),
            membership,
            assignment: std::sync::OnceLock::new(),
            placements: Placements::new(workers.local),
            keep_alive,
            epoch: clock.instant(),
            clock,
            connect: workers.connect,
            logs: workers.logs,
            sandbox_env: std::sync::RwLock::default(),
            metrics: metrics::FunctionMetrics::new(metrics::DEFAULT_FUNCTION_LABELS),
            activity: Mutex::new(Activity::new()),
        });
        let reaper = Arc::downgrade(&invoker);
        let period = (keep_alive / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        let clock = invoker.clock.clone();
        tokio::spawn(async move {
            loop {
                clock.sleep(period).await;
                let Some(invoker) = reaper.upgrade() else { return };
                invoker.expire();
            }
        });
        let checker = Arc::downgrade(&invoker);
        let clock = invoker.clock.clone();
        tokio::spawn(async move {
            loop {
                clock.sleep(HEALTH_CHECK_EVERY).await;
                let Some(invoker) = checker.upgrade() else { return };
                invoker.check_health();
            }
        });
        invoker
    }

    /// Every sandbox started from now on gets credentials minted by `source`
    /// in its environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`), and is not reused once they near their expiry.
    pub fn set_credential_source(&self, source: Arc<dyn CredentialSource>) {
        self.sandbox_env.write().unwrap_or_else(|e| e.into_inner()).credentials = Some(source);
    }

    /// Sends each invocation of a function whose partition another front end leads to that front end (a
    /// cluster's front end; set once, before any invocation).
    pub fn set_assignment(&self, assignment: Arc<dyn assignment::Assignment>) {
        let _ = self.assignment.set(assignment);
    }

    /// The assignment [`Invoker::set_assignment`] set, if any.
    pub fn assignment(&self) -> Option<&Arc<dyn assignment::Assignment>> {
        self.assignment.get()
    }

    /// Runs an invocation another front end forwarded to this one, the leader of its function's partition: on
    /// this front end's sandboxes, never forwarded again; the sender admitted it (see [`assignment`]).
    pub async fn run_forwarded(self: &Arc<Self>, target: Target, invocation: Invocation) -> Result<Outcome, InvokeError> {
        let invoker = self.clone();
        let work = async move {
            let labels = invoker.metrics.labels(&target.function);
            invoker.attempts(&target, invocation, &labels, false).await
        };
        detached::to_the_end(work, |panic| Err(InvokeError::Task(panic))).await
    }

    /// Admission, for reservations (PutFunctionConcurrency and the like).
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// A worker host joined: it gets the next worker id and is healthy until
    /// its heartbeats stop. A worker listed at the same address is gone (a
    /// new process listens there): it is dropped, and leaves the list.
    pub async fn register(&self, address: &str, capacity: Capacity) -> Result<WorkerId, MembershipError> {
        let Joined { id, replaced } = self.membership.register(address, capacity, self.now_ms()).await?;
        let dropped: Vec<Dropped> = replaced.iter().filter_map(|&old| self.placements.down(old)).collect();
        for old in replaced {
            self.placements.remove(old);
        }
        // What this front end may place on it: the membership's listing (its share of a worker other front ends
        // place on too).
        let share = self.membership.members().into_iter().find(|m| m.id == id).map_or(capacity, |m| m.capacity);
        self.placements.adopt(id, address, share, &self.connect);
        self.forget_dropped(dropped);
        tracing::info!(worker = %id, address, memory_mb = capacity.memory_mb, cpus = capacity.cpus, "worker joined");
        Ok(id)
    }

    /// A heartbeat from worker `id`; false if it is unknown or unhealthy (it must register again).
    pub async fn heartbeat(&self, id: WorkerId) -> bool {
        match self.membership.heartbeat(id, self.now_ms()).await {
            Beat::Renewed => true,
            Beat::Expired => {
                self.forget_dropped(self.placements.down(id));
                false
            }
            Beat::Unknown => false,
        }
    }

    /// Drops the remote workers that turned unhealthy (silent too long, or
    /// their connection failed), and follows the membership: members that
    /// joined through another front end become workers to place on, members
    /// listed as gone are down here too.
    fn check_health(&self) {
        let mut gone = Vec::new();
        for member in self.membership.members() {
            if member.healthy {
                self.placements.adopt(member.id, &member.address, member.capacity, &self.connect);
            } else if self.placements.knows(member.id) {
                gone.push(member.id);
            }
        }
        let failed = self.placements.unreachable().into_iter().filter(|&id| self.membership.fail(id));
        gone.extend(failed.chain(self.membership.check(self.now_ms())));
        self.forget_dropped(gone.into_iter().filter_map(|id| self.placements.down(id)));
    }

    /// The dropped workers' sandboxes leave the pool and the handle map
    /// (their reservations are already gone).
    fn forget_dropped(&self, dropped: impl IntoIterator<Item = Dropped>) {
        for Dropped { worker, address, lost } in dropped {
            {
                let mut state = self.lock();
                for id in &lost {
                    state.pool.remove(*id);
                    state.handles.remove(id);
                }
            }
            tracing::warn!(%worker, address = %address, sandboxes_dropped = lost.len(), "worker unhealthy");
        }
    }

    /// The region's front ends as the membership sees them (`None` with one front end).
    pub fn front_ends(&self) -> Option<ignis_cluster::owner::FrontEnds> {
        self.membership.front_ends()
    }

    /// Every worker, oldest first.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.placements.workers(&self.membership.members())
    }

    /// Where remote workers' log lines go: the server's log writer.
    pub fn log_sink(&self) -> &mpsc::Sender<LogBatch> {
        &self.logs
    }

    fn now_ms(&self) -> u64 {
        self.clock.instant().saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a sandbox out of the handle map and gives back its reservation:
    /// the only way a sandbox leaves them.
    fn forget(&self, state: &mut State, id: SandboxId) -> Option<Arc<dyn Sandbox>> {
        self.placements.release(id);
        state.handles.remove(&id)
    }

    /// Chooses a worker for sandbox `id` and reserves its memory there. When
    /// no worker has room, idle sandboxes are evicted to make it.
    fn place(&self, state: &mut State, id: SandboxId, needs: Needs) -> Result<Arc<dyn WorkerBackend>, Refusal> {
        let mut refused = Refusal::NoHealthyWorker;
        // A worker dropped between the choice and the reservation: choose again.
        for _ in 0..MAX_ATTEMPTS {
            let idle = state.pool.evictable();
            let worker = match self.placements.plan(&needs, &idle) {
                Plan::Worker(worker) => worker,
                Plan::Evict(Eviction { worker, victims }, refusal) => {
                    refused = refusal;
                    self.evict(state, worker, &victims, &needs);
                    worker
                }
                Plan::Refused(refusal) => return Err(refusal),
            };
            if let Some(backend) = self.placements.take(worker, id, needs) {
                return Ok(backend);
            }
        }
        Err(refused)
    }

    /// Idle sandboxes are a cache, not a reservation: ends `victims` (chosen
    /// by `ignis_placement::evict`) so that `needs` fits.
    fn evict(&self, state: &mut State, worker: ignis_placement::WorkerId, victims: &[SandboxId], needs: &Needs) {
        for &victim in victims {
            if state.pool.evict(victim).is_ok()
                && let Some(handle) = self.forget(state, victim)
            {
                handle.kill();
            }
        }
        if !victims.is_empty() {
            tracing::info!(%worker, evicted = victims.len(), memory_mb = needs.memory_mb, "idle sandboxes evicted for a new sandbox");
        }
    }

    /// Kills idle sandboxes whose credentials near their expiry (provisioned
    /// ones are started again by the next [`Invoker::provision`]).
    fn renew(&self, state: &mut State) {
        for id in state.pool.renew(self.now_ms()) {
            if let Some(handle) = self.forget(state, id) {
                handle.kill();
            }
        }
    }

    /// Kills idle sandboxes past the keep-alive, or whose credentials near their expiry.
    fn expire(&self) {
        let now = self.now_ms();
        let mut state = self.lock();
        self.renew(&mut state);
        for id in state.pool.expire(now, self.keep_alive.as_millis() as u64) {
            if let Some(handle) = self.forget(&mut state, id) {
                handle.kill();
            }
        }
        metrics::sandboxes(state.pool.counts());
        drop(state);
        self.activity().prune(self.unix_secs());
    }

    /// The function changed or is gone: the revision's idle sandboxes die
    /// now, its busy ones when their invocation ends.
    pub fn retire(&self, revision: &Revision) {
        let mut state = self.lock();
        for id in state.pool.retire(revision) {
            if let Some(handle) = self.forget(&mut state, id) {
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
            let keys: HashSet<&Revision> = wanted.iter().map(|w| &w.target.function.revision).collect();
            let dropped: Vec<Revision> = state.provisioned.keys().filter(|k| !keys.contains(k)).cloned().collect();
            for key in dropped {
                let (initialising, ready) = state.pool.provisioned(&key);
                state.pool.unprovision(&key, initialising + ready, now);
                state.provisioned.remove(&key);
            }
            for Provisioned { target, requested, since_ms } in wanted {
                let key = target.function.revision.clone();
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
                    starts.push((state.pool.provision(&key), target.clone()));
                }
            }
        }
        for (id, target) in starts {
            tokio::spawn(self.clone().start_provisioned(id, target));
        }
    }

    /// Starts one provisioned sandbox and waits for its runtime's init; then it is idle, ready for invocations.
    async fn start_provisioned(self: Arc<Self>, id: SandboxId, target: Target) {
        let prepared = match self.start_sandbox(id, &target, "provisioned-concurrency").await {
            Ok(handle) => handle.prepare().await,
            Err(failure) => Err(failure.reason()),
        };
        let now = self.now_ms();
        let mut state = self.lock();
        let event = if prepared.is_ok() { Event::Ready } else { Event::InitFailed };
        if state.pool.report(id, event, now) != Ok(ignis_assignment::State::Idle)
            && let Some(handle) = self.forget(&mut state, id)
        {
            handle.kill();
        }
        if let (Err(reason), Some(provision)) = (prepared, state.provisioned.get_mut(&target.function.revision)) {
            provision.failure = Some(reason);
        }
    }

    /// How far the provisioned concurrency of `revision` is.
    pub fn allocation(&self, revision: &Revision) -> Allocation {
        let state = self.lock();
        let (_, ready) = state.pool.provisioned(revision);
        let failure = state.provisioned.get(revision).and_then(|p| p.failure.clone());
        Allocation { allocated: ready as u32, failure }
    }

    /// Runs one invocation to its end if admission gives it a slot now (else
    /// [`InvokeError::Throttled`]); if the caller stops waiting, it goes on in a
    /// task of its own ([`detached::to_the_end`]), which holds the slot until
    /// the invocation ends.
    pub async fn invoke(self: &Arc<Self>, target: Target, invocation: Invocation) -> Result<Outcome, InvokeError> {
        let admitted = match self.admit(target.function.revision.account.as_str(), &target.function.revision.function).await {
            Ok(admitted) => admitted,
            Err(throttled) => {
                self.metrics.labels(&target.function).throttle();
                self.activity().throttle(&activity::key(&target.function), self.unix_secs());
                return Err(throttled);
            }
        };
        self.invoke_admitted(target, invocation, admitted).await
    }

    /// Gives the first `limit` distinct function versions invoked from now on metric labels of their own, and
    /// every later one `_other` (see [`metrics`]); the server calls it before any invocation.
    pub fn cap_function_labels(&self, limit: usize) {
        self.metrics.set_limit(limit);
    }

    /// A concurrency slot for an invocation of `function` (slots are per
    /// function, whatever the version), or the throttle.
    pub async fn admit(&self, account: &str, function: &str) -> Result<Admitted, InvokeError> {
        self.admission.admit(account, function).await
    }

    /// [`Invoker::invoke`] with the slot already taken.
    pub async fn invoke_admitted(
        self: &Arc<Self>,
        target: Target,
        invocation: Invocation,
        admitted: Admitted,
    ) -> Result<Outcome, InvokeError> {
        let invoker = self.clone();
        let work = async move { invoker.run(target, invocation, admitted).await };
        detached::to_the_end(work, |panic| Err(InvokeError::Task(panic))).await
    }

    async fn run(&self, target: Target, invocation: Invocation, admitted: Admitted) -> Result<Outcome, InvokeError> {
        // Released when this returns (or the task is dropped), whatever the outcome.
        let _admitted = admitted;
        let labels = self.metrics.labels(&target.function);
        let _executing = labels.executing();
        let key = activity::key(&target.function);
        self.activity().start(&key, self.unix_secs());
        let result = self.attempts(&target, invocation, &labels, true).await;
        labels.finished(&result);
        self.activity().finish(&key, self.unix_secs(), activity::ended(&result));
        result
    }

    fn activity(&self) -> MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unix_secs(&self) -> u64 {
        self.clock.now_ms() / 1000
    }

    /// The last hour of `function` of `account`, minute by minute, oldest first (see [`activity`]).
    pub fn activity_points(&self, account: &str, function: &str) -> Vec<activity::Point> {
        self.activity().points(&(account.to_string(), function.to_string()), self.unix_secs())
    }

    /// The last hour's totals of every function of `account` that ran or was throttled in it.
    pub fn activity_totals(&self, account: &str) -> Vec<(String, activity::Totals)> {
        self.activity().totals(account, self.unix_secs())
    }

    /// Runs `invocation` on up to [`MAX_ATTEMPTS`] sandboxes, until one takes it; first, when `route` and another
    /// front end leads the function's partition, through that front end (a streamed response is run here).
    async fn attempts(
        &self,
        target: &Target,
        mut invocation: Invocation,
        labels: &metrics::Labels,
        route: bool,
    ) -> Result<Outcome, InvokeError> {
        let revision = &target.function.revision;
        let leader = match (route, invocation.response_stream.is_none(), self.assignment.get()) {
            (true, true, Some(assignment)) => assignment.leader(revision.account.as_str(), &revision.function),
            _ => None,
        };
        if let Some(leader) = leader {
            match leader.run(target, invocation).await {
                Ok(outcome) => return Ok(outcome),
                Err(assignment::Forwarded::Refused(e)) => return Err(e),
                Err(assignment::Forwarded::NotTaken(back)) => invocation = back,
            }
        }
        for _ in 0..MAX_ATTEMPTS {
            let (reservation, handle) = match self.reserve(target, &invocation.request_id).await? {
                Reserved::Sandbox(reservation, handle) => (reservation, handle),
                Reserved::Failed(outcome) => {
                    labels.cold_start();
                    return Ok(outcome);
                }
            };
            let provisioned = match reservation {
                Reservation::Cold(_) => {
                    labels.cold_start();
                    false
                }
                Reservation::Warm(id) => self.lock().pool.is_provisioned(id),
            };
            let in_use = provisioned.then(|| labels.on_provisioned());
            let result = handle.invoke(invocation, target.function.timeout).await;
            drop(in_use);
            let id = reservation.id();
            let now = self.now_ms();
            {
                let mut state = self.lock();
                if matches!(reservation, Reservation::Cold(_)) {
                    let _ = state.pool.report(id, Event::InitDone, now);
                }
                let reusable = matches!(&result, Ok(outcome) if outcome.reusable);
                let event = if reusable { Event::Released } else { Event::Failed };
                if state.pool.report(id, event, now) != Ok(ignis_assignment::State::Idle)
                    && let Some(handle) = self.forget(&mut state, id)
                {
                    handle.kill();
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
                    return Err(InvokeError::WorkerLost(message));
                }
            }
        }
        Err(InvokeError::KeptFailing)
    }

    /// A sandbox for `target`: an idle one, else a new one.
    async fn reserve(&self, target: &Target, request_id: &str) -> Result<Reserved, InvokeError> {
        let revision = &target.function.revision;
        loop {
            let reservation = {
                let mut state = self.lock();
                self.renew(&mut state);
                state.pool.reserve(revision)
            };
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
                    if let Err(throttled) = self.admission.may_start_sandbox(revision.account.as_str(), &revision.function) {
                        let _ = self.lock().pool.report(id, Event::InitFailed, self.now_ms());
                        return Err(throttled);
                    }
                    return match self.start_sandbox(id, target, "on-demand").await {
                        Ok(handle) => Ok(Reserved::Sandbox(reservation, handle)),
                        Err(failure) => {
                            let _ = self.lock().pool.report(id, Event::InitFailed, self.now_ms());
                            failure.answer(request_id).map(Reserved::Failed)
                        }
                    };
                }
            }
        }
    }

    /// Places sandbox `id` (see [`Invoker::place`]) and starts it there; it
    /// joins the handle map unless its worker was lost meanwhile.
    async fn start_sandbox(&self, id: SandboxId, target: &Target, initialization: &str) -> Result<Arc<dyn Sandbox>, StartFailure> {
        let needs = Needs { function: function_key(&target.function.revision), memory_mb: target.function.memory_mb.into() };
        let place = || {
            let mut state = self.lock();
            self.place(&mut state, id, needs)
        };
        let mut placed = place();
        if let Err(Refusal::NoHealthyWorker) = placed {
            // A worker host may have joined since the last health check (through another front end): look now.
            self.check_health();
            placed = place();
        }
        let backend = placed.map_err(|refusal| StartFailure::Refused { memory_mb: needs.memory_mb, refusal })?;
        let (ignis_env, renew_at_ms) = self.sandbox_variables(id, &target.function);
        let revision = &target.function.revision;
        let tag = Tag {
            account: revision.account.to_string(),
            function: revision.function.clone(),
            revision_id: revision.revision_id.clone(),
            provisioned: self.lock().pool.is_provisioned(id),
            renew_at_ms,
        };
        let started = backend.start(spec(target, initialization, ignis_env), &target.function.code_sha256_hex, tag).await;
        let mut state = self.lock();
        match started {
            Ok(handle) if self.placements.is_placed(id) => {
                state.handles.insert(id, handle.clone());
                Ok(handle)
            }
            Ok(handle) => {
                handle.kill();
                Err(StartFailure::LostWhileStarting)
            }
            Err(e) => {
                self.forget(&mut state, id);
                Err(StartFailure::Worker(e))
            }
        }
    }

    /// The credentials (minted now, if a source is set; the sandbox's renewal
    /// time is noted in the pool) of new sandbox `id`, and that renewal time in Unix milliseconds.
    fn sandbox_variables(&self, id: SandboxId, function: &Function) -> (Vec<(String, String)>, Option<u64>) {
        let source = self.sandbox_env.read().unwrap_or_else(|e| e.into_inner()).credentials.clone();
        let mut renew_at_ms = None;
        let credentials = source.map(|source| {
            let now = self.clock.now();
            let revision = &function.revision;
            let minted = source.mint(&revision.account, &revision.function, function.incarnation, now);
            let usable = credentials::usable_for(minted.expiration, now).as_millis() as u64;
            self.lock().pool.renew_at(id, self.now_ms().saturating_add(usable));
            renew_at_ms = Some(self.clock.now_ms().saturating_add(usable));
            minted
        });
        (credentials::variables(credentials.as_ref()), renew_at_ms)
    }

    /// Takes over, into this front end's table, the sandboxes on worker hosts whose front end is gone (by the
    /// membership's view: `ignis_cluster::owner`) and whose revision `wanted` says this front end runs. Each becomes
    /// idle here as it was there (a provisioned one stays provisioned until [`Invoker::provision`] says otherwise),
    /// once its host made it this front end's; one that does not fit this front end's share of its host is left to
    /// end there. How many it took.
    pub async fn adopt(&self, wanted: &(dyn Fn(&Revision) -> bool + Send + Sync)) -> usize {
        let Some(view) = self.membership.front_ends() else { return 0 };
        let mut adopted = 0;
        for (worker, backend) in self.placements.healthy_remote() {
            let listed = match backend.listed().await {
                Ok(listed) => listed,
                Err(e) => {
                    tracing::warn!(%worker, error = %e, "cannot list the sandboxes of a worker");
                    continue;
                }
            };
            // A sandbox this front end holds already (under a lease it had before) is not taken twice.
            let held: HashSet<String> = {
                let state = self.lock();
                let here = state.handles.iter().filter(|(id, _)| self.placements.worker_of(**id) == Some(worker));
                here.filter_map(|(_, handle)| handle.host_id().map(str::to_string)).collect()
            };
            for listed in listed.iter().filter(|l| !held.contains(&l.id) && ignis_cluster::owner::adoptable(l, &view)) {
                let tag = &listed.tag;
                let Some(account) = ignis_ids::AccountId::parse(&tag.account) else { continue };
                let revision = Revision { account, function: tag.function.clone(), revision_id: tag.revision_id.clone() };
                if wanted(&revision) && self.take_over(worker, &backend, listed, revision).await {
                    adopted += 1;
                }
            }
        }
        if adopted > 0 {
            tracing::info!(sandboxes = adopted, "took over the sandboxes of front ends that are gone");
        }
        adopted
    }

    /// Gives up the idle sandboxes of revisions `wanted` picks that are on worker hosts (a cluster's front end that
    /// no longer leads their functions' partition): they leave this front end's table, and their hosts keep them
    /// for the front end leading the partition now to take over ([`Invoker::adopt`]); one its host would not
    /// release ends. How many were given up.
    pub async fn release(&self, wanted: &(dyn Fn(&Revision) -> bool + Send + Sync)) -> usize {
        let handles: Vec<Arc<dyn Sandbox>> = {
            let mut state = self.lock();
            let ids = state.pool.idle_of(|revision| wanted(revision));
            let remote = ids.into_iter().filter(|id| state.handles.get(id).is_some_and(|handle| handle.host_id().is_some()));
            let remote: Vec<SandboxId> = remote.collect();
            remote
                .into_iter()
                .filter_map(|id| {
                    state.pool.remove(id);
                    self.forget(&mut state, id)
                })
                .collect()
        };
        let mut released = 0;
        for handle in handles {
            if handle.release().await {
                released += 1;
            } else {
                handle.kill();
            }
        }
        if released > 0 {
            tracing::info!(sandboxes = released, "gave up the sandboxes of partitions another front end leads now");
        }
        released
    }

    /// Takes `listed` on `worker` over as a sandbox of `revision`; whether it is now in this front end's table.
    async fn take_over(&self, worker: WorkerId, backend: &Arc<dyn WorkerBackend>, listed: &Listed, revision: Revision) -> bool {
        let needs = Needs { function: function_key(&revision), memory_mb: listed.memory_mb.into() };
        let id = {
            let mut state = self.lock();
            let id = state.pool.adopt(&revision, listed.tag.provisioned);
            if self.placements.take(worker, id, needs).is_none() {
                state.pool.remove(id);
                return false;
            }
            id
        };
        let taken = backend.take_over(listed).await;
        let now = self.now_ms();
        let mut state = self.lock();
        let handle = match taken {
            Ok(Some(handle)) if self.placements.is_placed(id) => handle,
            // Its worker was lost meanwhile.
            Ok(Some(handle)) => {
                handle.kill();
                state.pool.remove(id);
                return false;
            }
            Ok(None) | Err(_) => {
                state.pool.remove(id);
                self.forget(&mut state, id);
                return false;
            }
        };
        state.handles.insert(id, handle);
        if let Some(at) = listed.tag.renew_at_ms {
            state.pool.renew_at(id, now.saturating_add(at.saturating_sub(self.clock.now_ms())));
        }
        if listed.tag.provisioned {
            // Kept until a provisioning that does not list its revision makes it ordinary.
            state.provisioned.entry(revision).or_default();
        }
        if state.pool.report(id, Event::Ready, now) == Ok(ignis_assignment::State::Idle) {
            return true;
        }
        if let Some(handle) = self.forget(&mut state, id) {
            handle.kill();
        }
        false
    }

    fn discard(&self, id: SandboxId) {
        let mut state = self.lock();
        let _ = state.pool.report(id, Event::Failed, 0);
        if let Some(handle) = self.forget(&mut state, id) {
            handle.kill();
        }
    }

    /// Ends every sandbox and waits for their cleanup (remote ones: until
    /// their worker acknowledged, briefly), then the workers' own machinery.
    pub async fn shutdown(&self) {
        let handles: Vec<Arc<dyn Sandbox>> = {
            let mut state = self.lock();
            state.pool.drain();
            let ids: Vec<SandboxId> = state.handles.keys().copied().collect();
            ids.into_iter().filter_map(|id| self.forget(&mut state, id)).collect()
        };
        let mut ends = tokio::task::JoinSet::new();
        for handle in handles {
            ends.spawn(async move { handle.end().await });
        }
        let _ = ignis_clock::timeout(&*self.clock, Duration::from_secs(5), ends.join_all()).await;
        for backend in self.placements.backends() {
            backend.shutdown().await;
        }
    }

    /// How many sandboxes the pool holds: (initialising, idle, busy).
    pub fn counts(&self) -> (usize, usize, usize) {
        self.lock().pool.counts()
    }
}

/// The revision, as placement's mixing rule tells functions apart.
fn function_key(revision: &Revision) -> FunctionKey {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (revision.account.as_str(), &revision.function, &revision.revision_id).hash(&mut hasher);
    FunctionKey(hasher.finish())
}

/// The sandbox's view of a function: its code, limits and Lambda's environment;
/// `initialization` is `AWS_LAMBDA_INITIALIZATION_TYPE`; `ignis_env` (its
/// credentials) comes last and replaces any variable of the same name.
fn spec(target: &Target, initialization: &str, ignis_env: Vec<(String, String)>) -> FunctionSpec {
    let function = &target.function;
    let mut env: Vec<(String, String)> = vec![
        ("AWS_LAMBDA_FUNCTION_NAME".into(), function.revision.function.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION".into(), function.version.clone()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), function.memory_mb.to_string()),
        ("AWS_LAMBDA_LOG_GROUP_NAME".into(), function.log_group.clone()),
        ("AWS_LAMBDA_LOG_FORMAT".into(), function.log_format.name().into()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE".into(), initialization.into()),
        ("AWS_REGION".into(), target.region.clone()),
        ("AWS_DEFAULT_REGION".into(), target.region.clone()),
        ("AWS_EXECUTION_ENV".into(), format!("AWS_Lambda_{}", function.runtime)),
        ("_HANDLER".into(), function.handler.clone()),
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
    if let LogFormat::Json { application, .. } = function.log_format {
        env.push(("AWS_LAMBDA_LOG_LEVEL".into(), application.as_str().into()));
    }
    if let Some(image) = &function.image {
        // An image brings its own runtime: no runtime or handler of Lambda's, and its environment over Lambda's
        // defaults (its PATH, say), the function's own over both.
        env.retain(|(name, _)| name != "AWS_EXECUTION_ENV" && name != "_HANDLER");
        env.extend(image.env.iter().cloned());
    } else if let Some(base) = &function.base {
        // A base's environment adds to Lambda's, and sets the search paths (its interpreter's directories), as on
        // Lambda; Lambda's other variables stay (`TZ=:UTC`, whatever the base says). The function's own win over both.
        let lambdas: Vec<String> = env.iter().map(|(name, _)| name.clone()).collect();
        let search_path = |name: &str| name == "PATH" || name == "LD_LIBRARY_PATH";
        env.extend(base.image.env.iter().filter(|(name, _)| search_path(name) || !lambdas.contains(name)).cloned());
    }
    env.extend(function.environment.iter().cloned());
    // Each name once, in its first place, with its last value.
    let mut last: std::collections::HashMap<String, String> = env.iter().cloned().collect();
    let mut env: Vec<(String, String)> =
        env.into_iter().filter_map(|(name, _)| last.remove(&name).map(|value| (name, value))).collect();
    env.retain(|(name, _)| !ignis_env.iter().any(|(ours, _)| ours == name));
    env.extend(ignis_env);
    FunctionSpec {
        code_dir: function.code_dir.clone(),
        memory_mb: function.memory_mb,
        tmp_mb: function.ephemeral_mb,
        timeout: function.timeout,
        env,
        version: function.version.clone(),
        log_account: function.revision.account.to_string(),
        log_group: function.log_group.clone(),
        log_format: function.log_format,
        code_hold: function.code_hold.clone().map(|hold| Box::new(hold) as Box<dyn Send + Sync>),
        opt_dir: function.opt_dir.clone(),
        image: function.image.as_ref().map(launch),
        base: function.base.as_ref().map(|base| RuntimeBase { account: base.account.clone(), launch: launch(&base.image) }),
        network: function.network.clone(),
    }
}

/// What a sandbox of `image` runs.
fn launch(image: &FunctionImage) -> ImageLaunch {
    ImageLaunch {
        digest: image.manifest_digest.clone(),
        repository: image.repository.clone(),
        command: image.command.clone(),
        workdir: image.workdir.clone(),
    }
}
