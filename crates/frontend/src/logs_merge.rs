//! CloudWatch Logs' answers of a cluster's front ends put together (pure): each front end keeps the logs of the
//! invocations it ran, so a read is asked of every front end and their answers are merged into one page.
//!
//! - [`Tokens`]: the `nextToken` of a merged `FilterLogEvents` or `GetLogEvents` page, each front end's own token
//!   by its address (`c1.` and the map's JSON in URL-safe base64). A front end absent from the map is read from
//!   the start, and so is one mapped to `""` (read, none of its events taken yet); one mapped to `null` has
//!   nothing more.
//! - [`filter_events`]: the first `limit` events of every front end's page, in timestamp order; each front end's
//!   next token continues after the last of its events taken.
//! - [`log_groups`], [`log_streams`]: the union of the front ends' pages (a group or stream on several front ends
//!   once, its sizes added), in the listing's order, `limit` of them; their tokens name a position in the listing,
//!   which every front end understands alike.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

const PREFIX: &str = "c1.";

/// Each front end's token of a merged page, by address (`None`: nothing more there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tokens(pub BTreeMap<String, Option<String>>);

impl Tokens {
    pub fn encode(&self) -> String {
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json!(self.0).to_string()))
    }

    /// A token [`Tokens::encode`] made; `None` for any other.
    pub fn decode(token: &str) -> Option<Tokens> {
        let json = URL_SAFE_NO_PAD.decode(token.strip_prefix(PREFIX)?).ok()?;
        serde_json::from_slice(&json).ok().map(Tokens)
    }

    /// Whether the front end at `address` may have more (it was not read yet, or gave a token).
    pub fn open(&self, address: &str) -> bool {
        !matches!(self.0.get(address), Some(None))
    }

    /// The token the front end at `address` continues from (`None`: from the start).
    pub fn of(&self, address: &str) -> Option<String> {
        self.0.get(address).cloned().flatten().filter(|token| !token.is_empty())
    }

    /// The merged page's token: `None` when no front end has more.
    pub fn next(self) -> Option<String> {
        self.0.values().any(Option::is_some).then(|| self.encode())
    }
}

/// One front end's `FilterLogEvents` answer.
pub(crate) struct FilterPage {
    pub address: String,
    pub answer: Value,
}

/// The first `limit` events of `pages` in (timestamp, event id, front end) order, and each front end's next token:
/// its own when every event of its page was taken, else the one after the last taken (`after`, from an event id),
/// else the one it was read with (`asked`; `""` if none). `None` in the map: nothing more there.
pub(crate) fn filter_events(
    pages: Vec<FilterPage>,
    limit: usize,
    asked: &Tokens,
    after: impl Fn(&str) -> Option<String>,
) -> (Vec<Value>, Tokens) {
    let mut all: Vec<(i64, String, usize, Value)> = Vec::new();
    let mut counts = vec![0; pages.len()];
    for (i, page) in pages.iter().enumerate() {
        for event in page.answer["events"].as_array().into_iter().flatten() {
            let id = event["eventId"].as_str().unwrap_or_default().to_string();
            all.push((event["timestamp"].as_i64().unwrap_or(0), id, i, event.clone()));
            counts[i] += 1;
        }
    }
    all.sort_by(|a, b| (a.0, &a.1, &pages[a.2].address).cmp(&(b.0, &b.1, &pages[b.2].address)));
    all.truncate(limit);
    let mut taken = vec![0; pages.len()];
    let mut last: Vec<Option<&str>> = vec![None; pages.len()];
    for (_, id, i, _) in &all {
        taken[*i] += 1;
        last[*i] = Some(id);
    }
    let mut tokens = asked.clone();
    for (i, page) in pages.iter().enumerate() {
        let token = if taken[i] == counts[i] {
            page.answer["nextToken"].as_str().map(str::to_string)
        } else if let Some(id) = last[i] {
            after(id)
        } else {
            Some(asked.of(&page.address).unwrap_or_default())
        };
        tokens.0.insert(page.address.clone(), token);
    }
    (all.into_iter().map(|(.., event)| event).collect(), tokens)
}

/// How a listing is ordered: by name, or by a number field then the name; either way up.
pub(crate) struct Order {
    pub number: Option<&'static str>,
    pub descending: bool,
}

fn key<'a>(item: &'a Value, name: &str, order: &Order) -> (i64, &'a str) {
    let number = order.number.map_or(0, |field| item[field].as_i64().unwrap_or(0));
    (number, item[name].as_str().unwrap_or_default())
}

/// The union of the front ends' pages of a listing (`list` names the answer's array, `name` its items' names);
/// items named alike become one (`combine`); `limit` of them in `order`, and whether more follow (a page said so,
/// or more were merged than fit).
fn union(
    answers: &[Value],
    list: &str,
    name: &str,
    order: &Order,
    limit: usize,
    combine: fn(&mut Value, &Value),
) -> (Vec<Value>, bool) {
    let mut by_name: BTreeMap<String, Value> = BTreeMap::new();
    for item in answers.iter().flat_map(|answer| answer[list].as_array().into_iter().flatten()) {
        let Some(item_name) = item[name].as_str() else { continue };
        match by_name.get_mut(item_name) {
            Some(merged) => combine(merged, item),
            None => {
                by_name.insert(item_name.to_string(), item.clone());
            }
        }
    }
    let mut items: Vec<Value> = by_name.into_values().collect();
    items.sort_by(|a, b| {
        let (a, b) = (key(a, name, order), key(b, name, order));
        if order.descending { b.cmp(&a) } else { a.cmp(&b) }
    });
    let more = items.len() > limit || answers.iter().any(|answer| answer["nextToken"].is_string());
    items.truncate(limit);
    (items, more)
}

fn add(merged: &mut Value, item: &Value, field: &str) {
    merged[field] = json!(merged[field].as_u64().unwrap_or(0).saturating_add(item[field].as_u64().unwrap_or(0)));
}

fn least(merged: &mut Value, item: &Value, field: &str) {
    if let (Some(a), Some(b)) = (merged[field].as_i64(), item[field].as_i64()) {
        merged[field] = json!(a.min(b));
    }
}

fn most(merged: &mut Value, item: &Value, field: &str) {
    if let (Some(a), Some(b)) = (merged[field].as_i64(), item[field].as_i64()) {
        merged[field] = json!(a.max(b));
    }
}

/// `DescribeLogGroups`' answers merged: `limit` groups by name, and the token after the last (`token` makes it
/// from a position) if more follow.
pub(crate) fn log_groups(answers: &[Value], limit: usize, token: impl Fn(i64, &str) -> String) -> Value {
    let order = Order { number: None, descending: false };
    let (groups, more) = union(answers, "logGroups", "logGroupName", &order, limit, |merged, item| {
        least(merged, item, "creationTime");
        add(merged, item, "storedBytes");
        if merged["retentionInDays"].is_null() && !item["retentionInDays"].is_null() {
            merged["retentionInDays"] = item["retentionInDays"].clone();
        }
    });
    page("logGroups", groups, more, "logGroupName", &order, token)
}

/// `DescribeLogStreams`' answers merged, in `order`: as [`log_groups`].
pub(crate) fn log_streams(answers: &[Value], order: &Order, limit: usize, token: impl Fn(i64, &str) -> String) -> Value {
    let (streams, more) = union(answers, "logStreams", "logStreamName", order, limit, |merged, item| {
        least(merged, item, "creationTime");
        least(merged, item, "firstEventTimestamp");
        most(merged, item, "lastEventTimestamp");
        most(merged, item, "lastIngestionTime");
        add(merged, item, "storedBytes");
    });
    page("logStreams", streams, more, "logStreamName", order, token)
}

fn page(list: &str, items: Vec<Value>, more: bool, name: &str, order: &Order, token: impl Fn(i64, &str) -> String) -> Value {
    let next = items.last().filter(|_| more).map(|last| {
        let (number, last_name) = key(last, name, order);
        token(number, last_name)
    });
    let mut body = json!({ list: items });
    if let Some(next) = next {
        body["nextToken"] = json!(next);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ts: i64, id: &str) -> Value {
        json!({ "timestamp": ts, "eventId": id, "message": id })
    }

    fn filter_page(address: &str, events: Vec<Value>, next: Option<&str>) -> FilterPage {
        let mut answer = json!({ "events": events });
        if let Some(next) = next {
            answer["nextToken"] = json!(next);
        }
        FilterPage { address: address.into(), answer }
    }

    fn after(id: &str) -> Option<String> {
        Some(format!("after-{id}"))
    }

    fn ids(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["eventId"].as_str().unwrap()).collect()
    }

    #[test]
    fn tokens_round_trip_and_refuse_what_they_did_not_make() {
        let tokens = Tokens([("a:1".to_string(), Some("f1:3:4".to_string())), ("b:2".to_string(), None)].into());
        assert_eq!(Tokens::decode(&tokens.encode()), Some(tokens.clone()));
        assert!(tokens.open("a:1") && !tokens.open("b:2") && tokens.open("c:3"));
        assert_eq!((tokens.of("a:1"), tokens.of("b:2"), tokens.of("c:3")), (Some("f1:3:4".into()), None, None));
        assert_eq!(tokens.clone().next(), Some(tokens.encode()));
        assert_eq!(Tokens([("b:2".to_string(), None)].into()).next(), None);
        for bad in ["", "f1:3:4", "c1.", "c1.!!", "c1.e30x", &format!("c1.{}", URL_SAFE_NO_PAD.encode("[1]"))] {
            assert_eq!(Tokens::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn filtered_events_interleave_by_time_and_each_front_end_continues_after_what_was_taken() {
        let pages = vec![
            filter_page("a", vec![event(1, "a1"), event(3, "a3"), event(5, "a5")], Some("a-more")),
            filter_page("b", vec![event(2, "b2"), event(4, "b4")], None),
            filter_page("c", vec![event(9, "c9")], Some("c-more")),
        ];
        let (events, tokens) = filter_events(pages, 4, &Tokens::default(), after);
        assert_eq!(ids(&events), ["a1", "b2", "a3", "b4"]);
        // a: partly taken, continues after a3; b: all taken, nothing more; c: none taken, read again from the start.
        let expected = [("a".into(), Some("after-a3".into())), ("b".into(), None), ("c".into(), Some(String::new()))];
        assert_eq!(tokens.0, BTreeMap::from(expected));
        assert_eq!(tokens.of("c"), None);
        assert!(tokens.clone().next().is_some());
        // Everything fits: each front end's own token.
        let pages = vec![filter_page("a", vec![event(1, "a1")], Some("a-more")), filter_page("b", vec![], None)];
        let (events, tokens) = filter_events(pages, 10, &Tokens::default(), after);
        assert_eq!(ids(&events), ["a1"]);
        assert_eq!(tokens.0, BTreeMap::from([("a".into(), Some("a-more".into())), ("b".into(), None)]));
        // A front end none of whose events were taken keeps the token it was read with.
        let asked = Tokens([("a".to_string(), Some("a-was".to_string()))].into());
        let pages = vec![filter_page("a", vec![event(7, "a7")], None), filter_page("b", vec![event(1, "b1")], Some("b-more"))];
        let (events, tokens) = filter_events(pages, 1, &asked, after);
        assert_eq!(ids(&events), ["b1"]);
        assert_eq!(tokens.0, BTreeMap::from([("a".into(), Some("a-was".into())), ("b".into(), Some("b-more".into()))]));
    }

    #[test]
    fn paging_a_merged_filter_gives_every_event_once_in_order() {
        // Three front ends' events; each "front end" pages its own list by position, as the log service does.
        let stores: Vec<(&str, Vec<i64>)> = vec![("a", vec![1, 4, 4, 9, 12]), ("b", vec![2, 3, 4, 10]), ("c", vec![])];
        let id = |address: &str, i: usize| format!("{address}{i:03}");
        for limit in 1..=6 {
            for local_limit in 1..=6 {
                let mut tokens = Tokens::default();
                let mut seen = Vec::new();
                for _ in 0..100 {
                    let pages = stores
                        .iter()
                        .filter(|(address, _)| tokens.open(address))
                        .map(|(address, times)| {
                            let from: usize = tokens.of(address).map_or(0, |t| t.parse().unwrap());
                            let end = (from + local_limit).min(times.len());
                            let events = (from..end).map(|i| event(times[i], &id(address, i))).collect();
                            filter_page(address, events, (end < times.len()).then(|| end.to_string()).as_deref())
                        })
                        .collect();
                    let next = |event_id: &str| Some((event_id[1..].parse::<usize>().unwrap() + 1).to_string());
                    let (events, next_tokens) = filter_events(pages, limit, &tokens, next);
                    assert!(events.len() <= limit);
                    seen.extend(events.iter().map(|e| e["eventId"].as_str().unwrap().to_string()));
                    match next_tokens.next() {
                        Some(token) => tokens = Tokens::decode(&token).unwrap(),
                        None => break,
                    }
                }
                let mut expected: Vec<String> =
                    stores.iter().flat_map(|(address, times)| (0..times.len()).map(|i| id(address, i))).collect();
                let mut sorted = seen.clone();
                sorted.sort();
                expected.sort();
                assert_eq!(sorted, expected, "limit {limit}/{local_limit}: each event once");
            }
        }
    }

    fn position(number: i64, name: &str) -> String {
        format!("{number}/{name}")
    }

    #[test]
    fn groups_on_several_front_ends_show_once_with_their_sizes_added() {
        let a = json!({ "logGroups": [
            { "logGroupName": "/aws/lambda/f", "creationTime": 5, "storedBytes": 10 },
            { "logGroupName": "/aws/lambda/h", "creationTime": 1, "storedBytes": 1 },
        ], "nextToken": "x" });
        let b = json!({ "logGroups": [
            { "logGroupName": "/aws/lambda/f", "creationTime": 3, "storedBytes": 7, "retentionInDays": 7 },
            { "logGroupName": "/aws/lambda/g", "creationTime": 9, "storedBytes": 2 },
        ] });
        let merged = log_groups(&[a.clone(), b.clone()], 2, position);
        assert_eq!(
            merged,
            json!({ "logGroups": [
                { "logGroupName": "/aws/lambda/f", "creationTime": 3, "storedBytes": 17, "retentionInDays": 7 },
                { "logGroupName": "/aws/lambda/g", "creationTime": 9, "storedBytes": 2 },
            ], "nextToken": "0//aws/lambda/g" })
        );
        let all = log_groups(&[a.clone(), b], 50, position);
        assert_eq!(all["logGroups"].as_array().unwrap().len(), 3);
        assert_eq!(all["nextToken"], "0//aws/lambda/h", "a front end said more follow");
        let a_alone = json!({ "logGroups": a["logGroups"] });
        assert_eq!(log_groups(&[a_alone], 50, position).get("nextToken"), None);
    }

    #[test]
    fn streams_merge_in_either_order() {
        let a = json!({ "logStreams": [
            { "logStreamName": "s1", "creationTime": 4, "firstEventTimestamp": 4, "lastEventTimestamp": 8, "lastIngestionTime": 9, "storedBytes": 1 },
            { "logStreamName": "s2", "creationTime": 1, "firstEventTimestamp": 1, "lastEventTimestamp": 2, "lastIngestionTime": 2, "storedBytes": 1 },
        ] });
        let b = json!({ "logStreams": [
            { "logStreamName": "s1", "creationTime": 2, "firstEventTimestamp": 2, "lastEventTimestamp": 3, "lastIngestionTime": 12, "storedBytes": 5 },
            { "logStreamName": "s3", "creationTime": 5, "firstEventTimestamp": 5, "lastEventTimestamp": 5, "lastIngestionTime": 6, "storedBytes": 1 },
        ] });
        let names = |v: &Value| v["logStreams"].as_array().unwrap().iter().map(|s| s["logStreamName"].as_str().unwrap().to_string()).collect::<Vec<_>>();
        let by_name = log_streams(&[a.clone(), b.clone()], &Order { number: None, descending: false }, 50, position);
        assert_eq!(names(&by_name), ["s1", "s2", "s3"]);
        assert_eq!(
            by_name["logStreams"][0],
            json!({ "logStreamName": "s1", "creationTime": 2, "firstEventTimestamp": 2, "lastEventTimestamp": 8, "lastIngestionTime": 12, "storedBytes": 6 })
        );
        let latest = Order { number: Some("lastEventTimestamp"), descending: true };
        let by_time = log_streams(&[a, b], &latest, 2, position);
        assert_eq!(names(&by_time), ["s1", "s3"]);
        assert_eq!(by_time["nextToken"], "5/s3");
    }
}
