//! `ignis-bench`: measures a real `ignis server` on loopback and prints one table.
//!
//! - **Cold start**: the `lambda_runtime` example (`bootstrap`) is deployed as a zip; before each
//!   measured invoke an `UpdateFunctionConfiguration` (a new Description) retires the function's
//!   sandboxes, so the invoke has to start a new one. Only the Invoke round trip is timed. The
//!   server's own `Init Duration` comes from the `REPORT` line of the log tail. Measured twice:
//!   on a server with its default pool of ready shells (namespaces, cgroup, network made ahead of
//!   time; no function), and on one started with `--sandbox-pool 0`, which builds every sandbox
//!   whole on the invoke's path.
//! - **Warm**: sequential invokes on one keep-alive connection (concurrency 1), then a bounded
//!   throughput run with 16 clients, each on its own keep-alive connection.
//! - **Baseline**: the same client, the same signed POSTs, against a bare hyper echo server
//!   running in this process on its own thread and runtime.
//! - **Freezing**: a fourth server started with `--no-freeze`, whose idle sandboxes are not frozen between
//!   invocations; its warm invokes (concurrency 1, in the same alternating rounds, and the throughput run)
//!   against the default server's, which thaws a sandbox before each event: what freezing costs.
//! - **Two workers**: a third server started with `--no-local-worker` and two `ignis worker`
//!   processes joined to it; its warm invokes (concurrency 1, in the same alternating rounds,
//!   and the throughput run) against the single-process server's: the cost of the extra hop.
//!
//! - **Previous build** (`--previous-bin-dir DIR`): for a before/after comparison in one run,
//!   two more servers from DIR's `ignis` (with DIR's `ignis-init`), started with the same flags
//!   as the default server and the one without pooled shells, each on its own data directory.
//!   The function stays this build's `bootstrap` (it is what runs, not what is measured). Each
//!   cold-start sample is taken on the current and the previous server in turn (the order swapped
//!   every sample), pooled and unpooled; in every warm c=1 round the baseline, then the current
//!   and the previous build run back to back (the order swapped every round); the previous build
//!   has its own c=16 run beside the current one's (each split in halves, run current,
//!   previous, previous, current). The table gains its rows and
//!   `current / previous` ratios at p50, p90 and p99 (above 1: the current build is slower), the
//!   warm ratio of each round (how much noise moves it), and a summary of the ratios. Without the
//!   option nothing of this runs and the table is as before.
//!
//! Every request is signed with SigV4 just before it is sent (as an SDK does); the latency clock
//! starts after signing and stops when the whole answer body is in. Throughput includes signing.
//! The machine this runs on is shared and noisy: read medians, percentiles and ratios, and
//! compare the baseline (measured in alternating rounds with Ignis) rather than absolute times.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use ignis_sigv4::Credentials;
use serde_json::json;

mod async_events;
mod harness;
mod stats;
use harness::{Conn, KEY_ID, build_dir, Reply, SECRET, Server, check_invoke, ms, ratio_row, report_field, row, sign_request, verdict, zip_of};
use stats::{Stats, stats, stats_ms};

const FUNCTION: &str = "bench-hello-rust";
const PAYLOAD: &[u8] = br#"{"name":"bench"}"#;
const CONCURRENCY: usize = 16;
/// Rounds the warm concurrency-1 samples are split into, alternating baseline and Ignis, so
/// that drift in the machine's load hits both alike.
const ROUNDS: usize = 4;

const COLD_TARGET_MS: f64 = 15.0;
const ADDED_TARGET_MS: f64 = 0.3;
/// Warm latency the worker hop may add to the single-process server's (p50).
const HOP_TARGET_MS: f64 = 0.5;

struct Args {
    cold_samples: usize,
    warm_samples: usize,
    duration: Duration,
    bin_dir: Option<PathBuf>,
    /// Pause after retiring the sandboxes, so the old sandbox's teardown does not overlap the
    /// measured cold start.
    settle: Duration,
    /// Measure asynchronous invocation only (see `async_events`).
    only_async: bool,
    /// Another build's `ignis` and `ignis-init`, measured beside this one's.
    previous_bin_dir: Option<PathBuf>,
}

const USAGE: &str = "usage: ignis-bench [--cold-samples N] [--warm-samples N] [--duration SECS] [--bin-dir DIR] [--settle-ms MS]
                   [--previous-bin-dir DIR] [--async]

  --cold-samples N   cold-start invokes to measure (default 50)
  --warm-samples N   warm invokes at concurrency 1, for Ignis and for the baseline (default 2000)
  --duration SECS    time limit of each concurrency-16 throughput run (default 5; also capped at 20000 requests)
  --bin-dir DIR      where `ignis`, `ignis-init` and `bootstrap` are (default: beside this program)
  --settle-ms MS     pause between retiring the sandboxes and each cold-start invoke (default 100)
  --previous-bin-dir DIR
                     also measure the build whose `ignis` and `ignis-init` are in DIR (a server started
                     like the default one, with its own data directory; the function is still this
                     build's `bootstrap`): cold starts alternating with this build's, warm c=1 in the
                     same alternating rounds, the same c=16 run; adds rows for it and current / previous
                     ratios (also with --async)
  --async            measure asynchronous invocation instead: durable accept rate (202s per second)
                     against DryRun and per-event commits, and latency from 202 to the function's START

Must run as root (the server builds sandboxes with namespaces and cgroups).";

fn parse_args() -> Result<Args, String> {
    let mut args = Args { cold_samples: 50, warm_samples: 2000, duration: Duration::from_secs(5), bin_dir: None, settle: Duration::from_millis(100), only_async: false, previous_bin_dir: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (flag, None),
        };
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let mut value = || inline.clone().or_else(|| it.next()).ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"));
        let number = |text: String| text.parse::<f64>().map_err(|_| format!("{flag}: {text:?} is not a number"));
        match flag.as_str() {
            "--cold-samples" => args.cold_samples = number(value()?)?.max(1.0) as usize,
            "--warm-samples" => args.warm_samples = number(value()?)?.max(ROUNDS as f64) as usize,
            "--duration" => args.duration = Duration::from_secs_f64(number(value()?)?.clamp(0.1, 600.0)),
            "--bin-dir" => args.bin_dir = Some(PathBuf::from(value()?)),
            "--previous-bin-dir" => args.previous_bin_dir = Some(PathBuf::from(value()?)),
            "--async" => {
                args.only_async = true;
                continue;
            }
            "--settle-ms" => args.settle = Duration::from_secs_f64(number(value()?)?.clamp(0.0, 10_000.0) / 1000.0),
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("ignis-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ignis-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let bin_dir = build_dir(args.bin_dir.as_deref())?;
    let (ignis, bootstrap) = (bin_dir.join("ignis"), bin_dir.join("bootstrap"));
    // The previous build's server; its functions run this build's `bootstrap` too.
    let previous = match &args.previous_bin_dir {
        Some(dir) => {
            for exe in [dir.join("ignis"), dir.join("ignis-init")] {
                if !exe.is_file() {
                    return Err(format!("{} not found: --previous-bin-dir names a directory with a build's ignis and ignis-init", exe.display()));
                }
            }
            Some(dir.join("ignis"))
        }
        None => None,
    };
    let binary = std::fs::read(&bootstrap).map_err(|e| format!("cannot read {}: {e}", bootstrap.display()))?;
    let zip = zip_of("bootstrap", &binary, 0o755)?;
    if args.only_async {
        return async_events::run(&args, &ignis, previous.as_deref(), &zip);
    }

    // The echo baseline: its own thread and runtime, stopped when `_echo` is dropped.
    let (echo_address, _echo) = EchoServer::start()?;

    let tmp = tempfile::Builder::new().prefix("ignis-bench-").tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    // Dropped (SIGTERM, wait) before `tmp` is removed, on every path out of here.
    let mut server = Server::start(&ignis, &tmp.path().join("data"), &[])?;
    eprintln!("ignis-bench: ignis server (pid {}) on {}, echo baseline on {echo_address}", server.pid(), server.address);
    // A second server without pooled shells, for cold starts that build the whole sandbox. (Each server with
    // networking has a sandbox range of its own: one per range and machine.)
    let unpooled_args = ["--sandbox-pool", "0", "--sandbox-network", "10.214.0.0/16"];
    let mut unpooled = Server::start(&ignis, &tmp.path().join("data-unpooled"), &unpooled_args)?;
    // One that does not freeze idle sandboxes, for what freezing costs warm invokes.
    let unfrozen_args = ["--no-freeze", "--sandbox-network", "10.215.0.0/16"];
    let mut unfrozen = Server::start(&ignis, &tmp.path().join("data-unfrozen"), &unfrozen_args)?;
    // One whose sandboxes have no network (only `lo`), for what networking costs cold starts and warm invokes.
    let mut offline = Server::start(&ignis, &tmp.path().join("data-offline"), &["--egress", "none"])?;
    // A third with no worker of its own, and two worker hosts joined to it.
    let mut cluster = Server::start(&ignis, &tmp.path().join("data-cluster"), &["--no-local-worker"])?;
    let mut workers = Vec::new();
    for n in 0..2 {
        workers.push(Server::worker(&ignis, &[&cluster.address], &tmp.path().join(format!("data-worker-{n}")), 216 + n)?);
    }
    // The previous build, started like the default server and the one without pooled shells.
    let mut previous_servers = match &previous {
        Some(exe) => {
            let pooled_args = harness::own_range(exe, 210);
            let mut unpooled_args = harness::own_range(exe, 211);
            unpooled_args.extend(["--sandbox-pool".to_string(), "0".to_string()]);
            let pooled_args: Vec<&str> = pooled_args.iter().map(String::as_str).collect();
            let unpooled_args: Vec<&str> = unpooled_args.iter().map(String::as_str).collect();
            let pooled = Server::start(exe, &tmp.path().join("data-previous"), &pooled_args)?;
            let unpooled = Server::start(exe, &tmp.path().join("data-previous-unpooled"), &unpooled_args)?;
            eprintln!("ignis-bench: previous build's ignis server (pid {}) on {}", pooled.pid(), pooled.address);
            Some((pooled, unpooled))
        }
        None => None,
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let addresses = Addresses {
        ignis: &server.address,
        unpooled: &unpooled.address,
        unfrozen: &unfrozen.address,
        offline: &offline.address,
        cluster: &cluster.address,
        echo: &echo_address,
        previous: previous_servers.as_ref().map(|(pooled, unpooled)| (pooled.address.as_str(), unpooled.address.as_str())),
    };
    let result = runtime.block_on(measure(&args, &addresses, &zip));
    drop(runtime);
    let mut stopped = server.stop().and(unpooled.stop()).and(unfrozen.stop()).and(offline.stop()).and(cluster.stop());
    for worker in &mut workers {
        stopped = stopped.and(worker.stop());
    }
    if let Some((pooled, unpooled)) = &mut previous_servers {
        stopped = stopped.and(pooled.stop()).and(unpooled.stop());
    }
    let previous_address = previous_servers.as_ref().map(|(pooled, _)| pooled.address.as_str());
    result?.print(&args, &server.address, previous_address, &echo_address, binary.len(), zip.len());
    stopped
}

// ---------------------------------------------------------------------------------------------
// Measurements

struct Addresses<'a> {
    ignis: &'a str,
    unpooled: &'a str,
    /// The server started with `--no-freeze`.
    unfrozen: &'a str,
    /// The server started with `--egress none`.
    offline: &'a str,
    /// The server with two worker hosts and none of its own.
    cluster: &'a str,
    echo: &'a str,
    /// The previous build's servers (`--previous-bin-dir`): default, and `--sandbox-pool 0`.
    previous: Option<(&'a str, &'a str)>,
}

struct Report {
    sign: Vec<Duration>,
    /// Warm c=1 through the server with two worker hosts.
    cluster: Vec<Duration>,
    cluster_errors: Vec<String>,
    cluster_tput: Throughput,
    /// Warm c=1 and c=16 on the server that does not freeze idle sandboxes.
    unfrozen: Vec<Duration>,
    unfrozen_errors: Vec<String>,
    unfrozen_tput: Throughput,
    /// Cold starts and warm c=1 on the server whose sandboxes have no network (alternating with the default's).
    offline_cold: Cold,
    offline_warm: Vec<Duration>,
    offline_errors: Vec<String>,
    /// Cold starts with the server's default shell pool.
    cold: Cold,
    /// Cold starts with `--sandbox-pool 0`: every sandbox built from scratch.
    cold_unpooled: Cold,
    create_time: Duration,
    warm: Vec<Duration>,
    base: Vec<Duration>,
    warm_errors: Vec<String>,
    base_errors: Vec<String>,
    tput: Throughput,
    base_tput: Throughput,
    /// The previous build's figures, when `--previous-bin-dir` is given.
    previous: Option<Previous>,
}

/// The previous build's server, measured like the default server and alongside it.
struct Previous {
    cold: Cold,
    cold_unpooled: Cold,
    warm: Vec<Duration>,
    warm_errors: Vec<String>,
    /// Each warm c=1 round's p50, current / previous: how much the ratio moves between rounds.
    round_ratios: Vec<f64>,
    tput: Throughput,
}

#[derive(Default)]
struct Cold {
    /// Invoke round trips.
    times: Vec<Duration>,
    /// `Init Duration` and `Duration` of the REPORT lines, in ms.
    init: Vec<f64>,
    duration: Vec<f64>,
    /// Invokes whose REPORT had no Init Duration.
    not_cold: usize,
    errors: Vec<String>,
}

#[derive(Default)]
struct Throughput {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// Request id and wall-clock time (ms since the epoch) of each accepted answer.
    accepted: Vec<(String, f64)>,
}

/// Now, in milliseconds since the Unix epoch (the server's log timestamps use the same clock).
fn wall_ms() -> f64 {
    SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

impl Throughput {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Adds another run's figures to these (its time too).
    fn add(&mut self, other: Throughput) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.accepted.extend(other.accepted);
    }
}

/// Deploys the example function; returns how long CreateFunction took.
async fn deploy(conn: &mut Conn, zip: &[u8]) -> Result<Duration, String> {
    let body = json!({
        "FunctionName": FUNCTION,
        "Runtime": "provided.al2023",
        "Role": "arn:aws:iam::123456789012:role/bench",
        "Handler": "bootstrap",
        "Description": "ignis-bench",
        "Code": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip) },
    });
    let started = Instant::now();
    let reply = conn.request("POST", "/2015-03-31/functions", &[], body.to_string().as_bytes()).await?;
    let create_time = started.elapsed();
    if reply.status != 201 {
        return Err(format!("CreateFunction answered {}: {}", reply.status, reply.text()));
    }
    Ok(create_time)
}

/// Cold starts: before each measured invoke, UpdateFunctionConfiguration retires the sandboxes.
/// With several servers, each sample is taken on each of them in turn (the order reversed every
/// other sample), so that the machine's drift hits them alike; `invokers` are their connections.
async fn cold_starts(args: &Args, creds: &Credentials, invokers: &mut [&mut Conn]) -> Result<Vec<Cold>, String> {
    let mut controls = Vec::with_capacity(invokers.len());
    for invoker in invokers.iter() {
        controls.push(Conn::connect(&invoker.address, creds.clone()).await?);
    }
    let mut colds: Vec<Cold> = invokers.iter().map(|_| Cold::default()).collect();
    let limit = 300 * invokers.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(limit);
    for i in 0..args.cold_samples {
        if Instant::now() > deadline {
            for cold in &mut colds {
                cold.errors.push(format!("stopped after {i} samples: the cold-start phase is limited to {limit} s"));
            }
            break;
        }
        let mut order: Vec<usize> = (0..invokers.len()).collect();
        if i % 2 == 1 {
            order.reverse();
        }
        for n in order {
            cold_start(args, i, &mut controls[n], invokers[n], &mut colds[n]).await?;
        }
    }
    Ok(colds)
}

/// One cold-start sample, added to `cold`.
async fn cold_start(args: &Args, i: usize, control: &mut Conn, invoker: &mut Conn, cold: &mut Cold) -> Result<(), String> {
    let invoke_path = format!("/2015-03-31/functions/{FUNCTION}/invocations");
    let config_path = format!("/2015-03-31/functions/{FUNCTION}/configuration");
    let description = json!({ "Description": format!("ignis-bench cold start {i}") }).to_string();
    let reply = control.request("PUT", &config_path, &[], description.as_bytes()).await?;
    if reply.status != 200 {
        return Err(format!("UpdateFunctionConfiguration answered {}: {}", reply.status, reply.text()));
    }
    tokio::time::sleep(args.settle).await;
    let (elapsed, reply) = match invoker.timed("POST", &invoke_path, &[("x-amz-log-type", "Tail")], PAYLOAD).await {
        Ok(r) => r,
        Err(e) => {
            cold.errors.push(e);
            invoker.reconnect().await?;
            return Ok(());
        }
    };
    if let Err(e) = check_invoke(&reply) {
        cold.errors.push(e);
        return Ok(());
    }
    cold.times.push(elapsed);
    let tail = reply
        .header("x-amz-log-result")
        .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    match report_field(&tail, "Init Duration") {
        Some(ms) => cold.init.push(ms),
        None => cold.not_cold += 1,
    }
    if let Some(ms) = report_field(&tail, "Duration") {
        cold.duration.push(ms);
    }
    Ok(())
}

async fn measure(args: &Args, addresses: &Addresses<'_>, zip: &[u8]) -> Result<Report, String> {
    let Addresses { ignis, unpooled, unfrozen, offline, cluster, echo, previous } = *addresses;
    let creds = Credentials { access_key_id: KEY_ID.into(), secret_access_key: SECRET.into() };
    let invoke_path = format!("/2015-03-31/functions/{FUNCTION}/invocations");

    // Cost of one signature (for the reader: it is inside the throughput figures).
    let mut sign = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let started = Instant::now();
        std::hint::black_box(sign_request(&creds, ignis, "POST", &invoke_path, &[], PAYLOAD));
        sign.push(started.elapsed());
    }

    // 1. Cold starts, with and without pooled shells; each alternating with the previous
    //    build's when there is one.
    let create_time = deploy(&mut Conn::connect(ignis, creds.clone()).await?, zip).await?;
    deploy(&mut Conn::connect(unpooled, creds.clone()).await?, zip).await?;
    deploy(&mut Conn::connect(cluster, creds.clone()).await?, zip).await?;
    deploy(&mut Conn::connect(unfrozen, creds.clone()).await?, zip).await?;
    deploy(&mut Conn::connect(offline, creds.clone()).await?, zip).await?;
    if let Some((pooled, unpooled)) = previous {
        deploy(&mut Conn::connect(pooled, creds.clone()).await?, zip).await?;
        deploy(&mut Conn::connect(unpooled, creds.clone()).await?, zip).await?;
    }
    match previous {
        None => eprintln!("ignis-bench: cold starts ({} samples, then as many without the shell pool)", args.cold_samples),
        Some(_) => eprintln!(
            "ignis-bench: cold starts ({} samples each of this build and the previous one, alternating; then as many without the shell pool)",
            args.cold_samples
        ),
    }
    let mut invoker = Conn::connect(ignis, creds.clone()).await?;
    let mut unpooled_invoker = Conn::connect(unpooled, creds.clone()).await?;
    let mut offline_invoker = Conn::connect(offline, creds.clone()).await?;
    let mut previous_invoker = None;
    let (cold, cold_unpooled, previous_cold, offline_cold) = match previous {
        None => {
            let mut colds = cold_starts(args, &creds, &mut [&mut invoker, &mut offline_invoker]).await?;
            let (offline_cold, cold) = (colds.remove(1), colds.remove(0));
            let cold_unpooled = cold_starts(args, &creds, &mut [&mut unpooled_invoker]).await?.remove(0);
            (cold, cold_unpooled, None, offline_cold)
        }
        Some((pooled, unpooled)) => {
            let mut previous_pooled = Conn::connect(pooled, creds.clone()).await?;
            let mut colds = cold_starts(args, &creds, &mut [&mut invoker, &mut previous_pooled, &mut offline_invoker]).await?;
            let offline_cold = colds.remove(2);
            let mut previous_unpooled = Conn::connect(unpooled, creds.clone()).await?;
            let mut unpooled_colds = cold_starts(args, &creds, &mut [&mut unpooled_invoker, &mut previous_unpooled]).await?;
            previous_invoker = Some(previous_pooled);
            let (previous_cold, previous_cold_unpooled) = (colds.remove(1), unpooled_colds.remove(1));
            (colds.remove(0), unpooled_colds.remove(0), Some((previous_cold, previous_cold_unpooled)), offline_cold)
        }
    };

    // 2 and 3. Warm at concurrency 1, alternating rounds with the baseline.
    eprintln!("ignis-bench: warm invokes at concurrency 1 ({} samples each, in {ROUNDS} alternating rounds)", args.warm_samples);
    let mut base_conn = Conn::connect(echo, creds.clone()).await?;
    let mut cluster_conn = Conn::connect(cluster, creds.clone()).await?;
    let mut unfrozen_conn = Conn::connect(unfrozen, creds.clone()).await?;
    let mut offline_conn = Conn::connect(offline, creds.clone()).await?;
    // Warm-up: the first invoke after the last cold sample is warm already, but let both sides
    // (and the CPU caches, the allocator, the connection) settle.
    let warmup = (args.warm_samples / 10).clamp(20, 500);
    sequential(&mut invoker, &invoke_path, warmup, Duration::from_secs(30)).await;
    if let Some(conn) = &mut previous_invoker {
        sequential(conn, &invoke_path, warmup, Duration::from_secs(30)).await;
    }
    sequential(&mut base_conn, &invoke_path, warmup, Duration::from_secs(30)).await;
    sequential(&mut cluster_conn, &invoke_path, warmup, Duration::from_secs(30)).await;
    sequential(&mut unfrozen_conn, &invoke_path, warmup, Duration::from_secs(30)).await;
    sequential(&mut offline_conn, &invoke_path, warmup, Duration::from_secs(30)).await;
    let (mut unfrozen_warm, mut unfrozen_errors) = (vec![], vec![]);
    let (mut offline_warm, mut offline_errors) = (vec![], vec![]);
    let (mut warm, mut base, mut warm_errors, mut base_errors) = (vec![], vec![], vec![], vec![]);
    let (mut on_workers, mut on_workers_errors) = (vec![], vec![]);
    let (mut previous_warm, mut previous_errors, mut round_ratios) = (vec![], vec![], vec![]);
    let per_round = args.warm_samples.div_ceil(ROUNDS);
    for round in 0..ROUNDS {
        let n = per_round.min(args.warm_samples - round * per_round);
        let (l, e) = sequential(&mut base_conn, &invoke_path, n, Duration::from_secs(60)).await;
        base.extend(l);
        base_errors.extend(e);
        match &mut previous_invoker {
            None => {
                let (l, e) = sequential(&mut invoker, &invoke_path, n, Duration::from_secs(60)).await;
                warm.extend(l);
                warm_errors.extend(e);
            }
            // This build and the previous one back to back, the first of them swapped every round.
            Some(previous_conn) => {
                let (current, previous) = if round % 2 == 0 {
                    let current = sequential(&mut invoker, &invoke_path, n, Duration::from_secs(60)).await;
                    (current, sequential(previous_conn, &invoke_path, n, Duration::from_secs(60)).await)
                } else {
                    let previous = sequential(previous_conn, &invoke_path, n, Duration::from_secs(60)).await;
                    (sequential(&mut invoker, &invoke_path, n, Duration::from_secs(60)).await, previous)
                };
                if let (Some(c), Some(p)) = (stats_ms(&current.0), stats_ms(&previous.0)) {
                    round_ratios.push(c.p50 / p.p50);
                }
                warm.extend(current.0);
                warm_errors.extend(current.1);
                previous_warm.extend(previous.0);
                previous_errors.extend(previous.1);
            }
        }
        let (l, e) = sequential(&mut cluster_conn, &invoke_path, n, Duration::from_secs(60)).await;
        on_workers.extend(l);
        on_workers_errors.extend(e);
        let (l, e) = sequential(&mut unfrozen_conn, &invoke_path, n, Duration::from_secs(60)).await;
        unfrozen_warm.extend(l);
        unfrozen_errors.extend(e);
        let (l, e) = sequential(&mut offline_conn, &invoke_path, n, Duration::from_secs(60)).await;
        offline_warm.extend(l);
        offline_errors.extend(e);
    }

    // Throughput at concurrency 16. The warm-up lets the pool grow to 16 sandboxes.
    eprintln!("ignis-bench: throughput at concurrency {CONCURRENCY} ({:.1} s or 20000 requests each)", args.duration.as_secs_f64());
    let limit = 20_000;
    concurrent(ignis, &creds, &invoke_path, (CONCURRENCY * 20) as u64, Duration::from_secs(30)).await?;
    if let Some((pooled, _)) = previous {
        concurrent(pooled, &creds, &invoke_path, (CONCURRENCY * 20) as u64, Duration::from_secs(30)).await?;
    }
    concurrent(echo, &creds, &invoke_path, (CONCURRENCY * 20) as u64, Duration::from_secs(30)).await?;
    concurrent(cluster, &creds, &invoke_path, (CONCURRENCY * 20) as u64, Duration::from_secs(30)).await?;
    concurrent(unfrozen, &creds, &invoke_path, (CONCURRENCY * 20) as u64, Duration::from_secs(30)).await?;
    let base_tput = concurrent(echo, &creds, &invoke_path, limit, args.duration).await?;
    let (tput, previous_tput) = match previous {
        None => (concurrent(ignis, &creds, &invoke_path, limit, args.duration).await?, None),
        // In halves, current, previous, previous, current: drift in the machine's load hits both alike.
        Some((pooled, _)) => {
            let half = args.duration / 2;
            let mut tput = concurrent(ignis, &creds, &invoke_path, limit / 2, half).await?;
            let mut previous_tput = concurrent(pooled, &creds, &invoke_path, limit / 2, half).await?;
            previous_tput.add(concurrent(pooled, &creds, &invoke_path, limit / 2, half).await?);
            tput.add(concurrent(ignis, &creds, &invoke_path, limit / 2, half).await?);
            (tput, Some(previous_tput))
        }
    };
    let cluster_tput = concurrent(cluster, &creds, &invoke_path, limit, args.duration).await?;
    let unfrozen_tput = concurrent(unfrozen, &creds, &invoke_path, limit, args.duration).await?;

    let previous = match (previous_cold, previous_tput) {
        (Some((cold, cold_unpooled)), Some(tput)) => {
            Some(Previous { cold, cold_unpooled, warm: previous_warm, warm_errors: previous_errors, round_ratios, tput })
        }
        _ => None,
    };
    Ok(Report {
        sign,
        cluster: on_workers,
        cluster_errors: on_workers_errors,
        cluster_tput,
        unfrozen: unfrozen_warm,
        unfrozen_errors,
        unfrozen_tput,
        offline_cold,
        offline_warm,
        offline_errors,
        cold,
        cold_unpooled,
        create_time,
        warm,
        base,
        warm_errors,
        base_errors,
        tput,
        base_tput,
        previous,
    })
}

/// `n` sequential invokes (or until `limit` passes), their latencies and the errors (at most
/// a few kept).
async fn sequential(conn: &mut Conn, path: &str, n: usize, limit: Duration) -> (Vec<Duration>, Vec<String>) {
    let deadline = Instant::now() + limit;
    let mut latencies = Vec::with_capacity(n);
    let mut errors = Vec::new();
    for _ in 0..n {
        if Instant::now() > deadline {
            errors.push(format!("time limit of {} s reached after {} requests", limit.as_secs(), latencies.len()));
            break;
        }
        match conn.timed("POST", path, &[], PAYLOAD).await {
            Ok((elapsed, reply)) => match check_invoke(&reply) {
                Ok(()) => latencies.push(elapsed),
                Err(e) => errors.push(e),
            },
            Err(e) => {
                errors.push(e);
                if let Err(e) = conn.reconnect().await {
                    errors.push(e);
                    break;
                }
            }
        }
    }
    (latencies, errors)
}

/// `CONCURRENCY` clients, each on its own keep-alive connection, invoking until `limit` requests
/// were sent in all or `duration` passed.
async fn concurrent(address: &str, creds: &Credentials, path: &str, limit: u64, duration: Duration) -> Result<Throughput, String> {
    load(address, creds, Load { path, headers: &[], check: check_invoke, clients: CONCURRENCY }, limit, duration).await
}

/// What a load run sends: signed POSTs of [`PAYLOAD`] to `path` with `headers`, whose answers
/// `check` accepts, from `clients` connections.
#[derive(Clone, Copy)]
struct Load<'a> {
    path: &'a str,
    headers: &'a [(&'a str, &'a str)],
    check: fn(&Reply) -> Result<(), String>,
    clients: usize,
}

/// `load.clients` clients, each on its own keep-alive connection, until `limit` requests were
/// sent in all or `duration` passed. Keeps every accepted request's id and wall-clock answer time.
async fn load(address: &str, creds: &Credentials, load: Load<'_>, limit: u64, duration: Duration) -> Result<Throughput, String> {
    let mut conns = Vec::with_capacity(load.clients);
    for _ in 0..load.clients {
        conns.push(Conn::connect(address, creds.clone()).await?);
    }
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in conns {
        let issued = issued.clone();
        let path = load.path.to_string();
        let headers: Vec<(String, String)> = load.headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let check = load.check;
        tasks.spawn(async move {
            let mut t = Throughput::default();
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < limit {
                match conn.timed("POST", &path, &headers, PAYLOAD).await {
                    Ok((elapsed, reply)) => match check(&reply) {
                        Ok(()) => {
                            t.ok += 1;
                            t.latencies.push(elapsed);
                            if let Some(id) = reply.header("x-amzn-requestid") {
                                t.accepted.push((id.to_string(), wall_ms()));
                            }
                        }
                        Err(e) => {
                            t.errors += 1;
                            t.first_error.get_or_insert(e);
                        }
                    },
                    Err(e) => {
                        t.errors += 1;
                        t.first_error.get_or_insert(e);
                        if conn.reconnect().await.is_err() {
                            break;
                        }
                    }
                }
            }
            t
        });
    }
    let mut total = Throughput::default();
    while let Some(done) = tasks.join_next().await {
        let t = done.map_err(|e| format!("a client task failed: {e}"))?;
        total.ok += t.ok;
        total.errors += t.errors;
        if total.first_error.is_none() {
            total.first_error = t.first_error;
        }
        total.latencies.extend(t.latencies);
        total.accepted.extend(t.accepted);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// The echo baseline.

struct EchoServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    fn start() -> Result<(String, EchoServer), String> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("echo server: cannot listen: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let address = listener.local_addr().map_err(|e| e.to_string())?.to_string();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let thread = std::thread::Builder::new()
            .name("echo-baseline".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                    let accept = async {
                        loop {
                            let Ok((stream, _)) = listener.accept().await else { continue };
                            let _ = stream.set_nodelay(true);
                            tokio::spawn(async move {
                                let service = hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                                    let body = request.into_body().collect().await?.to_bytes();
                                    Ok::<_, hyper::Error>(
                                        hyper::Response::builder()
                                            .header("content-type", "application/json")
                                            .body(Full::new(body))
                                            .expect("a valid response"),
                                    )
                                });
                                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                            });
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime here cancels the connection tasks.
            })
            .map_err(|e| format!("cannot start the echo thread: {e}"))?;
        Ok((address, EchoServer { stop: Some(stop_tx), thread: Some(thread) }))
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics and the table.


/// What `measured` adds to `reference` at p50, p90 and p99, and whether the p50 stays under `target_ms`.
fn added_row(label: &str, measured: &Stats, reference: &Stats, target_ms: f64) {
    let added = measured.p50 - reference.p50;
    println!(
        "  {:<34} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}  p50 < {target_ms} ms: {}",
        label,
        "",
        "",
        ms(added),
        ms(measured.p90 - reference.p90),
        ms(measured.p99 - reference.p99),
        "",
        verdict(added < target_ms)
    );
}

impl Report {
    /// The current / previous ratios of the table, in one place.
    fn print_against(&self, previous: &Previous) {
        println!("  {:<34} {:>9} {:>9}  (above 1: the current build is slower)", "current / previous", "p50", "p99");
        let pairs = [
            ("cold start", &self.cold.times, &previous.cold.times),
            ("cold start, no shell pool", &self.cold_unpooled.times, &previous.cold_unpooled.times),
            ("warm Invoke, concurrency 1", &self.warm, &previous.warm),
            (&*format!("warm Invoke, concurrency {CONCURRENCY}"), &self.tput.latencies, &previous.tput.latencies),
        ];
        for (label, current, before) in pairs {
            match (stats_ms(current), stats_ms(before)) {
                (Some(c), Some(p)) => println!("  {label:<34} {:>8.3}x {:>8.3}x", c.p50 / p.p50, c.p99 / p.p99),
                _ => println!("  {label:<34} {:>9}", "no data"),
            }
        }
        if self.tput.rate() > 0.0 {
            println!("  {:<34} {:>8.3}x            (previous req/s / current req/s)", format!("time per invoke, concurrency {CONCURRENCY}"),
                previous.tput.rate() / self.tput.rate());
        }
    }

    fn print(&self, args: &Args, ignis: &str, previous_address: Option<&str>, echo: &str, binary_size: usize, zip_size: usize) {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let line = "-".repeat(104);
        println!();
        println!("Ignis benchmark  ({cpus} CPUs; ignis server {ignis}, echo baseline {echo}; all loopback)");
        println!("Function: examples/hello-rust (lambda_runtime), provided.al2023, 128 MB; bootstrap {:.1} MB, zip {:.1} MB; CreateFunction took {:.0} ms",
            binary_size as f64 / 1e6, zip_size as f64 / 1e6, self.create_time.as_secs_f64() * 1000.0);
        if let (Some(dir), Some(address)) = (&args.previous_bin_dir, previous_address) {
            println!("Previous build: {} (server {address}, started like the default one); \"current / previous\" > 1 means the current build is slower",
                dir.display());
        }
        println!("Latency = send of a signed request to the end of its answer body, on a keep-alive HTTP/1.1 connection.");
        if let Some(s) = stats_ms(&self.sign) {
            println!("SigV4 signing (per request, client side, not in latencies, in throughput): p50 {:.1} us", s.p50 * 1000.0);
        }
        println!("{line}");
        println!("  {:<34} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}  target", "latency (ms)", "n", "min", "p50", "p90", "p99", "max");
        println!("{line}");

        let cold = stats_ms(&self.cold.times);
        let cold_note = match &cold {
            Some(s) => format!("p50 < {COLD_TARGET_MS} ms: {}", verdict(s.p50 < COLD_TARGET_MS)),
            None => format!("p50 < {COLD_TARGET_MS} ms"),
        };
        row("cold start: Invoke round trip", cold.as_ref(), &cold_note);
        let init = stats(&mut self.cold.init.clone());
        let duration = stats(&mut self.cold.duration.clone());
        row("  server REPORT Init Duration", init.as_ref(), "");
        row("  server REPORT Duration", duration.as_ref(), "");
        if let (Some(c), Some(i)) = (&cold, &init) {
            println!("  {:<34} {:>6} {:>9} {:>9}  (round trip p50 - Init Duration p50 - Duration p50)", "  rest of the cold path (p50)", "", "",
                ms(c.p50 - i.p50 - duration.map_or(0.0, |d| d.p50)));
        }
        if let Some(previous) = &self.previous {
            let previous_cold = stats_ms(&previous.cold.times);
            row("previous build: cold start", previous_cold.as_ref(), "alternating with the current build's");
            row("  server REPORT Init Duration", stats(&mut previous.cold.init.clone()).as_ref(), "");
            if let (Some(c), Some(p)) = (&cold, &previous_cold) {
                ratio_row("  ratio current / previous", c, p, "");
            }
        }
        let offline = stats_ms(&self.offline_cold.times);
        row("cold start, sandboxes without network", offline.as_ref(), "--egress none, alternating with the default's");
        if let (Some(c), Some(o)) = (&cold, &offline) {
            println!("  {:<34} {:>6} {:>9} {:>9}  (p50 with networking - without; target < 0.5 ms)", "  networking adds (p50)", "", "",
                ms(c.p50 - o.p50));
        }
        let unpooled = stats_ms(&self.cold_unpooled.times);
        row("cold start, no shell pool", unpooled.as_ref(), "--sandbox-pool 0: whole sandbox built");
        row("  server REPORT Init Duration", stats(&mut self.cold_unpooled.init.clone()).as_ref(), "");
        if let Some(previous) = &self.previous {
            let previous_unpooled = stats_ms(&previous.cold_unpooled.times);
            row("previous build: no shell pool", previous_unpooled.as_ref(), "alternating with the current build's");
            row("  server REPORT Init Duration", stats(&mut previous.cold_unpooled.init.clone()).as_ref(), "");
            if let (Some(c), Some(p)) = (&unpooled, &previous_unpooled) {
                ratio_row("  ratio current / previous", c, p, "");
            }
        }
        if let (Some(c), Some(u)) = (&cold, &unpooled) {
            println!("  {:<34} {:>6} {:>9} {:>8.2}x", "ratio pooled / no pool (p50)", "", "", c.p50 / u.p50);
        }
        println!("{line}");

        let warm = stats_ms(&self.warm);
        let base = stats_ms(&self.base);
        row("warm Invoke, concurrency 1", warm.as_ref(), "");
        row("baseline echo, concurrency 1", base.as_ref(), "");
        if let (Some(w), Some(b)) = (&warm, &base) {
            added_row("added latency (warm - baseline)", w, b, ADDED_TARGET_MS);
            println!(
                "  {:<34} {:>6} {:>9} {:>8.2}x {:>8.2}x {:>8.2}x",
                "ratio warm / baseline",
                "",
                "",
                w.p50 / b.p50,
                w.p90 / b.p90,
                w.p99 / b.p99
            );
        }
        if let Some(previous) = &self.previous {
            let previous_warm = stats_ms(&previous.warm);
            row("previous build: warm, c=1", previous_warm.as_ref(), "in the same rounds");
            if let (Some(w), Some(p)) = (&warm, &previous_warm) {
                let rounds: Vec<String> = previous.round_ratios.iter().map(|r| format!("{r:.3}")).collect();
                ratio_row("  ratio current / previous", w, p, &format!("p50 by round: {}", rounds.join(" ")));
            }
        }
        let offline = stats_ms(&self.offline_warm);
        row("warm Invoke, --egress none, c=1", offline.as_ref(), "sandboxes without network, same rounds");
        if let (Some(w), Some(o)) = (&warm, &offline) {
            ratio_row("  ratio with networking / without", w, o, "target: no cost (about 1.00)");
        }
        println!("{line}");
        let unfrozen = stats_ms(&self.unfrozen);
        row("warm Invoke, --no-freeze, c=1", unfrozen.as_ref(), "idle sandboxes left running");
        if let (Some(w), Some(u)) = (&warm, &unfrozen) {
            println!(
                "  {:<34} {:>6} {:>9} {:>9} {:>9} {:>9}   (thaw before each event, freeze after it)",
                "added by freezing (default - it)",
                "",
                "",
                ms(w.p50 - u.p50),
                ms(w.p90 - u.p90),
                ms(w.p99 - u.p99)
            );
        }
        println!("{line}");
        let hop = stats_ms(&self.cluster);
        row("warm Invoke, 2 worker hosts, c=1", hop.as_ref(), "--no-local-worker + 2x ignis worker");
        if let (Some(h), Some(w)) = (&hop, &warm) {
            added_row("added by the worker hop", h, w, HOP_TARGET_MS);
        }
        println!("{line}");
        let tw = stats_ms(&self.tput.latencies);
        let tb = stats_ms(&self.base_tput.latencies);
        row(&format!("warm Invoke, concurrency {CONCURRENCY}"), tw.as_ref(), "");
        row(&format!("baseline echo, concurrency {CONCURRENCY}"), tb.as_ref(), "");
        if let Some(previous) = &self.previous {
            let tp = stats_ms(&previous.tput.latencies);
            row(&format!("previous build, concurrency {CONCURRENCY}"), tp.as_ref(), "");
            if let (Some(w), Some(p)) = (&tw, &tp) {
                ratio_row("  ratio current / previous", w, p, "");
            }
        }
        row(&format!("2 worker hosts, concurrency {CONCURRENCY}"), stats_ms(&self.cluster_tput.latencies).as_ref(), "");
        row(&format!("--no-freeze, concurrency {CONCURRENCY}"), stats_ms(&self.unfrozen_tput.latencies).as_ref(), "");
        println!("{line}");
        println!("  {:<34} {:>9} {:>9} {:>9}", format!("throughput, concurrency {CONCURRENCY}"), "req/s", "requests", "seconds");
        let mut rates = vec![("warm Invoke", &self.tput)];
        rates.extend(self.previous.as_ref().map(|p| ("previous build", &p.tput)));
        rates.extend([("baseline echo", &self.base_tput), ("2 worker hosts", &self.cluster_tput), ("--no-freeze", &self.unfrozen_tput)]);
        for (label, t) in rates {
            println!("  {label:<34} {:>9.0} {:>9} {:>9.2}", t.rate(), t.ok, t.elapsed.as_secs_f64());
        }
        if let Some(previous) = self.previous.as_ref().filter(|p| p.tput.rate() > 0.0) {
            println!("  {:<34} {:>8.3}x   (below 1: the current build serves fewer invokes per second)",
                "ratio current / previous",
                self.tput.rate() / previous.tput.rate());
        }
        if self.base_tput.rate() > 0.0 {
            println!("  {:<34} {:>8.2}x   (1/rate difference: {:.1} us more machine time per invoke at c={CONCURRENCY})",
                "ratio warm / baseline",
                self.tput.rate() / self.base_tput.rate(),
                (1.0 / self.tput.rate().max(1e-9) - 1.0 / self.base_tput.rate()) * 1e6);
        }
        println!("{line}");
        if let Some(previous) = &self.previous {
            self.print_against(previous);
            println!("{line}");
        }
        println!("Settings: --cold-samples {} --warm-samples {} --duration {} --settle-ms {} (throughput also capped at 20000 requests); warm c=1 samples taken in {ROUNDS} alternating baseline/Ignis rounds",
            args.cold_samples, args.warm_samples, args.duration.as_secs_f64(), args.settle.as_millis());
        if let Some(dir) = &args.previous_bin_dir {
            println!("  --previous-bin-dir {}: cold samples alternate current/previous (order swapped each sample), warm c=1 rounds run baseline, then current and previous (order swapped each round), c=16 runs in halves current, previous, previous, current",
                dir.display());
        }
        let mut problems = Vec::new();
        let mut colds = vec![
            ("cold start", &self.cold),
            ("cold start, no pool", &self.cold_unpooled),
            ("cold start, --egress none", &self.offline_cold),
        ];
        let mut errors = vec![
            ("cold start", &self.cold.errors),
            ("cold start, no pool", &self.cold_unpooled.errors),
            ("warm c=1", &self.warm_errors),
            ("baseline c=1", &self.base_errors),
            ("2 worker hosts c=1", &self.cluster_errors),
            ("--no-freeze c=1", &self.unfrozen_errors),
            ("--egress none c=1", &self.offline_errors),
        ];
        let mut tputs = vec![
            ("warm c=16", &self.tput),
            ("baseline c=16", &self.base_tput),
            ("2 worker hosts c=16", &self.cluster_tput),
            ("--no-freeze c=16", &self.unfrozen_tput),
        ];
        if let Some(previous) = &self.previous {
            colds.extend([("previous build: cold start", &previous.cold), ("previous build: cold start, no pool", &previous.cold_unpooled)]);
            errors.extend([
                ("previous build: cold start", &previous.cold.errors),
                ("previous build: cold start, no pool", &previous.cold_unpooled.errors),
                ("previous build: warm c=1", &previous.warm_errors),
            ]);
            tputs.push(("previous build: c=16", &previous.tput));
        }
        for (label, cold) in colds {
            if cold.not_cold > 0 {
                problems.push(format!("{label}: {} invokes had no Init Duration in their REPORT line (not cold?)", cold.not_cold));
            }
        }
        for (label, errors) in errors {
            if !errors.is_empty() {
                problems.push(format!("{label}: {} errors, first: {}", errors.len(), errors[0]));
            }
        }
        for (label, t) in tputs {
            if t.errors > 0 {
                problems.push(format!("{label}: {} errors, first: {}", t.errors, t.first_error.as_deref().unwrap_or("?")));
            }
        }
        if problems.is_empty() {
            println!("No errors.");
        } else {
            println!("Problems:");
            for p in problems {
                println!("  - {p}");
            }
        }
    }
}
