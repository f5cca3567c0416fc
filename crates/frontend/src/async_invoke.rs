//! Durable asynchronous invocation (`InvocationType: Event`): accept, run,
//! retry, deliver the record, remove.
//!
//! # Parts and who owns what
//!
//! - The **writer** (an [`ignis_store::commit::GroupCommit`], a thread of its
//!   own) owns every write to the store's pending events. An accept (or a
//!   change of progress, or a completion) hands it a batch of
//!   [`EventChange`]s, with the events they make ready, and waits; the writer
//!   takes whatever has arrived while the previous commit ran, applies it all
//!   in one durable transaction (group commit), puts the new events in the
//!   schedule, then answers each sender. A sender that stops waiting (a
//!   client gone before its 202) changes nothing of that.
//! - [`AsyncEvents`] holds, under one mutex that is never held across an
//!   await, the [`Schedule`] (which events wait, until when, and which are
//!   leased to a poller) and the pending events' contents.
//! - The **dispatcher** task takes ready events under a lease and runs each
//!   in a task of its own (a poller), through the invoker's normal path
//!   (admission, so concurrency limits and throttles apply); the poller
//!   applies what `ignis_delivery::decide` says: a throttle waits and tries
//!   again (not a failure); a function error is retried after the back-off;
//!   the end (success, retries exhausted, too old) delivers the record to the
//!   destination and removes the event.
//!
//! # Fairness
//!
//! The schedule groups events by account: an account holds at most
//! [`ACCOUNT_POLLERS`] leases (running events) at once, and among accounts
//! with ready events the one running the fewest goes first. There is no
//! server-wide cap beside that, so one account's long-running events never
//! hold a poller another account's event needs: at most `ACCOUNT_POLLERS`
//! pollers per account exist at once, started on demand. Every lease given
//! back (settled or rescheduled) wakes the dispatcher.
//!
//! # Invariants
//!
//! - An event is answered 202 only after its commit is on disk, and it is in
//!   the schedule only after that.
//! - An event is removed only together with, or after, the delivery of its
//!   outcome: a function destination's event is put in the same transaction
//!   that removes the event; a queue destination or dead-letter queue has
//!   taken the record before that transaction.
//! - At start every stored event is pending again (at least once: an event
//!   that ran but whose removal was not committed runs again, with the same
//!   request id).
//! - An invocation's request id is the event's, the one its 202 answered
//!   with, on every try.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use ignis_delivery::{Attempt, Condition, Decision, Lease, Policy, Progress, Schedule};
use ignis_invoke::InvokeError;
use ignis_store::commit::{CommitError, GroupCommit, Limits};
use ignis_store::{EventChange, Store};
use ignis_worker::{Completion, Invocation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::control::resolve_version;
use crate::error::ApiError;
use crate::event_config::{Destination, parse_destination};
use crate::{App, Caller};

/// Pollers per account: at most this many asynchronous invocations of one
/// account run at once (others of its events wait for one of them to end;
/// other accounts' events do not).
pub const ACCOUNT_POLLERS: usize = 32;
/// How long a poller holds an event before another may take it: longer than
/// any invocation (900 s timeout plus init), so it runs out only if a poller
/// is lost.
const LEASE_MS: u64 = 20 * 60 * 1000;
/// The longest chain of records sent to destination functions (each record's
/// event may have a destination of its own): like Lambda's recursive loop
/// detection, the record that would make a longer chain is dropped.
pub const MAX_CHAIN: u32 = 16;
/// Changes written in one commit at most.
const MAX_BATCH: usize = 4096;
/// Longest a poller sleeps without looking at the schedule.
const IDLE_WAIT: Duration = Duration::from_secs(1);

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What the store keeps of an event besides its payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventMeta {
    pub account: String,
    /// The function's name (unqualified).
    pub function: String,
    /// The version or alias it was invoked with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualifier: Option<String>,
    pub request_id: String,
    pub accepted_ms: u64,
    /// Invocations that ran so far (throttles do not count).
    #[serde(default)]
    pub invocations: u32,
    pub trace_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_context: Option<String>,
    /// How many destination records led to this event (0: a client's).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chain: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An event waiting in memory: its metadata only (the payload, up to 1 MB,
/// is read from the store when the event runs).
struct Pending {
    meta: EventMeta,
    /// Throttles in a row (not stored: after a restart an event starts over).
    throttles: u32,
}

struct State {
    /// Events by account (see the module's Fairness).
    schedule: Schedule<u64, String>,
    pending: HashMap<u64, Pending>,
}

/// An event to put in the schedule once its commit is done.
type Ready = (u64, EventMeta);
/// A new event to store: a destination's record.
type NewEvent = (u64, EventMeta, Bytes);

/// One request to the writer: changes, and the events they make ready once committed.
struct Write {
    changes: Vec<EventChange>,
    ready: Vec<Ready>,
}

/// The pending asynchronous events of the whole server.
pub struct AsyncEvents {
    store: Arc<Store>,
    /// Set once, right after loading (it holds a weak reference back).
    writer: OnceLock<GroupCommit<Write>>,
    state: Mutex<State>,
    wake: Notify,
    next_id: AtomicU64,
    retry_delay: Duration,
    stopping: AtomicBool,
}

impl AsyncEvents {
    /// Loads every stored event (all ready to run) and starts the writer thread.
    pub fn load(store: Arc<Store>, retry_delay: Duration) -> Result<Arc<AsyncEvents>, ApiError> {
        let now = now_ms();
        let mut state = State { schedule: Schedule::new(ACCOUNT_POLLERS), pending: HashMap::new() };
        let mut next_id = 1;
        for stored in store.pending_events()? {
            next_id = next_id.max(stored.id + 1);
            match serde_json::from_slice::<EventMeta>(&stored.meta) {
                Ok(meta) => {
                    state.schedule.add(stored.id, meta.account.clone(), now);
                    state.pending.insert(stored.id, Pending { meta, throttles: 0 });
                }
                Err(e) => eprintln!("ignis: the stored asynchronous event {} is unreadable, skipped: {e}", stored.id),
            }
        }
        let events = Arc::new(AsyncEvents {
            store: store.clone(),
            writer: OnceLock::new(),
            state: Mutex::new(state),
            wake: Notify::new(),
            next_id: AtomicU64::new(next_id),
            retry_delay,
            stopping: AtomicBool::new(false),
        });
        // The writer ends when `events` (its only owner) is dropped.
        let weak = Arc::downgrade(&events);
        let limits = Limits { max_requests: MAX_BATCH, ..Limits::default() };
        let writer = GroupCommit::start("events", limits, |_| 1, move |writes| write_events(&store, writes, &weak))
            .map_err(|e| ApiError::Service(format!("cannot start the event writer: {e}")))?;
        let _ = events.writer.set(writer);
        Ok(events)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `changes` durably, in the writer's next commit, which then
    /// makes `ready` ready to run.
    async fn commit(&self, changes: Vec<EventChange>, ready: Vec<Ready>) -> Result<(), ApiError> {
        let stopped = || ApiError::Service("the event writer stopped".into());
        let writer = self.writer.get().ok_or_else(stopped)?;
        match writer.submit(vec![Write { changes, ready }]).wait().await {
            Ok(()) => Ok(()),
            Err(CommitError::Failed(e)) => Err(ApiError::Service(format!("storing the event: {e}"))),
            Err(CommitError::Stopped(_)) => Err(stopped()),
        }
    }

    fn put_change(id: u64, meta: &EventMeta, payload: &Bytes) -> Result<EventChange, ApiError> {
        let meta = serde_json::to_vec(meta).map_err(|e| ApiError::Service(e.to_string()))?;
        Ok(EventChange::Put { id, meta, payload: payload.to_vec() })
    }

    /// Stores a new event durably; the writer makes it ready to run.
    pub async fn accept(&self, meta: EventMeta, payload: Bytes) -> Result<(), ApiError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let change = Self::put_change(id, &meta, &payload)?;
        self.commit(vec![change], vec![(id, meta)]).await
    }

    fn ready(&self, events: Vec<Ready>) {
        let n = events.len();
        {
            let now = now_ms();
            let mut state = self.lock();
            for (id, meta) in events {
                state.schedule.add(id, meta.account.clone(), now);
                state.pending.insert(id, Pending { meta, throttles: 0 });
            }
        }
        if n > 0 {
            self.wake.notify_one();
        }
    }

    /// Stops taking events (the server is shutting down): an event whose
    /// invocation fails from now on is left as stored, for the next start.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The next ready event under a lease, or how long to wait for one.
    fn take(&self) -> Result<(Lease<u64>, EventMeta, u32), Duration> {
        let now = now_ms();
        let mut state = self.lock();
        loop {
            let Some(lease) = state.schedule.take(now, LEASE_MS) else {
                let wait = state.schedule.next_ready_ms().map_or(IDLE_WAIT, |t| Duration::from_millis(t.saturating_sub(now)));
                return Err(wait.min(IDLE_WAIT));
            };
            match state.pending.get(&lease.id) {
                Some(p) => return Ok((lease, p.meta.clone(), p.throttles)),
                None => {
                    let _ = state.schedule.settle(&lease);
                }
            }
        }
    }

    /// Puts a leased event back to wait until `at_ms`; wakes the dispatcher
    /// (its account may take another event now).
    fn reschedule(&self, lease: &Lease<u64>, at_ms: u64, meta: Option<EventMeta>, throttles: u32) {
        {
            let mut state = self.lock();
            if state.schedule.reschedule(lease, at_ms).is_ok()
                && let Some(pending) = state.pending.get_mut(&lease.id)
            {
                pending.throttles = throttles;
                if let Some(meta) = meta {
                    pending.meta = meta;
                }
            }
        }
        self.wake.notify_one();
    }

    /// Forgets a leased event whose removal is stored; wakes the dispatcher.
    fn settle(&self, lease: &Lease<u64>) {
        {
            let mut state = self.lock();
            if state.schedule.settle(lease).is_ok() {
                state.pending.remove(&lease.id);
            }
        }
        self.wake.notify_one();
    }
}

/// Applies one group of the writer's requests in one durable transaction,
/// then (and only then) puts the new events in the schedule.
fn write_events(store: &Store, writes: Vec<Write>, events: &std::sync::Weak<AsyncEvents>) -> Result<(), String> {
    let mut changes = Vec::new();
    let mut ready = Vec::new();
    for write in writes {
        changes.extend(write.changes);
        ready.extend(write.ready);
    }
    match store.apply_event_changes(&changes) {
        Ok(()) => {
            if let Some(events) = events.upgrade() {
                events.ready(ready);
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("ignis: storing asynchronous events failed: {e}");
            Err(e.to_string())
        }
    }
}

/// Starts the dispatcher, which starts a poller per event it takes.
pub fn start_pollers(app: &Arc<App>) {
    let app = app.clone();
    tokio::spawn(async move { dispatch(app).await });
}

/// Takes every event the schedule hands out (fairly, at most
/// [`ACCOUNT_POLLERS`] per account at once) and runs each in a poller task
/// of its own; waits for the next ready event, a new one, or a lease given back.
async fn dispatch(app: Arc<App>) {
    let events = &app.events;
    while !events.stopping() {
        match events.take() {
            Ok((lease, meta, throttles)) => {
                let app = app.clone();
                tokio::spawn(async move { poll(app, lease, meta, throttles).await });
            }
            Err(wait) => {
                let notified = events.wake.notified();
                tokio::select! {
                    () = notified => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// One poller: runs one leased event to its next step.
async fn poll(app: Arc<App>, lease: Lease<u64>, meta: EventMeta, throttles: u32) {
    let events = &app.events;
    let store = events.store.clone();
    let id = lease.id;
    match tokio::task::spawn_blocking(move || store.event_payload(id)).await {
        Ok(Ok(Some(payload))) => run_one(&app, lease, meta, Bytes::from(payload), throttles).await,
        // Completed meanwhile.
        Ok(Ok(None)) => events.settle(&lease),
        Ok(Err(e)) => unreadable(events, &lease, throttles, &e),
        Err(e) => unreadable(events, &lease, throttles, &e),
    }
}

/// An event whose payload could not be read is tried again a second later
/// (not left leased, which would hold one of its account's places).
fn unreadable(events: &AsyncEvents, lease: &Lease<u64>, throttles: u32, error: &dyn std::fmt::Display) {
    eprintln!("ignis: reading the asynchronous invocation {}: {error}", lease.id);
    events.reschedule(lease, now_ms() + 1000, None, throttles);
}

/// How one try ended, with what the function answered.
struct Tried {
    attempt: Attempt,
    executed_version: String,
    function_arn: String,
    /// The function's answer (or error), and whether it is an error.
    response: Option<(Bytes, bool)>,
}

async fn run_one(app: &Arc<App>, lease: Lease<u64>, meta: EventMeta, payload: Bytes, throttles: u32) {
    let events = &app.events;
    let id = lease.id;
    let caller = Caller { account: ignis_ids::AccountId::new(meta.account.as_str()), admin: false };
    let Some(latest) = app.registry.get(&ignis_ids::AccountId::new(meta.account.as_str()), &meta.function) else {
        eprintln!("ignis: dropped the asynchronous invocation {}: {}/{} no longer exists", meta.request_id, meta.account, meta.function);
        finish(app, &lease, Vec::new()).await;
        return;
    };
    let config = latest.event_invoke.get(meta.qualifier.as_deref().unwrap_or("$LATEST")).cloned().unwrap_or_default();
    let policy = Policy {
        max_retries: config.max_retries.unwrap_or(ignis_delivery::DEFAULT_MAX_RETRIES),
        max_age_ms: config.max_age_s.map_or(ignis_delivery::DEFAULT_MAX_AGE_MS, |s| u64::from(s) * 1000),
        retry_delay_ms: events.retry_delay.as_millis() as u64,
    };
    let progress = Progress { accepted_ms: meta.accepted_ms, invocations: meta.invocations, throttles };
    let now = now_ms();
    let default_arn = format!("{}:{}", latest.arn(&app.config.region, &meta.account), meta.qualifier.as_deref().unwrap_or("$LATEST"));
    let decision = if ignis_delivery::too_old(&policy, &progress, now) {
        let tried = Tried { attempt: Attempt::Failed, executed_version: "$LATEST".into(), function_arn: default_arn, response: None };
        (Decision::Done { condition: Condition::EventAgeExceeded, progress }, tried)
    } else {
        let tried = match try_once(app, &caller, &meta, payload.clone()).await {
            Ok(tried) => tried,
            // The invocation was cut short by the shutdown: it runs again at the next start.
            Err(_) if events.stopping() => return,
            Err(e) => Tried {
                attempt: Attempt::Failed,
                executed_version: "$LATEST".into(),
                function_arn: default_arn,
                response: Some((Bytes::from(json!({ "errorType": e.error_type(), "errorMessage": e.message() }).to_string()), true)),
            },
        };
        if events.stopping() && tried.attempt != Attempt::Success {
            // Its sandbox may have been ended by the shutdown: not counted, it runs again at the next start.
            return;
        }
        (ignis_delivery::decide(&policy, progress, tried.attempt, now_ms()), tried)
    };
    match decision {
        (Decision::Retry { at_ms, progress: next }, _) => {
            let mut changed = None;
            if next.invocations != meta.invocations {
                // Store the count before waiting, so a restart does not grant extra retries.
                let meta = EventMeta { invocations: next.invocations, ..meta };
                match AsyncEvents::put_change(id, &meta, &payload) {
                    Ok(change) => {
                        if let Err(e) = events.commit(vec![change], Vec::new()).await {
                            eprintln!("ignis: could not store the progress of {}: {}", meta.request_id, e.message());
                        }
                    }
                    Err(e) => eprintln!("ignis: {}", e.message()),
                }
                changed = Some(meta);
            }
            events.reschedule(&lease, at_ms, changed, next.throttles);
        }
        (Decision::Done { condition, progress: done }, tried) => {
            let record = record(&meta, &payload, condition, done.invocations, &tried);
            let mut changes = Vec::new();
            let destination = if condition.is_success() { &config.on_success } else { &config.on_failure };
            if let Some(arn) = destination {
                changes.extend(deliver(app, &meta, arn, &record).await);
            }
            if !condition.is_success() {
                if let Some(target) = &latest.dead_letter_target {
                    send_to_queue(app, &meta, target, String::from_utf8_lossy(&payload).into_owned()).await;
                }
                if destination.is_none() && latest.dead_letter_target.is_none() {
                    eprintln!(
                        "ignis: the asynchronous invocation {} of {}/{} failed ({}) after {} invocation(s) and was discarded",
                        meta.request_id,
                        meta.account,
                        meta.function,
                        condition.as_str(),
                        done.invocations
                    );
                }
            }
            finish(app, &lease, changes).await;
        }
    }
}

/// Removes the event (with `also`, the destination's new event, in the same
/// commit), then forgets it.
async fn finish(app: &Arc<App>, lease: &Lease<u64>, also: Vec<NewEvent>) {
    let events = &app.events;
    let mut changes = vec![EventChange::Remove { id: lease.id }];
    for (id, meta, payload) in &also {
        match AsyncEvents::put_change(*id, meta, payload) {
            Ok(change) => changes.push(change),
            Err(e) => eprintln!("ignis: {}", e.message()),
        }
    }
    let ready = also.into_iter().map(|(id, meta, _)| (id, meta)).collect();
    match events.commit(changes, ready).await {
        Ok(()) => events.settle(lease),
        Err(e) => {
            // Not removed: it stays leased and runs again when the lease runs out (or at the next start).
            eprintln!("ignis: could not complete the asynchronous invocation {}: {}", lease.id, e.message());
        }
    }
}

/// Runs the event once through the normal invoke path.
async fn try_once(app: &Arc<App>, caller: &Caller, meta: &EventMeta, payload: Bytes) -> Result<Tried, ApiError> {
    // Admission first (a slot is per function, whatever the version): a throttled event costs no more.
    let admitted = app.invoker.admit(&meta.account, &meta.function);
    if let Err(InvokeError::Throttled(_)) = &admitted {
        let function_arn = ignis_ids::arn::function_qualified(&app.config.region, &meta.account, &meta.function, "$LATEST");
        return Ok(Tried { attempt: Attempt::Throttled, executed_version: "$LATEST".into(), function_arn, response: None });
    }
    let (reference, record) = resolve_version(app, caller, "InvokeFunction", &meta.function, meta.qualifier.as_deref())?;
    let executed_version = record.version_label();
    let function_arn = record.qualified_arn(&app.config.region, caller.account.as_str(), &executed_version);
    let invoked_function_arn = crate::invoke_api::invoked_arn(app, caller.account.as_str(), reference.qualifier.as_deref(), &record);
    let target = crate::invoke_api::target(app, caller.account.as_str(), &record);
    let invocation = Invocation {
        request_id: meta.request_id.clone(),
        payload,
        invoked_function_arn,
        trace_id: meta.trace_id.clone(),
        client_context: meta.client_context.clone(),
        cognito_identity: None,
    };
    let throttled = || Tried { attempt: Attempt::Throttled, executed_version: executed_version.clone(), function_arn: function_arn.clone(), response: None };
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(InvokeError::Throttled(_)) => return Ok(throttled()),
        Err(e) => return Err(e.into()),
    };
    let outcome = match app.invoker.invoke_admitted(target, invocation, admitted).await {
        Ok(outcome) => outcome,
        Err(InvokeError::Throttled(_)) => return Ok(throttled()),
        Err(e) => return Err(e.into()),
    };
    let (attempt, response) = match outcome.completion {
        Completion::Response(body) => (Attempt::Success, (body, false)),
        Completion::Error { body, .. } => (Attempt::Failed, (body, true)),
        Completion::Failed { error_type, message } => {
            (Attempt::Failed, (Bytes::from(json!({ "errorType": error_type, "errorMessage": message }).to_string()), true))
        }
    };
    Ok(Tried { attempt, executed_version, function_arn, response: Some(response) })
}

/// JSON if it is JSON, else the text.
fn as_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Lambda's invocation record for destinations.
fn record(meta: &EventMeta, payload: &[u8], condition: Condition, invocations: u32, tried: &Tried) -> Value {
    let timestamp = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let mut record = json!({
        "version": "1.0",
        "timestamp": timestamp,
        "requestContext": {
            "requestId": meta.request_id,
            "functionArn": tried.function_arn,
            "condition": condition.as_str(),
            "approximateInvokeCount": invocations,
        },
        "requestPayload": as_json(payload),
    });
    if let Some((body, error)) = &tried.response {
        let mut context = json!({ "statusCode": 200, "executedVersion": tried.executed_version });
        if *error {
            context["functionError"] = json!("Unhandled");
        }
        record["responseContext"] = context;
        record["responsePayload"] = as_json(body);
    }
    record
}

/// The largest record any destination takes: an asynchronous event's payload
/// (a destination function's) and an SQS message (a queue's own
/// `MaximumMessageSize` may be smaller) are at most this.
const MAX_RECORD_BYTES: usize = {
    let event = crate::invoke_api::MAX_ASYNC_PAYLOAD;
    let message = ignis_queue::MAX_MAX_MESSAGE_SIZE;
    if event < message { event } else { message }
};

/// A writer that takes at most `limit` bytes, then fails.
struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            return Err(std::io::Error::other("over the limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `record` as the JSON text that goes to the destination, if it is at most
/// `limit` bytes; what is built on the way never exceeds the limit.
fn encode_within(record: &Value, limit: usize) -> Option<String> {
    let mut out = Bounded { bytes: Vec::new(), limit };
    serde_json::to_writer(&mut out, record).ok()?;
    String::from_utf8(out.bytes).ok()
}

/// Says in the function's own log (a stream `YYYY/MM/DD/destinations` of its
/// group), through the log writer, why a record or event of one of its
/// invocations went nowhere.
async fn log_undelivered(app: &App, source: &EventMeta, why: String) {
    eprintln!("ignis: {}/{}: {why}", source.account, source.function);
    let now = std::time::SystemTime::now();
    let day = humantime::format_rfc3339(now).to_string();
    let batch = ignis_worker::LogBatch {
        account: source.account.clone(),
        group: format!("/aws/lambda/{}", source.function),
        stream: format!("{}/{}/{}/destinations", &day[0..4], &day[5..7], &day[8..10]),
        lines: vec![ignis_worker::LogLine { timestamp_ms: now_ms() as i64, message: format!("{why}\n") }],
    };
    if app.invoker.log_sink().send(batch).await.is_err() {
        eprintln!("ignis: could not log that: the log writer has stopped");
    }
}

/// Delivers a record to a destination: a queue takes it now; a function gets
/// it as a new event, returned to be stored with the completion. A record
/// larger than the destination takes (counted as the JSON text it would
/// receive) is not delivered, and the source function's log says so.
async fn deliver(app: &Arc<App>, source: &EventMeta, arn: &str, record: &Value) -> Option<NewEvent> {
    let account = source.account.as_str();
    let destination = parse_destination(account, arn);
    let limit = match &destination {
        Some(Destination::Function { .. }) => crate::invoke_api::MAX_ASYNC_PAYLOAD,
        _ => MAX_RECORD_BYTES,
    };
    let Some(body) = encode_within(record, limit) else {
        let why = format!(
            "The destination record of RequestId: {} was not delivered to {arn}: it is larger than {limit} bytes, the most the destination takes.",
            source.request_id
        );
        log_undelivered(app, source, why).await;
        return None;
    };
    match destination {
        Some(Destination::Function { name, qualifier }) => {
            if app.registry.get(&ignis_ids::AccountId::new(account), &name).is_none() {
                eprintln!("ignis: the destination {arn} no longer exists; the record is dropped");
                return None;
            }
            if source.chain >= MAX_CHAIN {
                eprintln!(
                    "ignis: the record of {} is dropped: {MAX_CHAIN} destination records in a row look like a loop",
                    source.request_id
                );
                return None;
            }
            let request_id = uuid::Uuid::new_v4().to_string();
            let meta = EventMeta {
                account: account.to_string(),
                function: name,
                qualifier,
                trace_id: crate::invoke_api::trace_id(&request_id),
                request_id,
                accepted_ms: now_ms(),
                invocations: 0,
                client_context: None,
                chain: source.chain + 1,
            };
            Some((app.events.next_id.fetch_add(1, Ordering::Relaxed), meta, Bytes::from(body)))
        }
        Some(Destination::Queue { arn }) => {
            send_to_queue(app, source, &arn, body).await;
            None
        }
        None => {
            eprintln!("ignis: the destination {arn} cannot take records; the record is dropped");
            None
        }
    }
}

/// Sends to one of the source's account's queues; durable when it returns.
/// What the queue refuses (too large for its `MaximumMessageSize`, ...) is
/// said in the source function's log.
async fn send_to_queue(app: &App, source: &EventMeta, arn: &str, body: String) {
    if let Err(e) = app.queues().send(&source.account, arn, body).await {
        let why = format!("A message for RequestId: {} was not delivered to {arn}: {e}", source.request_id);
        log_undelivered(app, source, why).await;
    }
}
