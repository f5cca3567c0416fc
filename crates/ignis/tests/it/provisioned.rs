//! Provisioned concurrency: configurations on versions and aliases, sandboxes
//! initialised ahead of invocations (which are then not cold starts), the
//! errors Lambda gives, and the configuration's survival across a restart.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Reply, Server, eventually, sh_runtime};

const PATH: &str = "/2019-09-30/functions/pf/provisioned-concurrency";

pub(crate) fn put(server: &Server, qualifier: &str, n: i64) -> Reply {
    let body = json!({ "ProvisionedConcurrentExecutions": n }).to_string();
    server.signed("lambda", "PUT", PATH, &format!("Qualifier={qualifier}"), &[], body.as_bytes())
}

fn get(server: &Server, qualifier: &str) -> Reply {
    server.signed("lambda", "GET", PATH, &format!("Qualifier={qualifier}"), &[], b"")
}

/// Waits (bounded) until the configuration of `qualifier` of the function `pf` is READY.
pub(crate) fn ready(server: &Server, qualifier: &str) -> Value {
    let mut last = Value::Null;
    let done = eventually(Duration::from_secs(30), || {
        last = get(server, qualifier).json();
        last["Status"] == "READY"
    });
    assert!(done, "not READY: {last}");
    last
}

#[test]
fn provisioned_sandboxes_are_ready_before_invocations() {
    let mut server = Server::start();
    // Answers how its sandbox was initialised, and the sandbox's own id.
    let handler = r#"echo "\"$AWS_LAMBDA_INITIALIZATION_TYPE $AWS_LAMBDA_LOG_STREAM_NAME\"" > /tmp/response"#;
    assert_eq!(server.create("pf", &sh_runtime(handler), json!({})).status, 201);
    let published = server.lambda("POST", "/2015-03-31/functions/pf/versions", b"{}");
    assert_eq!(published.status, 201, "{}", published.text());
    let alias = json!({ "Name": "live", "FunctionVersion": "1" }).to_string();
    assert_eq!(server.lambda("POST", "/2015-03-31/functions/pf/aliases", alias.as_bytes()).status, 201);

    // Bad requests.
    let latest = put(&server, "$LATEST", 1);
    assert_eq!((latest.status, latest.error_type()), (400, "InvalidParameterValueException"), "{}", latest.text());
    let zero = put(&server, "1", 0);
    assert_eq!((zero.status, zero.error_type()), (400, "ValidationException"));
    let missing = put(&server, "7", 1);
    assert_eq!((missing.status, missing.error_type()), (404, "ResourceNotFoundException"));
    let none = get(&server, "1");
    assert_eq!((none.status, none.error_type()), (404, "ProvisionedConcurrencyConfigNotFoundException"));
    let no_qualifier = server.signed("lambda", "GET", PATH, "", &[], b"");
    assert_eq!((no_qualifier.status, no_qualifier.error_type()), (400, "ValidationException"));

    let accepted = put(&server, "live", 2);
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    assert_eq!(accepted.json()["RequestedProvisionedConcurrentExecutions"], 2);
    assert!(["IN_PROGRESS", "READY"].contains(&accepted.json()["Status"].as_str().unwrap()));
    let config = ready(&server, "live");
    assert_eq!(config["AllocatedProvisionedConcurrentExecutions"], 2);
    // The alias's version is taken: configuring it too is a conflict.
    let twice = put(&server, "1", 1);
    assert_eq!((twice.status, twice.error_type()), (409, "ResourceConflictException"));

    // Invocations of the alias run in the provisioned sandboxes: no cold start.
    let mut streams = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let reply = server.signed("lambda", "POST", "/2015-03-31/functions/pf/invocations", "Qualifier=live", &[("x-amz-log-type", "Tail")], b"{}");
        assert_eq!(reply.status, 200, "{}", reply.text());
        let answer = reply.json().as_str().unwrap().to_string();
        let (kind, stream) = answer.split_once(' ').unwrap();
        assert_eq!(kind, "provisioned-concurrency");
        streams.insert(stream.to_string());
        let tail = reply.log_tail();
        assert!(tail.contains("REPORT RequestId:") && !tail.contains("Init Duration"), "{tail}");
    }
    assert_eq!(streams.len(), 1, "sequential invocations reuse one warm sandbox: {streams:?}");

    let listed = server.signed("lambda", "GET", PATH, "List=ALL", &[], b"").json();
    let configs = listed["ProvisionedConcurrencyConfigs"].as_array().unwrap().clone();
    assert_eq!(configs.len(), 1, "{listed}");
    assert!(configs[0]["FunctionArn"].as_str().unwrap().ends_with(":function:pf:live"));

    // Reserved concurrency bounds it.
    let reserve = json!({ "ReservedConcurrentExecutions": 1 }).to_string();
    assert_eq!(server.lambda("PUT", "/2017-10-31/functions/pf/concurrency", reserve.as_bytes()).status, 200);
    let over = put(&server, "live", 2);
    assert_eq!((over.status, over.error_type()), (400, "InvalidParameterValueException"));
    assert_eq!(server.lambda("DELETE", "/2017-10-31/functions/pf/concurrency", b"").status, 204);

    // The configuration survives a restart and is READY again.
    server.stop();
    let server = Server::start_in(&server.data.clone(), &[]);
    ready(&server, "live");

    let deleted = server.signed("lambda", "DELETE", PATH, "Qualifier=live", &[], b"");
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    assert_eq!(get(&server, "live").error_type(), "ProvisionedConcurrencyConfigNotFoundException");
}

#[test]
fn a_runtime_that_fails_its_init_gives_failed() {
    let server = Server::start();
    let broken = crate::harness::zip_of(&[("bootstrap", b"#!/bin/sh\nexit 3\n", 0o755)]);
    assert_eq!(server.create("pf", &broken, json!({ "Publish": true })).status, 201);
    assert_eq!(put(&server, "1", 1).status, 202);
    let mut last = Value::Null;
    let failed = eventually(Duration::from_secs(30), || {
        last = get(&server, "1").json();
        last["Status"] == "FAILED"
    });
    assert!(failed, "{last}");
    assert!(last["StatusReason"].as_str().is_some_and(|r| !r.is_empty()), "{last}");
}
