//! What each function did in the last hour, minute by minute: invocations,
//! errors, throttles, the most invocations running at once, and the spread of
//! their durations. The console's charts and its function list read it
//! ([`crate::Invoker::activity`]); it is kept whether or not metrics are
//! served. Pure: the invoker passes the time in.
//!
//! # Invariants: bounded
//!
//! - A function keeps at most [`MINUTES`] minutes; older ones are dropped as
//!   newer ones come.
//! - At most [`MAX_FUNCTIONS`] functions are followed at once; a function
//!   with nothing running and no minute within the last [`MINUTES`] is
//!   forgotten by [`Activity::prune`], and one past the limit is not followed
//!   until room comes back (its invocations still run and count elsewhere).
//! - A minute's durations are a sparse histogram of at most [`BUCKETS`]
//!   buckets, each a factor of √2 wide, so a quantile is within that factor
//!   of the true one.

use std::collections::{HashMap, VecDeque};

use ignis_worker::Outcome;

use crate::{Function, InvokeError, metrics};

/// Minutes of history a function keeps.
pub const MINUTES: u64 = 60;
/// Functions followed at once.
pub const MAX_FUNCTIONS: usize = 10_000;
/// Duration buckets: `[0, 0.1 ms)`, then each √2 times wider than the last, the last one open-ended (past 15 min).
pub const BUCKETS: usize = 48;
/// The lower bound of bucket 1, in milliseconds.
const SMALLEST_MS: f64 = 0.1;

/// A function, by account and name (all its versions together).
pub type Key = (String, String);

/// One minute of one function.
#[derive(Debug, Clone, Default, PartialEq)]
struct Minute {
    /// Unix time of the minute's start, in minutes.
    minute: u64,
    invocations: u32,
    errors: u32,
    throttles: u32,
    /// The most invocations running at once in the minute.
    peak: u32,
    /// Invocations running when the minute's last change happened.
    last: u32,
    /// (bucket, count), sorted by bucket.
    durations: Vec<(u8, u32)>,
}

#[derive(Debug, Default)]
struct Series {
    minutes: VecDeque<Minute>,
    running: u32,
}

impl Series {
    /// The minute `minute`, made (carrying the running count over) if it is newer than the last; for a minute
    /// older than the last (a clock that went back), the last one.
    fn at(&mut self, minute: u64) -> &mut Minute {
        let newer = self.minutes.back().is_none_or(|last| last.minute < minute);
        if newer {
            self.minutes.push_back(Minute { minute, peak: self.running, last: self.running, ..Minute::default() });
            while self.minutes.len() as u64 > MINUTES {
                self.minutes.pop_front();
            }
        }
        self.minutes.back_mut().expect("a minute was just made if there was none")
    }
}

/// How an invocation ended, for [`Activity::finish`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ended {
    pub error: bool,
    /// Its REPORT line's duration, in milliseconds (none for an invocation that never ran).
    pub duration_ms: Option<f64>,
}

/// One minute as the console shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Unix time of the minute's start, in seconds.
    pub start: u64,
    pub invocations: u32,
    pub errors: u32,
    pub throttles: u32,
    pub concurrency: u32,
    /// Duration quantiles, in milliseconds (none without a duration in the minute).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// A function's totals over the last [`MINUTES`] minutes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub invocations: u64,
    pub errors: u64,
    pub throttles: u64,
    pub running: u32,
}

/// Every followed function's recent minutes (see the module docs).
#[derive(Debug, Default)]
pub struct Activity {
    functions: HashMap<Key, Series>,
}

fn minute_of(unix_secs: u64) -> u64 {
    unix_secs / 60
}

/// The bucket of a duration of `ms` milliseconds.
pub fn bucket(ms: f64) -> u8 {
    if ms.is_nan() || ms < SMALLEST_MS {
        return 0;
    }
    let index = 1.0 + 2.0 * (ms / SMALLEST_MS).log2();
    (index.floor() as usize).min(BUCKETS - 1) as u8
}

/// The value a quantile falling in `bucket` is given: the geometric middle of its bounds (the lower bound of the
/// open last one; half the bound of the first).
pub fn representative(bucket: u8) -> f64 {
    match bucket {
        0 => SMALLEST_MS / 2.0,
        b if b as usize == BUCKETS - 1 => SMALLEST_MS * 2f64.powf((b as f64 - 1.0) / 2.0),
        b => SMALLEST_MS * 2f64.powf((b as f64 - 0.5) / 2.0),
    }
}

/// The `q` quantile (0 < q ≤ 1) of the sparse histogram `durations`.
fn quantile(durations: &[(u8, u32)], q: f64) -> Option<f64> {
    let total: u64 = durations.iter().map(|(_, n)| *n as u64).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (bucket, n) in durations {
        seen += *n as u64;
        if seen >= rank {
            return Some(representative(*bucket));
        }
    }
    None
}

impl Activity {
    pub fn new() -> Activity {
        Activity::default()
    }

    /// The series of `key`, made if there is room.
    fn series(&mut self, key: &Key) -> Option<&mut Series> {
        if !self.functions.contains_key(key) && self.functions.len() >= MAX_FUNCTIONS {
            return None;
        }
        Some(self.functions.entry(key.clone()).or_default())
    }

    /// An invocation of `key` started running at `now` (Unix seconds).
    pub fn start(&mut self, key: &Key, now: u64) {
        let Some(series) = self.series(key) else { return };
        series.running += 1;
        let running = series.running;
        let minute = series.at(minute_of(now));
        minute.peak = minute.peak.max(running);
        minute.last = running;
    }

    /// An invocation of `key` that [`Activity::start`] counted ended at `now` as `ended` says.
    pub fn finish(&mut self, key: &Key, now: u64, ended: Ended) {
        let Some(series) = self.functions.get_mut(key) else { return };
        // The minute is made before the count drops: the invocation ran in it.
        let running = series.running.saturating_sub(1);
        let minute = series.at(minute_of(now));
        minute.last = running;
        minute.invocations += 1;
        minute.errors += u32::from(ended.error);
        if let Some(ms) = ended.duration_ms {
            let b = bucket(ms);
            match minute.durations.binary_search_by_key(&b, |(b, _)| *b) {
                Ok(i) => minute.durations[i].1 += 1,
                Err(i) => minute.durations.insert(i, (b, 1)),
            }
        }
        series.running = running;
    }

    /// An invocation of `key` was throttled at `now`.
    pub fn throttle(&mut self, key: &Key, now: u64) {
        let Some(series) = self.series(key) else { return };
        series.at(minute_of(now)).throttles += 1;
    }

    /// Forgets functions with nothing running and no minute within the last [`MINUTES`] before `now`.
    pub fn prune(&mut self, now: u64) {
        let oldest = minute_of(now).saturating_sub(MINUTES - 1);
        self.functions.retain(|_, series| {
            series.running > 0 || series.minutes.back().is_some_and(|last| last.minute >= oldest)
        });
    }

    /// The [`MINUTES`] minutes of `key` ending with the one of `now`, oldest first, every minute present (those
    /// without a change carry the running count of the one before).
    pub fn points(&self, key: &Key, now: u64) -> Vec<Point> {
        let current = minute_of(now);
        let first = current.saturating_sub(MINUTES - 1);
        let series = self.functions.get(key);
        let minutes = series.map(|s| &s.minutes);
        let mut stored = minutes.into_iter().flatten().peekable();
        // Running when the window opens: after the last minute before it.
        let mut running = 0;
        while let Some(m) = stored.next_if(|m| m.minute < first) {
            running = m.last;
        }
        (first..=current)
            .map(|minute| match stored.next_if(|m| m.minute == minute) {
                Some(m) => {
                    running = m.last;
                    Point {
                        start: minute * 60,
                        invocations: m.invocations,
                        errors: m.errors,
                        throttles: m.throttles,
                        concurrency: m.peak,
                        p50_ms: quantile(&m.durations, 0.5),
                        p99_ms: quantile(&m.durations, 0.99),
                    }
                }
                None => Point {
                    start: minute * 60,
                    invocations: 0,
                    errors: 0,
                    throttles: 0,
                    concurrency: running,
                    p50_ms: None,
                    p99_ms: None,
                },
            })
            .collect()
    }

    /// The totals of every followed function of `account` over the last [`MINUTES`] minutes before `now`.
    pub fn totals(&self, account: &str, now: u64) -> Vec<(String, Totals)> {
        let oldest = minute_of(now).saturating_sub(MINUTES - 1);
        self.functions
            .iter()
            .filter(|((a, _), _)| a == account)
            .map(|((_, name), series)| {
                let recent = series.minutes.iter().filter(|m| m.minute >= oldest);
                let mut totals = Totals { running: series.running, ..Totals::default() };
                for m in recent {
                    totals.invocations += m.invocations as u64;
                    totals.errors += m.errors as u64;
                    totals.throttles += m.throttles as u64;
                }
                (name.clone(), totals)
            })
            .collect()
    }

    /// Functions followed now.
    pub fn len(&self) -> usize {
        self.functions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }
}

/// The key of `function`'s invocations.
pub(crate) fn key(function: &Function) -> Key {
    (function.revision.account.to_string(), function.revision.function.clone())
}

/// How an admitted invocation that ended with `result` is counted: a platform error (or a throttle met late) as
/// an error without a duration.
pub(crate) fn ended(result: &Result<Outcome, InvokeError>) -> Ended {
    match result {
        Ok(outcome) => Ended {
            error: metrics::is_error(outcome),
            duration_ms: metrics::report(&outcome.log).map(|report| report.duration * 1000.0),
        },
        Err(_) => Ended { error: true, duration_ms: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        ("111111111111".into(), name.into())
    }

    fn ok(ms: f64) -> Ended {
        Ended { error: false, duration_ms: Some(ms) }
    }

    /// A whole minute, in Unix seconds.
    const T: u64 = 1_800_000_000;

    #[test]
    fn buckets_are_root_two_wide_and_quantiles_fall_inside_them() {
        assert_eq!(bucket(0.0), 0);
        assert_eq!(bucket(f64::NAN), 0);
        assert_eq!(bucket(-3.0), 0);
        assert_eq!(bucket(0.1), 1);
        assert_eq!(bucket(0.1414), 1);
        assert_eq!(bucket(0.1415), 2);
        assert_eq!(bucket(f64::INFINITY), (BUCKETS - 1) as u8);
        assert_eq!(bucket(900_000.0), (BUCKETS - 1) as u8, "15 min is in the open last bucket");
        // Every duration from 0.1 ms to 10 min lies within a factor of √2 of its bucket's value.
        let mut ms = 0.1;
        while ms < 600_000.0 {
            let value = representative(bucket(ms));
            let ratio = if value > ms { value / ms } else { ms / value };
            assert!(ratio <= 2f64.sqrt() + 1e-9, "{ms} ms → {value}");
            ms *= 1.07;
        }
        for b in 1..BUCKETS as u8 - 1 {
            assert_eq!(bucket(representative(b)), b, "the value of bucket {b} is in it");
        }
    }

    #[test]
    fn quantiles_rank_by_count() {
        assert_eq!(quantile(&[], 0.5), None);
        let one = [(bucket(10.0), 1)];
        assert_eq!(quantile(&one, 0.5), quantile(&one, 0.99));
        // 98 fast, 2 slow: p50 is fast and p99 slow.
        let spread = [(bucket(1.0), 98), (bucket(1000.0), 2)];
        assert_eq!(quantile(&spread, 0.5), Some(representative(bucket(1.0))));
        assert_eq!(quantile(&spread, 0.99), Some(representative(bucket(1000.0))));
        // 99 fast, 1 slow: p99 is the 99th, still fast.
        let tail = [(bucket(1.0), 99), (bucket(1000.0), 1)];
        assert_eq!(quantile(&tail, 0.99), Some(representative(bucket(1.0))));
    }

    #[test]
    fn a_minute_counts_invocations_errors_throttles_and_the_peak() {
        let mut a = Activity::new();
        let f = key("f");
        a.start(&f, T);
        a.start(&f, T + 1);
        a.throttle(&f, T + 2);
        a.finish(&f, T + 3, ok(5.0));
        a.finish(&f, T + 4, Ended { error: true, duration_ms: None });
        let points = a.points(&f, T + 59);
        assert_eq!(points.len() as u64, MINUTES);
        let now = points.last().unwrap();
        assert_eq!(now.start, T);
        assert_eq!((now.invocations, now.errors, now.throttles, now.concurrency), (2, 1, 1, 2));
        assert_eq!(now.p50_ms, Some(representative(bucket(5.0))));
        assert!(points[..points.len() - 1].iter().all(|p| p.invocations == 0 && p.concurrency == 0));
        assert_eq!(points[0].start, T - (MINUTES - 1) * 60, "the window is the last hour, oldest first");
        let totals = a.totals("111111111111", T + 59);
        assert_eq!(totals, vec![("f".into(), Totals { invocations: 2, errors: 1, throttles: 1, running: 0 })]);
        assert!(a.totals("222222222222", T).is_empty(), "another account sees none of it");
    }

    #[test]
    fn a_long_invocation_shows_in_every_minute_it_runs() {
        let mut a = Activity::new();
        let f = key("f");
        a.start(&f, T);
        a.start(&f, T + 1);
        a.finish(&f, T + 2, ok(1.0));
        // One still runs, with no change for five minutes.
        let points = a.points(&f, T + 5 * 60);
        let tail: Vec<u32> = points.iter().rev().take(6).rev().map(|p| p.concurrency).collect();
        assert_eq!(tail, vec![2, 1, 1, 1, 1, 1]);
        a.finish(&f, T + 5 * 60 + 1, ok(300_000.0));
        let points = a.points(&f, T + 7 * 60);
        let tail: Vec<u32> = points.iter().rev().take(3).rev().map(|p| p.concurrency).collect();
        assert_eq!(tail, vec![1, 0, 0], "the minute it ended had it running; later ones not");
    }

    #[test]
    fn history_is_bounded_to_an_hour_and_old_functions_are_forgotten() {
        let mut a = Activity::new();
        let f = key("f");
        for minute in 0..3 * MINUTES {
            a.start(&f, T + minute * 60);
            a.finish(&f, T + minute * 60, ok(1.0));
        }
        assert_eq!(a.functions[&f].minutes.len() as u64, MINUTES);
        let last = T + (3 * MINUTES - 1) * 60;
        assert_eq!(a.totals("111111111111", last)[0].1.invocations, MINUTES);
        // An hour later with nothing running it is forgotten; one still running is kept.
        let g = key("g");
        a.start(&g, last);
        a.prune(last + MINUTES * 60 - 1);
        assert_eq!(a.len(), 2, "within the hour both stay");
        a.prune(last + MINUTES * 60);
        assert_eq!(a.len(), 1);
        assert!(a.functions.contains_key(&g));
        a.finish(&g, last + MINUTES * 60, ok(1.0));
        a.prune(last + 2 * MINUTES * 60);
        assert!(a.is_empty());
        assert_eq!(a.points(&g, last).iter().map(|p| p.invocations).sum::<u32>(), 0, "a forgotten one has no points");
    }

    #[test]
    fn functions_past_the_limit_are_not_followed() {
        let mut a = Activity::new();
        for n in 0..MAX_FUNCTIONS + 5 {
            let f = key(&n.to_string());
            a.start(&f, T);
            a.finish(&f, T, ok(1.0));
            a.throttle(&f, T);
        }
        assert_eq!(a.len(), MAX_FUNCTIONS);
        a.prune(T + MINUTES * 60);
        assert!(a.is_empty(), "room comes back");
    }

    #[test]
    fn a_clock_that_goes_back_counts_in_the_last_minute() {
        let mut a = Activity::new();
        let f = key("f");
        a.start(&f, T + 120);
        a.finish(&f, T, ok(1.0));
        let series = &a.functions[&f];
        assert_eq!(series.minutes.len(), 1);
        assert_eq!((series.minutes[0].invocations, series.running), (1, 0));
    }

    #[test]
    fn a_minute_histogram_never_holds_more_than_the_buckets() {
        let mut a = Activity::new();
        let f = key("f");
        let mut ms = 0.001;
        while ms < 1e9 {
            a.start(&f, T);
            a.finish(&f, T, ok(ms));
            ms *= 1.1;
        }
        let durations = &a.functions[&f].minutes[0].durations;
        assert_eq!(durations.len(), BUCKETS);
        assert!(durations.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
