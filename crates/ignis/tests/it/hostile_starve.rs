//! One tenant must not starve another: its idle sandboxes give way to
//! another tenant's cold start, and its long-running asynchronous events do
//! not hold back another tenant's.

use std::time::Duration;

use ignis_sigv4::Credentials;
use serde_json::{Value, json};

use crate::harness::{Reply, Server, WorkerHost, eventually, sh_runtime};

/// CreateFunction in the account of `credentials`, with `extra` settings.
fn create(server: &Server, credentials: &Credentials, name: &str, zip: &[u8], extra: Value) {
    let reply = server.create_as_with(credentials, name, zip, extra);
    assert_eq!(reply.status, 201, "{}", reply.text());
}

/// A synchronous invoke with the log tail, signed with `credentials`.
fn invoke(server: &Server, credentials: &Credentials, name: &str) -> Reply {
    let path = format!("/2015-03-31/functions/{name}/invocations");
    server.signed_with(credentials, "lambda", "POST", &path, "", &[("x-amz-log-type", "Tail")], b"{}")
}

/// Whether the invocation answered started its sandbox (its `REPORT` line has an `Init Duration`).
fn cold(reply: &Reply) -> bool {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let tail = reply.log_tail();
    let report = tail.lines().find(|l| l.starts_with("REPORT RequestId: ")).unwrap_or_else(|| panic!("no REPORT in {tail:?}"));
    report.contains("Init Duration")
}

/// The log messages of one of the account's functions (none yet: empty).
fn log_messages(server: &Server, credentials: &Credentials, function: &str) -> Vec<String> {
    let body = json!({ "logGroupName": format!("/aws/lambda/{function}") });
    let reply = server.logs_as(credentials, "FilterLogEvents", &body);
    if reply.status != 200 {
        assert_eq!(reply.error_type(), "ResourceNotFoundException", "{}", reply.text());
        return Vec::new();
    }
    reply.json()["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_string()).collect()
}

fn count(messages: &[String], prefix: &str) -> usize {
    messages.iter().filter(|m| m.starts_with(prefix)).count()
}

/// Alpha fills the workers (512 MB in all) with idle 128 MB sandboxes of
/// four functions, invoked once each: beta's cold start evicts the least
/// recently used of them (f1's), and only it, instead of failing.
fn idle_sandboxes_give_way(server: &Server) {
    let (_, a) = server.create_account("alpha");
    let (_, b) = server.create_account("beta");
    let code = sh_runtime(r#"echo '"ok"' > /tmp/response"#);
    let names = ["f1", "f2", "f3", "f4"];
    for name in names {
        create(server, &a, name, &code, json!({ "MemorySize": 128 }));
        assert!(cold(&invoke(server, &a, name)), "{name}: a first invoke starts a sandbox");
    }
    let used = || server.workers().iter().map(|w| w["UsedMemoryMb"].as_u64().unwrap()).sum::<u64>();
    assert_eq!(used(), 512, "alpha's idle sandboxes fill the workers: {:?}", server.workers());

    // Beta's cold start finds no room but alpha's idle sandboxes: the least recently used one goes.
    create(server, &b, "g", &code, json!({ "MemorySize": 128 }));
    let reply = invoke(server, &b, "g");
    assert_eq!((reply.status, reply.text().trim()), (200, "\"ok\""), "{}", reply.text());
    assert!(cold(&reply));

    // f2, f3 and f4 kept their sandboxes; f1's was the one evicted.
    for name in &names[1..] {
        assert!(!cold(&invoke(server, &a, name)), "{name} was not the least recently used: it stays warm");
    }
    assert!(cold(&invoke(server, &a, "f1")), "f1's idle sandbox was evicted");
    assert_eq!(used(), 512, "never over the workers' memory: {:?}", server.workers());
}

#[test]
fn idle_sandboxes_of_one_tenant_give_way_to_anothers_cold_start() {
    idle_sandboxes_give_way(&Server::start_with(&["--worker-memory", "512"]));
}

/// The same across worker hosts: the evicted sandbox is on another machine.
#[test]
fn idle_sandboxes_on_worker_hosts_give_way_too() {
    let server = Server::start_with(&["--no-local-worker"]);
    let _first = WorkerHost::start(&server, &["--memory", "256"]);
    let _second = WorkerHost::start(&server, &["--memory", "256"]);
    server.wait_for_workers(2);
    idle_sandboxes_give_way(&server);
}

/// A busy sandbox is a reservation: a cold start that would need it fails
/// (as before) while it runs, and the busy invocation is not disturbed.
#[test]
fn busy_sandboxes_are_never_evicted() {
    let server = Server::start_with(&["--worker-memory", "256"]);
    let (_, a) = server.create_account("alpha");
    let (_, b) = server.create_account("beta");
    // Runs until /tmp/go exists in its own sandbox: never, so it is busy for the whole test.
    let slow = sh_runtime("echo started; while [ ! -e /tmp/go ]; do sleep 1; done");
    create(&server, &a, "slow", &slow, json!({ "MemorySize": 256, "Timeout": 900 }));
    let event = server.signed_with(&a, "lambda", "POST", "/2015-03-31/functions/slow/invocations", "", &[("x-amz-invocation-type", "Event")], b"{}");
    assert_eq!(event.status, 202, "{}", event.text());
    assert!(eventually(Duration::from_secs(60), || count(&log_messages(&server, &a, "slow"), "started") == 1));

    create(&server, &b, "g", &sh_runtime(r#"echo '"ok"' > /tmp/response"#), json!({ "MemorySize": 128 }));
    let refused = invoke(&server, &b, "g");
    assert_eq!((refused.status, refused.error_type()), (500, "ServiceException"), "{}", refused.text());
    let messages = log_messages(&server, &a, "slow");
    assert_eq!(count(&messages, "END RequestId"), 0, "alpha's invocation still runs: {messages:?}");
}

/// Alpha sends 40 events to a function that runs for ten minutes: beta's
/// event runs while all of alpha's that started are still running.
#[test]
fn one_tenants_long_events_do_not_delay_anothers() {
    let server = Server::start();
    let (_, a) = server.create_account("alpha");
    let (_, b) = server.create_account("beta");
    create(&server, &a, "slow", &sh_runtime("echo started; sleep 600"), json!({ "Timeout": 900 }));
    create(&server, &b, "quick", &sh_runtime("echo quick ran"), json!({}));
    let event = |credentials: &Credentials, name: &str| {
        let path = format!("/2015-03-31/functions/{name}/invocations");
        let reply = server.signed_with(credentials, "lambda", "POST", &path, "", &[("x-amz-invocation-type", "Event")], b"{}");
        assert_eq!(reply.status, 202, "{}", reply.text());
    };
    for _ in 0..40 {
        event(&a, "slow");
    }
    // Alpha's events hold every poller they may (32 of them run at once).
    let mut started = 0;
    let running = eventually(Duration::from_secs(180), || {
        started = count(&log_messages(&server, &a, "slow"), "started");
        started >= 32
    });
    assert!(running, "only {started} of alpha's events started");

    event(&b, "quick");
    let mut messages = Vec::new();
    let ran = eventually(Duration::from_secs(90), || {
        messages = log_messages(&server, &b, "quick");
        count(&messages, "quick ran") == 1
    });
    assert!(ran, "beta's event waits for alpha's: {messages:?}");
    let alpha = log_messages(&server, &a, "slow");
    assert_eq!(count(&alpha, "END RequestId"), 0, "alpha's events all still run");
}
