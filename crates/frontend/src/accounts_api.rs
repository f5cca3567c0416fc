//! Ignis's own account calls, signed with SigV4 for the service `ignis`, for
//! the administrator's key only:
//!
//! - `POST /ignis/accounts` with `{"Name": "..."}` → 201
//!   `{"AccountId", "Name", "AccessKeyId", "SecretAccessKey"}`: a new account and
//!   its first key pair. This answer is the only place the secret ever appears.
//! - `GET /ignis/accounts` → 200 `{"Accounts": [{"AccountId", "Name", "CreatedAt",
//!   "Administrator"}]}`, ordered by name; no secrets.
//!
//! Errors: 403 `AccessDeniedException` for any other key, 400
//! `ValidationException` for a name that is not 1–64 of `[A-Za-z0-9-_]`, 409
//! `ResourceConflictException` for a name already taken (names are compared
//! exactly).
//!
//! The accounts themselves are the accounts service's (`ignis_registry::Accounts`):
//! it serialises creation, stores it durably and makes the new key usable
//! before answering; listing reads its memory.

use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::function::{Violations, last_modified, parse_body, valid_name};
use crate::http::{Answer, json_answer};
use crate::{App, Caller};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateAccount {
    name: Option<String>,
}

fn admin_only(caller: &Caller, action: &str) -> Result<(), ApiError> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::AccessDenied(format!(
            "User: {} is not authorized to perform: ignis:{action}: only the administrator's key may manage accounts",
            ignis_ids::arn::account_root(caller.account.as_str())
        )))
    }
}

pub async fn create_account(app: &Arc<App>, caller: &Caller, body: &[u8]) -> Result<Answer, ApiError> {
    admin_only(caller, "CreateAccount")?;
    let request: CreateAccount = parse_body(body)?;
    let name = request.name.unwrap_or_default();
    let mut v = Violations::default();
    v.check(!name.is_empty(), &name, "name", "Member must have length greater than or equal to 1");
    v.check(name.len() <= 64, &name, "name", "Member must have length less than or equal to 64");
    v.check(
        name.is_empty() || name.len() > 64 || valid_name(&name),
        &name,
        "name",
        "Member must satisfy regular expression pattern: [a-zA-Z0-9-_]+",
    );
    v.into_result()?;
    let (account, key) = app.accounts.create(&name).await?;
    let body = json!({
        "AccountId": account.id.as_str(),
        "Name": account.name,
        "AccessKeyId": key.access_key_id,
        "SecretAccessKey": key.secret_access_key,
    });
    Ok(json_answer(StatusCode::CREATED, body))
}

pub async fn list_accounts(app: &Arc<App>, caller: &Caller) -> Result<Answer, ApiError> {
    admin_only(caller, "ListAccounts")?;
    let mut accounts = app.accounts.list();
    accounts.sort_by(|a, b| a.name.cmp(&b.name));
    let accounts: Vec<_> = accounts
        .iter()
        .map(|a| {
            json!({
                "AccountId": a.id.as_str(),
                "Name": a.name,
                "CreatedAt": last_modified(a.created_ms),
                "Administrator": a.id == app.config.admin_account,
            })
        })
        .collect();
    Ok(json_answer(StatusCode::OK, json!({ "Accounts": accounts })))
}
