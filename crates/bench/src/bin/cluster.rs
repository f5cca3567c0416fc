//! A cluster front end on etcd against the embedded server, in one run: an embedded `ignis server` and a cluster
//! of two front ends (`--etcd` on a one-member etcd this benchmark starts, one object store directory, one master
//! key) run the `lambda_runtime` example.
//!
//! - **Warm invoke**: p50/p99 on a kept connection, alternating rounds between the embedded server (baseline),
//!   the cluster front end that leads the function's partition (it runs the invocation), and the other one (it
//!   forwards the invocation to the leader). Target: under 0.3 ms added at p50.
//! - **etcd requests per invoke in the steady state**: etcd's own count of the unary gRPC requests it handled
//!   (`grpc_server_handled_total`, read from its `/metrics`) across the cluster's warm rounds, per invoke.
//!   Target: about 0 (the lease keep-alives and the watches are streams, not counted).
//! - **Visibility**: from CreateFunction's answer on one front end to the first GetFunction on the other that finds
//!   the function. Target: within a second.
//! - **Asynchronous accept rate**: `Event` invokes from 16 connections for a few seconds, each way.
//! - **Queue send rate**: SQS `SendMessage`s from 16 connections for a few seconds: to the embedded server, to the
//!   front end serving the cluster's queues, and to the other one (which hands them on).
//! - **A killed front end's concurrency**: the seconds from `kill -9` of the front end that holds every unit of
//!   a reserved function to the other front end's first admitted invocation of it (its etcd lease's expiry).
//! - **Partition takeover**: the seconds from that `kill -9` to the other front end leading a partition the killed
//!   one led (`GET /ignis/partitions`). Target: under 5 s.
//! - **A killed leader's sandbox taken over**: with two front ends without local workers and a worker host, the
//!   survivor's first invocation of a function whose sandbox it took over from the killed leader, against a new
//!   function's cold start on the same host.
//!
//! Must run as root; starts and stops its own servers and etcd.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ignis_etcd::testing::EtcdCluster;
use ignis_sigv4::Credentials;
use serde_json::json;

#[path = "../harness.rs"]
#[allow(dead_code, reason = "shared with ignis-bench; this benchmark uses part of it")]
mod harness;
#[path = "../stats.rs"]
#[allow(dead_code, reason = "shared with the other benchmarks")]
mod stats;
use harness::{Conn, KEY_ID, SECRET, Server, build_dir, own_range, row, verdict};
use stats::stats_ms;

const USAGE: &str = "usage: cluster [--warm N] [--bin-dir DIR]
  --warm N        warm invokes each way (default 4000, in 10 rounds)
  --bin-dir DIR   where ignis, ignis-init and the example's bootstrap are (default: this program's directory)";

const ROUNDS: usize = 10;
const FUNCTION: &str = "bench-cluster";
const INVOKE: &str = "/2015-03-31/functions/bench-cluster/invocations";
/// Functions made to time how soon the other front end knows them.
const VISIBILITY_SAMPLES: usize = 50;
/// Connections of the accept-rate runs, and how long each runs.
const CLIENTS: usize = 16;
const ACCEPT_FOR: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let mut warm = 4000;
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
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| runtime.block_on(run(warm, bin_dir)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

fn creds() -> Credentials {
    Credentials { access_key_id: KEY_ID.into(), secret_access_key: SECRET.into() }
}

async fn run(warm: usize, bin_dir: Option<PathBuf>) -> Result<(), String> {
    let dir = build_dir(bin_dir.as_deref())?;
    let ignis = dir.join("ignis");
    let zip = harness::zip_of("bootstrap", &std::fs::read(dir.join("bootstrap")).map_err(|e| e.to_string())?, 0o755)?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let etcd = EtcdCluster::start(1);
    let key_file = tmp.path().join("master.key");
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| e.to_string())?;
    std::fs::write(&key_file, key).map_err(|e| e.to_string())?;
    let objects = format!("file://{}", tmp.path().join("objects").display());
    std::fs::create_dir(tmp.path().join("objects")).map_err(|e| e.to_string())?;
    let key_path = key_file.to_string_lossy().to_string();
    let endpoints = etcd.endpoints_flag();
    let cluster_flags = |octet: u8| {
        let mut flags = own_range(&ignis, octet);
        flags.extend(["--runtimes", "provided.al2023", "--sandbox-pool", "1"].map(String::from));
        flags.extend(["--etcd".into(), endpoints.clone(), "--object-store".into(), objects.clone()]);
        flags.extend(["--master-key-file".into(), key_path.clone()]);
        flags
    };
    let start = |data: &str, flags: Vec<String>| {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Server::start(&ignis, &tmp.path().join(data), &flags)
    };
    let embedded = start("embedded", ["--runtimes", "provided.al2023", "--sandbox-pool", "1"].map(String::from).to_vec())?;
    let front = start("front-0", cluster_flags(211))?;
    let mut other = start("front-1", cluster_flags(212))?;

    let mut base = Conn::connect(&embedded.address, creds()).await?;
    let mut clustered = Conn::connect(&front.address, creds()).await?;
    let mut on_other = Conn::connect(&other.address, creds()).await?;
    deploy(&mut base, &zip).await?;
    deploy(&mut clustered, &zip).await?;

    // The other front end knows the function (within a watch's delay).
    let deployed = Instant::now();
    while on_other.request("GET", &format!("/2015-03-31/functions/{FUNCTION}"), &[], b"").await?.status != 200 {
        if deployed.elapsed() > Duration::from_secs(30) {
            return Err(format!("{FUNCTION} never showed on the other front end"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Which front end leads the function's partition (it runs its invocations; the other forwards them).
    let leader = settled_leader(&mut clustered, &mut on_other, FUNCTION).await?;
    let front_leads = leader == front.address;

    // Warm invokes, alternating rounds: the embedded server, the leader, the other; etcd's request count around the
    // cluster's rounds.
    let mut times: [Vec<Duration>; 3] = [Vec::with_capacity(warm), Vec::with_capacity(warm), Vec::with_capacity(warm)];
    let mut etcd_requests = 0u64;
    {
        let (led, forwarding) = if front_leads { (&mut clustered, &mut on_other) } else { (&mut on_other, &mut clustered) };
        let mut conns = [&mut base, led, forwarding];
        for conn in conns.iter_mut() {
            for _ in 0..50 {
                invoke(conn).await?;
            }
        }
        for round in 0..ROUNDS {
            for step in 0..3 {
                let way = (round + step) % 3;
                let before = if way > 0 { unary_requests(&etcd.endpoints()[0])? } else { 0 };
                for _ in 0..warm / ROUNDS {
                    times[way].push(invoke(conns[way]).await?);
                }
                if way > 0 {
                    etcd_requests += unary_requests(&etcd.endpoints()[0])? - before;
                }
            }
        }
    }
    let [embedded_times, led_times, forwarded_times] = times;

    // How soon a function made through one front end is known to the other: from CreateFunction's answer to the
    // first GetFunction of it that finds it, asked again and again.
    let mut shown = Vec::with_capacity(VISIBILITY_SAMPLES);
    for i in 0..VISIBILITY_SAMPLES {
        let name = format!("shown-{i}");
        let body = json!({
            "FunctionName": name, "Runtime": "provided.al2023", "Handler": "bootstrap", "Role": "arn:aws:iam::123456789012:role/bench",
            "Code": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(&zip) },
        });
        let reply = clustered.request("POST", "/2015-03-31/functions", &[], body.to_string().as_bytes()).await?;
        if reply.status != 201 {
            return Err(format!("CreateFunction answered {}: {}", reply.status, reply.text()));
        }
        let created = Instant::now();
        loop {
            let reply = on_other.request("GET", &format!("/2015-03-31/functions/{name}"), &[], b"").await?;
            if reply.status == 200 {
                break;
            }
            if created.elapsed() > Duration::from_secs(30) {
                return Err(format!("{name} never showed on the other front end"));
            }
        }
        shown.push(created.elapsed());
    }

    // Asynchronous accept rate, each way.
    let accepted_embedded = accept_rate(&embedded.address).await?;
    let accepted_cluster = accept_rate(&front.address).await?;
    // Queue send rate: the embedded server, the front end serving the queues, the other one.
    let sent_embedded = send_rate(&embedded.address).await?;
    let (home, away) = if serves_queues(&mut clustered).await? { (&front, &other) } else { (&other, &front) };
    let sent_home = send_rate(&home.address).await?;
    let sent_away = send_rate(&away.address).await?;

    // A killed front end's units: the other front end holds every unit of a reserved function, is killed, and
    // the first front end invokes it until it is admitted.
    let put = clustered.request("PUT", &format!("/2017-10-31/functions/{FUNCTION}/concurrency"), &[], br#"{"ReservedConcurrentExecutions":1}"#).await?;
    if put.status != 200 {
        return Err(format!("PutFunctionConcurrency answered {}: {}", put.status, put.text()));
    }
    // Once the other front end knows the reservation, it takes the one unit.
    let reserved = Instant::now();
    loop {
        let reply = on_other.request("GET", &format!("/2019-09-30/functions/{FUNCTION}/concurrency"), &[], b"").await?;
        if reply.status == 200 && reply.text().contains("\"ReservedConcurrentExecutions\":1") {
            break;
        }
        if reserved.elapsed() > Duration::from_secs(30) {
            return Err("the other front end never saw the reservation".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    invoke(&mut on_other).await?;
    // A partition the other front end leads: it moves to the first one when the other dies.
    let mut moving = None;
    for i in 0..256 {
        let name = format!("takeover-{i}");
        if settled_leader(&mut clustered, &mut on_other, &name).await? == other.address {
            moving = Some(name);
            break;
        }
    }
    let moving = moving.ok_or("the other front end leads none of 256 names' partitions")?;
    other.kill9();
    let killed = Instant::now();
    let (mut recovered, mut moved) = (None, None);
    while recovered.is_none() || moved.is_none() {
        if recovered.is_none() {
            let (_, reply) = clustered.timed("POST", INVOKE, &[], br#"{"name":"bench"}"#).await?;
            if reply.status == 200 {
                recovered = Some(killed.elapsed());
            }
        }
        if moved.is_none() && describe(&mut clustered, &moving).await?.0.as_deref() == Some(front.address.as_str()) {
            moved = Some(killed.elapsed());
        }
        if killed.elapsed() > Duration::from_secs(60) {
            return Err(format!("after 60 s: concurrency back {recovered:?}, partition moved {moved:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (recovered, moved) = (recovered.unwrap_or_default(), moved.unwrap_or_default());
    drop((embedded, front));
    // The killed front end, started again on its data directory and range, clears what it left (its sandboxes'
    // links and its firewall table), then stops.
    drop(start("front-1", cluster_flags(212))?);

    // A killed leader's sandbox on a worker host, taken over by the survivor: the first invocation through it.
    let (warm_after, cold) = first_after_takeover(&ignis, tmp.path(), &cluster_flags, &zip).await?;

    // Where asynchronous events go in a cluster: inline in etcd (what Ignis does), against payloads in the object
    // store with their metadata in etcd, written as the events' group-commit writer writes (one request at a time,
    // groups of 16 events).
    let engines = event_engines(&etcd, &tmp.path().join("objects")).await?;

    let (e, l, f) = (stats_ms(&embedded_times), stats_ms(&led_times), stats_ms(&forwarded_times));
    println!("Cluster front ends on etcd against the embedded server (the lambda_runtime example, client-side ms, kept connections, {ROUNDS} alternating rounds)");
    println!("  {:<34} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}", "warm invoke (ms)", "n", "min", "p50", "p90", "p99", "max");
    row("embedded server", e.as_ref(), "baseline");
    row("cluster, the partition's leader", l.as_ref(), "");
    row("cluster, forwarded to the leader", f.as_ref(), "");
    let p = |s: &Option<stats::Stats>, f: fn(&stats::Stats) -> f64| s.as_ref().map_or(f64::INFINITY, f);
    for (label, s) in [("the leader", &l), ("forwarded", &f)] {
        let added = p(s, |s| s.p50) - p(&e, |s| s.p50);
        println!(
            "  {label}: added at p50 {added:+.3} ms, at p99 {:+.3} ms (target: under 0.3 ms at p50): {}",
            p(s, |s| s.p99) - p(&e, |s| s.p99),
            verdict(added < 0.3)
        );
    }
    let cluster_invokes = led_times.len() + forwarded_times.len();
    let per_invoke = etcd_requests as f64 / cluster_invokes as f64;
    println!(
        "  etcd requests during the cluster's warm invokes: {etcd_requests} for {cluster_invokes} invokes, {per_invoke:.4} per invoke (target: about 0): {}",
        verdict(per_invoke < 0.01)
    );
    let shown = stats_ms(&shown);
    println!("A function made through one front end, known to the other (ms from CreateFunction's answer; target: within 1 s)");
    row("GetFunction finds it", shown.as_ref(), verdict(shown.as_ref().is_some_and(|s| s.max < 1000.0)));
    println!("Asynchronous accept rate ({CLIENTS} connections, {} s each)", ACCEPT_FOR.as_secs());
    println!("  embedded server           {accepted_embedded:>9.0} events/s  baseline");
    println!("  cluster front end (etcd)  {accepted_cluster:>9.0} events/s  {:.2}x", accepted_cluster / accepted_embedded);
    println!("SQS SendMessage rate ({CLIENTS} connections, {} s each; 100-byte bodies)", ACCEPT_FOR.as_secs());
    println!("  embedded server                         {sent_embedded:>9.0} messages/s  baseline");
    println!("  cluster front end serving the queues    {sent_home:>9.0} messages/s  {:.2}x", sent_home / sent_embedded);
    println!("  cluster front end handing them on       {sent_away:>9.0} messages/s  {:.2}x", sent_away / sent_embedded);
    println!("Asynchronous events' storage, {EVENTS} events in groups of {GROUP} (one writer, a one-member etcd on this machine's disk)");
    println!("  {:<10} {:>22} {:>34}", "payload", "inline in etcd (Ignis)", "object store + metadata in etcd");
    for (size, inline, split) in &engines {
        println!("  {:<10} {:>15.0} ev/s {:>27.0} ev/s  {:.2}x", format!("{} KiB", size / 1024), inline, split, inline / split);
    }
    println!(
        "A killed front end's concurrency back on another: {:.2} s after kill -9 (its etcd lease's life is {} s)",
        recovered.as_secs_f64(),
        ignis_etcd::presence::LEASE_TTL.as_secs()
    );
    println!(
        "A killed front end's partition led by another: {:.2} s after kill -9 (target: under 5 s): {}",
        moved.as_secs_f64(),
        verdict(moved < Duration::from_secs(5))
    );
    println!(
        "The first invoke through the survivor, the killed leader's sandbox on a worker host taken over: {:.3} ms (a cold start there: {:.3} ms, {:.1}x)",
        warm_after.as_secs_f64() * 1e3,
        cold.as_secs_f64() * 1e3,
        cold.as_secs_f64() / warm_after.as_secs_f64().max(1e-9)
    );
    Ok(())
}

/// Two front ends without local workers and a worker host joined through both: a function is invoked through the
/// leader of its partition (its sandbox on the host), the leader is killed, and once the survivor leads the
/// partition and the host lists the sandbox as the survivor's, the survivor's first invocation of it is timed;
/// against the first invocation of a function made then (a cold start on the same host).
async fn first_after_takeover(
    ignis: &std::path::Path,
    tmp: &std::path::Path,
    flags: &dyn Fn(u8) -> Vec<String>,
    zip: &[u8],
) -> Result<(Duration, Duration), String> {
    let start = |data: &str, octet: u8| {
        let mut flags = flags(octet);
        flags.push("--no-local-worker".into());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Server::start(ignis, &tmp.join(data), &flags)
    };
    let mut fronts = [start("takeover-0", 213)?, start("takeover-1", 214)?];
    let host = Server::worker(ignis, &[&fronts[0].address, &fronts[1].address], &tmp.join("takeover-worker"), 215)?;
    let mut conns = [Conn::connect(&fronts[0].address, creds()).await?, Conn::connect(&fronts[1].address, creds()).await?];
    let mut on_host = Conn::connect(&host.address, creds()).await?;
    deploy_named(&mut conns[0], "kept", zip).await?;
    known(&mut conns[1], "kept").await?;
    let leader = {
        let [first, second] = &mut conns;
        settled_leader(first, second, "kept").await?
    };
    let (dead, survivor) = if fronts[0].address == leader { (0, 1) } else { (1, 0) };
    let survivor_address = fronts[survivor].address.clone();
    for _ in 0..3 {
        invoke_named(&mut conns[dead], "kept").await?;
    }
    let owners = |listed: &serde_json::Value| -> Vec<i64> {
        listed["Sandboxes"].as_array().into_iter().flatten().filter_map(|s| s["Owner"]["FrontEnd"].as_i64()).collect()
    };
    let before = owners(&sandboxes(&mut on_host).await?);
    if before.len() != 1 {
        return Err(format!("the host runs {} sandboxes, not the leader's one", before.len()));
    }
    fronts[dead].kill9();
    let killed = Instant::now();
    loop {
        let leads = describe(&mut conns[survivor], "kept").await?.0.as_deref() == Some(survivor_address.as_str());
        let now = owners(&sandboxes(&mut on_host).await?);
        if leads && now.len() == 1 && now[0] != before[0] && now[0] != 0 {
            break;
        }
        if killed.elapsed() > Duration::from_secs(60) {
            return Err("the survivor never took the killed leader's sandbox over".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let warm = invoke_named(&mut conns[survivor], "kept").await?;
    deploy_named(&mut conns[survivor], "fresh", zip).await?;
    let cold = invoke_named(&mut conns[survivor], "fresh").await?;
    drop(host);
    // The killed front end, started again on its data directory, clears what it left; then stops.
    drop(start(&format!("takeover-{dead}"), 213 + dead as u8)?);
    Ok((warm, cold))
}

/// What the worker host at `conn` lists (`GET /sandboxes`).
async fn sandboxes(conn: &mut Conn) -> Result<serde_json::Value, String> {
    let (_, reply) = conn.timed_for("ignis", "GET", "/sandboxes", &[], b"").await?;
    if reply.status != 200 {
        return Err(format!("GET /sandboxes answered {}: {}", reply.status, reply.text()));
    }
    serde_json::from_slice(&reply.body).map_err(|e| e.to_string())
}

/// Waits (up to 30 s) until `conn`'s front end knows function `name`.
async fn known(conn: &mut Conn, name: &str) -> Result<(), String> {
    let started = Instant::now();
    while conn.request("GET", &format!("/2015-03-31/functions/{name}"), &[], b"").await?.status != 200 {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("{name} never showed"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The leader of `function`'s partition as `conn`'s front end sees it, and whether it is the one that should lead it.
async fn describe(conn: &mut Conn, function: &str) -> Result<(Option<String>, bool), String> {
    let path = format!("/ignis/partitions?Function={function}");
    let (_, reply) = conn.timed_for("ignis", "GET", &path, &[], b"").await?;
    if reply.status != 200 {
        return Err(format!("GET /ignis/partitions answered {}: {}", reply.status, reply.text()));
    }
    let answer: serde_json::Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
    Ok((answer["Leader"].as_str().map(str::to_string), answer["Settled"] == true))
}

/// The leader of `function`'s partition once both front ends see the one that should lead it leading it.
async fn settled_leader(one: &mut Conn, other: &mut Conn, function: &str) -> Result<String, String> {
    let started = Instant::now();
    loop {
        let (a, b) = (describe(one, function).await?, describe(other, function).await?);
        if let (Some(leader), true) = (&a.0, a.1 && a == b) {
            return Ok(leader.clone());
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("the front ends never agreed on the leader of {function}'s partition"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn deploy(conn: &mut Conn, zip: &[u8]) -> Result<(), String> {
    deploy_named(conn, FUNCTION, zip).await
}

async fn deploy_named(conn: &mut Conn, name: &str, zip: &[u8]) -> Result<(), String> {
    let body = json!({
        "FunctionName": name, "Runtime": "provided.al2023", "Handler": "bootstrap", "MemorySize": 512,
        "Role": "arn:aws:iam::123456789012:role/bench", "Code": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip) },
    });
    let reply = conn.request("POST", "/2015-03-31/functions", &[], body.to_string().as_bytes()).await?;
    if reply.status != 201 {
        return Err(format!("CreateFunction answered {}: {}", reply.status, reply.text()));
    }
    Ok(())
}

async fn invoke(conn: &mut Conn) -> Result<Duration, String> {
    let (elapsed, reply) = conn.timed("POST", INVOKE, &[], br#"{"name":"bench"}"#).await?;
    harness::check_invoke(&reply)?;
    Ok(elapsed)
}

async fn invoke_named(conn: &mut Conn, name: &str) -> Result<Duration, String> {
    let path = format!("/2015-03-31/functions/{name}/invocations");
    let (elapsed, reply) = conn.timed("POST", &path, &[], br#"{"name":"bench"}"#).await?;
    harness::check_invoke(&reply)?;
    Ok(elapsed)
}

/// `Event` invokes accepted per second, from [`CLIENTS`] connections for [`ACCEPT_FOR`].
async fn accept_rate(address: &str) -> Result<f64, String> {
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut conn = Conn::connect(address, creds()).await?;
        clients.push(tokio::spawn(async move {
            let mut accepted = 0u64;
            while started.elapsed() < ACCEPT_FOR {
                let reply = conn.request("POST", INVOKE, &[("x-amz-invocation-type", "Event")], br#"{"name":"bench"}"#).await?;
                if reply.status != 202 {
                    return Err(format!("Event invoke answered {}: {}", reply.status, reply.text()));
                }
                accepted += 1;
            }
            Ok::<u64, String>(accepted)
        }));
    }
    let mut total = 0;
    for client in clients {
        total += client.await.map_err(|e| e.to_string())??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Whether `conn`'s front end serves the cluster's queues (`GET /ignis/queue-home`).
async fn serves_queues(conn: &mut Conn) -> Result<bool, String> {
    let (_, reply) = conn.timed_for("ignis", "GET", "/ignis/queue-home", &[], b"").await?;
    let answer: serde_json::Value = serde_json::from_slice(&reply.body).map_err(|e| format!("{}: {e}", reply.text()))?;
    Ok(answer["ServedHere"] == true)
}

/// One SQS call through `conn`; its answer, which must be 200.
async fn sqs(conn: &mut Conn, action: &str, body: &serde_json::Value) -> Result<serde_json::Value, String> {
    let target = format!("AmazonSQS.{action}");
    let headers = [("x-amz-target", target.as_str()), ("content-type", "application/x-amz-json-1.0")];
    let (_, reply) = conn.timed_for("sqs", "POST", "/", &headers, body.to_string().as_bytes()).await?;
    if reply.status != 200 {
        return Err(format!("{action} answered {}: {}", reply.status, reply.text()));
    }
    serde_json::from_slice(&reply.body).map_err(|e| e.to_string())
}

/// `SendMessage`s answered per second, from [`CLIENTS`] connections for [`ACCEPT_FOR`], to a queue of its own
/// made through `address`.
async fn send_rate(address: &str) -> Result<f64, String> {
    let mut conn = Conn::connect(address, creds()).await?;
    let name = format!("bench-{}", address.replace(['.', ':'], "-"));
    let url = sqs(&mut conn, "CreateQueue", &json!({ "QueueName": name })).await?["QueueUrl"].as_str().unwrap_or_default().to_string();
    let body = json!({ "QueueUrl": url, "MessageBody": "x".repeat(100) });
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut conn = Conn::connect(address, creds()).await?;
        let body = body.clone();
        clients.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while started.elapsed() < ACCEPT_FOR {
                sqs(&mut conn, "SendMessage", &body).await?;
                sent += 1;
            }
            Ok::<u64, String>(sent)
        }));
    }
    let mut total = 0;
    for client in clients {
        total += client.await.map_err(|e| e.to_string())??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Events per payload size in the storage comparison, and per group.
const EVENTS: usize = 512;
const GROUP: usize = 16;

/// Events per second stored each way, per payload size: `(size, inline in etcd, object store + etcd)`.
async fn event_engines(etcd: &EtcdCluster, objects: &std::path::Path) -> Result<Vec<(usize, f64, f64)>, String> {
    use ignis_chunks::ChunkStore;
    use ignis_pollers::tables::{EventChange, EventStorage};
    let client = ignis_etcd::Etcd::connect(&etcd.endpoints()).await.map_err(|e| e.to_string())?;
    let chunks = ignis_chunks::DirectoryChunkStore::open(objects.join("bench-events")).map_err(|e| e.to_string())?;
    let mut rates = Vec::new();
    for (round, size) in [1024usize, 64 * 1024, 256 * 1024].into_iter().enumerate() {
        let origin = format!("bench-{round}");
        let inline = ignis_etcd::EtcdEventStorage::new(client.clone(), origin.clone(), tokio::runtime::Handle::current());
        let meta = br#"{"account":"123456789012","function":"f","request_id":"00000000-0000-0000-0000-000000000000","accepted_ms":0,"trace_id":"t"}"#;
        let started = Instant::now();
        for group in 0..EVENTS / GROUP {
            let changes: Vec<EventChange> = (0..GROUP)
                .map(|i| {
                    let id = (group * GROUP + i) as u64;
                    let mut payload = vec![0u8; size];
                    payload[..8].copy_from_slice(&id.to_be_bytes());
                    EventChange::Put { id, meta: meta.to_vec(), payload }
                })
                .collect();
            inline.apply(&changes).map_err(|e| e.to_string())?;
        }
        let inline_rate = EVENTS as f64 / started.elapsed().as_secs_f64();
        let started = Instant::now();
        for group in 0..EVENTS / GROUP {
            let mut ops = Vec::with_capacity(GROUP);
            for i in 0..GROUP {
                let id = (group * GROUP + i) as u64;
                let mut payload = vec![1u8; size];
                payload[..8].copy_from_slice(&id.to_be_bytes());
                payload[8] = round as u8;
                let stored = chunks.put(bytes::Bytes::from(payload)).await.map_err(|e| e.to_string())?;
                let mut value = meta.to_vec();
                value.extend_from_slice(stored.digest.to_string().as_bytes());
                ops.push(etcd_client::TxnOp::put(format!("/bench/split-{round}/{id:020}"), value, None));
            }
            client.txn(etcd_client::Txn::new().and_then(ops)).await.map_err(|e| e.to_string())?;
        }
        rates.push((size, inline_rate, EVENTS as f64 / started.elapsed().as_secs_f64()));
    }
    Ok(rates)
}

/// The unary gRPC requests the etcd member at `endpoint` has handled (its `/metrics`).
fn unary_requests(endpoint: &str) -> Result<u64, String> {
    let address = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).map_err(|e| format!("etcd metrics: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(|e| format!("etcd metrics: {e}"))?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with("grpc_server_handled_total{") && line.contains("grpc_type=\"unary\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}
