//! The control plane and authentication.

use serde_json::json;

use crate::harness::{Server, sh_runtime};

#[test]
fn health_is_served_unsigned() {
    let server = Server::start();
    let reply = server.raw("GET", "/healthz", "", &[], b"");
    assert_eq!(reply.status, 200);
}

#[test]
fn requests_must_be_signed_with_a_known_key() {
    let server = Server::start();
    let unsigned = server.raw("GET", "/2015-03-31/functions/", "", &[], b"");
    assert_eq!((unsigned.status, unsigned.error_type()), (403, "MissingAuthenticationTokenException"));
    assert!(unsigned.json()["message"].is_string());

    let stranger = ignis_sigv4::Credentials { access_key_id: "AKIANOBODYNOBODY0000".into(), secret_access_key: "x".into() };
    let reply = server.signed_with(&stranger, "lambda", "GET", "/2015-03-31/functions/", "", &[], b"");
    assert_eq!((reply.status, reply.error_type()), (403, "UnrecognizedClientException"));

    let wrong_secret = ignis_sigv4::Credentials { access_key_id: crate::harness::KEY_ID.into(), secret_access_key: "wrong".into() };
    let reply = server.signed_with(&wrong_secret, "lambda", "GET", "/2015-03-31/functions/", "", &[], b"");
    assert_eq!((reply.status, reply.error_type()), (403, "InvalidSignatureException"));

    // A signature over another body does not authenticate this one.
    let mut headers: Vec<(String, String)> = Vec::new();
    let host = server.address.clone();
    let parts = ignis_sigv4::RequestParts {
        method: "POST",
        path: "/2015-03-31/functions",
        query: "",
        headers: &[("host", &host)],
        body: b"{}",
    };
    headers.extend(ignis_sigv4::sign(&parts, &Server::credentials(), "us-east-1", "lambda", std::time::SystemTime::now()));
    let reply = server.raw("POST", "/2015-03-31/functions", "", &headers, br#"{"FunctionName":"x"}"#);
    assert_eq!(reply.status, 403, "{}", reply.text());

    // Signed for another service.
    let reply = server.signed("s3", "GET", "/2015-03-31/functions/", "", &[], b"");
    assert_eq!((reply.status, reply.error_type()), (403, "InvalidSignatureException"));
}

#[test]
fn create_get_list_update_delete() {
    let server = Server::start();
    let zip = sh_runtime("");
    let created = server.create("f1", &zip, json!({ "MemorySize": 256, "Timeout": 10, "Environment": { "Variables": { "AB": "1" } } }));
    assert_eq!(created.status, 201, "{}", created.text());
    let config = created.json();
    assert_eq!(config["FunctionName"], "f1");
    assert_eq!(config["MemorySize"], 256);
    assert_eq!(config["Timeout"], 10);
    assert_eq!(config["Runtime"], "provided.al2023");
    assert_eq!(config["Version"], "$LATEST");
    assert_eq!(config["State"], "Active");
    assert_eq!(config["Environment"]["Variables"]["AB"], "1");
    assert_eq!(config["CodeSize"], zip.len());
    let arn = config["FunctionArn"].as_str().unwrap().to_string();
    assert!(arn.starts_with("arn:aws:lambda:us-east-1:") && arn.ends_with(":function:f1"), "{arn}");

    let again = server.create("f1", &zip, json!({}));
    assert_eq!((again.status, again.error_type()), (409, "ResourceConflictException"));

    let got = server.lambda("GET", "/2015-03-31/functions/f1", b"");
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["Configuration"], config);
    let by_arn = server.lambda("GET", &format!("/2015-03-31/functions/{}/configuration", arn.replace(':', "%3A")), b"");
    assert_eq!(by_arn.status, 200, "{}", by_arn.text());
    assert_eq!(by_arn.json(), config);

    for name in ["f2", "f3", "f4", "f5"] {
        assert_eq!(server.create(name, &zip, json!({})).status, 201);
    }
    // Paging: 2 at a time, in name order, each function once.
    let mut seen = Vec::new();
    let mut marker = String::new();
    for _ in 0..10 {
        let query = if marker.is_empty() { "MaxItems=2".to_string() } else { format!("MaxItems=2&Marker={marker}") };
        let page = server.lambda("GET", &format!("/2015-03-31/functions/?{query}"), b"").json();
        let names: Vec<String> = page["Functions"].as_array().unwrap().iter().map(|f| f["FunctionName"].as_str().unwrap().to_string()).collect();
        assert!(names.len() <= 2);
        seen.extend(names);
        match page["NextMarker"].as_str() {
            Some(m) => marker = m.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, ["f1", "f2", "f3", "f4", "f5"]);

    let updated = server.lambda("PUT", "/2015-03-31/functions/f1/configuration", br#"{"MemorySize": 512, "Description": "d"}"#);
    assert_eq!(updated.status, 200, "{}", updated.text());
    let updated = updated.json();
    assert_eq!((updated["MemorySize"].clone(), updated["Timeout"].clone(), updated["Description"].clone()), (json!(512), json!(10), json!("d")));
    assert_ne!(updated["RevisionId"], config["RevisionId"]);

    let stale = server.lambda("PUT", "/2015-03-31/functions/f1/configuration", json!({ "Timeout": 5, "RevisionId": config["RevisionId"] }).to_string().as_bytes());
    assert_eq!((stale.status, stale.error_type()), (412, "PreconditionFailedException"));

    use base64::Engine;
    let new_zip = sh_runtime("echo '\"v2\"' > /tmp/response");
    let body = json!({ "ZipFile": base64::engine::general_purpose::STANDARD.encode(&new_zip) });
    let code = server.lambda("PUT", "/2015-03-31/functions/f1/code", body.to_string().as_bytes());
    assert_eq!(code.status, 200, "{}", code.text());
    assert_ne!(code.json()["CodeSha256"], config["CodeSha256"]);
    assert_eq!(code.json()["CodeSize"], new_zip.len());
    assert_eq!(server.invoke("f1", "{}").text().trim(), "\"v2\"");

    let deleted = server.lambda("DELETE", "/2015-03-31/functions/f1", b"");
    assert_eq!(deleted.status, 204);
    let gone = server.lambda("GET", "/2015-03-31/functions/f1", b"");
    assert_eq!((gone.status, gone.error_type()), (404, "ResourceNotFoundException"));
    assert!(gone.json()["message"].as_str().unwrap().starts_with("Function not found: arn:aws:lambda:"));
    let again = server.lambda("DELETE", "/2015-03-31/functions/f1", b"");
    assert_eq!(again.status, 404);
}

#[test]
fn functions_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let created = {
        let mut server = Server::start_in(&data, &[]);
        let created = server.create("keep", &sh_runtime("echo '\"kept\"' > /tmp/response"), json!({})).json();
        server.stop();
        created
    };
    let server = Server::start_in(&data, &[]);
    let got = server.lambda("GET", "/2015-03-31/functions/keep/configuration", b"");
    assert_eq!(got.json(), created);
    assert_eq!(server.invoke("keep", "{}").text().trim(), "\"kept\"");
}

#[test]
fn logs_are_kept_and_readable_with_filter_log_events() {
    let server = Server::start();
    server.create("logger", &sh_runtime("echo \"hello from $id\""), json!({}));
    let reply = server.invoke("logger", "{}");
    let request_id = reply.header("x-amzn-requestid").unwrap().to_string();
    let ok = crate::harness::eventually(std::time::Duration::from_secs(10), || {
        server.log_events("logger").iter().any(|e| e["message"].as_str().unwrap_or("").starts_with("REPORT RequestId"))
    });
    assert!(ok, "no REPORT line in the stored logs");
    let messages: Vec<String> = server.log_events("logger").iter().map(|e| e["message"].as_str().unwrap().to_string()).collect();
    assert!(messages.contains(&format!("START RequestId: {request_id} Version: $LATEST\n")), "{messages:?}");
    assert!(messages.contains(&format!("hello from {request_id}\n")), "{messages:?}");
    assert!(messages.contains(&format!("END RequestId: {request_id}\n")), "{messages:?}");

    let missing = server.signed(
        "logs",
        "POST",
        "/",
        "",
        &[("x-amz-target", "Logs_20140328.FilterLogEvents"), ("content-type", "application/x-amz-json-1.1")],
        br#"{"logGroupName": "/aws/lambda/nothing"}"#,
    );
    assert_eq!((missing.status, missing.error_type()), (400, "ResourceNotFoundException"));
}
