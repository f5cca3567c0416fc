//! Event invoke configs (Put/Get/Update/Delete/ListFunctionEventInvokeConfig(s)):
//! how asynchronous invocations of a function, version or alias are retried,
//! how old they may get, and where their records go; and the checks of
//! destinations and dead-letter targets.
//!
//! Configs live in `$LATEST`'s record (`event_invoke`, by qualifier), so they
//! are written, reloaded and deleted with the function.

use std::sync::Arc;

use http::StatusCode;
use ignis_pollers::{Destination, parse_destination};
use ignis_registry::{EventInvokeConfig, FunctionRef, RegistryError, policy};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::control::{now, resolve};
use crate::error::ApiError;
use crate::function::{Violations, parse_body};
use crate::http::{Answer, empty_answer, json_answer, query_params};
use crate::{App, Caller};

/// Lambda's pattern for a destination ARN.
const DESTINATION_PATTERN: &str = "Member must satisfy regular expression pattern: $|kafka://([^.]([a-zA-Z0-9\\-_.]{0,248}))|arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\\-])+:([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1})?:(\\d{12})?:(.*)";

/// Lambda's `FunctionEventInvokeConfig` of `config`; `function_arn` is qualified.
fn wire(config: &EventInvokeConfig, function_arn: &str) -> Value {
    let destination = |d: &Option<String>| match d {
        Some(arn) => json!({ "Destination": arn }),
        None => json!({}),
    };
    let mut body = json!({
        "LastModified": config.last_modified_ms as f64 / 1000.0,
        "FunctionArn": function_arn,
        "DestinationConfig": { "OnSuccess": destination(&config.on_success), "OnFailure": destination(&config.on_failure) },
    });
    if let Some(n) = config.max_retries {
        body["MaximumRetryAttempts"] = json!(n);
    }
    if let Some(n) = config.max_age_s {
        body["MaximumEventAgeInSeconds"] = json!(n);
    }
    body
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DestinationIn {
    destination: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DestinationConfigIn {
    on_success: Option<DestinationIn>,
    on_failure: Option<DestinationIn>,
}

/// The body of PutFunctionEventInvokeConfig and UpdateFunctionEventInvokeConfig.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EventInvokeConfigIn {
    maximum_retry_attempts: Option<i64>,
    maximum_event_age_in_seconds: Option<i64>,
    destination_config: Option<DestinationConfigIn>,
}

fn destination(d: &Option<DestinationIn>) -> Option<String> {
    d.as_ref()?.destination.clone().filter(|arn| !arn.is_empty())
}

impl EventInvokeConfigIn {
    /// Checks the config of `caller`'s `function`, whose execution role delivers to its destinations.
    fn check(&self, app: &App, caller: &Caller, function: &str) -> Result<(), ApiError> {
        let (on_success, on_failure) = self.check_model()?;
        let role = app.registry.get(&caller.account, function).map(|r| r.role.clone());
        let usable = |arn: &Option<String>| arn.as_deref().is_none_or(|arn| destination_exists(app, caller, role.as_deref(), arn));
        if !usable(&on_success) || !usable(&on_failure) {
            let part = |kind: &str, arn: &Option<String>| match arn {
                Some(arn) => format!("{kind}(destination={arn})"),
                None => "null".into(),
            };
            return Err(ApiError::InvalidParameterValue(format!(
                "The provided destination config DestinationConfig(onSuccess={}, onFailure={}) is invalid.",
                part("OnSuccess", &on_success),
                part("OnFailure", &on_failure)
            )));
        }
        Ok(())
    }

    /// The checks that need nothing but the request; returns the destinations given.
    fn check_model(&self) -> Result<(Option<String>, Option<String>), ApiError> {
        let mut v = Violations::default();
        v.range(self.maximum_retry_attempts, "maximumRetryAttempts", 0, 2);
        v.range(self.maximum_event_age_in_seconds, "maximumEventAgeInSeconds", 60, 21600);
        let config = self.destination_config.as_ref();
        let on_success = config.and_then(|c| destination(&c.on_success));
        let on_failure = config.and_then(|c| destination(&c.on_failure));
        for (arn, field) in [(&on_success, "destinationConfig.onSuccess.destination"), (&on_failure, "destinationConfig.onFailure.destination")] {
            if let Some(arn) = arn {
                v.check(arn.len() <= 350 && arn.starts_with("arn:aws"), arn, field, DESTINATION_PATTERN);
            }
        }
        v.into_result()?;
        if self.maximum_retry_attempts.is_none() && self.maximum_event_age_in_seconds.is_none() && self.destination_config.is_none() {
            return Err(ApiError::InvalidParameterValue("You must specify at least one of error handling or destination setting.".into()));
        }
        Ok((on_success, on_failure))
    }

    /// Writes what is given into `config` (Put starts from an empty one, Update from the current one).
    fn apply(&self, config: &mut EventInvokeConfig, now_ms: i64) {
        if let Some(n) = self.maximum_retry_attempts {
            config.max_retries = Some(n as u32);
        }
        if let Some(n) = self.maximum_event_age_in_seconds {
            config.max_age_s = Some(n as u32);
        }
        if let Some(destinations) = &self.destination_config {
            config.on_success = destination(&destinations.on_success);
            config.on_failure = destination(&destinations.on_failure);
        }
        config.last_modified_ms = now_ms;
    }
}

/// Whether `arn` names a destination that exists for the caller: one of its
/// functions (and the version or alias named), another account's whose policy
/// for that qualifier lets the caller's function (acting as `role`, its
/// execution role) invoke it, or one of its queues.
fn destination_exists(app: &App, caller: &Caller, role: Option<&str>, arn: &str) -> bool {
    match parse_destination(caller.account.as_str(), arn) {
        Some(Destination::Function { account, name, qualifier }) => {
            let reference = FunctionRef { name, account: Some(account), region: None, qualifier };
            let request = policy::Request::invoke_by(caller.account.as_str(), role);
            app.registry.resolve_version_granted(&caller.account, &app.config.region, &request, &reference, 0.0).is_ok()
        }
        Some(Destination::Queue { arn }) => app.queues().exists(caller.account.as_str(), &arn),
        None => false,
    }
}

/// Checks a `DeadLetterConfig.TargetArn`: one of the caller's queues (Lambda
/// also takes SNS topics, which Ignis does not have).
pub fn check_dead_letter(app: &App, caller: &Caller, target: Option<&str>) -> Result<(), ApiError> {
    let Some(target) = target else { return Ok(()) };
    let mut v = Violations::default();
    v.check(target.starts_with("arn:"), target, "deadLetterConfig.targetArn", "Member must satisfy regular expression pattern: (arn:(aws[a-zA-Z-]*)?:[a-z0-9-.]+:.*)|()");
    v.into_result()?;
    match parse_destination(caller.account.as_str(), target) {
        Some(Destination::Queue { arn }) if app.queues().exists(caller.account.as_str(), &arn) => Ok(()),
        _ => Err(ApiError::InvalidParameterValue(format!(
            "The provided DeadLetterConfig target {target} is invalid: it must name an existing SQS queue of this account."
        ))),
    }
}

/// What a config call names: the caller's function, by name, and the config's
/// qualifier (`$LATEST` when none) with the qualified ARN that shows it.
struct ConfigTarget {
    function: String,
    qualifier: String,
    arn: String,
}

fn config_target(app: &App, caller: &Caller, action: &str, name: &str, query: &str) -> Result<ConfigTarget, ApiError> {
    let qualifier = query_params(query).into_iter().find(|(k, _)| k == "Qualifier").map(|(_, v)| v);
    let (reference, record) = resolve(app, caller, action, name, qualifier.as_deref())?;
    let qualifier = reference.qualifier.unwrap_or_else(|| "$LATEST".into());
    let arn = record.qualified_arn(&app.config.region, caller.account.as_str(), &qualifier);
    Ok(ConfigTarget { function: reference.name, qualifier, arn })
}

fn missing(arn: &str) -> ApiError {
    ApiError::ResourceNotFound(format!("The function {arn} doesn't have an EventInvokeConfig"))
}

/// PutFunctionEventInvokeConfig (`replace`: settings left out are removed) and
/// UpdateFunctionEventInvokeConfig (settings left out are kept; the config must exist).
pub async fn put(app: &Arc<App>, caller: &Caller, name: &str, query: &str, body: &[u8], replace: bool) -> Result<Answer, ApiError> {
    let request: EventInvokeConfigIn = parse_body(body)?;
    let action = if replace { "PutFunctionEventInvokeConfig" } else { "UpdateFunctionEventInvokeConfig" };
    let ConfigTarget { function, qualifier, arn } = config_target(app, caller, action, name, query)?;
    request.check(app, caller, &function)?;
    let mut stored = EventInvokeConfig::default();
    app.registry
        .update(&caller.account, &function, |current| -> Result<_, ApiError> {
            let current = current.ok_or_else(|| RegistryError::FunctionNotFound { function: arn.clone() })?;
            let mut record = current.clone();
            let mut config = match (replace, current.event_invoke.get(&qualifier)) {
                (true, _) => EventInvokeConfig::default(),
                (false, Some(config)) => config.clone(),
                (false, None) => return Err(missing(&arn)),
            };
            request.apply(&mut config, now(app));
            stored = config.clone();
            record.event_invoke.insert(qualifier.clone(), config);
            Ok(record)
        })
        .await?;
    Ok(json_answer(StatusCode::OK, wire(&stored, &arn)))
}

pub fn get(app: &App, caller: &Caller, name: &str, query: &str) -> Result<Answer, ApiError> {
    let ConfigTarget { function, qualifier, arn } = config_target(app, caller, "GetFunctionEventInvokeConfig", name, query)?;
    let record = app.registry.get(&caller.account, &function).ok_or_else(|| missing(&arn))?;
    let config = record.event_invoke.get(&qualifier).ok_or_else(|| missing(&arn))?;
    Ok(json_answer(StatusCode::OK, wire(config, &arn)))
}

pub async fn delete(app: &Arc<App>, caller: &Caller, name: &str, query: &str) -> Result<Answer, ApiError> {
    let ConfigTarget { function, qualifier, arn } = config_target(app, caller, "DeleteFunctionEventInvokeConfig", name, query)?;
    app.registry
        .update(&caller.account, &function, |current| -> Result<_, ApiError> {
            let current = current.ok_or_else(|| missing(&arn))?;
            let mut record = current.clone();
            record.event_invoke.remove(&qualifier).ok_or_else(|| missing(&arn))?;
            Ok(record)
        })
        .await?;
    Ok(empty_answer(StatusCode::NO_CONTENT))
}

pub fn list(app: &App, caller: &Caller, name: &str, query: &str) -> Result<Answer, ApiError> {
    let (_, record) = resolve(app, caller, "ListFunctionEventInvokeConfigs", name, None)?;
    let (max_items, marker, _) = crate::versions::paging(query)?;
    let mut v = Violations::default();
    v.range(Some(max_items as i64), "maxItems", 1, 50);
    v.into_result()?;
    let (region, account) = (&app.config.region, caller.account.as_str());
    let items: Vec<(String, Value)> =
        record.event_invoke.iter().map(|(q, c)| (q.clone(), wire(c, &record.qualified_arn(region, account, q)))).collect();
    Ok(crate::versions::page_answer("FunctionEventInvokeConfigs", items, max_items, marker.as_deref()))
}

/// The checks of an event invoke config body that need no server, for the fuzz targets.
#[cfg(feature = "fuzz")]
pub(crate) fn check_body(account: &str, body: &[u8]) {
    let Ok(request) = crate::function::parse_body::<EventInvokeConfigIn>(body) else { return };
    if let Ok((on_success, on_failure)) = request.check_model() {
        for arn in on_success.iter().chain(&on_failure) {
            parse_destination(account, arn);
        }
        request.apply(&mut EventInvokeConfig::default(), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let config = EventInvokeConfig {
            max_retries: Some(1),
            max_age_s: None,
            on_success: None,
            on_failure: Some("arn:aws:sqs:us-east-1:123456789012:q".into()),
            last_modified_ms: 1_700_000_000_500,
        };
        assert_eq!(
            wire(&config, "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST"),
            json!({
                "LastModified": 1_700_000_000.5,
                "FunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST",
                "MaximumRetryAttempts": 1,
                "DestinationConfig": { "OnSuccess": {}, "OnFailure": { "Destination": "arn:aws:sqs:us-east-1:123456789012:q" } },
            })
        );
    }
}

