//! Managed runtimes against the `provided` function and the bare interpreters, in one run: cold and warm invokes of a
//! trivial Python handler (`python3.11`), a trivial Node.js handler (`nodejs20.x`) and the `lambda_runtime` example
//! (`provided.al2023`) on one `ignis server`, with the bare interpreters' own start on this host (`python3.11 -c
//! pass`, `node -e 0`, each a fresh process) as the floor a cold start cannot go under.
//!
//! - **Cold.** Each sample retires every function's sandboxes (UpdateFunctionConfiguration) and invokes each once, the
//!   order rotated every sample: the client's time to the end of the answer, and the `Init Duration` of its REPORT.
//!   The first sample of each runtime is its base's first read on this server (its chunks fetched from the chunk
//!   store); the later ones read the base's pages from the page cache, as a busy worker does.
//! - **Warm.** Sequential invokes of each function on kept connections, in alternating rounds.
//!
//! Targets (from the managed-runtimes issue): Python cold start p50 under 100 ms end to end, Node.js under 150 ms; warm
//! invokes within 0.3 ms of the `provided` function's (p50). Must run as root; starts one server it stops.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ignis_sigv4::Credentials;
use serde_json::json;

#[path = "../harness.rs"]
#[allow(dead_code, reason = "shared with ignis-bench; this benchmark uses part of it")]
mod harness;
#[path = "../stats.rs"]
#[allow(dead_code, reason = "shared with the other benchmarks")]
mod stats;
use harness::{Conn, KEY_ID, SECRET, Server, build_dir, check_invoke, report_field, row, verdict};
use stats::{Stats, stats, stats_ms};

const USAGE: &str = "usage: runtimes [--cold N] [--warm N] [--bin-dir DIR]
  --cold N        cold-start samples per runtime (default 20)
  --warm N        warm invokes per runtime (default 400, in 4 rounds)
  --bin-dir DIR   where ignis, ignis-init and the example's bootstrap are (default: this program's directory)";

const ROUNDS: usize = 4;
const PYTHON: &[u8] = b"def handler(event, context):\n    return {\"ok\": True}\n";
const NODE: &[u8] = b"export const handler = async (event) => ({ ok: true });\n";

struct Args {
    cold: usize,
    warm: usize,
    bin_dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { cold: 20, warm: 400, bin_dir: None };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        let number = |text: String| text.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| format!("{flag}: want a number\n{USAGE}"));
        match flag.as_str() {
            "--cold" => args.cold = number(value()?)?,
            "--warm" => args.warm = number(value()?)?,
            "--bin-dir" => args.bin_dir = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// A function of the run.
struct Function {
    name: &'static str,
    label: &'static str,
    runtime: &'static str,
    handler: &'static str,
    file: &'static str,
    cold: Vec<Duration>,
    init: Vec<f64>,
    warm: Vec<Duration>,
}

fn main() -> ExitCode {
    match parse_args().and_then(|args| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(run(&args))
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runtimes: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    let dir = build_dir(args.bin_dir.as_deref())?;
    let bootstrap = std::fs::read(dir.join("bootstrap")).map_err(|e| format!("the example's bootstrap: {e}"))?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let extra = ["--runtimes", "provided.al2023,python3.11,nodejs20.x", "--keep-alive", "600"];
    let mut server = Server::start(&dir.join("ignis"), &tmp.path().join("data"), &extra)?;
    eprintln!("runtimes: ignis server (pid {}) on {}, runtimes installed in {:.1} s", server.pid(), server.address, started.elapsed().as_secs_f64());
    let creds = Credentials { access_key_id: KEY_ID.into(), secret_access_key: SECRET.into() };
    let mut conn = Conn::connect(&server.address, creds).await?;
    let function = |name, label, runtime, handler, file| Function {
        name,
        label,
        runtime,
        handler,
        file,
        cold: Vec::new(),
        init: Vec::new(),
        warm: Vec::new(),
    };
    let mut functions = [
        function("bench-provided", "provided.al2023 (Rust)", "provided.al2023", "bootstrap", "bootstrap"),
        function("bench-python", "python3.11", "python3.11", "app.handler", "app.py"),
        function("bench-node", "nodejs20.x", "nodejs20.x", "index.handler", "index.mjs"),
    ];
    for f in &functions {
        let (content, mode) = match f.runtime {
            "python3.11" => (PYTHON.to_vec(), 0o644),
            "nodejs20.x" => (NODE.to_vec(), 0o644),
            _ => (bootstrap.clone(), 0o755),
        };
        let zip = harness::zip_of(f.file, &content, mode)?;
        let body = json!({
            "FunctionName": f.name, "Runtime": f.runtime, "Handler": f.handler, "Role": "arn:aws:iam::123456789012:role/bench",
            "MemorySize": 512, "Code": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip) },
        });
        let reply = conn.request("POST", "/2015-03-31/functions", &[], body.to_string().as_bytes()).await?;
        if reply.status != 201 {
            return Err(format!("CreateFunction {} answered {}: {}", f.name, reply.status, reply.text()));
        }
    }

    eprintln!("runtimes: {} cold starts each", args.cold);
    for i in 0..args.cold {
        for k in 0..functions.len() {
            let f = &mut functions[(i + k) % 3];
            let retire = json!({ "Description": format!("cold {i}") }).to_string();
            let reply = conn.request("PUT", &format!("/2015-03-31/functions/{}/configuration", f.name), &[], retire.as_bytes()).await?;
            if reply.status != 200 {
                return Err(format!("UpdateFunctionConfiguration answered {}: {}", reply.status, reply.text()));
            }
            let path = format!("/2015-03-31/functions/{}/invocations", f.name);
            let (elapsed, reply) = conn.timed("POST", &path, &[("x-amz-log-type", "Tail")], b"{}").await?;
            check_invoke(&reply).map_err(|e| format!("{}: {e}", f.name))?;
            let tail = reply
                .header("x-amz-log-result")
                .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let init = report_field(&tail, "Init Duration").ok_or_else(|| format!("{}: not a cold start: {tail}", f.name))?;
            f.cold.push(elapsed);
            f.init.push(init);
        }
    }
    eprintln!("runtimes: {} warm invokes each, in {ROUNDS} rounds", args.warm);
    for round in 0..ROUNDS {
        for k in 0..functions.len() {
            let f = &mut functions[(round + k) % 3];
            let path = format!("/2015-03-31/functions/{}/invocations", f.name);
            for _ in 0..args.warm / ROUNDS {
                let (elapsed, reply) = conn.timed("POST", &path, &[], b"{}").await?;
                check_invoke(&reply).map_err(|e| format!("{}: {e}", f.name))?;
                f.warm.push(elapsed);
            }
        }
    }
    let floors = [("python3.11 -c pass", "/usr/bin/python3.11", &["-c", "pass"][..]), ("node -e 0", "node", &["-e", "0"][..])]
        .map(|(label, program, args_)| (label, process_starts(program, args_, args.cold)));
    server.stop()?;

    let cold: Vec<Option<Stats>> = functions.iter().map(|f| stats_ms(&f.cold)).collect();
    let init: Vec<Option<Stats>> = functions.iter_mut().map(|f| stats(&mut f.init)).collect();
    let warm: Vec<Option<Stats>> = functions.iter().map(|f| stats_ms(&f.warm)).collect();
    println!("Managed runtimes: cold and warm invokes (client-side ms, 512 MB functions, one server), the bare interpreters' start as the floor");
    println!("  {:<34} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}", "latency (ms)", "n", "min", "p50", "p90", "p99", "max");
    for (i, f) in functions.iter().enumerate() {
        row(&format!("cold, {}", f.label), cold[i].as_ref(), "");
        row("  Init Duration", init[i].as_ref(), "from the REPORT line");
    }
    for (label, floor) in &floors {
        match floor {
            Ok(times) => row(&format!("floor: {label}"), stats_ms(times).as_ref(), "a fresh process on this host"),
            Err(e) => println!("  floor: {label}: {e}"),
        }
    }
    for (i, f) in functions.iter().enumerate() {
        row(&format!("warm, {}", f.label), warm[i].as_ref(), "");
    }
    println!("Targets:");
    let p50 = |s: &Option<Stats>| s.as_ref().map_or(f64::INFINITY, |s| s.p50);
    println!("  python3.11 cold p50 {:.1} ms < 100 ms: {}", p50(&cold[1]), verdict(p50(&cold[1]) < 100.0));
    println!("  nodejs20.x cold p50 {:.1} ms < 150 ms: {}", p50(&cold[2]), verdict(p50(&cold[2]) < 150.0));
    for i in [1, 2] {
        let over = p50(&warm[i]) - p50(&warm[0]);
        println!("  {} warm p50 {:.3} ms, {over:+.3} ms against provided's {:.3}: within 0.3 ms: {}", functions[i].label, p50(&warm[i]), p50(&warm[0]), verdict(over <= 0.3));
    }
    Ok(())
}

/// `n` starts of `program args`, each a fresh process run to its end.
fn process_starts(program: &str, args: &[&str], n: usize) -> Result<Vec<Duration>, String> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let status = Command::new(program).args(args).status().map_err(|e| format!("{program}: {e}"))?;
        if !status.success() {
            return Err(format!("{program} {args:?}: {status}"));
        }
        times.push(started.elapsed());
    }
    Ok(times)
}
