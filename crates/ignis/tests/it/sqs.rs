//! The SQS-compatible queues over the wire: SQS's JSON protocol signed for
//! service `sqs`, as the SDKs send it.

use std::time::{Duration, Instant};

use ignis_sigv4::Credentials;
use serde_json::{Value, json};

use crate::harness::{Reply, Server, eventually};

fn call_as(server: &Server, credentials: &Credentials, action: &str, body: &Value) -> Reply {
    let target = format!("AmazonSQS.{action}");
    server.signed_with(
        credentials,
        "sqs",
        "POST",
        "/",
        "",
        &[("x-amz-target", &target), ("content-type", "application/x-amz-json-1.0")],
        body.to_string().as_bytes(),
    )
}

pub(crate) fn call(server: &Server, action: &str, body: Value) -> Reply {
    call_as(server, &Server::credentials(), action, &body)
}

/// A call that must succeed; its answer.
pub(crate) fn ok(server: &Server, action: &str, body: Value) -> Value {
    let reply = call(server, action, body);
    assert_eq!(reply.status, 200, "{action}: {}", reply.text());
    reply.json()
}

/// A call that must fail with SQS's error `shape` (the `__type`) and `code`
/// (the `x-amzn-query-error`, which SDKs report as the error code).
fn fails(reply: Reply, status: u16, shape: &str, code: &str) -> String {
    assert_eq!(reply.status, status, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["__type"], format!("com.amazonaws.sqs#{shape}"), "{body}");
    assert_eq!(reply.header("x-amzn-query-error"), Some(format!("{code};Sender").as_str()));
    body["message"].as_str().unwrap_or_default().to_string()
}

pub(crate) fn create(server: &Server, name: &str, attributes: Value) -> String {
    let created = ok(server, "CreateQueue", json!({ "QueueName": name, "Attributes": attributes }));
    created["QueueUrl"].as_str().unwrap().to_string()
}

pub(crate) fn send(server: &Server, url: &str, body: &str) -> String {
    ok(server, "SendMessage", json!({ "QueueUrl": url, "MessageBody": body }))["MessageId"].as_str().unwrap().to_string()
}

pub(crate) fn receive(server: &Server, url: &str, extra: Value) -> Vec<Value> {
    let mut request = json!({ "QueueUrl": url, "MaxNumberOfMessages": 10, "AttributeNames": ["All"] });
    for (k, v) in extra.as_object().unwrap() {
        request[k] = v.clone();
    }
    let answer = ok(server, "ReceiveMessage", request);
    answer["Messages"].as_array().cloned().unwrap_or_default()
}

pub(crate) fn bodies(messages: &[Value]) -> Vec<&str> {
    let mut bodies: Vec<&str> = messages.iter().map(|m| m["Body"].as_str().unwrap()).collect();
    bodies.sort();
    bodies
}

pub(crate) fn attribute(server: &Server, url: &str, name: &str) -> String {
    let answer = ok(server, "GetQueueAttributes", json!({ "QueueUrl": url, "AttributeNames": [name] }));
    answer["Attributes"][name].as_str().unwrap_or_else(|| panic!("no {name} in {answer}")).to_string()
}

pub(crate) fn md5(text: &str) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(text.as_bytes()))
}

#[test]
fn queue_lifecycle_and_messages() {
    let server = Server::start();
    let url = create(&server, "orders", json!({ "VisibilityTimeout": "60" }));
    assert!(url.starts_with(&format!("http://{}/", server.address)), "{url}");
    let account = url.rsplit('/').nth(1).unwrap().to_string();
    assert_eq!(account.len(), 12);
    assert_eq!(create(&server, "orders", json!({ "VisibilityTimeout": "60" })), url, "the same attributes: the same queue");
    fails(
        call(&server, "CreateQueue", json!({ "QueueName": "orders", "Attributes": { "VisibilityTimeout": "61" } })),
        400,
        "QueueNameExists",
        "QueueAlreadyExists",
    );
    assert_eq!(ok(&server, "GetQueueUrl", json!({ "QueueName": "orders" }))["QueueUrl"], url);
    create(&server, "other", json!({}));
    assert_eq!(ok(&server, "ListQueues", json!({ "QueueNamePrefix": "ord" }))["QueueUrls"], json!([url]));
    let page = ok(&server, "ListQueues", json!({ "MaxResults": 1 }));
    assert_eq!((page["QueueUrls"].as_array().unwrap().len(), page["NextToken"].is_string()), (1, true));
    assert_eq!(attribute(&server, &url, "QueueArn"), format!("arn:aws:sqs:us-east-1:{account}:orders"));

    let sent = ok(&server, "SendMessage", json!({ "QueueUrl": url, "MessageBody": "first" }));
    assert_eq!(sent["MD5OfMessageBody"], md5("first"));
    send(&server, &url, "second");
    assert_eq!(attribute(&server, &url, "ApproximateNumberOfMessages"), "2");
    let got = receive(&server, &url, json!({}));
    assert_eq!(bodies(&got), ["first", "second"]);
    assert_eq!(got[0]["MD5OfBody"], md5(got[0]["Body"].as_str().unwrap()));
    assert_eq!(got[0]["Attributes"]["ApproximateReceiveCount"], "1");
    assert!(got.iter().any(|m| m["MessageId"] == sent["MessageId"]));
    assert_eq!(attribute(&server, &url, "ApproximateNumberOfMessagesNotVisible"), "2");
    assert!(receive(&server, &url, json!({})).is_empty(), "in flight for 60 s");
    ok(&server, "DeleteMessage", json!({ "QueueUrl": url, "ReceiptHandle": got[0]["ReceiptHandle"] }));
    let batch = ok(
        &server,
        "DeleteMessageBatch",
        json!({ "QueueUrl": url, "Entries": [
            { "Id": "a", "ReceiptHandle": got[1]["ReceiptHandle"] },
            { "Id": "b", "ReceiptHandle": got[0]["ReceiptHandle"] },
        ] }),
    );
    assert_eq!(batch["Successful"], json!([{ "Id": "a" }]));
    assert_eq!((batch["Failed"][0]["Id"].as_str(), batch["Failed"][0]["Code"].as_str()), (Some("b"), Some("ReceiptHandleIsInvalid")));
    assert_eq!(attribute(&server, &url, "ApproximateNumberOfMessagesNotVisible"), "0");

    // Batches, delays, purge.
    let sent = ok(
        &server,
        "SendMessageBatch",
        json!({ "QueueUrl": url, "Entries": [
            { "Id": "now", "MessageBody": "now" },
            { "Id": "later", "MessageBody": "later", "DelaySeconds": 600 },
            { "Id": "bad", "MessageBody": "x", "DelaySeconds": 901 },
        ] }),
    );
    assert_eq!(sent["Successful"].as_array().unwrap().len(), 2, "{sent}");
    assert_eq!(sent["Failed"][0]["Code"], "InvalidParameterValue");
    assert_eq!(attribute(&server, &url, "ApproximateNumberOfMessagesDelayed"), "1");
    ok(&server, "PurgeQueue", json!({ "QueueUrl": url }));
    assert_eq!(attribute(&server, &url, "ApproximateNumberOfMessages"), "0");
    assert_eq!(attribute(&server, &url, "ApproximateNumberOfMessagesDelayed"), "0");

    ok(&server, "SetQueueAttributes", json!({ "QueueUrl": url, "Attributes": { "DelaySeconds": "5", "MaximumMessageSize": "2048" } }));
    assert_eq!(attribute(&server, &url, "DelaySeconds"), "5");
    fails(call(&server, "SendMessage", json!({ "QueueUrl": url, "MessageBody": "x".repeat(2049) })), 400, "InvalidParameterValue", "InvalidParameterValue");

    ok(&server, "DeleteQueue", json!({ "QueueUrl": url }));
    fails(call(&server, "GetQueueUrl", json!({ "QueueName": "orders" })), 400, "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue");
    fails(call(&server, "SendMessage", json!({ "QueueUrl": url, "MessageBody": "x" })), 400, "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue");
    let again = create(&server, "orders", json!({}));
    assert!(receive(&server, &again, json!({})).is_empty(), "a new queue of the same name starts empty");
}

#[test]
fn messages_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start_in(&data, &[]);
    let dlq = create(&server, "dlq", json!({}));
    let dlq_arn = attribute(&server, &dlq, "QueueArn");
    let redrive = json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2 }).to_string();
    let url = create(&server, "durable", json!({ "VisibilityTimeout": "600", "RedrivePolicy": redrive }));
    for body in ["kept", "in-flight", "deleted"] {
        send(&server, &url, body);
    }
    ok(&server, "SendMessage", json!({ "QueueUrl": url, "MessageBody": "delayed", "DelaySeconds": 900 }));
    let got = receive(&server, &url, json!({ "MaxNumberOfMessages": 3 }));
    let handle = |body: &str| got.iter().find(|m| m["Body"] == body).unwrap()["ReceiptHandle"].clone();
    ok(&server, "DeleteMessage", json!({ "QueueUrl": url, "ReceiptHandle": handle("deleted") }));
    ok(&server, "ChangeMessageVisibility", json!({ "QueueUrl": url, "ReceiptHandle": handle("kept"), "VisibilityTimeout": 0 }));
    let in_flight = handle("in-flight");
    server.stop();

    let mut server = Server::start_in(&data, &[]);
    assert_eq!(attribute(&server, &url, "VisibilityTimeout"), "600", "definitions are kept");
    assert_eq!(attribute(&server, &url, "ApproximateNumberOfMessagesDelayed"), "1", "the delay is kept");
    fails(
        call(&server, "DeleteMessage", json!({ "QueueUrl": url, "ReceiptHandle": in_flight })),
        404,
        "ReceiptHandleIsInvalid",
        "ReceiptHandleIsInvalid",
    );
    let got = receive(&server, &url, json!({}));
    assert_eq!(bodies(&got), ["in-flight", "kept"], "in-flight messages are visible again after a restart");
    assert!(got.iter().all(|m| m["Attributes"]["ApproximateReceiveCount"] == "2"), "receive counts are kept: {got:?}");
    for m in &got {
        ok(&server, "ChangeMessageVisibility", json!({ "QueueUrl": url, "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0 }));
    }
    assert!(receive(&server, &url, json!({})).is_empty(), "both went to the dead-letter queue");
    let ids = |messages: &[Value]| {
        let mut ids: Vec<String> = messages.iter().map(|m| m["MessageId"].as_str().unwrap().to_string()).collect();
        ids.sort();
        ids
    };
    let dead = receive(&server, &dlq, json!({ "VisibilityTimeout": 0 }));
    assert_eq!((bodies(&dead), ids(&dead)), (vec!["in-flight", "kept"], ids(&got)), "dead letters keep their ids");
    server.stop();

    let server = Server::start_in(&data, &[]);
    assert_eq!(ids(&receive(&server, &dlq, json!({}))), ids(&got), "and keep them across a restart");
}

#[test]
fn redrive_to_a_dead_letter_queue_after_max_receive_count() {
    let server = Server::start();
    let dlq = create(&server, "dead", json!({}));
    let dlq_arn = attribute(&server, &dlq, "QueueArn");
    let policy = json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3" }).to_string();
    let url = create(&server, "work", json!({ "RedrivePolicy": policy }));
    let policy: Value = serde_json::from_str(&attribute(&server, &url, "RedrivePolicy")).unwrap();
    assert_eq!(policy, json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3 }));
    let id = send(&server, &url, "poison");
    for n in 1..=3 {
        let got = receive(&server, &url, json!({ "VisibilityTimeout": 0 }));
        assert_eq!((got.len(), got[0]["Attributes"]["ApproximateReceiveCount"].as_str()), (1, Some(n.to_string().as_str())));
        assert_eq!(got[0]["MessageId"], id);
    }
    assert!(receive(&server, &url, json!({})).is_empty(), "the fourth receive moves it");
    let dead = receive(&server, &dlq, json!({}));
    assert_eq!(bodies(&dead), ["poison"]);
    assert_eq!(dead[0]["MessageId"], id, "a dead letter keeps its MessageId");
    assert_eq!(attribute(&server, &url, "ApproximateNumberOfMessages"), "0");

    // Removing the policy stops redrive; a target that does not exist is refused.
    ok(&server, "SetQueueAttributes", json!({ "QueueUrl": url, "Attributes": { "RedrivePolicy": "" } }));
    let missing = json!({ "deadLetterTargetArn": dlq_arn.replace("dead", "nope"), "maxReceiveCount": 1 }).to_string();
    let message = fails(
        call(&server, "SetQueueAttributes", json!({ "QueueUrl": url, "Attributes": { "RedrivePolicy": missing } })),
        400,
        "InvalidParameterValue",
        "InvalidParameterValue",
    );
    assert!(message.contains("Dead letter target does not exist"), "{message}");
}

#[test]
fn visibility_timeout_expires_and_handles_change() {
    let server = Server::start();
    let url = create(&server, "vis", json!({ "VisibilityTimeout": "1" }));
    send(&server, &url, "m");
    let first = receive(&server, &url, json!({}));
    assert_eq!(first.len(), 1);
    assert!(receive(&server, &url, json!({})).is_empty(), "invisible while in flight");
    let mut second = Vec::new();
    assert!(eventually(Duration::from_secs(15), || {
        second = receive(&server, &url, json!({}));
        !second.is_empty()
    }));
    assert_eq!(second[0]["Attributes"]["ApproximateReceiveCount"], "2");
    let old = first[0]["ReceiptHandle"].clone();
    let new = second[0]["ReceiptHandle"].clone();
    fails(
        call(&server, "ChangeMessageVisibility", json!({ "QueueUrl": url, "ReceiptHandle": old, "VisibilityTimeout": 10 })),
        404,
        "ReceiptHandleIsInvalid",
        "ReceiptHandleIsInvalid",
    );
    ok(&server, "ChangeMessageVisibility", json!({ "QueueUrl": url, "ReceiptHandle": new, "VisibilityTimeout": 600 }));
    ok(&server, "DeleteMessage", json!({ "QueueUrl": url, "ReceiptHandle": new }));
    fails(
        call(&server, "ChangeMessageVisibility", json!({ "QueueUrl": url, "ReceiptHandle": new, "VisibilityTimeout": 0 })),
        404,
        "ReceiptHandleIsInvalid",
        "ReceiptHandleIsInvalid",
    );
    // A current handle whose timeout ran out is not in flight.
    send(&server, &url, "n");
    let got = receive(&server, &url, json!({ "VisibilityTimeout": 0 }));
    fails(
        call(&server, "ChangeMessageVisibility", json!({ "QueueUrl": url, "ReceiptHandle": got[0]["ReceiptHandle"], "VisibilityTimeout": 5 })),
        400,
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
    );
}

/// A receive (`extra` as in [`receive`]) in a thread of its own, and a send of "wake up"
/// every 300 ms until it answers (it may start after the first send): what it got and how
/// long it took.
fn woken_receive(server: &Server, url: &str, extra: Value) -> (Vec<Value>, Duration) {
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            let started = Instant::now();
            let got = receive(server, url, extra);
            (got, started.elapsed())
        });
        let mut sent = 0;
        while !waiting.is_finished() && sent < 50 {
            std::thread::sleep(Duration::from_millis(300));
            send(server, url, "wake up");
            sent += 1;
        }
        waiting.join().unwrap()
    })
}

#[test]
fn long_poll_returns_when_a_message_arrives() {
    let server = Server::start();
    let url = create(&server, "poll", json!({}));
    // How long an empty long poll waits: ignis-queues' a_long_poll_is_woken_by_a_send_and_ends_at_its_wait_time.
    assert!(receive(&server, &url, json!({ "WaitTimeSeconds": 1 })).is_empty());

    let (got, waited) = woken_receive(&server, &url, json!({ "WaitTimeSeconds": 20 }));
    assert_eq!(bodies(&got)[0], "wake up");
    assert!(waited < Duration::from_secs(15), "answered when the message came, not at the end: {waited:?}");
    // The queue's ReceiveMessageWaitTimeSeconds applies when the call names none: it waits
    // for the message too (a call that did not wait would answer at once, empty). How long:
    // ignis-queues' a_queues_own_wait_time_is_kept_and_a_poll_for_it_waits_that_long.
    ok(&server, "SetQueueAttributes", json!({ "QueueUrl": url, "Attributes": { "ReceiveMessageWaitTimeSeconds": "20" } }));
    ok(&server, "PurgeQueue", json!({ "QueueUrl": url }));
    let (got, waited) = woken_receive(&server, &url, json!({}));
    assert_eq!(bodies(&got).first(), Some(&"wake up"), "the queue's wait time did not apply");
    assert!(waited < Duration::from_secs(15), "answered when the message came, not at the end: {waited:?}");
}

#[test]
fn accounts_see_only_their_own_queues() {
    let server = Server::start();
    let url = create(&server, "private", json!({}));
    send(&server, &url, "secret");
    let (tenant, credentials) = server.create_account("tenant");
    let as_tenant = |action: &str, body: Value| call_as(&server, &credentials, action, &body);
    for (action, body) in [
        ("ReceiveMessage", json!({ "QueueUrl": url })),
        ("SendMessage", json!({ "QueueUrl": url, "MessageBody": "x" })),
        ("GetQueueAttributes", json!({ "QueueUrl": url, "AttributeNames": ["All"] })),
        ("PurgeQueue", json!({ "QueueUrl": url })),
        ("DeleteQueue", json!({ "QueueUrl": url })),
        ("GetQueueUrl", json!({ "QueueName": "private" })),
    ] {
        fails(as_tenant(action, body), 400, "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue");
    }
    assert_eq!(as_tenant("ListQueues", json!({})).json()["QueueUrls"], json!([]));
    let own = as_tenant("CreateQueue", json!({ "QueueName": "private" })).json()["QueueUrl"].as_str().unwrap().to_string();
    assert!(own.ends_with(&format!("/{tenant}/private")), "{own}");
    assert_ne!(own, url);
    assert!(as_tenant("ReceiveMessage", json!({ "QueueUrl": own })).json()["Messages"].is_null());
    assert_eq!(bodies(&receive(&server, &url, json!({}))), ["secret"]);
}

#[test]
fn bad_input_gets_sqs_errors() {
    let server = Server::start();
    let url = create(&server, "strict", json!({}));
    let invalid = |body: Value, action: &str| fails(call(&server, action, body), 400, "InvalidParameterValue", "InvalidParameterValue");

    // Messages.
    let message = invalid(json!({ "QueueUrl": url, "MessageBody": "x".repeat(256 * 1024 + 1) }), "SendMessage");
    assert!(message.contains("262144"), "{message}");
    fails(call(&server, "SendMessage", json!({ "QueueUrl": url, "MessageBody": "" })), 400, "MissingParameter", "MissingParameter");
    fails(call(&server, "SendMessage", json!({ "QueueUrl": url, "MessageBody": "\u{1}" })), 400, "InvalidMessageContents", "InvalidMessageContents");
    invalid(json!({ "QueueUrl": url, "MessageBody": "x", "DelaySeconds": -1 }), "SendMessage");
    invalid(json!({ "QueueUrl": url, "MessageBody": 5 }), "SendMessage");
    let attributes = |value: Value| json!({ "QueueUrl": url, "MessageBody": "x", "MessageAttributes": { "a": value } });
    invalid(attributes(json!({ "DataType": "Text", "StringValue": "v" })), "SendMessage");
    invalid(attributes(json!({ "DataType": "Number", "StringValue": "many" })), "SendMessage");
    invalid(attributes(json!({ "DataType": "Binary", "StringValue": "v" })), "SendMessage");
    invalid(json!({ "QueueUrl": url, "MessageBody": "x", "MessageAttributes": { "AWS.x": { "DataType": "String", "StringValue": "v" } } }), "SendMessage");

    // Receipt handles.
    for handle in ["", "nonsense", &"0".repeat(64), &"f".repeat(64)] {
        fails(call(&server, "DeleteMessage", json!({ "QueueUrl": url, "ReceiptHandle": handle })), 404, "ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid");
    }

    // Queues.
    for queue_url in [
        "http://elsewhere/000000000000/strict".to_string(),
        url.replace("strict", "missing"),
        "nonsense".to_string(),
        String::new(),
    ] {
        fails(call(&server, "ReceiveMessage", json!({ "QueueUrl": queue_url })), 400, "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue");
    }
    fails(call(&server, "ReceiveMessage", json!({})), 400, "MissingParameter", "MissingParameter");
    invalid(json!({ "QueueName": "jobs.fifo", "Attributes": { "FifoQueue": "true" } }), "CreateQueue");
    invalid(json!({ "QueueName": "bad name" }), "CreateQueue");
    invalid(json!({ "QueueName": "x".repeat(81) }), "CreateQueue");
    let set = |attributes: Value| call(&server, "SetQueueAttributes", json!({ "QueueUrl": url, "Attributes": attributes }));
    for value in ["-1", "43201", "abc", ""] {
        fails(set(json!({ "VisibilityTimeout": value })), 400, "InvalidAttributeValue", "InvalidAttributeValue");
    }
    fails(set(json!({ "MessageRetentionPeriod": "59" })), 400, "InvalidAttributeValue", "InvalidAttributeValue");
    fails(set(json!({ "MaximumMessageSize": "1048577" })), 400, "InvalidAttributeValue", "InvalidAttributeValue");
    fails(set(json!({ "ReceiveMessageWaitTimeSeconds": "21" })), 400, "InvalidAttributeValue", "InvalidAttributeValue");
    fails(set(json!({ "Colour": "blue" })), 400, "InvalidAttributeName", "InvalidAttributeName");
    fails(set(json!({ "QueueArn": "arn:aws:sqs:us-east-1:000000000000:x" })), 400, "InvalidAttributeName", "InvalidAttributeName");
    for policy in ["{", "{}", r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:1:x","maxReceiveCount":0}"#] {
        fails(set(json!({ "RedrivePolicy": policy })), 400, "InvalidParameterValue", "InvalidParameterValue");
    }
    fails(
        call(&server, "GetQueueAttributes", json!({ "QueueUrl": url, "AttributeNames": ["Colour"] })),
        400,
        "InvalidAttributeName",
        "InvalidAttributeName",
    );

    // Receives.
    invalid(json!({ "QueueUrl": url, "WaitTimeSeconds": 21 }), "ReceiveMessage");
    invalid(json!({ "QueueUrl": url, "MaxNumberOfMessages": 11 }), "ReceiveMessage");
    invalid(json!({ "QueueUrl": url, "MaxNumberOfMessages": 0 }), "ReceiveMessage");
    invalid(json!({ "QueueUrl": url, "VisibilityTimeout": 43201 }), "ReceiveMessage");

    // Batches.
    let entry = |id: &str| json!({ "Id": id, "MessageBody": "x" });
    let batch = |entries: Vec<Value>| call(&server, "SendMessageBatch", json!({ "QueueUrl": url, "Entries": entries }));
    fails(batch(vec![]), 400, "EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest");
    fails(batch((0..11).map(|i| entry(&i.to_string())).collect()), 400, "TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest");
    fails(batch(vec![entry("a"), entry("a")]), 400, "BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct");
    fails(batch(vec![entry("no spaces")]), 400, "InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId");
    let big = |id: &str| json!({ "Id": id, "MessageBody": "x".repeat(200 * 1024) });
    fails(batch(vec![big("a"), big("b")]), 400, "BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong");
    fails(
        call(&server, "DeleteMessageBatch", json!({ "QueueUrl": url, "Entries": [] })),
        400,
        "EmptyBatchRequest",
        "AWS.SimpleQueueService.EmptyBatchRequest",
    );

    // Bodies that are not requests, unknown actions, the wrong signature scope.
    for body in ["{", "[]", "null", "\"text\""] {
        let reply = server.signed(
            "sqs",
            "POST",
            "/",
            "",
            &[("x-amz-target", "AmazonSQS.SendMessage"), ("content-type", "application/x-amz-json-1.0")],
            body.as_bytes(),
        );
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
    }
    fails(call(&server, "TagQueue", json!({ "QueueUrl": url })), 400, "UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation");
    let reply = server.signed("lambda", "POST", "/", "", &[("x-amz-target", "AmazonSQS.ListQueues")], b"{}");
    assert_eq!((reply.status, reply.json()["__type"].as_str()), (403, Some("InvalidSignatureException")));
    let huge = vec![b'x'; 5 * 1024 * 1024];
    let reply = server.signed("sqs", "POST", "/", "", &[("x-amz-target", "AmazonSQS.SendMessage")], &huge);
    assert_eq!(reply.status, 400, "{}", reply.text());

    // The server is unharmed and the queue holds nothing of the above.
    assert_eq!(attribute(&server, &url, "ApproximateNumberOfMessages"), "0");
    send(&server, &url, "still fine");
    assert_eq!(bodies(&receive(&server, &url, json!({}))), ["still fine"]);
}

#[test]
fn concurrent_sends_are_all_kept() {
    let server = Server::start();
    let url = create(&server, "busy", json!({}));
    const THREADS: usize = 16;
    const EACH: usize = 50;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (server, url) = (&server, &url);
            scope.spawn(move || {
                for i in 0..EACH {
                    send(server, url, &format!("{t}-{i}"));
                }
            });
        }
    });
    let elapsed = started.elapsed();
    eprintln!("{} durable sends from {THREADS} clients in {elapsed:?}: {:.0}/s", THREADS * EACH, (THREADS * EACH) as f64 / elapsed.as_secs_f64());
    assert_eq!(attribute(&server, &url, "ApproximateNumberOfMessages"), (THREADS * EACH).to_string());
}

#[test]
fn odd_bodies_never_break_the_server() {
    let server = Server::start();
    let url = create(&server, "sturdy", json!({}));
    let actions = [
        "CreateQueue",
        "GetQueueUrl",
        "ListQueues",
        "GetQueueAttributes",
        "SetQueueAttributes",
        "PurgeQueue",
        "SendMessage",
        "SendMessageBatch",
        "ReceiveMessage",
        "DeleteMessage",
        "DeleteMessageBatch",
        "ChangeMessageVisibility",
        "ChangeMessageVisibilityBatch",
    ];
    let odd_values = [
        json!(null),
        json!(-1),
        json!(u64::MAX),
        json!(1.5),
        json!("x"),
        json!(""),
        json!([]),
        json!([{}]),
        json!({}),
        json!({ "a": { "DataType": "Binary", "BinaryValue": "!!" } }),
        json!([{ "Id": "a" }]),
        json!("\u{0}"),
    ];
    let fields = [
        "QueueName",
        "Attributes",
        "MaxResults",
        "NextToken",
        "AttributeNames",
        "MessageBody",
        "DelaySeconds",
        "MessageAttributes",
        "Entries",
        "MaxNumberOfMessages",
        "VisibilityTimeout",
        "ReceiptHandle",
        "MessageAttributeNames",
    ];
    let mut answered = 0;
    for action in actions {
        for field in fields {
            for value in &odd_values {
                let mut body = json!({ "QueueUrl": url, "QueueName": "sturdy-2", "WaitTimeSeconds": 0 });
                body[field] = value.clone();
                let reply = call(&server, action, body.clone());
                assert!(reply.status == 200 || (400..500).contains(&reply.status), "{action} {body}: {} {}", reply.status, reply.text());
                answered += 1;
            }
        }
    }
    assert_eq!(answered, actions.len() * fields.len() * odd_values.len());
    assert_eq!(server.signed("sqs", "GET", "/healthz", "", &[], b"").status, 200);
}
