//! Event source mappings from Ignis's queues to functions:
//! Create/Get/List/Update/DeleteEventSourceMapping, and the pollers that
//! receive batches, invoke the function with Lambda's SQS event and delete
//! what it processed.
//!
//! # State and who changes it
//!
//! - [`Mappings`] owns every mapping (by UUID, each with its account) and
//!   each mapping's [`Pollers`] control, under one `std` mutex held only to
//!   read or replace entries, never across an await. Changes are serialised
//!   by `writes` and stored (fsync'd) before memory changes, so what a caller
//!   was answered survives a crash.
//! - An enabled mapping has poller tasks: five to start with (fewer if its
//!   `ScalingConfig.MaximumConcurrency` is lower), more while there is a
//!   backlog, up to that maximum ([`mapping::scale`], decided by each poller
//!   after each batch under the [`Pollers`]' mutex). Each reads its mapping
//!   afresh before every batch (an update applies from the next batch) and
//!   ends when its control is stopped (disable, delete), after the batch it
//!   has in hand, if any, is finished. A mapping shows `Disabling` until they
//!   have all ended.
//!
//! # A batch
//!
//! A poller receives nothing while its function has no concurrency to
//! spare. It gathers a batch ([`mapping::gather`]: batch size, batching
//! window, payload size), runs it through the ordinary invoke path (the
//! function's concurrency limits apply; a throttle is waited out for up to
//! half the queue's visibility timeout, and a batch that waited gets its
//! whole visibility timeout back when it starts), and settles it ([`mapping::settle`]): messages the function
//! processed are deleted (one fsync'd commit); the others are left in flight
//! and come back when their visibility timeout ends, so the queue's redrive
//! policy applies. Before it deletes, it waits until the invocation's log
//! lines are committed, so a deleted message's log survives a crash. A crash
//! at any moment loses nothing: messages in flight are visible again after a
//! restart, and every message deleted was processed (at least once).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::StatusCode;
use ignis_store::Store;
use ignis_worker::{Completion, Invocation};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::control::{now, resolve, resolve_version};
use crate::error::ApiError;
use crate::function::{self as f, Violations};
use ignis_registry::FunctionRecord;
use crate::http::{Answer, json_answer};
use ignis_invoke::{Admitted, InvokeError, Target};
use crate::mapping::{self, Change, Gather, Gathered, Load, MappingRecord, Ran, Scale};
use ignis_ids::arn::parse_queue as parse_arn;
use ignis_queues::{Message, QueueRef};
use crate::{App, Caller};

/// How long a poller waits before it looks again for a function or queue that is gone.
const MISSING_PAUSE: Duration = Duration::from_secs(2);
/// The longest wait between two tries of a throttled batch for a slot (it
/// tries for up to half the queue's visibility timeout).
const MAX_ADMISSION_WAIT: Duration = Duration::from_millis(200);
/// A poller's pause when its function has no concurrency to spare.
const THROTTLE_PAUSE: Duration = Duration::from_millis(100);
/// A poller's pause after its batch could not run (throttled, or the service failed).
const FAILURE_PAUSE: Duration = Duration::from_secs(1);

/// The pollers of one mapping: a stop signal, how many are running and when
/// the last was added.
pub struct Pollers {
    stop: watch::Sender<bool>,
    running: AtomicUsize,
    /// When a poller was last added; held while a poller decides to grow or end.
    grown: Mutex<Instant>,
}

impl Pollers {
    fn stop(&self) {
        self.stop.send_replace(true);
    }

    fn running(&self) -> bool {
        self.running.load(Ordering::Acquire) > 0
    }

    /// One poller's decision after a batch, counted at once (under the mutex,
    /// so two pollers never both end below the minimum).
    fn rescale(&self, cap: usize, load: Load) -> Scale {
        let mut grown = self.grown.lock().unwrap_or_else(|e| e.into_inner());
        let decision = mapping::scale(self.running.load(Ordering::Acquire), cap, load, grown.elapsed());
        match decision {
            Scale::Grow => {
                self.running.fetch_add(1, Ordering::AcqRel);
                *grown = Instant::now();
            }
            Scale::Shrink => {
                self.running.fetch_sub(1, Ordering::AcqRel);
            }
            Scale::Keep => {}
        }
        decision
    }
}

/// The most pollers a mapping may have.
fn cap(record: &MappingRecord) -> usize {
    record.max_concurrency.unwrap_or(mapping::MAX_MAX_CONCURRENCY) as usize
}

struct Entry {
    account: String,
    record: MappingRecord,
    pollers: Option<Arc<Pollers>>,
}

/// Every event source mapping; see the module docs.
pub struct Mappings {
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Serialises changes: the store is written, then memory.
    writes: tokio::sync::Mutex<()>,
}

impl Mappings {
    /// The stored mappings (no poller runs until [`start`]).
    pub fn load(store: &Store) -> Result<Mappings, ApiError> {
        let mut entries = BTreeMap::new();
        for (account, uuid, bytes) in store.mappings()? {
            match serde_json::from_slice::<MappingRecord>(&bytes) {
                Ok(record) => {
                    entries.insert(uuid, Entry { account, record, pollers: None });
                }
                Err(e) => eprintln!("ignis: the stored event source mapping {account}/{uuid} is unreadable ({e}); skipped"),
            }
        }
        Ok(Mappings { entries: Mutex::new(entries), writes: tokio::sync::Mutex::new(()) })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A mapping of `account` and whether its pollers run.
    fn get(&self, account: &str, uuid: &str) -> Option<(MappingRecord, bool)> {
        let entries = self.lock();
        let entry = entries.get(uuid).filter(|e| e.account == account)?;
        Some((entry.record.clone(), entry.pollers.as_ref().is_some_and(|p| p.running())))
    }

    /// The mapping a poller serves, as it is now.
    fn current(&self, uuid: &str) -> Option<(String, MappingRecord)> {
        self.lock().get(uuid).map(|e| (e.account.clone(), e.record.clone()))
    }

    /// Every mapping of `account`, by UUID, with whether its pollers run.
    fn list(&self, account: &str) -> Vec<(MappingRecord, bool)> {
        self.lock()
            .values()
            .filter(|e| e.account == account)
            .map(|e| (e.record.clone(), e.pollers.as_ref().is_some_and(|p| p.running())))
            .collect()
    }
}

/// Starts the pollers of every enabled mapping (at server start).
pub fn start(app: &Arc<App>) {
    let mut entries = app.mappings.lock();
    for entry in entries.values_mut() {
        if entry.record.enabled {
            entry.pollers = Some(spawn_pollers(app, &entry.record));
        }
    }
}

/// Starts a mapping's first pollers; the count of running ones is raised before this returns.
fn spawn_pollers(app: &Arc<App>, record: &MappingRecord) -> Arc<Pollers> {
    let (stop, _) = watch::channel(false);
    let count = mapping::MIN_POLLERS.min(cap(record));
    let pollers = Arc::new(Pollers { stop, running: AtomicUsize::new(count), grown: Mutex::new(Instant::now()) });
    for _ in 0..count {
        tokio::spawn(poller(Arc::downgrade(app), record.uuid.clone(), pollers.clone()));
    }
    pollers
}

// ----- the API ----------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MappingIn {
    event_source_arn: Option<String>,
    function_name: Option<String>,
    enabled: Option<bool>,
    batch_size: Option<i64>,
    maximum_batching_window_in_seconds: Option<i64>,
    function_response_types: Option<Vec<String>>,
    scaling_config: Option<ScalingIn>,
    /// Everything else Lambda's model has (refused when given).
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ScalingIn {
    maximum_concurrency: Option<i64>,
}

const REPORT_BATCH_ITEM_FAILURES: &str = "ReportBatchItemFailures";

fn not_found() -> ApiError {
    ApiError::ResourceNotFound("The resource you requested does not exist.".into())
}

/// Model checks (`ValidationException`) and members Ignis does not honour.
fn check_request(request: &MappingIn, creating: bool) -> Result<(), ApiError> {
    let mut v = Violations::default();
    if creating {
        v.check(request.function_name.is_some(), "null", "functionName", "Member must not be null");
    }
    v.range(request.batch_size, "batchSize", 1, i64::from(mapping::MAX_BATCH_SIZE));
    v.range(request.maximum_batching_window_in_seconds, "maximumBatchingWindowInSeconds", 0, i64::from(mapping::MAX_WINDOW_S));
    if let Some(types) = &request.function_response_types {
        v.check(types.len() <= 1, types.len(), "functionResponseTypes", "Member must have length less than or equal to 1");
        for t in types {
            v.check(t == REPORT_BATCH_ITEM_FAILURES, t, "functionResponseTypes", "Member must satisfy enum value set: [ReportBatchItemFailures]");
        }
    }
    let concurrency = request.scaling_config.as_ref().and_then(|c| c.maximum_concurrency);
    let (min, max) = (mapping::MIN_MAX_CONCURRENCY, mapping::MAX_MAX_CONCURRENCY);
    v.range(concurrency, "scalingConfig.maximumConcurrency", i64::from(min), i64::from(max));
    v.into_result()?;
    for (member, value) in &request.other {
        if value.is_null() {
            continue;
        }
        return Err(ApiError::InvalidParameterValue(match member.as_str() {
            "StartingPosition" | "StartingPositionTimestamp" => format!("{member} is not valid for SQS event sources."),
            _ => format!("{member} is not supported by Ignis's event source mappings"),
        }));
    }
    Ok(())
}

/// The record a mapping's function name (with its qualifier) runs now, for its timeout.
fn named_version<'a>(latest: &'a FunctionRecord, qualifier: Option<&str>) -> &'a FunctionRecord {
    let label = match qualifier {
        None | Some("$LATEST") => return latest,
        Some(q) => latest.aliases.get(q).map_or(q, |alias| alias.function_version.as_str()),
    };
    latest.find_version(label).unwrap_or(latest)
}

/// Resolves the function a request names (by name, ARN or qualified ARN).
fn function_of(app: &App, caller: &Caller, action: &str, name: &str) -> Result<(String, Option<String>, Arc<FunctionRecord>), ApiError> {
    let (reference, latest) = resolve(app, caller, action, name, None)?;
    Ok((reference.name, reference.qualifier, latest))
}

/// The caller's queue an `EventSourceArn` names.
fn queue_of(app: &App, caller: &Caller, arn: Option<&str>) -> Result<QueueRef, ApiError> {
    let arn = arn.ok_or_else(|| ApiError::InvalidParameterValue("EventSourceArn is required: the ARN of one of your queues".into()))?;
    if parse_arn(arn).is_none() {
        return Err(ApiError::InvalidParameterValue(format!(
            "Unrecognized event source {arn}: Ignis maps its SQS-compatible queues only (arn:aws:sqs:<region>:<account>:<name>)"
        )));
    }
    app.queues.lookup(caller.account.as_str(), arn).map_err(|_| {
        ApiError::InvalidParameterValue(
            "Error occurred while ReceiveMessage. SQS Error Code: AWS.SimpleQueueService.NonExistentQueue. SQS Error Message: The specified queue does not exist."
                .into(),
        )
    })
}

/// Values that the model allows but an SQS mapping cannot take. The queue
/// and the function are checked against each other when both exist (a
/// mapping whose queue or function is gone can still be changed, to disable it).
fn check_values(record: &MappingRecord, queue: Option<&QueueRef>, function: Option<&FunctionRecord>) -> Result<(), ApiError> {
    mapping::check_batching(record.batch_size, record.window_s).map_err(ApiError::InvalidParameterValue)?;
    match (queue, function) {
        (Some(queue), Some(function)) => mapping::check_visibility(queue.config().settings.visibility_timeout_s, function.timeout_s)
            .map_err(ApiError::InvalidParameterValue),
        _ => Ok(()),
    }
}

/// One queue and one function (as named) have at most one mapping.
fn check_unique(app: &App, account: &str, record: &MappingRecord) -> Result<(), ApiError> {
    let entries = app.mappings.lock();
    let same = entries.values().find(|e| {
        e.account == account
            && e.record.uuid != record.uuid
            && e.record.queue_arn == record.queue_arn
            && e.record.function_name == record.function_name
            && e.record.qualifier == record.qualifier
    });
    match same {
        Some(other) => Err(ApiError::ResourceConflict(format!(
            "An event source mapping with SQS arn (\" {} \") and function (\" {} \") already exists. Please update or delete the existing mapping with UUID {}",
            record.queue_arn, record.function_name, other.record.uuid
        ))),
        None => Ok(()),
    }
}

/// A mapping as Lambda shows it.
fn config_body(app: &App, account: &str, record: &MappingRecord, state: &str) -> Value {
    let region = &app.config.region;
    let function_arn = match &record.qualifier {
        Some(q) => ignis_ids::arn::function_qualified(region, account, &record.function_name, q),
        None => ignis_ids::arn::function(region, account, &record.function_name),
    };
    let types: Vec<&str> = if record.report_failures { vec![REPORT_BATCH_ITEM_FAILURES] } else { Vec::new() };
    let mut body = json!({
        "UUID": record.uuid,
        "BatchSize": record.batch_size,
        "MaximumBatchingWindowInSeconds": record.window_s,
        "EventSourceArn": record.queue_arn,
        "FunctionArn": function_arn,
        "LastModified": record.last_modified_ms as f64 / 1000.0,
        "State": state,
        "StateTransitionReason": "USER_INITIATED",
        "FunctionResponseTypes": types,
        "EventSourceMappingArn": format!("arn:aws:lambda:{region}:{account}:event-source-mapping:{}", record.uuid),
    });
    if let Some(n) = record.max_concurrency {
        body["ScalingConfig"] = json!({ "MaximumConcurrency": n });
    }
    body
}

async fn store_record(app: &App, account: &str, record: &MappingRecord) -> Result<(), ApiError> {
    let bytes = serde_json::to_vec(record).map_err(|e| ApiError::Service(e.to_string()))?;
    let (store, account, uuid) = (app.store.clone(), account.to_string(), record.uuid.clone());
    tokio::task::spawn_blocking(move || store.put_mapping(&account, &uuid, &bytes))
        .await
        .map_err(|e| ApiError::Service(e.to_string()))??;
    Ok(())
}

pub async fn create(app: &Arc<App>, caller: &Caller, body: &[u8]) -> Result<Answer, ApiError> {
    let request: MappingIn = f::parse_body(body)?;
    check_request(&request, true)?;
    let queue = queue_of(app, caller, request.event_source_arn.as_deref())?;
    let name = request.function_name.as_deref().unwrap_or_default();
    let (function_name, qualifier, latest) = function_of(app, caller, "CreateEventSourceMapping", name)?;
    let record = MappingRecord {
        uuid: uuid::Uuid::new_v4().to_string(),
        queue_arn: queue.arn.clone(),
        function_name,
        batch_size: request.batch_size.map_or(mapping::DEFAULT_BATCH_SIZE, |n| n as u32),
        window_s: request.maximum_batching_window_in_seconds.map_or(0, |n| n as u32),
        enabled: request.enabled.unwrap_or(true),
        report_failures: request.function_response_types.is_some_and(|t| !t.is_empty()),
        last_modified_ms: now(),
        qualifier,
        max_concurrency: request.scaling_config.and_then(|c| c.maximum_concurrency).map(|n| n as u32),
    };
    check_values(&record, Some(&queue), Some(named_version(&latest, record.qualifier.as_deref())))?;
    let _serialised = app.mappings.writes.lock().await;
    check_unique(app, caller.account.as_str(), &record)?;
    store_record(app, caller.account.as_str(), &record).await?;
    let pollers = record.enabled.then(|| spawn_pollers(app, &record));
    let entry = Entry { account: caller.account.to_string(), record: record.clone(), pollers };
    app.mappings.lock().insert(record.uuid.clone(), entry);
    let state = mapping::answered_state(Change::Create, record.enabled);
    Ok(json_answer(StatusCode::ACCEPTED, config_body(app, caller.account.as_str(), &record, state)))
}

pub fn get(app: &App, caller: &Caller, uuid: &str) -> Result<Answer, ApiError> {
    let (record, polling) = app.mappings.get(caller.account.as_str(), uuid).ok_or_else(not_found)?;
    let state = mapping::settled_state(record.enabled, polling);
    Ok(json_answer(StatusCode::OK, config_body(app, caller.account.as_str(), &record, state)))
}

pub async fn update(app: &Arc<App>, caller: &Caller, uuid: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let request: MappingIn = f::parse_body(body)?;
    check_request(&request, false)?;
    if request.event_source_arn.is_some() {
        return Err(ApiError::InvalidParameterValue("The event source of a mapping cannot be changed".into()));
    }
    let _serialised = app.mappings.writes.lock().await;
    let (before, _) = app.mappings.get(caller.account.as_str(), uuid).ok_or_else(not_found)?;
    let mut record = before.clone();
    if let Some(name) = &request.function_name {
        let (function_name, qualifier, _) = function_of(app, caller, "UpdateEventSourceMapping", name)?;
        (record.function_name, record.qualifier) = (function_name, qualifier);
    }
    if let Some(n) = request.batch_size {
        record.batch_size = n as u32;
    }
    if let Some(n) = request.maximum_batching_window_in_seconds {
        record.window_s = n as u32;
    }
    if let Some(types) = &request.function_response_types {
        record.report_failures = !types.is_empty();
    }
    if let Some(enabled) = request.enabled {
        record.enabled = enabled;
    }
    if let Some(scaling) = &request.scaling_config {
        record.max_concurrency = scaling.maximum_concurrency.map(|n| n as u32);
    }
    record.last_modified_ms = now();
    let queue = app.queues.lookup(caller.account.as_str(), &record.queue_arn).ok();
    let latest = app.registry.get(&caller.account, &record.function_name);
    let function = latest.as_deref().map(|latest| named_version(latest, record.qualifier.as_deref()));
    check_values(&record, queue.as_ref(), function)?;
    check_unique(app, caller.account.as_str(), &record)?;
    store_record(app, caller.account.as_str(), &record).await?;
    {
        let mut entries = app.mappings.lock();
        let entry = entries.get_mut(uuid).ok_or_else(not_found)?;
        match (before.enabled, record.enabled) {
            (false, true) => entry.pollers = Some(spawn_pollers(app, &record)),
            (true, false) => entry.pollers.iter().for_each(|p| p.stop()),
            _ => {}
        }
        entry.record = record.clone();
    }
    let state = mapping::answered_state(Change::Update { was_enabled: before.enabled }, record.enabled);
    Ok(json_answer(StatusCode::ACCEPTED, config_body(app, caller.account.as_str(), &record, state)))
}

pub async fn delete(app: &Arc<App>, caller: &Caller, uuid: &str) -> Result<Answer, ApiError> {
    let _serialised = app.mappings.writes.lock().await;
    let (record, _) = app.mappings.get(caller.account.as_str(), uuid).ok_or_else(not_found)?;
    let (store, account, id) = (app.store.clone(), caller.account.to_string(), uuid.to_string());
    tokio::task::spawn_blocking(move || store.delete_mapping(&account, &id))
        .await
        .map_err(|e| ApiError::Service(e.to_string()))??;
    if let Some(entry) = app.mappings.lock().remove(uuid) {
        entry.pollers.iter().for_each(|p| p.stop());
    }
    let state = mapping::answered_state(Change::Delete, record.enabled);
    Ok(json_answer(StatusCode::ACCEPTED, config_body(app, caller.account.as_str(), &record, state)))
}

pub fn list(app: &App, caller: &Caller, query: &str) -> Result<Answer, ApiError> {
    let (max_items, marker, params) = crate::versions::paging(query)?;
    let param = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    // Lambda's page for this call is 100 unless MaxItems says otherwise.
    let max_items = if param("MaxItems").is_some() { max_items } else { 100 };
    let function = param("FunctionName").map(|name| f::parse_function_ref(&name, "functionName")).transpose()?;
    let queue_arn = param("EventSourceArn");
    let items = app
        .mappings
        .list(caller.account.as_str())
        .into_iter()
        .filter(|(record, _)| queue_arn.as_ref().is_none_or(|arn| *arn == record.queue_arn))
        .filter(|(record, _)| {
            function.as_ref().is_none_or(|f| {
                f.name == record.function_name && (f.qualifier.is_none() || f.qualifier == record.qualifier)
            })
        })
        .map(|(record, polling)| {
            let state = mapping::settled_state(record.enabled, polling);
            (record.uuid.clone(), config_body(app, caller.account.as_str(), &record, state))
        })
        .collect();
    let (page, next) = crate::versions::page(items, max_items, marker.as_deref());
    let mut body = json!({ "EventSourceMappings": page });
    if let Some(next) = next {
        body["NextMarker"] = json!(next);
    }
    Ok(json_answer(StatusCode::OK, body))
}

// ----- the pollers --------------------------------------------------------------

/// A poller's task (boxed: a poller may start another).
fn poller(app: Weak<App>, uuid: String, pollers: Arc<Pollers>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(poll(app, uuid, pollers))
}

/// One poller of mapping `uuid`: batch after batch until stopped, the mapping
/// is gone, or the app is (or it is one too many, see [`mapping::scale`]).
async fn poll(app: Weak<App>, uuid: String, pollers: Arc<Pollers>) {
    /// Counts the poller out when it ends (unless [`Pollers::rescale`] already did).
    struct Running(Option<Arc<Pollers>>);
    impl Drop for Running {
        fn drop(&mut self) {
            if let Some(pollers) = &self.0 {
                pollers.running.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
    let mut running = Running(Some(pollers.clone()));
    let mut stop = pollers.stop.subscribe();
    // How long the function ran with this poller's previous batch.
    let mut last_busy = Duration::ZERO;
    loop {
        if *stop.borrow() {
            return;
        }
        let (round, record) = {
            let Some(app) = app.upgrade() else { return };
            let Some((account, record)) = app.mappings.current(&uuid) else { return };
            (run_batch(&app, &account, &record, &mut stop).await, record)
        };
        if *stop.borrow() {
            return;
        }
        let load = Load {
            backlog: round.received >= (record.batch_size as usize).min(mapping::MAX_RECEIVE),
            idle: round.received == 0 && round.pause.is_none(),
            // Both of the last two batches: a cold start alone does not make a function slow.
            busy: round.busy.min(last_busy),
        };
        last_busy = round.busy;
        match pollers.rescale(cap(&record), load) {
            Scale::Grow => drop(tokio::spawn(poller(app.clone(), uuid.clone(), pollers.clone()))),
            Scale::Shrink => {
                running.0 = None;
                return;
            }
            Scale::Keep => {}
        }
        if let Some(pause) = round.pause {
            let _ = tokio::time::timeout(pause, stop.wait_for(|stopped| *stopped)).await;
        }
    }
}

/// How a poller's batch went: how many messages it gathered, how long the
/// function ran with them, and how long to pause before the next.
struct Round {
    received: usize,
    busy: Duration,
    pause: Option<Duration>,
}

impl Round {
    fn pause(pause: Duration) -> Round {
        Round { received: 0, busy: Duration::ZERO, pause: Some(pause) }
    }

    fn empty() -> Round {
        Round { received: 0, busy: Duration::ZERO, pause: None }
    }
}

/// Gathers one batch, invokes the function with it and settles it. Answers
/// how long to pause before the next, if at all.
async fn run_batch(app: &Arc<App>, account: &str, record: &MappingRecord, stop: &mut watch::Receiver<bool>) -> Round {
    let caller = Caller { account: ignis_ids::AccountId::new(account), admin: false };
    let mut name = record.function_name.clone();
    if let Some(q) = &record.qualifier {
        name = format!("{name}:{q}");
    }
    let Ok(queue) = app.queues.lookup(account, &record.queue_arn) else { return Round::pause(MISSING_PAUSE) };
    // The alias's version is picked per batch, as for any invocation.
    let Ok((reference, version)) = resolve_version(app, &caller, "InvokeFunction", &name, None) else {
        return Round::pause(MISSING_PAUSE);
    };
    let mut invoked_function_arn = version.arn(&app.config.region, account);
    if let Some(q) = &reference.qualifier {
        invoked_function_arn = format!("{invoked_function_arn}:{q}");
    }
    let target = crate::invoke_api::target(app, account, &version);
    // Receive nothing the function has no room to run now.
    if app.invoker.admit(account, &target.function.revision.function).is_err() {
        return Round::pause(THROTTLE_PAUSE);
    }

    // Gather.
    let record_bytes = queue.config().settings.max_message_size * 2 + 1024;
    let window = Duration::from_secs(u64::from(record.window_s));
    let (mut messages, mut records, mut bytes, mut first) = (Vec::<Message>::new(), Vec::<Value>::new(), 0, None::<Instant>);
    loop {
        let now = Gathered { messages: messages.len(), bytes, elapsed: first.map(|t| t.elapsed()) };
        let Gather::Receive { max, wait } = mapping::gather(record.batch_size, window, record_bytes, now) else { break };
        let received = tokio::select! {
            received = app.queues.receive_from(&queue, max, None, wait) => received,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        match received {
            Ok(got) => {
                if got.is_empty() && messages.is_empty() {
                    return Round::empty();
                }
                first.get_or_insert_with(Instant::now);
                for message in got {
                    let event_record = sqs_record(app, account, &record.queue_arn, &message);
                    bytes += event_record.to_string().len() + 1;
                    records.push(event_record);
                    messages.push(message);
                }
            }
            Err(_) if messages.is_empty() => return Round::pause(MISSING_PAUSE),
            Err(_) => break,
        }
    }
    if messages.is_empty() {
        return Round::empty();
    }

    // Invoke.
    let request_id = uuid::Uuid::new_v4().to_string();
    let invocation = Invocation {
        trace_id: crate::invoke_api::trace_id(&request_id),
        request_id,
        payload: Bytes::from(json!({ "Records": records }).to_string()),
        invoked_function_arn,
        client_context: None,
        cognito_identity: None,
    };
    let visibility_s = queue.config().settings.visibility_timeout_s;
    let mut busy = Duration::ZERO;
    let outcome = match admit(app, &target, Duration::from_secs(u64::from(visibility_s)) / 2).await {
        Ok((admitted, waited)) => {
            // A batch that waited for its slot gets its whole visibility timeout back for the function.
            if waited {
                for m in &messages {
                    let _ = app.queues.change_visibility_of(&queue, &m.receipt_handle, visibility_s);
                }
            }
            let started = Instant::now();
            let outcome = app.invoker.invoke_admitted(target, invocation, admitted).await.map(|o| o.completion);
            busy = started.elapsed();
            outcome
        }
        Err(e) => Err(e),
    };

    // Settle.
    let ran = match &outcome {
        Ok(Completion::Response(body)) => Ran::Succeeded(body),
        _ => Ran::Failed,
    };
    let ids: Vec<&str> = messages.iter().map(|m| m.message_id.as_str()).collect();
    let processed = mapping::settle(&ids, ran, record.report_failures);
    if !processed.is_empty() {
        app.logs_written().await;
        let handles: Vec<&str> = processed.iter().map(|i| messages[*i].receipt_handle.as_str()).collect();
        if let Err(e) = app.queues.delete_batch(&queue, &handles).await {
            eprintln!("ignis: event source mapping {}: could not delete a processed batch: {e}", record.uuid);
        }
    }
    let pause = match outcome {
        Ok(_) => None,
        Err(e) => {
            eprintln!("ignis: event source mapping {}: the batch did not run: {e}", record.uuid);
            Some(FAILURE_PAUSE)
        }
    };
    Round { received: messages.len(), busy, pause }
}

/// A concurrency slot for a batch of `target`: a throttle is tried again
/// for up to `patience`, with growing waits. Answers whether it had to wait.
async fn admit(app: &App, target: &Target, patience: Duration) -> Result<(Admitted, bool), InvokeError> {
    let deadline = Instant::now() + patience;
    let mut wait = Duration::from_millis(20);
    let mut waited = false;
    loop {
        let revision = &target.function.revision;
        match app.invoker.admit(revision.account.as_str(), &revision.function) {
            Ok(admitted) => return Ok((admitted, waited)),
            Err(e) if Instant::now() + wait > deadline => return Err(e),
            Err(_) => {
                waited = true;
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_ADMISSION_WAIT);
            }
        }
    }
}

/// One message as Lambda's SQS event carries it.
fn sqs_record(app: &App, account: &str, queue_arn: &str, m: &Message) -> Value {
    let attributes: serde_json::Map<String, Value> = m
        .attributes
        .iter()
        .map(|(name, a)| {
            let mut value = json!({ "stringListValues": [], "binaryListValues": [], "dataType": a.data_type });
            if a.data_type.starts_with("Binary") {
                value["binaryValue"] = json!(base64::engine::general_purpose::STANDARD.encode(&a.value));
            } else {
                value["stringValue"] = json!(String::from_utf8_lossy(&a.value));
            }
            (name.clone(), value)
        })
        .collect();
    let mut out = json!({
        "messageId": m.message_id,
        "receiptHandle": m.receipt_handle,
        "body": m.body,
        "attributes": {
            "ApproximateReceiveCount": m.receive_count.to_string(),
            "SentTimestamp": m.sent_ms.to_string(),
            "SenderId": account,
            "ApproximateFirstReceiveTimestamp": m.first_receive_ms.to_string(),
        },
        "messageAttributes": attributes,
        "md5OfBody": crate::sqs_api::md5_hex(m.body.as_bytes()),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": app.config.region,
    });
    if !m.attributes.is_empty() {
        out["md5OfMessageAttributes"] = json!(crate::sqs_api::md5_of_attributes(&m.attributes));
    }
    out
}

/// The checks of a mapping body that need no server, for the fuzz targets.
#[cfg(feature = "fuzz")]
pub(crate) fn check_body(body: &[u8]) {
    let Ok(request) = crate::function::parse_body::<MappingIn>(body) else { return };
    for creating in [true, false] {
        let _ = check_request(&request, creating);
    }
    if let Some(name) = &request.function_name {
        let _ = crate::function::parse_function_ref(name, "functionName");
    }
    if let Some(arn) = &request.event_source_arn {
        parse_arn(arn);
    }
    if let (Some(size), Some(window)) = (request.batch_size, request.maximum_batching_window_in_seconds)
        && let (Ok(size), Ok(window)) = (u32::try_from(size), u32::try_from(window))
    {
        let _ = mapping::check_batching(size, window);
    }
}
