//! Micro-benchmark of admission: acquire + release, and the scaling-rate check,
//! timed one operation at a time in process (std only).
//!
//! `cargo run --release -p ignis-counting --bin counting-bench [operations]`

use std::hint::black_box;
use std::time::Instant;

use ignis_counting::{Counter, Limits, ScaleRate};

const ACCOUNTS: u64 = 100;
const FUNCTIONS: u64 = 50;

fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}

fn report(name: &str, mut ns: Vec<u64>, overhead: u64) {
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)].saturating_sub(overhead);
    let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64 - overhead as f64;
    println!(
        "{name:<44} n={:>8}  p50={:>5} ns  p99={:>5} ns  p99.9={:>6} ns  mean={mean:>7.1} ns",
        ns.len(),
        at(0.50),
        at(0.99),
        at(0.999)
    );
}

/// Keys used by the front end: account ids and function names as strings.
fn names() -> (Vec<String>, Vec<String>) {
    let accounts = (0..ACCOUNTS).map(|a| format!("{:012}", 100_000_000_000 + a)).collect();
    let functions = (0..FUNCTIONS).map(|f| format!("function-number-{f}")).collect();
    (accounts, functions)
}

fn bench_admission<A, F>(name: &str, ops: usize, accounts: &[A], functions: &[F], overhead: u64)
where
    A: Clone + Eq + std::hash::Hash,
    F: Clone + Eq + std::hash::Hash,
{
    let mut counter: Counter<A, F> = Counter::new(Limits { concurrency: 1000, min_unreserved: 100 }, 10_000);
    // Every tenth function reserves 5; the books start with units in flight.
    for a in accounts {
        for f in functions.iter().step_by(10) {
            counter.set_reservation(a, f, 5).unwrap();
        }
    }
    let mut rand = xorshift(0x2545_f491_4f6c_dd1d);
    let mut held = Vec::new();
    for _ in 0..20_000 {
        let (a, f) = (&accounts[rand(ACCOUNTS) as usize], &functions[rand(FUNCTIONS) as usize]);
        if let Ok(slot) = counter.acquire(a, f) {
            held.push(slot);
        }
    }
    let picks: Vec<(usize, usize)> = (0..ops).map(|_| (rand(ACCOUNTS) as usize, rand(FUNCTIONS) as usize)).collect();
    let mut ns = Vec::with_capacity(ops);
    let mut throttled = 0u64;
    for &(a, f) in &picks {
        let (a, f) = (&accounts[a], &functions[f]);
        let start = Instant::now();
        match counter.acquire(black_box(a), black_box(f)) {
            Ok(slot) => counter.release(black_box(slot)),
            Err(reason) => {
                black_box(reason);
                throttled += 1;
            }
        }
        ns.push(start.elapsed().as_nanos() as u64);
    }
    report(name, ns, overhead);
    println!("{:<44} ({throttled} throttled, {} held throughout)", "", held.len());
    // Whole-loop throughput without the timer.
    let start = Instant::now();
    for &(a, f) in &picks {
        if let Ok(slot) = counter.acquire(black_box(&accounts[a]), black_box(&functions[f])) {
            counter.release(black_box(slot));
        }
    }
    let per = start.elapsed().as_nanos() as f64 / ops as f64;
    println!("{:<44} untimed loop: {per:.1} ns per acquire+release", "");
    for slot in held {
        counter.release(slot);
    }
}

fn main() {
    let ops: usize = std::env::args().nth(1).map_or(1_000_000, |n| n.parse().expect("operations: a number"));

    // What reading the clock twice costs, subtracted from every sample.
    let mut empty = Vec::with_capacity(ops);
    for _ in 0..ops {
        let start = Instant::now();
        empty.push(start.elapsed().as_nanos() as u64);
    }
    empty.sort_unstable();
    let overhead = empty[empty.len() / 2];
    println!("timer overhead (p50, subtracted): {overhead} ns; {ops} operations each");

    let accounts: Vec<u64> = (0..ACCOUNTS).collect();
    let functions: Vec<u64> = (0..FUNCTIONS).collect();
    bench_admission("acquire+release, u64 keys", ops, &accounts, &functions, overhead);
    let (accounts, functions) = names();
    bench_admission("acquire+release, String keys", ops, &accounts, &functions, overhead);

    let mut rate: ScaleRate<String> = ScaleRate::default();
    let mut rand = xorshift(0x9e37_79b9_7f4a_7c15);
    let picks: Vec<usize> = (0..ops).map(|_| rand(FUNCTIONS) as usize).collect();
    let mut ns = Vec::with_capacity(ops);
    let mut allowed = 0u64;
    for (i, &f) in picks.iter().enumerate() {
        let now_ms = i as u64 / 100; // 100 checks per ms: many functions reach the limit
        let start = Instant::now();
        allowed += u64::from(rate.may_start_sandbox(black_box(&functions[f]), now_ms));
        ns.push(start.elapsed().as_nanos() as u64);
    }
    report("may_start_sandbox, String keys", ns, overhead);
    println!("{:<44} ({allowed} allowed)", "");
}
