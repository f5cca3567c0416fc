use super::*;
use std::collections::BTreeMap;

const MIN: u64 = 60_000;

fn policy(max_retries: u32, max_age_s: u64) -> Policy {
    Policy { max_retries, max_age_ms: max_age_s * 1000, retry_delay_ms: MIN }
}

fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}

/// Runs a sequence of tries from t = 0 (each as soon as it is allowed) and
/// answers how the event ended and when.
fn check(policy: Policy, attempts: &[Attempt], expected: Option<(Condition, u32, u64)>) {
    let mut progress = Progress::default();
    let mut now = 0;
    for (i, attempt) in attempts.iter().enumerate() {
        match decide(&policy, progress, *attempt, now) {
            Decision::Retry { at_ms, progress: p } => {
                assert!(at_ms > now, "a retry is later");
                progress = p;
                now = at_ms;
            }
            Decision::Done { condition, progress: p } => {
                assert_eq!(i + 1, attempts.len(), "{policy:?} {attempts:?}: ended early");
                assert_eq!(Some((condition, p.invocations, now)), expected, "{policy:?} {attempts:?}");
                return;
            }
        }
    }
    assert_eq!(expected, None, "{policy:?} {attempts:?}: still going");
}

use Attempt::{Failed as F, Success as S, Throttled as T};
use Condition::{EventAgeExceeded as Age, RetriesExhausted as Exhausted, Success as Ok_};

#[test]
fn lambdas_schedule() {
    // Two retries, one and two minutes apart.
    check(policy(2, 21600), &[F, F, F], Some((Exhausted, 3, 3 * MIN)));
    check(policy(2, 21600), &[F, F, S], Some((Ok_, 3, 3 * MIN)));
    check(policy(2, 21600), &[F, S], Some((Ok_, 2, MIN)));
    check(policy(1, 21600), &[F, F], Some((Exhausted, 2, MIN)));
    check(policy(0, 21600), &[F], Some((Exhausted, 1, 0)));
    check(policy(0, 21600), &[S], Some((Ok_, 1, 0)));
    check(policy(2, 21600), &[F, F], None);
    // A retry that would come after the event's age ends it instead.
    check(policy(2, 60), &[F], Some((Age, 1, 0)));
    check(policy(2, 120), &[F, F], Some((Age, 2, MIN)));
    check(policy(2, 181), &[F, F, F], Some((Exhausted, 3, 3 * MIN)));
}

#[test]
fn throttles_are_not_failures() {
    let p = policy(0, 21600);
    let mut attempts = vec![T; 50];
    attempts.push(S);
    check(p, &attempts, Some((Ok_, 1, (0..50).map(|n| throttle_delay_ms(&p, n + 1)).sum())));
    // A throttle resets nothing of the retries: F T T F with one retry is exhausted.
    check(policy(1, 21600), &[F, T, T, F], Some((Exhausted, 2, MIN + 100 + 200)));
}

#[test]
fn throttle_waits_double_up_to_the_retry_delay() {
    let p = policy(2, 21600);
    let waits: Vec<u64> = (1..=12).map(|n| throttle_delay_ms(&p, n)).collect();
    assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000]);
    let fast = Policy { retry_delay_ms: 10, ..p };
    assert_eq!(throttle_delay_ms(&fast, 5), 1000, "at least a second");
    assert_eq!(throttle_delay_ms(&p, u32::MAX), 60_000);
    assert_eq!(retry_delay_ms(&p, 1), MIN);
    assert_eq!(retry_delay_ms(&p, 2), 2 * MIN);
}

#[test]
fn throttled_forever_ends_by_age() {
    let p = policy(2, 60);
    let mut progress = Progress::default();
    let mut now = 0;
    for _ in 0..10_000 {
        match decide(&p, progress, T, now) {
            Decision::Retry { at_ms, progress: next } => {
                assert!(at_ms < 60_000);
                progress = next;
                now = at_ms;
            }
            Decision::Done { condition, progress } => {
                assert_eq!((condition, progress.invocations), (Age, 0));
                return;
            }
        }
    }
    panic!("never ended");
}

#[test]
fn too_old_is_exact() {
    let p = policy(2, 60);
    let progress = Progress { accepted_ms: 1000, ..Progress::default() };
    assert!(!too_old(&p, &progress, 60_999));
    assert!(too_old(&p, &progress, 61_000));
    assert!(!too_old(&p, &progress, 0), "a clock behind the event is not age");
}

/// Every sequence of up to 6 tries under every retry setting: the event ends
/// exactly when Lambda's rules say, never runs more than max_retries + 1
/// times, and throttles never count as invocations.
#[test]
fn every_short_sequence() {
    let all = [S, F, T];
    for max_retries in 0..=2 {
        for max_age_s in [60, 120, 200, 21600] {
            let p = policy(max_retries, max_age_s);
            for len in 1..=6u32 {
                for code in 0..3usize.pow(len) {
                    let attempts: Vec<Attempt> = (0..len).map(|i| all[code / 3usize.pow(i) % 3]).collect();
                    let mut progress = Progress::default();
                    let mut now = 0;
                    for (i, a) in attempts.iter().enumerate() {
                        let failures = attempts[..=i].iter().filter(|a| **a == F).count() as u32;
                        let runs = attempts[..=i].iter().filter(|a| **a != T).count() as u32;
                        match decide(&p, progress, *a, now) {
                            Decision::Retry { at_ms, progress: next } => {
                                assert!(*a != S);
                                assert!(failures <= max_retries, "{attempts:?}");
                                assert!(at_ms - next.accepted_ms < p.max_age_ms);
                                assert_eq!(next.invocations, runs);
                                progress = next;
                                now = at_ms;
                            }
                            Decision::Done { condition, progress: done } => {
                                assert_eq!(done.invocations, runs);
                                assert!(done.invocations <= max_retries + 1);
                                match condition {
                                    Ok_ => assert_eq!(*a, S),
                                    Exhausted => assert_eq!((*a, failures), (F, max_retries + 1)),
                                    Age => assert!(*a != S && failures <= max_retries),
                                }
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---- the schedule ------------------------------------------------------------

/// One group, no share to speak of: the schedule as a plain leased queue.
fn single() -> Schedule<u32, ()> {
    Schedule::new(usize::MAX)
}

#[test]
fn take_hands_out_the_oldest_ready_event_once() {
    let mut s = single();
    assert!(s.add(2u32, (), 10));
    assert!(s.add(1, (), 10));
    assert!(s.add(3, (), 5));
    assert!(!s.add(3, (), 0), "known ids are kept");
    assert_eq!(s.take(4, 100), None);
    assert_eq!(s.next_ready_ms(), Some(5));
    assert_eq!(s.take(10, 100).map(|l| l.id), Some(3));
    assert_eq!(s.take(10, 100).map(|l| l.id), Some(1));
    let two = s.take(10, 100).unwrap();
    assert_eq!((two.id, two.expires_at_ms), (2, 110));
    assert_eq!(s.take(10, 100), None);
    assert_eq!(s.next_ready_ms(), Some(110), "the first lease to run out");
    assert_eq!(s.len(), 3);
}

#[test]
fn an_expired_lease_makes_the_event_available_again_and_stale() {
    let mut s = single();
    s.add(7u32, (), 0);
    let first = s.take(0, 50).unwrap();
    assert_eq!(s.take(49, 50), None);
    let second = s.take(50, 50).unwrap();
    assert_eq!(second.id, 7);
    assert_ne!(first.token, second.token);
    assert_eq!(s.settle(&first), Err(StaleLease));
    assert_eq!(s.reschedule(&first, 0), Err(StaleLease));
    assert_eq!(s.reschedule(&second, 500), Ok(()));
    assert_eq!(s.take(499, 50), None);
    let third = s.take(500, 50).unwrap();
    assert_eq!(s.settle(&third), Ok(()));
    assert_eq!(s.settle(&third), Err(StaleLease));
    assert!(s.is_empty());
    assert_eq!(s.next_ready_ms(), None);
}

/// One account's 40 long events and another's one: the other's is taken as
/// soon as it is ready, while the first account holds its whole share, and
/// the first gets no more than its share.
#[test]
fn one_groups_backlog_does_not_delay_anothers() {
    let mut s: Schedule<u32, &str> = Schedule::new(32);
    for id in 0..40 {
        s.add(id, "a", 0);
    }
    let a: Vec<Lease<u32>> = (0..32).map(|_| s.take(1, 1000).unwrap()).collect();
    assert_eq!(a.iter().map(|l| l.id).collect::<Vec<_>>(), (0..32).collect::<Vec<_>>(), "oldest first");
    assert_eq!(s.take(1, 1000), None, "a holds its share; its 8 others wait");
    assert_eq!(s.next_ready_ms(), Some(1001), "only a lease running out, not a's waiting events");
    assert_eq!(s.leased(&"a"), 32);
    s.add(100, "b", 2);
    assert_eq!(s.take(2, 1000).map(|l| l.id), Some(100), "b runs while a's run");
    // One of a's ends: the next of a's.
    s.settle(&a[0]).unwrap();
    assert_eq!(s.take(3, 1000).map(|l| l.id), Some(32));
}

#[test]
fn the_group_holding_fewest_leases_goes_first() {
    let mut s: Schedule<u32, char> = Schedule::new(100);
    for id in 0..10 {
        s.add(id, 'a', id.into());
    }
    s.add(50, 'b', 20);
    s.add(51, 'b', 21);
    s.add(60, 'c', 30);
    let order: Vec<u32> = std::iter::from_fn(|| s.take(100, 1000).map(|l| l.id)).collect();
    // a (oldest, nothing held), b (nothing held), c (nothing held), then by leases held.
    assert_eq!(order, [0, 50, 60, 1, 51, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(s.leased(&'a'), 10);
    assert_eq!(s.leased(&'z'), 0);
}

/// Random operations against a plain model, with three groups and small
/// shares: an event is never leased to two holders at once, every event added
/// is eventually settled or still there, no group holds more than its share
/// through new takes, and take always returns the model's choice: among
/// events takeable now (ready and its group under its share, or a lease run
/// out), the fewest leases held by its group, then the oldest, then the
/// smallest id.
#[test]
fn random_operations_match_a_model() {
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum M {
        Waiting(u64),
        Leased(u64, u64),
    }
    for seed in 1..300u64 {
        let mut rand = xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let share = 1 + rand(4) as usize;
        let mut s: Schedule<u8, u8> = Schedule::new(share);
        let mut model: BTreeMap<u8, (u8, M)> = BTreeMap::new();
        let mut leases: Vec<Lease<u8>> = Vec::new();
        let mut now = 0u64;
        let held = |model: &BTreeMap<u8, (u8, M)>, g: u8| model.values().filter(|(h, m)| *h == g && matches!(m, M::Leased(..))).count();
        for _ in 0..300 {
            now += rand(20);
            match rand(5) {
                0 => {
                    let id = rand(12) as u8;
                    let group = (id % 3 + rand(2) as u8) % 3;
                    let at = now + rand(30);
                    let added = s.add(id, group, at);
                    assert_eq!(added, !model.contains_key(&id));
                    model.entry(id).or_insert((group, M::Waiting(at)));
                }
                1 | 2 => {
                    let lease_ms = 1 + rand(60);
                    let expected = model
                        .iter()
                        .filter_map(|(id, (g, m))| {
                            let n = held(&model, *g);
                            match m {
                                M::Waiting(at) if *at <= now && n < share => Some((n, *at, *id)),
                                M::Leased(_, at) if *at <= now => Some((n, *at, *id)),
                                _ => None,
                            }
                        })
                        .min();
                    let got = s.take(now, lease_ms);
                    assert_eq!(got.map(|l| l.id), expected.map(|(_, _, id)| id), "seed {seed}");
                    if let Some(lease) = got {
                        let group = model[&lease.id].0;
                        model.insert(lease.id, (group, M::Leased(lease.token, lease.expires_at_ms)));
                        leases.push(lease);
                        assert!(held(&model, group) <= share, "seed {seed}: a group over its share");
                    }
                }
                3 if !leases.is_empty() => {
                    let lease = leases.swap_remove(rand(leases.len() as u64) as usize);
                    let current = model.get(&lease.id).map(|e| e.1) == Some(M::Leased(lease.token, lease.expires_at_ms));
                    let at = now + rand(30);
                    assert_eq!(s.reschedule(&lease, at).is_ok(), current);
                    if current {
                        model.get_mut(&lease.id).unwrap().1 = M::Waiting(at);
                    }
                }
                4 if !leases.is_empty() => {
                    let lease = leases.swap_remove(rand(leases.len() as u64) as usize);
                    let current = model.get(&lease.id).map(|e| e.1) == Some(M::Leased(lease.token, lease.expires_at_ms));
                    assert_eq!(s.settle(&lease).is_ok(), current);
                    if current {
                        model.remove(&lease.id);
                    }
                }
                _ => {}
            }
            assert_eq!(s.len(), model.len());
            for g in 0..3 {
                assert_eq!(s.leased(&g), held(&model, g));
            }
            let next = model.values().filter_map(|(g, m)| match m {
                M::Waiting(at) => (held(&model, *g) < share).then_some(*at),
                M::Leased(_, exp) => Some(*exp),
            });
            assert_eq!(s.next_ready_ms(), next.min(), "seed {seed}");
        }
        // Groups with nothing left are forgotten.
        for lease in leases {
            let _ = s.settle(&lease);
        }
    }
}
