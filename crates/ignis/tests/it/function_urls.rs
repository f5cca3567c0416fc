//! Function URLs: their configs through the Lambda API, and plain HTTP to `--url-listen` (a request's `Host` names
//! the URL): payload format 2.0 events, answers mapped back, SigV4 for `AWS_IAM`, CORS preflights, limits.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::harness::{Reply, Server, free_address, parse_reply, sh_runtime};

/// A server serving function URLs on a port of its own; the URL listener's address.
fn start() -> (Server, String) {
    let urls = free_address();
    (Server::start_with(&["--url-listen", &urls]), urls)
}

/// A plain HTTP/1.1 request to `address` with `host` as its `Host`.
pub(crate) fn send(address: &str, host: &str, method: &str, target: &str, headers: &[(String, String)], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    parse_reply(&bytes)
}

/// The `Host` of a function URL (`http://HOST/`).
pub(crate) fn host_of(url: &str) -> String {
    url.strip_prefix("http://").unwrap().trim_end_matches('/').to_string()
}

/// `headers` plus SigV4's (service `lambda`) for a request to `host`.
fn signed(host: &str, method: &str, path: &str, query: &str, body: &[u8], credentials: &ignis_sigv4::Credentials) -> Vec<(String, String)> {
    let all = [("host", host)];
    let parts = ignis_sigv4::RequestParts { method, path, query, headers: &all, body };
    ignis_sigv4::sign(&parts, credentials, "us-east-1", "lambda", SystemTime::now())
}

fn create_url(server: &Server, function: &str, query: &str, config: Value) -> Reply {
    let path = format!("/2021-10-31/functions/{function}/url{query}");
    server.lambda("POST", &path, config.to_string().as_bytes())
}

#[test]
fn an_iam_url_gets_the_event_and_maps_the_answer_back() {
    let (server, urls) = start();
    // Answers with the event it got.
    assert_eq!(server.create("echo", &sh_runtime("cp /tmp/event /tmp/response"), json!({})).status, 201);
    let created = create_url(&server, "echo", "", json!({ "AuthType": "AWS_IAM" }));
    assert_eq!(created.status, 201, "{}", created.text());
    let config = created.json();
    let url = config["FunctionUrl"].as_str().unwrap().to_string();
    let port = urls.rsplit_once(':').unwrap().1;
    assert!(url.starts_with("http://") && url.ends_with(&format!(".lambda-url.us-east-1.localhost:{port}/")), "{url}");
    assert_eq!(config["AuthType"], "AWS_IAM");
    assert_eq!(config["InvokeMode"], "BUFFERED");
    assert!(config["FunctionArn"].as_str().unwrap().ends_with(":function:echo"), "{config}");
    let host = host_of(&url);

    // Unsigned, or signed by another account: refused.
    let unsigned = send(&urls, &host, "GET", "/", &[], b"");
    assert_eq!((unsigned.status, unsigned.json()), (403, json!({ "Message": "Forbidden" })));
    let (_, tenant) = server.create_account("url-tenant");
    let other = signed(&host, "GET", "/", "", b"", &tenant);
    assert_eq!(send(&urls, &host, "GET", "/", &other, b"").status, 403);

    let body = br#"{"order": 7}"#;
    let mut headers = signed(&host, "POST", "/orders/new", "a=1&a=2&b=x%20y", body, &Server::credentials());
    headers.push(("content-type".into(), "application/json".into()));
    headers.push(("cookie".into(), "session=abc; theme=dark".into()));
    // Headers sent besides the signed ones are the event's too.
    let reply = send(&urls, &host, "POST", "/orders/new?a=1&a=2&b=x%20y", &headers, body);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let event = reply.json();
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["rawPath"], "/orders/new");
    assert_eq!(event["rawQueryString"], "a=1&a=2&b=x%20y");
    assert_eq!(event["queryStringParameters"], json!({ "a": "1,2", "b": "x y" }));
    assert_eq!(event["cookies"], json!(["session=abc", "theme=dark"]));
    assert_eq!(event["body"], r#"{"order": 7}"#);
    assert_eq!(event["isBase64Encoded"], false);
    assert_eq!(event["requestContext"]["http"]["method"], "POST");
    assert_eq!(event["requestContext"]["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(event["requestContext"]["domainPrefix"], config["FunctionUrl"].as_str().unwrap()[7..39]);
    assert_eq!(event["requestContext"]["authorizer"]["iam"]["accessKey"], Server::credentials().access_key_id);
    assert!(reply.header("x-amzn-requestid").is_some());

    // An unknown URL id, or a host that is no URL: refused alike.
    let unknown = host.replacen(&host[..4], "zzzz", 1);
    assert_eq!(send(&urls, &unknown, "GET", "/", &[], b"").status, 403);
    assert_eq!(send(&urls, "localhost", "GET", "/", &[], b"").status, 403);
}

#[test]
fn shaped_answers_errors_and_limits() {
    let (server, urls) = start();
    let handler = r#"
        if grep -q crash /tmp/event; then exit 3; fi
        printf '%s' '{"statusCode":201,"headers":{"content-type":"text/plain","x-made":"yes"},"cookies":["a=1","b=2"],"body":"made"}' > /tmp/response"#;
    assert_eq!(server.create("shaped", &sh_runtime(handler), json!({})).status, 201);
    let url = create_url(&server, "shaped", "", json!({ "AuthType": "AWS_IAM" })).json()["FunctionUrl"].as_str().unwrap().to_string();
    let host = host_of(&url);
    let get = |body: &[u8]| {
        let headers = signed(&host, "POST", "/", "", body, &Server::credentials());
        send(&urls, &host, "POST", "/", &headers, body)
    };
    let reply = get(b"fine");
    assert_eq!((reply.status, reply.text()), (201, "made".to_string()));
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.header("x-made"), Some("yes"));
    let cookies: Vec<&str> = reply.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie")).map(|(_, v)| v.as_str()).collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    // A function that fails: 502, as Lambda answers.
    let failed = get(b"crash");
    assert_eq!((failed.status, failed.json()), (502, json!({ "Message": "Internal Server Error" })));
    // Over Lambda's 6 MB: refused before the function runs.
    let big = vec![b'x'; 6 * 1024 * 1024 + 1];
    assert_eq!(get(&big).status, 413);
}

#[test]
fn cors_preflights_are_answered_from_the_config_without_a_signature() {
    let (server, urls) = start();
    assert_eq!(server.create("site", &sh_runtime("echo '\"hi\"' > /tmp/response"), json!({})).status, 201);
    let cors = json!({
        "AllowOrigins": ["https://app.example"], "AllowMethods": ["GET", "POST"], "AllowHeaders": ["x-custom"],
        "ExposeHeaders": ["x-out"], "MaxAge": 300,
    });
    let created = create_url(&server, "site", "", json!({ "AuthType": "AWS_IAM", "Cors": cors }));
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["Cors"]["AllowOrigins"], json!(["https://app.example"]));
    let host = host_of(created.json()["FunctionUrl"].as_str().unwrap());
    let preflight = |origin: &str| {
        let headers = [
            ("origin".to_string(), origin.to_string()),
            ("access-control-request-method".to_string(), "POST".to_string()),
        ];
        send(&urls, &host, "OPTIONS", "/", &headers, b"")
    };
    let allowed = preflight("https://app.example");
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.header("access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(allowed.header("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(allowed.header("access-control-allow-headers"), Some("x-custom"));
    assert_eq!(allowed.header("access-control-max-age"), Some("300"));
    assert_eq!(preflight("https://evil.example").header("access-control-allow-origin"), None);
    // An actual request from the origin gets the configured headers.
    let mut headers = signed(&host, "GET", "/", "", b"", &Server::credentials());
    headers.push(("origin".into(), "https://app.example".into()));
    let reply = send(&urls, &host, "GET", "/", &headers, b"");
    assert_eq!((reply.status, reply.text()), (200, "hi".to_string()));
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(reply.header("access-control-expose-headers"), Some("x-out"));
}

#[test]
fn url_configs_live_on_latest_or_an_alias_and_go_with_them() {
    let (server, urls) = start();
    let zip = sh_runtime("echo '\"v\"' > /tmp/response");
    assert_eq!(server.create("cfg", &zip, json!({ "Publish": true })).status, 201);
    let alias = json!({ "Name": "live", "FunctionVersion": "1" }).to_string();
    assert_eq!(server.lambda("POST", "/2015-03-31/functions/cfg/aliases", alias.as_bytes()).status, 201);

    // Not on a version; not twice; not on an alias that is not there; AuthType required and checked.
    let on_version = create_url(&server, "cfg", "?Qualifier=1", json!({ "AuthType": "NONE" }));
    assert_eq!((on_version.status, on_version.error_type()), (400, "ValidationException"), "{}", on_version.text());
    assert_eq!(create_url(&server, "cfg", "?Qualifier=nope", json!({ "AuthType": "NONE" })).status, 404);
    assert_eq!(create_url(&server, "cfg", "", json!({})).error_type(), "ValidationException");
    assert_eq!(create_url(&server, "cfg", "", json!({ "AuthType": "OPEN" })).error_type(), "ValidationException");
    let bad_mode = create_url(&server, "cfg", "", json!({ "AuthType": "NONE", "InvokeMode": "FAST" }));
    assert_eq!(bad_mode.error_type(), "ValidationException");
    let too_old = create_url(&server, "cfg", "", json!({ "AuthType": "NONE", "Cors": { "MaxAge": 86401 } }));
    assert_eq!(too_old.error_type(), "ValidationException");
    assert_eq!(create_url(&server, "cfg", "", json!({ "AuthType": "NONE" })).status, 201);
    let again = create_url(&server, "cfg", "", json!({ "AuthType": "NONE" }));
    assert_eq!((again.status, again.error_type()), (409, "ResourceConflictException"));
    let on_alias = create_url(&server, "cfg", "?Qualifier=live", json!({ "AuthType": "AWS_IAM" }));
    assert_eq!(on_alias.status, 201, "{}", on_alias.text());
    assert!(on_alias.json()["FunctionArn"].as_str().unwrap().ends_with(":function:cfg:live"));

    // Get, update, list.
    let got = server.lambda("GET", "/2021-10-31/functions/cfg/url?Qualifier=live", b"");
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["FunctionUrl"], on_alias.json()["FunctionUrl"]);
    assert!(got.json()["LastModifiedTime"].is_string());
    let update = json!({ "InvokeMode": "BUFFERED", "Cors": { "AllowOrigins": ["*"] } }).to_string();
    let updated = server.lambda("PUT", "/2021-10-31/functions/cfg/url?Qualifier=live", update.as_bytes());
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!((updated.json()["AuthType"].as_str(), updated.json()["Cors"]["AllowOrigins"][0].as_str()), (Some("AWS_IAM"), Some("*")));
    let listed = server.lambda("GET", "/2021-10-31/functions/cfg/urls", b"").json();
    assert_eq!(listed["FunctionUrlConfigs"].as_array().unwrap().len(), 2, "{listed}");

    // The alias's URL answers, signed; it goes with the alias.
    let host = host_of(on_alias.json()["FunctionUrl"].as_str().unwrap());
    let headers = signed(&host, "GET", "/", "", b"", &Server::credentials());
    assert_eq!(send(&urls, &host, "GET", "/", &headers, b"").text(), "v");
    assert_eq!(server.lambda("DELETE", "/2015-03-31/functions/cfg/aliases/live", b"").status, 204);
    let headers = signed(&host, "GET", "/", "", b"", &Server::credentials());
    assert_eq!(send(&urls, &host, "GET", "/", &headers, b"").status, 403);
    assert_eq!(server.lambda("GET", "/2021-10-31/functions/cfg/url?Qualifier=live", b"").status, 404);

    // Deleted: gone.
    assert_eq!(server.lambda("DELETE", "/2021-10-31/functions/cfg/url", b"").status, 204);
    assert_eq!(server.lambda("DELETE", "/2021-10-31/functions/cfg/url", b"").status, 404);
    let missing = server.lambda("GET", "/2021-10-31/functions/cfg/url", b"");
    assert_eq!((missing.status, missing.error_type()), (404, "ResourceNotFoundException"));
}

#[test]
fn without_url_listen_configs_are_refused_clearly() {
    let server = Server::start();
    assert_eq!(server.create("plain", &sh_runtime("true"), json!({})).status, 201);
    let refused = create_url(&server, "plain", "", json!({ "AuthType": "AWS_IAM" }));
    assert_eq!(refused.status, 400);
    assert!(refused.text().contains("--url-listen"), "{}", refused.text());
}

fn add_permission(server: &Server, function: &str, statement: Value) -> Reply {
    server.lambda("POST", &format!("/2015-03-31/functions/{function}/policy"), statement.to_string().as_bytes())
}

#[test]
fn resource_policies_open_a_public_url_and_let_another_account_in() {
    let (server, urls) = start();
    assert_eq!(server.create("open", &sh_runtime("echo '\"public\"' > /tmp/response"), json!({})).status, 201);
    let public = create_url(&server, "open", "", json!({ "AuthType": "NONE" })).json();
    let public_host = host_of(public["FunctionUrl"].as_str().unwrap());
    // A NONE URL answers nobody until a statement allows anyone, as on Lambda.
    assert_eq!(send(&urls, &public_host, "GET", "/", &[], b"").status, 403);
    let anyone = json!({
        "StatementId": "public-url", "Action": "lambda:InvokeFunctionUrl", "Principal": "*", "FunctionUrlAuthType": "NONE",
    });
    assert_eq!(add_permission(&server, "open", anyone).status, 201);
    let reply = send(&urls, &public_host, "GET", "/", &[], b"");
    assert_eq!((reply.status, reply.text()), (200, "public".to_string()));
    // A statement for AWS_IAM URLs does not open a NONE one.
    assert_eq!(server.lambda("DELETE", "/2015-03-31/functions/open/policy/public-url", b"").status, 204);
    let iam_only = json!({
        "StatementId": "iam", "Action": "lambda:InvokeFunctionUrl", "Principal": "*", "FunctionUrlAuthType": "AWS_IAM",
    });
    assert_eq!(add_permission(&server, "open", iam_only).status, 201);
    assert_eq!(send(&urls, &public_host, "GET", "/", &[], b"").status, 403);

    // An AWS_IAM URL: another account's signature is refused until a statement names that account.
    assert_eq!(server.create("private", &sh_runtime("echo '\"private\"' > /tmp/response"), json!({})).status, 201);
    let private = create_url(&server, "private", "", json!({ "AuthType": "AWS_IAM" })).json();
    let host = host_of(private["FunctionUrl"].as_str().unwrap());
    let (tenant_id, tenant) = server.create_account("url-guest");
    let as_tenant = || send(&urls, &host, "GET", "/", &signed(&host, "GET", "/", "", b"", &tenant), b"");
    assert_eq!(as_tenant().status, 403);
    let guest = json!({
        "StatementId": "guest", "Action": "lambda:InvokeFunctionUrl", "Principal": tenant_id, "FunctionUrlAuthType": "AWS_IAM",
    });
    assert_eq!(add_permission(&server, "private", guest).status, 201);
    let reply = as_tenant();
    assert_eq!((reply.status, reply.text()), (200, "private".to_string()));
}
