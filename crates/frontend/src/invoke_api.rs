//! `Invoke` and `InvokeWithResponseStream`: the request's headers and payload in, Lambda's answer out.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};
use ignis_invoke::{InvokeError, Revision, Target, from_record};
use ignis_worker::{Completion, Invocation, Outcome, StreamPiece};
use tokio::sync::mpsc;

use crate::{App, Caller, eventstream};
use ignis_ids::AccountId;
use ignis_registry::{FunctionRecord, FunctionRef, policy};
use crate::control::{random_unit, reference};
use crate::error::ApiError;
use crate::function::Violations;
use crate::http::{Answer, Served, empty_answer, query_params, whole};

/// Largest payload of a synchronous invocation (6 MB).
pub const MAX_SYNC_PAYLOAD: usize = 6 * 1024 * 1024;
/// Largest payload of an asynchronous invocation (1 MB).
pub const MAX_ASYNC_PAYLOAD: usize = ignis_pollers::events::MAX_PAYLOAD;
/// Largest client context, before base64 decoding.
const MAX_CLIENT_CONTEXT: usize = 3583;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

impl InvocationType {
    fn name(self) -> &'static str {
        match self {
            InvocationType::RequestResponse => "RequestResponse",
            InvocationType::Event => "Event",
            InvocationType::DryRun => "DryRun",
        }
    }

    /// `X-Amz-Invocation-Type` (`RequestResponse` when absent), one of `allowed`, else the model's violation
    /// (Invoke allows all three; InvokeWithResponseStream no `Event`).
    fn of(headers: &HeaderMap, allowed: &[InvocationType]) -> Result<InvocationType, ApiError> {
        let given = header(headers, "x-amz-invocation-type").unwrap_or("RequestResponse");
        match allowed.iter().find(|t| t.name() == given) {
            Some(found) => Ok(*found),
            None => {
                let names: Vec<&str> = allowed.iter().map(|t| t.name()).collect();
                let constraint = format!("Member must satisfy enum value set: [{}]", names.join(", "));
                Err(violation(given, "invocationType", &constraint))
            }
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// An invoke request as the front end routed it: the function named in its path, its query, headers and payload,
/// and the request id it was given.
pub struct InvokeRequest<'a> {
    pub name: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub payload: Bytes,
    pub request_id: &'a str,
}

/// What an invoke request asks for, read from its headers, query and payload, with the record it runs and the
/// account that owns it (the caller's, or another whose policy lets the caller in).
struct Call {
    owner: AccountId,
    tail: bool,
    client_context: Option<String>,
    reference: ignis_registry::FunctionRef,
    record: Arc<FunctionRecord>,
    payload: Bytes,
    executed_version: HeaderValue,
    trace_id: String,
}

impl Call {
    fn read(
        app: &Arc<App>,
        caller: &Caller,
        request: InvokeRequest<'_>,
    ) -> Result<Call, ApiError> {
        let InvokeRequest { name, query, headers, payload, request_id } = request;
        let tail = match header(headers, "x-amz-log-type").unwrap_or("None") {
            "None" => false,
            "Tail" => true,
            other => return Err(violation(other, "logType", "Member must satisfy enum value set: [Tail, None]")),
        };
        let client_context = client_context(header(headers, "x-amz-client-context"))?;
        let qualifier = query_params(query).into_iter().find(|(k, _)| k == "Qualifier").map(|(_, v)| v);
        let (owner, reference, record) = resolve_granted(app, caller, name, qualifier.as_deref())?;
        let payload = if payload.iter().all(u8::is_ascii_whitespace) { Bytes::from_static(b"{}") } else { payload };
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
            return Err(ApiError::InvalidRequestContent(format!("Could not parse request body into json: {e}")));
        }
        let executed_version =
            HeaderValue::from_str(&record.version_label()).unwrap_or(HeaderValue::from_static("$LATEST"));
        let trace_id = header(headers, "x-amzn-trace-id").map_or_else(|| trace_id(app, request_id), str::to_string);
        Ok(Call { owner, tail, client_context, reference, record, payload, executed_version, trace_id })
    }

    /// What the invoker runs (the owner's function), and the invocation, whose streamed response goes to
    /// `response_stream` if given.
    fn invocation(self, app: &App, request_id: &str, response_stream: Option<mpsc::Sender<StreamPiece>>) -> (Target, Invocation) {
        let account = self.owner.as_str();
        let invoked_function_arn = invoked_arn(app, account, self.reference.qualifier.as_deref(), &self.record);
        let invocation = Invocation {
            request_id: request_id.to_string(),
            payload: self.payload,
            invoked_function_arn,
            trace_id: self.trace_id,
            client_context: self.client_context,
            cognito_identity: None,
            response_stream,
        };
        (target(app, account, &self.record), invocation)
    }
}

/// A model violation of one request member.
fn violation(value: &str, member: &str, constraint: &str) -> ApiError {
    let mut v = Violations::default();
    v.check(false, value, member, constraint);
    v.into_result().err().unwrap_or_else(|| ApiError::Validation(format!("{member}: {constraint}")))
}

pub async fn invoke(
    app: &Arc<App>,
    caller: &Caller,
    request: InvokeRequest<'_>,
) -> Result<Answer, ApiError> {
    let (headers, request_id) = (request.headers, request.request_id);
    let all = [InvocationType::Event, InvocationType::RequestResponse, InvocationType::DryRun];
    let invocation_type = InvocationType::of(headers, &all)?;
    let call = Call::read(app, caller, request)?;
    if invocation_type == InvocationType::Event && call.payload.len() > MAX_ASYNC_PAYLOAD {
        return Err(ApiError::RequestTooLarge(format!(
            "Request must be smaller than {MAX_ASYNC_PAYLOAD} bytes for the InvokeFunction operation"
        )));
    }
    let (tail, executed_version) = (call.tail, call.executed_version.clone());
    match invocation_type {
        InvocationType::DryRun => Ok(empty_answer(StatusCode::NO_CONTENT)),
        InvocationType::Event => {
            let event = ignis_pollers::Event {
                account: call.owner,
                function: call.reference.name,
                qualifier: call.reference.qualifier,
                request_id: request_id.to_string(),
                trace_id: call.trace_id,
                client_context: call.client_context,
            };
            app.events.accept(event, call.payload).await?;
            let mut answer = empty_answer(StatusCode::ACCEPTED);
            answer.headers_mut().insert("x-amz-executed-version", executed_version);
            Ok(answer)
        }
        InvocationType::RequestResponse => {
            let (target, invocation) = call.invocation(app, request_id, None);
            let outcome = app.invoker.invoke(target, invocation).await?;
            Ok(answer(outcome, tail, executed_version))
        }
    }
}

/// `InvokeWithResponseStream`: the function's response as AWS event-stream `PayloadChunk` events, each chunk
/// passed on as the runtime streams it (a response posted whole is one chunk), then an `InvokeComplete` event with
/// the error (`ErrorCode`, `ErrorDetails`) and the log tail (`LogResult`, with `X-Amz-Log-Type: Tail`).
///
/// The answer's head waits until the runtime begins its streamed response or the invocation ends: an invocation
/// that never ran (a throttle, no room, a lost worker) is an ordinary error answer; once the head went out, any
/// end, an error mid-stream included, is told in `InvokeComplete`. Its `Content-Type` is the runtime's, as Lambda
/// passes it on (`ResponseStreamContentType`; `application/octet-stream` when the runtime gave none, and
/// `application/json` for a response posted whole); the body is an event stream whatever it says. Every hop is a
/// bounded channel: a client that reads slowly holds the runtime back; one that leaves stops nothing (the
/// invocation runs to its end, its chunks dropped).
pub async fn invoke_with_response_stream(
    app: &Arc<App>,
    caller: &Caller,
    request: InvokeRequest<'_>,
) -> Result<Served, ApiError> {
    let (headers, request_id) = (request.headers, request.request_id);
    let allowed = [InvocationType::RequestResponse, InvocationType::DryRun];
    let dry_run = InvocationType::of(headers, &allowed)? == InvocationType::DryRun;
    let call = Call::read(app, caller, request)?;
    let (tail, executed_version) = (call.tail, call.executed_version.clone());
    if dry_run {
        let mut answer = empty_answer(StatusCode::NO_CONTENT);
        answer.headers_mut().insert("x-amz-executed-version", executed_version);
        return Ok(whole(answer));
    }
    let (sender, mut pieces) = mpsc::channel(ignis_worker::STREAM_CHUNKS);
    let (target, invocation) = call.invocation(app, request_id, Some(sender));
    let invoker = app.invoker.clone();
    let running = tokio::spawn(async move { invoker.invoke(target, invocation).await });
    let ended = async move { running.await.unwrap_or_else(|e| Err(InvokeError::Task(e.to_string()))) };
    // Every sender is gone once the invocation ended (the channel closes then, its pieces read).
    let first = pieces.recv().await;
    let (events, body) = mpsc::channel(2);
    let content_type = match first {
        Some(first) => {
            let content_type = match &first {
                StreamPiece::Start { content_type } => content_type.clone(),
                StreamPiece::Chunk(_) => None,
            };
            tokio::spawn(relay(Some(first), pieces, ended, events, tail));
            content_type.unwrap_or_else(|| "application/octet-stream".into())
        }
        None => {
            let result = ended.await;
            if let Err(e) = result {
                return Err(e.into());
            }
            tokio::spawn(relay(None, pieces, std::future::ready(result), events, tail));
            "application/json".into()
        }
    };
    let mut answer = Response::new(Either::Right(ignis_worker::conn::ChannelBody::new(body)));
    let headers = answer.headers_mut();
    let content_type =
        HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(http::header::CONTENT_TYPE, content_type);
    headers.insert("x-amz-executed-version", executed_version);
    Ok(answer)
}

/// Frames a streamed response's chunks as `PayloadChunk` events into `events` (the answer's body), as they come,
/// then the invocation's end as `InvokeComplete`. Stops when the client is gone.
async fn relay(
    first: Option<StreamPiece>,
    mut pieces: mpsc::Receiver<StreamPiece>,
    ended: impl std::future::Future<Output = Result<Outcome, InvokeError>>,
    events: mpsc::Sender<Bytes>,
    tail: bool,
) {
    let mut next = first;
    while let Some(piece) = next.take() {
        if let StreamPiece::Chunk(chunk) = piece {
            for event in eventstream::payload_chunks(&chunk) {
                if events.send(event).await.is_err() {
                    return;
                }
            }
        }
        next = pieces.recv().await;
    }
    let result = ended.await;
    if let Ok(Outcome { completion: Completion::Response(body), .. }) = &result {
        for event in eventstream::payload_chunks(body) {
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
    let _ = events.send(eventstream::invoke_complete(&complete(&result, tail))).await;
}

/// `InvokeComplete`'s payload: `ErrorCode` and `ErrorDetails` for an invocation that failed (the error type, and
/// the error document the function or the platform gave), `LogResult` when the tail was asked for.
fn complete(result: &Result<Outcome, InvokeError>, tail: bool) -> serde_json::Value {
    let mut complete = serde_json::Map::new();
    let mut error = |code: &str, details: String| {
        complete.insert("ErrorCode".into(), code.into());
        complete.insert("ErrorDetails".into(), details.into());
    };
    match result {
        Ok(outcome) => match &outcome.completion {
            Completion::Response(_) | Completion::Streamed { .. } => {}
            Completion::Error { body, error_type } => {
                error(error_type.as_deref().unwrap_or("Unhandled"), String::from_utf8_lossy(body).into_owned());
            }
            Completion::Failed { error_type, message } => {
                error(error_type, serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string());
            }
        },
        Err(e) => {
            let e = ApiError::from(e.clone());
            error(e.error_type(), e.message().to_string());
        }
    }
    if let (true, Ok(outcome)) = (tail, result) {
        complete.insert("LogResult".into(), log_result(&outcome.log).into());
    }
    serde_json::Value::Object(complete)
}

/// The log's tail (its last 4 KB), base64-encoded.
fn log_result(log: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(ignis_worker::tail(log))
}

/// The function `name` (with `qualifier`) names for an invocation, in the caller's account or, by ARN, in
/// another account whose policy for that qualifier allows the caller `lambda:InvokeFunction`
/// (`ignis_registry::policy`): the owner's account, the reference and the record that runs. The invocation
/// is then the owner's: its concurrency, its sandboxes, its logs.
fn resolve_granted(
    app: &App,
    caller: &Caller,
    name: &str,
    qualifier: Option<&str>,
) -> Result<(AccountId, FunctionRef, Arc<FunctionRecord>), ApiError> {
    let reference = reference(name, qualifier)?;
    // A function's session acts as its execution role, which a statement may name.
    let role = caller.session.as_ref().and_then(|function| app.registry.get(&caller.account, function)).map(|r| r.role.clone());
    let request = policy::Request::invoke_by(caller.account.as_str(), role.as_deref());
    let (owner, record) =
        app.registry.resolve_version_granted(&caller.account, &app.config.region, &request, &reference, random_unit())?;
    Ok((owner, reference, record))
}

/// `X-Amz-Client-Context`: base64 of JSON, at most `MAX_CLIENT_CONTEXT` bytes; the decoded text.
pub(crate) fn client_context(header: Option<&str>) -> Result<Option<String>, ApiError> {
    match header {
        None => Ok(None),
        Some(text) if text.len() > MAX_CLIENT_CONTEXT => {
            Err(ApiError::InvalidParameterValue(format!("Client context must be at most {MAX_CLIENT_CONTEXT} bytes")))
        }
        Some(text) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| ApiError::InvalidParameterValue("Client context must be a valid Base64-encoded JSON object.".into()))?;
            serde_json::from_slice::<serde_json::Value>(&decoded)
                .map_err(|_| ApiError::InvalidParameterValue("Client context must be a valid Base64-encoded JSON object.".into()))?;
            Ok(Some(String::from_utf8_lossy(&decoded).into_owned()))
        }
    }
}

/// What the invoker runs for `record` in `account` (built by
/// `ignis_invoke::from_record`, the one place a record becomes a target).
pub(crate) fn target(app: &App, account: &str, record: &FunctionRecord) -> Target {
    from_record::target(&app.store, &*app.networks, &app.config.region, account, record)
}

/// The revision `record` is in `account`: what its sandboxes are kept (and retired) by.
pub(crate) fn revision(account: &str, record: &FunctionRecord) -> Revision {
    from_record::revision(account, record)
}

/// The ARN `record` was invoked by, with the qualifier it was invoked with.
pub(crate) fn invoked_arn(app: &App, account: &str, qualifier: Option<&str>, record: &FunctionRecord) -> String {
    from_record::invoked_arn(&app.config.region, account, qualifier, record)
}

/// An X-Ray trace header for an invocation that came without one.
pub(crate) fn trace_id(app: &App, request_id: &str) -> String {
    from_record::trace_id(request_id, app.config.clock.now())
}

fn answer(outcome: Outcome, tail: bool, executed_version: HeaderValue) -> Answer {
    let (body, function_error) = match outcome.completion {
        Completion::Response(body) => (body, false),
        // Not asked for: `invoke` gives no response stream.
        Completion::Streamed { .. } => (Bytes::new(), false),
        Completion::Error { body, .. } => (body, true),
        Completion::Failed { error_type, message } => {
            let body = serde_json::json!({ "errorType": error_type, "errorMessage": message });
            (Bytes::from(body.to_string()), true)
        }
    };
    let mut response = http::Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-amz-executed-version", executed_version);
    if function_error {
        headers.insert("x-amz-function-error", HeaderValue::from_static("Unhandled"));
    }
    if tail && let Ok(value) = HeaderValue::from_str(&log_result(&outcome.log)) {
        headers.insert("x-amz-log-result", value);
    }
    response
}
