//! The control plane: create, read, list, change and delete functions, of
//! package type `Zip` (the code is a zip stored in the code store) or `Image`
//! (a container image of the caller's repositories, see `function_image`).
//! A function's package type never changes.

use std::sync::Arc;

use base64::Engine;
use http::StatusCode;
use ignis_store::CodeRules;
use serde_json::json;

use crate::{App, Caller};
use crate::error::ApiError;
use crate::function::{self as f, Violations};
use ignis_registry::{CodeRef, FunctionRecord, FunctionRef, PackageType, RegistryError};
use crate::http::{Answer, empty_answer, json_answer, query_params};

/// Largest CreateFunction / UpdateFunctionCode request, as in Lambda.
pub const MAX_CODE_REQUEST: usize = 70_167_211;
/// Largest zip uploaded directly, as in Lambda.
const MAX_ZIP: usize = 50 * 1024 * 1024;

/// A function named in a request (`text`, with the `Qualifier` parameter if
/// any), parsed and checked: the two qualifiers must agree, and name `$LATEST`
/// or a version or alias by Lambda's pattern.
pub(crate) fn reference(text: &str, qualifier: Option<&str>) -> Result<FunctionRef, ApiError> {
    let mut reference = f::parse_function_ref(text, "functionName")?;
    let qualifier = match (reference.qualifier.as_deref(), qualifier) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::InvalidParameterValue(
                "The derived qualifier from the function name does not match the specified qualifier.".into(),
            ));
        }
        (a, b) => a.or(b).map(str::to_string),
    };
    if let Some(q) = qualifier.as_deref().filter(|q| *q != "$LATEST" && !f::valid_name(q)) {
        let mut v = Violations::default();
        v.check(false, q, "qualifier", "Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)");
        v.into_result()?;
    }
    reference.qualifier = qualifier;
    Ok(reference)
}

/// Resolves a function named in a request to the caller's function
/// (`$LATEST`'s record, which carries its versions and aliases), or says it
/// does not exist (or, named by another account's ARN, that `action` — an IAM
/// action name such as `GetFunction` — is denied). The reference returned
/// carries the qualifier of the name or of the `Qualifier` parameter, which
/// must name `$LATEST`, a published version or an alias.
pub fn resolve(
    app: &App,
    caller: &Caller,
    action: &str,
    text: &str,
    qualifier: Option<&str>,
) -> Result<(FunctionRef, Arc<FunctionRecord>), ApiError> {
    let reference = reference(text, qualifier)?;
    let record = app.registry.resolve(&caller.account, &app.config.region, action, &reference)?;
    Ok((reference, record))
}

/// [`resolve`], then the record the qualifier names: `$LATEST`, a version, or
/// the version an alias sends this call to (a weighted random choice).
pub fn resolve_version(
    app: &App,
    caller: &Caller,
    action: &str,
    text: &str,
    qualifier: Option<&str>,
) -> Result<(FunctionRef, Arc<FunctionRecord>), ApiError> {
    let reference = reference(text, qualifier)?;
    let record = app.registry.resolve_version(&caller.account, &app.config.region, action, &reference, random_unit())?;
    Ok((reference, record))
}

/// A uniformly random number in `0..1`.
pub(crate) fn random_unit() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// Refuses a qualifier other than `$LATEST` for operations on `$LATEST` only.
pub fn latest_only(reference: &FunctionRef) -> Result<(), ApiError> {
    match reference.qualifier.as_deref() {
        None | Some("$LATEST") => Ok(()),
        Some(q) => Err(ApiError::InvalidParameterValue(format!(
            "Only $LATEST can be changed: versions are immutable and aliases are changed with UpdateAlias (qualifier {q})"
        ))),
    }
}

/// Milliseconds since the Unix epoch on the server's clock.
pub fn now(app: &App) -> i64 {
    app.config.clock.now_ms() as i64
}

pub(crate) fn qualifier_param(query: &str) -> Option<String> {
    query_params(query).into_iter().find(|(k, _)| k == "Qualifier").map(|(_, v)| v)
}

/// The rules a function's code is stored by.
fn code_rules(runtime: &str) -> CodeRules {
    CodeRules { require_bootstrap: runtime.starts_with("provided"), ..CodeRules::default() }
}

/// Decodes and stores a zip (a function's code or a layer's): validated, unpacked once, content-addressed.
pub(crate) async fn store_code(app: &App, zip_base64: &str, rules: CodeRules) -> Result<ignis_store::Code, ApiError> {
    let zip = base64::engine::general_purpose::STANDARD
        .decode(zip_base64.trim())
        .map_err(|_| ApiError::InvalidRequestContent("Could not parse request body into json: ZipFile is not valid base64".into()))?;
    if zip.len() > MAX_ZIP {
        return Err(ApiError::RequestEntityTooLarge(format!("Zipped file size must be smaller than {MAX_ZIP} bytes")));
    }
    let store = app.store.clone();
    tokio::task::spawn_blocking(move || store.put_code(&zip, &rules))
        .await
        .map_err(|e| ApiError::Service(e.to_string()))?
        .map_err(ApiError::from)
}

/// The zip of a zip function's code (`image`: an `ImageUri` was given too,
/// which Lambda refuses with `image_refusal`).
fn code_source<'a>(zip_file: Option<&'a str>, s3: bool, image: bool, image_refusal: &str) -> Result<&'a str, ApiError> {
    if image {
        return Err(ApiError::InvalidParameterValue(image_refusal.into()));
    }
    if s3 {
        return Err(ApiError::InvalidParameterValue("Ignis has no S3: upload the code as ZipFile".into()));
    }
    zip_file.ok_or_else(|| ApiError::InvalidParameterValue("Please provide a source for function code.".into()))
}

pub fn new_revision() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub async fn create_function(app: &Arc<App>, caller: &Caller, body: &[u8]) -> Result<Answer, ApiError> {
    let request: f::CreateFunction = f::parse_body(body)?;
    let name_text = request.function_name.clone().unwrap_or_default();
    let mut v = Violations::default();
    v.check(request.function_name.is_some(), "null", "functionName", "Member must not be null");
    request.settings.check_model(&mut v);
    request.absent.check_model(&mut v);
    if let Some(image_config) = &request.image_config {
        image_config.check_model(&mut v);
    }
    v.into_result()?;
    request.absent.check_values()?;
    if let Some(code) = &request.code {
        crate::absent_features::no_source_kms(code.source_kms_key_arn.as_deref())?;
    }
    let reference = f::parse_function_ref(&name_text, "functionName")?;
    if let Some(other) = reference.account.as_ref().filter(|a| **a != caller.account) {
        let region = reference.region.as_deref().unwrap_or(&app.config.region);
        let resource = ignis_ids::arn::function(region, other.as_str(), &reference.name);
        return Err(caller.denied("lambda:CreateFunction", &resource));
    }
    if reference.qualifier.is_some() {
        return Err(ApiError::InvalidParameterValue("FunctionName must name a function of this account, without a qualifier".into()));
    }
    let name = reference.name;
    let tags = request.tags.clone().unwrap_or_default();
    crate::tags_api::check_tags(&tags)?;
    match request.package_type.as_deref() {
        None | Some("Zip") => {}
        Some("Image") => return create_image_function(app, caller, name, request, tags).await,
        Some(other) => {
            let mut v = Violations::default();
            v.check(false, other, "packageType", "Member must satisfy enum value set: [Zip, Image]");
            return v.into_result().map(|()| unreachable!());
        }
    }
    if request.image_config.is_some() {
        return Err(image_config_on_zip());
    }
    let Some(runtime) = request.settings.runtime.clone() else {
        return Err(ApiError::InvalidParameterValue(
            "Runtime and Handler are mandatory parameters for functions created with deployment packages.".into(),
        ));
    };
    request.settings.check_values()?;
    let base = installed_base(app, &runtime)?;
    crate::event_config::check_dead_letter(app, caller, request.settings.dead_letter_target())?;
    let architecture = f::check_architectures(request.architectures.as_deref())?;
    let code_in = request.code.unwrap_or_default();
    let zip = code_source(
        code_in.zip_file.as_deref(),
        code_in.names_s3(),
        code_in.image_uri.is_some(),
        "Please don't provide ImageUri when the intended function PackageType is Zip.",
    )?;
    refuse_existing(app, caller, &name)?;
    let vpc = networks_given(app, caller, &request.settings)?;
    let layer_arns = request.layers.unwrap_or_default();
    crate::layers_api::check_layer_list(&layer_arns, &caller.account)?;
    let code = store_code(app, zip, code_rules(&runtime)).await?;
    let layers = crate::layers_api::function_layers(app, caller, &layer_arns, code.unzipped_size).await?;
    let mut record = FunctionRecord {
        architecture,
        code_sha256_hex: code.sha256_hex(),
        code_sha256: code.sha256_base64(),
        code_size: code.zip_size,
        code_unzipped_size: code.unzipped_size,
        last_modified_ms: now(app),
        revision_id: new_revision(),
        code: CodeRef::new(code.hold.clone()),
        base: Some(base),
        vpc: vpc.flatten(),
        tags,
        ..FunctionRecord::new(name.clone(), runtime)
    };
    layers.apply(&mut record);
    request.settings.apply(&mut record)?;
    store_new(app, caller, record, request.publish == Some(true)).await
}

/// The base zip functions of `runtime` run on now: the installed runtime's, or Lambda's kind of error for a runtime
/// this Ignis does not run, naming the commands that install it.
fn installed_base(app: &App, runtime: &str) -> Result<ignis_registry::RuntimeRecord, ApiError> {
    app.runtimes.get(runtime).map(|installed| (*installed).clone()).ok_or_else(|| {
        ApiError::InvalidParameterValue(format!(
            "The runtime parameter of {runtime} is not installed on this Ignis: its administrator installs it with \
             `ignis runtime build {runtime}`, or imports an image of it with `ignis runtime import {runtime} PATH`"
        ))
    })
}

/// A zip function's base after a change to its code or configuration: its runtime's as installed now, or, if that
/// runtime is not installed any more, the one it had (a changed runtime must be installed: `installed_base`).
fn refreshed_base(app: &App, record: &FunctionRecord) -> Option<ignis_registry::RuntimeRecord> {
    match record.package_type() {
        PackageType::Image => None,
        PackageType::Zip => app.runtimes.get(&record.runtime).map(|installed| (*installed).clone()).or_else(|| record.base.clone()),
    }
}

/// The networks a request's `VpcConfig` attaches the function to (`Some(None)`: detached), or `None` when it gives
/// none (see `vpc_config`).
fn networks_given(
    app: &App,
    caller: &Caller,
    settings: &f::Settings,
) -> Result<Option<Option<ignis_registry::VpcRecord>>, ApiError> {
    settings.vpc_config.as_ref().map(|config| crate::vpc_config::attach(app, caller, config)).transpose()
}

/// Refuses to create `name` when the caller has a function of that name.
fn refuse_existing(app: &App, caller: &Caller, name: &str) -> Result<(), ApiError> {
    match app.registry.get(&caller.account, name) {
        Some(_) => Err(RegistryError::FunctionExists { name: name.to_string() }.into()),
        None => Ok(()),
    }
}

/// Stores a new function's `$LATEST` (unless one appeared meanwhile), publishes
/// it as version 1 if asked, and answers CreateFunction.
async fn store_new(app: &Arc<App>, caller: &Caller, record: FunctionRecord, publish: bool) -> Result<Answer, ApiError> {
    let name = record.name.clone();
    let (_, record) = app
        .registry
        .update(&caller.account, &name, |current| match current {
            Some(_) => Err(ApiError::from(RegistryError::FunctionExists { name: name.clone() })),
            None => {
                crate::vpc_config::still_there(app, caller, record.vpc.as_ref())?;
                Ok(record)
            }
        })
        .await?;
    if publish {
        let version = crate::versions::publish(app, caller, &name, None, None, None).await?;
        return Ok(json_answer(StatusCode::CREATED, f::configuration(&version, &app.config.region, &caller.account)));
    }
    Ok(json_answer(StatusCode::CREATED, f::configuration(&record, &app.config.region, &caller.account)))
}

/// Lambda's refusal of `ImageConfig` for a zip function.
fn image_config_on_zip() -> ApiError {
    ApiError::InvalidParameterValue("ImageConfig is only for functions whose PackageType is Image.".into())
}

/// CreateFunction of `PackageType: Image`: the code is `Code.ImageUri`, an
/// image of the caller's repositories, resolved to its digest now; `Runtime`,
/// `Handler`, `Layers` and zip code are refused, as Lambda refuses them.
async fn create_image_function(
    app: &Arc<App>,
    caller: &Caller,
    name: String,
    request: f::CreateFunction,
    tags: std::collections::BTreeMap<String, String>,
) -> Result<Answer, ApiError> {
    if request.settings.runtime.is_some() || request.settings.handler.is_some() || request.layers.is_some() {
        return Err(crate::function_image::zip_settings_refused());
    }
    let code = request.code.unwrap_or_default();
    if code.zip_file.is_some() || code.names_s3() {
        return Err(ApiError::InvalidParameterValue(
            "Please don't provide ZipFile, S3Bucket or S3Key when the intended function PackageType is Image: name the image with ImageUri.".into(),
        ));
    }
    let Some(uri) = code.image_uri else {
        return Err(ApiError::InvalidParameterValue("Please provide ImageUri when the intended function PackageType is Image.".into()));
    };
    request.settings.check_values()?;
    crate::event_config::check_dead_letter(app, caller, request.settings.dead_letter_target())?;
    // x86_64 only, as the registry accepts only linux/amd64 images: the two always match.
    let architecture = f::check_architectures(request.architectures.as_deref())?;
    refuse_existing(app, caller, &name)?;
    let vpc = networks_given(app, caller, &request.settings)?;
    let image = crate::function_image::resolve(app, caller, &uri).await?;
    let mut record = FunctionRecord {
        handler: String::new(),
        architecture,
        code_sha256: crate::function_image::code_sha256(&image),
        code_size: 0,
        last_modified_ms: now(app),
        revision_id: new_revision(),
        image: Some(image),
        image_config: request.image_config.map(f::ImageConfigIn::into_override).unwrap_or_default(),
        vpc: vpc.flatten(),
        tags,
        ..FunctionRecord::new(name, "")
    };
    request.settings.apply(&mut record)?;
    store_new(app, caller, record, request.publish == Some(true)).await
}

/// GetFunction: the configuration, the code (`Location`, a link valid for ten minutes, for a zip function: see
/// `code_link`), the reservation and the function's tags; `host` is the `Host` the request was sent to.
pub fn get_function(app: &App, caller: &Caller, name: &str, query: &str, host: &str) -> Result<Answer, ApiError> {
    let (_, record) = resolve_version(app, caller, "GetFunction", name, qualifier_param(query).as_deref())?;
    let code = match &record.image {
        Some(image) => json!({
            "RepositoryType": "ECR",
            "ImageUri": image.image_uri,
            "ResolvedImageUri": image.resolved_image_uri,
        }),
        None => json!({
            "RepositoryType": "S3",
            "Location": crate::code_link::location(app, &caller.account, &record.code_sha256_hex, host),
        }),
    };
    let mut body = json!({
        "Configuration": f::configuration(&record, &app.config.region, &caller.account),
        "Code": code,
    });
    if let Some(reserved) = record.reserved_concurrency {
        body["Concurrency"] = json!({ "ReservedConcurrentExecutions": reserved });
    }
    // The tags are the function's (`$LATEST`'s record), whichever version was asked for.
    let tags = app.registry.get(&caller.account, &record.name).map(|latest| latest.tags.clone()).unwrap_or_default();
    if !tags.is_empty() {
        body["Tags"] = json!(tags);
    }
    Ok(json_answer(StatusCode::OK, body))
}

pub fn get_function_configuration(app: &App, caller: &Caller, name: &str, query: &str) -> Result<Answer, ApiError> {
    let (_, record) = resolve_version(app, caller, "GetFunctionConfiguration", name, qualifier_param(query).as_deref())?;
    Ok(json_answer(StatusCode::OK, f::configuration(&record, &app.config.region, &caller.account)))
}

/// ListFunctions: `$LATEST` of each function, or with `FunctionVersion=ALL`
/// every published version too (each after its `$LATEST`).
pub fn list_functions(app: &App, caller: &Caller, query: &str) -> Result<Answer, ApiError> {
    let (max_items, marker, params) = crate::versions::paging(query)?;
    let all = match params.iter().find(|(k, _)| k == "FunctionVersion").map(|(_, v)| v.as_str()) {
        None => false,
        Some("ALL") => true,
        Some(other) => {
            let mut v = Violations::default();
            v.check(false, other, "functionVersion", "Member must satisfy enum value set: [ALL]");
            return v.into_result().map(|()| unreachable!());
        }
    };
    // Ordered by (name, version), `$LATEST` first; the marker is the last one given, so a page
    // follows on even if that function went away meanwhile.
    let key = |r: &FunctionRecord| (r.name.clone(), r.version.unwrap_or(0));
    let records: Vec<FunctionRecord> = app
        .registry
        .list(&caller.account)
        .iter()
        .flat_map(|latest| {
            let versions = if all { latest.versions.clone() } else { Vec::new() };
            std::iter::once((**latest).clone()).chain(versions)
        })
        .collect();
    let after = marker.map(|m| match m.rsplit_once(':') {
        Some((name, label)) => (name.to_string(), label.parse().unwrap_or(0)),
        None => (m, 0),
    });
    let start = after.map_or(0, |after| records.partition_point(|r| key(r) <= after));
    let page: Vec<&FunctionRecord> = records.iter().skip(start).take(max_items).collect();
    let mut body = json!({
        "Functions": page.iter().map(|r| f::configuration(r, &app.config.region, &caller.account)).collect::<Vec<_>>(),
    });
    if let Some(last) = page.last().filter(|_| start + page.len() < records.len()) {
        body["NextMarker"] = json!(format!("{}:{}", last.name, last.version_label()));
    }
    Ok(json_answer(StatusCode::OK, body))
}

pub async fn update_configuration(app: &Arc<App>, caller: &Caller, name: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let request: f::UpdateConfiguration = f::parse_body(body)?;
    let (reference, current) = resolve(app, caller, "UpdateFunctionConfiguration", name, None)?;
    latest_only(&reference)?;
    let mut v = Violations::default();
    request.settings.check_model(&mut v);
    if let Some(image_config) = &request.image_config {
        image_config.check_model(&mut v);
    }
    v.into_result()?;
    request.settings.check_values()?;
    if let Some(runtime) = &request.settings.runtime {
        installed_base(app, runtime)?;
    }
    crate::event_config::check_dead_letter(app, caller, request.settings.dead_letter_target())?;
    let vpc = networks_given(app, caller, &request.settings)?;
    // `Layers` absent keeps the function's, an empty list removes them.
    let layers = match &request.layers {
        Some(_) if current.package_type() == PackageType::Image => return Err(crate::function_image::zip_settings_refused()),
        Some(arns) => Some(crate::layers_api::function_layers(app, caller, arns, current.code_unzipped_size).await?),
        None => None,
    };
    let (old, record) = app
        .registry
        .update(&caller.account, &reference.name, |current| -> Result<_, ApiError> {
            let current = current.ok_or_else(|| RegistryError::FunctionNotFound { function: reference.name.clone() })?;
            current.check_revision(request.revision_id.as_deref())?;
            match current.package_type() {
                PackageType::Zip if request.image_config.is_some() => return Err(image_config_on_zip()),
                PackageType::Image if request.settings.runtime.is_some() || request.settings.handler.is_some() => {
                    return Err(crate::function_image::zip_settings_refused());
                }
                _ => {}
            }
            let mut record = current.clone();
            if let Some(image_config) = request.image_config {
                record.image_config = image_config.into_override();
            }
            if let Some(layers) = &layers {
                layers.apply(&mut record);
            }
            if let Some(vpc) = vpc {
                crate::vpc_config::still_there(app, caller, vpc.as_ref())?;
                record.vpc = vpc;
            }
            request.settings.apply(&mut record)?;
            record.base = refreshed_base(app, &record);
            record.last_modified_ms = now(app);
            record.revision_id = new_revision();
            Ok(record)
        })
        .await?;
    if let Some(old) = old {
        app.invoker.retire(&crate::invoke_api::revision(caller.account.as_str(), &old));
    }
    Ok(json_answer(StatusCode::OK, f::configuration(&record, &app.config.region, &caller.account)))
}

/// The code UpdateFunctionCode sets: a stored zip, or a resolved image.
enum NewCode {
    Zip(ignis_store::Code),
    Image(ignis_registry::ImageRecord),
}

pub async fn update_code(app: &Arc<App>, caller: &Caller, name: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let request: f::UpdateCode = f::parse_body(body)?;
    let (reference, current) = resolve(app, caller, "UpdateFunctionCode", name, None)?;
    latest_only(&reference)?;
    current.check_revision(request.revision_id.as_deref())?;
    let architecture = f::check_architectures(request.architectures.as_deref())?;
    crate::absent_features::no_source_kms(request.source_kms_key_arn.as_deref())?;
    crate::absent_features::no_publish_to(request.publish_to.as_deref())?;
    let s3_given = request.s3_bucket.is_some() || request.s3_key.is_some() || request.s3_object_version.is_some();
    let zip_given = request.zip_file.is_some() || s3_given;
    let code = match (current.package_type(), request.image_uri.as_deref()) {
        (PackageType::Image, Some(uri)) if !zip_given => NewCode::Image(crate::function_image::resolve(app, caller, uri).await?),
        (PackageType::Image, _) => {
            return Err(ApiError::InvalidParameterValue("Please provide ImageUri when updating a function with packageType Image.".into()));
        }
        (PackageType::Zip, image_uri) => {
            let zip = code_source(
                request.zip_file.as_deref(),
                s3_given,
                image_uri.is_some(),
                "Please don't provide ImageUri when updating a function with packageType Zip.",
            )?;
            let code = store_code(app, zip, code_rules(&current.runtime)).await?;
            crate::layers_api::check_total_size(code.unzipped_size, current.layers.iter().map(|l| l.unzipped_size))?;
            NewCode::Zip(code)
        }
    };
    let apply = |current: &FunctionRecord| {
        let mut record = current.clone();
        match &code {
            NewCode::Zip(code) => {
                record.code_sha256_hex = code.sha256_hex();
                record.code_sha256 = code.sha256_base64();
                record.code_size = code.zip_size;
                record.code_unzipped_size = code.unzipped_size;
                record.code = CodeRef::new(code.hold.clone());
            }
            NewCode::Image(image) => {
                record.code_sha256 = crate::function_image::code_sha256(image);
                record.image = Some(image.clone());
            }
        }
        record.architecture = architecture.clone();
        record.base = refreshed_base(app, &record);
        record.last_modified_ms = now(app);
        record.revision_id = new_revision();
        record
    };
    if request.dry_run == Some(true) {
        let record = apply(&current);
        return Ok(json_answer(StatusCode::OK, f::configuration(&record, &app.config.region, &caller.account)));
    }
    let (old, record) = app
        .registry
        .update(&caller.account, &reference.name, |latest| -> Result<_, ApiError> {
            let latest = latest.ok_or_else(|| RegistryError::FunctionNotFound { function: reference.name.clone() })?;
            latest.check_revision(request.revision_id.as_deref())?;
            Ok(apply(latest))
        })
        .await?;
    if let Some(old) = old {
        app.invoker.retire(&crate::invoke_api::revision(caller.account.as_str(), &old));
    }
    if request.publish == Some(true) {
        let version = crate::versions::publish(app, caller, &reference.name, None, None, None).await?;
        return Ok(json_answer(StatusCode::OK, f::configuration(&version, &app.config.region, &caller.account)));
    }
    Ok(json_answer(StatusCode::OK, f::configuration(&record, &app.config.region, &caller.account)))
}

pub async fn delete_function(app: &Arc<App>, caller: &Caller, name: &str, query: &str) -> Result<Answer, ApiError> {
    let qualifier = qualifier_param(query);
    let (reference, _) = resolve(app, caller, "DeleteFunction", name, qualifier.as_deref())?;
    if let Some(q) = reference.qualifier.as_deref() {
        crate::versions::delete_version(app, caller, &reference.name, q).await?;
        return Ok(empty_answer(StatusCode::NO_CONTENT));
    }
    if let Some(old) = app.registry.delete(&caller.account, &reference.name).await? {
        app.concurrency.delete_reservation(caller.account.as_str(), &reference.name);
        app.invoker.retire(&crate::invoke_api::revision(caller.account.as_str(), &old));
        for version in &old.versions {
            app.invoker.retire(&crate::invoke_api::revision(caller.account.as_str(), version));
        }
    }
    Ok(empty_answer(StatusCode::NO_CONTENT))
}

/// The unqualified function a concurrency call names (reservations belong to
/// the function, not to a version).
fn concurrency_target(app: &App, caller: &Caller, action: &str, name: &str) -> Result<String, ApiError> {
    let (reference, _) = resolve(app, caller, action, name, None)?;
    if reference.qualifier.is_some() {
        return Err(ApiError::InvalidParameterValue(
            "Concurrency settings apply to the function, not to a version or alias: name it without a qualifier".into(),
        ));
    }
    Ok(reference.name)
}

/// PutFunctionConcurrency: stores the reservation with the function, then
/// makes admission use it (the counter checks it first, under the registry's
/// write lock, and is put back if storing fails).
pub async fn put_concurrency(app: &Arc<App>, caller: &Caller, name: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let request: f::PutConcurrency = f::parse_body(body)?;
    let mut v = Violations::default();
    v.check(request.reserved_concurrent_executions.is_some(), "null", "reservedConcurrentExecutions", "Member must not be null");
    if let Some(n) = request.reserved_concurrent_executions {
        v.check(n >= 0, n, "reservedConcurrentExecutions", "Member must have value greater than or equal to 0");
    }
    v.into_result()?;
    let reserved = u32::try_from(request.reserved_concurrent_executions.unwrap_or(0)).unwrap_or(u32::MAX);
    change_reservation(app, caller, "PutFunctionConcurrency", name, Some(reserved)).await?;
    Ok(json_answer(StatusCode::OK, json!({ "ReservedConcurrentExecutions": reserved })))
}

/// Sets (`Some`) or deletes (`None`) a function's reservation, in the counter
/// and in its stored record together: if storing fails, the counter gets its
/// previous reservation back.
async fn change_reservation(
    app: &Arc<App>,
    caller: &Caller,
    operation: &str,
    name: &str,
    reserved: Option<u32>,
) -> Result<(), ApiError> {
    let name = concurrency_target(app, caller, operation, name)?;
    let account = caller.account.as_str();
    let mut previous = None;
    let written = app
        .registry
        .update(&caller.account, &name, |current| -> Result<_, ApiError> {
            let current = current.ok_or_else(|| RegistryError::FunctionNotFound { function: name.clone() })?;
            match reserved {
                Some(n) => app.concurrency.set_reservation(account, &name, n).map(drop)?,
                None => drop(app.concurrency.delete_reservation(account, &name)),
            }
            previous = Some(current.reserved_concurrency);
            let mut record = current.clone();
            record.reserved_concurrency = reserved;
            Ok(record)
        })
        .await;
    if let Err(e) = written {
        if let Some(previous) = previous {
            app.concurrency.restore_reservation(account, &name, previous);
        }
        return Err(e);
    }
    Ok(())
}

/// GetFunctionConcurrency: the reservation, or `{}` when there is none.
pub fn get_concurrency(app: &App, caller: &Caller, name: &str) -> Result<Answer, ApiError> {
    let (_, record) = resolve(app, caller, "GetFunctionConcurrency", name, None)?;
    let body = match record.reserved_concurrency {
        Some(reserved) => json!({ "ReservedConcurrentExecutions": reserved }),
        None => json!({}),
    };
    Ok(json_answer(StatusCode::OK, body))
}

/// GetAccountSettings: the account's limits (Lambda's, and its concurrency here) and what it uses.
pub fn account_settings(app: &App, caller: &Caller) -> Result<Answer, ApiError> {
    let admission = app.invoker.admission();
    let account = caller.account.as_str();
    let functions = app.registry.list(&caller.account);
    // Lambda counts the code of every version, $LATEST's included.
    let code: u64 = functions.iter().flat_map(|f| std::iter::once(&**f).chain(f.versions.iter())).map(|r| r.code_size).sum();
    let body = json!({
        "AccountLimit": {
            "TotalCodeSize": TOTAL_CODE_SIZE,
            "CodeSizeUnzipped": crate::layers_api::MAX_UNZIPPED_WITH_LAYERS,
            "CodeSizeZipped": MAX_ZIP,
            "ConcurrentExecutions": admission.concurrency_limit(account),
            "UnreservedConcurrentExecutions": admission.unreserved_capacity(account),
        },
        "AccountUsage": { "TotalCodeSize": code, "FunctionCount": functions.len() },
    });
    Ok(json_answer(StatusCode::OK, body))
}

/// Lambda's storage quota for an account's functions and layers (75 GB).
const TOTAL_CODE_SIZE: u64 = 80_530_636_800;

/// DeleteFunctionConcurrency: the function goes back to the unreserved pool.
pub async fn delete_concurrency(app: &Arc<App>, caller: &Caller, name: &str) -> Result<Answer, ApiError> {
    change_reservation(app, caller, "DeleteFunctionConcurrency", name, None).await?;
    Ok(empty_answer(StatusCode::NO_CONTENT))
}
