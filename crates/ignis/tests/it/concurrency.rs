//! Concurrency: Put/Get/DeleteFunctionConcurrency, reserved and account
//! limits on the invoke path (429 TooManyRequestsException with Lambda's
//! Reason), and slots coming back however invocations end.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Reply, Server, eventually, sh_runtime};

const PUT: &str = "/2017-10-31/functions";
const GET: &str = "/2019-09-30/functions";

fn put(server: &Server, name: &str, n: i64) -> Reply {
    let body = json!({ "ReservedConcurrentExecutions": n }).to_string();
    server.lambda("PUT", &format!("{PUT}/{name}/concurrency"), body.as_bytes())
}

fn get(server: &Server, name: &str) -> Reply {
    server.lambda("GET", &format!("{GET}/{name}/concurrency"), b"")
}

/// A function whose invocations sleep `seconds` when the event says `{"sleep": true}`.
pub fn sleeper(server: &Server, name: &str, seconds: u32, timeout: u32) {
    let zip = sh_runtime(&format!("grep -q sleep /tmp/event && sleep {seconds}; echo '\"done\"' > /tmp/response"));
    let reply = server.create(name, &zip, json!({ "Timeout": timeout }));
    assert_eq!(reply.status, 201, "{}", reply.text());
}

pub fn assert_throttled(reply: &Reply, reason: &str) {
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert_eq!(reply.error_type(), "TooManyRequestsException");
    assert_eq!(reply.json(), json!({ "Type": "User", "message": "Rate Exceeded.", "Reason": reason }));
}

/// How many invocations of `name` have started (their runtimes took their events).
pub fn started(server: &Server, name: &str) -> usize {
    let events = server.log_events(name);
    events.iter().filter(|e| e["message"].as_str().is_some_and(|m| m.starts_with("START RequestId: "))).count()
}

/// Runs `invokes` at once (each an event for `name`); if `in_turn`, each is
/// sent once the one before it has started (its `START` line is logged), so
/// the first ones are surely in flight. Returns the replies in order.
fn concurrently(server: &Server, invokes: &[(&str, &str)], in_turn: bool) -> Vec<Reply> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = invokes
            .iter()
            .enumerate()
            .map(|(i, (name, payload))| {
                let before = if in_turn { started(server, name) } else { 0 };
                let handle = scope.spawn(move || server.invoke(name, payload));
                if in_turn && i + 1 < invokes.len() {
                    assert!(eventually(Duration::from_secs(30), || started(server, name) > before), "{name} did not start");
                }
                handle
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn put_get_delete_concurrency_shapes_and_persistence() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let args = ["--account-concurrency", "10", "--min-unreserved", "5"];
    {
        let mut server = Server::start_in(&data, &args);
        sleeper(&server, "f", 0, 3);
        sleeper(&server, "g", 0, 3);

        let none = get(&server, "f");
        assert_eq!(none.status, 200, "{}", none.text());
        assert_eq!(none.json(), json!({}));
        assert!(server.lambda("GET", "/2015-03-31/functions/f", b"").json().get("Concurrency").is_none());

        let reply = put(&server, "f", 3);
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json(), json!({ "ReservedConcurrentExecutions": 3 }));
        assert_eq!(get(&server, "f").json(), json!({ "ReservedConcurrentExecutions": 3 }));
        let function = server.lambda("GET", "/2015-03-31/functions/f", b"").json();
        assert_eq!(function["Concurrency"], json!({ "ReservedConcurrentExecutions": 3 }));

        // 3 + 3 leaves 4 < 5 unreserved.
        let refused = put(&server, "g", 3);
        assert_eq!(refused.status, 400, "{}", refused.text());
        assert_eq!(refused.error_type(), "InvalidParameterValueException");
        assert_eq!(
            refused.json()["message"],
            "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [5]."
        );
        assert_eq!(get(&server, "g").json(), json!({}));
        // Above the account's limit, too.
        assert_eq!(put(&server, "g", 11).error_type(), "InvalidParameterValueException");
        // Negative: the model's minimum.
        assert_eq!(put(&server, "g", -1).error_type(), "ValidationException");
        // Changing f's own reservation counts only the new value.
        assert_eq!(put(&server, "f", 5).status, 200);
        assert_eq!(put(&server, "g", 1).error_type(), "InvalidParameterValueException");
        assert_eq!(put(&server, "f", 2).status, 200);
        assert_eq!(put(&server, "g", 3).status, 200);
        assert_eq!(put(&server, "nobody", 1).error_type(), "ResourceNotFoundException");
        assert_eq!(get(&server, "nobody").error_type(), "ResourceNotFoundException");

        let deleted = server.lambda("DELETE", &format!("{PUT}/g/concurrency"), b"");
        assert_eq!(deleted.status, 204, "{}", deleted.text());
        assert_eq!(get(&server, "g").json(), json!({}));
        server.stop();
    }
    // Reservations survive a restart and are counted again: f still holds 2 of the 5 reservable.
    let server = Server::start_in(&data, &args);
    assert_eq!(get(&server, "f").json(), json!({ "ReservedConcurrentExecutions": 2 }));
    assert_eq!(get(&server, "g").json(), json!({}));
    assert_eq!(put(&server, "g", 4).error_type(), "InvalidParameterValueException");
    assert_eq!(put(&server, "g", 3).status, 200);

    // Deleting a function drops its reservation: a new f starts without one, and g may take its units.
    assert_eq!(server.lambda("DELETE", "/2015-03-31/functions/f", b"").status, 204);
    sleeper(&server, "f", 0, 3);
    assert_eq!(get(&server, "f").json(), json!({}));
    assert_eq!(put(&server, "g", 5).status, 200);
}

#[test]
fn reservation_limits_a_function() {
    let server = Server::start_with(&["--account-concurrency", "10", "--min-unreserved", "5"]);
    sleeper(&server, "one", 3, 10);
    assert_eq!(put(&server, "one", 1).status, 200);

    let replies = concurrently(&server, &[("one", r#"{"sleep": true}"#), ("one", "{}")], true);
    assert_eq!(replies[0].status, 200, "{}", replies[0].text());
    assert_eq!(replies[0].json(), json!("done"));
    assert_throttled(&replies[1], "ReservedFunctionConcurrentInvocationLimitExceeded");
    // The slot came back.
    assert_eq!(server.invoke("one", "{}").status, 200);

    // A reservation of 0 throttles every invocation, synchronous or not (Event is answered 202 first).
    assert_eq!(put(&server, "one", 0).status, 200);
    assert_throttled(&server.invoke("one", "{}"), "ReservedFunctionConcurrentInvocationLimitExceeded");
    let event = server.invoke_with("one", "{}", &[("x-amz-invocation-type", "Event")]);
    assert_eq!(event.status, 202);
    // Back to the unreserved pool.
    assert_eq!(server.lambda("DELETE", &format!("{PUT}/one/concurrency"), b"").status, 204);
    assert_eq!(server.invoke("one", "{}").status, 200);
}

#[test]
fn account_limit_throttles_and_slots_come_back() {
    let server = Server::start_with(&["--account-concurrency", "2", "--min-unreserved", "0"]);
    sleeper(&server, "a", 3, 10);
    sleeper(&server, "b", 3, 10);
    let slow = r#"{"sleep": true}"#;
    let replies = concurrently(&server, &[("a", slow), ("b", slow), ("a", slow)], true);
    assert_eq!(replies[0].status, 200, "{}", replies[0].text());
    assert_eq!(replies[1].status, 200, "{}", replies[1].text());
    assert_throttled(&replies[2], "ConcurrentInvocationLimitExceeded");
    // Both slow ones finished: their slots are free again, twice over.
    let again = concurrently(&server, &[("a", "{}"), ("b", "{}")], false);
    for reply in again {
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

#[test]
fn a_timed_out_invocation_returns_its_slot() {
    // Stays end to end on real time: the worker's sandbox enforces the 1 s timeout.
    let server = Server::start_with(&["--account-concurrency", "10", "--min-unreserved", "0"]);
    sleeper(&server, "late", 30, 1);
    assert_eq!(put(&server, "late", 1).status, 200);
    let timed_out = server.invoke("late", r#"{"sleep": true}"#);
    assert_eq!(timed_out.status, 200, "{}", timed_out.text());
    assert_eq!(timed_out.header("x-amz-function-error"), Some("Unhandled"));
    let next = server.invoke("late", "{}");
    assert_eq!(next.status, 200, "{}", next.text());
    assert_eq!(next.json(), Value::String("done".into()));
}

#[test]
fn a_client_that_goes_away_does_not_keep_its_slot() {
    let server = Server::start_with(&["--account-concurrency", "10", "--min-unreserved", "0"]);
    sleeper(&server, "gone", 2, 10);
    assert_eq!(put(&server, "gone", 1).status, 200);
    // Send a signed invoke and hang up without reading the answer.
    server.invoke_and_hang_up("gone", br#"{"sleep": true}"#);
    // The invocation runs on and holds the one slot, then gives it back.
    assert_throttled(&server.invoke("gone", "{}"), "ReservedFunctionConcurrentInvocationLimitExceeded");
    assert!(eventually(Duration::from_secs(15), || server.invoke("gone", "{}").status == 200));
}
