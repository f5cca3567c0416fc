//! Lambda's REST operations by method and path (from the API's model), to name the operation a request asks for
//! when Ignis does not serve it: routing (`http::route`) answers such a request with Lambda's
//! `UnknownOperationException` (404), naming the operation, or, for a method and path that are no Lambda
//! operation, the method and path asked for.

use crate::error::ApiError;

/// Longest part of a request's path an error repeats.
const MAX_PATH_SHOWN: usize = 256;

/// Every operation of Lambda's REST API (2015-03-31 model): name, method, path template (a `{Label}` is one path
/// segment; a query after `?` is not matched).
pub const LAMBDA_OPERATIONS: &[(&str, &str, &str)] = &[
    ("InvokeAsync", "POST", "/2014-11-13/functions/{FunctionName}/invoke-async"),
    ("CreateEventSourceMapping", "POST", "/2015-03-31/event-source-mappings"),
    ("ListEventSourceMappings", "GET", "/2015-03-31/event-source-mappings"),
    ("DeleteEventSourceMapping", "DELETE", "/2015-03-31/event-source-mappings/{UUID}"),
    ("GetEventSourceMapping", "GET", "/2015-03-31/event-source-mappings/{UUID}"),
    ("UpdateEventSourceMapping", "PUT", "/2015-03-31/event-source-mappings/{UUID}"),
    ("CreateFunction", "POST", "/2015-03-31/functions"),
    ("ListFunctions", "GET", "/2015-03-31/functions"),
    ("DeleteFunction", "DELETE", "/2015-03-31/functions/{FunctionName}"),
    ("GetFunction", "GET", "/2015-03-31/functions/{FunctionName}"),
    ("CreateAlias", "POST", "/2015-03-31/functions/{FunctionName}/aliases"),
    ("ListAliases", "GET", "/2015-03-31/functions/{FunctionName}/aliases"),
    ("DeleteAlias", "DELETE", "/2015-03-31/functions/{FunctionName}/aliases/{Name}"),
    ("GetAlias", "GET", "/2015-03-31/functions/{FunctionName}/aliases/{Name}"),
    ("UpdateAlias", "PUT", "/2015-03-31/functions/{FunctionName}/aliases/{Name}"),
    ("UpdateFunctionCode", "PUT", "/2015-03-31/functions/{FunctionName}/code"),
    ("GetFunctionConfiguration", "GET", "/2015-03-31/functions/{FunctionName}/configuration"),
    ("UpdateFunctionConfiguration", "PUT", "/2015-03-31/functions/{FunctionName}/configuration"),
    ("Invoke", "POST", "/2015-03-31/functions/{FunctionName}/invocations"),
    ("AddPermission", "POST", "/2015-03-31/functions/{FunctionName}/policy"),
    ("GetPolicy", "GET", "/2015-03-31/functions/{FunctionName}/policy"),
    ("RemovePermission", "DELETE", "/2015-03-31/functions/{FunctionName}/policy/{StatementId}"),
    ("ListVersionsByFunction", "GET", "/2015-03-31/functions/{FunctionName}/versions"),
    ("PublishVersion", "POST", "/2015-03-31/functions/{FunctionName}/versions"),
    ("GetAccountSettings", "GET", "/2016-08-19/account-settings"),
    ("ListTags", "GET", "/2017-03-31/tags/{Resource}"),
    ("TagResource", "POST", "/2017-03-31/tags/{Resource}"),
    ("UntagResource", "DELETE", "/2017-03-31/tags/{Resource}"),
    ("DeleteFunctionConcurrency", "DELETE", "/2017-10-31/functions/{FunctionName}/concurrency"),
    ("PutFunctionConcurrency", "PUT", "/2017-10-31/functions/{FunctionName}/concurrency"),
    ("ListLayers", "GET", "/2018-10-31/layers"),
    ("ListLayerVersions", "GET", "/2018-10-31/layers/{LayerName}/versions"),
    ("PublishLayerVersion", "POST", "/2018-10-31/layers/{LayerName}/versions"),
    ("DeleteLayerVersion", "DELETE", "/2018-10-31/layers/{LayerName}/versions/{VersionNumber}"),
    ("GetLayerVersion", "GET", "/2018-10-31/layers/{LayerName}/versions/{VersionNumber}"),
    ("AddLayerVersionPermission", "POST", "/2018-10-31/layers/{LayerName}/versions/{VersionNumber}/policy"),
    ("GetLayerVersionPolicy", "GET", "/2018-10-31/layers/{LayerName}/versions/{VersionNumber}/policy"),
    ("RemoveLayerVersionPermission", "DELETE", "/2018-10-31/layers/{LayerName}/versions/{VersionNumber}/policy/{StatementId}"),
    ("GetLayerVersionByArn", "GET", "/2018-10-31/layers?find=LayerVersion"),
    ("DeleteFunctionEventInvokeConfig", "DELETE", "/2019-09-25/functions/{FunctionName}/event-invoke-config"),
    ("GetFunctionEventInvokeConfig", "GET", "/2019-09-25/functions/{FunctionName}/event-invoke-config"),
    ("PutFunctionEventInvokeConfig", "PUT", "/2019-09-25/functions/{FunctionName}/event-invoke-config"),
    ("UpdateFunctionEventInvokeConfig", "POST", "/2019-09-25/functions/{FunctionName}/event-invoke-config"),
    ("ListFunctionEventInvokeConfigs", "GET", "/2019-09-25/functions/{FunctionName}/event-invoke-config/list"),
    ("GetFunctionConcurrency", "GET", "/2019-09-30/functions/{FunctionName}/concurrency"),
    ("DeleteProvisionedConcurrencyConfig", "DELETE", "/2019-09-30/functions/{FunctionName}/provisioned-concurrency"),
    ("GetProvisionedConcurrencyConfig", "GET", "/2019-09-30/functions/{FunctionName}/provisioned-concurrency"),
    ("PutProvisionedConcurrencyConfig", "PUT", "/2019-09-30/functions/{FunctionName}/provisioned-concurrency"),
    ("ListProvisionedConcurrencyConfigs", "GET", "/2019-09-30/functions/{FunctionName}/provisioned-concurrency?List=ALL"),
    ("CreateCodeSigningConfig", "POST", "/2020-04-22/code-signing-configs"),
    ("ListCodeSigningConfigs", "GET", "/2020-04-22/code-signing-configs"),
    ("DeleteCodeSigningConfig", "DELETE", "/2020-04-22/code-signing-configs/{CodeSigningConfigArn}"),
    ("GetCodeSigningConfig", "GET", "/2020-04-22/code-signing-configs/{CodeSigningConfigArn}"),
    ("UpdateCodeSigningConfig", "PUT", "/2020-04-22/code-signing-configs/{CodeSigningConfigArn}"),
    ("ListFunctionsByCodeSigningConfig", "GET", "/2020-04-22/code-signing-configs/{CodeSigningConfigArn}/functions"),
    ("DeleteFunctionCodeSigningConfig", "DELETE", "/2020-06-30/functions/{FunctionName}/code-signing-config"),
    ("GetFunctionCodeSigningConfig", "GET", "/2020-06-30/functions/{FunctionName}/code-signing-config"),
    ("PutFunctionCodeSigningConfig", "PUT", "/2020-06-30/functions/{FunctionName}/code-signing-config"),
    ("GetRuntimeManagementConfig", "GET", "/2021-07-20/functions/{FunctionName}/runtime-management-config"),
    ("PutRuntimeManagementConfig", "PUT", "/2021-07-20/functions/{FunctionName}/runtime-management-config"),
    ("CreateFunctionUrlConfig", "POST", "/2021-10-31/functions/{FunctionName}/url"),
    ("DeleteFunctionUrlConfig", "DELETE", "/2021-10-31/functions/{FunctionName}/url"),
    ("GetFunctionUrlConfig", "GET", "/2021-10-31/functions/{FunctionName}/url"),
    ("UpdateFunctionUrlConfig", "PUT", "/2021-10-31/functions/{FunctionName}/url"),
    ("ListFunctionUrlConfigs", "GET", "/2021-10-31/functions/{FunctionName}/urls"),
    ("InvokeWithResponseStream", "POST", "/2021-11-15/functions/{FunctionName}/response-streaming-invocations"),
    ("GetFunctionRecursionConfig", "GET", "/2024-08-31/functions/{FunctionName}/recursion-config"),
    ("PutFunctionRecursionConfig", "PUT", "/2024-08-31/functions/{FunctionName}/recursion-config"),
    ("CreateCapacityProvider", "POST", "/2025-11-30/capacity-providers"),
    ("ListCapacityProviders", "GET", "/2025-11-30/capacity-providers"),
    ("DeleteCapacityProvider", "DELETE", "/2025-11-30/capacity-providers/{CapacityProviderName}"),
    ("GetCapacityProvider", "GET", "/2025-11-30/capacity-providers/{CapacityProviderName}"),
    ("UpdateCapacityProvider", "PUT", "/2025-11-30/capacity-providers/{CapacityProviderName}"),
    ("ListFunctionVersionsByCapacityProvider", "GET", "/2025-11-30/capacity-providers/{CapacityProviderName}/function-versions"),
    ("GetFunctionScalingConfig", "GET", "/2025-11-30/functions/{FunctionName}/function-scaling-config"),
    ("PutFunctionScalingConfig", "PUT", "/2025-11-30/functions/{FunctionName}/function-scaling-config"),
    ("SendDurableExecutionCallbackFailure", "POST", "/2025-12-01/durable-execution-callbacks/{CallbackId}/fail"),
    ("SendDurableExecutionCallbackHeartbeat", "POST", "/2025-12-01/durable-execution-callbacks/{CallbackId}/heartbeat"),
    ("SendDurableExecutionCallbackSuccess", "POST", "/2025-12-01/durable-execution-callbacks/{CallbackId}/succeed"),
    ("GetDurableExecution", "GET", "/2025-12-01/durable-executions/{DurableExecutionArn}"),
    ("CheckpointDurableExecution", "POST", "/2025-12-01/durable-executions/{DurableExecutionArn}/checkpoint"),
    ("GetDurableExecutionHistory", "GET", "/2025-12-01/durable-executions/{DurableExecutionArn}/history"),
    ("GetDurableExecutionState", "GET", "/2025-12-01/durable-executions/{DurableExecutionArn}/state"),
    ("StopDurableExecution", "POST", "/2025-12-01/durable-executions/{DurableExecutionArn}/stop"),
    ("ListDurableExecutionsByFunction", "GET", "/2025-12-01/functions/{FunctionName}/durable-executions"),
];

/// Whether `path` (without its query) fits `template`.
fn fits(template: &str, path: &str) -> bool {
    let template = template.split('?').next().unwrap_or(template);
    let mut want = template.trim_matches('/').split('/');
    let mut have = path.trim_matches('/').split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return true,
            (Some(w), Some(h)) if (w.starts_with('{') && w.ends_with('}') && !h.is_empty()) || w == h => {}
            _ => return false,
        }
    }
}

/// The Lambda operation `method` on `path` is, if any.
pub fn operation_at(method: &str, path: &str) -> Option<(&'static str, &'static str)> {
    LAMBDA_OPERATIONS.iter().find(|(_, m, template)| *m == method && fits(template, path)).map(|(name, _, template)| (*name, *template))
}

/// Lambda's `UnknownOperationException` for a request no operation of Ignis takes.
pub fn unknown(method: &str, path: &str) -> ApiError {
    match operation_at(method, path) {
        Some((name, template)) => ApiError::UnknownOperation(format!(
            "Ignis does not implement the Lambda operation {name} ({method} {template})."
        )),
        None => {
            let shown: String = path.chars().take(MAX_PATH_SHOWN).collect();
            let cut = if shown.len() < path.len() { "..." } else { "" };
            ApiError::UnknownOperation(format!(
                "Unknown operation {method} {shown}{cut}: neither the Lambda API nor Ignis's own has an operation with this method and path."
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_named_by_method_and_path() {
        let check = |method: &str, path: &str, expected: Option<&str>| {
            assert_eq!(operation_at(method, path).map(|(name, _)| name), expected, "{method} {path}");
        };
        check("POST", "/2015-03-31/functions/f/policy", Some("AddPermission"));
        check("DELETE", "/2015-03-31/functions/f/policy/sid-1", Some("RemovePermission"));
        check("GET", "/2021-10-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Af/url", Some("GetFunctionUrlConfig"));
        check("PUT", "/2024-08-31/functions/f/recursion-config", Some("PutFunctionRecursionConfig"));
        check("GET", "/2020-04-22/code-signing-configs/", Some("ListCodeSigningConfigs"));
        check("GET", "/2015-03-31/functions/f", Some("GetFunction"));
        check("PATCH", "/2015-03-31/functions/f", None);
        check("GET", "/2015-03-31/functions//policy", None);
        check("GET", "/2015-03-31/functions/f/policy/extra/more", None);
        check("GET", "/nothing", None);
        // Each name once, each a method Lambda uses.
        let mut names: Vec<&str> = LAMBDA_OPERATIONS.iter().map(|(name, _, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), LAMBDA_OPERATIONS.len());
        assert!(LAMBDA_OPERATIONS.iter().all(|(_, m, t)| ["GET", "POST", "PUT", "DELETE"].contains(m) && t.starts_with('/')));
    }

    #[test]
    fn the_error_names_the_operation_or_the_request() {
        let named = unknown("POST", "/2015-03-31/functions/f/policy");
        assert_eq!((named.error_type(), named.message()), (
            "UnknownOperationException",
            "Ignis does not implement the Lambda operation AddPermission (POST /2015-03-31/functions/{FunctionName}/policy).",
        ));
        let other = unknown("GET", "/nothing/here");
        assert!(other.message().starts_with("Unknown operation GET /nothing/here: "), "{}", other.message());
        let long = unknown("GET", &format!("/{}", "x".repeat(5000)));
        assert!(long.message().len() < 400 && long.message().contains("x..."), "{}", long.message());
    }
}
