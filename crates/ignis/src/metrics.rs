//! `--metrics-listen ADDR` of `ignis server` and `ignis worker`: Prometheus
//! text at `http://ADDR/metrics`, meant for a private address (it has no
//! authentication). Off unless asked for; without it every metric the crates
//! record is a no-op.
//!
//! The crates record through the `metrics` facade (`metrics::counter!`,
//! `gauge!`, `histogram!`) and never format the exposition themselves: the
//! `metrics-exporter-prometheus` recorder installed here does. Every
//! histogram (the metrics named `*_seconds`) is rendered as a Prometheus
//! histogram with [`SECONDS_BUCKETS`], not as a summary: buckets add up across
//! servers and keep a scrape's cost fixed.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// The upper bounds of every `*_seconds` histogram: 1 ms to 15 min (Lambda's longest timeout).
pub const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0];

/// Starts serving metrics on `listen`, on the current tokio runtime.
pub fn serve(listen: &str) -> Result<(), String> {
    let address: SocketAddr = listen.parse().map_err(|e| {
        format!("--metrics-listen must be HOST:PORT with an IP address, not {listen:?}: {e}")
    })?;
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .map_err(|e| format!("metrics buckets: {e}"))?
        .with_http_listener(address)
        .install()
        .map_err(|e| format!("cannot serve metrics on {listen}: {e}"))
}
