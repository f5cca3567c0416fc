//! Signed HTTP/1.1 calls between the server and its workers.
//!
//! Every call is signed with SigV4 (service `ignis`) with the administrator's
//! key pair, which both sides hold, and checked on arrival: the head (with
//! the declared payload hash) before any of the body is read, then the body. Connections are
//! kept open and reused (a stack of idle ones per peer); a call takes one, or
//! opens a new one, and puts it back once the whole answer is read.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use ignis_sigv4::{Credentials, RequestParts};

/// The SigV4 service of cluster calls.
pub const SERVICE: &str = "ignis";
const REGION: &str = "us-east-1";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
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

/// One side's client for the other, at `authority` (`host:port`).
pub struct Peer {
    authority: String,
    credentials: Credentials,
    /// Kept connections and since when each is idle, the most recent last.
    idle: Mutex<Vec<(SendRequest<Full<Bytes>>, Instant)>>,
}

impl Peer {
    pub fn new(authority: &str, credentials: Credentials) -> Peer {
        Peer { authority: authority.to_string(), credentials, idle: Mutex::new(Vec::new()) }
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Sends a signed call and reads its whole answer. `path` may end in a query (`?a=b`, percent-encoded).
    pub async fn call(&self, method: Method, path: &str, body: Bytes) -> Result<(StatusCode, Bytes), PeerError> {
        let host = [("host", self.authority.as_str())];
        let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
        let parts = RequestParts { method: method.as_str(), path: path_only, query, headers: &host, body: &body };
        let signed = ignis_sigv4::sign(&parts, &self.credentials, REGION, SERVICE, SystemTime::now());
        let build = || {
            let mut builder = hyper::Request::builder().method(method.clone()).uri(path).header("host", &self.authority);
            for (name, value) in &signed {
                builder = builder.header(name.as_str(), value.as_str());
            }
            builder.body(Full::new(body.clone())).map_err(|e| PeerError::Connect(format!("bad request {path}: {e}")))
        };
        let pooled = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            // The oldest first: the stale ones go.
            idle.retain(|(_, since)| since.elapsed() < REUSE_WITHIN);
            idle.pop().map(|(sender, _)| sender)
        };
        // A kept connection the peer closed meanwhile fails before the request goes out: then a new one is made.
        if let Some(mut sender) = pooled.filter(|s| !s.is_closed())
            && sender.ready().await.is_ok()
        {
            match self.send(&mut sender, build()?).await {
                Ok(answer) => {
                    self.put_back(sender);
                    return Ok(answer);
                }
                Err(e) if e.is_canceled() => {}
                Err(e) => return Err(PeerError::Transport(format!("{}: {e}", self.authority))),
            }
        }
        let mut sender = self.connect().await?;
        let answer =
            self.send(&mut sender, build()?).await.map_err(|e| PeerError::Transport(format!("{}: {e}", self.authority)))?;
        self.put_back(sender);
        Ok(answer)
    }

    async fn send(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), hyper::Error> {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    fn put_back(&self, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((sender, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, PeerError> {
        let failed = |e: String| PeerError::Connect(format!("cannot reach {}: {e}", self.authority));
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&self.authority)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(failed(e.to_string())),
            Err(_) => return Err(failed("connection timed out".into())),
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| failed(e.to_string()))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// Drops the idle connections (the peer is gone).
    pub fn close(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
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
