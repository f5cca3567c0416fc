//! Session credentials: every sandbox finds a key pair and token for its
//! function's account in its environment; requests signed with them (and the
//! token in `X-Amz-Security-Token`) act for that account, never as the
//! administrator, and stop working when the function is deleted.

use ignis_sigv4::Credentials;
use serde_json::json;

use crate::harness::{Reply, Server, sh_runtime};

/// A sandbox's credentials, as its function reads them from its environment.
struct Session {
    credentials: Credentials,
    token: String,
}

/// A function that answers its credentials, one per line.
fn reader() -> Vec<u8> {
    sh_runtime(r#"printf '%s\n%s\n%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" "$AWS_SESSION_TOKEN" > /tmp/response"#)
}

/// Room for a cold start on a busy machine.
fn slow_start() -> serde_json::Value {
    json!({ "Timeout": 30 })
}

/// Invokes `name` (a [`reader`]) with `owner`'s key and reads its credentials.
fn session_of(server: &Server, owner: &Credentials, name: &str) -> Session {
    let reply = server.invoke_as(owner, name, "{}");
    assert_eq!((reply.status, reply.header("x-amz-function-error")), (200, None), "{}", reply.text());
    let text = reply.text();
    let lines: Vec<&str> = text.lines().collect();
    let [key, secret, token] = lines[..] else { panic!("not three lines: {text:?}") };
    assert!(key.starts_with("ASIA") && key.len() == 20, "{key}");
    assert_eq!(secret.len(), 40);
    assert!(!token.is_empty());
    Session {
        credentials: Credentials { access_key_id: key.into(), secret_access_key: secret.into() },
        token: token.into(),
    }
}

/// A request signed with `session`'s key pair, its token in `X-Amz-Security-Token` (signed too, as the SDKs do).
fn signed(server: &Server, session: &Session, service: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut all = vec![("x-amz-security-token", session.token.as_str()), ("content-type", "application/json")];
    all.extend_from_slice(headers);
    server.signed_with(&session.credentials, service, method, path, "", &all, body)
}

fn sqs_call(server: &Server, session: &Session, action: &str, body: serde_json::Value) -> Reply {
    let target = format!("AmazonSQS.{action}");
    let headers = [("x-amz-target", target.as_str()), ("content-type", "application/x-amz-json-1.0")];
    let mut all = vec![("x-amz-security-token", session.token.as_str())];
    all.extend_from_slice(&headers);
    server.signed_with(&session.credentials, "sqs", "POST", "/", "", &all, body.to_string().as_bytes())
}

fn invoke(server: &Server, session: &Session, name: &str) -> Reply {
    signed(server, session, "lambda", "POST", &format!("/2015-03-31/functions/{name}/invocations"), &[], b"{}")
}

fn refused(reply: &Reply, error_type: &str) {
    assert_eq!((reply.status, reply.error_type()), (403, error_type), "{}", reply.text());
}

#[test]
fn sandboxes_act_for_their_functions_account_with_session_credentials() {
    let server = Server::start();
    let (_, alpha) = server.create_account("creds-alpha");
    let (_, beta) = server.create_account("creds-beta");
    for (name, zip) in [("reader", reader()), ("other", sh_runtime("echo '\"other\"' > /tmp/response"))] {
        let created = server.create_as_with(&alpha, name, &zip, slow_start());
        assert_eq!(created.status, 201, "{}", created.text());
    }
    let session = session_of(&server, &alpha, "reader");

    // The function's own configuration does not show them.
    for path in ["/2015-03-31/functions/reader", "/2015-03-31/functions/reader/configuration"] {
        let shown = server.lambda_as(&alpha, "GET", path, b"");
        assert_eq!(shown.status, 200, "{}", shown.text());
        let text = shown.text();
        assert!(!text.contains(&session.credentials.secret_access_key) && !text.contains(&session.token), "{text}");
    }

    // Its account's queues, not another account's.
    let own = sqs_call(&server, &session, "CreateQueue", json!({ "QueueName": "inbox" }));
    assert_eq!(own.status, 200, "{}", own.text());
    let own_url = own.json()["QueueUrl"].as_str().unwrap().to_string();
    let sent = sqs_call(&server, &session, "SendMessage", json!({ "QueueUrl": own_url, "MessageBody": "from the sandbox" }));
    assert_eq!(sent.status, 200, "{}", sent.text());
    let beta_queue = server.signed_with(
        &beta,
        "sqs",
        "POST",
        "/",
        "",
        &[("x-amz-target", "AmazonSQS.CreateQueue"), ("content-type", "application/x-amz-json-1.0")],
        json!({ "QueueName": "private" }).to_string().as_bytes(),
    );
    assert_eq!(beta_queue.status, 200, "{}", beta_queue.text());
    let beta_url = beta_queue.json()["QueueUrl"].as_str().unwrap().to_string();
    let elsewhere = sqs_call(&server, &session, "SendMessage", json!({ "QueueUrl": beta_url, "MessageBody": "x" }));
    assert_eq!((elsewhere.status, elsewhere.header("x-amzn-query-error")), (400, Some("AWS.SimpleQueueService.NonExistentQueue;Sender")));

    // Another function of its account.
    let other = invoke(&server, &session, "other");
    assert_eq!((other.status, other.text().trim()), (200, "\"other\""));

    // Never Ignis's own API.
    let accounts = signed(&server, &session, "ignis", "GET", "/ignis/accounts", &[], b"");
    refused(&accounts, "AccessDeniedException");

    // A changed token, the key pair without its token, and another key id with the token: invalid.
    let mut tampered = Session { credentials: session.credentials.clone(), token: session.token.clone() };
    let last = tampered.token.pop().unwrap();
    tampered.token.push(if last == 'A' { 'B' } else { 'A' });
    refused(&invoke(&server, &tampered, "other"), "UnrecognizedClientException");
    assert_eq!(invoke(&server, &tampered, "other").json()["message"], "The security token included in the request is invalid.");
    let bad_sqs = sqs_call(&server, &tampered, "SendMessage", json!({ "QueueUrl": own_url, "MessageBody": "x" }));
    assert_eq!((bad_sqs.status, bad_sqs.header("x-amzn-query-error")), (403, Some("InvalidClientTokenId;Sender")));
    let bare = server.signed_with(&session.credentials, "lambda", "POST", "/2015-03-31/functions/other/invocations", "", &[], b"{}");
    refused(&bare, "UnrecognizedClientException");
    let borrowed = Session { credentials: alpha.clone(), token: session.token.clone() };
    refused(&invoke(&server, &borrowed, "other"), "UnrecognizedClientException");

    // Deleted, the function's credentials end.
    let deleted = server.lambda_as(&alpha, "DELETE", "/2015-03-31/functions/reader", b"");
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    refused(&invoke(&server, &session, "other"), "UnrecognizedClientException");
    // Created again under the same name, it is another function: the old ones stay refused.
    let again = server.create_as_with(&alpha, "reader", &reader(), slow_start());
    assert_eq!(again.status, 201, "{}", again.text());
    refused(&invoke(&server, &session, "other"), "UnrecognizedClientException");
    let renewed = session_of(&server, &alpha, "reader");
    assert_ne!(renewed.credentials.access_key_id, session.credentials.access_key_id);
    assert_eq!(invoke(&server, &renewed, "other").status, 200);
}

#[test]
fn a_function_of_the_administrators_account_is_no_administrator() {
    let server = Server::start();
    let created = server.create("root-reader", &reader(), slow_start());
    assert_eq!(created.status, 201, "{}", created.text());
    let session = session_of(&server, &Server::credentials(), "root-reader");
    for (method, path) in [("GET", "/ignis/accounts"), ("POST", "/ignis/accounts"), ("GET", "/ignis/workers")] {
        let reply = signed(&server, &session, "ignis", method, path, &[], br#"{"Name":"sneaky"}"#);
        refused(&reply, "AccessDeniedException");
    }
    // It acts within its account as any of its key's callers would.
    let listed = signed(&server, &session, "lambda", "GET", "/2015-03-31/functions/", &[], b"");
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert!(listed.text().contains("root-reader"));
}
