//! One running sandbox and the invocations it serves.
//!
//! # The runtime-facing state ([`Rt`])
//!
//! - `phase`: `Initialising` until the runtime's first `/next`, then `Ready`,
//!   and `Dead` once the sandbox's init process exited. Only the Runtime API
//!   handlers move it to `Ready`; only the exit watcher moves it to `Dead`.
//! - `parked`: the runtime is waiting in `/next`; set by the `/next` handler,
//!   taken by `invoke` to hand over an event.
//! - `queued`: an event handed over before the runtime reached `/next`.
//! - `current`: the invocation whose answer is awaited; set by `invoke`,
//!   taken by the `/response` and `/error` handlers, by the exit watcher, or by
//!   `invoke` itself on timeout.
//! - `frozen`: the sandbox's cgroup is frozen. Set (by [`SandboxHandle::settle`])
//!   when the runtime waits in `/next` with nothing to do: after it answered an
//!   invocation, or after its init for a sandbox started ahead of demand, as
//!   Lambda freezes an execution environment between invocations; whatever the
//!   function left running gets no CPU until the next invocation. Cleared by
//!   `invoke`, which thaws before it hands over the next event, and on v1 by
//!   the kill watcher, which thaws a sandbox one of whose processes was sent
//!   `SIGKILL` (a frozen v1 task dies only once thawed; it freezes again once
//!   the runtime is idle). Killing a sandbox thaws it
//!   ([`ignis_sandbox::Sandbox::kill`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ignis_sandbox::RuntimeExit;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot, watch};

use crate::log_format::{Report, Status};
use crate::logs::{self, LogBatch, Output};
use crate::{
    Completion, FunctionSpec, INIT_LIMIT, Invocation, Live, MAX_RESPONSE_BYTES, MAX_STREAMED_RESPONSE_BYTES, Outcome, SpawnJob,
    StartError, StreamPiece,
};

/// An event on its way to the runtime's `/next`.
pub(crate) struct Delivery {
    pub request_id: String,
    pub payload: Bytes,
    pub deadline_ms: i64,
    pub invoked_function_arn: String,
    pub trace_id: String,
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
}

impl Delivery {
    fn into_invocation(self, response_stream: Option<mpsc::Sender<StreamPiece>>) -> Invocation {
        Invocation {
            request_id: self.request_id,
            payload: self.payload,
            invoked_function_arn: self.invoked_function_arn,
            trace_id: self.trace_id,
            client_context: self.client_context,
            cognito_identity: self.cognito_identity,
            response_stream,
        }
    }
}

/// What the runtime (or its death) answered for the current invocation.
pub(crate) enum Reply {
    Response(Bytes),
    /// The runtime began a streamed response (with this `Content-Type`): its pieces come through the channel, in
    /// order, the last an `End` (none if the body broke off). Dropping the receiver refuses the rest.
    Stream { content_type: Option<String>, pieces: mpsc::Receiver<Piece> },
    Error { body: Bytes, error_type: Option<String> },
    TooLarge,
    Died,
}

/// A piece of a streamed response, from the Runtime API's handler to the invocation.
pub(crate) enum Piece {
    Chunk(Bytes),
    /// The body ended; with the error its trailers reported, if any: the type and the (decoded) body.
    End(Option<(String, Bytes)>),
}

pub(crate) enum Phase {
    Initialising { waiter: Option<oneshot::Sender<()>> },
    Ready,
    Dead,
}

pub(crate) struct Current {
    pub request_id: String,
    pub reply: oneshot::Sender<Reply>,
}

pub(crate) struct Rt {
    pub phase: Phase,
    pub parked: Option<oneshot::Sender<Delivery>>,
    pub queued: Option<Delivery>,
    /// The runtime took the current invocation's event.
    pub taken: bool,
    pub current: Option<Current>,
    /// Set at the first `/next`; reported by the first invocation.
    pub init_duration: Option<Duration>,
    /// The runtime reported `/init/error`.
    pub init_error: Option<(Bytes, Option<String>)>,
    pub frozen: bool,
}

pub struct SandboxHandle {
    id: String,
    spec: Arc<FunctionSpec>,
    /// An image function's image, mounted while the sandbox lives.
    _image: Option<Arc<ignis_imagefs::MountedImage>>,
    started: Instant,
    pub(crate) rt: Mutex<Rt>,
    output: Output,
    /// Taken by the exit watcher for cleanup; until then used to kill and to read memory.
    sandbox: Mutex<Option<ignis_sandbox::Sandbox>>,
    /// How the sandbox ended, once it has.
    end: Mutex<Option<End>>,
    /// Becomes true when the sandbox is gone; stops its tasks.
    dead: watch::Sender<bool>,
    /// Whether the sandbox is frozen while idle.
    freeze: bool,
}

/// The log stream of a sandbox started on `day` (`2024-01-31...`):
/// `2024/01/31/[$LATEST]<sandbox id>`, where the id is the sandbox's name
/// without the worker's prefix.
fn log_stream(day: &str, version: &str, sandbox_name: &str, prefix: &str) -> String {
    let id = sandbox_name.strip_prefix(prefix).unwrap_or(sandbox_name);
    format!("{}/{}/{}/[{version}]{id}", &day[0..4], &day[5..7], &day[8..10])
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn start(
    prefix: &str,
    spec: Arc<FunctionSpec>,
    image: Option<Arc<ignis_imagefs::MountedImage>>,
    freeze: bool,
    spawn_tx: &std::sync::mpsc::Sender<SpawnJob>,
    (block, endpoint): (u8, Option<String>),
    log_sink: mpsc::Sender<LogBatch>,
    live: Arc<Live>,
    client_limits: crate::conn::Limits,
) -> Result<Arc<SandboxHandle>, StartError> {
    let started = Instant::now();
    let day = humantime::format_rfc3339(SystemTime::now()).to_string();
    // An image function runs its command on the image as the root; a zip function on its runtime's base runs the
    // base's command, one without a base its bootstrap on the host's base.
    let launch = spec.image.as_ref().or(spec.base.as_ref().map(|base| &base.launch));
    let (entrypoint, image_root) = match (launch, &image) {
        (Some(launch), Some(mounted)) => {
            let Some((program, args)) = launch.command.split_first() else {
                return Err(StartError::Entrypoint(
                    "The image sets no ENTRYPOINT or CMD, and the function's ImageConfig gives none: nothing to run".into(),
                ));
            };
            let tree = mounted.tree().map_err(|e| StartError::Host(format!("cloning the image's mount: {e}")))?;
            let root = ignis_sandbox::ImageRoot { tree, args: args.to_vec(), workdir: launch.workdir.clone() };
            (program.clone(), Some(root))
        }
        _ => ("/var/task/bootstrap".to_string(), None),
    };
    let is_image = spec.image.is_some();
    let configure = {
        let spec = spec.clone();
        let prefix = prefix.to_string();
        let day = day.clone();
        move |name: &str| {
            let mut env = spec.env.clone();
            env.push(("AWS_LAMBDA_RUNTIME_API".into(), "127.0.0.1:9001".into()));
            // Ignis's API for the AWS SDKs, unless the function points them elsewhere itself.
            if let Some(endpoint) = endpoint
                && !env.iter().any(|(name, _)| name == "AWS_ENDPOINT_URL")
            {
                env.push(("AWS_ENDPOINT_URL".into(), endpoint));
            }
            env.push(("AWS_LAMBDA_LOG_STREAM_NAME".into(), log_stream(&day, &spec.version, name, &prefix)));
            ignis_sandbox::SandboxConfig {
                code_dir: (!is_image).then(|| spec.code_dir.clone()),
                opt_dir: spec.opt_dir.clone().filter(|_| !is_image),
                image: image_root,
                memory_mb: spec.memory_mb,
                tmp_mb: spec.tmp_mb,
                env,
                entrypoint,
                tenant: spec.log_account.clone(),
            }
        }
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    spawn_tx.send((block, Box::new(configure), reply_tx)).map_err(|_| StartError::ShuttingDown)?;
    let sandbox = match reply_rx.await {
        Err(_) => return Err(StartError::ShuttingDown),
        Ok(Err(ignis_sandbox::SandboxError::Entrypoint { path, source })) if is_image => {
            return Err(StartError::Entrypoint(format!("fork/exec {path}: {source}")));
        }
        Ok(Err(ignis_sandbox::SandboxError::Entrypoint { path, source })) => {
            return Err(StartError::Entrypoint(format!("Couldn't find valid bootstrap(s): [{path}]: {source}")));
        }
        Ok(Err(ignis_sandbox::SandboxError::Image { what })) => return Err(StartError::Entrypoint(what)),
        Ok(Err(e)) => return Err(StartError::Host(e.to_string())),
        Ok(Ok(sandbox)) => sandbox,
    };
    // From here on the sandbox exists: every failure path must end it.
    live.count.fetch_add(1, Ordering::SeqCst);
    let sandbox_id = sandbox.id().to_string();
    let stream = log_stream(&day, &spec.version, &sandbox_id, prefix);
    let prepared = (|| {
        let listener = sandbox.runtime_api.try_clone()?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let output = sandbox.output.try_clone()?;
        let pidfd = crate::readable_fd(sandbox.pidfd().try_clone_to_owned()?)?;
        Ok::<_, std::io::Error>((listener, output, pidfd))
    })();
    // Kept by the Runtime API's tasks, which hold fds in the sandbox's network namespace.
    let network = sandbox.network_lease();
    let (listener, output, pidfd) = match prepared {
        Ok(parts) => parts,
        Err(e) => {
            let mut sandbox = sandbox;
            tokio::task::spawn_blocking(move || sandbox.destroy());
            live.count.fetch_sub(1, Ordering::SeqCst);
            live.gone.notify_waiters();
            return Err(StartError::Host(format!("sandbox {sandbox_id}: {e}")));
        }
    };
    let (account, group) = (spec.log_account.clone(), spec.log_group.clone());
    let output = Output::new(output, account, group, stream, log_sink, spec.log_format)
        .map_err(|e| StartError::Host(format!("sandbox {sandbox_id} output: {e}")))?;
    let (dead, _) = watch::channel(false);
    let handle = Arc::new(SandboxHandle {
        id: sandbox_id,
        spec,
        _image: image,
        started,
        rt: Mutex::new(Rt {
            phase: Phase::Initialising { waiter: None },
            parked: None,
            queued: None,
            taken: false,
            current: None,
            init_duration: None,
            init_error: None,
            frozen: false,
        }),
        output,
        sandbox: Mutex::new(Some(sandbox)),
        end: Mutex::new(None),
        dead,
        freeze,
    });
    live.handles.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::downgrade(&handle));
    // Idle while the function runs is not idle for the runtime: see `runtime_api::serve`.
    let limits = crate::conn::Limits { idle: client_limits.idle + handle.spec.timeout, ..client_limits };
    tokio::spawn(crate::runtime_api::serve(network, handle.clone(), listener, limits));
    let reader = handle.clone();
    tokio::spawn(async move { reader.output.run().await });
    if freeze && handle.sandbox.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|s| s.frozen_holds_signals()) {
        tokio::spawn(watch_kills(handle.clone()));
    }
    tokio::spawn(watch_exit(handle.clone(), pidfd, live));
    Ok(handle)
}

/// How often a frozen sandbox is looked at for a `SIGKILL` waiting for a thaw (cgroup v1).
const KILL_WATCH: Duration = Duration::from_millis(500);

/// On cgroup v1, where a frozen process ignores even `SIGKILL`: thaws the frozen sandbox when one of its processes
/// was sent one (by the operator, say), so that it dies as it would unfrozen; it freezes again once the runtime is
/// idle. Ends with the sandbox.
async fn watch_kills(handle: Arc<SandboxHandle>) {
    let mut dead = handle.dead_signal();
    let mut tick = tokio::time::interval(KILL_WATCH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Thawed here for a kill: freeze again (if the runtime is still idle) at the next look.
    let mut thawed = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = dead.wait_for(|dead| *dead) => return,
        }
        let mut rt = handle.lock_rt();
        if std::mem::take(&mut thawed) {
            handle.settle(&mut rt);
        } else if rt.frozen {
            let sandbox = handle.sandbox.lock().unwrap_or_else(|e| e.into_inner());
            if sandbox.as_ref().is_some_and(|s| s.kill_pending()) {
                drop(sandbox);
                handle.thaw(&mut rt);
                thawed = true;
            }
        }
    }
}

/// Waits for the sandbox's init process to exit, then fails whatever was
/// waiting on the runtime, reaps it and removes its cgroup.
async fn watch_exit(handle: Arc<SandboxHandle>, pidfd: AsyncFd<std::os::fd::OwnedFd>, live: Arc<Live>) {
    let _ = pidfd.readable().await;
    drop(pidfd);
    let sandbox = handle.sandbox.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(mut sandbox) = sandbox {
        let waited = tokio::task::spawn_blocking(move || {
            let end = End {
                exit: sandbox.wait(),
                oom: sandbox.oom_killed(),
                peak_memory_bytes: sandbox.peak_memory_bytes(),
            };
            (end, sandbox)
        })
        .await;
        if let Ok((end, mut sandbox)) = waited {
            *handle.end.lock().unwrap_or_else(|e| e.into_inner()) = Some(end);
            handle.mark_dead();
            let _ = tokio::task::spawn_blocking(move || sandbox.destroy()).await;
        }
    }
    handle.mark_dead();
    // The pipe's write side is gone with the runtime: the reader ends by itself.
    live.count.fetch_sub(1, Ordering::SeqCst);
    live.gone.notify_waiters();
}

/// `future`'s output, unless `deadline` passes first.
async fn timeout_at<F: std::future::Future>(
    deadline: Instant,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::time::timeout_at(deadline.into(), future).await
}

/// How a streamed response ended, as [`SandboxHandle::invoke`] sees it.
enum Relayed {
    Ended(Completion),
    /// The runtime's request broke off before its end (its connection closed, or its body stopped).
    Broken,
    TimedOut,
}

/// How a sandbox ended.
#[derive(Clone, Copy)]
struct End {
    exit: Option<RuntimeExit>,
    oom: bool,
    peak_memory_bytes: Option<u64>,
}

impl SandboxHandle {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn is_alive(&self) -> bool {
        !*self.dead.borrow()
    }

    /// The function's timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.spec.timeout
    }

    /// Kills the sandbox; the exit watcher cleans up.
    pub fn kill(&self) {
        if let Some(sandbox) = self.sandbox.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            sandbox.kill();
        }
    }

    pub(crate) fn lock_rt(&self) -> std::sync::MutexGuard<'_, Rt> {
        self.rt.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn dead_signal(&self) -> watch::Receiver<bool> {
        self.dead.subscribe()
    }

    /// The runtime's first `/next`: its init is done. Returns whether someone was waiting for that (an
    /// invocation, about to hand over its event, or [`SandboxHandle::prepare`]).
    pub(crate) fn init_done(&self, rt: &mut Rt) -> bool {
        if let Phase::Initialising { waiter } = &mut rt.phase {
            let waiter = waiter.take();
            rt.phase = Phase::Ready;
            rt.init_duration = Some(self.started.elapsed());
            if let Some(waiter) = waiter {
                return waiter.send(()).is_ok();
            }
        }
        false
    }

    /// Freezes the sandbox if its runtime waits in `/next` with nothing to do (see the module docs).
    pub(crate) fn settle(&self, rt: &mut Rt) {
        let idle = matches!(rt.phase, Phase::Ready)
            && rt.parked.as_ref().is_some_and(|parked| !parked.is_closed())
            && rt.queued.is_none()
            && rt.current.is_none();
        if rt.frozen || !idle || !self.freeze {
            return;
        }
        if let Some(sandbox) = self.sandbox.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            rt.frozen = sandbox.freeze().is_ok();
        }
    }

    /// Lets the sandbox's processes run again.
    fn thaw(&self, rt: &mut Rt) {
        if !std::mem::take(&mut rt.frozen) {
            return;
        }
        if let Some(sandbox) = self.sandbox.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = sandbox.thaw();
        }
    }

    fn mark_dead(&self) {
        {
            let mut rt = self.lock_rt();
            rt.phase = Phase::Dead;
            rt.parked = None;
            // A queued event stays: its invocation takes it back to run elsewhere.
            if let Some(current) = rt.current.take() {
                let _ = current.reply.send(Reply::Died);
            }
        }
        self.dead.send_replace(true);
    }

    fn max_memory_used_mb(&self) -> u64 {
        let peak = match self.sandbox.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(sandbox) => sandbox.peak_memory_bytes(),
            None => self.end.lock().unwrap_or_else(|e| e.into_inner()).and_then(|end| end.peak_memory_bytes),
        };
        peak.unwrap_or(0).div_ceil(1024 * 1024)
    }

    /// Why the runtime died, as a function error.
    fn death(&self, request_id: &str) -> Completion {
        let end = *self.end.lock().unwrap_or_else(|e| e.into_inner());
        let (error_type, detail) = match end {
            Some(End { oom: true, .. }) => ("Runtime.OutOfMemory", "signal: killed".to_string()),
            Some(End { exit: Some(RuntimeExit::Code(code)), .. }) => ("Runtime.ExitError", format!("exit status {code}")),
            Some(End { exit: Some(RuntimeExit::Signal(signal)), .. }) => {
                ("Runtime.ExitError", format!("signal: {}", signal_name(signal)))
            }
            _ => ("Runtime.ExitError", "signal: killed".to_string()),
        };
        Completion::Failed {
            error_type,
            message: format!("RequestId: {request_id} Error: Runtime exited with error: {detail}"),
        }
    }

    /// Waits until the runtime is ready for its first event, at most `limit`. `Ok(Some(d))` the
    /// first time (the init took `d`), `Ok(None)` after.
    async fn ready(&self, limit: Duration) -> Result<Option<Duration>, ()> {
        let waiter = {
            let mut rt = self.lock_rt();
            match &mut rt.phase {
                Phase::Ready => return Ok(rt.init_duration.take()),
                Phase::Dead => return Err(()),
                Phase::Initialising { waiter } => {
                    let (tx, rx) = oneshot::channel();
                    *waiter = Some(tx);
                    rx
                }
            }
        };
        match tokio::time::timeout(limit, waiter).await {
            Ok(Ok(())) => Ok(self.lock_rt().init_duration.take()),
            _ => Err(()),
        }
    }

    /// Waits for the runtime's init, for a sandbox started ahead of demand
    /// (provisioned concurrency): its first invocation then is not a cold
    /// start and reports no init. On failure the sandbox is killed and the
    /// reason returned.
    pub async fn prepare(&self) -> Result<(), String> {
        if self.ready(INIT_LIMIT).await.is_ok() {
            let mut rt = self.lock_rt();
            self.settle(&mut rt);
            return Ok(());
        }
        let init_error = self.lock_rt().init_error.take();
        self.kill();
        Err(match init_error {
            Some((body, error_type)) => {
                format!("{}: {}", error_type.as_deref().unwrap_or("Runtime.Unknown"), String::from_utf8_lossy(&body))
            }
            None if self.is_alive() => format!("the runtime did not start within {} seconds", INIT_LIMIT.as_secs()),
            None => "the runtime exited during its init".to_string(),
        })
    }

    /// Runs one invocation to its end: waits for the runtime's init if it is
    /// new, hands it the event, and waits for its answer until the function's
    /// timeout. The sandbox is killed when it must not be reused.
    ///
    /// When the sandbox died before its runtime took the event, nothing of the
    /// invocation ran: it is given back to be run elsewhere.
    pub async fn invoke(&self, mut invocation: Invocation) -> Result<Outcome, Invocation> {
        let request_id = invocation.request_id.clone();
        let response_stream = invocation.response_stream.take();
        let mut init = self.ready(INIT_LIMIT).await;
        // As on Lambda, an init still running after INIT_LIMIT goes on within the first invocation's own timeout,
        // which then counts from here and covers the rest of the init and the handler.
        let mut retried = None;
        if init.is_err() && self.is_alive() && self.lock_rt().init_error.is_none() {
            retried = Some(Instant::now());
            init = self.ready(self.spec.timeout).await;
        }
        let init_duration = match init {
            Ok(init_duration) => init_duration,
            Err(()) => {
                let init_error = self.lock_rt().init_error.take();
                let completion = match init_error {
                    Some((body, error_type)) => Completion::Error { body, error_type },
                    None if self.is_alive() => Completion::Failed {
                        error_type: "Sandbox.Timedout",
                        message: format!(
                            "RequestId: {request_id} Error: Task timed out after {:.2} seconds (the init did not end \
                             within {} seconds, nor within the function's timeout after)",
                            self.spec.timeout.as_secs_f64(),
                            INIT_LIMIT.as_secs()
                        ),
                    },
                    None => {
                        self.wait_dead().await;
                        self.death(&request_id)
                    }
                };
                self.kill();
                let duration = self.started.elapsed();
                return Ok(self.finish(&request_id, completion, duration, Some(duration), false).await);
            }
        };

        let (reply_tx, reply_rx) = oneshot::channel();
        let delivered = Instant::now();
        let deadline = retried.unwrap_or(delivered) + self.spec.timeout;
        {
            let mut rt = self.lock_rt();
            let delivery = Delivery {
                request_id: request_id.clone(),
                payload: invocation.payload,
                deadline_ms: logs::now_ms() + deadline.saturating_duration_since(Instant::now()).as_millis() as i64,
                invoked_function_arn: invocation.invoked_function_arn,
                trace_id: invocation.trace_id,
                client_context: invocation.client_context,
                cognito_identity: invocation.cognito_identity,
            };
            if matches!(rt.phase, Phase::Ready) {
                self.thaw(&mut rt);
                rt.taken = false;
                rt.current = Some(Current { request_id: request_id.clone(), reply: reply_tx });
                match rt.parked.take() {
                    Some(parked) => {
                        if let Err(delivery) = parked.send(delivery) {
                            rt.queued = Some(delivery);
                        }
                    }
                    None => rt.queued = Some(delivery),
                }
            }
            // A dead sandbox drops reply_tx: the answer below is `Died`.
        }

        let answer = tokio::time::timeout_at(deadline.into(), reply_rx).await;
        let (completion, reusable) = match answer {
            Ok(Ok(Reply::Response(body))) => (Completion::Response(body), true),
            Ok(Ok(Reply::Stream { content_type, pieces })) => match self
                .relay(content_type, pieces, response_stream, deadline)
                .await
            {
                Relayed::Ended(completion) => (completion, true),
                Relayed::Broken => {
                    self.wait_dead().await;
                    if self.is_alive() {
                        self.kill();
                        let message = format!("RequestId: {request_id} Error: the streamed response broke off");
                        (Completion::Failed { error_type: "Runtime.TruncatedResponse", message }, false)
                    } else {
                        (self.death(&request_id), false)
                    }
                }
                Relayed::TimedOut => self.timed_out(&request_id),
            },
            Ok(Ok(Reply::Error { body, error_type })) => (Completion::Error { body, error_type }, true),
            Ok(Ok(Reply::TooLarge)) => (
                Completion::Failed {
                    error_type: "Function.ResponseSizeTooLarge",
                    message: format!(
                        "Response payload size exceeded maximum allowed payload size ({} bytes).",
                        crate::MAX_RESPONSE_BYTES
                    ),
                },
                true,
            ),
            Ok(Ok(Reply::Died)) | Ok(Err(_)) => {
                let untaken = {
                    let mut rt = self.lock_rt();
                    if rt.taken { None } else { rt.queued.take() }
                };
                if let Some(delivery) = untaken {
                    return Err(delivery.into_invocation(response_stream));
                }
                self.wait_dead().await;
                (self.death(&request_id), false)
            }
            Err(_elapsed) => self.timed_out(&request_id),
        };
        let duration = delivered.elapsed();
        Ok(self.finish(&request_id, completion, duration, init_duration, reusable).await)
    }

    /// The function's timeout passed: the sandbox is killed.
    fn timed_out(&self, request_id: &str) -> (Completion, bool) {
        self.lock_rt().current = None;
        self.kill();
        let seconds = self.spec.timeout.as_secs_f64();
        let now = humantime::format_rfc3339_millis(SystemTime::now());
        let line = format!("{now} {request_id} Task timed out after {seconds:.2} seconds\n");
        if let Some(line) = self.output.format().failure(line) {
            self.output.platform_line(line);
        }
        let completion = Completion::Failed {
            error_type: "Sandbox.Timedout",
            message: format!("RequestId: {request_id} Error: Task timed out after {seconds:.2} seconds"),
        };
        (completion, false)
    }

    /// Passes a streamed response's chunks on as they come, until its end or `deadline`: to `stream`, each send
    /// waiting for room (a slow reader holds the runtime back), at most [`MAX_STREAMED_RESPONSE_BYTES`]; without
    /// one, collected into one response of at most [`MAX_RESPONSE_BYTES`]. Over the limit, the rest is refused
    /// (the runtime's request is answered 413) and the invocation fails with `Function.ResponseSizeTooLarge`.
    async fn relay(
        &self,
        content_type: Option<String>,
        mut pieces: mpsc::Receiver<Piece>,
        stream: Option<mpsc::Sender<StreamPiece>>,
        deadline: Instant,
    ) -> Relayed {
        let streaming = stream.is_some();
        let limit = if streaming { MAX_STREAMED_RESPONSE_BYTES } else { MAX_RESPONSE_BYTES };
        let mut stream = stream;
        if let Some(sender) = &stream {
            match timeout_at(deadline, sender.send(StreamPiece::Start { content_type })).await {
                Ok(Ok(())) => {}
                Ok(Err(_closed)) => stream = None,
                Err(_elapsed) => return Relayed::TimedOut,
            }
        }
        let mut collected = bytes::BytesMut::new();
        let mut sent: usize = 0;
        loop {
            let piece = match timeout_at(deadline, pieces.recv()).await {
                Ok(piece) => piece,
                Err(_elapsed) => return Relayed::TimedOut,
            };
            let chunk = match piece {
                Some(Piece::Chunk(chunk)) => chunk,
                Some(Piece::End(Some((error_type, body)))) => {
                    return Relayed::Ended(Completion::Error { body, error_type: Some(error_type) });
                }
                Some(Piece::End(None)) if streaming => return Relayed::Ended(Completion::Streamed { bytes: sent as u64 }),
                Some(Piece::End(None)) => return Relayed::Ended(Completion::Response(collected.freeze())),
                None => return Relayed::Broken,
            };
            sent += chunk.len();
            if sent > limit {
                return Relayed::Ended(Completion::Failed {
                    error_type: "Function.ResponseSizeTooLarge",
                    message: format!("Response payload size exceeded maximum allowed payload size ({limit} bytes)."),
                });
            }
            match &stream {
                None if streaming => {}
                None => collected.extend_from_slice(&chunk),
                Some(sender) => match timeout_at(deadline, sender.send(StreamPiece::Chunk(chunk))).await {
                    Ok(Ok(())) => {}
                    // The reader left: the rest goes nowhere, but the runtime still ends its response.
                    Ok(Err(_closed)) => stream = None,
                    Err(_elapsed) => return Relayed::TimedOut,
                },
            }
        }
    }

    /// The runtime's `/next` took `delivery`: the invocation starts.
    pub(crate) fn taken(&self, delivery: &Delivery) {
        self.lock_rt().taken = true;
        self.output.begin(&delivery.request_id, &self.spec.version);
    }

    async fn finish(
        &self,
        request_id: &str,
        completion: Completion,
        duration: Duration,
        init_duration: Option<Duration>,
        reusable: bool,
    ) -> Outcome {
        self.output.begin(request_id, &self.spec.version);
        if let Completion::Failed { error_type, message } = &completion
            && error_type.starts_with("Runtime.")
            && let Some(line) = self.output.format().failure(format!("{message}\n{error_type}\n"))
        {
            self.output.platform_line(line);
        }
        let status = match &completion {
            Completion::Response(_) | Completion::Streamed { .. } => Status::Success,
            Completion::Error { error_type, .. } => Status::Error(error_type.as_deref()),
            Completion::Failed { error_type: "Sandbox.Timedout", .. } => Status::Timeout,
            Completion::Failed { error_type, .. } => Status::Error(Some(error_type)),
        };
        let report = Report {
            request_id,
            duration,
            memory_size_mb: self.spec.memory_mb,
            max_memory_used_mb: self.max_memory_used_mb(),
            init_duration,
            status,
        };
        let log = self.output.finish(&report).await;
        Outcome { completion, log, reusable: reusable && self.is_alive() }
    }

    /// Waits (briefly) until the exit watcher has recorded how the sandbox ended.
    async fn wait_dead(&self) {
        let mut dead = self.dead_signal();
        let _ = tokio::time::timeout(Duration::from_secs(5), dead.wait_for(|dead| *dead)).await;
    }
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGKILL => "killed".into(),
        libc::SIGSEGV => "segmentation fault".into(),
        libc::SIGABRT => "aborted".into(),
        libc::SIGTERM => "terminated".into(),
        libc::SIGBUS => "bus error".into(),
        libc::SIGILL => "illegal instruction".into(),
        libc::SIGFPE => "floating point exception".into(),
        other => format!("signal {other}"),
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        // The exit watcher holds a handle until the sandbox is gone, so this
        // only runs once it is; kill anyway in case a start failed half-way.
        if let Some(sandbox) = self.sandbox.get_mut().unwrap_or_else(|e| e.into_inner()).as_ref() {
            sandbox.kill();
        }
    }
}
