//! The live message queues: one owner, [`Queues`], for every account's
//! queues, over the pure semantics of `ignis-queue` and a [`QueueStorage`]
//! (the embedded one, [`RedbQueueStorage`], keeps the queues' own tables in
//! the server's database; no other crate reads or writes them; see
//! [`tables`] for what an implementation promises). The front end's SQS API
//! calls it, and so may any other part of the server (async invocation
//! destinations, event source mappings) through its Rust API:
//! [`Queues::send`], [`Queues::receive`], [`Queues::delete`],
//! [`Queues::change_visibility`] and [`Queues::lookup`] (by queue ARN), and
//! the per-queue operations ([`Queues::send_batch`], [`Queues::receive_from`],
//! [`Queues::delete_batch`], [`Queues::purge`], ...). Errors are
//! [`QueueError`]; only the front end turns them into SQS's wire errors.
//! A message's MD5 digests are in [`digest`].
//!
//! # Time
//!
//! Every time this crate uses (visibility timeouts, delays, retention,
//! long-poll deadlines and the time-driven look for messages that became
//! visible, message and queue timestamps) comes from the [`SharedClock`]
//! given to [`Queues::load`].
//!
//! # State and who changes it
//!
//! - The map of queues (account, name → [`QueueRef`]): one `std` mutex, held
//!   only to look up, add or remove; changed only by create and delete, which
//!   are serialised by `definitions` and store the definition first.
//! - Each queue's `ignis_queue::Queue`, wait time and deletion flag: the
//!   queue's own `std` mutex, short sections, never held across an await and
//!   never together with another queue's.
//! - Stored messages: only the queues' group-commit writer
//!   ([`ignis_store::commit::GroupCommit`] over [`QueueStorage::apply`])
//!   writes them. Every change is handed to it *under the queue's mutex*, so
//!   the store sees one queue's changes in the order memory saw them. The
//!   writer puts whatever arrived while it was committing into the next
//!   transaction (group commit). Sends, deletes and purges are fsync'd before
//!   their callers are answered; receive counts ride along without waiting.
//!   Dropping [`Queues`] lets the writer commit what it was handed, and waits
//!   for it.
//!
//! # Restart
//!
//! A queue is rebuilt from its stored messages ([`ignis_queue::Queue::restore`]):
//! every message not deleted comes back, with its receive count (as of the
//! last commit); messages that were in flight are visible again at once, and
//! receipt handles from before the restart are not valid (they carry the
//! process's random epoch). Dead-lettering is one transaction (the put into
//! the dead-letter queue and the delete from the source), so a message is
//! never lost between the two.
//!
//! # In a cluster
//!
//! One front end at a time serves the queues ([`home`]). The others hold a
//! [`Queues`] made with [`Queues::standby`]: it loads nothing, and
//! [`Queues::forward`] hands their requests to the front end that serves
//! them ([`Queues::send`] goes there itself, and so do the calls of a
//! mapping's poller through [`Queues::polled`]). The one that starts serving them
//! loads them with [`Queues::take_over`], as a restart would; one that stops
//! forgets them with [`Queues::stand_down`].

pub mod digest;
pub mod home;
pub mod tables;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use ignis_clock::SharedClock;
use ignis_queue::{Attributes, DeadLetter, MessageId, Queue, ReceiptHandle, Redrive, Settings};
use ignis_store::Store;
use ignis_store::commit::{Ack, GroupCommit, Limits};
use serde_json::{Value, json};
use tokio::sync::Notify;

pub use home::{Answered, Forwarded, Home, PeerFailure, PollAction, PollAnswer, PollCall, QueueHome, QueuePeer};
pub use tables::{QueueMessage, QueueStorage, QueueWrite, RedbQueueStorage, StoredQueue};

/// The longest `WaitTimeSeconds`.
pub const MAX_WAIT_S: u32 = 20;
/// How often a waiting receive looks again for messages that became visible
/// by time (a send wakes it at once).
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Most write requests the writer takes into one transaction.
const WRITES_PER_COMMIT: usize = 4096;
/// Most receipt handles in one poller's call (a batch holds up to 10,000 messages; a call stays far below the
/// limit of a request between front ends).
const HANDLES_PER_CALL: usize = 1000;
/// How long a request waits for a front end to serve the queues (one that takes them over loads them first).
pub const HOME_WAIT: Duration = Duration::from_secs(10);
/// How often a waiting request looks again.
const HOME_LOOK: Duration = Duration::from_millis(100);

/// What a queue operation can fail with. The front end turns these into
/// SQS's wire errors (in one place).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("The specified queue does not exist.")]
    DoesNotExist,
    #[error("A queue already exists with the same name and a different value for attribute {0}.")]
    NameExists(String),
    #[error("{0}")]
    InvalidParameterValue(String),
    #[error("{0}")]
    MissingParameter(String),
    #[error("{0}")]
    InvalidAttributeName(String),
    #[error("{0}")]
    InvalidAttributeValue(String),
    #[error("{0}")]
    Send(ignis_queue::SendError),
    #[error("The input receipt handle \"{0}\" is not a valid receipt handle.")]
    ReceiptHandleIsInvalid(String),
    #[error("Message does not exist or is not available for visibility timeout change.")]
    MessageNotInflight,
    #[error("{0}")]
    Unsupported(String),
    #[error("There should be at least one entry in the request.")]
    EmptyBatch,
    #[error("Maximum number of entries per request are 10. You have sent {0}.")]
    TooManyEntries(usize),
    #[error("Id {0} repeated.")]
    IdsNotDistinct(String),
    #[error("A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long (got {0:?}).")]
    InvalidBatchEntryId(String),
    #[error("Batch requests cannot be longer than {max} bytes. You have sent {size} bytes.")]
    BatchTooLong { size: usize, max: usize },
    #[error("storage: {0}")]
    Storage(String),
    /// No front end serves the queues now, or the one that does cannot be reached.
    #[error("{0}")]
    Unavailable(String),
}

impl From<ignis_store::StoreError> for QueueError {
    fn from(e: ignis_store::StoreError) -> Self {
        QueueError::Storage(e.to_string())
    }
}

/// A queue as an event source mapping's poller reaches it ([`Queues::polled`]): each call is made where the
/// queues are served ([`Queues::poll`]).
pub struct PolledQueue<'a> {
    queues: &'a Queues,
    account: &'a str,
    queue_arn: &'a str,
}

impl PolledQueue<'_> {
    async fn call(&self, action: PollAction) -> Result<PollAnswer, QueueError> {
        let call = PollCall { account: self.account.to_string(), queue_arn: self.queue_arn.to_string(), action };
        self.queues.poll(call).await
    }

    /// Its visibility timeout (s) and maximum message size (bytes).
    pub async fn settings(&self) -> Result<(u32, usize), QueueError> {
        match self.call(PollAction::Settings).await? {
            PollAnswer::Settings { visibility_timeout_s, max_message_size } => Ok((visibility_timeout_s, max_message_size)),
            other => Err(unexpected(&other)),
        }
    }

    /// Receives up to `max` messages, waiting up to `wait` (capped at 20 s) for one.
    pub async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, QueueError> {
        let wait_ms = wait.min(Duration::from_secs(u64::from(MAX_WAIT_S))).as_millis() as u64;
        match self.call(PollAction::Receive { max, wait_ms }).await? {
            PollAnswer::Received(messages) => Ok(messages),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes messages by receipt handle, each on its own; durable when it returns. Answers how many were.
    pub async fn delete(&self, handles: Vec<String>) -> Result<usize, QueueError> {
        let mut count = 0;
        for handles in handles.chunks(HANDLES_PER_CALL) {
            match self.call(PollAction::Delete { handles: handles.to_vec() }).await? {
                PollAnswer::Deleted(deleted) => count += deleted.iter().filter(|d| **d).count(),
                other => return Err(unexpected(&other)),
            }
        }
        Ok(count)
    }

    /// Sets received messages' visibility timeout; a handle no longer valid is passed over.
    pub async fn change_visibility(&self, handles: Vec<String>, timeout_s: u32) -> Result<(), QueueError> {
        for handles in handles.chunks(HANDLES_PER_CALL) {
            match self.call(PollAction::ChangeVisibility { handles: handles.to_vec(), timeout_s }).await? {
                PollAnswer::Changed => {}
                other => return Err(unexpected(&other)),
            }
        }
        Ok(())
    }
}

fn unexpected(answer: &PollAnswer) -> QueueError {
    let kind = match answer {
        PollAnswer::Settings { .. } => "settings",
        PollAnswer::Received(_) => "messages",
        PollAnswer::Deleted(_) => "deletions",
        PollAnswer::Changed => "a visibility change",
        PollAnswer::Failed { .. } => "a failure",
    };
    QueueError::Unavailable(format!("The front end serving the queues answered a poller's call with {kind}, not what it asked"))
}

/// A message to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outgoing {
    pub body: String,
    pub attributes: Attributes,
    /// Per-message `DelaySeconds`; the queue's when `None`.
    pub delay_s: Option<u32>,
}

/// A message as a receive hands it out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Message {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    #[serde(with = "home::wire_attributes")]
    pub attributes: Attributes,
    /// `ApproximateReceiveCount`, this receive included.
    pub receive_count: u32,
    pub sent_ms: u64,
    pub first_receive_ms: u64,
}

/// A queue's settable attributes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueConfig {
    pub settings: Settings,
    /// `ReceiveMessageWaitTimeSeconds`, `0..=20`.
    pub wait_s: u32,
}

/// A queue's counts and times (`GetQueueAttributes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub config: QueueConfig,
    pub counts: ignis_queue::Counts,
    pub created_s: u64,
    pub modified_s: u64,
}

/// One live queue.
#[derive(Debug)]
pub struct LiveQueue {
    pub account: String,
    pub name: String,
    pub arn: String,
    /// Random, fixed at creation: stored messages are keyed by it.
    uid: u64,
    created_s: u64,
    state: Mutex<QueueState>,
    /// Woken when messages arrive.
    arrived: Notify,
}

#[derive(Debug)]
struct QueueState {
    queue: Queue,
    /// `MessageId`s of messages that came from another queue (dead letters
    /// keep theirs); every other one is derived from the queue's and message's ids.
    wire_ids: HashMap<MessageId, String>,
    wait_s: u32,
    modified_s: u64,
    deleted: bool,
}

/// A handle on a live queue (cheap to clone).
pub type QueueRef = Arc<LiveQueue>;

impl LiveQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The queue's state, or `DoesNotExist` once it is deleted.
    fn live(&self) -> Result<MutexGuard<'_, QueueState>, QueueError> {
        let state = self.lock();
        if state.deleted { Err(QueueError::DoesNotExist) } else { Ok(state) }
    }

    /// SQS's `MessageId` of one of this queue's messages.
    fn wire_id(&self, state: &QueueState, id: MessageId) -> String {
        state.wire_ids.get(&id).cloned().unwrap_or_else(|| derived_id(self.uid, id))
    }
}

/// The `MessageId` of a message sent to a queue: UUID-shaped, from the
/// queue's id and the message's.
fn derived_id(uid: u64, id: MessageId) -> String {
    let hex = format!("{uid:016x}{:016x}", id.0);
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Every live queue; see the module docs.
pub struct Queues {
    storage: Arc<dyn QueueStorage>,
    clock: SharedClock,
    region: String,
    queues: Mutex<HashMap<(String, String), QueueRef>>,
    /// Serialises creating, changing and deleting queues.
    definitions: tokio::sync::Mutex<()>,
    writer: GroupCommit<QueueWrite>,
    /// Random per load: receipt handles from before a restart, or from another front end's time, are not valid.
    epoch: AtomicU64,
    /// Where the queues are served, in a cluster; here when unset.
    home: OnceLock<Arc<dyn QueueHome>>,
}

fn random_u64() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

/// The stored form of a queue's definition.
fn definition(uid: u64, created_s: u64, modified_s: u64, config: &QueueConfig) -> Vec<u8> {
    let s = &config.settings;
    let mut attributes = json!({
        "VisibilityTimeout": s.visibility_timeout_s,
        "MessageRetentionPeriod": s.retention_s,
        "MaximumMessageSize": s.max_message_size,
        "DelaySeconds": s.delay_s,
        "ReceiveMessageWaitTimeSeconds": config.wait_s,
    });
    if let Some(r) = &s.redrive {
        attributes["RedrivePolicy"] = json!({ "deadLetterTargetArn": r.target, "maxReceiveCount": r.max_receive_count });
    }
    json!({ "uid": uid, "created_s": created_s, "modified_s": modified_s, "attributes": attributes }).to_string().into_bytes()
}

fn parse_definition(record: &[u8]) -> Option<(u64, u64, u64, QueueConfig)> {
    let v: Value = serde_json::from_slice(record).ok()?;
    let a = &v["attributes"];
    let int = |name: &str| a[name].as_u64().and_then(|n| u32::try_from(n).ok());
    let redrive = a.get("RedrivePolicy").map(|r| -> Option<Redrive> {
        Some(Redrive {
            target: r["deadLetterTargetArn"].as_str()?.to_string(),
            max_receive_count: r["maxReceiveCount"].as_u64().and_then(|n| u32::try_from(n).ok())?,
        })
    });
    let settings = Settings {
        visibility_timeout_s: int("VisibilityTimeout")?,
        retention_s: int("MessageRetentionPeriod")?,
        max_message_size: int("MaximumMessageSize")? as usize,
        delay_s: int("DelaySeconds")?,
        redrive: redrive.map(|r| r.ok_or(())).transpose().ok()?,
    };
    let config = QueueConfig { settings, wait_s: int("ReceiveMessageWaitTimeSeconds")? };
    Some((v["uid"].as_u64()?, v["created_s"].as_u64()?, v["modified_s"].as_u64()?, config))
}

impl Queues {
    /// [`Queues::with_storage`] over the queues' tables in `store`'s
    /// database (the embedded default).
    pub fn load(store: Arc<Store>, region: String, clock: SharedClock) -> Result<Arc<Queues>, QueueError> {
        Queues::with_storage(Arc::new(RedbQueueStorage::open(store)?), region, clock)
    }

    /// Loads every queue `storage` holds and its messages, removes messages
    /// of deleted queues, and starts the writer thread. Time comes from
    /// `clock`. Blocks on `storage` (call it where blocking is allowed).
    pub fn with_storage(storage: Arc<dyn QueueStorage>, region: String, clock: SharedClock) -> Result<Arc<Queues>, QueueError> {
        let queues = Queues::standby(storage, region, clock)?;
        queues.take_over()?;
        Ok(queues)
    }

    /// Starts the writer thread over `storage` but loads nothing: a cluster's front end that does not serve the
    /// queues (yet). [`Queues::take_over`] loads them when it is to serve them.
    pub fn standby(storage: Arc<dyn QueueStorage>, region: String, clock: SharedClock) -> Result<Arc<Queues>, QueueError> {
        let writer_storage = storage.clone();
        let writer = GroupCommit::start("queue", Limits { max_requests: WRITES_PER_COMMIT, ..Limits::default() }, |_| 1, move |writes: Vec<QueueWrite>| {
            writer_storage.apply(&writes).map_err(|e| {
                let e = e.to_string();
                tracing::error!(error = %e, "could not store queue messages");
                e
            })
        })
        .map_err(|e| QueueError::Storage(format!("cannot start the queue writer: {e}")))?;
        Ok(Arc::new(Queues {
            storage,
            clock,
            region,
            queues: Mutex::new(HashMap::new()),
            definitions: tokio::sync::Mutex::new(()),
            writer,
            epoch: AtomicU64::new(random_u64()),
            home: OnceLock::new(),
        }))
    }

    /// Loads every queue the storage holds and its messages, as a restart does (messages in flight are visible
    /// at once; receipt handles given before are not valid), and removes the messages of deleted queues. Blocks
    /// on the storage.
    pub fn take_over(&self) -> Result<(), QueueError> {
        let storage = &*self.storage;
        let region = &self.region;
        let now = self.clock.now_ms();
        let mut queues = HashMap::new();
        let mut live = HashSet::new();
        for (account, name, record) in storage.definitions()? {
            let Some((uid, created_s, modified_s, config)) = parse_definition(&record) else {
                tracing::warn!(%account, queue = %name, "the stored queue definition is unreadable; skipped");
                continue;
            };
            let stored = storage.messages(uid)?;
            let ids: Vec<u64> = stored.messages.iter().map(|m| m.id).collect();
            let mut wire_ids: HashMap<MessageId, String> =
                stored.messages.iter().filter_map(|m| Some((MessageId(m.id), m.wire_id.clone()?))).collect();
            let messages = stored.messages.into_iter().filter_map(|m| {
                Some(ignis_queue::StoredMessage {
                    id: MessageId(m.id),
                    body: m.body,
                    attributes: ignis_queue::decode_attributes(&m.attributes)?,
                    sent_ms: m.sent_ms,
                    visible_at_ms: m.visible_at_ms,
                    receive_count: m.receive_count,
                    first_receive_ms: m.first_receive_ms,
                })
            });
            let queue = Queue::restore(config.settings, stored.next_id, messages, now)
                .map_err(|e| QueueError::Storage(format!("queue {account}/{name}: {e}")))?;
            // What restore left out expired while the server was down (or is unreadable).
            let gone: Vec<QueueWrite> = ids
                .into_iter()
                .filter(|id| queue.state(MessageId(*id)).is_none())
                .map(|id| QueueWrite::Delete { queue: uid, id })
                .collect();
            if !gone.is_empty() {
                storage.apply(&gone)?;
            }
            wire_ids.retain(|id, _| queue.state(*id).is_some());
            live.insert(uid);
            let arn = ignis_ids::arn::queue(region, &account, &name);
            let state = QueueState { queue, wire_ids, wait_s: config.wait_s, modified_s, deleted: false };
            let q = LiveQueue {
                account: account.clone(),
                name: name.clone(),
                arn,
                uid,
                created_s,
                state: Mutex::new(state),
                arrived: Notify::new(),
            };
            queues.insert((account, name), Arc::new(q));
        }
        let removed = storage.remove_orphans(&live)?;
        if removed > 0 {
            tracing::info!(removed, "removed the stored messages of deleted queues");
        }
        self.epoch.store(random_u64(), Ordering::Release);
        *self.map() = queues;
        Ok(())
    }

    /// Forgets every queue (another front end serves them now): operations on them answer `DoesNotExist`,
    /// waiting receives end. Nothing is written.
    pub fn stand_down(&self) {
        let gone = std::mem::take(&mut *self.map());
        for queue in gone.into_values() {
            queue.lock().deleted = true;
            queue.arrived.notify_waiters();
        }
    }

    /// Says where the queues are served from now on (a cluster's front end; once).
    pub fn set_home(&self, home: Arc<dyn QueueHome>) {
        if self.home.set(home).is_err() {
            tracing::warn!("the queues' home was set already");
        }
    }

    /// Whether this front end serves the queues now.
    pub fn here(&self) -> bool {
        self.home.get().is_none_or(|home| matches!(home.home(), Home::Here))
    }

    /// Hands `request` to the front end serving the queues and answers what it answered; `None` when this front
    /// end serves them (it is to answer it). While no front end serves them, or the one named does not take it
    /// (it died, or stopped serving them), it looks again, for up to [`HOME_WAIT`].
    pub async fn forward(&self, request: &Forwarded) -> Result<Option<Answered>, QueueError> {
        self.elsewhere(|peer| async move { peer.request(request.clone()).await }).await
    }

    /// Runs `send` with the front end serving the queues and answers what it answered; `None` when this front
    /// end serves them (or no cluster set a home). See [`Queues::forward`].
    async fn elsewhere<T, F>(&self, send: impl Fn(Arc<dyn QueuePeer>) -> F) -> Result<Option<T>, QueueError>
    where
        F: std::future::Future<Output = Result<T, PeerFailure>>,
    {
        let Some(home) = self.home.get() else { return Ok(None) };
        let deadline = self.clock.instant() + HOME_WAIT;
        loop {
            let why = match home.home() {
                Home::Here => return Ok(None),
                Home::Elsewhere(peer) => match send(peer).await {
                    Ok(answered) => return Ok(Some(answered)),
                    Err(PeerFailure::Lost(why)) => return Err(QueueError::Unavailable(format!("The front end serving the queues: {why}"))),
                    Err(PeerFailure::NotTaken(why)) => format!("The front end serving the queues: {why}"),
                },
                Home::Unknown => "No front end serves the queues now; try again.".to_string(),
            };
            if self.clock.instant() >= deadline {
                return Err(QueueError::Unavailable(why));
            }
            self.clock.sleep(HOME_LOOK).await;
        }
    }

    // ----- an event source mapping's poller, on any front end ---------------

    /// Runs a poller's `call` where the queues are served: here, or on the front end serving them. A
    /// [`PollAnswer::Failed`] there is an error here.
    pub async fn poll(&self, call: PollCall) -> Result<PollAnswer, QueueError> {
        let answer = self.elsewhere(|peer| {
            let call = call.clone();
            async move { peer.poll(call).await }
        });
        let answer = match answer.await? {
            Some(answer) => answer,
            None => return self.answer_poll(call).await,
        };
        match answer {
            PollAnswer::Failed { missing: true, .. } => Err(QueueError::DoesNotExist),
            PollAnswer::Failed { message, .. } => Err(QueueError::Unavailable(message)),
            answer => Ok(answer),
        }
    }

    /// Queue `queue_arn` of `account` as a mapping's poller reaches it, wherever the queues are served.
    pub fn polled<'a>(&'a self, account: &'a str, queue_arn: &'a str) -> PolledQueue<'a> {
        PolledQueue { queues: self, account, queue_arn }
    }

    /// Answers a poller's `call` from the queues served here.
    pub async fn answer_poll(&self, call: PollCall) -> Result<PollAnswer, QueueError> {
        let queue = self.lookup(&call.account, &call.queue_arn)?;
        Ok(match call.action {
            PollAction::Settings => {
                let settings = queue.config().settings;
                PollAnswer::Settings { visibility_timeout_s: settings.visibility_timeout_s, max_message_size: settings.max_message_size }
            }
            PollAction::Receive { max, wait_ms } => {
                PollAnswer::Received(self.receive_from(&queue, max, None, Duration::from_millis(wait_ms)).await?)
            }
            PollAction::Delete { handles } => {
                let handles: Vec<&str> = handles.iter().map(String::as_str).collect();
                PollAnswer::Deleted(self.delete_batch(&queue, &handles).await?.iter().map(Result::is_ok).collect())
            }
            PollAction::ChangeVisibility { handles, timeout_s } => {
                for handle in &handles {
                    let _ = self.change_visibility_of(&queue, handle, timeout_s);
                }
                PollAnswer::Changed
            }
        })
    }

    fn map(&self) -> MutexGuard<'_, HashMap<(String, String), QueueRef>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ----- the Rust API -----------------------------------------------------

    /// The queue of `account` named `name`.
    pub fn get(&self, account: &str, name: &str) -> Result<QueueRef, QueueError> {
        self.map().get(&(account.to_string(), name.to_string())).cloned().ok_or(QueueError::DoesNotExist)
    }

    /// The queue an ARN (`arn:aws:sqs:<region>:<account>:<name>`) names, if it
    /// belongs to `account` (another account's queue does not exist for it).
    pub fn lookup(&self, account: &str, queue_arn: &str) -> Result<QueueRef, QueueError> {
        let (arn_account, name) = ignis_ids::arn::parse_queue(queue_arn).ok_or(QueueError::DoesNotExist)?;
        if arn_account != account {
            return Err(QueueError::DoesNotExist);
        }
        self.get(account, name)
    }

    /// Whether the queue an ARN names exists and belongs to `account`, wherever the queues are served.
    pub fn exists(&self, account: &str, queue_arn: &str) -> bool {
        match self.home.get() {
            Some(home) if !matches!(home.home(), Home::Here) => {
                ignis_ids::arn::parse_queue(queue_arn).is_some_and(|(owner, name)| owner == account && home.exists(owner, name))
            }
            _ => self.lookup(account, queue_arn).is_ok(),
        }
    }

    /// Sends `body` to the queue `queue_arn` of `account`; durable when it
    /// returns. Answers the message's id.
    pub async fn send(&self, account: &str, queue_arn: &str, body: String) -> Result<String, QueueError> {
        if self.home.get().is_some() {
            let request = home::send_message(account, queue_arn, &body).ok_or(QueueError::DoesNotExist)?;
            if let Some(answered) = self.forward(&request).await? {
                return sent_elsewhere(&answered);
            }
        }
        let queue = self.lookup(account, queue_arn)?;
        let outgoing = Outgoing { body, ..Outgoing::default() };
        let sent = self.send_batch(&queue, vec![outgoing]).await?;
        sent.into_iter().next().unwrap_or(Err(QueueError::Storage("no answer for the message".into())))
    }

    /// Receives up to `max` (`1..=10`) messages, waiting up to `wait` (at most
    /// 20 s) for one to arrive; `visibility` overrides the queue's timeout.
    pub async fn receive(
        &self,
        account: &str,
        queue_arn: &str,
        max: usize,
        visibility: Option<u32>,
        wait: Duration,
    ) -> Result<Vec<Message>, QueueError> {
        let queue = self.lookup(account, queue_arn)?;
        self.receive_from(&queue, max, visibility, wait).await
    }

    /// Deletes the message a receipt handle names; durable when it returns.
    pub async fn delete(&self, account: &str, queue_arn: &str, receipt_handle: &str) -> Result<(), QueueError> {
        let queue = self.lookup(account, queue_arn)?;
        let deleted = self.delete_batch(&queue, &[receipt_handle]).await?;
        deleted.into_iter().next().unwrap_or(Err(QueueError::Storage("no answer for the handle".into())))
    }

    /// Sets a received message's visibility timeout to `timeout_s` from now.
    pub fn change_visibility(&self, account: &str, queue_arn: &str, receipt_handle: &str, timeout_s: u32) -> Result<(), QueueError> {
        let queue = self.lookup(account, queue_arn)?;
        self.change_visibility_of(&queue, receipt_handle, timeout_s)
    }

    // ----- operations on a queue ---------------------------------------------

    /// Sends messages, each accepted or refused on its own; the accepted ones
    /// are durable (one commit) when it returns.
    pub async fn send_batch(&self, queue: &QueueRef, messages: Vec<Outgoing>) -> Result<Vec<Result<String, QueueError>>, QueueError> {
        let now = self.clock.now_ms();
        let (answers, done) = {
            let mut state = queue.live()?;
            let mut writes = expired_writes(queue, &mut state, now);
            let answers: Vec<Result<String, QueueError>> = messages
                .into_iter()
                .map(|m| {
                    let delay = m.delay_s.unwrap_or(state.queue.settings().delay_s);
                    let id = state.queue.send_delayed(m.body, m.attributes, delay, now).map_err(QueueError::Send)?;
                    writes.extend(put(queue, &state, id));
                    Ok(derived_id(queue.uid, id))
                })
                .collect();
            (answers, self.write(writes, true))
        };
        queue.arrived.notify_waiters();
        written(done).await?;
        Ok(answers)
    }

    /// Receives up to `max` messages, waiting up to `wait` (capped at 20 s)
    /// for one.
    pub async fn receive_from(
        &self,
        queue: &QueueRef,
        max: usize,
        visibility: Option<u32>,
        wait: Duration,
    ) -> Result<Vec<Message>, QueueError> {
        let deadline = self.clock.instant() + wait.min(Duration::from_secs(u64::from(MAX_WAIT_S)));
        loop {
            let arrived = queue.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let messages = self.receive_now(queue, max, visibility)?;
            let now = self.clock.instant();
            if !messages.is_empty() || now >= deadline {
                return Ok(messages);
            }
            let _ = ignis_clock::timeout(&*self.clock, (deadline - now).min(POLL_INTERVAL), arrived).await;
        }
    }

    fn receive_now(&self, queue: &QueueRef, max: usize, visibility: Option<u32>) -> Result<Vec<Message>, QueueError> {
        let now = self.clock.now_ms();
        let (messages, dead_letters) = {
            let mut state = queue.live()?;
            let mut writes = expired_writes(queue, &mut state, now);
            let outcome = state.queue.receive(max, visibility, now).map_err(|e| QueueError::InvalidParameterValue(e.to_string()))?;
            let messages: Vec<Message> = outcome
                .messages
                .into_iter()
                .map(|r| {
                    writes.push(QueueWrite::Received {
                        queue: queue.uid,
                        id: r.message_id.0,
                        receive_count: r.receive_count,
                        first_receive_ms: r.first_receive_ms,
                    });
                    Message {
                        message_id: queue.wire_id(&state, r.message_id),
                        receipt_handle: self.encode_handle(queue, r.receipt_handle),
                        body: r.body,
                        attributes: r.attributes,
                        receive_count: r.receive_count,
                        sent_ms: r.sent_ms,
                        first_receive_ms: r.first_receive_ms,
                    }
                })
                .collect();
            drop(self.write(writes, false));
            let dead_letters: Vec<(DeadLetter, String)> = outcome
                .dead_letters
                .into_iter()
                .map(|letter| {
                    let id = letter.message_id;
                    let wire_id = state.wire_ids.remove(&id).unwrap_or_else(|| derived_id(queue.uid, id));
                    (letter, wire_id)
                })
                .collect();
            (messages, dead_letters)
        };
        for (letter, wire_id) in dead_letters {
            self.dead_letter(queue, letter, wire_id, now);
        }
        Ok(messages)
    }

    /// Moves a message redrive took out of `source` to its dead-letter queue,
    /// or back into `source` (with a new id) if that queue is gone: one
    /// transaction either way.
    fn dead_letter(&self, source: &QueueRef, letter: DeadLetter, wire_id: String, now: u64) {
        let old = QueueWrite::Delete { queue: source.uid, id: letter.message_id.0 };
        let target = self.lookup(&source.account, &letter.target).ok();
        // One queue's lock at a time: the target's is dropped before the source's is taken.
        fn alive(q: &QueueRef) -> Option<MutexGuard<'_, QueueState>> {
            let state = q.lock();
            (!state.deleted).then_some(state)
        }
        let chosen = target.as_ref().and_then(|t| Some((t, alive(t)?))).or_else(|| Some((source, alive(source)?)));
        // Otherwise the source is gone too, and the message with it.
        let Some((queue, mut state)) = chosen else { return };
        let id = state.queue.accept_dead_letter(letter, now);
        state.wire_ids.insert(id, wire_id);
        // A letter already past the target's retention is gone at once: only the delete remains.
        let stored = put(queue, &state, id);
        if stored.is_none() {
            state.wire_ids.remove(&id);
        }
        let writes = stored.into_iter().chain([old]).collect();
        drop(self.write(writes, false));
        drop(state);
        queue.arrived.notify_waiters();
    }

    /// Deletes messages by receipt handle, each on its own; durable (one
    /// commit) when it returns.
    pub async fn delete_batch(&self, queue: &QueueRef, handles: &[&str]) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        let now = self.clock.now_ms();
        let (answers, done) = {
            let mut state = queue.live()?;
            let mut writes = expired_writes(queue, &mut state, now);
            let answers: Vec<Result<(), QueueError>> = handles
                .iter()
                .map(|text| {
                    let invalid = || QueueError::ReceiptHandleIsInvalid(text.to_string());
                    let handle = self.decode_handle(queue, text).ok_or_else(invalid)?;
                    state.queue.delete(handle, now).map_err(|_| invalid())?;
                    state.wire_ids.remove(&handle.message);
                    writes.push(QueueWrite::Delete { queue: queue.uid, id: handle.message.0 });
                    Ok(())
                })
                .collect();
            (answers, self.write(writes, true))
        };
        written(done).await?;
        Ok(answers)
    }

    /// Sets a received message's visibility timeout (`0..=43200` s from now).
    pub fn change_visibility_of(&self, queue: &QueueRef, receipt_handle: &str, timeout_s: u32) -> Result<(), QueueError> {
        use ignis_queue::ChangeVisibilityError as E;
        let now = self.clock.now_ms();
        let handle =
            self.decode_handle(queue, receipt_handle).ok_or_else(|| QueueError::ReceiptHandleIsInvalid(receipt_handle.to_string()))?;
        {
            let mut state = queue.live()?;
            let writes = expired_writes(queue, &mut state, now);
            drop(self.write(writes, false));
            state.queue.change_visibility(handle, timeout_s, now).map_err(|e| match e {
                E::ReceiptHandleIsInvalid(_) => QueueError::ReceiptHandleIsInvalid(receipt_handle.to_string()),
                E::MessageNotInflight(_) => QueueError::MessageNotInflight,
                E::InvalidVisibilityTimeout(_) => QueueError::InvalidParameterValue(e.to_string()),
            })?;
        }
        if timeout_s == 0 {
            queue.arrived.notify_waiters();
        }
        Ok(())
    }

    /// Removes every message of the queue; durable when it returns.
    pub async fn purge(&self, queue: &QueueRef) -> Result<(), QueueError> {
        let done = {
            let mut state = queue.live()?;
            state.queue.purge();
            state.wire_ids.clear();
            self.write(vec![QueueWrite::Purge { queue: queue.uid }], true)
        };
        written(done).await
    }

    // ----- definitions --------------------------------------------------------

    /// Creates a queue, or answers the existing one if every attribute given
    /// matches it (`NameExists` otherwise).
    pub async fn create(
        &self,
        account: &str,
        name: &str,
        given: &HashMap<String, String>,
        parse: impl Fn(&QueueConfig, &HashMap<String, String>) -> Result<QueueConfig, QueueError>,
    ) -> Result<QueueRef, QueueError> {
        let _serialised = self.definitions.lock().await;
        let config = parse(&QueueConfig::default(), given)?;
        if let Ok(existing) = self.get(account, name) {
            let current = existing.config();
            // Every attribute given must leave the queue as it is.
            for (attribute, value) in given {
                let one = HashMap::from([(attribute.clone(), value.clone())]);
                if parse(&current, &one).ok().as_ref() != Some(&current) {
                    return Err(QueueError::NameExists(attribute.clone()));
                }
            }
            return Ok(existing);
        }
        let uid = random_u64();
        let created_s = self.clock.now_ms() / 1000;
        self.store_definition(account, name, definition(uid, created_s, created_s, &config)).await?;
        let queue = Queue::new(config.settings.clone()).map_err(|e| QueueError::InvalidAttributeValue(e.to_string()))?;
        let q = Arc::new(LiveQueue {
            account: account.to_string(),
            name: name.to_string(),
            arn: ignis_ids::arn::queue(&self.region, account, name),
            uid,
            created_s,
            state: Mutex::new(QueueState {
                queue,
                wire_ids: HashMap::new(),
                wait_s: config.wait_s,
                modified_s: created_s,
                deleted: false,
            }),
            arrived: Notify::new(),
        });
        self.map().insert((account.to_string(), name.to_string()), q.clone());
        Ok(q)
    }

    /// Changes a queue's attributes (stored first).
    pub async fn set_attributes(
        &self,
        queue: &QueueRef,
        config: impl FnOnce(&QueueConfig) -> Result<QueueConfig, QueueError>,
    ) -> Result<(), QueueError> {
        let _serialised = self.definitions.lock().await;
        drop(queue.live()?);
        let config = config(&queue.config())?;
        let modified_s = self.clock.now_ms() / 1000;
        self.store_definition(&queue.account, &queue.name, definition(queue.uid, queue.created_s, modified_s, &config)).await?;
        let mut state = queue.live()?;
        state.queue.set_settings(config.settings).map_err(|e| QueueError::InvalidAttributeValue(e.to_string()))?;
        state.wait_s = config.wait_s;
        state.modified_s = modified_s;
        Ok(())
    }

    /// Deletes a queue and its messages. Waiting receives end at once.
    pub async fn delete_queue(&self, queue: &QueueRef) -> Result<(), QueueError> {
        let _serialised = self.definitions.lock().await;
        drop(queue.live()?);
        let storage = self.storage.clone();
        let (account, name) = (queue.account.clone(), queue.name.clone());
        tokio::task::spawn_blocking(move || storage.delete_definition(&account, &name))
            .await
            .map_err(|e| QueueError::Storage(e.to_string()))??;
        self.map().remove(&(queue.account.clone(), queue.name.clone()));
        {
            let mut state = queue.lock();
            state.deleted = true;
            state.queue.purge();
            state.wire_ids.clear();
            drop(self.write(vec![QueueWrite::Purge { queue: queue.uid }], false));
        }
        queue.arrived.notify_waiters();
        Ok(())
    }

    /// A queue's counts and times, as of now (what retention dropped is
    /// deleted from storage too).
    pub fn info(&self, queue: &QueueRef) -> QueueInfo {
        let now = self.clock.now_ms();
        {
            let mut state = queue.lock();
            let writes = expired_writes(queue, &mut state, now);
            drop(self.write(writes, false));
        }
        queue.info_at(now)
    }

    /// The queues of `account` whose names start with `prefix`, by name.
    /// Every queue's ARN and its messages now (visible, in flight and delayed), in no order: for the metrics,
    /// from memory, one queue's lock at a time.
    pub fn depths(&self) -> Vec<(String, usize)> {
        let queues: Vec<QueueRef> = self.map().values().cloned().collect();
        let now_ms = self.clock.now_ms();
        queues
            .iter()
            .map(|queue| {
                let counts = queue.info_at(now_ms).counts;
                (queue.arn.clone(), counts.visible + counts.in_flight + counts.delayed)
            })
            .collect()
    }

    pub fn list(&self, account: &str, prefix: &str) -> Vec<QueueRef> {
        let mut queues: Vec<QueueRef> =
            self.map().values().filter(|q| q.account == account && q.name.starts_with(prefix)).cloned().collect();
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        queues
    }

    async fn store_definition(&self, account: &str, name: &str, record: Vec<u8>) -> Result<(), QueueError> {
        let storage = self.storage.clone();
        let (account, name) = (account.to_string(), name.to_string());
        tokio::task::spawn_blocking(move || storage.put_definition(&account, &name, &record))
            .await
            .map_err(|e| QueueError::Storage(e.to_string()))??;
        Ok(())
    }

    // ----- plumbing -----------------------------------------------------------

    /// Hands writes to the writer (call it under the queue's mutex, so the
    /// store sees the queue's changes in order); the answer says when they
    /// are committed. `always` asks for an answer even without writes (at
    /// once, then); without `always` nobody waits for them.
    fn write(&self, writes: Vec<QueueWrite>, always: bool) -> Option<Ack> {
        if writes.is_empty() {
            return None;
        }
        Some(if always { self.writer.submit(writes) } else { self.writer.push(writes) })
    }

    fn encode_handle(&self, queue: &LiveQueue, handle: ReceiptHandle) -> String {
        format!("{:016x}{:016x}{:016x}{:016x}", self.epoch.load(Ordering::Acquire), queue.uid, handle.message.0, handle.receive)
    }

    fn decode_handle(&self, queue: &LiveQueue, text: &str) -> Option<ReceiptHandle> {
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let field = |i: usize| u64::from_str_radix(&text[i * 16..(i + 1) * 16], 16).ok();
        if field(0)? != self.epoch.load(Ordering::Acquire) || field(1)? != queue.uid {
            return None;
        }
        Some(ReceiptHandle { message: MessageId(field(2)?), receive: field(3)? })
    }
}

impl LiveQueue {
    /// The queue's settable attributes now.
    pub fn config(&self) -> QueueConfig {
        let state = self.lock();
        QueueConfig { settings: state.queue.settings().clone(), wait_s: state.wait_s }
    }

    /// Counts and times, as of `now_ms`.
    fn info_at(&self, now_ms: u64) -> QueueInfo {
        let mut state = self.lock();
        let counts = state.queue.counts(now_ms);
        QueueInfo {
            config: QueueConfig { settings: state.queue.settings().clone(), wait_s: state.wait_s },
            counts,
            created_s: self.created_s,
            modified_s: state.modified_s,
        }
    }
}

/// The write that stores message `id` as the queue holds it (none if it is gone).
fn put(queue: &LiveQueue, state: &QueueState, id: MessageId) -> Option<QueueWrite> {
    let m = state.queue.stored(id)?;
    let message = QueueMessage {
        id: id.0,
        wire_id: state.wire_ids.get(&id).cloned(),
        attributes: ignis_queue::encode_attributes(&m.attributes),
        body: m.body,
        sent_ms: m.sent_ms,
        visible_at_ms: m.visible_at_ms,
        receive_count: m.receive_count,
        first_receive_ms: m.first_receive_ms,
    };
    Some(QueueWrite::Put { queue: queue.uid, message })
}

/// Applies time to the queue and answers the deletes for the messages that
/// retention dropped.
fn expired_writes(queue: &LiveQueue, state: &mut QueueState, now: u64) -> Vec<QueueWrite> {
    let expired = state.queue.expire(now);
    for id in &expired {
        state.wire_ids.remove(id);
    }
    expired.into_iter().map(|id| QueueWrite::Delete { queue: queue.uid, id: id.0 }).collect()
}

/// The message id of a `SendMessage` the front end serving the queues answered, or why it refused it.
fn sent_elsewhere(answered: &Answered) -> Result<String, QueueError> {
    let answer: Value = serde_json::from_slice(&answered.body).unwrap_or(Value::Null);
    match answer["MessageId"].as_str() {
        Some(id) if answered.status == 200 => Ok(id.to_string()),
        _ if answer["__type"].as_str().is_some_and(|t| t.ends_with("QueueDoesNotExist")) => Err(QueueError::DoesNotExist),
        _ => {
            let message = answer["message"].as_str().unwrap_or("no reason given");
            Err(QueueError::Unavailable(format!("the front end serving the queues refused the message: {message}")))
        }
    }
}

async fn written(done: Option<Ack>) -> Result<(), QueueError> {
    let Some(done) = done else { return Ok(()) };
    done.wait().await.map_err(|e| QueueError::Storage(e.to_string()))
}

#[cfg(test)]
mod tests;
