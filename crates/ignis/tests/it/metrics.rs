//! `--metrics-listen`: Lambda's per-function metrics move as functions run
//! (`--metrics-functions` folds the functions past it into `function="_other"`),
//! and so do the asynchronous events' and Ignis's own.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Server, eventually, free_address, metric, metrics_text, sh_runtime};
use crate::sqs;

/// The sum of the samples of `name` whose labels include `function="function"` (0 if none).
fn value(address: &str, name: &str, function: &str) -> f64 {
    let text = metrics_text(address).unwrap_or_default();
    let label = format!("function=\"{function}\"");
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{'))
        .filter(|rest| rest.contains(&label))
        .filter_map(|rest| rest.rsplit_once("} ")?.1.trim().parse::<f64>().ok())
        .sum()
}

#[test]
fn invocations_errors_durations_and_cold_starts_are_counted_per_function() {
    let address = free_address();
    let server = Server::start_with(&["--metrics-listen", &address, "--metrics-functions", "1"]);
    let zip = sh_runtime("grep -q crash /tmp/event && exit 3; echo '\"fine\"' > /tmp/response");
    assert_eq!(server.create("first", &zip, json!({})).status, 201);
    assert_eq!(server.create("second", &zip, json!({})).status, 201);
    // Cold, warm, then a crash: three invocations, one error, one cold start.
    for payload in ["{}", "{}", r#"{"crash":true}"#] {
        assert_eq!(server.invoke("first", payload).status, 200);
    }
    assert_eq!(server.invoke("second", "{}").status, 200);

    let first = |name| value(&address, name, "first");
    assert_eq!(first("ignis_invocations_total"), 3.0);
    assert_eq!(first("ignis_errors_total"), 1.0);
    assert_eq!(first("ignis_cold_starts_total"), 1.0);
    assert_eq!(first("ignis_duration_seconds_count"), 3.0);
    assert_eq!(first("ignis_init_duration_seconds_count"), 1.0);
    assert_eq!(first("ignis_throttles_total"), 0.0);
    // Every invocation has ended by the time its answer came (the gauge's decrement follows it closely).
    assert!(eventually(Duration::from_secs(10), || first("ignis_concurrent_executions") == 0.0));
    // The version is a label of its own.
    let text = metrics_text(&address).unwrap();
    assert!(text.contains(r#"function="first",version="$LATEST""#), "{text}");
    // Past the cap of one function, the second is summed under `_other`.
    assert_eq!(value(&address, "ignis_invocations_total", "_other"), 1.0);
    assert_eq!(value(&address, "ignis_cold_starts_total", "_other"), 1.0);
    assert!(!text.contains(r#"function="second""#), "{text}");
    // Ignis's own: requests by API operation, and the pool's sandboxes (the keep-alive sweep counts them).
    assert_eq!(metric(&address, r#"ignis_requests_total{operation="Invoke"}"#), Some(4.0));
    assert_eq!(metric(&address, r#"ignis_requests_total{operation="CreateFunction"}"#), Some(2.0));
    assert_eq!(metric(&address, r#"ignis_request_duration_seconds_count{operation="Invoke"}"#), Some(4.0));
    let idle = || metric(&address, r#"ignis_sandboxes{state="idle"}"#).unwrap_or(0.0) >= 1.0;
    assert!(eventually(Duration::from_secs(30), idle), "{:?}", metrics_text(&address));
}

#[test]
fn a_throttle_is_counted_for_its_function() {
    let address = free_address();
    let server = Server::start_with(&["--metrics-listen", &address]);
    let zip = sh_runtime("echo '\"fine\"' > /tmp/response");
    assert_eq!(server.create("held", &zip, json!({})).status, 201);
    let put = server.lambda("PUT", "/2017-10-31/functions/held/concurrency", br#"{"ReservedConcurrentExecutions":0}"#);
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(server.invoke("held", "{}").status, 429);
    assert_eq!(value(&address, "ignis_throttles_total", "held"), 1.0);
    assert_eq!(value(&address, "ignis_invocations_total", "held"), 0.0);
}

/// The value of the unlabelled metric `name` (0 until it is there).
fn plain(address: &str, name: &str) -> f64 {
    metric(address, name).unwrap_or(0.0)
}

#[test]
fn asynchronous_events_and_their_destinations_are_counted() {
    let address = free_address();
    let server = Server::start_with(&["--metrics-listen", &address]);
    let zip = sh_runtime("grep -q fail /tmp/event && exit 3; echo \"got $(cat /tmp/event)\"");
    assert_eq!(server.create("flaky", &zip, json!({})).status, 201);
    let dest = server.create("dest", &sh_runtime("echo '\"ok\"' > /tmp/response"), json!({}));
    let dest = dest.json()["FunctionArn"].as_str().unwrap().to_string();
    let config = json!({ "MaximumRetryAttempts": 0, "DestinationConfig": { "OnFailure": { "Destination": dest } } });
    let put = server.lambda("PUT", "/2019-09-25/functions/flaky/event-invoke-config", config.to_string().as_bytes());
    assert_eq!(put.status, 200, "{}", put.text());
    for payload in ["{}", r#"{"fail":true}"#] {
        assert_eq!(server.invoke_with("flaky", payload, &[("x-amz-invocation-type", "Event")]).status, 202);
    }
    assert_eq!(plain(&address, "ignis_async_events_accepted_total"), 2.0);
    // The failed event's record goes to the destination function, which runs it as an event of its own.
    let delivered = || value(&address, "ignis_invocations_total", "dest") == 1.0;
    assert!(eventually(Duration::from_secs(30), delivered), "{:?}", metrics_text(&address));
    assert_eq!(value(&address, "ignis_invocations_total", "flaky"), 2.0);
    assert_eq!(plain(&address, "ignis_async_events_dropped_total"), 1.0);
    assert_eq!(metric(&address, r#"ignis_destination_deliveries_total{result="success"}"#), Some(1.0));
    assert_eq!(metric(&address, r#"ignis_destination_deliveries_total{result="failure"}"#), None);
    let settled = || plain(&address, "ignis_async_events_pending") == 0.0;
    assert!(eventually(Duration::from_secs(10), settled), "{:?}", metrics_text(&address));
    assert!(metric(&address, "ignis_async_event_oldest_age_seconds").is_some());
    // Every accepted event was committed by the events' group-commit writer.
    assert!(metric(&address, r#"ignis_storage_commit_seconds_count{writer="events"}"#).is_some_and(|n| n >= 1.0));
}

#[test]
fn queue_depths_are_labelled_up_to_the_cap() {
    let address = free_address();
    let server = Server::start_with(&["--metrics-listen", &address, "--metrics-queues", "1"]);
    let (first, second) = (sqs::create(&server, "first", json!({})), sqs::create(&server, "second", json!({})));
    for _ in 0..2 {
        sqs::send(&server, &first, "m");
    }
    sqs::send(&server, &second, "m");
    // One queue has a label of its own (which one depends on the order the server lists them); the other is summed
    // under `_other`. The gauges are refreshed every 5 s.
    let depths = || {
        let text = metrics_text(&address).unwrap_or_default();
        let mut values: Vec<f64> = text
            .lines()
            .filter_map(|line| line.strip_prefix("ignis_queue_messages{queue=\"")?.rsplit_once("} ")?.1.parse().ok())
            .collect();
        values.sort_by(f64::total_cmp);
        values
    };
    assert!(eventually(Duration::from_secs(30), || depths() == [1.0, 2.0]), "{:?}", metrics_text(&address));
    let text = metrics_text(&address).unwrap();
    assert!(text.contains(r#"ignis_queue_messages{queue="_other"}"#), "{text}");
    assert_eq!(text.matches("ignis_queue_messages{").count(), 2, "{text}");
}
