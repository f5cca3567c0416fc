//! Durable asynchronous invocation: events run after their 202, function
//! errors are retried with the configured back-off, records go to
//! destination functions, throttles wait, and accepted events survive a
//! `kill -9` of the server.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Reply, Server, eventually, rust_example, sh_runtime};

const CONFIG: &str = "/2019-09-25/functions";

/// A function that prints `got <event>` for every event (records included).
fn recorder(server: &Server, name: &str) -> String {
    let reply = server.create(name, &sh_runtime("echo \"got $(cat /tmp/event)\""), json!({}));
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["FunctionArn"].as_str().unwrap().to_string()
}

/// The events a recorder got, in order.
fn recorded(server: &Server, name: &str) -> Vec<Value> {
    server
        .log_events(name)
        .iter()
        .filter_map(|e| e["message"].as_str()?.strip_prefix("got ").map(|m| serde_json::from_str(m.trim()).unwrap()))
        .collect()
}

fn put_config(server: &Server, name: &str, config: Value) -> Reply {
    server.lambda("PUT", &format!("{CONFIG}/{name}/event-invoke-config"), config.to_string().as_bytes())
}

fn event(server: &Server, name: &str, payload: &str) -> String {
    let reply = server.invoke_with(name, payload, &[("x-amz-invocation-type", "Event")]);
    assert_eq!(reply.status, 202, "{}", reply.text());
    reply.header("x-amzn-requestid").unwrap().to_string()
}

fn reserve(server: &Server, name: &str, n: Option<u32>) {
    let reply = match n {
        Some(n) => server.lambda(
            "PUT",
            &format!("/2017-10-31/functions/{name}/concurrency"),
            json!({ "ReservedConcurrentExecutions": n }).to_string().as_bytes(),
        ),
        None => server.lambda("DELETE", &format!("/2017-10-31/functions/{name}/concurrency"), b""),
    };
    assert!(reply.status == 200 || reply.status == 204, "{}", reply.text());
}

/// Timestamps of the `START` lines of a request id's invocations.
fn starts(server: &Server, name: &str, request_id: &str) -> Vec<i64> {
    server
        .log_events(name)
        .iter()
        .filter(|e| e["message"].as_str().is_some_and(|m| m.starts_with(&format!("START RequestId: {request_id}"))))
        .map(|e| e["timestamp"].as_i64().unwrap())
        .collect()
}

#[test]
fn success_goes_to_the_on_success_function_with_lambdas_record() {
    let server = Server::start_with(&["--async-retry-delay", "1"]);
    let dest = recorder(&server, "dest");
    let ok = server.create("ok", &sh_runtime("echo \"ran $id\"; echo '{\"answer\": 42}' > /tmp/response"), json!({}));
    assert_eq!(ok.status, 201, "{}", ok.text());
    let ok_arn = ok.json()["FunctionArn"].as_str().unwrap().to_string();
    let put = put_config(&server, "ok", json!({ "DestinationConfig": { "OnSuccess": { "Destination": dest } } }));
    assert_eq!(put.status, 200, "{}", put.text());

    let id = event(&server, "ok", r#"{"n": 1}"#);
    assert!(eventually(Duration::from_secs(30), || recorded(&server, "dest").len() == 1), "no record arrived");
    assert!(server.log_events("ok").iter().any(|e| e["message"] == format!("ran {id}\n")), "the event ran with its 202's request id");
    let record = &recorded(&server, "dest")[0];
    assert_eq!(record["version"], "1.0");
    assert!(record["timestamp"].as_str().unwrap().ends_with('Z'), "{record}");
    assert_eq!(
        record["requestContext"],
        json!({ "requestId": id, "functionArn": format!("{ok_arn}:$LATEST"), "condition": "Success", "approximateInvokeCount": 1 })
    );
    assert_eq!(record["requestPayload"], json!({ "n": 1 }));
    assert_eq!(record["responseContext"], json!({ "statusCode": 200, "executedVersion": "$LATEST" }));
    assert_eq!(record["responsePayload"], json!({ "answer": 42 }));
    // That it never runs again: ignis-pollers' an_event_runs_once_with_its_request_id_then_is_removed.
    assert_eq!(starts(&server, "ok", &id).len(), 1, "ran once");
}

#[test]
fn function_errors_are_retried_with_back_off_then_go_to_on_failure() {
    let server = Server::start_with(&["--async-retry-delay", "1"]);
    let dest = recorder(&server, "failures");
    // The runtime dies on every event: Runtime.ExitError, a function error.
    let reply = server.create("flaky", &sh_runtime("echo \"try $id\"; exit 1"), json!({}));
    assert_eq!(reply.status, 201, "{}", reply.text());
    let config = json!({ "MaximumRetryAttempts": 2, "DestinationConfig": { "OnFailure": { "Destination": dest } } });
    assert_eq!(put_config(&server, "flaky", config).status, 200);

    let id = event(&server, "flaky", r#"{"fail": true}"#);
    assert!(eventually(Duration::from_secs(40), || recorded(&server, "failures").len() == 1), "no failure record");
    let tries = starts(&server, "flaky", &id);
    assert_eq!(tries.len(), 3, "one try and two retries: {tries:?}");
    // Lambda's back-off (one delay, then two): ignis-pollers' a_function_error_is_retried_after_the_back_off_then_goes_to_on_failure.
    let record = &recorded(&server, "failures")[0];
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["requestId"], id.as_str());
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(record["requestPayload"], json!({ "fail": true }));
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    assert_eq!(record["responsePayload"]["errorType"], "Runtime.ExitError");

    // No retries at all.
    assert_eq!(put_config(&server, "flaky", json!({ "MaximumRetryAttempts": 0, "DestinationConfig": { "OnFailure": { "Destination": dest } } })).status, 200);
    let once = event(&server, "flaky", "{}");
    assert!(eventually(Duration::from_secs(30), || recorded(&server, "failures").len() == 2));
    assert_eq!(recorded(&server, "failures")[1]["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(starts(&server, "flaky", &once).len(), 1);
}

#[test]
fn throttled_events_wait_and_are_not_failures() {
    let server = Server::start_with(&["--async-retry-delay", "1"]);
    let failures = recorder(&server, "failures");
    let successes = recorder(&server, "successes");
    let reply = server.create("held", &sh_runtime("sleep 1; echo \"ran $id\""), json!({ "Timeout": 10 }));
    assert_eq!(reply.status, 201, "{}", reply.text());
    let config = json!({ "MaximumRetryAttempts": 0, "DestinationConfig": { "OnSuccess": { "Destination": successes }, "OnFailure": { "Destination": failures } } });
    assert_eq!(put_config(&server, "held", config).status, 200);

    reserve(&server, "held", Some(0));
    let first = event(&server, "held", r#"{"i": 0}"#);
    // That a reservation of 0 runs nothing, however long: ignis-pollers' a_throttled_event_is_not_run_nor_counted_and_runs_when_the_reservation_allows.
    assert!(starts(&server, "held", &first).is_empty(), "a reservation of 0 runs nothing");
    // One at a time: three events of a second each take turns.
    reserve(&server, "held", Some(1));
    let more: Vec<String> = (1..3).map(|i| event(&server, "held", &format!(r#"{{"i": {i}}}"#))).collect();
    assert!(eventually(Duration::from_secs(40), || recorded(&server, "successes").len() == 3), "throttled events never ran");
    assert!(recorded(&server, "failures").is_empty(), "a throttle is not a failure");
    let ids: BTreeSet<String> =
        recorded(&server, "successes").iter().map(|r| r["requestContext"]["requestId"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, std::iter::once(first).chain(more).collect());
}

/// An event that cannot run (reserved concurrency 0) for longer than its
/// maximum age (the smallest, 60 s) ends with `EventAgeExceeded`, never run.
#[test]
fn an_event_too_old_goes_to_on_failure_without_running() {
    let server = Server::start_with(&["--async-retry-delay", "1"]);
    let failures = recorder(&server, "aged-failures");
    recorder(&server, "aged");
    let config = json!({ "MaximumEventAgeInSeconds": 60, "DestinationConfig": { "OnFailure": { "Destination": failures } } });
    assert_eq!(put_config(&server, "aged", config).status, 200);
    reserve(&server, "aged", Some(0));
    let id = event(&server, "aged", r#"{"late": true}"#);
    assert!(eventually(Duration::from_secs(90), || recorded(&server, "aged-failures").len() == 1), "no record after the event's age");
    let record = &recorded(&server, "aged-failures")[0];
    assert_eq!(record["requestContext"]["requestId"], id.as_str());
    assert_eq!(record["requestContext"]["condition"], "EventAgeExceeded");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 0);
    assert_eq!(record["requestPayload"], json!({ "late": true }));
    assert!(record.get("responseContext").is_none(), "nothing ran: {record}");
    assert!(starts(&server, "aged", &id).is_empty());
}

/// A function whose OnSuccess destination is itself: each record is an event
/// whose record is another event... Like Lambda, the chain stops after 16.
#[test]
fn a_destination_loop_stops() {
    let server = Server::start_with(&["--async-retry-delay", "1"]);
    let arn = recorder(&server, "loop");
    assert_eq!(put_config(&server, "loop", json!({ "DestinationConfig": { "OnSuccess": { "Destination": arn } } })).status, 200);
    event(&server, "loop", r#"{"start": true}"#);
    let runs = || server.log_events("loop").iter().filter(|e| e["message"].as_str().is_some_and(|m| m.starts_with("START "))).count();
    assert!(eventually(Duration::from_secs(30), || runs() == 17), "ran {} times", runs());
    // That no 18th run follows: ignis-pollers' a_loop_of_destination_records_stops_after_sixteen.
}

/// `PutFunctionRecursionConfig` `Allow` lets the same loop run past Lambda's limit; `Terminate` (the default) stops
/// it again.
#[test]
fn a_recursion_config_of_allow_lets_a_loop_run() {
    let server = Server::start_with(&["--async-retry-delay", "1"]);
    let arn = recorder(&server, "spin");
    let path = "/2024-08-31/functions/spin/recursion-config";
    assert_eq!(server.lambda("GET", path, b"").json(), json!({ "RecursiveLoop": "Terminate" }));
    for (body, error) in [
        (json!({ "RecursiveLoop": "Sometimes" }), "ValidationException"),
        (json!({}), "ValidationException"),
    ] {
        assert_eq!(server.lambda("PUT", path, body.to_string().as_bytes()).error_type(), error, "{body}");
    }
    let missing = server.lambda("GET", "/2024-08-31/functions/nothing/recursion-config", b"");
    assert_eq!(missing.error_type(), "ResourceNotFoundException");
    let allow = server.lambda("PUT", path, json!({ "RecursiveLoop": "Allow" }).to_string().as_bytes());
    assert_eq!((allow.status, allow.json()), (200, json!({ "RecursiveLoop": "Allow" })));
    assert_eq!(server.lambda("GET", path, b"").json(), json!({ "RecursiveLoop": "Allow" }));

    assert_eq!(put_config(&server, "spin", json!({ "DestinationConfig": { "OnSuccess": { "Destination": arn } } })).status, 200);
    event(&server, "spin", r#"{"start": true}"#);
    let runs = || server.log_events("spin").iter().filter(|e| e["message"].as_str().is_some_and(|m| m.starts_with("START "))).count();
    assert!(eventually(Duration::from_secs(60), || runs() >= 20), "ran {} times", runs());
    // Terminate again: the chain, past the limit, stops at its next record.
    let terminate = server.lambda("PUT", path, json!({ "RecursiveLoop": "Terminate" }).to_string().as_bytes());
    assert_eq!(terminate.json(), json!({ "RecursiveLoop": "Terminate" }));
}

#[test]
fn accepted_events_survive_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let args = ["--async-retry-delay", "1"];
    let mut server = Server::start_in(&data, &args);
    recorder(&server, "later");
    reserve(&server, "later", Some(0));
    let ids: BTreeSet<String> = (0..20).map(|i| event(&server, "later", &format!(r#"{{"i": {i}}}"#))).collect();
    server.kill();

    let server = Server::start_in(&data, &args);
    reserve(&server, "later", None);
    assert!(eventually(Duration::from_secs(30), || recorded(&server, "later").len() >= 20), "events were lost");
    let ran: BTreeSet<String> = server
        .log_events("later")
        .iter()
        .filter_map(|e| e["message"].as_str()?.strip_prefix("START RequestId: ")?.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(ran, ids, "every accepted event ran, with its request id");
}

#[test]
fn event_invoke_config_calls_and_bad_input() {
    let server = Server::start();
    let dest = recorder(&server, "dest");
    recorder(&server, "f");
    let path = format!("{CONFIG}/f/event-invoke-config");

    let missing = server.lambda("GET", &path, b"");
    assert_eq!((missing.status, missing.error_type()), (404, "ResourceNotFoundException"));
    assert!(missing.json()["message"].as_str().unwrap().ends_with(":function:f:$LATEST doesn't have an EventInvokeConfig"), "{}", missing.text());
    let update_missing = server.lambda("POST", &path, json!({ "MaximumRetryAttempts": 1 }).to_string().as_bytes());
    assert_eq!(update_missing.error_type(), "ResourceNotFoundException");

    let put = put_config(&server, "f", json!({ "MaximumRetryAttempts": 1, "MaximumEventAgeInSeconds": 120 }));
    assert_eq!(put.status, 200, "{}", put.text());
    let config = put.json();
    assert!(config["FunctionArn"].as_str().unwrap().ends_with(":function:f:$LATEST"));
    assert!(config["LastModified"].as_f64().unwrap() > 1.6e9);
    assert_eq!((config["MaximumRetryAttempts"].clone(), config["MaximumEventAgeInSeconds"].clone()), (json!(1), json!(120)));
    // Update keeps what it does not name; Put replaces everything.
    let updated = server.lambda("POST", &path, json!({ "DestinationConfig": { "OnSuccess": { "Destination": dest } } }).to_string().as_bytes());
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!(updated.json()["MaximumRetryAttempts"], 1);
    assert_eq!(updated.json()["DestinationConfig"]["OnSuccess"]["Destination"], dest.as_str());
    assert_eq!(server.lambda("GET", &path, b"").json(), updated.json());
    let replaced = put_config(&server, "f", json!({ "MaximumEventAgeInSeconds": 60 }));
    assert!(replaced.json().get("MaximumRetryAttempts").is_none(), "{}", replaced.text());
    assert_eq!(replaced.json()["DestinationConfig"], json!({ "OnSuccess": {}, "OnFailure": {} }));

    let listed = server.lambda("GET", &format!("{CONFIG}/f/event-invoke-config/list"), b"");
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json()["FunctionEventInvokeConfigs"].as_array().unwrap().len(), 1);

    // Bad input.
    let check = |reply: Reply, error_type: &str, message: &str| {
        assert_eq!(reply.error_type(), error_type, "{}", reply.text());
        let text = reply.json()["message"].as_str().unwrap().to_string();
        assert!(text.contains(message), "{text}");
    };
    check(put_config(&server, "f", json!({ "MaximumRetryAttempts": 3 })), "ValidationException", "Value '3' at 'maximumRetryAttempts' failed to satisfy constraint: Member must have value less than or equal to 2");
    check(put_config(&server, "f", json!({ "MaximumEventAgeInSeconds": 59 })), "ValidationException", "Value '59' at 'maximumEventAgeInSeconds'");
    check(put_config(&server, "f", json!({ "MaximumEventAgeInSeconds": 21601 })), "ValidationException", "less than or equal to 21600");
    check(put_config(&server, "f", json!({})), "InvalidParameterValueException", "You must specify at least one of error handling or destination setting.");
    check(put_config(&server, "f", json!({ "MaximumRetryAttempts": "two" })), "InvalidRequestContentException", "");
    check(put_config(&server, "nobody", json!({ "MaximumRetryAttempts": 1 })), "ResourceNotFoundException", "Function not found");
    let nowhere = dest.replace(":dest", ":nowhere");
    check(
        put_config(&server, "f", json!({ "DestinationConfig": { "OnFailure": { "Destination": nowhere } } })),
        "InvalidParameterValueException",
        &format!("The provided destination config DestinationConfig(onSuccess=null, onFailure=OnFailure(destination={nowhere})) is invalid."),
    );
    let queue = dest.replace(":lambda:", ":sqs:").replace(":function:dest", ":jobs");
    check(put_config(&server, "f", json!({ "DestinationConfig": { "OnSuccess": { "Destination": queue } } })), "InvalidParameterValueException", "is invalid");
    check(put_config(&server, "f", json!({ "DestinationConfig": { "OnSuccess": { "Destination": "not-an-arn" } } })), "ValidationException", "destinationConfig.onSuccess.destination");
    // A dead-letter queue must exist too (no queue service here).
    let dlq = server.lambda("PUT", "/2015-03-31/functions/f/configuration", json!({ "DeadLetterConfig": { "TargetArn": queue } }).to_string().as_bytes());
    check(dlq, "InvalidParameterValueException", "DeadLetterConfig");
    let get = server.lambda("GET", "/2015-03-31/functions/f/configuration", b"").json();
    assert!(get.get("DeadLetterConfig").is_none());

    assert_eq!(server.lambda("DELETE", &path, b"").status, 204);
    assert_eq!(server.lambda("DELETE", &path, b"").error_type(), "ResourceNotFoundException");
    // A config on an alias is its own, and goes when the alias goes.
    assert_eq!(server.lambda("POST", "/2015-03-31/functions/f/aliases", json!({ "Name": "live", "FunctionVersion": "$LATEST" }).to_string().as_bytes()).status, 201);
    let live = server.lambda("PUT", &format!("{path}?Qualifier=live"), json!({ "MaximumRetryAttempts": 0 }).to_string().as_bytes());
    assert_eq!(live.status, 200, "{}", live.text());
    assert!(live.json()["FunctionArn"].as_str().unwrap().ends_with(":function:f:live"));
    assert_eq!(server.lambda("GET", &path, b"").error_type(), "ResourceNotFoundException", "$LATEST has none");
    assert_eq!(server.lambda("GET", "/2019-09-25/functions/f:live/event-invoke-config", b"").json(), live.json());
    assert_eq!(server.lambda("DELETE", "/2015-03-31/functions/f/aliases/live", b"").status, 204);
    let listed = server.lambda("GET", &format!("{CONFIG}/f/event-invoke-config/list"), b"").json();
    assert_eq!(listed["FunctionEventInvokeConfigs"], json!([]));
    // Too large an event.
    let big = format!("\"{}\"", "x".repeat(1024 * 1024));
    let reply = server.invoke_with("f", &big, &[("x-amz-invocation-type", "Event")]);
    assert_eq!((reply.status, reply.error_type()), (413, "RequestTooLargeException"));
}

/// 1,000 events, the server killed with SIGKILL at random moments while they
/// are sent and run, and restarted on the same data: every event answered 202
/// runs (an event whose request got no answer may run or not).
///
/// What is checked must itself survive the kills: each event's OnSuccess
/// record goes to `sink`, a function with a reservation of 0, so the records
/// wait durably as events of their own (log lines are not fsync'd at once, a
/// run's record is). After the last restart the reservation is lifted and the
/// sink's runs, which no kill interrupts, print every record.
/// Sends events `{"name": "<i>"}` to `function` through `server`, each `i` taken in turn from `next` (shared by the
/// senders) below `total`; the numbers that got their 202. A request that gets no answer (the server died under
/// it) ends the sending: its event may run or not, and is not counted.
pub fn send_numbered(server: &Server, function: &str, next: &std::sync::atomic::AtomicU32, total: u32) -> Vec<u32> {
    let mut answered = Vec::new();
    loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if i >= total {
            return answered;
        }
        match server.try_event(function, &format!(r#"{{"name": "{i}"}}"#)) {
            Ok(reply) if reply.status == 202 => answered.push(i),
            Ok(reply) => panic!("event {i}: {} {}", reply.status, reply.text()),
            Err(_) => return answered,
        }
    }
}

#[test]
fn crash_test_every_accepted_event_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let args = ["--async-retry-delay", "1"];
    let mut server = Server::start_in(&data, &args);
    // The lambda_runtime example: a few milliseconds an event, where a shell runtime takes tens.
    let sink = server.create("sink", &rust_example(), json!({ "Environment": { "Variables": { "PRINT_EVENT": "1" } } }));
    assert_eq!(sink.status, 201, "{}", sink.text());
    let sink = sink.json()["FunctionArn"].as_str().unwrap().to_string();
    reserve(&server, "sink", Some(0));
    let reply = server.create("work", &rust_example(), json!({}));
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(put_config(&server, "work", json!({ "DestinationConfig": { "OnSuccess": { "Destination": sink } } })).status, 200);

    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64 | 1;
    let mut random = {
        let mut x = seed;
        move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        }
    };
    let next = std::sync::atomic::AtomicU32::new(0);
    let send = |server: &Server| send_numbered(server, "work", &next, 1000);
    let mut accepted = BTreeSet::new();
    for _ in 0..4 {
        // Senders go on while the killer strikes; each round ends with the server dead.
        let kill_after = Duration::from_millis(100 + random(400));
        let pid = server.pid() as i32;
        let answered: Vec<u32> = std::thread::scope(|scope| {
            let senders: Vec<_> = (0..4).map(|_| scope.spawn(|| send(&server))).collect();
            // Stays end-to-end, on real time: SIGKILL lands at a random moment of a real server's commits.
            std::thread::sleep(kill_after);
            // SAFETY: signals the server process this test started and has not reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            senders.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        accepted.extend(answered);
        server.kill();
        server = Server::start_in(&data, &args);
    }
    // Whatever the kills left unsent goes now, to a server that stays up.
    accepted.extend(send(&server));
    assert!(accepted.len() >= 1000 - 4 * 4, "only {} events were accepted (seed {seed})", accepted.len());
    reserve(&server, "sink", None);
    let delivered = || -> BTreeSet<u32> {
        server
            .log_events("sink")
            .iter()
            .filter_map(|e| e["message"].as_str()?.strip_prefix("event "))
            .filter_map(|m| serde_json::from_str::<Value>(m.trim()).ok()?["requestPayload"]["name"].as_str()?.parse().ok())
            .collect()
    };
    // Each look reads every record, so look once a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let complete = loop {
        if delivered().is_superset(&accepted) {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let missing: Vec<u32> = accepted.difference(&delivered()).copied().collect();
    assert!(complete, "{} accepted events never ran (seed {seed}): {missing:?}", missing.len());
}

#[test]
fn records_and_dead_letters_go_to_queues() {
    use crate::sqs::{attribute, create, receive};
    let server = Server::start_with(&["--async-retry-delay", "1"]);
    let records = create(&server, "records", json!({}));
    let dead = create(&server, "dead", json!({}));
    let (records_arn, dead_arn) = (attribute(&server, &records, "QueueArn"), attribute(&server, &dead, "QueueArn"));

    let ok = server.create("ok", &sh_runtime("echo '\"done\"' > /tmp/response"), json!({}));
    assert_eq!(ok.status, 201, "{}", ok.text());
    let put = put_config(&server, "ok", json!({ "DestinationConfig": { "OnSuccess": { "Destination": records_arn } } }));
    assert_eq!(put.status, 200, "{}", put.text());
    let bad = server.create("bad", &sh_runtime("exit 1"), json!({ "DeadLetterConfig": { "TargetArn": dead_arn } }));
    assert_eq!(bad.status, 201, "{}", bad.text());
    assert_eq!(put_config(&server, "bad", json!({ "MaximumRetryAttempts": 0 })).status, 200);

    let id = event(&server, "ok", r#"{"n": 1}"#);
    let mut got = Vec::new();
    assert!(eventually(Duration::from_secs(30), || {
        got.extend(receive(&server, &records, json!({})));
        !got.is_empty()
    }));
    let record: Value = serde_json::from_str(got[0]["Body"].as_str().unwrap()).unwrap();
    assert_eq!(record["requestContext"]["requestId"], id.as_str());
    assert_eq!(record["requestContext"]["condition"], "Success");
    assert_eq!(record["responsePayload"], "done");

    event(&server, "bad", r#"{"n": 2}"#);
    let mut dead_letters = Vec::new();
    assert!(eventually(Duration::from_secs(30), || {
        dead_letters.extend(receive(&server, &dead, json!({})));
        !dead_letters.is_empty()
    }));
    let payload: Value = serde_json::from_str(dead_letters[0]["Body"].as_str().unwrap()).unwrap();
    assert_eq!(payload, json!({ "n": 2 }));

    // A queue that does not exist is no destination.
    let missing = records_arn.replace(":records", ":missing");
    let refused = put_config(&server, "ok", json!({ "DestinationConfig": { "OnSuccess": { "Destination": missing } } }));
    assert_eq!((refused.status, refused.error_type()), (400, "InvalidParameterValueException"));
}

#[test]
fn waiting_events_do_not_hold_their_payloads_in_memory() {
    let server = Server::start();
    assert_eq!(server.create("held", &sh_runtime("true"), json!({})).status, 201);
    // Held back: every event waits, stored.
    reserve(&server, "held", Some(0));
    // 256 events of 1 MB each, from 4 clients.
    let payload = format!("\"{}\"", "x".repeat(1024 * 1024 - 16));
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..64 {
                    event(&server, "held", &payload);
                }
            });
        }
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let rss_kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(rss_kb < 160 * 1024, "256 MB of waiting events, and the server holds {rss_kb} kB");
}
