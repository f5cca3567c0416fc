//! `Queues` over a real store in a temporary directory, with time on a
//! [`ManualClock`]: nothing here waits for real time to pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ignis_clock::{Clock, ManualClock, SharedClock};

use super::*;

const A: &str = "111111111111";
const B: &str = "222222222222";
const REGION: &str = "us-east-1";

#[test]
fn definitions_round_trip() {
    let config = QueueConfig {
        settings: Settings {
            visibility_timeout_s: 5,
            retention_s: 60,
            max_message_size: 2048,
            delay_s: 3,
            redrive: Some(Redrive { target: "arn:aws:sqs:us-east-1:111111111111:dlq".into(), max_receive_count: 4 }),
        },
        wait_s: 7,
    };
    assert_eq!(parse_definition(&definition(9, 10, 11, &config)), Some((9, 10, 11, config.clone())));
    let plain = QueueConfig::default();
    assert_eq!(parse_definition(&definition(1, 2, 3, &plain)), Some((1, 2, 3, plain)));
    assert_eq!(parse_definition(b"{}"), None);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn defaults(base: &QueueConfig, given: &HashMap<String, String>) -> Result<QueueConfig, QueueError> {
    let mut config = base.clone();
    if let Some(v) = given.get("VisibilityTimeout") {
        config.settings.visibility_timeout_s = v.parse().map_err(|_| QueueError::InvalidAttributeValue(v.clone()))?;
    }
    Ok(config)
}

/// A store in a temporary directory, a manual clock, and queues over both.
struct World {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    clock: Arc<ManualClock>,
    queues: Arc<Queues>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let clock = ManualClock::at_epoch_2026();
        let shared: SharedClock = clock.clone();
        let queues = Queues::load(store.clone(), REGION.into(), shared).unwrap();
        World { dir, store, clock, queues }
    }

    /// The queues as a restarted server loads them (the same store, a new
    /// process epoch), once the old ones are gone (with what their writer held).
    fn reloaded(self) -> World {
        let World { dir, store, clock, queues } = self;
        drop(queues);
        let shared: SharedClock = clock.clone();
        let queues = Queues::load(store.clone(), REGION.into(), shared).unwrap();
        World { dir, store, clock, queues }
    }

    async fn queue(&self, name: &str, settings: impl FnOnce(&mut Settings)) -> QueueRef {
        let queue = self.queues.create(A, name, &HashMap::new(), defaults).await.unwrap();
        let mut config = queue.config();
        settings(&mut config.settings);
        self.queues.set_attributes(&queue, |_| Ok(config)).await.unwrap();
        queue
    }

    async fn send(&self, queue: &QueueRef, body: &str) -> String {
        self.queues.send(A, &queue.arn, body.into()).await.unwrap()
    }

    async fn receive(&self, queue: &QueueRef, visibility: Option<u32>) -> Vec<Message> {
        self.queues.receive_from(queue, 10, visibility, Duration::ZERO).await.unwrap()
    }

    fn stored(&self, queue: &QueueRef) -> Vec<String> {
        RedbQueueStorage::open(self.store.clone()).unwrap().messages(queue.uid).unwrap().messages.into_iter().map(|m| m.body).collect()
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

fn bodies(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.body.as_str()).collect()
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn the_rust_api_by_arn() {
    let dir = tempfile::tempdir().unwrap();
    let arn = format!("arn:aws:sqs:us-east-1:{A}:jobs");
    let clock = ManualClock::at_epoch_2026();
    let shared: SharedClock = clock.clone();
    let kept = runtime().block_on(async {
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let queues = Queues::load(store, REGION.into(), shared.clone()).unwrap();
        let given = HashMap::from([("VisibilityTimeout".to_string(), "60".to_string())]);
        let queue = queues.create(A, "jobs", &given, defaults).await.unwrap();
        assert_eq!(queue.arn, arn);
        assert_eq!(queues.lookup(A, &arn).unwrap().name, "jobs");
        assert_eq!(queues.lookup(B, &arn).unwrap_err(), QueueError::DoesNotExist, "another account's queue");
        assert_eq!(queues.lookup(A, "jobs").unwrap_err(), QueueError::DoesNotExist);
        assert_eq!(queues.send(B, &arn, "x".into()).await, Err(QueueError::DoesNotExist));

        let first = queues.send(A, &arn, "one".into()).await.unwrap();
        queues.send(A, &arn, "two".into()).await.unwrap();
        let got = queues.receive(A, &arn, 10, None, Duration::ZERO).await.unwrap();
        assert_eq!(bodies(&got), ["one", "two"]);
        assert_eq!((got[0].message_id.as_str(), got[0].receive_count), (first.as_str(), 1));
        queues.delete(A, &arn, &got[0].receipt_handle).await.unwrap();
        assert_eq!(
            queues.delete(A, &arn, &got[0].receipt_handle).await,
            Err(QueueError::ReceiptHandleIsInvalid(got[0].receipt_handle.clone()))
        );
        queues.change_visibility(A, &arn, &got[1].receipt_handle, 0).unwrap();
        assert_eq!(queues.change_visibility(A, &arn, "forged", 0), Err(QueueError::ReceiptHandleIsInvalid("forged".into())));

        // A waiting receive is answered by a send.
        queues.receive(A, &arn, 10, None, Duration::ZERO).await.unwrap();
        let waiting = {
            let queues = queues.clone();
            let arn = arn.clone();
            tokio::spawn(async move { queues.receive(A, &arn, 1, None, Duration::from_secs(20)).await })
        };
        assert!(clock.until_sleepers(1, 1000).await);
        queues.send(A, &arn, "three".into()).await.unwrap();
        let woken = waiting.await.unwrap().unwrap();
        assert_eq!(woken.len(), 1);
        got[1].message_id.clone()
    });
    // The runtime, the queues and with them the writer and the store are gone: reopen.
    runtime().block_on(async {
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let queues = Queues::load(store, REGION.into(), shared.clone()).unwrap();
        assert_eq!(queues.lookup(A, &arn).unwrap().config().settings.visibility_timeout_s, 60);
        let got = queues.receive(A, &arn, 10, None, Duration::ZERO).await.unwrap();
        let mut bodies = bodies(&got);
        bodies.sort();
        assert_eq!(bodies, ["three", "two"], "undeleted messages, in flight or not, are back");
        assert!(got.iter().any(|m| m.message_id == kept && m.receive_count == 3));
        let queue = queues.lookup(A, &arn).unwrap();
        queues.delete_queue(&queue).await.unwrap();
        assert_eq!(queues.send(A, &arn, "late".into()).await, Err(QueueError::DoesNotExist));
    });
}

#[test]
fn a_received_message_is_visible_again_exactly_when_its_timeout_passes() {
    runtime().block_on(async {
        let w = World::new();
        let q = w.queue("q", |s| s.visibility_timeout_s = 30).await;
        w.send(&q, "m").await;
        let first = w.receive(&q, None).await;
        assert_eq!(bodies(&first), ["m"]);
        w.advance(Duration::from_secs(30) - MS);
        assert!(w.receive(&q, None).await.is_empty(), "still in flight 1 ms before its timeout");
        w.advance(MS);
        let again = w.receive(&q, Some(5)).await;
        assert_eq!((bodies(&again), again[0].receive_count), (vec!["m"], 2));
        assert_eq!(again[0].first_receive_ms, first[0].first_receive_ms);
        // The override of 5 s holds for this receive; the old handle is stale.
        assert_eq!(
            w.queues.delete_batch(&q, &[first[0].receipt_handle.as_str()]).await.unwrap(),
            vec![Err(QueueError::ReceiptHandleIsInvalid(first[0].receipt_handle.clone()))]
        );
        w.advance(Duration::from_secs(5));
        assert_eq!(w.receive(&q, None).await[0].receive_count, 3);
    });
}

#[test]
fn delay_seconds_hold_a_message_back() {
    runtime().block_on(async {
        let w = World::new();
        let q = w.queue("q", |s| s.delay_s = 10).await;
        w.send(&q, "queue's delay").await;
        let outgoing = Outgoing { body: "own delay".into(), delay_s: Some(2), ..Outgoing::default() };
        let sent = w.queues.send_batch(&q, vec![outgoing]).await.unwrap();
        assert!(sent[0].is_ok());
        assert_eq!(w.queues.info(&q).counts.delayed, 2);
        w.advance(Duration::from_secs(2) - MS);
        assert!(w.receive(&q, None).await.is_empty());
        w.advance(MS);
        assert_eq!(bodies(&w.receive(&q, None).await), ["own delay"]);
        w.advance(Duration::from_secs(8) - MS);
        assert!(w.receive(&q, None).await.is_empty());
        w.advance(MS);
        assert_eq!(bodies(&w.receive(&q, None).await), ["queue's delay"]);
    });
}

#[test]
fn a_long_poll_is_woken_by_a_send_and_ends_at_its_wait_time() {
    runtime().block_on(async {
        let w = World::new();
        let q = w.queue("q", |_| ()).await;
        let poll = |wait_s: u64| {
            let (queues, q) = (w.queues.clone(), q.clone());
            tokio::spawn(async move { queues.receive_from(&q, 10, None, Duration::from_secs(wait_s)).await })
        };
        let start = w.clock.instant();

        // Woken by a send, with no time passing.
        let waiting = poll(20);
        assert!(w.clock.until_sleepers(1, 1000).await);
        w.send(&q, "a").await;
        assert_eq!(bodies(&waiting.await.unwrap().unwrap()), ["a"]);
        assert_eq!(w.clock.instant(), start);

        // Still waiting 1 ms before its wait time (a send then answers it) ...
        let waiting = poll(3);
        assert!(w.clock.until_sleepers(1, 1000).await);
        w.advance(Duration::from_secs(3) - MS);
        w.send(&q, "b").await;
        assert_eq!(bodies(&waiting.await.unwrap().unwrap()), ["b"]);

        // ... and ends, empty, when it passes.
        let waiting = poll(3);
        assert!(w.clock.until_sleepers(1, 1000).await);
        w.advance(Duration::from_secs(3));
        assert!(waiting.await.unwrap().unwrap().is_empty());

        // A message whose timeout passes during the wait is found by the time-driven look.
        let waiting = poll(20);
        assert!(w.clock.until_sleepers(1, 1000).await);
        w.advance(Duration::from_secs(30));
        let got = waiting.await.unwrap().unwrap();
        assert_eq!((bodies(&got), got[0].receive_count), (vec!["a", "b"], 2));

        // At most 20 s, whatever is asked.
        let waiting = poll(3600);
        assert!(w.clock.until_sleepers(1, 1000).await);
        w.advance(Duration::from_secs(u64::from(MAX_WAIT_S)));
        assert!(waiting.await.unwrap().unwrap().is_empty());
    });
}

/// The front end polls for the queue's own wait time when a receive names none.
#[test]
fn a_queues_own_wait_time_is_kept_and_a_poll_for_it_waits_that_long() {
    let w = World::new();
    let arn = runtime().block_on(async {
        let q = w.queue("q", |_| ()).await;
        let mut config = q.config();
        config.wait_s = 20;
        w.queues.set_attributes(&q, |_| Ok(config)).await.unwrap();
        assert_eq!(q.config().wait_s, 20);
        q.arn.clone()
    });
    let w = w.reloaded();
    runtime().block_on(async {
        let q = w.queues.lookup(A, &arn).unwrap();
        let wait = Duration::from_secs(u64::from(q.config().wait_s));
        assert_eq!(wait, Duration::from_secs(20), "kept across a restart");
        let poll = || {
            let (queues, q) = (w.queues.clone(), q.clone());
            tokio::spawn(async move { queues.receive_from(&q, 10, None, wait).await })
        };
        // Still waiting 1 ms before the queue's wait time (a send then answers it) ...
        let waiting = poll();
        assert!(w.clock.until_sleepers(1, 1000).await);
        w.advance(wait - MS);
        w.send(&q, "late").await;
        assert_eq!(bodies(&waiting.await.unwrap().unwrap()), ["late"]);
        // ... and ends, empty, when it passes.
        let waiting = poll();
        assert!(w.clock.until_sleepers(1, 1000).await);
        w.advance(wait);
        assert!(waiting.await.unwrap().unwrap().is_empty());
    });
}

#[test]
fn retention_drops_old_messages_from_memory_and_storage() {
    runtime().block_on(async {
        let w = World::new();
        let q = w.queue("q", |s| s.retention_s = 60).await;
        w.send(&q, "old").await;
        w.advance(Duration::from_secs(30));
        w.send(&q, "young").await;
        w.advance(Duration::from_secs(30) - MS);
        assert_eq!(w.queues.info(&q).counts.visible, 2);
        w.advance(MS);
        assert_eq!(w.queues.info(&q).counts.visible, 1);
        assert_eq!(bodies(&w.receive(&q, None).await), ["young"]);
        // The expiry's delete rides along; a send waits for its own commit, which comes after.
        w.send(&q, "flush").await;
        assert_eq!(w.stored(&q), ["young", "flush"]);
    });
}

#[test]
fn a_message_received_more_than_max_receive_count_times_moves_to_the_dead_letter_queue() {
    runtime().block_on(async {
        let w = World::new();
        let dlq = w.queue("dlq", |_| ()).await;
        let target = dlq.arn.clone();
        let q = w
            .queue("q", |s| {
                s.visibility_timeout_s = 1;
                s.redrive = Some(Redrive { target, max_receive_count: 2 });
            })
            .await;
        let id = w.send(&q, "poison").await;
        for count in 1..=2 {
            let got = w.receive(&q, None).await;
            assert_eq!((bodies(&got), got[0].receive_count), (vec!["poison"], count));
            w.advance(Duration::from_secs(1));
        }
        assert!(w.receive(&q, None).await.is_empty(), "the third receive moves it instead");
        let moved = w.receive(&dlq, None).await;
        assert_eq!(bodies(&moved), ["poison"]);
        assert_eq!(moved[0].message_id, id, "a dead letter keeps its id");
        w.send(&dlq, "flush").await;
        assert!(w.stored(&q).is_empty());
        assert_eq!(w.stored(&dlq), ["poison", "flush"]);
    });
}

#[test]
fn purge_removes_every_message_durably() {
    runtime().block_on(async {
        let w = World::new();
        let q = w.queue("q", |_| ()).await;
        for body in ["a", "b", "c"] {
            w.send(&q, body).await;
        }
        let in_flight = w.receive(&q, Some(100)).await;
        assert_eq!(in_flight.len(), 3);
        w.queues.purge(&q).await.unwrap();
        assert!(w.stored(&q).is_empty());
        w.advance(Duration::from_secs(100));
        assert!(w.receive(&q, None).await.is_empty());
        w.send(&q, "after").await;
        assert_eq!(bodies(&w.receive(&q, None).await), ["after"]);
    });
}

#[test]
fn receipt_handles_from_before_a_reload_are_invalid() {
    let w = World::new();
    let (q, old) = runtime().block_on(async {
        let q = w.queue("q", |_| ()).await;
        w.send(&q, "m").await;
        let old = w.receive(&q, None).await.remove(0);
        (q, old)
    });
    let w = w.reloaded();
    runtime().block_on(async {
        let q2 = w.queues.lookup(A, &q.arn).unwrap();
        let invalid = Err(QueueError::ReceiptHandleIsInvalid(old.receipt_handle.clone()));
        assert_eq!(w.queues.change_visibility_of(&q2, &old.receipt_handle, 0), invalid.clone().map(drop));
        assert_eq!(w.queues.delete(A, &q.arn, &old.receipt_handle).await, invalid);
        // In flight before, visible at once after the reload, with its receive count.
        let got = w.receive(&q2, None).await;
        assert_eq!((got[0].message_id.as_str(), got[0].receive_count), (old.message_id.as_str(), 2));
        w.queues.delete(A, &q.arn, &got[0].receipt_handle).await.unwrap();
    });
    let _ = &w.dir;
}

#[test]
fn messages_that_expired_while_stopped_are_removed_at_start() {
    let w = World::new();
    let q = runtime().block_on(async {
        let q = w.queue("old", |_| ()).await;
        w.send(&q, "fresh").await;
        let ancient = QueueMessage {
            id: 1000,
            wire_id: None,
            body: "ancient".into(),
            attributes: Vec::new(),
            sent_ms: 1,
            visible_at_ms: 1,
            receive_count: 0,
            first_receive_ms: None,
        };
        RedbQueueStorage::open(w.store.clone()).unwrap().apply(&[QueueWrite::Put { queue: q.uid, message: ancient }]).unwrap();
        q
    });
    let w = w.reloaded();
    let stored = RedbQueueStorage::open(w.store.clone()).unwrap().messages(q.uid).unwrap();
    assert_eq!(stored.messages.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["fresh"]);
    assert_eq!(stored.next_id, 1001);
}

#[test]
fn a_dead_letter_past_the_targets_retention_is_dropped() {
    let w = World::new();
    let (source, dlq) = runtime().block_on(async {
        let dlq = w.queue("short", |s| s.retention_s = 60).await;
        let target = dlq.arn.clone();
        let source = w
            .queue("source", |s| {
                s.retention_s = ignis_queue::MAX_RETENTION_S;
                s.redrive = Some(Redrive { target, max_receive_count: 1 });
            })
            .await;
        let sent_ms = w.clock.now_ms() - 120_000;
        let old = QueueMessage {
            id: 0,
            wire_id: None,
            body: "old".into(),
            attributes: Vec::new(),
            sent_ms,
            visible_at_ms: sent_ms,
            receive_count: 1,
            first_receive_ms: Some(sent_ms),
        };
        RedbQueueStorage::open(w.store.clone()).unwrap().apply(&[QueueWrite::Put { queue: source.uid, message: old }]).unwrap();
        (source, dlq)
    });
    let w = w.reloaded();
    runtime().block_on(async {
        assert!(w.queues.receive(A, &source.arn, 10, None, Duration::ZERO).await.unwrap().is_empty());
        assert!(w.queues.receive(A, &dlq.arn, 10, None, Duration::ZERO).await.unwrap().is_empty());
        w.queues.send(A, &source.arn, "flush".into()).await.unwrap();
        assert_eq!(w.stored(&source), ["flush"]);
    });
}
