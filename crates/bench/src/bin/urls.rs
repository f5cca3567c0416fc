//! Function URLs against Invoke, in one run: warm requests of the `lambda_runtime` example through its `AWS_IAM`
//! URL (`--url-listen`, SigV4-signed for `lambda`, an event built and an answer mapped) and through Invoke on the
//! API, each on a kept connection, in alternating rounds on one server. Target (from the HTTP front door issue): the
//! URL's warm p50 within 0.05 ms of Invoke's. Must run as root; starts one server it stops.

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

    let (mut invoke_times, mut url_times) = (Vec::with_capacity(warm), Vec::with_capacity(warm));
    let path = "/2015-03-31/functions/bench-url/invocations";
    for round in 0..ROUNDS {
        for way in [round % 2, 1 - round % 2] {
            for _ in 0..warm / ROUNDS {
                if way == 0 {
                    let (elapsed, reply) = api.timed("POST", path, &[], br#"{"name":"bench"}"#).await?;
                    ok(reply.status == 200 && reply.header("x-amz-function-error").is_none(), "Invoke", &reply)?;
                    invoke_times.push(elapsed);
                } else {
                    let (elapsed, reply) = through_url.timed("GET", "/?name=bench", &[], b"").await?;
                    ok(reply.status == 200, "the URL", &reply)?;
                    url_times.push(elapsed);
                }
            }
        }
    }
    server.stop()?;
    let (invoke, through) = (stats_ms(&invoke_times), stats_ms(&url_times));
    println!("Function URLs: warm requests of the lambda_runtime example (client-side ms, kept connections, {ROUNDS} alternating rounds)");
    println!("  {:<34} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}", "latency (ms)", "n", "min", "p50", "p90", "p99", "max");
    row("Invoke (API, signed)", invoke.as_ref(), "baseline");
    row("function URL (AWS_IAM, signed)", through.as_ref(), "");
    let p50 = |s: &Option<Stats>| s.as_ref().map_or(f64::INFINITY, |s| s.p50);
    let over = p50(&through) - p50(&invoke);
    println!("Target:");
    println!("  URL warm p50 {:.3} ms, {over:+.3} ms against Invoke's {:.3}: within 0.05 ms: {}", p50(&through), p50(&invoke), verdict(over <= 0.05));
    Ok(())
}

fn ok(good: bool, what: &str, reply: &harness::Reply) -> Result<(), String> {
    if good { Ok(()) } else { Err(format!("{what} answered {}: {}", reply.status, reply.text())) }
}
