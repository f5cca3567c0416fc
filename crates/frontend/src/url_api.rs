//! Function URLs: their configs (Create/Get/Update/Delete/ListFunctionUrlConfig(s), on `$LATEST` or an alias,
//! kept in `$LATEST`'s record by qualifier, so they go with the function and an alias's with the alias), and the
//! listener of `--url-listen` that serves them: a request's `Host` names the URL, the function gets a payload
//! format 2.0 event, and its answer becomes the HTTP response (`url_event`).
//!
//! Auth: an `AWS_IAM` URL takes requests signed (SigV4, service `lambda`) by a key of the function's account, or of
//! another account its qualifier's resource policy allows `lambda:InvokeFunctionUrl`; a `NONE` URL takes anyone's
//! only when that policy allows it to anyone (`FunctionUrlAuthType` `NONE`), as on Lambda; otherwise 403. CORS preflights of a URL with a `Cors` config are answered from it,
//! before auth (browsers send them unsigned).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Frame};
use ignis_registry::policy::{self, Policy};
use ignis_registry::{CorsRecord, FunctionRecord, RegistryError, UrlRecord};
use ignis_worker::conn::{Limits, Protocols, TimedBody};
use ignis_worker::{Completion, StreamPiece};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::control::{now, resolve};
use crate::error::ApiError;
use crate::function::{Violations, last_modified, parse_body};
use crate::http::{Answer, empty_answer, json_answer, query_params};
use crate::url_event::{self, Context};
use crate::{App, Caller};

/// Where function URLs are served: `<url-id>.lambda-url.<region>.<domain>:<port>`.
#[derive(Debug, Clone)]
pub struct UrlHost {
    pub domain: String,
    pub port: u16,
}

/// The largest request body a URL takes (Lambda's synchronous payload limit).
pub const MAX_URL_REQUEST: usize = crate::invoke_api::MAX_SYNC_PAYLOAD;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CorsIn {
    allow_credentials: Option<bool>,
    allow_headers: Option<Vec<String>>,
    allow_methods: Option<Vec<String>>,
    allow_origins: Option<Vec<String>>,
    expose_headers: Option<Vec<String>>,
    max_age: Option<i64>,
}

/// The body of CreateFunctionUrlConfig and UpdateFunctionUrlConfig.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UrlConfigIn {
    auth_type: Option<String>,
    cors: Option<CorsIn>,
    invoke_mode: Option<String>,
}

impl UrlConfigIn {
    fn check(&self) -> Result<(), ApiError> {
        let mut v = Violations::default();
        if let Some(auth) = &self.auth_type {
            v.check(["NONE", "AWS_IAM"].contains(&auth.as_str()), auth, "authType", "Member must satisfy enum value set: [AWS_IAM, NONE]");
        }
        if let Some(mode) = &self.invoke_mode {
            let ok = ["BUFFERED", "RESPONSE_STREAM"].contains(&mode.as_str());
            v.check(ok, mode, "invokeMode", "Member must satisfy enum value set: [BUFFERED, RESPONSE_STREAM]");
        }
        if let Some(cors) = &self.cors {
            let list = |v: &mut Violations, items: &Option<Vec<String>>, field: &str, most: usize, longest: usize| {
                let Some(items) = items else { return };
                v.check(items.len() <= most, format!("{items:?}"), field, &format!("Member must have length less than or equal to {most}"));
                for item in items {
                    let ok = !item.is_empty() && item.len() <= longest;
                    v.check(ok, item, field, &format!("Member must have length between 1 and {longest}"));
                }
            };
            list(&mut v, &cors.allow_headers, "cors.allowHeaders", 100, 1024);
            list(&mut v, &cors.allow_methods, "cors.allowMethods", 6, 6);
            list(&mut v, &cors.allow_origins, "cors.allowOrigins", 100, 253);
            list(&mut v, &cors.expose_headers, "cors.exposeHeaders", 100, 1024);
            v.range(cors.max_age, "cors.maxAge", 0, 86400);
        }
        v.into_result()
    }

    /// Writes what is given into `url`.
    fn apply(&self, url: &mut UrlRecord) {
        if let Some(auth) = &self.auth_type {
            url.auth_type = auth.clone();
        }
        if let Some(mode) = &self.invoke_mode {
            url.invoke_mode = mode.clone();
        }
        if let Some(cors) = &self.cors {
            url.cors = Some(CorsRecord {
                allow_credentials: cors.allow_credentials.unwrap_or(false),
                allow_headers: cors.allow_headers.clone().unwrap_or_default(),
                allow_methods: cors.allow_methods.clone().unwrap_or_default(),
                allow_origins: cors.allow_origins.clone().unwrap_or_default(),
                expose_headers: cors.expose_headers.clone().unwrap_or_default(),
                max_age: cors.max_age.map(|age| age as u32),
            });
        }
    }
}

/// The URL of `url_id` on `host`.
pub fn function_url(host: &UrlHost, region: &str, url_id: &str) -> String {
    let port = if host.port == 80 { String::new() } else { format!(":{}", host.port) };
    format!("http://{url_id}.lambda-url.{region}.{}{port}/", host.domain)
}

/// Lambda's `FunctionUrlConfig` of `url` (`LastModifiedTime` only when `modified`).
fn wire(app: &App, url: &UrlRecord, function_arn: &str, modified: bool) -> Value {
    let host = app.config.function_urls.as_ref();
    let address = host.map(|h| function_url(h, &app.config.region, &url.url_id)).unwrap_or_default();
    let mut body = json!({
        "FunctionUrl": address,
        "FunctionArn": function_arn,
        "AuthType": url.auth_type,
        "CreationTime": last_modified(url.created_ms),
        "InvokeMode": url.invoke_mode,
    });
    if modified {
        body["LastModifiedTime"] = json!(last_modified(url.last_modified_ms));
    }
    if let Some(cors) = &url.cors {
        let mut wire = json!({
            "AllowCredentials": cors.allow_credentials,
            "AllowHeaders": cors.allow_headers,
            "AllowMethods": cors.allow_methods,
            "AllowOrigins": cors.allow_origins,
            "ExposeHeaders": cors.expose_headers,
        });
        if let Some(age) = cors.max_age {
            wire["MaxAge"] = json!(age);
        }
        body["Cors"] = wire;
    }
    body
}

/// What a URL config call names: the caller's function, the qualifier (`$LATEST` or an alias), and the ARN
/// Lambda shows for it (unqualified for `$LATEST`).
struct UrlTarget {
    function: String,
    qualifier: String,
    arn: String,
}

fn target(app: &App, caller: &Caller, action: &str, name: &str, query: &str) -> Result<UrlTarget, ApiError> {
    let given = query_params(query).into_iter().find(|(k, _)| k == "Qualifier").map(|(_, v)| v);
    if let Some(q) = &given {
        // Lambda's pattern: `$LATEST` or an alias name, never a version number.
        let ok = q == "$LATEST"
            || (!q.is_empty() && q.len() <= 128 && !q.bytes().all(|b| b.is_ascii_digit())
                && q.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let mut v = Violations::default();
        v.check(ok, q, "qualifier", "Member must satisfy regular expression pattern: ((?!^\\d+$)^[0-9a-zA-Z-_]+$)|(^\\$LATEST$)");
        v.into_result()?;
    }
    let (reference, record) = resolve(app, caller, action, name, given.as_deref())?;
    let qualifier = reference.qualifier.unwrap_or_else(|| "$LATEST".into());
    let region = &app.config.region;
    let arn = if qualifier == "$LATEST" && given.is_none() {
        record.arn(region, caller.account.as_str())
    } else {
        record.qualified_arn(region, caller.account.as_str(), &qualifier)
    };
    Ok(UrlTarget { function: reference.name, qualifier, arn })
}

fn missing() -> ApiError {
    ApiError::ResourceNotFound("The resource you requested does not exist.".into())
}

/// A new URL id: 32 lowercase hex digits, random.
fn new_url_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub async fn create(app: &Arc<App>, caller: &Caller, name: &str, query: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let request: UrlConfigIn = parse_body(body)?;
    if request.auth_type.is_none() {
        let mut v = Violations::default();
        v.check(false, "null", "authType", "Member must not be null");
        v.into_result()?;
    }
    request.check()?;
    if app.config.function_urls.is_none() {
        return Err(ApiError::InvalidParameterValue(
            "This Ignis serves no function URLs: start the server with --url-listen ADDR".into(),
        ));
    }
    let UrlTarget { function, qualifier, arn } = target(app, caller, "CreateFunctionUrlConfig", name, query)?;
    let now_ms = now(app);
    let mut url = UrlRecord {
        url_id: new_url_id(),
        auth_type: String::new(),
        invoke_mode: "BUFFERED".into(),
        cors: None,
        created_ms: now_ms,
        last_modified_ms: now_ms,
    };
    request.apply(&mut url);
    app.registry
        .update(&caller.account, &function, |current| -> Result<_, ApiError> {
            let current = current.ok_or_else(|| RegistryError::FunctionNotFound { function: arn.clone() })?;
            if current.urls.contains_key(&qualifier) {
                return Err(ApiError::ResourceConflict(format!(
                    "Failed to create function url config for [functionArn = {arn}]. Error message:  FunctionUrlConfig \
                     exists for this Lambda function"
                )));
            }
            alias_exists(current, &qualifier)?;
            let mut record = current.clone();
            record.urls.insert(qualifier.clone(), url.clone());
            Ok(record)
        })
        .await?;
    Ok(json_answer(StatusCode::CREATED, wire(app, &url, &arn, false)))
}

/// The alias a URL is for must still be there (it may have gone since the look-up).
fn alias_exists(record: &FunctionRecord, qualifier: &str) -> Result<(), ApiError> {
    if qualifier == "$LATEST" || record.aliases.contains_key(qualifier) { Ok(()) } else { Err(missing()) }
}

pub fn get(app: &App, caller: &Caller, name: &str, query: &str) -> Result<Answer, ApiError> {
    let UrlTarget { function, qualifier, arn } = target(app, caller, "GetFunctionUrlConfig", name, query)?;
    let record = app.registry.get(&caller.account, &function).ok_or_else(missing)?;
    let url = record.urls.get(&qualifier).ok_or_else(missing)?;
    Ok(json_answer(StatusCode::OK, wire(app, url, &arn, true)))
}

pub async fn update(app: &Arc<App>, caller: &Caller, name: &str, query: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let request: UrlConfigIn = parse_body(body)?;
    request.check()?;
    let UrlTarget { function, qualifier, arn } = target(app, caller, "UpdateFunctionUrlConfig", name, query)?;
    let mut stored = None;
    app.registry
        .update(&caller.account, &function, |current| -> Result<_, ApiError> {
            let mut record = current.ok_or_else(missing)?.clone();
            let url = record.urls.get_mut(&qualifier).ok_or_else(missing)?;
            request.apply(url);
            url.last_modified_ms = now(app);
            stored = Some(url.clone());
            Ok(record)
        })
        .await?;
    let url = stored.ok_or_else(missing)?;
    Ok(json_answer(StatusCode::OK, wire(app, &url, &arn, true)))
}

pub async fn delete(app: &Arc<App>, caller: &Caller, name: &str, query: &str) -> Result<Answer, ApiError> {
    let UrlTarget { function, qualifier, .. } = target(app, caller, "DeleteFunctionUrlConfig", name, query)?;
    app.registry
        .update(&caller.account, &function, |current| -> Result<_, ApiError> {
            let mut record = current.ok_or_else(missing)?.clone();
            record.urls.remove(&qualifier).ok_or_else(missing)?;
            Ok(record)
        })
        .await?;
    Ok(empty_answer(StatusCode::NO_CONTENT))
}

pub fn list(app: &App, caller: &Caller, name: &str, query: &str) -> Result<Answer, ApiError> {
    let (_, record) = resolve(app, caller, "ListFunctionUrlConfigs", name, None)?;
    let (max_items, marker, _) = crate::versions::paging(query)?;
    let mut v = Violations::default();
    v.range(Some(max_items as i64), "maxItems", 1, 50);
    v.into_result()?;
    let (region, account) = (&app.config.region, caller.account.as_str());
    let items: Vec<(String, Value)> = record
        .urls
        .iter()
        .map(|(q, url)| {
            let arn = if q == "$LATEST" { record.arn(region, account) } else { record.qualified_arn(region, account, q) };
            (q.clone(), wire(app, url, &arn, true))
        })
        .collect();
    Ok(crate::versions::page_answer("FunctionUrlConfigs", items, max_items, marker.as_deref()))
}

// ---- The listener ----

/// Serves the function URLs on `listener` until `shutdown` completes.
pub async fn serve(app: Arc<App>, listener: tokio::net::TcpListener, limits: Limits, shutdown: impl Future<Output = ()>) {
    ignis_cluster::serve_with_peer(listener, limits, Protocols::Http1, shutdown, move |peer, request| {
        let app = app.clone();
        async move { handle(&app, peer, request).await }
    })
    .await;
}

/// A URL's answer: whole, or (a `RESPONSE_STREAM` URL's) streamed as the function makes it.
type UrlAnswer = Response<Either<Full<Bytes>, StreamedBody>>;

/// A streamed answer's body: the pieces of the function's response as they come, through a bounded channel (a slow
/// client holds the function back). An error ends it by breaking the connection off, so that the client sees a
/// response cut short rather than a whole one.
pub struct StreamedBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl Body for StreamedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|piece| piece.map(|piece| piece.map(Frame::data)))
    }
}

/// Lambda's plain answers of a URL: `{"Message": ...}`.
fn message(status: StatusCode, text: &str) -> UrlAnswer {
    let mut answer = json_answer(status, json!({ "Message": text }));
    if status == StatusCode::FORBIDDEN {
        answer.headers_mut().insert("x-amzn-errortype", HeaderValue::from_static("AccessDeniedException"));
    }
    answer.map(Either::Left)
}

async fn handle(app: &Arc<App>, peer: SocketAddr, request: Request<TimedBody>) -> UrlAnswer {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut answer = respond(app, peer, request, &request_id).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        answer.headers_mut().insert("x-amzn-requestid", value);
    }
    answer
}

async fn respond(app: &Arc<App>, peer: SocketAddr, request: Request<TimedBody>, request_id: &str) -> UrlAnswer {
    let forbidden = || message(StatusCode::FORBIDDEN, "Forbidden");
    let Some(host) = app.config.function_urls.as_ref() else { return forbidden() };
    let (parts, body) = request.into_parts();
    let host_header = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let Some(url_id) = url_event::url_id(host_header, &app.config.region, &host.domain) else { return forbidden() };
    let Some((account, record)) = app.registry.find_url(url_id) else { return forbidden() };
    let Some((qualifier, url)) = record.urls.iter().find(|(_, u)| u.url_id == url_id) else { return forbidden() };
    let origin = parts.headers.get(http::header::ORIGIN).and_then(|o| o.to_str().ok()).map(String::from);
    let preflight = parts.method == http::Method::OPTIONS
        && origin.is_some()
        && parts.headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
    if let (true, Some(cors), Some(origin)) = (preflight, &url.cors, &origin) {
        let mut answer = empty_answer(StatusCode::OK).map(Either::Left);
        for (name, value) in url_event::preflight(cors, origin) {
            insert(&mut answer, &name, &value);
        }
        return answer;
    }
    // The signature's check reads the head first; the body is read against Lambda's limit before the function runs.
    let policy = record.policies.get(policy::key(Some(qualifier)));
    let signer = match url.auth_type.as_str() {
        "AWS_IAM" => match crate::http::authenticate_head(app, &parts, "lambda") {
            Ok((head, caller)) if caller.account == account || signer_allowed(app, policy, &caller) => {
                Some((head, caller))
            }
            _ => return forbidden(),
        },
        // A public URL: a statement of the function's resource policy must allow anyone, as on Lambda.
        _ if policy::allows(policy, &url_request(policy::Caller::Anonymous, None, "NONE")) => None,
        _ => return forbidden(),
    };
    let body = match Limited::new(body, MAX_URL_REQUEST).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return message(StatusCode::PAYLOAD_TOO_LARGE, "Request must be smaller than 6291456 bytes");
        }
        Err(e) if ignis_worker::conn::is_body_timeout(e.as_ref()) => {
            return message(StatusCode::REQUEST_TIMEOUT, "The request body did not arrive in time");
        }
        Err(_) => return message(StatusCode::BAD_REQUEST, "Could not read the request body"),
    };
    let (key_id, caller_account) = match signer {
        Some((head, caller)) => {
            let key = head.claimed().access_key_id.clone();
            if head.finish(&body).is_err() {
                return forbidden();
            }
            (Some(key), Some(caller.account.to_string()))
        }
        None => (None, None),
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
        .collect();
    let domain = host_header.rsplit_once(':').map_or(host_header, |(name, _)| name);
    let context = Context {
        url_id,
        domain_name: domain,
        request_id,
        source_ip: &peer.ip().to_string(),
        time_ms: now(app),
        signer: key_id.as_deref().zip(caller_account.as_deref()),
    };
    let event = url_event::event(parts.method.as_str(), parts.uri.path(), parts.uri.query().unwrap_or(""), &headers, &body, &context);
    let owner = Caller { account: account.clone(), admin: false, session: None };
    let payload = Bytes::from(event.to_string());
    let cors = url.cors.as_ref().zip(origin.as_deref());
    let outcome = if url.invoke_mode == "RESPONSE_STREAM" {
        let (sender, pieces) = mpsc::channel(ignis_worker::STREAM_CHUNKS);
        let (app, name, qualifier, request_id) = (app.clone(), record.name.clone(), qualifier.clone(), request_id.to_string());
        let running = tokio::spawn(async move { invoke(&app, &owner, &name, &qualifier, payload, &request_id, Some(sender)).await });
        streamed(pieces, running, cors).await
    } else {
        let answered = invoke(app, &owner, &record.name, qualifier, payload, request_id, None).await;
        answered.map(|body| Served::Whole(body.unwrap_or_default()))
    };
    let mut answer = match outcome {
        Ok(Served::Streaming(answer)) => return answer,
        Ok(Served::Whole(payload)) => match url_event::reply(&payload) {
            Ok(reply) => return whole_reply(reply, cors),
            Err(_) => message(StatusCode::BAD_GATEWAY, "Internal Server Error"),
        },
        Err(UrlFailure::Function) => message(StatusCode::BAD_GATEWAY, "Internal Server Error"),
        Err(UrlFailure::Throttled) => message(StatusCode::TOO_MANY_REQUESTS, "Rate Exceeded."),
        Err(UrlFailure::Other(e)) => {
            tracing::warn!(request_id, error = e.message(), "function URL invocation failed");
            message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
    };
    if let Some((cors, origin)) = cors {
        let mut headers = Vec::new();
        url_event::response_cors(cors, Some(origin), &mut headers);
        for (name, value) in headers {
            insert(&mut answer, &name, &value);
        }
    }
    answer
}

/// What a URL's function answered: its whole response (to map), or a streamed answer already under way.
enum Served {
    Whole(Bytes),
    Streaming(UrlAnswer),
}

/// The HTTP response of a function's whole answer, with the URL's CORS headers for the request's origin.
fn whole_reply(reply: url_event::Reply, cors: Option<(&CorsRecord, &str)>) -> UrlAnswer {
    let mut headers = reply.headers;
    if let Some((cors, origin)) = cors {
        url_event::response_cors(cors, Some(origin), &mut headers);
    }
    let mut answer = Response::new(Either::Left(Full::new(Bytes::from(reply.body))));
    *answer.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in headers {
        append(&mut answer, &name, &value);
    }
    answer
}

/// The answer of a `RESPONSE_STREAM` URL whose function's invocation is `running`, its response's pieces coming
/// through `pieces`: a function that streams gets its head sent at its first piece and its body as it comes (with
/// the HTTP integration prelude, `url_event::Prelude`, read first when its content type says so); one that answered
/// whole, or failed before streaming, is answered as a `BUFFERED` URL's.
async fn streamed(
    mut pieces: mpsc::Receiver<StreamPiece>,
    running: tokio::task::JoinHandle<Result<Option<Bytes>, UrlFailure>>,
    cors: Option<(&CorsRecord, &str)>,
) -> Result<Served, UrlFailure> {
    let ended = async move { running.await.unwrap_or_else(|e| Err(UrlFailure::Other(ApiError::Service(e.to_string())))) };
    let integration = match pieces.recv().await {
        // No stream: the invocation ended with a whole answer or none.
        None => return ended.await.map(|body| Served::Whole(body.unwrap_or_default())),
        Some(StreamPiece::Start { content_type }) => content_type,
        Some(StreamPiece::Chunk(_)) => None,
    };
    let (reply, first) = if integration.as_deref() == Some(url_event::INTEGRATION_CONTENT_TYPE) {
        let mut prelude = url_event::Prelude::default();
        loop {
            match pieces.recv().await {
                Some(StreamPiece::Chunk(chunk)) => match prelude.push(&chunk) {
                    Ok(Some(done)) => break done,
                    Ok(None) => {}
                    Err(_) => return Err(UrlFailure::Function),
                },
                Some(StreamPiece::Start { .. }) => {}
                None => return ended.await.and(Err(UrlFailure::Function)),
            }
        }
    } else {
        let kind = integration.unwrap_or_else(|| "application/octet-stream".into());
        let reply = url_event::Reply { status: 200, headers: vec![("content-type".into(), kind)], body: Vec::new() };
        (reply, Bytes::new())
    };
    let (body, receiver) = mpsc::channel(2);
    tokio::spawn(async move {
        if !first.is_empty() && body.send(Ok(first)).await.is_err() {
            return;
        }
        while let Some(piece) = pieces.recv().await {
            if let StreamPiece::Chunk(chunk) = piece
                && body.send(Ok(chunk)).await.is_err()
            {
                return;
            }
        }
        if ended.await.is_err() {
            let _ = body.send(Err(std::io::Error::other("the function failed while streaming its response"))).await;
        }
    });
    let mut answer = whole_reply(reply, cors).map(|_| Either::Right(StreamedBody(receiver)));
    answer.headers_mut().remove(http::header::CONTENT_LENGTH);
    Ok(Served::Streaming(answer))
}

/// Runs the function behind a URL of `owner`'s with `payload`, as a synchronous Invoke of `qualifier` would (the
/// same admission and limits), its streamed response (if it streams) to `response_stream`; the function's whole
/// answer (none when it streamed), or how it failed.
async fn invoke(
    app: &App,
    owner: &Caller,
    name: &str,
    qualifier: &str,
    payload: Bytes,
    request_id: &str,
    response_stream: Option<mpsc::Sender<StreamPiece>>,
) -> Result<Option<Bytes>, UrlFailure> {
    use crate::invoke_api::{invoked_arn, target, trace_id};
    let qualifier = (qualifier != "$LATEST").then_some(qualifier);
    let (reference, record) =
        crate::control::resolve_version(app, owner, "InvokeFunctionUrl", name, qualifier).map_err(UrlFailure::Other)?;
    let account = owner.account.as_str();
    let invocation = ignis_worker::Invocation {
        request_id: request_id.to_string(),
        payload,
        invoked_function_arn: invoked_arn(app, account, reference.qualifier.as_deref(), &record),
        trace_id: trace_id(app, request_id),
        client_context: None,
        cognito_identity: None,
        response_stream,
    };
    match app.invoker.invoke(target(app, account, &record), invocation).await {
        Ok(outcome) => match outcome.completion {
            Completion::Response(body) => Ok(Some(body)),
            Completion::Streamed { .. } => Ok(None),
            _ => Err(UrlFailure::Function),
        },
        Err(ignis_invoke::InvokeError::Throttled(_)) => Err(UrlFailure::Throttled),
        Err(e) => Err(UrlFailure::Other(e.into())),
    }
}

/// `lambda:InvokeFunctionUrl` through a URL of `auth_type` by `caller` (from `source_account`).
fn url_request<'a>(caller: policy::Caller<'a>, source_account: Option<&'a str>, auth_type: &'a str) -> policy::Request<'a> {
    policy::Request {
        action: "lambda:InvokeFunctionUrl",
        caller,
        source_account,
        source_arn: None,
        function_url_auth_type: Some(auth_type),
    }
}

/// Whether `policy` lets another account's `caller` (its key, or one of its functions' session, acting as that
/// function's role) invoke an `AWS_IAM` URL of `record`'s.
fn signer_allowed(app: &App, policy: Option<&Policy>, caller: &Caller) -> bool {
    let id = caller.account.as_str();
    let role = caller.session.as_ref().and_then(|function| app.registry.get(&caller.account, function)).map(|r| r.role.clone());
    policy::allows(policy, &url_request(policy::Caller::Account { id, role: role.as_deref() }, Some(id), "AWS_IAM"))
}

/// How a URL invocation failed.
pub enum UrlFailure {
    /// The function failed (an error, a crash, its timeout): 502.
    Function,
    /// Concurrency or the scaling rate refused it: 429.
    Throttled,
    Other(ApiError),
}

fn insert<B>(answer: &mut Response<B>, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
        answer.headers_mut().insert(name, value);
    }
}

fn append<B>(answer: &mut Response<B>, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
        answer.headers_mut().append(name, value);
    }
}
