//! The Lambda Runtime API (`2018-06-01`), served to one sandbox on the
//! listener it was given (127.0.0.1:9001 inside its network namespace).
//!
//! Routes: `GET /runtime/invocation/next`, `POST /runtime/invocation/{id}/response`,
//! `POST /runtime/invocation/{id}/error`, `POST /runtime/init/error`.
//!
//! A response posted with `Lambda-Runtime-Function-Response-Mode: streaming` (a chunked body, as the official
//! runtime clients send it) is not read whole: its chunks go to the invocation as they arrive, through a bounded
//! channel (the next is read only once the invocation took the last, so a slow reader holds the runtime back),
//! and its trailers `Lambda-Runtime-Function-Error-Type` / `Lambda-Runtime-Function-Error-Body` (base64) end it
//! with an error. The runtime's request is answered 202 once its body ended, or 413 when the invocation refused
//! the rest (over its size limit). Its body may pause as long as the function may run, not only the body limit.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use ignis_sandbox::netns::NetnsLease;

use crate::MAX_RESPONSE_BYTES;
use crate::conn::{Limits, Protocols, TimedBody, is_body_timeout};
use crate::sandbox::{Current, Delivery, Phase, Piece, Reply, SandboxHandle};

const PREFIX: &str = "/2018-06-01/runtime/";

/// Most connections one sandbox may hold open to its Runtime API at once (a
/// runtime needs one or two); more are closed as soon as they are accepted,
/// so a sandbox cannot use up the server's file descriptors.
const MAX_CONNECTIONS: usize = 8;

/// Accepts the runtime's connections until the sandbox is gone. The listener and every connection live in the
/// sandbox's network namespace: `network` is held until the last of them is closed, so that the namespace is not
/// given to another sandbox before (parameters are dropped last to first: `network` after `listener`). Each
/// connection has the time `limits` of [`crate::conn`]; a runtime parked in `GET /runtime/invocation/next` has a
/// request in flight, which no limit ends. The idle limit given is longer than the worker's by the function's
/// timeout: a runtime's connection rests while its function runs (after `/next` answered, until the response is
/// posted), and must not be closed just as the response goes out on it.
pub(crate) async fn serve(network: NetnsLease, handle: Arc<SandboxHandle>, listener: tokio::net::TcpListener, limits: Limits) {
    let mut dead = handle.dead_signal();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = dead.wait_for(|dead| *dead) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors or similar: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let handle = handle.clone();
        let mut dead = handle.dead_signal();
        let network = network.clone();
        tokio::spawn(async move {
            let _held = (slot, network);
            let serving = handle.clone();
            let connection = crate::conn::serve_connection(stream, limits, Protocols::Http1, move |request| {
                route(serving.clone(), request)
            });
            tokio::select! {
                _ = connection => {}
                _ = dead.wait_for(|dead| *dead) => {}
            }
        });
    }
}

type Answer = Response<Full<Bytes>>;

fn json(status: StatusCode, body: String) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn accepted() -> Answer {
    json(StatusCode::ACCEPTED, r#"{"status":"OK"}"#.into())
}

fn error(status: StatusCode, error_type: &str, message: &str) -> Answer {
    let body = serde_json::json!({ "errorMessage": message, "errorType": error_type });
    json(status, body.to_string())
}

async fn route(handle: Arc<SandboxHandle>, request: Request<TimedBody>) -> Answer {
    let path = request.uri().path().to_string();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return error(StatusCode::NOT_FOUND, "NotFound", "unknown path");
    };
    match (request.method(), rest.split('/').collect::<Vec<_>>().as_slice()) {
        (&Method::GET, ["invocation", "next"]) => next(&handle).await,
        (&Method::POST, ["invocation", id, "response"]) if is_streaming(&request) => {
            let id = id.to_string();
            stream_response(&handle, &id, request).await
        }
        (&Method::POST, ["invocation", id, "response"]) => {
            let id = id.to_string();
            match read_body(request).await {
                Ok(body) => reply(&handle, &id, Reply::Response(body)),
                Err(BodyError::TooLarge) => too_large(&handle, &id),
                Err(BodyError::Unread(e)) => unread(&e),
            }
        }
        (&Method::POST, ["invocation", id, "error"]) => {
            let id = id.to_string();
            let error_type = error_type_header(&request);
            match read_body(request).await {
                Ok(body) => reply(&handle, &id, Reply::Error { body: error_body(body, &error_type), error_type }),
                Err(BodyError::TooLarge) => too_large(&handle, &id),
                Err(BodyError::Unread(e)) => unread(&e),
            }
        }
        (&Method::POST, ["init", "error"]) => {
            let error_type = error_type_header(&request);
            match read_body(request).await {
                Ok(body) => init_error(&handle, error_body(body, &error_type), error_type),
                Err(BodyError::TooLarge) => init_error(&handle, error_body(Bytes::new(), &error_type), error_type),
                Err(BodyError::Unread(e)) => unread(&e),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "NotFound", "unknown path"),
    }
}

/// Whether the runtime streams its response (`Lambda-Runtime-Function-Response-Mode: streaming`).
fn is_streaming(request: &Request<TimedBody>) -> bool {
    request
        .headers()
        .get("lambda-runtime-function-response-mode")
        .is_some_and(|mode| mode.as_bytes().eq_ignore_ascii_case(b"streaming"))
}

/// Hands the current invocation a streamed response, chunk by chunk (see the module docs).
async fn stream_response(handle: &SandboxHandle, id: &str, request: Request<TimedBody>) -> Answer {
    let Some(current) = take_current(handle, id) else {
        return error(StatusCode::BAD_REQUEST, "InvalidRequestID", "Invalid request ID");
    };
    let content_type = request.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let content_type = content_type.map(str::to_string);
    let (pieces, received) = tokio::sync::mpsc::channel(crate::STREAM_CHUNKS);
    if current.reply.send(Reply::Stream { content_type, pieces: received }).is_err() {
        return error(StatusCode::GONE, "InvocationEnded", "the invocation has ended");
    }
    // A stream may pause between chunks as long as its function may run (the function's timeout ends it).
    let mut body = request.into_body().with_limit(handle.timeout());
    let mut failure = None;
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame,
            // The invocation sees the channel close without an end.
            Some(Err(e)) => return unread(&e),
        };
        let frame = match frame.into_data() {
            Ok(chunk) if chunk.is_empty() => continue,
            Ok(chunk) => {
                if pieces.send(Piece::Chunk(chunk)).await.is_err() {
                    return refused();
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            failure = trailer_error(&trailers);
        }
    }
    if pieces.send(Piece::End(failure)).await.is_err() {
        return refused();
    }
    accepted()
}

/// The error a streamed response's trailers report: its type, and its body decoded from base64 (taken as it is
/// when it is not base64), made an error document if it is none.
fn trailer_error(trailers: &http::HeaderMap) -> Option<(String, Bytes)> {
    use base64::Engine;
    let error_type = trailers.get("lambda-runtime-function-error-type")?.to_str().ok()?.to_string();
    let body = trailers.get("lambda-runtime-function-error-body").map(HeaderValue::as_bytes).unwrap_or_default();
    let decoded = base64::engine::general_purpose::STANDARD.decode(body).unwrap_or_else(|_| body.to_vec());
    let body = error_body(Bytes::from(decoded), &Some(error_type.clone()));
    Some((error_type, body))
}

/// The answer to a streamed response whose invocation took no more of it: over its size limit (or ended).
fn refused() -> Answer {
    let message = format!("Exceeded maximum allowed payload size ({} bytes).", crate::MAX_STREAMED_RESPONSE_BYTES);
    error(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", &message)
}

fn error_type_header(request: &Request<TimedBody>) -> Option<String> {
    request
        .headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The error document a runtime posted, or one made up when it posted none.
fn error_body(body: Bytes, error_type: &Option<String>) -> Bytes {
    if serde_json::from_slice::<serde_json::Value>(&body).is_ok() {
        return body;
    }
    let message = if body.is_empty() { "Unknown error".to_string() } else { String::from_utf8_lossy(&body).into_owned() };
    let error_type = error_type.as_deref().unwrap_or("Unhandled");
    Bytes::from(serde_json::json!({ "errorMessage": message, "errorType": error_type }).to_string())
}

/// Why a body was not read.
enum BodyError {
    /// Over [`MAX_RESPONSE_BYTES`].
    TooLarge,
    /// It stopped (for longer than the body limit) or its connection broke: the request is not taken into account,
    /// the runtime may send it again.
    Unread(crate::conn::BoxError),
}

async fn read_body(request: Request<TimedBody>) -> Result<Bytes, BodyError> {
    match Limited::new(request.into_body(), MAX_RESPONSE_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(e) => Err(BodyError::Unread(e)),
    }
}

/// The answer to a request whose body did not arrive (its connection is then closed).
fn unread(e: &crate::conn::BoxError) -> Answer {
    if is_body_timeout(e.as_ref()) {
        error(StatusCode::REQUEST_TIMEOUT, "RequestTimeout", &e.to_string())
    } else {
        error(StatusCode::BAD_REQUEST, "InvalidRequest", &format!("could not read the request body: {e}"))
    }
}

async fn next(handle: &SandboxHandle) -> Answer {
    let parked = {
        let mut rt = handle.lock_rt();
        let awaited = handle.init_done(&mut rt);
        if matches!(rt.phase, Phase::Dead) {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "ServiceException", "the sandbox is shutting down");
        }
        match rt.queued.take() {
            Some(delivery) => Err(delivery),
            None => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                rt.parked = Some(tx);
                // Nothing to do until the next event: freeze (unless an event is on its way right now).
                if !awaited {
                    handle.settle(&mut rt);
                }
                Ok(rx)
            }
        }
    };
    let delivered = match parked {
        Err(queued) => Ok(queued),
        Ok(parked) => parked.await,
    };
    match delivered {
        Ok(delivery) => {
            handle.taken(&delivery);
            event(delivery)
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "ServiceException", "the sandbox is shutting down"),
    }
}

fn event(delivery: Delivery) -> Answer {
    let mut response = json(StatusCode::OK, String::new());
    *response.body_mut() = Full::new(delivery.payload);
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("lambda-runtime-aws-request-id", &delivery.request_id);
    set("lambda-runtime-deadline-ms", &delivery.deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", &delivery.invoked_function_arn);
    set("lambda-runtime-trace-id", &delivery.trace_id);
    if let Some(context) = &delivery.client_context {
        set("lambda-runtime-client-context", context);
    }
    if let Some(identity) = &delivery.cognito_identity {
        set("lambda-runtime-cognito-identity", identity);
    }
    response
}

fn take_current(handle: &SandboxHandle, id: &str) -> Option<Current> {
    let mut rt = handle.lock_rt();
    match &rt.current {
        Some(current) if current.request_id == id => rt.current.take(),
        _ => None,
    }
}

fn reply(handle: &SandboxHandle, id: &str, answer: Reply) -> Answer {
    match take_current(handle, id) {
        Some(current) => {
            let _ = current.reply.send(answer);
            accepted()
        }
        None => error(StatusCode::BAD_REQUEST, "InvalidRequestID", "Invalid request ID"),
    }
}

fn too_large(handle: &SandboxHandle, id: &str) -> Answer {
    if let Some(current) = take_current(handle, id) {
        let _ = current.reply.send(Reply::TooLarge);
    }
    let message = format!("Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).");
    error(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", &message)
}

fn init_error(handle: &SandboxHandle, body: Bytes, error_type: Option<String>) -> Answer {
    let mut rt = handle.lock_rt();
    match &mut rt.phase {
        Phase::Initialising { waiter } => {
            // Dropping the waiter tells the invocation that init failed.
            waiter.take();
            rt.init_error = Some((body, error_type));
            drop(rt);
            handle.kill();
            accepted()
        }
        _ => error(StatusCode::FORBIDDEN, "InvalidStateTransition", "init error after init"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(trailers: &[(&str, &str)], expected: Option<(&str, &str)>) {
        let mut map = http::HeaderMap::new();
        for (name, value) in trailers {
            map.insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        let got = trailer_error(&map);
        let got = got.as_ref().map(|(error_type, body)| (error_type.as_str(), std::str::from_utf8(body).unwrap()));
        assert_eq!(got, expected, "{trailers:?}");
    }

    #[test]
    fn trailers() {
        let document = r#"{"errorMessage":"m","errorType":"E"}"#;
        check(&[], None);
        check(&[("lambda-runtime-function-error-body", "e30=")], None);
        // The body is base64 of the error document...
        let encoded = "eyJlcnJvck1lc3NhZ2UiOiJtIiwiZXJyb3JUeXBlIjoiRSJ9";
        let (error_type, error_body) = ("lambda-runtime-function-error-type", "lambda-runtime-function-error-body");
        check(&[(error_type, "Runtime.Broken"), (error_body, encoded)], Some(("Runtime.Broken", document)));
        // ...taken as it is when it is not base64, and made a document when it is none.
        check(
            &[("Lambda-Runtime-Function-Error-Type", "T"), ("Lambda-Runtime-Function-Error-Body", "not base64!")],
            Some(("T", r#"{"errorMessage":"not base64!","errorType":"T"}"#)),
        );
        check(&[(error_type, "T")], Some(("T", r#"{"errorMessage":"Unknown error","errorType":"T"}"#)));
    }
}
