//! One HTTP/1.1 accept loop, for the API server and the worker host alike.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Serves keep-alive HTTP/1.1 connections on `listener` with `handle` until
/// `shutdown` completes. `header_timeout` bounds how long a client may take
/// to send a request's headers (none: connections may idle between calls).
pub async fn serve<H, F>(
    listener: tokio::net::TcpListener,
    header_timeout: Option<Duration>,
    shutdown: impl Future<Output = ()>,
    handle: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of file descriptors or similar: let it pass, do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let answer = handle(request);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.keep_alive(true);
            if let Some(timeout) = header_timeout {
                builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(timeout);
            }
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
