//! Entry points for the fuzz targets in `fuzz/` (feature `fuzz`, never on in
//! the server): each runs the real parsing and checking code that a client's
//! bytes go through, without a server around it. None of them may panic,
//! whatever they are given; errors are the expected answer to most inputs.

use http::{HeaderMap, HeaderValue, Method};

use crate::function::{self as f, Violations};

/// Routing and query parsing: method, path, query and `X-Amz-Target` as a
/// client sends them.
pub fn route(method: &str, path: &str, query: &str, target: &str) {
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(target) {
        headers.insert("x-amz-target", value);
    }
    // A routed SQS or Logs operation is exactly the action the target names.
    match crate::http::route(&method, path, query, &headers) {
        Ok(crate::http::Operation::Sqs(action)) => assert_eq!(target, format!("AmazonSQS.{}", action.name())),
        Ok(crate::http::Operation::Logs(action)) => assert_eq!(target, format!("Logs_20140328.{}", action.name())),
        _ => {}
    }
    crate::http::query_params(query);
    let _ = crate::versions::paging(query);
}

/// The Lambda and CloudWatch Logs bodies: `kind` picks the operation.
pub fn lambda_body(kind: u8, body: &[u8]) {
    const ACCOUNT: &str = "123456789012";
    match kind % 10 {
        0 => {
            let Ok(request) = f::parse_body::<f::CreateFunction>(body) else { return };
            let mut v = Violations::default();
            request.settings.check_model(&mut v);
            if v.into_result().is_err() {
                return;
            }
            if let Some(name) = &request.function_name {
                let _ = f::parse_function_ref(name, "functionName");
            }
            let _ = request.settings.check_values();
            let _ = f::check_architectures(request.architectures.as_deref());
            applied(request.settings);
        }
        1 => {
            let Ok(request) = f::parse_body::<f::UpdateConfiguration>(body) else { return };
            let mut v = Violations::default();
            request.settings.check_model(&mut v);
            if v.into_result().is_ok() && request.settings.check_values().is_ok() {
                applied(request.settings);
            }
        }
        2 => {
            let Ok(request) = f::parse_body::<f::UpdateCode>(body) else { return };
            let _ = f::check_architectures(request.architectures.as_deref());
        }
        3 => {
            let _ = f::parse_body::<f::PutConcurrency>(body);
            let _ = f::parse_body::<crate::versions::PublishVersionIn>(body);
        }
        4 => crate::versions::check_alias_body(body),
        5 => crate::event_config::check_body(ACCOUNT, body),
        6 => crate::mappings_api::check_body(body),
        7 => {
            // A function's response to a batch with ReportBatchItemFailures.
            ignis_pollers::mapping::settle(&["a", "b", "c"], ignis_pollers::mapping::Ran::Succeeded(body), true);
        }
        8 => {
            let text = String::from_utf8_lossy(body);
            let _ = crate::invoke_api::client_context(Some(&text));
            let _ = f::parse_function_ref(&text, "functionName");
            ignis_pollers::parse_destination(ACCOUNT, &text);
        }
        _ => {
            for action in ["FilterLogEvents", "GetLogEvents", "DescribeLogGroups", "DescribeLogStreams", "PutRetentionPolicy"] {
                crate::logs_api::check_body(action, body);
            }
        }
    }
}

/// The SQS bodies: `kind` picks the action.
pub fn sqs_body(kind: u8, body: &[u8]) {
    const ACTIONS: [&str; 8] = [
        "CreateQueue",
        "SetQueueAttributes",
        "SendMessage",
        "SendMessageBatch",
        "ReceiveMessage",
        "ChangeMessageVisibilityBatch",
        "ListQueues",
        "GetQueueAttributes",
    ];
    crate::sqs_api::check_body(ACTIONS[usize::from(kind) % ACTIONS.len()], body);
}

/// Applies checked settings to a function and renders its configuration.
fn applied(settings: f::Settings) {
    let mut record: ignis_registry::FunctionRecord = serde_json::from_str(
        r#"{"name": "f", "runtime": "provided.al2023", "role": "", "handler": "bootstrap", "description": "",
            "memory_mb": 128, "timeout_s": 3, "ephemeral_mb": 512, "environment": {}, "architecture": "x86_64",
            "code_sha256_hex": "", "code_sha256": "", "code_size": 0, "last_modified_ms": 0, "revision_id": "r"}"#,
    )
    .expect("a valid record");
    if settings.apply(&mut record).is_err() {
        return;
    }
    f::configuration(&record, "us-east-1", &ignis_ids::AccountId::new("123456789012"));
}
