//! Event source mappings from Ignis's queues to functions, over the wire:
//! the Lambda calls, delivery in Lambda's SQS event, deletes, failures and
//! redrive, disabling, restarts and `kill -9`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Reply, Server, eventually, jq_files, sandbox_ids, sh_runtime, sh_runtime_with};
use crate::sqs::{attribute, bodies, create, md5, ok, receive, send};

const MAPPINGS: &str = "/2015-03-31/event-source-mappings/";

/// A shell function that logs each event it gets on one line, then runs `handler`.
fn function(server: &Server, name: &str, handler: &str, extra: Value) {
    let created = server.create(name, &sh_runtime(&format!("cat /tmp/event; echo; {handler}")), extra);
    assert_eq!(created.status, 201, "{}", created.text());
}

/// A queue's URL and ARN.
fn queue(server: &Server, name: &str, attributes: Value) -> (String, String) {
    let url = create(server, name, attributes);
    let arn = attribute(server, &url, "QueueArn");
    (url, arn)
}

fn create_mapping(server: &Server, body: Value) -> Reply {
    server.lambda("POST", MAPPINGS, body.to_string().as_bytes())
}

/// A mapping that must be made; its answer.
fn mapping(server: &Server, body: Value) -> Value {
    let reply = create_mapping(server, body);
    assert_eq!(reply.status, 202, "{}", reply.text());
    reply.json()
}

fn get(server: &Server, uuid: &str) -> Reply {
    server.lambda("GET", &format!("{MAPPINGS}{uuid}"), b"")
}

fn update(server: &Server, uuid: &str, body: Value) -> Reply {
    server.lambda("PUT", &format!("{MAPPINGS}{uuid}"), body.to_string().as_bytes())
}

fn state(server: &Server, uuid: &str) -> String {
    get(server, uuid).json()["State"].as_str().unwrap_or_default().to_string()
}

/// Messages in the queue, visible, in flight or delayed.
fn left(server: &Server, url: &str) -> u64 {
    ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]
        .iter()
        .map(|name| attribute(server, url, name).parse::<u64>().unwrap())
        .sum()
}

/// The events the function was invoked with, from its log.
fn events(server: &Server, name: &str) -> Vec<Value> {
    server
        .log_events(name)
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e["message"].as_str()?.trim()).ok())
        .filter(|v| v.get("Records").is_some())
        .collect()
}

/// Every record the function was invoked with, by body.
fn records_by_body(server: &Server, name: &str) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for event in events(server, name) {
        for record in event["Records"].as_array().unwrap() {
            out.entry(record["body"].as_str().unwrap().to_string()).or_default().push(record.clone());
        }
    }
    out
}

#[test]
fn messages_arrive_in_lambdas_sqs_event_and_are_deleted() {
    let server = Server::start();
    function(&server, "consumer", "", json!({}));
    let (url, arn) = queue(&server, "jobs", json!({}));
    let created = mapping(&server, json!({ "EventSourceArn": arn, "FunctionName": "consumer", "BatchSize": 5 }));
    let uuid = created["UUID"].as_str().unwrap().to_string();
    assert_eq!(created["State"], "Creating");
    assert_eq!(created["BatchSize"], 5);
    assert_eq!(created["MaximumBatchingWindowInSeconds"], 0);
    assert_eq!(created["EventSourceArn"], arn);
    assert_eq!(created["FunctionArn"], format!("arn:aws:lambda:us-east-1:{}:function:consumer", account(&arn)));
    assert_eq!(created["StateTransitionReason"], "USER_INITIATED");
    assert_eq!(created["FunctionResponseTypes"], json!([]));
    assert!(created["LastModified"].as_f64().unwrap() > 1.6e9);
    assert_eq!(created["EventSourceMappingArn"], format!("arn:aws:lambda:us-east-1:{}:event-source-mapping:{uuid}", account(&arn)));
    assert!(eventually(Duration::from_secs(10), || state(&server, &uuid) == "Enabled"));

    let sent = ok(
        &server,
        "SendMessage",
        json!({
            "QueueUrl": url,
            "MessageBody": "first",
            "MessageAttributes": { "colour": { "DataType": "String", "StringValue": "blue" } },
        }),
    );
    let second = send(&server, &url, "second");
    assert!(eventually(Duration::from_secs(20), || left(&server, &url) == 0), "the queue did not drain");
    let mut seen = BTreeMap::new();
    assert!(eventually(Duration::from_secs(10), || {
        seen = records_by_body(&server, "consumer");
        seen.len() == 2
    }));
    let first = &seen["first"][0];
    assert_eq!(first["messageId"], sent["MessageId"]);
    assert_eq!(first["md5OfBody"], md5("first"));
    assert_eq!(first["md5OfMessageAttributes"], sent["MD5OfMessageAttributes"]);
    assert_eq!(first["messageAttributes"]["colour"]["stringValue"], "blue");
    assert_eq!(first["messageAttributes"]["colour"]["dataType"], "String");
    assert_eq!(first["eventSource"], "aws:sqs");
    assert_eq!(first["eventSourceARN"], arn);
    assert_eq!(first["awsRegion"], "us-east-1");
    assert_eq!(first["attributes"]["ApproximateReceiveCount"], "1");
    assert_eq!(first["attributes"]["SenderId"], account(&arn));
    assert!(first["attributes"]["SentTimestamp"].as_str().unwrap().parse::<u64>().unwrap() > 1_600_000_000_000);
    assert!(first["attributes"]["ApproximateFirstReceiveTimestamp"].as_str().unwrap().parse::<u64>().is_ok());
    assert_eq!(first["receiptHandle"].as_str().unwrap().len(), 64);
    assert_eq!(seen["second"][0]["messageId"], second);
    assert_eq!(seen["second"][0]["messageAttributes"], json!({}));
    assert!(seen.values().all(|records| records.len() == 1), "each message once: {seen:?}");

    // Get, List (with its filters), Delete.
    let got = get(&server, &uuid);
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["State"], "Enabled");
    let list = |query: &str| -> Vec<Value> {
        let reply = server.signed("lambda", "GET", MAPPINGS, query, &[], b"");
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["EventSourceMappings"].as_array().unwrap().clone()
    };
    assert_eq!(list("").len(), 1);
    assert_eq!(list("FunctionName=consumer")[0]["UUID"], uuid);
    assert_eq!(list(&format!("EventSourceArn={}", arn.replace(':', "%3A")))[0]["UUID"], uuid);
    assert!(list("FunctionName=other").is_empty());
    assert!(list("EventSourceArn=arn%3Aaws%3Asqs%3Aus-east-1%3A111111111111%3Ajobs").is_empty());
    let deleted = server.lambda("DELETE", &format!("{MAPPINGS}{uuid}"), b"");
    assert_eq!(deleted.status, 202, "{}", deleted.text());
    assert_eq!(deleted.json()["State"], "Deleting");
    assert_eq!(get(&server, &uuid).status, 404);
    assert!(list("").is_empty());

    // Without a mapping, messages stay.
    send(&server, &url, "third");
    // That it stays however long: ignis-pollers' deleting_a_mapping_ends_its_pollers_and_leaves_the_queue_alone.
    assert_eq!(left(&server, &url), 1);
}

/// The account id in an ARN.
fn account(arn: &str) -> &str {
    arn.split(':').nth(4).unwrap()
}

#[test]
fn failures_are_redriven_and_reported_item_failures_delete_only_the_others() {
    let server = Server::start();
    // A function that fails every batch with a poisoned message in it.
    // Timeouts and visibility timeouts leave room for a slow, busy host.
    function(&server, "fragile", "grep -q poison /tmp/event && exit 1", json!({ "Timeout": 3 }));
    let (dlq_url, dlq_arn) = queue(&server, "dead", json!({}));
    let redrive = json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2 }).to_string();
    let (url, arn) = queue(&server, "work", json!({ "VisibilityTimeout": "3", "RedrivePolicy": redrive }));
    mapping(&server, json!({ "EventSourceArn": arn, "FunctionName": "fragile" }));
    send(&server, &url, "poison-1");
    send(&server, &url, "poison-2");
    assert!(eventually(Duration::from_secs(60), || left(&server, &url) == 0 && left(&server, &dlq_url) == 2));
    let counts: Vec<usize> = records_by_body(&server, "fragile").values().map(Vec::len).collect();
    assert!(counts.iter().all(|n| *n >= 2), "each was tried maxReceiveCount times: {counts:?}");

    // ReportBatchItemFailures: the function names the bad ones; the others are deleted.
    let report = r#"/var/task/bin/jq -c '{batchItemFailures: [.Records[] | select(.body | startswith("bad")) | {itemIdentifier: .messageId}]}' /tmp/event > /tmp/response"#;
    let picky = sh_runtime_with(&format!("cat /tmp/event; echo; {report}"), &jq_files());
    assert_eq!(server.create("picky", &picky, json!({ "Timeout": 3 })).status, 201);
    let (dlq2_url, dlq2_arn) = queue(&server, "dead2", json!({}));
    let redrive = json!({ "deadLetterTargetArn": dlq2_arn, "maxReceiveCount": 1 }).to_string();
    let (url2, arn2) = queue(&server, "work2", json!({ "VisibilityTimeout": "3", "RedrivePolicy": redrive }));
    let created = mapping(
        &server,
        json!({ "EventSourceArn": arn2, "FunctionName": "picky", "FunctionResponseTypes": ["ReportBatchItemFailures"] }),
    );
    assert_eq!(created["FunctionResponseTypes"], json!(["ReportBatchItemFailures"]));
    let entries: Vec<Value> =
        ["good-1", "bad-1", "good-2"].iter().enumerate().map(|(i, body)| json!({ "Id": format!("e{i}"), "MessageBody": body })).collect();
    ok(&server, "SendMessageBatch", json!({ "QueueUrl": url2, "Entries": entries }));
    assert!(eventually(Duration::from_secs(60), || left(&server, &url2) == 0 && left(&server, &dlq2_url) == 1));
    assert_eq!(bodies(&receive(&server, &dlq2_url, json!({}))), ["bad-1"]);
    let seen = records_by_body(&server, "picky");
    assert_eq!(seen["good-1"].len(), 1, "{seen:?}");
    assert_eq!(seen["good-2"].len(), 1, "{seen:?}");
}

#[test]
fn disabling_stops_delivery_and_enabling_resumes_it() {
    let server = Server::start();
    function(&server, "switch", "", json!({}));
    let (url, arn) = queue(&server, "switched", json!({}));
    let uuid = mapping(&server, json!({ "EventSourceArn": arn, "FunctionName": "switch" }))["UUID"].as_str().unwrap().to_string();
    send(&server, &url, "before");
    assert!(eventually(Duration::from_secs(20), || left(&server, &url) == 0));

    let disabled = update(&server, &uuid, json!({ "Enabled": false }));
    assert_eq!(disabled.status, 202, "{}", disabled.text());
    assert_eq!(disabled.json()["State"], "Disabling");
    assert!(eventually(Duration::from_secs(10), || state(&server, &uuid) == "Disabled"));
    send(&server, &url, "while-disabled-1");
    send(&server, &url, "while-disabled-2");
    // That they stay however long: ignis-pollers' disabling_a_mapping_stops_its_pollers.
    assert_eq!(attribute(&server, &url, "ApproximateNumberOfMessages"), "2", "a disabled mapping receives nothing");

    // Other settings change without enabling it.
    let changed = update(&server, &uuid, json!({ "BatchSize": 50, "MaximumBatchingWindowInSeconds": 1 }));
    assert_eq!(changed.status, 202, "{}", changed.text());
    assert_eq!(changed.json()["State"], "Updating");
    assert_eq!((changed.json()["BatchSize"].clone(), changed.json()["MaximumBatchingWindowInSeconds"].clone()), (json!(50), json!(1)));
    assert_eq!(state(&server, &uuid), "Disabled");

    let enabled = update(&server, &uuid, json!({ "Enabled": true }));
    assert_eq!(enabled.json()["State"], "Enabling");
    assert!(eventually(Duration::from_secs(20), || left(&server, &url) == 0));
    assert_eq!(state(&server, &uuid), "Enabled");
    // With a window, the two waiting messages went in one batch.
    let events = events(&server, "switch");
    assert_eq!(events.last().unwrap()["Records"].as_array().unwrap().len(), 2, "{events:?}");

    // A mapping whose function is gone waits, and can still be disabled and deleted.
    assert_eq!(server.lambda("DELETE", "/2015-03-31/functions/switch", b"").status, 204);
    send(&server, &url, "orphan");
    // That it stays however long: ignis-pollers' a_mapping_whose_function_is_gone_receives_nothing_until_it_is_back.
    assert_eq!(left(&server, &url), 1);
    let disabled = update(&server, &uuid, json!({ "Enabled": false }));
    assert_eq!(disabled.status, 202, "{}", disabled.text());
    assert_eq!(server.lambda("DELETE", &format!("{MAPPINGS}{uuid}"), b"").status, 202);
}

#[test]
fn a_mapping_runs_an_alias_within_the_functions_concurrency() {
    let server = Server::start();
    function(&server, "limited", "sleep 0.2; echo \"ran version $AWS_LAMBDA_FUNCTION_VERSION\"", json!({}));
    let published = server.lambda("POST", "/2015-03-31/functions/limited/versions", b"{}");
    assert_eq!(published.status, 201, "{}", published.text());
    let alias = server.lambda("POST", "/2015-03-31/functions/limited/aliases", br#"{"Name":"live","FunctionVersion":"1"}"#);
    assert_eq!(alias.status, 201, "{}", alias.text());
    let reserved = server.lambda("PUT", "/2017-10-31/functions/limited/concurrency", br#"{"ReservedConcurrentExecutions":1}"#);
    assert_eq!(reserved.status, 200, "{}", reserved.text());
    let (url, arn) = queue(&server, "limited", json!({ "VisibilityTimeout": "20" }));
    let created = mapping(&server, json!({ "EventSourceArn": arn, "FunctionName": "limited:live", "BatchSize": 1 }));
    assert!(created["FunctionArn"].as_str().unwrap().ends_with(":function:limited:live"), "{created}");

    // Five pollers, one slot: the throttled batches wait their turn (up to
    // half the visibility timeout), without going back to the queue.
    let ids: Vec<String> = (0..10).map(|i| format!("n-{i}")).collect();
    send_all(&server, &url, &ids);
    assert!(eventually(Duration::from_secs(60), || left(&server, &url) == 0), "left: {}", left(&server, &url));
    let seen = records_by_body(&server, "limited");
    assert!(ids.iter().all(|id| seen.get(id).is_some_and(|r| r.len() == 1 && r[0]["attributes"]["ApproximateReceiveCount"] == "1")), "{seen:?}");
    let versions: Vec<String> = server
        .log_events("limited")
        .iter()
        .filter_map(|e| e["message"].as_str()?.trim().strip_prefix("ran version ").map(str::to_string))
        .collect();
    assert!(versions.len() >= ids.len() && versions.iter().all(|v| v == "1"), "{versions:?}");
}

#[test]
fn pollers_grow_with_a_backlog_up_to_the_maximum_concurrency() {
    let server = Server::start();
    function(&server, "wide", "sleep 0.3", json!({ "Timeout": 10 }));
    function(&server, "narrow", "sleep 0.3", json!({ "Timeout": 10 }));
    let (wide_url, wide_arn) = queue(&server, "wide", json!({}));
    let (narrow_url, narrow_arn) = queue(&server, "narrow", json!({}));
    let ids: Vec<String> = (0..60).map(|i| format!("w-{i}")).collect();
    send_all(&server, &wide_url, &ids);
    send_all(&server, &narrow_url, &ids[..20]);
    mapping(&server, json!({ "EventSourceArn": wide_arn, "FunctionName": "wide", "BatchSize": 1 }));
    let narrow = mapping(
        &server,
        json!({ "EventSourceArn": narrow_arn, "FunctionName": "narrow", "BatchSize": 1, "ScalingConfig": { "MaximumConcurrency": 2 } }),
    );
    assert_eq!(narrow["ScalingConfig"], json!({ "MaximumConcurrency": 2 }));
    assert!(eventually(Duration::from_secs(60), || left(&server, &wide_url) == 0 && left(&server, &narrow_url) == 0));
    // A sandbox serves one invocation at a time: the sandboxes count the pollers that ran at once.
    let wide = sandbox_ids(&server.log_events("wide")).len();
    let narrow = sandbox_ids(&server.log_events("narrow")).len();
    eprintln!("sandboxes: {wide} for the uncapped mapping, {narrow} for the capped one");
    assert!(wide > 5, "a backlog adds pollers beyond the first five: {wide} sandboxes");
    assert!(narrow <= 2, "MaximumConcurrency caps the pollers: {narrow} sandboxes");
    let reply = create_mapping(&server, json!({ "EventSourceArn": wide_arn, "FunctionName": "narrow", "ScalingConfig": { "MaximumConcurrency": 1 } }));
    assert_eq!((reply.status, reply.error_type()), (400, "ValidationException"), "{}", reply.text());
}

#[test]
fn mappings_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (uuid, url, off) = {
        let mut server = Server::start_in(&data, &[]);
        function(&server, "durable", "", json!({}));
        let (url, arn) = queue(&server, "kept", json!({}));
        let (_, other) = queue(&server, "off", json!({}));
        let uuid = mapping(&server, json!({ "EventSourceArn": arn, "FunctionName": "durable", "BatchSize": 7 }))["UUID"]
            .as_str()
            .unwrap()
            .to_string();
        let off = mapping(&server, json!({ "EventSourceArn": other, "FunctionName": "durable", "Enabled": false }))["UUID"]
            .as_str()
            .unwrap()
            .to_string();
        server.stop();
        (uuid, url, off)
    };
    let server = Server::start_in(&data, &[]);
    let got = get(&server, &uuid);
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!((got.json()["State"].clone(), got.json()["BatchSize"].clone()), (json!("Enabled"), json!(7)));
    assert_eq!(state(&server, &off), "Disabled");
    send(&server, &url, "after the restart");
    assert!(eventually(Duration::from_secs(20), || left(&server, &url) == 0));
}

#[test]
fn bad_input_gets_lambda_errors() {
    let server = Server::start();
    function(&server, "target", "", json!({ "Timeout": 10 }));
    let (_, arn) = queue(&server, "source", json!({ "VisibilityTimeout": "30" }));
    let (_, short) = queue(&server, "short", json!({ "VisibilityTimeout": "5" }));
    let missing_queue = arn.replace(":source", ":nowhere");
    let check = |body: Value, status: u16, error_type: &str| {
        let reply = create_mapping(&server, body.clone());
        assert_eq!((reply.status, reply.error_type()), (status, error_type), "{body}: {}", reply.text());
        let message = reply.json()["message"].as_str().unwrap_or_default().to_string();
        assert!(!message.is_empty(), "{body}: no message");
        message
    };
    let valid = |extra: Value| {
        let mut body = json!({ "EventSourceArn": arn, "FunctionName": "target" });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    check(json!({ "EventSourceArn": arn, "FunctionName": "nobody" }), 404, "ResourceNotFoundException");
    check(json!({ "EventSourceArn": missing_queue, "FunctionName": "target" }), 400, "InvalidParameterValueException");
    check(json!({ "EventSourceArn": "arn:aws:kinesis:us-east-1:123456789012:stream/s", "FunctionName": "target" }), 400, "InvalidParameterValueException");
    check(json!({ "FunctionName": "target" }), 400, "InvalidParameterValueException");
    check(json!({ "EventSourceArn": arn }), 400, "ValidationException");
    check(valid(json!({ "BatchSize": 0 })), 400, "ValidationException");
    check(valid(json!({ "BatchSize": 10001, "MaximumBatchingWindowInSeconds": 5 })), 400, "ValidationException");
    let message = check(valid(json!({ "BatchSize": 11 })), 400, "InvalidParameterValueException");
    assert!(message.contains("batch window"), "{message}");
    check(valid(json!({ "MaximumBatchingWindowInSeconds": 301 })), 400, "ValidationException");
    check(valid(json!({ "MaximumBatchingWindowInSeconds": -1 })), 400, "ValidationException");
    check(valid(json!({ "FunctionResponseTypes": ["Everything"] })), 400, "ValidationException");
    check(valid(json!({ "StartingPosition": "LATEST" })), 400, "InvalidParameterValueException");
    check(valid(json!({ "BatchSize": "ten" })), 400, "InvalidRequestContentException");
    let message = check(json!({ "EventSourceArn": short, "FunctionName": "target" }), 400, "InvalidParameterValueException");
    assert!(message.contains("visibility timeout"), "{message}");
    check(valid(json!({ "FunctionName": "arn:aws:lambda:us-east-1:999999999999:function:target" })), 403, "AccessDeniedException");
    let reply = server.lambda("POST", MAPPINGS, b"{not json");
    assert_eq!(reply.error_type(), "InvalidRequestContentException");

    // One mapping per queue and function; a qualified name is another function.
    let uuid = mapping(&server, valid(json!({ "FunctionName": format!("arn:aws:lambda:us-east-1:{}:function:target", account(&arn)) })))["UUID"]
        .as_str()
        .unwrap()
        .to_string();
    let message = check(valid(json!({})), 409, "ResourceConflictException");
    assert!(message.contains(&uuid), "{message}");
    let qualified = mapping(&server, valid(json!({ "FunctionName": "target:$LATEST" })));
    assert!(qualified["FunctionArn"].as_str().unwrap().ends_with(":function:target:$LATEST"), "{qualified}");

    // Updates are checked too.
    let reply = update(&server, &uuid, json!({ "BatchSize": 100 }));
    assert_eq!((reply.status, reply.error_type()), (400, "InvalidParameterValueException"), "{}", reply.text());
    let reply = update(&server, &uuid, json!({ "FunctionName": "nobody" }));
    assert_eq!((reply.status, reply.error_type()), (404, "ResourceNotFoundException"), "{}", reply.text());
    assert_eq!(get(&server, &uuid).json()["BatchSize"], 10, "a refused update changes nothing");

    // Unknown UUIDs, and another account's mapping.
    for uuid in ["00000000-0000-0000-0000-000000000000", "not-a-uuid"] {
        for reply in [get(&server, uuid), update(&server, uuid, json!({ "Enabled": false })), server.lambda("DELETE", &format!("{MAPPINGS}{uuid}"), b"")] {
            assert_eq!((reply.status, reply.error_type()), (404, "ResourceNotFoundException"), "{}", reply.text());
        }
    }
    let (_, other) = server.create_account("other");
    let reply = server.lambda_as(&other, "GET", &format!("{MAPPINGS}{uuid}"), b"");
    assert_eq!((reply.status, reply.error_type()), (404, "ResourceNotFoundException"));
    let reply = server.lambda_as(&other, "POST", MAPPINGS, json!({ "EventSourceArn": arn, "FunctionName": "target" }).to_string().as_bytes());
    assert_eq!(reply.status / 100, 4, "{}", reply.text());
    let listed = server.lambda_as(&other, "GET", MAPPINGS, b"").json();
    assert_eq!(listed["EventSourceMappings"], json!([]));
}

/// A small pseudo-random number below `n` (no randomness crate in the tests).
fn random_below(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    u64::from(nanos.wrapping_mul(2_654_435_761)) % n
}

/// Sends `ids` in batches of ten.
fn send_all(server: &Server, url: &str, ids: &[String]) {
    for chunk in ids.chunks(10) {
        let entries: Vec<Value> = chunk.iter().map(|id| json!({ "Id": id, "MessageBody": id })).collect();
        let answer = ok(server, "SendMessageBatch", json!({ "QueueUrl": url, "Entries": entries }));
        assert_eq!(answer["Successful"].as_array().map(Vec::len), Some(chunk.len()), "{answer}");
    }
}

/// Messages sent into a mapped queue while the server is killed with SIGKILL
/// at random moments: after the restarts, every message was processed at
/// least once (its function's log says so: a mapping deletes a batch only
/// after the invocation's log is committed) and none is left in the queue or
/// its dead-letter queue.
#[test]
fn kill_9_while_a_mapping_runs_loses_no_message() {
    const ROUNDS: usize = 4;
    const PER_ROUND: usize = 150;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let started = Instant::now();
    let mut server = Server::start_in(&data, &[]);
    // One log line per record: "done <body>".
    let created = server.create("worker", &sh_runtime(r#"grep -o '"body":"[^"]*"' /tmp/event | sed 's/^"body":"/done /; s/"$//'"#), json!({}));
    assert_eq!(created.status, 201, "{}", created.text());
    let (dlq_url, dlq_arn) = queue(&server, "crash-dead", json!({}));
    let redrive = json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": 100 }).to_string();
    let (url, arn) = queue(&server, "crash", json!({ "VisibilityTimeout": "10", "RedrivePolicy": redrive }));
    mapping(&server, json!({ "EventSourceArn": arn, "FunctionName": "worker" }));

    let ids: Vec<String> = (0..ROUNDS * PER_ROUND).map(|i| format!("m-{i:05}")).collect();
    let mut waiting_at_kills = Vec::new();
    for round in 0..ROUNDS {
        send_all(&server, &url, &ids[round * PER_ROUND..(round + 1) * PER_ROUND]);
        // Stays end-to-end, on real time: SIGKILL lands at a random moment of a real server's batches.
        std::thread::sleep(Duration::from_millis(random_below(300)));
        waiting_at_kills.push(left(&server, &url));
        let killed = std::process::Command::new("kill").args(["-9", &server.pid().to_string()]).status().unwrap();
        assert!(killed.success());
        drop(server);
        server = Server::start_in(&data, &[]);
    }
    assert!(eventually(Duration::from_secs(60), || left(&server, &url) == 0), "the queue did not drain: {}", left(&server, &url));
    assert_eq!(left(&server, &dlq_url), 0, "nothing was dead-lettered");

    let mut done: BTreeMap<String, usize> = BTreeMap::new();
    for event in server.log_events("worker") {
        if let Some(id) = event["message"].as_str().and_then(|m| m.trim().strip_prefix("done ")) {
            *done.entry(id.to_string()).or_default() += 1;
        }
    }
    let lost: Vec<&String> = ids.iter().filter(|id| !done.contains_key(*id)).collect();
    assert!(lost.is_empty(), "{} messages were never processed: {lost:?}", lost.len());
    assert_eq!(done.len(), ids.len(), "only the sent ids ran");
    let duplicates: usize = done.values().map(|n| n - 1).sum();
    eprintln!(
        "{} messages, {ROUNDS} kills (messages left at each: {waiting_at_kills:?}): {duplicates} processed twice or more, {:.1} s in all",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(duplicates * 5 <= ids.len(), "duplicates should be rare: {duplicates}");
}
