//! `storm`: a cold-cache storm on a real `ignis server` (part 3 of `bench/cache`): many cold starts at once, every
//! cache empty, against the worker's origin limit.
//!
//! - **Images.** `--functions N` images, one per function, each the `lambda_runtime` example (`bootstrap`) and the
//!   libraries `ldd` lists, with a pad file of a different size first in each layer: the bytes a start reads sit at
//!   other offsets in every image, so no two images share the chunks a start reads and every start reads the
//!   origin for its own. Pushed with `ignis image push`, prepared by CreateFunction before anything is timed.
//! - **Rounds.** For each start wait (`--origin-start-wait` 5 s, then 0 s: refuse at once), the server is started
//!   afresh on the same data directory with `--origin-fetches L` (the memory and disk chunk caches start empty;
//!   the records of earlier starts are removed, so nothing is prefetched), and one Invoke per function is sent at
//!   the same moment, each on its own connection. Each answer is a start that succeeded (200), a clean throttle
//!   (429 `TooManyRequestsException`), or anything else (a failure: there must be none).
//! - **The origin.** The server's own chunk directory, in the page cache: fast, so the limit, not the disk, is
//!   what is measured. The server's metrics give the origin reads and the most in flight at once
//!   (`ignis_origin_fetches_peak`), which must never exceed L.
//!
//! Must run as root (`bench/cache` builds everything in release and runs this after the latency table).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ignis_sigv4::Credentials;

#[path = "../harness.rs"]
#[allow(dead_code, reason = "shared with ignis-bench; this benchmark uses part of it")]
mod harness;
#[path = "../oci_images.rs"]
#[allow(dead_code, reason = "shared with the images benchmark; this one uses part of it")]
mod oci_images;
#[path = "../stats.rs"]
#[allow(dead_code, reason = "shared with the other benchmarks")]
mod stats;
use harness::{Conn, KEY_ID, SECRET, Server, build_dir, verdict};
use oci_images::{Body, Layout, Noise, create_image_function, libraries, push};
use stats::stats_ms;

const REPOSITORY: &str = "bench/storm";
const USAGE: &str = "usage: storm [--functions N] [--origin-fetches L] [--bin-dir DIR]
  --functions N       image functions started at once, each on its own image (default 24)
  --origin-fetches L  the worker's limit on origin reads at once (default 4)
  --bin-dir DIR       where `ignis` and `bootstrap` are (default: beside this program)";

struct Args {
    functions: usize,
    origin_fetches: usize,
    bin_dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { functions: 24, origin_fetches: 4, bin_dir: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = || value.parse::<usize>().map_err(|_| format!("{flag}: not a number: {value}"));
        match flag.as_str() {
            "--functions" => args.functions = number()?.clamp(1, 256),
            "--origin-fetches" => args.origin_fetches = number()?.clamp(1, 64),
            "--bin-dir" => args.bin_dir = Some(PathBuf::from(&value)),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("storm: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn credentials() -> Credentials {
    Credentials { access_key_id: KEY_ID.into(), secret_access_key: SECRET.into() }
}

/// One image per function: the libraries and the program, each layer led by a pad file of its own size.
fn write_images(dir: &Path, bootstrap: &Path, count: usize) -> Result<(), String> {
    let mut layout = Layout::new(dir)?;
    let mut noise = Noise(0x2545_f491_4f6c_dd1d);
    let libs = libraries(bootstrap)?;
    let program = std::fs::read(bootstrap).map_err(|e| format!("{}: {e}", bootstrap.display()))?;
    let mut images = Vec::new();
    for i in 0..count {
        // A pad of (i + 1) × 4 KiB + 1 KiB: the files after it start at another offset in every image.
        let pad = (i as u64 + 1) * 4096 + 1024;
        let mut base = vec![("aaa-pad".to_string(), Body::Noise(pad), 0o644)];
        base.extend(libs.iter().map(|(path, body, mode)| (path.clone(), body.clone(), *mode)));
        let app = [
            ("var/task/a-pad".to_string(), Body::Noise(pad), 0o644),
            ("var/task/bootstrap".into(), Body::Bytes(program.clone()), 0o755),
        ];
        let layers = [layout.layer(&base, &mut noise)?, layout.layer(&app, &mut noise)?];
        images.push(layout.image(&format!("s{i}"), &layers)?);
    }
    layout.index(&images)
}

/// The value of the metric line `name ...` at `http://address/metrics`.
async fn metric(address: &str, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n").await.ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What one storm gave.
struct Round {
    wait: u64,
    ok: Vec<Duration>,
    throttled: Vec<Duration>,
    failed: Vec<String>,
    origin_reads: f64,
    peak: f64,
}

async fn storm(ignis: &Path, data: &Path, args: &Args, wait: u64) -> Result<Round, String> {
    let _ = std::fs::remove_dir_all(data.join("image-starts"));
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.to_string();
    let (fetches, wait_arg) = (args.origin_fetches.to_string(), wait.to_string());
    let extra =
        ["--origin-fetches", &fetches, "--origin-start-wait", &wait_arg, "--metrics-listen", &metrics, "--runtimes", "none"];
    let mut server = Server::start(ignis, data, &extra)?;
    let mut conns = Vec::new();
    for _ in 0..args.functions {
        conns.push(Conn::connect(&server.address, credentials()).await?);
    }
    let begin = tokio::sync::Barrier::new(args.functions);
    let begin = std::sync::Arc::new(begin);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let begin = begin.clone();
            tokio::spawn(async move {
                begin.wait().await;
                let path = format!("/2015-03-31/functions/storm-{i}/invocations");
                conn.timed("POST", &path, &[], b"{\"name\":\"storm\"}").await
            })
        })
        .collect();
    let mut round = Round { wait, ok: Vec::new(), throttled: Vec::new(), failed: Vec::new(), origin_reads: 0.0, peak: 0.0 };
    for task in tasks {
        match task.await.map_err(|e| e.to_string())? {
            Ok((elapsed, reply)) if reply.status == 200 && reply.header("x-amz-function-error").is_none() => round.ok.push(elapsed),
            Ok((elapsed, reply))
                if reply.status == 429 && reply.header("x-amzn-errortype").is_some_and(|t| t.starts_with("TooManyRequestsException")) =>
            {
                round.throttled.push(elapsed)
            }
            Ok((_, reply)) => round.failed.push(format!("{}: {}", reply.status, reply.text())),
            Err(e) => round.failed.push(e),
        }
    }
    // The worker publishes its counters every 5 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    round.origin_reads = metric(&metrics, "ignis_origin_fetches_total").await.unwrap_or(f64::NAN);
    round.peak = metric(&metrics, "ignis_origin_fetches_peak").await.unwrap_or(f64::NAN);
    server.stop()?;
    Ok(round)
}

async fn run(args: Args) -> Result<(), String> {
    let bin_dir = build_dir(args.bin_dir.as_deref())?;
    let (ignis, bootstrap) = (bin_dir.join("ignis"), bin_dir.join("bootstrap"));
    let tmp = tempfile::Builder::new().prefix("ignis-storm-").tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let (layout, data) = (tmp.path().join("layout"), tmp.path().join("data"));
    write_images(&layout, &bootstrap, args.functions)?;
    let started = Instant::now();
    {
        let mut server = Server::start(&ignis, &data, &["--runtimes", "none"])?;
        let mut conn = Conn::connect(&server.address, credentials()).await?;
        for i in 0..args.functions {
            push(&ignis, &server, &layout, REPOSITORY, &format!("s{i}"))?;
            create_image_function(&mut conn, &server, &format!("storm-{i}"), REPOSITORY, &format!("s{i}")).await?;
        }
        server.stop()?;
    }
    eprintln!("storm: {} images pushed and prepared in {:.1} s", args.functions, started.elapsed().as_secs_f64());
    let mut rounds = Vec::new();
    for wait in [5, 0] {
        rounds.push(storm(&ignis, &data, &args, wait).await?);
    }
    print(&args, &rounds);
    Ok(())
}

fn print(args: &Args, rounds: &[Round]) {
    println!(
        "{} cold starts at once, each of its own image, every chunk cache empty; the worker reads the origin {} at a \
         time (--origin-fetches)",
        args.functions, args.origin_fetches
    );
    println!(
        "  {:<24} {:>9} {:>10} {:>8} {:>13} {:>10} {:>12} {:>12}",
        "--origin-start-wait", "succeeded", "throttled", "failed", "origin reads", "most at once", "ok p50 ms", "ok p99 ms"
    );
    let mut all_ok = true;
    for r in rounds {
        let ok = stats_ms(&r.ok);
        let (p50, p99) = ok.map_or((f64::NAN, f64::NAN), |s| (s.p50, s.p99));
        println!(
            "  {:<24} {:>9} {:>10} {:>8} {:>13} {:>10} {:>12.1} {:>12.1}",
            format!("{} s", r.wait),
            r.ok.len(),
            r.throttled.len(),
            r.failed.len(),
            r.origin_reads,
            r.peak,
            p50,
            p99
        );
        for failure in r.failed.iter().take(3) {
            println!("    failed: {failure}");
        }
        all_ok &= r.failed.is_empty() && r.peak <= args.origin_fetches as f64;
    }
    println!(
        "  origin reads never over the limit, and every start succeeded or was cleanly throttled: {}",
        verdict(all_ok)
    );
}
