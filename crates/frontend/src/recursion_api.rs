//! Put/GetFunctionRecursionConfig: whether a chain of destination records that reaches the function is stopped at
//! Lambda's limit (`Terminate`, the default) or let run (`Allow`); the pollers read it (`ignis_pollers`'s
//! `MAX_CHAIN`). Kept in `$LATEST`'s record, for the function as a whole.

use std::sync::Arc;

use http::StatusCode;
use ignis_registry::RegistryError;
use serde::Deserialize;
use serde_json::json;

use crate::control::{latest_only, resolve};
use crate::error::ApiError;
use crate::function::{Violations, parse_body};
use crate::http::{Answer, json_answer};
use crate::{App, Caller};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecursionIn {
    recursive_loop: Option<String>,
}

fn wire(allowed: bool) -> serde_json::Value {
    json!({ "RecursiveLoop": if allowed { "Allow" } else { "Terminate" } })
}

pub async fn put(app: &Arc<App>, caller: &Caller, name: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let request: RecursionIn = parse_body(body)?;
    let mut v = Violations::default();
    let allowed = match request.recursive_loop.as_deref() {
        Some("Allow") => true,
        Some("Terminate") => false,
        Some(other) => {
            v.check(false, other, "recursiveLoop", "Member must satisfy enum value set: [Terminate, Allow]");
            false
        }
        None => {
            v.check(false, "null", "recursiveLoop", "Member must not be null");
            false
        }
    };
    v.into_result()?;
    let (reference, record) = resolve(app, caller, "PutFunctionRecursionConfig", name, None)?;
    latest_only(&reference)?;
    let arn = record.arn(&app.config.region, caller.account.as_str());
    app.registry
        .update(&caller.account, &reference.name, |current| -> Result<_, ApiError> {
            let mut record = current.ok_or(RegistryError::FunctionNotFound { function: arn })?.clone();
            record.recursion_allowed = allowed;
            Ok(record)
        })
        .await?;
    Ok(json_answer(StatusCode::OK, wire(allowed)))
}

pub fn get(app: &App, caller: &Caller, name: &str) -> Result<Answer, ApiError> {
    let (reference, record) = resolve(app, caller, "GetFunctionRecursionConfig", name, None)?;
    latest_only(&reference)?;
    Ok(json_answer(StatusCode::OK, wire(record.recursion_allowed)))
}
