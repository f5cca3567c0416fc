//! A function's configuration on the wire: Lambda's shapes of the registry's
//! records (`FunctionConfiguration`, `AliasConfiguration`), the requests that
//! create and change them, their validation, and the parsing of a function
//! named in request text into an `ignis_registry::FunctionRef`.
//!
//! Validation follows Lambda: breaking the API's model (a length, a pattern, a
//! range, an enum) is a `ValidationException` listing every violation; a value
//! the model allows but Ignis cannot honour is an `InvalidParameterValueException`.

use std::collections::BTreeMap;

use ignis_ids::AccountId;
use ignis_registry::{AliasRecord, FunctionRecord, FunctionRef, ImageConfigOverride, JsonLogging, PackageType};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;

/// Lambda's limit on the environment variables' total size.
const MAX_ENVIRONMENT_BYTES: usize = 4096;

/// Runtimes Ignis runs: the OS-only ones, whose entry point is `bootstrap`.
/// Lambda's runtime names (the `Runtime` values its API accepts); a function's must also be installed here (see
/// `runtimes_api`).
pub(crate) const RUNTIMES: [&str; 33] = [
    "provided.al2023", "provided.al2", "provided", "python3.14", "python3.13", "python3.12", "python3.11",
    "python3.10", "python3.9", "python3.8", "python3.7", "nodejs24.x", "nodejs22.x", "nodejs20.x", "nodejs18.x",
    "nodejs16.x", "nodejs14.x", "java25", "java21", "java17", "java11", "java8.al2", "java8", "dotnet10",
    "dotnet8", "dotnet6", "ruby3.4", "ruby3.3", "ruby3.2", "go1.x", "nodejs12.x", "python3.6", "ruby2.7",
];

/// Environment variables Lambda reserves.
const RESERVED_KEYS: [&str; 17] = [
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT",
];

/// Lambda's `FunctionConfiguration` of `record` (`$LATEST` or a version) of `account`.
pub fn configuration(record: &FunctionRecord, region: &str, account: &AccountId) -> Value {
    let mut config = json!({
        "FunctionName": record.name,
        "FunctionArn": record.version_arn(region, account.as_str()),
        "Runtime": record.runtime,
        "Role": record.role,
        "Handler": record.handler,
        "CodeSize": record.code_size,
        "Description": record.description,
        "Timeout": record.timeout_s,
        "MemorySize": record.memory_mb,
        "LastModified": last_modified(record.last_modified_ms),
        "CodeSha256": record.code_sha256,
        "Version": record.version_label(),
        "TracingConfig": { "Mode": "PassThrough" },
        "RevisionId": record.revision_id,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": record.package_type().as_str(),
        "Architectures": [record.architecture],
        "EphemeralStorage": { "Size": record.ephemeral_mb },
        "SnapStart": { "ApplyOn": "None", "OptimizationStatus": "Off" },
        "LoggingConfig": logging_config(record),
    });
    if !record.environment.is_empty() {
        config["Environment"] = json!({ "Variables": record.environment });
    }
    if record.package_type() == PackageType::Image
        && let Some(fields) = config.as_object_mut()
    {
        // An image function has neither: its image says what runs.
        fields.remove("Runtime");
        fields.remove("Handler");
    }
    if !record.image_config.is_empty() {
        config["ImageConfigResponse"] = json!({ "ImageConfig": image_config(&record.image_config) });
    }
    if let Some(target) = &record.dead_letter_target {
        config["DeadLetterConfig"] = json!({ "TargetArn": target });
    }
    if let Some(vpc) = &record.vpc {
        config["VpcConfig"] = crate::vpc_config::wire(vpc);
    }
    if !record.layers.is_empty() {
        let layers: Vec<Value> = record.layers.iter().map(|l| json!({ "Arn": l.arn, "CodeSize": l.code_size })).collect();
        config["Layers"] = json!(layers);
    }
    config
}

/// Lambda's `LoggingConfig` of a function: the levels only in the JSON format.
fn logging_config(record: &FunctionRecord) -> Value {
    match &record.log_json {
        None => json!({ "LogFormat": "Text", "LogGroup": record.log_group() }),
        Some(levels) => json!({
            "LogFormat": "JSON",
            "ApplicationLogLevel": levels.application_level,
            "SystemLogLevel": levels.system_level,
            "LogGroup": record.log_group(),
        }),
    }
}

/// Lambda's `ImageConfig` of a function's overrides (only the fields set).
fn image_config(overrides: &ImageConfigOverride) -> Value {
    let mut out = json!({});
    if let Some(e) = &overrides.entry_point {
        out["EntryPoint"] = json!(e);
    }
    if let Some(c) = &overrides.command {
        out["Command"] = json!(c);
    }
    if let Some(w) = &overrides.working_directory {
        out["WorkingDirectory"] = json!(w);
    }
    out
}

/// Lambda's `ImageConfig` in a request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfigIn {
    pub entry_point: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub working_directory: Option<String>,
}

impl ImageConfigIn {
    /// Model checks (list and length limits), added to `v`.
    pub fn check_model(&self, v: &mut Violations) {
        for (list, field) in [(&self.entry_point, "imageConfig.entryPoint"), (&self.command, "imageConfig.command")] {
            if let Some(list) = list {
                v.check(list.len() <= 1500, format!("{list:?}"), field, "Member must have length less than or equal to 1500");
            }
        }
        if let Some(w) = &self.working_directory {
            v.check(w.len() <= 1000, w, "imageConfig.workingDirectory", "Member must have length less than or equal to 1000");
        }
    }

    /// The overrides it sets (each field given replaces the image's setting).
    pub fn into_override(self) -> ImageConfigOverride {
        ImageConfigOverride { entry_point: self.entry_point, command: self.command, working_directory: self.working_directory }
    }
}

/// Lambda's `AliasConfiguration` of `alias`, named `name`, of `function` of `account`.
pub fn alias_configuration(alias: &AliasRecord, name: &str, function: &FunctionRecord, region: &str, account: &AccountId) -> Value {
    let mut config = json!({
        "AliasArn": function.qualified_arn(region, account.as_str(), name),
        "Name": name,
        "FunctionVersion": alias.function_version,
        "Description": alias.description,
        "RevisionId": alias.revision_id,
    });
    if !alias.weights.is_empty() {
        config["RoutingConfig"] = json!({ "AdditionalVersionWeights": alias.weights });
    }
    config
}

/// Lambda's timestamp format: `2024-01-31T12:34:56.789+0000`.
pub fn last_modified(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    let text = humantime::format_rfc3339_millis(time).to_string();
    format!("{}+0000", text.trim_end_matches('Z'))
}

/// PutFunctionConcurrency's body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutConcurrency {
    pub reserved_concurrent_executions: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnvironmentIn {
    pub variables: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeadLetterIn {
    pub target_arn: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EphemeralStorageIn {
    pub size: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CodeIn {
    pub zip_file: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_key: Option<String>,
    pub s3_object_version: Option<String>,
    pub image_uri: Option<String>,
    #[serde(rename = "SourceKMSKeyArn")]
    pub source_kms_key_arn: Option<String>,
}

impl CodeIn {
    /// Whether any of S3's members is given (Ignis has no S3).
    pub fn names_s3(&self) -> bool {
        self.s3_bucket.is_some() || self.s3_key.is_some() || self.s3_object_version.is_some()
    }
}

/// The settings CreateFunction and UpdateFunctionConfiguration share.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Settings {
    pub runtime: Option<String>,
    pub role: Option<String>,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub memory_size: Option<i64>,
    pub timeout: Option<i64>,
    pub environment: Option<EnvironmentIn>,
    pub ephemeral_storage: Option<EphemeralStorageIn>,
    pub dead_letter_config: Option<DeadLetterIn>,
    /// Absent: the networks stay; both lists empty: detached (`vpc_config`).
    pub vpc_config: Option<crate::vpc_config::VpcConfigIn>,
    pub logging_config: Option<LoggingConfigIn>,
    /// Settings of features Ignis has not: accepted only off.
    #[serde(flatten)]
    pub absent: crate::absent_features::AbsentFeatures,
}

/// `LoggingConfig`: the log group, and the format with its levels. A field absent keeps the function's setting; the
/// levels of a function turned to `JSON` are INFO unless given, and go when it turns back to `Text`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoggingConfigIn {
    pub log_format: Option<String>,
    pub application_log_level: Option<String>,
    pub system_log_level: Option<String>,
    pub log_group: Option<String>,
}

impl LoggingConfigIn {
    fn check_model(&self, v: &mut Violations) {
        if let Some(format) = &self.log_format {
            let ok = ["JSON", "Text"].contains(&format.as_str());
            v.check(ok, format, "loggingConfig.logFormat", "Member must satisfy enum value set: [JSON, Text]");
        }
        if let Some(level) = &self.application_log_level {
            let ok = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"].contains(&level.as_str());
            let set = "Member must satisfy enum value set: [TRACE, DEBUG, INFO, WARN, ERROR, FATAL]";
            v.check(ok, level, "loggingConfig.applicationLogLevel", set);
        }
        if let Some(level) = &self.system_log_level {
            let ok = ["DEBUG", "INFO", "WARN"].contains(&level.as_str());
            v.check(ok, level, "loggingConfig.systemLogLevel", "Member must satisfy enum value set: [DEBUG, INFO, WARN]");
        }
        if let Some(group) = &self.log_group {
            let ok = !group.is_empty()
                && group.len() <= 512
                && group.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/#".contains(&b));
            v.check(ok, group, "loggingConfig.logGroup", "Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+");
        }
    }

    /// Writes the format, levels and group into `record`; levels for a function left in the `Text` format are
    /// refused, as Lambda does.
    fn apply(self, record: &mut FunctionRecord) -> Result<(), ApiError> {
        let json = match self.log_format.as_deref() {
            Some(format) => format == "JSON",
            None => record.log_json.is_some(),
        };
        if !json && (self.application_log_level.is_some() || self.system_log_level.is_some()) {
            return Err(ApiError::InvalidParameterValue(
                "LogLevel is not supported when LogFormat is set to \"Text\". Remove LogLevel from your request or \
                 change the LogFormat to \"Json\" and try again."
                    .into(),
            ));
        }
        record.log_json = json.then(|| {
            let current = record.log_json.take().unwrap_or_default();
            JsonLogging {
                application_level: self.application_log_level.unwrap_or(current.application_level),
                system_level: self.system_log_level.unwrap_or(current.system_level),
            }
        });
        if let Some(group) = self.log_group {
            // Lambda's own group is the default, not a custom one.
            record.log_group_name = (group != format!("/aws/lambda/{}", record.name)).then_some(group);
        }
        Ok(())
    }
}

impl Settings {
    /// Model checks of every setting given, added to `v`.
    pub fn check_model(&self, v: &mut Violations) {
        v.range(self.memory_size, "memorySize", 128, 10240);
        v.range(self.timeout, "timeout", 1, 900);
        v.range(self.ephemeral_storage.as_ref().and_then(|e| e.size), "ephemeralStorage.size", 512, 10240);
        if let Some(d) = &self.description {
            v.check(d.len() <= 256, d, "description", "Member must have length less than or equal to 256");
        }
        if let Some(vpc) = &self.vpc_config {
            vpc.check_model(v);
        }
        if let Some(logging) = &self.logging_config {
            logging.check_model(v);
        }
        self.absent.check_model(v);
        if let Some(h) = &self.handler {
            v.check(h.len() <= 128, h, "handler", "Member must have length less than or equal to 128");
            v.check(!h.chars().any(char::is_whitespace), h, "handler", "Member must satisfy regular expression pattern: [^\\s]+");
        }
    }

    /// Checks of values the model allows but Ignis may not honour. Run after the model checks.
    pub fn check_values(&self) -> Result<(), ApiError> {
        if let Some(runtime) = &self.runtime {
            check_runtime_name(runtime)?;
        }
        if let Some(vars) = self.environment.as_ref().and_then(|e| e.variables.as_ref()) {
            check_environment(vars)?;
        }
        self.absent.check_values()
    }

    /// Writes every setting given into `record`; refuses a `LoggingConfig` that does not fit the function's (a
    /// level for the `Text` format).
    pub fn apply(self, record: &mut FunctionRecord) -> Result<(), ApiError> {
        if let Some(runtime) = self.runtime {
            record.runtime = runtime;
        }
        if let Some(role) = self.role {
            record.role = role;
        }
        if let Some(handler) = self.handler {
            record.handler = handler;
        }
        if let Some(description) = self.description {
            record.description = description;
        }
        if let Some(memory) = self.memory_size {
            record.memory_mb = memory as u32;
        }
        if let Some(timeout) = self.timeout {
            record.timeout_s = timeout as u32;
        }
        if let Some(size) = self.ephemeral_storage.and_then(|e| e.size) {
            record.ephemeral_mb = size as u32;
        }
        if let Some(environment) = self.environment {
            record.environment = environment.variables.unwrap_or_default();
        }
        if let Some(dead_letter) = self.dead_letter_config {
            // An empty TargetArn removes it, as in Lambda.
            record.dead_letter_target = dead_letter.target_arn.filter(|t| !t.is_empty());
        }
        match self.logging_config {
            Some(logging) => logging.apply(record),
            None => Ok(()),
        }
    }

    /// The dead-letter target given, if any (empty: removing it).
    pub fn dead_letter_target(&self) -> Option<&str> {
        self.dead_letter_config.as_ref()?.target_arn.as_deref().filter(|t| !t.is_empty())
    }
}

/// `CreateFunction`'s body: every member of Lambda's request is read (members of features Ignis has not are
/// `absent_features`'); a member Lambda's model does not have is ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateFunction {
    pub function_name: Option<String>,
    #[serde(flatten)]
    pub settings: Settings,
    pub architectures: Option<Vec<String>>,
    pub package_type: Option<String>,
    pub code: Option<CodeIn>,
    pub publish: Option<bool>,
    pub image_config: Option<ImageConfigIn>,
    pub layers: Option<Vec<String>>,
    /// The function's tags (`tags_api`'s limits).
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub absent: crate::absent_features::AbsentAtCreate,
}

/// `UpdateFunctionConfiguration`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateConfiguration {
    #[serde(flatten)]
    pub settings: Settings,
    pub revision_id: Option<String>,
    pub image_config: Option<ImageConfigIn>,
    /// Absent: the layers stay; empty: removed.
    pub layers: Option<Vec<String>>,
}

/// `UpdateFunctionCode`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateCode {
    pub zip_file: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_key: Option<String>,
    pub s3_object_version: Option<String>,
    pub image_uri: Option<String>,
    pub architectures: Option<Vec<String>>,
    #[serde(rename = "SourceKMSKeyArn")]
    pub source_kms_key_arn: Option<String>,
    pub publish_to: Option<String>,
    pub publish: Option<bool>,
    pub dry_run: Option<bool>,
    pub revision_id: Option<String>,
}

/// Parses a JSON body into `T`, the way Lambda refuses what it cannot read.
pub fn parse_body<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequestContent(format!("Could not parse request body into json: {e}")))
}

/// Model violations, gathered into one `ValidationException`.
#[derive(Default)]
pub struct Violations(Vec<String>);

impl Violations {
    pub fn check(&mut self, ok: bool, value: impl std::fmt::Display, field: &str, constraint: &str) {
        if !ok {
            self.0.push(format!("Value '{value}' at '{field}' failed to satisfy constraint: {constraint}"));
        }
    }

    pub fn range(&mut self, value: Option<i64>, field: &str, min: i64, max: i64) {
        if let Some(v) = value {
            self.check(v >= min, v, field, &format!("Member must have value greater than or equal to {min}"));
            self.check(v <= max, v, field, &format!("Member must have value less than or equal to {max}"));
        }
    }

    pub fn into_result(self) -> Result<(), ApiError> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(ApiError::Validation(format!("1 validation error detected: {}", self.0[0]))),
            n => Err(ApiError::Validation(format!("{n} validation errors detected: {}", self.0.join("; ")))),
        }
    }
}

/// Lambda's function-name pattern for a plain name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

const NAME_PATTERN: &str = "Member must satisfy regular expression pattern: (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?(\\d{12}:)?(function:)?([a-zA-Z0-9-_]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?";

/// A function named in a path or a body, by name, partial ARN or ARN, with an
/// optional qualifier: `my-fn`, `my-fn:3`, `123456789012:function:my-fn`,
/// `arn:aws:lambda:us-east-1:123456789012:function:my-fn:alias`.
pub fn parse_function_ref(text: &str, field: &str) -> Result<FunctionRef, ApiError> {
    let invalid = || {
        let mut v = Violations::default();
        v.check(false, text, field, NAME_PATTERN);
        v.into_result().unwrap_err()
    };
    if text.len() > 170 {
        let mut v = Violations::default();
        v.check(false, text, field, "Member must have length less than or equal to 170");
        return Err(v.into_result().unwrap_err());
    }
    let parts: Vec<&str> = text.split(':').collect();
    let (region, account, rest) = match parts.as_slice() {
        ["arn", partition, "lambda", region, account, "function", rest @ ..] if partition.starts_with("aws") => {
            (Some(*region), Some(*account), rest)
        }
        [account, "function", rest @ ..] => (None, Some(*account), rest),
        rest => (None, None, rest),
    };
    let (name, qualifier) = match rest {
        [name] => (*name, None),
        [name, qualifier] => (*name, Some(*qualifier)),
        _ => return Err(invalid()),
    };
    let account = match account {
        Some(a) => Some(AccountId::parse(a).ok_or_else(invalid)?),
        None => None,
    };
    let qualifier_ok = qualifier.is_none_or(|q| q == "$LATEST" || valid_name(q));
    if !valid_name(name) || !qualifier_ok {
        return Err(invalid());
    }
    Ok(FunctionRef {
        name: name.to_string(),
        account,
        region: region.map(str::to_string),
        qualifier: qualifier.map(str::to_string),
    })
}

/// Checks that `runtime` is one of Lambda's runtime names (`ValidationException`, listing them, if not).
pub fn check_runtime_name(runtime: &str) -> Result<(), ApiError> {
    let mut all = RUNTIMES;
    all.sort_unstable();
    let mut v = Violations::default();
    v.check(RUNTIMES.contains(&runtime), runtime, "runtime", &format!("Member must satisfy enum value set: [{}]", all.join(", ")));
    v.into_result()
}

/// Checks environment variables as Lambda does.
pub fn check_environment(vars: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let mut v = Violations::default();
    for key in vars.keys() {
        let ok = key.len() >= 2
            && key.as_bytes()[0].is_ascii_alphabetic()
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        v.check(ok, key, "environment.variables", "Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+");
    }
    v.into_result()?;
    let reserved: Vec<&str> = vars.keys().map(String::as_str).filter(|k| RESERVED_KEYS.contains(k)).collect();
    if !reserved.is_empty() {
        return Err(ApiError::InvalidParameterValue(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {}",
            reserved.join(",")
        )));
    }
    let size: usize = vars.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_ENVIRONMENT_BYTES {
        return Err(ApiError::InvalidParameterValue(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit. String measured: {size} bytes"
        )));
    }
    Ok(())
}

pub fn check_architectures(architectures: Option<&[String]>) -> Result<String, ApiError> {
    match architectures {
        None => Ok("x86_64".into()),
        Some([one]) if one == "x86_64" => Ok(one.clone()),
        Some([one]) if one == "arm64" => {
            Err(ApiError::InvalidParameterValue("Architecture arm64 is not supported by this Ignis host; use x86_64".into()))
        }
        Some(list) => {
            let mut v = Violations::default();
            v.check(list.len() == 1, format!("{list:?}"), "architectures", "Member must have length less than or equal to 1");
            v.check(
                list.iter().all(|a| a == "x86_64" || a == "arm64"),
                format!("{list:?}"),
                "architectures",
                "Member must satisfy enum value set: [x86_64, arm64]",
            );
            v.into_result().map(|()| "x86_64".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_ref(text: &str, expected: Result<(&str, Option<&str>, Option<&str>), &str>) {
        let got = parse_function_ref(text, "functionName");
        match expected {
            Ok((name, account, qualifier)) => {
                let r = got.unwrap_or_else(|e| panic!("{text}: {e:?}"));
                assert_eq!((r.name.as_str(), r.account.as_ref().map(AccountId::as_str), r.qualifier.as_deref()), (name, account, qualifier), "{text}");
            }
            Err(error_type) => assert_eq!(got.unwrap_err().error_type(), error_type, "{text}"),
        }
    }

    #[test]
    fn function_references() {
        check_ref("my-fn_1", Ok(("my-fn_1", None, None)));
        check_ref("my-fn:$LATEST", Ok(("my-fn", None, Some("$LATEST"))));
        check_ref("my-fn:3", Ok(("my-fn", None, Some("3"))));
        check_ref("123456789012:function:f", Ok(("f", Some("123456789012"), None)));
        check_ref("arn:aws:lambda:us-east-1:123456789012:function:f", Ok(("f", Some("123456789012"), None)));
        check_ref("arn:aws:lambda:us-east-1:123456789012:function:f:prod", Ok(("f", Some("123456789012"), Some("prod"))));
        for bad in ["", "a b", "a/b", "f:1:2", "x".repeat(65).as_str(), "12345:function:f", "arn:aws:s3:::bucket", "../etc"] {
            check_ref(bad, Err("ValidationException"));
        }
    }

    #[test]
    fn ranges_are_validation_errors_listing_each_violation() {
        let mut v = Violations::default();
        let settings = Settings {
            memory_size: Some(127),
            timeout: Some(901),
            ephemeral_storage: Some(EphemeralStorageIn { size: Some(512) }),
            ..Settings::default()
        };
        settings.check_model(&mut v);
        let err = v.into_result().unwrap_err();
        assert_eq!(err.error_type(), "ValidationException");
        assert!(err.message().starts_with("2 validation errors detected: Value '127' at 'memorySize'"), "{}", err.message());
        assert!(err.message().contains("Value '901' at 'timeout' failed to satisfy constraint: Member must have value less than or equal to 900"));
        for (memory, timeout) in [(128, 1), (10240, 900)] {
            let mut v = Violations::default();
            Settings { memory_size: Some(memory), timeout: Some(timeout), ..Settings::default() }.check_model(&mut v);
            assert!(v.into_result().is_ok());
        }
    }

    #[test]
    fn runtimes() {
        for name in ["provided.al2023", "provided.al2", "python3.11", "python3.14", "nodejs24.x"] {
            assert!(check_runtime_name(name).is_ok(), "{name}");
        }
        for name in ["cobol", "", "python3", "Python3.11", "nodejs20"] {
            assert_eq!(check_runtime_name(name).unwrap_err().error_type(), "ValidationException", "{name}");
        }
    }

    #[test]
    fn environment_rules() {
        let vars = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(check_environment(&vars(&[("GREETING", "hi"), ("a_1", "")])).is_ok());
        assert_eq!(check_environment(&vars(&[("1A", "x")])).unwrap_err().error_type(), "ValidationException");
        let reserved = check_environment(&vars(&[("AWS_REGION", "x")])).unwrap_err();
        assert_eq!(reserved.error_type(), "InvalidParameterValueException");
        assert!(reserved.message().ends_with("Reserved keys used in this request: AWS_REGION"));
        let big = "x".repeat(5000);
        assert_eq!(check_environment(&vars(&[("BIG", &big)])).unwrap_err().error_type(), "InvalidParameterValueException");
    }

    /// Applies `LoggingConfig`s in turn to a new function; each answers its `LoggingConfig`, or its error's type.
    fn check_logging(steps: &[(Value, Result<Value, &str>)]) {
        let account = AccountId::new("111111111111");
        let mut record = FunctionRecord::new("f", "provided.al2023");
        for (given, expected) in steps {
            let settings: Settings = serde_json::from_value(json!({ "LoggingConfig": given })).unwrap();
            let got = settings.apply(&mut record).map(|()| configuration(&record, "us-east-1", &account)["LoggingConfig"].clone());
            assert_eq!(got.map_err(|e| e.error_type().to_string()), expected.clone().map_err(str::to_string), "{given}");
        }
    }

    #[test]
    fn logging_config_keeps_what_is_not_given_and_levels_need_json() {
        let text = |group: &str| json!({ "LogFormat": "Text", "LogGroup": group });
        let json = |application: &str, system: &str, group: &str| {
            json!({ "LogFormat": "JSON", "ApplicationLogLevel": application, "SystemLogLevel": system, "LogGroup": group })
        };
        let lambdas = "/aws/lambda/f";
        check_logging(&[
            (json!({}), Ok(text(lambdas))),
            (json!({ "ApplicationLogLevel": "DEBUG" }), Err("InvalidParameterValueException")),
            (json!({ "LogFormat": "Text", "SystemLogLevel": "WARN" }), Err("InvalidParameterValueException")),
            (json!({ "LogFormat": "JSON" }), Ok(json("INFO", "INFO", lambdas))),
            (json!({ "ApplicationLogLevel": "ERROR" }), Ok(json("ERROR", "INFO", lambdas))),
            (json!({ "LogFormat": "JSON", "SystemLogLevel": "WARN", "LogGroup": "/app" }), Ok(json("ERROR", "WARN", "/app"))),
            (json!({ "LogGroup": lambdas }), Ok(json("ERROR", "WARN", lambdas))),
            (json!({ "LogFormat": "Text" }), Ok(text(lambdas))),
            (json!({ "LogFormat": "JSON" }), Ok(json("INFO", "INFO", lambdas))),
        ]);
    }

    fn image_function() -> FunctionRecord {
        let digest = format!("sha256:{}", "c".repeat(64));
        FunctionRecord {
            handler: String::new(),
            code_sha256: "c".repeat(64),
            image: Some(ignis_registry::ImageRecord {
                image_uri: "localhost:9000/team/app:v1".into(),
                resolved_image_uri: format!("localhost:9000/team/app@{digest}"),
                repository: "team/app".into(),
                manifest_digest: digest.clone(),
                settings: ignis_registry::ImageSettings::default(),
                prepared_id: digest,
            }),
            ..FunctionRecord::new("img", "")
        }
    }

    #[test]
    fn image_functions_have_no_runtime_or_handler_and_show_their_overrides() {
        let account = AccountId::new("111111111111");
        let mut record = image_function();
        let config = configuration(&record, "us-east-1", &account);
        assert_eq!(config["PackageType"], "Image");
        assert_eq!((config["CodeSize"].clone(), config["CodeSha256"].clone()), (json!(0), json!("c".repeat(64))));
        assert!(config.get("Runtime").is_none() && config.get("Handler").is_none(), "{config}");
        assert!(config.get("ImageConfigResponse").is_none(), "no override, no ImageConfigResponse: {config}");
        record.image_config = ImageConfigOverride { command: Some(vec!["x".into()]), working_directory: Some("/w".into()), ..ImageConfigOverride::default() };
        let config = configuration(&record, "us-east-1", &account);
        assert_eq!(config["ImageConfigResponse"], json!({ "ImageConfig": { "Command": ["x"], "WorkingDirectory": "/w" } }));
        let zip = configuration(&FunctionRecord::new("z", "provided.al2023"), "us-east-1", &account);
        assert_eq!((zip["PackageType"].clone(), zip["Runtime"].clone(), zip["Handler"].clone()), (json!("Zip"), json!("provided.al2023"), json!("bootstrap")));
    }

    #[test]
    fn image_config_limits() {
        let check = |config: ImageConfigIn| {
            let mut v = Violations::default();
            config.check_model(&mut v);
            v.into_result()
        };
        let many = vec![String::new(); 1501];
        assert!(check(ImageConfigIn { entry_point: Some(vec![String::new(); 1500]), command: Some(Vec::new()), working_directory: Some("w".repeat(1000)) }).is_ok());
        let err = check(ImageConfigIn { entry_point: Some(many.clone()), command: Some(many), working_directory: Some("w".repeat(1001)) }).unwrap_err();
        assert_eq!(err.error_type(), "ValidationException");
        assert!(err.message().starts_with("3 validation errors detected"), "{}", err.message());
        let request: CreateFunction = parse_body(br#"{"PackageType":"Image","ImageConfig":{"EntryPoint":["/e"],"Command":["c"],"WorkingDirectory":"/w"}}"#).unwrap();
        let overrides = request.image_config.unwrap().into_override();
        assert_eq!((overrides.entry_point, overrides.command, overrides.working_directory), (Some(vec!["/e".into()]), Some(vec!["c".into()]), Some("/w".into())));
    }

    #[test]
    fn last_modified_format() {
        assert_eq!(last_modified(1_700_000_000_123), "2023-11-14T22:13:20.123+0000");
    }

    #[test]
    fn wrong_types_are_invalid_request_content() {
        let err = parse_body::<CreateFunction>(br#"{"MemorySize": "big"}"#).unwrap_err();
        assert_eq!(err.error_type(), "InvalidRequestContentException");
        let err = parse_body::<CreateFunction>(b"{not json").unwrap_err();
        assert_eq!(err.error_type(), "InvalidRequestContentException");
        let ok = parse_body::<CreateFunction>(br#"{"FunctionName": "f", "Unknown": [1, 2]}"#).unwrap();
        assert_eq!(ok.function_name.as_deref(), Some("f"));
    }
}
