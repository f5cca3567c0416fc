//! Resource-based policies: AddPermission (`POST /2015-03-31/functions/{name}/policy`), RemovePermission
//! (`DELETE .../policy/{StatementId}`) and GetPolicy (`GET .../policy`), each on the unqualified function,
//! a version or an alias (`Qualifier=`, or the name's own qualifier): each has a policy of its own
//! (`ignis_registry::policy`), kept in `$LATEST`'s record. Lambda takes no policy on `$LATEST`
//! ("We currently do not support adding policies for $LATEST."); GetPolicy and RemovePermission with
//! `$LATEST` read the unqualified function's.
//!
//! The document is Lambda's: `{"Version": "2012-10-17", "Id": "default", "Statement": [...]}`, each
//! statement `{Sid, Effect: "Allow", Principal, Action, Resource, Condition}`, the principal `"*"`,
//! `{"AWS": "arn:aws:iam::ID:root"}` for an account, `{"AWS": ARN}` for a role or user, or
//! `{"Service": NAME}`; `Resource` the function's ARN, qualified when the policy is a version's or an
//! alias's; the conditions `StringEquals` (`AWS:SourceAccount`, `lambda:FunctionUrlAuthType`,
//! `aws:PrincipalOrgID`, `lambda:EventSourceToken`), `ArnLike` (`AWS:SourceArn`) and `Bool`
//! (`lambda:InvokedViaFunctionUrl`). A policy's `RevisionId` is its own and changes with every statement
//! added or removed (Lambda shows the function's or alias's there; Ignis keeps that one for the code and
//! configuration, whose sandboxes it names, so a permission does not retire warm sandboxes).

use std::sync::Arc;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use ignis_registry::policy::{self, MAX_POLICY_BYTES, Policy, Principal, Statement};
use ignis_registry::{FunctionRecord, FunctionRef, RegistryError};

use crate::control::{new_revision, qualifier_param, resolve};
use crate::error::ApiError;
use crate::function::{Violations, parse_body};
use crate::http::{Answer, empty_answer, json_answer, query_params};
use crate::{App, Caller};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddPermissionIn {
    statement_id: Option<String>,
    action: Option<String>,
    principal: Option<String>,
    source_arn: Option<String>,
    source_account: Option<String>,
    event_source_token: Option<String>,
    #[serde(rename = "PrincipalOrgID")]
    principal_org_id: Option<String>,
    revision_id: Option<String>,
    function_url_auth_type: Option<String>,
    invoked_via_function_url: Option<bool>,
}

impl AddPermissionIn {
    /// Lambda's model (`ValidationException`, every violation listed), then the principal
    /// (`InvalidParameterValueException`); the statement to add.
    fn into_statement(self) -> Result<Statement, ApiError> {
        let mut v = Violations::default();
        let required = |value: &Option<String>, field: &str, v: &mut Violations| {
            v.check(value.is_some(), "null", field, "Member must not be null");
        };
        required(&self.statement_id, "statementId", &mut v);
        required(&self.action, "action", &mut v);
        required(&self.principal, "principal", &mut v);
        if let Some(sid) = &self.statement_id {
            v.check((1..=100).contains(&sid.len()), sid, "statementId", "Member must have length between 1 and 100");
            v.check(word(sid, b"-_"), sid, "statementId", "Member must satisfy regular expression pattern: ([a-zA-Z0-9-_]+)");
        }
        if let Some(action) = &self.action {
            v.check(valid_action(action), action, "action", "Member must satisfy regular expression pattern: (lambda:[*]|lambda:[a-zA-Z]+|[*])");
        }
        if let Some(principal) = &self.principal {
            let ok = !principal.is_empty() && !principal.contains(char::is_whitespace);
            v.check(ok, principal, "principal", "Member must satisfy regular expression pattern: [^\\s]+");
        }
        if let Some(arn) = &self.source_arn {
            v.check(valid_source_arn(arn), arn, "sourceArn", SOURCE_ARN_PATTERN);
        }
        if let Some(account) = &self.source_account {
            let ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
            v.check(ok, account, "sourceAccount", "Member must satisfy regular expression pattern: \\d{12}");
        }
        if let Some(token) = &self.event_source_token {
            v.check(token.len() <= 256, token, "eventSourceToken", "Member must have length less than or equal to 256");
            v.check(word(token, b"._-"), token, "eventSourceToken", "Member must satisfy regular expression pattern: [a-zA-Z0-9._\\-]+");
        }
        if let Some(org) = &self.principal_org_id {
            let ok = org.strip_prefix("o-").is_some_and(|id| {
                (10..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
            v.check(ok, org, "principalOrgID", "Member must satisfy regular expression pattern: o-[a-z0-9]{10,32}");
        }
        if let Some(auth) = &self.function_url_auth_type {
            v.check(auth == "NONE" || auth == "AWS_IAM", auth, "functionUrlAuthType", "Member must satisfy enum value set: [AWS_IAM, NONE]");
        }
        v.into_result()?;
        let (Some(sid), Some(action), Some(principal)) = (self.statement_id, self.action, self.principal) else {
            return Err(ApiError::Service("a required member was not checked".into()));
        };
        if Principal::parse(&principal).is_none() {
            return Err(ApiError::InvalidParameterValue("The provided principal was invalid. Please check the principal and try again.".into()));
        }
        Ok(Statement {
            source_arn: self.source_arn,
            source_account: self.source_account,
            event_source_token: self.event_source_token,
            principal_org_id: self.principal_org_id,
            function_url_auth_type: self.function_url_auth_type,
            invoked_via_function_url: self.invoked_via_function_url,
            ..Statement::new(sid, action, principal)
        })
    }
}

const SOURCE_ARN_PATTERN: &str =
    "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\\-])+:([a-z]{2}(-gov)?-[a-z]+-\\d{1})?:(\\d{12})?:(.*)";

/// Non-empty, of ASCII letters, digits and `extra`.
fn word(text: &str, extra: &[u8]) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// `(lambda:[*]|lambda:[a-zA-Z]+|[*])`.
fn valid_action(action: &str) -> bool {
    action == "*" || action.strip_prefix("lambda:").is_some_and(|a| a == "*" || (!a.is_empty() && a.bytes().all(|b| b.is_ascii_alphabetic())))
}

/// Lambda's `SourceArn` pattern: `arn:aws...:SERVICE:[REGION]:[ACCOUNT]:RESOURCE`.
fn valid_source_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, service, region, account, _] => {
            partition.strip_prefix("aws").is_some_and(|p| p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
                && word(service, b"-")
                && (region.is_empty() || valid_region(region))
                && (account.is_empty() || (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())))
        }
        _ => false,
    }
}

/// `[a-z]{2}(-gov)?-[a-z]+-\d{1}`.
fn valid_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let lower = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase());
    let digit = |p: &str| p.len() == 1 && p.bytes().all(|b| b.is_ascii_digit());
    match parts.as_slice() {
        [geo, area, n] => geo.len() == 2 && lower(geo) && lower(area) && digit(n),
        [geo, "gov", area, n] => geo.len() == 2 && lower(geo) && lower(area) && digit(n),
        _ => false,
    }
}

/// What a policy call names: the caller's function and the key of the policy (`policy::key`), with the ARN
/// its statements show as their `Resource`.
struct PolicyTarget {
    function: String,
    key: String,
    resource: String,
}

fn policy_target(app: &App, caller: &Caller, action: &str, name: &str, query: &str) -> Result<PolicyTarget, ApiError> {
    let qualifier = qualifier_param(query);
    let (reference, record) = resolve(app, caller, action, name, qualifier.as_deref())?;
    Ok(target(app, caller, &reference, &record))
}

fn target(app: &App, caller: &Caller, reference: &FunctionRef, record: &FunctionRecord) -> PolicyTarget {
    let key = policy::key(reference.qualifier.as_deref()).to_string();
    let (region, account) = (&app.config.region, caller.account.as_str());
    let resource = if key == policy::UNQUALIFIED { record.arn(region, account) } else { record.qualified_arn(region, account, &key) };
    PolicyTarget { function: reference.name.clone(), key, resource }
}

/// GetPolicy with no policy, and RemovePermission of a statement it lacks, as Lambda answers them.
fn no_policy() -> ApiError {
    ApiError::ResourceNotFound("The resource you requested does not exist.".into())
}

fn revision_mismatch() -> ApiError {
    ApiError::PreconditionFailed(
        "The Revision Id provided does not match the latest Revision Id. Call the GetPolicy API to retrieve the latest Revision Id"
            .into(),
    )
}

/// The qualifier's version or alias is still there (it may have gone since the request resolved it).
fn still_there(record: &FunctionRecord, key: &str, resource: &str) -> Result<(), ApiError> {
    if key == policy::UNQUALIFIED || record.has_version(key) || record.aliases.contains_key(key) {
        return Ok(());
    }
    Err(ApiError::ResourceNotFound(format!("Function not found: {resource}")))
}

/// AddPermission: 201 `{"Statement": "<the statement's JSON>"}`.
pub async fn add_permission(app: &Arc<App>, caller: &Caller, name: &str, query: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let request: AddPermissionIn = parse_body(body)?;
    let qualifier = qualifier_param(query);
    let (reference, record) = resolve(app, caller, "AddPermission", name, qualifier.as_deref())?;
    if reference.qualifier.as_deref() == Some("$LATEST") {
        return Err(ApiError::InvalidParameterValue("We currently do not support adding policies for $LATEST.".into()));
    }
    let PolicyTarget { function, key, resource } = target(app, caller, &reference, &record);
    let expected = request.revision_id.clone();
    let statement = request.into_statement()?;
    let shown = statement_json(&statement, &resource);
    app.registry
        .update(&caller.account, &function, |current| -> Result<_, ApiError> {
            let current = current.ok_or_else(|| RegistryError::FunctionNotFound { function: resource.clone() })?;
            still_there(current, &key, &resource)?;
            let mut policy = current.policies.get(&key).cloned().unwrap_or_default();
            if expected.as_ref().is_some_and(|r| *r != policy.revision_id) {
                return Err(revision_mismatch());
            }
            if policy.statements.iter().any(|s| s.sid == statement.sid) {
                return Err(ApiError::ResourceConflict(format!(
                    "The statement id ({}) provided already exists. Please provide a new statement id, or remove the existing statement.",
                    statement.sid
                )));
            }
            policy.statements.push(statement.clone());
            let size = document(&policy, &resource).len();
            if size > MAX_POLICY_BYTES {
                return Err(ApiError::PolicyLengthExceeded(format!(
                    "The final policy size ({size}) is bigger than the limit ({MAX_POLICY_BYTES})."
                )));
            }
            policy.revision_id = new_revision();
            let mut record = current.clone();
            record.policies.insert(key.clone(), policy);
            Ok(record)
        })
        .await?;
    Ok(json_answer(StatusCode::CREATED, json!({ "Statement": shown.to_string() })))
}

/// RemovePermission: 204; the policy goes when its last statement does.
pub async fn remove_permission(app: &Arc<App>, caller: &Caller, name: &str, sid: &str, query: &str) -> Result<Answer, ApiError> {
    let PolicyTarget { function, key, resource } = policy_target(app, caller, "RemovePermission", name, query)?;
    let expected = query_params(query).into_iter().find(|(k, _)| k == "RevisionId").map(|(_, v)| v);
    app.registry
        .update(&caller.account, &function, |current| -> Result<_, ApiError> {
            let current = current.ok_or_else(|| RegistryError::FunctionNotFound { function: resource.clone() })?;
            let mut policy = current.policies.get(&key).cloned().ok_or_else(no_policy)?;
            if expected.as_ref().is_some_and(|r| *r != policy.revision_id) {
                return Err(revision_mismatch());
            }
            let before = policy.statements.len();
            policy.statements.retain(|s| s.sid != sid);
            if policy.statements.len() == before {
                return Err(ApiError::ResourceNotFound(format!("Statement {sid} is not found in resource policy.")));
            }
            let mut record = current.clone();
            if policy.statements.is_empty() {
                record.policies.remove(&key);
            } else {
                policy.revision_id = new_revision();
                record.policies.insert(key.clone(), policy);
            }
            Ok(record)
        })
        .await?;
    Ok(empty_answer(StatusCode::NO_CONTENT))
}

/// GetPolicy: `{"Policy": "<the document's JSON>", "RevisionId"}`.
pub fn get_policy(app: &App, caller: &Caller, name: &str, query: &str) -> Result<Answer, ApiError> {
    let PolicyTarget { function, key, resource } = policy_target(app, caller, "GetPolicy", name, query)?;
    let record = app.registry.get(&caller.account, &function).ok_or_else(no_policy)?;
    let policy = record.policies.get(&key).ok_or_else(no_policy)?;
    Ok(json_answer(StatusCode::OK, json!({ "Policy": document(policy, &resource), "RevisionId": policy.revision_id })))
}

/// Lambda's policy document, as the text GetPolicy returns (and whose length is limited).
fn document(policy: &Policy, resource: &str) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Document<'a> {
        version: &'static str,
        id: &'static str,
        statement: Vec<StatementOut<'a>>,
    }
    let statement = policy.statements.iter().map(|s| statement_out(s, resource)).collect();
    let document = Document { version: "2012-10-17", id: "default", statement };
    serde_json::to_string(&document).unwrap_or_default()
}

/// One statement as Lambda shows it, its members in Lambda's order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StatementOut<'a> {
    sid: &'a str,
    effect: &'static str,
    principal: Value,
    action: &'a str,
    resource: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    condition: Option<Value>,
}

fn statement_out<'a>(statement: &'a Statement, resource: &'a str) -> StatementOut<'a> {
    let principal = match Principal::parse(&statement.principal).and_then(|p| p.shown()) {
        Some((kind, value)) => json!({ kind: value }),
        None => json!(statement.principal),
    };
    let mut condition = Map::new();
    let mut add = |operator: &str, key: &str, value: Value| {
        let entry = condition.entry(operator.to_string()).or_insert_with(|| json!({}));
        entry[key] = value;
    };
    if let Some(auth) = &statement.function_url_auth_type {
        add("StringEquals", "lambda:FunctionUrlAuthType", json!(auth));
    }
    if let Some(org) = &statement.principal_org_id {
        add("StringEquals", "aws:PrincipalOrgID", json!(org));
    }
    if let Some(account) = &statement.source_account {
        add("StringEquals", "AWS:SourceAccount", json!(account));
    }
    if let Some(token) = &statement.event_source_token {
        add("StringEquals", "lambda:EventSourceToken", json!(token));
    }
    if let Some(via) = statement.invoked_via_function_url {
        add("Bool", "lambda:InvokedViaFunctionUrl", json!(via.to_string()));
    }
    if let Some(arn) = &statement.source_arn {
        add("ArnLike", "AWS:SourceArn", json!(arn));
    }
    StatementOut {
        sid: &statement.sid,
        effect: "Allow",
        principal,
        action: &statement.action,
        resource,
        condition: (!condition.is_empty()).then_some(Value::Object(condition)),
    }
}

fn statement_json(statement: &Statement, resource: &str) -> String {
    serde_json::to_string(&statement_out(statement, resource)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FN: &str = "arn:aws:lambda:us-east-1:111111111111:function:f";

    fn statement(body: Value) -> Result<Statement, ApiError> {
        serde_json::from_value::<AddPermissionIn>(body).unwrap().into_statement()
    }

    fn shown(body: Value) -> Value {
        serde_json::from_str(&statement_json(&statement(body).unwrap(), FN)).unwrap()
    }

    #[test]
    fn statements_have_lambdas_shape() {
        let account = shown(json!({"StatementId": "x", "Action": "lambda:InvokeFunction", "Principal": "222222222222"}));
        assert_eq!(
            account,
            json!({"Sid": "x", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::222222222222:root"},
                   "Action": "lambda:InvokeFunction", "Resource": FN})
        );
        let service = shown(json!({
            "StatementId": "s3", "Action": "lambda:InvokeFunction", "Principal": "s3.amazonaws.com",
            "SourceArn": "arn:aws:s3:::bucket", "SourceAccount": "222222222222"
        }));
        assert_eq!(service["Principal"], json!({"Service": "s3.amazonaws.com"}));
        assert_eq!(
            service["Condition"],
            json!({"StringEquals": {"AWS:SourceAccount": "222222222222"}, "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::bucket"}})
        );
        let public = shown(json!({
            "StatementId": "url", "Action": "lambda:InvokeFunctionUrl", "Principal": "*", "FunctionUrlAuthType": "NONE"
        }));
        assert_eq!(public["Principal"], json!("*"));
        assert_eq!(public["Condition"], json!({"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}}));
        let role = shown(json!({"StatementId": "r", "Action": "lambda:*", "Principal": "arn:aws:iam::222222222222:role/x"}));
        assert_eq!(role["Principal"], json!({"AWS": "arn:aws:iam::222222222222:role/x"}));
        let root = shown(json!({"StatementId": "r", "Action": "*", "Principal": "arn:aws:iam::222222222222:root"}));
        assert_eq!(root["Principal"], json!({"AWS": "arn:aws:iam::222222222222:root"}));
        let org = shown(json!({
            "StatementId": "o", "Action": "lambda:InvokeFunction", "Principal": "*", "PrincipalOrgID": "o-abcdefghij",
            "EventSourceToken": "tok", "InvokedViaFunctionUrl": true
        }));
        assert_eq!(
            org["Condition"],
            json!({"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij", "lambda:EventSourceToken": "tok"},
                   "Bool": {"lambda:InvokedViaFunctionUrl": "true"}})
        );
    }

    #[test]
    fn documents_have_lambdas_shape_and_order() {
        let policy = Policy { revision_id: "r".into(), statements: vec![Statement::new("a", "lambda:InvokeFunction", "*")] };
        assert_eq!(
            document(&policy, FN),
            format!(r#"{{"Version":"2012-10-17","Id":"default","Statement":[{{"Sid":"a","Effect":"Allow","Principal":"*","Action":"lambda:InvokeFunction","Resource":"{FN}"}}]}}"#)
        );
    }

    fn refused(body: Value) -> (String, String) {
        let e = statement(body).unwrap_err();
        (e.error_type().to_string(), e.message().to_string())
    }

    #[test]
    fn bad_requests_are_refused_as_lambda_refuses_them() {
        let base = json!({"StatementId": "x", "Action": "lambda:InvokeFunction", "Principal": "222222222222"});
        let with = |key: &str, value: Value| {
            let mut body = base.clone();
            body[key] = value;
            body
        };
        let validation = |body: Value, needle: &str| {
            let (kind, message) = refused(body);
            assert_eq!(kind, "ValidationException", "{message}");
            assert!(message.contains(needle), "{message}");
        };
        validation(json!({}), "3 validation errors detected");
        validation(with("StatementId", json!("a b")), "at 'statementId'");
        validation(with("StatementId", json!("a".repeat(101))), "at 'statementId'");
        validation(with("StatementId", json!("")), "at 'statementId'");
        for action in ["InvokeFunction", "lambda:", "lambda:Invoke:Function", "s3:*", "lambda:*x"] {
            validation(with("Action", json!(action)), "at 'action'");
        }
        validation(with("Principal", json!("a b")), "at 'principal'");
        validation(with("SourceArn", json!("bucket")), "at 'sourceArn'");
        validation(with("SourceArn", json!("arn:aws:s3:Region:1:x")), "at 'sourceArn'");
        validation(with("SourceAccount", json!("12345")), "at 'sourceAccount'");
        validation(with("EventSourceToken", json!("a b")), "at 'eventSourceToken'");
        validation(with("PrincipalOrgID", json!("org-1")), "at 'principalOrgID'");
        validation(with("FunctionUrlAuthType", json!("PUBLIC")), "at 'functionUrlAuthType'");
        for principal in ["bob", "amazonaws.com", "arn:aws:iam::222222222222:group/g", "2222"] {
            let (kind, message) = refused(with("Principal", json!(principal)));
            assert_eq!(kind, "InvalidParameterValueException", "{principal}");
            assert_eq!(message, "The provided principal was invalid. Please check the principal and try again.");
        }
        for arn in ["arn:aws:s3:::bucket", "arn:aws:sqs:us-east-1:222222222222:q", "arn:aws-us-gov:sns:us-gov-west-1::t"] {
            assert!(statement(with("SourceArn", json!(arn))).is_ok(), "{arn}");
        }
    }
}
