//! Hostile HTTP clients: requests whose bodies must not be read before they
//! are authenticated, and connections that stall in their headers, in their
//! body or idle, on the API server, on a worker host and on a sandbox's
//! Runtime API.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::harness::{KEY_ID, Server, WorkerHost, eventually, sandbox_ids, sh_runtime, zip_of};

/// Short limits, so that the tests below see them act.
const SHORT: [&str; 6] = ["--header-timeout", "2", "--body-timeout", "2", "--idle-timeout", "3"];

/// Just under CreateFunction's body limit: a size the server would otherwise wait for.
const ANNOUNCED: usize = 70_000_000;

/// The resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Sends `head` and then up to `body` bytes of zeros (from a thread of its own, which stops when
/// the server closes), and stops sending without closing; returns the status of the answer, read
/// while the rest of the announced body is never sent.
fn send_partial(address: &str, head: &str, body: usize) -> Result<u16, String> {
    let mut stream = TcpStream::connect(address).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    stream.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let chunk = vec![0u8; 64 * 1024];
        let mut sent = 0;
        while sent < body && writer.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
    });
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let status = loop {
        if let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&reply[..end]).into_owned();
            break head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or(head);
        }
        match stream.read(&mut buf) {
            Ok(0) => break Err(format!("closed without an answer: {:?}", String::from_utf8_lossy(&reply))),
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) => break Err(format!("no answer: {e} after {:?}", String::from_utf8_lossy(&reply))),
        }
    };
    let _ = stream.shutdown(Shutdown::Both);
    let _ = sending.join();
    status
}

/// A CreateFunction head announcing [`ANNOUNCED`] bytes, with `auth` header lines.
fn create_head(address: &str, auth: &str) -> String {
    format!("POST /2015-03-31/functions HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {ANNOUNCED}\r\n{auth}\r\n")
}

/// Authorization lines for `key` with a signature that is not the request's.
fn forged(key: &str, declared_hash: bool) -> String {
    let date = ignis_sigv4::format_timestamp(SystemTime::now());
    let day = &date[..8];
    let (signed, hash) = if declared_hash {
        ("content-type;host;x-amz-content-sha256;x-amz-date", format!("x-amz-content-sha256: {}\r\n", "ab".repeat(32)))
    } else {
        ("content-type;host;x-amz-date", String::new())
    };
    format!(
        "x-amz-date: {date}\r\n{hash}authorization: AWS4-HMAC-SHA256 Credential={key}/{day}/us-east-1/lambda/aws4_request, SignedHeaders={signed}, Signature={}\r\n",
        "0".repeat(64)
    )
}

#[test]
fn bodies_of_unauthenticated_requests_are_not_read_and_their_memory_is_bounded() {
    let server = Server::start_with(&["--body-timeout", "3"]);
    let ok = sh_runtime("echo '\"ok\"' > /tmp/response");
    assert_eq!(server.create("first", &ok, json!({})).status, 201);
    let baseline = rss(server.pid());

    let peak = AtomicU64::new(baseline);
    let done = AtomicBool::new(false);
    /// Ends the sampler however the scope ends (an assertion failing in it included).
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let (refused, throttled) = std::thread::scope(|s| {
        let _done = Done(&done);
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(rss(server.pid()), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        // Refused from the head alone, whatever follows: no signature, an unknown key, and a
        // known key whose signature does not cover the declared payload hash.
        let refused: Vec<_> = ["", &forged("AKIAUNKNOWNUNKNOWNUN", true), &forged(KEY_ID, true)]
            .into_iter()
            .flat_map(|auth| {
                let head = create_head(&server.address, auth);
                (0..3).map(move |_| head.clone())
            })
            .map(|head| {
                let address = server.address.clone();
                s.spawn(move || send_partial(&address, &head, 4 << 20))
            })
            .collect();
        // A known key without a declared payload hash: its signature can only be checked with
        // the body, which is read within the server-wide room for such bodies.
        let throttled: Vec<_> = (0..10)
            .map(|_| {
                let head = create_head(&server.address, &forged(KEY_ID, false));
                let address = server.address.clone();
                s.spawn(move || send_partial(&address, &head, 8 << 20))
            })
            .collect();
        // Meanwhile a signed client is served.
        assert_eq!(server.lambda("GET", "/2015-03-31/functions", b"").status, 200);
        let created = server.create("second", &ok, json!({}));
        assert_eq!(created.status, 201, "{}", created.text());
        let refused: Vec<_> = refused.into_iter().map(|t| t.join().unwrap()).collect();
        let throttled: Vec<_> = throttled.into_iter().map(|t| t.join().unwrap()).collect();
        (refused, throttled)
    });
    assert!(refused.iter().all(|r| *r == Ok(403)), "{refused:?}");
    // Those that got room stopped in their body (408); the others found none (429).
    assert!(throttled.iter().all(|r| matches!(r, Ok(408 | 429))), "{throttled:?}");
    assert!(throttled.contains(&Ok(429)), "{throttled:?}");
    let grown = peak.load(Ordering::SeqCst).saturating_sub(baseline);
    eprintln!("server memory: {} MB, at most {} MB more under attack", baseline >> 20, grown >> 20);
    // 9 × 4 MB + 10 × 8 MB were sent; one body of 8 MB at a time may be held.
    assert!(grown < 40 << 20, "the server grew by {} MB", grown >> 20);
    assert_eq!(server.invoke("second", "{}").status, 200);
}

/// Reads until the server closes the connection; what it sent before, or why it did not close.
fn until_closed(stream: &mut TcpStream) -> Result<String, String> {
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(String::from_utf8_lossy(&got).into_owned()),
            Err(e) => return Err(format!("still open ({e}) after {:?}", String::from_utf8_lossy(&got))),
        }
    }
}

/// A signed head (service `service`, the payload hash declared) for a body of which only
/// `send` bytes follow.
fn signed_head(address: &str, service: &str, method: &str, path: &str, body: &[u8]) -> String {
    let host = [("host", address)];
    let parts = ignis_sigv4::RequestParts { method, path, query: "", headers: &host, body };
    let signed = ignis_sigv4::sign(&parts, &Server::credentials(), "us-east-1", service, SystemTime::now());
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {address}\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in signed {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head + "\r\n"
}

/// On `address`: a connection that stops in its headers, one that stops in a signed body
/// (`method path` of `service`), and one left idle after an answer are each closed.
fn stalled_connections_are_closed(address: &str, service: &str, method: &str, path: &str, idle_request: &str) {
    let mut headers = TcpStream::connect(address).unwrap();
    headers.write_all(format!("{method} {path} HTTP/1.1\r\nhost: {address}\r\n").as_bytes()).unwrap();
    let got = until_closed(&mut headers).unwrap_or_else(|e| panic!("{address}: half a head: {e}"));
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");

    let body = vec![b'{'; 1000];
    let mut stalled = TcpStream::connect(address).unwrap();
    stalled.write_all(signed_head(address, service, method, path, &body).as_bytes()).unwrap();
    stalled.write_all(&body[..10]).unwrap();
    let got = until_closed(&mut stalled).unwrap_or_else(|e| panic!("{address}: half a body: {e}"));
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");

    let mut idle = TcpStream::connect(address).unwrap();
    idle.write_all(idle_request.as_bytes()).unwrap();
    let got = until_closed(&mut idle).unwrap_or_else(|e| panic!("{address}: idle: {e}"));
    assert!(got.starts_with("HTTP/1.1 "), "{got}");
}

#[test]
fn the_api_closes_connections_that_stall_in_headers_in_a_body_or_idle() {
    let server = Server::start_with(&SHORT);
    let healthz = format!("GET /healthz HTTP/1.1\r\nhost: {}\r\n\r\n", server.address);
    stalled_connections_are_closed(&server.address, "lambda", "POST", "/2015-03-31/functions", &healthz);
    // A request in flight is not idle: an invocation longer than every limit is answered.
    // Stays end to end on real time: the limits are the connection's own timers
    // (ignis_worker::conn, on tokio's clock), and the function really runs past them.
    let reply = server.create("slow", &sh_runtime("sleep 5"), json!({ "Timeout": 30 }));
    assert_eq!(reply.status, 201, "{}", reply.text());
    let reply = server.invoke("slow", "{}");
    assert_eq!((reply.status, reply.header("x-amz-function-error")), (200, None), "{}", reply.text());
}

#[test]
fn the_function_url_listener_closes_stalled_connections() {
    let urls = crate::harness::free_address();
    let mut args = SHORT.to_vec();
    args.extend(["--url-listen", &urls]);
    let server = Server::start_with(&args);
    assert_eq!(server.create("web", &sh_runtime("true"), json!({})).status, 201);
    let created = server.lambda("POST", "/2021-10-31/functions/web/url", br#"{"AuthType":"AWS_IAM"}"#);
    assert_eq!(created.status, 201, "{}", created.text());
    let host = created.json()["FunctionUrl"].as_str().unwrap().trim_start_matches("http://").trim_end_matches('/').to_string();
    // Half a head.
    let mut headers = TcpStream::connect(&urls).unwrap();
    headers.write_all(format!("POST / HTTP/1.1\r\nhost: {host}\r\n").as_bytes()).unwrap();
    let got = until_closed(&mut headers).unwrap_or_else(|e| panic!("half a head: {e}"));
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");
    // Half a body, signed for the URL's own host: one the listener reads.
    let mut stalled = TcpStream::connect(&urls).unwrap();
    stalled.write_all(signed_head(&host, "lambda", "POST", "/", &[b'{'; 1000]).as_bytes()).unwrap();
    stalled.write_all(b"{{{{").unwrap();
    let got = until_closed(&mut stalled).unwrap_or_else(|e| panic!("half a body: {e}"));
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    // Idle after an answer.
    let mut idle = TcpStream::connect(&urls).unwrap();
    idle.write_all(format!("GET / HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes()).unwrap();
    let got = until_closed(&mut idle).unwrap_or_else(|e| panic!("idle: {e}"));
    assert!(got.starts_with("HTTP/1.1 403"), "{got}");
}

#[test]
fn a_worker_host_reads_no_unsigned_body_and_closes_stalled_connections() {
    let server = Server::start_with(&["--no-local-worker"]);
    let worker = WorkerHost::start(&server, &SHORT);
    server.wait_for_workers(1);
    // Unsigned, or signed without the declared payload hash: refused before the body.
    let head = format!("POST /sandboxes HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n\r\n", worker.address, 16 << 20);
    assert_eq!(send_partial(&worker.address, &head, 4 << 20), Ok(403));
    let head = format!(
        "POST /sandboxes HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n{}\r\n",
        worker.address,
        16 << 20,
        forged(KEY_ID, false).replace("/lambda/", "/ignis/")
    );
    assert_eq!(send_partial(&worker.address, &head, 4 << 20), Ok(403));

    let delete = signed_head(&worker.address, "ignis", "DELETE", "/sandboxes/none", b"");
    stalled_connections_are_closed(&worker.address, "ignis", "POST", "/sandboxes", &delete);
    // The server's own calls go on: a function runs there, longer than every limit (real
    // time, as above).
    let reply = server.create("remote", &sh_runtime("sleep 4"), json!({ "Timeout": 30 }));
    assert_eq!(reply.status, 201, "{}", reply.text());
    for _ in 0..2 {
        let reply = server.invoke("remote", "{}");
        assert_eq!((reply.status, reply.header("x-amz-function-error")), (200, None), "{}", reply.text());
    }
}

#[test]
fn the_runtime_api_closes_stalled_connections_but_not_a_parked_next() {
    let server = Server::start_with(&SHORT);
    // Each check opens a connection to the Runtime API with bash's /dev/tcp, sends part of a
    // request (or a whole one, then nothing), and reports whether the worker closed it. The idle
    // check runs in the background from the first invocation to the second: an idle Runtime API
    // connection is closed only after the idle limit plus the function's timeout (a runtime's
    // connection rests while its function runs).
    let script = r#"#!/bin/bash
api="$AWS_LAMBDA_RUNTIME_API"
check() {
  exec 3<>"/dev/tcp/${api%:*}/${api#*:}"
  printf "$1" >&3
  timeout 40 cat <&3 > /tmp/seen.$2
  if [ $? -eq 124 ]; then echo open; else echo "closed $(head -c 12 /tmp/seen.$2 | tr -d '\r\n')"; fi
  exec 3<&-
}
while true; do
  curl -sS -D /tmp/headers -o /tmp/event "http://$api/2018-06-01/runtime/invocation/next" || exit 1
  id=$(tr -d '\r' < /tmp/headers | sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: //p')
  if grep -q first /tmp/event; then
    (check 'GET /2018-06-01/runtime/nothing HTTP/1.1\r\nHost: x\r\n\r\n' idle > /tmp/idle.part; mv /tmp/idle.part /tmp/idle) &
    headers=$(check 'GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n' headers)
    body=$(check "POST /2018-06-01/runtime/invocation/$id/response HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":" body)
    printf '{"headers":"%s","body":"%s"}' "$headers" "$body" > /tmp/response
  else
    for i in $(seq 50); do [ -e /tmp/idle ] && break; sleep 0.1; done
    printf '{"idle":"%s"}' "$(cat /tmp/idle 2>/dev/null)" > /tmp/response
  fi
  curl -sS -o /dev/null -X POST "http://$api/2018-06-01/runtime/invocation/$id/response" --data-binary @/tmp/response
done
"#;
    let zip = zip_of(&[("bootstrap", script.as_bytes(), 0o755)]);
    let reply = server.create("prober", &zip, json!({ "Timeout": 6 }));
    assert_eq!(reply.status, 201, "{}", reply.text());
    let reply = server.invoke("prober", "\"first\"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({ "headers": "closed ", "body": "closed HTTP/1.1 408" }),
        "{}",
        reply.log_tail()
    );
    // The runtime stays parked in /next until the worker has closed the background check's idle
    // connection (after the Runtime API's idle limit, 3 s + the function's 6 s: longer than every
    // other limit); the sandbox, frozen meanwhile, still holds its end of it (CLOSE_WAIT in its
    // network namespace). Then the same sandbox takes the next invocation.
    let id = sandbox_ids(&server.log_events("prober")).into_iter().next().expect("the prober's sandbox");
    let pid = *crate::lifecycle::sandbox_pids(&id).first().expect("the prober's processes");
    let closed_by_the_worker = || {
        let tcp = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
        // Columns: sl, local address, remote address, state; 9001 is 0x2329, CLOSE_WAIT is 08.
        tcp.lines().any(|l| l.split_whitespace().nth(2).is_some_and(|r| r.ends_with(":2329")) && l.split_whitespace().nth(3) == Some("08"))
    };
    assert!(eventually(Duration::from_secs(60), closed_by_the_worker), "the idle connection was never closed");
    let again = server.invoke("prober", "\"second\"");
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json(), json!({ "idle": "closed HTTP/1.1 404" }), "{}", again.log_tail());
    assert!(!again.log_tail().contains("Init Duration"), "a new sandbox: {}", again.log_tail());
}

/// The AWS SDK for Python declares no payload hash for Lambda and SQS: its requests are read
/// within the room for bodies not yet authenticated, a body larger than that room alone.
#[test]
fn sdk_requests_without_a_declared_payload_hash_still_work() {
    const SCRIPT: &str = r#"
import io, json, os, sys, zipfile
try:
    import boto3
except ImportError:
    sys.exit(3)
endpoint, key, secret, bootstrap = sys.argv[1:5]
session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name='us-east-1')
lam = session.client('lambda', endpoint_url=endpoint)
buf = io.BytesIO()
with zipfile.ZipFile(buf, 'w') as z:
    info = zipfile.ZipInfo('bootstrap')
    info.external_attr = 0o755 << 16
    z.writestr(info, bootstrap)
    z.writestr('padding', os.urandom(20 << 20))
lam.create_function(FunctionName='big', Runtime='provided.al2023', Role='arn:aws:iam::123456789012:role/r',
                    Handler='bootstrap', Code={'ZipFile': buf.getvalue()})
answer = lam.invoke(FunctionName='big', Payload=json.dumps({'k': 'v' * 100000}).encode())
print(len(answer['Payload'].read()))
sqs = session.client('sqs', endpoint_url=endpoint)
url = sqs.create_queue(QueueName='q')['QueueUrl']
sqs.send_message(QueueUrl=url, MessageBody='m' * 200000)
print(len(sqs.receive_message(QueueUrl=url)['Messages'][0]['Body']))
"#;
    let server = Server::start();
    let bootstrap = sh_runtime("cp /tmp/event /tmp/response");
    // The harness's runtime script, taken back out of its zip.
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bootstrap)).unwrap();
    let mut script = String::new();
    archive.by_name("bootstrap").unwrap().read_to_string(&mut script).unwrap();
    let endpoint = format!("http://{}", server.address);
    let output = match std::process::Command::new("python3")
        .args(["-c", SCRIPT, &endpoint, KEY_ID, crate::harness::SECRET, &script])
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            eprintln!("note: skipping the boto3 test: cannot run python3: {e}");
            return;
        }
    };
    if output.status.code() == Some(3) {
        eprintln!("note: skipping the boto3 test: boto3 is not installed");
        return;
    }
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["100009", "200000"], "{stdout}");
}

#[test]
fn time_limits_that_cannot_work_are_refused() {
    for (command, flag, value, message) in [
        ("server", "--header-timeout", "0", "the header timeout must be at least 1 second"),
        ("server", "--body-timeout", "0", "the body timeout must be at least 1 second"),
        ("server", "--idle-timeout", "1", "the idle timeout must be at least 2 seconds"),
        ("worker", "--idle-timeout", "0", "the idle timeout must be at least 2 seconds"),
    ] {
        let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_ignis"));
        run.args([command, flag, value, "--data-dir", "/nonexistent/ignis-limits-test"]);
        if command == "worker" {
            run.args(["--join", "http://127.0.0.1:9"]);
        }
        let output = run.env("IGNIS_ACCESS_KEY_ID", KEY_ID).env("IGNIS_SECRET_ACCESS_KEY", crate::harness::SECRET).output().unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{command} {flag} {value}: {stderr}");
        assert!(!std::path::Path::new("/nonexistent/ignis-limits-test").exists());
    }
}

#[test]
fn a_body_that_is_not_the_one_signed_is_refused() {
    let server = Server::start();
    let signed = br#"{"FunctionName": "a"}"#;
    let sent = br#"{"FunctionName": "b"}"#;
    let head = signed_head(&server.address, "lambda", "POST", "/2015-03-31/functions", signed)
        .replacen("\r\n", "\r\nconnection: close\r\n", 1);
    let mut stream = TcpStream::connect(&server.address).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(sent).unwrap();
    let got = until_closed(&mut stream).unwrap_or_else(|e| panic!("{e}"));
    assert!(got.starts_with("HTTP/1.1 403"), "{got}");
    assert!(got.to_ascii_lowercase().contains("x-amzn-errortype: invalidsignatureexception"), "{got}");
    assert!(got.contains("does not match what was computed"), "{got}");
}
