//! Lambda layers: PublishLayerVersion, GetLayerVersion(ByArn), ListLayers,
//! ListLayerVersions, DeleteLayerVersion (their records are the registry's
//! `Layers`), and a function's `Layers`: the checks of the list
//! ([`check_layer_list`], [`check_total_size`], pure), the look-up of each
//! version, and the one merged tree (`ignis_store::Store::merge_code`) that
//! is mounted at `/opt`, made when a function's layers are set.
//!
//! A layer's code is a zip uploaded as `Content.ZipFile`, stored as function
//! code is (the same checks, no `bootstrap` required). Only the caller's own
//! layers can be used: Ignis has no layer permissions, so another account's
//! layer is refused.

use std::sync::Arc;

use http::StatusCode;
use ignis_ids::AccountId;
use ignis_registry::{LayerRecord, LayerUse, LayerVersionRecord};
use ignis_store::{CodeHold, CodeRules, MergedCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::function::{self as f, Violations};
use crate::http::{Answer, empty_answer, json_answer, query_params};
use crate::{App, Caller};

/// Most layers a function may use.
pub const MAX_LAYERS: usize = 5;
/// Lambda's limit on a function's code and layers, unzipped, together.
pub const MAX_UNZIPPED_WITH_LAYERS: u64 = 262_144_000;
const NAME_PATTERN: &str =
    "Member must satisfy regular expression pattern: (arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{12}:layer:[a-zA-Z0-9-_]+)|[a-zA-Z0-9-_]+";
const VERSION_ARN_PATTERN: &str =
    "Member must satisfy regular expression pattern: arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+";

/// A layer as a request names it: by name, or by ARN (with its region and account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerName {
    pub name: String,
    pub region: Option<String>,
    pub account: Option<AccountId>,
}

/// A layer version ARN, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionArn {
    pub region: String,
    pub account: AccountId,
    pub name: String,
    pub version: u32,
}

fn is_name(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_part(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `arn:PARTITION:lambda:REGION:ACCOUNT:layer:NAME` and what follows it, read.
fn split_layer_arn(text: &str) -> Option<(String, AccountId, &str, Option<&str>)> {
    let mut parts = text.splitn(8, ':');
    let (Some("arn"), Some(partition), Some("lambda"), Some(region), Some(account), Some("layer"), Some(name)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let account = Some(account).filter(|a| a.len() == 12).and_then(AccountId::parse)?;
    (is_part(partition) && is_part(region) && is_name(name)).then_some((region.to_string(), account, name, parts.next()))
}

/// A `LayerName` path parameter: a name or a layer ARN, at most 140 characters.
pub fn parse_layer_name(text: &str) -> Result<LayerName, ApiError> {
    let parsed = if text.starts_with("arn:") {
        split_layer_arn(text).filter(|(.., rest)| rest.is_none()).map(|(region, account, name, _)| LayerName {
            name: name.to_string(),
            region: Some(region),
            account: Some(account),
        })
    } else {
        is_name(text).then(|| LayerName { name: text.to_string(), region: None, account: None })
    };
    let mut v = Violations::default();
    v.check(text.len() <= 140, text, "layerName", "Member must have length less than or equal to 140");
    v.check(parsed.is_some(), text, "layerName", NAME_PATTERN);
    v.into_result()?;
    parsed.ok_or_else(|| ApiError::Validation(String::new()))
}

/// A layer version ARN, or `None` when `text` is not one (or is longer than 140).
pub fn parse_version_arn(text: &str) -> Option<VersionArn> {
    if text.len() > 140 {
        return None;
    }
    let (region, account, name, version) = split_layer_arn(text)?;
    let version = version.filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))?.parse().ok()?;
    Some(VersionArn { region, account, name: name.to_string(), version })
}

/// Checks a function's `Layers` as Lambda does, in order: the model (each
/// a layer version ARN), at most [`MAX_LAYERS`], only `account`'s own
/// layers, each layer once. Answers the ARNs read.
pub fn check_layer_list(arns: &[String], account: &AccountId) -> Result<Vec<VersionArn>, ApiError> {
    let parsed: Vec<Option<VersionArn>> = arns.iter().map(|a| parse_version_arn(a)).collect();
    let mut v = Violations::default();
    v.check(parsed.iter().all(Option::is_some), format!("[{}]", arns.join(", ")), "layers", VERSION_ARN_PATTERN);
    v.into_result()?;
    let parsed: Vec<VersionArn> = parsed.into_iter().flatten().collect();
    if parsed.len() > MAX_LAYERS {
        return Err(ApiError::InvalidParameterValue(format!("Cannot reference more than {MAX_LAYERS} layers.")));
    }
    if let Some((arn, _)) = arns.iter().zip(&parsed).find(|(_, p)| p.account != *account) {
        return Err(ApiError::InvalidParameterValue(format!(
            "Layer version {arn} belongs to another account: cross-account layer permissions are not supported."
        )));
    }
    for (i, a) in parsed.iter().enumerate() {
        if let Some(b) = parsed[..i].iter().find(|b| b.name == a.name && b.region == a.region) {
            return Err(ApiError::InvalidParameterValue(if a.version == b.version {
                format!("Duplicate layer version ARN {} in Layers.", arns[i])
            } else {
                format!(
                    "Two different versions of the same layer are not allowed to be referenced in the same function. {} references version {} and version {}.",
                    ignis_ids::arn::layer(&a.region, a.account.as_str(), &a.name),
                    b.version,
                    a.version
                )
            }));
        }
    }
    Ok(parsed)
}

/// Refuses code of `code_unzipped` bytes with layers of `layers` bytes each
/// (unzipped) over [`MAX_UNZIPPED_WITH_LAYERS`] together.
pub fn check_total_size(code_unzipped: u64, layers: impl IntoIterator<Item = u64>) -> Result<(), ApiError> {
    let total = layers.into_iter().fold(code_unzipped, u64::saturating_add);
    if total > MAX_UNZIPPED_WITH_LAYERS {
        return Err(ApiError::InvalidParameterValue(format!(
            "Function code combined with layers exceeds the maximum allowed size of {MAX_UNZIPPED_WITH_LAYERS} bytes. The actual size is {total} bytes."
        )));
    }
    Ok(())
}

/// A function's layers, set: what its record keeps of each, and the merged `/opt` tree.
pub struct FunctionLayers {
    pub uses: Vec<LayerUse>,
    pub opt: Option<MergedCode>,
}

impl FunctionLayers {
    /// Sets them on `record` (none: removes its layers).
    pub fn apply(&self, record: &mut ignis_registry::FunctionRecord) {
        record.layers = self.uses.clone();
        record.opt_sha256_hex = self.opt.as_ref().map(|o| o.hold.sha256_hex().to_string()).unwrap_or_default();
        record.opt = self.opt.as_ref().map(|o| ignis_registry::CodeRef::new(o.hold.clone())).unwrap_or_default();
    }
}

/// The layers `arns` name for a function of `caller` whose code unpacks to
/// `code_unzipped` bytes: checked, looked up, and merged into one tree (off
/// the async runtime's threads).
pub async fn function_layers(app: &App, caller: &Caller, arns: &[String], code_unzipped: u64) -> Result<FunctionLayers, ApiError> {
    let parsed = check_layer_list(arns, &caller.account)?;
    let mut uses = Vec::with_capacity(parsed.len());
    let mut holds: Vec<CodeHold> = Vec::with_capacity(parsed.len());
    for (arn, layer) in arns.iter().zip(&parsed) {
        let found = Some(layer)
            .filter(|l| l.region == app.config.region)
            .and_then(|l| app.layers.get(&caller.account, &l.name))
            .and_then(|record| record.version(layer.version).cloned())
            .and_then(|version| Some((version.code.hold()?.clone(), version)));
        let Some((hold, version)) = found else {
            return Err(ApiError::InvalidParameterValue(format!("Layer version {arn} does not exist.")));
        };
        uses.push(LayerUse { arn: arn.clone(), code_size: version.code_size, unzipped_size: version.unzipped_size });
        holds.push(hold);
    }
    check_total_size(code_unzipped, uses.iter().map(|u| u.unzipped_size))?;
    if holds.is_empty() {
        return Ok(FunctionLayers { uses, opt: None });
    }
    let store = app.store.clone();
    let merged = tokio::task::spawn_blocking(move || store.merge_code(&holds, &CodeRules::default()))
        .await
        .map_err(|e| ApiError::Service(e.to_string()))??;
    Ok(FunctionLayers { uses, opt: Some(merged) })
}

/// PublishLayerVersion's body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublishLayerVersion {
    pub description: Option<String>,
    pub content: Option<ContentIn>,
    pub compatible_runtimes: Option<Vec<String>>,
    pub license_info: Option<String>,
    pub compatible_architectures: Option<Vec<String>>,
}

/// `Content` of PublishLayerVersion.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContentIn {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    #[serde(rename = "S3Key")]
    pub s3_key: Option<String>,
    #[serde(rename = "S3ObjectVersion")]
    pub s3_object_version: Option<String>,
}

impl PublishLayerVersion {
    /// The model's checks, added to `v`.
    fn check_model(&self, v: &mut Violations) {
        v.check(self.content.is_some(), "null", "content", "Member must not be null");
        if let Some(d) = &self.description {
            v.check(d.chars().count() <= 256, d, "description", "Member must have length less than or equal to 256");
        }
        if let Some(l) = &self.license_info {
            v.check(l.chars().count() <= 512, l, "licenseInfo", "Member must have length less than or equal to 512");
        }
        if let Some(runtimes) = &self.compatible_runtimes {
            let text = format!("[{}]", runtimes.join(", "));
            v.check(runtimes.len() <= 15, &text, "compatibleRuntimes", "Member must have length less than or equal to 15");
            let known = |r: &String| f::RUNTIMES.contains(&r.as_str());
            v.check(runtimes.iter().all(known), &text, "compatibleRuntimes", "Member must satisfy enum value set");
        }
        if let Some(architectures) = &self.compatible_architectures {
            let text = format!("[{}]", architectures.join(", "));
            v.check(architectures.len() <= 2, &text, "compatibleArchitectures", "Member must have length less than or equal to 2");
            v.check(
                architectures.iter().all(|a| a == "x86_64" || a == "arm64"),
                &text,
                "compatibleArchitectures",
                "Member must satisfy enum value set: [x86_64, arm64]",
            );
        }
    }
}

/// The caller's layer a request names (another account's is denied `action`).
fn own_layer(app: &App, caller: &Caller, action: &str, text: &str) -> Result<String, ApiError> {
    let layer = parse_layer_name(text)?;
    if let Some(account) = layer.account.as_ref().filter(|a| **a != caller.account) {
        let region = layer.region.as_deref().unwrap_or(&app.config.region);
        return Err(caller.denied(&format!("lambda:{action}"), &ignis_ids::arn::layer(region, account.as_str(), &layer.name)));
    }
    if layer.region.as_deref().is_some_and(|r| r != app.config.region) {
        return Err(not_found());
    }
    Ok(layer.name)
}

fn not_found() -> ApiError {
    ApiError::ResourceNotFound("The resource you requested does not exist.".into())
}

/// A `VersionNumber` path parameter.
fn version_number(text: &str) -> Result<u32, ApiError> {
    text.parse().map_err(|_| {
        ApiError::Validation(format!("1 validation error detected: Value '{text}' at 'versionNumber' failed to satisfy constraint: Member must be a number"))
    })
}

/// Lambda's `LayerVersionsListItem` of `version` of `layer`.
fn list_item(app: &App, caller: &Caller, layer: &str, version: &LayerVersionRecord) -> Value {
    let mut item = json!({
        "LayerVersionArn": ignis_ids::arn::layer_version(&app.config.region, caller.account.as_str(), layer, version.version),
        "Version": version.version,
        "Description": version.description,
        "CreatedDate": f::last_modified(version.created_ms),
        "CompatibleRuntimes": version.compatible_runtimes,
        "CompatibleArchitectures": version.compatible_architectures,
    });
    if let Some(license) = &version.license_info {
        item["LicenseInfo"] = json!(license);
    }
    item
}

/// PublishLayerVersion's and GetLayerVersion's answer.
fn layer_version(app: &App, caller: &Caller, layer: &str, version: &LayerVersionRecord) -> Value {
    let mut body = list_item(app, caller, layer, version);
    body["LayerArn"] = json!(ignis_ids::arn::layer(&app.config.region, caller.account.as_str(), layer));
    body["Content"] = json!({ "CodeSha256": version.code_sha256, "CodeSize": version.code_size });
    body
}

pub async fn publish_layer_version(app: &Arc<App>, caller: &Caller, layer: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let request: PublishLayerVersion = f::parse_body(body)?;
    let name = own_layer(app, caller, "PublishLayerVersion", layer)?;
    let mut v = Violations::default();
    request.check_model(&mut v);
    v.into_result()?;
    let content = request.content.unwrap_or_default();
    if content.s3_bucket.is_some() || content.s3_key.is_some() || content.s3_object_version.is_some() {
        return Err(ApiError::InvalidParameterValue("Ignis has no S3: upload the layer's content as ZipFile".into()));
    }
    let Some(zip) = content.zip_file else {
        return Err(ApiError::InvalidParameterValue("Please provide a source for the layer's content: ZipFile.".into()));
    };
    let code = crate::control::store_code(app, &zip, CodeRules::default()).await?;
    let record = LayerVersionRecord {
        version: 0,
        description: request.description.unwrap_or_default(),
        license_info: request.license_info,
        compatible_runtimes: request.compatible_runtimes.unwrap_or_default(),
        compatible_architectures: request.compatible_architectures.unwrap_or_default(),
        code_sha256_hex: code.sha256_hex(),
        code_sha256: code.sha256_base64(),
        code_size: code.zip_size,
        unzipped_size: code.unzipped_size,
        created_ms: crate::control::now(app),
        code: ignis_registry::CodeRef::new(code.hold.clone()),
    };
    let published = app.layers.publish(&caller.account, &name, record).await?;
    Ok(json_answer(StatusCode::CREATED, layer_version(app, caller, &name, &published)))
}

/// The caller's version `version` of layer `name`, or Lambda's not found.
fn find_version(app: &App, caller: &Caller, name: &str, version: u32) -> Result<LayerVersionRecord, ApiError> {
    app.layers.get(&caller.account, name).and_then(|r| r.version(version).cloned()).ok_or_else(not_found)
}

pub fn get_layer_version(app: &App, caller: &Caller, layer: &str, version: &str) -> Result<Answer, ApiError> {
    let name = own_layer(app, caller, "GetLayerVersion", layer)?;
    let found = find_version(app, caller, &name, version_number(version)?)?;
    Ok(json_answer(StatusCode::OK, layer_version(app, caller, &name, &found)))
}

/// GetLayerVersionByArn: `?find=LayerVersion&Arn=...`.
pub fn get_layer_version_by_arn(app: &App, caller: &Caller, query: &str) -> Result<Answer, ApiError> {
    let arn = query_params(query).into_iter().find(|(k, _)| k == "Arn").map(|(_, v)| v).unwrap_or_default();
    let Some(parsed) = parse_version_arn(&arn) else {
        let mut v = Violations::default();
        v.check(false, &arn, "arn", VERSION_ARN_PATTERN);
        return v.into_result().map(|()| unreachable!());
    };
    if parsed.account != caller.account {
        return Err(caller.denied("lambda:GetLayerVersion", &arn));
    }
    if parsed.region != app.config.region {
        return Err(not_found());
    }
    let found = find_version(app, caller, &parsed.name, parsed.version)?;
    Ok(json_answer(StatusCode::OK, layer_version(app, caller, &parsed.name, &found)))
}

pub async fn delete_layer_version(app: &Arc<App>, caller: &Caller, layer: &str, version: &str) -> Result<Answer, ApiError> {
    let name = own_layer(app, caller, "DeleteLayerVersion", layer)?;
    // Deleting a version that does not exist succeeds, as in Lambda.
    app.layers.delete_version(&caller.account, &name, version_number(version)?).await?;
    Ok(empty_answer(StatusCode::NO_CONTENT))
}

/// The `CompatibleRuntime` and `CompatibleArchitecture` filters of a list call, checked.
fn filters(params: &[(String, String)]) -> Result<impl Fn(&LayerVersionRecord) -> bool + use<>, ApiError> {
    let param = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let (runtime, architecture) = (param("CompatibleRuntime"), param("CompatibleArchitecture"));
    let mut v = Violations::default();
    if let Some(r) = &runtime {
        let known = f::RUNTIMES.contains(&r.as_str());
        v.check(known, r, "compatibleRuntime", "Member must satisfy enum value set");
    }
    if let Some(a) = &architecture {
        v.check(a == "x86_64" || a == "arm64", a, "compatibleArchitecture", "Member must satisfy enum value set: [x86_64, arm64]");
    }
    v.into_result()?;
    Ok(move |version: &LayerVersionRecord| {
        runtime.as_ref().is_none_or(|r| version.compatible_runtimes.contains(r))
            && architecture.as_ref().is_none_or(|a| version.compatible_architectures.contains(a))
    })
}

/// ListLayers: each of the caller's layers with its newest version that matches the filters.
pub fn list_layers(app: &App, caller: &Caller, query: &str) -> Result<Answer, ApiError> {
    let (max_items, marker, params) = crate::versions::paging(query)?;
    let matches = filters(&params)?;
    let layers: Vec<Arc<LayerRecord>> = app.layers.list(&caller.account);
    let items: Vec<(String, Value)> = layers
        .iter()
        .filter_map(|layer| {
            let latest = layer.versions.iter().rev().find(|v| matches(v))?;
            let item = json!({
                "LayerName": layer.name,
                "LayerArn": ignis_ids::arn::layer(&app.config.region, caller.account.as_str(), &layer.name),
                "LatestMatchingVersion": list_item(app, caller, &layer.name, latest),
            });
            Some((layer.name.clone(), item))
        })
        .collect();
    Ok(paged("Layers", items, max_items, marker))
}

/// One page (at most 50) of `items`, keyed by their markers, as `{field: [...], NextMarker}`.
fn paged(field: &str, items: Vec<(String, Value)>, max_items: usize, marker: Option<String>) -> Answer {
    let (page, next) = crate::versions::page(items, max_items.min(50), marker.as_deref());
    let mut body = json!({ field: page });
    if let Some(next) = next {
        body["NextMarker"] = json!(next);
    }
    json_answer(StatusCode::OK, body)
}

/// ListLayerVersions: a layer's versions that match the filters, newest first.
pub fn list_layer_versions(app: &App, caller: &Caller, layer: &str, query: &str) -> Result<Answer, ApiError> {
    let name = own_layer(app, caller, "ListLayerVersions", layer)?;
    let (max_items, marker, params) = crate::versions::paging(query)?;
    let matches = filters(&params)?;
    let record = app.layers.get(&caller.account, &name);
    let items: Vec<(String, Value)> = record
        .iter()
        .flat_map(|r| r.versions.iter().rev())
        .filter(|v| matches(v))
        .map(|v| (v.version.to_string(), list_item(app, caller, &name, v)))
        .collect();
    Ok(paged("LayerVersions", items, max_items, marker))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "123456789012";

    fn arn(name: &str, version: u32) -> String {
        ignis_ids::arn::layer_version("us-east-1", ME, name, version)
    }

    fn check(arns: &[String]) -> Result<Vec<VersionArn>, ApiError> {
        check_layer_list(arns, &AccountId::new(ME))
    }

    #[test]
    fn layer_names_and_arns() {
        assert_eq!(parse_layer_name("my-layer_1").unwrap(), LayerName { name: "my-layer_1".into(), region: None, account: None });
        let by_arn = parse_layer_name("arn:aws:lambda:eu-west-1:123456789012:layer:lib").unwrap();
        assert_eq!((by_arn.name.as_str(), by_arn.region.as_deref()), ("lib", Some("eu-west-1")));
        assert_eq!(by_arn.account, Some(AccountId::new(ME)));
        for bad in ["", "a b", "a:b", "arn:aws:lambda:r:123:layer:x", "arn:aws:lambda:r:123456789012:layer:x:1", &"x".repeat(141)] {
            assert_eq!(parse_layer_name(bad).unwrap_err().error_type(), "ValidationException", "{bad}");
        }
        let parsed = parse_version_arn(&arn("lib", 7)).unwrap();
        assert_eq!(parsed, VersionArn { region: "us-east-1".into(), account: AccountId::new(ME), name: "lib".into(), version: 7 });
        for bad in ["arn:aws:lambda:us-east-1:123456789012:layer:lib", "arn:aws:lambda:us-east-1:123456789012:layer:lib:x",
            "arn:aws:lambda:us-east-1:123456789012:layer:lib:", "arn:aws:lambda:us-east-1:123456789012:function:lib:1",
            "arn:aws:lambda:us-east-1:12345678901:layer:lib:1", "arn:aws:lambda:us-east-1:123456789012:layer:lib:1:2"]
        {
            assert_eq!(parse_version_arn(bad), None, "{bad}");
        }
    }

    #[test]
    fn layer_lists() {
        assert_eq!(check(&[]).unwrap(), Vec::new());
        let five: Vec<String> = (1..=5).map(|n| arn(&format!("l{n}"), 1)).collect();
        assert_eq!(check(&five).unwrap().len(), 5);
        let six: Vec<String> = (1..=6).map(|n| arn(&format!("l{n}"), 1)).collect();
        assert_eq!(check(&six).unwrap_err().message(), "Cannot reference more than 5 layers.");
        let err = check(&["nonsense".to_string()]).unwrap_err();
        assert_eq!(err.error_type(), "ValidationException");
        let other = ignis_ids::arn::layer_version("us-east-1", "210987654321", "lib", 1);
        let err = check(&[arn("a", 1), other]).unwrap_err();
        assert_eq!(err.error_type(), "InvalidParameterValueException");
        assert!(err.message().contains("cross-account layer permissions"), "{}", err.message());
        let err = check(&[arn("a", 1), arn("a", 1)]).unwrap_err();
        assert!(err.message().starts_with("Duplicate layer version ARN"), "{}", err.message());
        let err = check(&[arn("a", 1), arn("b", 1), arn("a", 2)]).unwrap_err();
        assert!(err.message().starts_with("Two different versions of the same layer"), "{}", err.message());
        assert!(err.message().ends_with("references version 1 and version 2."), "{}", err.message());
        // The model is checked before the count.
        let mut seven = six.clone();
        seven.push("bad".into());
        assert_eq!(check(&seven).unwrap_err().error_type(), "ValidationException");
    }

    #[test]
    fn total_size() {
        assert!(check_total_size(MAX_UNZIPPED_WITH_LAYERS, []).is_ok());
        assert!(check_total_size(MAX_UNZIPPED_WITH_LAYERS - 10, [5, 5]).is_ok());
        let err = check_total_size(MAX_UNZIPPED_WITH_LAYERS - 10, [5, 6]).unwrap_err();
        assert_eq!(err.error_type(), "InvalidParameterValueException");
        assert_eq!(
            err.message(),
            "Function code combined with layers exceeds the maximum allowed size of 262144000 bytes. The actual size is 262144001 bytes."
        );
        assert!(check_total_size(u64::MAX, [u64::MAX]).is_err());
    }
}
