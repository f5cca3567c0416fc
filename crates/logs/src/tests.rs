use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ignis_clock::{Clock, ManualClock, SharedClock};
use ignis_ids::AccountId;
use ignis_store::Store;
use ignis_worker::{LogBatch, LogLine};
use tokio::sync::mpsc;

use crate::tables::{Tables, charged, event_id, excess, make_token, parse_token, position_of, trim_target};
use crate::*;

const A: &str = "111111111111";
const B: &str = "222222222222";

fn account(id: &str) -> AccountId {
    AccountId::new(id)
}

fn batch(account: &str, group: &str, stream: &str, lines: &[(i64, &str)]) -> LogBatch {
    LogBatch {
        account: account.into(),
        group: group.into(),
        stream: stream.into(),
        lines: lines.iter().map(|&(timestamp_ms, message)| LogLine { timestamp_ms, message: message.into() }).collect(),
    }
}

fn clock() -> Arc<ManualClock> {
    ManualClock::at_epoch_2026()
}

fn tables(dir: &Path, clock: SharedClock, cap: u64) -> Tables {
    Tables::open(Arc::new(Store::open(dir).unwrap()), clock, cap).unwrap()
}

fn messages(page: &LogPage) -> Vec<&str> {
    page.events.iter().map(|e| e.message.as_str()).collect()
}

fn pat(pattern: &str) -> Option<FilterPattern> {
    Some(FilterPattern::parse(pattern).unwrap())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Every page of `query`, followed through its tokens; and how many pages.
fn all_pages(tables: &Tables, group: &str, mut query: LogQuery) -> (Vec<LogEvent>, usize) {
    let mut events = Vec::new();
    let mut pages = 0;
    loop {
        let page = tables.filter(A, group, &query).unwrap();
        pages += 1;
        events.extend(page.events);
        match page.next_token {
            Some(token) => query.next_token = Some(token),
            None => return (events, pages),
        }
    }
}

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
        assert!(matches!(parse_token(bad), Err(LogsError::InvalidNextToken)), "{bad}");
    }
    assert!(event_id(-1, 2) < event_id(0, 1));
    assert!(event_id(0, 1) < event_id(0, 2));
    for (ts, seq) in [(i64::MIN, 0), (-1, 2), (0, 0), (1_796_678_709_999, 7), (i64::MAX, u64::MAX)] {
        assert_eq!(position_of(&event_id(ts, seq)), Some((ts, seq)));
        // The token after an event continues after it.
        assert_eq!(filter_token_after(&event_id(ts, seq)), Some(make_token(ts, seq)));
    }
    for bad in ["", "1", &"9".repeat(40), &"0".repeat(39), &format!("{}x", "0".repeat(39))] {
        assert_eq!(position_of(bad), None, "{bad}");
    }
}

#[test]
fn lines_are_committed_in_order_and_readable_after_a_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let clock = clock();
    runtime().block_on(async {
        let (lines, receiver) = mpsc::channel(8192);
        let logs = Logs::start(store, clock.clone(), DEFAULT_MAX_GROUP_BYTES, receiver).unwrap();
        let stored = || logs.filter(&account(A), "/aws/lambda/f", &LogQuery::default()).unwrap();
        // An idle writer answers at once.
        tokio::time::timeout(Duration::from_secs(10), logs.written()).await.unwrap();
        // More than one transaction's worth, all with one timestamp, queued
        // before the barrier: all are stored when it is answered, in order.
        let count = writer::BATCHES + 10;
        for i in 0..count {
            lines.send(batch(A, "/aws/lambda/f", "s", &[(1, &format!("line {i}"))])).await.unwrap();
        }
        // Through a clone, as another service holds it.
        let barrier = logs.barrier();
        tokio::time::timeout(Duration::from_secs(10), barrier.written()).await.unwrap();
        let page = stored();
        assert_eq!(page.events.len(), count.min(MAX_LIMIT));
        for (i, event) in page.events.iter().enumerate() {
            assert_eq!(event.message, format!("line {i}"));
            assert_eq!(event.stream, "s");
        }
        assert!(page.events.windows(2).all(|w| w[0].event_id < w[1].event_id));
        // Ingestion times are the clock's.
        let now = clock.now_ms() as i64;
        assert!(page.events.iter().all(|e| e.ingestion_ms == now));
        clock.advance(Duration::from_secs(5));
        lines.send(batch(A, "/aws/lambda/f", "t", &[(0, "later, but older")])).await.unwrap();
        logs.written().await;
        let first = &stored().events[0];
        assert_eq!((first.message.as_str(), first.ingestion_ms), ("later, but older", now + 5000));
        let streams = logs.streams(&account(A), "/aws/lambda/f", &StreamsQuery { prefix: "t".into(), ..Default::default() }).unwrap().streams;
        assert_eq!((streams[0].creation_ms, streams[0].last_ingestion_ms), (now + 5000, now + 5000));
        // Once every sender is gone the writer stops; a barrier then returns at once.
        drop(lines);
        tokio::time::timeout(Duration::from_secs(10), logs.written()).await.unwrap();
    });
}

#[test]
fn filter_by_time_range_stream_pattern_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let t = tables(dir.path(), clock(), DEFAULT_MAX_GROUP_BYTES);
    let g = "/aws/lambda/f";
    let lines: Vec<(i64, String)> = (0..10).map(|i| (1000 + i, format!("msg {i}"))).collect();
    let even: Vec<(i64, &str)> = lines.iter().step_by(2).map(|(ts, m)| (*ts, m.as_str())).collect();
    let odd: Vec<(i64, &str)> = lines.iter().skip(1).step_by(2).map(|(ts, m)| (*ts, m.as_str())).collect();
    t.append(&[batch(A, g, "even", &even), batch(A, g, "odd", &odd)]).unwrap();
    // An out-of-order timestamp, the same timestamp again; another account; another group; nothing.
    t.append(&[batch(A, g, "odd", &[(999, "early")]), batch(A, g, "even", &[(1005, "dup-ts")])]).unwrap();
    t.append(&[batch(B, g, "even", &[(1001, "other account")]), batch(A, "/aws/lambda/f2", "x", &[(1001, "other group")])])
        .unwrap();
    t.append(&[batch(A, g, "s", &[])]).unwrap();

    let all = t.filter(A, g, &LogQuery::default()).unwrap();
    assert_eq!(all.next_token, None);
    let expected =
        ["early", "msg 0", "msg 1", "msg 2", "msg 3", "msg 4", "msg 5", "dup-ts", "msg 6", "msg 7", "msg 8", "msg 9"];
    assert_eq!(messages(&all), expected);
    assert_eq!(all.events.iter().map(|e| e.event_id.as_str()).collect::<HashSet<_>>().len(), 12);
    assert!(all.events.iter().all(|e| e.ingestion_ms > 0));
    assert_eq!(t.filter(A, g, &LogQuery::default()).unwrap(), all, "ids are stable");

    // Each query and what it finds.
    let cases: Vec<(LogQuery, Vec<&str>)> = vec![
        (
            LogQuery { start_ms: Some(1002), end_ms: Some(1005), ..Default::default() },
            vec!["msg 2", "msg 3", "msg 4", "msg 5", "dup-ts"],
        ),
        (
            LogQuery { streams: Streams::Named(vec!["odd".into()]), end_ms: Some(1003), ..Default::default() },
            vec!["early", "msg 1", "msg 3"],
        ),
        (LogQuery { streams: Streams::Named(vec![]), ..Default::default() }, vec![]),
        (LogQuery { streams: Streams::Prefix("ev".into()), start_ms: Some(1004), ..Default::default() }, vec![
            "msg 4", "dup-ts", "msg 6", "msg 8",
        ]),
        (LogQuery { streams: Streams::Prefix("x".into()), ..Default::default() }, vec![]),
        (LogQuery { pattern: pat("dup"), ..Default::default() }, vec!["dup-ts"]),
        (LogQuery { pattern: pat("\"msg 1\""), start_ms: Some(1000), ..Default::default() }, vec!["msg 1"]),
        (LogQuery { pattern: pat("msg 1"), ..Default::default() }, vec!["msg 1"]),
        (LogQuery { pattern: pat("1"), ..Default::default() }, vec!["msg 1"]),
        (LogQuery { pattern: pat("msg -\"msg 1\" -2 -3 -4 -5 -6 -7 -8"), ..Default::default() }, vec!["msg 0", "msg 9"]),
        (LogQuery { pattern: pat("-msg"), ..Default::default() }, vec!["early", "dup-ts"]),
        (LogQuery { pattern: pat("MSG"), ..Default::default() }, vec![]),
        (LogQuery { start_ms: Some(2000), end_ms: Some(1000), ..Default::default() }, vec![]),
    ];
    for (query, expected) in cases {
        assert_eq!(messages(&t.filter(A, g, &query).unwrap()), expected, "{query:?}");
    }

    // Paging: every event once, in order.
    let (paged, pages) = all_pages(&t, g, LogQuery { limit: 5, ..Default::default() });
    assert_eq!((paged, pages), (all.events.clone(), 3));
    let (paged, _) = all_pages(&t, g, LogQuery { limit: 2, streams: Streams::Named(vec!["even".into()]), ..Default::default() });
    assert_eq!(paged.len(), 6);
    assert!(paged.iter().all(|e| e.stream == "even"));
    let (paged, _) = all_pages(&t, g, LogQuery { limit: 1, pattern: pat("msg"), start_ms: Some(1003), ..Default::default() });
    assert_eq!(paged.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["msg 3", "msg 4", "msg 5", "msg 6", "msg 7", "msg 8", "msg 9"]);
    let garbage = LogQuery { next_token: Some("garbage".into()), ..Default::default() };
    assert!(matches!(t.filter(A, g, &garbage), Err(LogsError::InvalidNextToken)));
    let past_the_end = LogQuery { next_token: Some(make_token(i64::MAX, u64::MAX)), ..Default::default() };
    assert_eq!(t.filter(A, g, &past_the_end).unwrap(), LogPage::default());

    // Accounts and groups are apart.
    assert_eq!(messages(&t.filter(B, g, &LogQuery::default()).unwrap()), ["other account"]);
    assert!(t.filter("333333333333", g, &LogQuery::default()).unwrap().events.is_empty());
    assert_eq!(messages(&t.filter(A, "/aws/lambda/f2", &LogQuery::default()).unwrap()), ["other group"]);
    assert!(t.filter(A, "/aws/lambda/", &LogQuery::default()).unwrap().events.is_empty());

    // The streams' statistics.
    let streams = t.streams(A, g).unwrap();
    assert_eq!(streams.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["even", "odd"]);
    let odd = &streams[1];
    assert_eq!((odd.first_event_ms, odd.last_event_ms, odd.event_count), (999, 1009, 6));
    assert_eq!(odd.stored_bytes, 5 * 5 + "early".len() as u64);

    // Deleting a group leaves the others.
    t.delete_group(A, g).unwrap();
    assert!(t.filter(A, g, &LogQuery::default()).unwrap().events.is_empty());
    assert!(t.streams(A, g).unwrap().is_empty());
    assert!(!t.has_group(A, g).unwrap());
    assert_eq!(t.groups(A).unwrap().len(), 1);
    assert_eq!(t.filter(B, g, &LogQuery::default()).unwrap().events.len(), 1);
}

#[test]
fn describe_groups_and_streams_with_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let clock = clock();
    runtime().block_on(async {
        let (lines, receiver) = mpsc::channel(64);
        let logs = Logs::start(store, clock.clone(), DEFAULT_MAX_GROUP_BYTES, receiver).unwrap();
        for (account, group, stream, message) in [
            (A, "/aws/lambda/alpha", "2026/01/01/[$LATEST]a", "one\n"),
            (A, "/aws/lambda/alpha", "2026/01/01/[$LATEST]b", "two\n"),
            (A, "/aws/lambda/alpha", "2026/01/02/[$LATEST]c", "three\n"),
            (A, "/aws/lambda/alphabet", "2026/01/01/[1]a", "four\n"),
            (A, "/aws/lambda/beta", "s", "five\n"),
            (A, "/custom", "s", "six\n"),
            (B, "/aws/lambda/alpha", "s", "another account's\n"),
        ] {
            lines.send(batch(account, group, stream, &[(1, message)])).await.unwrap();
        }
        logs.written().await;
        let (a, b) = (account(A), account(B));
        let groups = |account: &AccountId, prefix: &str, limit: usize| -> Vec<String> {
            let query = GroupsQuery { prefix: prefix.into(), limit, next_token: None };
            logs.groups(account, &query).unwrap().groups.into_iter().map(|g| g.name).collect()
        };
        assert_eq!(groups(&a, "", 50), ["/aws/lambda/alpha", "/aws/lambda/alphabet", "/aws/lambda/beta", "/custom"]);
        assert_eq!(groups(&a, "/aws/lambda/alpha", 50), ["/aws/lambda/alpha", "/aws/lambda/alphabet"]);
        assert_eq!(groups(&a, "/aws/lambda/", 2), ["/aws/lambda/alpha", "/aws/lambda/alphabet"]);
        assert_eq!(groups(&a, "/nothing", 50), Vec::<String>::new());
        assert_eq!(groups(&b, "", 50), ["/aws/lambda/alpha"]);
        let alpha = &logs.groups(&a, &GroupsQuery { prefix: "/aws/lambda/alpha".into(), limit: 1, next_token: None }).unwrap().groups[0];
        assert_eq!((alpha.event_count, alpha.stored_bytes), (3, "one\ntwo\nthree\n".len() as u64));
        assert_eq!(alpha.creation_ms, clock.now_ms() as i64);

        let streams = |group: &str, prefix: &str, limit: usize| -> Vec<String> {
            let query = StreamsQuery { prefix: prefix.into(), limit, ..Default::default() };
            logs.streams(&a, group, &query).unwrap().streams.into_iter().map(|s| s.name).collect()
        };
        let all = ["2026/01/01/[$LATEST]a", "2026/01/01/[$LATEST]b", "2026/01/02/[$LATEST]c"];
        assert_eq!(streams("/aws/lambda/alpha", "", 50), all, "not the streams of /aws/lambda/alphabet");
        assert_eq!(streams("/aws/lambda/alpha", "2026/01/01/", 50), all[..2]);
        assert_eq!(streams("/aws/lambda/alpha", "", 1), all[..1]);
        assert_eq!(streams("/aws/lambda/alpha", "2027", 50), Vec::<String>::new());
        assert_eq!(streams("/aws/lambda/none", "", 50), Vec::<String>::new());
        // By the last event's time, newest first, a page at a time.
        lines.send(batch(A, "/aws/lambda/alpha", "2026/01/01/[$LATEST]a", &[(9, "latest\n")])).await.unwrap();
        lines.send(batch(A, "/aws/lambda/alpha", "2026/01/02/[$LATEST]c", &[(5, "later\n")])).await.unwrap();
        logs.written().await;
        let mut query = StreamsQuery { order: StreamOrder::LastEventTime, descending: true, limit: 2, ..Default::default() };
        let first = logs.streams(&a, "/aws/lambda/alpha", &query).unwrap();
        assert_eq!(first.streams.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), [all[0], all[2]]);
        query.next_token = first.next_token;
        let second = logs.streams(&a, "/aws/lambda/alpha", &query).unwrap();
        assert_eq!((second.streams.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), second.next_token), (vec![all[1]], None));
        let descending = StreamsQuery { descending: true, ..Default::default() };
        let names = logs.streams(&a, "/aws/lambda/alpha", &descending).unwrap().streams;
        assert_eq!(names.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), [all[2], all[1], all[0]]);
        let garbage = GroupsQuery { next_token: Some("garbage".into()), ..Default::default() };
        assert!(matches!(logs.groups(&a, &garbage), Err(LogsError::InvalidNextToken)));

        assert!(logs.has_group(&a, "/aws/lambda/alpha").unwrap());
        assert!(logs.has_group(&a, "/custom").unwrap());
        assert!(!logs.has_group(&a, "/aws/lambda/alph").unwrap());
        assert!(!logs.has_group(&b, "/custom").unwrap());
    });
}

#[test]
fn the_cap_deletes_the_oldest_lines_of_that_function_only() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 64 * 1024;
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let t = Tables::open(store.clone(), clock(), cap).unwrap();
    let (g, quiet) = ("/aws/lambda/loud", "/aws/lambda/quiet");
    t.append(&[batch(A, quiet, "s", &[(1, "kept\n")]), batch(B, g, "s", &[(1, "another account's\n")])]).unwrap();
    let line = "x".repeat(999) + "\n";
    let size = |group: &str| {
        let info = t.groups(A).unwrap().into_iter().find(|i| i.name == group).unwrap();
        charged(info.stored_bytes, info.event_count)
    };
    let mut ts = 0;
    for round in 0..200 {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for i in 0..10 {
            ts += 1;
            if i % 2 == 0 { a.push((ts, line.as_str())) } else { b.push((ts, line.as_str())) }
        }
        t.append(&[batch(A, g, "a", &a), batch(A, g, "b", &b)]).unwrap();
        assert!(size(g) <= cap, "round {round}: {}", size(g));
    }
    // The newest events are there, the oldest not (nothing in between is
    // missing); the statistics match what is stored.
    let page = t.filter(A, g, &LogQuery::default()).unwrap();
    let kept: Vec<i64> = page.events.iter().map(|e| e.timestamp_ms).collect();
    assert_eq!(*kept.last().unwrap(), ts);
    assert!(kept[0] > 1000);
    assert_eq!(kept, (kept[0]..=ts).collect::<Vec<_>>(), "oldest first, no gaps");
    let streams = t.streams(A, g).unwrap();
    assert_eq!(streams.iter().map(|s| s.event_count).sum::<u64>(), page.events.len() as u64);
    assert_eq!(streams.iter().map(|s| s.stored_bytes).sum::<u64>(), (page.events.len() * line.len()) as u64);
    for stream in &streams {
        let first = page.events.iter().find(|e| e.stream == stream.name).unwrap().timestamp_ms;
        assert!(stream.first_event_ms <= first && first - stream.first_event_ms <= 2, "{stream:?} {first}");
    }
    // Another function's group, and the same group of another account, are untouched.
    assert_eq!(messages(&t.filter(A, quiet, &LogQuery::default()).unwrap()), ["kept\n"]);
    assert_eq!(messages(&t.filter(B, g, &LogQuery::default()).unwrap()), ["another account's\n"]);
    // A single append larger than the cap keeps only what fits, its newest.
    let big: Vec<(i64, &str)> = (0..500).map(|i| (ts + 1 + i, line.as_str())).collect();
    t.append(&[batch(A, g, "c", &big)]).unwrap();
    assert!(size(g) <= cap);
    let after = t.filter(A, g, &LogQuery::default()).unwrap();
    assert!(after.events.iter().all(|e| e.stream == "c"), "the older streams went first");
    assert_eq!(after.events.last().unwrap().timestamp_ms, ts + 500);
    assert_eq!(t.streams(A, g).unwrap().iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["c"], "empty streams go");
    // Floods again and again: the database file stops growing.
    let file = dir.path().join("ignis.redb");
    let mut sizes = Vec::new();
    ts += 500;
    for _ in 0..6 {
        for _ in 0..100 {
            ts += 1;
            t.append(&[batch(A, g, "d", &vec![(ts, line.as_str()); 20])]).unwrap();
        }
        store.flush().unwrap();
        sizes.push(std::fs::metadata(&file).unwrap().len());
    }
    assert!(sizes[5] <= sizes[1], "the file grew: {sizes:?}");
}

#[test]
fn a_reopened_store_has_the_logs_and_their_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let g = "/aws/lambda/f";
    // 228 bytes an event as charged: 43 fit a cap of 10,000, the 44th does not.
    let (line, cap) = ("y".repeat(99) + "\n", 10_000);
    assert_eq!((charged(43 * 100, 43), charged(44 * 100, 44)), (9_804, 10_032));
    let first = {
        let store = Arc::new(Store::open(dir.path()).unwrap());
        // The runtime's end stops the writer, which commits what it was handed.
        runtime().block_on(async {
            let (lines, receiver) = mpsc::channel(64);
            let logs = Logs::start(store, clock.clone(), cap, receiver).unwrap();
            for i in 0..43 {
                lines.send(batch(A, g, "s", &[(i, line.as_str())])).await.unwrap();
            }
            logs.written().await;
            logs.filter(&account(A), g, &LogQuery::default()).unwrap()
        })
    };
    assert_eq!(first.events.len(), 43);
    let store = Arc::new(Store::open(dir.path()).unwrap());
    runtime().block_on(async {
        let (lines, receiver) = mpsc::channel(64);
        let logs = Logs::start(store, clock.clone(), cap, receiver).unwrap();
        assert_eq!(logs.filter(&account(A), g, &LogQuery::default()).unwrap(), first);
        // The cap counts what was stored before: the 44th event trims the
        // group to 8,750 bytes (the oldest 6 go); no id is reused.
        lines.send(batch(A, g, "s", &[(43, line.as_str())])).await.unwrap();
        logs.written().await;
        let after = logs.filter(&account(A), g, &LogQuery::default()).unwrap();
        assert_eq!(after.events.len(), 38);
        assert_eq!(after.events[..37], first.events[6..]);
        assert!(after.events[37].event_id > first.events[42].event_id);
    });
}

#[test]
fn event_tokens() {
    use crate::tables::Cursor;
    for cursor in [Cursor::Forward((-5, 0)), Cursor::Backward((i64::MAX, u64::MAX)), Cursor::Forward((i64::MIN, 7))] {
        assert_eq!(Cursor::parse(&cursor.token()).unwrap(), cursor);
    }
    for bad in ["", "f", "f/1", "f/1/2/3", "x/1/2", "f/a/2", "b/1/-2", "f1:1:2"] {
        assert!(matches!(Cursor::parse(bad), Err(LogsError::InvalidNextToken)), "{bad:?}");
    }
}

/// Every page of `query` in its first direction (from no token), following
/// `forward` tokens or backward ones, until a token comes back unchanged.
fn walk(t: &Tables, g: &str, query: &EventsQuery, forward: bool) -> Vec<Vec<String>> {
    let mut query = query.clone();
    let mut pages = Vec::new();
    for _ in 0..100 {
        let page = t.events(A, g, &query).unwrap();
        let next = if forward { page.next_forward_token } else { page.next_backward_token };
        if page.events.is_empty() {
            assert_eq!(query.next_token.as_ref(), Some(&next), "an empty page gives its token back");
            return pages;
        }
        pages.push(page.events.into_iter().map(|e| e.message).collect());
        query.next_token = Some(next);
    }
    panic!("paging does not end");
}

#[test]
fn get_log_events_pages_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let t = tables(dir.path(), clock(), DEFAULT_MAX_GROUP_BYTES);
    let g = "/aws/lambda/f";
    let lines: Vec<(i64, String)> = (0..7).map(|i| (1000 + i, format!("m{i}"))).collect();
    let lines: Vec<(i64, &str)> = lines.iter().map(|(ts, m)| (*ts, m.as_str())).collect();
    t.append(&[batch(A, g, "s", &lines), batch(A, g, "other", &[(1003, "o")]), batch(B, g, "s", &[(1003, "b")])]).unwrap();
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // The newest page by default, the oldest from the head; either way oldest first.
    let newest = t.events(A, g, &EventsQuery { stream: "s".into(), limit: 3, ..Default::default() }).unwrap();
    assert_eq!(newest.events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["m4", "m5", "m6"]);
    let head = EventsQuery { stream: "s".into(), limit: 3, start_from_head: true, ..Default::default() };
    let oldest = t.events(A, g, &head).unwrap();
    assert_eq!(oldest.events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["m0", "m1", "m2"]);

    // Forward from the head, backward from the newest page: every event once.
    let forward = walk(&t, g, &head, true);
    assert_eq!(forward, vec![strings(&["m0", "m1", "m2"]), strings(&["m3", "m4", "m5"]), strings(&["m6"])]);
    let back = walk(&t, g, &EventsQuery { stream: "s".into(), limit: 3, ..Default::default() }, false);
    assert_eq!(back, vec![strings(&["m4", "m5", "m6"]), strings(&["m1", "m2", "m3"]), strings(&["m0"])]);

    // Turning round: back from the second forward page is the first page.
    let second = t.events(A, g, &EventsQuery { next_token: Some(oldest.next_forward_token.clone()), ..head.clone() }).unwrap();
    let turned = EventsQuery { next_token: Some(second.next_backward_token), ..head.clone() };
    assert_eq!(t.events(A, g, &turned).unwrap().events, oldest.events);
    // The newest page's forward token finds nothing yet, then what came since.
    let after_newest = EventsQuery { stream: "s".into(), next_token: Some(newest.next_forward_token.clone()), ..Default::default() };
    assert_eq!(t.events(A, g, &after_newest).unwrap().next_forward_token, newest.next_forward_token);
    t.append(&[batch(A, g, "s", &[(2000, "late")])]).unwrap();
    let more = t.events(A, g, &after_newest).unwrap();
    assert_eq!(more.events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["late"]);

    // A time range, in both directions.
    for start_from_head in [true, false] {
        let q = EventsQuery { stream: "s".into(), start_ms: Some(1002), end_ms: Some(1004), start_from_head, ..Default::default() };
        let page = t.events(A, g, &q).unwrap();
        assert_eq!(page.events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["m2", "m3", "m4"]);
    }
    // Other streams and accounts stay out; a missing stream, a bad token.
    let other = t.events(A, g, &EventsQuery { stream: "other".into(), ..Default::default() }).unwrap();
    assert_eq!(other.events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["o"]);
    let b = t.events(B, g, &EventsQuery { stream: "s".into(), ..Default::default() }).unwrap();
    assert_eq!(b.events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["b"]);
    let missing = t.events(A, g, &EventsQuery { stream: "nope".into(), ..Default::default() });
    assert!(matches!(missing, Err(LogsError::StreamNotFound)));
    let bad = t.events(A, g, &EventsQuery { stream: "s".into(), next_token: Some("x".into()), ..Default::default() });
    assert!(matches!(bad, Err(LogsError::InvalidNextToken)));
}

#[test]
fn retention_expires_old_events_on_write_at_once_and_periodically() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let t = tables(dir.path(), clock.clone(), DEFAULT_MAX_GROUP_BYTES);
    let (g, other) = ("/aws/lambda/f", "/aws/lambda/g");
    const DAY: i64 = 24 * 60 * 60 * 1000;
    let now = clock.now_ms() as i64;
    assert_eq!(crate::tables::cutoff(now, 1), now - DAY);
    assert_eq!(crate::tables::cutoff(i64::MIN, 3653), i64::MIN);
    let old = [(now - 10 * DAY, "ten days old"), (now - 2 * DAY, "two days old"), (now - 1000, "new")];
    t.append(&[batch(A, g, "s", &old), batch(A, g, "t", &[(now - 10 * DAY, "old in t")]), batch(A, other, "s", &old)])
        .unwrap();
    assert_eq!(t.groups(A).unwrap()[0].retention_days, None);

    // Setting a retention deletes what it expires at once, in that group only.
    t.set_retention(A, g, Some(3)).unwrap();
    assert_eq!(t.retention(A, g).unwrap(), Some(3));
    assert_eq!(messages(&t.filter(A, g, &LogQuery::default()).unwrap()), ["two days old", "new"]);
    assert_eq!(t.streams(A, g).unwrap().iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["s"], "an emptied stream goes");
    let s = &t.streams(A, g).unwrap()[0];
    assert_eq!((s.event_count, s.stored_bytes), (2, ("two days old".len() + 3) as u64));
    assert!(s.first_event_ms <= now - 2 * DAY, "a bound on what is left");
    assert_eq!(t.filter(A, other, &LogQuery::default()).unwrap().events.len(), 3);
    assert_eq!(t.groups(A).unwrap().iter().map(|g| g.retention_days).collect::<Vec<_>>(), [Some(3), None]);

    // A write drops what has expired since, and an event stamped too far back.
    clock.advance(Duration::from_secs(2 * 24 * 60 * 60));
    t.append(&[batch(A, g, "s", &[(now - 5 * DAY, "stamped in the past"), (now, "now")])]).unwrap();
    assert_eq!(messages(&t.filter(A, g, &LogQuery::default()).unwrap()), ["new", "now"]);

    // Periodically: as the clock goes on.
    assert_eq!(t.expire().unwrap(), 0);
    clock.advance(Duration::from_secs(3 * 24 * 60 * 60));
    assert_eq!(t.expire().unwrap(), 1);
    assert!(t.filter(A, g, &LogQuery::default()).unwrap().events.is_empty());
    assert!(!t.has_group(A, g).unwrap());
    assert_eq!(t.filter(A, other, &LogQuery::default()).unwrap().events.len(), 3);
    // The group's size is measured again: the cap still holds its bytes right.
    t.append(&[batch(A, g, "s", &[(clock.now_ms() as i64, "back")])]).unwrap();
    assert_eq!(t.groups(A).unwrap()[0].stored_bytes, 4);

    // Removed: nothing expires any more; deleting the group removes its retention.
    t.set_retention(A, g, None).unwrap();
    assert_eq!(t.retention(A, g).unwrap(), None);
    t.set_retention(A, other, Some(1)).unwrap();
    t.delete_group(A, other).unwrap();
    assert_eq!(t.retention(A, other).unwrap(), None);
    assert_eq!(t.retention(B, g).unwrap(), None, "accounts are apart");
}

#[test]
fn only_cloudwatch_retentions_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    runtime().block_on(async {
        let (_lines, receiver) = mpsc::channel(1);
        let logs = Logs::start(store, clock(), DEFAULT_MAX_GROUP_BYTES, receiver).unwrap();
        let a = account(A);
        for days in 0..4000 {
            let taken = logs.put_retention(&a, "/g", days);
            assert_eq!(taken.is_ok(), RETENTION_DAYS.contains(&days), "{days}");
            if taken.is_err() {
                assert!(matches!(taken, Err(LogsError::InvalidRetention(d)) if d == days));
            }
        }
        assert_eq!(logs.retention(&a, "/g").unwrap(), Some(3653));
        logs.delete_retention(&a, "/g").unwrap();
        assert_eq!(logs.retention(&a, "/g").unwrap(), None);
    });
}
