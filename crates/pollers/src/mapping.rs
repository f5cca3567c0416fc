//! Event source mappings, the pure part: the stored record, the checks of
//! batching values, the state a mapping shows, how a poller gathers a batch
//! ([`gather`]) and which messages a finished invocation lets it delete
//! ([`settle`]). No IO and no clock: `mappings` does those.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `BatchSize` when none is given (Lambda's default for SQS).
pub const DEFAULT_BATCH_SIZE: u32 = 10;
/// The largest `BatchSize` (with a batching window).
pub const MAX_BATCH_SIZE: u32 = 10_000;
/// The largest `BatchSize` without a batching window (one receive).
pub const MAX_UNWINDOWED_BATCH_SIZE: u32 = 10;
/// The longest `MaximumBatchingWindowInSeconds`.
pub const MAX_WINDOW_S: u32 = 300;
/// The most messages one receive hands out.
pub const MAX_RECEIVE: usize = 10;
/// How long one receive waits for messages (SQS's longest long poll).
pub const LONG_POLL: Duration = Duration::from_secs(20);
/// The largest event a batch may grow to (a synchronous invocation's payload).
pub const MAX_EVENT_BYTES: usize = 6 * 1024 * 1024;
/// Pollers a mapping starts with (as Lambda's SQS mappings do).
pub const MIN_POLLERS: usize = 5;
/// `ScalingConfig.MaximumConcurrency`'s range; without one, the largest.
pub const MIN_MAX_CONCURRENCY: u32 = 2;
pub const MAX_MAX_CONCURRENCY: u32 = 1000;
/// A mapping adds at most one poller this often (300 a minute, as Lambda).
pub const GROWTH_INTERVAL: Duration = Duration::from_millis(200);
/// A backlog adds pollers only for a function that ran at least this long
/// with its batch: a faster one is kept busy by the first pollers, and more
/// sandboxes would only cost the host their start.
pub const SLOW_BATCH: Duration = Duration::from_millis(200);

/// What storage keeps of a mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingRecord {
    pub uuid: String,
    /// The source queue's ARN.
    pub queue_arn: String,
    /// The function's name (in the mapping's account) and the version or alias it was named with.
    pub function_name: String,
    pub qualifier: Option<String>,
    pub batch_size: u32,
    pub window_s: u32,
    pub enabled: bool,
    /// `FunctionResponseTypes: ["ReportBatchItemFailures"]`.
    pub report_failures: bool,
    /// `ScalingConfig.MaximumConcurrency`: the most pollers (so invocations) at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Milliseconds since the epoch.
    pub last_modified_ms: i64,
}

/// Batching values the API's model allows but SQS mappings do not: a batch
/// larger than one receive needs a batching window.
pub fn check_batching(batch_size: u32, window_s: u32) -> Result<(), String> {
    if batch_size > MAX_UNWINDOWED_BATCH_SIZE && window_s == 0 {
        return Err(format!(
            "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than {MAX_UNWINDOWED_BATCH_SIZE}"
        ));
    }
    Ok(())
}

/// A queue whose messages come back before the function's timeout could have
/// them processed twice at once: Lambda refuses the mapping.
pub fn check_visibility(visibility_timeout_s: u32, function_timeout_s: u32) -> Result<(), String> {
    if visibility_timeout_s < function_timeout_s {
        return Err(format!(
            "Queue visibility timeout: {visibility_timeout_s} seconds is less than Function timeout: {function_timeout_s} seconds"
        ));
    }
    Ok(())
}

/// The call a mapping's answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Create,
    /// An update, from the mapping enabled or not to enabled or not.
    Update { was_enabled: bool },
    Delete,
}

/// The `State` the answer to a create, update or delete shows.
pub fn answered_state(change: Change, enabled: bool) -> &'static str {
    match change {
        Change::Create => "Creating",
        Change::Update { was_enabled: false } if enabled => "Enabling",
        Change::Update { was_enabled: true } if !enabled => "Disabling",
        Change::Update { .. } => "Updating",
        Change::Delete => "Deleting",
    }
}

/// The `State` a mapping shows later: a disabled mapping whose pollers are
/// still finishing their batches is `Disabling`; an enabled one whose pollers
/// have not started yet is `Enabling`.
pub fn settled_state(enabled: bool, polling: bool) -> &'static str {
    match (enabled, polling) {
        (true, true) => "Enabled",
        (true, false) => "Enabling",
        (false, true) => "Disabling",
        (false, false) => "Disabled",
    }
}

/// A poller's next step while it gathers a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gather {
    /// Receive up to `max` more messages, waiting up to `wait` for the first.
    Receive { max: usize, wait: Duration },
    /// Invoke the function with what was gathered.
    Invoke,
}

/// What a poller has gathered so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gathered {
    /// Messages received.
    pub messages: usize,
    /// Their size in the event.
    pub bytes: usize,
    /// Time since the first of them was received (none received yet: `None`).
    pub elapsed: Option<Duration>,
}

/// Lambda's batching: invoke when the batch is full, when the window has
/// passed since the first message, when one more receive could take the event
/// past [`MAX_EVENT_BYTES`] (`record_bytes` is the most one message can add),
/// or, without a window, after the first receive that got anything.
pub fn gather(batch_size: u32, window: Duration, record_bytes: usize, now: Gathered) -> Gather {
    let wanted = batch_size as usize;
    if now.messages == 0 {
        return Gather::Receive { max: wanted.min(MAX_RECEIVE), wait: LONG_POLL };
    }
    let max = (wanted - now.messages.min(wanted)).min(MAX_RECEIVE);
    let room = MAX_EVENT_BYTES.saturating_sub(now.bytes);
    let elapsed = now.elapsed.unwrap_or_default();
    if max == 0 || window.is_zero() || elapsed >= window || room < max.saturating_mul(record_bytes) {
        return Gather::Invoke;
    }
    Gather::Receive { max, wait: (window - elapsed).min(LONG_POLL) }
}

/// What a poller does after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Start one more poller.
    Grow,
    /// End this one.
    Shrink,
    Keep,
}

/// How a poller's last batch went, for [`scale`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// It found a backlog: at least one full receive.
    pub backlog: bool,
    /// Its long poll found nothing.
    pub idle: bool,
    /// How long the function ran with it (and with the one before, whichever is less).
    pub busy: Duration,
}

/// Lambda's scaling of SQS pollers, decided by each poller after each batch,
/// given how many run and the mapping's cap (its maximum concurrency): a
/// mapping keeps [`MIN_POLLERS`] (fewer if its cap is lower); a batch that
/// found a backlog and kept its function busy for [`SLOW_BATCH`] adds a
/// poller, at most one per [`GROWTH_INTERVAL`], up to the cap; a poller
/// beyond the minimum whose long poll found nothing ends, and so does any
/// beyond the cap.
pub fn scale(running: usize, cap: usize, load: Load, since_growth: Duration) -> Scale {
    let floor = MIN_POLLERS.min(cap);
    let wanted = load.backlog && load.busy >= SLOW_BATCH;
    if running > cap || (load.idle && running > floor) {
        Scale::Shrink
    } else if running < floor || (wanted && running < cap && since_growth >= GROWTH_INTERVAL) {
        Scale::Grow
    } else {
        Scale::Keep
    }
}

/// How an invocation of a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran<'a> {
    /// The function answered, with this response.
    Succeeded(&'a [u8]),
    /// The function failed (an error, a crash, a timeout), or it never ran (a throttle).
    Failed,
}

/// Which messages of a batch (by index) may be deleted, given the batch's
/// message ids, how the invocation ended and whether the mapping reports
/// batch item failures. A failed invocation deletes nothing. With
/// `ReportBatchItemFailures`, a response naming failures deletes every other
/// message; an empty, `null` or `{}` response, or one whose
/// `batchItemFailures` is `null` or `[]`, deletes all; a response Lambda
/// cannot read (not JSON, not an object, an `itemIdentifier` missing, empty
/// or not in the batch) deletes nothing.
pub fn settle(message_ids: &[&str], ran: Ran<'_>, report_failures: bool) -> Vec<usize> {
    let all = || (0..message_ids.len()).collect();
    let Ran::Succeeded(response) = ran else { return Vec::new() };
    if !report_failures {
        return all();
    }
    if response.iter().all(u8::is_ascii_whitespace) {
        return all();
    }
    let Ok(value) = serde_json::from_slice::<Value>(response) else { return Vec::new() };
    let failed = match &value {
        Value::Null => return all(),
        Value::Object(fields) => match fields.get("batchItemFailures") {
            None | Some(Value::Null) => return all(),
            Some(Value::Array(items)) => items,
            Some(_) => return Vec::new(),
        },
        _ => return Vec::new(),
    };
    let mut failed_ids = Vec::with_capacity(failed.len());
    for item in failed {
        match item.get("itemIdentifier").and_then(Value::as_str) {
            Some(id) if !id.is_empty() && message_ids.contains(&id) => failed_ids.push(id),
            _ => return Vec::new(),
        }
    }
    (0..message_ids.len()).filter(|i| !failed_ids.contains(&message_ids[*i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batching_values() {
        for (size, window, ok) in [(1, 0, true), (10, 0, true), (11, 0, false), (10_000, 0, false), (11, 1, true), (10_000, 300, true)] {
            assert_eq!(check_batching(size, window).is_ok(), ok, "{size} {window}");
        }
        assert!(check_visibility(30, 3).is_ok());
        assert!(check_visibility(3, 3).is_ok());
        assert_eq!(
            check_visibility(2, 3).unwrap_err(),
            "Queue visibility timeout: 2 seconds is less than Function timeout: 3 seconds"
        );
    }

    #[test]
    fn states() {
        let updates = [
            (Change::Create, true, "Creating"),
            (Change::Create, false, "Creating"),
            (Change::Update { was_enabled: true }, true, "Updating"),
            (Change::Update { was_enabled: false }, false, "Updating"),
            (Change::Update { was_enabled: false }, true, "Enabling"),
            (Change::Update { was_enabled: true }, false, "Disabling"),
            (Change::Delete, true, "Deleting"),
            (Change::Delete, false, "Deleting"),
        ];
        for (change, enabled, expected) in updates {
            assert_eq!(answered_state(change, enabled), expected, "{change:?} {enabled}");
        }
        assert_eq!(settled_state(true, true), "Enabled");
        assert_eq!(settled_state(true, false), "Enabling");
        assert_eq!(settled_state(false, true), "Disabling");
        assert_eq!(settled_state(false, false), "Disabled");
    }

    fn check_gather(batch_size: u32, window_s: u64, messages: usize, bytes: usize, elapsed_ms: Option<u64>, expected: Gather) {
        let now = Gathered { messages, bytes, elapsed: elapsed_ms.map(Duration::from_millis) };
        assert_eq!(gather(batch_size, Duration::from_secs(window_s), 1000, now), expected, "{batch_size} {window_s} {now:?}");
    }

    #[test]
    fn gathering_a_batch() {
        use Gather::*;
        let s = Duration::from_secs;
        // Nothing yet: a long poll for at most one receive's worth.
        check_gather(10, 0, 0, 0, None, Receive { max: 10, wait: LONG_POLL });
        check_gather(3, 0, 0, 0, None, Receive { max: 3, wait: LONG_POLL });
        check_gather(500, 5, 0, 0, None, Receive { max: 10, wait: LONG_POLL });
        // No window: whatever the first receive got.
        check_gather(10, 0, 1, 100, Some(0), Invoke);
        // A window: more until it is full or the window has passed.
        check_gather(100, 5, 10, 1000, Some(1000), Receive { max: 10, wait: s(4) });
        check_gather(15, 5, 10, 1000, Some(1000), Receive { max: 5, wait: s(4) });
        check_gather(15, 5, 15, 1000, Some(1000), Invoke);
        check_gather(100, 5, 10, 1000, Some(5000), Invoke);
        check_gather(100, 300, 10, 1000, Some(1000), Receive { max: 10, wait: LONG_POLL });
        // The event must stay within a synchronous payload.
        check_gather(10_000, 300, 50, MAX_EVENT_BYTES - 9_999, Some(10), Invoke);
        check_gather(10_000, 300, 50, MAX_EVENT_BYTES - 10_000, Some(10), Receive { max: 10, wait: LONG_POLL });
        // More than asked for (never happens, but must not underflow).
        check_gather(5, 5, 7, 0, Some(0), Invoke);
    }

    #[test]
    fn scaling_pollers() {
        use Scale::*;
        let ms = Duration::from_millis;
        let slow = SLOW_BATCH.as_millis() as u64;
        let cases = [
            // (running, cap, backlog, idle, since growth) -> decision, for a slow function
            ((5, 1000, false, false, 0), Keep),
            ((5, 1000, true, false, 0), Keep),
            ((5, 1000, true, false, 200), Grow),
            ((999, 1000, true, false, 200), Grow),
            ((1000, 1000, true, false, 200), Keep),
            ((5, 1000, false, true, 200), Keep),
            ((6, 1000, false, true, 200), Shrink),
            ((6, 1000, true, false, 199), Keep),
            // A cap below the minimum, and a cap lowered or raised while running.
            ((2, 2, true, false, 1000), Keep),
            ((2, 2, false, true, 1000), Keep),
            ((5, 2, false, false, 0), Shrink),
            ((3, 10, false, false, 0), Grow),
            ((4, 10, false, true, 0), Grow),
        ];
        for ((running, cap, backlog, idle, since), expected) in cases {
            let load = Load { backlog, idle, busy: ms(slow) };
            assert_eq!(scale(running, cap, load, ms(since)), expected, "{running} {cap} {backlog} {idle} {since}");
        }
        // A fast function's backlog is left to the first pollers.
        let fast = Load { backlog: true, idle: false, busy: ms(slow - 1) };
        assert_eq!(scale(5, 1000, fast, ms(1000)), Keep);
        assert_eq!(scale(3, 1000, fast, ms(0)), Grow);
        // Whatever happens, the pollers converge into [min(5, cap), cap].
        for cap in [2, 3, 5, 8, 50] {
            for start in 0..60 {
                for (backlog, idle) in [(true, false), (false, true), (false, false)] {
                    let mut running = start;
                    for _ in 0..200 {
                        match scale(running, cap, Load { backlog, idle, busy: SLOW_BATCH }, GROWTH_INTERVAL) {
                            Grow => running += 1,
                            Shrink => running -= 1,
                            Keep => break,
                        }
                    }
                    assert!((MIN_POLLERS.min(cap)..=cap).contains(&running), "cap {cap} start {start}: {running}");
                }
            }
        }
    }

    fn check_settle(response: Option<&str>, report: bool, expected: &[usize]) {
        let ids = ["a", "b", "c"];
        let ran = match response {
            Some(text) => Ran::Succeeded(text.as_bytes()),
            None => Ran::Failed,
        };
        assert_eq!(settle(&ids, ran, report), expected, "{response:?} report={report}");
    }

    #[test]
    fn settling_a_batch() {
        let all = [0, 1, 2];
        // A failed invocation deletes nothing, whatever the setting.
        check_settle(None, false, &[]);
        check_settle(None, true, &[]);
        // Without ReportBatchItemFailures the response does not matter.
        for response in ["", "null", "{}", "not json", r#"{"batchItemFailures":[{"itemIdentifier":"a"}]}"#] {
            check_settle(Some(response), false, &all);
        }
        // With it: complete successes.
        for response in ["", " \n", "null", "{}", r#"{"batchItemFailures":null}"#, r#"{"batchItemFailures":[]}"#, r#"{"other":1}"#] {
            check_settle(Some(response), true, &all);
        }
        // Partial failures delete the others.
        check_settle(Some(r#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#), true, &[0, 2]);
        check_settle(Some(r#"{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":"c"}]}"#), true, &[1]);
        check_settle(Some(r#"{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":"a"}]}"#), true, &[1, 2]);
        check_settle(
            Some(r#"{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":"b"},{"itemIdentifier":"c"}]}"#),
            true,
            &[],
        );
        // Responses Lambda cannot read fail the whole batch.
        for response in [
            "not json",
            r#""ok""#,
            "[]",
            "42",
            r#"{"batchItemFailures":{}}"#,
            r#"{"batchItemFailures":"a"}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
            r#"{"batchItemFailures":[{"itemId":"a"}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":"zzz"}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":"zzz"}]}"#,
            r#"{"batchItemFailures":["a"]}"#,
        ] {
            check_settle(Some(response), true, &[]);
        }
    }

    #[test]
    fn settle_handles_every_subset_of_failures() {
        let ids = ["m0", "m1", "m2", "m3"];
        for mask in 0u32..16 {
            let failed: Vec<&str> = (0..4).filter(|i| mask & (1 << i) != 0).map(|i| ids[i]).collect();
            let items: Vec<Value> = failed.iter().map(|id| serde_json::json!({ "itemIdentifier": id })).collect();
            let response = serde_json::json!({ "batchItemFailures": items }).to_string();
            let kept = settle(&ids, Ran::Succeeded(response.as_bytes()), true);
            let expected: Vec<usize> = (0..4).filter(|i| mask & (1 << i) == 0).collect();
            assert_eq!(kept, expected, "{response}");
        }
    }
}
