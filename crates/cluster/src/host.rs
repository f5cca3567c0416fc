//! `ignis worker`: a worker host. It runs sandboxes for a server it joins (in
//! a cluster, for every front end: it joins through any of those it was given,
//! speaking to one at a time, [`Servers`]).
//!
//! Three tasks: the sandbox API (the server's calls, each checked to be
//! signed with the administrator's key: the head, with its declared payload
//! hash, before any of the body is read; then the body), membership (register, then a
//! heartbeat every [`HEARTBEAT_EVERY`]; a call that cannot reach the server
//! moves the host on to the next), and the log forwarder (the
//! sandboxes' lines, posted to the server whatever arrived within 20 ms).
//!
//! # Invariants
//!
//! - The sandboxes map (id → handle) is this host's one record of what runs;
//!   one mutex, never held across an await.
//! - A sandbox runs only while the server counts this worker healthy: when
//!   the server answers a heartbeat with 404 (it declared the worker
//!   unhealthy and forgot its sandboxes), or when no heartbeat got through
//!   for [`HEARTBEAT_TIMEOUT`] (the server will have done so), every sandbox
//!   is killed, then the worker registers again as a new worker.
//! - Code, and a function's merged layers (its `/opt` tree), come from the
//!   server by SHA-256 and are unpacked with the store's checks
//!   (`Store::put_code`) into this host's own data directory.
//! - Images are never fetched whole: an image function's manifest comes from
//!   the server and its chunks on first read, each checked
//!   ([`RemoteManifests`], [`crate::RemoteChunks`]), cached in memory up to
//!   `image_memory_bytes` and in `<data_dir>/image-cache` up to `image_disk_bytes`; the records of image
//!   starts it prefetches from in
//!   `<data_dir>/image-starts`, kept across restarts.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use ignis_imagefs::{ImageFs, ImageFsConfig};
use ignis_sigv4::Credentials;
use ignis_store::{CodeHold, CodeRules, Store, WeakCodeHold};
use ignis_worker::conn::{ChannelBody, Limits, Protocols, TimedBody, is_body_timeout};
use ignis_chunks::OriginLimit;
use ignis_worker::images::{ChunkPath, Images};
use ignis_worker::{LogBatch, SandboxHandle, StartError, StreamPiece, Worker, WorkerConfig};
use serde_json::json;
use tokio::sync::mpsc;

use crate::owner::{ADOPTION_GRACE, Claim, FrontEnds, Listed, decode_take_over, orphaned};
use crate::peer::{Servers, authentic_head};
use crate::{Capacity, HEARTBEAT_EVERY, HEARTBEAT_TIMEOUT, RemoteManifests, wire};

/// Largest request body the sandbox API reads (an invocation of 6 MB, base64).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Log lines posted to the server at most this late.
const LOG_LINGER: Duration = Duration::from_millis(20);
/// Largest log post (the server reads 1 MB at most).
const LOG_POST_BYTES: usize = 512 * 1024;

/// Makes the path through the shared cache tier from the nodes' addresses (`host:port`).
pub type CacheTier = Arc<dyn Fn(Vec<String>) -> Arc<dyn ChunkPath> + Send + Sync>;

pub struct HostConfig {
    /// The servers' addresses, `host:port` (at least one): the front ends this host may join through. It speaks
    /// to one at a time, and moves on to the next when that one cannot be reached.
    pub servers: Vec<String>,
    /// Where to listen for the server's calls.
    pub listen: String,
    /// The address the server should call, if not the one listened on.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    pub init_exe: PathBuf,
    pub pool_size: usize,
    pub capacity: Capacity,
    /// The administrator's key pair: signs this host's calls and checks the server's.
    pub credentials: Credentials,
    /// Time limits of every connection to this host, its sandboxes' Runtime API included.
    pub client_limits: Limits,
    /// Bytes of image chunks kept in this host's memory.
    pub image_memory_bytes: u64,
    /// Reads of the chunk store of record (the server's) at once, and how long a start that must mount its image
    /// waits for them before it is refused.
    pub origin_fetches: usize,
    pub origin_start_wait: Duration,
    /// Makes the path through the shared cache tier from the cache nodes the server names at registration.
    pub cache_tier: Option<CacheTier>,
    /// Bytes of image chunks kept on this host's disk (`<data_dir>/image-cache`).
    pub image_disk_bytes: u64,
    /// The sandboxes' network; `None`: only `lo` in each.
    pub network: Option<ignis_net::Config>,
}

/// A sandbox this host runs, and the front end's claim on it (in a cluster).
struct Running {
    handle: Arc<SandboxHandle>,
    claim: Option<Claim>,
    memory_mb: u32,
    /// Invocations running on it now.
    calls: usize,
    /// When a heartbeat's answer first showed its owner gone: it ends [`ADOPTION_GRACE`] later unless another
    /// front end takes it over.
    orphaned_since: Option<Instant>,
}

struct Host {
    worker: Worker,
    store: Store,
    servers: Arc<Servers>,
    credentials: Credentials,
    sandboxes: Mutex<HashMap<String, Running>>,
    /// The server's code SHA-256 → the unpacked tree here, while a sandbox
    /// here uses it (each sandbox holds its tree; the last one's end removes it).
    code: Mutex<HashMap<String, WeakCodeHold>>,
    cache_tier: Option<CacheTier>,
    /// The cache nodes the server named at the last registration.
    cache_nodes: Mutex<Vec<String>>,
}

/// Runs the worker host until `shutdown` completes; then kills every sandbox.
pub async fn run(config: HostConfig, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| format!("cannot create {}: {e}", config.data_dir.display()))?;
    let store = Store::open(&config.data_dir).map_err(|e| format!("cannot open {}: {e}", config.data_dir.display()))?;
    // Code unpacked by an earlier run is fetched again when needed.
    let _ = store.remove_unused_code(&Default::default());
    let (log_tx, log_rx) = mpsc::channel(1024);
    let worker_config = WorkerConfig {
        state_dir: config.data_dir.join("run"),
        init_exe: config.init_exe.clone(),
        spawners: 2,
        pool_size: config.pool_size,
        freeze: true,
        client_limits: config.client_limits,
        network: config.network.clone(),
    };
    let worker = Worker::new(worker_config, log_tx).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?.to_string();
    let advertised = config.advertise.clone().unwrap_or_else(|| address.clone());
    let host = Arc::new(Host {
        worker,
        store,
        servers: Arc::new(Servers::new(&config.servers, &config.credentials)),
        credentials: config.credentials.clone(),
        sandboxes: Mutex::default(),
        code: Mutex::default(),
        cache_tier: config.cache_tier.clone(),
        cache_nodes: Mutex::default(),
    });
    let mut images_config = ImageFsConfig::new(config.data_dir.join("image-cache"), config.image_disk_bytes);
    images_config.memory_bytes = config.image_memory_bytes;
    images_config.starts_dir = Some(config.data_dir.join("image-starts"));
    let fs = ImageFs::new(images_config, tokio::runtime::Handle::current())
        .map_err(|e| format!("cannot start the image loader: {e}"))?;
    let manifests = Arc::new(RemoteManifests { servers: host.servers.clone() });
    let origin = OriginLimit::new(config.origin_fetches, ignis_clock::SystemClock::shared());
    host.worker.set_images(Arc::new(Images::new(Arc::new(fs), manifests, origin, config.origin_start_wait)));
    let images = Arc::downgrade(&host);
    host.store.on_code_removed(move |dir| {
        if let Some(host) = images.upgrade() {
            host.worker.forget_code(dir);
        }
    });
    println!("ignis worker: listening on http://{address} (data in {})", config.data_dir.display());
    tokio::spawn(forward_logs(Arc::downgrade(&host), log_rx));
    tokio::spawn(membership(Arc::downgrade(&host), advertised, config.capacity));
    serve(host.clone(), listener, config.client_limits, shutdown).await;
    tracing::info!("shutting down");
    host.kill_all();
    host.worker.shutdown().await;
    Ok(())
}

impl Host {
    /// Takes this host's share of the cluster-wide origin budget from a registration's or heartbeat's answer, when
    /// the server names one (`OriginFetches`).
    fn learn_origin_share(&self, answer: &[u8]) {
        let share = wire::parse(answer).ok().and_then(|v| v.get("OriginFetches").and_then(|n| n.as_u64()));
        if let (Some(share), Some(images)) = (share, self.worker.images()) {
            images.set_origin_limit(usize::try_from(share).unwrap_or(usize::MAX));
        }
    }

    fn sandboxes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.sandboxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sandbox `id`'s handle, if it runs here.
    fn sandbox(&self, id: &str) -> Option<Arc<SandboxHandle>> {
        self.sandboxes().get(id).map(|running| running.handle.clone())
    }

    /// Sandbox `id`'s handle, counted busy until the guard is dropped; `None` if it does not run here.
    fn call(&self, id: &str) -> Option<(Arc<SandboxHandle>, Busy<'_>)> {
        let mut sandboxes = self.sandboxes();
        let running = sandboxes.get_mut(id)?;
        running.calls += 1;
        Some((running.handle.clone(), Busy { host: self, id: id.to_string() }))
    }

    /// Marks the sandboxes whose front end is gone by the front ends a heartbeat's answer lists, if it lists them
    /// (see [`crate::owner`]), and ends those marked [`ADOPTION_GRACE`] ago that no front end took over.
    fn end_orphans(&self, answer: &[u8]) {
        let Some(view) = wire::parse(answer).ok().and_then(|v| FrontEnds::decode(&v)) else { return };
        let now = Instant::now();
        let ended: Vec<Arc<SandboxHandle>> = {
            let mut sandboxes = self.sandboxes();
            let mut orphans = Vec::new();
            for (id, running) in sandboxes.iter_mut() {
                if running.claim.as_ref().is_some_and(|claim| orphaned(&claim.owner, &view)) {
                    let since = *running.orphaned_since.get_or_insert(now);
                    if now.duration_since(since) >= ADOPTION_GRACE {
                        orphans.push(id.clone());
                    }
                }
            }
            orphans.iter().filter_map(|id| sandboxes.remove(id)).map(|running| running.handle).collect()
        };
        if !ended.is_empty() {
            tracing::warn!(sandboxes = ended.len(), "ending the sandboxes of front ends that are gone");
        }
        for handle in ended {
            handle.kill();
        }
    }

    /// The sandboxes a front end claimed and said what they run, for `GET /sandboxes`.
    fn listed(&self) -> Vec<Listed> {
        let sandboxes = self.sandboxes();
        let mut listed: Vec<Listed> = sandboxes
            .iter()
            .filter(|(_, running)| running.handle.is_alive())
            .filter_map(|(id, running)| {
                let claim = running.claim.as_ref()?;
                Some(Listed {
                    id: id.clone(),
                    owner: claim.owner,
                    tag: claim.tag.clone()?,
                    memory_mb: running.memory_mb,
                    busy: running.calls > 0,
                })
            })
            .collect();
        listed.sort_by(|a, b| a.id.cmp(&b.id));
        listed
    }

    /// Makes sandbox `id` the front end `to`'s if it is still `from`'s and no invocation runs on it.
    fn take_over(&self, id: &str, body: &[u8]) -> Response<Full<Bytes>> {
        let (from, to) = match wire::parse(body).and_then(|v| decode_take_over(&v)) {
            Ok(sides) => sides,
            Err(e) => return error(StatusCode::BAD_REQUEST, "BadRequest", &e),
        };
        let mut sandboxes = self.sandboxes();
        let Some(running) = sandboxes.get_mut(id).filter(|running| running.handle.is_alive()) else {
            return error(StatusCode::NOT_FOUND, "NotFound", "the sandbox is gone");
        };
        let Some(claim) = running.claim.as_mut().filter(|claim| claim.owner == from) else {
            return error(StatusCode::CONFLICT, "Conflict", "the sandbox is not the named front end's");
        };
        if running.calls > 0 {
            return error(StatusCode::CONFLICT, "Conflict", "an invocation runs on the sandbox");
        }
        claim.owner = to;
        running.orphaned_since = None;
        tracing::info!(sandbox = id, from = from.front_end, to = to.front_end, "a front end took the sandbox over");
        answer(StatusCode::OK, json!({ "SandboxId": id }).to_string().into_bytes())
    }

    fn kill_all(&self) {
        let all: Vec<_> = self.sandboxes().drain().map(|(_, running)| running.handle).collect();
        if !all.is_empty() {
            tracing::info!(sandboxes = all.len(), "ending sandboxes");
        }
        for handle in all {
            handle.kill();
        }
    }

    /// The unpacked tree of the server's code `sha`, fetched unless a
    /// sandbox here uses it already; held until the caller drops the hold.
    async fn code_dir(&self, sha: &str) -> Result<CodeHold, String> {
        {
            let mut code = self.code.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(hold) = code.get(sha).and_then(WeakCodeHold::upgrade) {
                return Ok(hold);
            }
            code.retain(|_, weak| weak.upgrade().is_some());
        }
        if sha.is_empty() || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("bad code SHA-256 {sha:?}"));
        }
        let (status, zip) = self
            .servers
            .call(Method::GET, &format!("/ignis/code/{sha}"), Bytes::new())
            .await
            .map_err(|e| format!("cannot fetch code {sha}: {e}"))?;
        if status != StatusCode::OK {
            return Err(format!("cannot fetch code {sha}: the server answered {status}"));
        }
        let code = self.store.put_code(&zip, &CodeRules::default()).map_err(|e| format!("code {sha}: {e}"))?;
        self.code.lock().unwrap_or_else(|e| e.into_inner()).insert(sha.to_string(), code.hold.downgrade());
        Ok(code.hold)
    }
}

/// Counts an invocation on a sandbox until dropped.
struct Busy<'a> {
    host: &'a Host,
    id: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Some(running) = self.host.sandboxes().get_mut(&self.id) {
            running.calls -= 1;
        }
    }
}

impl Host {
    /// Reads image chunks through the shared cache tier on `nodes` from now on (nothing changes if they are the
    /// ones already known, or if this host has no way to reach a tier).
    fn learn_cache_nodes(&self, nodes: Vec<String>) {
        let (Some(tier), Some(images)) = (&self.cache_tier, self.worker.images()) else { return };
        let mut known = self.cache_nodes.lock().unwrap_or_else(|e| e.into_inner());
        if nodes.is_empty() || *known == nodes {
            return;
        }
        tracing::info!(nodes = ?nodes, "image chunks are read through the shared cache tier");
        images.set_path(tier(nodes.clone()));
        *known = nodes;
    }
}

/// Registers, then heartbeats; starts over (with no sandbox left) whenever
/// the server no longer counts this worker.
async fn membership(host: std::sync::Weak<Host>, address: String, capacity: Capacity) {
    let registration =
        Bytes::from(json!({ "Address": address, "MemoryMb": capacity.memory_mb, "Cpus": capacity.cpus }).to_string());
    loop {
        let Some(strong) = host.upgrade() else { return };
        let id = match strong.servers.call(Method::POST, "/ignis/workers", registration.clone()).await {
            Ok((StatusCode::CREATED | StatusCode::OK, body)) => {
                strong.learn_origin_share(&body);
                let answer = wire::parse(&body).ok();
                if let Some(nodes) = answer.as_ref().and_then(|v| v.get("CacheNodes")).and_then(|n| n.as_array()) {
                    strong.learn_cache_nodes(nodes.iter().filter_map(|n| n.as_str().map(str::to_string)).collect());
                }
                answer.and_then(|v| v.get("WorkerId").and_then(|id| id.as_u64()))
            }
            Ok((status, body)) => {
                tracing::warn!(%status, body = %String::from_utf8_lossy(&body), "registration refused");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot register");
                None
            }
        };
        drop(strong);
        let Some(id) = id else {
            tokio::time::sleep(HEARTBEAT_EVERY).await;
            continue;
        };
        tracing::info!(worker = id, "registered");
        let path = format!("/ignis/workers/{id}/heartbeat");
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(HEARTBEAT_EVERY).await;
            let Some(strong) = host.upgrade() else { return };
            // Through any server: in a cluster, each renews the worker's membership.
            let server = strong.servers.current();
            let answer = tokio::time::timeout(HEARTBEAT_EVERY * 2, server.call(Method::POST, &path, Bytes::new())).await;
            if !matches!(answer, Ok(Ok(_))) {
                strong.servers.failed(&server);
            }
            match answer {
                Ok(Ok((status, body))) if status.is_success() => {
                    last_ok = Instant::now();
                    strong.learn_origin_share(&body);
                    strong.end_orphans(&body);
                }
                Ok(Ok((StatusCode::NOT_FOUND, _))) => {
                    tracing::warn!(worker = id, "the server no longer counts this worker; ending its sandboxes");
                    strong.kill_all();
                    break;
                }
                _ => {}
            }
            if last_ok.elapsed() >= HEARTBEAT_TIMEOUT {
                tracing::warn!(worker = id, timeout = ?HEARTBEAT_TIMEOUT, "no heartbeat got through; ending the sandboxes");
                strong.kill_all();
                break;
            }
        }
    }
}

/// Posts the sandboxes' log lines to the server.
async fn forward_logs(host: std::sync::Weak<Host>, mut logs: mpsc::Receiver<LogBatch>) {
    let mut batches: Vec<LogBatch> = Vec::new();
    while logs.recv_many(&mut batches, 1024).await > 0 {
        tokio::time::sleep(LOG_LINGER).await;
        while let Ok(batch) = logs.try_recv() {
            batches.push(batch);
        }
        let Some(host) = host.upgrade() else { return };
        let mut post: Vec<LogBatch> = Vec::new();
        let mut size = 0;
        for batch in batches.drain(..) {
            let batch_size = wire::batch_size(&batch);
            if size + batch_size > LOG_POST_BYTES && !post.is_empty() {
                send_logs(&host, &std::mem::take(&mut post)).await;
                size = 0;
            }
            size += batch_size;
            post.push(batch);
        }
        if !post.is_empty() {
            send_logs(&host, &post).await;
        }
    }
}

async fn send_logs(host: &Host, batches: &[LogBatch]) {
    let body = Bytes::from(wire::encode_log_batches(batches));
    match host.servers.call(Method::POST, "/ignis/logs", body).await {
        Ok((status, _)) if status.is_success() => {}
        Ok((status, _)) => tracing::warn!(batches = batches.len(), %status, "the server refused log batches"),
        Err(e) => tracing::warn!(batches = batches.len(), error = %e, "log batches lost"),
    }
}

async fn serve(host: Arc<Host>, listener: tokio::net::TcpListener, limits: Limits, shutdown: impl Future<Output = ()>) {
    crate::serve(listener, limits, Protocols::Http1, shutdown, move |request| handle(host.clone(), request)).await;
}

fn answer(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response<Full<Bytes>> {
    answer(status, json!({ "Error": kind, "Message": message }).to_string().into_bytes())
}

/// A whole answer, as served.
fn whole(answer: Response<Full<Bytes>>) -> Answer {
    answer.map(Either::Left)
}

/// What a worker host's call answers: a whole body, or frames as they come (a streamed invocation).
type Answer = Response<Either<Full<Bytes>, ChannelBody>>;

async fn handle(host: Arc<Host>, request: Request<TimedBody>) -> Answer {
    let (parts, body) = request.into_parts();
    // The head first: nothing of the body is read for a request not signed with the administrator's key.
    let Some(head) = authentic_head(&host.credentials, &parts) else {
        return whole(error(StatusCode::FORBIDDEN, "AccessDenied", "not signed with the administrator's key"));
    };
    let too_large = || error(StatusCode::PAYLOAD_TOO_LARGE, "TooLarge", "request body too large");
    if hyper::body::Body::size_hint(&body).lower() > MAX_BODY as u64 {
        return whole(too_large());
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return whole(too_large()),
        Err(e) if is_body_timeout(e.as_ref()) => {
            return whole(error(StatusCode::REQUEST_TIMEOUT, "RequestTimeout", &e.to_string()));
        }
        Err(e) => {
            return whole(error(StatusCode::BAD_REQUEST, "BadRequest", &format!("could not read the request body: {e}")));
        }
    };
    if head.finish(&body).is_err() {
        return whole(error(StatusCode::FORBIDDEN, "AccessDenied", "the body is not the one signed"));
    }
    let segments: Vec<&str> = parts.uri.path().trim_start_matches('/').split('/').collect();
    match (&parts.method, segments.as_slice()) {
        (&Method::POST, ["sandboxes"]) => whole(start(&host, &body).await),
        (&Method::GET, ["sandboxes"]) => {
            whole(answer(StatusCode::OK, Listed::encode_all(&host.listed()).to_string().into_bytes()))
        }
        (&Method::POST, ["sandboxes", id, "owner"]) => whole(host.take_over(id, &body)),
        (&Method::POST, ["sandboxes", id, "invoke"]) => invoke(&host, id, &body).await,
        (&Method::POST, ["sandboxes", id, "prepare"]) => {
            let handle = host.sandbox(id);
            let reason = match handle {
                Some(handle) => handle.prepare().await.err(),
                None => Some("the sandbox is gone".to_string()),
            };
            if reason.is_some() {
                host.sandboxes().remove(*id);
            }
            whole(answer(StatusCode::OK, json!({ "Error": reason }).to_string().into_bytes()))
        }
        (&Method::DELETE, ["sandboxes", id]) => {
            if let Some(running) = host.sandboxes().remove(*id) {
                running.handle.kill();
            }
            whole(answer(StatusCode::NO_CONTENT, Vec::new()))
        }
        _ => whole(error(StatusCode::NOT_FOUND, "NotFound", "no such call")),
    }
}

async fn start(host: &Arc<Host>, body: &[u8]) -> Response<Full<Bytes>> {
    let (mut spec, sha, claim) = match wire::decode_start(body) {
        Ok(decoded) => decoded,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    // An image function has no code tree: its image is mounted by the worker.
    let code = match spec.image {
        None => match host.code_dir(&sha).await {
            Ok(hold) => Some(hold),
            Err(e) => return error(StatusCode::BAD_GATEWAY, "Host", &e),
        },
        Some(_) => None,
    };
    // The merged layers are a code tree too, fetched by their SHA-256 as the code is.
    let opt = match wire::opt_sha256(&spec).map(str::to_string) {
        Some(opt_sha) => match host.code_dir(&opt_sha).await {
            Ok(hold) => Some(hold),
            Err(e) => return error(StatusCode::BAD_GATEWAY, "Host", &e),
        },
        None => None,
    };
    if let Some(hold) = &code {
        spec.code_dir = hold.dir();
    }
    spec.opt_dir = opt.as_ref().map(CodeHold::dir);
    if code.is_some() || opt.is_some() {
        spec.code_hold = Some(Box::new((code, opt)));
    }
    let spec_memory = spec.memory_mb;
    match host.worker.start(Arc::new(spec)).await {
        Ok(handle) => {
            let id = handle.id().to_string();
            let running = Running { handle, claim, memory_mb: spec_memory, calls: 0, orphaned_since: None };
            host.sandboxes().insert(id.clone(), running);
            answer(StatusCode::CREATED, json!({ "SandboxId": id }).to_string().into_bytes())
        }
        Err(StartError::Entrypoint(message)) => error(StatusCode::UNPROCESSABLE_ENTITY, "Entrypoint", &message),
        Err(StartError::Host(message)) => error(StatusCode::INTERNAL_SERVER_ERROR, "Host", &message),
        Err(StartError::Throttled(message)) => error(StatusCode::TOO_MANY_REQUESTS, "Throttled", &message),
        Err(StartError::ShuttingDown) => error(StatusCode::SERVICE_UNAVAILABLE, "ShuttingDown", "shutting down"),
    }
}

/// An invocation: its outcome as one JSON answer, or, for one with `"Stream": true`, as frames sent as they come
/// (`wire::Frame`: the runtime's streamed response, then the outcome).
async fn invoke(host: &Arc<Host>, id: &str, body: &[u8]) -> Answer {
    let (invocation, streamed) = match wire::decode_invocation(body) {
        Ok(decoded) => decoded,
        Err(e) => return whole(error(StatusCode::BAD_REQUEST, "BadRequest", &e)),
    };
    // In a task of its own: the invocation ends, and its sandbox's fate is
    // settled, even if the server's connection goes away meanwhile.
    let running = tokio::spawn(run_invocation(host.clone(), id.to_string(), invocation));
    let Some(mut pieces) = streamed else {
        return whole(running.await.unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "Host", &e.to_string())));
    };
    let (frames, body) = mpsc::channel(2);
    tokio::spawn(async move {
        let send = |frame: wire::Frame| {
            let frames = frames.clone();
            async move {
                let (head, payload) = frame.encode();
                frames.send(head).await.is_ok() && frames.send(payload).await.is_ok()
            }
        };
        while let Some(piece) = pieces.recv().await {
            let frame = match piece {
                StreamPiece::Start { content_type } => wire::Frame::Start { content_type },
                StreamPiece::Chunk(chunk) => wire::Frame::Chunk(chunk),
            };
            // The server is gone: the invocation goes on, what it streams is dropped.
            if !send(frame).await {
                return;
            }
        }
        // An answer without its outcome broke off: so does one whose invocation's task failed.
        if let Ok(answer) = running.await
            && answer.status() == StatusCode::OK
            && let Ok(outcome) = answer.into_body().collect().await
        {
            send(wire::Frame::Outcome(outcome.to_bytes())).await;
        }
    });
    Response::new(Either::Right(ChannelBody::new(body)))
}

/// Runs an invocation on sandbox `id`; the outcome, or "not taken", as the answer.
async fn run_invocation(host: Arc<Host>, id: String, invocation: ignis_worker::Invocation) -> Response<Full<Bytes>> {
    let Some((handle, busy)) = host.call(&id) else {
        return answer(StatusCode::OK, wire::encode_outcome(None));
    };
    let running = handle.clone();
    let result = tokio::spawn(async move { running.invoke(invocation).await }).await;
    drop(busy);
    match result {
        Ok(Ok(outcome)) => {
            if !outcome.reusable {
                host.sandboxes().remove(&id);
            }
            answer(StatusCode::OK, wire::encode_outcome(Some(&outcome)))
        }
        Ok(Err(_untaken)) => {
            host.sandboxes().remove(&id);
            answer(StatusCode::OK, wire::encode_outcome(None))
        }
        Err(e) => {
            host.sandboxes().remove(&id);
            handle.kill();
            error(StatusCode::INTERNAL_SERVER_ERROR, "Host", &e.to_string())
        }
    }
}
