//! `--metrics-listen`: Lambda's per-function metrics move as functions run
//! (`--metrics-functions` folds the functions past it into `function="_other"`),
//! and so do the asynchronous events' and Ignis's own.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Reply, Server, eventually, free_address, metric, metrics_text, sh_runtime};
use crate::{provisioned, sqs};

/// The sum of the samples of `name` whose labels include `function="function"` (0 if none).
fn value(address: &str, name: &str, function: &str) -> f64 {
    labelled(address, name, &[("function", function)])
}

/// The sum of the samples of `name` whose labels include all of `labels` (0 if none).
fn labelled(address: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = metrics_text(address).unwrap_or_default();
    let labels: Vec<String> = labels.iter().map(|(label, value)| format!("{label}=\"{value}\"")).collect();
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|rest| rest.rsplit_once("} "))
        .filter(|(set, _)| labels.iter().all(|label| set.split(',').any(|l| l == label)))
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
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

/// How long a held invocation's `sleep` lasts unless the test ends it first (longer than the function's timeout).
const HOLD: &str = "86399";

/// The pids of the processes running `sleep HOLD` below the process `ancestor`.
fn held_sleeps(ancestor: u32) -> Vec<i32> {
    let parent = |pid: i32| -> Option<i32> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status.lines().find_map(|line| line.strip_prefix("PPid:"))?.trim().parse().ok()
    };
    let below = |mut pid: i32| {
        while pid > 1 {
            match parent(pid) {
                Some(up) if up == ancestor as i32 => return true,
                Some(up) => pid = up,
                None => return false,
            }
        }
        false
    };
    let wanted = format!("sleep\0{HOLD}\0");
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted.as_bytes()) && below(*pid))
        .collect()
}

/// Stops the server (SIGTERM) if a test fails while an invocation is held, so that the invocation, and the test's
/// wait for it, end.
struct StopOnFailure(u32);

impl Drop for StopOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // SAFETY: a signal to the server's process, which this test started.
            unsafe { libc::kill(self.0 as i32, libc::SIGTERM) };
        }
    }
}

const PATH: &str = "/2015-03-31/functions/pf/invocations";

#[test]
fn provisioned_invocations_are_in_use_while_they_run() {
    let address = free_address();
    let server = Server::start_with(&["--metrics-listen", &address]);
    // Every invocation runs until the test ends its `sleep`.
    let zip = sh_runtime(&format!("sleep {HOLD}; echo '\"released\"' > /tmp/response"));
    assert_eq!(server.create("pf", &zip, json!({ "Timeout": 120, "Publish": true })).status, 201);
    let alias = json!({ "Name": "live", "FunctionVersion": "1" }).to_string();
    assert_eq!(server.lambda("POST", "/2015-03-31/functions/pf/aliases", alias.as_bytes()).status, 201);
    let put = provisioned::put(&server, "live", 1);
    assert_eq!(put.status, 202, "{}", put.text());
    provisioned::ready(&server, "live");

    // An alias's invocation counts for its version.
    let gauge = |name| labelled(&address, name, &[("function", "pf"), ("version", "1")]);
    let gauges = || (gauge("ignis_provisioned_concurrency_in_use"), gauge("ignis_concurrent_executions"));
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let invoke = || scope.spawn(|| server.signed("lambda", "POST", PATH, "Qualifier=live", &[], b"{}"));
        let _stop = StopOnFailure(server.pid());
        // The first runs on the provisioned sandbox; the second, while it is busy, on one of its own.
        let first = invoke();
        assert!(eventually(Duration::from_secs(30), || gauges() == (1.0, 1.0)), "{:?}", metrics_text(&address));
        let second = invoke();
        assert!(eventually(Duration::from_secs(30), || gauges() == (1.0, 2.0)), "{:?}", metrics_text(&address));
        let mut sleeps = Vec::new();
        assert!(eventually(Duration::from_secs(30), || {
            sleeps = held_sleeps(server.pid());
            sleeps.len() == 2
        }));
        for sleep in sleeps {
            // SAFETY: a signal to the function's `sleep`, a process of a sandbox of the server this test started.
            assert_eq!(unsafe { libc::kill(sleep, libc::SIGKILL) }, 0);
        }
        [first, second].map(|invocation| invocation.join().unwrap()).into()
    });
    for reply in replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json(), json!("released"));
    }
    assert!(eventually(Duration::from_secs(10), || gauges() == (0.0, 0.0)), "{:?}", metrics_text(&address));
    // Only the second was a cold start.
    assert_eq!(gauge("ignis_cold_starts_total"), 1.0);
    assert_eq!(gauge("ignis_invocations_total"), 2.0);
}
