//! The worker hosts' side of the worker protocol (see `ignis_cluster`), and
//! the list of workers; all signed for the service `ignis` with the
//! administrator's key:
//!
//! - `POST /ignis/workers` `{"Address", "MemoryMb", "Cpus"}` → 201 `{"WorkerId", "CacheNodes"}` (and
//!   `"OriginFetches"`, the worker's share of the cluster-wide origin budget, when one is set)
//! - `POST /ignis/workers/{id}/heartbeat` → 204 (200 `{"OriginFetches"}` with a budget, and
//!   `{"FrontEnds"}` on a cluster's front end: the front ends it lists, `ignis_cluster::owner`), or 404
//!   `ResourceNotFoundException` for a worker that is unknown or was declared unhealthy (it registers again).
//! - `GET /ignis/workers` → `{"Workers": [{"WorkerId", "Address", "Local",
//!   "Healthy", "MemoryMb", "Cpus", "UsedMemoryMb", "Sandboxes"}]}`, oldest first.
//! - `GET /ignis/code/{sha256 hex}` → the code tree, zipped.
//! - `POST /ignis/invocations/{account}/{function}/{revision}` (an invocation, as the worker protocol encodes
//!   it) → its outcome: one forwarded by another front end to the leader of the function's partition.
//! - `GET /ignis/partitions?Function=NAME` → `{"Partition", "Leader", "Settled"}`.
//! - `POST /ignis/queue-requests` (an `ignis_queues::Forwarded`) → 200 and what the request was answered
//!   (an `ignis_queues::Answered`): an SQS action or event source mapping call that another front end forwarded
//!   to the one serving the queues; refused (503) by a front end that does not serve them.
//! - `POST /ignis/queue-polls` (an `ignis_queues::PollCall`) → 200 and its `ignis_queues::PollAnswer`: an event
//!   source mapping poller's receive, delete or visibility change, from the front end running the mapping's
//!   pollers to the one serving the queues; refused (503) by a front end that does not serve them.
//! - `GET /ignis/queue-home` → `{"ServedHere", "Polling"}`: whether this front end serves the queues (always,
//!   outside a cluster), and the UUIDs of the event source mappings whose pollers run on it.
//! - `GET /ignis/images/{account}/{manifest digest}?repository=NAME[&Own=1]` →
//!   `{"Id", "Manifest", "Key", "Root"}`: a prepared image (prepared now if it
//!   is not: garbage collection may have forgotten it), for a worker host. A
//!   cluster's front end without it asks the other front ends (with `Own=1`,
//!   so none asks further) and answers the first one's answer with
//!   `"ChunksFrom"`, that front end's address: its chunk store root holds the
//!   image's chunks.
//! - `POST /ignis/log-requests` `{"Account", "Action", "Request"}` → the CloudWatch Logs answer (or error) of the
//!   action on this front end's logs alone: a cluster's front end asks every other and merges their answers
//!   (`logs_api`).
//! - `GET /ignis/allocations/{account}/{function}/{revision}` → `{"Allocated", "Failure"}`: how far a version's
//!   provisioned concurrency is on this front end (in a cluster, the one leading the function's partition).
//! - `GET /ignis/chunks/{root}/{sha256 hex}` → one stored chunk, as stored.
//! - `POST /ignis/images/gc[?RetireSeconds=N&ExpireSeconds=N]` → what one
//!   garbage collection of the chunk store did.
//! - `POST /ignis/logs` `{"Batches": [...]}` → 204, once the log writer has them.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::Full;
use ignis_cluster::Capacity;
use ignis_ids::AccountId;
use serde_json::json;

use crate::error::ApiError;
use crate::http::{Answer, empty_answer, json_answer};
use crate::{App, Caller};

/// Largest forwarded queue request read (an SQS request, base64, and who made it).
pub const MAX_QUEUE_REQUEST: usize = crate::sqs_api::MAX_REQUEST / 3 * 4 + 64 * 1024;

/// Largest forwarded invocation read (a payload of 6 MB, base64, and the rest of the invocation).
pub const MAX_FORWARDED: usize = 16 * 1024 * 1024;

fn admin_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::AccessDenied("only the administrator's key may make cluster calls".into()))
    }
}

pub async fn register(app: &App, caller: &Caller, body: &[u8]) -> Result<Answer, ApiError> {
    admin_only(caller)?;
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequestContent(format!("not JSON: {e}")))?;
    let address = value.get("Address").and_then(|a| a.as_str()).unwrap_or("");
    let memory_mb = value.get("MemoryMb").and_then(|m| m.as_u64());
    let cpus = value.get("Cpus").and_then(|c| c.as_u64()).and_then(|c| u32::try_from(c).ok());
    let (Some(memory_mb), Some(cpus)) = (memory_mb, cpus) else {
        return Err(ApiError::Validation("MemoryMb and Cpus must be numbers".into()));
    };
    if address.is_empty() || address.contains('/') {
        return Err(ApiError::Validation(format!("Address must be host:port, not {address:?}")));
    }
    let id = app
        .invoker
        .register(address, Capacity { memory_mb, cpus })
        .await
        .map_err(|e| ApiError::Service(e.to_string()))?;
    let mut answer = json!({ "WorkerId": id.0, "CacheNodes": app.config.cache_nodes });
    if let Some(share) = origin_share(app) {
        answer["OriginFetches"] = json!(share);
    }
    Ok(json_answer(StatusCode::CREATED, answer))
}

pub async fn heartbeat(app: &App, caller: &Caller, id: &str) -> Result<Answer, ApiError> {
    admin_only(caller)?;
    let renewed = match id.parse::<u32>() {
        Ok(id) => app.invoker.heartbeat(ignis_placement::WorkerId(id)).await,
        Err(_) => false,
    };
    if !renewed {
        return Err(ApiError::ResourceNotFound(format!("worker {id} is not registered: register again")));
    }
    let mut answer = serde_json::Map::new();
    if let Some(share) = origin_share(app) {
        answer.insert("OriginFetches".into(), json!(share));
    }
    if let Some(front_ends) = app.invoker.front_ends() {
        answer.insert("FrontEnds".into(), front_ends.encode());
    }
    match answer.is_empty() {
        true => Ok(empty_answer(StatusCode::NO_CONTENT)),
        false => Ok(json_answer(StatusCode::OK, serde_json::Value::Object(answer))),
    }
}

/// Each healthy worker's share of the cluster-wide origin budget now (at least 1), if one is set; the server's own
/// worker's limit is set to it here too.
fn origin_share(app: &App) -> Option<usize> {
    let budget = app.config.origin_budget.as_ref()?;
    let workers = app.invoker.workers().iter().filter(|w| w.healthy).count().max(1);
    let share = (budget.total / workers).max(1);
    if let Some(local) = &budget.local {
        local.set_limit(share);
    }
    Some(share)
}

pub fn list(app: &App, caller: &Caller) -> Result<Answer, ApiError> {
    admin_only(caller)?;
    let workers: Vec<serde_json::Value> = app
        .invoker
        .workers()
        .into_iter()
        .map(|w| {
            json!({
                "WorkerId": w.id.0,
                "Address": w.address,
                "Local": w.local,
                "Healthy": w.healthy,
                "MemoryMb": w.memory_mb,
                "Cpus": w.cpus,
                "UsedMemoryMb": w.used_memory_mb,
                "Sandboxes": w.sandboxes,
            })
        })
        .collect();
    Ok(json_answer(StatusCode::OK, json!({ "Workers": workers })))
}

/// `POST /ignis/invocations/{account}/{function}/{revision}`: an invocation another front end forwards to this
/// one, the leader of the function's partition (`ignis_invoke::assignment`). The outcome (the worker protocol's
/// body), or `encode_outcome(None)` for one not taken here (the revision is not known here yet, or this front
/// end is shutting down: the sender runs it itself), or 500 with the invoker's error as `encode_error` gives it.
pub async fn run_forwarded(
    app: &Arc<App>,
    caller: &Caller,
    (account, function, revision): (&str, &str, &str),
    body: &[u8],
) -> Result<Answer, ApiError> {
    admin_only(caller)?;
    let not_taken = || Ok(bytes_answer(StatusCode::OK, ignis_cluster::encode_outcome(None)));
    let Some(account_id) = AccountId::parse(account) else { return not_taken() };
    let Some(latest) = app.registry.get(&account_id, function) else { return not_taken() };
    let record = match latest.revision_id == revision {
        true => latest.as_ref(),
        false => match latest.versions.iter().find(|v| v.revision_id == revision) {
            Some(version) => version,
            None => return not_taken(),
        },
    };
    let (invocation, _) = ignis_cluster::decode_invocation(body).map_err(ApiError::InvalidRequestContent)?;
    let target = crate::invoke_api::target(app, account, record);
    match app.invoker.run_forwarded(target, invocation).await {
        Ok(outcome) => Ok(bytes_answer(StatusCode::OK, ignis_cluster::encode_outcome(Some(&outcome)))),
        Err(ignis_invoke::InvokeError::ShuttingDown) => not_taken(),
        Err(e) => Ok(json_answer(StatusCode::INTERNAL_SERVER_ERROR, ignis_invoke::assignment::encode_error(&e))),
    }
}

/// `GET /ignis/partitions?Function=NAME`: the assignment partition of the caller's function, the front end
/// leading it (`null`: no one now), and whether that is the one that should (`Settled`); `null`s outside a
/// cluster.
pub fn describe_partition(app: &App, caller: &Caller, query: &str) -> Result<Answer, ApiError> {
    admin_only(caller)?;
    let params = crate::http::query_params(query);
    let Some((_, function)) = params.iter().find(|(k, _)| k == "Function") else {
        return Err(ApiError::Validation("Function is required".into()));
    };
    let answer = match app.invoker.assignment() {
        Some(assignment) => {
            let described = assignment.describe(caller.account.as_str(), function);
            json!({ "Partition": described.partition, "Leader": described.leader, "Settled": described.settled })
        }
        None => json!({ "Partition": null, "Leader": null, "Settled": null }),
    };
    Ok(json_answer(StatusCode::OK, answer))
}

fn bytes_answer(status: StatusCode, body: Vec<u8>) -> Answer {
    let mut answer = Answer::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = status;
    answer
}

pub async fn code(app: &Arc<App>, caller: &Caller, sha: &str) -> Result<Answer, ApiError> {
    admin_only(caller)?;
    let dir = app.store.code_dir(sha);
    if !dir.is_dir() {
        return Err(ApiError::ResourceNotFound(format!("no code {sha}")));
    }
    zipped(dir).await
}

/// The code tree at `dir` zipped (`ignis_store::zip_tree`, off the async runtime), as an `application/zip` answer
/// whose body is that zip, not a copy of it.
pub(crate) async fn zipped(dir: std::path::PathBuf) -> Result<Answer, ApiError> {
    let zip = tokio::task::spawn_blocking(move || ignis_store::zip_tree(&dir))
        .await
        .map_err(|e| ApiError::Service(format!("zipping code: {e}")))?
        .map_err(ApiError::Service)?;
    let mut answer = Answer::new(Full::new(Bytes::from(zip)));
    answer.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    Ok(answer)
}

pub async fn logs(app: &App, caller: &Caller, body: &[u8]) -> Result<Answer, ApiError> {
    admin_only(caller)?;
    let batches = ignis_cluster::decode_log_batches(body).map_err(ApiError::InvalidRequestContent)?;
    for batch in batches {
        app.invoker.log_sink().send(batch).await.map_err(|_| ApiError::Service("the log writer is gone".into()))?;
    }
    Ok(empty_answer(StatusCode::NO_CONTENT))
}

pub async fn image(app: &Arc<App>, caller: &Caller, account: &str, digest: &str, query: &str) -> Result<Answer, ApiError> {
    admin_only(caller)?;
    let account = ignis_ids::AccountId::new(account);
    let params = crate::http::query_params(query);
    let repository = params.iter().find(|(k, _)| k == "repository").map(|(_, v)| v.as_str()).unwrap_or("");
    let only_own = params.iter().any(|(k, v)| k == "Own" && v == "1");
    let found = match app.images.prepared(&account, repository, digest).await {
        Ok(found) => found,
        Err(e) => {
            let refused = match e.is_image_fault() {
                true => ApiError::from(ignis_images::PreparerError::Image(e.to_string())),
                false => ApiError::Service(e.to_string()),
            };
            // A cluster's other front end may have it: its answer, and where its chunks are read.
            let others = match (&app.config.front_ends, only_own) {
                (Some(front_ends), false) => front_ends.others().await,
                _ => return Err(refused),
            };
            for other in others {
                if let Ok(mut answer) = ignis_cluster::image_answer(&other, account.as_str(), repository, digest, true).await {
                    answer["ChunksFrom"] = json!(other.authority());
                    return Ok(json_answer(StatusCode::OK, answer));
                }
            }
            return Err(refused);
        }
    };
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(json_answer(
        StatusCode::OK,
        json!({
            "Id": found.id,
            "Manifest": b64.encode(found.manifest.encode()),
            "Key": b64.encode(found.key.as_bytes()),
            "Root": found.root,
        }),
    ))
}

pub async fn chunk(app: &Arc<App>, caller: &Caller, root: &str, digest: &str) -> Result<Answer, ApiError> {
    admin_only(caller)?;
    let digest: ignis_chunks::ChunkDigest =
        digest.parse().map_err(|_| ApiError::InvalidParameterValue(format!("{digest:?} is not a chunk name")))?;
    if !ignis_chunks::valid_root_id(root) {
        return Err(ApiError::InvalidParameterValue(format!("{root:?} is not a chunk store root")));
    }
    let reader = app.images.reader(root).map_err(|e| ApiError::Service(e.to_string()))?;
    // Unchecked here: the worker host checks every chunk against its image's authenticated manifest.
    match reader.get_unverified(digest).await {
        Ok(bytes) => Ok(Answer::new(Full::new(bytes))),
        Err(ignis_chunks::ChunkError::NotFound(_)) => Err(ApiError::ResourceNotFound(format!("no chunk {digest} in root {root}"))),
        Err(e) => Err(ApiError::Service(e.to_string())),
    }
}

/// Every image a function or version names, as its image or its runtime base, and every installed runtime's: what
/// garbage collection keeps.
fn live_images(app: &App) -> HashSet<(ignis_ids::AccountId, String)> {
    let mut live = HashSet::new();
    let base = |base: &ignis_registry::RuntimeRecord| (ignis_ids::AccountId::new(base.account.clone()), base.image.manifest_digest.clone());
    for (account, record) in app.registry.all() {
        for r in std::iter::once(&*record).chain(&record.versions) {
            if let Some(image) = &r.image {
                live.insert((account.clone(), image.manifest_digest.clone()));
            }
            live.extend(r.base.as_ref().map(base));
        }
    }
    live.extend(app.runtimes.list().iter().map(|runtime| base(runtime)));
    live
}

/// How long a retired root stays readable, and an expired one kept, unless the call says otherwise.
pub const DEFAULT_RETIRE_SECONDS: u64 = 3600;
pub const DEFAULT_EXPIRE_SECONDS: u64 = 3600;

pub async fn collect_images(app: &Arc<App>, caller: &Caller, query: &str) -> Result<Answer, ApiError> {
    admin_only(caller)?;
    let params = crate::http::query_params(query);
    let seconds = |name: &str, default: u64| -> Result<i64, ApiError> {
        let value = params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let seconds = match value {
            None => default,
            Some(v) => v.parse::<u64>().map_err(|_| ApiError::InvalidParameterValue(format!("{name} must be a number of seconds, not {v:?}")))?,
        };
        i64::try_from(seconds.saturating_mul(1000)).map_err(|_| ApiError::InvalidParameterValue(format!("{name} is too large")))
    };
    let policy = ignis_chunks::roots::Policy {
        retire_for_ms: seconds("RetireSeconds", DEFAULT_RETIRE_SECONDS)?,
        expire_for_ms: seconds("ExpireSeconds", DEFAULT_EXPIRE_SECONDS)?,
    };
    let live = live_images(app);
    let report = app.images.collect(&live, policy).await.map_err(|e| ApiError::Service(e.to_string()))?;
    let stored = app.images.stored().await.map_err(|e| ApiError::Service(e.to_string()))?;
    metrics::gauge!("ignis_chunk_store_bytes").set(stored.bytes as f64);
    Ok(json_answer(
        StatusCode::OK,
        json!({
            "ActiveRoot": report.active_root,
            "LiveImages": live.len(),
            "Copied": report.copied,
            "Dropped": report.dropped,
            "Expired": report.expired,
            "Deleted": report.deleted,
            "Alarms": report.alarms,
            "StoredChunks": stored.chunks,
            "StoredBytes": stored.bytes,
        }),
    ))
}

/// A request for the queues: answered here if this front end serves them, else handed to the one that does
/// (waiting up to `ignis_queues::HOME_WAIT` for one to take them over).
pub(crate) async fn queue_request(
    app: &Arc<App>,
    caller: &Caller,
    operation: crate::http::Operation,
    parts: &http::request::Parts,
    host: &str,
    body: Bytes,
) -> Result<Answer, ApiError> {
    let unavailable = |why: String| match operation {
        crate::http::Operation::Sqs(_) => ApiError::from(ignis_queues::QueueError::Unavailable(why)),
        _ => ApiError::Service(why),
    };
    let query = parts.uri.query().unwrap_or("");
    if app.queues.here() {
        return crate::http::queue_operation(app, caller, operation, host, query, &body).await;
    }
    let forwarded = ignis_queues::Forwarded {
        account: caller.account.as_str().to_string(),
        admin: caller.admin,
        session: caller.session.clone(),
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: query.to_string(),
        host: host.to_string(),
        target: parts.headers.get("x-amz-target").and_then(|t| t.to_str().ok()).map(str::to_string),
        body: body.to_vec(),
    };
    let answered = match app.queues.forward(&forwarded).await {
        Ok(Some(answered)) => answered,
        // It became this front end's meanwhile.
        Ok(None) => return crate::http::queue_operation(app, caller, operation, host, query, &Bytes::from(forwarded.body)).await,
        Err(e) => return Err(unavailable(e.to_string())),
    };
    let mut answer = Answer::new(Full::new(Bytes::from(answered.body)));
    *answer.status_mut() = StatusCode::from_u16(answered.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // The body's framing is this connection's own; the request id is this front end's.
    let own = ["content-length", "transfer-encoding", "connection", "x-amzn-requestid"];
    for (name, value) in answered.headers.into_iter().filter(|(name, _)| !own.contains(&name.to_ascii_lowercase().as_str())) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            answer.headers_mut().append(name, value);
        }
    }
    Ok(answer)
}

/// The refusal (503) of a request for the queues by a front end that does not serve them now, if it does not.
fn not_serving_queues(app: &App) -> Option<Answer> {
    let refused = || json_answer(StatusCode::SERVICE_UNAVAILABLE, json!({ "message": "this front end does not serve the queues" }));
    (!app.queues.here()).then(refused)
}

/// `POST /ignis/queue-requests`: a request for the queues another front end forwarded here, answered as the
/// caller it names (see the module docs).
pub async fn run_queue_request(app: &Arc<App>, caller: &Caller, body: &[u8]) -> Result<Answer, ApiError> {
    use http_body_util::BodyExt;
    admin_only(caller)?;
    if let Some(refused) = not_serving_queues(app) {
        return Ok(refused);
    }
    let request: ignis_queues::Forwarded =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequestContent(format!("a forwarded queue request: {e}")))?;
    let account = AccountId::parse(&request.account)
        .ok_or_else(|| ApiError::InvalidRequestContent(format!("a forwarded queue request: account {:?}", request.account)))?;
    let caller = Caller { account, admin: request.admin, session: request.session };
    let method = http::Method::from_bytes(request.method.as_bytes())
        .map_err(|e| ApiError::InvalidRequestContent(format!("a forwarded queue request: {e}")))?;
    let mut headers = http::HeaderMap::new();
    if let Some(target) = request.target.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert("x-amz-target", target);
    }
    let operation = crate::http::route(&method, &request.path, &request.query, &headers)?;
    let is_sqs = matches!(operation, crate::http::Operation::Sqs(_));
    let body = Bytes::from(request.body);
    let answer = match crate::http::queue_operation(app, &caller, operation, &request.host, &request.query, &body).await {
        Ok(answer) => answer,
        Err(e) if is_sqs => e.to_sqs_response(),
        Err(e) => e.to_rest_response(),
    };
    let (parts, body) = answer.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
        .collect();
    let answered = ignis_queues::Answered { status: parts.status.as_u16(), headers, body: body.to_vec() };
    let encoded = serde_json::to_vec(&answered).map_err(|e| ApiError::Service(e.to_string()))?;
    Ok(bytes_answer(StatusCode::OK, encoded))
}

/// `POST /ignis/queue-polls`: a poller's call on a queue another front end handed here (see the module docs).
pub async fn run_queue_poll(app: &Arc<App>, caller: &Caller, body: &[u8]) -> Result<Answer, ApiError> {
    admin_only(caller)?;
    if let Some(refused) = not_serving_queues(app) {
        return Ok(refused);
    }
    let call: ignis_queues::PollCall =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequestContent(format!("a poller's queue call: {e}")))?;
    let answer = app.queues.answer_poll(call).await.unwrap_or_else(|e| ignis_queues::PollAnswer::failed(&e));
    let encoded = serde_json::to_vec(&answer).map_err(|e| ApiError::Service(e.to_string()))?;
    Ok(bytes_answer(StatusCode::OK, encoded))
}

/// `GET /ignis/queue-home`: whether this front end serves the queues now, and the mappings it polls.
pub fn describe_queue_home(app: &App, caller: &Caller) -> Result<Answer, ApiError> {
    admin_only(caller)?;
    let mut polling = app.mappings.polling();
    polling.sort();
    Ok(json_answer(StatusCode::OK, json!({ "ServedHere": app.queues.here(), "Polling": polling })))
}

/// `POST /ignis/log-requests` `{"Account", "Action", "Request"}`: a CloudWatch Logs action of the account on this
/// front end's logs alone, answered as CloudWatch Logs answers it (see the module docs).
pub async fn run_log_request(app: &Arc<App>, caller: &Caller, body: &[u8]) -> Result<Answer, ApiError> {
    admin_only(caller)?;
    let request: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequestContent(format!("a log request: {e}")))?;
    let account = request["Account"].as_str().and_then(AccountId::parse);
    let action = request["Action"].as_str().and_then(crate::http::LogsAction::from_name);
    let (Some(account), Some(action)) = (account, action) else {
        return Err(ApiError::Validation("a log request names an Account and a CloudWatch Logs Action".into()));
    };
    let caller = Caller { account, admin: false, session: None };
    Ok(match crate::logs_api::here(app, &caller, action, request["Request"].to_string().into_bytes()).await {
        Ok(answer) => json_answer(StatusCode::OK, answer),
        Err(e) => e.to_json_protocol_response(),
    })
}

/// `GET /ignis/allocations/{account}/{function}/{revision}` (see the module docs).
pub fn allocation(app: &App, caller: &Caller, account: String, function: String, revision_id: String) -> Result<Answer, ApiError> {
    admin_only(caller)?;
    let revision = ignis_ids::Revision { account: AccountId::new(account), function, revision_id };
    let allocation = app.invoker.allocation(&revision);
    Ok(json_answer(StatusCode::OK, json!({ "Allocated": allocation.allocated, "Failure": allocation.failure })))
}
