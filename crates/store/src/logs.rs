//! CloudWatch-Logs-like storage: groups, streams, events, per account.
//!
//! # Bounded
//!
//! Each log group holds at most [`Store::max_log_group_bytes`] (its events'
//! messages plus [`LOG_EVENT_OVERHEAD`] each, see [`charged`]): the append
//! that would take a group past it also deletes the group's oldest events, in
//! the same transaction, until the group is back to [`trim_target`] of it. So
//! one function that writes without pause keeps its newest logs and cannot
//! fill the disk; the database file grows at most by what the caps allow (freed
//! pages are reused).

use std::collections::{BTreeMap, HashMap};

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::{DbContext, Store, StoreError, now_ms};

/// (account, group, timestamp_ms, seq) -> (ingestion_ms, stream, message).
/// `seq` is a store-wide counter, so keys are unique and ordered by arrival
/// among events of the same timestamp.
const EVENTS: TableDefinition<EventKey, EventValue> = TableDefinition::new("log_events");
type EventKey = (&'static str, &'static str, i64, u64);
type EventValue = (i64, &'static str, &'static str);
/// (account, group, stream) -> stream statistics, see [`StreamStats`].
const STREAMS: TableDefinition<StreamKey, StatsValue> = TableDefinition::new("log_streams");
type StreamKey = (&'static str, &'static str, &'static str);
/// (creation_ms, first_ms, last_ms, last_ingestion_ms, bytes, count)
type StatsValue = (i64, i64, i64, i64, u64, u64);
/// Counters: "log_seq".
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// Maximum events a [`LogQuery`] returns.
pub const MAX_LOG_LIMIT: usize = 10_000;
/// Events examined per `filter_logs` call before returning a partial page.
const MAX_SCAN: usize = 100_000;
/// What one event costs a log group's cap besides its message: its key, its
/// stream's name and the database's bookkeeping, roughly (so that a flood of
/// empty lines is bounded too).
pub const LOG_EVENT_OVERHEAD: u64 = 128;
/// The default cap of each log group (see [`Store::set_max_log_group_bytes`]).
pub const DEFAULT_MAX_LOG_GROUP_BYTES: u64 = 64 * 1024 * 1024;

/// What `count` events with `bytes` of messages cost a log group's cap.
pub fn charged(bytes: u64, count: u64) -> u64 {
    bytes.saturating_add(count.saturating_mul(LOG_EVENT_OVERHEAD))
}

/// What a group over its cap is trimmed back to: seven eighths of the cap, so
/// a group at its cap is not trimmed again at every append.
pub fn trim_target(cap: u64) -> u64 {
    cap - cap / 8
}

/// How many bytes (as [`charged`]) to delete from a group of `size` with cap
/// `cap`: none while it fits, else down to [`trim_target`].
pub fn excess(size: u64, cap: u64) -> u64 {
    if size <= cap { 0 } else { size - trim_target(cap) }
}

/// Charged sizes of log groups, by (account, group), as far as known.
pub(crate) type GroupSizes = HashMap<(String, String), u64>;

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(EVENTS).ctx("creating tables")?;
    txn.open_table(STREAMS).ctx("creating tables")?;
    txn.open_table(COUNTERS).ctx("creating tables")?;
    Ok(())
}

/// A log event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// Event time, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Log stream name.
    pub stream: String,
    /// The message.
    pub message: String,
}

/// A stored log event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLogEvent {
    /// Event time, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// When the store received it, ms since the Unix epoch.
    pub ingestion_ms: i64,
    /// Log stream name.
    pub stream: String,
    /// The message.
    pub message: String,
    /// Stable, unique id (decimal digits).
    pub event_id: String,
}

/// A query of [`Store::filter_logs`]. Events come in (timestamp, arrival) order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Inclusive lower bound of `timestamp_ms`.
    pub start_ms: Option<i64>,
    /// Inclusive upper bound of `timestamp_ms`.
    pub end_ms: Option<i64>,
    /// Only these streams (any stream if `None`).
    pub streams: Option<Vec<String>>,
    /// Continue after a previous page (its `next_token`; same query otherwise).
    pub next_token: Option<String>,
    /// Maximum events returned; 0 means (and larger values are capped to) [`MAX_LOG_LIMIT`].
    pub limit: usize,
    /// Only messages containing this substring.
    pub pattern: Option<String>,
}

/// A page of events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPage {
    /// The events.
    pub events: Vec<StoredLogEvent>,
    /// Set when more events may follow (a page may be short, even empty, when
    /// a selective filter scanned many events).
    pub next_token: Option<String>,
}

/// A log stream's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStreamInfo {
    /// Stream name.
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
    /// Group name.
    pub name: String,
    /// Ingestion time of its first event (earliest stream creation).
    pub creation_ms: i64,
    /// Sum of message sizes (bytes).
    pub stored_bytes: u64,
    /// Number of events.
    pub event_count: u64,
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
        StreamStats {
            creation_ms,
            first_ms,
            last_ms,
            last_ingestion_ms,
            bytes,
            count,
        }
    }
    fn value(&self) -> StatsValue {
        (
            self.creation_ms,
            self.first_ms,
            self.last_ms,
            self.last_ingestion_ms,
            self.bytes,
            self.count,
        )
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
}

fn event_id(ts: i64, seq: u64) -> String {
    // Order-preserving, digits only, like CloudWatch's ids.
    format!("{:020}{:020}", (ts as u64) ^ (1 << 63), seq)
}

fn make_token(ts: i64, seq: u64) -> String {
    format!("f1:{ts}:{seq}")
}

/// The first key position after the one a token names.
fn parse_token(token: &str) -> Result<Option<(i64, u64)>, StoreError> {
    let mut parts = token.split(':');
    let (Some("f1"), Some(ts), Some(seq), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(StoreError::InvalidNextToken);
    };
    let ts: i64 = ts.parse().map_err(|_| StoreError::InvalidNextToken)?;
    let seq: u64 = seq.parse().map_err(|_| StoreError::InvalidNextToken)?;
    Ok(match seq.checked_add(1) {
        Some(seq) => Some((ts, seq)),
        None => ts.checked_add(1).map(|ts| (ts, 0)),
    })
}

/// The smallest string greater than `s` (`s` + NUL): no string lies between
/// them, so `(.., s, ..)..(.., successor(s), ..)` selects exactly the keys with `s`.
fn successor(s: &str) -> String {
    let mut n = String::with_capacity(s.len() + 1);
    n.push_str(s);
    n.push('\0');
    n
}

impl Store {
    /// Appends events to `group` of `account` in one transaction; streams are
    /// created as needed. Not fsync'd unless the last fsync is older than
    /// [`crate::LOG_SYNC_INTERVAL`] (see [`Store::flush`]).
    pub fn append_logs(
        &self,
        account: &str,
        group: &str,
        events: &[LogEvent],
    ) -> Result<(), StoreError> {
        self.append_log_batches(&[(account, group, events)])
    }

    /// [`Store::append_logs`] for several `(account, group, events)` at once,
    /// all in one transaction.
    pub fn append_log_batches(
        &self,
        batches: &[(&str, &str, &[LogEvent])],
    ) -> Result<(), StoreError> {
        const CTX: &str = "appending logs";
        if batches.iter().all(|(_, _, events)| events.is_empty()) {
            return Ok(());
        }
        let now = now_ms();
        let cap = self.max_log_group_bytes();
        // Held across the transaction: the sizes stay those of the last commit.
        let mut sizes = self.lock_log_sizes();
        let mut new_sizes: Vec<((String, String), u64)> = Vec::new();
        let mut trimmed = false;
        let txn = self.db.begin_write().ctx(CTX)?;
        {
            let mut counters = txn.open_table(COUNTERS).ctx(CTX)?;
            let mut seq = counters
                .get("log_seq")
                .ctx(CTX)?
                .map(|g| g.value())
                .unwrap_or(0);
            let mut table = txn.open_table(EVENTS).ctx(CTX)?;
            let mut per_stream: HashMap<(&str, &str, &str), StreamStats> = HashMap::new();
            // What this append adds to each group, as charged.
            let mut added: HashMap<(&str, &str), u64> = HashMap::new();
            for &(account, group, events) in batches {
                for ev in events {
                    seq = seq.saturating_add(1);
                    table
                        .insert(
                            (account, group, ev.timestamp_ms, seq),
                            (now, ev.stream.as_str(), ev.message.as_str()),
                        )
                        .ctx(CTX)?;
                    per_stream
                        .entry((account, group, ev.stream.as_str()))
                        .or_insert_with(|| StreamStats::new(now))
                        .add(ev.timestamp_ms, now, ev.message.len() as u64);
                    let group_added = added.entry((account, group)).or_insert(0);
                    *group_added = group_added.saturating_add(charged(ev.message.len() as u64, 1));
                }
            }
            counters.insert("log_seq", seq).ctx(CTX)?;
            let mut streams = txn.open_table(STREAMS).ctx(CTX)?;
            for (key, add) in per_stream {
                let old = streams
                    .get(key)
                    .ctx(CTX)?
                    .map(|g| StreamStats::from_value(g.value()));
                let merged = match old {
                    Some(mut s) => {
                        s.first_ms = s.first_ms.min(add.first_ms);
                        s.last_ms = s.last_ms.max(add.last_ms);
                        s.last_ingestion_ms = s.last_ingestion_ms.max(add.last_ingestion_ms);
                        s.bytes = s.bytes.saturating_add(add.bytes);
                        s.count = s.count.saturating_add(add.count);
                        s
                    }
                    None => add,
                };
                streams.insert(key, merged.value()).ctx(CTX)?;
            }
            // Every group appended to, with what it holds now.
            for ((account, group), add) in added {
                let known = sizes.get(&(account.to_string(), group.to_string())).copied();
                let size = match known {
                    Some(before) => before.saturating_add(add),
                    None => group_size(&streams, account, group)?,
                };
                let extra = excess(size, cap);
                let freed = if extra > 0 { drop_oldest(&mut table, &mut streams, account, group, extra)? } else { 0 };
                trimmed |= freed > 0;
                new_sizes.push(((account.to_string(), group.to_string()), size.saturating_sub(freed)));
            }
        }
        // The database reuses the pages of deleted events only after a durable
        // commit: a trim is made durable at once, so a flood reuses what it frees.
        match self.commit(txn, trimmed, CTX) {
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

    /// Events of `group` of `account` matching `q`, in timestamp order, one page at a time.
    pub fn filter_logs(
        &self,
        account: &str,
        group: &str,
        q: &LogQuery,
    ) -> Result<LogPage, StoreError> {
        const CTX: &str = "reading logs";
        let limit = if q.limit == 0 {
            MAX_LOG_LIMIT
        } else {
            q.limit.min(MAX_LOG_LIMIT)
        };
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
        let txn = self.db.begin_read().ctx(CTX)?;
        let table = txn.open_table(EVENTS).ctx(CTX)?;
        let range = table
            .range((account, group, lower.0, lower.1)..=(account, group, end, u64::MAX))
            .ctx(CTX)?;
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
            if let Some(streams) = &q.streams
                && !streams.iter().any(|s| s == stream)
            {
                continue;
            }
            if let Some(pattern) = &q.pattern
                && !message.contains(pattern.as_str())
            {
                continue;
            }
            page.events.push(StoredLogEvent {
                timestamp_ms: ts,
                ingestion_ms,
                stream: stream.to_string(),
                message: message.to_string(),
                event_id: event_id(ts, seq),
            });
        }
        Ok(page)
    }

    /// The streams of `group` of `account`, ordered by name.
    pub fn log_streams(
        &self,
        account: &str,
        group: &str,
    ) -> Result<Vec<LogStreamInfo>, StoreError> {
        const CTX: &str = "listing log streams";
        let txn = self.db.begin_read().ctx(CTX)?;
        let table = txn.open_table(STREAMS).ctx(CTX)?;
        let next_group = successor(group);
        let mut out = Vec::new();
        for item in table
            .range((account, group, "")..(account, next_group.as_str(), ""))
            .ctx(CTX)?
        {
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
    pub fn log_groups(&self, account: &str) -> Result<Vec<LogGroupInfo>, StoreError> {
        const CTX: &str = "listing log groups";
        let txn = self.db.begin_read().ctx(CTX)?;
        let table = txn.open_table(STREAMS).ctx(CTX)?;
        let next_account = successor(account);
        let mut out: Vec<LogGroupInfo> = Vec::new();
        for item in table
            .range((account, "", "")..(next_account.as_str(), "", ""))
            .ctx(CTX)?
        {
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
                }),
            }
        }
        Ok(out)
    }

    /// Deletes every event and stream of `group` of `account`. Durable when it returns.
    pub fn delete_log_group(&self, account: &str, group: &str) -> Result<(), StoreError> {
        const CTX: &str = "deleting a log group";
        let mut sizes = self.lock_log_sizes();
        sizes.clear();
        let txn = self.db.begin_write().ctx(CTX)?;
        {
            let mut events = txn.open_table(EVENTS).ctx(CTX)?;
            events
                .retain_in(
                    (account, group, i64::MIN, 0u64)..=(account, group, i64::MAX, u64::MAX),
                    |_, _| false,
                )
                .ctx(CTX)?;
            let mut streams = txn.open_table(STREAMS).ctx(CTX)?;
            let next_group = successor(group);
            streams
                .retain_in(
                    (account, group, "")..(account, next_group.as_str(), ""),
                    |_, _| false,
                )
                .ctx(CTX)?;
        }
        self.commit(txn, true, CTX)
    }

    /// Keeps at most `max_events_per_group` events (the newest by timestamp) in
    /// every group of every account; returns how many events were deleted.
    /// Streams left without events are removed. Durable when it returns.
    pub fn trim_logs(&self, max_events_per_group: u64) -> Result<u64, StoreError> {
        const CTX: &str = "trimming logs";
        let mut sizes = self.lock_log_sizes();
        sizes.clear();
        // Group sizes, from the stream statistics.
        let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
        {
            let txn = self.db.begin_read().ctx(CTX)?;
            let table = txn.open_table(STREAMS).ctx(CTX)?;
            for item in table.iter().ctx(CTX)? {
                let (k, v) = item.ctx(CTX)?;
                let (account, group, _) = k.value();
                let n = counts
                    .entry((account.to_string(), group.to_string()))
                    .or_insert(0);
                *n = n.saturating_add(StreamStats::from_value(v.value()).count);
            }
        }
        let mut deleted = 0u64;
        for ((account, group), count) in counts {
            if count <= max_events_per_group {
                continue;
            }
            let (account, group) = (account.as_str(), group.as_str());
            let excess = count - max_events_per_group;
            let txn = self.db.begin_write().ctx(CTX)?;
            {
                let mut events = txn.open_table(EVENTS).ctx(CTX)?;
                let full = (account, group, i64::MIN, 0u64)..=(account, group, i64::MAX, u64::MAX);
                // Delete the oldest `excess` events.
                let mut removed = 0u64;
                for item in events.extract_from_if(full.clone(), |_, _| true).ctx(CTX)? {
                    item.ctx(CTX)?;
                    removed += 1;
                    if removed >= excess {
                        break;
                    }
                }
                deleted = deleted.saturating_add(removed);
                // Recompute the statistics of the group's streams.
                let mut streams = txn.open_table(STREAMS).ctx(CTX)?;
                let next_group = successor(group);
                let stream_range = (account, group, "")..(account, next_group.as_str(), "");
                let mut old: HashMap<String, StreamStats> = HashMap::new();
                for item in streams.range(stream_range.clone()).ctx(CTX)? {
                    let (k, v) = item.ctx(CTX)?;
                    old.insert(k.value().2.to_string(), StreamStats::from_value(v.value()));
                }
                let mut fresh: HashMap<String, StreamStats> = HashMap::new();
                for item in events.range(full).ctx(CTX)? {
                    let (k, v) = item.ctx(CTX)?;
                    let ts = k.value().2;
                    let (ingestion_ms, stream, message) = v.value();
                    let creation = old.get(stream).map_or(ingestion_ms, |s| s.creation_ms);
                    fresh
                        .entry(stream.to_string())
                        .or_insert_with(|| StreamStats {
                            last_ingestion_ms: i64::MIN,
                            ..StreamStats::new(creation)
                        })
                        .add(ts, ingestion_ms, message.len() as u64);
                }
                streams.retain_in(stream_range, |_, _| false).ctx(CTX)?;
                for (name, s) in &fresh {
                    streams
                        .insert((account, group, name.as_str()), s.value())
                        .ctx(CTX)?;
                }
            }
            self.commit(txn, true, CTX)?;
        }
        Ok(deleted)
    }
}

/// What `group` of `account` holds (as [`charged`]), from its streams' statistics.
fn group_size(
    streams: &redb::Table<StreamKey, StatsValue>,
    account: &str,
    group: &str,
) -> Result<u64, StoreError> {
    const CTX: &str = "measuring a log group";
    let next_group = successor(group);
    let mut size = 0u64;
    for item in streams
        .range((account, group, "")..(account, next_group.as_str(), ""))
        .ctx(CTX)?
    {
        let (_, v) = item.ctx(CTX)?;
        let s = StreamStats::from_value(v.value());
        size = size.saturating_add(charged(s.bytes, s.count));
    }
    Ok(size)
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
    let mut freed = 0u64;
    // Per stream: (message bytes, events) deleted.
    let mut removed: HashMap<String, (u64, u64)> = HashMap::new();
    let mut newest_removed = i64::MIN;
    let full = (account, group, i64::MIN, 0u64)..=(account, group, i64::MAX, u64::MAX);
    for item in events.extract_from_if(full, |_, _| true).ctx(CTX)? {
        let (k, v) = item.ctx(CTX)?;
        let (_, stream, message) = v.value();
        let entry = removed.entry(stream.to_string()).or_default();
        entry.0 = entry.0.saturating_add(message.len() as u64);
        entry.1 = entry.1.saturating_add(1);
        newest_removed = newest_removed.max(k.value().2);
        freed = freed.saturating_add(charged(message.len() as u64, 1));
        if freed >= at_least {
            break;
        }
    }
    for (stream, (bytes, count)) in removed {
        let key = (account, group, stream.as_str());
        let Some(mut s) = streams.get(key).ctx(CTX)?.map(|g| StreamStats::from_value(g.value())) else { continue };
        s.bytes = s.bytes.saturating_sub(bytes);
        s.count = s.count.saturating_sub(count);
        if s.count == 0 {
            streams.remove(key).ctx(CTX)?;
        } else {
            // Events go in timestamp order: what is left of the stream is no older.
            s.first_ms = s.first_ms.max(newest_removed);
            streams.insert(key, s.value()).ctx(CTX)?;
        }
    }
    Ok(freed)
}

impl Store {
    /// The most a log group may hold (see the module's docs).
    pub fn max_log_group_bytes(&self) -> u64 {
        self.max_log_group_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the most a log group may hold, in bytes (messages plus
    /// [`LOG_EVENT_OVERHEAD`] per event); applies from the next append to each group.
    pub fn set_max_log_group_bytes(&self, bytes: u64) {
        self.max_log_group_bytes.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    fn lock_log_sizes(&self) -> std::sync::MutexGuard<'_, GroupSizes> {
        self.log_sizes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_decisions() {
        // (size, cap) -> bytes to delete
        let table: [((u64, u64), u64); 8] = [
            ((0, 0), 0),
            ((1, 0), 1),
            ((0, 800), 0),
            ((800, 800), 0),
            ((801, 800), 801 - 700),
            ((10_000, 800), 10_000 - 700),
            ((u64::MAX, 800), u64::MAX - 700),
            ((5, u64::MAX), 0),
        ];
        for ((size, cap), expected) in table {
            assert_eq!(excess(size, cap), expected, "size {size}, cap {cap}");
            assert!(size - excess(size, cap) <= cap);
        }
        assert_eq!(charged(10, 2), 10 + 2 * LOG_EVENT_OVERHEAD);
        assert_eq!(charged(u64::MAX, 2), u64::MAX);
        assert_eq!(trim_target(0), 0);
    }

    #[test]
    fn tokens() {
        assert_eq!(parse_token(&make_token(-5, 7)).unwrap(), Some((-5, 8)));
        assert_eq!(parse_token(&make_token(5, u64::MAX)).unwrap(), Some((6, 0)));
        assert_eq!(parse_token(&make_token(i64::MAX, u64::MAX)).unwrap(), None);
        for bad in ["", "f1", "f1:1", "f1:x:1", "f2:1:1", "f1:1:1:1", "f1:1:-1"] {
            assert!(parse_token(bad).is_err(), "{bad}");
        }
        assert!(event_id(-1, 2) < event_id(0, 1));
        assert!(event_id(0, 1) < event_id(0, 2));
    }
}
