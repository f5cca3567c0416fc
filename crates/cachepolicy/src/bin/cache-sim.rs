//! Chunk cache simulation: replays one synthetic trace of chunk reads against LRU-2, LRU and FIFO at the same
//! byte size (a few sizes), beside the offline optimum, and prints their hit rates side by side.
//!
//! The trace is one worker host's chunk reads (deterministic, seeded xorshift). Chunks are 512 KiB. Only sandbox
//! starts read chunks (a warm invocation reads none), so the trace is a sequence of starts, each reading its
//! function's chunks in order:
//! - `--bases` (10) base images (runtime layers) of 100 chunks (50 MiB) each, which functions pick with Zipf(1)
//!   popularity; a start reads the same 30 chunks of its base as every other function on that base (shared).
//! - Every function has its own chunks: Pareto(20, α=1.2) of them, capped at 2048 (10 MiB to 1 GiB). A start reads
//!   the same fifth of them (at least 4) every time, then 2 others picked at random (request-dependent reads).
//! - `--functions` (5000) ordinary functions start as a Poisson process of `--starts-per-sec` (5) in all; each start
//!   is one function picked by Zipf(`--zipf`, 1.0) popularity (a few functions start often, most rarely).
//! - `--crons` (1000) rarely-run cron functions (images drawn as above) each start once every `--period-min` (60)
//!   minutes, at a fixed random offset within the period: together, a slow scan through chunks read once a period.
//! - `--hours` (4) of it.
//!
//! Each policy replays the whole trace on an empty cache: a read is a hit if `touch` finds the chunk, else a miss
//! followed by `admit`. The first period is warm-up and not counted. The hit rate is hits / reads (chunks are of one
//! size, so reads and bytes agree), in all and apart for ordinary and cron functions' reads. The *optimum* is
//! Belady's (offline: it knows every future read, and keeps the chunks read again soonest), the most any policy
//! could hit. The sizes (`--sizes`, 0.25 to 16 GiB) are what one tier of a worker's cache might hold; the headline
//! (`--headline`, 0.25 GiB) is the worker's memory tier at its default size (`--image-memory-cache-mb 256`), the
//! tier that sees every read first, about 0.4% of the distinct bytes the default trace reads. The target: LRU-2 at
//! least 10 points above LRU at the headline size. The larger sizes show how the gap closes as a tier grows (the
//! optimum bounds what any policy could gain there).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::process::ExitCode;
use std::time::Instant;

use ignis_cachepolicy::{Eviction, Policy};

const CHUNK: u64 = 512 * 1024;
const GIB: f64 = (1u64 << 30) as f64;
const BASE_CHUNKS: u64 = 100;
const BASE_READ: u64 = 30;
const EXTRA_READS: u64 = 2;

struct Args {
    seed: u64,
    functions: u32,
    crons: u32,
    bases: u32,
    zipf: f64,
    starts_per_sec: f64,
    period_min: u64,
    hours: u64,
    sizes_gib: Vec<f64>,
    headline_gib: f64,
    k: usize,
}

const USAGE: &str = "cache-sim [--seed N] [--functions N] [--crons N] [--bases N] [--zipf S] [--starts-per-sec R] \
                     [--period-min M] [--hours H] [--sizes GIB,GIB,...] [--headline GIB] [--k K]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seed: 1,
        functions: 5000,
        crons: 1000,
        bases: 10,
        zipf: 1.0,
        starts_per_sec: 5.0,
        period_min: 60,
        hours: 4,
        sizes_gib: vec![0.25, 0.5, 1.0, 4.0, 16.0],
        headline_gib: 0.25,
        k: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_string());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = || format!("{flag}: bad value {value:?}");
        match flag.as_str() {
            "--seed" => args.seed = value.parse().map_err(|_| bad())?,
            "--functions" => args.functions = value.parse().map_err(|_| bad())?,
            "--crons" => args.crons = value.parse().map_err(|_| bad())?,
            "--bases" => args.bases = value.parse().map_err(|_| bad())?,
            "--zipf" => args.zipf = value.parse().map_err(|_| bad())?,
            "--starts-per-sec" => args.starts_per_sec = value.parse().map_err(|_| bad())?,
            "--period-min" => args.period_min = value.parse().map_err(|_| bad())?,
            "--hours" => args.hours = value.parse().map_err(|_| bad())?,
            "--sizes" => {
                let sizes: Result<Vec<f64>, _> = value.split(',').map(|s| s.trim().parse()).collect();
                args.sizes_gib = sizes.map_err(|_| bad())?;
            }
            "--headline" => args.headline_gib = value.parse().map_err(|_| bad())?,
            "--k" => args.k = value.parse().map_err(|_| bad())?,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    let size_ok = |g: &f64| g.is_finite() && *g > 0.0 && *g <= 4096.0;
    // At most about a million starts (the default makes 76 000), so the trace stays within memory.
    let starts = args.starts_per_sec * 3600.0 * args.hours as f64
        + f64::from(args.crons) * (args.hours * 60 / args.period_min.max(1)) as f64;
    let ok = (1..=1_000_000).contains(&args.functions)
        && args.crons <= 1_000_000
        && starts <= 1e6
        && (1..=10_000).contains(&args.bases)
        && args.zipf.is_finite()
        && (0.0..=3.0).contains(&args.zipf)
        && args.starts_per_sec > 0.0
        && args.starts_per_sec <= 1000.0
        && (1..=24 * 60).contains(&args.period_min)
        && (1..=24 * 7).contains(&args.hours)
        && args.hours * 60 > args.period_min
        && !args.sizes_gib.is_empty()
        && args.sizes_gib.iter().all(size_ok)
        && size_ok(&args.headline_gib)
        && (1..=64).contains(&args.k);
    if !ok {
        return Err(format!("out of range\n{USAGE}"));
    }
    if !args.sizes_gib.contains(&args.headline_gib) {
        args.sizes_gib.push(args.headline_gib);
    }
    args.sizes_gib.sort_by(f64::total_cmp);
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

/// Zipf(`s`) over `n` items: item i has weight 1 / (i + 1)^s.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: u32, s: f64) -> Self {
        let mut sum = 0.0;
        Zipf(
            (0..n)
                .map(|i| {
                    sum += 1.0 / f64::from(i + 1).powf(s);
                    sum
                })
                .collect(),
        )
    }

    fn pick(&self, rng: &mut Rng) -> usize {
        let u = rng.unit() * self.0.last().copied().unwrap_or(0.0);
        self.0.partition_point(|&c| c < u).min(self.0.len().saturating_sub(1))
    }
}

/// A function's image: its base and its own chunks (ids `own..own + chunks`).
struct Image {
    base: u64,
    own: u64,
    chunks: u64,
}

impl Image {
    /// The chunks a start reads: the base's shared ones, the same fifth of its own, `EXTRA_READS` others.
    fn start(&self, rng: &mut Rng, reads: &mut Vec<u64>) {
        reads.extend((0..BASE_READ).map(|c| self.base * BASE_CHUNKS + c));
        let fixed = (self.chunks / 5).max(4).min(self.chunks);
        reads.extend(self.own..self.own + fixed);
        if fixed < self.chunks {
            reads.extend((0..EXTRA_READS).map(|_| self.own + fixed + rng.below(self.chunks - fixed)));
        }
    }
}

/// One start: when (ms), which image, whether it is a cron function's.
struct Start {
    at_ms: u64,
    image: usize,
    cron: bool,
}

struct Trace {
    reads: Vec<u64>,
    /// Whether each read is a cron function's.
    cron: Vec<bool>,
    /// Reads before this index are warm-up.
    warm_up: usize,
    starts: usize,
    cron_starts: usize,
    distinct_bytes: u64,
    regular_distinct_bytes: u64,
    /// Counted reads of a chunk never read before: misses whatever the policy.
    first_reads: usize,
}

fn make_trace(args: &Args) -> Trace {
    let mut rng = Rng::new(args.seed);
    let bases = Zipf::new(args.bases, 1.0);
    let mut next_id = u64::from(args.bases) * BASE_CHUNKS;
    let images: Vec<Image> = (0..args.functions + args.crons)
        .map(|_| {
            let chunks = (rng.pareto(20.0, 1.2) as u64).min(2048);
            let image = Image { base: bases.pick(&mut rng) as u64, own: next_id, chunks };
            next_id += chunks;
            image
        })
        .collect();
    let period_ms = args.period_min * 60_000;
    let end_ms = args.hours * 3_600_000;
    let mut starts = Vec::new();
    let popularity = Zipf::new(args.functions, args.zipf);
    let mut t = 0.0;
    loop {
        t += rng.exp(args.starts_per_sec) * 1000.0;
        if t >= end_ms as f64 {
            break;
        }
        starts.push(Start { at_ms: t as u64, image: popularity.pick(&mut rng), cron: false });
    }
    for cron in 0..args.crons {
        let offset = rng.below(period_ms);
        let image = (args.functions + cron) as usize;
        starts.extend((0..end_ms / period_ms).map(|p| Start { at_ms: p * period_ms + offset, image, cron: true }));
    }
    starts.sort_by_key(|s| (s.at_ms, s.image));
    let mut trace = Trace {
        reads: Vec::new(),
        cron: Vec::new(),
        warm_up: 0,
        starts: starts.len(),
        cron_starts: starts.iter().filter(|s| s.cron).count(),
        distinct_bytes: 0,
        regular_distinct_bytes: 0,
        first_reads: 0,
    };
    for start in &starts {
        images[start.image].start(&mut rng, &mut trace.reads);
        trace.cron.resize(trace.reads.len(), start.cron);
        if start.at_ms < period_ms {
            trace.warm_up = trace.reads.len();
        }
    }
    let mut seen = HashSet::new();
    let mut regular = HashSet::new();
    for (i, &chunk) in trace.reads.iter().enumerate() {
        if seen.insert(chunk) && i >= trace.warm_up {
            trace.first_reads += 1;
        }
        if !trace.cron[i] {
            regular.insert(chunk);
        }
    }
    trace.distinct_bytes = seen.len() as u64 * CHUNK;
    trace.regular_distinct_bytes = regular.len() as u64 * CHUNK;
    trace
}

#[derive(Default, Clone, Copy)]
struct Counts {
    hits: u64,
    reads: u64,
    cron_hits: u64,
    cron_reads: u64,
}

impl Counts {
    /// Counts read `i` unless it is warm-up.
    fn count(&mut self, i: usize, hit: bool, trace: &Trace) {
        if i >= trace.warm_up {
            self.reads += 1;
            self.hits += u64::from(hit);
            if trace.cron[i] {
                self.cron_reads += 1;
                self.cron_hits += u64::from(hit);
            }
        }
    }

    fn rate(&self) -> f64 {
        percent(self.hits, self.reads)
    }

    fn regular_rate(&self) -> f64 {
        percent(self.hits - self.cron_hits, self.reads - self.cron_reads)
    }

    fn cron_rate(&self) -> f64 {
        percent(self.cron_hits, self.cron_reads)
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 }
}

fn replay(cache: &mut dyn Eviction<u64>, trace: &Trace) -> Counts {
    let mut counts = Counts::default();
    for (i, &chunk) in trace.reads.iter().enumerate() {
        let hit = cache.touch(&chunk) || {
            cache.admit(chunk, CHUNK);
            false
        };
        counts.count(i, hit, trace);
    }
    counts
}

/// Belady's optimum (offline, knowing every future read): on a miss, keep the chunks read again soonest; a chunk
/// read later than all of them (or never again) is not admitted. The best hit rate any policy could reach.
fn replay_optimum(capacity: u64, trace: &Trace) -> Counts {
    let slots = (capacity / CHUNK) as usize;
    let mut next_read = vec![usize::MAX; trace.reads.len()];
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (i, &chunk) in trace.reads.iter().enumerate().rev() {
        if let Some(next) = seen.insert(chunk, i) {
            next_read[i] = next;
        }
    }
    // Resident chunk -> its next read; (next read, chunk), the farthest last.
    let mut resident: HashMap<u64, usize> = HashMap::new();
    let mut order: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut counts = Counts::default();
    for (i, &chunk) in trace.reads.iter().enumerate() {
        let hit = match resident.get_mut(&chunk) {
            Some(next) => {
                order.remove(&(*next, chunk));
                *next = next_read[i];
                order.insert((next_read[i], chunk));
                true
            }
            None => {
                if resident.len() == slots
                    && let Some(&(farthest, victim)) = order.last()
                    && farthest > next_read[i]
                {
                    order.pop_last();
                    resident.remove(&victim);
                }
                if resident.len() < slots {
                    resident.insert(chunk, next_read[i]);
                    order.insert((next_read[i], chunk));
                }
                false
            }
        };
        counts.count(i, hit, trace);
    }
    counts
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
    println!(
        "Ignis chunk cache simulation: seed {}, {} functions (Zipf {}) starting {}/s, {} cron functions every {} min, \
         {} bases, {} h",
        args.seed, args.functions, args.zipf, args.starts_per_sec, args.crons, args.period_min, args.bases, args.hours
    );
    println!(
        "Trace: {} starts ({} by cron functions), {} chunk reads of 512 KiB ({} counted after the first period), \
         {:.1} GiB distinct ({:.1} GiB by ordinary functions); {:.1}% of the counted reads are first reads (misses \
         whatever the policy); made in {:.2} s\n",
        trace.starts,
        trace.cron_starts,
        trace.reads.len(),
        trace.reads.len() - trace.warm_up,
        trace.distinct_bytes as f64 / GIB,
        trace.regular_distinct_bytes as f64 / GIB,
        percent(trace.first_reads as u64, (trace.reads.len() - trace.warm_up) as u64),
        generated.elapsed().as_secs_f64()
    );
    let policies = [Policy::LruK(args.k), Policy::Lru, Policy::Fifo];
    let started = Instant::now();
    println!("Hit rate (% of chunk reads; ordinary functions' reads / cron functions' reads):");
    print!("  {:>9}", "size GiB");
    for policy in policies {
        print!("  {:>24}", policy.to_string());
    }
    println!("  {:>24}  {:>12}", "optimum", format!("{} - lru", policies[0]));
    // One thread per size: each replays the trace against every policy and the optimum.
    let rows: Vec<Vec<Counts>> = std::thread::scope(|scope| {
        let threads: Vec<_> = args
            .sizes_gib
            .iter()
            .map(|&gib| {
                let trace = &trace;
                scope.spawn(move || {
                    let capacity = (gib * GIB) as u64;
                    let mut row: Vec<Counts> =
                        policies.iter().map(|p| replay(p.build(capacity).as_mut(), trace)).collect();
                    row.push(replay_optimum(capacity, trace));
                    row
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or_default()).collect()
    });
    let mut headline = None;
    for (&gib, row) in args.sizes_gib.iter().zip(&rows) {
        print!("  {:>9}", format!("{gib}{}", if gib == args.headline_gib { "*" } else { "" }));
        for c in row {
            print!("  {:>24}", format!("{:.1} ({:.1} / {:.1})", c.rate(), c.regular_rate(), c.cron_rate()));
        }
        let [lru_k, lru, fifo, best] = [0, 1, 2, 3].map(|i| row.get(i).map_or(0.0, Counts::rate));
        println!("  {:>+12.1}", lru_k - lru);
        if gib == args.headline_gib {
            headline = Some((lru_k, lru, fifo, best));
        }
    }
    println!("  (* the headline size)\n");
    let (lru_k, lru, fifo, best) = headline.unwrap_or_default();
    println!(
        "Target: {} at least 10 points above lru at {} GiB: {} ({:.1}% vs {:.1}%, {:+.1} points; fifo {:.1}%; \
         the optimum {:.1}%, {:+.1} points above lru)",
        policies[0],
        args.headline_gib,
        verdict(lru_k - lru >= 10.0),
        lru_k,
        lru,
        lru_k - lru,
        fifo,
        best,
        best - lru
    );
    println!("Replays took {:.2} s.", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
