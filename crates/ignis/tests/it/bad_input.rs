//! Bad input gets Lambda's error types and harms nothing already stored.

use base64::Engine;
use serde_json::json;

use crate::harness::{Server, sh_runtime, zip_of};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Sends `body` to CreateFunction and checks the answer's status and type.
fn check_create(server: &Server, body: &[u8], status: u16, error_type: &str) {
    let reply = server.lambda("POST", "/2015-03-31/functions", body);
    assert_eq!((reply.status, reply.error_type()), (status, error_type), "{}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]), reply.text());
    assert!(reply.json()["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", reply.text());
}

fn create_body(name: &str, zip: &[u8], extra: serde_json::Value) -> Vec<u8> {
    let mut body = json!({ "FunctionName": name, "Runtime": "provided.al2023", "Role": "r", "Code": { "ZipFile": b64(zip) } });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body.to_string().into_bytes()
}

#[test]
fn bad_create_requests() {
    let server = Server::start();
    let good = sh_runtime("echo '\"still here\"' > /tmp/response");
    assert_eq!(server.create("survivor", &good, json!({})).status, 201);

    check_create(&server, b"{not json", 400, "InvalidRequestContentException");
    check_create(&server, &create_body("x", &good, json!({ "MemorySize": "lots" })), 400, "InvalidRequestContentException");
    check_create(&server, &create_body("x", &good, json!({ "Environment": { "Variables": { "A": 1 } } })), 400, "InvalidRequestContentException");
    for memory in [0, 127, 10241] {
        check_create(&server, &create_body("x", &good, json!({ "MemorySize": memory })), 400, "ValidationException");
    }
    for timeout in [0, 901, -1] {
        check_create(&server, &create_body("x", &good, json!({ "Timeout": timeout })), 400, "ValidationException");
    }
    for name in ["", "has space", "x".repeat(65).as_str(), "a/b", "..", "f:1"] {
        let expected = if name == "f:1" { "InvalidParameterValueException" } else { "ValidationException" };
        check_create(&server, &create_body(name, &good, json!({})), 400, expected);
    }
    check_create(&server, &create_body("x", &good, json!({ "Runtime": "cobol" })), 400, "ValidationException");
    check_create(&server, &create_body("x", &good, json!({ "Runtime": "python3.12" })), 400, "InvalidParameterValueException");
    check_create(&server, &create_body("x", &good, json!({ "Environment": { "Variables": { "AWS_REGION": "x" } } })), 400, "InvalidParameterValueException");
    check_create(&server, &create_body("x", b"this is not a zip", json!({})), 400, "InvalidParameterValueException");
    let traversal = zip_of(&[("bootstrap", b"#!/bin/sh\n", 0o755), ("../escape", b"x", 0o644)]);
    check_create(&server, &create_body("x", &traversal, json!({})), 400, "InvalidParameterValueException");
    let absolute = zip_of(&[("bootstrap", b"#!/bin/sh\n", 0o755), ("/etc/evil", b"x", 0o644)]);
    check_create(&server, &create_body("x", &absolute, json!({})), 400, "InvalidParameterValueException");
    let no_bootstrap = zip_of(&[("main.sh", b"#!/bin/sh\n", 0o755)]);
    check_create(&server, &create_body("x", &no_bootstrap, json!({})), 400, "InvalidParameterValueException");
    let body = json!({ "FunctionName": "x", "Runtime": "provided.al2023", "Role": "r", "Code": { "ZipFile": "***" } });
    check_create(&server, body.to_string().as_bytes(), 400, "InvalidRequestContentException");
    let body = json!({ "FunctionName": "x", "Runtime": "provided.al2023", "Role": "r", "Code": { "S3Bucket": "b", "S3Key": "k" } });
    check_create(&server, body.to_string().as_bytes(), 400, "InvalidParameterValueException");

    // A zip bomb: far over the unzipped limit, small on the wire.
    let bomb = {
        use std::io::Write;
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        writer.start_file("bootstrap", options.unix_permissions(0o755)).unwrap();
        writer.write_all(b"#!/bin/sh\n").unwrap();
        writer.start_file("zeros", options).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..300 {
            writer.write_all(&chunk).unwrap();
        }
        writer.finish().unwrap().into_inner()
    };
    check_create(&server, &create_body("x", &bomb, json!({})), 400, "InvalidParameterValueException");

    // Too large a request.
    let huge = vec![b' '; 71 * 1024 * 1024];
    let reply = server.lambda("POST", "/2015-03-31/functions", &huge);
    assert_eq!((reply.status, reply.error_type()), (413, "RequestEntityTooLargeException"));

    // Nothing was created, and the function already there is unharmed.
    let list = server.lambda("GET", "/2015-03-31/functions/", b"").json();
    let names: Vec<&str> = list["Functions"].as_array().unwrap().iter().map(|f| f["FunctionName"].as_str().unwrap()).collect();
    assert_eq!(names, ["survivor"]);
    assert_eq!(server.invoke("survivor", "{}").text().trim(), "\"still here\"");
}

#[test]
fn bad_updates_and_invokes() {
    let server = Server::start();
    let good = sh_runtime("echo '\"still here\"' > /tmp/response");
    let created = server.create("survivor", &good, json!({})).json();

    let reply = server.lambda("PUT", "/2015-03-31/functions/survivor/configuration", br#"{"Timeout": 0}"#);
    assert_eq!((reply.status, reply.error_type()), (400, "ValidationException"));
    let reply = server.lambda("PUT", "/2015-03-31/functions/survivor/configuration", br#"{"Timeout": "soon"}"#);
    assert_eq!((reply.status, reply.error_type()), (400, "InvalidRequestContentException"));
    let body = json!({ "ZipFile": b64(b"not a zip") });
    let reply = server.lambda("PUT", "/2015-03-31/functions/survivor/code", body.to_string().as_bytes());
    assert_eq!((reply.status, reply.error_type()), (400, "InvalidParameterValueException"));
    let reply = server.lambda("PUT", "/2015-03-31/functions/nobody/configuration", br#"{"Timeout": 5}"#);
    assert_eq!((reply.status, reply.error_type()), (404, "ResourceNotFoundException"));

    let reply = server.invoke("nobody", "{}");
    assert_eq!((reply.status, reply.error_type()), (404, "ResourceNotFoundException"));
    let reply = server.invoke("survivor", "{not json");
    assert_eq!((reply.status, reply.error_type()), (400, "InvalidRequestContentException"));
    let big = format!("\"{}\"", "x".repeat(6 * 1024 * 1024));
    let reply = server.invoke("survivor", &big);
    assert_eq!((reply.status, reply.error_type()), (413, "RequestTooLargeException"));
    let reply = server.invoke_with("survivor", &format!("\"{}\"", "x".repeat(1024 * 1024 + 10)), &[("x-amz-invocation-type", "Event")]);
    assert_eq!((reply.status, reply.error_type()), (413, "RequestTooLargeException"));
    let reply = server.lambda("POST", "/2015-03-31/functions/survivor/invocations?Qualifier=7", b"{}");
    assert_eq!((reply.status, reply.error_type()), (404, "ResourceNotFoundException"));
    let reply = server.lambda("GET", "/2015-03-31/functions/?MaxItems=0", b"");
    assert_eq!((reply.status, reply.error_type()), (400, "ValidationException"));
    let reply = server.lambda("PATCH", "/2015-03-31/functions/survivor", b"");
    assert_eq!(reply.status, 404);

    // Unharmed.
    let now = server.lambda("GET", "/2015-03-31/functions/survivor/configuration", b"").json();
    assert_eq!(now, created);
    assert_eq!(server.invoke("survivor", "{}").text().trim(), "\"still here\"");
}

#[test]
fn a_response_over_6_mb_is_a_function_error() {
    let server = Server::start();
    let zip = sh_runtime("head -c 7000000 /dev/zero | tr '\\0' a | sed 's/^/\"/; s/$/\"/' > /tmp/response");
    server.create("big", &zip, json!({ "Timeout": 30 }));
    let reply = server.invoke("big", "{}");
    assert_eq!(reply.header("x-amz-function-error"), Some("Unhandled"), "{}", &reply.text()[..200.min(reply.body.len())]);
    assert_eq!(reply.json()["errorType"], "Function.ResponseSizeTooLarge");
}
