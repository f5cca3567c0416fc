//! Lambda's per-function metrics, recorded where an invocation's outcome is
//! known ([`crate::Invoker`]'s `run`), through the `metrics` facade (a no-op
//! unless the binary installed a recorder).
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `ignis_invocations_total` | counter | invocations that ran to an outcome (function errors in, throttles not) |
//! | `ignis_errors_total` | counter | function errors (`/error`, a crash, a timeout, a failed init) |
//! | `ignis_throttles_total` | counter | invocations refused by admission (concurrency or the scaling rate) |
//! | `ignis_duration_seconds` | histogram | the REPORT line's `Duration` (`durationMs` of a `platform.report` record) |
//! | `ignis_init_duration_seconds` | histogram | the REPORT line's `Init Duration` (`initDurationMs`; cold starts only) |
//! | `ignis_cold_starts_total` | counter | invocations that started a sandbox of their own |
//! | `ignis_concurrent_executions` | gauge | admitted invocations running now |
//! | `ignis_provisioned_concurrency_in_use` | gauge | invocations running now on a provisioned sandbox |
//!
//! Besides, `ignis_sandboxes{state="initialising|idle|busy"}` (gauges) are
//! the pool's counts, set by the invoker's keep-alive sweep (at least every
//! 5 s).
//!
//! Each per-function one is labelled `account`, `function` and `version` (`$LATEST` or the
//! number: an alias's invocation counts for the version it ran).
//!
//! # Invariant: bounded labels
//!
//! A [`LabelCap`] gives the first N distinct function versions (N =
//! [`DEFAULT_FUNCTION_LABELS`] unless [`crate::Invoker::cap_function_labels`]
//! says otherwise) labels of their own and folds every later one into
//! [`OTHER`] (all three labels), so each metric has at most N + 1 series and
//! the cap holds at most N keys. Throttles the pollers meet through
//! [`crate::Invoker::admit`] are not counted: the event waits and is tried
//! again.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

use ignis_worker::{Completion, Outcome};
use metrics::Label;

use crate::{Function, InvokeError};

/// Function versions with labels of their own unless the server says otherwise.
pub const DEFAULT_FUNCTION_LABELS: usize = 1000;

/// The label value every key past the cap shares.
pub const OTHER: &str = "_other";

/// The first `limit` distinct keys it is asked about keep their own label;
/// every later one shares [`OTHER`]. Pure; holds at most `limit` keys.
#[derive(Debug)]
pub struct LabelCap<K> {
    limit: usize,
    own: HashSet<K>,
}

impl<K: Eq + Hash + Clone> LabelCap<K> {
    pub fn new(limit: usize) -> LabelCap<K> {
        LabelCap { limit, own: HashSet::new() }
    }

    /// Whether `key` has a label of its own (deciding now if it is new).
    pub fn owns(&mut self, key: &K) -> bool {
        if self.own.contains(key) {
            return true;
        }
        if self.own.len() >= self.limit {
            return false;
        }
        self.own.insert(key.clone());
        true
    }

    /// How many keys have labels of their own.
    pub fn len(&self) -> usize {
        self.own.len()
    }

    pub fn is_empty(&self) -> bool {
        self.own.is_empty()
    }
}

/// The durations of an invocation's `REPORT` line (or `platform.report` record), in seconds: `Duration`, and
/// `Init Duration` if it has one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    pub duration: f64,
    pub init: Option<f64>,
}

/// The durations of the last report of `log`: a `REPORT` line of the Text format, or a `platform.report` record of
/// the JSON format (`None` without one, as when the function's `SystemLogLevel` is WARN, or without a readable
/// duration). Pure.
pub fn report(log: &str) -> Option<Report> {
    log.lines().rev().find_map(|line| {
        if line.starts_with("REPORT RequestId:") {
            Some(text_report(line))
        } else if line.starts_with('{') && line.contains(r#""type":"platform.report""#) {
            Some(json_report(line))
        } else {
            None
        }
    })?
}

/// Milliseconds that can be a duration, in seconds.
fn seconds(ms: f64) -> Option<f64> {
    (ms.is_finite() && ms >= 0.0).then_some(ms / 1000.0)
}

fn text_report(line: &str) -> Option<Report> {
    let field = |name: &str| {
        line.split('\t')
            .find_map(|field| field.strip_prefix(name)?.strip_prefix(": ")?.strip_suffix(" ms"))
            .and_then(|ms| ms.trim().parse::<f64>().ok())
            .and_then(seconds)
    };
    Some(Report { duration: field("Duration")?, init: field("Init Duration") })
}

fn json_report(line: &str) -> Option<Report> {
    let record: serde_json::Value = serde_json::from_str(line).ok()?;
    let metrics = record.get("record")?.get("metrics")?;
    let field = |name: &str| metrics.get(name).and_then(serde_json::Value::as_f64).and_then(seconds);
    Some(Report { duration: field("durationMs")?, init: field("initDurationMs") })
}

/// Whether `outcome` is a function error.
pub fn is_error(outcome: &Outcome) -> bool {
    !matches!(outcome.completion, Completion::Response(_) | Completion::Streamed { .. })
}

/// Sets `ignis_sandboxes{state}` to the pool's `(initialising, idle, busy)` counts.
pub(crate) fn sandboxes((initialising, idle, busy): (usize, usize, usize)) {
    for (state, count) in [("initialising", initialising), ("idle", idle), ("busy", busy)] {
        metrics::gauge!("ignis_sandboxes", "state" => state).set(count as f64);
    }
}

/// The invoker's per-function recording: the label cap, and the labels of one function version.
pub(crate) struct FunctionMetrics {
    cap: Mutex<LabelCap<(String, String, String)>>,
}

impl FunctionMetrics {
    pub(crate) fn new(limit: usize) -> FunctionMetrics {
        FunctionMetrics { cap: Mutex::new(LabelCap::new(limit)) }
    }

    fn cap(&self) -> MutexGuard<'_, LabelCap<(String, String, String)>> {
        self.cap.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts over with `limit` labels (for the server to call before any invocation).
    pub(crate) fn set_limit(&self, limit: usize) {
        *self.cap() = LabelCap::new(limit);
    }

    /// The labels of `function`'s version: its own, or [`OTHER`] past the cap.
    pub(crate) fn labels(&self, function: &Function) -> Labels {
        let revision = &function.revision;
        let key = (revision.account.to_string(), revision.function.clone(), function.version.clone());
        let owned = self.cap().owns(&key);
        let (account, name, version) = if owned { key } else { (OTHER.into(), OTHER.into(), OTHER.into()) };
        Labels(vec![Label::new("account", account), Label::new("function", name), Label::new("version", version)])
    }
}

/// One function version's labels.
pub(crate) struct Labels(Vec<Label>);

impl Labels {
    /// An admitted invocation running until the guard drops.
    pub(crate) fn executing(&self) -> InUse<'_> {
        InUse::start("ignis_concurrent_executions", self)
    }

    /// An invocation running on a provisioned sandbox until the guard drops.
    pub(crate) fn on_provisioned(&self) -> InUse<'_> {
        InUse::start("ignis_provisioned_concurrency_in_use", self)
    }

    pub(crate) fn cold_start(&self) {
        metrics::counter!("ignis_cold_starts_total", self.0.iter()).increment(1);
    }

    pub(crate) fn throttle(&self) {
        metrics::counter!("ignis_throttles_total", self.0.iter()).increment(1);
    }

    /// How an admitted invocation ended: an outcome (counted, with its REPORT's durations), a throttle, or a
    /// platform error (not a function's: not counted).
    pub(crate) fn finished(&self, result: &Result<Outcome, InvokeError>) {
        match result {
            Ok(outcome) => {
                metrics::counter!("ignis_invocations_total", self.0.iter()).increment(1);
                if is_error(outcome) {
                    metrics::counter!("ignis_errors_total", self.0.iter()).increment(1);
                }
                if let Some(report) = report(&outcome.log) {
                    metrics::histogram!("ignis_duration_seconds", self.0.iter()).record(report.duration);
                    if let Some(init) = report.init {
                        metrics::histogram!("ignis_init_duration_seconds", self.0.iter()).record(init);
                    }
                }
            }
            Err(InvokeError::Throttled(_)) => self.throttle(),
            Err(_) => {}
        }
    }
}

/// One unit of a gauge, given back when dropped.
pub(crate) struct InUse<'a> {
    name: &'static str,
    labels: &'a Labels,
}

impl<'a> InUse<'a> {
    fn start(name: &'static str, labels: &'a Labels) -> InUse<'a> {
        metrics::gauge!(name, labels.0.iter()).increment(1.0);
        InUse { name, labels }
    }
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        metrics::gauge!(self.name, self.labels.0.iter()).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ignis_worker::{Completion, Outcome};

    use super::{LabelCap, Report, is_error, report};

    #[test]
    fn the_first_keys_keep_their_labels_and_later_ones_share_one() {
        let mut cap = LabelCap::new(2);
        assert!(cap.is_empty());
        assert!(cap.owns(&"a"));
        assert!(cap.owns(&"a"), "asking again keeps it");
        assert!(cap.owns(&"b"));
        assert!(!cap.owns(&"c"));
        assert!(!cap.owns(&"d"));
        assert!(cap.owns(&"a") && cap.owns(&"b"), "the first stay theirs");
        assert!(!cap.owns(&"c"), "a folded key stays folded");
        assert_eq!(cap.len(), 2);
    }

    #[test]
    fn the_cap_never_holds_more_than_its_limit() {
        for limit in [0, 1, 5, 1000] {
            let mut cap = LabelCap::new(limit);
            let owned = (0..3000).filter(|key| cap.owns(&(key % 2000))).count();
            // The first `limit` keys, asked about once or twice each.
            let expected = (0..3000).filter(|key| key % 2000 < limit).count();
            assert_eq!((owned, cap.len()), (expected, limit), "{limit}");
        }
    }

    fn check(log: &str, expected: Option<Report>) {
        assert_eq!(report(log), expected, "{log:?}");
    }

    #[test]
    fn report_lines_give_their_durations() {
        let warm = "START RequestId: r Version: $LATEST\nhello\nEND RequestId: r\nREPORT RequestId: r\t\
            Duration: 12.50 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 9 MB\n";
        check(warm, Some(Report { duration: 0.0125, init: None }));
        let cold = "REPORT RequestId: r\tDuration: 1.00 ms\tBilled Duration: 1 ms\tMemory Size: 128 MB\t\
            Max Memory Used: 9 MB\tInit Duration: 250.00 ms\n";
        check(cold, Some(Report { duration: 0.001, init: Some(0.25) }));
        // A function's own output that looks like one is not the last REPORT line.
        let printed = "REPORT RequestId: x\tDuration: 9 ms\n".to_string() + warm;
        check(&printed, Some(Report { duration: 0.0125, init: None }));
        check("", None);
        check("START RequestId: r\n", None);
        check("REPORT RequestId: r\tBilled Duration: 1 ms\n", None);
        check("REPORT RequestId: r\tDuration: -1 ms\n", None);
        check("REPORT RequestId: r\tDuration: NaN ms\n", None);
        let unreadable_init = Some(Report { duration: 0.002, init: None });
        check("REPORT RequestId: r\tDuration: 2 ms\tInit Duration: x ms\n", unreadable_init);
    }

    #[test]
    fn platform_report_records_give_their_durations() {
        let record = |metrics: &str| {
            format!(
                "{{\"time\":\"2024-01-01T00:00:00.000Z\",\"type\":\"platform.report\",\"record\":{{\"requestId\":\"r\",\
                 \"metrics\":{metrics},\"status\":\"success\"}}}}\n"
            )
        };
        let start = "{\"time\":\"2024-01-01T00:00:00.000Z\",\"type\":\"platform.start\",\"record\":{}}\n";
        let warm = record(r#"{"durationMs":12.5,"billedDurationMs":13,"memorySizeMB":128,"maxMemoryUsedMB":9}"#);
        check(&format!("{start}hello\n{warm}"), Some(Report { duration: 0.0125, init: None }));
        let cold = record(r#"{"durationMs":1.0,"initDurationMs":250.0}"#);
        check(&cold, Some(Report { duration: 0.001, init: Some(0.25) }));
        check(start, None);
        check(&record(r#"{"billedDurationMs":1}"#), None);
        check(&record(r#"{"durationMs":-1}"#), None);
        check(&record(r#"{"durationMs":"2"}"#), None);
        check("{\"type\":\"platform.report\", not json\n", None);
        check(&record(r#"{"durationMs":2,"initDurationMs":"x"}"#), Some(Report { duration: 0.002, init: None }));
    }

    #[test]
    fn a_response_is_not_an_error() {
        let outcome = |completion| Outcome { completion, log: String::new(), reusable: true };
        assert!(!is_error(&outcome(Completion::Response(Bytes::from_static(b"{}")))));
        assert!(!is_error(&outcome(Completion::Streamed { bytes: 3 })));
        assert!(is_error(&outcome(Completion::Error { body: Bytes::new(), error_type: None })));
        assert!(is_error(&outcome(Completion::Failed { error_type: "Sandbox.Timedout", message: String::new() })));
    }
}
