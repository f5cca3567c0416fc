//! Provisioned concurrency: Put/Get/Delete/ListProvisionedConcurrencyConfigs.
//!
//! A configuration names a published version or an alias (never `$LATEST`)
//! and lives in `$LATEST`'s record (`provisioned`, by qualifier). The keeper
//! (`ignis_pollers::Keeper`) hands the whole set to the invoker every second
//! and whenever it changes; the invoker starts what is missing, replaces what
//! died and lets what is no longer wanted age out like any idle sandbox. The status
//! (`IN_PROGRESS`, `READY`, `FAILED`) is read from the invoker, live: in a
//! cluster, from the invoker of the front end leading the function's partition
//! (`GET /ignis/allocations/...`), which alone keeps it.

use std::sync::Arc;

use http::StatusCode;
use ignis_ids::AccountId;
use ignis_pollers::provisioning::version_of;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::control::{now, resolve};
use crate::error::ApiError;
use crate::function::{self as f, Violations};
use ignis_registry::{FunctionRecord, ProvisionedRecord};
use crate::http::{Answer, empty_answer, json_answer, query_params};
use crate::{App, Caller};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRequest {
    provisioned_concurrent_executions: Option<i64>,
}

fn not_found() -> ApiError {
    ApiError::ProvisionedConcurrencyConfigNotFound("No Provisioned Concurrency Config found for this function".into())
}

/// The required `Qualifier` parameter.
fn qualifier(query: &str) -> Result<String, ApiError> {
    let qualifier = query_params(query).into_iter().find(|(k, _)| k == "Qualifier").map(|(_, v)| v);
    let mut v = Violations::default();
    v.check(qualifier.is_some(), "null", "qualifier", "Member must not be null");
    v.into_result()?;
    Ok(qualifier.unwrap_or_default())
}

/// How far the provisioned concurrency of `version` is, on the front end that runs it: this one, or in a cluster
/// the leader of its partition.
async fn allocation(app: &App, account: &AccountId, version: &FunctionRecord) -> ignis_invoke::Allocation {
    let revision = crate::invoke_api::revision(account.as_str(), version);
    if let Some(assignment) = app.invoker.assignment()
        && assignment.leader(account.as_str(), &version.name).is_some()
        && let Some(address) = assignment.describe(account.as_str(), &version.name).leader
        && let Some(front_ends) = &app.config.front_ends
    {
        let path = format!("/ignis/allocations/{}/{}/{}", account, version.name, version.revision_id);
        for leader in front_ends.others().await.into_iter().filter(|other| other.authority() == address) {
            if let Ok((StatusCode::OK, body)) = leader.call(http::Method::GET, &path, bytes::Bytes::new()).await
                && let Ok(answer) = serde_json::from_slice::<Value>(&body)
            {
                let allocated = answer["Allocated"].as_u64().map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
                return ignis_invoke::Allocation { allocated, failure: answer["Failure"].as_str().map(str::to_string) };
            }
        }
    }
    app.invoker.allocation(&revision)
}

/// A configuration as Lambda shows it, with its live status.
async fn config_body(app: &App, account: &AccountId, latest: &FunctionRecord, qualifier: &str, config: &ProvisionedRecord) -> Value {
    let allocation = match version_of(latest, qualifier) {
        Some(version) => Some(allocation(app, account, version).await),
        None => None,
    };
    let allocated = allocation.as_ref().map_or(0, |a| a.allocated.min(config.requested));
    let failure = allocation.and_then(|a| a.failure);
    let status = match (&failure, allocated >= config.requested) {
        (Some(_), _) => "FAILED",
        (None, true) => "READY",
        (None, false) => "IN_PROGRESS",
    };
    let mut body = json!({
        "RequestedProvisionedConcurrentExecutions": config.requested,
        "AvailableProvisionedConcurrentExecutions": allocated,
        "AllocatedProvisionedConcurrentExecutions": allocated,
        "Status": status,
        "LastModified": f::last_modified(config.last_modified_ms),
    });
    if let Some(reason) = failure {
        body["StatusReason"] = json!(reason);
    }
    body
}

pub async fn put(app: &Arc<App>, caller: &Caller, name: &str, query: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let qualifier = qualifier(query)?;
    let request: PutRequest = f::parse_body(body)?;
    let mut v = Violations::default();
    let requested = request.provisioned_concurrent_executions;
    v.check(requested.is_some(), "null", "provisionedConcurrentExecutions", "Member must not be null");
    if let Some(n) = requested {
        v.check(n >= 1, n, "provisionedConcurrentExecutions", "Member must have value greater than or equal to 1");
    }
    v.into_result()?;
    let requested = u32::try_from(requested.unwrap_or(1)).unwrap_or(u32::MAX);
    let (reference, latest) = resolve(app, caller, "PutProvisionedConcurrencyConfig", name, Some(&qualifier))?;
    if qualifier == "$LATEST" {
        return Err(ApiError::InvalidParameterValue(
            "Provisioned Concurrency Configs cannot be applied to unpublished function versions.".into(),
        ));
    }
    if latest.aliases.get(&qualifier).is_some_and(|alias| !alias.weights.is_empty()) {
        return Err(ApiError::InvalidParameterValue("Alias with weights can not be used with Provisioned Concurrency".into()));
    }
    let config = ProvisionedRecord { requested, last_modified_ms: now(app) };
    let written = app
        .registry
        .update(&caller.account, &reference.name, |current| -> Result<_, ApiError> {
            let current = current.ok_or_else(|| ApiError::ResourceNotFound(format!("Function not found: {}", reference.name)))?;
            check_capacity(app, caller, current, &qualifier, requested)?;
            let mut record = current.clone();
            record.provisioned.insert(qualifier.clone(), config.clone());
            Ok(record)
        })
        .await?;
    app.provisioning.changed();
    Ok(json_answer(StatusCode::ACCEPTED, config_body(app, &caller.account, &written.1, &qualifier, &config).await))
}

/// Provisioned concurrency is taken from the function's reserved concurrency
/// when it has one, else from what the account leaves unreserved; two
/// qualifiers of the function may not provision the same version.
fn check_capacity(app: &App, caller: &Caller, latest: &FunctionRecord, qualifier: &str, requested: u32) -> Result<(), ApiError> {
    let version = version_of(latest, qualifier).map(|v| v.version);
    let others = latest.provisioned.iter().filter(|(q, _)| q.as_str() != qualifier);
    if let Some((other, _)) = others.clone().find(|(q, _)| version_of(latest, q).map(|v| v.version) == version) {
        return Err(ApiError::ResourceConflict(format!(
            "Provisioned Concurrency is already configured for {other}, which refers to the same version as {qualifier}"
        )));
    }
    let total = others.map(|(_, c)| u64::from(c.requested)).sum::<u64>() + u64::from(requested);
    match latest.reserved_concurrency {
        Some(reserved) if total > u64::from(reserved) => Err(ApiError::InvalidParameterValue(
            "Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution for function".into(),
        )),
        Some(_) => Ok(()),
        None => {
            let available = app.concurrency.unreserved_capacity(caller.account.as_str()).saturating_sub(app.config.min_unreserved);
            if total > u64::from(available) {
                Err(ApiError::InvalidParameterValue(format!(
                    "Requested Provisioned Concurrency should not be greater than the account's unreserved concurrency less its minimum of {} ({available})",
                    app.config.min_unreserved
                )))
            } else {
                Ok(())
            }
        }
    }
}

pub async fn get(app: &App, caller: &Caller, name: &str, query: &str) -> Result<Answer, ApiError> {
    let qualifier = qualifier(query)?;
    let (_, latest) = resolve(app, caller, "GetProvisionedConcurrencyConfig", name, Some(&qualifier))?;
    let config = latest.provisioned.get(&qualifier).ok_or_else(not_found)?;
    Ok(json_answer(StatusCode::OK, config_body(app, &caller.account, &latest, &qualifier, config).await))
}

pub async fn delete(app: &Arc<App>, caller: &Caller, name: &str, query: &str) -> Result<Answer, ApiError> {
    let qualifier = qualifier(query)?;
    let (reference, latest) = resolve(app, caller, "DeleteProvisionedConcurrencyConfig", name, Some(&qualifier))?;
    if !latest.provisioned.contains_key(&qualifier) {
        return Err(not_found());
    }
    app.registry
        .update(&caller.account, &reference.name, |current| -> Result<_, ApiError> {
            let current = current.ok_or_else(|| ApiError::ResourceNotFound(format!("Function not found: {}", reference.name)))?;
            let mut record = current.clone();
            record.provisioned.remove(&qualifier);
            Ok(record)
        })
        .await?;
    app.provisioning.changed();
    Ok(empty_answer(StatusCode::NO_CONTENT))
}

pub async fn list(app: &App, caller: &Caller, name: &str, query: &str) -> Result<Answer, ApiError> {
    let (max_items, marker, _) = crate::versions::paging(query)?;
    let (_, latest) = resolve(app, caller, "ListProvisionedConcurrencyConfigs", name, None)?;
    let mut items = Vec::new();
    for (qualifier, config) in &latest.provisioned {
        let mut body = config_body(app, &caller.account, &latest, qualifier, config).await;
        body["FunctionArn"] = json!(latest.qualified_arn(&app.config.region, caller.account.as_str(), qualifier));
        items.push((qualifier.clone(), body));
    }
    let (page, next) = crate::versions::page(items, max_items, marker.as_deref());
    let mut body = json!({ "ProvisionedConcurrencyConfigs": page });
    if let Some(next) = next {
        body["NextMarker"] = json!(next);
    }
    Ok(json_answer(StatusCode::OK, body))
}
