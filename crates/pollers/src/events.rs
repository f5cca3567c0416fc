//! Durable asynchronous invocation (`InvocationType: Event`): accept, run,
//! retry, deliver the record, remove.
//!
//! # Parts and who owns what
//!
//! - The **writer** (an [`ignis_store::commit::GroupCommit`], a thread of its
//!   own) owns every write to the pending events' storage
//!   ([`crate::tables::EventStorage`]). An accept (or a change of progress, or
//!   a completion) hands it a batch of [`EventChange`]s, with the events they
//!   make ready, and waits; the writer takes whatever has arrived while the
//!   previous commit ran, applies it all in one durable transaction (group
//!   commit), puts the new events in the schedule, then answers each sender.
//!   A sender that stops waiting (a client gone before its 202) changes
//!   nothing of that.
//! - [`Events`] holds, under one mutex that is never held across an await,
//!   the [`Schedule`] (which events wait, until when, and which are leased to
//!   a poller) and the pending events' metadata (a payload, up to 1 MB, is
//!   read from the table when its event runs).
//! - The **dispatcher** task takes ready events under a lease and runs each
//!   in a task of its own (a poller), through the invoker's normal path
//!   ([`ignis_invoke::Invoker::admit`] first, so concurrency limits and
//!   throttles apply, then [`ignis_invoke::Invoker::invoke_admitted`] with
//!   the event's own request id); the poller applies what
//!   [`ignis_delivery::decide`] says: a throttle waits and tries again (not a
//!   failure); a function error is retried after the back-off; the end
//!   (success, retries exhausted, too old) delivers the record to the
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
//! # Destinations
//!
//! Queue destinations and dead-letter queues go to the account's queues
//! ([`ignis_queues::Queues::send`]), durably. Like Lambda's recursive loop
//! detection, a chain of records sent to destination functions stops after
//! [`MAX_CHAIN`] (16), unless the destination's recursion config is `Allow`
//! (`FunctionRecord::recursion_allowed`). A record is serialised against its destination's
//! limit (never building more): a destination function takes what an
//! `Event` invoke takes ([`MAX_PAYLOAD`]), a queue its `MaximumMessageSize`;
//! a record or dead letter that does not fit is not delivered, and a line in
//! the function's log group (stream `YYYY/MM/DD/destinations`, through the
//! invoker's log sink) says why.
//!
//! # Invariants
//!
//! - An event is accepted ([`Events::accept`] returns) only after its commit
//!   is on disk, and it is in the schedule only after that.
//! - An event is removed only together with, or after, the delivery of its
//!   outcome: a function destination's event is put in the same transaction
//!   that removes the event; a queue destination or dead-letter queue has
//!   taken the record before that transaction.
//! - At start every stored event is pending again (at least once: an event
//!   that ran but whose removal was not committed runs again, with the same
//!   request id).
//! - An invocation's request id is the event's, the one its 202 answered
//!   with, on every try.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use ignis_delivery::{Attempt, Condition, Decision, Lease, Policy, Progress, Schedule};
use ignis_ids::AccountId;
use ignis_invoke::{InvokeError, from_record};
use ignis_registry::{FunctionRef, RegistryError};
use ignis_store::commit::{CommitError, GroupCommit, Limits};
use ignis_worker::{Completion, Invocation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::destination::{Destination, parse_destination};
use ignis_registry::policy;
use crate::tables::{EventChange, EventStorage, RedbEventStorage};
use crate::{PollersError, Services};

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
/// Largest payload of an asynchronous invocation (1 MB): what an `Event`
/// invoke and a destination function take.
pub const MAX_PAYLOAD: usize = 1024 * 1024;
/// Changes written in one commit at most.
const MAX_BATCH: usize = 4096;
/// Longest the dispatcher sleeps without looking at the schedule.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How long an event whose payload could not be read waits before it is tried again.
const UNREADABLE_WAIT_MS: u64 = 1000;

/// An event to accept: whom it runs, with which request id, trace and context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub account: AccountId,
    /// The function's name (unqualified).
    pub function: String,
    /// The version or alias it was invoked with, if any.
    pub qualifier: Option<String>,
    /// The request id its 202 answers with; every try runs with it.
    pub request_id: String,
    pub trace_id: String,
    pub client_context: Option<String>,
}

/// What the table keeps of an event besides its payload (stored as JSON;
/// the field names are the stored format).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EventMeta {
    account: String,
    /// The function's name (unqualified).
    function: String,
    /// The version or alias it was invoked with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    qualifier: Option<String>,
    request_id: String,
    accepted_ms: u64,
    /// Invocations that ran so far (throttles do not count).
    #[serde(default)]
    invocations: u32,
    trace_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_context: Option<String>,
    /// How many destination records led to this event (0: a client's).
    #[serde(default, skip_serializing_if = "is_zero")]
    chain: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An event waiting in memory: its metadata only.
struct Pending {
    meta: EventMeta,
    /// Throttles in a row (not stored: after a restart an event starts over).
    throttles: u32,
}

struct State {
    /// Events by account (see the module's Fairness).
    schedule: Schedule<u64, String>,
    /// By id: ids are given in the order events are accepted, so the first is the oldest.
    pending: BTreeMap<u64, Pending>,
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

/// The pending asynchronous events of the whole server; see the module docs.
pub struct Events {
    services: Services,
    storage: Arc<dyn EventStorage>,
    /// Set once, right after loading (it holds a weak reference back).
    writer: OnceLock<GroupCommit<Write>>,
    state: Mutex<State>,
    wake: Notify,
    next_id: AtomicU64,
    retry_delay: Duration,
    stopping: AtomicBool,
}

impl Events {
    /// [`Events::start_with`] the events' table in the services' store's
    /// database (the embedded default).
    pub fn start(services: Services, retry_delay: Duration) -> Result<Arc<Events>, PollersError> {
        let storage = Arc::new(RedbEventStorage::open(services.store.clone())?);
        Events::start_with(services, storage, retry_delay)
    }

    /// Loads every event `storage` holds (all ready to run), starts the
    /// writer thread and the dispatcher task (which runs until
    /// [`Events::stop`]). Needs a tokio runtime; blocks on `storage` while it
    /// loads. `retry_delay` is the wait before an event's first retry (the
    /// second waits twice this).
    pub fn start_with(services: Services, storage: Arc<dyn EventStorage>, retry_delay: Duration) -> Result<Arc<Events>, PollersError> {
        let now = services.clock.now_ms();
        let mut state = State { schedule: Schedule::new(ACCOUNT_POLLERS), pending: BTreeMap::new() };
        let mut next_id = 1;
        for stored in storage.pending()? {
            next_id = next_id.max(stored.id + 1);
            match serde_json::from_slice::<EventMeta>(&stored.meta) {
                Ok(meta) => {
                    state.schedule.add(stored.id, meta.account.clone(), now);
                    state.pending.insert(stored.id, Pending { meta, throttles: 0 });
                }
                Err(e) => tracing::warn!(event = stored.id, error = %e, "a stored asynchronous event is unreadable, skipped"),
            }
        }
        let events = Arc::new(Events {
            services,
            storage: storage.clone(),
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
        let writer = GroupCommit::start("events", limits, |_| 1, move |writes| write_events(&*storage, writes, &weak))
            .map_err(|e| PollersError::Storage(format!("cannot start the event writer: {e}")))?;
        let _ = events.writer.set(writer);
        tokio::spawn(dispatch(events.clone()));
        Ok(events)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.services.clock.now_ms()
    }

    /// Applies `changes` durably, in the writer's next commit, which then
    /// makes `ready` ready to run.
    async fn commit(&self, changes: Vec<EventChange>, ready: Vec<Ready>) -> Result<(), PollersError> {
        let writer = self.writer.get().ok_or(PollersError::WriterStopped)?;
        match writer.submit(vec![Write { changes, ready }]).wait().await {
            Ok(()) => Ok(()),
            Err(CommitError::Failed(e)) => Err(PollersError::Storage(format!("storing the event: {e}"))),
            Err(CommitError::Stopped(_)) => Err(PollersError::WriterStopped),
        }
    }

    fn put_change(id: u64, meta: &EventMeta, payload: &Bytes) -> Result<EventChange, PollersError> {
        let meta = serde_json::to_vec(meta).map_err(|e| PollersError::Storage(e.to_string()))?;
        Ok(EventChange::Put { id, meta, payload: payload.to_vec() })
    }

    /// Stores a new event durably (accepted now, by the clock); the writer
    /// makes it ready to run. Returns once the event is on disk.
    pub async fn accept(&self, event: Event, payload: Bytes) -> Result<(), PollersError> {
        let meta = EventMeta {
            account: event.account.as_str().to_string(),
            function: event.function,
            qualifier: event.qualifier,
            request_id: event.request_id,
            accepted_ms: self.now_ms(),
            invocations: 0,
            trace_id: event.trace_id,
            client_context: event.client_context,
            chain: 0,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let change = Self::put_change(id, &meta, &payload)?;
        self.commit(vec![change], vec![(id, meta)]).await?;
        metrics::counter!("ignis_async_events_accepted_total").increment(1);
        Ok(())
    }

    /// Takes over events another front end stored and can no longer run (each its stored metadata and payload,
    /// as [`EventStorage`] holds them): each is stored again as this one's, with an id of its own, and runs here,
    /// with its request id and its progress. Returns how many, once they are durable; unreadable ones are skipped.
    pub async fn adopt(&self, events: Vec<(Vec<u8>, Vec<u8>)>) -> Result<usize, PollersError> {
        let (mut changes, mut ready) = (Vec::new(), Vec::new());
        for (meta, payload) in events {
            match serde_json::from_slice::<EventMeta>(&meta) {
                Ok(decoded) => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    changes.push(EventChange::Put { id, meta, payload });
                    ready.push((id, decoded));
                }
                Err(e) => tracing::warn!(error = %e, "an adopted asynchronous event is unreadable, skipped"),
            }
        }
        let adopted = ready.len();
        if adopted > 0 {
            self.commit(changes, ready).await?;
        }
        Ok(adopted)
    }

    fn ready(&self, events: Vec<Ready>) {
        let n = events.len();
        {
            let now = self.now_ms();
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

    /// Stops taking events (the server is shutting down): the dispatcher
    /// ends, and an event whose invocation fails from now on is left as
    /// stored, for the next start.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// How many events are pending (stored and not completed).
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// The pending events' progress, `(invocations, throttles)`, and when
    /// the next unleased one is ready (for tests).
    #[cfg(test)]
    pub(crate) fn progress(&self) -> (Vec<(u32, u32)>, Option<u64>) {
        let state = self.lock();
        (state.pending.values().map(|p| (p.meta.invocations, p.throttles)).collect(), state.schedule.next_ready_ms())
    }

    /// The next ready event under a lease, or how long to wait for one.
    fn take(&self) -> Result<(Lease<u64>, EventMeta, u32), Duration> {
        let now = self.now_ms();
        let mut state = self.lock();
        // The dispatcher comes here at least every `IDLE_WAIT`: the gauges follow the pending events that closely.
        let oldest_ms = state.pending.values().next().map_or(0, |p| now.saturating_sub(p.meta.accepted_ms));
        metrics::gauge!("ignis_async_events_pending").set(state.pending.len() as f64);
        metrics::gauge!("ignis_async_event_oldest_age_seconds").set(oldest_ms as f64 / 1000.0);
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
fn write_events(storage: &dyn EventStorage, writes: Vec<Write>, events: &Weak<Events>) -> Result<(), String> {
    let mut changes = Vec::new();
    let mut ready = Vec::new();
    for write in writes {
        changes.extend(write.changes);
        ready.extend(write.ready);
    }
    match storage.apply(&changes) {
        Ok(()) => {
            if let Some(events) = events.upgrade() {
                events.ready(ready);
            }
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "storing asynchronous events failed");
            Err(e.to_string())
        }
    }
}

/// Takes every event the schedule hands out (fairly, at most
/// [`ACCOUNT_POLLERS`] per account at once) and runs each in a poller task
/// of its own; waits for the next ready event, a new one, or a lease given
/// back. Ends when the events are stopped.
async fn dispatch(events: Arc<Events>) {
    while !events.stopping() {
        match events.take() {
            Ok((lease, meta, throttles)) => {
                tokio::spawn(poll(events.clone(), lease, meta, throttles));
            }
            Err(wait) => {
                let notified = events.wake.notified();
                tokio::select! {
                    () = notified => {}
                    () = events.services.clock.sleep(wait) => {}
                }
            }
        }
    }
}

/// One poller: runs one leased event to its next step.
async fn poll(events: Arc<Events>, lease: Lease<u64>, meta: EventMeta, throttles: u32) {
    let storage = events.storage.clone();
    let id = lease.id;
    match tokio::task::spawn_blocking(move || storage.payload(id)).await {
        Ok(Ok(Some(payload))) => run_one(&events, lease, meta, Bytes::from(payload), throttles).await,
        // Completed meanwhile.
        Ok(Ok(None)) => events.settle(&lease),
        Ok(Err(e)) => unreadable(&events, &lease, throttles, &e),
        Err(e) => unreadable(&events, &lease, throttles, &e),
    }
}

/// An event whose payload could not be read is tried again a second later
/// (not left leased, which would hold one of its account's places).
fn unreadable(events: &Events, lease: &Lease<u64>, throttles: u32, error: &dyn std::fmt::Display) {
    tracing::warn!(event = lease.id, error = %error, "reading an asynchronous invocation failed");
    events.reschedule(lease, events.now_ms() + UNREADABLE_WAIT_MS, None, throttles);
}

/// How one try ended, with what the function answered.
struct Tried {
    attempt: Attempt,
    executed_version: String,
    function_arn: String,
    /// The function's answer (or error), and whether it is an error.
    response: Option<(Bytes, bool)>,
}

/// Why a try did not reach the function, as the record's response shows it
/// (the error type and message Lambda's API would have answered with).
enum NotRun {
    Registry(RegistryError),
    Invoke(InvokeError),
}

impl NotRun {
    fn error_type(&self) -> &'static str {
        match self {
            NotRun::Registry(
                RegistryError::FunctionNotFound { .. } | RegistryError::VersionNotFound { .. } | RegistryError::AliasNotFound { .. },
            ) => "ResourceNotFoundException",
            NotRun::Registry(RegistryError::AccessDenied { .. }) => "AccessDeniedException",
            NotRun::Registry(RegistryError::FunctionExists { .. } | RegistryError::Conflict { .. }) => "ResourceConflictException",
            NotRun::Registry(RegistryError::RevisionMismatch { .. }) => "PreconditionFailedException",
            NotRun::Registry(RegistryError::Storage(_)) => "ServiceException",
            NotRun::Invoke(InvokeError::Throttled(_)) => "TooManyRequestsException",
            NotRun::Invoke(InvokeError::Reservation(_)) => "InvalidParameterValueException",
            NotRun::Invoke(_) => "ServiceException",
        }
    }

    fn message(&self) -> String {
        match self {
            NotRun::Registry(e) => e.to_string(),
            NotRun::Invoke(InvokeError::Throttled(_)) => "Rate Exceeded.".into(),
            NotRun::Invoke(e) => e.to_string(),
        }
    }
}

async fn run_one(events: &Arc<Events>, lease: Lease<u64>, meta: EventMeta, payload: Bytes, throttles: u32) {
    let services = &events.services;
    let region = &services.region;
    let id = lease.id;
    let account = AccountId::new(meta.account.as_str());
    let Some(latest) = services.registry.get(&account, &meta.function) else {
        tracing::warn!(
            request_id = %meta.request_id,
            account = %meta.account,
            function = %meta.function,
            "dropped an asynchronous invocation: the function no longer exists"
        );
        metrics::counter!("ignis_async_events_dropped_total").increment(1);
        finish(events, &lease, Vec::new()).await;
        return;
    };
    let config = latest.event_invoke.get(meta.qualifier.as_deref().unwrap_or("$LATEST")).cloned().unwrap_or_default();
    let policy = Policy {
        max_retries: config.max_retries.unwrap_or(ignis_delivery::DEFAULT_MAX_RETRIES),
        max_age_ms: config.max_age_s.map_or(ignis_delivery::DEFAULT_MAX_AGE_MS, |s| u64::from(s) * 1000),
        retry_delay_ms: events.retry_delay.as_millis() as u64,
    };
    let progress = Progress { accepted_ms: meta.accepted_ms, invocations: meta.invocations, throttles };
    let now = events.now_ms();
    let default_arn = format!("{}:{}", latest.arn(region, &meta.account), meta.qualifier.as_deref().unwrap_or("$LATEST"));
    let decision = if ignis_delivery::too_old(&policy, &progress, now) {
        let tried = Tried { attempt: Attempt::Failed, executed_version: "$LATEST".into(), function_arn: default_arn, response: None };
        (Decision::Done { condition: Condition::EventAgeExceeded, progress }, tried)
    } else {
        let tried = match try_once(services, &meta, payload.clone()).await {
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
        (ignis_delivery::decide(&policy, progress, tried.attempt, events.now_ms()), tried)
    };
    match decision {
        (Decision::Retry { at_ms, progress: next }, _) => {
            let mut changed = None;
            if next.invocations != meta.invocations {
                // Store the count before waiting, so a restart does not grant extra retries.
                let meta = EventMeta { invocations: next.invocations, ..meta };
                match Events::put_change(id, &meta, &payload) {
                    Ok(change) => {
                        if let Err(e) = events.commit(vec![change], Vec::new()).await {
                            tracing::warn!(request_id = %meta.request_id, error = %e, "could not store an event's progress");
                        }
                    }
                    Err(e) => tracing::warn!(request_id = %meta.request_id, error = %e, "could not encode an event's progress"),
                }
                changed = Some(meta);
            }
            events.reschedule(&lease, at_ms, changed, next.throttles);
        }
        (Decision::Done { condition, progress: done }, tried) => {
            let record = record(events, &meta, &payload, condition, done.invocations, &tried);
            let mut changes = Vec::new();
            let destination = if condition.is_success() { &config.on_success } else { &config.on_failure };
            if let Some(arn) = destination {
                changes.extend(deliver(events, &meta, arn, &record).await);
            }
            if !condition.is_success() {
                metrics::counter!("ignis_async_events_dropped_total").increment(1);
                if let Some(target) = &latest.dead_letter_target {
                    send_to_queue(services, &meta, target, String::from_utf8_lossy(&payload).into_owned()).await;
                }
                if destination.is_none() && latest.dead_letter_target.is_none() {
                    tracing::info!(
                        request_id = %meta.request_id,
                        account = %meta.account,
                        function = %meta.function,
                        condition = condition.as_str(),
                        invocations = done.invocations,
                        "an asynchronous invocation failed and was discarded"
                    );
                }
            }
            finish(events, &lease, changes).await;
        }
    }
}

/// Removes the event (with `also`, the destination's new event, in the same
/// commit), then forgets it.
async fn finish(events: &Events, lease: &Lease<u64>, also: Vec<NewEvent>) {
    let mut changes = vec![EventChange::Remove { id: lease.id }];
    for (id, meta, payload) in &also {
        match Events::put_change(*id, meta, payload) {
            Ok(change) => changes.push(change),
            Err(e) => tracing::warn!(request_id = %meta.request_id, error = %e, "could not encode a destination's event"),
        }
    }
    let ready = also.into_iter().map(|(id, meta, _)| (id, meta)).collect();
    match events.commit(changes, ready).await {
        Ok(()) => events.settle(lease),
        Err(e) => {
            // Not removed: it stays leased and runs again when the lease runs out (or at the next start).
            tracing::warn!(event = lease.id, error = %e, "could not complete an asynchronous invocation");
        }
    }
}

/// Runs the event once through the normal invoke path.
async fn try_once(services: &Services, meta: &EventMeta, payload: Bytes) -> Result<Tried, NotRun> {
    let region = &services.region;
    let account = meta.account.as_str();
    // Admission first (a slot is per function, whatever the version): a throttled event costs no more.
    let admitted = services.invoker.admit(account, &meta.function).await;
    if let Err(InvokeError::Throttled(_)) = &admitted {
        let function_arn = ignis_ids::arn::function_qualified(region, account, &meta.function, "$LATEST");
        return Ok(Tried { attempt: Attempt::Throttled, executed_version: "$LATEST".into(), function_arn, response: None });
    }
    let reference = FunctionRef { name: meta.function.clone(), account: None, region: None, qualifier: meta.qualifier.clone() };
    let record = services
        .registry
        .resolve_version(&AccountId::new(account), region, "InvokeFunction", &reference, crate::random_unit())
        .map_err(NotRun::Registry)?;
    let executed_version = record.version_label();
    let function_arn = record.qualified_arn(region, account, &executed_version);
    let invoked_function_arn = from_record::invoked_arn(region, account, reference.qualifier.as_deref(), &record);
    let target = from_record::target(&services.store, &*services.networks, region, account, &record);
    let invocation = Invocation {
        request_id: meta.request_id.clone(),
        payload,
        invoked_function_arn,
        trace_id: meta.trace_id.clone(),
        client_context: meta.client_context.clone(),
        cognito_identity: None,
        response_stream: None,
    };
    let throttled = || Tried { attempt: Attempt::Throttled, executed_version: executed_version.clone(), function_arn: function_arn.clone(), response: None };
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(InvokeError::Throttled(_)) => return Ok(throttled()),
        Err(e) => return Err(NotRun::Invoke(e)),
    };
    let outcome = match services.invoker.invoke_admitted(target, invocation, admitted).await {
        Ok(outcome) => outcome,
        Err(InvokeError::Throttled(_)) => return Ok(throttled()),
        Err(e) => return Err(NotRun::Invoke(e)),
    };
    let (attempt, response) = match outcome.completion {
        Completion::Response(body) => (Attempt::Success, (body, false)),
        // Never asked for (no response stream is given): nothing was kept.
        Completion::Streamed { .. } => (Attempt::Success, (Bytes::new(), false)),
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
fn record(events: &Events, meta: &EventMeta, payload: &[u8], condition: Condition, invocations: u32, tried: &Tried) -> Value {
    let timestamp = humantime::format_rfc3339_millis(events.services.clock.now()).to_string();
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
    let message = ignis_queue::MAX_MAX_MESSAGE_SIZE;
    if MAX_PAYLOAD < message { MAX_PAYLOAD } else { message }
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
/// group), through the invoker's log sink, why a record or event of one of
/// its invocations went nowhere.
async fn log_undelivered(services: &Services, source: &EventMeta, why: String) {
    tracing::info!(account = %source.account, function = %source.function, "{why}");
    let now = services.clock.now();
    let day = humantime::format_rfc3339(now).to_string();
    let timestamp_ms = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let batch = ignis_worker::LogBatch {
        account: source.account.clone(),
        group: format!("/aws/lambda/{}", source.function),
        stream: format!("{}/{}/{}/destinations", &day[0..4], &day[5..7], &day[8..10]),
        lines: vec![ignis_worker::LogLine { timestamp_ms, message: format!("{why}\n") }],
    };
    if services.invoker.log_sink().send(batch).await.is_err() {
        tracing::warn!("could not log an undelivered record: the log writer has stopped");
    }
}

/// Delivers a record to a destination: a queue takes it now; a function gets
/// it as a new event, returned to be stored with the completion. A record
/// larger than the destination takes (counted as the JSON text it would
/// receive) is not delivered, and the source function's log says so.
async fn deliver(events: &Events, source: &EventMeta, arn: &str, record: &Value) -> Option<NewEvent> {
    let services = &events.services;
    let account = source.account.as_str();
    let destination = parse_destination(account, arn);
    let limit = match &destination {
        Some(Destination::Function { .. }) => MAX_PAYLOAD,
        _ => MAX_RECORD_BYTES,
    };
    let not_delivered = |why: &str| format!("The destination record of RequestId: {} was not delivered to {arn}: {why}", source.request_id);
    let Some(body) = encode_within(record, limit) else {
        let why = not_delivered(&format!("it is larger than {limit} bytes, the most the destination takes."));
        log_undelivered(services, source, why).await;
        delivered(false);
        return None;
    };
    match destination {
        Some(Destination::Function { account: owner, name, qualifier }) => {
            let Some(latest) = services.registry.get(&owner, &name) else {
                tracing::warn!(destination = arn, "the destination no longer exists; the record is dropped");
                delivered(false);
                return None;
            };
            if owner.as_str() != account {
                // Another account's function: its policy must (still) let the source's account invoke it.
                let role = services.registry.get(&AccountId::new(account), &source.function).map(|r| r.role.clone());
                let request = policy::Request::invoke_by(account, role.as_deref());
                if !policy::allows(latest.policies.get(policy::key(qualifier.as_deref())), &request) {
                    let why = not_delivered(&format!("no resource-based policy allows {account} lambda:InvokeFunction on it."));
                    log_undelivered(services, source, why).await;
                    delivered(false);
                    return None;
                }
            }
            // Unless the destination's recursion config says `Allow`.
            if source.chain >= MAX_CHAIN && !latest.recursion_allowed {
                tracing::warn!(
                    request_id = %source.request_id,
                    "the record is dropped: {MAX_CHAIN} destination records in a row look like a loop"
                );
                delivered(false);
                return None;
            }
            let request_id = uuid::Uuid::new_v4().to_string();
            let meta = EventMeta {
                account: owner.as_str().to_string(),
                function: name,
                qualifier,
                trace_id: from_record::trace_id(&request_id, services.clock.now()),
                request_id,
                accepted_ms: events.now_ms(),
                invocations: 0,
                client_context: None,
                chain: source.chain + 1,
            };
            // Stored with the source's completion, in the same commit.
            delivered(true);
            Some((events.next_id.fetch_add(1, Ordering::Relaxed), meta, Bytes::from(body)))
        }
        Some(Destination::Queue { arn }) => {
            delivered(send_to_queue(services, source, &arn, body).await);
            None
        }
        None => {
            tracing::warn!(destination = arn, "the destination cannot take records; the record is dropped");
            delivered(false);
            None
        }
    }
}

/// Counts a record's delivery to a destination (`ignis_destination_deliveries_total`).
fn delivered(success: bool) {
    let result = if success { "success" } else { "failure" };
    metrics::counter!("ignis_destination_deliveries_total", "result" => result).increment(1);
}

/// Sends to one of the source's account's queues; durable when it returns.
/// What the queue refuses (too large for its `MaximumMessageSize`, ...) is
/// said in the source function's log. Answers whether the queue took it.
async fn send_to_queue(services: &Services, source: &EventMeta, arn: &str, body: String) -> bool {
    match services.queues.send(&source.account, arn, body).await {
        Ok(_) => true,
        Err(e) => {
            let why = format!("A message for RequestId: {} was not delivered to {arn}: {e}", source.request_id);
            log_undelivered(services, source, why).await;
            false
        }
    }
}
