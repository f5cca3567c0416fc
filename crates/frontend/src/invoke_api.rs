//! `Invoke`: the request's headers and payload in, Lambda's answer out.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::Full;
use ignis_invoke::{Revision, Target, from_record};
use ignis_worker::{Completion, Invocation, Outcome};

use crate::{App, Caller};
use ignis_ids::AccountId;
use ignis_registry::{FunctionRecord, FunctionRef, policy};
use crate::control::{random_unit, reference};
use crate::error::ApiError;
use crate::function::Violations;
use crate::http::{Answer, empty_answer, query_params};

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

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub async fn invoke(
    app: &Arc<App>,
    caller: &Caller,
    name: &str,
    query: &str,
    headers: &HeaderMap,
    payload: Bytes,
    request_id: &str,
) -> Result<Answer, ApiError> {
    let invocation_type = match header(headers, "x-amz-invocation-type").unwrap_or("RequestResponse") {
        "RequestResponse" => InvocationType::RequestResponse,
        "Event" => InvocationType::Event,
        "DryRun" => InvocationType::DryRun,
        other => {
            let mut v = Violations::default();
            v.check(false, other, "invocationType", "Member must satisfy enum value set: [Event, RequestResponse, DryRun]");
            return Err(v.into_result().unwrap_err());
        }
    };
    let tail = match header(headers, "x-amz-log-type").unwrap_or("None") {
        "None" => false,
        "Tail" => true,
        other => {
            let mut v = Violations::default();
            v.check(false, other, "logType", "Member must satisfy enum value set: [Tail, None]");
            return Err(v.into_result().unwrap_err());
        }
    };
    let client_context = client_context(header(headers, "x-amz-client-context"))?;
    let qualifier = query_params(query).into_iter().find(|(k, _)| k == "Qualifier").map(|(_, v)| v);
    let (owner, reference, record) = resolve_granted(app, caller, name, qualifier.as_deref())?;

    let payload = if payload.iter().all(u8::is_ascii_whitespace) { Bytes::from_static(b"{}") } else { payload };
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
        return Err(ApiError::InvalidRequestContent(format!("Could not parse request body into json: {e}")));
    }
    if invocation_type == InvocationType::Event && payload.len() > MAX_ASYNC_PAYLOAD {
        return Err(ApiError::RequestTooLarge(format!(
            "Request must be smaller than {MAX_ASYNC_PAYLOAD} bytes for the InvokeFunction operation"
        )));
    }

    let executed_version = HeaderValue::from_str(&record.version_label()).unwrap_or(HeaderValue::from_static("$LATEST"));
    let trace_id = header(headers, "x-amzn-trace-id").map_or_else(|| trace_id(app, request_id), str::to_string);
    match invocation_type {
        InvocationType::DryRun => Ok(empty_answer(StatusCode::NO_CONTENT)),
        InvocationType::Event => {
            let event = ignis_pollers::Event {
                account: owner.clone(),
                function: reference.name,
                qualifier: reference.qualifier,
                request_id: request_id.to_string(),
                trace_id,
                client_context,
            };
            app.events.accept(event, payload).await?;
            let mut answer = empty_answer(StatusCode::ACCEPTED);
            answer.headers_mut().insert("x-amz-executed-version", executed_version);
            Ok(answer)
        }
        InvocationType::RequestResponse => {
            let invoked_function_arn = invoked_arn(app, owner.as_str(), reference.qualifier.as_deref(), &record);
            let target = target(app, owner.as_str(), &record);
            let invocation =
                Invocation { request_id: request_id.to_string(), payload, invoked_function_arn, trace_id, client_context, cognito_identity: None };
            let outcome = app.invoker.invoke(target, invocation).await?;
            Ok(answer(outcome, tail, executed_version))
        }
    }
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
    if tail {
        let log = ignis_worker::tail(&outcome.log);
        let encoded = base64::engine::general_purpose::STANDARD.encode(log);
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            headers.insert("x-amz-log-result", value);
        }
    }
    response
}
