//! Create/Get/List/Update/DeleteEventSourceMapping: request parsing and
//! validation, and Lambda's wire shape of a mapping, over the mappings'
//! owner (`ignis_pollers::Mappings`, which stores them and runs their
//! pollers). Its refusals are `ignis_pollers::MappingError`s, turned into
//! wire errors in `error.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::StatusCode;
use ignis_ids::arn::parse_queue as parse_arn;
use ignis_pollers::mapping::{self, Change, MappingRecord};
use ignis_queues::QueueRef;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::control::resolve;
use crate::error::ApiError;
use crate::function::{self as f, Violations};
use crate::http::{Answer, json_answer};
use crate::{App, Caller};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MappingIn {
    event_source_arn: Option<String>,
    function_name: Option<String>,
    enabled: Option<bool>,
    batch_size: Option<i64>,
    maximum_batching_window_in_seconds: Option<i64>,
    function_response_types: Option<Vec<String>>,
    scaling_config: Option<ScalingIn>,
    /// Everything else Lambda's model has (refused when given).
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ScalingIn {
    maximum_concurrency: Option<i64>,
}

const REPORT_BATCH_ITEM_FAILURES: &str = "ReportBatchItemFailures";

/// Model checks (`ValidationException`) and members Ignis does not honour.
fn check_request(request: &MappingIn, creating: bool) -> Result<(), ApiError> {
    let mut v = Violations::default();
    if creating {
        v.check(request.function_name.is_some(), "null", "functionName", "Member must not be null");
    }
    v.range(request.batch_size, "batchSize", 1, i64::from(mapping::MAX_BATCH_SIZE));
    v.range(request.maximum_batching_window_in_seconds, "maximumBatchingWindowInSeconds", 0, i64::from(mapping::MAX_WINDOW_S));
    if let Some(types) = &request.function_response_types {
        v.check(types.len() <= 1, types.len(), "functionResponseTypes", "Member must have length less than or equal to 1");
        for t in types {
            v.check(t == REPORT_BATCH_ITEM_FAILURES, t, "functionResponseTypes", "Member must satisfy enum value set: [ReportBatchItemFailures]");
        }
    }
    let concurrency = request.scaling_config.as_ref().and_then(|c| c.maximum_concurrency);
    let (min, max) = (mapping::MIN_MAX_CONCURRENCY, mapping::MAX_MAX_CONCURRENCY);
    v.range(concurrency, "scalingConfig.maximumConcurrency", i64::from(min), i64::from(max));
    v.into_result()?;
    for (member, value) in &request.other {
        if value.is_null() {
            continue;
        }
        return Err(ApiError::InvalidParameterValue(match member.as_str() {
            "StartingPosition" | "StartingPositionTimestamp" => format!("{member} is not valid for SQS event sources."),
            _ => format!("{member} is not supported by Ignis's event source mappings"),
        }));
    }
    Ok(())
}

/// Resolves the function a request names (by name, ARN or qualified ARN):
/// its name and the qualifier it was named with.
fn function_of(app: &App, caller: &Caller, action: &str, name: &str) -> Result<(String, Option<String>), ApiError> {
    let (reference, _) = resolve(app, caller, action, name, None)?;
    Ok((reference.name, reference.qualifier))
}

/// The caller's queue an `EventSourceArn` names.
fn queue_of(app: &App, caller: &Caller, arn: Option<&str>) -> Result<QueueRef, ApiError> {
    let arn = arn.ok_or_else(|| ApiError::InvalidParameterValue("EventSourceArn is required: the ARN of one of your queues".into()))?;
    if parse_arn(arn).is_none() {
        return Err(ApiError::InvalidParameterValue(format!(
            "Unrecognized event source {arn}: Ignis maps its SQS-compatible queues only (arn:aws:sqs:<region>:<account>:<name>)"
        )));
    }
    app.queues.lookup(caller.account.as_str(), arn).map_err(|_| {
        ApiError::InvalidParameterValue(
            "Error occurred while ReceiveMessage. SQS Error Code: AWS.SimpleQueueService.NonExistentQueue. SQS Error Message: The specified queue does not exist."
                .into(),
        )
    })
}

/// A mapping as Lambda shows it.
fn config_body(app: &App, account: &str, record: &MappingRecord, state: &str) -> Value {
    let region = &app.config.region;
    let function_arn = match &record.qualifier {
        Some(q) => ignis_ids::arn::function_qualified(region, account, &record.function_name, q),
        None => ignis_ids::arn::function(region, account, &record.function_name),
    };
    let types: Vec<&str> = if record.report_failures { vec![REPORT_BATCH_ITEM_FAILURES] } else { Vec::new() };
    let mut body = json!({
        "UUID": record.uuid,
        "BatchSize": record.batch_size,
        "MaximumBatchingWindowInSeconds": record.window_s,
        "EventSourceArn": record.queue_arn,
        "FunctionArn": function_arn,
        "LastModified": record.last_modified_ms as f64 / 1000.0,
        "State": state,
        "StateTransitionReason": "USER_INITIATED",
        "FunctionResponseTypes": types,
        "EventSourceMappingArn": ignis_ids::arn::event_source_mapping(region, account, &record.uuid),
    });
    if let Some(n) = record.max_concurrency {
        body["ScalingConfig"] = json!({ "MaximumConcurrency": n });
    }
    body
}

pub async fn create(app: &Arc<App>, caller: &Caller, body: &[u8]) -> Result<Answer, ApiError> {
    let request: MappingIn = f::parse_body(body)?;
    check_request(&request, true)?;
    let queue = queue_of(app, caller, request.event_source_arn.as_deref())?;
    let name = request.function_name.as_deref().unwrap_or_default();
    let (function_name, qualifier) = function_of(app, caller, "CreateEventSourceMapping", name)?;
    let record = MappingRecord {
        uuid: uuid::Uuid::new_v4().to_string(),
        queue_arn: queue.arn.clone(),
        function_name,
        batch_size: request.batch_size.map_or(mapping::DEFAULT_BATCH_SIZE, |n| n as u32),
        window_s: request.maximum_batching_window_in_seconds.map_or(0, |n| n as u32),
        enabled: request.enabled.unwrap_or(true),
        report_failures: request.function_response_types.is_some_and(|t| !t.is_empty()),
        // Set by the owner when it stores the mapping.
        last_modified_ms: 0,
        qualifier,
        max_concurrency: request.scaling_config.and_then(|c| c.maximum_concurrency).map(|n| n as u32),
    };
    let record = app.mappings.create(&caller.account, record).await?;
    let state = mapping::answered_state(Change::Create, record.enabled);
    Ok(json_answer(StatusCode::ACCEPTED, config_body(app, caller.account.as_str(), &record, state)))
}

pub fn get(app: &App, caller: &Caller, uuid: &str) -> Result<Answer, ApiError> {
    let (record, polling) = app.mappings.get(&caller.account, uuid)?;
    let state = mapping::settled_state(record.enabled, polling);
    Ok(json_answer(StatusCode::OK, config_body(app, caller.account.as_str(), &record, state)))
}

pub async fn update(app: &Arc<App>, caller: &Caller, uuid: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let request: MappingIn = f::parse_body(body)?;
    check_request(&request, false)?;
    if request.event_source_arn.is_some() {
        return Err(ApiError::InvalidParameterValue("The event source of a mapping cannot be changed".into()));
    }
    let (before, record) = app
        .mappings
        .update(&caller.account, uuid, |before| -> Result<MappingRecord, ApiError> {
            let mut record = before.clone();
            if let Some(name) = &request.function_name {
                (record.function_name, record.qualifier) = function_of(app, caller, "UpdateEventSourceMapping", name)?;
            }
            if let Some(n) = request.batch_size {
                record.batch_size = n as u32;
            }
            if let Some(n) = request.maximum_batching_window_in_seconds {
                record.window_s = n as u32;
            }
            if let Some(types) = &request.function_response_types {
                record.report_failures = !types.is_empty();
            }
            if let Some(enabled) = request.enabled {
                record.enabled = enabled;
            }
            if let Some(scaling) = &request.scaling_config {
                record.max_concurrency = scaling.maximum_concurrency.map(|n| n as u32);
            }
            Ok(record)
        })
        .await?;
    let state = mapping::answered_state(Change::Update { was_enabled: before.enabled }, record.enabled);
    Ok(json_answer(StatusCode::ACCEPTED, config_body(app, caller.account.as_str(), &record, state)))
}

pub async fn delete(app: &Arc<App>, caller: &Caller, uuid: &str) -> Result<Answer, ApiError> {
    let record = app.mappings.delete(&caller.account, uuid).await?;
    let state = mapping::answered_state(Change::Delete, record.enabled);
    Ok(json_answer(StatusCode::ACCEPTED, config_body(app, caller.account.as_str(), &record, state)))
}

pub fn list(app: &App, caller: &Caller, query: &str) -> Result<Answer, ApiError> {
    let (max_items, marker, params) = crate::versions::paging(query)?;
    let param = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    // Lambda's page for this call is 100 unless MaxItems says otherwise.
    let max_items = if param("MaxItems").is_some() { max_items } else { 100 };
    let function = param("FunctionName").map(|name| f::parse_function_ref(&name, "functionName")).transpose()?;
    let queue_arn = param("EventSourceArn");
    let items = app
        .mappings
        .list(&caller.account)
        .into_iter()
        .filter(|(record, _)| queue_arn.as_ref().is_none_or(|arn| *arn == record.queue_arn))
        .filter(|(record, _)| {
            function.as_ref().is_none_or(|f| {
                f.name == record.function_name && (f.qualifier.is_none() || f.qualifier == record.qualifier)
            })
        })
        .map(|(record, polling)| {
            let state = mapping::settled_state(record.enabled, polling);
            (record.uuid.clone(), config_body(app, caller.account.as_str(), &record, state))
        })
        .collect();
    let (page, next) = crate::versions::page(items, max_items, marker.as_deref());
    let mut body = json!({ "EventSourceMappings": page });
    if let Some(next) = next {
        body["NextMarker"] = json!(next);
    }
    Ok(json_answer(StatusCode::OK, body))
}

/// The checks of a mapping body that need no server, for the fuzz targets.
#[cfg(feature = "fuzz")]
pub(crate) fn check_body(body: &[u8]) {
    let Ok(request) = crate::function::parse_body::<MappingIn>(body) else { return };
    for creating in [true, false] {
        let _ = check_request(&request, creating);
    }
    if let Some(name) = &request.function_name {
        let _ = crate::function::parse_function_ref(name, "functionName");
    }
    if let Some(arn) = &request.event_source_arn {
        parse_arn(arn);
    }
    if let (Some(size), Some(window)) = (request.batch_size, request.maximum_batching_window_in_seconds)
        && let (Ok(size), Ok(window)) = (u32::try_from(size), u32::try_from(window))
    {
        let _ = mapping::check_batching(size, window);
    }
}
