//! `images`: container-image functions on a real `ignis server`, in one run, beside their baselines.
//!
//! - **The image.** About `--base-mib` MiB (1 GiB) of base layers the function never reads: files of random bytes
//!   (incompressible, all distinct), split into [`BASE_LAYERS`] layers because the registry serves a blob `GET` of
//!   at most 256 MiB and the classic baseline pulls the image back; the first also holds the libraries `ldd` lists
//!   for the `lambda_runtime` example (`bootstrap`). On top, the app layer with `/var/task/bootstrap`; Entrypoint
//!   `["/var/task/bootstrap"]`. Layers are plain tars, pushed with `ignis image push`.
//! - **Cold start, lazy.** Before every sample the server is restarted on the same data directory: the worker's
//!   chunk cache (`<data>/image-cache`) starts empty and nothing is mounted. A new function is created on the image
//!   (prepared once, at the first CreateFunction of the run, which is timed apart and is not part of any start),
//!   and its first Invoke is timed: client-side, from sending the request to having the whole answer. The chunk
//!   store is the server's own directory, on the same disk: its files are in the kernel's page cache (the image was
//!   just prepared), so no sample measures a disk or network read of a chunk; the cache's size after the start is
//!   what the start read.
//!   The server keeps `<data>/image-starts` across restarts: the first sample finds no record of a start and
//!   fetches every chunk as reads need it ("lazy, no prefetch"); every later one finds the record the previous
//!   server life wrote and prefetches those chunks at mount ("lazy, prefetch"). Both are shown, and all together.
//! - **Cold start, page cache.** Then an UpdateFunctionConfiguration retires the sandbox and the next Invoke
//!   starts a new one on the same image, still mounted: every page it reads already in the mounted image's page
//!   cache (timed the same way).
//! - **Cold start, local chunk cache.** Then the function is deleted (its sandboxes killed, so the image's mount
//!   goes; the benchmark waits until the mount has written its start record, which happens when the image is
//!   released), and a new function on the same image gets its first Invoke timed: a new mount whose every chunk
//!   is in the worker's chunk cache, so no fetch — "a start with every chunk already cached locally".
//! - **Fetch + unpack + start (the classic way).** In the same server life: `skopeo copy` of the whole image out of
//!   Ignis's registry into a local OCI layout (it checks every blob's digest), `tar -x` of every layer in order
//!   into a directory, then `/var/task/bootstrap` of that directory deployed as a zip function (`provided.al2023`,
//!   untimed) and its first Invoke timed. The sum of the three is the sample; the parts are shown too. The order of
//!   the lazy and the classic start alternates between samples.
//! - **Storage.** On the first server: the chunk store's bytes (files under `<data>/chunks`) and the registry's
//!   (under `<data>/oci/blobs`) before and after pushing the image and creating its first function (which prepares
//!   it), after pushing it again and creating a function on it, and after a second image (the same layers plus a
//!   small one) and a function on it.
//! - **Throughput.** The example `chunk_throughput` of `ignis-images` (flatten, EROFS, chunk and store; MB/s),
//!   pinned to one core with `taskset -c 0`, when `--throughput-exe` names it.
//!
//! Must run as root. `bench/images` builds everything in release mode and runs this.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use base64::Engine;
use ignis_sigv4::Credentials;
use serde_json::{Value, json};

#[path = "../harness.rs"]
#[allow(dead_code, reason = "shared with ignis-bench; this benchmark uses part of it")]
mod harness;
#[path = "../stats.rs"]
mod stats;
#[path = "../oci_images.rs"]
mod oci_images;
use oci_images::{Body, Layout, Noise, create_image_function, libraries, push};
use harness::{Conn, KEY_ID, build_dir, SECRET, Server, check_invoke, ratio_row, report_field, row, verdict, zip_of};
use stats::{stats, stats_ms};

/// The server installs only the base of the zip function it starts (`provided.al2023`).
const RUNTIMES: &[&str] = &["--runtimes", "provided.al2023"];

const FUNCTIONS: &str = "/2015-03-31/functions";
const PAYLOAD: &[u8] = br#"{"name":"images"}"#;
const REPOSITORY: &str = "bench/app";
/// Layers the base is split into (the registry serves blobs of at most 256 MiB).
const BASE_LAYERS: usize = 5;
/// The base's files are at most this large.
const FILE_BYTES: u64 = 16 << 20;
/// The second image's own layer.
const SMALL_LAYER_BYTES: u64 = 1 << 20;
const LAZY_VS_CLASSIC_TARGET: f64 = 10.0;
const LAZY_VS_CACHED_TARGET: f64 = 1.5;
const NEW_BYTES_TARGET_PERCENT: f64 = 5.0;

struct Args {
    samples: usize,
    base_mib: u64,
    settle: Duration,
    bin_dir: Option<PathBuf>,
    throughput_exe: Option<PathBuf>,
    throughput_mib: u64,
}

const USAGE: &str = "usage: images [--samples N] [--base-mib MIB] [--settle-ms MS] [--bin-dir DIR] [--throughput-exe PATH]
              [--throughput-mib MIB]

  --samples N           cold-start samples, each on a freshly started server (default 7)
  --base-mib MIB        size of the base layers the function never reads (default 1024)
  --settle-ms MS        pause after a server starts and before each timed invoke (default 500 and a fifth of it)
  --bin-dir DIR         where `ignis`, `ignis-init` and `bootstrap` are (default: beside this program)
  --throughput-exe PATH the `chunk_throughput` example of ignis-images, run on one core (default: not run)
  --throughput-mib MIB  its image size (default 256)

Must run as root (the server builds sandboxes and mounts images).";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        samples: 7,
        base_mib: 1024,
        settle: Duration::from_millis(500),
        bin_dir: None,
        throughput_exe: None,
        throughput_mib: 256,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"));
        let number = |text: String| text.parse::<f64>().map_err(|_| format!("{flag}: {text:?} is not a number"));
        match flag.as_str() {
            "--samples" => args.samples = number(value()?)?.clamp(1.0, 1000.0) as usize,
            "--base-mib" => args.base_mib = number(value()?)?.clamp(BASE_LAYERS as f64, 8192.0) as u64,
            "--settle-ms" => args.settle = Duration::from_secs_f64(number(value()?)?.clamp(0.0, 10_000.0) / 1000.0),
            "--bin-dir" => args.bin_dir = Some(PathBuf::from(value()?)),
            "--throughput-exe" => args.throughput_exe = Some(PathBuf::from(value()?)),
            "--throughput-mib" => args.throughput_mib = number(value()?)?.clamp(1.0, 4096.0) as u64,
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("images: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("images: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("images: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The two images: `v1` (the base layers, the app layer) and `v2` (the same plus a small layer).
struct Images {
    layout: PathBuf,
    image_bytes: u64,
    layers: usize,
}

fn write_images(dir: &Path, bootstrap: &Path, base_mib: u64) -> Result<Images, String> {
    let mut layout = Layout::new(dir)?;
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let base_bytes = base_mib << 20;
    let per_layer = base_bytes / BASE_LAYERS as u64;
    let mut layers = Vec::new();
    for layer in 0..BASE_LAYERS {
        let mut files = if layer == 0 { libraries(bootstrap)? } else { Vec::new() };
        let mut left = if layer + 1 == BASE_LAYERS { base_bytes - per_layer * (BASE_LAYERS as u64 - 1) } else { per_layer };
        let mut i = 0;
        while left > 0 {
            let len = left.min(FILE_BYTES);
            files.push((format!("opt/data/{layer}/file{i}.bin"), Body::Noise(len), 0o644));
            left -= len;
            i += 1;
        }
        layers.push(layout.layer(&files, &mut noise)?);
    }
    let program = std::fs::read(bootstrap).map_err(|e| format!("{}: {e}", bootstrap.display()))?;
    layers.push(layout.layer(&[("var/task/bootstrap".into(), Body::Bytes(program), 0o755)], &mut noise)?);
    let v1 = layout.image("v1", &layers)?;
    let small = layout.layer(&[("opt/extra/v2.bin".into(), Body::Noise(SMALL_LAYER_BYTES), 0o644)], &mut noise)?;
    let mut with_small = layers.clone();
    with_small.push(small);
    let v2 = layout.image("v2", &with_small)?;
    layout.index(&[v1, v2])?;
    Ok(Images { layout: dir.to_path_buf(), image_bytes: layers.iter().map(|l| l.size).sum(), layers: layers.len() })
}

// ---------------------------------------------------------------------------------------------
// Talking to the server.

fn credentials() -> Credentials {
    Credentials { access_key_id: KEY_ID.into(), secret_access_key: SECRET.into() }
}

async fn create_zip_function(conn: &mut Conn, name: &str, zip: &[u8]) -> Result<(), String> {
    let body = json!({
        "FunctionName": name, "Runtime": "provided.al2023", "Role": "arn:aws:iam::123456789012:role/bench",
        "Handler": "bootstrap", "Code": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip) },
    });
    let reply = conn.request("POST", FUNCTIONS, &[], body.to_string().as_bytes()).await?;
    if reply.status != 201 {
        return Err(format!("CreateFunction {name} answered {}: {}", reply.status, reply.text()));
    }
    Ok(())
}

/// A timed Invoke that must start a sandbox: its latency and the `Init Duration` of its REPORT line.
async fn cold_invoke(conn: &mut Conn, name: &str) -> Result<(Duration, f64), String> {
    let path = format!("{FUNCTIONS}/{name}/invocations");
    let (elapsed, reply) = conn.timed("POST", &path, &[("x-amz-log-type", "Tail")], PAYLOAD).await?;
    check_invoke(&reply)?;
    let tail = reply
        .header("x-amz-log-result")
        .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let init = report_field(&tail, "Init Duration").ok_or_else(|| format!("the invoke of {name} started no sandbox"))?;
    Ok((elapsed, init))
}

/// A new Description, which retires the function's sandboxes.
async fn retire(conn: &mut Conn, name: &str, i: usize) -> Result<(), String> {
    let body = json!({ "Description": format!("bench images {i}") }).to_string();
    let reply = conn.request("PUT", &format!("{FUNCTIONS}/{name}/configuration"), &[], body.as_bytes()).await?;
    if reply.status != 200 {
        return Err(format!("UpdateFunctionConfiguration answered {}: {}", reply.status, reply.text()));
    }
    Ok(())
}

/// Bytes of the files under `dir` (none if it is missing).
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => dirs.push(entry.path()),
                Ok(kind) if kind.is_file() => total += entry.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

fn run_tool(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{what}: {e}"))?;
    if !output.status.success() {
        return Err(format!("{what} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr)));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The measurements.

#[derive(Default)]
struct Samples {
    lazy: Vec<Duration>,
    lazy_init: Vec<f64>,
    /// Whether each lazy start found a start record to prefetch from.
    prefetched: Vec<bool>,
    cached: Vec<Duration>,
    cached_init: Vec<f64>,
    local: Vec<Duration>,
    local_init: Vec<f64>,
    /// Whether the image's mount was seen gone (its start record written) before each local-cache start.
    unmounted: Vec<bool>,
    fetch: Vec<Duration>,
    unpack: Vec<Duration>,
    zip_start: Vec<Duration>,
    classic: Vec<Duration>,
    /// Bytes in the worker's chunk cache after each lazy start: what it read.
    read_bytes: Vec<f64>,
}

/// What the storage steps added to the chunk store and the registry.
struct Storage {
    /// (step, registry bytes added, chunk store bytes added)
    steps: Vec<(String, u64, u64)>,
    prepare: Duration,
    image_bytes: u64,
}

fn data_sizes(data: &Path) -> (u64, u64) {
    (tree_bytes(&data.join("oci/blobs")), tree_bytes(&data.join("chunks")))
}

async fn storage(ignis: &Path, server: &Server, conn: &mut Conn, data: &Path, images: &Images) -> Result<Storage, String> {
    let mut steps = Vec::new();
    let mut before = data_sizes(data);
    let mut step = |label: String, steps: &mut Vec<(String, u64, u64)>| {
        let after = data_sizes(data);
        steps.push((label, after.0.saturating_sub(before.0), after.1.saturating_sub(before.1)));
        before = after;
    };
    let pushed = push(ignis, server, &images.layout, REPOSITORY, "v1")?;
    let prepare = create_image_function(conn, server, "image-v1", REPOSITORY, "v1").await?;
    step(format!("push v1 ({:.1} s) + its first function", pushed.as_secs_f64()), &mut steps);
    push(ignis, server, &images.layout, REPOSITORY, "v1")?;
    create_image_function(conn, server, "image-v1-again", REPOSITORY, "v1").await?;
    step("the same image pushed again + a function".into(), &mut steps);
    push(ignis, server, &images.layout, REPOSITORY, "v2")?;
    create_image_function(conn, server, "image-v2", REPOSITORY, "v2").await?;
    step(format!("v2: v1's layers + {} KiB layer + a function", SMALL_LAYER_BYTES >> 10), &mut steps);
    Ok(Storage { steps, prepare, image_bytes: images.image_bytes })
}

/// The newest modification time of the start records in `<data>/image-starts` (none if there is none).
fn newest_record(data: &Path) -> Option<std::time::SystemTime> {
    let entries = std::fs::read_dir(data.join("image-starts")).ok()?;
    entries.filter_map(|e| e.ok()?.metadata().ok()?.modified().ok()).max()
}

/// How long a mount records its start (`ignis_imagefs`'s window): its record is written by then at the latest.
const RECORD_WINDOW: Duration = Duration::from_secs(10);

/// The lazy cold start of a new function on the image, then a start on the same mount (page cache), then the start
/// of another new function on a new mount with every chunk in the local chunk cache.
async fn lazy_sample(args: &Args, i: usize, server: &Server, conn: &mut Conn, data: &Path, s: &mut Samples) -> Result<(), String> {
    let name = format!("lazy-{i}");
    create_image_function(conn, server, &name, REPOSITORY, "v1").await?;
    tokio::time::sleep(args.settle / 5).await;
    s.prefetched.push(newest_record(data).is_some());
    let mounted = std::time::SystemTime::now();
    let (elapsed, init) = cold_invoke(conn, &name).await?;
    s.lazy.push(elapsed);
    s.lazy_init.push(init);
    s.read_bytes.push(tree_bytes(&data.join("image-cache")) as f64);
    retire(conn, &name, i).await?;
    tokio::time::sleep(args.settle / 5).await;
    let (elapsed, init) = cold_invoke(conn, &name).await?;
    s.cached.push(elapsed);
    s.cached_init.push(init);
    let deleted = std::time::SystemTime::now();
    delete_function(conn, &name).await?;
    // The mount is gone once it wrote its record after the delete and before its window ended (a record written by
    // the window's timer proves nothing: then the wait ran out of the window, and the sample is marked).
    let deadline = Instant::now() + 2 * RECORD_WINDOW;
    let written = loop {
        if newest_record(data).is_some_and(|t| t > deleted) || Instant::now() > deadline {
            break newest_record(data).filter(|t| *t > deleted).and_then(|t| t.duration_since(mounted).ok());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    s.unmounted.push(written.is_some_and(|after| after < RECORD_WINDOW));
    let local = format!("local-{i}");
    create_image_function(conn, server, &local, REPOSITORY, "v1").await?;
    tokio::time::sleep(args.settle / 5).await;
    let (elapsed, init) = cold_invoke(conn, &local).await?;
    s.local.push(elapsed);
    s.local_init.push(init);
    // The next server life prefetches from the record of this one: wait until the window closed and it is written.
    if let Ok(since) = mounted.elapsed() {
        tokio::time::sleep((RECORD_WINDOW + Duration::from_secs(1)).saturating_sub(since)).await;
    }
    Ok(())
}

async fn delete_function(conn: &mut Conn, name: &str) -> Result<(), String> {
    let reply = conn.request("DELETE", &format!("{FUNCTIONS}/{name}"), &[], b"").await?;
    if reply.status != 204 {
        return Err(format!("DeleteFunction {name} answered {}: {}", reply.status, reply.text()));
    }
    Ok(())
}

/// The classic start: pull the whole image, unpack every layer, start the program as a zip function.
async fn classic_sample(args: &Args, i: usize, server: &Server, conn: &mut Conn, tmp: &Path, s: &mut Samples) -> Result<(), String> {
    let pulled = tmp.join(format!("pulled-{i}"));
    let root = tmp.join(format!("root-{i}"));
    let started = Instant::now();
    run_tool(
        Command::new("skopeo").args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--src-creds",
            &format!("{KEY_ID}:{SECRET}"),
            &format!("docker://{}/{REPOSITORY}:v1", server.address),
            &format!("oci:{}:v1", pulled.display()),
        ]),
        "skopeo copy",
    )?;
    let fetched = Instant::now();
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    for layer in pulled_layers(&pulled)? {
        run_tool(Command::new("tar").arg("-xf").arg(&layer).arg("-C").arg(&root), "tar -x")?;
    }
    let unpacked = Instant::now();
    let program = std::fs::read(root.join("var/task/bootstrap")).map_err(|e| format!("the unpacked bootstrap: {e}"))?;
    let name = format!("classic-{i}");
    create_zip_function(conn, &name, &zip_of("bootstrap", &program, 0o755)?).await?;
    tokio::time::sleep(args.settle / 5).await;
    let (start, _) = cold_invoke(conn, &name).await?;
    let (fetch, unpack) = (fetched - started, unpacked - fetched);
    s.fetch.push(fetch);
    s.unpack.push(unpack);
    s.zip_start.push(start);
    s.classic.push(fetch + unpack + start);
    for dir in [&pulled, &root] {
        std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

/// The layer files of the image tagged `v1` in the OCI layout `dir`, bottom first.
fn pulled_layers(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let read = |path: PathBuf| -> Result<Value, String> {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    };
    let blob = |digest: &Value| dir.join("blobs/sha256").join(digest.as_str().unwrap_or_default().trim_start_matches("sha256:"));
    let index = read(dir.join("index.json"))?;
    let manifest = read(blob(&index["manifests"][0]["digest"]))?;
    let layers = manifest["layers"].as_array().ok_or("the pulled manifest lists no layers")?;
    Ok(layers.iter().map(|l| blob(&l["digest"])).collect())
}

async fn run(args: Args) -> Result<(), String> {
    let bin_dir = build_dir(args.bin_dir.as_deref())?;
    let (ignis, bootstrap) = (bin_dir.join("ignis"), bin_dir.join("bootstrap"));
    let tmp = tempfile::Builder::new().prefix("ignis-images-").tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let data = tmp.path().join("data");

    let started = Instant::now();
    let images = write_images(&tmp.path().join("layout"), &bootstrap, args.base_mib)?;
    eprintln!("images: wrote the images ({} MiB) in {:.1} s", images.image_bytes >> 20, started.elapsed().as_secs_f64());

    let mut server = Server::start(&ignis, &data, RUNTIMES)?;
    eprintln!("images: ignis server (pid {}) on {}", server.pid(), server.address);
    let mut conn = Conn::connect(&server.address, credentials()).await?;
    let storage = storage(&ignis, &server, &mut conn, &data, &images).await?;
    eprintln!("images: pushed and prepared; {} cold-start samples, each on a restarted server", args.samples);

    let mut samples = Samples::default();
    for i in 0..args.samples {
        server.stop()?;
        server = Server::start(&ignis, &data, RUNTIMES)?;
        conn = Conn::connect(&server.address, credentials()).await?;
        tokio::time::sleep(args.settle).await;
        if i % 2 == 0 {
            lazy_sample(&args, i, &server, &mut conn, &data, &mut samples).await?;
            classic_sample(&args, i, &server, &mut conn, tmp.path(), &mut samples).await?;
        } else {
            classic_sample(&args, i, &server, &mut conn, tmp.path(), &mut samples).await?;
            lazy_sample(&args, i, &server, &mut conn, &data, &mut samples).await?;
        }
        eprintln!("images: sample {}/{} done", i + 1, args.samples);
    }
    server.stop()?;
    let throughput = match &args.throughput_exe {
        Some(exe) => Some(throughput(exe, args.throughput_mib)?),
        None => None,
    };
    print(&args, &images, &storage, &samples, throughput.as_deref());
    Ok(())
}

/// The `chunk_throughput` example's lines, run on one core.
fn throughput(exe: &Path, mib: u64) -> Result<String, String> {
    let output = Command::new("taskset")
        .args(["-c", "0"])
        .arg(exe)
        .arg(mib.to_string())
        .output()
        .map_err(|e| format!("taskset -c 0 {}: {e}", exe.display()))?;
    if !output.status.success() {
        return Err(format!("{} failed: {}", exe.display(), String::from_utf8_lossy(&output.stderr)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

// ---------------------------------------------------------------------------------------------
// The table.

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / f64::from(1 << 20))
}

fn print(args: &Args, images: &Images, storage: &Storage, s: &Samples, throughput: Option<&str>) {
    let image = images.image_bytes as f64;
    println!();
    println!("ignis container-image functions: an image of {} in {} layers ({} of random files the function never",
        mib(image), images.layers, mib((args.base_mib << 20) as f64));
    println!("reads, the libraries, /var/task/bootstrap); {} samples, each on a freshly started server", s.lazy.len());
    println!();
    println!("1. Cold start of a new function: client-side Invoke latency (ms)");
    println!("  {:<34} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}", "", "n", "min", "p50", "p90", "p99", "max");
    let lazy = stats_ms(&s.lazy);
    let pick = |with: bool| -> Vec<Duration> {
        s.lazy.iter().zip(&s.prefetched).filter(|(_, p)| **p == with).map(|(d, _)| *d).collect()
    };
    let (lazy_prefetch, lazy_plain) = (stats_ms(&pick(true)), stats_ms(&pick(false)));
    let cached = stats_ms(&s.cached);
    let local = stats_ms(&s.local);
    let classic = stats_ms(&s.classic);
    row("lazy (Ignis: empty chunk cache)", lazy.as_ref(), "all samples");
    row("  lazy, no prefetch", lazy_plain.as_ref(), "no start record yet (the first sample)");
    row("  lazy, prefetch", lazy_prefetch.as_ref(), "the previous server life's start record");
    row("local chunk cache (new mount)", local.as_ref(), &format!(
        "new function, new mount, every chunk cached locally; mount seen gone in {}/{}",
        s.unmounted.iter().filter(|u| **u).count(), s.unmounted.len()));
    row("page cache (new sandbox)", cached.as_ref(), "same function and mount, every page it reads cached");
    row("fetch + unpack + start (classic)", classic.as_ref(), "sum of the three below");
    row("  fetch (skopeo copy)", stats_ms(&s.fetch).as_ref(), "whole image out of Ignis's registry");
    row("  unpack (tar -x every layer)", stats_ms(&s.unpack).as_ref(), "");
    row("  start (zip function, cold)", stats_ms(&s.zip_start).as_ref(), "");
    row("Init Duration, lazy", stats(&mut s.lazy_init.clone()).as_ref(), "from the REPORT line");
    row("Init Duration, local chunk cache", stats(&mut s.local_init.clone()).as_ref(), "");
    row("Init Duration, page cache", stats(&mut s.cached_init.clone()).as_ref(), "");
    println!("  {:<34} {:>6} {:>9} {:>9} {:>9} {:>9}", "ratios", "", "", "p50", "p90", "p99");
    if let (Some(lazy), Some(classic)) = (&lazy, &classic) {
        ratio_row("classic / lazy", classic, lazy, &format!(
            "p50 >= {LAZY_VS_CLASSIC_TARGET}x: {}", verdict(classic.p50 / lazy.p50 >= LAZY_VS_CLASSIC_TARGET)));
    }
    for (label, measured) in [("lazy", &lazy), ("lazy, no prefetch", &lazy_plain), ("lazy, prefetch", &lazy_prefetch)] {
        let Some(measured) = measured else { continue };
        for (reference_label, reference) in [("local chunk cache", &local), ("page cache", &cached)] {
            let Some(reference) = reference else { continue };
            ratio_row(&format!("{label} / {reference_label}"), measured, reference, &format!(
                "p50 <= {LAZY_VS_CACHED_TARGET}x: {}", verdict(measured.p50 / reference.p50 <= LAZY_VS_CACHED_TARGET)));
        }
    }
    if let Some(read) = stats(&mut s.read_bytes.clone()) {
        println!("  read at start (chunk cache after it): p50 {} of {} ({:.2}%)", mib(read.p50), mib(image), 100.0 * read.p50 / image);
    }
    println!("  preparing the image at its first CreateFunction (not part of any start): {:.1} s, {:.0} MB/s",
        storage.prepare.as_secs_f64(), image / 1e6 / storage.prepare.as_secs_f64());
    println!();
    println!("2. Storage: bytes added to the registry (<data>/oci/blobs) and the chunk store (<data>/chunks)");
    println!("  {:<52} {:>12} {:>12} {:>9}", "", "registry", "chunks", "of image");
    for (i, (label, registry, chunks)) in storage.steps.iter().enumerate() {
        let share = 100.0 * *chunks as f64 / storage.image_bytes as f64;
        let note = match i {
            1 => format!("nothing new: {}", verdict(*registry == 0 && *chunks == 0)),
            2 => format!("< {NEW_BYTES_TARGET_PERCENT}% of the image: {}", verdict(share < NEW_BYTES_TARGET_PERCENT)),
            _ => String::new(),
        };
        println!("  {label:<52} {:>12} {:>12} {:>8.2}%  {note}", mib(*registry as f64), mib(*chunks as f64), share);
    }
    println!();
    match throughput {
        Some(lines) => {
            println!("3. Flatten, EROFS and chunk throughput on one core (chunk_throughput {} MiB, taskset -c 0)", args.throughput_mib);
            for line in lines.lines() {
                println!("  {line}");
            }
        }
        None => println!("3. Throughput: not run (--throughput-exe names the chunk_throughput example)"),
    }
    println!();
    println!("The machine is shared and noisy: read medians and ratios. Chunks come from the server's chunk store");
    println!("directory on the same disk, in the page cache (the classic fetch reads the registry's blobs the same way).");
}
