//! Signed HTTP calls between the server and its workers (HTTP/1.1), and from
//! workers to cache nodes (HTTP/1.1 or HTTP/2, [`Protocol`]).
//!
//! Every call is signed with SigV4 (service `ignis`) with the administrator's
//! key pair, which both sides hold, and checked on arrival: the head (with
//! the declared payload hash) before any of the body is read, then the body.
//!
//! Connections are kept open and reused. Under HTTP/1.1, a stack of idle ones
//! per peer: a call takes one, or opens a new one, and puts it back once the
//! whole answer is read (a call dropped before that drops its connection).
//! Under HTTP/2 (cleartext, prior knowledge), one connection per peer carries
//! every call at once, each on a stream of its own (a call dropped early
//! resets its stream only); a new one replaces it once it is closed. Either
//! way a connection is used again only within [`REUSE_WITHIN`] of its last
//! answer, unless a call is in flight on it: the other side closes idle ones.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ignis_sigv4::{Credentials, RequestParts};

/// The SigV4 service of cluster calls.
pub const SERVICE: &str = "ignis";
const REGION: &str = "us-east-1";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest HTTP/2 frame this side takes (`SETTINGS_MAX_FRAME_SIZE`): a stripe in one frame or a few, not in
/// 16 KiB ones (hyper's default); measured faster by `bench/cache`.
const MAX_FRAME: u32 = 1 << 20;
/// Idle connections kept per peer.
const MAX_IDLE: usize = 256;
/// A kept connection idle for longer is not used again: the other side may be
/// closing it (its idle limit is at least [`ignis_worker::conn::MIN_IDLE`]).
const REUSE_WITHIN: Duration = Duration::from_secs(1);

/// Why a call got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// No connection could be made: nothing was sent.
    Connect(String),
    /// The connection failed during the call: it may or may not have arrived.
    Transport(String),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Connect(e) | PeerError::Transport(e) => f.write_str(e),
        }
    }
}

/// The protocol a [`Peer`] speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, one call per connection at a time, idle connections kept.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (cleartext): one connection, every call a stream on it.
    Http2,
}

/// One side's client for the other, at `authority` (`host:port`).
pub struct Peer {
    authority: String,
    credentials: Credentials,
    connections: Connections,
}

enum Connections {
    Http1(Idle),
    Http2(Multiplexed),
}

/// Kept HTTP/1.1 connections and since when each is idle, the most recent last.
type Idle = Mutex<Vec<(http1::SendRequest<Full<Bytes>>, Instant)>>;

/// The one HTTP/2 connection of a peer.
struct Multiplexed {
    current: Mutex<Option<Shared>>,
    /// Held while a connection is made: one handshake at a time, the calls that wait for it then share it.
    connecting: tokio::sync::Mutex<()>,
    /// The id of the next connection made.
    next: Mutex<u64>,
}

struct Shared {
    id: u64,
    sender: http2::SendRequest<Full<Bytes>>,
    /// Calls on it whose [`Lease`] lives.
    in_flight: usize,
    /// When `in_flight` last became 0.
    idle_since: Instant,
}

impl Shared {
    fn usable(&self) -> bool {
        !self.sender.is_closed() && (self.in_flight > 0 || self.idle_since.elapsed() < REUSE_WITHIN)
    }
}

/// A call on a peer's HTTP/2 connection, counted there while this lives.
struct Lease<'a> {
    multiplexed: &'a Multiplexed,
    id: u64,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut current = self.multiplexed.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = current.as_mut().filter(|shared| shared.id == self.id) {
            shared.in_flight -= 1;
            if shared.in_flight == 0 {
                shared.idle_since = Instant::now();
            }
        }
    }
}

impl Multiplexed {
    /// The current connection, if it may be used, and a lease on it.
    fn lease(&self) -> Option<(http2::SendRequest<Full<Bytes>>, Lease<'_>)> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let shared = current.as_mut().filter(|shared| shared.usable())?;
        shared.in_flight += 1;
        Some((shared.sender.clone(), Lease { multiplexed: self, id: shared.id }))
    }

    /// Makes `sender` the current connection, leased once.
    fn install(&self, sender: http2::SendRequest<Full<Bytes>>) -> Lease<'_> {
        let id = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            *next += 1;
            *next
        };
        let shared = Shared { id, sender, in_flight: 1, idle_since: Instant::now() };
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(shared);
        Lease { multiplexed: self, id }
    }

    /// Drops the connection `id` if it is still the current one.
    fn forget(&self, id: u64) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|shared| shared.id == id) {
            *current = None;
        }
    }
}

/// The front ends a worker host may speak to, one at a time: calls go to the current one, and a call that could
/// not reach it moves the host on to the next (round the list).
pub struct Servers {
    peers: Vec<Arc<Peer>>,
    current: std::sync::atomic::AtomicUsize,
}

impl Servers {
    /// Peers at `authorities` (`host:port`, at least one), over HTTP/1.1.
    pub fn new(authorities: &[String], credentials: &Credentials) -> Servers {
        assert!(!authorities.is_empty(), "a worker host needs a server");
        let peers = authorities.iter().map(|a| Arc::new(Peer::new(a, credentials.clone()))).collect();
        Servers { peers, current: std::sync::atomic::AtomicUsize::new(0) }
    }

    /// The one spoken to now.
    pub fn current(&self) -> Arc<Peer> {
        self.peers[self.current.load(std::sync::atomic::Ordering::Acquire) % self.peers.len()].clone()
    }

    /// `peer` could not be reached: the next one is spoken to from now on (unless another call moved on already).
    pub fn failed(&self, peer: &Arc<Peer>) {
        let Some(at) = self.peers.iter().position(|p| Arc::ptr_eq(p, peer)) else { return };
        let next = (at + 1) % self.peers.len();
        let ordering = std::sync::atomic::Ordering::AcqRel;
        if self.current.compare_exchange(at, next, ordering, std::sync::atomic::Ordering::Acquire).is_ok()
            && self.peers.len() > 1
        {
            tracing::warn!(from = peer.authority(), to = self.peers[next].authority(), "the server is unreachable; moving to the next");
        }
    }

    /// `call` on the current server; one that cannot reach it moves on to the next, and is tried there, once
    /// round the list at most.
    pub async fn call(&self, method: Method, path: &str, body: Bytes) -> Result<(StatusCode, Bytes), PeerError> {
        let mut tries = self.peers.len();
        loop {
            let peer = self.current();
            match peer.call(method.clone(), path, body.clone()).await {
                Err(e) if tries > 1 => {
                    tracing::debug!(server = peer.authority(), error = %e, "call failed");
                    self.failed(&peer);
                    tries -= 1;
                }
                answer => return answer,
            }
        }
    }
}

impl Peer {
    /// A peer spoken to over HTTP/1.1.
    pub fn new(authority: &str, credentials: Credentials) -> Peer {
        Peer::with_protocol(authority, credentials, Protocol::Http1)
    }

    /// A peer spoken to in `protocol` (the other side must speak it: cache nodes speak both).
    pub fn with_protocol(authority: &str, credentials: Credentials, protocol: Protocol) -> Peer {
        let connections = match protocol {
            Protocol::Http1 => Connections::Http1(Mutex::new(Vec::new())),
            Protocol::Http2 => Connections::Http2(Multiplexed {
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                next: Mutex::new(0),
            }),
        };
        Peer { authority: authority.to_string(), credentials, connections }
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// A peer at `authority`, signed for with the same credentials and spoken to in the same protocol.
    pub fn sibling(&self, authority: &str) -> Peer {
        Peer::with_protocol(authority, self.credentials.clone(), self.protocol())
    }

    pub fn protocol(&self) -> Protocol {
        match self.connections {
            Connections::Http1(_) => Protocol::Http1,
            Connections::Http2(_) => Protocol::Http2,
        }
    }

    /// A signed request; `uri` is `path`, or for HTTP/2, which names the scheme and authority in the request
    /// (`:scheme`, `:authority`), the whole URL.
    fn signed(
        &self,
        method: &Method,
        path: &str,
        body: &Bytes,
    ) -> impl Fn() -> Result<hyper::Request<Full<Bytes>>, PeerError> + use<> {
        let host = [("host", self.authority.as_str())];
        let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
        let parts = RequestParts { method: method.as_str(), path: path_only, query, headers: &host, body };
        let signed = ignis_sigv4::sign(&parts, &self.credentials, REGION, SERVICE, SystemTime::now());
        let uri = match self.connections {
            Connections::Http1(_) => path.to_string(),
            Connections::Http2(_) => format!("http://{}{path}", self.authority),
        };
        let (method, authority, body, path) = (method.clone(), self.authority.clone(), body.clone(), path.to_string());
        move || {
            let mut builder = hyper::Request::builder().method(method.clone()).uri(&uri);
            builder = builder.header("host", &authority);
            for (name, value) in &signed {
                builder = builder.header(name.as_str(), value.as_str());
            }
            builder.body(Full::new(body.clone())).map_err(|e| PeerError::Connect(format!("bad request {path}: {e}")))
        }
    }

    /// Sends a signed call on an HTTP/1.1 connection of its own (not kept) and answers once the answer's head is
    /// in: the caller reads its body as it comes. `path` may end in a query.
    pub async fn open(&self, method: Method, path: &str, body: Bytes) -> Result<hyper::Response<Incoming>, PeerError> {
        let request = self.signed(&method, path, &body)()?;
        let stream = self.connect().await?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| self.unreachable(e))?;
        tokio::spawn(connection);
        sender.ready().await.map_err(|e| self.transport(e))?;
        sender.send_request(request).await.map_err(|e| self.transport(e))
    }

    /// Sends a signed call and reads its whole answer. `path` may end in a query (`?a=b`, percent-encoded).
    pub async fn call(&self, method: Method, path: &str, body: Bytes) -> Result<(StatusCode, Bytes), PeerError> {
        let build = self.signed(&method, path, &body);
        match &self.connections {
            Connections::Http1(idle) => self.call_http1(idle, build).await,
            Connections::Http2(multiplexed) => {
                // A kept connection that closed as the call went out fails before the request is sent: then a
                // new one is made.
                if let Some((mut sender, lease)) = multiplexed.lease() {
                    match send_http2(&mut sender, build()?).await {
                        Ok(answer) => return Ok(answer),
                        Err(e) if e.is_canceled() => multiplexed.forget(lease.id),
                        Err(e) => return Err(self.transport(e)),
                    }
                }
                let (mut sender, _lease) = self.connect_http2(multiplexed).await?;
                send_http2(&mut sender, build()?).await.map_err(|e| self.transport(e))
            }
        }
    }

    async fn call_http1(
        &self,
        idle: &Idle,
        build: impl Fn() -> Result<hyper::Request<Full<Bytes>>, PeerError>,
    ) -> Result<(StatusCode, Bytes), PeerError> {
        let pooled = {
            let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
            // The oldest first: the stale ones go.
            idle.retain(|(_, since)| since.elapsed() < REUSE_WITHIN);
            idle.pop().map(|(sender, _)| sender)
        };
        let put_back = |sender| {
            let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push((sender, Instant::now()));
            }
        };
        // A kept connection the peer closed meanwhile fails before the request goes out: then a new one is made.
        if let Some(mut sender) = pooled.filter(|s| !s.is_closed())
            && sender.ready().await.is_ok()
        {
            match send_http1(&mut sender, build()?).await {
                Ok(answer) => {
                    put_back(sender);
                    return Ok(answer);
                }
                Err(e) if e.is_canceled() => {}
                Err(e) => return Err(self.transport(e)),
            }
        }
        let stream = self.connect().await?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| self.unreachable(e))?;
        tokio::spawn(connection);
        let answer = send_http1(&mut sender, build()?).await.map_err(|e| self.transport(e))?;
        put_back(sender);
        Ok(answer)
    }

    /// The current HTTP/2 connection, made now unless another call made it meanwhile; leased.
    async fn connect_http2<'a>(
        &self,
        multiplexed: &'a Multiplexed,
    ) -> Result<(http2::SendRequest<Full<Bytes>>, Lease<'a>), PeerError> {
        let _connecting = multiplexed.connecting.lock().await;
        if let Some(leased) = multiplexed.lease() {
            return Ok(leased);
        }
        let stream = self.connect().await?;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        let handshake = builder.max_frame_size(MAX_FRAME).handshake(TokioIo::new(stream));
        let (sender, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(Ok(made)) => made,
            Ok(Err(e)) => return Err(self.unreachable(e)),
            Err(_) => return Err(self.unreachable("the HTTP/2 handshake timed out")),
        };
        tokio::spawn(connection);
        let lease = multiplexed.install(sender.clone());
        Ok((sender, lease))
    }

    async fn connect(&self) -> Result<tokio::net::TcpStream, PeerError> {
        let connecting = tokio::net::TcpStream::connect(&self.authority);
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(self.unreachable(e)),
            Err(_) => return Err(self.unreachable("connection timed out")),
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> PeerError {
        PeerError::Connect(format!("cannot reach {}: {e}", self.authority))
    }

    fn transport(&self, e: hyper::Error) -> PeerError {
        PeerError::Transport(format!("{}: {e}", self.authority))
    }

    /// Drops the idle connections (the peer is gone).
    pub fn close(&self) {
        match &self.connections {
            Connections::Http1(idle) => idle.lock().unwrap_or_else(|e| e.into_inner()).clear(),
            Connections::Http2(multiplexed) => *multiplexed.current.lock().unwrap_or_else(|e| e.into_inner()) = None,
        }
    }
}

async fn send_http1(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    request: hyper::Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), hyper::Error> {
    sender.ready().await?;
    read_answer(sender.send_request(request).await?).await
}

async fn send_http2(
    sender: &mut http2::SendRequest<Full<Bytes>>,
    request: hyper::Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), hyper::Error> {
    sender.ready().await?;
    read_answer(sender.send_request(request).await?).await
}

async fn read_answer(response: hyper::Response<hyper::body::Incoming>) -> Result<(StatusCode, Bytes), hyper::Error> {
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Checks a request's head: signed (service `ignis`) with `credentials`, the
/// payload hash declared (as [`Peer`] does), so that nothing of the body is
/// read before the signature is proven. The body is then checked with
/// [`ignis_sigv4::HeadChecked::finish`].
pub fn authentic_head(credentials: &Credentials, parts: &http::request::Parts) -> Option<ignis_sigv4::HeadChecked> {
    let headers: Vec<(&str, &str)> =
        parts.headers.iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))).collect();
    let request = ignis_sigv4::RequestHead {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
    };
    let secret = |key: &str| (key == credentials.access_key_id).then(|| credentials.secret_access_key.clone());
    let head = ignis_sigv4::verify_head(&request, secret, SystemTime::now()).ok()?;
    (head.signature_verified() && head.claimed().service == SERVICE).then_some(head)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::Response;
    use ignis_worker::conn::{Limits, Protocols, TimedBody};
    use tokio::sync::Notify;

    use super::*;

    fn credentials() -> Credentials {
        Credentials { access_key_id: "AKIDPEER".into(), secret_access_key: "peer-secret".into() }
    }

    fn listen() -> std::net::TcpListener {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        listener
    }

    /// A server on `listener` in a runtime of its own (stopping it closes every connection), speaking both
    /// protocols. A signed call is answered with its HTTP version, path and body; `/hang` tells `arrived` and is
    /// never answered; anything unsigned is 403.
    fn server(listener: std::net::TcpListener, arrived: Arc<Notify>) -> tokio::runtime::Runtime {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let handle = move |request| answer(request, arrived.clone());
            crate::serve(listener, Limits::default(), Protocols::Http1AndHttp2, std::future::pending(), handle).await;
        });
        runtime
    }

    async fn answer(request: hyper::Request<TimedBody>, arrived: Arc<Notify>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let signed = authentic_head(&credentials(), &parts).is_some_and(|head| head.finish(&body).is_ok());
        if !signed {
            let mut refused = Response::new(Full::new(Bytes::new()));
            *refused.status_mut() = StatusCode::FORBIDDEN;
            return refused;
        }
        if parts.uri.path() == "/hang" {
            arrived.notify_one();
            std::future::pending::<()>().await;
        }
        let text = format!("{:?} {} {}", parts.version, parts.uri.path(), String::from_utf8_lossy(&body));
        Response::new(Full::new(Bytes::from(text)))
    }

    async fn stop(runtime: tokio::runtime::Runtime) {
        tokio::task::spawn_blocking(move || runtime.shutdown_timeout(Duration::from_secs(30))).await.expect("stop");
    }

    fn connections_made(peer: &Peer) -> u64 {
        match &peer.connections {
            Connections::Http1(_) => panic!("an HTTP/1.1 peer"),
            Connections::Http2(multiplexed) => *multiplexed.next.lock().expect("lock"),
        }
    }

    fn in_flight(peer: &Peer) -> usize {
        match &peer.connections {
            Connections::Http1(_) => panic!("an HTTP/1.1 peer"),
            Connections::Http2(multiplexed) => {
                multiplexed.current.lock().expect("lock").as_ref().map_or(0, |shared| shared.in_flight)
            }
        }
    }

    async fn call_many(peer: &Arc<Peer>, calls: usize) {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..calls {
            let peer = peer.clone();
            let body = Bytes::from(vec![b'x'; i]);
            set.spawn(async move { (i, peer.call(Method::PUT, &format!("/many/{i}"), body).await) });
        }
        while let Some(joined) = set.join_next().await {
            let (i, answer) = joined.expect("a call");
            let (status, body) = answer.expect("an answer");
            assert_eq!(status, StatusCode::OK);
            assert!(body.ends_with(format!("/many/{i} {}", "x".repeat(i)).as_bytes()), "{body:?}");
        }
    }

    #[tokio::test]
    async fn calls_are_signed_and_answered_in_either_protocol() {
        let listener = listen();
        let addr = listener.local_addr().expect("address").to_string();
        let runtime = server(listener, Arc::new(Notify::new()));
        for (protocol, version) in [(Protocol::Http1, "HTTP/1.1"), (Protocol::Http2, "HTTP/2.0")] {
            let peer = Arc::new(Peer::with_protocol(&addr, credentials(), protocol));
            assert_eq!(peer.protocol(), protocol);
            for i in 0..3 {
                let answer = peer.call(Method::PUT, "/a/b?x=1&y=%20", Bytes::from(format!("body {i}"))).await;
                assert_eq!(answer, Ok((StatusCode::OK, Bytes::from(format!("{version} /a/b body {i}")))));
            }
            let wrong_key = Credentials { secret_access_key: "wrong".into(), ..credentials() };
            let wrong = Peer::with_protocol(&addr, wrong_key, protocol);
            let refused = wrong.call(Method::GET, "/", Bytes::new()).await.map(|(status, _)| status);
            assert_eq!(refused, Ok(StatusCode::FORBIDDEN));
            call_many(&peer, 64).await;
            match protocol {
                // Every call on the one connection.
                Protocol::Http2 => assert_eq!((connections_made(&peer), in_flight(&peer)), (1, 0)),
                Protocol::Http1 => {}
            }
        }
        stop(runtime).await;
    }

    #[tokio::test]
    async fn an_http2_call_dropped_in_flight_leaves_the_connection_to_the_others() {
        let listener = listen();
        let addr = listener.local_addr().expect("address").to_string();
        let arrived = Arc::new(Notify::new());
        let runtime = server(listener, arrived.clone());
        let peer = Arc::new(Peer::with_protocol(&addr, credentials(), Protocol::Http2));
        let hanging = {
            let peer = peer.clone();
            tokio::spawn(async move { peer.call(Method::GET, "/hang", Bytes::new()).await })
        };
        arrived.notified().await;
        assert_eq!(in_flight(&peer), 1);
        call_many(&peer, 8).await;
        hanging.abort();
        assert!(hanging.await.is_err_and(|e| e.is_cancelled()));
        assert_eq!(in_flight(&peer), 0);
        call_many(&peer, 8).await;
        assert_eq!(connections_made(&peer), 1);
        stop(runtime).await;
    }

    #[tokio::test]
    async fn a_closed_http2_connection_is_replaced() {
        let listener = listen();
        let addr = listener.local_addr().expect("address").to_string();
        let runtime = server(listener, Arc::new(Notify::new()));
        let peer = Arc::new(Peer::with_protocol(&addr, credentials(), Protocol::Http2));
        call_many(&peer, 4).await;
        stop(runtime).await;
        // Nothing listens: nothing to connect to.
        let answer = peer.call(Method::GET, "/", Bytes::new()).await;
        assert!(matches!(answer, Err(PeerError::Connect(_) | PeerError::Transport(_))), "{answer:?}");
        // Served again on the same address: a new connection.
        let listener = std::net::TcpListener::bind(&addr).expect("bind again");
        listener.set_nonblocking(true).expect("nonblocking");
        let runtime = server(listener, Arc::new(Notify::new()));
        call_many(&peer, 4).await;
        assert_eq!(connections_made(&peer), 2);
        stop(runtime).await;
    }
}
