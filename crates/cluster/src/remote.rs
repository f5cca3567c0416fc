//! The server's side of a worker host: start, invoke, prepare and kill
//! sandboxes on it over the worker protocol.
//!
//! A [`RemoteWorker`] is *down* once the server declares it so (its
//! heartbeats stopped) or once a call to it fails at the connection level
//! (its process is gone). Down is final. Going down wakes every call in
//! flight to the worker, which ends at once with [`Failure::Lost`], so no
//! client waits for a worker that will never answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use http::{Method, StatusCode};
use ignis_sigv4::Credentials;
use ignis_worker::{FunctionSpec, INIT_LIMIT, Invocation, Outcome, StartError, StreamPiece};
use tokio::sync::mpsc;
use tokio::sync::watch;

use crate::owner::{Claim, Listed, Owner, OwnerSource, RELEASED, Tag, encode_take_over};
use crate::peer::{Peer, PeerError};
use crate::wire;

/// Extra time a call to a sandbox may take beyond the function's own limits.
const CALL_MARGIN: Duration = Duration::from_secs(5);

/// Why a remote invocation has no outcome.
pub enum Failure {
    /// It never reached a runtime: run it elsewhere.
    Untaken(Invocation),
    /// It may have run, but its answer is lost (the worker went down).
    Lost(String),
}

enum CallError {
    NotSent(String),
    Lost(String),
}

pub struct RemoteWorker {
    peer: Peer,
    down: watch::Sender<bool>,
    /// Names the front end in each start (in a cluster).
    owner: Option<OwnerSource>,
}

impl RemoteWorker {
    /// A worker host serving the worker protocol at `address` (`host:port`).
    pub fn new(address: &str, credentials: Credentials) -> Arc<RemoteWorker> {
        RemoteWorker::owned(address, credentials, None)
    }

    /// [`RemoteWorker::new`], each sandbox started as `owner`'s (a cluster's front end).
    pub fn owned(address: &str, credentials: Credentials, owner: Option<OwnerSource>) -> Arc<RemoteWorker> {
        Arc::new(RemoteWorker { peer: Peer::new(address, credentials), down: watch::channel(false).0, owner })
    }

    pub fn address(&self) -> &str {
        self.peer.authority()
    }

    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    /// Declares the worker down: every call in flight to it ends now.
    pub fn mark_down(&self) {
        self.down.send_replace(true);
        self.peer.close();
    }

    async fn call(&self, method: Method, path: &str, body: Bytes, limit: Duration) -> Result<(StatusCode, Bytes), CallError> {
        let mut down = self.down.subscribe();
        if *down.borrow_and_update() {
            return Err(CallError::NotSent(format!("worker {} is down", self.address())));
        }
        let lost = || CallError::Lost(format!("the worker at {} was lost", self.address()));
        tokio::select! {
            answer = tokio::time::timeout(limit, self.peer.call(method, path, body)) => match answer {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(PeerError::Connect(e))) => {
                    self.mark_down();
                    Err(CallError::NotSent(e))
                }
                Ok(Err(PeerError::Transport(e))) => {
                    self.mark_down();
                    Err(CallError::Lost(format!("the worker at {} was lost: {e}", self.address())))
                }
                Err(_) => Err(CallError::Lost(format!("the worker at {} did not answer in time", self.address()))),
            },
            _ = down.wait_for(|down| *down) => Err(lost()),
        }
    }

    /// An invocation whose answer comes in frames: each piece of the runtime's streamed response is passed on to
    /// `stream` as it comes (the next frame read once it took the last, so the host, and its runtime, wait for a
    /// slow reader), and the outcome frame's JSON is the answer. One that ends without it was lost.
    async fn call_streamed(
        &self,
        path: &str,
        body: Bytes,
        limit: Duration,
        stream: &mpsc::Sender<StreamPiece>,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let mut down = self.down.subscribe();
        if *down.borrow_and_update() {
            return Err(CallError::NotSent(format!("worker {} is down", self.address())));
        }
        let relayed = async {
            let answer = match self.peer.open(Method::POST, path, body).await {
                Ok(answer) => answer,
                Err(PeerError::Connect(e)) => {
                    self.mark_down();
                    return Err(CallError::NotSent(e));
                }
                Err(PeerError::Transport(e)) => {
                    self.mark_down();
                    return Err(CallError::Lost(format!("the worker at {} was lost: {e}", self.address())));
                }
            };
            let status = answer.status();
            let mut body = answer.into_body();
            let broke = |e: String| CallError::Lost(format!("the worker at {}: its answer broke off: {e}", self.address()));
            if status != StatusCode::OK {
                let text = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                return Ok((status, text));
            }
            let (mut buffer, mut reader) = (BytesMut::new(), Some(stream));
            loop {
                while let Some(frame) = wire::Frame::take(&mut buffer).map_err(broke)? {
                    let piece = match frame {
                        wire::Frame::Outcome(outcome) => return Ok((status, outcome)),
                        wire::Frame::Start { content_type } => StreamPiece::Start { content_type },
                        wire::Frame::Chunk(chunk) => StreamPiece::Chunk(chunk),
                    };
                    // A reader that left gets nothing more; the frames are still read to the outcome.
                    if let Some(sender) = reader
                        && sender.send(piece).await.is_err()
                    {
                        reader = None;
                    }
                }
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            buffer.extend_from_slice(&data);
                        }
                    }
                    Some(Err(e)) => {
                        self.mark_down();
                        return Err(broke(e.to_string()));
                    }
                    None => return Err(broke("no outcome".into())),
                }
            }
        };
        tokio::select! {
            answer = tokio::time::timeout(limit, relayed) => answer.unwrap_or_else(|_| {
                Err(CallError::Lost(format!("the worker at {} did not answer in time", self.address())))
            }),
            _ = down.wait_for(|down| *down) => Err(CallError::Lost(format!("the worker at {} was lost", self.address()))),
        }
    }

    /// Starts a sandbox for `spec` (its code named by `code_sha256_hex`) on this worker; in a cluster, claimed by
    /// this front end, with `tag`.
    pub async fn start(
        self: &Arc<Self>,
        spec: &FunctionSpec,
        code_sha256_hex: &str,
        tag: Option<Tag>,
    ) -> Result<Arc<RemoteSandbox>, StartError> {
        let owner = self.owner.as_ref().and_then(|owner| owner());
        let claim = owner.map(|owner| Claim { owner, tag });
        let body = Bytes::from(wire::encode_start(spec, code_sha256_hex, claim.as_ref()));
        // Building the sandbox may mean fetching and unpacking its code first.
        let limit = INIT_LIMIT + Duration::from_secs(60);
        let (status, answer) = match self.call(Method::POST, "/sandboxes", body, limit).await {
            Ok(answer) => answer,
            Err(CallError::NotSent(e) | CallError::Lost(e)) => return Err(StartError::Host(e)),
        };
        let value = wire::parse(&answer).unwrap_or_default();
        let message = || value.get("Message").and_then(|m| m.as_str()).unwrap_or("").to_string();
        match (status, value.get("SandboxId").and_then(|s| s.as_str())) {
            (StatusCode::CREATED, Some(id)) => Ok(self.sandbox(id, owner)),
            _ => Err(match value.get("Error").and_then(|e| e.as_str()) {
                Some("Entrypoint") => StartError::Entrypoint(message()),
                Some("Throttled") => StartError::Throttled(message()),
                Some("ShuttingDown") => StartError::Host(format!("the worker at {} is shutting down", self.address())),
                _ => StartError::Host(format!("the worker at {} could not start a sandbox ({status}): {}", self.address(), message())),
            }),
        }
    }

    fn sandbox(self: &Arc<Self>, id: &str, owner: Option<Owner>) -> Arc<RemoteSandbox> {
        Arc::new(RemoteSandbox { worker: self.clone(), id: id.to_string(), owner, dead: AtomicBool::new(false) })
    }

    /// The sandboxes on this host that front ends claimed (see [`crate::owner`]).
    pub async fn listed(&self) -> Result<Vec<Listed>, String> {
        match self.call(Method::GET, "/sandboxes", Bytes::new(), CALL_MARGIN).await {
            Ok((StatusCode::OK, answer)) => wire::parse(&answer).and_then(|v| Listed::decode_all(&v)),
            Ok((status, _)) => Err(format!("the worker at {} answered {status}", self.address())),
            Err(CallError::NotSent(e) | CallError::Lost(e)) => Err(e),
        }
    }

    /// Makes `listed` this front end's, if the host still has it as its listed owner's and no invocation runs on it
    /// (`None`: it is not, or it is gone); then it is this front end's to use.
    pub async fn take_over(self: &Arc<Self>, listed: &Listed) -> Result<Option<Arc<RemoteSandbox>>, String> {
        let to = self.owner.as_ref().and_then(|owner| owner()).ok_or("this front end is not in a cluster")?;
        let body = Bytes::from(encode_take_over(&listed.owner, &to).to_string());
        let path = format!("/sandboxes/{}/owner", listed.id);
        match self.call(Method::POST, &path, body, CALL_MARGIN).await {
            Ok((StatusCode::OK, _)) => Ok(Some(self.sandbox(&listed.id, Some(to)))),
            Ok((StatusCode::CONFLICT | StatusCode::NOT_FOUND, _)) => Ok(None),
            Ok((status, _)) => Err(format!("the worker at {} answered {status}", self.address())),
            Err(CallError::NotSent(e) | CallError::Lost(e)) => Err(e),
        }
    }
}

/// A sandbox on a worker host.
pub struct RemoteSandbox {
    worker: Arc<RemoteWorker>,
    id: String,
    /// The front end the host has it as (in a cluster).
    owner: Option<Owner>,
    dead: AtomicBool,
}

impl RemoteSandbox {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn worker(&self) -> &Arc<RemoteWorker> {
        &self.worker
    }

    pub fn is_alive(&self) -> bool {
        !self.dead.load(Ordering::Relaxed) && !self.worker.is_down()
    }

    /// Runs one invocation on the sandbox, which ends within the function's
    /// `timeout` (plus the init limit and a margin) or when the worker goes down.
    /// What the runtime streams to an invocation with a `response_stream` goes
    /// there as it comes (the host answers it in frames, `wire::Frame`).
    pub async fn invoke(&self, invocation: Invocation, timeout: Duration) -> Result<Outcome, Failure> {
        let body = Bytes::from(wire::encode_invocation(&invocation));
        let path = format!("/sandboxes/{}/invoke", self.id);
        let limit = timeout + INIT_LIMIT + CALL_MARGIN;
        let called = match &invocation.response_stream {
            None => self.worker.call(Method::POST, &path, body, limit).await,
            Some(stream) => self.worker.call_streamed(&path, body, limit, stream).await,
        };
        let answer = match called {
            Ok((StatusCode::OK, answer)) => answer,
            Ok((status, answer)) => {
                self.dead.store(true, Ordering::Relaxed);
                let text = String::from_utf8_lossy(&answer);
                return Err(Failure::Lost(format!("the worker at {} refused the invocation ({status}): {text}", self.worker.address())));
            }
            Err(CallError::NotSent(_)) => {
                self.dead.store(true, Ordering::Relaxed);
                return Err(Failure::Untaken(invocation));
            }
            Err(CallError::Lost(e)) => {
                self.dead.store(true, Ordering::Relaxed);
                return Err(Failure::Lost(e));
            }
        };
        match wire::decode_outcome(&answer) {
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => {
                self.dead.store(true, Ordering::Relaxed);
                Err(Failure::Untaken(invocation))
            }
            Err(e) => Err(Failure::Lost(format!("the worker at {} answered badly: {e}", self.worker.address()))),
        }
    }

    /// Waits for the runtime's init (provisioned concurrency); the reason when it failed.
    pub async fn prepare(&self) -> Result<(), String> {
        let path = format!("/sandboxes/{}/prepare", self.id);
        let limit = INIT_LIMIT + CALL_MARGIN;
        match self.worker.call(Method::POST, &path, Bytes::new(), limit).await {
            Ok((StatusCode::OK, answer)) => match wire::parse(&answer).ok().and_then(|v| v.get("Error").cloned()) {
                Some(serde_json::Value::String(reason)) => Err(reason),
                _ => Ok(()),
            },
            Ok((status, _)) => Err(format!("the worker at {} answered {status}", self.worker.address())),
            Err(CallError::NotSent(e) | CallError::Lost(e)) => Err(e),
        }
    }

    /// Gives the sandbox up on its host, for the front end that leads its function next to take over
    /// ([`RELEASED`]); false if it could not (not in a cluster, running an invocation, gone): then end it.
    pub async fn release(&self) -> bool {
        let Some(owner) = self.owner else { return false };
        self.dead.store(true, Ordering::Relaxed);
        let body = Bytes::from(encode_take_over(&owner, &RELEASED).to_string());
        let path = format!("/sandboxes/{}/owner", self.id);
        matches!(self.worker.call(Method::POST, &path, body, CALL_MARGIN).await, Ok((StatusCode::OK, _)))
    }

    /// Ends the sandbox, in the background.
    pub fn kill(self: &Arc<Self>) {
        let sandbox = self.clone();
        tokio::spawn(async move { sandbox.end().await });
    }

    /// Ends the sandbox and waits (briefly) for its worker's acknowledgement.
    /// Tried even when the worker is down: a sandbox started just as its
    /// worker was dropped may sit on a process that still listens there.
    pub async fn end(&self) {
        self.dead.store(true, Ordering::Relaxed);
        let path = format!("/sandboxes/{}", self.id);
        let _ = tokio::time::timeout(CALL_MARGIN, self.worker.peer.call(Method::DELETE, &path, Bytes::new())).await;
    }
}

