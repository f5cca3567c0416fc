//! The pollers over the real registry, queues and store (in a temporary
//! directory), the in-memory fake worker and a manual clock: no root, no
//! sandboxes, and no real waiting for time to pass (tests wait only for
//! background tasks and threads to reach a state they then check).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ignis_clock::{Clock, ManualClock, SharedClock};
use ignis_cluster::Capacity;
use ignis_counting::Limits;
use ignis_ids::AccountId;
use ignis_invoke::backend::{BoxFuture, Failure, Sandbox, Tag, WorkerBackend};
use ignis_invoke::fake::{FakeWorker, Step};
use ignis_invoke::{Admission, Invoker, Workers};
use ignis_queues::{QueueRef, Queues};
use ignis_registry::{EmbeddedRegistry, EventInvokeConfig, FunctionRecord, Registry};
use ignis_store::Store;
use ignis_worker::{Completion, FunctionSpec, Invocation, LogBatch, Outcome, StartError};
use serde_json::{Value, json};

use crate::mapping::MappingRecord;
use crate::tables::{EventStorage, RedbEventStorage};
use crate::{Event, Events, LogBarrier, Mappings, Services};

const A: &str = "111111111111";
const REGION: &str = "us-east-1";
const RETRY_DELAY: Duration = Duration::from_secs(60);

// ----- a worker that records what it is asked to run ---------------------------

/// One invocation a sandbox received, with the (manual) time it arrived.
#[derive(Debug, Clone)]
struct Seen {
    request_id: String,
    payload: Value,
    at: SystemTime,
}

/// A function's answer in place of the fake's echo, given the invocation.
type Respond = Box<dyn Fn(&Invocation) -> Bytes + Send>;

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    respond: Mutex<Option<Respond>>,
}

impl Recorder {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The fake worker, with every invocation recorded (and its successful
/// answers replaced when the test says how).
struct Recording {
    fake: Arc<FakeWorker>,
    recorder: Arc<Recorder>,
    clock: SharedClock,
}

impl WorkerBackend for Recording {
    fn start<'a>(&'a self, spec: FunctionSpec, sha: &'a str, tag: Tag) -> BoxFuture<'a, Result<Arc<dyn Sandbox>, StartError>> {
        Box::pin(async move {
            let inner = self.fake.start(spec, sha, tag).await?;
            let sandbox = RecordingSandbox { inner, recorder: self.recorder.clone(), clock: self.clock.clone() };
            Ok(Arc::new(sandbox) as Arc<dyn Sandbox>)
        })
    }
}

struct RecordingSandbox {
    inner: Arc<dyn Sandbox>,
    recorder: Arc<Recorder>,
    clock: SharedClock,
}

impl Sandbox for RecordingSandbox {
    fn is_alive(&self) -> bool {
        self.inner.is_alive()
    }

    fn kill(&self) {
        self.inner.kill();
    }

    fn prepare(&self) -> BoxFuture<'_, Result<(), String>> {
        self.inner.prepare()
    }

    fn invoke(&self, invocation: Invocation, timeout: Duration) -> BoxFuture<'_, Result<Outcome, Failure>> {
        Box::pin(async move {
            let replaced = self.recorder.respond.lock().unwrap().as_ref().map(|respond| respond(&invocation));
            let seen = Seen {
                request_id: invocation.request_id.clone(),
                payload: serde_json::from_slice(&invocation.payload).unwrap(),
                at: self.clock.now(),
            };
            self.recorder.seen.lock().unwrap().push(seen);
            let mut outcome = self.inner.invoke(invocation, timeout).await?;
            if let (Completion::Response(body), Some(replaced)) = (&mut outcome.completion, replaced) {
                *body = replaced;
            }
            Ok(outcome)
        })
    }

    fn end(&self) -> BoxFuture<'_, ()> {
        self.inner.end()
    }
}

// ----- the world ----------------------------------------------------------------

struct World {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    fake: Arc<FakeWorker>,
    recorder: Arc<Recorder>,
    services: Services,
    /// What the invoker's log sink received (undelivered records' lines).
    _logs: tokio::sync::mpsc::Receiver<LogBatch>,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let clock = ManualClock::at_epoch_2026();
    let shared: SharedClock = clock.clone();
    let fake = FakeWorker::new("local", shared.clone());
    let recorder = Arc::new(Recorder::default());
    let backend = Recording { fake: fake.clone(), recorder: recorder.clone(), clock: shared.clone() };
    let (sink, logs) = tokio::sync::mpsc::channel(64);
    let remote_clock = shared.clone();
    let workers = Workers {
        local: Some((Arc::new(backend) as Arc<dyn WorkerBackend>, Capacity { memory_mb: 8192, cpus: 2 })),
        connect: Box::new(move |address| Arc::new(FakeWorker::new(address, remote_clock.clone())) as Arc<dyn WorkerBackend>),
        logs: sink,
    };
    let admission = Admission::new(Limits { concurrency: 100, min_unreserved: 0 }, 1000, shared.clone());
    let invoker = Invoker::new(workers, admission, Duration::from_secs(600), shared.clone());
    let registry: Arc<dyn Registry> = Arc::new(EmbeddedRegistry::load(store.clone()).unwrap());
    let queues = Queues::load(store.clone(), REGION.into(), shared.clone()).unwrap();
    let networks: Arc<dyn ignis_registry::Networks> =
        Arc::new(ignis_registry::EmbeddedNetworks::load(store.clone()).unwrap());
    let services = Services { registry, networks, invoker, queues, store, clock: shared, region: REGION.into() };
    World { _dir: dir, clock, fake, recorder, services, _logs: logs }
}

fn account() -> AccountId {
    AccountId::new(A)
}

/// A `$LATEST` record named `name`.
fn record(name: &str) -> FunctionRecord {
    FunctionRecord {
        code_sha256_hex: "ab".repeat(32),
        revision_id: format!("{name}-r0"),
        ..FunctionRecord::new(name, "provided.al2023")
    }
}

/// An event invoke config for `$LATEST`.
fn config(max_retries: Option<u32>, max_age_s: Option<u32>, on_success: Option<&str>, on_failure: Option<&str>) -> EventInvokeConfig {
    EventInvokeConfig {
        max_retries,
        max_age_s,
        on_success: on_success.map(str::to_string),
        on_failure: on_failure.map(str::to_string),
        last_modified_ms: 0,
    }
}

/// Waits (for background tasks and threads, not for time on the clock) until `condition` holds.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never happened: {what}");
}

impl World {
    async fn function(&self, name: &str, event_invoke: Option<EventInvokeConfig>) {
        let mut record = record(name);
        if let Some(config) = event_invoke {
            record.event_invoke.insert("$LATEST".into(), config);
        }
        self.services.registry.write(&account(), name, Box::new(move |_| Some(record))).await.unwrap();
    }

    async fn queue(&self, name: &str) -> QueueRef {
        self.services.queues.create(A, name, &HashMap::new(), |base, _| Ok(base.clone())).await.unwrap()
    }

    fn reserve(&self, function: &str, reserved: u32) {
        self.services.invoker.admission().set_reservation(A, function, reserved).unwrap();
    }

    fn events(&self) -> Arc<Events> {
        Events::start(self.services.clone(), RETRY_DELAY).unwrap()
    }

    /// Accepts an event for `function`; answers its request id once it is stored.
    async fn accept(&self, events: &Events, function: &str, payload: Value) -> String {
        let request_id = uuid::Uuid::new_v4().to_string();
        let event = Event {
            account: account(),
            function: function.into(),
            qualifier: None,
            request_id: request_id.clone(),
            trace_id: "Root=1-00000000-000000000000000000000000".into(),
            client_context: None,
        };
        events.accept(event, Bytes::from(payload.to_string())).await.unwrap();
        request_id
    }

    /// The next record a queue receives, as JSON.
    async fn next_record(&self, queue: &QueueRef) -> Value {
        for _ in 0..10_000 {
            let got = self.services.queues.receive_from(queue, 1, None, Duration::ZERO).await.unwrap();
            if let Some(message) = got.first() {
                return serde_json::from_str(&message.body).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("no record arrived in {}", queue.name);
    }

    fn counts(&self, queue: &QueueRef) -> ignis_queue::Counts {
        self.services.queues.info(queue).counts
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
}

fn stored_events(world: &World) -> usize {
    RedbEventStorage::open(world.services.store.clone()).unwrap().pending().unwrap().len()
}

// ----- asynchronous events --------------------------------------------------------

#[tokio::test]
async fn an_event_runs_once_with_its_request_id_then_is_removed() {
    let w = world();
    let ok = w.queue("ok").await;
    w.function("f", Some(config(None, None, Some(&ok.arn), None))).await;
    let events = w.events();
    let request_id = w.accept(&events, "f", json!({ "n": 1 })).await;
    let record = w.next_record(&ok).await;
    assert_eq!(record["requestContext"]["requestId"], json!(request_id));
    assert_eq!(record["requestContext"]["condition"], "Success");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(record["requestContext"]["functionArn"], format!("arn:aws:lambda:{REGION}:{A}:function:f:$LATEST"));
    assert_eq!(record["requestPayload"], json!({ "n": 1 }));
    assert_eq!(record["responsePayload"], json!({ "n": 1 }));
    assert_eq!(record["responseContext"], json!({ "statusCode": 200, "executedVersion": "$LATEST" }));
    until("the event is removed", || events.pending() == 0).await;
    assert_eq!(stored_events(&w), 0);
    let seen = w.recorder.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].request_id, request_id);
    assert_eq!(seen[0].payload, json!({ "n": 1 }));
    assert_eq!(w.fake.invocations(), 1);
    events.stop();
}

#[tokio::test]
async fn a_function_error_is_retried_after_the_back_off_then_goes_to_on_failure() {
    let w = world();
    let failed = w.queue("failed").await;
    w.function("f", Some(config(None, None, None, Some(&failed.arn)))).await;
    w.fake.script([Step::FunctionError, Step::FunctionError, Step::DieAfterTaking]);
    let events = w.events();
    let t0 = w.now_ms();
    let request_id = w.accept(&events, "f", json!({})).await;

    // The first try fails: the count is stored and the event waits the back-off.
    until("the first retry is scheduled", || events.progress() == (vec![(1, 0)], Some(t0 + 60_000))).await;
    assert_eq!(w.recorder.seen().len(), 1);
    w.clock.advance(RETRY_DELAY);
    // The second waits twice as long.
    until("the second retry is scheduled", || events.progress() == (vec![(2, 0)], Some(t0 + 180_000))).await;
    w.clock.advance(2 * RETRY_DELAY);

    let record = w.next_record(&failed).await;
    assert_eq!(record["requestContext"]["requestId"], json!(request_id));
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    // The last try's answer: the runtime's exit, which names the request id it ran with.
    assert_eq!(record["responsePayload"]["errorMessage"], format!("RequestId: {request_id} Error: Runtime exited"));
    let seen = w.recorder.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.request_id == request_id));
    let at_ms = |s: &Seen| s.at.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert_eq!((at_ms(&seen[0]), at_ms(&seen[1]), at_ms(&seen[2])), (t0, t0 + 60_000, t0 + 180_000));
    until("the event is removed", || events.pending() == 0).await;
    events.stop();
}

#[tokio::test]
async fn a_throttled_event_is_not_run_nor_counted_and_runs_when_the_reservation_allows() {
    let w = world();
    let ok = w.queue("ok").await;
    w.function("f", Some(config(None, None, Some(&ok.arn), None))).await;
    w.reserve("f", 0);
    let events = w.events();
    let t0 = w.now_ms();
    let request_id = w.accept(&events, "f", json!({})).await;
    // Throttled: waits the first throttle delay, no invocation counted, nothing ran.
    let first_wait = ignis_delivery::THROTTLE_FIRST_DELAY_MS;
    until("the throttle is waited out", || events.progress() == (vec![(0, 1)], Some(t0 + first_wait))).await;
    assert_eq!(w.fake.invocations(), 0);
    assert!(w.recorder.seen().is_empty());

    w.reserve("f", 1);
    w.clock.advance(Duration::from_millis(first_wait));
    let record = w.next_record(&ok).await;
    assert_eq!(record["requestContext"]["requestId"], json!(request_id));
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(w.fake.invocations(), 1);
    events.stop();
}

#[tokio::test]
async fn an_event_older_than_its_maximum_age_ends_without_running() {
    let w = world();
    let failed = w.queue("failed").await;
    w.function("f", Some(config(None, Some(60), None, Some(&failed.arn)))).await;
    w.reserve("f", 0);
    let events = w.events();
    let request_id = w.accept(&events, "f", json!({ "old": true })).await;
    until("the event is throttled", || events.progress().0 == vec![(0, 1)]).await;
    // Its age passes while it waits; the reservation then allows it, but it is too old.
    w.reserve("f", 1);
    w.clock.advance(Duration::from_secs(61));
    let record = w.next_record(&failed).await;
    assert_eq!(record["requestContext"]["requestId"], json!(request_id));
    assert_eq!(record["requestContext"]["condition"], "EventAgeExceeded");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 0);
    assert_eq!(record["requestPayload"], json!({ "old": true }));
    assert!(record.get("responseContext").is_none());
    until("the event is removed", || events.pending() == 0).await;
    assert_eq!(w.fake.invocations(), 0);
    events.stop();
}

#[tokio::test]
async fn a_loop_of_destination_records_stops_after_sixteen() {
    let w = world();
    let own_arn = ignis_ids::arn::function(REGION, A, "f");
    w.function("f", Some(config(Some(0), None, None, Some(&own_arn)))).await;
    // More failures scripted than the chain may take: what stops it is the chain's limit.
    w.fake.script(std::iter::repeat_n(Step::FunctionError, 20));
    let events = w.events();
    let request_id = w.accept(&events, "f", json!({})).await;
    // Each record's event is stored in the commit that removes its source: none is pending only at the end.
    until("the chain ends", || events.pending() == 0 && w.fake.invocations() > 0).await;
    let seen = w.recorder.seen();
    assert_eq!(seen.len(), 1 + crate::events::MAX_CHAIN as usize);
    assert_eq!(seen[0].request_id, request_id);
    // Each later event is the record of the one before.
    for pair in seen.windows(2) {
        assert_eq!(pair[1].payload["requestContext"]["requestId"], json!(pair[0].request_id));
        assert_eq!(pair[1].payload["requestContext"]["condition"], "RetriesExhausted");
    }
    assert_eq!(stored_events(&w), 0);
    events.stop();
}

#[tokio::test]
async fn events_survive_a_reload() {
    let w = world();
    let ok = w.queue("ok").await;
    w.function("f", Some(config(None, None, Some(&ok.arn), None))).await;
    w.reserve("f", 0);
    let events = w.events();
    let request_id = w.accept(&events, "f", json!({ "kept": 1 })).await;
    until("the event is throttled", || events.progress().0 == vec![(0, 1)]).await;
    events.stop();
    drop(events);
    assert_eq!(stored_events(&w), 1);

    // As at a restart: loaded from the table, ready at once, the same request id.
    w.reserve("f", 1);
    let events = w.events();
    let record = w.next_record(&ok).await;
    assert_eq!(record["requestContext"]["requestId"], json!(request_id));
    assert_eq!(record["requestPayload"], json!({ "kept": 1 }));
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 1);
    until("the event is removed", || events.pending() == 0).await;
    assert_eq!(stored_events(&w), 0);
    events.stop();
}

// ----- event source mappings -----------------------------------------------------

fn mapping_record(queue: &QueueRef, batch_size: u32, window_s: u32, report_failures: bool) -> MappingRecord {
    MappingRecord {
        uuid: uuid::Uuid::new_v4().to_string(),
        queue_arn: queue.arn.clone(),
        function_name: "f".into(),
        qualifier: None,
        batch_size,
        window_s,
        enabled: true,
        report_failures,
        max_concurrency: None,
        last_modified_ms: 0,
    }
}

fn no_barrier() -> LogBarrier {
    Arc::new(|| Box::pin(async {}))
}

impl World {
    async fn mappings(&self, queue: &QueueRef, batch_size: u32, window_s: u32, report_failures: bool) -> (Arc<Mappings>, MappingRecord) {
        self.function("f", None).await;
        let mappings = Mappings::start(self.services.clone(), no_barrier()).unwrap();
        let record = mappings.create(&account(), mapping_record(queue, batch_size, window_s, report_failures)).await.unwrap();
        (mappings, record)
    }

    async fn send(&self, queue: &QueueRef, bodies: &[&str]) {
        let messages = bodies.iter().map(|b| ignis_queues::Outgoing { body: b.to_string(), ..Default::default() }).collect();
        for sent in self.services.queues.send_batch(queue, messages).await.unwrap() {
            sent.unwrap();
        }
    }
}

/// The message bodies of a batch's SQS event.
fn bodies(event: &Value) -> Vec<String> {
    event["Records"].as_array().unwrap().iter().map(|r| r["body"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn a_mapping_deletes_a_batch_its_function_processed() {
    let w = world();
    let q = w.queue("q").await;
    let (mappings, _) = w.mappings(&q, 10, 0, false).await;
    w.send(&q, &["a", "b", "c"]).await;
    until("the batch is deleted", || w.recorder.seen().len() == 1 && w.counts(&q).in_flight == 0).await;
    assert_eq!(w.counts(&q).visible, 0);
    let event = &w.recorder.seen()[0].payload;
    assert_eq!(bodies(event), ["a", "b", "c"]);
    let first = &event["Records"][0];
    assert_eq!(first["eventSource"], "aws:sqs");
    assert_eq!(first["eventSourceARN"], json!(q.arn));
    assert_eq!(first["md5OfBody"], ignis_queues::digest::md5_hex(b"a"));
    assert_eq!(first["attributes"]["ApproximateReceiveCount"], "1");
    drop(mappings);
}

#[tokio::test]
async fn a_mapping_keeps_a_batch_that_failed() {
    let w = world();
    let q = w.queue("q").await;
    w.fake.script([Step::FunctionError]);
    let (_mappings, _) = w.mappings(&q, 10, 0, false).await;
    w.send(&q, &["a", "b"]).await;
    until("the batch ran", || w.recorder.seen().len() == 1).await;
    // Not deleted: back after the queue's visibility timeout, received a second time.
    w.clock.advance(Duration::from_secs(30));
    until("the batch ran again", || w.recorder.seen().len() == 2).await;
    let seen = w.recorder.seen();
    assert_eq!(bodies(&seen[1].payload), ["a", "b"]);
    assert_eq!(seen[1].payload["Records"][0]["attributes"]["ApproximateReceiveCount"], "2");
    assert_eq!(seen[1].payload["Records"][0]["messageId"], seen[0].payload["Records"][0]["messageId"]);
    until("the batch is deleted", || w.counts(&q).in_flight == 0 && w.counts(&q).visible == 0).await;
}

#[tokio::test]
async fn a_mapping_with_report_batch_item_failures_deletes_all_but_the_reported() {
    let w = world();
    let q = w.queue("q").await;
    // The function reports the message whose body is "b" (every time).
    *w.recorder.respond.lock().unwrap() = Some(Box::new(|invocation: &Invocation| {
        let event: Value = serde_json::from_slice(&invocation.payload).unwrap();
        let failed: Vec<Value> = event["Records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["body"] == "b")
            .map(|r| json!({ "itemIdentifier": r["messageId"] }))
            .collect();
        Bytes::from(json!({ "batchItemFailures": failed }).to_string())
    }));
    let (_mappings, _) = w.mappings(&q, 10, 0, true).await;
    w.send(&q, &["a", "b", "c"]).await;
    until("all but one are deleted", || w.recorder.seen().len() == 1 && w.counts(&q).in_flight == 1).await;
    assert_eq!(w.counts(&q).visible, 0);
    w.clock.advance(Duration::from_secs(30));
    until("the reported one ran again", || w.recorder.seen().len() == 2).await;
    assert_eq!(bodies(&w.recorder.seen()[1].payload), ["b"]);
}

#[tokio::test]
async fn a_mapping_waits_out_its_batching_window_unless_the_batch_is_full() {
    let w = world();
    let q = w.queue("q").await;
    let (_mappings, _) = w.mappings(&q, 3, 5, false).await;
    // One message: the poller that took it waits the whole window for more.
    let t0 = w.clock.now();
    w.send(&q, &["alone"]).await;
    until("the message is taken", || w.counts(&q).in_flight == 1).await;
    w.clock.advance(Duration::from_secs(5));
    until("the batch ran", || w.recorder.seen().len() == 1).await;
    let seen = w.recorder.seen();
    assert_eq!(bodies(&seen[0].payload), ["alone"]);
    assert_eq!(seen[0].at, t0 + Duration::from_secs(5));
    until("it is deleted", || w.counts(&q).in_flight == 0).await;

    // A full batch runs at once, the clock standing still.
    let t1 = w.clock.now();
    w.send(&q, &["x", "y", "z"]).await;
    until("the full batch ran", || w.recorder.seen().len() == 2).await;
    let seen = w.recorder.seen();
    assert_eq!(bodies(&seen[1].payload), ["x", "y", "z"]);
    assert_eq!(seen[1].at, t1);
}

#[tokio::test]
async fn disabling_a_mapping_stops_its_pollers() {
    let w = world();
    let q = w.queue("q").await;
    let (mappings, record) = w.mappings(&q, 10, 0, false).await;
    until("the pollers run", || mappings.get(&account(), &record.uuid).unwrap().1).await;
    let (before, after) = mappings
        .update(&account(), &record.uuid, |r| -> Result<MappingRecord, crate::MappingError> {
            Ok(MappingRecord { enabled: false, ..r.clone() })
        })
        .await
        .unwrap();
    assert!(before.enabled && !after.enabled);
    // Each poller ends as soon as it sees the stop (none has a batch in hand).
    until("the pollers end", || !mappings.get(&account(), &record.uuid).unwrap().1).await;
    assert_eq!(mappings.list(&account()), vec![(after.clone(), false)]);
    w.send(&q, &["a"]).await;
    assert_eq!(w.counts(&q).visible, 1);
    assert!(w.recorder.seen().is_empty());

    // Enabled again, the message is taken.
    mappings.update(&account(), &record.uuid, |r| -> Result<_, crate::MappingError> { Ok(MappingRecord { enabled: true, ..r.clone() }) }).await.unwrap();
    until("the message ran", || w.recorder.seen().len() == 1).await;
}

#[tokio::test]
async fn mappings_are_checked_stored_and_reloaded() {
    let w = world();
    let q = w.queue("q").await;
    let (mappings, record) = w.mappings(&q, 10, 0, false).await;
    // One queue and one function have one mapping.
    let again = mappings.create(&account(), mapping_record(&q, 10, 0, false)).await;
    assert_eq!(
        again,
        Err(crate::MappingError::Exists { queue_arn: q.arn.clone(), function_name: "f".into(), uuid: record.uuid.clone() })
    );
    // More than one receive's worth needs a window.
    let other = w.queue("other").await;
    let refused = mappings.create(&account(), mapping_record(&other, 11, 0, false)).await;
    assert!(matches!(refused, Err(crate::MappingError::Invalid(_))), "{refused:?}");
    assert_eq!(mappings.get(&account(), "nope"), Err(crate::MappingError::NotFound));
    assert_eq!(mappings.get(&AccountId::new("222222222222"), &record.uuid), Err(crate::MappingError::NotFound));
    assert_eq!(record.last_modified_ms as u64, w.now_ms());

    let deleted = mappings.delete(&account(), &record.uuid).await.unwrap();
    assert_eq!(deleted, record);
    let kept = mappings.create(&account(), mapping_record(&q, 5, 0, false)).await.unwrap();
    let reloaded = Mappings::start(w.services.clone(), no_barrier()).unwrap();
    assert_eq!(reloaded.list(&account()).into_iter().map(|(r, _)| r).collect::<Vec<_>>(), vec![kept]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mappings_standing_by_load_nothing_until_they_take_over_and_stop_their_pollers_when_they_stand_down() {
    let w = world();
    let q = w.queue("q").await;
    let (first, record) = w.mappings(&q, 10, 0, false).await;
    drop(first);
    let storage = Arc::new(crate::tables::RedbMappingStorage::open(w.services.store.clone()).unwrap());
    let mappings = Mappings::standby(w.services.clone(), storage, no_barrier());
    assert!(mappings.list(&account()).is_empty());
    assert_eq!(mappings.get(&account(), &record.uuid), Err(crate::MappingError::NotFound));

    // Taken over, the stored mapping's pollers run (they find their mapping, whichever runs first).
    mappings.take_over().unwrap();
    assert_eq!(mappings.list(&account()).len(), 1);
    w.send(&q, &["a"]).await;
    until("the message ran", || w.recorder.seen().len() == 1 && w.counts(&q).in_flight == 0 && w.counts(&q).visible == 0).await;

    // Standing down forgets the mapping and ends its pollers; nothing is written.
    let pollers = mappings.pollers(&record.uuid).unwrap();
    mappings.stand_down();
    assert!(mappings.list(&account()).is_empty());
    until("the pollers end", || pollers.counts().0 == 0).await;
    let stored = crate::tables::RedbMappingStorage::open(w.services.store.clone()).unwrap();
    assert_eq!(crate::tables::MappingStorage::all(&stored).unwrap().len(), 1);
}

/// Where a test's pollers run: here or not, and which mappings another front end still polls.
#[derive(Default)]
struct Places {
    here: std::sync::atomic::AtomicBool,
    elsewhere: Mutex<Vec<String>>,
}

impl crate::PollerPlaces for Places {
    fn here(&self, _account: &str, function: &str) -> bool {
        assert_eq!(function, "f");
        self.here.load(std::sync::atomic::Ordering::Acquire)
    }

    fn elsewhere(&self, uuid: &str) -> bool {
        self.elsewhere.lock().unwrap().iter().any(|u| u == uuid)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_mapping_is_polled_only_where_it_is_placed_and_once_no_other_front_end_polls_it() {
    let w = world();
    let q = w.queue("q").await;
    w.function("f", None).await;
    let record = mapping_record(&q, 10, 0, false);
    let storage = Arc::new(crate::tables::RedbMappingStorage::open(w.services.store.clone()).unwrap());
    let mappings = Mappings::standby(w.services.clone(), storage, no_barrier());
    let places = Arc::new(Places::default());
    mappings.set_places(places.clone());
    let stored = |r: &MappingRecord| vec![(account().as_str().to_string(), r.uuid.clone(), Some(serde_json::to_vec(r).unwrap()))];
    mappings.follow(true, stored(&record));
    assert_eq!(mappings.list(&account()), vec![(record.clone(), false)], "followed, not placed here");
    assert!(mappings.polling().is_empty());

    // Placed here while another front end still polls it: it shows as polled, and is not polled here.
    *places.elsewhere.lock().unwrap() = vec![record.uuid.clone()];
    places.here.store(true, std::sync::atomic::Ordering::Release);
    mappings.place();
    assert_eq!(mappings.get(&account(), &record.uuid), Ok((record.clone(), true)));
    assert!(mappings.polling().is_empty());
    w.send(&q, &["a"]).await;
    assert!(mappings.pollers(&record.uuid).is_none());

    // The other front end's pollers ended: they start here.
    places.elsewhere.lock().unwrap().clear();
    mappings.place();
    assert_eq!(mappings.polling(), vec![record.uuid.clone()]);
    until("the message ran", || w.recorder.seen().len() == 1 && w.counts(&q).in_flight == 0 && w.counts(&q).visible == 0).await;

    // Placed elsewhere, they end.
    let pollers = mappings.pollers(&record.uuid).unwrap();
    places.here.store(false, std::sync::atomic::Ordering::Release);
    mappings.place();
    until("the pollers end", || pollers.counts().0 == 0).await;
    assert!(mappings.polling().is_empty());

    // Disabled where it is placed, or deleted, its pollers end.
    places.here.store(true, std::sync::atomic::Ordering::Release);
    mappings.place();
    let pollers = mappings.pollers(&record.uuid).unwrap();
    assert_eq!(pollers.counts().0, crate::mapping::MIN_POLLERS);
    let disabled = MappingRecord { enabled: false, ..record.clone() };
    mappings.follow(false, stored(&disabled));
    until("the disabled mapping's pollers end", || pollers.counts().0 == 0).await;
    mappings.follow(false, stored(&record));
    let pollers = mappings.pollers(&record.uuid).unwrap();
    mappings.follow(false, vec![(account().as_str().to_string(), record.uuid.clone(), None)]);
    until("the deleted mapping's pollers end", || pollers.counts().0 == 0).await;
    assert!(mappings.list(&account()).is_empty());

    // Serving, what it loaded is its own; standing down, what it follows is.
    mappings.follow(false, stored(&record));
    mappings.take_over().unwrap();
    assert!(mappings.list(&account()).is_empty(), "nothing is stored");
    mappings.stand_down();
    assert_eq!(mappings.list(&account()).len(), 1);
}

// ----- provisioned concurrency ------------------------------------------------------

#[tokio::test]
async fn the_keeper_hands_configurations_over_at_start_and_on_change() {
    let w = world();
    let provisioned = |requested: u32| {
        let mut latest = record("f");
        let mut version = record("f");
        version.version = Some(1);
        version.revision_id = "f-v1".into();
        latest.versions.push(version);
        latest.last_version = 1;
        latest.provisioned.insert("1".into(), ignis_registry::ProvisionedRecord { requested, last_modified_ms: requested.into() });
        latest
    };
    let latest = provisioned(2);
    w.services.registry.write(&account(), "f", Box::new(move |_| Some(latest))).await.unwrap();
    let revision = ignis_invoke::from_record::revision(A, &provisioned(2).versions[0]);
    let keeper = crate::Keeper::start(w.services.clone());
    until("two sandboxes are ready", || w.services.invoker.allocation(&revision).allocated == 2).await;

    // A change is handed over at once, the clock standing still.
    let latest = provisioned(3);
    w.services.registry.write(&account(), "f", Box::new(move |_| Some(latest))).await.unwrap();
    keeper.changed();
    until("three sandboxes are ready", || w.services.invoker.allocation(&revision).allocated == 3).await;
    assert_eq!(w.fake.starts(), 3);
}

#[tokio::test]
async fn deleting_a_mapping_ends_its_pollers_and_leaves_the_queue_alone() {
    let w = world();
    let q = w.queue("q").await;
    let (mappings, record) = w.mappings(&q, 10, 0, false).await;
    let pollers = mappings.pollers(&record.uuid).unwrap();
    mappings.delete(&account(), &record.uuid).await.unwrap();
    until("the pollers end", || pollers.counts().0 == 0).await;
    assert!(mappings.list(&account()).is_empty());
    // No poller is left to take it.
    w.send(&q, &["stays"]).await;
    assert_eq!(w.counts(&q).visible, 1);
    assert!(w.recorder.seen().is_empty());
}

#[tokio::test]
async fn a_mapping_whose_function_is_gone_receives_nothing_until_it_is_back() {
    let w = world();
    let q = w.queue("q").await;
    let mappings = Mappings::start(w.services.clone(), no_barrier()).unwrap();
    // No function "f": the pollers look for it before each batch, and pause.
    let record = mappings.create(&account(), mapping_record(&q, 10, 0, false)).await.unwrap();
    w.send(&q, &["waits"]).await;
    let pollers = mappings.pollers(&record.uuid).unwrap();
    until("every poller tried a batch", || pollers.counts().1 >= crate::mapping::MIN_POLLERS).await;
    assert_eq!((w.counts(&q).visible, w.counts(&q).in_flight), (1, 0));
    // Each looks again after its pause, and finds it.
    w.function("f", None).await;
    w.clock.advance(Duration::from_secs(2));
    until("the message ran", || w.recorder.seen().len() == 1).await;
    assert_eq!(bodies(&w.recorder.seen()[0].payload), ["waits"]);
}
