//! Function URLs against Invoke, in one run: warm requests of the `lambda_runtime` example through its `AWS_IAM`
//! URL (`--url-listen`, SigV4-signed for `lambda`, an event built and an answer mapped) and through Invoke on the
//! API, each on a kept connection, in alternating rounds on one server. Invoke runs twice: with a small event, and
//! with an event of the size and shape the URL's requests become, so that what the function spends reading the
//! larger event is told apart from what the URL front door adds. Target (from the HTTP front door issue): the URL's
//! warm p50 within 0.05 ms of Invoke's, judged against Invoke of the same event (the other row says what the larger
//! event costs the function). Then the time to the first byte of a streamed response: the example streams
//! two chunks 20 ms apart, read through InvokeWithResponseStream (its first byte and its end) and through Invoke
//! (which answers once the stream has ended) as the baseline. Must run as root; starts one server it stops.

use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine as _;
use ignis_sigv4::Credentials;
use serde_json::json;

#[path = "../harness.rs"]
#[allow(dead_code, reason = "shared with ignis-bench; this benchmark uses part of it")]
mod harness;
#[path = "../stats.rs"]
#[allow(dead_code, reason = "shared with the other benchmarks")]
mod stats;
use harness::{Conn, KEY_ID, SECRET, Server, build_dir, row, verdict};
use stats::{Stats, stats_ms};

const USAGE: &str = "usage: urls [--warm N] [--bin-dir DIR]
  --warm N        warm requests each way (default 2000, in 10 rounds)
  --bin-dir DIR   where ignis, ignis-init and the example's bootstrap are (default: this program's directory)";

const ROUNDS: usize = 10;
/// The pause between the streaming function's two chunks.
const PAUSE_MS: u64 = 20;
/// Streamed invocations each way.
const STREAM_SAMPLES: usize = 200;

fn main() -> ExitCode {
    let mut warm = 2000;
    let mut bin_dir = None;
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        match (flag.as_str(), given.next()) {
            ("--warm", Some(n)) if n.parse::<usize>().is_ok_and(|n| n >= ROUNDS) => warm = n.parse().unwrap_or(warm),
            ("--bin-dir", Some(dir)) => bin_dir = Some(PathBuf::from(dir)),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::FAILURE;
            }
        }
    }
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| runtime.block_on(run(warm, bin_dir)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("urls: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(warm: usize, bin_dir: Option<PathBuf>) -> Result<(), String> {
    let dir = build_dir(bin_dir.as_deref())?;
    let bootstrap = std::fs::read(dir.join("bootstrap")).map_err(|e| format!("the example's bootstrap: {e}"))?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let urls = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.to_string();
    let extra = ["--runtimes", "provided.al2023", "--url-listen", &urls];
    let mut server = Server::start(&dir.join("ignis"), &tmp.path().join("data"), &extra)?;
    let creds = || Credentials { access_key_id: KEY_ID.into(), secret_access_key: SECRET.into() };
    let mut api = Conn::connect(&server.address, creds()).await?;
    let zip = harness::zip_of("bootstrap", &bootstrap, 0o755)?;
    let body = json!({
        "FunctionName": "bench-url", "Runtime": "provided.al2023", "Handler": "bootstrap", "MemorySize": 512,
        "Role": "arn:aws:iam::123456789012:role/bench", "Code": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip) },
    });
    let reply = api.request("POST", "/2015-03-31/functions", &[], body.to_string().as_bytes()).await?;
    if reply.status != 201 {
        return Err(format!("CreateFunction answered {}: {}", reply.status, reply.text()));
    }
    let reply = api.request("POST", "/2021-10-31/functions/bench-url/url", &[], br#"{"AuthType":"AWS_IAM"}"#).await?;
    let config: serde_json::Value = serde_json::from_slice(&reply.body).map_err(|e| format!("{e}: {}", reply.text()))?;
    let url = config["FunctionUrl"].as_str().ok_or_else(|| format!("CreateFunctionUrlConfig answered {}", reply.text()))?;
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let mut through_url = Conn::connect_to_host(&urls, host, creds()).await?;

    // The event the URL's requests become, for Invoke to send the function the same bytes.
    let event = url_event(host);
    let mut times: [Vec<_>; 3] = std::array::from_fn(|_| Vec::with_capacity(warm));
    let path = "/2015-03-31/functions/bench-url/invocations";
    for round in 0..ROUNDS {
        for k in 0..3 {
            let way = (round + k) % 3;
            for _ in 0..warm / ROUNDS {
                let (elapsed, reply) = match way {
                    0 => api.timed("POST", path, &[], br#"{"name":"bench"}"#).await?,
                    1 => api.timed("POST", path, &[], event.as_bytes()).await?,
                    _ => through_url.timed("GET", "/?name=bench", &[], b"").await?,
                };
                ok(reply.status == 200 && reply.header("x-amz-function-error").is_none(), "a request", &reply)?;
                times[way].push(elapsed);
            }
        }
    }
    let [invoke_times, event_times, url_times] = times;

    // Streaming: two chunks PAUSE_MS apart, through InvokeWithResponseStream (the first byte, and the end) and
    // through Invoke (which answers once the stream has ended), alternating.
    let streaming = json!({ "stream": ["first", "second"], "pause_ms": PAUSE_MS }).to_string();
    let stream_path = "/2021-11-15/functions/bench-url/response-streaming-invocations";
    let (mut first_bytes, mut stream_ends, mut buffered) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for way in [round % 2, 1 - round % 2] {
            for _ in 0..STREAM_SAMPLES / ROUNDS {
                if way == 0 {
                    let (elapsed, reply) = api.timed("POST", stream_path, &[], streaming.as_bytes()).await?;
                    ok(reply.status == 200 && reply.body.windows(6).any(|w| w == b"second"), "InvokeWithResponseStream", &reply)?;
                    first_bytes.push(reply.first_byte);
                    stream_ends.push(elapsed);
                } else {
                    let (elapsed, reply) = api.timed("POST", path, &[], streaming.as_bytes()).await?;
                    ok(reply.status == 200 && reply.body.ends_with(b"second"), "Invoke of a stream", &reply)?;
                    buffered.push(elapsed);
                }
            }
        }
    }
    server.stop()?;
    let (invoke, same_event, through) = (stats_ms(&invoke_times), stats_ms(&event_times), stats_ms(&url_times));
    println!("Function URLs: warm requests of the lambda_runtime example (client-side ms, kept connections, {ROUNDS} alternating rounds)");
    println!("  {:<34} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}", "latency (ms)", "n", "min", "p50", "p90", "p99", "max");
    row("Invoke, {\"name\":\"bench\"}", invoke.as_ref(), "baseline");
    row(&format!("Invoke, the URL's event ({} B)", event.len()), same_event.as_ref(), "the bytes the URL's function gets");
    row("function URL (AWS_IAM, signed)", through.as_ref(), "");
    println!("Streamed responses: two chunks {PAUSE_MS} ms apart (client-side ms, {STREAM_SAMPLES} each, alternating rounds)");
    println!("  {:<34} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}", "latency (ms)", "n", "min", "p50", "p90", "p99", "max");
    let (first, end, whole) = (stats_ms(&first_bytes), stats_ms(&stream_ends), stats_ms(&buffered));
    row("Invoke, answered when it ends", whole.as_ref(), "baseline");
    row("InvokeWithResponseStream, 1st byte", first.as_ref(), "");
    row("InvokeWithResponseStream, end", end.as_ref(), "");
    let p50 = |s: &Option<Stats>| s.as_ref().map_or(f64::INFINITY, |s| s.p50);
    let over = p50(&through) - p50(&invoke);
    let front = p50(&through) - p50(&same_event);
    println!("Target (within 0.05 ms of Invoke's warm p50):");
    println!(
        "  URL {:.3} ms against Invoke of the same event {:.3} ms: the URL front door adds {front:+.3} ms: {}",
        p50(&through),
        p50(&same_event),
        verdict(front <= 0.05)
    );
    println!(
        "  against Invoke of a 16-byte event {:.3} ms: {over:+.3} ms, of which {:+.3} ms is the function reading the \
         {}-byte event of payload format 2.0",
        p50(&invoke),
        p50(&same_event) - p50(&invoke),
        event.len()
    );
    println!("  streamed first byte p50 {:.3} ms, {:.1}x sooner than the buffered answer's {:.3} ms", p50(&first), p50(&whole) / p50(&first), p50(&whole));
    Ok(())
}

/// A payload format 2.0 event the size and shape of what the benchmark's URL requests become.
fn url_event(host: &str) -> String {
    let id = host.split('.').next().unwrap_or("");
    json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "name=bench",
        "headers": {
            "host": host, "content-type": "application/json", "x-amz-date": "20261207T000000Z",
            "x-amz-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "authorization": format!("AWS4-HMAC-SHA256 Credential={KEY_ID}/20261207/us-east-1/lambda/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, Signature={}", "0".repeat(64)),
        },
        "queryStringParameters": { "name": "bench" },
        "requestContext": {
            "accountId": "123456789012", "apiId": id, "domainName": host, "domainPrefix": id,
            "http": { "method": "GET", "path": "/", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "" },
            "requestId": "00000000-0000-0000-0000-000000000000", "routeKey": "$default", "stage": "$default",
            "time": "07/Dec/2026:00:00:00 +0000", "timeEpoch": 1_796_515_200_000u64,
            "authorizer": { "iam": { "accessKey": KEY_ID, "accountId": "123456789012", "callerId": KEY_ID,
                "cognitoIdentity": null, "principalOrgId": null, "userArn": "arn:aws:iam::123456789012:root", "userId": KEY_ID } },
        },
        "isBase64Encoded": false,
    })
    .to_string()
}

fn ok(good: bool, what: &str, reply: &harness::Reply) -> Result<(), String> {
    if good { Ok(()) } else { Err(format!("{what} answered {}: {}", reply.status, reply.text())) }
}
