//! Invoke: answers, errors, logs, timeouts, crashes, warm reuse, isolation.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Server, cgroup_left, eventually, report_line, rust_example, sandbox_ids, sh_runtime, zip_of};

#[test]
fn lambda_runtime_example_cold_then_warm() {
    let server = Server::start();
    assert_eq!(server.create("hello", &rust_example(), json!({})).status, 201);

    let cold = server.invoke("hello", r#"{"name": "Ignis"}"#);
    assert_eq!(cold.status, 200, "{}", cold.text());
    assert_eq!(cold.json(), json!({ "message": "Hello, Ignis!" }));
    assert_eq!(cold.header("x-amz-executed-version"), Some("$LATEST"));
    assert_eq!(cold.header("x-amz-function-error"), None);
    let request_id = cold.header("x-amzn-requestid").unwrap();
    let tail = cold.log_tail();
    assert!(tail.starts_with(&format!("START RequestId: {request_id} Version: $LATEST\n")), "{tail}");
    assert!(tail.contains(&format!("handling {request_id} for Ignis\n")), "{tail}");
    assert!(tail.contains(&format!("END RequestId: {request_id}\n")), "{tail}");
    let report = report_line(&tail);
    let fields: Vec<&str> = report.split('\t').collect();
    assert_eq!(fields[0], format!("REPORT RequestId: {request_id}"));
    assert!(fields[1].starts_with("Duration: ") && fields[1].ends_with(" ms"), "{report}");
    assert!(fields[2].starts_with("Billed Duration: ") && fields[2].ends_with(" ms"), "{report}");
    assert_eq!(fields[3], "Memory Size: 128 MB");
    assert!(fields[4].starts_with("Max Memory Used: ") && fields[4].ends_with(" MB"), "{report}");
    assert!(fields[5].starts_with("Init Duration: ") && fields[5].ends_with(" ms"), "{report}");

    let warm = server.invoke("hello", r#"{"name": "again"}"#);
    assert_eq!(warm.json(), json!({ "message": "Hello, again!" }));
    let warm_report = report_line(&warm.log_tail()).to_string();
    assert!(!warm_report.contains("Init Duration"), "a warm invoke has no init: {warm_report}");

    // Both ran in the same sandbox: one log stream.
    assert!(eventually(Duration::from_secs(10), || server.log_events("hello").len() >= 8));
    assert_eq!(sandbox_ids(&server.log_events("hello")).len(), 1);
}

#[test]
fn function_errors_are_200_with_unhandled() {
    let server = Server::start();
    server.create("hello", &rust_example(), json!({}));
    let reply = server.invoke("hello", r#"{"fail": "no luck"}"#);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(reply.json()["errorMessage"], "no luck");
    // A handled error leaves the sandbox usable.
    assert_eq!(server.invoke("hello", "{}").json()["message"], "Hello, world!");

    let errors = sh_runtime(
        r#"curl -sS -o /dev/null -X POST -H 'Lambda-Runtime-Function-Error-Type: Custom.Oops' "$api/invocation/$id/error" -d '{"errorMessage":"oops","errorType":"Custom.Oops","stackTrace":[]}'; continue"#,
    );
    server.create("errs", &errors, json!({}));
    let reply = server.invoke("errs", "{}");
    assert_eq!(reply.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(reply.json(), json!({ "errorMessage": "oops", "errorType": "Custom.Oops", "stackTrace": [] }));
}

#[test]
fn invocation_types() {
    let server = Server::start();
    server.create("marker", &sh_runtime("touch /tmp/ran; echo \"ran $id\""), json!({}));

    let dry = server.invoke_with("marker", "{}", &[("x-amz-invocation-type", "DryRun")]);
    assert_eq!(dry.status, 204);
    assert!(server.log_events("marker").is_empty(), "a dry run runs nothing");

    let event = server.invoke_with("marker", r#"{"async": true}"#, &[("x-amz-invocation-type", "Event")]);
    assert_eq!(event.status, 202, "{}", event.text());
    let id = event.header("x-amzn-requestid").unwrap().to_string();
    assert!(eventually(Duration::from_secs(20), || {
        server.log_events("marker").iter().any(|e| e["message"] == Value::String(format!("ran {id}\n")))
    }));

    let bad = server.invoke_with("marker", "{}", &[("x-amz-invocation-type", "Sometimes")]);
    assert_eq!((bad.status, bad.error_type()), (400, "ValidationException"));
}

#[test]
fn timeout_is_a_hard_deadline_and_the_sandbox_is_discarded() {
    // Stays end to end on real time: the function's timeout is enforced by the worker's
    // sandbox (its runtime really sleeps past it), and the REPORT shows the real duration.
    let server = Server::start();
    // Sleeps only on events asking for it.
    let zip = sh_runtime("grep -q sleep /tmp/event && sleep 30; echo '\"awake\"' > /tmp/response");
    server.create("sleepy", &zip, json!({ "Timeout": 1 }));
    let started = std::time::Instant::now();
    let reply = server.invoke("sleepy", r#"{"sleep": true}"#);
    assert!(started.elapsed() < Duration::from_secs(15), "the deadline was not enforced");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-amz-function-error"), Some("Unhandled"));
    let body = reply.json();
    assert_eq!(body["errorType"], "Sandbox.Timedout");
    assert!(body["errorMessage"].as_str().unwrap().ends_with("Task timed out after 1.00 seconds"), "{body}");
    let tail = reply.log_tail();
    assert!(tail.contains("Task timed out after 1.00 seconds\n"), "{tail}");
    assert!(report_line(&tail).contains("Duration: 10"), "{tail}");

    // The next invocation gets a fresh sandbox (a cold start) and works.
    let next = server.invoke("sleepy", "{}");
    assert_eq!(next.text().trim(), "\"awake\"");
    assert!(report_line(&next.log_tail()).contains("Init Duration"));
    assert!(eventually(Duration::from_secs(10), || sandbox_ids(&server.log_events("sleepy")).len() == 2));
    // The timed-out sandbox is gone, cgroup and all; the new one serves.
    let ids = sandbox_ids(&server.log_events("sleepy"));
    assert!(eventually(Duration::from_secs(10), || ids.iter().filter(|id| cgroup_left(id)).count() == 1));
}

#[test]
fn a_crashing_runtime_fails_the_invocation_and_is_replaced() {
    let server = Server::start();
    let zip = sh_runtime("grep -q crash /tmp/event && exit 3; echo '\"fine\"' > /tmp/response");
    server.create("crashy", &zip, json!({}));
    let reply = server.invoke("crashy", r#"{"crash": 1}"#);
    assert_eq!(reply.header("x-amz-function-error"), Some("Unhandled"));
    let body = reply.json();
    assert_eq!(body["errorType"], "Runtime.ExitError");
    assert!(body["errorMessage"].as_str().unwrap().ends_with("Runtime exited with error: exit status 3"), "{body}");
    assert!(reply.log_tail().contains("Runtime.ExitError"));
    let next = server.invoke("crashy", "{}");
    assert_eq!(next.text().trim(), "\"fine\"");
    assert!(report_line(&next.log_tail()).contains("Init Duration"));
}

#[test]
fn a_runtime_that_exits_while_idle_is_replaced_without_failing_anyone() {
    let server = Server::start();
    // Answers, then exits after posting the answer.
    let zip = sh_runtime("echo '\"once\"' > /tmp/response; curl -sS -o /dev/null -X POST \"$api/invocation/$id/response\" --data-binary @/tmp/response; exit 0");
    server.create("once", &zip, json!({}));
    for _ in 0..3 {
        let reply = server.invoke("once", "{}");
        assert_eq!(reply.header("x-amz-function-error"), None, "{}", reply.text());
        assert_eq!(reply.text().trim(), "\"once\"");
        // Pacing: the runtime has time to exit, so the next invoke meets the idle sandbox it
        // left; the replies are checked the same either way.
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn memory_is_a_hard_limit() {
    let server = Server::start();
    let zip = sh_runtime("head -c 400m /dev/zero | tail > /dev/null; echo '\"survived\"' > /tmp/response");
    server.create("hog", &zip, json!({ "MemorySize": 128 }));
    let reply = server.invoke("hog", "{}");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let tail = reply.log_tail();
    assert!(!tail.is_empty(), "no log tail; answer {:?}: {}", reply.header("x-amz-function-error"), reply.text());
    let report = report_line(&tail);
    let used: u64 = report.split("Max Memory Used: ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(used <= 128, "{report}");
    assert!(used >= 100, "the hog should have reached the limit: {report}");
    // The function goes on serving.
    assert_eq!(server.invoke("hog", "{}").status, 200);
}

#[test]
fn concurrent_invocations_get_their_own_sandboxes() {
    let server = std::sync::Arc::new(Server::start());
    server.create("slow", &sh_runtime("sleep 1; echo \"\\\"$id\\\"\" > /tmp/response"), json!({}));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let server = server.clone();
            std::thread::spawn(move || server.invoke("slow", "{}"))
        })
        .collect();
    for thread in threads {
        let reply = thread.join().unwrap();
        let id = reply.header("x-amzn-requestid").unwrap().to_string();
        assert_eq!(reply.text().trim(), format!("\"{id}\""));
    }
    assert!(eventually(Duration::from_secs(10), || sandbox_ids(&server.log_events("slow")).len() == 3));
}

#[test]
fn idle_sandboxes_are_reclaimed_after_the_keep_alive() {
    let server = Server::start_with(&["--keep-alive", "1"]);
    server.create("brief", &sh_runtime(""), json!({}));
    server.invoke("brief", "{}");
    assert!(eventually(Duration::from_secs(10), || !sandbox_ids(&server.log_events("brief")).is_empty()));
    let ids = sandbox_ids(&server.log_events("brief"));
    assert!(eventually(Duration::from_secs(15), || ids.iter().all(|id| !cgroup_left(id))), "idle sandbox still there");
    let again = server.invoke("brief", "{}");
    assert!(report_line(&again.log_tail()).contains("Init Duration"), "expected a cold start after the keep-alive");
}

#[test]
fn the_sandbox_has_lambdas_environment_and_nothing_of_the_host() {
    let server = Server::start();
    let probe = r#"
{
  echo "user=$(id -u)"
  echo "env_name=$AWS_LAMBDA_FUNCTION_NAME"
  echo "env_memory=$AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
  echo "env_version=$AWS_LAMBDA_FUNCTION_VERSION"
  echo "env_group=$AWS_LAMBDA_LOG_GROUP_NAME"
  echo "env_stream=$AWS_LAMBDA_LOG_STREAM_NAME"
  echo "env_region=$AWS_REGION"
  echo "env_task=$LAMBDA_TASK_ROOT"
  echo "env_api=$AWS_LAMBDA_RUNTIME_API"
  echo "env_own=$GREETING"
  echo "tz=$TZ"
  if cat /etc/shadow >/dev/null 2>&1; then echo shadow=read; else echo shadow=denied; fi
  if touch /var/task/x 2>/dev/null; then echo task=writable; else echo task=readonly; fi
  if touch /tmp/x 2>/dev/null; then echo tmp=writable; else echo tmp=readonly; fi
  if curl -s -m 2 "http://$HOST_API/healthz" >/dev/null 2>&1; then echo host=reachable; else echo host=unreachable; fi
  echo "pids=$(ls /proc | grep -c '^[0-9]')"
  echo "root=$(ls / | tr '\n' ' ')"
  echo "sys=$(ls -A /sys 2>/dev/null | wc -l)"
  echo "usr=$(ls /usr/bin | wc -l)"
} > /tmp/probe
printf '"%s"' "$(base64 -w0 /tmp/probe)" > /tmp/response
"#;
    let host_api = server.address.clone();
    server.create(
        "probe",
        &sh_runtime(probe),
        json!({ "MemorySize": 256, "Environment": { "Variables": { "GREETING": "hi", "HOST_API": host_api } } }),
    );
    let reply = server.invoke("probe", "{}");
    use base64::Engine;
    let encoded: String = serde_json::from_slice(&reply.body).unwrap_or_else(|_| panic!("{}", reply.text()));
    let text = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()).unwrap();
    let facts: std::collections::HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let expect = |key: &str, value: &str| assert_eq!(facts.get(key).copied(), Some(value), "{key} in {text}");
    expect("user", "993");
    expect("env_name", "probe");
    expect("env_memory", "256");
    expect("env_version", "$LATEST");
    expect("env_group", "/aws/lambda/probe");
    expect("env_region", "us-east-1");
    expect("env_task", "/var/task");
    expect("env_api", "127.0.0.1:9001");
    expect("env_own", "hi");
    expect("tz", ":UTC");
    expect("shadow", "denied");
    expect("task", "readonly");
    expect("tmp", "writable");
    expect("host", "unreachable");
    assert!(facts["env_stream"].contains("/[$LATEST]"), "{text}");
    let pids: u32 = facts["pids"].parse().unwrap();
    assert!(pids < 10, "the sandbox sees only its own processes: {text}");
    assert!(!facts["root"].contains("home") && !facts["root"].contains("root "), "{text}");
    // The runtime's own base, not the host's: no sysfs, and a small /usr.
    expect("sys", "0");
    assert!(facts["usr"].parse::<u32>().unwrap() < 150, "{text}");
}

#[test]
fn a_bootstrap_that_cannot_run_is_a_function_error() {
    let server = Server::start();
    let zip = zip_of(&[("bootstrap", b"#!/bin/sh\necho hi\n", 0o644)]);
    assert_eq!(server.create("noexec", &zip, json!({})).status, 201);
    let reply = server.invoke("noexec", "{}");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(reply.json()["errorType"], "Runtime.InvalidEntrypoint");
}

#[test]
fn a_log_flood_neither_grows_the_server_nor_stops_it() {
    let server = Server::start();
    // 96 MB of log lines in one invocation, as fast as the runtime can write.
    let flood = "head -c 96000000 /dev/zero | tr '\\0' x | fold -w 1000; echo '\"flooded\"' > /tmp/response";
    server.create("flood", &sh_runtime(flood), json!({ "Timeout": 120 }));
    server.create("quiet", &sh_runtime("echo '\"quiet\"' > /tmp/response"), json!({}));
    let reply = server.invoke("flood", "{}");
    assert_eq!(reply.text().trim(), "\"flooded\"");
    let tail = reply.log_tail();
    assert!(tail.len() <= 4096, "the tail is at most 4 KB: {}", tail.len());
    assert!(report_line(&tail).starts_with("REPORT RequestId: "));
    assert_eq!(server.invoke("quiet", "{}").text().trim(), "\"quiet\"");
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let rss_kb: u64 = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(rss_kb < 192 * 1024, "the server's peak memory grew to {rss_kb} kB");
}
