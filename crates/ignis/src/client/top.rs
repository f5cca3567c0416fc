//! `ignis top`: per-function invocations and errors per second, duration p50 and p99 and concurrency, from the
//! server's Prometheus metrics (`ignis server --metrics-listen ADDR`), refreshed every second.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The most of a scrape read.
const MAX_SCRAPE: u64 = 64 << 20;
const INTERVAL: Duration = Duration::from_secs(1);

#[derive(clap::Args)]
pub struct TopArgs {
    /// The server's metrics address, as given to `ignis server --metrics-listen` (`HOST:PORT`).
    #[arg(long, value_name = "ADDR")]
    pub metrics: String,
    /// Print one table (over one second) and exit, instead of refreshing until interrupted.
    #[arg(long)]
    pub once: bool,
}

/// One function version's figures in a scrape (its labels' account, function and version).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Figures {
    invocations: f64,
    errors: f64,
    /// The duration histogram's cumulative buckets: (upper bound in seconds, count).
    buckets: Vec<(f64, f64)>,
    concurrency: f64,
}

pub(crate) type Snapshot = BTreeMap<(String, String, String), Figures>;

/// A table row: account, function, version, invocations/s, errors/s, p50 and p99 (ms, of the interval's
/// invocations), concurrency.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub key: (String, String, String),
    pub rate: f64,
    pub errors: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub concurrency: f64,
}

/// The figures of a Prometheus text scrape.
pub(crate) fn snapshot(text: &str) -> Result<Snapshot, String> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).map_err(|e| format!("the metrics are not Prometheus text: {e}"))?;
    let mut out = Snapshot::new();
    for sample in scrape.samples {
        let label = |name: &str| sample.labels.get(name).unwrap_or("").to_string();
        let key = (label("account"), label("function"), label("version"));
        if key.1.is_empty() {
            continue;
        }
        let entry = out.entry(key).or_default();
        match (sample.metric.as_str(), &sample.value) {
            ("ignis_invocations_total", prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v)) => {
                entry.invocations += v
            }
            ("ignis_errors_total", prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v)) => {
                entry.errors += v
            }
            ("ignis_concurrent_executions", prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v)) => {
                entry.concurrency += v
            }
            ("ignis_duration_seconds", prometheus_parse::Value::Histogram(buckets)) => {
                entry.buckets = buckets.iter().map(|b| (b.less_than, b.count)).collect();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// What happened between two snapshots `seconds` apart, busiest first.
pub(crate) fn rows(before: &Snapshot, after: &Snapshot, seconds: f64) -> Vec<Row> {
    let seconds = seconds.max(1e-3);
    let mut rows: Vec<Row> = after
        .iter()
        .map(|(key, now)| {
            let then = before.get(key).cloned().unwrap_or_default();
            // Counters that went down were reset (a restart): count from zero.
            let delta = |now: f64, then: f64| if now >= then { now - then } else { now };
            let buckets: Vec<(f64, f64)> = now
                .buckets
                .iter()
                .map(|&(le, count)| {
                    let old = then.buckets.iter().find(|(l, _)| *l == le).map_or(0.0, |(_, c)| *c);
                    (le, delta(count, old))
                })
                .collect();
            Row {
                key: key.clone(),
                rate: delta(now.invocations, then.invocations) / seconds,
                errors: delta(now.errors, then.errors) / seconds,
                p50_ms: quantile(&buckets, 0.5).map(|s| s * 1e3),
                p99_ms: quantile(&buckets, 0.99).map(|s| s * 1e3),
                concurrency: now.concurrency,
            }
        })
        .collect();
    rows.sort_by(|a, b| b.rate.total_cmp(&a.rate).then(b.concurrency.total_cmp(&a.concurrency)).then(a.key.cmp(&b.key)));
    rows
}

/// The upper bound of the bucket the `q` quantile falls in, of cumulative `buckets`; `None` without counts.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let mut sorted = buckets.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = sorted.last()?.1;
    if total <= 0.0 {
        return None;
    }
    sorted.iter().find(|(_, count)| *count >= q * total).map(|(le, _)| *le)
}

/// `GET /metrics` of `address`, over HTTP/1.0 (the connection's end is the body's).
fn scrape(address: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(address).map_err(|e| format!("cannot reach the metrics at {address}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream.take(MAX_SCRAPE).read_to_end(&mut answer).map_err(|e| format!("reading the metrics at {address}: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("the metrics server answered no HTTP")?;
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1) != Some("200") {
        return Err(format!("the metrics server answered {}", head.lines().next().unwrap_or("")));
    }
    Ok(body.to_string())
}

fn table(rows: &[Row]) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let body: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.key.0.clone(),
                r.key.1.clone(),
                r.key.2.clone(),
                format!("{:.1}", r.rate),
                format!("{:.1}", r.errors),
                ms(r.p50_ms),
                ms(r.p99_ms),
                format!("{}", r.concurrency),
            ]
        })
        .collect();
    let header = ["ACCOUNT", "FUNCTION", "VERSION", "INVOCATIONS/S", "ERRORS/S", "P50_MS", "P99_MS", "CONCURRENCY"];
    super::format_table(header, &body)
}

pub fn top(args: TopArgs) -> Result<ExitCode, String> {
    let mut before = snapshot(&scrape(&args.metrics)?)?;
    let mut at = Instant::now();
    loop {
        std::thread::sleep(INTERVAL);
        let after = snapshot(&scrape(&args.metrics)?)?;
        let now = Instant::now();
        let text = table(&rows(&before, &after, now.duration_since(at).as_secs_f64()));
        if args.once {
            super::write_stdout(text.as_bytes())?;
            return Ok(ExitCode::SUCCESS);
        }
        // Clear the terminal, then the table.
        super::write_stdout(format!("\x1b[H\x1b[2J{text}").as_bytes())?;
        (before, at) = (after, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
# TYPE ignis_invocations_total counter
ignis_invocations_total{account=\"1\",function=\"f\",version=\"$LATEST\"} 10
ignis_invocations_total{account=\"1\",function=\"g\",version=\"$LATEST\"} 5
# TYPE ignis_errors_total counter
ignis_errors_total{account=\"1\",function=\"f\",version=\"$LATEST\"} 1
# TYPE ignis_duration_seconds histogram
ignis_duration_seconds_bucket{account=\"1\",function=\"f\",version=\"$LATEST\",le=\"0.001\"} 0
ignis_duration_seconds_bucket{account=\"1\",function=\"f\",version=\"$LATEST\",le=\"0.01\"} 10
ignis_duration_seconds_bucket{account=\"1\",function=\"f\",version=\"$LATEST\",le=\"+Inf\"} 10
ignis_duration_seconds_sum{account=\"1\",function=\"f\",version=\"$LATEST\"} 0.05
ignis_duration_seconds_count{account=\"1\",function=\"f\",version=\"$LATEST\"} 10
";

    const AFTER: &str = "\
# TYPE ignis_invocations_total counter
ignis_invocations_total{account=\"1\",function=\"f\",version=\"$LATEST\"} 110
ignis_invocations_total{account=\"1\",function=\"g\",version=\"$LATEST\"} 5
# TYPE ignis_errors_total counter
ignis_errors_total{account=\"1\",function=\"f\",version=\"$LATEST\"} 3
# TYPE ignis_concurrent_executions gauge
ignis_concurrent_executions{account=\"1\",function=\"f\",version=\"$LATEST\"} 4
# TYPE ignis_duration_seconds histogram
ignis_duration_seconds_bucket{account=\"1\",function=\"f\",version=\"$LATEST\",le=\"0.001\"} 50
ignis_duration_seconds_bucket{account=\"1\",function=\"f\",version=\"$LATEST\",le=\"0.01\"} 108
ignis_duration_seconds_bucket{account=\"1\",function=\"f\",version=\"$LATEST\",le=\"+Inf\"} 110
ignis_duration_seconds_sum{account=\"1\",function=\"f\",version=\"$LATEST\"} 0.5
ignis_duration_seconds_count{account=\"1\",function=\"f\",version=\"$LATEST\"} 110
";

    #[test]
    fn rates_and_percentiles_are_of_the_interval() {
        let (before, after) = (snapshot(BEFORE).unwrap(), snapshot(AFTER).unwrap());
        let got = rows(&before, &after, 2.0);
        assert_eq!(got.len(), 2);
        let f = &got[0];
        assert_eq!(f.key.1, "f");
        assert_eq!((f.rate, f.errors, f.concurrency), (50.0, 1.0, 4.0));
        // Of the interval's 100: 50 under 1 ms, 48 more under 10 ms, 2 slower.
        assert_eq!((f.p50_ms, f.p99_ms), (Some(1.0), Some(f64::INFINITY)));
        let g = &got[1];
        assert_eq!((g.key.1.as_str(), g.rate, g.p50_ms), ("g", 0.0, None));
        // A restart (counters back down) counts from zero; nothing before: everything is new.
        let restarted = rows(&after, &before, 1.0);
        assert_eq!(restarted[0].rate, 10.0);
        assert_eq!(rows(&Snapshot::new(), &after, 1.0)[0].rate, 110.0);
        assert!(snapshot("not { metrics").is_err() || snapshot("not { metrics").unwrap().is_empty());
        assert!(table(&got).contains("INVOCATIONS/S"));
    }
}
