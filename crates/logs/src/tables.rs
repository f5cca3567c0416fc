//! The logs' own tables in the server's database, CloudWatch-Logs-like:
//! groups, streams and events, per account. Only this module reads or writes
//! them; the store lends its database ([`Store::database`]) and commits
//! ([`Store::commit_write`]). The names and types are those the store used
//! before this crate, so a data directory from then keeps its logs.
//!
//! # Bounded
//!
//! Each log group holds at most its cap (its events' messages plus
//! [`LOG_EVENT_OVERHEAD`] each, see [`charged`]): the append that would take
//! a group past it also deletes the group's oldest events, in the same
//! transaction, until the group is back to [`trim_target`] of it. So one
//! function that writes without pause keeps its newest logs and cannot fill
//! the disk, and never touches another group's; the database file grows at
//! most by what the caps allow (freed pages are reused, which is why a trim
//! is committed durably: the database reuses a page only after a durable
//! commit freed it).
//!
//! # State and who changes it
//!
//! - The tables: appended to only by [`Tables::append`] (the log writer's
//!   one thread), emptied by [`Tables::delete_group`].
//! - `sizes`, each group's charged size as of the last commit that appended
//!   to it: a cache of what the stream statistics say, held locked across
//!   each write transaction, so it always matches the last commit (cleared
//!   when a commit fails or a group is deleted; a group not in it is measured
//!   from its streams).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ignis_clock::SharedClock;
use ignis_store::{DbContext, Store, StoreError};
use ignis_worker::LogBatch;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::{EventsPage, EventsQuery, LogEvent, LogGroupInfo, LogPage, LogQuery, LogStreamInfo, LogsError, MAX_LIMIT, Streams};

/// (account, group, timestamp_ms, seq) -> (ingestion_ms, stream, message).
/// `seq` is a database-wide counter, so keys are unique and ordered by
/// arrival among events of the same timestamp.
const EVENTS: TableDefinition<EventKey, EventValue> = TableDefinition::new("log_events");
type EventKey = (&'static str, &'static str, i64, u64);
type EventValue = (i64, &'static str, &'static str);
/// (account, group, stream) -> stream statistics, see [`StreamStats`].
const STREAMS: TableDefinition<StreamKey, StatsValue> = TableDefinition::new("log_streams");
type StreamKey = (&'static str, &'static str, &'static str);
/// (creation_ms, first_ms, last_ms, last_ingestion_ms, bytes, count)
type StatsValue = (i64, i64, i64, i64, u64, u64);
/// (account, group) -> retention in days (one of [`crate::RETENTION_DAYS`]).
const RETENTION: TableDefinition<(&str, &str), u32> = TableDefinition::new("log_retention");
/// Counters: "log_seq".
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const SEQ: &str = "log_seq";

/// Events examined per [`Tables::filter`] call before returning a partial page.
const MAX_SCAN: usize = 100_000;
/// What one event costs a log group's cap besides its message: its key, its
/// stream's name and the database's bookkeeping, roughly (so that a flood of
/// empty lines is bounded too).
pub const LOG_EVENT_OVERHEAD: u64 = 128;

/// What `count` events with `bytes` of messages cost a log group's cap.
pub(crate) fn charged(bytes: u64, count: u64) -> u64 {
    bytes.saturating_add(count.saturating_mul(LOG_EVENT_OVERHEAD))
}

/// What a group over its cap is trimmed back to: seven eighths of the cap, so
/// a group at its cap is not trimmed again at every append.
pub(crate) fn trim_target(cap: u64) -> u64 {
    cap - cap / 8
}

/// How many bytes (as [`charged`]) to delete from a group of `size` with cap
/// `cap`: none while it fits, else down to [`trim_target`].
pub(crate) fn excess(size: u64, cap: u64) -> u64 {
    if size <= cap { 0 } else { size - trim_target(cap) }
}

/// Charged sizes of log groups, by (account, group), as far as known.
type GroupSizes = HashMap<(String, String), u64>;

/// The logs' tables in the server's database; see the module docs.
pub(crate) struct Tables {
    store: Arc<Store>,
    /// Ingestion times.
    clock: SharedClock,
    /// The most a log group may hold, as [`charged`].
    cap: u64,
    sizes: Mutex<GroupSizes>,
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables").field("cap", &self.cap).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct StreamStats {
    creation_ms: i64,
    first_ms: i64,
    last_ms: i64,
    last_ingestion_ms: i64,
    bytes: u64,
    count: u64,
}

impl StreamStats {
    fn from_value(v: StatsValue) -> Self {
        let (creation_ms, first_ms, last_ms, last_ingestion_ms, bytes, count) = v;
        StreamStats { creation_ms, first_ms, last_ms, last_ingestion_ms, bytes, count }
    }

    fn value(&self) -> StatsValue {
        (self.creation_ms, self.first_ms, self.last_ms, self.last_ingestion_ms, self.bytes, self.count)
    }

    fn new(ingestion_ms: i64) -> Self {
        StreamStats {
            creation_ms: ingestion_ms,
            first_ms: i64::MAX,
            last_ms: i64::MIN,
            last_ingestion_ms: ingestion_ms,
            bytes: 0,
            count: 0,
        }
    }

    fn add(&mut self, ts: i64, ingestion_ms: i64, bytes: u64) {
        self.first_ms = self.first_ms.min(ts);
        self.last_ms = self.last_ms.max(ts);
        self.last_ingestion_ms = self.last_ingestion_ms.max(ingestion_ms);
        self.bytes = self.bytes.saturating_add(bytes);
        self.count = self.count.saturating_add(1);
    }

    fn merge(&mut self, other: &StreamStats) {
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
        self.last_ingestion_ms = self.last_ingestion_ms.max(other.last_ingestion_ms);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.count = self.count.saturating_add(other.count);
    }
}

pub(crate) fn event_id(ts: i64, seq: u64) -> String {
    // Order-preserving, digits only, like CloudWatch's ids.
    format!("{:020}{:020}", (ts as u64) ^ (1 << 63), seq)
}

/// The (timestamp, seq) an [`event_id`] was made of.
pub(crate) fn position_of(event_id: &str) -> Option<(i64, u64)> {
    if event_id.len() != 40 || !event_id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ts: u64 = event_id[..20].parse().ok()?;
    let seq: u64 = event_id[20..].parse().ok()?;
    Some(((ts ^ (1 << 63)) as i64, seq))
}

pub(crate) fn make_token(ts: i64, seq: u64) -> String {
    format!("f1:{ts}:{seq}")
}

/// The first key position after the one a token names (`None`: nothing can follow).
pub(crate) fn parse_token(token: &str) -> Result<Option<(i64, u64)>, LogsError> {
    let mut parts = token.split(':');
    let (Some("f1"), Some(ts), Some(seq), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(LogsError::InvalidNextToken);
    };
    let ts: i64 = ts.parse().map_err(|_| LogsError::InvalidNextToken)?;
    let seq: u64 = seq.parse().map_err(|_| LogsError::InvalidNextToken)?;
    Ok(match seq.checked_add(1) {
        Some(seq) => Some((ts, seq)),
        None => ts.checked_add(1).map(|ts| (ts, 0)),
    })
}

/// A position in a group's events, (timestamp, seq), and the next and previous ones (saturating).
type Position = (i64, u64);

fn after(p: Position) -> Position {
    match p.1.checked_add(1) {
        Some(seq) => (p.0, seq),
        None => p.0.checked_add(1).map_or(p, |ts| (ts, 0)),
    }
}

fn before(p: Position) -> Position {
    match p.1.checked_sub(1) {
        Some(seq) => (p.0, seq),
        None => p.0.checked_sub(1).map_or(p, |ts| (ts, u64::MAX)),
    }
}

/// Where a `GetLogEvents` page starts: forward from a position, or backward
/// from one (both included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cursor {
    Forward(Position),
    Backward(Position),
}

impl Cursor {
    pub(crate) fn token(self) -> String {
        match self {
            Cursor::Forward((ts, seq)) => format!("f/{ts}/{seq}"),
            Cursor::Backward((ts, seq)) => format!("b/{ts}/{seq}"),
        }
    }

    pub(crate) fn parse(token: &str) -> Result<Cursor, LogsError> {
        let mut parts = token.split('/');
        let (Some(direction), Some(ts), Some(seq), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(LogsError::InvalidNextToken);
        };
        let ts: i64 = ts.parse().map_err(|_| LogsError::InvalidNextToken)?;
        let seq: u64 = seq.parse().map_err(|_| LogsError::InvalidNextToken)?;
        match direction {
            "f" => Ok(Cursor::Forward((ts, seq))),
            "b" => Ok(Cursor::Backward((ts, seq))),
            _ => Err(LogsError::InvalidNextToken),
        }
    }
}

/// The smallest string greater than `s` (`s` + NUL): no string lies between
/// them, so `(.., s, ..)..(.., successor(s), ..)` selects exactly the keys with `s`.
fn successor(s: &str) -> String {
    let mut n = String::with_capacity(s.len() + 1);
    n.push_str(s);
    n.push('\0');
    n
}

impl Tables {
    /// Creates the tables if missing, so readers never meet a missing one.
    pub(crate) fn open(store: Arc<Store>, clock: SharedClock, cap: u64) -> Result<Tables, StoreError> {
        const CTX: &str = "creating the logs' tables";
        let txn = store.database().begin_write().ctx(CTX)?;
        txn.open_table(EVENTS).ctx(CTX)?;
        txn.open_table(STREAMS).ctx(CTX)?;
        txn.open_table(COUNTERS).ctx(CTX)?;
        txn.open_table(RETENTION).ctx(CTX)?;
        store.commit_write(txn, true, CTX)?;
        Ok(Tables { store, clock, cap, sizes: Mutex::default() })
    }

    pub(crate) fn cap(&self) -> u64 {
        self.cap
    }

    fn lock_sizes(&self) -> MutexGuard<'_, GroupSizes> {
        self.sizes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Appends `batches`, in order, in one transaction; streams are created
    /// as needed and every group appended to is trimmed back under its cap.
    /// Not fsync'd unless it trimmed (or the store's last fsync is older than
    /// [`ignis_store::LOG_SYNC_INTERVAL`]).
    pub(crate) fn append(&self, batches: &[LogBatch]) -> Result<(), StoreError> {
        const CTX: &str = "appending logs";
        if batches.iter().all(|b| b.lines.is_empty()) {
            return Ok(());
        }
        let now = self.now_ms();
        // Held across the transaction: the sizes stay those of the last commit.
        let mut sizes = self.lock_sizes();
        let mut new_sizes: Vec<((String, String), u64)> = Vec::new();
        let mut trimmed = false;
        let txn = self.store.database().begin_write().ctx(CTX)?;
        {
            let mut counters = txn.open_table(COUNTERS).ctx(CTX)?;
            let mut seq = counters.get(SEQ).ctx(CTX)?.map_or(0, |g| g.value());
            let mut table = txn.open_table(EVENTS).ctx(CTX)?;
            let mut per_stream: HashMap<(&str, &str, &str), StreamStats> = HashMap::new();
            // What this append adds to each group, as charged.
            let mut added: HashMap<(&str, &str), u64> = HashMap::new();
            for batch in batches {
                let (account, group, stream) = (batch.account.as_str(), batch.group.as_str(), batch.stream.as_str());
                for line in &batch.lines {
                    seq = seq.saturating_add(1);
                    table.insert((account, group, line.timestamp_ms, seq), (now, stream, line.message.as_str())).ctx(CTX)?;
                    per_stream.entry((account, group, stream)).or_insert_with(|| StreamStats::new(now)).add(
                        line.timestamp_ms,
                        now,
                        line.message.len() as u64,
                    );
                    let group_added = added.entry((account, group)).or_insert(0);
                    *group_added = group_added.saturating_add(charged(line.message.len() as u64, 1));
                }
            }
            counters.insert(SEQ, seq).ctx(CTX)?;
            let mut streams = txn.open_table(STREAMS).ctx(CTX)?;
            for (key, add) in per_stream {
                let old = streams.get(key).ctx(CTX)?.map(|g| StreamStats::from_value(g.value()));
                let merged = match old {
                    Some(mut s) => {
                        s.merge(&add);
                        s
                    }
                    None => add,
                };
                streams.insert(key, merged.value()).ctx(CTX)?;
            }
            let retention = txn.open_table(RETENTION).ctx(CTX)?;
            // Every group appended to, with what it holds now: first without
            // what its retention expired, then under its cap.
            for ((account, group), add) in added {
                let known = sizes.get(&(account.to_string(), group.to_string())).copied();
                let size = match known {
                    Some(before) => before.saturating_add(add),
                    None => group_size(&streams, account, group)?,
                };
                let expired = match retention.get((account, group)).ctx(CTX)? {
                    Some(days) => drop_before(&mut table, &mut streams, account, group, cutoff(now, days.value()))?,
                    None => 0,
                };
                let size = size.saturating_sub(expired);
                let extra = excess(size, self.cap);
                let freed = if extra > 0 { drop_oldest(&mut table, &mut streams, account, group, extra)? } else { 0 };
                trimmed |= freed > 0 || expired > 0;
                new_sizes.push(((account.to_string(), group.to_string()), size.saturating_sub(freed)));
            }
        }
        // The database reuses the pages of deleted events only after a durable
        // commit: a trim is made durable at once, so a flood reuses what it frees.
        match self.store.commit_write(txn, trimmed, CTX) {
            Ok(()) => {
                sizes.extend(new_sizes);
                Ok(())
            }
            Err(e) => {
                sizes.clear();
                Err(e)
            }
        }
    }

    /// Events of `group` of `account` matching `q`, in (timestamp, arrival)
    /// order, one page at a time.
    pub(crate) fn filter(&self, account: &str, group: &str, q: &LogQuery) -> Result<LogPage, LogsError> {
        const CTX: &str = "reading logs";
        let limit = if q.limit == 0 { MAX_LIMIT } else { q.limit.min(MAX_LIMIT) };
        let mut lower = (q.start_ms.unwrap_or(i64::MIN), 0u64);
        if let Some(token) = &q.next_token {
            match parse_token(token)? {
                Some(pos) => lower = lower.max(pos),
                None => return Ok(LogPage::default()),
            }
        }
        let end = q.end_ms.unwrap_or(i64::MAX);
        let mut page = LogPage::default();
        if lower.0 > end {
            return Ok(page);
        }
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let table = txn.open_table(EVENTS).ctx(CTX)?;
        let range = table.range((account, group, lower.0, lower.1)..=(account, group, end, u64::MAX)).ctx(CTX)?;
        let mut last: Option<(i64, u64)> = None;
        for (scanned, item) in range.enumerate() {
            if page.events.len() >= limit || scanned >= MAX_SCAN {
                // There is more: continue after the last examined event.
                page.next_token = last.map(|(ts, seq)| make_token(ts, seq));
                break;
            }
            let (k, v) = item.ctx(CTX)?;
            let (_, _, ts, seq) = k.value();
            let (ingestion_ms, stream, message) = v.value();
            last = Some((ts, seq));
            let wanted = match &q.streams {
                Streams::All => true,
                Streams::Named(names) => names.iter().any(|s| s == stream),
                Streams::Prefix(prefix) => stream.starts_with(prefix.as_str()),
            };
            if !wanted {
                continue;
            }
            if let Some(pattern) = &q.pattern
                && !pattern.matches(message)
            {
                continue;
            }
            page.events.push(LogEvent {
                timestamp_ms: ts,
                ingestion_ms,
                stream: stream.to_string(),
                message: message.to_string(),
                event_id: event_id(ts, seq),
            });
        }
        Ok(page)
    }

    /// A page of the events of one stream of `group` of `account`, in
    /// (timestamp, arrival) order, as `GetLogEvents` reads them: forward or
    /// backward from the token's position, else from the first event
    /// (`start_from_head`) or back from the last one. A token that finds
    /// nothing more comes back as it was.
    pub(crate) fn events(&self, account: &str, group: &str, q: &EventsQuery) -> Result<EventsPage, LogsError> {
        const CTX: &str = "reading a log stream";
        let limit = if q.limit == 0 { MAX_LIMIT } else { q.limit.min(MAX_LIMIT) };
        let cursor = match &q.next_token {
            Some(token) => Cursor::parse(token)?,
            None if q.start_from_head => Cursor::Forward((i64::MIN, 0)),
            None => Cursor::Backward((i64::MAX, u64::MAX)),
        };
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let streams = txn.open_table(STREAMS).ctx(CTX)?;
        if streams.get((account, group, q.stream.as_str())).ctx(CTX)?.is_none() {
            return Err(LogsError::StreamNotFound);
        }
        let table = txn.open_table(EVENTS).ctx(CTX)?;
        let (low, high) = ((q.start_ms.unwrap_or(i64::MIN), 0u64), (q.end_ms.unwrap_or(i64::MAX), u64::MAX));
        let (low, high) = match cursor {
            Cursor::Forward(from) => (low.max(from), high),
            Cursor::Backward(from) => (low, high.min(from)),
        };
        let mut events = Vec::new();
        // The first and last positions examined, in the page's direction.
        let mut examined: Option<(Position, Position)> = None;
        if low <= high {
            let range = table.range((account, group, low.0, low.1)..=(account, group, high.0, high.1)).ctx(CTX)?;
            let range: Box<dyn Iterator<Item = _>> =
                if matches!(cursor, Cursor::Forward(_)) { Box::new(range) } else { Box::new(range.rev()) };
            for (scanned, item) in range.enumerate() {
                if events.len() >= limit || scanned >= MAX_SCAN {
                    break;
                }
                let (k, v) = item.ctx(CTX)?;
                let (_, _, ts, seq) = k.value();
                let (ingestion_ms, stream, message) = v.value();
                examined = Some((examined.map_or((ts, seq), |(first, _)| first), (ts, seq)));
                if stream == q.stream {
                    events.push(LogEvent {
                        timestamp_ms: ts,
                        ingestion_ms,
                        stream: stream.to_string(),
                        message: message.to_string(),
                        event_id: event_id(ts, seq),
                    });
                }
            }
        }
        let (forward, backward) = match (cursor, examined) {
            (Cursor::Forward(from), None) => (Cursor::Forward(from), Cursor::Backward(before(from))),
            (Cursor::Forward(_), Some((first, last))) => (Cursor::Forward(after(last)), Cursor::Backward(before(first))),
            (Cursor::Backward(from), None) => (Cursor::Forward(after(from)), Cursor::Backward(from)),
            (Cursor::Backward(_), Some((first, last))) => {
                events.reverse();
                (Cursor::Forward(after(first)), Cursor::Backward(before(last)))
            }
        };
        Ok(EventsPage { events, next_forward_token: forward.token(), next_backward_token: backward.token() })
    }

    /// The streams of `group` of `account`, ordered by name.
    pub(crate) fn streams(&self, account: &str, group: &str) -> Result<Vec<LogStreamInfo>, StoreError> {
        const CTX: &str = "listing log streams";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let table = txn.open_table(STREAMS).ctx(CTX)?;
        let next_group = successor(group);
        let mut out = Vec::new();
        for item in table.range((account, group, "")..(account, next_group.as_str(), "")).ctx(CTX)? {
            let (k, v) = item.ctx(CTX)?;
            let s = StreamStats::from_value(v.value());
            out.push(LogStreamInfo {
                name: k.value().2.to_string(),
                creation_ms: s.creation_ms,
                first_event_ms: s.first_ms,
                last_event_ms: s.last_ms,
                last_ingestion_ms: s.last_ingestion_ms,
                stored_bytes: s.bytes,
                event_count: s.count,
            });
        }
        Ok(out)
    }

    /// The log groups of `account` that have events, ordered by name.
    pub(crate) fn groups(&self, account: &str) -> Result<Vec<LogGroupInfo>, StoreError> {
        const CTX: &str = "listing log groups";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let table = txn.open_table(STREAMS).ctx(CTX)?;
        let next_account = successor(account);
        let mut out: Vec<LogGroupInfo> = Vec::new();
        for item in table.range((account, "", "")..(next_account.as_str(), "", "")).ctx(CTX)? {
            let (k, v) = item.ctx(CTX)?;
            let group = k.value().1;
            let s = StreamStats::from_value(v.value());
            match out.last_mut() {
                Some(g) if g.name == group => {
                    g.creation_ms = g.creation_ms.min(s.creation_ms);
                    g.stored_bytes = g.stored_bytes.saturating_add(s.bytes);
                    g.event_count = g.event_count.saturating_add(s.count);
                }
                _ => out.push(LogGroupInfo {
                    name: group.to_string(),
                    creation_ms: s.creation_ms,
                    stored_bytes: s.bytes,
                    event_count: s.count,
                    retention_days: None,
                }),
            }
        }
        let retention = txn.open_table(RETENTION).ctx(CTX)?;
        for g in &mut out {
            g.retention_days = retention.get((account, g.name.as_str())).ctx(CTX)?.map(|d| d.value());
        }
        Ok(out)
    }

    /// Whether `group` of `account` has events (a stream).
    pub(crate) fn has_group(&self, account: &str, group: &str) -> Result<bool, StoreError> {
        const CTX: &str = "looking up a log group";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let table = txn.open_table(STREAMS).ctx(CTX)?;
        let next_group = successor(group);
        let mut range = table.range((account, group, "")..(account, next_group.as_str(), "")).ctx(CTX)?;
        Ok(range.next().transpose().ctx(CTX)?.is_some())
    }

    /// Deletes every event and stream of `group` of `account`. Durable when it returns.
    pub(crate) fn delete_group(&self, account: &str, group: &str) -> Result<(), StoreError> {
        const CTX: &str = "deleting a log group";
        let mut sizes = self.lock_sizes();
        sizes.clear();
        let txn = self.store.database().begin_write().ctx(CTX)?;
        {
            let mut events = txn.open_table(EVENTS).ctx(CTX)?;
            events.retain_in((account, group, i64::MIN, 0u64)..=(account, group, i64::MAX, u64::MAX), |_, _| false).ctx(CTX)?;
            let mut streams = txn.open_table(STREAMS).ctx(CTX)?;
            let next_group = successor(group);
            streams.retain_in((account, group, "")..(account, next_group.as_str(), ""), |_, _| false).ctx(CTX)?;
            txn.open_table(RETENTION).ctx(CTX)?.remove((account, group)).ctx(CTX)?;
        }
        self.store.commit_write(txn, true, CTX)
    }

    /// The retention of `group` of `account`, if it has one.
    pub(crate) fn retention(&self, account: &str, group: &str) -> Result<Option<u32>, StoreError> {
        const CTX: &str = "reading a log retention";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let table = txn.open_table(RETENTION).ctx(CTX)?;
        Ok(table.get((account, group)).ctx(CTX)?.map(|d| d.value()))
    }

    /// Sets (`Some`) or removes the retention of `group` of `account`; a new
    /// retention deletes what it expires at once. Durable when it returns.
    pub(crate) fn set_retention(&self, account: &str, group: &str, days: Option<u32>) -> Result<(), StoreError> {
        const CTX: &str = "setting a log retention";
        let mut sizes = self.lock_sizes();
        let txn = self.store.database().begin_write().ctx(CTX)?;
        {
            let mut retention = txn.open_table(RETENTION).ctx(CTX)?;
            match days {
                Some(days) => {
                    retention.insert((account, group), days).ctx(CTX)?;
                    let mut events = txn.open_table(EVENTS).ctx(CTX)?;
                    let mut streams = txn.open_table(STREAMS).ctx(CTX)?;
                    drop_before(&mut events, &mut streams, account, group, cutoff(self.now_ms(), days))?;
                }
                None => {
                    retention.remove((account, group)).ctx(CTX)?;
                }
            }
        }
        // Measured again from the streams at the next append.
        sizes.remove(&(account.to_string(), group.to_string()));
        self.store.commit_write(txn, true, CTX)
    }

    /// Deletes, in every group with a retention, the events it expired.
    /// Durable when it returns (if it deleted any). Returns how many groups lost events.
    pub(crate) fn expire(&self) -> Result<usize, StoreError> {
        const CTX: &str = "expiring logs";
        let now = self.now_ms();
        let mut sizes = self.lock_sizes();
        let txn = self.store.database().begin_write().ctx(CTX)?;
        let mut expired = Vec::new();
        {
            let retention = txn.open_table(RETENTION).ctx(CTX)?;
            let mut events = txn.open_table(EVENTS).ctx(CTX)?;
            let mut streams = txn.open_table(STREAMS).ctx(CTX)?;
            for item in retention.iter().ctx(CTX)? {
                let (k, days) = item.ctx(CTX)?;
                let (account, group) = k.value();
                if drop_before(&mut events, &mut streams, account, group, cutoff(now, days.value()))? > 0 {
                    expired.push((account.to_string(), group.to_string()));
                }
            }
        }
        for key in &expired {
            sizes.remove(key);
        }
        self.store.commit_write(txn, !expired.is_empty(), CTX)?;
        Ok(expired.len())
    }
}

/// What `group` of `account` holds (as [`charged`]), from its streams' statistics.
fn group_size(streams: &redb::Table<StreamKey, StatsValue>, account: &str, group: &str) -> Result<u64, StoreError> {
    const CTX: &str = "measuring a log group";
    let next_group = successor(group);
    let mut size = 0u64;
    for item in streams.range((account, group, "")..(account, next_group.as_str(), "")).ctx(CTX)? {
        let (_, v) = item.ctx(CTX)?;
        let s = StreamStats::from_value(v.value());
        size = size.saturating_add(charged(s.bytes, s.count));
    }
    Ok(size)
}

/// The first timestamp a retention of `days` keeps at `now_ms`.
pub(crate) fn cutoff(now_ms: i64, days: u32) -> i64 {
    now_ms.saturating_sub(i64::from(days).saturating_mul(24 * 60 * 60 * 1000))
}

/// Deletes the events of `group` of `account` stamped before `before_ms` and
/// updates its streams' statistics (a stream left empty goes). Returns the
/// bytes freed (as [`charged`]).
fn drop_before(
    events: &mut redb::Table<EventKey, EventValue>,
    streams: &mut redb::Table<StreamKey, StatsValue>,
    account: &str,
    group: &str,
    before_ms: i64,
) -> Result<u64, StoreError> {
    const CTX: &str = "expiring a log group";
    let mut removed = Removed::default();
    for item in events.extract_from_if((account, group, i64::MIN, 0u64)..(account, group, before_ms, 0u64), |_, _| true).ctx(CTX)? {
        let (k, v) = item.ctx(CTX)?;
        let (_, stream, message) = v.value();
        removed.add(k.value().2, stream, message);
    }
    removed.apply(streams, account, group)
}

/// Events deleted from one group: per stream (message bytes, events), and the newest timestamp.
#[derive(Default)]
struct Removed {
    streams: HashMap<String, (u64, u64)>,
    newest: Option<i64>,
    freed: u64,
}

impl Removed {
    fn add(&mut self, ts: i64, stream: &str, message: &str) {
        let entry = self.streams.entry(stream.to_string()).or_default();
        entry.0 = entry.0.saturating_add(message.len() as u64);
        entry.1 = entry.1.saturating_add(1);
        self.newest = Some(self.newest.map_or(ts, |n| n.max(ts)));
        self.freed = self.freed.saturating_add(charged(message.len() as u64, 1));
    }

    /// Updates the streams' statistics; returns the bytes freed.
    fn apply(self, streams: &mut redb::Table<StreamKey, StatsValue>, account: &str, group: &str) -> Result<u64, StoreError> {
        const CTX: &str = "updating log streams";
        let Some(newest) = self.newest else { return Ok(0) };
        for (stream, (bytes, count)) in self.streams {
            let key = (account, group, stream.as_str());
            let Some(mut s) = streams.get(key).ctx(CTX)?.map(|g| StreamStats::from_value(g.value())) else { continue };
            s.bytes = s.bytes.saturating_sub(bytes);
            s.count = s.count.saturating_sub(count);
            if s.count == 0 {
                streams.remove(key).ctx(CTX)?;
            } else {
                // Events go in timestamp order: what is left of the stream is no older.
                s.first_ms = s.first_ms.max(newest);
                streams.insert(key, s.value()).ctx(CTX)?;
            }
        }
        Ok(self.freed)
    }
}

/// Deletes the oldest events of `group` of `account` until `at_least` bytes
/// (as [`charged`]) are freed or none is left, and updates its streams'
/// statistics (a stream left empty goes). Returns the bytes freed.
fn drop_oldest(
    events: &mut redb::Table<EventKey, EventValue>,
    streams: &mut redb::Table<StreamKey, StatsValue>,
    account: &str,
    group: &str,
    at_least: u64,
) -> Result<u64, StoreError> {
    const CTX: &str = "trimming a log group";
    let mut removed = Removed::default();
    let full = (account, group, i64::MIN, 0u64)..=(account, group, i64::MAX, u64::MAX);
    for item in events.extract_from_if(full, |_, _| true).ctx(CTX)? {
        let (k, v) = item.ctx(CTX)?;
        let (_, stream, message) = v.value();
        removed.add(k.value().2, stream, message);
        if removed.freed >= at_least {
            break;
        }
    }
    removed.apply(streams, account, group)
}
