//! Resource-based policies end to end: AddPermission / GetPolicy / RemovePermission, kept across a restart
//! and gone with the function; another account's invocations (sync and `Event`) run, as the owner's
//! function, only while a statement allows them.

use ignis_sigv4::Credentials;
use serde_json::{Value, json};

use crate::harness::*;

fn add(server: &Server, who: &Credentials, function: &str, query: &str, statement: Value) -> Reply {
    let path = format!("/2015-03-31/functions/{}/policy{query}", function.replace(':', "%3A"));
    server.lambda_as(who, "POST", &path, statement.to_string().as_bytes())
}

fn get_policy(server: &Server, who: &Credentials, function: &str) -> Reply {
    server.lambda_as(who, "GET", &format!("/2015-03-31/functions/{}/policy", function.replace(':', "%3A")), b"")
}

fn statements(reply: &Reply) -> Vec<Value> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let document: Value = serde_json::from_str(reply.json()["Policy"].as_str().unwrap()).unwrap();
    assert_eq!((document["Version"].as_str(), document["Id"].as_str()), (Some("2012-10-17"), Some("default")));
    document["Statement"].as_array().unwrap().clone()
}

fn invoke_event(server: &Server, who: &Credentials, function: &str) -> Reply {
    let path = format!("/2015-03-31/functions/{}/invocations", function.replace(':', "%3A"));
    server.signed_with(who, "lambda", "POST", &path, "", &[("x-amz-invocation-type", "Event")], b"{}")
}

#[test]
fn another_account_invokes_only_while_a_statement_allows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start_in(&data, &[]);
    let (owner_id, owner) = server.create_account("policy-owner");
    let (caller_id, caller) = server.create_account("policy-caller");
    let created = server.create_as(&owner, "shared", &sh_runtime("echo \"ran as $AWS_LAMBDA_FUNCTION_NAME\"; echo '\"owned\"' > /tmp/response"));
    assert_eq!(created.status, 201, "{}", created.text());
    let arn = format!("arn:aws:lambda:us-east-1:{owner_id}:function:shared");

    let refused = |server: &Server| {
        for reply in [server.invoke_as(&caller, &arn, "{}"), invoke_event(server, &caller, &arn)] {
            assert_eq!((reply.status, reply.error_type()), (403, "AccessDeniedException"), "{}", reply.text());
            let message = reply.json()["message"].as_str().unwrap().to_string();
            let expected = format!("User: arn:aws:iam::{caller_id}:root is not authorized to perform: lambda:InvokeFunction on resource: {arn}");
            assert!(message.starts_with(&expected), "{message}");
        }
    };
    refused(&server);
    let none = get_policy(&server, &owner, "shared");
    assert_eq!((none.status, none.error_type()), (404, "ResourceNotFoundException"));

    // Statements for another account, or for another action, allow nothing.
    let other = add(&server, &owner, "shared", "", json!({"StatementId": "other", "Action": "lambda:InvokeFunction", "Principal": "333333333333"}));
    assert_eq!(other.status, 201, "{}", other.text());
    let read = add(&server, &owner, "shared", "", json!({"StatementId": "read", "Action": "lambda:GetFunction", "Principal": caller_id}));
    assert_eq!(read.status, 201, "{}", read.text());
    // One with a SourceArn: a direct call comes from no resource.
    let from_queue = json!({
        "StatementId": "queue", "Action": "lambda:InvokeFunction", "Principal": caller_id,
        "SourceArn": format!("arn:aws:sqs:us-east-1:{caller_id}:jobs")
    });
    assert_eq!(add(&server, &owner, "shared", "", from_queue).status, 201);
    refused(&server);
    // Another account may not change the owner's policy.
    let meddling = add(&server, &caller, &arn, "", json!({"StatementId": "me", "Action": "lambda:*", "Principal": caller_id}));
    assert_eq!((meddling.status, meddling.error_type()), (403, "AccessDeniedException"), "{}", meddling.text());

    let allowed = add(&server, &owner, "shared", "", json!({
        "StatementId": "caller", "Action": "lambda:InvokeFunction", "Principal": caller_id, "SourceAccount": caller_id
    }));
    assert_eq!(allowed.status, 201, "{}", allowed.text());
    let shown: Value = serde_json::from_str(allowed.json()["Statement"].as_str().unwrap()).unwrap();
    assert_eq!(
        shown,
        json!({"Sid": "caller", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{caller_id}:root")},
               "Action": "lambda:InvokeFunction", "Resource": arn, "Condition": {"StringEquals": {"AWS:SourceAccount": caller_id}}})
    );
    let ran = server.invoke_as(&caller, &arn, "{}");
    assert_eq!((ran.status, ran.text().trim()), (200, "\"owned\""), "{}", ran.text());
    assert_eq!(ran.header("x-amz-executed-version"), Some("$LATEST"));
    let queued = invoke_event(&server, &caller, &arn);
    assert_eq!(queued.status, 202, "{}", queued.text());
    // It ran as the owner's function: its logs are the owner's.
    let reports = |who: &Credentials| {
        let reply = server.logs_as(who, "FilterLogEvents", &json!({ "logGroupName": "/aws/lambda/shared" }));
        if reply.status != 200 {
            return 0;
        }
        reply.json()["events"].as_array().unwrap().iter().filter(|e| e["message"].as_str().unwrap().starts_with("REPORT")).count()
    };
    assert!(eventually(std::time::Duration::from_secs(20), || reports(&owner) >= 2), "both invocations logged for the owner");
    assert_eq!(reports(&caller), 0);
    // By name, the caller still has no such function.
    let by_name = server.invoke_as(&caller, "shared", "{}");
    assert_eq!((by_name.status, by_name.error_type()), (404, "ResourceNotFoundException"));

    // The policy is kept across a restart.
    server.stop();
    let server = Server::start_in(&data, &[]);
    let sids: Vec<String> = statements(&get_policy(&server, &owner, "shared")).iter().map(|s| s["Sid"].as_str().unwrap().to_string()).collect();
    assert_eq!(sids, ["other", "read", "queue", "caller"]);
    assert_eq!(server.invoke_as(&caller, &arn, "{}").status, 200);

    // Removed, the call is refused again.
    let removed = server.lambda_as(&owner, "DELETE", "/2015-03-31/functions/shared/policy/caller", b"");
    assert_eq!(removed.status, 204, "{}", removed.text());
    refused(&server);

    // Deleted and created again, the function has no policy.
    assert_eq!(server.lambda_as(&owner, "DELETE", "/2015-03-31/functions/shared", b"").status, 204);
    assert_eq!(server.create_as(&owner, "shared", &sh_runtime("")).status, 201);
    assert_eq!(get_policy(&server, &owner, "shared").status, 404);
}

#[test]
fn versions_and_aliases_have_policies_of_their_own() {
    let server = Server::start();
    let (owner_id, owner) = server.create_account("policy-versions");
    let (caller_id, caller) = server.create_account("policy-versions-caller");
    assert_eq!(server.create_as(&owner, "vf", &sh_runtime("echo '\"v\"' > /tmp/response")).status, 201);
    let published = server.lambda_as(&owner, "POST", "/2015-03-31/functions/vf/versions", b"{}");
    assert_eq!(published.status, 201, "{}", published.text());
    let alias = server.lambda_as(&owner, "POST", "/2015-03-31/functions/vf/aliases", br#"{"Name": "live", "FunctionVersion": "1"}"#);
    assert_eq!(alias.status, 201, "{}", alias.text());
    let arn = format!("arn:aws:lambda:us-east-1:{owner_id}:function:vf");
    let grant = |query: &str| add(&server, &owner, "vf", query, json!({"StatementId": "c", "Action": "lambda:InvokeFunction", "Principal": caller_id}));

    // $LATEST takes none; the unqualified function's reaches $LATEST, not the version nor the alias.
    let latest = grant("?Qualifier=%24LATEST");
    assert_eq!((latest.status, latest.error_type()), (400, "InvalidParameterValueException"), "{}", latest.text());
    assert_eq!(grant("").status, 201);
    let status = |target: &str| server.invoke_as(&caller, target, "{}").status;
    assert_eq!((status(&arn), status(&format!("{arn}:$LATEST"))), (200, 200));
    assert_eq!((status(&format!("{arn}:1")), status(&format!("{arn}:live"))), (403, 403));

    // The alias's own policy reaches the alias, not the version it points to.
    let on_alias = grant("?Qualifier=live");
    assert_eq!(on_alias.status, 201, "{}", on_alias.text());
    let shown: Value = serde_json::from_str(on_alias.json()["Statement"].as_str().unwrap()).unwrap();
    assert_eq!(shown["Resource"], format!("{arn}:live"));
    assert_eq!((status(&format!("{arn}:live")), status(&format!("{arn}:1"))), (200, 403));
    let async_alias = invoke_event(&server, &caller, &format!("{arn}:live"));
    assert_eq!(async_alias.status, 202, "{}", async_alias.text());

    // A version's own policy, named by the qualified name.
    assert_eq!(add(&server, &owner, "vf:1", "", json!({"StatementId": "c", "Action": "lambda:*", "Principal": "*"})).status, 201);
    assert_eq!(status(&format!("{arn}:1")), 200);
    // A new version starts without a policy.
    assert_eq!(server.lambda_as(&owner, "PUT", "/2015-03-31/functions/vf/configuration", br#"{"Timeout": 5}"#).status, 200);
    assert_eq!(server.lambda_as(&owner, "POST", "/2015-03-31/functions/vf/versions", b"{}").json()["Version"], "2");
    assert_eq!(status(&format!("{arn}:2")), 403);
    let two = server.lambda_as(&owner, "GET", "/2015-03-31/functions/vf/policy?Qualifier=2", b"");
    assert_eq!((two.status, two.error_type()), (404, "ResourceNotFoundException"));

    // The alias deleted and made again has none; the version deleted takes its policy with it.
    assert_eq!(server.lambda_as(&owner, "DELETE", "/2015-03-31/functions/vf/aliases/live", b"").status, 204);
    assert_eq!(server.lambda_as(&owner, "POST", "/2015-03-31/functions/vf/aliases", br#"{"Name": "live", "FunctionVersion": "2"}"#).status, 201);
    assert_eq!(status(&format!("{arn}:live")), 403);
    assert_eq!(server.lambda_as(&owner, "DELETE", "/2015-03-31/functions/vf?Qualifier=1", b"").status, 204);
    let gone = server.lambda_as(&owner, "GET", "/2015-03-31/functions/vf/policy?Qualifier=1", b"");
    assert_eq!((gone.status, gone.error_type()), (404, "ResourceNotFoundException"), "{}", gone.text());
}

/// The messages of `function`'s log group in `who`'s account (none if it has no such group yet).
fn log_messages(server: &Server, who: &Credentials, function: &str) -> Vec<String> {
    let reply = server.logs_as(who, "FilterLogEvents", &json!({ "logGroupName": format!("/aws/lambda/{function}") }));
    if reply.status != 200 {
        return Vec::new();
    }
    reply.json()["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_destination_of_another_account_takes_records_only_while_its_policy_allows() {
    let server = Server::start_with(&["--async-retry-delay", "1"]);
    let (owner_id, owner) = server.create_account("policy-sink");
    let (source_id, source) = server.create_account("policy-source");
    assert_eq!(server.create_as(&owner, "sink", &sh_runtime("echo \"got $(cat /tmp/event)\"")).status, 201);
    assert_eq!(server.create_as(&source, "src", &sh_runtime("echo '{\"done\": true}' > /tmp/response")).status, 201);
    let sink = format!("arn:aws:lambda:us-east-1:{owner_id}:function:sink");
    let config = json!({ "DestinationConfig": { "OnSuccess": { "Destination": sink } } }).to_string();
    let put = || server.lambda_as(&source, "PUT", "/2019-09-25/functions/src/event-invoke-config", config.as_bytes());

    // Without a statement, another account's function is no destination.
    let refused = put();
    assert_eq!((refused.status, refused.error_type()), (400, "InvalidParameterValueException"), "{}", refused.text());
    let grant = json!({"StatementId": "source", "Action": "lambda:InvokeFunction", "Principal": source_id});
    assert_eq!(add(&server, &owner, "sink", "", grant).status, 201);
    let accepted = put();
    assert_eq!(accepted.status, 200, "{}", accepted.text());

    // The record runs the sink in its owner's account.
    assert_eq!(invoke_event(&server, &source, "src").status, 202);
    let got = || log_messages(&server, &owner, "sink").iter().filter(|m| m.starts_with("got ")).count();
    assert!(eventually(std::time::Duration::from_secs(30), || got() == 1), "the record reached the sink");
    let record = log_messages(&server, &owner, "sink").into_iter().find(|m| m.starts_with("got ")).unwrap();
    assert!(record.contains(&format!("arn:aws:lambda:us-east-1:{source_id}:function:src")), "{record}");

    // The statement removed, the next record goes nowhere, and the source's log says why.
    assert_eq!(server.lambda_as(&owner, "DELETE", "/2015-03-31/functions/sink/policy/source", b"").status, 204);
    assert_eq!(invoke_event(&server, &source, "src").status, 202);
    let said = || {
        log_messages(&server, &source, "src")
            .iter()
            .any(|m| m.contains(&format!("was not delivered to {sink}: no resource-based policy allows {source_id} lambda:InvokeFunction")))
    };
    assert!(eventually(std::time::Duration::from_secs(30), said), "{:?}", log_messages(&server, &source, "src"));
    assert_eq!(got(), 1);
    assert_eq!(put().status, 400);
}
