//! One accept loop, for the API server and the worker host alike (HTTP/1.1), and cache nodes (HTTP/1.1 or HTTP/2).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Body;
use ignis_worker::conn::{BoxError, Limits, Protocols, TimedBody};

/// Serves keep-alive connections in one of `protocols` on `listener` with
/// `handle` until `shutdown` completes. Every connection has the time `limits`
/// of [`ignis_worker::conn`] (headers, each stretch of a body, idle keep-alive).
/// Answers are whole bodies or streamed ones (`B`).
pub async fn serve<H, F, B>(
    listener: tokio::net::TcpListener,
    limits: Limits,
    protocols: Protocols,
    shutdown: impl Future<Output = ()>,
    handle: H,
) where
    H: Fn(Request<TimedBody>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    serve_with_peer(listener, limits, protocols, shutdown, move |_, request| handle(request)).await
}

/// [`serve`], with `handle` told each connection's peer address.
pub async fn serve_with_peer<H, F, B>(
    listener: tokio::net::TcpListener,
    limits: Limits,
    protocols: Protocols,
    shutdown: impl Future<Output = ()>,
    handle: H,
) where
    H: Fn(SocketAddr, Request<TimedBody>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of file descriptors or similar: let it pass, do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let handle = handle.clone();
        let handle = move |request| handle(peer, request);
        tokio::spawn(ignis_worker::conn::serve_connection(stream, limits, protocols, handle));
    }
}
