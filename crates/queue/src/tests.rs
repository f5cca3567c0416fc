use super::*;
use std::collections::HashSet;

fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}

fn body(s: &str) -> String {
    s.to_string()
}

fn none() -> Attributes {
    Attributes::new()
}

fn with(f: impl FnOnce(&mut Settings)) -> Queue {
    let mut settings = Settings::default();
    f(&mut settings);
    Queue::new(settings).unwrap()
}

fn receive(queue: &mut Queue, max: usize, now: u64) -> Vec<Received> {
    let outcome = queue.receive(max, None, now).unwrap();
    assert!(outcome.dead_letters.is_empty());
    outcome.messages
}

fn ids(received: &[Received]) -> Vec<MessageId> {
    received.iter().map(|r| r.message_id).collect()
}

const S: u64 = 1000;

// ---- the rules, one by one -------------------------------------------------

#[test]
fn defaults_are_sqss() {
    let s = Settings::default();
    assert_eq!(
        (s.visibility_timeout_s, s.retention_s, s.max_message_size, s.delay_s, s.redrive),
        (30, 4 * 24 * 3600, 256 * 1024, 0, None)
    );
}

#[test]
fn settings_are_validated() {
    let bad = [
        Settings { visibility_timeout_s: 43_201, ..Settings::default() },
        Settings { retention_s: 59, ..Settings::default() },
        Settings { retention_s: 1_209_601, ..Settings::default() },
        Settings { max_message_size: 1023, ..Settings::default() },
        Settings { max_message_size: 1_048_577, ..Settings::default() },
        Settings { delay_s: 901, ..Settings::default() },
        Settings { redrive: Some(Redrive { target: body("dlq"), max_receive_count: 0 }), ..Settings::default() },
        Settings { redrive: Some(Redrive { target: body("dlq"), max_receive_count: 1001 }), ..Settings::default() },
    ];
    for settings in bad {
        let error = Queue::new(settings.clone()).unwrap_err();
        assert_eq!(error.code(), "InvalidAttributeValue");
        let mut queue = Queue::default();
        assert_eq!(queue.set_settings(settings), Err(error));
        assert_eq!(queue.settings(), &Settings::default());
    }
    let edges = Settings {
        visibility_timeout_s: 43_200,
        retention_s: 60,
        max_message_size: 1_048_576,
        delay_s: 900,
        redrive: Some(Redrive { target: body("dlq"), max_receive_count: 1000 }),
    };
    assert!(Queue::new(edges).is_ok());
}

#[test]
fn send_checks_size_body_and_delay() {
    let mut queue = with(|s| s.max_message_size = 1024);
    assert!(queue.send("x".repeat(1024), none(), 0).is_ok());
    assert_eq!(queue.send("x".repeat(1025), none(), 0), Err(SendError::TooLarge { size: 1025, max: 1024 }));
    let mut attributes = none();
    attributes.insert(body("name"), Attribute { data_type: body("String"), value: b"value".to_vec() });
    // 1010 + 4 + 6 + 5 = 1025
    let error = queue.send("x".repeat(1010), attributes.clone(), 0).unwrap_err();
    assert_eq!(error, SendError::TooLarge { size: 1025, max: 1024 });
    assert_eq!(error.code(), "InvalidParameterValue");
    assert!(queue.send("x".repeat(1009), attributes, 0).is_ok());
    assert_eq!(queue.send(body(""), none(), 0), Err(SendError::EmptyBody));
    assert_eq!(queue.send(body("a\u{0}b"), none(), 0), Err(SendError::InvalidContents));
    assert_eq!(queue.send(body("\u{FFFF}"), none(), 0), Err(SendError::InvalidContents));
    assert!(queue.send(body("tab\tlf\ncr\r é ☃ 🦀"), none(), 0).is_ok());
    assert_eq!(queue.send_delayed(body("a"), none(), 901, 0), Err(SendError::InvalidDelay(901)));
    assert_eq!(queue.len(), 3, "refused sends add nothing");
    // 1 MiB is allowed when configured.
    let mut big = with(|s| s.max_message_size = MAX_MAX_MESSAGE_SIZE);
    assert!(big.send("x".repeat(MAX_MAX_MESSAGE_SIZE), none(), 0).is_ok());
}

#[test]
fn receive_returns_visible_messages_oldest_first_with_their_details() {
    let mut queue = Queue::default();
    let mut attributes = none();
    attributes.insert(body("k"), Attribute { data_type: body("Number"), value: b"7".to_vec() });
    let a = queue.send(body("a"), attributes.clone(), 100).unwrap();
    let b = queue.send(body("b"), none(), 200).unwrap();
    let c = queue.send(body("c"), none(), 300).unwrap();
    let first = receive(&mut queue, 2, 1000);
    assert_eq!(ids(&first), vec![a, b]);
    assert_eq!(first[0].body, "a");
    assert_eq!(first[0].attributes, attributes);
    assert_eq!((first[0].receive_count, first[0].first_receive_ms, first[0].sent_ms), (1, 1000, 100));
    assert_eq!(ids(&receive(&mut queue, 10, 1001)), vec![c]);
    assert!(receive(&mut queue, 10, 1002).is_empty(), "everything is in flight");
    assert_eq!(queue.counts(1002), Counts { visible: 0, in_flight: 3, delayed: 0 });
    assert_eq!(queue.receive(0, None, 0), Err(ReceiveError::MaxMessages(0)));
    assert_eq!(queue.receive(11, None, 0), Err(ReceiveError::MaxMessages(11)));
    assert_eq!(queue.receive(1, Some(43_201), 0), Err(ReceiveError::VisibilityTimeout(43_201)));
}

#[test]
fn in_flight_becomes_visible_exactly_at_its_deadline() {
    let mut queue = Queue::default();
    let a = queue.send(body("a"), none(), 0).unwrap();
    let first = receive(&mut queue, 1, 10);
    assert_eq!(queue.state(a), Some(State::InFlight));
    assert!(receive(&mut queue, 1, 10 + 30 * S - 1).is_empty());
    assert_eq!(queue.state(a), Some(State::InFlight));
    assert_eq!(queue.counts(10 + 30 * S), Counts { visible: 1, in_flight: 0, delayed: 0 });
    let second = receive(&mut queue, 1, 10 + 30 * S);
    assert_eq!(ids(&second), vec![a]);
    assert_eq!((second[0].receive_count, second[0].first_receive_ms), (2, 10));
    assert_ne!(second[0].receipt_handle, first[0].receipt_handle);
}

#[test]
fn visibility_override_applies_to_that_receive() {
    let mut queue = Queue::default();
    let a = queue.send(body("a"), none(), 0).unwrap();
    queue.receive(1, Some(5), 0).unwrap().messages.pop().unwrap();
    assert_eq!(queue.counts(5 * S - 1).in_flight, 1);
    assert_eq!(ids(&receive(&mut queue, 1, 5 * S)), vec![a]);
    // Override 0: received, and visible again at once.
    let mut queue = Queue::default();
    let b = queue.send(body("b"), none(), 0).unwrap();
    let once = queue.receive(10, Some(0), 0).unwrap().messages;
    assert_eq!(ids(&once), vec![b], "received once per receive even with timeout 0");
    assert_eq!(queue.state(b), Some(State::Visible));
    let again = receive(&mut queue, 1, 0);
    assert_eq!(again[0].receive_count, 2);
    assert_eq!(queue.delete(once[0].receipt_handle, 0), Err(ReceiptHandleIsInvalid(once[0].receipt_handle)));
}

#[test]
fn delays_hold_messages_back() {
    let mut queue = with(|s| s.delay_s = 10);
    let a = queue.send(body("a"), none(), 0).unwrap();
    let b = queue.send_delayed(body("b"), none(), 0, 0).unwrap();
    let c = queue.send_delayed(body("c"), none(), 2, 0).unwrap();
    assert_eq!(queue.state(a), Some(State::Delayed));
    assert_eq!(queue.counts(0), Counts { visible: 1, in_flight: 0, delayed: 2 });
    assert_eq!(ids(&receive(&mut queue, 10, 0)), vec![b]);
    assert_eq!(ids(&receive(&mut queue, 10, 2 * S)), vec![c]);
    assert!(receive(&mut queue, 10, 10 * S - 1).is_empty());
    assert_eq!(ids(&receive(&mut queue, 10, 10 * S)), vec![a]);
}

#[test]
fn delete_needs_the_newest_handle() {
    let mut queue = with(|s| s.visibility_timeout_s = 1);
    let a = queue.send(body("a"), none(), 0).unwrap();
    let old = receive(&mut queue, 1, 0)[0].receipt_handle;
    let new = receive(&mut queue, 1, S)[0].receipt_handle;
    let error = queue.delete(old, S).unwrap_err();
    assert_eq!((error, error.code()), (ReceiptHandleIsInvalid(old), "ReceiptHandleIsInvalid"));
    assert_eq!(queue.state(a), Some(State::InFlight), "a stale delete removes nothing");
    // The newest handle still deletes after its timeout ran out, while no one
    // received the message again.
    assert_eq!(queue.counts(2 * S).visible, 1);
    assert_eq!(queue.delete(new, 2 * S), Ok(()));
    assert_eq!(queue.state(a), None);
    assert_eq!(queue.delete(new, 2 * S), Err(ReceiptHandleIsInvalid(new)), "deleting twice");
    let forged = ReceiptHandle { message: MessageId(99), receive: 0 };
    assert_eq!(queue.delete(forged, 2 * S), Err(ReceiptHandleIsInvalid(forged)));
    assert!(queue.is_empty());
}

#[test]
fn change_visibility_moves_the_deadline() {
    let mut queue = Queue::default();
    let a = queue.send(body("a"), none(), 0).unwrap();
    let handle = receive(&mut queue, 1, 0)[0].receipt_handle;
    // Extend: the old deadline (30 s) no longer applies.
    assert_eq!(queue.change_visibility(handle, 100, 10 * S), Ok(()));
    assert!(receive(&mut queue, 1, 30 * S).is_empty());
    assert!(receive(&mut queue, 1, 110 * S - 1).is_empty());
    // Shorten.
    assert_eq!(queue.change_visibility(handle, 1, 50 * S), Ok(()));
    assert_eq!(queue.counts(51 * S), Counts { visible: 1, in_flight: 0, delayed: 0 });
    // Not in flight any more: the handle is current but refused.
    let error = queue.change_visibility(handle, 10, 51 * S).unwrap_err();
    assert_eq!((error, error.code()), (ChangeVisibilityError::MessageNotInflight(a), "MessageNotInflight"));
    let handle2 = receive(&mut queue, 1, 52 * S)[0].receipt_handle;
    let error = queue.change_visibility(handle, 10, 52 * S).unwrap_err();
    assert_eq!(error, ChangeVisibilityError::ReceiptHandleIsInvalid(handle), "stale handle");
    assert_eq!(
        queue.change_visibility(handle2, 43_201, 52 * S),
        Err(ChangeVisibilityError::InvalidVisibilityTimeout(43_201))
    );
    // 0: visible at once.
    assert_eq!(queue.change_visibility(handle2, 0, 52 * S), Ok(()));
    assert_eq!(queue.state(a), Some(State::Visible));
    assert_eq!(ids(&receive(&mut queue, 1, 52 * S)), vec![a]);
}

#[test]
fn retention_expires_messages_in_any_state() {
    let mut queue = with(|s| s.retention_s = 60);
    let a = queue.send(body("a"), none(), 0).unwrap();
    let b = queue.send(body("b"), none(), 10 * S).unwrap();
    let c = queue.send_delayed(body("c"), none(), 900, 20 * S).unwrap();
    let handle = receive(&mut queue, 1, 20 * S)[0].receipt_handle;
    assert_eq!(queue.expire(60 * S - 1), vec![]);
    assert_eq!(queue.expire(60 * S), vec![a], "in flight, expired");
    assert_eq!(queue.delete(handle, 60 * S), Err(ReceiptHandleIsInvalid(handle)));
    assert_eq!(queue.expire(80 * S), vec![b, c]);
    assert!(queue.is_empty());
    // Other operations apply expiry too.
    let d = queue.send(body("d"), none(), 100 * S).unwrap();
    assert!(receive(&mut queue, 10, 160 * S).is_empty());
    assert_eq!(queue.state(d), None);
}

#[test]
fn lowering_retention_applies_to_messages_already_here() {
    let mut queue = Queue::default();
    let a = queue.send(body("a"), none(), 0).unwrap();
    queue.set_settings(Settings { retention_s: 60, ..Settings::default() }).unwrap();
    assert_eq!(queue.expire(60 * S), vec![a]);
}

#[test]
fn redrive_hands_messages_to_the_caller_after_max_receives() {
    let mut queue = with(|s| {
        s.visibility_timeout_s = 1;
        s.redrive = Some(Redrive { target: body("arn:dlq"), max_receive_count: 2 });
    });
    let a = queue.send(body("a"), none(), 5).unwrap();
    let b = queue.send(body("b"), none(), 6).unwrap();
    assert_eq!(ids(&receive(&mut queue, 1, 10)), vec![a]);
    assert_eq!(ids(&receive(&mut queue, 1, 10 + S)), vec![a]);
    let outcome = queue.receive(1, None, 10 + 2 * S).unwrap();
    assert_eq!(ids(&outcome.messages), vec![b], "a dead letter takes no place in the batch");
    assert_eq!(
        outcome.dead_letters,
        vec![DeadLetter {
            target: body("arn:dlq"),
            message_id: a,
            body: body("a"),
            attributes: none(),
            receive_count: 2,
            first_receive_ms: Some(10),
            sent_ms: 5,
        }]
    );
    assert_eq!(queue.state(a), None);
    assert_eq!(queue.len(), 1);
    // Without a policy, messages are received forever.
    let mut queue = with(|s| s.visibility_timeout_s = 0);
    queue.send(body("a"), none(), 0).unwrap();
    for n in 1..=50 {
        assert_eq!(receive(&mut queue, 1, 0)[0].receive_count, n);
    }
}

#[test]
fn at_least_once_until_deleted() {
    let mut queue = with(|s| s.visibility_timeout_s = 3);
    let a = queue.send(body("a"), none(), 0).unwrap();
    let mut now = 0;
    for n in 1..=5 {
        let got = receive(&mut queue, 10, now);
        assert_eq!((ids(&got), got[0].receive_count), (vec![a], n));
        now += 3 * S;
    }
    let handle = receive(&mut queue, 10, now)[0].receipt_handle;
    queue.delete(handle, now).unwrap();
    assert!(receive(&mut queue, 10, now + 1_000 * S).is_empty());
}

// ---- random operations against a reference model ---------------------------

/// The obvious, slow queue: a list of messages whose state is computed from
/// the clock each time it is looked at.
#[derive(Debug, Clone)]
struct ModelMessage {
    id: MessageId,
    body: String,
    sent: u64,
    visible_at: u64,
    receive_count: u32,
    first_receive: Option<u64>,
    handle: Option<ReceiptHandle>,
}

#[derive(Debug, Default)]
struct Model {
    messages: Vec<ModelMessage>,
    next_id: u64,
    next_receive: u64,
    sent: usize,
    deleted: usize,
    expired: usize,
    dead_lettered: usize,
}

impl Model {
    fn state(m: &ModelMessage, now: u64) -> State {
        if m.visible_at <= now {
            State::Visible
        } else if m.receive_count == 0 {
            State::Delayed
        } else {
            State::InFlight
        }
    }

    fn expire(&mut self, now: u64, retention_ms: u64) -> Vec<MessageId> {
        let (gone, kept) = self.messages.drain(..).partition(|m: &ModelMessage| m.sent + retention_ms <= now);
        self.messages = kept;
        self.expired += gone.len();
        let mut ids: Vec<_> = gone.into_iter().map(|m| m.id).collect();
        ids.sort();
        ids
    }
}

/// The queue's indices agree with themselves (Q1, Q2) and with the model.
fn check(queue: &Queue, model: &Model, now: u64, retention_ms: u64) {
    let mut in_flight = 0;
    for (id, m) in &queue.messages {
        let in_visible = queue.visible.contains(id);
        let in_waiting = queue.waiting.contains(&(m.visible_at_ms, *id));
        assert!(in_visible != in_waiting, "Q1: message {id:?} in exactly one index");
        assert_eq!(in_visible, m.state == State::Visible, "Q1");
        assert_eq!(m.state != State::Visible, m.visible_at_ms > now, "Q2: invisible exactly before its deadline");
        if m.state == State::Delayed {
            assert_eq!(m.receive_count, 0, "Q1: delayed only before the first receive");
        }
        if m.state == State::InFlight {
            assert!(m.receive_count > 0 && m.handle.is_some(), "Q1: in flight only after a receive");
            in_flight += 1;
        }
        assert!(queue.expiry.contains(&(m.sent_ms + retention_ms, *id)));
        assert!(m.sent_ms + retention_ms > now, "nothing past retention is kept");
    }
    assert_eq!(queue.visible.len() + queue.waiting.len(), queue.messages.len());
    assert_eq!(queue.expiry.len(), queue.messages.len());
    assert_eq!(queue.in_flight, in_flight);
    let counts = queue.counts_now();
    assert_eq!(counts.visible + counts.in_flight + counts.delayed, queue.len(), "Q1");
    // Against the model.
    assert_eq!(queue.messages.len(), model.messages.len());
    for (m, (id, q)) in model.messages.iter().zip(&queue.messages) {
        assert_eq!(m.id, *id);
        assert_eq!(Some(Model::state(m, now)), queue.state(*id));
        assert_eq!(
            (&m.body, m.sent, m.receive_count, m.first_receive, m.handle),
            (&q.body, q.sent_ms, q.receive_count, q.first_receive_ms, q.handle)
        );
        if Model::state(m, now) != State::Visible {
            assert_eq!(m.visible_at, q.visible_at_ms);
        }
    }
    // Q3: nothing lost.
    assert_eq!(model.sent, queue.len() + model.deleted + model.expired + model.dead_lettered);
}

/// Random sends, receives, deletes (current and stale handles), visibility
/// changes, time steps, expiries and settings changes; after every step the
/// queue matches the model exactly (`check`), and no handle is ever issued
/// twice.
#[test]
fn random_operations_match_the_model() {
    let mut rand = xorshift(0x9e37_79b9_7f4a_7c15);
    let mut totals = [0usize; 5]; // received, deleted, stale refusals, expired, dead-lettered
    for round in 0..300 {
        let max_receive_count = 1 + rand(4) as u32;
        let mut settings = Settings {
            visibility_timeout_s: rand(5) as u32,
            retention_s: 60 + rand(60) as u32,
            delay_s: if rand(3) == 0 { rand(4) as u32 } else { 0 },
            redrive: (round % 2 == 0).then(|| Redrive { target: body("dlq"), max_receive_count }),
            ..Settings::default()
        };
        let mut queue = Queue::new(settings.clone()).unwrap();
        let mut model = Model::default();
        let mut now = rand(1000);
        let mut handles: Vec<ReceiptHandle> = Vec::new();
        let mut handles_seen = HashSet::new();
        for _ in 0..300 {
            let retention_ms = u64::from(settings.retention_s) * S;
            match rand(10) {
                0 | 1 => {
                    let delay = if rand(2) == 0 { settings.delay_s } else { rand(4) as u32 };
                    let text = format!("m{}", model.next_id);
                    let id = queue.send_delayed(text.clone(), none(), delay, now).unwrap();
                    model.expire(now, retention_ms);
                    assert_eq!(id, MessageId(model.next_id));
                    model.next_id += 1;
                    model.sent += 1;
                    model.messages.push(ModelMessage {
                        id,
                        body: text,
                        sent: now,
                        visible_at: now + u64::from(delay) * S,
                        receive_count: 0,
                        first_receive: None,
                        handle: None,
                    });
                }
                2 | 3 => {
                    let max = 1 + rand(10) as usize;
                    let timeout = if rand(3) == 0 { Some(rand(4) as u32) } else { None };
                    let outcome = queue.receive(max, timeout, now).unwrap();
                    model.expire(now, retention_ms);
                    let timeout_ms = u64::from(timeout.unwrap_or(settings.visibility_timeout_s)) * S;
                    let mut expected = Vec::new();
                    let mut expected_dead = Vec::new();
                    let mut i = 0;
                    while i < model.messages.len() && expected.len() < max {
                        let m = &mut model.messages[i];
                        if Model::state(m, now) != State::Visible {
                            i += 1;
                            continue;
                        }
                        if let Some(r) = &settings.redrive
                            && m.receive_count >= r.max_receive_count
                        {
                            expected_dead.push((m.id, m.receive_count, m.sent));
                            model.messages.remove(i);
                            model.dead_lettered += 1;
                            continue;
                        }
                        let handle = ReceiptHandle { message: m.id, receive: model.next_receive };
                        model.next_receive += 1;
                        m.receive_count += 1;
                        m.first_receive.get_or_insert(now);
                        m.handle = Some(handle);
                        m.visible_at = now + timeout_ms;
                        expected.push((m.id, handle, m.receive_count, m.first_receive.unwrap(), m.sent));
                        i += 1;
                    }
                    let got: Vec<_> = outcome
                        .messages
                        .iter()
                        .map(|r| (r.message_id, r.receipt_handle, r.receive_count, r.first_receive_ms, r.sent_ms))
                        .collect();
                    assert_eq!(got, expected);
                    let dead: Vec<_> =
                        outcome.dead_letters.iter().map(|d| (d.message_id, d.receive_count, d.sent_ms)).collect();
                    assert_eq!(dead, expected_dead);
                    for r in &outcome.messages {
                        assert!(handles_seen.insert(r.receipt_handle), "Q5: handle issued twice");
                        assert_eq!(r.body, format!("m{}", r.message_id.0));
                        handles.push(r.receipt_handle);
                    }
                    totals[0] += outcome.messages.len();
                    totals[4] += outcome.dead_letters.len();
                }
                4 | 5 if !handles.is_empty() => {
                    let handle = handles[rand(handles.len() as u64) as usize];
                    let result = queue.delete(handle, now);
                    model.expire(now, retention_ms);
                    let position = model.messages.iter().position(|m| m.handle == Some(handle));
                    match position {
                        Some(i) => {
                            assert_eq!(result, Ok(()));
                            model.messages.remove(i);
                            model.deleted += 1;
                            totals[1] += 1;
                        }
                        None => {
                            assert_eq!(result, Err(ReceiptHandleIsInvalid(handle)));
                            totals[2] += 1;
                        }
                    }
                }
                6 if !handles.is_empty() => {
                    let handle = handles[rand(handles.len() as u64) as usize];
                    let timeout = rand(5) as u32;
                    let result = queue.change_visibility(handle, timeout, now);
                    model.expire(now, retention_ms);
                    match model.messages.iter_mut().find(|m| m.handle == Some(handle)) {
                        None => assert_eq!(result, Err(ChangeVisibilityError::ReceiptHandleIsInvalid(handle))),
                        Some(m) if Model::state(m, now) != State::InFlight => {
                            assert_eq!(result, Err(ChangeVisibilityError::MessageNotInflight(m.id)))
                        }
                        Some(m) => {
                            assert_eq!(result, Ok(()));
                            m.visible_at = now + u64::from(timeout) * S;
                        }
                    }
                }
                7 => {
                    let expired = queue.expire(now);
                    let mut expired = expired;
                    expired.sort();
                    assert_eq!(expired, model.expire(now, retention_ms));
                    totals[3] += expired.len();
                }
                8 if rand(10) == 0 => {
                    // A settings change (retention applies to what is here).
                    settings.retention_s = 60 + rand(60) as u32;
                    settings.visibility_timeout_s = rand(5) as u32;
                    queue.set_settings(settings.clone()).unwrap();
                }
                _ => now += rand(4 * S),
            }
            let retention_ms = u64::from(settings.retention_s) * S;
            // Time steps and settings changes apply nothing by themselves:
            // bring both to `now` (after any other step this drops nothing).
            let mut expired = queue.expire(now);
            expired.sort();
            assert_eq!(expired, model.expire(now, retention_ms));
            totals[3] += expired.len();
            check(&queue, &model, now, retention_ms);
            assert_eq!(queue.counts(now), {
                let mut c = Counts::default();
                for m in &model.messages {
                    match Model::state(m, now) {
                        State::Visible => c.visible += 1,
                        State::InFlight => c.in_flight += 1,
                        State::Delayed => c.delayed += 1,
                    }
                }
                c
            });
        }
    }
    // The sequences really exercise every path.
    assert!(totals.iter().all(|&n| n > 100), "too little coverage: {totals:?}");
}

// ---- restoring from storage ------------------------------------------------

fn stored_all(queue: &Queue) -> Vec<StoredMessage> {
    (0..queue.next_message_id().0).filter_map(|id| queue.stored(MessageId(id))).collect()
}

#[test]
fn restore_brings_back_every_message_with_its_receive_count() {
    let mut queue = with(|s| s.redrive = Some(Redrive { target: body("dlq"), max_receive_count: 2 }));
    let a = queue.send(body("a"), none(), 0).unwrap();
    let b = queue.send_delayed(body("b"), none(), 60, 0).unwrap();
    let c = queue.send(body("c"), none(), 0).unwrap();
    let got = receive(&mut queue, 1, S);
    assert_eq!(ids(&got), vec![a]);
    queue.delete(got[0].receipt_handle, S).unwrap();
    let in_flight = receive(&mut queue, 1, 2 * S);
    assert_eq!(ids(&in_flight), vec![c]);

    let restored = Queue::restore(queue.settings().clone(), 0, stored_all(&queue), 3 * S).unwrap();
    let mut restored = restored;
    assert_eq!(restored.len(), 2);
    assert_eq!(restored.state(b), Some(State::Delayed), "the delay is kept");
    assert_eq!(restored.state(c), Some(State::Visible), "in flight comes back visible");
    assert_eq!(
        restored.delete(in_flight[0].receipt_handle, 3 * S),
        Err(ReceiptHandleIsInvalid(in_flight[0].receipt_handle)),
        "earlier handles are not valid"
    );
    assert!(restored.next_message_id() > c, "ids are not reused");
    let again = receive(&mut restored, 10, 3 * S);
    assert_eq!((ids(&again), again[0].receive_count), (vec![c], 2));
    restored.change_visibility(again[0].receipt_handle, 0, 3 * S).unwrap();
    let outcome = restored.receive(10, None, 3 * S).unwrap();
    assert_eq!(outcome.dead_letters.iter().map(|d| d.message_id).collect::<Vec<_>>(), vec![c], "redrive goes on counting");
    assert_eq!(ids(&receive(&mut restored, 10, 61 * S)), vec![b]);
}

#[test]
fn restore_drops_expired_messages_and_keeps_the_id_floor() {
    let mut queue = with(|s| s.retention_s = 60);
    queue.send(body("old"), none(), 0).unwrap();
    let young = queue.send(body("young"), none(), 30 * S).unwrap();
    let restored = Queue::restore(queue.settings().clone(), 100, stored_all(&queue), 70 * S).unwrap();
    assert_eq!((restored.len(), restored.state(young)), (1, Some(State::Visible)));
    assert_eq!(restored.next_message_id(), MessageId(100));
}

#[test]
fn dead_letters_keep_their_send_time_and_count() {
    let mut source = with(|s| s.redrive = Some(Redrive { target: body("dlq"), max_receive_count: 1 }));
    let mut dlq = with(|s| s.retention_s = 100);
    source.send(body("m"), none(), 0).unwrap();
    let first = receive(&mut source, 1, 0);
    source.change_visibility(first[0].receipt_handle, 0, 10 * S).unwrap();
    let outcome = source.receive(1, None, 10 * S).unwrap();
    assert!(outcome.messages.is_empty());
    let [letter] = <[DeadLetter; 1]>::try_from(outcome.dead_letters).unwrap();
    let id = dlq.accept_dead_letter(letter, 10 * S);
    let got = receive(&mut dlq, 1, 10 * S);
    assert_eq!((got[0].message_id, got[0].sent_ms, got[0].receive_count, got[0].body.as_str()), (id, 0, 2, "m"));
    assert_eq!(dlq.expire(100 * S), vec![id], "retention counts from the original send");
}

#[test]
fn purge_empties_the_queue() {
    let mut queue = Queue::default();
    for i in 0..5 {
        queue.send(format!("m{i}"), none(), 0).unwrap();
    }
    receive(&mut queue, 2, 0);
    assert_eq!(queue.purge(), 5);
    assert_eq!((queue.len(), queue.counts(0)), (0, Counts::default()));
    let next = queue.send(body("after"), none(), 0).unwrap();
    assert_eq!(next, MessageId(5));
}

#[test]
fn attributes_round_trip_through_their_encoding() {
    let mut attributes = Attributes::new();
    attributes.insert("n".into(), Attribute { data_type: "Number".into(), value: b"42".to_vec() });
    attributes.insert("bin".into(), Attribute { data_type: "Binary".into(), value: vec![0, 255, 7] });
    attributes.insert("e".into(), Attribute { data_type: "String.x".into(), value: Vec::new() });
    let bytes = encode_attributes(&attributes);
    assert_eq!(decode_attributes(&bytes), Some(attributes));
    assert_eq!(decode_attributes(&[]), Some(Attributes::new()));
    assert_eq!(decode_attributes(&bytes[..bytes.len() - 1]), None);
    assert_eq!(decode_attributes(&[0, 0, 0, 9, 1]), None);
}
