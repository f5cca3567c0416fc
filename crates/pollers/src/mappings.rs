//! Event source mappings from queues to functions: [`Mappings`], the one
//! owner of every mapping, with its Rust API for the front end's
//! Create/Get/List/Update/DeleteEventSourceMapping (which parse requests and
//! shape answers), and the pollers that receive batches, invoke the function
//! with Lambda's SQS event and delete what it processed. The pure decisions
//! (batching, settling, scaling, states) are [`crate::mapping`].
//!
//! # State and who changes it
//!
//! - [`Mappings`] owns every mapping (by UUID, each with its account) and
//!   each mapping's [`Pollers`] control, under one `std` mutex held only to
//!   read or replace entries, never across an await. Changes are serialised
//!   by `writes` and stored (fsync'd, in the `event_source_mappings` table)
//!   before memory changes, so what a caller was answered survives a crash.
//! - An enabled mapping has poller tasks: five to start with (fewer if its
//!   `ScalingConfig.MaximumConcurrency` is lower), more while there is a
//!   backlog, up to that maximum ([`mapping::scale`], decided by each poller
//!   after each batch under the [`Pollers`]' mutex). Each reads its mapping
//!   afresh before every batch (an update applies from the next batch) and
//!   ends when its control is stopped (disable, delete), after the batch it
//!   has in hand, if any, is finished. A mapping shows `Disabling` until they
//!   have all ended.
//!
//! # In a cluster
//!
//! One front end at a time serves the mappings (their calls, which are
//! handed to it, and their writes): its [`Mappings`] is loaded by
//! [`Mappings::take_over`]. Every front end follows the stored mappings
//! ([`Mappings::follow`]) and runs the pollers of those [`PollerPlaces`]
//! puts on it: the mappings of functions whose partition it leads, once no
//! other front end still runs them. Its pollers reach the queues where they
//! are served ([`ignis_queues::Queues::polled`]); each batch runs under the
//! queue's visibility timeout, so one poller at a time works it, and a
//! batch a dead front end held comes back when that timeout ends.
//!
//! # A batch
//!
//! A poller receives nothing while its function has no concurrency to
//! spare. It gathers a batch ([`mapping::gather`]: batch size, batching
//! window, payload size), runs it through the ordinary invoke path (the
//! function's concurrency limits apply; a throttle is waited out for up to
//! half the queue's visibility timeout, and a batch that waited gets its
//! whole visibility timeout back when it starts), and settles it
//! ([`mapping::settle`]): messages the function processed are deleted (one
//! fsync'd commit); the others are left in flight and come back when their
//! visibility timeout ends, so the queue's redrive policy applies. Before it
//! deletes, it waits on the [`LogBarrier`] until the invocation's log lines
//! are committed, so a deleted message's log survives a crash. A crash at
//! any moment loses nothing: messages in flight are visible again after a
//! restart, and every message deleted was processed (at least once).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use ignis_ids::AccountId;
use ignis_invoke::{Admitted, InvokeError, Target, from_record};
use ignis_queues::Message;
use ignis_registry::{FunctionRecord, FunctionRef};
use ignis_worker::{Completion, Invocation};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::mapping::{self, Gather, Gathered, Load, MappingRecord, Ran, Scale};
use crate::tables::{MappingStorage, RedbMappingStorage};
use crate::{LogBarrier, MappingError, PollersError, Services};

/// How long a poller waits before it looks again for a function or queue that is gone.
const MISSING_PAUSE: Duration = Duration::from_secs(2);
/// The longest wait between two tries of a throttled batch for a slot (it
/// tries for up to half the queue's visibility timeout).
const MAX_ADMISSION_WAIT: Duration = Duration::from_millis(200);
/// The first wait between two tries of a throttled batch for a slot.
const FIRST_ADMISSION_WAIT: Duration = Duration::from_millis(20);
/// A poller's pause when its function has no concurrency to spare.
const THROTTLE_PAUSE: Duration = Duration::from_millis(100);
/// A poller's pause after its batch could not run (throttled, or the service failed).
const FAILURE_PAUSE: Duration = Duration::from_secs(1);

/// The pollers of one mapping: a stop signal, how many are running and when
/// the last was added.
pub struct Pollers {
    stop: watch::Sender<bool>,
    running: AtomicUsize,
    /// Batches tried so far by all of them, whatever became of each (for tests).
    rounds: AtomicUsize,
    /// When a poller was last added (on the clock); held while a poller decides to grow or end.
    grown: Mutex<Instant>,
}

impl Pollers {
    fn stop(&self) {
        self.stop.send_replace(true);
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    fn running(&self) -> bool {
        self.running.load(Ordering::Acquire) > 0
    }

    /// How many pollers run, and how many batches they tried so far (for tests).
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.running.load(Ordering::Acquire), self.rounds.load(Ordering::Acquire))
    }

    /// One poller's decision after a batch, counted at once (under the mutex,
    /// so two pollers never both end below the minimum).
    fn rescale(&self, cap: usize, load: Load, now: Instant) -> Scale {
        let mut grown = self.grown.lock().unwrap_or_else(|e| e.into_inner());
        let decision = mapping::scale(self.running.load(Ordering::Acquire), cap, load, now.saturating_duration_since(*grown));
        match decision {
            Scale::Grow => {
                self.running.fetch_add(1, Ordering::AcqRel);
                *grown = now;
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

/// Where a cluster runs each mapping's pollers: on one front end at a time.
pub trait PollerPlaces: Send + Sync {
    /// Whether this front end is to run the pollers of `account`'s mappings to `function`.
    fn here(&self, account: &str, function: &str) -> bool;
    /// Whether another front end still runs the pollers of mapping `uuid`.
    fn elsewhere(&self, uuid: &str) -> bool;
}

/// Mappings by UUID, each with its account.
type Records = BTreeMap<String, (String, MappingRecord)>;

/// Every event source mapping, with its pollers; see the module docs.
pub struct Mappings {
    services: Services,
    storage: Arc<dyn MappingStorage>,
    log_barrier: LogBarrier,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Serialises changes: the store is written, then memory.
    writes: tokio::sync::Mutex<()>,
    /// Whether this front end serves the mappings: `entries` is then what it loaded and wrote, else what it
    /// follows.
    serving: std::sync::atomic::AtomicBool,
    /// The stored mappings as followed (a cluster's front end).
    followed: Mutex<Records>,
    /// Where the pollers run (a cluster's front end); unset: here.
    places: OnceLock<Arc<dyn PollerPlaces>>,
}

impl Mappings {
    /// [`Mappings::start_with`] the mappings' table in the services'
    /// store's database (the embedded default).
    pub fn start(services: Services, log_barrier: LogBarrier) -> Result<Arc<Mappings>, PollersError> {
        let storage = Arc::new(RedbMappingStorage::open(services.store.clone())?);
        Mappings::start_with(services, storage, log_barrier)
    }

    /// Loads the mappings `storage` holds and starts the pollers of every
    /// enabled one. `log_barrier` waits until the log lines handed to the
    /// log writer so far are committed. Needs a tokio runtime; blocks on
    /// `storage` while it loads.
    pub fn start_with(
        services: Services,
        storage: Arc<dyn MappingStorage>,
        log_barrier: LogBarrier,
    ) -> Result<Arc<Mappings>, PollersError> {
        let mappings = Mappings::standby(services, storage, log_barrier);
        mappings.take_over()?;
        Ok(mappings)
    }

    /// Mappings over `storage` with none loaded and no poller: a cluster's front end that does not serve the
    /// queues (yet). [`Mappings::take_over`] loads them when it is to serve them.
    pub fn standby(services: Services, storage: Arc<dyn MappingStorage>, log_barrier: LogBarrier) -> Arc<Mappings> {
        Arc::new(Mappings {
            services,
            storage,
            log_barrier,
            entries: Mutex::new(BTreeMap::new()),
            writes: tokio::sync::Mutex::new(()),
            serving: Default::default(),
            followed: Mutex::default(),
            places: OnceLock::new(),
        })
    }

    /// Says where the pollers run from now on (a cluster's front end; once), and puts them there.
    pub fn set_places(self: &Arc<Self>, places: Arc<dyn PollerPlaces>) {
        if self.places.set(places).is_err() {
            tracing::warn!("the pollers' places were set already");
        }
        self.place();
    }

    /// Follows the stored mappings: `changes` (account, UUID, the stored record or `None` when deleted), or every
    /// one when `reset`. While this front end does not serve them, they are its mappings.
    pub fn follow(self: &Arc<Self>, reset: bool, changes: Vec<(String, String, Option<Vec<u8>>)>) {
        let followed = {
            let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
            if reset {
                followed.clear();
            }
            for (account, uuid, bytes) in changes {
                match bytes.map(|bytes| serde_json::from_slice::<MappingRecord>(&bytes)) {
                    Some(Ok(record)) => {
                        followed.insert(uuid, (account, record));
                    }
                    Some(Err(e)) => tracing::warn!(%account, %uuid, error = %e, "a stored event source mapping is unreadable, skipped"),
                    None => {
                        followed.remove(&uuid);
                    }
                }
            }
            followed.clone()
        };
        if !self.serving.load(Ordering::Acquire) {
            self.replace(followed);
        }
    }

    /// Starts and stops pollers as [`PollerPlaces`] says now (a cluster's front end calls it as partitions
    /// move and other front ends' pollers end).
    pub fn place(self: &Arc<Self>) {
        let mut entries = self.lock();
        for entry in entries.values_mut() {
            self.settle(entry);
        }
    }

    /// The mappings whose pollers run here (some may be finishing their batches).
    pub fn polling(&self) -> Vec<String> {
        self.lock().iter().filter(|(_, e)| e.pollers.as_ref().is_some_and(|p| p.running())).map(|(uuid, _)| uuid.clone()).collect()
    }

    /// Starts or stops `entry`'s pollers as it is enabled and placed here.
    fn settle(self: &Arc<Self>, entry: &mut Entry) {
        let wanted = entry.record.enabled
            && self.places.get().is_none_or(|places| {
                places.here(&entry.account, &entry.record.function_name) && !places.elsewhere(&entry.record.uuid)
            });
        let polling = entry.pollers.as_ref().is_some_and(|p| !p.stopped());
        if wanted && !polling {
            entry.pollers = Some(self.spawn_pollers(&entry.record));
        } else if !wanted && polling {
            entry.pollers.iter().for_each(|p| p.stop());
        }
    }

    /// Makes `records` the mappings, each keeping the pollers it had, and settles their pollers.
    fn replace(self: &Arc<Self>, records: Records) {
        let before = {
            let mut entries = self.lock();
            let mut before = std::mem::take(&mut *entries);
            for (uuid, (account, record)) in records {
                let pollers = before.remove(&uuid).and_then(|e| e.pollers);
                let mut entry = Entry { account, record, pollers };
                self.settle(&mut entry);
                entries.insert(uuid, entry);
            }
            before
        };
        stop_all(before);
    }

    /// Loads every mapping the storage holds, to serve them, and starts the pollers of the enabled ones placed
    /// here (those of the mappings held before that are still stored go on). Blocks on the storage; needs a tokio
    /// runtime.
    pub fn take_over(self: &Arc<Self>) -> Result<(), PollersError> {
        let mut records = Records::new();
        for (account, uuid, bytes) in self.storage.all()? {
            match serde_json::from_slice::<MappingRecord>(&bytes) {
                Ok(record) => {
                    records.insert(uuid, (account, record));
                }
                Err(e) => tracing::warn!(%account, %uuid, error = %e, "a stored event source mapping is unreadable, skipped"),
            }
        }
        self.serving.store(true, Ordering::Release);
        // The pollers start under the lock, with their mappings in place: one that looked first would find none.
        self.replace(records);
        Ok(())
    }

    /// Stops serving the mappings (another front end serves them now): they are the ones followed from then
    /// on. Nothing is written.
    pub fn stand_down(self: &Arc<Self>) {
        self.serving.store(false, Ordering::Release);
        let followed = self.followed.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.replace(followed);
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A mapping of `account` and whether its pollers run.
    pub fn get(&self, account: &AccountId, uuid: &str) -> Result<(MappingRecord, bool), MappingError> {
        let entries = self.lock();
        let entry = entries.get(uuid).filter(|e| e.account == account.as_str()).ok_or(MappingError::NotFound)?;
        Ok((entry.record.clone(), self.polled(uuid, entry)))
    }

    /// Whether `entry`'s pollers run, here or on another front end.
    fn polled(&self, uuid: &str, entry: &Entry) -> bool {
        entry.pollers.as_ref().is_some_and(|p| p.running()) || self.places.get().is_some_and(|places| places.elsewhere(uuid))
    }

    /// Every mapping of `account`, by UUID, with whether its pollers run.
    pub fn list(&self, account: &AccountId) -> Vec<(MappingRecord, bool)> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.account == account.as_str())
            .map(|(uuid, e)| (e.record.clone(), self.polled(uuid, e)))
            .collect()
    }

    /// A mapping's pollers, if it has any (for tests).
    #[cfg(test)]
    pub(crate) fn pollers(&self, uuid: &str) -> Option<Arc<Pollers>> {
        self.lock().get(uuid)?.pollers.clone()
    }

    /// The mapping a poller serves, as it is now.
    fn current(&self, uuid: &str) -> Option<(String, MappingRecord)> {
        self.lock().get(uuid).map(|e| (e.account.clone(), e.record.clone()))
    }

    /// Stores a new mapping of `account` (its `last_modified_ms` set now) and
    /// starts its pollers if it is enabled. Refused when its values do not
    /// fit its queue and function ([`MappingError::Invalid`]) or the queue and
    /// function have a mapping already ([`MappingError::Exists`]).
    pub async fn create(self: &Arc<Self>, account: &AccountId, mut record: MappingRecord) -> Result<MappingRecord, MappingError> {
        record.last_modified_ms = self.services.clock.now_ms() as i64;
        self.check_values(account, &record)?;
        let _serialised = self.writes.lock().await;
        self.check_unique(account, &record)?;
        self.store(account, &record).await?;
        // Its pollers start under the lock, with the mapping in place: one that looked first would find none.
        let entry = Entry { account: account.as_str().to_string(), record: record.clone(), pollers: None };
        let mut entries = self.lock();
        entries.insert(record.uuid.clone(), entry);
        if let Some(entry) = entries.get_mut(&record.uuid) {
            self.settle(entry);
        }
        drop(entries);
        Ok(record)
    }

    /// Changes `account`'s mapping `uuid` with `change` (given the mapping as
    /// it is, serialised with every other change), stores the result (its
    /// `last_modified_ms` set now) and starts or stops its pollers as it is
    /// enabled or disabled. Answers the mapping before and after.
    pub async fn update<E: From<MappingError>>(
        self: &Arc<Self>,
        account: &AccountId,
        uuid: &str,
        change: impl FnOnce(&MappingRecord) -> Result<MappingRecord, E>,
    ) -> Result<(MappingRecord, MappingRecord), E> {
        let _serialised = self.writes.lock().await;
        let (before, _) = self.get(account, uuid)?;
        let mut record = change(&before)?;
        record.uuid = before.uuid.clone();
        record.last_modified_ms = self.services.clock.now_ms() as i64;
        self.check_values(account, &record)?;
        self.check_unique(account, &record)?;
        self.store(account, &record).await?;
        {
            let mut entries = self.lock();
            let entry = entries.get_mut(uuid).ok_or(MappingError::NotFound)?;
            entry.record = record.clone();
            self.settle(entry);
        }
        Ok((before, record))
    }

    /// Deletes `account`'s mapping `uuid`; its pollers end after the batch
    /// they have in hand. Answers the mapping as it was.
    pub async fn delete(&self, account: &AccountId, uuid: &str) -> Result<MappingRecord, MappingError> {
        let _serialised = self.writes.lock().await;
        let (record, _) = self.get(account, uuid)?;
        let (storage, owner, id) = (self.storage.clone(), account.as_str().to_string(), uuid.to_string());
        tokio::task::spawn_blocking(move || storage.delete(&owner, &id))
            .await
            .map_err(|e| MappingError::Storage(e.to_string()))??;
        if let Some(entry) = self.lock().remove(uuid) {
            entry.pollers.iter().for_each(|p| p.stop());
        }
        Ok(record)
    }

    async fn store(&self, account: &AccountId, record: &MappingRecord) -> Result<(), MappingError> {
        let bytes = serde_json::to_vec(record).map_err(|e| MappingError::Storage(e.to_string()))?;
        let (storage, account, uuid) = (self.storage.clone(), account.as_str().to_string(), record.uuid.clone());
        tokio::task::spawn_blocking(move || storage.put(&account, &uuid, &bytes))
            .await
            .map_err(|e| MappingError::Storage(e.to_string()))??;
        Ok(())
    }

    /// Values that the model allows but an SQS mapping cannot take. The queue
    /// and the function are checked against each other when both exist (a
    /// mapping whose queue or function is gone can still be changed, to disable it).
    fn check_values(&self, account: &AccountId, record: &MappingRecord) -> Result<(), MappingError> {
        mapping::check_batching(record.batch_size, record.window_s).map_err(MappingError::Invalid)?;
        let queue = self.services.queues.lookup(account.as_str(), &record.queue_arn).ok();
        let latest = self.services.registry.get(account, &record.function_name);
        let function = latest.as_deref().map(|latest| named_version(latest, record.qualifier.as_deref()));
        match (queue, function) {
            (Some(queue), Some(function)) => {
                mapping::check_visibility(queue.config().settings.visibility_timeout_s, function.timeout_s).map_err(MappingError::Invalid)
            }
            _ => Ok(()),
        }
    }

    /// One queue and one function (as named) have at most one mapping.
    fn check_unique(&self, account: &AccountId, record: &MappingRecord) -> Result<(), MappingError> {
        let entries = self.lock();
        let same = entries.values().find(|e| {
            e.account == account.as_str()
                && e.record.uuid != record.uuid
                && e.record.queue_arn == record.queue_arn
                && e.record.function_name == record.function_name
                && e.record.qualifier == record.qualifier
        });
        match same {
            Some(other) => Err(MappingError::Exists {
                queue_arn: record.queue_arn.clone(),
                function_name: record.function_name.clone(),
                uuid: other.record.uuid.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Starts a mapping's first pollers; the count of running ones is raised before this returns.
    fn spawn_pollers(self: &Arc<Self>, record: &MappingRecord) -> Arc<Pollers> {
        let (stop, _) = watch::channel(false);
        let count = mapping::MIN_POLLERS.min(cap(record));
        let grown = Mutex::new(self.services.clock.instant());
        let pollers = Arc::new(Pollers { stop, running: AtomicUsize::new(count), rounds: AtomicUsize::new(0), grown });
        for _ in 0..count {
            tokio::spawn(poller(Arc::downgrade(self), record.uuid.clone(), pollers.clone()));
        }
        pollers
    }
}

fn stop_all(entries: BTreeMap<String, Entry>) {
    for entry in entries.into_values() {
        entry.pollers.iter().for_each(|p| p.stop());
    }
}

/// The record a mapping's function name (with its qualifier) runs now, for its timeout.
fn named_version<'a>(latest: &'a FunctionRecord, qualifier: Option<&str>) -> &'a FunctionRecord {
    let label = match qualifier {
        None | Some("$LATEST") => return latest,
        Some(q) => latest.aliases.get(q).map_or(q, |alias| alias.function_version.as_str()),
    };
    latest.find_version(label).unwrap_or(latest)
}

// ----- the pollers --------------------------------------------------------------

/// A poller's task (boxed: a poller may start another).
fn poller(mappings: Weak<Mappings>, uuid: String, pollers: Arc<Pollers>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(poll(mappings, uuid, pollers))
}

/// One poller of mapping `uuid`: batch after batch until stopped, the mapping
/// is gone, or the owner is (or it is one too many, see [`mapping::scale`]).
async fn poll(mappings: Weak<Mappings>, uuid: String, pollers: Arc<Pollers>) {
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
        let (round, record, clock) = {
            let Some(owner) = mappings.upgrade() else { return };
            let Some((account, record)) = owner.current(&uuid) else { return };
            (run_batch(&owner, &account, &record, &mut stop).await, record, owner.services.clock.clone())
        };
        pollers.rounds.fetch_add(1, Ordering::AcqRel);
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
        match pollers.rescale(cap(&record), load, clock.instant()) {
            Scale::Grow => drop(tokio::spawn(poller(mappings.clone(), uuid.clone(), pollers.clone()))),
            Scale::Shrink => {
                running.0 = None;
                return;
            }
            Scale::Keep => {}
        }
        if let Some(pause) = round.pause {
            let _ = ignis_clock::timeout(&*clock, pause, stop.wait_for(|stopped| *stopped)).await;
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
async fn run_batch(owner: &Mappings, account: &str, record: &MappingRecord, stop: &mut watch::Receiver<bool>) -> Round {
    let services = &owner.services;
    let (clock, region) = (&services.clock, &services.region);
    let queue = services.queues.polled(account, &record.queue_arn);
    // The alias's version is picked per batch, as for any invocation.
    let reference = FunctionRef { name: record.function_name.clone(), account: None, region: None, qualifier: record.qualifier.clone() };
    let resolved =
        services.registry.resolve_version(&AccountId::new(account), region, "InvokeFunction", &reference, crate::random_unit());
    let Ok(version) = resolved else { return Round::pause(MISSING_PAUSE) };
    let invoked_function_arn = from_record::invoked_arn(region, account, reference.qualifier.as_deref(), &version);
    let target = from_record::target(&services.store, &*services.networks, region, account, &version);
    // Receive nothing the function has no room to run now.
    if services.invoker.admit(account, &target.function.revision.function).await.is_err() {
        return Round::pause(THROTTLE_PAUSE);
    }

    let Ok((visibility_s, max_message_size)) = queue.settings().await else { return Round::pause(MISSING_PAUSE) };

    // Gather.
    let record_bytes = max_message_size * 2 + 1024;
    let window = Duration::from_secs(u64::from(record.window_s));
    let (mut messages, mut records, mut bytes, mut first) = (Vec::<Message>::new(), Vec::<Value>::new(), 0, None::<Instant>);
    loop {
        let elapsed = first.map(|t| clock.instant().saturating_duration_since(t));
        let now = Gathered { messages: messages.len(), bytes, elapsed };
        let Gather::Receive { max, wait } = mapping::gather(record.batch_size, window, record_bytes, now) else { break };
        let received = tokio::select! {
            received = queue.receive(max, wait) => received,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        match received {
            Ok(got) => {
                if got.is_empty() && messages.is_empty() {
                    return Round::empty();
                }
                first.get_or_insert_with(|| clock.instant());
                for message in got {
                    let event_record = sqs_record(region, account, &record.queue_arn, &message);
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
        trace_id: from_record::trace_id(&request_id, clock.now()),
        request_id,
        payload: Bytes::from(json!({ "Records": records }).to_string()),
        invoked_function_arn,
        client_context: None,
        cognito_identity: None,
        response_stream: None,
    };
    let mut busy = Duration::ZERO;
    let outcome = match admit(services, &target, Duration::from_secs(u64::from(visibility_s)) / 2).await {
        Ok((admitted, waited)) => {
            // A batch that waited for its slot gets its whole visibility timeout back for the function.
            if waited {
                let handles = messages.iter().map(|m| m.receipt_handle.clone()).collect();
                if let Err(e) = queue.change_visibility(handles, visibility_s).await {
                    tracing::warn!(mapping = %record.uuid, error = %e, "could not give a batch its visibility timeout back");
                }
            }
            let started = clock.instant();
            let outcome = services.invoker.invoke_admitted(target, invocation, admitted).await.map(|o| o.completion);
            busy = clock.instant().saturating_duration_since(started);
            outcome
        }
        Err(e) => Err(e),
    };

    metrics::counter!("ignis_esm_batches_total").increment(1);

    // Settle.
    let ran = match &outcome {
        Ok(Completion::Response(body)) => Ran::Succeeded(body),
        _ => Ran::Failed,
    };
    let ids: Vec<&str> = messages.iter().map(|m| m.message_id.as_str()).collect();
    let processed = mapping::settle(&ids, ran, record.report_failures);
    if !processed.is_empty() {
        (owner.log_barrier)().await;
        let handles = processed.iter().map(|i| messages[*i].receipt_handle.clone()).collect();
        match queue.delete(handles).await {
            Ok(deleted) => metrics::counter!("ignis_esm_deleted_messages_total").increment(deleted as u64),
            Err(e) => tracing::warn!(mapping = %record.uuid, error = %e, "could not delete a processed batch"),
        }
    }
    let pause = match outcome {
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(mapping = %record.uuid, error = %e, "a batch did not run");
            Some(FAILURE_PAUSE)
        }
    };
    Round { received: messages.len(), busy, pause }
}

/// A concurrency slot for a batch of `target`: a throttle is tried again
/// for up to `patience`, with growing waits. Answers whether it had to wait.
async fn admit(services: &Services, target: &Target, patience: Duration) -> Result<(Admitted, bool), InvokeError> {
    let clock = &services.clock;
    let deadline = clock.instant() + patience;
    let mut wait = FIRST_ADMISSION_WAIT;
    let mut waited = false;
    loop {
        let revision = &target.function.revision;
        match services.invoker.admit(revision.account.as_str(), &revision.function).await {
            Ok(admitted) => return Ok((admitted, waited)),
            Err(e) if clock.instant() + wait > deadline => return Err(e),
            Err(_) => {
                waited = true;
                clock.sleep(wait).await;
                wait = (wait * 2).min(MAX_ADMISSION_WAIT);
            }
        }
    }
}

/// One message as Lambda's SQS event carries it.
fn sqs_record(region: &str, account: &str, queue_arn: &str, m: &Message) -> Value {
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
        "md5OfBody": ignis_queues::digest::md5_hex(m.body.as_bytes()),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    });
    if !m.attributes.is_empty() {
        out["md5OfMessageAttributes"] = json!(ignis_queues::digest::md5_of_attributes(&m.attributes));
    }
    out
}
