//! The worker: starts sandboxes, serves each one the Lambda Runtime API, hands
//! it invocations, and turns what happens into an [`Outcome`] and log lines.
//!
//! # Threads and ownership
//!
//! - Sandboxes are built by dedicated, long-lived spawner threads (the sandbox's
//!   parent-death signal is tied to the thread that created it, so it must not
//!   be a pool thread that may exit).
//! - Each sandbox has one [`SandboxHandle`]. Its runtime-facing state (which
//!   invocation is current, whether the runtime is parked in `/next`) sits in
//!   one mutex inside the handle, taken only for short, non-blocking updates
//!   by the Runtime API handlers, the invoke path and the exit watcher.
//! - Per sandbox, three tasks run: the Runtime API accept loop, the output
//!   reader, and the exit watcher. The exit watcher owns the end: when the
//!   sandbox's init process exits (crash, kill, timeout) it fails the current
//!   invocation, reaps the process, removes the cgroup, and stops the other two.
//!
//! # Invariants
//!
//! - A sandbox serves one invocation at a time; the caller (assignment) never
//!   hands a busy sandbox another one.
//! - A sandbox that timed out, crashed or ran out of memory is killed and never
//!   serves again ([`Outcome::reusable`] is false).
//! - Every sandbox started is eventually destroyed: by its own exit, by
//!   [`SandboxHandle::kill`], or by [`Worker::shutdown`].
//! - A response the runtime streams to an invocation's
//!   [`Invocation::response_stream`] is never held whole: at most
//!   [`STREAM_CHUNKS`] chunks wait at each hop, and the runtime waits for a
//!   reader that does not keep up (its function's timeout ends that).

pub mod conn;
pub mod images;
mod log_format;
mod logs;
mod runtime_api;
mod sandbox;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};

pub use log_format::{LogFormat, LogLevel, Report, Status};
pub use logs::{LogBatch, LogLine, tail};
pub use sandbox::SandboxHandle;

/// Largest response a runtime may post, as in Lambda ("6 MB": Lambda's
/// `Function.ResponseSizeTooLarge` names this many bytes, 100 more than 6 MiB).
pub const MAX_RESPONSE_BYTES: usize = 6_291_556;
/// Largest response a runtime may stream (`Lambda-Runtime-Function-Response-Mode: streaming`) to a caller that
/// reads it as a stream ([`Invocation::response_stream`]): Lambda's 200 MB, as MiB. A runtime streaming to a caller that
/// waits for the whole answer is held to [`MAX_RESPONSE_BYTES`].
pub const MAX_STREAMED_RESPONSE_BYTES: usize = 200 * 1024 * 1024;
/// Chunks of a streamed response held between two hops (the Runtime API's handler and the invocation; the
/// invocation and its caller): a reader that does not keep up holds the runtime back instead of growing memory.
pub const STREAM_CHUNKS: usize = 4;
/// How long a runtime may take to initialise before its first `/next`.
pub const INIT_LIMIT: Duration = Duration::from_secs(10);

pub struct WorkerConfig {
    /// Where sandbox roots are mounted (each in its own mount namespace).
    pub state_dir: PathBuf,
    /// The `ignis-init` executable.
    pub init_exe: PathBuf,
    /// Spawner threads: how many sandboxes can be built at once.
    pub spawners: usize,
    /// Sandboxes kept ready ahead of time (namespaces, cgroup, network; no function yet).
    pub pool_size: usize,
    /// Freeze sandboxes between invocations (see `sandbox.rs`); off only to measure what it costs.
    pub freeze: bool,
    /// Time limits of the Runtime API's connections.
    pub client_limits: conn::Limits,
    /// The sandboxes' network (egress through the host); `None`: only `lo` in each sandbox.
    pub network: Option<ignis_net::Config>,
}

/// Everything a sandbox needs to run one function revision.
pub struct FunctionSpec {
    /// Code tree, mounted read-only at `/var/task`.
    pub code_dir: PathBuf,
    pub memory_mb: u32,
    pub tmp_mb: u32,
    pub timeout: Duration,
    /// The runtime's environment, but for `AWS_LAMBDA_RUNTIME_API` and
    /// `AWS_LAMBDA_LOG_STREAM_NAME`, which the worker adds.
    pub env: Vec<(String, String)>,
    /// The version named in `START` lines (`$LATEST`, `3`).
    pub version: String,
    /// Whose function and logs these are (the account id; sandboxes of
    /// other accounts never get a network namespace with its traces), and the
    /// log group (`/aws/lambda/NAME`).
    pub log_account: String,
    pub log_group: String,
    /// `LoggingConfig`'s format and levels: the platform's lines, and which of the runtime's are kept.
    pub log_format: LogFormat,
    /// Kept (and dropped) with the sandbox: what keeps `code_dir` on disk
    /// while a sandbox of it lives (later sandboxes of the code may need it
    /// for its image).
    pub code_hold: Option<Box<dyn Send + Sync>>,
    /// An image function's image (`code_dir` is then unused).
    pub image: Option<ImageLaunch>,
    /// The function's layers merged into one code tree, mounted read-only at
    /// `/opt` (`None`: no layers). `code_hold` keeps it on disk too.
    pub opt_dir: Option<PathBuf>,
    /// A zip function's runtime base: the image its sandbox has as `/`, with the code on the base's own
    /// `/var/task`; `None`: the host's base (read-only host `/usr`), for a function whose runtime has no base here.
    pub base: Option<RuntimeBase>,
    /// The networks the function is attached to (its `VpcConfig`), with the ranges they allowed when the spec was
    /// made (`None`: no network). A sandbox keeps what its spec says: a network's ranges changing later reaches
    /// new sandboxes only.
    pub network: Option<ignis_net::Attachment>,
}

/// The root file system of a zip function's sandbox: an image (built by `ignis runtime build` or imported) that
/// holds a runtime's interpreter, libraries and runtime interface client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeBase {
    /// The account whose repository holds the base (the administrator's), whose key opens its manifest.
    pub account: String,
    /// The base image, and what runs on it (the base's ENTRYPOINT, with the function's handler as its argument; the
    /// working directory `/var/task`).
    pub launch: ImageLaunch,
}

/// What an image function's sandbox runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLaunch {
    /// `sha256:<hex>` of the image's OCI manifest: names the prepared image.
    pub digest: String,
    /// The account's repository it was pushed to.
    pub repository: String,
    /// The program and its arguments (effective ENTRYPOINT, then CMD).
    pub command: Vec<String>,
    /// The working directory.
    pub workdir: String,
}

/// One invocation, as the runtime sees it.
pub struct Invocation {
    pub request_id: String,
    pub payload: Bytes,
    pub invoked_function_arn: String,
    pub trace_id: String,
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
    /// Where a response the runtime streams goes, as it comes: a [`StreamPiece::Start`], then its chunks (the
    /// caller reads the other end; the channel is bounded, [`STREAM_CHUNKS`] is a good size). The outcome is then
    /// [`Completion::Streamed`], or the error that ended the stream.
    /// A chunk the receiver no longer takes is dropped; the runtime still streams to its end. `None`: a streamed
    /// response is collected (up to [`MAX_RESPONSE_BYTES`]) and answered as [`Completion::Response`], as Lambda
    /// answers `Invoke` of a streaming function. A response the runtime posts whole is always a `Response`.
    pub response_stream: Option<mpsc::Sender<StreamPiece>>,
}

/// A piece of a response streamed to [`Invocation::response_stream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamPiece {
    /// First, once, when the runtime began its streamed response: the `Content-Type` it gave, if any (Lambda
    /// passes it on to the client; `application/vnd.awslambda.http-integration-response` is a function URL's
    /// prelude format).
    Start { content_type: Option<String> },
    Chunk(Bytes),
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The runtime posted a response.
    Response(Bytes),
    /// The runtime streamed its response, `bytes` long, to [`Invocation::response_stream`] and ended it without
    /// an error (an error in its trailers is an `Error`).
    Streamed { bytes: u64 },
    /// The runtime posted an error (`/invocation/{id}/error` or `/init/error`), or ended a streamed response with
    /// error trailers (`Lambda-Runtime-Function-Error-Type`, and `-Body` base64-decoded).
    Error { body: Bytes, error_type: Option<String> },
    /// The platform ended it; the function is at fault.
    Failed { error_type: &'static str, message: String },
}

#[derive(Debug)]
pub struct Outcome {
    pub completion: Completion,
    /// The invocation's log, `START` to `REPORT`.
    pub log: String,
    /// Whether the sandbox can serve another invocation.
    pub reusable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("sandbox host: {0}")]
    Host(#[from] ignis_sandbox::SandboxError),
    #[error("sandbox network: {0}")]
    Network(#[from] ignis_net::NetError),
    #[error("worker is shutting down")]
    ShuttingDown,
}

/// Builds a sandbox's configuration once its id is known.
type Configure = Box<dyn FnOnce(&str) -> ignis_sandbox::SandboxConfig + Send>;
/// What a spawner thread is asked for: a sandbox of the given block of sandbox addresses, configured so.
type SpawnJob = (u8, Configure, oneshot::Sender<Result<ignis_sandbox::Sandbox, ignis_sandbox::SandboxError>>);

pub struct Worker {
    host: Arc<ignis_sandbox::Host>,
    spawn_tx: Mutex<Option<std::sync::mpsc::Sender<SpawnJob>>>,
    spawners: Mutex<Vec<std::thread::JoinHandle<()>>>,
    logs: mpsc::Sender<LogBatch>,
    live: Arc<Live>,
    /// Prefix of this worker's sandbox cgroup names.
    tag: String,
    freeze: bool,
    client_limits: conn::Limits,
    /// Mounts image functions' images; without it they cannot start here.
    images: std::sync::OnceLock<Arc<images::Images>>,
    /// The sandboxes' network, until shutdown.
    network: Mutex<Option<Arc<ignis_net::HostNetwork>>>,
}

/// Live sandboxes, so that shutdown can end them all and wait for their cleanup.
#[derive(Default)]
struct Live {
    handles: Mutex<Vec<std::sync::Weak<SandboxHandle>>>,
    count: AtomicUsize,
    gone: Notify,
}

impl Worker {
    /// Starts the sandboxes' network (if configured; on the current tokio runtime) and the spawner threads. Log
    /// lines of every sandbox go to `logs`.
    pub fn new(config: WorkerConfig, logs: mpsc::Sender<LogBatch>) -> Result<Worker, WorkerError> {
        let mut host = ignis_sandbox::Host::new(&config.state_dir, &config.init_exe)?;
        let network = config.network.map(ignis_net::HostNetwork::start).transpose()?.map(Arc::new);
        if let Some(network) = &network {
            host.set_network(network.links(), network.resolv_conf());
        }
        // Sandbox cgroups are named after the state directory, which one
        // worker at a time owns: any left from an earlier run are stale.
        let tag = format!("{:08x}-", fnv1a(config.state_dir.as_os_str().as_encoded_bytes()) as u32);
        host.set_id_prefix(&tag)?;
        host.set_pool_size(config.pool_size);
        host.remove_stale_groups();
        let host = Arc::new(host);
        let (spawn_tx, spawn_rx) = std::sync::mpsc::channel::<SpawnJob>();
        let spawn_rx = Arc::new(Mutex::new(spawn_rx));
        let mut spawners = Vec::new();
        for n in 0..config.spawners.max(1) {
            let host = host.clone();
            let spawn_rx = spawn_rx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ignis-spawner-{n}"))
                .spawn(move || spawner(&host, &spawn_rx))
                .map_err(|source| ignis_sandbox::SandboxError::Io { what: "spawner thread".into(), source })?;
            spawners.push(thread);
        }
        Ok(Worker {
            host,
            spawn_tx: Mutex::new(Some(spawn_tx)),
            spawners: Mutex::new(spawners),
            logs,
            live: Arc::default(),
            tag,
            freeze: config.freeze,
            client_limits: config.client_limits,
            images: std::sync::OnceLock::new(),
            network: Mutex::new(network),
        })
    }

    /// The sandboxes' network, if they have one (until shutdown).
    pub fn network(&self) -> Option<Arc<ignis_net::HostNetwork>> {
        self.network.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Builds a sandbox for `spec` and starts its runtime. Returns once the
    /// runtime's process runs; its init goes on, and the first
    /// [`SandboxHandle::invoke`] waits for it.
    pub async fn start(&self, spec: Arc<FunctionSpec>) -> Result<Arc<SandboxHandle>, StartError> {
        let spawn_tx = self.spawn_tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let spawn_tx = spawn_tx.ok_or(StartError::ShuttingDown)?;
        let root = match (&spec.image, &spec.base) {
            (Some(launch), _) => Some((spec.log_account.as_str(), launch)),
            (None, Some(base)) => Some((base.account.as_str(), &base.launch)),
            (None, None) => None,
        };
        let image = match root {
            None => None,
            Some((account, launch)) => {
                let images = self.images.get().ok_or_else(|| StartError::Host("this worker runs no images".into()))?;
                let began = std::time::Instant::now();
                let mounted = images.mount(account, launch).await?;
                tracing::debug!(image = %launch.digest, elapsed = ?began.elapsed(), "image mounted");
                Some(mounted)
            }
        };
        let live = self.live.clone();
        let network = match self.network() {
            Some(network) => {
                let endpoint = network.endpoint_url();
                let block = match spec.network.clone() {
                    None => 0,
                    // The first sandbox of an attachment here installs its rules (`nft`): off the runtime's threads.
                    Some(attachment) => tokio::task::spawn_blocking(move || network.block(Some(&attachment)))
                        .await
                        .map_err(|e| StartError::Host(format!("sandbox network: {e}")))?
                        .map_err(|e| StartError::Host(format!("sandbox network: {e}")))?,
                };
                (block, endpoint)
            }
            None => (0, None),
        };
        let (tag, logs, limits) = (&self.tag, self.logs.clone(), self.client_limits);
        sandbox::start(tag, spec, image, self.freeze, &spawn_tx, network, logs, live, limits).await
    }

    /// Lets this worker run image functions, mounting their images with
    /// `images` (once; a second call changes nothing).
    pub fn set_images(&self, images: Arc<images::Images>) {
        if self.images.set(images.clone()).is_ok()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(images::publish_metrics(Arc::downgrade(&images)));
        }
    }

    /// The images of this worker's image functions, once set.
    pub fn images(&self) -> Option<&Arc<images::Images>> {
        self.images.get()
    }

    /// The image loader's counters, if this worker runs images.
    pub fn image_stats(&self) -> Option<ignis_imagefs::Stats> {
        self.images.get().map(|images| images.stats())
    }

    /// Kills every sandbox and waits until each is reaped and its cgroup removed.
    pub async fn shutdown(&self) {
        self.spawn_tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        // The spawners end once their queue is closed; then nothing refills the pool.
        let spawners: Vec<_> = self.spawners.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        let host = self.host.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for spawner in spawners {
                let _ = spawner.join();
            }
            host.drain_pool();
        })
        .await;
        let handles: Vec<_> = self.live.handles.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        for handle in handles.iter().filter_map(std::sync::Weak::upgrade) {
            handle.kill();
        }
        while self.live.count.load(Ordering::SeqCst) > 0 {
            let gone = self.live.gone.notified();
            if self.live.count.load(Ordering::SeqCst) == 0 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), gone).await;
        }
        // Its firewall table goes now; the links go with the namespaces.
        self.network.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Drops what this worker derived from the code directory `dir` (its
    /// image, see [`ignis_sandbox::Host::forget_code`]), which is being removed.
    pub fn forget_code(&self, dir: &std::path::Path) {
        self.host.forget_code(dir);
    }

    /// Sandboxes not yet cleaned up.
    pub fn live_sandboxes(&self) -> usize {
        self.live.count.load(Ordering::SeqCst)
    }
}

/// Why a sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The entrypoint is missing or cannot be executed: a function error
    /// (`Runtime.InvalidEntrypoint`).
    #[error("{0}")]
    Entrypoint(String),
    /// The host failed: a service error.
    #[error("{0}")]
    Host(String),
    /// The image's chunk store is read as fast as this worker may: the start
    /// waited its time and was refused (the caller may try again).
    #[error("{0}")]
    Throttled(String),
    #[error("worker is shutting down")]
    ShuttingDown,
}

/// A spawner thread: builds sandboxes on request, and pooled shells while idle.
fn spawner(host: &ignis_sandbox::Host, jobs: &Mutex<std::sync::mpsc::Receiver<SpawnJob>>) {
    use std::sync::mpsc::TryRecvError;
    loop {
        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).try_recv();
        let (block, configure, reply) = match job {
            Ok(job) => job,
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => {
                if matches!(host.refill(), Ok(true)) {
                    continue;
                }
                match jobs.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
        };
        let _ = reply.send(host.spawn_in(block, configure));
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Registers a file descriptor with the runtime to await its readability.
fn readable_fd(fd: std::os::fd::OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: an OwnedFd is a valid open descriptor that only this AsyncFd owns,
    // so it stays open and refers to the same file until the AsyncFd is dropped.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}
