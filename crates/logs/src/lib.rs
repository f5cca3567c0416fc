//! The log service: sandboxes' log lines from the workers to storage, and
//! back out to whoever reads them.
//!
//! One owner, [`Logs`], holds the logs' tables in the server's database
//! (the `tables` module, private: no other crate reads or writes them; the
//! names and types are those the store used before, so old data loads) and
//! the one task that writes them (the `writer` module). The front end's
//! CloudWatch Logs API calls its queries ([`Logs::filter`] with a
//! [`FilterPattern`], [`Logs::events`], [`Logs::groups`], [`Logs::streams`],
//! [`Logs::has_group`]) and changes ([`Logs::put_retention`],
//! [`Logs::delete_group`]); any service that must not act
//! before a function's log is stored waits on a [`LogBarrier`]. Errors are
//! [`LogsError`]; only the front end turns them into wire errors.
//!
//! # Promises
//!
//! - Order: batches are committed in the order the workers' channel
//!   delivered them, each batch whole, in one transaction with whatever
//!   arrived meanwhile (group commit); among events of one timestamp, reads
//!   give them in that order.
//! - Barrier: [`LogBarrier::written`] returns once every line handed over
//!   before it (queued in the channel included) is committed: a service that
//!   then makes a durable (fsync'd) commit of its own has made the log durable
//!   too. Event source mappings wait for one before they delete a batch of
//!   messages, so a deleted message always has its log.
//! - Durability: log commits are not fsync'd themselves (the store fsyncs at
//!   least every [`ignis_store::LOG_SYNC_INTERVAL`], and on drop), except a
//!   commit that trimmed a group; a power loss may drop the last instant of
//!   logs, never corrupt them.
//! - Backpressure: at most about 1 MB of lines is handed over and not yet
//!   committed; beyond that the workers' senders wait.
//! - Bounded: each log group (a function's) holds at most its cap (messages
//!   plus [`LOG_EVENT_OVERHEAD`] an event, `--log-bytes-per-function`); the
//!   append that takes it past the cap deletes that group's oldest events in
//!   the same transaction, down to seven eighths of the cap. Another group's
//!   lines are never deleted for it. Every query answers a bounded page
//!   ([`MAX_LIMIT`] events, [`MAX_DESCRIBE_LIMIT`] groups or streams) and a
//!   token for the next one, which names a position, so it stays valid.
//! - Retention: a group with a retention ([`Logs::put_retention`]) keeps no
//!   event stamped before now minus its days: those go when it is set, at
//!   each append to the group, and every [`EXPIRY_INTERVAL`] ([`Logs::expire`]).
//!
//! # State and who changes it
//!
//! - The tables: written by the writer's one thread (appends, trims), and by
//!   the retention and group calls and the expiry task (each one write
//!   transaction, holding the size cache's mutex as the writer does),
//!   read by the queries on the callers' threads (each in a read transaction
//!   of its own, so a query sees whole commits). The queries block on storage:
//!   call them where blocking is fine (`spawn_blocking`).
//! - Each group's size as of the last commit: under one mutex, held across
//!   each write transaction (see the `tables` module).
//! - The writer task owns the receiving end of the workers' channel and the
//!   group-commit writer; it ends when every sender is gone, after its last
//!   commit.
//!
//! # Time
//!
//! Ingestion times (`ingestionTime`, a stream's `creationTime` and
//! `lastIngestionTime`) and retention cut-offs come from the [`SharedClock`] given to
//! [`Logs::start`]. Event timestamps are the lines' own; how often a commit
//! is fsync'd is the store's policy.

mod paging;
mod pattern;
mod tables;
mod writer;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use ignis_clock::SharedClock;
use ignis_ids::AccountId;
use ignis_store::{Store, StoreError};
use ignis_worker::LogBatch;
use tokio::sync::{mpsc, oneshot};

pub use pattern::{FilterPattern, MAX_PATTERN_LEN, PatternError};
pub use tables::LOG_EVENT_OVERHEAD;
use tables::Tables;

/// The [`Logs::filter`] token that continues after the event `event_id` names (one of a [`LogEvent`]'s), with the
/// same query; `None` if it is not such an id.
pub fn filter_token_after(event_id: &str) -> Option<String> {
    tables::position_of(event_id).map(|(ts, seq)| tables::make_token(ts, seq))
}

/// The [`Logs::groups`] or [`Logs::streams`] token that continues after an item at this position (its name, and
/// for streams ordered by [`StreamOrder::LastEventTime`] its last event's timestamp, else 0).
pub fn listing_token(number: i64, name: &str) -> String {
    paging::token((number, name))
}

/// The most events one [`Logs::filter`] page holds.
pub const MAX_LIMIT: usize = 10_000;
/// The default cap of each log group (`--log-bytes-per-function`): 64 MiB.
pub const DEFAULT_MAX_GROUP_BYTES: u64 = 64 * 1024 * 1024;

/// What the log service can fail with. The front end turns these into
/// CloudWatch Logs' wire errors (in one place).
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// A `next_token` that no [`Logs::filter`] page gave.
    #[error("The specified nextToken is invalid.")]
    InvalidNextToken,
    /// A `GetLogEvents` of a stream the group does not have.
    #[error("The specified log stream does not exist.")]
    StreamNotFound,
    /// A retention not in [`RETENTION_DAYS`].
    #[error("{0} is not a valid retention in days")]
    InvalidRetention(u32),
    /// The database failed.
    #[error("{0}")]
    Storage(#[from] StoreError),
    /// The writer's thread could not be started.
    #[error("cannot start the log writer: {0}")]
    Writer(std::io::Error),
}

/// Which streams a [`LogQuery`] reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Streams {
    /// Every stream of the group.
    #[default]
    All,
    /// Only these.
    Named(Vec<String>),
    /// Those whose name starts with this.
    Prefix(String),
}

/// A query of [`Logs::filter`]. Events come in (timestamp, arrival) order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Inclusive lower bound of `timestamp_ms`.
    pub start_ms: Option<i64>,
    /// Inclusive upper bound of `timestamp_ms`.
    pub end_ms: Option<i64>,
    pub streams: Streams,
    /// Continue after a previous page (its `next_token`; same query otherwise).
    pub next_token: Option<String>,
    /// Maximum events returned; 0 means (and larger values are capped to) [`MAX_LIMIT`].
    pub limit: usize,
    /// Only messages this pattern matches.
    pub pattern: Option<FilterPattern>,
}

/// A query of [`Logs::events`] (`GetLogEvents`): one stream's events, a page
/// at a time, in either direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsQuery {
    /// The stream; [`LogsError::StreamNotFound`] if the group has no such stream.
    pub stream: String,
    /// Inclusive lower bound of `timestamp_ms`.
    pub start_ms: Option<i64>,
    /// Inclusive upper bound of `timestamp_ms`.
    pub end_ms: Option<i64>,
    /// Without a token: the oldest page (true) or the newest (false, CloudWatch's default).
    pub start_from_head: bool,
    /// A `next_forward_token` or `next_backward_token` of an earlier page
    /// (same query otherwise); it says the direction.
    pub next_token: Option<String>,
    /// Maximum events returned; 0 means (and larger values are capped to) [`MAX_LIMIT`].
    pub limit: usize,
}

/// A page of one stream's events, oldest first, with the tokens of the pages
/// after and before it; a token that finds no more events is given back
/// unchanged (how CloudWatch's readers know they are at the end). A page may
/// be short, even empty, when the group has many events of other streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsPage {
    pub events: Vec<LogEvent>,
    pub next_forward_token: String,
    pub next_backward_token: String,
}

/// A stored log event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// Event time, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// When it was stored, ms since the Unix epoch.
    pub ingestion_ms: i64,
    /// Log stream name.
    pub stream: String,
    /// The message.
    pub message: String,
    /// Stable, unique, ordered like the events (decimal digits).
    pub event_id: String,
}

/// A page of events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPage {
    pub events: Vec<LogEvent>,
    /// Set when more events may follow (a page may be short, even empty, when
    /// a selective filter scanned many events).
    pub next_token: Option<String>,
}

/// A log stream's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStreamInfo {
    pub name: String,
    /// Ingestion time of its first event.
    pub creation_ms: i64,
    /// Smallest event timestamp.
    pub first_event_ms: i64,
    /// Largest event timestamp.
    pub last_event_ms: i64,
    /// Last ingestion time.
    pub last_ingestion_ms: i64,
    /// Sum of message sizes (bytes).
    pub stored_bytes: u64,
    /// Number of events.
    pub event_count: u64,
}

/// A log group's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogGroupInfo {
    pub name: String,
    /// Ingestion time of its first event (earliest stream creation).
    pub creation_ms: i64,
    /// Sum of message sizes (bytes).
    pub stored_bytes: u64,
    /// Number of events.
    pub event_count: u64,
    /// Its retention, if it has one.
    pub retention_days: Option<u32>,
}

/// The retentions a log group may have, in days (CloudWatch's list).
pub const RETENTION_DAYS: [u32; 22] =
    [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];
/// How often [`Logs::start`]'s task deletes what retentions expired.
pub const EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// The most groups or streams one [`Logs::groups`] or [`Logs::streams`] page holds (CloudWatch's limit).
pub const MAX_DESCRIBE_LIMIT: usize = 50;

/// A query of [`Logs::groups`] (`DescribeLogGroups`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupsQuery {
    /// Only groups whose names start with this.
    pub prefix: String,
    /// Maximum groups returned; 0 means (and larger values are capped to) [`MAX_DESCRIBE_LIMIT`].
    pub limit: usize,
    /// Continue after a previous page (its `next_token`; same query otherwise).
    pub next_token: Option<String>,
}

/// A page of log groups, ordered by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupsPage {
    pub groups: Vec<LogGroupInfo>,
    /// Set when more groups follow.
    pub next_token: Option<String>,
}

/// How [`Logs::streams`] orders streams (`DescribeLogStreams`' `orderBy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StreamOrder {
    #[default]
    Name,
    /// By the last event's timestamp (then by name).
    LastEventTime,
}

/// A query of [`Logs::streams`] (`DescribeLogStreams`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamsQuery {
    /// Only streams whose names start with this.
    pub prefix: String,
    pub order: StreamOrder,
    pub descending: bool,
    /// Maximum streams returned; 0 means (and larger values are capped to) [`MAX_DESCRIBE_LIMIT`].
    pub limit: usize,
    /// Continue after a previous page (its `next_token`; same query otherwise).
    pub next_token: Option<String>,
}

/// A page of log streams, in the query's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamsPage {
    pub streams: Vec<LogStreamInfo>,
    /// Set when more streams follow.
    pub next_token: Option<String>,
}

/// Waits for the log writer (cheap to clone, for any service): see
/// [`LogBarrier::written`].
#[derive(Debug, Clone)]
pub struct LogBarrier {
    requests: mpsc::UnboundedSender<writer::Barrier>,
}

impl LogBarrier {
    /// Returns once every log line handed to the writer so far is committed
    /// (at once if the writer has stopped).
    pub async fn written(&self) {
        let (done, written) = oneshot::channel();
        if self.requests.send(done).is_ok() {
            let _ = written.await;
        }
    }
}

/// Deletes what retentions expired every [`EXPIRY_INTERVAL`], until the
/// last [`Logs`] handle is gone.
async fn expire_periodically(tables: std::sync::Weak<Tables>) {
    let mut ticks = tokio::time::interval(EXPIRY_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(tables) = tables.upgrade() else { return };
        match tokio::task::spawn_blocking(move || tables.expire()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("expiring logs: {e}"),
            Err(e) => tracing::warn!("expiring logs: {e}"),
        }
    }
}

/// The log service's handle (cheap to clone); see the crate docs.
#[derive(Debug, Clone)]
pub struct Logs {
    tables: Arc<Tables>,
    barrier: LogBarrier,
}

impl Logs {
    /// Opens the logs' tables in `store`'s database (made if missing) and
    /// starts the writer, which takes every batch sent on `lines` until its
    /// last sender is gone. Each log group keeps at most `max_group_bytes`.
    /// Must run inside a tokio runtime.
    pub fn start(
        store: Arc<Store>,
        clock: SharedClock,
        max_group_bytes: u64,
        lines: mpsc::Receiver<LogBatch>,
    ) -> Result<Logs, LogsError> {
        let tables = Arc::new(Tables::open(store, clock, max_group_bytes)?);
        let writer = writer::start(tables.clone()).map_err(LogsError::Writer)?;
        let (requests, barriers) = mpsc::unbounded_channel();
        tokio::spawn(writer::run(writer, lines, barriers));
        tokio::spawn(expire_periodically(Arc::downgrade(&tables)));
        Ok(Logs { tables, barrier: LogBarrier { requests } })
    }

    /// The barrier, for services that wait for the log writer.
    pub fn barrier(&self) -> LogBarrier {
        self.barrier.clone()
    }

    /// Returns once every log line handed to the writer so far is committed.
    pub async fn written(&self) {
        self.barrier.written().await;
    }

    /// The most each log group holds (messages plus [`LOG_EVENT_OVERHEAD`] an event).
    pub fn max_group_bytes(&self) -> u64 {
        self.tables.cap()
    }

    /// Events of `group` of `account` matching `query`, one page at a time.
    /// Blocks on storage.
    pub fn filter(&self, account: &AccountId, group: &str, query: &LogQuery) -> Result<LogPage, LogsError> {
        self.tables.filter(account.as_str(), group, query)
    }

    /// A page of one stream of `group` of `account`, as `GetLogEvents` reads
    /// it (see [`EventsQuery`]). Blocks on storage.
    pub fn events(&self, account: &AccountId, group: &str, query: &EventsQuery) -> Result<EventsPage, LogsError> {
        self.tables.events(account.as_str(), group, query)
    }

    /// A page of the log groups of `account` (those with events) whose names
    /// start with `prefix`, ordered by name (see [`GroupsQuery`]). Blocks on storage.
    pub fn groups(&self, account: &AccountId, query: &GroupsQuery) -> Result<GroupsPage, LogsError> {
        let mut groups = self.tables.groups(account.as_str())?;
        groups.retain(|g| g.name.starts_with(query.prefix.as_str()));
        let (groups, next_token) =
            paging::page(groups, |g| (0, g.name.as_str()), false, query.limit, query.next_token.as_deref())?;
        Ok(GroupsPage { groups, next_token })
    }

    /// A page of the streams of `group` of `account` (see [`StreamsQuery`]).
    /// Blocks on storage.
    pub fn streams(&self, account: &AccountId, group: &str, query: &StreamsQuery) -> Result<StreamsPage, LogsError> {
        let mut streams = self.tables.streams(account.as_str(), group)?;
        streams.retain(|s| s.name.starts_with(query.prefix.as_str()));
        let key: fn(&LogStreamInfo) -> paging::Key<'_> = match query.order {
            StreamOrder::Name => |s| (0, s.name.as_str()),
            StreamOrder::LastEventTime => |s| (s.last_event_ms, s.name.as_str()),
        };
        let (streams, next_token) = paging::page(streams, key, query.descending, query.limit, query.next_token.as_deref())?;
        Ok(StreamsPage { streams, next_token })
    }

    /// Whether `group` of `account` holds events. Blocks on storage.
    pub fn has_group(&self, account: &AccountId, group: &str) -> Result<bool, LogsError> {
        Ok(self.tables.has_group(account.as_str(), group)?)
    }

    /// Sets the retention of `group` of `account` (one of [`RETENTION_DAYS`],
    /// else [`LogsError::InvalidRetention`]) and deletes at once the events it
    /// expires; later ones go as they expire (when the group is written, and
    /// every [`EXPIRY_INTERVAL`]). Durable when it returns. Blocks on storage.
    pub fn put_retention(&self, account: &AccountId, group: &str, days: u32) -> Result<(), LogsError> {
        if !RETENTION_DAYS.contains(&days) {
            return Err(LogsError::InvalidRetention(days));
        }
        Ok(self.tables.set_retention(account.as_str(), group, Some(days))?)
    }

    /// Removes the retention of `group` of `account`: its events are kept
    /// (up to its cap). Blocks on storage.
    pub fn delete_retention(&self, account: &AccountId, group: &str) -> Result<(), LogsError> {
        Ok(self.tables.set_retention(account.as_str(), group, None)?)
    }

    /// The retention of `group` of `account`, if it has one. Blocks on storage.
    pub fn retention(&self, account: &AccountId, group: &str) -> Result<Option<u32>, LogsError> {
        Ok(self.tables.retention(account.as_str(), group)?)
    }

    /// Deletes, in every group with a retention, the events it expired as of
    /// the clock's now; returns how many groups lost events. [`Logs::start`]'s
    /// task calls it every [`EXPIRY_INTERVAL`]. Blocks on storage.
    pub fn expire(&self) -> Result<usize, LogsError> {
        Ok(self.tables.expire()?)
    }

    /// Deletes every event and stream of `group` of `account`, and its
    /// retention; durable when it returns. Blocks on storage.
    pub fn delete_group(&self, account: &AccountId, group: &str) -> Result<(), LogsError> {
        Ok(self.tables.delete_group(account.as_str(), group)?)
    }
}
