//! `--metrics-listen ADDR` of `ignis server` and `ignis worker`: Prometheus
//! text at `http://ADDR/metrics`, meant for a private address (it has no
//! authentication). Off unless asked for; without it every metric the crates
//! record is a no-op.
//!
//! The crates record through the `metrics` facade (`metrics::counter!`,
//! `gauge!`, `histogram!`) and never format the exposition themselves: the
//! `metrics-exporter-prometheus` recorder installed here does.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;

/// Starts serving metrics on `listen`, on the current tokio runtime.
pub fn serve(listen: &str) -> Result<(), String> {
    let address: SocketAddr = listen.parse().map_err(|e| {
        format!("--metrics-listen must be HOST:PORT with an IP address, not {listen:?}: {e}")
    })?;
    PrometheusBuilder::new()
        .with_http_listener(address)
        .install()
        .map_err(|e| format!("cannot serve metrics on {listen}: {e}"))
}
