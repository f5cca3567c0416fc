//! The members of CreateFunction, UpdateFunctionConfiguration and UpdateFunctionCode that set Lambda features
//! Ignis does not have: each is accepted only at the value that leaves the feature off (what GetFunctionConfiguration
//! shows), and refused otherwise with `InvalidParameterValueException` naming it, so that no parameter is accepted
//! and then dropped. A value outside the API's model (an enum) is a `ValidationException`, as for every member.
//!
//! | member | accepted | refused |
//! |---|---|---|
//! | `KMSKeyArn` | `""` (Lambda's own key) | a customer managed key: Ignis has no KMS |
//! | `TracingConfig.Mode` | `PassThrough` | `Active`: Ignis has no X-Ray |
//! | `FileSystemConfigs` | `[]` | a file system: Ignis has no EFS |
//! | `SnapStart.ApplyOn` | `None` | `PublishedVersions` |
//! | `CapacityProviderConfig`, `DurableConfig` | absent | any |
//! | `CodeSigningConfigArn` (create) | `""` | a code signing config |
//! | `PublishTo`, `TenancyConfig` (create; `PublishTo` also on UpdateFunctionCode) | absent | any |
//! | `Code.SourceKMSKeyArn`, `SourceKMSKeyArn` | `""` | a customer managed key |
//!
//! (`Code.S3ObjectVersion` is refused with the rest of S3 by `control::code_source`: Ignis has no S3.)

use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::function::Violations;

/// The members both CreateFunction and UpdateFunctionConfiguration have (flattened into `function::Settings`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AbsentFeatures {
    #[serde(rename = "KMSKeyArn")]
    pub kms_key_arn: Option<String>,
    pub tracing_config: Option<TracingConfigIn>,
    pub file_system_configs: Option<Vec<Value>>,
    pub snap_start: Option<SnapStartIn>,
    pub capacity_provider_config: Option<Value>,
    pub durable_config: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TracingConfigIn {
    pub mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnapStartIn {
    pub apply_on: Option<String>,
}

/// The members only CreateFunction has (flattened into `function::CreateFunction`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AbsentAtCreate {
    pub code_signing_config_arn: Option<String>,
    pub publish_to: Option<String>,
    pub tenancy_config: Option<Value>,
}

/// Lambda's error for a member Ignis has no feature for.
fn refused(member: &str, why: &str) -> ApiError {
    ApiError::InvalidParameterValue(format!("{member} is not supported by Ignis: {why}."))
}

/// Refuses a key (`KMSKeyArn`, `SourceKMSKeyArn`) other than none.
fn no_kms(member: &str, key: Option<&str>) -> Result<(), ApiError> {
    match key {
        Some(key) if !key.is_empty() => Err(refused(
            member,
            "it has no KMS, and keeps what it stores sealed under its own master key; leave it out or empty",
        )),
        _ => Ok(()),
    }
}

/// Refuses `PublishTo` (a Lambda Managed Instances setting).
pub fn no_publish_to(publish_to: Option<&str>) -> Result<(), ApiError> {
    match publish_to {
        Some(_) => Err(refused(
            "PublishTo",
            "it has no Lambda Managed Instances capacity providers; publish with Publish or PublishVersion",
        )),
        None => Ok(()),
    }
}

/// Refuses `Code.SourceKMSKeyArn` / UpdateFunctionCode's `SourceKMSKeyArn` other than none.
pub fn no_source_kms(key: Option<&str>) -> Result<(), ApiError> {
    no_kms("SourceKMSKeyArn", key)
}

impl AbsentFeatures {
    /// Model checks (the enums), added to `v`.
    pub fn check_model(&self, v: &mut Violations) {
        if let Some(mode) = self.tracing_config.as_ref().and_then(|t| t.mode.as_deref()) {
            let ok = ["Active", "PassThrough"].contains(&mode);
            v.check(ok, mode, "tracingConfig.mode", "Member must satisfy enum value set: [Active, PassThrough]");
        }
        if let Some(apply_on) = self.snap_start.as_ref().and_then(|s| s.apply_on.as_deref()) {
            let ok = ["PublishedVersions", "None"].contains(&apply_on);
            v.check(ok, apply_on, "snapStart.applyOn", "Member must satisfy enum value set: [PublishedVersions, None]");
        }
        if let Some(configs) = &self.file_system_configs {
            v.check(configs.len() <= 1, configs.len(), "fileSystemConfigs", "Member must have length less than or equal to 1");
        }
    }

    /// Refuses every member that would turn a feature on.
    pub fn check_values(&self) -> Result<(), ApiError> {
        no_kms("KMSKeyArn", self.kms_key_arn.as_deref())?;
        if self.tracing_config.as_ref().and_then(|t| t.mode.as_deref()) == Some("Active") {
            return Err(refused("TracingConfig Mode Active", "it has no AWS X-Ray; use PassThrough"));
        }
        if self.file_system_configs.as_ref().is_some_and(|c| !c.is_empty()) {
            let why = "it has no Amazon EFS or S3 file systems to mount; give an empty list";
            return Err(refused("FileSystemConfigs", why));
        }
        if self.snap_start.as_ref().and_then(|s| s.apply_on.as_deref()) == Some("PublishedVersions") {
            let why = "it takes no snapshots of initialized sandboxes; use None";
            return Err(refused("SnapStart ApplyOn PublishedVersions", why));
        }
        if self.capacity_provider_config.is_some() {
            return Err(refused("CapacityProviderConfig", "it has no Lambda Managed Instances capacity providers"));
        }
        if self.durable_config.is_some() {
            return Err(refused("DurableConfig", "it has no durable executions"));
        }
        Ok(())
    }
}

impl AbsentAtCreate {
    /// Model checks (the enum of `PublishTo`), added to `v`.
    pub fn check_model(&self, v: &mut Violations) {
        if let Some(publish_to) = &self.publish_to {
            let set = "Member must satisfy enum value set: [LATEST_PUBLISHED]";
            v.check(publish_to == "LATEST_PUBLISHED", publish_to, "publishTo", set);
        }
    }

    /// Refuses every member that would turn a feature on.
    pub fn check_values(&self) -> Result<(), ApiError> {
        if self.code_signing_config_arn.as_deref().is_some_and(|arn| !arn.is_empty()) {
            return Err(refused("CodeSigningConfigArn", "it does not verify code signatures; leave it out"));
        }
        no_publish_to(self.publish_to.as_deref())?;
        if self.tenancy_config.is_some() {
            return Err(refused("TenancyConfig", "it has no per-tenant isolation of sandboxes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::function::{CreateFunction, UpdateConfiguration, parse_body};

    /// What CreateFunction makes of `members`: `Ok`, or the error's type.
    fn create(members: Value) -> Result<(), String> {
        let request: CreateFunction = parse_body(members.to_string().as_bytes()).map_err(|e| e.error_type().to_string())?;
        let mut v = Violations::default();
        request.settings.absent.check_model(&mut v);
        request.absent.check_model(&mut v);
        let checked = v.into_result().and_then(|()| request.settings.absent.check_values()).and_then(|()| request.absent.check_values());
        checked.map_err(|e| e.error_type().to_string())
    }

    #[test]
    fn off_values_are_accepted_and_the_rest_refused() {
        let ok: Result<(), String> = Ok(());
        let refused = Err("InvalidParameterValueException".to_string());
        let invalid = Err("ValidationException".to_string());
        let cases = [
            (serde_json::json!({}), ok.clone()),
            (serde_json::json!({ "KMSKeyArn": "" }), ok.clone()),
            (serde_json::json!({ "KMSKeyArn": "arn:aws:kms:us-east-1:123456789012:key/k" }), refused.clone()),
            (serde_json::json!({ "TracingConfig": { "Mode": "PassThrough" } }), ok.clone()),
            (serde_json::json!({ "TracingConfig": {} }), ok.clone()),
            (serde_json::json!({ "TracingConfig": { "Mode": "Active" } }), refused.clone()),
            (serde_json::json!({ "TracingConfig": { "Mode": "On" } }), invalid.clone()),
            (serde_json::json!({ "FileSystemConfigs": [] }), ok.clone()),
            (serde_json::json!({ "FileSystemConfigs": [{ "Arn": "a", "LocalMountPath": "/mnt/x" }] }), refused.clone()),
            (serde_json::json!({ "FileSystemConfigs": [{}, {}] }), invalid.clone()),
            (serde_json::json!({ "SnapStart": { "ApplyOn": "None" } }), ok.clone()),
            (serde_json::json!({ "SnapStart": { "ApplyOn": "PublishedVersions" } }), refused.clone()),
            (serde_json::json!({ "SnapStart": { "ApplyOn": "Always" } }), invalid.clone()),
            (serde_json::json!({ "CapacityProviderConfig": null }), ok.clone()),
            (serde_json::json!({ "CapacityProviderConfig": { "LambdaManagedInstancesCapacityProviderConfig": {} } }), refused.clone()),
            (serde_json::json!({ "DurableConfig": { "RetentionPeriodInDays": 7 } }), refused.clone()),
            (serde_json::json!({ "CodeSigningConfigArn": "" }), ok.clone()),
            (serde_json::json!({ "CodeSigningConfigArn": "arn:aws:lambda:us-east-1:123456789012:code-signing-config:csc-0" }), refused.clone()),
            (serde_json::json!({ "PublishTo": "LATEST_PUBLISHED" }), refused.clone()),
            (serde_json::json!({ "PublishTo": "EVERYWHERE" }), invalid.clone()),
            (serde_json::json!({ "TenancyConfig": { "TenantIsolationMode": "PER_TENANT" } }), refused.clone()),
            (serde_json::json!({ "KMSKeyArn": 5 }), Err("InvalidRequestContentException".to_string())),
        ];
        for (members, expected) in cases {
            assert_eq!(create(members.clone()), expected, "{members}");
        }
    }

    #[test]
    fn update_configuration_reads_the_shared_members() {
        let request: UpdateConfiguration = parse_body(br#"{"KMSKeyArn": "arn:aws:kms:us-east-1:1:key/k", "Timeout": 5}"#).unwrap();
        assert_eq!(request.settings.timeout, Some(5));
        assert_eq!(request.settings.absent.check_values().unwrap_err().error_type(), "InvalidParameterValueException");
        assert_eq!(no_source_kms(Some("k")).unwrap_err().error_type(), "InvalidParameterValueException");
        assert!(no_source_kms(Some("")).is_ok() && no_source_kms(None).is_ok() && no_publish_to(None).is_ok());
    }
}
