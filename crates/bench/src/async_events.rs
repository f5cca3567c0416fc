//! `ignis-bench --async`: durable asynchronous invocation.
//!
//! - **Accept rate**: `clients` connections send `InvocationType: Event` invokes of the example
//!   function for `--duration`; each 202 means the event is fsync'd in the server's store. The
//!   events run meanwhile (the load is real). Baselines, side by side:
//!   - the same loop with `InvocationType: DryRun` (the same HTTP, SigV4, routing and lookup,
//!     no storage): the ceiling of the front end;
//!   - one durable redb commit per event, without batching, from as many threads, in this
//!     process on a store of its own: what the accept rate would be without group commit.
//! - **Accept only**: the same with the function's reserved concurrency at 0 (events are stored
//!   and wait, throttled), then the reservation is lifted and the backlog drains: its rate is
//!   how fast stored events are run.
//! - **202 → START**: for every accepted event, the time from the client holding its 202 to the
//!   `START` line of its invocation (the server's log timestamp, same clock, ms resolution), at
//!   rest (one event at a time, a warm sandbox waiting) and for the events of the load runs.
//! - **Previous build** (`--previous-bin-dir`): a second server from that build, started with the
//!   same flags, goes through the same phases: events at rest alternate between the two servers
//!   (one each per gap), and each load run (DryRun, Event, the wait for its events to start) and
//!   the held run is done on one server, then on the other, the order swapped each run. A
//!   "current / previous" section follows the table.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ignis_pollers::tables::{EventChange, EventStorage, RedbEventStorage};
use ignis_sigv4::Credentials;
use serde_json::json;

use super::{Args, Conn, FUNCTION, KEY_ID, Load, PAYLOAD, Reply, SECRET, Server, Throughput, deploy, load, row, stats, stats_ms, wall_ms};

/// Events at rest, one at a time.
const IDLE_SAMPLES: usize = 200;
const IDLE_GAP: Duration = Duration::from_millis(20);
/// The accept-rate runs: concurrent clients, and the most requests in one run.
const CLIENTS: [usize; 2] = [16, 64];
const LIMIT: u64 = 50_000;
const ACCEPT_TARGET: f64 = 5000.0;
const IDLE_START_TARGET_MS: f64 = 10.0;

fn accepted(reply: &Reply) -> Result<(), String> {
    if reply.status == 202 { Ok(()) } else { Err(format!("Event invoke answered {}: {}", reply.status, reply.text())) }
}

fn dry_run(reply: &Reply) -> Result<(), String> {
    if reply.status == 204 { Ok(()) } else { Err(format!("DryRun answered {}: {}", reply.status, reply.text())) }
}

/// Measures `ignis` (and, if given, the `previous` build's `ignis` alongside it).
pub fn run(args: &Args, ignis: &std::path::Path, previous: Option<&std::path::Path>, zip: &[u8]) -> Result<(), String> {
    let tmp = tempfile::Builder::new().prefix("ignis-bench-async-").tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    // A throttled event waits at most a second between looks (the back-off cap), so the backlog
    // of the accept-only run drains as soon as the reservation is lifted.
    let mut server = Server::start(ignis, &tmp.path().join("data"), &["--async-retry-delay", "1"])?;
    eprintln!("ignis-bench: ignis server (pid {}) on {}", server.pid(), server.address);
    let mut previous_server = match previous {
        Some(exe) => {
            let mut extra = crate::harness::own_range(exe, 210);
            extra.extend(["--async-retry-delay".to_string(), "1".to_string()]);
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            let previous = Server::start(exe, &tmp.path().join("data-previous"), &extra)?;
            eprintln!("ignis-bench: previous build's ignis server (pid {}) on {}", previous.pid(), previous.address);
            Some(previous)
        }
        None => None,
    };
    let mut addresses = vec![server.address.as_str()];
    addresses.extend(previous_server.as_ref().map(|s| s.address.as_str()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(measure(args, &addresses, zip));
    drop(runtime);
    let mut stopped = server.stop();
    if let Some(previous) = &mut previous_server {
        stopped = stopped.and(previous.stop());
    }
    let mut result = result?;
    eprintln!("ignis-bench: one durable commit per event, without batching");
    let unbatched: Vec<(usize, f64)> = CLIENTS
        .iter()
        .map(|&clients| (clients, per_event_commits(&tmp.path().join(format!("unbatched-{clients}")), clients, args.duration)))
        .collect();
    let current = result.remove(0);
    print(&current, &unbatched);
    if let (Some(previous), Some(dir)) = (result.first(), &args.previous_bin_dir) {
        print_against(&current, previous, dir);
    }
    stopped
}

struct Run {
    clients: usize,
    events: Throughput,
    dry_run: Throughput,
    /// 202 → START of the run's events, ms.
    starts: Vec<f64>,
}

struct Measured {
    idle: Vec<f64>,
    idle_lost: usize,
    runs: Vec<Run>,
    /// Accepted while the function could not run, and how long the backlog took to start.
    held: Throughput,
    drain: Duration,
}

/// One server under measurement: its control connection and how many events it has started.
struct Target<'a> {
    address: &'a str,
    conn: Conn,
    /// Invocations that have started (or will) on it, so far.
    expected: usize,
}

/// The phases, each on every server of `addresses` in turn; one [`Measured`] per address.
async fn measure(args: &Args, addresses: &[&str], zip: &[u8]) -> Result<Vec<Measured>, String> {
    let creds = Credentials { access_key_id: KEY_ID.into(), secret_access_key: SECRET.into() };
    let path = format!("/2015-03-31/functions/{FUNCTION}/invocations");
    let mut targets = Vec::with_capacity(addresses.len());
    for &address in addresses {
        let mut conn = Conn::connect(address, creds.clone()).await?;
        deploy(&mut conn, zip).await?;
        // A warm sandbox.
        conn.request("POST", &path, &[], PAYLOAD).await?;
        targets.push(Target { address, conn, expected: 0 });
    }

    eprintln!("ignis-bench: {IDLE_SAMPLES} events at rest, {} ms apart", IDLE_GAP.as_millis());
    let mut idle_events: Vec<Vec<(String, f64)>> = targets.iter().map(|_| Vec::with_capacity(IDLE_SAMPLES)).collect();
    for _ in 0..IDLE_SAMPLES {
        for (target, events) in targets.iter_mut().zip(&mut idle_events) {
            let reply = target.conn.request("POST", &path, &[("x-amz-invocation-type", "Event")], PAYLOAD).await?;
            accepted(&reply)?;
            let id = reply.header("x-amzn-requestid").unwrap_or_default().to_string();
            events.push((id, wall_ms()));
        }
        tokio::time::sleep(IDLE_GAP).await;
    }
    let mut measured = Vec::with_capacity(targets.len());
    for (target, events) in targets.iter_mut().zip(&idle_events) {
        target.expected = IDLE_SAMPLES;
        let started = start_times(&mut target.conn, target.expected).await?;
        let idle: Vec<f64> = events.iter().filter_map(|(id, at)| Some(*started.get(id)? - at)).collect();
        let idle_lost = IDLE_SAMPLES - idle.len();
        measured.push(Measured { idle, idle_lost, runs: Vec::new(), held: Throughput::default(), drain: Duration::ZERO });
    }

    // Each load run on one server and then the other, the order swapped every run.
    let mut order: Vec<usize> = (0..targets.len()).collect();
    for clients in CLIENTS {
        for &n in &order {
            let target = &mut targets[n];
            eprintln!(
                "ignis-bench: {clients} clients for {:.1} s (or {LIMIT} requests): DryRun, then Event{}",
                args.duration.as_secs_f64(),
                if n > 0 { " (previous build)" } else { "" }
            );
            let dry = Load { path: &path, headers: &[("x-amz-invocation-type", "DryRun")], check: dry_run, clients };
            let dry_run = load(target.address, &creds, dry, LIMIT, args.duration).await?;
            let event = Load { path: &path, headers: &[("x-amz-invocation-type", "Event")], check: accepted, clients };
            let events = load(target.address, &creds, event, LIMIT, args.duration).await?;
            target.expected += events.accepted.len();
            eprintln!("ignis-bench: waiting for the {} events to start", events.accepted.len());
            let started = start_times(&mut target.conn, target.expected).await?;
            let starts = events.accepted.iter().filter_map(|(id, at)| Some(*started.get(id)? - at)).collect();
            measured[n].runs.push(Run { clients, events, dry_run, starts });
        }
        order.reverse();
    }

    let clients = CLIENTS[CLIENTS.len() - 1];
    let concurrency = format!("/2017-10-31/functions/{FUNCTION}/concurrency");
    for &n in &order {
        let target = &mut targets[n];
        eprintln!(
            "ignis-bench: {clients} clients, the function held at reserved concurrency 0, then drained{}",
            if n > 0 { " (previous build)" } else { "" }
        );
        let reply = target.conn.request("PUT", &concurrency, &[], br#"{"ReservedConcurrentExecutions":0}"#).await?;
        if reply.status != 200 {
            return Err(format!("PutFunctionConcurrency answered {}: {}", reply.status, reply.text()));
        }
        let event = Load { path: &path, headers: &[("x-amz-invocation-type", "Event")], check: accepted, clients };
        let held = load(target.address, &creds, event, LIMIT, args.duration).await?;
        let released = Instant::now();
        target.conn.request("DELETE", &concurrency, &[], b"").await?;
        target.expected += held.accepted.len();
        start_times(&mut target.conn, target.expected).await?;
        measured[n].drain = released.elapsed();
        measured[n].held = held;
    }
    Ok(measured)
}

/// The `START` time of every invocation of the function (ms since the epoch), by request id,
/// once `at_least` have started (or after 120 s).
async fn start_times(conn: &mut Conn, at_least: usize) -> Result<std::collections::HashMap<String, f64>, String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut starts = std::collections::HashMap::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = json!({ "logGroupName": format!("/aws/lambda/{FUNCTION}"), "filterPattern": "START" });
            if let Some(t) = &token {
                body["nextToken"] = json!(t);
            }
            let reply = conn.logs("FilterLogEvents", &body).await?;
            if reply.status != 200 {
                return Err(format!("FilterLogEvents answered {}: {}", reply.status, reply.text()));
            }
            let page: serde_json::Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
            for event in page["events"].as_array().into_iter().flatten() {
                let Some(rest) = event["message"].as_str().and_then(|m| m.strip_prefix("START RequestId: ")) else { continue };
                let id = rest.split_whitespace().next().unwrap_or_default().to_string();
                starts.insert(id, event["timestamp"].as_f64().unwrap_or_default());
            }
            match page["nextToken"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        // The warm-up invoke and the DryRuns: the warm-up has a START too.
        if starts.len() > at_least || Instant::now() > deadline {
            return Ok(starts);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Events per second stored with one durable commit each, from `threads` threads, for `duration`.
fn per_event_commits(dir: &std::path::Path, threads: usize, duration: Duration) -> f64 {
    let Ok(store) = ignis_store::Store::open(dir) else { return 0.0 };
    let Ok(store) = RedbEventStorage::open(Arc::new(store)) else { return 0.0 };
    let store = Arc::new(store);
    let next = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (store, next, stop) = (store.clone(), next.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) && done < LIMIT {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    let change = EventChange::Put { id, meta: br#"{"account":"bench"}"#.to_vec(), payload: PAYLOAD.to_vec() };
                    if store.apply(&[change]).is_err() {
                        break;
                    }
                    done += 1;
                }
                done
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    total as f64 / started.elapsed().as_secs_f64()
}

fn print(m: &Measured, unbatched: &[(usize, f64)]) {
    let line = "-".repeat(104);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!("Ignis asynchronous invocation  ({cpus} CPUs, loopback; function: examples/hello-rust)");
    println!("{line}");
    println!("  {:<34} {:>10} {:>10} {:>10}  note", "accept rate (requests/s)", "Event 202", "DryRun 204", "ratio");
    println!("{line}");
    for run in &m.runs {
        let (e, d) = (run.events.rate(), run.dry_run.rate());
        println!(
            "  {:<34} {:>10.0} {:>10.0} {:>9.2}x  errors {}/{}{}",
            format!("{} clients", run.clients),
            e,
            d,
            e / d.max(1e-9),
            run.events.errors,
            run.dry_run.errors,
            run.events.first_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
        );
    }
    for (threads, rate) in unbatched {
        let event = m.runs.iter().find(|r| r.clients == *threads).map_or(0.0, |r| r.events.rate());
        println!(
            "  {:<34} {:>10.0} {:>10} {:>9.2}x  Event 202 / one fsync'd commit per event",
            format!("per-event commits, {threads} threads"),
            rate,
            "",
            event / rate.max(1e-9)
        );
    }
    let dry = m.runs.last().map_or(0.0, |r| r.dry_run.rate());
    println!(
        "  {:<34} {:>10.0} {:>10.0} {:>9.2}x  function at reserved concurrency 0: storing only",
        format!("accept only, {} clients", CLIENTS[CLIENTS.len() - 1]),
        m.held.rate(),
        dry,
        m.held.rate() / dry.max(1e-9)
    );
    println!(
        "  {:<34} {:>10.0} {:>10} {:>10}  {} stored events started in {:.2} s once released",
        "backlog drain (events started/s)",
        m.held.accepted.len() as f64 / m.drain.as_secs_f64().max(1e-9),
        "",
        "",
        m.held.accepted.len(),
        m.drain.as_secs_f64()
    );
    let best = m.runs.iter().map(|r| r.events.rate()).chain([m.held.rate()]).fold(0.0, f64::max);
    println!("  target: >= {ACCEPT_TARGET:.0} accepted events/s: {}", if best >= ACCEPT_TARGET { "MET" } else { "MISSED" });
    println!("{line}");
    println!("  {:<34} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}", "latency (ms)", "n", "min", "p50", "p90", "p99", "max");
    println!("{line}");
    let idle = stats(&mut m.idle.clone());
    let note = match &idle {
        Some(s) => format!("p50 < {IDLE_START_TARGET_MS} ms: {}", if s.p50 < IDLE_START_TARGET_MS { "MET" } else { "MISSED" }),
        None => String::new(),
    };
    row("202 -> START, at rest", idle.as_ref(), &note);
    if m.idle_lost > 0 {
        println!("  ({} events at rest had no START line)", m.idle_lost);
    }
    for run in &m.runs {
        row(&format!("Event round trip, {} clients", run.clients), stats_ms(&run.events.latencies).as_ref(), "202 = fsync'd");
        row(&format!("DryRun round trip, {} clients", run.clients), stats_ms(&run.dry_run.latencies).as_ref(), "baseline: no storage");
        row(&format!("202 -> START, {} clients", run.clients), stats(&mut run.starts.clone()).as_ref(), "queueing behind the load");
    }
    println!("{line}");
    println!("202 -> START compares the client's clock when it holds the 202 with the server's START log time");
    println!("(same machine, ms resolution): a negative value means the invocation started before the 202 arrived.");
}

/// The previous build's figures beside the current one's, as current / previous.
fn print_against(current: &Measured, previous: &Measured, dir: &std::path::Path) {
    let line = "-".repeat(104);
    println!("{line}");
    println!("Previous build: {} (same phases, alternating with the current build)", dir.display());
    println!("  {:<34} {:>10} {:>10} {:>10}  note", "rate (per second)", "current", "previous", "ratio");
    let rate = |label: &str, c: f64, p: f64, note: &str| {
        println!("  {label:<34} {c:>10.0} {p:>10.0} {:>9.3}x  {note}", c / p.max(1e-9));
    };
    for (c, p) in current.runs.iter().zip(&previous.runs) {
        rate(&format!("Event 202, {} clients", c.clients), c.events.rate(), p.events.rate(), "below 1: fewer accepted");
        rate(&format!("DryRun 204, {} clients", c.clients), c.dry_run.rate(), p.dry_run.rate(), "");
    }
    rate(&format!("accept only, {} clients", CLIENTS[CLIENTS.len() - 1]), current.held.rate(), previous.held.rate(), "");
    let drained = |m: &Measured| m.held.accepted.len() as f64 / m.drain.as_secs_f64().max(1e-9);
    rate("backlog drain (events started/s)", drained(current), drained(previous), "");
    println!(
        "  {:<34} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "latency (ms)", "p50 now", "p50 prev", "p99 now", "p99 prev", "p50 c/p", "p99 c/p"
    );
    let ratio = |label: &str, c: Option<super::stats::Stats>, p: Option<super::stats::Stats>| match (c, p) {
        (Some(c), Some(p)) => {
            // 202 -> START can be 0 or below (ms resolution, the START before the 202 is read).
            let r = |a: f64, b: f64| if a > 0.0 && b > 0.0 { format!("{:.3}x", a / b) } else { "-".into() };
            println!(
                "  {label:<34} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>8}",
                c.p50,
                p.p50,
                c.p99,
                p.p99,
                r(c.p50, p.p50),
                r(c.p99, p.p99)
            );
        }
        _ => println!("  {label:<34} {:>9}", "no data"),
    };
    ratio("202 -> START, at rest", stats(&mut current.idle.clone()), stats(&mut previous.idle.clone()));
    for (c, p) in current.runs.iter().zip(&previous.runs) {
        ratio(&format!("Event round trip, {} clients", c.clients), stats_ms(&c.events.latencies), stats_ms(&p.events.latencies));
        ratio(&format!("DryRun round trip, {} clients", c.clients), stats_ms(&c.dry_run.latencies), stats_ms(&p.dry_run.latencies));
        ratio(&format!("202 -> START, {} clients", c.clients), stats(&mut c.starts.clone()), stats(&mut p.starts.clone()));
    }
    println!("{line}");
}
