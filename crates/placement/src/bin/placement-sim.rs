//! Placement simulation: replays one synthetic trace of sandbox lifetimes
//! against round-robin, least-loaded and Ignis's packing, and prints hosts
//! used, utilisation, refusals and decision time.
//!
//! The trace (deterministic, seeded xorshift):
//! - `--functions` functions with Zipf(1) popularity; each has one memory size
//!   from {128, 256, 512, 1024, 1769, 3008} MB (weights 30/25/20/15/6/4%).
//! - Bursts arrive as a Poisson process whose rate follows a day (trough at
//!   0 h, peak at 12 h, peak = 3 × trough) with a few fleet-wide surges
//!   (×2.5 for 10 minutes). A burst is one function (by popularity) starting
//!   1 sandbox (60%) or a Pareto(2, α=1.2) number capped at 100, spread over 2 s.
//! - Each sandbox lives a Pareto(5 min, α=1.5) time capped at 8 h: its work
//!   plus the keep-alive, after which it is reclaimed.
//!
//! Two fleets, identical hosts (`--host-gib`, `--host-cpus`):
//! - *Elastic*: a host is opened when a decision finds no room (no boot
//!   delay) and released the moment it holds no sandbox. Refusals happen only
//!   at `--max-hosts`.
//! - *Fixed*: `--fleet` hosts (default 90% of least-loaded's elastic peak), all
//!   there from the start; what does not fit is refused.
//!
//! "Hosts (mean)" is host-time / period: the hosts holding at least one
//! sandbox, averaged over the period, which is what a fleet that releases
//! empty hosts pays for. "Hosts (peak)" is the most held at once.
//! Decision time is measured around each `place` call (std::time::Instant);
//! a placement that opened a host counts both calls.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::process::ExitCode;
use std::time::Instant;

use ignis_placement::{FunctionKey, LeastLoaded, Needs, Packing, Placement, RoundRobin, Strategy, Worker, WorkerId};

const SIZES_MB: [u32; 6] = [128, 256, 512, 1024, 1769, 3008];
const SIZE_WEIGHTS: [u32; 6] = [30, 25, 20, 15, 6, 4];
const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;

struct Args {
    seed: u64,
    functions: u32,
    hours: u64,
    bursts_per_sec: f64,
    host_gib: u64,
    host_cpus: u32,
    target_percent: u64,
    mix_window: usize,
    fleet: Option<usize>,
    max_hosts: usize,
}

const USAGE: &str = "placement-sim [--seed N] [--functions N] [--hours H] [--bursts-per-sec R] [--host-gib G] \
                     [--host-cpus C] [--target PERCENT] [--mix N] [--fleet N] [--max-hosts N]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seed: 1,
        functions: 5000,
        hours: 24,
        bursts_per_sec: 3.0,
        host_gib: 64,
        host_cpus: 32,
        target_percent: 90,
        mix_window: 8,
        fleet: None,
        max_hosts: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_string());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |_| format!("{flag}: bad value {value:?}");
        match flag.as_str() {
            "--seed" => args.seed = value.parse().map_err(bad)?,
            "--functions" => args.functions = value.parse().map_err(bad)?,
            "--hours" => args.hours = value.parse().map_err(bad)?,
            "--bursts-per-sec" => args.bursts_per_sec = value.parse().map_err(|_| format!("{flag}: bad value"))?,
            "--host-gib" => args.host_gib = value.parse().map_err(bad)?,
            "--host-cpus" => args.host_cpus = value.parse().map_err(bad)?,
            "--target" => args.target_percent = value.parse().map_err(bad)?,
            "--mix" => args.mix_window = value.parse().map_err(bad)?,
            "--fleet" => args.fleet = Some(value.parse().map_err(bad)?),
            "--max-hosts" => args.max_hosts = value.parse().map_err(bad)?,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    let ok = args.functions > 0
        && (1..=24 * 365).contains(&args.hours)
        && args.bursts_per_sec > 0.0
        && args.bursts_per_sec <= 1000.0
        && args.host_gib > 0
        && (1..=100).contains(&args.target_percent)
        && args.mix_window >= 1
        && args.max_hosts > 0;
    if !ok {
        return Err(format!("out of range\n{USAGE}"));
    }
    Ok(args)
}

/// xorshift64*: small, deterministic, good enough for a trace.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn exp(&mut self, rate: f64) -> f64 {
        -(1.0 - self.unit()).ln() / rate
    }

    fn pareto(&mut self, min: f64, alpha: f64) -> f64 {
        min / (1.0 - self.unit()).powf(1.0 / alpha)
    }
}

#[derive(Clone, Copy)]
struct Arrival {
    at_ms: u64,
    function: u32,
    memory_mb: u32,
    life_ms: u64,
}

struct Trace {
    arrivals: Vec<Arrival>,
    bursts: u64,
    period_ms: u64,
}

fn make_trace(args: &Args) -> Trace {
    let mut rng = Rng::new(args.seed);
    let period_ms = args.hours * HOUR_MS;
    let memory: Vec<u32> = (0..args.functions)
        .map(|_| {
            let mut pick = rng.below(100) as u32;
            let mut i = 0;
            while pick >= SIZE_WEIGHTS[i] {
                pick -= SIZE_WEIGHTS[i];
                i += 1;
            }
            SIZES_MB[i]
        })
        .collect();
    // Zipf(1): function i has weight 1 / (i + 1).
    let mut cdf = Vec::with_capacity(args.functions as usize);
    let mut sum = 0.0;
    for i in 0..args.functions {
        sum += 1.0 / f64::from(i + 1);
        cdf.push(sum);
    }
    // Fleet-wide surges: 6 a day, 10 minutes each, at random times.
    let surges: Vec<u64> = (0..(6 * args.hours).div_ceil(24)).map(|_| rng.below(period_ms)).collect();
    let day = 24.0 * HOUR_MS as f64;
    let rate_at = |t: u64| {
        let diurnal = 1.0 - 0.5 * (2.0 * std::f64::consts::PI * t as f64 / day).cos();
        let surge = if surges.iter().any(|&s| t >= s && t < s + 10 * MINUTE_MS) { 2.5 } else { 1.0 };
        args.bursts_per_sec * diurnal * surge
    };
    let max_rate = args.bursts_per_sec * 1.5 * 2.5;
    let mut arrivals = Vec::new();
    let mut bursts = 0;
    let mut t = 0.0;
    // Thinning: candidate events at the maximum rate, kept with probability rate(t) / max.
    let max_steps = (max_rate * period_ms as f64 / 1000.0 * 4.0) as u64 + 1000;
    for _ in 0..max_steps {
        t += rng.exp(max_rate) * 1000.0;
        if t >= period_ms as f64 {
            break;
        }
        let at = t as u64;
        if rng.unit() * max_rate >= rate_at(at) {
            continue;
        }
        bursts += 1;
        let u = rng.unit() * sum;
        let function = cdf.partition_point(|&c| c < u).min(cdf.len() - 1) as u32;
        let size = if rng.unit() < 0.6 { 1 } else { (rng.pareto(2.0, 1.2) as u64).min(100) };
        for _ in 0..size {
            let life = rng.pareto(5.0 * MINUTE_MS as f64, 1.5).min(8.0 * HOUR_MS as f64) as u64;
            arrivals.push(Arrival {
                at_ms: (at + rng.below(2000)).min(period_ms - 1),
                function,
                memory_mb: memory[function as usize],
                life_ms: life,
            });
        }
    }
    arrivals.sort_by_key(|a| a.at_ms);
    Trace { arrivals, bursts, period_ms }
}

/// Hosts: an elastic fleet (opens on refusal, releases when empty) or a fixed one.
#[derive(Clone, Copy)]
enum Fleet {
    Elastic { max_hosts: usize },
    Fixed { hosts: usize },
}

#[derive(Default)]
struct Stats {
    placements: u64,
    refused: u64,
    hosts_mean: f64,
    hosts_peak: usize,
    hosts_touched: usize,
    util_mean: f64,
    util_peak: f64,
    bound_mean: f64,
    copies_mean: f64,
    ns_p50: u64,
    ns_p99: u64,
    ns_max: u64,
    ns_mean: f64,
}

const NONE: usize = usize::MAX;

fn replay(strategy: &mut dyn Strategy, trace: &Trace, fleet: Fleet, host_mb: u64, cpus: u32) -> Stats {
    let mut open: Vec<Worker> = Vec::new();
    // WorkerId -> index in `open`, NONE once released.
    let mut index: Vec<usize> = Vec::new();
    let mut touched: Vec<bool> = Vec::new();
    let new_host = |open: &mut Vec<Worker>, index: &mut Vec<usize>, touched: &mut Vec<bool>| {
        let id = WorkerId(index.len() as u32);
        index.push(open.len());
        touched.push(false);
        open.push(Worker::new(id, host_mb, cpus));
    };
    if let Fleet::Fixed { hosts } = fleet {
        for _ in 0..hosts {
            new_host(&mut open, &mut index, &mut touched);
        }
    }
    let mut ends: BinaryHeap<Reverse<(u64, u32, u32, u32)>> = BinaryHeap::new();
    let mut stats = Stats::default();
    let mut times: Vec<u64> = Vec::with_capacity(trace.arrivals.len());
    let (mut held, mut used_total) = (0usize, 0u64);
    let (mut last_ms, mut host_area, mut used_area, mut bound_area) = (0u64, 0f64, 0f64, 0f64);
    let mut copies_sum = 0u64;

    let mut advance = |now: u64, held: usize, used_total: u64| {
        let dt = now.saturating_sub(last_ms) as f64;
        host_area += held as f64 * dt;
        used_area += used_total as f64 * dt;
        bound_area += used_total.div_ceil(host_mb) as f64 * dt;
        last_ms = last_ms.max(now);
    };

    for a in trace.arrivals.iter().copied().chain(std::iter::once(Arrival {
        at_ms: trace.period_ms,
        function: u32::MAX,
        memory_mb: 0,
        life_ms: 0,
    })) {
        // Sandboxes that ended before this arrival leave first.
        while let Some(&Reverse((end, id, function, mb))) = ends.peek() {
            if end > a.at_ms {
                break;
            }
            ends.pop();
            advance(end, held, used_total);
            let i = index[id as usize];
            assert!(open[i].remove(&Needs { function: FunctionKey(u64::from(function)), memory_mb: u64::from(mb) }));
            used_total -= u64::from(mb);
            if open[i].sandboxes() == 0 {
                held -= 1;
                if let Fleet::Elastic { .. } = fleet {
                    open.remove(i);
                    index[id as usize] = NONE;
                    for w in &open[i..] {
                        index[w.id.0 as usize] -= 1;
                    }
                }
            }
        }
        if a.function == u32::MAX {
            advance(a.at_ms, held, used_total);
            break;
        }
        advance(a.at_ms, held, used_total);
        let needs = Needs { function: FunctionKey(u64::from(a.function)), memory_mb: u64::from(a.memory_mb) };
        stats.placements += 1;
        let start = Instant::now();
        let mut decision = strategy.place(&open, &needs);
        let mut ns = start.elapsed().as_nanos() as u64;
        if let (Placement::Refused(_), Fleet::Elastic { max_hosts }) = (decision, fleet)
            && open.len() < max_hosts
        {
            new_host(&mut open, &mut index, &mut touched);
            let start = Instant::now();
            decision = strategy.place(&open, &needs);
            ns += start.elapsed().as_nanos() as u64;
        }
        times.push(ns);
        let Placement::Worker(id) = decision else {
            stats.refused += 1;
            continue;
        };
        let w = &mut open[index[id.0 as usize]];
        w.add(&needs).expect("a strategy never over-commits");
        touched[id.0 as usize] = true;
        copies_sum += u64::from(w.copies(needs.function));
        if w.sandboxes() == 1 {
            held += 1;
        }
        used_total += needs.memory_mb;
        stats.hosts_peak = stats.hosts_peak.max(held);
        stats.util_peak = stats.util_peak.max(used_total as f64 / (held as u64 * host_mb) as f64);
        ends.push(Reverse((a.at_ms + a.life_ms, id.0, a.function, a.memory_mb)));
    }
    let period = trace.period_ms as f64;
    stats.hosts_mean = host_area / period;
    stats.util_mean = if host_area > 0.0 { used_area / (host_area * host_mb as f64) } else { 0.0 };
    stats.bound_mean = bound_area / period;
    stats.hosts_touched = touched.iter().filter(|&&t| t).count();
    let placed = stats.placements - stats.refused;
    stats.copies_mean = if placed > 0 { copies_sum as f64 / placed as f64 } else { 0.0 };
    if !times.is_empty() {
        stats.ns_mean = times.iter().sum::<u64>() as f64 / times.len() as f64;
        times.sort_unstable();
        stats.ns_p50 = times[times.len() / 2];
        stats.ns_p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
        stats.ns_max = times[times.len() - 1];
    }
    stats
}

fn table(title: &str, rows: &[(&str, Stats)]) {
    println!("{title}");
    println!(
        "  {:<16} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9}",
        "strategy",
        "hosts mean",
        "hosts peak",
        "hosts ever",
        "util mean",
        "util peak",
        "refused",
        "same-fn",
        "p50 ns",
        "p99 ns",
        "mean ns"
    );
    for (name, s) in rows {
        println!(
            "  {:<16} {:>10.1} {:>10} {:>10} {:>8.1}% {:>8.1}% {:>9} {:>9.2} {:>8} {:>8} {:>9.0}",
            name,
            s.hosts_mean,
            s.hosts_peak,
            s.hosts_touched,
            s.util_mean * 100.0,
            s.util_peak * 100.0,
            s.refused,
            s.copies_mean,
            s.ns_p50,
            s.ns_p99,
            s.ns_mean
        );
    }
}

fn run_all(trace: &Trace, fleet: Fleet, args: &Args) -> Vec<(&'static str, Stats)> {
    let host_mb = args.host_gib * 1024;
    let packing = Packing { target_ppm: args.target_percent * 10_000, mix_window: args.mix_window };
    let mut strategies: Vec<Box<dyn Strategy>> = vec![Box::new(RoundRobin::new()), Box::new(LeastLoaded), Box::new(packing)];
    strategies.iter_mut().map(|s| (s.name(), replay(s.as_mut(), trace, fleet, host_mb, args.host_cpus))).collect()
}

fn verdict(ok: bool) -> &'static str {
    if ok { "MET" } else { "MISSED" }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let generated = Instant::now();
    let trace = make_trace(&args);
    let total_mb: u64 = trace.arrivals.iter().map(|a| u64::from(a.memory_mb)).sum();
    println!(
        "Ignis placement simulation: seed {}, {} functions (Zipf 1), {} h, {} bursts, {} sandboxes \
         (mean {:.0} MB), trace made in {:.2} s",
        args.seed,
        args.functions,
        args.hours,
        trace.bursts,
        trace.arrivals.len(),
        total_mb as f64 / trace.arrivals.len().max(1) as f64,
        generated.elapsed().as_secs_f64()
    );
    println!(
        "Hosts: {} GiB, {} cpus each. Packing: target {}% of memory, mixing among the first {} candidates within it.",
        args.host_gib, args.host_cpus, args.target_percent, args.mix_window
    );
    println!(
        "hosts mean = host-time / period (hosts holding >= 1 sandbox); hosts ever = distinct hosts that held one; \
         util = reserved memory / memory of held hosts;\nsame-fn = copies of the function on the chosen host after \
         placing (mean); decision ns per placement (both calls when a host was opened).\n"
    );
    let started = Instant::now();
    let elastic = run_all(&trace, Fleet::Elastic { max_hosts: args.max_hosts }, &args);
    let bound = elastic[0].1.bound_mean;
    table(
        &format!(
            "Elastic fleet: a host opens when a decision finds no room and is released when empty \
             (cap {}). Lower bound (reserved memory / host size, rounded up): {bound:.1} hosts mean",
            args.max_hosts
        ),
        &elastic,
    );
    let ll = &elastic[1].1;
    let fixed_hosts = args.fleet.unwrap_or(((ll.hosts_peak as f64 * 0.9) as usize).max(1));
    let fixed = run_all(&trace, Fleet::Fixed { hosts: fixed_hosts }, &args);
    println!();
    table(
        &format!(
            "Fixed fleet of {fixed_hosts} hosts{}: what does not fit is refused",
            if args.fleet.is_some() { "" } else { " (90% of least-loaded's elastic peak)" }
        ),
        &fixed,
    );
    let pk = &elastic[2].1;
    let (ll_fixed, pk_fixed) = (&fixed[1].1, &fixed[2].1);
    let ratio = pk.hosts_mean / ll.hosts_mean;
    println!();
    println!(
        "Packing vs least-loaded (elastic): hosts mean {:.1} vs {:.1} = {:.3} ({:+.1}%), hosts peak {} vs {} ({:+.1}%)",
        pk.hosts_mean,
        ll.hosts_mean,
        ratio,
        (ratio - 1.0) * 100.0,
        pk.hosts_peak,
        ll.hosts_peak,
        (pk.hosts_peak as f64 / ll.hosts_peak as f64 - 1.0) * 100.0
    );
    println!(
        "Packing vs least-loaded (fixed {fixed_hosts}): hosts mean {:.1} vs {:.1}, refused {} vs {}",
        pk_fixed.hosts_mean, ll_fixed.hosts_mean, pk_fixed.refused, ll_fixed.refused
    );
    let hosts_ok = ratio <= 0.8;
    let refusals_ok = pk.refused <= ll.refused && pk_fixed.refused <= ll_fixed.refused;
    let worst_p99 = pk.ns_p99.max(pk_fixed.ns_p99);
    let time_ok = worst_p99 < 10_000;
    println!(
        "Target: >= 20% fewer hosts (mean) than least-loaded:        {} ({:.1}% fewer)",
        verdict(hosts_ok),
        (1.0 - ratio) * 100.0
    );
    println!(
        "Target: no more refusals than least-loaded (both fleets):    {} ({} vs {}, {} vs {})",
        verdict(refusals_ok),
        pk.refused,
        ll.refused,
        pk_fixed.refused,
        ll_fixed.refused
    );
    println!(
        "Target: < 10 us per decision (packing p99, both fleets):     {} (p99 {} ns, max {} ns)",
        verdict(time_ok),
        worst_p99,
        pk.ns_max.max(pk_fixed.ns_max)
    );
    println!("Replays took {:.2} s.", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
