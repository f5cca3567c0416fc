//! Ignis's own network calls, signed with SigV4 for the service `ignis`, the administrator's key only:
//!
//! - `PUT /ignis/networks/{name}` with `{"Account": "123456789012", "Allow": ["10.20.0.0/16", ...]}`: makes the
//!   network `name` (`[A-Za-z0-9_-]{1,64}`, unique on the host) of `Account` (the administrator's when absent; it
//!   must exist), or sets the ranges of that account's network of that name. 200 with the network's JSON.
//! - `GET /ignis/networks`: `{"Networks": [{"Name", "Account", "Allow", "CreatedAt"}]}`, ordered by name.
//! - `DELETE /ignis/networks/{name}`: 204; refused while a function or a published version is attached to it. No
//!   write can attach a function to it meanwhile: function writes check their networks again inside the registry's
//!   write, and the delete looks for users again once the writes in flight are done (restoring the network if one
//!   got in).
//!
//! A network's ranges are read when an invocation's target is made: a change reaches the sandboxes started after
//! it, not those running (a function's sandboxes are reused until they end).
//!
//! Errors: 403 `AccessDeniedException` for any other key; 400 `ValidationException` for a bad name, account id,
//! range or count of ranges, `InvalidParameterValueException` for an IPv6 range; 404 `ResourceNotFoundException`
//! for an account or network that does not exist; 409 `ResourceConflictException` for a name another account
//! holds, or a network in use.

use std::sync::Arc;

use http::StatusCode;
use ignis_ids::AccountId;
use ignis_registry::{NetworkRecord, networks};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::function::{Violations, last_modified, parse_body};
use crate::http::{Answer, empty_answer, json_answer};
use crate::{App, Caller};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutNetwork {
    account: Option<String>,
    allow: Option<Vec<String>>,
}

/// Refuses every key but the administrator's.
fn admin_only(caller: &Caller, action: &str) -> Result<(), ApiError> {
    if caller.admin {
        return Ok(());
    }
    Err(ApiError::AccessDenied(format!(
        "User: {} is not authorized to perform: ignis:{action}: only the administrator's key may manage networks",
        ignis_ids::arn::account_root(caller.account.as_str())
    )))
}

pub async fn put_network(app: &Arc<App>, caller: &Caller, name: &str, body: &[u8]) -> Result<Answer, ApiError> {
    admin_only(caller, "PutNetwork")?;
    let request: PutNetwork = parse_body(body)?;
    networks::check_name(name)?;
    let account = match request.account.as_deref() {
        None => caller.account.clone(),
        Some(text) => {
            let mut v = Violations::default();
            let parsed = AccountId::parse(text);
            v.check(parsed.is_some(), text, "account", "Member must satisfy regular expression pattern: \\d{12}");
            v.into_result()?;
            parsed.unwrap_or_else(|| caller.account.clone())
        }
    };
    if !app.accounts.list().iter().any(|a| a.id == account) {
        return Err(ApiError::ResourceNotFound(format!("Account not found: {account}")));
    }
    let allow = networks::parse_allow(request.allow.as_deref().unwrap_or_default())?;
    let record = NetworkRecord {
        name: name.to_string(),
        account: account.as_str().to_string(),
        allow,
        created_ms: crate::control::now(app),
    };
    let stored = app.networks.put(record).await?;
    Ok(json_answer(StatusCode::OK, network(&stored)))
}

pub fn list_networks(app: &App, caller: &Caller) -> Result<Answer, ApiError> {
    admin_only(caller, "ListNetworks")?;
    let networks: Vec<Value> = app.networks.list().iter().map(|n| network(n)).collect();
    Ok(json_answer(StatusCode::OK, json!({ "Networks": networks })))
}

pub async fn delete_network(app: &Arc<App>, caller: &Caller, name: &str) -> Result<Answer, ApiError> {
    admin_only(caller, "DeleteNetwork")?;
    let Some(current) = app.networks.get(name) else {
        return Err(ApiError::ResourceNotFound(format!("Network not found: {name}")));
    };
    refuse_if_used(app, &current)?;
    app.networks.delete(name).await?;
    // A function write that checked the network before it went may still be storing: once every write in flight
    // is done (the registry serialises them all), none can attach to it any more (each checks again inside its
    // write, `vpc_config::still_there`), so a use found now is one that got in before, and the network comes back.
    let account = AccountId::new(current.account.clone());
    app.registry.write(&account, name, Box::new(|_| None)).await?;
    if let Err(in_use) = refuse_if_used(app, &current) {
        app.networks.put((*current).clone()).await?;
        return Err(in_use);
    }
    Ok(empty_answer(StatusCode::NO_CONTENT))
}

/// Lambda's conflict when a function or published version is attached to `network`.
fn refuse_if_used(app: &App, network: &NetworkRecord) -> Result<(), ApiError> {
    let users = users(app, network);
    if users.is_empty() {
        return Ok(());
    }
    Err(ApiError::ResourceConflict(format!(
        "Network {} is in use by {}: detach them (UpdateFunctionConfiguration with empty VpcConfig lists) and \
         delete the versions first",
        network.name,
        listed(&users)
    )))
}

/// The functions (`name`) and published versions (`name:N`) of the network's account attached to `network`.
fn users(app: &App, network: &NetworkRecord) -> Vec<String> {
    let account = AccountId::new(network.account.clone());
    let mut users = Vec::new();
    for latest in app.registry.list(&account) {
        for record in std::iter::once(&*latest).chain(latest.versions.iter()) {
            if record.vpc.as_ref().is_some_and(|vpc| vpc.subnets.contains(&network.name)) {
                users.push(match record.version {
                    Some(n) => format!("{}:{n}", record.name),
                    None => record.name.clone(),
                });
            }
        }
    }
    users
}

/// `names`, the first few of them if many.
fn listed(names: &[String]) -> String {
    const SHOWN: usize = 5;
    match names.len() {
        n if n > SHOWN => format!("{} and {} more", names[..SHOWN].join(", "), n - SHOWN),
        _ => names.join(", "),
    }
}

fn network(record: &NetworkRecord) -> Value {
    json!({
        "Name": record.name,
        "Account": record.account,
        "Allow": record.allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "CreatedAt": last_modified(record.created_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_of_users_are_cut() {
        let names: Vec<String> = (1..=7).map(|i| format!("f{i}")).collect();
        assert_eq!(listed(&names[..2]), "f1, f2");
        assert_eq!(listed(&names[..5]), "f1, f2, f3, f4, f5");
        assert_eq!(listed(&names), "f1, f2, f3, f4, f5 and 2 more");
    }

    #[test]
    fn only_the_administrator_manages_networks() {
        let account = AccountId::new("123456789012");
        assert!(admin_only(&Caller { account: account.clone(), admin: true, session: None }, "PutNetwork").is_ok());
        let refused = admin_only(&Caller { account, admin: false, session: None }, "PutNetwork").unwrap_err();
        assert_eq!(refused.error_type(), "AccessDeniedException");
    }
}
