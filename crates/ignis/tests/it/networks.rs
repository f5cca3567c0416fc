//! Networks: the administrator makes them with `ignis network`, functions of their account attach to them through
//! `VpcConfig`, and a network in use cannot be deleted.

use std::process::Output;

use serde_json::{Value, json};

use crate::harness::*;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn vpc(subnets: &[&str], groups: &[&str]) -> Value {
    json!({ "VpcConfig": { "SubnetIds": subnets, "SecurityGroupIds": groups } })
}

fn configuration(server: &Server, name: &str) -> Value {
    let reply = server.lambda("GET", &format!("/2015-03-31/functions/{name}/configuration"), b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

fn update(server: &Server, name: &str, body: Value) -> Reply {
    server.lambda("PUT", &format!("/2015-03-31/functions/{name}/configuration"), body.to_string().as_bytes())
}

#[test]
fn networks_are_made_attached_kept_by_versions_and_deleted_only_when_unused() {
    let server = Server::start();
    let admin = Server::credentials();
    let (tenant, tenant_key) = server.create_account("tenant");

    // The CLI makes, lists and refuses networks.
    let made =
        server.cli_as(&admin, &["network", "create", "db", "--allow", "10.20.3.4/16", "--allow", "192.168.1.0/24"]);
    assert!(made.status.success(), "{}", stderr(&made));
    assert!(stdout(&made).contains("10.20.0.0/16,192.168.1.0/24"), "{}", stdout(&made));
    let theirs =
        server.cli_as(&admin, &["network", "create", "theirs", "--allow", "10.30.0.0/16", "--account", &tenant]);
    assert!(theirs.status.success(), "{}", stderr(&theirs));
    let listed = stdout(&server.cli_as(&admin, &["network", "ls"]));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 3, "{listed}");
    assert!(lines[1].starts_with("db ") && lines[1].contains("10.20.0.0/16,192.168.1.0/24"), "{listed}");
    assert!(lines[2].starts_with("theirs ") && lines[2].contains(&tenant), "{listed}");
    let ipv6 = server.cli_as(&admin, &["network", "create", "six", "--allow", "fd00::/8"]);
    assert!(!ipv6.status.success() && stderr(&ipv6).contains("InvalidParameterValueException"), "{}", stderr(&ipv6));
    let bad = server.cli_as(&admin, &["network", "create", "bad.name", "--allow", "10.0.0.0/8"]);
    assert!(!bad.status.success() && stderr(&bad).contains("ValidationException"), "{}", stderr(&bad));
    let taken = server.cli_as(&admin, &["network", "create", "theirs", "--allow", "10.0.0.0/8"]);
    assert!(!taken.status.success() && stderr(&taken).contains("ResourceConflictException"), "{}", stderr(&taken));
    // Only the administrator manages networks.
    let tenant_made = server.ignis_as(&tenant_key, "PUT", "/ignis/networks/mine", br#"{"Allow": ["10.0.0.0/8"]}"#);
    assert_eq!((tenant_made.status, tenant_made.error_type()), (403, "AccessDeniedException"), "{}", tenant_made.text());

    // An unknown network, and another account's, are subnets that do not exist.
    let code = sh_runtime("echo ok");
    for missing in ["nope", "theirs"] {
        let refused = server.create("f", &code, vpc(&[missing], &[missing]));
        assert_eq!((refused.status, refused.error_type()), (400, "InvalidParameterValueException"), "{}", refused.text());
        let wanted = format!("InvalidSubnetID.NotFound. EC2 Error Message: The subnet ID '{missing}' does not exist");
        assert!(refused.json()["message"].as_str().unwrap().contains(&wanted), "{}", refused.text());
    }
    let alone = server.create("f", &code, vpc(&["db"], &[]));
    assert!(alone.json()["message"].as_str().unwrap().contains("must coexist"), "{}", alone.text());

    // Attached: the configuration shows it, as do ListFunctions and GetFunction; the function still runs.
    let created = server.create("f", &code, vpc(&["db"], &["db"]));
    assert_eq!(created.status, 201, "{}", created.text());
    let expected =
        json!({ "SubnetIds": ["db"], "SecurityGroupIds": ["db"], "VpcId": "ignis", "Ipv6AllowedForDualStack": false });
    assert_eq!(created.json()["VpcConfig"], expected);
    assert_eq!(configuration(&server, "f")["VpcConfig"], expected);
    assert_eq!(server.lambda("GET", "/2015-03-31/functions/f", b"").json()["Configuration"]["VpcConfig"], expected);
    let listed = server.lambda("GET", "/2015-03-31/functions", b"").json();
    assert_eq!(listed["Functions"][0]["VpcConfig"], expected);
    let invoked = server.invoke("f", "{}");
    assert_eq!(invoked.status, 200, "{}", invoked.text());

    // A version keeps its networks when $LATEST is detached; the network stays in use while either has it.
    let published = server.lambda("POST", "/2015-03-31/functions/f/versions", b"{}");
    assert_eq!(published.status, 201, "{}", published.text());
    let detached = update(&server, "f", vpc(&[], &[]));
    assert_eq!(detached.status, 200, "{}", detached.text());
    assert_eq!(detached.json().get("VpcConfig"), None, "{}", detached.text());
    assert_eq!(server.lambda("GET", "/2015-03-31/functions/f:1/configuration", b"").json()["VpcConfig"], expected);
    let in_use = server.cli_as(&admin, &["network", "delete", "db"]);
    assert!(!in_use.status.success() && stderr(&in_use).contains("ResourceConflictException"), "{}", stderr(&in_use));
    assert!(stderr(&in_use).contains("f:1"), "{}", stderr(&in_use));
    // Changing other settings keeps the networks; IPv6 is refused.
    assert_eq!(update(&server, "f", vpc(&["db"], &["db"])).status, 200);
    assert_eq!(update(&server, "f", json!({ "Timeout": 5 })).json()["VpcConfig"], expected);
    let dual_stack = json!({ "SubnetIds": ["db"], "SecurityGroupIds": ["db"], "Ipv6AllowedForDualStack": true });
    let six = update(&server, "f", json!({ "VpcConfig": dual_stack }));
    assert_eq!((six.status, six.error_type()), (400, "InvalidParameterValueException"), "{}", six.text());
    let group = update(&server, "f", vpc(&["db"], &["sg-1"]));
    let message = group.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("The security group 'sg-1' does not exist"), "{message}");

    // The tenant attaches to its own network, not to the administrator's.
    let tenant_db = server.create_as_with(&tenant_key, "t", &code, vpc(&["db"], &["db"]));
    assert_eq!(tenant_db.error_type(), "InvalidParameterValueException", "{}", tenant_db.text());
    let tenant_own = server.create_as_with(&tenant_key, "t", &code, vpc(&["theirs"], &["theirs"]));
    assert_eq!(tenant_own.status, 201, "{}", tenant_own.text());

    // Gone once nothing uses it.
    assert_eq!(server.lambda("DELETE", "/2015-03-31/functions/f", b"").status, 204);
    let deleted = server.cli_as(&admin, &["network", "delete", "db"]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    let again = server.ignis_as(&admin, "DELETE", "/ignis/networks/db", b"");
    assert_eq!((again.status, again.error_type()), (404, "ResourceNotFoundException"), "{}", again.text());
    let listed = stdout(&server.cli_as(&admin, &["network", "ls"]));
    assert!(!listed.contains("\ndb "), "{listed}");
}
