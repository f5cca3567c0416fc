//! Resources a tenant could grow without bound: responses and destination
//! records past Lambda's limits, log floods, and code trees left behind by
//! code updates.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::harness::{Server, WorkerHost, eventually, sh_runtime};

/// Lambda's largest synchronous response.
const MAX_RESPONSE: usize = 6_291_556;

#[test]
fn a_response_is_refused_past_lambdas_limit_only() {
    let server = Server::start();
    // A JSON string of exactly `$SIZE` bytes, taken from the event.
    let handler = "size=$(cat /tmp/event); { printf '\"'; head -c $((size - 2)) /dev/zero | tr '\\0' a; printf '\"'; } > /tmp/response";
    assert_eq!(server.create("sized", &sh_runtime(handler), json!({ "Timeout": 30 })).status, 201);
    // 6 MiB and a little more is still within Lambda's limit.
    for size in [6 * 1024 * 1024 + 50, MAX_RESPONSE] {
        let reply = server.invoke("sized", &size.to_string());
        assert_eq!(reply.header("x-amz-function-error"), None, "{size}: {}", &reply.text()[..200.min(reply.body.len())]);
        assert_eq!(reply.body.len(), size);
    }
    let reply = server.invoke("sized", &(MAX_RESPONSE + 1).to_string());
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        reply.json(),
        json!({
            "errorType": "Function.ResponseSizeTooLarge",
            "errorMessage": "Response payload size exceeded maximum allowed payload size (6291556 bytes).",
        })
    );
    // The sandbox serves on.
    assert_eq!(server.invoke("sized", "4").text(), "\"aa\"");
}

fn put_destination(server: &Server, name: &str, arn: &str) {
    let config = json!({ "DestinationConfig": { "OnSuccess": { "Destination": arn } } });
    let reply = server.lambda("PUT", &format!("/2019-09-25/functions/{name}/event-invoke-config"), config.to_string().as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.text());
}

fn event(server: &Server, name: &str, payload: &str) -> String {
    let reply = server.invoke_with(name, payload, &[("x-amz-invocation-type", "Event")]);
    assert_eq!(reply.status, 202, "{}", reply.text());
    reply.header("x-amzn-requestid").unwrap().to_string()
}

fn messages(server: &Server, name: &str, prefix: &str) -> Vec<String> {
    server
        .log_events(name)
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_destination_record_too_large_for_its_destination_is_not_delivered() {
    let server = Server::start();
    // Answers 6 MB of NUL bytes: its record, with each NUL written `\u0000`, would be 36 MB.
    let zeros = sh_runtime("head -c 6000000 /dev/zero > /tmp/response");
    let created = server.create("zeros", &zeros, json!({ "Timeout": 30 }));
    assert_eq!(created.status, 201, "{}", created.text());
    put_destination(&server, "zeros", created.json()["FunctionArn"].as_str().unwrap());
    let id = event(&server, "zeros", "{}");
    let dropped = format!("The destination record of RequestId: {id} was not delivered");
    assert!(
        eventually(Duration::from_secs(60), || messages(&server, "zeros", &dropped).len() == 1),
        "{:?}",
        server.log_events("zeros")
    );
    let line = &messages(&server, "zeros", &dropped)[0];
    assert!(line.contains("larger than 1048576 bytes"), "{line}");
    // Only the first event ran: the record did not become another.
    assert_eq!(messages(&server, "zeros", "START ").len(), 1);

    // A queue takes at most its MaximumMessageSize.
    use crate::sqs::{attribute, create, receive};
    let small = create(&server, "small", json!({ "MaximumMessageSize": "1024" }));
    let small_arn = attribute(&server, &small, "QueueArn");
    let handler = "n=$(cat /tmp/event); { printf '\"'; head -c $n /dev/zero | tr '\\0' b; printf '\"'; } > /tmp/response";
    assert_eq!(server.create("sized", &sh_runtime(handler), json!({})).status, 201);
    put_destination(&server, "sized", &small_arn);
    let too_big = event(&server, "sized", "2000");
    let refused = format!("A message for RequestId: {too_big} was not delivered to {small_arn}");
    assert!(eventually(Duration::from_secs(60), || messages(&server, "sized", &refused).len() == 1));
    let fits = event(&server, "sized", "10");
    let mut got = Vec::new();
    assert!(eventually(Duration::from_secs(30), || {
        got.extend(receive(&server, &small, json!({})));
        !got.is_empty()
    }));
    let record: Value = serde_json::from_str(got[0]["Body"].as_str().unwrap()).unwrap();
    assert_eq!(record["requestContext"]["requestId"], fits.as_str());
    assert_eq!(record["responsePayload"], "b".repeat(10));
}

/// The `FilterLogEvents` events of a function that contain `pattern`.
fn matching(server: &Server, name: &str, pattern: &str) -> usize {
    let body = json!({ "logGroupName": format!("/aws/lambda/{name}"), "filterPattern": pattern });
    let reply = server.logs("FilterLogEvents", &body);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["events"].as_array().unwrap().len()
}

/// `storedBytes` of a function's log group.
fn stored_bytes(server: &Server, name: &str) -> u64 {
    let body = json!({ "logGroupNamePrefix": format!("/aws/lambda/{name}") });
    let reply = server.logs("DescribeLogGroups", &body);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["logGroups"][0]["storedBytes"].as_u64().unwrap()
}

#[test]
fn a_log_flood_is_kept_within_the_functions_cap() {
    const CAP: u64 = 4 * 1024 * 1024;
    let server = Server::start_with(&["--log-bytes-per-function", &CAP.to_string()]);
    // 100 MB of stdout (lines of 1000 bytes), as fast as the runtime can write.
    let flood = "head -c 100000000 /dev/zero | tr '\\0' x | fold -w 999; echo '\"flooded\"' > /tmp/response";
    assert_eq!(server.create("flood", &sh_runtime(flood), json!({ "Timeout": 300 })).status, 201);
    let database = server.data.join("ignis.redb");
    let mut sizes = Vec::new();
    for round in 0..3 {
        let reply = server.invoke("flood", "{}");
        assert_eq!(reply.text().trim(), "\"flooded\"");
        let id = reply.header("x-amzn-requestid").unwrap().to_string();
        // Its last line is stored.
        assert!(eventually(Duration::from_secs(60), || matching(&server, "flood", &format!("REPORT RequestId: {id}")) == 1));
        let stored = stored_bytes(&server, "flood");
        assert!(stored <= CAP, "round {round}: {stored} bytes of logs kept");
        assert!(stored >= CAP / 2, "round {round}: only {stored} bytes of logs kept");
        sizes.push(std::fs::metadata(&database).unwrap().len());
    }
    eprintln!("database file after each flood: {sizes:?}");
    // 300 MB were written (one flood alone made a 140 MB file when nothing was capped); the file
    // holds the capped logs, pages freed and not reused yet (readers may pin them meanwhile) and
    // the database's room to grow, which comes in doublings: it stays far below what was written.
    assert!(sizes.iter().all(|&s| s < 24 * CAP), "the database grew to {sizes:?}");
}

/// A zip whose `bootstrap` answers `tag`, with a file of `mb` MB of zeros (a few kB zipped).
fn big_zip(tag: &str, mb: usize) -> Vec<u8> {
    let script = format!(
        "#!/bin/sh\napi=\"http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime\"\nwhile true; do\n  curl -sS -D /tmp/h -o /tmp/e \"$api/invocation/next\" || exit 1\n  id=$(tr -d '\\r' < /tmp/h | sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: //p')\n  if grep -q wait /tmp/e; then echo started; while true; do sleep 1; done; fi\n  echo \"\\\"{tag} $(wc -c < /var/task/zeros)\\\"\" > /tmp/r\n  curl -sS -o /dev/null -X POST \"$api/invocation/$id/response\" --data-binary @/tmp/r\ndone\n"
    );
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    writer.start_file("bootstrap", options.unix_permissions(0o755)).unwrap();
    writer.write_all(script.as_bytes()).unwrap();
    writer.start_file("zeros", options.unix_permissions(0o644)).unwrap();
    let chunk = vec![0u8; 1024 * 1024];
    for _ in 0..mb {
        writer.write_all(&chunk).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// The code trees under a data directory.
fn trees(data: &Path) -> BTreeSet<String> {
    std::fs::read_dir(data.join("code"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// The hex SHA-256 (the tree's name) of a function configuration's `CodeSha256`.
fn tree_of(configuration: &Value) -> String {
    let digest = base64::engine::general_purpose::STANDARD.decode(configuration["CodeSha256"].as_str().unwrap()).unwrap();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn update_code(server: &Server, name: &str, zip: &[u8]) -> Value {
    let body = json!({ "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip) });
    let reply = server.lambda("PUT", &format!("/2015-03-31/functions/{name}/code"), body.to_string().as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

const MB: usize = 64;

#[test]
fn code_trees_go_when_no_function_version_or_sandbox_uses_them() {
    let server = Server::start();
    let created = server.create("big", &big_zip("v0", MB), json!({ "Timeout": 15 }));
    assert_eq!(created.status, 201, "{}", created.text());
    let bytes = MB * 1024 * 1024;
    assert_eq!(server.invoke("big", "{}").text().trim(), format!("\"v0 {bytes}\""));
    // Every update replaces the tree; the old one goes once its idle sandbox is retired.
    let mut current = tree_of(&created.json());
    for n in 1..=4 {
        let tag = format!("v{n}");
        current = tree_of(&update_code(&server, "big", &big_zip(&tag, MB)));
        assert_eq!(server.invoke("big", "{}").text().trim(), format!("\"{tag} {bytes}\""));
        let expected = BTreeSet::from([current.clone()]);
        assert!(eventually(Duration::from_secs(30), || trees(&server.data) == expected), "{:?}", trees(&server.data));
    }
    // A published version keeps its tree after $LATEST moves on.
    let published = server.lambda("POST", "/2015-03-31/functions/big/versions", b"{}");
    assert_eq!(published.status, 201, "{}", published.text());
    let latest = tree_of(&update_code(&server, "big", &big_zip("v5", MB)));
    let both = BTreeSet::from([current.clone(), latest.clone()]);
    assert!(eventually(Duration::from_secs(30), || trees(&server.data) == both), "{:?}", trees(&server.data));
    assert_eq!(server.invoke_with("big:1", "{}", &[]).text().trim(), format!("\"v4 {bytes}\""));

    // A sandbox in the middle of an invocation keeps its tree until it ends.
    let busy = std::thread::scope(|scope| {
        let running = scope.spawn(|| server.invoke("big", "\"wait\""));
        assert!(eventually(Duration::from_secs(30), || server.log_events("big").iter().any(|e| e["message"] == "started\n")));
        let newest = tree_of(&update_code(&server, "big", &big_zip("v6", MB)));
        assert!(server.data.join("code").join(&latest).join("zeros").exists(), "the busy sandbox's code was removed");
        let all = BTreeSet::from([current.clone(), latest.clone(), newest.clone()]);
        assert_eq!(trees(&server.data), all);
        // It ends with its timeout, and its tree with it.
        let reply = running.join().unwrap();
        assert_eq!(reply.json()["errorType"], "Sandbox.Timedout", "{}", reply.text());
        newest
    });
    let expected = BTreeSet::from([current.clone(), busy.clone()]);
    assert!(eventually(Duration::from_secs(30), || trees(&server.data) == expected), "{:?}", trees(&server.data));

    // Deleting the version, then the function, leaves nothing.
    assert_eq!(server.lambda("DELETE", "/2015-03-31/functions/big?Qualifier=1", b"").status, 204);
    let expected = BTreeSet::from([busy]);
    assert!(eventually(Duration::from_secs(30), || trees(&server.data) == expected), "{:?}", trees(&server.data));
    assert_eq!(server.lambda("DELETE", "/2015-03-31/functions/big", b"").status, 204);
    assert!(eventually(Duration::from_secs(30), || trees(&server.data).is_empty()), "{:?}", trees(&server.data));
    // And nothing waits to be deleted.
    let entries = || std::fs::read_dir(server.data.join("code")).unwrap().count();
    assert!(eventually(Duration::from_secs(30), || entries() == 0));
}

#[test]
fn a_worker_host_keeps_only_the_code_its_sandboxes_use() {
    let server = Server::start_with(&["--no-local-worker"]);
    let worker = WorkerHost::start(&server, &[]);
    server.wait_for_workers(1);
    let created = server.create("big", &big_zip("v0", MB), json!({}));
    assert_eq!(created.status, 201, "{}", created.text());
    let bytes = MB * 1024 * 1024;
    assert_eq!(server.invoke("big", "{}").text().trim(), format!("\"v0 {bytes}\""));
    assert_eq!(trees(&worker.data).len(), 1);
    for n in 1..=3 {
        let tag = format!("v{n}");
        update_code(&server, "big", &big_zip(&tag, MB));
        assert_eq!(server.invoke("big", "{}").text().trim(), format!("\"{tag} {bytes}\""));
        assert!(eventually(Duration::from_secs(30), || trees(&worker.data).len() == 1), "{:?}", trees(&worker.data));
    }
    assert_eq!(server.lambda("DELETE", "/2015-03-31/functions/big", b"").status, 204);
    assert!(eventually(Duration::from_secs(30), || trees(&worker.data).is_empty()), "{:?}", trees(&worker.data));
    assert!(eventually(Duration::from_secs(30), || trees(&server.data).is_empty()), "{:?}", trees(&server.data));
}
