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

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use ignis_invoke::metrics::{LabelCap, OTHER};
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

/// `ignis_queue_messages{queue}`, one gauge per queue ARN under a [`LabelCap`]: the queues past it are summed under
/// `queue="_other"`; a queue that went away is set to 0 once (its series stays at 0, as the cap keeps its key).
pub struct QueueDepths {
    cap: LabelCap<String>,
    /// The labels set last time.
    shown: HashSet<String>,
}

impl QueueDepths {
    pub fn new(limit: usize) -> QueueDepths {
        QueueDepths { cap: LabelCap::new(limit), shown: HashSet::new() }
    }

    /// The value of every label given `depths` (ARN, messages) now: the capped queues', `_other`'s if any queue is
    /// folded, and 0 (once) for a label shown last time and gone now. Pure.
    pub fn values(&mut self, depths: Vec<(String, usize)>) -> BTreeMap<String, usize> {
        let mut values = BTreeMap::new();
        for (arn, messages) in depths {
            let label = if self.cap.owns(&arn) { arn } else { OTHER.to_string() };
            *values.entry(label).or_insert(0) += messages;
        }
        let present: HashSet<String> = values.keys().cloned().collect();
        for gone in self.shown.drain() {
            values.entry(gone).or_insert(0);
        }
        self.shown = present;
        values
    }

    /// Sets the gauges to `depths`.
    pub fn publish(&mut self, depths: Vec<(String, usize)>) {
        for (queue, messages) in self.values(depths) {
            metrics::gauge!("ignis_queue_messages", "queue" => queue).set(messages as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::QueueDepths;

    fn depths(pairs: &[(&str, usize)]) -> Vec<(String, usize)> {
        pairs.iter().map(|(arn, n)| (arn.to_string(), *n)).collect()
    }

    fn check(gauges: &mut QueueDepths, now: &[(&str, usize)], expected: &[(&str, usize)]) {
        let expected: BTreeMap<String, usize> = expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_eq!(gauges.values(depths(now)), expected, "{now:?}");
    }

    #[test]
    fn queues_past_the_cap_are_summed_and_gone_ones_go_to_zero() {
        let mut gauges = QueueDepths::new(2);
        check(&mut gauges, &[], &[]);
        check(&mut gauges, &[("a", 1), ("b", 2)], &[("a", 1), ("b", 2)]);
        check(&mut gauges, &[("a", 1), ("b", 2), ("c", 3), ("d", 4)], &[("a", 1), ("b", 2), ("_other", 7)]);
        // `b` is gone; a new queue `e` still shares `_other` (the cap keeps its first keys).
        check(&mut gauges, &[("a", 0), ("c", 3), ("e", 5)], &[("a", 0), ("b", 0), ("_other", 8)]);
        check(&mut gauges, &[("a", 0)], &[("a", 0), ("_other", 0)]);
        check(&mut gauges, &[("a", 0)], &[("a", 0)]);
    }
}
