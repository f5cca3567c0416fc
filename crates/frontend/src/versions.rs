//! Versions and aliases: PublishVersion, ListVersionsByFunction, DeleteFunction
//! of one version, and Create/Get/Update/Delete/ListAliases.
//!
//! Both live in `$LATEST`'s stored record (`FunctionRecord::versions`,
//! `FunctionRecord::aliases`), so they are written through the registry with
//! the function, survive restarts with it and go when it is deleted. A version
//! is an immutable snapshot with a revision of its own: its sandboxes are never
//! shared with `$LATEST`'s.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use ignis_registry::{AliasRecord, FunctionRecord, RegistryError};

use crate::control::{latest_only, new_revision, now, resolve};
use crate::error::ApiError;
use crate::function::{self as f, Violations};
use crate::http::{Answer, empty_answer, json_answer, query_params};
use crate::{App, Caller};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublishVersionIn {
    pub code_sha256: Option<String>,
    pub description: Option<String>,
    pub revision_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RoutingConfigIn {
    pub additional_version_weights: Option<BTreeMap<String, f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasIn {
    pub name: Option<String>,
    pub function_version: Option<String>,
    pub description: Option<String>,
    pub routing_config: Option<RoutingConfigIn>,
    pub revision_id: Option<String>,
}

/// Publishes `$LATEST` as the next version, or returns the last version if
/// nothing changed since it was published.
pub async fn publish(
    app: &App,
    caller: &Caller,
    name: &str,
    description: Option<String>,
    code_sha256: Option<String>,
    revision_id: Option<String>,
) -> Result<FunctionRecord, ApiError> {
    let mut published = None;
    app.registry
        .update(&caller.account, name, |current| -> Result<_, ApiError> {
            let current = current.ok_or_else(|| RegistryError::FunctionNotFound { function: name.to_string() })?;
            if let Some(expected) = revision_id.as_deref().filter(|r| *r != current.revision_id) {
                return Err(ApiError::PreconditionFailed(format!(
                    "The Revision Id provided ({expected}) does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
                )));
            }
            if let Some(sha) = code_sha256.as_deref().filter(|s| *s != current.code_sha256) {
                return Err(ApiError::InvalidParameterValue(format!(
                    "CodeSHA256 ({sha}) is different from current CodeSHA256 in $LATEST ({}). Please try again from the current state.",
                    current.code_sha256
                )));
            }
            let mut record = current.clone();
            match current.versions.last().filter(|last| current.same_as(last)) {
                Some(last) => published = Some(last.clone()),
                None => {
                    let number = current.last_version + 1;
                    let version = current.snapshot(number, description.clone(), new_revision(), now(app));
                    record.last_version = number;
                    record.versions.push(version.clone());
                    published = Some(version);
                }
            }
            Ok(record)
        })
        .await?;
    published.ok_or_else(|| ApiError::Service("publishing left no version".into()))
}

fn unqualified(app: &App, caller: &Caller, action: &str, name: &str) -> Result<Arc<FunctionRecord>, ApiError> {
    let (reference, record) = resolve(app, caller, action, name, None)?;
    if reference.qualifier.is_some() {
        latest_only(&reference)?;
    }
    Ok(record)
}

pub async fn publish_version(app: &Arc<App>, caller: &Caller, name: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let request: PublishVersionIn = f::parse_body(body)?;
    let mut v = Violations::default();
    if let Some(d) = &request.description {
        v.check(d.len() <= 256, d, "description", "Member must have length less than or equal to 256");
    }
    v.into_result()?;
    let record = unqualified(app, caller, "PublishVersion", name)?;
    let version = publish(app, caller, &record.name, request.description, request.code_sha256, request.revision_id).await?;
    Ok(json_answer(StatusCode::CREATED, f::configuration(&version, &app.config.region, &caller.account)))
}

/// A list call's `MaxItems`, `Marker` and all its parameters.
pub(crate) type Paging = (usize, Option<String>, Vec<(String, String)>);

/// `MaxItems` (1..=10000, default 50) and `Marker` of a list call.
pub(crate) fn paging(query: &str) -> Result<Paging, ApiError> {
    let params = query_params(query);
    let param = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let max_items = match param("MaxItems") {
        None => 50,
        Some(text) => {
            let n: i64 = text.parse().map_err(|_| ApiError::InvalidParameterValue(format!("MaxItems {text:?} is not a number")))?;
            let mut v = Violations::default();
            v.range(Some(n), "maxItems", 1, 10000);
            v.into_result()?;
            n as usize
        }
    };
    let marker = param("Marker").filter(|m| !m.is_empty());
    Ok((max_items, marker, params))
}

/// One page of `items` (keyed by their marker), after `marker`.
pub(crate) fn page<T>(items: Vec<(String, T)>, max_items: usize, marker: Option<&str>) -> (Vec<T>, Option<String>) {
    let start = marker.and_then(|m| items.iter().position(|(k, _)| k == m)).map_or(0, |i| i + 1);
    let total = items.len();
    let mut next = None;
    let chosen: Vec<(String, T)> = items.into_iter().skip(start).take(max_items).collect();
    if start + chosen.len() < total {
        next = chosen.last().map(|(k, _)| k.clone());
    }
    (chosen.into_iter().map(|(_, t)| t).collect(), next)
}

pub fn list_versions(app: &App, caller: &Caller, name: &str, query: &str) -> Result<Answer, ApiError> {
    let (max_items, marker, _) = paging(query)?;
    let record = unqualified(app, caller, "ListVersionsByFunction", name)?;
    let (region, account) = (&app.config.region, &caller.account);
    let items: Vec<(String, serde_json::Value)> = std::iter::once(&*record)
        .chain(record.versions.iter())
        .map(|r| (r.version_label(), f::configuration(r, region, account)))
        .collect();
    let (versions, next) = page(items, max_items, marker.as_deref());
    let mut body = json!({ "Versions": versions });
    if let Some(next) = next {
        body["NextMarker"] = json!(next);
    }
    Ok(json_answer(StatusCode::OK, body))
}

/// DeleteFunction with a qualifier: deletes that version, unless an alias uses it.
pub async fn delete_version(app: &App, caller: &Caller, name: &str, qualifier: &str) -> Result<(), ApiError> {
    if qualifier == "$LATEST" {
        return Err(ApiError::InvalidParameterValue("$LATEST version cannot be deleted without deleting the function.".into()));
    }
    let mut removed = None;
    app.registry
        .update(&caller.account, name, |current| -> Result<_, ApiError> {
            let current = current.ok_or_else(|| RegistryError::FunctionNotFound { function: name.to_string() })?;
            if current.aliases.contains_key(qualifier) {
                return Err(ApiError::InvalidParameterValue(
                    "Deletion of aliases is not supported by DeleteFunction: use DeleteAlias".into(),
                ));
            }
            let Some(version) = current.find_version(qualifier) else {
                let function = current.arn(&app.config.region, caller.account.as_str());
                return Err(RegistryError::VersionNotFound { function, version: qualifier.to_string() }.into());
            };
            if let Some((alias, _)) = current.aliases.iter().find(|(_, a)| a.uses(qualifier)) {
                return Err(ApiError::ResourceConflict(format!(
                    "Unable to delete version because the following aliases reference it: [{alias}]"
                )));
            }
            removed = Some(version.clone());
            let mut record = current.clone();
            record.versions.retain(|v| v.version != version.version);
            record.provisioned.remove(qualifier);
            // Its event invoke config and its policy go with it.
            record.event_invoke.remove(qualifier);
            record.policies.remove(qualifier);
            Ok(record)
        })
        .await?;
    if let Some(version) = removed {
        app.invoker.retire(&crate::invoke_api::revision(caller.account.as_str(), &version));
    }
    Ok(())
}

/// Lambda's alias-name rules.
fn check_alias_name(name: &str, v: &mut Violations) {
    v.check(name.len() <= 128, name, "name", "Member must have length less than or equal to 128");
    let ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.bytes().all(|b| b.is_ascii_digit());
    v.check(ok, name, "name", "Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)");
}

fn check_version_text(version: &str, v: &mut Violations) {
    let ok = version == "$LATEST" || (!version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()));
    v.check(ok, version, "functionVersion", "Member must satisfy regular expression pattern: (\\$LATEST|[0-9]+)");
}

/// Checks a version and routing against the function; returns the weights.
fn check_target(
    record: &FunctionRecord,
    function_version: &str,
    routing: Option<&BTreeMap<String, f64>>,
) -> Result<BTreeMap<String, f64>, ApiError> {
    let version_not_found = |version: &str| RegistryError::VersionNotFound { function: record.name.clone(), version: version.to_string() };
    if !record.has_version(function_version) {
        return Err(version_not_found(function_version).into());
    }
    let weights = routing.cloned().unwrap_or_default();
    if weights.is_empty() {
        return Ok(weights);
    }
    if weights.len() > 1 {
        return Err(ApiError::InvalidParameterValue("Number of items in AdditionalVersionWeights cannot be greater than 1".into()));
    }
    if function_version == "$LATEST" {
        return Err(ApiError::InvalidParameterValue("$LATEST is not supported for an alias pointing to more than 1 version".into()));
    }
    for other in weights.keys() {
        if other == function_version {
            return Err(ApiError::InvalidParameterValue(
                "Routing configuration must not name the alias's primary version".into(),
            ));
        }
        if record.find_version(other).is_none() {
            return Err(version_not_found(other).into());
        }
    }
    Ok(weights)
}

fn check_weights(routing: Option<&BTreeMap<String, f64>>, v: &mut Violations) {
    for (version, weight) in routing.into_iter().flatten() {
        let digits = !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit());
        v.check(digits, version, "routingConfig.additionalVersionWeights", "Member must satisfy regular expression pattern: [0-9]+");
        v.check(*weight >= 0.0, weight, "routingConfig.additionalVersionWeights", "Member must have value greater than or equal to 0.0");
        v.check(*weight <= 1.0, weight, "routingConfig.additionalVersionWeights", "Member must have value less than or equal to 1.0");
    }
}

fn alias_not_found(app: &App, caller: &Caller, record: &FunctionRecord, alias: &str) -> ApiError {
    RegistryError::AliasNotFound { function: record.arn(&app.config.region, caller.account.as_str()), alias: alias.to_string() }.into()
}

/// Model checks of the fields CreateAlias and UpdateAlias share; returns the
/// routing weights asked for.
fn check_alias_fields<'a>(request: &'a AliasIn, v: &mut Violations) -> Option<&'a BTreeMap<String, f64>> {
    if let Some(version) = &request.function_version {
        check_version_text(version, v);
    }
    if let Some(d) = &request.description {
        v.check(d.len() <= 256, d, "description", "Member must have length less than or equal to 256");
    }
    let weights = request.routing_config.as_ref().and_then(|r| r.additional_version_weights.as_ref());
    check_weights(weights, v);
    weights
}

pub async fn create_alias(app: &Arc<App>, caller: &Caller, name: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let request: AliasIn = f::parse_body(body)?;
    let mut v = Violations::default();
    v.check(request.name.is_some(), "null", "name", "Member must not be null");
    v.check(request.function_version.is_some(), "null", "functionVersion", "Member must not be null");
    if let Some(alias) = &request.name {
        check_alias_name(alias, &mut v);
    }
    let weights = check_alias_fields(&request, &mut v);
    v.into_result()?;
    let (alias, function_version) = (request.name.clone().unwrap_or_default(), request.function_version.clone().unwrap_or_default());
    let record = unqualified(app, caller, "CreateAlias", name)?;
    let mut created = None;
    let (region, account) = (&app.config.region, &caller.account);
    let (_, written) = app
        .registry
        .update(&caller.account, &record.name, |current| -> Result<_, ApiError> {
            let current = current.ok_or_else(|| RegistryError::FunctionNotFound { function: record.arn(region, account.as_str()) })?;
            if current.aliases.contains_key(&alias) {
                return Err(ApiError::ResourceConflict(format!("Alias already exists: {}", record.qualified_arn(region, account.as_str(), &alias))));
            }
            let weights = check_target(current, &function_version, weights)?;
            let entry = AliasRecord {
                function_version: function_version.clone(),
                description: request.description.clone().unwrap_or_default(),
                weights,
                revision_id: new_revision(),
            };
            created = Some(entry.clone());
            let mut record = current.clone();
            record.aliases.insert(alias.clone(), entry);
            Ok(record)
        })
        .await?;
    let created = created.ok_or_else(|| ApiError::Service("alias not created".into()))?;
    Ok(json_answer(StatusCode::CREATED, f::alias_configuration(&created, &alias, &written, region, account)))
}

pub fn get_alias(app: &App, caller: &Caller, name: &str, alias: &str) -> Result<Answer, ApiError> {
    let record = unqualified(app, caller, "GetAlias", name)?;
    let entry = record.aliases.get(alias).ok_or_else(|| alias_not_found(app, caller, &record, alias))?;
    Ok(json_answer(StatusCode::OK, f::alias_configuration(entry, alias, &record, &app.config.region, &caller.account)))
}

pub async fn update_alias(app: &Arc<App>, caller: &Caller, name: &str, alias: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let request: AliasIn = f::parse_body(body)?;
    let mut v = Violations::default();
    check_alias_fields(&request, &mut v);
    v.into_result()?;
    let record = unqualified(app, caller, "UpdateAlias", name)?;
    let (region, account) = (&app.config.region, &caller.account);
    let mut updated = None;
    let (_, written) = app
        .registry
        .update(&caller.account, &record.name, |current| -> Result<_, ApiError> {
            let current = current.ok_or_else(|| RegistryError::FunctionNotFound { function: record.arn(region, account.as_str()) })?;
            let entry = current.aliases.get(alias).ok_or_else(|| alias_not_found(app, caller, current, alias))?;
            if request.revision_id.as_deref().is_some_and(|r| r != entry.revision_id) {
                return Err(ApiError::PreconditionFailed(
                    "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
                        .into(),
                ));
            }
            let mut entry = entry.clone();
            if let Some(version) = &request.function_version {
                entry.function_version = version.clone();
            }
            if let Some(description) = &request.description {
                entry.description = description.clone();
            }
            // A routing configuration given replaces the old one; none keeps it.
            let routing = match &request.routing_config {
                Some(r) => r.additional_version_weights.clone().unwrap_or_default(),
                None => entry.weights.clone(),
            };
            entry.weights = check_target(current, &entry.function_version, Some(&routing))?;
            entry.revision_id = new_revision();
            updated = Some(entry.clone());
            let mut record = current.clone();
            record.aliases.insert(alias.to_string(), entry);
            Ok(record)
        })
        .await?;
    let updated = updated.ok_or_else(|| ApiError::Service("alias not updated".into()))?;
    Ok(json_answer(StatusCode::OK, f::alias_configuration(&updated, alias, &written, region, account)))
}

pub async fn delete_alias(app: &Arc<App>, caller: &Caller, name: &str, alias: &str) -> Result<Answer, ApiError> {
    let record = unqualified(app, caller, "DeleteAlias", name)?;
    if !record.aliases.contains_key(alias) {
        // Lambda answers a missing alias's deletion with success.
        return Ok(empty_answer(StatusCode::NO_CONTENT));
    }
    app.registry
        .update(&caller.account, &record.name, |current| -> Result<_, ApiError> {
            let current = current.ok_or_else(|| RegistryError::FunctionNotFound { function: record.name.clone() })?;
            let mut record = current.clone();
            record.aliases.remove(alias);
            record.provisioned.remove(alias);
            record.event_invoke.remove(alias);
            record.urls.remove(alias);
            record.policies.remove(alias);
            Ok(record)
        })
        .await?;
    Ok(empty_answer(StatusCode::NO_CONTENT))
}

pub fn list_aliases(app: &App, caller: &Caller, name: &str, query: &str) -> Result<Answer, ApiError> {
    let (max_items, marker, params) = paging(query)?;
    let filter = params.into_iter().find(|(k, _)| k == "FunctionVersion").map(|(_, v)| v);
    let record = unqualified(app, caller, "ListAliases", name)?;
    let items: Vec<(String, serde_json::Value)> = record
        .aliases
        .iter()
        .filter(|(_, a)| filter.as_deref().is_none_or(|v| a.function_version == v))
        .map(|(n, a)| (n.clone(), f::alias_configuration(a, n, &record, &app.config.region, &caller.account)))
        .collect();
    Ok(page_answer("Aliases", items, max_items, marker.as_deref()))
}

/// A list call's answer: one page of `items` under `key`, and `NextMarker` when more follow.
pub(crate) fn page_answer(key: &str, items: Vec<(String, serde_json::Value)>, max_items: usize, marker: Option<&str>) -> Answer {
    let (chosen, next) = page(items, max_items, marker);
    let mut body = json!({ key: chosen });
    if let Some(next) = next {
        body["NextMarker"] = json!(next);
    }
    json_answer(StatusCode::OK, body)
}

/// The checks of an alias body that need no function, for the fuzz targets.
#[cfg(feature = "fuzz")]
pub(crate) fn check_alias_body(body: &[u8]) {
    let Ok(request) = f::parse_body::<AliasIn>(body) else { return };
    let mut v = Violations::default();
    if let Some(alias) = &request.name {
        check_alias_name(alias, &mut v);
    }
    check_alias_fields(&request, &mut v);
    let _ = v.into_result();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_names() {
        for (name, ok) in [("prod", true), ("v-2_x", true), ("123", false), ("", false), ("a b", false), ("$LATEST", false)] {
            let mut v = Violations::default();
            check_alias_name(name, &mut v);
            assert_eq!(v.into_result().is_ok(), ok, "{name}");
        }
    }

    #[test]
    fn paging_by_marker() {
        let items: Vec<(String, u32)> = (1..=5).map(|n| (n.to_string(), n)).collect();
        assert_eq!(page(items.clone(), 2, None), (vec![1, 2], Some("2".to_string())));
        assert_eq!(page(items.clone(), 2, Some("4")), (vec![5], None));
        assert_eq!(page(items, 10, None), (vec![1, 2, 3, 4, 5], None));
    }
}
