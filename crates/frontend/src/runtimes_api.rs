//! Ignis's own runtime calls, signed with SigV4 for the service `ignis`:
//!
//! - `PUT /ignis/runtimes/{name}` with `{"ImageUri": "REPOSITORY[:TAG|@DIGEST]"}`, the administrator's key only: the
//!   image (in the administrator's own repositories, as `ignis runtime build` and `import` push it) becomes the
//!   base of runtime `name`: resolved to its digest and prepared now, as an image function's image is, then
//!   installed (replacing what the name had; functions keep the base they have until their code or configuration
//!   changes). 200 with the runtime's JSON.
//! - `GET /ignis/runtimes`, any key: `{"Runtimes": [{"Name", "ImageUri", "ResolvedImageUri", "InstalledAt"}]}`,
//!   ordered by name.
//!
//! Errors: 403 `AccessDeniedException` for another key's PUT, 400 `ValidationException` for a name that is not one
//! of Lambda's runtimes (`RUNTIMES`), the image's errors as CreateFunction gives them.

use std::sync::Arc;

use http::StatusCode;
use ignis_registry::RuntimeRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::function::{Violations, last_modified, parse_body};
use crate::http::{Answer, json_answer};
use crate::{App, Caller};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRuntime {
    image_uri: Option<String>,
}

pub async fn put_runtime(app: &Arc<App>, caller: &Caller, name: &str, body: &[u8]) -> Result<Answer, ApiError> {
    if !caller.admin {
        return Err(ApiError::AccessDenied(format!(
            "User: {} is not authorized to perform: ignis:PutRuntime: only the administrator's key may install runtimes",
            ignis_ids::arn::account_root(caller.account.as_str())
        )));
    }
    let request: PutRuntime = parse_body(body)?;
    crate::function::check_runtime_name(name)?;
    let uri = request.image_uri.unwrap_or_default();
    let mut v = Violations::default();
    v.check(!uri.is_empty(), "null", "imageUri", "Member must not be null");
    v.into_result()?;
    let image = crate::function_image::resolve(app, caller, &uri).await?;
    let record = RuntimeRecord {
        name: name.to_string(),
        account: caller.account.as_str().to_string(),
        image,
        installed_ms: crate::control::now(app),
    };
    app.runtimes.put(record.clone()).await?;
    Ok(json_answer(StatusCode::OK, runtime(&record)))
}

pub async fn list_runtimes(app: &Arc<App>) -> Result<Answer, ApiError> {
    let runtimes: Vec<Value> = app.runtimes.list().iter().map(|r| runtime(r)).collect();
    Ok(json_answer(StatusCode::OK, json!({ "Runtimes": runtimes })))
}

fn runtime(record: &RuntimeRecord) -> Value {
    json!({
        "Name": record.name,
        "ImageUri": record.image.image_uri,
        "ResolvedImageUri": record.image.resolved_image_uri,
        "InstalledAt": last_modified(record.installed_ms),
    })
}

/// Gives every zip function and version stored without a runtime base (from before its runtime was installed) the
/// base its runtime has now (`FunctionRecord::with_bases`), so that none runs on the host's `/usr` once its runtime
/// is installed; answers how many functions changed. The server runs it at start, once its runtimes are installed.
pub async fn adopt_bases(app: &App) -> Result<usize, ignis_registry::RegistryError> {
    let mut changed = 0;
    for (account, record) in app.registry.all() {
        let installed = |name: &str| app.runtimes.get(name).map(|runtime| (*runtime).clone());
        if record.with_bases(installed).is_none() {
            continue;
        }
        let change = Box::new(move |current: Option<&ignis_registry::FunctionRecord>| current?.with_bases(installed));
        let written = app.registry.write(&account, &record.name, change).await?;
        changed += usize::from(written.is_some());
    }
    Ok(changed)
}
