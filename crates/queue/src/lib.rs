//! One queue with Amazon SQS *standard-queue* semantics: delays, visibility
//! timeouts, receipt handles, retention and redrive to a dead-letter queue.
//! Ignis's asynchronous invocations and its SQS-compatible API both sit on it.
//!
//! Pure decision logic: no IO, no clocks (time is passed in as milliseconds),
//! no threads, nothing beyond `std`. The caller owns one [`Queue`] behind its
//! own lock, persists what it must, and does what the answers say — in
//! particular it puts every [`DeadLetter`] that [`Queue::receive`] hands back
//! on the dead-letter queue named by the redrive policy. Long polling
//! (`WaitTimeSeconds`) is the caller's concern: it just calls `receive` again.
//!
//! # States of a message
//!
//! ```text
//!  send (delay > 0) ──► Delayed ── now ≥ visible_at ──┐
//!  send (delay = 0) ──────────────────────────────────┴─► Visible
//!                                                          │ ▲
//!        receive (new handle, receive_count + 1) ──────────┘ │
//!                                 ▼                          │
//!                              InFlight ── now ≥ visible_at ─┤
//!                                 ├── change_visibility(0) ──┘
//!                                 └── change_visibility(t) ──► InFlight (visible_at = now + t)
//!
//!  any state ── now ≥ sent + retention ─────► Expired (gone)
//!  a received handle, still current ── delete ─► Deleted (gone)
//!  Visible ── receive with receive_count ≥ maxReceiveCount ─► DeadLettered
//!             (gone from here, handed to the caller in ReceiveOutcome::dead_letters)
//! ```
//!
//! Time is applied lazily and exactly: every operation that takes `now_ms`
//! first moves every Delayed or InFlight message whose `visible_at ≤ now` to
//! Visible and drops every message with `sent + retention ≤ now` (expiry).
//! [`Queue::expire`] does only that. `now_ms` should not go backwards; if it
//! does, nothing breaks, but what already happened (a message made visible or
//! expired) is not undone.
//!
//! # Receipt handles
//!
//! Every receive of a message gives it a new [`ReceiptHandle`] from a
//! counter that never repeats (within this queue), and that handle becomes the
//! message's *current* one; every earlier handle of the message is stale from
//! then on. `delete` accepts the current handle even after the visibility
//! timeout ran out, as long as nobody received the message again (as SQS
//! does); `change_visibility` accepts it only while the message is in flight
//! (`MessageNotInflight` otherwise). A stale, forged or unknown handle, or one
//! of a message that is gone, gets [`ReceiptHandleIsInvalid`].
//!
//! # Order and batches
//!
//! [`MessageId`]s are issued in send order, and `receive` returns visible
//! messages oldest first (by id), at most `max` of them. A message due for
//! the dead-letter queue does not take a place in the batch: `receive` keeps
//! looking for up to `max` messages to return.
//!
//! # Redrive
//!
//! With a [`Redrive`] policy, a visible message that has already been
//! received `max_receive_count` times is, on the next receive that reaches it,
//! moved out instead of received: removed from this queue and returned as a
//! [`DeadLetter`] (body, attributes, original `sent_ms` — SQS keeps the
//! original enqueue time for a standard queue's retention — receive count and
//! the target id). Nothing else ever dead-letters a message.
//!
//! # Storage
//!
//! The caller keeps messages as [`StoredMessage`]s ([`Queue::stored`]) and
//! rebuilds a queue with [`Queue::restore`]: receive counts survive, in-flight
//! state does not (such messages come back Visible and their handles are no
//! longer valid). Message ids never repeat as long as the caller restores
//! with the `next_message_id` it kept (or the messages carry larger ids).
//! [`encode_attributes`] / [`decode_attributes`] turn attributes into bytes.
//!
//! # Invariants
//!
//! - **Q1** (one state) every message that exists is in exactly one of
//!   Delayed, Visible, InFlight; Delayed only before its first receive,
//!   InFlight only after one. `counts()` adds up to `len()`.
//! - **Q2** (exact visibility) after any operation at `now`, a message is
//!   Delayed or InFlight exactly when `visible_at > now`.
//! - **Q3** (no loss) a message leaves the queue only by `delete` with its
//!   current handle, by retention expiry, or by dead-lettering (which hands
//!   it to the caller): `sent = len + deleted + expired + dead-lettered`.
//! - **Q4** (at-least-once) a message that is not deleted, expired or
//!   dead-lettered is Visible again once its visibility deadline passes, and
//!   `receive` returns it then (oldest first, so it is not starved by newer
//!   messages).
//! - **Q5** (handles) receipt handles are never reused; only the newest handle
//!   of a message is accepted.
//! - **Q6** (settings) the settings are always within SQS's ranges
//!   ([`Settings::validate`]); a message's size (body plus attributes) is at
//!   most `max_message_size` when it is sent.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

/// SQS's default visibility timeout.
pub const DEFAULT_VISIBILITY_TIMEOUT_S: u32 = 30;
/// The longest visibility timeout (12 hours).
pub const MAX_VISIBILITY_TIMEOUT_S: u32 = 43_200;
/// SQS's default message retention (4 days).
pub const DEFAULT_RETENTION_S: u32 = 345_600;
/// Shortest and longest message retention (1 minute, 14 days).
pub const MIN_RETENTION_S: u32 = 60;
pub const MAX_RETENTION_S: u32 = 1_209_600;
/// SQS's default maximum message size (256 KiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 262_144;
/// Smallest and largest maximum message size (1 KiB, 1 MiB).
pub const MIN_MAX_MESSAGE_SIZE: usize = 1_024;
pub const MAX_MAX_MESSAGE_SIZE: usize = 1_048_576;
/// The longest delay (15 minutes).
pub const MAX_DELAY_S: u32 = 900;
/// Messages one receive may return.
pub const MAX_RECEIVE_BATCH: usize = 10;
/// Range of a redrive policy's `maxReceiveCount`.
pub const MAX_MAX_RECEIVE_COUNT: u32 = 1_000;

/// A message's id, issued in send order by its queue, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

/// Proof of one receive of one message. Issued fresh by every receive and
/// never reused; only the newest one of a message is valid. The fields are
/// public so that a caller can encode it (and should sign it: forging one is
/// harmless here, but it names a message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReceiptHandle {
    pub message: MessageId,
    pub receive: u64,
}

/// A redrive policy: where messages go after too many receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    /// The dead-letter queue, opaque to this crate (e.g. its ARN).
    pub target: String,
    /// `1..=1000`: receives a message gets before it is dead-lettered.
    pub max_receive_count: u32,
}

/// A queue's settings (SQS queue attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `VisibilityTimeout`, `0..=43200` s.
    pub visibility_timeout_s: u32,
    /// `MessageRetentionPeriod`, `60..=1209600` s.
    pub retention_s: u32,
    /// `MaximumMessageSize`, `1024..=1048576` bytes.
    pub max_message_size: usize,
    /// `DelaySeconds`, `0..=900`.
    pub delay_s: u32,
    /// `RedrivePolicy`.
    pub redrive: Option<Redrive>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            visibility_timeout_s: DEFAULT_VISIBILITY_TIMEOUT_S,
            retention_s: DEFAULT_RETENTION_S,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            delay_s: 0,
            redrive: None,
        }
    }
}

impl Settings {
    /// Every field within SQS's range (Q6).
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.visibility_timeout_s > MAX_VISIBILITY_TIMEOUT_S {
            return Err(SettingsError::VisibilityTimeout(self.visibility_timeout_s));
        }
        if !(MIN_RETENTION_S..=MAX_RETENTION_S).contains(&self.retention_s) {
            return Err(SettingsError::Retention(self.retention_s));
        }
        if !(MIN_MAX_MESSAGE_SIZE..=MAX_MAX_MESSAGE_SIZE).contains(&self.max_message_size) {
            return Err(SettingsError::MaxMessageSize(self.max_message_size));
        }
        if self.delay_s > MAX_DELAY_S {
            return Err(SettingsError::Delay(self.delay_s));
        }
        if let Some(redrive) = &self.redrive
            && !(1..=MAX_MAX_RECEIVE_COUNT).contains(&redrive.max_receive_count)
        {
            return Err(SettingsError::MaxReceiveCount(redrive.max_receive_count));
        }
        Ok(())
    }
}

/// A setting out of range (SQS: `InvalidAttributeValue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsError {
    VisibilityTimeout(u32),
    Retention(u32),
    MaxMessageSize(usize),
    Delay(u32),
    MaxReceiveCount(u32),
}

impl SettingsError {
    /// SQS's error code.
    pub fn code(&self) -> &'static str {
        "InvalidAttributeValue"
    }
}

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SettingsError::VisibilityTimeout(v) => {
                write!(f, "VisibilityTimeout {v} is not within 0..={MAX_VISIBILITY_TIMEOUT_S}")
            }
            SettingsError::Retention(v) => {
                write!(f, "MessageRetentionPeriod {v} is not within {MIN_RETENTION_S}..={MAX_RETENTION_S}")
            }
            SettingsError::MaxMessageSize(v) => write!(
                f,
                "MaximumMessageSize {v} is not within {MIN_MAX_MESSAGE_SIZE}..={MAX_MAX_MESSAGE_SIZE}"
            ),
            SettingsError::Delay(v) => write!(f, "DelaySeconds {v} is not within 0..={MAX_DELAY_S}"),
            SettingsError::MaxReceiveCount(v) => {
                write!(f, "maxReceiveCount {v} is not within 1..={MAX_MAX_RECEIVE_COUNT}")
            }
        }
    }
}

impl std::error::Error for SettingsError {}

/// One message attribute (SQS `MessageAttributeValue`): a data type such as
/// `String`, `Number`, `Binary` or `String.custom`, and the value's bytes
/// (UTF-8 for strings and numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub data_type: String,
    pub value: Vec<u8>,
}

/// A message's attributes by name.
pub type Attributes = BTreeMap<String, Attribute>;

/// A message's size as SQS counts it: the body plus, for every attribute, its
/// name, data type and value.
pub fn message_size(body: &str, attributes: &Attributes) -> usize {
    body.len() + attributes.iter().map(|(name, a)| name.len() + a.data_type.len() + a.value.len()).sum::<usize>()
}

/// Attributes as bytes for storage: for each attribute, name, data type and
/// value, each as a 4-byte big-endian length and its bytes.
pub fn encode_attributes(attributes: &Attributes) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, a) in attributes {
        for part in [name.as_bytes(), a.data_type.as_bytes(), &a.value] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// The attributes [`encode_attributes`] encoded, or `None` for bytes it did not make.
pub fn decode_attributes(mut bytes: &[u8]) -> Option<Attributes> {
    fn take(bytes: &mut &[u8]) -> Option<Vec<u8>> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        let part = rest.get(..len)?.to_vec();
        *bytes = &rest[len..];
        Some(part)
    }
    let mut attributes = Attributes::new();
    while !bytes.is_empty() {
        let name = String::from_utf8(take(&mut bytes)?).ok()?;
        let data_type = String::from_utf8(take(&mut bytes)?).ok()?;
        let value = take(&mut bytes)?;
        attributes.insert(name, Attribute { data_type, value });
    }
    Some(attributes)
}

/// Why [`Queue::send`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// SQS requires at least one character (`MissingParameter`).
    EmptyBody,
    /// A character SQS does not allow: controls other than tab, LF and CR,
    /// and U+FFFE / U+FFFF (`InvalidMessageContents`).
    InvalidContents,
    /// Body plus attributes over the queue's maximum (`InvalidParameterValue`).
    TooLarge { size: usize, max: usize },
    /// A per-message delay over 900 s (`InvalidParameterValue`).
    InvalidDelay(u32),
}

impl SendError {
    /// SQS's error code.
    pub fn code(&self) -> &'static str {
        match self {
            SendError::EmptyBody => "MissingParameter",
            SendError::InvalidContents => "InvalidMessageContents",
            SendError::TooLarge { .. } | SendError::InvalidDelay(_) => "InvalidParameterValue",
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::EmptyBody => f.write_str("The request must contain the parameter MessageBody."),
            SendError::InvalidContents => f.write_str("Invalid characters found in the message body."),
            SendError::TooLarge { size, max } => {
                write!(f, "One or more parameters are invalid. Reason: Message must be shorter than {max} bytes (it is {size}).")
            }
            SendError::InvalidDelay(v) => write!(f, "DelaySeconds {v} is not within 0..={MAX_DELAY_S}"),
        }
    }
}

impl std::error::Error for SendError {}

/// Why [`Queue::receive`] refused (SQS: `InvalidParameterValue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveError {
    /// `MaxNumberOfMessages` not within `1..=10`.
    MaxMessages(usize),
    /// `VisibilityTimeout` over 43200.
    VisibilityTimeout(u32),
}

impl ReceiveError {
    pub fn code(&self) -> &'static str {
        "InvalidParameterValue"
    }
}

impl std::fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReceiveError::MaxMessages(v) => {
                write!(f, "MaxNumberOfMessages {v} is not within 1..={MAX_RECEIVE_BATCH}")
            }
            ReceiveError::VisibilityTimeout(v) => {
                write!(f, "VisibilityTimeout {v} is not within 0..={MAX_VISIBILITY_TIMEOUT_S}")
            }
        }
    }
}

impl std::error::Error for ReceiveError {}

/// The handle is stale (the message was received again), unknown, or its
/// message is gone (SQS: `ReceiptHandleIsInvalid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptHandleIsInvalid(pub ReceiptHandle);

impl ReceiptHandleIsInvalid {
    pub fn code(&self) -> &'static str {
        "ReceiptHandleIsInvalid"
    }
}

impl std::fmt::Display for ReceiptHandleIsInvalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "The receipt handle is not valid (message {}, receive {}).", self.0.message.0, self.0.receive)
    }
}

impl std::error::Error for ReceiptHandleIsInvalid {}

/// Why [`Queue::change_visibility`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeVisibilityError {
    /// See [`ReceiptHandleIsInvalid`].
    ReceiptHandleIsInvalid(ReceiptHandle),
    /// The handle is current but the message's visibility timeout already ran
    /// out: it is Visible (SQS: `MessageNotInflight`).
    MessageNotInflight(MessageId),
    /// Timeout over 43200 s (SQS: `InvalidParameterValue`).
    InvalidVisibilityTimeout(u32),
}

impl ChangeVisibilityError {
    pub fn code(&self) -> &'static str {
        match self {
            ChangeVisibilityError::ReceiptHandleIsInvalid(_) => "ReceiptHandleIsInvalid",
            ChangeVisibilityError::MessageNotInflight(_) => "MessageNotInflight",
            ChangeVisibilityError::InvalidVisibilityTimeout(_) => "InvalidParameterValue",
        }
    }
}

impl std::fmt::Display for ChangeVisibilityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeVisibilityError::ReceiptHandleIsInvalid(h) => ReceiptHandleIsInvalid(*h).fmt(f),
            ChangeVisibilityError::MessageNotInflight(id) => write!(f, "Message {} is not in flight.", id.0),
            ChangeVisibilityError::InvalidVisibilityTimeout(v) => {
                write!(f, "VisibilityTimeout {v} is not within 0..={MAX_VISIBILITY_TIMEOUT_S}")
            }
        }
    }
}

impl std::error::Error for ChangeVisibilityError {}

/// Where a message is (Q1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Sent with a delay that has not passed; never received yet.
    Delayed,
    /// May be received now.
    Visible,
    /// Received; invisible until its visibility deadline.
    InFlight,
}

/// One message as a receive returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message_id: MessageId,
    pub receipt_handle: ReceiptHandle,
    pub body: String,
    pub attributes: Attributes,
    /// `ApproximateReceiveCount`, this receive included (≥ 1).
    pub receive_count: u32,
    /// `ApproximateFirstReceiveTimestamp`.
    pub first_receive_ms: u64,
    /// `SentTimestamp`.
    pub sent_ms: u64,
}

/// A message moved out by redrive: the caller must send it to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub target: String,
    pub message_id: MessageId,
    pub body: String,
    pub attributes: Attributes,
    /// Receives it got here (= the policy's `max_receive_count` when it was
    /// dead-lettered, unless the policy was lowered in between).
    pub receive_count: u32,
    pub first_receive_ms: Option<u64>,
    /// The original send time (retention keeps counting from it).
    pub sent_ms: u64,
}

/// A message as storage keeps it: what [`Queue::restore`] needs to rebuild a
/// queue. `visible_at_ms` is the end of the send delay (for a message never
/// received); nothing else of a receive's visibility is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: MessageId,
    pub body: String,
    pub attributes: Attributes,
    pub sent_ms: u64,
    pub visible_at_ms: u64,
    pub receive_count: u32,
    pub first_receive_ms: Option<u64>,
}

/// What [`Queue::receive`] did: messages received, and messages moved out for
/// the dead-letter queue (which the caller must deliver there).
#[must_use = "dead letters must be delivered to the dead-letter queue"]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiveOutcome {
    pub messages: Vec<Received>,
    pub dead_letters: Vec<DeadLetter>,
}

/// Approximate counts (`ApproximateNumberOfMessages`,
/// `…NotVisible`, `…Delayed`); exact here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub visible: usize,
    pub in_flight: usize,
    pub delayed: usize,
}

#[derive(Debug, Clone)]
struct Message {
    body: String,
    attributes: Attributes,
    sent_ms: u64,
    state: State,
    /// When a Delayed or InFlight message becomes Visible (Q2).
    visible_at_ms: u64,
    receive_count: u32,
    first_receive_ms: Option<u64>,
    /// The newest handle (Q5).
    handle: Option<ReceiptHandle>,
}

/// One SQS standard queue. See the module docs for the rules.
#[derive(Debug)]
pub struct Queue {
    settings: Settings,
    messages: BTreeMap<MessageId, Message>,
    /// Ids of Visible messages: receive takes from the front.
    visible: BTreeSet<MessageId>,
    /// `(visible_at, id)` of Delayed and InFlight messages.
    waiting: BTreeSet<(u64, MessageId)>,
    /// `(sent + retention, id)` of every message.
    expiry: BTreeSet<(u64, MessageId)>,
    in_flight: usize,
    next_message: u64,
    next_receive: u64,
}

impl Default for Queue {
    fn default() -> Self {
        Queue::new(Settings::default()).expect("the defaults are valid")
    }
}

fn after(now_ms: u64, seconds: u32) -> u64 {
    now_ms.saturating_add(u64::from(seconds) * 1000)
}

fn valid_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

impl Queue {
    pub fn new(settings: Settings) -> Result<Queue, SettingsError> {
        settings.validate()?;
        Ok(Queue {
            settings,
            messages: BTreeMap::new(),
            visible: BTreeSet::new(),
            waiting: BTreeSet::new(),
            expiry: BTreeSet::new(),
            in_flight: 0,
            next_message: 0,
            next_receive: 0,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Replaces the settings. A new retention applies to the messages already
    /// here (as in SQS); a new visibility timeout or delay only to later
    /// receives and sends; a new redrive policy from the next receive on.
    pub fn set_settings(&mut self, settings: Settings) -> Result<(), SettingsError> {
        settings.validate()?;
        if settings.retention_s != self.settings.retention_s {
            self.expiry =
                self.messages.iter().map(|(id, m)| (after(m.sent_ms, settings.retention_s), *id)).collect();
        }
        self.settings = settings;
        Ok(())
    }

    /// Messages in the queue, in any state.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Sends with the queue's delay.
    pub fn send(&mut self, body: String, attributes: Attributes, now_ms: u64) -> Result<MessageId, SendError> {
        let delay = self.settings.delay_s;
        self.send_delayed(body, attributes, delay, now_ms)
    }

    /// Sends with a per-message delay (`DelaySeconds` of `SendMessage`).
    pub fn send_delayed(
        &mut self,
        body: String,
        attributes: Attributes,
        delay_s: u32,
        now_ms: u64,
    ) -> Result<MessageId, SendError> {
        if delay_s > MAX_DELAY_S {
            return Err(SendError::InvalidDelay(delay_s));
        }
        if body.is_empty() {
            return Err(SendError::EmptyBody);
        }
        let size = message_size(&body, &attributes);
        if size > self.settings.max_message_size {
            return Err(SendError::TooLarge { size, max: self.settings.max_message_size });
        }
        if !body.chars().all(valid_char) {
            return Err(SendError::InvalidContents);
        }
        self.apply_time(now_ms);
        let id = MessageId(self.next_message);
        self.next_message += 1;
        let visible_at_ms = after(now_ms, delay_s);
        self.insert(id, body, attributes, now_ms, visible_at_ms, 0, None, now_ms);
        Ok(id)
    }

    /// Rebuilds a queue from stored messages (after a restart). A message
    /// that was never received and whose delay has not passed comes back
    /// Delayed; every other one comes back Visible: whether it was in flight
    /// is not kept, and no earlier receipt handle is valid. Receive counts
    /// and first-receive times are kept, so redrive goes on counting. Message
    /// ids continue from `next_message` or after the largest restored id,
    /// whichever is larger; messages past retention are dropped.
    pub fn restore(
        settings: Settings,
        next_message: u64,
        messages: impl IntoIterator<Item = StoredMessage>,
        now_ms: u64,
    ) -> Result<Queue, SettingsError> {
        let mut queue = Queue::new(settings)?;
        queue.next_message = next_message;
        for m in messages {
            if queue.messages.contains_key(&m.id) || m.body.is_empty() {
                continue;
            }
            queue.next_message = queue.next_message.max(m.id.0.saturating_add(1));
            let visible_at = if m.receive_count == 0 { m.visible_at_ms } else { now_ms };
            queue.insert(m.id, m.body, m.attributes, m.sent_ms, visible_at, m.receive_count, m.first_receive_ms, now_ms);
        }
        queue.apply_time(now_ms);
        Ok(queue)
    }

    /// Takes a message dead-lettered by another queue: it gets a new id here
    /// and is Visible at once; its original send time (retention counts from
    /// it), attributes and receive count come along. Not size-checked: it was
    /// accepted once.
    pub fn accept_dead_letter(&mut self, letter: DeadLetter, now_ms: u64) -> MessageId {
        self.apply_time(now_ms);
        let id = MessageId(self.next_message);
        self.next_message += 1;
        let DeadLetter { body, attributes, receive_count, first_receive_ms, sent_ms, .. } = letter;
        self.insert(id, body, attributes, sent_ms, now_ms, receive_count, first_receive_ms, now_ms);
        self.apply_time(now_ms);
        id
    }

    /// Removes every message (`PurgeQueue`); returns how many there were.
    pub fn purge(&mut self) -> usize {
        let n = self.messages.len();
        self.messages.clear();
        self.visible.clear();
        self.waiting.clear();
        self.expiry.clear();
        self.in_flight = 0;
        n
    }

    /// The id the next message will get (never one given before).
    pub fn next_message_id(&self) -> MessageId {
        MessageId(self.next_message)
    }

    /// A message as storage should keep it, or `None` if it is gone.
    pub fn stored(&self, id: MessageId) -> Option<StoredMessage> {
        self.messages.get(&id).map(|m| StoredMessage {
            id,
            body: m.body.clone(),
            attributes: m.attributes.clone(),
            sent_ms: m.sent_ms,
            visible_at_ms: if m.receive_count == 0 { m.visible_at_ms } else { m.sent_ms },
            receive_count: m.receive_count,
            first_receive_ms: m.first_receive_ms,
        })
    }

    /// Puts a message in the state its `visible_at_ms` gives at `now_ms`
    /// (Delayed when never received, InFlight otherwise, or Visible).
    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        id: MessageId,
        body: String,
        attributes: Attributes,
        sent_ms: u64,
        visible_at_ms: u64,
        receive_count: u32,
        first_receive_ms: Option<u64>,
        now_ms: u64,
    ) {
        let state = match (visible_at_ms > now_ms, receive_count) {
            (false, _) => State::Visible,
            (true, 0) => State::Delayed,
            (true, _) => State::InFlight,
        };
        match state {
            State::Visible => {
                self.visible.insert(id);
            }
            State::InFlight => {
                self.in_flight += 1;
                self.waiting.insert((visible_at_ms, id));
            }
            State::Delayed => {
                self.waiting.insert((visible_at_ms, id));
            }
        }
        self.expiry.insert((after(sent_ms, self.settings.retention_s), id));
        let visible_at_ms = visible_at_ms.max(now_ms);
        let message =
            Message { body, attributes, sent_ms, state, visible_at_ms, receive_count, first_receive_ms, handle: None };
        self.messages.insert(id, message);
    }

    /// Receives up to `max` (`1..=10`) visible messages, oldest first, making
    /// each InFlight for `visibility_override` seconds (or the queue's
    /// visibility timeout) with a fresh receipt handle. Messages due for
    /// redrive are moved out into [`ReceiveOutcome::dead_letters`] instead and
    /// take no place in the batch.
    pub fn receive(
        &mut self,
        max: usize,
        visibility_override: Option<u32>,
        now_ms: u64,
    ) -> Result<ReceiveOutcome, ReceiveError> {
        if !(1..=MAX_RECEIVE_BATCH).contains(&max) {
            return Err(ReceiveError::MaxMessages(max));
        }
        let timeout = visibility_override.unwrap_or(self.settings.visibility_timeout_s);
        if timeout > MAX_VISIBILITY_TIMEOUT_S {
            return Err(ReceiveError::VisibilityTimeout(timeout));
        }
        self.apply_time(now_ms);
        let mut outcome = ReceiveOutcome::default();
        let mut cursor = Bound::Unbounded;
        while outcome.messages.len() < max {
            let Some(&id) = self.visible.range((cursor, Bound::Unbounded)).next() else { break };
            cursor = Bound::Excluded(id);
            let message = self.messages.get_mut(&id).expect("a visible id names a message");
            if let Some(redrive) = &self.settings.redrive
                && message.receive_count >= redrive.max_receive_count
            {
                let target = redrive.target.clone();
                let message = self.remove(id);
                outcome.dead_letters.push(DeadLetter {
                    target,
                    message_id: id,
                    body: message.body,
                    attributes: message.attributes,
                    receive_count: message.receive_count,
                    first_receive_ms: message.first_receive_ms,
                    sent_ms: message.sent_ms,
                });
                continue;
            }
            let handle = ReceiptHandle { message: id, receive: self.next_receive };
            self.next_receive += 1;
            message.receive_count += 1;
            let first_receive_ms = *message.first_receive_ms.get_or_insert(now_ms);
            message.handle = Some(handle);
            outcome.messages.push(Received {
                message_id: id,
                receipt_handle: handle,
                body: message.body.clone(),
                attributes: message.attributes.clone(),
                receive_count: message.receive_count,
                first_receive_ms,
                sent_ms: message.sent_ms,
            });
            let visible_at = after(now_ms, timeout);
            if visible_at > now_ms {
                message.state = State::InFlight;
                message.visible_at_ms = visible_at;
                self.visible.remove(&id);
                self.waiting.insert((visible_at, id));
                self.in_flight += 1;
            } else {
                // Timeout 0: received, and visible again at once (it stays in
                // `visible`, behind the cursor).
                message.visible_at_ms = now_ms;
            }
        }
        Ok(outcome)
    }

    /// Deletes the message of `handle`, which must be its newest handle.
    pub fn delete(&mut self, handle: ReceiptHandle, now_ms: u64) -> Result<(), ReceiptHandleIsInvalid> {
        self.apply_time(now_ms);
        self.current(handle).ok_or(ReceiptHandleIsInvalid(handle))?;
        self.remove(handle.message);
        Ok(())
    }

    /// Sets an in-flight message's visibility deadline to `now + timeout_s`
    /// (`0..=43200`); 0 makes it Visible at once.
    pub fn change_visibility(
        &mut self,
        handle: ReceiptHandle,
        timeout_s: u32,
        now_ms: u64,
    ) -> Result<(), ChangeVisibilityError> {
        if timeout_s > MAX_VISIBILITY_TIMEOUT_S {
            return Err(ChangeVisibilityError::InvalidVisibilityTimeout(timeout_s));
        }
        self.apply_time(now_ms);
        let message = self.current(handle).ok_or(ChangeVisibilityError::ReceiptHandleIsInvalid(handle))?;
        if message.state != State::InFlight {
            return Err(ChangeVisibilityError::MessageNotInflight(handle.message));
        }
        let id = handle.message;
        let old = message.visible_at_ms;
        self.waiting.remove(&(old, id));
        let message = self.messages.get_mut(&id).expect("checked above");
        let visible_at = after(now_ms, timeout_s);
        if visible_at > now_ms {
            message.visible_at_ms = visible_at;
            self.waiting.insert((visible_at, id));
        } else {
            message.visible_at_ms = now_ms;
            message.state = State::Visible;
            self.visible.insert(id);
            self.in_flight -= 1;
        }
        Ok(())
    }

    /// Applies time: Delayed and InFlight messages whose deadline passed
    /// become Visible, and messages past retention are dropped. Every other
    /// operation does this first; returns the ids dropped by this call.
    pub fn expire(&mut self, now_ms: u64) -> Vec<MessageId> {
        self.apply_time(now_ms)
    }

    /// The counts by state at `now_ms` (time applied first).
    pub fn counts(&mut self, now_ms: u64) -> Counts {
        self.apply_time(now_ms);
        self.counts_now()
    }

    /// The counts by state as of the last operation.
    pub fn counts_now(&self) -> Counts {
        Counts {
            visible: self.visible.len(),
            in_flight: self.in_flight,
            delayed: self.waiting.len() - self.in_flight,
        }
    }

    /// A message's state as of the last operation, or `None` if it is gone.
    pub fn state(&self, id: MessageId) -> Option<State> {
        self.messages.get(&id).map(|m| m.state)
    }

    fn current(&self, handle: ReceiptHandle) -> Option<&Message> {
        self.messages.get(&handle.message).filter(|m| m.handle == Some(handle))
    }

    fn remove(&mut self, id: MessageId) -> Message {
        let message = self.messages.remove(&id).expect("removing a message that exists");
        match message.state {
            State::Visible => {
                self.visible.remove(&id);
            }
            State::InFlight => {
                self.waiting.remove(&(message.visible_at_ms, id));
                self.in_flight -= 1;
            }
            State::Delayed => {
                self.waiting.remove(&(message.visible_at_ms, id));
            }
        }
        self.expiry.remove(&(after(message.sent_ms, self.settings.retention_s), id));
        message
    }

    fn apply_time(&mut self, now_ms: u64) -> Vec<MessageId> {
        let mut expired = Vec::new();
        while let Some(&(at, id)) = self.expiry.first()
            && at <= now_ms
        {
            self.remove(id);
            expired.push(id);
        }
        while let Some(&(at, id)) = self.waiting.first()
            && at <= now_ms
        {
            self.waiting.pop_first();
            let message = self.messages.get_mut(&id).expect("a waiting id names a message");
            if message.state == State::InFlight {
                self.in_flight -= 1;
            }
            message.state = State::Visible;
            self.visible.insert(id);
        }
        expired
    }
}

#[cfg(test)]
mod tests;
