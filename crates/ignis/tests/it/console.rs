//! The console's files, served unsigned, and the activity calls its charts read.

use serde_json::{Value, json};

use crate::harness::{Server, sh_runtime};

#[test]
fn the_console_is_served_unsigned_with_a_policy_of_its_own_origin() {
    let server = Server::start();
    let page = server.raw("GET", "/console/", "", &[], b"");
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(page.text().contains(r#"<meta name="ignis-region" content="us-east-1">"#), "{}", page.text());
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"), "{policy}");
    let script = server.raw("GET", "/console/console.js", "", &[], b"");
    assert_eq!((script.status, script.header("content-type")), (200, Some("text/javascript; charset=utf-8")));
    assert!(script.text().contains("AWS4-HMAC-SHA256"));
    let moved = server.raw("GET", "/console", "", &[], b"");
    assert_eq!((moved.status, moved.header("location")), (301, Some("/console/")));
    // Nothing else is served unsigned under it.
    for path in ["/console/missing.js", "/console/../ignis/accounts", "/console/%2e%2e/ignis/accounts"] {
        let reply = server.raw("GET", path, "", &[], b"");
        assert_eq!(reply.status, 404, "{path}: {}", reply.text());
    }
    assert_eq!(server.raw("POST", "/console/", "", &[], b"x").status, 404);
}

fn activity(server: &Server, credentials: &ignis_sigv4::Credentials, path: &str) -> (u16, Value) {
    let reply = server.ignis_as(credentials, "GET", path, b"");
    (reply.status, reply.json())
}

#[test]
fn activity_counts_each_functions_last_hour_for_its_own_account_only() {
    let server = Server::start();
    let admin = Server::credentials();
    let zip = sh_runtime("grep -q crash /tmp/event && exit 3; echo '\"fine\"' > /tmp/response");
    assert_eq!(server.create("busy", &zip, json!({})).status, 201);
    assert_eq!(server.create("quiet", &zip, json!({})).status, 201);
    for payload in ["{}", "{}", r#"{"crash":true}"#] {
        assert_eq!(server.invoke("busy", payload).status, 200);
    }

    let (status, listed) = activity(&server, &admin, "/ignis/activity");
    assert_eq!(status, 200, "{listed}");
    let functions = listed["Functions"].as_array().unwrap();
    assert_eq!(functions.len(), 1, "a function that never ran is not listed: {listed}");
    assert_eq!(functions[0]["FunctionName"], "busy");
    assert_eq!((functions[0]["Invocations"].as_u64(), functions[0]["Errors"].as_u64()), (Some(3), Some(1)));

    let (status, busy) = activity(&server, &admin, "/ignis/activity/busy");
    assert_eq!(status, 200, "{busy}");
    let minutes = busy["Minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    let total = |field: &str| minutes.iter().map(|m| m[field].as_u64().unwrap()).sum::<u64>();
    assert_eq!((total("Invocations"), total("Errors"), total("Throttles")), (3, 1, 0));
    assert!(minutes.iter().any(|m| m["DurationP50"].is_number() && m["DurationP99"].is_number()), "{busy}");
    assert!(minutes.iter().any(|m| m["ConcurrentExecutions"].as_u64() == Some(1)), "{busy}");
    let starts: Vec<u64> = minutes.iter().map(|m| m["Start"].as_u64().unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[1] == w[0] + 60), "a point a minute, oldest first");
    let (_, quiet) = activity(&server, &admin, "/ignis/activity/quiet");
    assert!(quiet["Minutes"].as_array().unwrap().iter().all(|m| m["Invocations"] == 0 && m["DurationP50"].is_null()));

    // Another account sees none of it and cannot read the function's.
    let (_, tenant) = server.create_account("activity-tenant");
    let (status, listed) = activity(&server, &tenant, "/ignis/activity");
    assert_eq!((status, listed), (200, json!({ "Functions": [] })));
    let (status, refused) = activity(&server, &tenant, "/ignis/activity/busy");
    assert_eq!(status, 404, "{refused}");
    let (status, _) = activity(&server, &admin, "/ignis/activity/nothing-here");
    assert_eq!(status, 404);
}
