//! A cache node: stripes over signed HTTP, kept in memory then on disk.
//!
//! # Protocol (HTTP/1.1 with kept connections, or HTTP/2 with prior knowledge, on the same port; every request
//! SigV4-signed as [`ignis_cluster::Peer`] signs)
//! - `PUT /ignis/stripes/{digest hex}/{index}` (body: the stripe, at most [`MAX_BODY`] bytes) → 204 stored;
//!   413 over the limit; 507 when neither tier can take it (the disk is full).
//! - `GET /ignis/stripes/{digest hex}/{index}` → 200 with the stripe's bytes, or 404.
//! - `GET /ignis/health` → 200.
//!
//! A request is routed ([`route`], pure) to the closed [`Route`] only after its head's signature is checked
//! ([`ignis_cluster::authentic_head`]): an unsigned or wrongly signed request is 403 with nothing of its body
//! read. Then a path that is not one of the above is 404, a method the path does not take 405, a digest that
//! is not 64 lowercase hex digits or an index outside `0..5` 400. A body is read against [`MAX_BODY`] and must
//! be the one signed (403 otherwise).
//!
//! The node does not look inside stripes: it stores the bytes under their name, as they came; whoever
//! reads them checks them. Connections have the time limits of [`ignis_worker::conn`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use ignis_chunks::ChunkDigest;
use ignis_cluster::authentic_head;
use ignis_sigv4::Credentials;
use ignis_worker::conn::{Limits, Protocols, TimedBody, is_body_timeout};

use crate::erasure::{MAX_STRIPE_BYTES, STRIPES};
use crate::store::{Key, NodeStats, StoreError, Tiers};

/// The largest request body: the largest stripe.
pub const MAX_BODY: usize = MAX_STRIPE_BYTES;

/// A cache node's settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where the disk tier's files go; emptied at start.
    pub data_dir: PathBuf,
    /// The memory tier's budget, in bytes of stripes.
    pub memory_bytes: u64,
    /// The disk tier's budget, in bytes of stripes.
    pub disk_bytes: u64,
    /// The key every request must be signed with.
    pub credentials: Credentials,
}

/// A cache node could not start.
#[derive(Debug, thiserror::Error)]
#[error("cache node data directory {dir}: {source}")]
pub struct NodeError {
    pub dir: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// What a request asks for, known from its method and path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    PutStripe(ChunkDigest, u8),
    GetStripe(ChunkDigest, u8),
    Health,
}

/// Why a request has no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unrouted {
    /// 404: no such path.
    NotFound,
    /// 405: the path does not take this method.
    Method,
    /// 400: a stripe path whose digest or index is malformed.
    Malformed(String),
}

/// The route of `method` on `path`. Pure.
pub fn route(method: &Method, path: &str) -> Result<Route, Unrouted> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    match segments.as_slice() {
        ["ignis", "health"] => match *method {
            Method::GET => Ok(Route::Health),
            _ => Err(Unrouted::Method),
        },
        ["ignis", "stripes", digest, index] => {
            let digest: ChunkDigest = digest.parse().map_err(|e| Unrouted::Malformed(format!("{e}")))?;
            // One digit: the indexes are 0..STRIPES (a single digit each).
            let index = match index.as_bytes() {
                [digit @ b'0'..=b'9'] if usize::from(digit - b'0') < STRIPES => digit - b'0',
                _ => return Err(Unrouted::Malformed(format!("not a stripe index (0 to {}): {index:?}", STRIPES - 1))),
            };
            match *method {
                Method::GET => Ok(Route::GetStripe(digest, index)),
                Method::PUT => Ok(Route::PutStripe(digest, index)),
                _ => Err(Unrouted::Method),
            }
        }
        ["ignis", "stripes", ..] => Err(Unrouted::Malformed(format!("not a stripe path: {path:?}"))),
        _ => Err(Unrouted::NotFound),
    }
}

/// A cache node.
#[derive(Debug)]
pub struct CacheNode {
    tiers: Tiers,
    credentials: Credentials,
}

impl CacheNode {
    /// A node over `config.data_dir`, which is emptied (blocking: call it at start).
    pub fn new(config: NodeConfig) -> Result<Arc<CacheNode>, NodeError> {
        let tiers = Tiers::open(&config.data_dir, config.memory_bytes, config.disk_bytes)
            .map_err(|source| NodeError { dir: config.data_dir.clone(), source })?;
        Ok(Arc::new(CacheNode { tiers, credentials: config.credentials }))
    }

    /// What the node holds.
    pub fn stats(&self) -> NodeStats {
        self.tiers.stats()
    }

    /// Serves requests on `listener` until `shutdown` completes.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener, shutdown: impl Future<Output = ()>) {
        let handle = move |request| self.clone().handle(request);
        ignis_cluster::serve(listener, Limits::default(), Protocols::Http1AndHttp2, shutdown, handle).await;
    }

    async fn handle(self: Arc<Self>, request: Request<TimedBody>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let Some(head) = authentic_head(&self.credentials, &parts) else {
            return answer(StatusCode::FORBIDDEN, "not signed with the cluster's key");
        };
        let route = match route(&parts.method, parts.uri.path()) {
            Ok(route) => route,
            Err(Unrouted::NotFound) => return answer(StatusCode::NOT_FOUND, "no such path"),
            Err(Unrouted::Method) => return answer(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
            Err(Unrouted::Malformed(why)) => return answer(StatusCode::BAD_REQUEST, &why),
        };
        let limit = match route {
            Route::PutStripe(..) => MAX_BODY,
            Route::GetStripe(..) | Route::Health => 0,
        };
        let too_large = || answer(StatusCode::PAYLOAD_TOO_LARGE, &format!("the body is over {limit} bytes"));
        if hyper::body::Body::size_hint(&body).lower() > limit as u64 {
            return too_large();
        }
        let body = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
            Err(e) if is_body_timeout(e.as_ref()) => return answer(StatusCode::REQUEST_TIMEOUT, &e.to_string()),
            Err(e) => return answer(StatusCode::BAD_REQUEST, &format!("could not read the body: {e}")),
        };
        if head.finish(&body).is_err() {
            return answer(StatusCode::FORBIDDEN, "the body is not the one signed");
        }
        match route {
            Route::Health => answer(StatusCode::OK, ""),
            Route::GetStripe(digest, index) => match self.tiers.get(key(digest, index)).await {
                Ok(Some(stripe)) => response(StatusCode::OK, stripe),
                Ok(None) => answer(StatusCode::NOT_FOUND, ""),
                Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
            Route::PutStripe(digest, index) => match self.tiers.put(key(digest, index), body).await {
                Ok(()) => answer(StatusCode::NO_CONTENT, ""),
                Err(e @ StoreError::Full(_)) => answer(StatusCode::INSUFFICIENT_STORAGE, &e.to_string()),
                Err(e @ StoreError::Io(_)) => answer(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
        }
    }
}

fn key(digest: ChunkDigest, index: u8) -> Key {
    (digest, index)
}

fn response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

fn answer(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    response(status, Bytes::from(message.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let digest = ChunkDigest::of(b"x");
        let stripe = |i: &str| format!("/ignis/stripes/{digest}/{i}");
        let malformed = |r: Result<Route, Unrouted>| matches!(r, Err(Unrouted::Malformed(_)));
        assert_eq!(route(&Method::GET, "/ignis/health"), Ok(Route::Health));
        assert_eq!(route(&Method::PUT, "/ignis/health"), Err(Unrouted::Method));
        for i in 0..5u8 {
            assert_eq!(route(&Method::GET, &stripe(&i.to_string())), Ok(Route::GetStripe(digest, i)));
            assert_eq!(route(&Method::PUT, &stripe(&i.to_string())), Ok(Route::PutStripe(digest, i)));
        }
        assert_eq!(route(&Method::DELETE, &stripe("0")), Err(Unrouted::Method));
        assert_eq!(route(&Method::POST, &stripe("4")), Err(Unrouted::Method));
        for index in ["5", "255", "256", "-1", "+1", "01", "00", "", "x", " 1"] {
            assert!(malformed(route(&Method::GET, &stripe(index))), "index {index:?}");
        }
        let upper = digest.to_string().to_uppercase();
        for bad in [upper.as_str(), "abc", "", &digest.to_string()[1..], "zz"] {
            assert!(malformed(route(&Method::GET, &format!("/ignis/stripes/{bad}/0"))), "digest {bad:?}");
        }
        assert!(malformed(route(&Method::GET, "/ignis/stripes")));
        assert!(malformed(route(&Method::GET, &format!("/ignis/stripes/{digest}"))));
        assert!(malformed(route(&Method::GET, &format!("/ignis/stripes/{digest}/0/extra"))));
        for path in ["/", "", "/ignis", "/ignis/", "/other/health", "/ignis/health/x", "ignis-health"] {
            assert_eq!(route(&Method::GET, path), Err(Unrouted::NotFound), "{path:?}");
        }
    }
}
