//! The worker hosts' side of the worker protocol (see `ignis_cluster`), and
//! the list of workers; all signed for the service `ignis` with the
//! administrator's key:
//!
//! - `POST /ignis/workers` `{"Address", "MemoryMb", "Cpus"}` → 201 `{"WorkerId"}`
//! - `POST /ignis/workers/{id}/heartbeat` → 204, or 404 `ResourceNotFoundException`
//!   for a worker that is unknown or was declared unhealthy (it registers again).
//! - `GET /ignis/workers` → `{"Workers": [{"WorkerId", "Address", "Local",
//!   "Healthy", "MemoryMb", "Cpus", "UsedMemoryMb", "Sandboxes"}]}`, oldest first.
//! - `GET /ignis/code/{sha256 hex}` → the code tree, zipped.
//! - `POST /ignis/logs` `{"Batches": [...]}` → 204, once the log writer has them.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::Full;
use ignis_cluster::Capacity;
use serde_json::json;

use crate::error::ApiError;
use crate::http::{Answer, empty_answer, json_answer};
use crate::{App, Caller};

fn admin_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::AccessDenied("only the administrator's key may make cluster calls".into()))
    }
}

pub fn register(app: &App, caller: &Caller, body: &[u8]) -> Result<Answer, ApiError> {
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
    let id = app.invoker.register(address, Capacity { memory_mb, cpus });
    Ok(json_answer(StatusCode::CREATED, json!({ "WorkerId": id.0 })))
}

pub fn heartbeat(app: &App, caller: &Caller, id: &str) -> Result<Answer, ApiError> {
    admin_only(caller)?;
    match id.parse::<u32>() {
        Ok(id) if app.invoker.heartbeat(ignis_placement::WorkerId(id)) => Ok(empty_answer(StatusCode::NO_CONTENT)),
        _ => Err(ApiError::ResourceNotFound(format!("worker {id} is not registered: register again"))),
    }
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

pub async fn code(app: &Arc<App>, caller: &Caller, sha: &str) -> Result<Answer, ApiError> {
    admin_only(caller)?;
    let dir = app.store.code_dir(sha);
    if !dir.is_dir() {
        return Err(ApiError::ResourceNotFound(format!("no code {sha}")));
    }
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
