//! Percentiles of samples, shared by the benchmark binaries.

use std::time::Duration;

/// Nearest-rank percentile of sorted values.
fn pct<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub struct Stats {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    #[allow(dead_code, reason = "only the cache benchmark shows p99.9")]
    pub p999: f64,
    pub max: f64,
}

/// Statistics of durations, in milliseconds.
pub fn stats_ms(samples: &[Duration]) -> Option<Stats> {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    stats(&mut ms)
}

/// Statistics of values (sorts them).
pub fn stats(values: &mut [f64]) -> Option<Stats> {
    values.sort_by(f64::total_cmp);
    Some(Stats {
        n: values.len(),
        min: *values.first()?,
        p50: pct(values, 50.0)?,
        p90: pct(values, 90.0)?,
        p99: pct(values, 99.0)?,
        p999: pct(values, 99.9)?,
        max: *values.last()?,
    })
}
